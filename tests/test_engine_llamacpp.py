"""The instrumented llama.cpp engine and the prompt-program API, on the real Gemma 3 270M.

Every program here also checks the trace invariant: the text rebuilt from the
events (tokens minus backtracks) equals the model's text.
"""

from __future__ import annotations

import json as stdjson
import math
import re

import numpy as np
from anytree import PreOrderIter
import pytest

from engines import assistant, gen, guidance, json, models, regex, select, system, user
from engines.errors import ContextOverflow, GrammarError, ModelLoadError
from tracing import Backtrack, Capture, NodeClose, NodeOpen, Token, TokenKind

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def gguf_path():
    from engines.default_model import default_model_path

    return default_model_path(progress=False)


@pytest.fixture(scope="module")
def raw_llama(gguf_path):
    import llama_cpp

    llm = llama_cpp.Llama(str(gguf_path), n_ctx=2048, n_threads=2, verbose=False)
    yield llm
    llm.close()


def text_at_node(store, node_id: int) -> bytes:
    seq = next(e.seq for e in store.events() if isinstance(e, NodeClose) and e.node_id == node_id)
    return store.text_bytes(store.state_at(seq))


def assert_trace_matches(store, lm) -> None:
    """The text rebuilt from the events at the model's node equals the model's text."""
    assert text_at_node(store, lm.node_id) == lm.text_bytes


def node_tokens(store, node_id: int, kind: TokenKind | None = None) -> list[Token]:
    return [e for e in store.events() if isinstance(e, Token) and e.node_id == node_id
            and (kind is None or e.kind == kind)]


def test_unconstrained_greedy_matches_raw_llama_cpp(session, raw_llama):
    prompt = "The capital of France is"
    lm = models.LlamaCpp() + prompt + gen("x", max_tokens=16)
    toks = node_tokens(session.store, lm.node_id, TokenKind.GENERATED)
    # Token healing took " is" back first; our tokens after regenerating it continue the same prompt.
    healed = b"".join(e.bytes for e in session.store.events() if isinstance(e, Backtrack) and e.reason == "healing")
    k, acc = 0, b""
    while acc != healed:
        acc += toks[k].bytes
        k += 1
    ours = [t.id for t in toks[k:]]
    raw = raw_llama.create_completion(prompt, max_tokens=len(ours), temperature=0.0)
    raw_ids = raw_llama.tokenize(raw["choices"][0]["text"].encode(), add_bos=False, special=True)
    assert len(ours) >= 12
    assert ours == raw_ids
    assert_trace_matches(session.store, lm)


def test_recorded_probabilities_are_softmax_of_llama_logits(session, raw_llama):
    import llama_cpp

    prompt = "My favourite colour is"
    lm = models.LlamaCpp() + prompt + gen(max_tokens=8)
    toks = node_tokens(session.store, lm.node_id, TokenKind.GENERATED)
    raw_llama.reset()
    raw_llama._ctx.kv_cache_clear()
    ids = raw_llama.tokenize(prompt.encode(), add_bos=True, special=True)
    healed = [e for e in session.store.events() if isinstance(e, Backtrack) and e.reason == "healing"]
    if healed:  # the engine took the last prompt token back and generated it again
        ids = ids[: len(ids) - healed[0].n_tokens]
    raw_llama.eval(ids)
    n_vocab = raw_llama.n_vocab()
    for tok in toks:
        row = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(raw_llama.ctx, -1), shape=(n_vocab,)).astype(np.float64)
        p = np.exp(row - row.max())
        p /= p.sum()
        # batched and one-by-one decoding differ slightly in llama.cpp: an absolute tolerance
        assert tok.prob_raw == pytest.approx(p[tok.id], abs=0.02)
        if tok is not toks[0]:  # the first one regenerates the healed " is": its mask is narrow
            assert tok.prob == pytest.approx(tok.prob_raw, abs=0.01)  # free text masks almost nothing
            assert all(not a.masked for a in tok.top)
        top = [a.id for a in tok.top]
        assert top[0] == int(np.argmax(row))
        assert [a.prob for a in tok.top] == sorted((a.prob for a in tok.top), reverse=True)
        raw_llama.eval([tok.id])


