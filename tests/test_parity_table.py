"""One test per row of the README's guidance compatibility table, on the real model: the output is
in the grammar's language (checked in Python where the language is simple, and by matching the
grammar on its own otherwise), and what cannot apply here says so.

One model for the module, greedy, short budgets.
"""

from __future__ import annotations

import json as stdjson
import re

import pytest
from pydantic import BaseModel, TypeAdapter

from engines import (Tool, assistant, at_most_n_repeats, block, capture, exactly_n_repeats, gbnf_to_lark, gen,
                     guidance, image, json, lark, models, one_or_more, optional, regex, role, select, sequence,
                     special_token, string, substring, system, token_limit, user, with_temperature, zero_or_more)
from tracing import Capture, NodeClose

pytestmark = pytest.mark.model


def stop_reason(lm) -> str:
    return [e for e in lm.engine.session.store.events() if isinstance(e, NodeClose) and e.node_id == lm.node_id][-1] \
        .stop_reason


def in_language(node, value: str) -> bool:
    return node.match(value) is not None


# -- gen -------------------------------------------------------------------------------------

def test_gen_free_text_within_max_tokens(lm0):
    lm = lm0 + "The capital of France is" + gen("x", max_tokens=4)
    assert lm["x"] and stop_reason(lm) == "max_tokens"
    assert len(lm0.engine.backend.tokenize(lm["x"].encode(), add_bos=False)) <= 5  # healing may re-split


def test_gen_regex(lm0):
    lm = lm0 + "The year the Berlin wall fell: " + gen("y", regex=r"[0-9]{4}")
    assert re.fullmatch(r"[0-9]{4}", lm["y"])


def test_gen_stop_string_is_not_kept(lm0):
    lm = lm0 + "Count: 1, 2, 3," + gen("x", stop=",", max_tokens=10)
    assert "," not in lm["x"] and not str(lm).endswith(",")


def test_gen_stop_list(lm0):
    lm = lm0 + "Count: 1, 2, 3" + gen("x", stop=[",", "4"], max_tokens=10)
    assert "," not in lm["x"] and "4" not in lm["x"]


def test_gen_stop_regex(lm0):
    lm = lm0 + "Count: 1, 2," + gen("x", stop_regex=r"[0-9]", max_tokens=10)
    assert not re.search(r"[0-9]", lm["x"])


def test_gen_save_stop_text(lm0):
    lm = lm0 + "Count: 1, 2, 3" + gen("x", stop=[",", "."], save_stop_text=True, max_tokens=10)
    assert lm["x_stop_text"] in (",", ".")
    lm = lm0 + "Count: 1, 2, 3" + gen("x", stop=",", save_stop_text="why", max_tokens=10)
    assert lm["why"] == ","


def test_gen_suffix_follows_the_stop(lm0):
    lm = lm0 + "Count: 1, 2, 3" + gen("x", stop=",", suffix="!", max_tokens=10)
    assert str(lm).endswith(lm["x"] + "!")


def test_gen_list_append(lm0):
    lm = lm0 + "Digits:"
    for _ in range(2):
        lm += " " + gen("d", regex="[0-9]", list_append=True)
    assert len(lm["d"]) == 2 and all(re.fullmatch("[0-9]", d) for d in lm["d"])
    assert len(lm.log_prob("d")) == 2


def test_gen_temperature_sampling_stays_in_the_language(lm0):
    lm = lm0 + "Number: " + gen("n", regex="[0-9]{2}", temperature=1.5)
    assert re.fullmatch("[0-9]{2}", lm["n"])


def test_gen_top_p_tiny_keeps_only_the_best_token(lm0):
    greedy = (lm0 + "Once upon a time" + gen("s", max_tokens=5))["s"]
    nucleus = (lm0 + "Once upon a time" + gen("s", max_tokens=5, temperature=1.0, top_p=1e-6))["s"]
    assert nucleus == greedy


