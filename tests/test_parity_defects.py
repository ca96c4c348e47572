"""The defects issue 14 found, each held on the real model: tools inside a grammar joined with ``+``,
the capture of a named gen with tools, the stop reason and token count of a gen cut by
``max_tokens``, and a bounded ``json()``."""

from __future__ import annotations

import pytest

from engines import gen, guidance, json
from tracing import Capture, NodeClose, NodeOpen, Token, TokenKind

pytestmark = pytest.mark.model

FEW_SHOT = "1 + 1 = add(1, 1) = 2\n3 + 5 = add(3, 5) = 8\n"


def events(lm):
    return lm.engine.session.store.events()


def close_of(lm, node_id: int) -> str:
    return [e for e in events(lm) if isinstance(e, NodeClose) and e.node_id == node_id][-1].stop_reason


def add(a: int, b: int):
    return a + b


def test_tools_apply_in_a_grammar_joined_with_plus(lm0):
    base = lm0 + FEW_SHOT
    joined = base + ("11 + 9" + gen("r", tools=[add], max_tokens=12, stop="\n"))
    alone = (base + "11 + 9") + gen("r", tools=[add], max_tokens=12, stop="\n")
    assert str(joined).endswith("11 + 9 = add(11, 9) = 20")
    assert str(joined) == str(alone)
    assert any(isinstance(e, NodeOpen) and e.kind == "tool_call" and e.name == "add(11, 9)" for e in events(joined))


def test_guidance_tool_in_an_f_string_and_a_join(lm0):
    @guidance
    def add_prog(lm, a: int, b: int):  # the annotations convert the model's text, as for a plain function
        return lm + f" = {a + b}"

    add_prog.__name__ = "add"  # the few-shot text calls it add
    lm = lm0 + (FEW_SHOT + f"11 + 9{gen('r', tools=[add_prog], max_tokens=12, stop=chr(10))}")
    assert str(lm).endswith("11 + 9 = add(11, 9) = 20")


def test_named_gen_with_tools_records_its_capture(lm0):
    lm = lm0 + FEW_SHOT + "11 + 9" + gen("r", tools=[add], max_tokens=12, stop="\n")
    caps = [e for e in events(lm) if isinstance(e, Capture) and e.name == "r"]
    assert caps and caps[-1].value == lm["r"] == " = add(11, 9) = 20"
    assert lm.log_prob("r") < 0


def test_named_gen_with_tools_list_append(lm0):
    lm = lm0 + FEW_SHOT + "11 + 9" + gen("r", tools=[add], max_tokens=12, stop="\n", list_append=True)
    assert lm["r"] == [" = add(11, 9) = 20"]
    assert [e.append for e in events(lm) if isinstance(e, Capture) and e.name == "r"][-1] is True


def test_gen_cut_by_max_tokens_says_max_tokens(lm0):
    lm = lm0 + "Once upon a time\n" + gen("s", max_tokens=4)
    assert close_of(lm, lm.node_id) == "max_tokens"


def test_gen_ended_by_its_stop_says_grammar(lm0):
    lm = lm0 + "Count: 1, 2, 3" + gen("s", stop=",", max_tokens=20)
    assert close_of(lm, lm.node_id) == "grammar"


def test_max_tokens_counts_generated_tokens_not_the_forced_prefix(lm0):
    lm = lm0 + "Question:\n" + ("The answer, in a few words, is" + gen("s", max_tokens=3))
    assert close_of(lm, lm.node_id) == "max_tokens"
    toks = [e for e in events(lm) if isinstance(e, Token) and e.node_id == lm.node_id]
    forced = [t for t in toks if t.kind == TokenKind.FORCED]
    generated = [t for t in toks if t.kind == TokenKind.GENERATED]
    assert forced, "the joined literal is forced by the grammar"
    # The gen's own text is its budget of 3 tokens; the forced prefix is not part of it.
    value_tokens = lm0.engine.backend.tokenize(lm["s"].encode(), add_bos=False)
    assert len(value_tokens) <= 3
    assert len(generated) <= 4  # 3, plus the prompt's last token where healing regenerated it


def test_json_is_bounded_by_max_tokens(lm0):
    from pydantic import BaseModel

    class Essay(BaseModel):
        title: str
        body: str

    lm = lm0 + "An essay as JSON: " + json("e", schema=Essay, max_tokens=8)
    assert close_of(lm, lm.node_id) == "max_tokens"
    # The budget is the model's own tokens; the JSON punctuation the grammar forces comes free.
    sampled = [e for e in events(lm) if isinstance(e, Token) and e.node_id == lm.node_id
               and e.kind == TokenKind.GENERATED]
    # llguidance counts the budget inside the JSON sub-grammar: measured 13 sampled tokens for 8.
    assert 0 < len(sampled) <= 2 * 8