def test_select_output_is_one_of_the_options(session):
    options = [" yes", " no", " maybe"]
    lm = models.LlamaCpp() + "Is water wet? Answer:" + select(options, name="answer")
    assert lm["answer"] in options
    assert str(lm).endswith(lm["answer"])
    assert_trace_matches(session.store, lm)


def test_regex_output_matches_the_pattern(session):
    lm = models.LlamaCpp() + "The year the Berlin wall fell: " + regex(r"[0-9]{4}", name="year")
    assert re.fullmatch(r"[0-9]{4}", lm["year"])
    assert_trace_matches(session.store, lm)


def test_json_output_is_valid_for_the_schema(session):
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
              "required": ["name", "age"], "additionalProperties": False}
    lm = models.LlamaCpp() + "A person as JSON: " + json("person", schema=schema)
    value = stdjson.loads(lm["person"])
    assert set(value) == {"name", "age"} and isinstance(value["age"], int)
    assert_trace_matches(session.store, lm)


def test_forced_tokens_are_recorded_with_probabilities(session):
    lm = models.LlamaCpp() + "Q: Which day comes after Sunday?\nA: " + select(
        ["Monday, the first day of the week", "Tuesday"], name="day")
    assert lm["day"] == "Monday, the first day of the week"
    forced = node_tokens(session.store, lm.node_id, TokenKind.FORCED)
    assert forced, "the rest of the long option is forced by the grammar"
    assert b"".join(t.bytes for t in forced) in b", the first day of the week"
    for t in forced:
        assert 0.0 < t.prob_raw <= 1.0 and t.prob == 1.0
        assert t.top and t.allowed == 1
    assert_trace_matches(session.store, lm)


def test_stop_string_is_backtracked_and_not_in_the_capture(session):
    lm = models.LlamaCpp() + "Colours: red, green" + gen("rest", stop=",", max_tokens=20)
    assert "," not in lm["rest"]
    bts = [e for e in session.store.events() if isinstance(e, Backtrack) and e.node_id == lm.node_id]
    assert any(b.reason == "stop" and b.bytes.startswith(b",") for b in bts)
    assert_trace_matches(session.store, lm)


def test_token_healing_is_recorded_as_a_backtrack(session):
    lm = models.LlamaCpp() + "Name: Jo" + gen("name", stop="\n", max_tokens=6)
    heal = [e for e in session.store.events() if isinstance(e, Backtrack) and e.reason == "healing"]
    assert heal and heal[0].bytes == b" Jo"
    assert str(lm).startswith("Name: Jo")
    assert_trace_matches(session.store, lm)


def test_captures_carry_values_and_log_probabilities(session):
    lm = models.LlamaCpp() + "Two colours: " + gen("a", regex="[a-z]+", max_tokens=3) + " and " + gen(
        "b", regex="[a-z]+", max_tokens=3)
    caps = {e.name: e for e in session.store.events() if isinstance(e, Capture)}
    assert caps["a"].value == lm["a"] and caps["b"].value == lm["b"]
    for c in caps.values():
        assert c.log_prob <= 0.0 and math.isfinite(c.log_prob)
    assert_trace_matches(session.store, lm)


def test_list_append_collects_captures(session):
    lm = models.LlamaCpp() + "Digits:"
    for _ in range(3):
        lm += " " + gen("d", regex="[0-9]", list_append=True)
    assert isinstance(lm["d"], list) and len(lm["d"]) == 3