def test_gen_n_above_one_is_not_supported():
    with pytest.raises(NotImplementedError, match="n=2"):
        gen("x", n=2)


def test_gen_hide_tool_call_is_deprecated_as_in_guidance():
    with pytest.raises(ValueError, match="hide_tool_call"):
        gen("x", hide_tool_call=True)


def test_gen_unknown_keyword_is_an_error():
    with pytest.raises(TypeError):
        gen("x", max_token=3)


def test_gen_tool_choice_required_starts_with_a_call(lm0):
    def double(x: int):
        return 2 * x

    lm = lm0 + "Call a tool: " + gen("r", tools=[double], tool_choice="required", max_tokens=6, stop="\n")
    assert re.match(r"double\([^()]*\) = ", lm["r"])


def test_gen_with_tool_objects(lm0):
    tool = Tool.from_callable(lambda a, b: int(a) * int(b), name="mul")
    lm = lm0 + "2 * 3 = mul(2, 3) = 6\n4 * 5 = mul(4, 5) = 20\n6 * 7" + gen("r", tools=[tool], max_tokens=12,
                                                                              stop="\n")
    assert "mul(6, 7) = 42" in lm["r"]


# -- select, regex, string, special tokens ---------------------------------------------------------

def test_select_strings_numbers_and_grammars(lm0):
    options = ["yes", 2, 3.5, regex("[a-z]{2}")]
    lm = lm0 + "Answer: " + select(options, name="s")
    assert lm["s"] in ("yes", "2", "3.5") or re.fullmatch("[a-z]{2}", lm["s"])


def test_select_list_append(lm0):
    lm = lm0 + "A: " + select(["x", "y"], name="s", list_append=True) + ", B: " + select(["x", "y"], name="s",
                                                                                          list_append=True)
    assert len(lm["s"]) == 2 and set(lm["s"]) <= {"x", "y"}


def test_select_refuses_a_stateful_option():
    @guidance
    def prog(lm):
        return lm

    with pytest.raises(ValueError, match="stateful"):
        select([prog(), "x"])


def test_regex_block(lm0):
    lm = lm0 + "Code: " + regex(r"[A-Z]{3}-[0-9]{2}", name="c")
    assert re.fullmatch(r"[A-Z]{3}-[0-9]{2}", lm["c"])


def test_string_block(lm0):
    lm = lm0 + string("fixed text")
    assert str(lm).endswith("fixed text")


def test_special_token_is_one_token(lm0):
    lm = lm0 + "Hi" + special_token("<end_of_turn>")
    assert str(lm).endswith("Hi<end_of_turn>")
    with pytest.raises(ValueError):
        special_token("end_of_turn")


# -- json ----------------------------------------------------------------------------------------

class Person(BaseModel):
    name: str
    age: int


POINT = {"type": "object", "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}},
         "required": ["x", "y"], "additionalProperties": False}


@pytest.mark.parametrize("schema, check", [
    pytest.param(POINT, lambda v: set(v) == {"x", "y"}, id="dict"),
    pytest.param(stdjson.dumps(POINT), lambda v: set(v) == {"x", "y"}, id="json-string"),
    pytest.param(True, lambda v: True, id="bool"),
    pytest.param(Person, lambda v: Person.model_validate(v) is not None, id="pydantic"),
    pytest.param(TypeAdapter(list[int]), lambda v: TypeAdapter(list[int]).validate_python(v) is not None,
                 id="type-adapter"),
])
def test_json_schema_kinds(lm0, schema, check):
    node = json("j", schema=schema, max_tokens=40)
    lm = lm0 + "A short record as JSON: " + node
    assert_json(lm, node, check)


def assert_json(lm, node, check) -> None:
    """Valid for the schema; where ``max_tokens`` cut it, a prefix of the grammar's language."""
    if stop_reason(lm) == "max_tokens":
        assert node.match(lm["j"], allow_partial=True) is not None
    else:
        assert check(stdjson.loads(lm["j"])) and in_language(node, lm["j"])


