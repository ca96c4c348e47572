"""guidance 0.3.1's program API without a model: the signatures, the lowering of its building
blocks to llguidance's Lark, and ``import guidance`` served by the runner (no model needed)."""

from __future__ import annotations

import inspect
import sys

import pytest

import engines
from engines import models
from engines.grammar import lower

# Parameter names and defaults of guidance 0.3.1 (read from its installed source).
GUIDANCE_SIGNATURES = {
    "gen": "(name=None, *, max_tokens=None, list_append=False, regex=None, tools=None, hide_tool_call=False, "
           "stop=None, stop_regex=None, suffix=None, n=1, temperature=None, top_p=1.0, save_stop_text=False, "
           "tool_choice='auto')",
    "select": "(options, name=None, list_append=False)",
    "json": "(name=None, *, schema=None, temperature=None, max_tokens=None, separators=None, "
            "whitespace_flexible=False, whitespace_pattern=None, lenient=False)",
    "regex": "(pattern, *, name=None)",
    "capture": "(value, name)",
    "one_or_more": "(value)",
    "zero_or_more": "(value)",
    "optional": "(value)",
    "sequence": "(value, min_length=0, max_length=None)",
    "at_most_n_repeats": "(value, n_repeats)",
    "exactly_n_repeats": "(value, n_repeats)",
    "substring": "(target_string, *, chunk='word', name=None)",
    "string": "(s)",
    "special_token": "(token)",
    "lark": "(lark_grammar, *, name=None, temperature=None, max_tokens=None)",
    "gbnf_to_lark": "(gbnf_grammar)",
    "token_limit": "(value, max_tokens)",
    "with_temperature": "(value, temperature)",
    "block": "(name=None, opener=None, closer=None)",
    "role": "(role)",
    "system": "()",
    "user": "()",
    "assistant": "()",
    "guidance": "(f=None, *, stateless=False, cache=False, dedent=True, model=None)",
}


def plain_signature(fn) -> str:
    sig = inspect.signature(fn)
    params = [p.replace(annotation=inspect.Parameter.empty) for p in sig.parameters.values()]
    return str(sig.replace(parameters=params, return_annotation=inspect.Signature.empty))


@pytest.mark.parametrize("name", sorted(GUIDANCE_SIGNATURES))
def test_signature_is_guidances(name):
    assert plain_signature(getattr(engines, name)) == GUIDANCE_SIGNATURES[name]


def test_model_constructors_take_guidances_parameters():
    llama = inspect.signature(models.LlamaCpp).parameters
    assert list(llama)[:7] == ["model", "echo", "chat_template", "enable_backtrack", "enable_ff_tokens",
                               "enable_monitoring", "sampling_params"]
    tf = inspect.signature(models.Transformers).parameters
    assert list(tf)[:3] == ["model", "tokenizer", "interpreter_cls"]


def test_model_has_guidances_public_methods():
    for name in ("copy", "get", "log_prob", "remove", "set", "stream", "with_sampling_params", "with_step_config",
                 "token_count", "__getitem__", "__contains__", "__len__", "__str__"):
        assert callable(getattr(engines.Model, name)), name


def test_lowering_uses_llguidances_attributes():
    lark = lower(engines.gen("x", stop=["\n", "."], save_stop_text=True, max_tokens=5)).lark
    assert 'stop_capture="x_stop_text"' in lark and "max_tokens=5" in lark
    lark = lower(engines.select(["a", 1], name="s", list_append=True)).lark
    assert '"__LIST_APPEND:s"' in lark and '"1"' in lark
    lark = lower(engines.token_limit("a" + engines.select(["b", "c"]), 3)).lark
    assert "max_tokens=3]: %lark {" in lark
    assert "substring_chunks" in lower(engines.substring("a b", name="q")).lark


def test_recursive_stateless_function_lowers_to_a_recursive_rule():
    @engines.guidance(stateless=True)
    def nested(lm):
        return lm + engines.select(["x", "(" + nested() + ")"])

    lark = lower(nested()).lark
    assert lark.startswith("start: nested_1") and '"(" nested_1 ")"' in lark
    assert nested().match("((x))") is not None and nested().match("((x)") is None


def test_match_reports_captures():
    m = (engines.select(["yes", "no"], name="a") + "!").match("no!")
    assert m["a"] == "no" and not m.partial


def test_json_schema_llguidance_rejects_is_an_error_at_once():
    with pytest.raises(ValueError):
        engines.json(schema={"type": "nonsense"})


def test_f_string_embeds_grammars():
    from engines.grammar import Gen, Join, parse_tags

    g = parse_tags(f"A: {engines.gen('x', max_tokens=2)}!")
    assert isinstance(g, Join) and isinstance(g.parts[1], Gen)


def test_runner_serves_import_guidance_in_the_script_only(tmp_path):
    from guidance_tui.run.runner import ScriptRun
    from tracing import Message

    if "guidance" in sys.modules:
        pytest.skip("a real guidance module is loaded in this process")
    script = tmp_path / "s.py"
    script.write_text(
        "import guidance\n"
        "from guidance import gen, select, models\n"
        "import guidance.library\n"
        "@guidance\n"
        "def f(lm):\n    return lm\n"
        "@guidance(stateless=True)\n"
        "def g(lm):\n    return lm + select(['a', 'b'])\n"
        "assert guidance.models.LlamaCpp is models.LlamaCpp\n"
        "print(g().ll_grammar().splitlines()[0])\n"
        "try:\n    import guidance.chat\nexcept ModuleNotFoundError as e:\n    print('no', e.name)\n")
    run = ScriptRun(str(script), record=tmp_path / "t.gtt", monitoring=False)
    assert run.run().status == "done"
    texts = [e.text for e in run.store.events() if isinstance(e, Message)]
    assert texts[0] == "guidance: using guidance-tui's engines (guidance is not installed here)"
    assert "start: g_1" in texts and "no guidance.chat" in texts
    assert "guidance" not in sys.modules