def test_roles_use_the_gemma_turn_markers_and_appear_as_nodes(session):
    lm = models.LlamaCpp()
    with system():
        lm += "Be brief."
    with user():
        lm += "Say hi."
    with assistant():
        lm += gen("reply", max_tokens=5)
    text = str(lm)
    assert text.startswith("<start_of_turn>system\nBe brief.<end_of_turn>\n<start_of_turn>user\nSay hi.<end_of_turn>\n")
    assert "<start_of_turn>model\n" in text
    roles = [e.name for e in session.store.events() if isinstance(e, NodeOpen) and e.kind == "role"]
    assert roles == ["system", "user", "assistant"]
    tree = session.store.tree()
    assistant_node = next(n for n in tree.by_id.values() if n.kind == "role" and n.name == "assistant")
    assert any(c.kind == "gen" for c in assistant_node.children)
    assert_trace_matches(session.store, lm)


def test_program_functions_are_named_nodes_with_children(session):
    @guidance
    def qa(lm, question):
        lm += f"Q: {question}\nA:"
        lm += gen("answer", stop="\n", max_tokens=8)
        return lm

    lm = models.LlamaCpp() + qa("What is 2+2?")
    tree = session.store.tree()
    node = tree.by_id[lm.node_id]
    assert node.kind == "program" and node.name == "qa"
    assert [c.kind for c in node.children] == ["literal", "gen"]
    assert "answer" in lm
    assert_trace_matches(session.store, lm)


def test_tool_call_runs_the_tool_and_generation_continues(session):
    calls = []

    @guidance
    def add(lm, a, b):
        calls.append((a, b))
        return lm + f" = {int(a) + int(b)}"

    base = models.LlamaCpp() + "1 + 1 = add(1, 1) = 2\n3 + 5 = add(3, 5) = 8\n11 + 9"
    lm = base + gen(max_tokens=12, tools=[add], stop="\n")
    assert calls == [("11", "9")]
    assert str(lm).endswith("11 + 9 = add(11, 9) = 20")
    kinds = [e.kind for e in session.store.events() if isinstance(e, NodeOpen)]
    assert "tool_call" in kinds
    assert_trace_matches(session.store, lm)


def test_reusing_a_base_model_branches_the_trace_tree(session):
    """Regression: guidance raised "Parent missing for trace node" here."""
    base = models.LlamaCpp() + "Count: 1, 2,"
    a = base + gen("a", regex=" [0-9]")
    b = base + gen("b", regex=" [a-z]+")
    c = a + gen("c", regex=", [0-9]")
    tree = session.store.tree()
    assert tree.orphans == 0
    branches = [n for n in PreOrderIter(tree.root) if n.kind == "branch"]
    assert len(branches) == 2  # b continues from base, c from a: both older states
    for lm in (a, b, c):
        assert_trace_matches(session.store, lm)
    assert str(a).startswith(str(base)) and str(b).startswith(str(base))


def test_seeded_sampling_is_reproducible_and_temperature_changes_it(session):
    outs = []
    for _ in range(2):
        lm = models.LlamaCpp(seed=7) + "Once upon a time" + gen("s", max_tokens=8, temperature=1.2)
        outs.append(lm["s"])
    assert outs[0] == outs[1]
    greedy = (models.LlamaCpp() + "Once upon a time" + gen("s", max_tokens=8))["s"]
    sampled = {(models.LlamaCpp(seed=s) + "Once upon a time" + gen("s", max_tokens=8, temperature=1.5))["s"]
               for s in range(4)}
    assert sampled - {greedy}


def test_switches_turn_off_token_statistics_and_fast_forward(session):
    lm = models.LlamaCpp(token_stats=False, enable_ff_tokens=False) + "Q: Which day comes after Sunday?\nA: " + select(
        ["Monday, the first day of the week", "Tuesday"], name="day")
    toks = node_tokens(session.store, lm.node_id)
    assert all(not t.top and math.isnan(t.prob) for t in toks if t.kind == TokenKind.GENERATED)
    assert not any(t.kind == TokenKind.FORCED for t in toks)
    assert lm["day"] == "Monday, the first day of the week"
    assert_trace_matches(session.store, lm)