def test_json_false_schema_is_unsatisfiable():
    with pytest.raises(ValueError, match="false"):
        json("j", schema=False)


def test_json_max_tokens_bounds_it(lm0):
    lm = lm0 + "A long description as JSON: " + json("j", schema={"type": "object", "properties": {
        "text": {"type": "string"}}, "required": ["text"]}, max_tokens=5)
    assert stop_reason(lm) == "max_tokens"
    sampled = [e for e in lm.engine.session.store.events() if type(e).__name__ == "Token"
               and e.node_id == lm.node_id and e.kind == 1]
    # llguidance counts the budget inside the JSON sub-grammar: measured 9 sampled tokens for 5.
    assert 0 < len(sampled) <= 2 * 5


def test_json_temperature_and_separators(lm0):
    node = json("j", schema=POINT, separators=(",", ":"), temperature=0.8, max_tokens=20)
    lm = lm0 + "A point: " + node
    assert re.fullmatch(r'\{"x":-?[0-9]+,"y":-?[0-9]+\}', lm["j"])


@pytest.mark.parametrize("kw", [dict(whitespace_flexible=True), dict(whitespace_pattern=r"[ ]?"),
                                dict(lenient=True)], ids=["whitespace_flexible", "whitespace_pattern", "lenient"])
def test_json_whitespace_and_lenient_options(lm0, kw):
    node = json("j", schema=POINT, max_tokens=25, **kw)
    lm = lm0 + "A point: " + node
    assert_json(lm, node, lambda v: set(v) == {"x", "y"})


# -- combinators ---------------------------------------------------------------------------------

def test_capture_of_a_grammar(lm0):
    lm = lm0 + "Hello, " + capture(regex("[A-Z][a-z]+") + "!", "who")
    assert re.fullmatch(r"[A-Z][a-z]+!", lm["who"])


def test_capture_of_a_stateful_function(lm0):
    @guidance
    def part(lm):
        return lm + "Name: " + gen(max_tokens=2)

    lm = lm0 + capture(part(), "p")
    assert lm["p"].startswith("Name: ") and str(lm).endswith(lm["p"])


@pytest.mark.parametrize("make, pattern", [
    pytest.param(lambda: token_limit(one_or_more(regex("[0-9]")), 4), r"[0-9]+", id="one_or_more"),
    pytest.param(lambda: zero_or_more("ab") + ".", r"(ab)*\.", id="zero_or_more"),
    pytest.param(lambda: optional("!") + ".", r"!?\.", id="optional"),
    pytest.param(lambda: sequence("ab", 1, 2) + ".", r"(ab){1,2}\.", id="sequence"),
    pytest.param(lambda: at_most_n_repeats(regex("[0-9]"), 2) + ".", r"[0-9]{0,2}\.", id="at_most_n_repeats"),
    pytest.param(lambda: exactly_n_repeats(regex("[a-z]"), 3), r"[a-z]{3}", id="exactly_n_repeats"),
])
def test_repeats(lm0, make, pattern):
    node = make()
    lm = lm0 + "Value: " + capture(node, "v")
    assert re.fullmatch(pattern, lm["v"]) and in_language(node, lm["v"])


def test_substring(lm0):
    text = "the quick brown fox jumps"
    lm = lm0 + f"{text}\nQuote: " + substring(text, name="q")
    assert lm["q"] in text
    with pytest.raises(ValueError):
        substring(text, chunk="sentence")


def test_lark_with_name_and_max_tokens(lm0):
    node = lark('start: ANS "."\nANS: "yes" | "no"', name="a", max_tokens=5)
    lm = lm0 + "Is water wet? " + node
    assert lm["a"] in ("yes.", "no.")


def test_gbnf_to_lark(lm0):
    node = lark(gbnf_to_lark('root ::= ("red" | "blue") " car"'), name="c")
    lm = lm0 + "A colour: " + node
    assert lm["c"] in ("red car", "blue car")