def test_partial_utf8_tokens_keep_exact_bytes(session):
    lm = models.LlamaCpp() + "Hieroglyphs:" + gen("e", regex=" [𓀀-𓀏]{2}")
    toks = [t for t in node_tokens(session.store, lm.node_id) if t.kind != TokenKind.PROMPT]
    healed = b"".join(e.bytes for e in session.store.events() if isinstance(e, Backtrack) and e.reason == "healing")
    assert b"".join(t.bytes for t in toks) == healed + lm["e"].encode()

    def decodes(b: bytes) -> bool:
        try:
            b.decode("utf-8")
            return True
        except UnicodeDecodeError:
            return False

    assert any(not decodes(t.bytes) for t in toks), "rare characters come as byte-fallback tokens"
    assert_trace_matches(session.store, lm)


# -- bad input ------------------------------------------------------------------

def test_missing_model_is_a_one_line_error(tmp_path):
    with pytest.raises(ModelLoadError, match="model not found"):
        models.LlamaCpp(tmp_path / "nope.gguf")
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a model")
    with pytest.raises(ModelLoadError, match="not a GGUF"):
        models.LlamaCpp(bad)


def test_invalid_regex_is_a_grammar_error(session):
    with pytest.raises(GrammarError) as info:
        models.LlamaCpp() + "x" + regex("[0-9")
    assert "\n" not in str(info.value)


def test_context_overflow_is_reported(session):
    lm = models.LlamaCpp(n_ctx=256) + "word " * 300
    with pytest.raises(ContextOverflow, match="context overflow"):
        lm + gen(max_tokens=5)


def test_cancel_stops_generation_and_keeps_tokens(session):
    import threading
    import time

    from engines.errors import Cancelled

    store = session.store
    lm = models.LlamaCpp() + "Tell me a long story:"

    def cancel_once_tokens_flow():
        while len(store.seqs_of(Token)) < 15:
            time.sleep(0.01)
        session.cancel_event.set()

    threading.Thread(target=cancel_once_tokens_flow, daemon=True).start()
    with pytest.raises(Cancelled):
        lm + gen(max_tokens=200)
    assert 15 <= len(store.seqs_of(Token)) < 200


def test_an_llguidance_panic_becomes_a_one_line_engine_error(session, monkeypatch):
    """llguidance 1.9.1 can panic in commit_token (multi-byte stop=): never a crash or a traceback wall."""
    import llguidance

    from engines import loop
    from engines.errors import EngineError

    real = llguidance.LLInterpreter

    class Panicking:
        def __init__(self, *a, **kw):
            self._inner = real(*a, **kw)

        def __getattr__(self, name):
            return getattr(self._inner, name)

        def commit_token(self, token):
            raise ValueError("panic: assertion failed: bt == 0")

    monkeypatch.setattr(loop.llguidance, "LLInterpreter", Panicking)
    with pytest.raises(EngineError, match="llguidance: panic: assertion failed") as info:
        models.LlamaCpp() + "Hello" + gen(stop="é", max_tokens=5)
    assert "\n" not in str(info.value)
    closes = [e for e in session.store.events() if isinstance(e, NodeClose)]
    assert closes[-1].stop_reason.startswith("error"), "the node is closed with the error in the trace"


def test_a_forced_run_longer_than_a_batch_is_recorded(session):
    """A literal joined to a grammar is forced; past one batch of rows its first tokens get NaN."""
    long_text = "one two three four five six seven eight nine ten. " * 60  # > 512 tokens
    lm = models.LlamaCpp() + (long_text + select([" yes", " no"], name="a"))
    forced = node_tokens(session.store, lm.node_id, TokenKind.FORCED)
    assert len(forced) > 512
    assert math.isnan(forced[0].prob_raw) and 0.0 < forced[-1].prob_raw <= 1.0
    assert lm["a"] in (" yes", " no")
    assert_trace_matches(session.store, lm)