def test_token_limit(lm0):
    lm = lm0 + "Story: " + capture(token_limit("Once " + gen(), 3), "s")
    assert lm["s"].startswith("Once ") and stop_reason(lm) == "max_tokens"


def test_with_temperature(lm0):
    lm = lm0 + "Number: " + with_temperature(regex("[0-9]{2}", name="n"), 1.2)
    assert re.fullmatch("[0-9]{2}", lm["n"])


# -- blocks, roles, program functions --------------------------------------------------------------

def test_block_with_name_opener_and_closer(lm0):
    with block("b", opener="[", closer="]"):
        lm = lm0 + "inside"
    lm += "."
    assert lm["b"] == "[inside]" and str(lm).endswith("[inside].")


def test_roles_use_the_chat_template(lm0):
    with system():
        lm = lm0 + "Be brief."
    with user():
        lm += "Hi"
    with assistant():
        lm += gen("a", max_tokens=3)
    with role("user"):
        lm += "Bye"
    text = str(lm)
    assert "<start_of_turn>system\nBe brief.<end_of_turn>" in text and "<start_of_turn>model\n" in text
    assert text.endswith("<start_of_turn>user\nBye")


def test_guidance_stateless_function_is_a_grammar(lm0):
    @guidance(stateless=True)
    def digit(lm):
        return lm + regex("[0-9]")

    node = select([digit(), "x"], name="d")
    lm = lm0 + "Pick: " + node
    assert re.fullmatch("[0-9]|x", lm["d"])


def test_guidance_stateless_predicate_and_cache():
    calls = []

    @guidance(stateless=lambda n: n > 0, cache=True)
    def part(lm, n):
        calls.append(n)
        return lm + "a" * max(n, 1)

    assert part(2).ll_grammar() == part(2).ll_grammar() and calls == [2]  # cached: f ran once
    assert type(part(0)).__name__ == "ProgramCall"  # the predicate said stateful


def test_guidance_dedent_strips_multiline_indentation(lm0):
    @guidance
    def prompt(lm):
        lm += """\
        line one
        line two"""
        return lm

    @guidance(dedent=False)
    def raw(lm):
        lm += """\
        kept"""
        return lm

    assert str(lm0 + prompt()) == "line one\nline two"
    assert str(lm0 + raw()) == "        kept"


def test_guidance_method(lm0):
    class Bot:
        greeting = "Hello"

        @guidance
        def greet(self, lm, who):
            return lm + f"{self.greeting}, {who}"

    assert str(lm0 + Bot().greet("you")) == "Hello, you"


# -- the model -------------------------------------------------------------------------------------

def test_model_state_methods(lm0):
    lm = lm0 + "Word: " + gen("w", regex="[a-z]+", max_tokens=3)
    assert lm["w"] == lm.get("w") and lm.get("nope", 1) == 1 and "w" in lm
    assert lm.log_prob("w") <= 0 and lm.log_prob("nope", "d") == "d"
    lm2 = lm.set("k", "v")
    assert lm2["k"] == "v" and "k" not in lm and lm2.log_prob("k") is None
    assert "k" not in lm2.remove("k")
    assert lm.token_count() == len(lm0.engine.backend.tokenize(str(lm).encode(), add_bos=False))
    assert len(lm) == len(str(lm)) and str(lm.copy()) == str(lm)
    with pytest.raises(TypeError):
        lm["w"] = "x"
    with pytest.raises(KeyError):
        lm.remove("nope")


def test_model_stream_yields_states(lm0):
    states = [str(m) for m in lm0.stream() + "Go:" + gen(max_tokens=2)]
    assert states and states[-1].startswith("Go:")


def test_model_with_sampling_params(lm0):
    greedy = (lm0 + "Once upon a time" + gen("s", max_tokens=4))["s"]
    lm = lm0.with_sampling_params({"top_p": 1e-6, "top_k": 1, "min_p": None, "repetition_penalty": None})
    assert (lm + "Once upon a time" + gen("s", max_tokens=4, temperature=1.0))["s"] == greedy
    with pytest.raises(NotImplementedError, match="repetition_penalty"):
        lm0.with_sampling_params({"repetition_penalty": 1.3})
    with pytest.raises(NotImplementedError, match="with_step_config"):
        lm0.with_step_config({})


def test_named_gen_records_a_capture_event(lm0):
    lm = lm0 + "Say: " + gen("said", max_tokens=2)
    caps = [e for e in lm.engine.session.store.events() if isinstance(e, Capture) and e.name == "said"]
    assert caps and caps[-1].value == lm["said"]


# -- constructors --------------------------------------------------------------------------------

def test_llamacpp_accepts_guidance_keywords(lm0):
    lm = models.LlamaCpp(None, echo=False, compute_log_probs=False, enable_token_probabilities=False,
                         enable_top_k=False, top_k=3, enable_backtrack=True, enable_ff_tokens=True,
                         enable_monitoring=False, chat_template=None, n_ctx=8192, seed=1, logits_all=True)
    lm += "Hi" + gen("x", max_tokens=1)
    token = [e for e in lm.engine.session.store.events() if type(e).__name__ == "Token" and e.kind == 1][-1]
    assert len(token.top) == 3 and token.prob == token.prob  # recording stays on: probabilities, top-k


def test_llamacpp_passes_llama_cpps_own_options_on(lm0):
    """llama_cpp.Llama's storage and compute options reach it as they are: the same program, the
    same tokens (flash attention and an f16 KV cache change no greedy choice here), and the trace
    says which options the model was loaded with."""
    import llama_cpp

    lm = models.LlamaCpp(None, echo=False, flash_attn=True, use_mlock=False, type_k=llama_cpp.GGML_TYPE_F16,
                         n_threads_batch=1, chat_format="chatml")
    llm = lm.engine.backend._llm
    assert llm.context_params.flash_attn_type == llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
    assert llm.context_params.type_k == llama_cpp.GGML_TYPE_F16 and llm.context_params.n_threads_batch == 1
    assert lm.engine.backend is not lm0.engine.backend  # other options, another backend
    a = lm + "The capital of France is" + gen("x", max_tokens=4)
    b = lm0 + "The capital of France is" + gen("x", max_tokens=4)
    assert a["x"] == b["x"]
    notes = [e.text for e in lm.engine.session.store.events() if type(e).__name__ == "Message"
             and e.text.startswith("model: ")]
    assert any("flash_attn=True" in n and "chat_format='chatml'" in n for n in notes)
    assert models.LlamaCpp(None, flash_attn=True, use_mlock=False, type_k=llama_cpp.GGML_TYPE_F16,
                           n_threads_batch=1, chat_format="chatml").engine.backend is lm.engine.backend


def test_constructors_refuse_what_cannot_apply():
    with pytest.raises(TypeError, match="bogus"):
        models.LlamaCpp(bogus=1)
    with pytest.raises(NotImplementedError, match="embedding: an embedding context gives no next-token logits"):
        models.LlamaCpp(embedding=True)
    with pytest.raises(NotImplementedError, match="draft_model.*vocab_only"):
        models.LlamaCpp(vocab_only=True, draft_model=object())
    with pytest.raises(NotImplementedError, match="OpenAI"):
        models.OpenAI("gpt-4o")
    with pytest.raises(NotImplementedError, match="image"):
        image("x.png")


def test_chat_template_argument_sets_the_role_markers(lm0):
    class Template:
        def get_role_start(self, role):
            return f"<{role}>"

        def get_role_end(self, role):
            return f"</{role}>"

    lm = models.LlamaCpp(chat_template=Template, monitoring=False)
    with user():
        lm += "hi"
    lm += "."
    assert str(lm) == "<user>hi</user>."
