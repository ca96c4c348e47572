"""The building blocks of prompt programs: guidance 0.3.1's library, signature for signature.

Each function returns a grammar node (see :mod:`engines.grammar`), or a
stateful value where guidance returns a stateful function (``gen(tools=...)``,
``capture`` of a stateful value).  Parameters that have no meaning on a local
model raise ``NotImplementedError`` naming them; no keyword is ignored.
"""

from __future__ import annotations

import json as _json
import re
import typing
from typing import Any, Callable, Iterable, Mapping, Sequence

from .errors import GrammarError, one_line
from .grammar import (Gen, GrammarNode, Json, LarkGrammar, Literal, Regex, Repeat, Rule, Select, SpecialToken,
                      Stateful, Substring, as_node, parse_tags, has_tags)

__all__ = ["gen", "select", "regex", "json", "capture", "one_or_more", "zero_or_more", "optional", "sequence",
           "at_most_n_repeats", "exactly_n_repeats", "substring", "string", "special_token", "lark",
           "gbnf_to_lark", "token_limit", "with_temperature", "image", "audio", "video", "gen_image",
           "gen_audio", "gen_video"]


def gen(name=None, *, max_tokens=None, list_append=False, regex=None, tools=None, hide_tool_call=False,
        stop: str | list[str] | None = None, stop_regex: str | list[str] | None = None, suffix: str | None = None,
        n=1, temperature=None, top_p=1.0, save_stop_text: bool | str = False,
        tool_choice: typing.Literal["auto", "required"] = "auto"):
    """Generate text: free, or matching ``regex``; ends at ``stop``/``stop_regex`` (not kept), EOS or
    ``max_tokens``.  ``suffix`` is added after the stop; ``save_stop_text`` captures the stop text
    (as ``name + "_stop_text"``, or under the name given).  ``tools``: functions or
    :class:`~engines.tools.Tool`\\ s the model may call by writing ``name(args)``.
    """
    if hide_tool_call:
        raise ValueError("`hide_tool_call` is deprecated")  # guidance 0.3.1 says the same
    if n != 1:
        raise NotImplementedError(f"gen(n={n!r}): one generation per call; put gen in a loop for several")
    if top_p is None or not 0 < float(top_p) <= 1:
        raise ValueError(f"gen(top_p={top_p!r}): top_p must be in (0, 1]")
    if tool_choice not in ("auto", "required"):
        raise ValueError(f"gen(tool_choice={tool_choice!r}): expected 'auto' or 'required'")
    if stop is not None and stop_regex is not None and not tools:
        raise ValueError("Cannot use both stop and stop_regex")
    stops = (stop,) if isinstance(stop, str) else tuple(stop or ())
    if any(s == "" for s in stops):
        raise ValueError("stop strings must not be empty")
    if isinstance(stop_regex, (list, tuple)):
        stop_regex = "|".join(stop_regex)
    if save_stop_text is False:
        stop_name = None
    elif save_stop_text is True:
        stop_name = f"{name}_stop_text"
    else:
        stop_name = str(save_stop_text)
    if max_tokens is not None and int(max_tokens) < 0:
        raise ValueError(f"gen(max_tokens={max_tokens!r}) must not be negative")
    node = Gen(name, regex, stops, stop_regex, max_tokens, temperature, bool(list_append), suffix, stop_name,
               float(top_p))
    if tools:
        from .tools import ToolGen, as_tools

        if suffix:
            raise ValueError("Cannot use `suffix` with `tools`")
        return ToolGen(node, as_tools(tools), tool_choice)
    if tool_choice != "auto":
        raise ValueError("gen(tool_choice=...) needs tools")
    return node


def select(options: Sequence[str | int | float | GrammarNode], name: str | None = None,
           list_append: bool = False) -> GrammarNode:
    """Exactly one of ``options`` (strings, numbers or grammars)."""
    alts = []
    for o in options:
        if isinstance(o, bool) or not isinstance(o, (str, int, float, GrammarNode)):
            raise ValueError(f"Option {o!r} is not a valid type: {type(o)}")
        alts.append(as_node(o, "select()"))
    return Select(tuple(alts), name, bool(list_append))


def regex(pattern, *, name=None) -> Regex:
    """Text matching a (Rust-syntax) regular expression."""
    return Regex(pattern, name)


def string(s: str) -> Literal:
    """The text ``s`` itself, as a grammar."""
    return Literal(s)


def json(name: str | None = None, *, schema: Any = None, temperature: float | None = None,
         max_tokens: int | None = None, separators: tuple[str, str] | None = None, whitespace_flexible: bool = False,
         whitespace_pattern: str | None = None, lenient: bool = False) -> Json:
    """A JSON value valid for ``schema``: a dict, a JSON string, a bool, a pydantic model or a
    ``TypeAdapter`` (any JSON object when omitted).  ``max_tokens`` bounds it: a small model can
    otherwise run on inside a string value.
    """
    schema = _schema_dict(schema)
    if whitespace_pattern is not None:
        whitespace_flexible = True
    if separators is None:
        separators = (",", ":") if whitespace_flexible else (", ", ": ")
    if len(separators) != 2:
        raise ValueError("separators must be a tuple of (item_separator, key_separator)")
    options = {"whitespace_flexible": bool(whitespace_flexible), "whitespace_pattern": whitespace_pattern,
               "item_separator": separators[0], "key_separator": separators[1], "coerce_one_of": True,
               "lenient": bool(lenient)}
    full = dict(schema) if schema is not None else {"type": "object"}
    full["x-guidance"] = options
    _validate_schema(full)
    if max_tokens is not None and int(max_tokens) < 0:
        raise ValueError(f"json(max_tokens={max_tokens!r}) must not be negative")
    return Json(_json.dumps(full, ensure_ascii=False), name, False, temperature, max_tokens)


def _schema_dict(schema) -> dict | None:
    if schema is False:
        raise ValueError("Unsatisfiable schema: schema is false")
    if schema is True or schema is None:
        return {} if schema is True else None
    if isinstance(schema, str):
        try:
            loaded = _json.loads(schema)
        except ValueError as e:
            raise ValueError(f"json(schema=...): the schema string is not JSON ({one_line(e)})") from None
        if not isinstance(loaded, dict):
            raise ValueError("JSON schema string must be a JSON object (i.e. a dictionary)")
        return loaded
    if isinstance(schema, Mapping):
        return dict(schema)
    try:
        import pydantic
    except ImportError:  # pragma: no cover - pydantic comes with our dependencies
        pydantic = None
    if pydantic is not None:
        if isinstance(schema, type) and issubclass(schema, pydantic.BaseModel):
            return schema.model_json_schema()
        if isinstance(schema, pydantic.TypeAdapter):
            return schema.json_schema()
    raise TypeError(f"Invalid schema type: {type(schema)}. Expected None, a boolean, a JSON schema object, "
                    "a pydantic model, or a pydantic TypeAdapter.")


def _validate_schema(schema: dict) -> None:
    import llguidance

    grm = llguidance.LLMatcher.grammar_from_json_schema(schema)
    is_err, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grm)
    if is_err:
        raise GrammarError(f"json(schema=...): {one_line(messages[0])}")


def capture(value, name):
    """Name what ``value`` produces: ``lm[name]`` after it runs.  A stateful value (a program call)
    is captured as the text it adds."""
    if isinstance(value, Stateful) or (isinstance(value, str) and has_tags(value)
                                       and isinstance(parse_tags(value), Stateful)):
        from .model import captured_call

        return captured_call(value, name)
    return _capture(as_node(value, "capture()"), name)


def _capture(node: GrammarNode, name: str, list_append: bool = False) -> GrammarNode:
    if isinstance(node, (Gen, Select, Regex, Json, Substring)) and not node.name:
        from dataclasses import replace

        kw = {"name": name}
        if hasattr(node, "list_append"):
            kw["list_append"] = list_append
        return replace(node, **kw)
    if isinstance(node, Rule) and node.capture is None:
        return Rule(node.value, node.name, name, list_append, node.temperature, node.max_tokens, node.what)
    return Rule(node, "capture", name, list_append, what="capture")


def _repeat(value, lo: int, hi: int | None) -> GrammarNode:
    return Repeat(as_node(value, "a repeat"), lo, hi)


def one_or_more(value) -> GrammarNode:
    """``value`` once or more."""
    return _repeat(value, 1, None)


def zero_or_more(value) -> GrammarNode:
    """``value`` any number of times, maybe none."""
    return _repeat(value, 0, None)


def optional(value) -> GrammarNode:
    """``value`` or nothing."""
    return _repeat(value, 0, 1)


def sequence(value, min_length: int = 0, max_length: int | None = None) -> GrammarNode:
    """``value`` between ``min_length`` and ``max_length`` times."""
    return _repeat(value, min_length, max_length)


def at_most_n_repeats(value, n_repeats: int) -> GrammarNode:
    return _repeat(value, 0, n_repeats)


def exactly_n_repeats(value, n_repeats: int) -> GrammarNode:
    return _repeat(value, n_repeats, n_repeats)


def _chunk_on_word(text: str) -> list[str]:
    return re.findall(r"(\s+|\w+|[^\s\w]+)", text)


def substring(target_string: str, *, chunk: typing.Literal["word", "character"] | Callable[[str], Iterable[str]] = "word",
              name: str | None = None) -> GrammarNode:
    """Any contiguous part of ``target_string``, cut at word boundaries (``chunk="word"``), at
    characters, or where ``chunk(text)`` cuts it."""
    if chunk == "word":
        chunks = _chunk_on_word(target_string)
    elif chunk == "character":
        chunks = list(target_string)
    elif callable(chunk):
        chunks = list(chunk(target_string))
        if "".join(chunks) != target_string:
            raise ValueError("chunk_on function must return a sequence of strings that can be joined to form "
                             "the target string")
    else:
        raise ValueError(f"Invalid `chunk` value: {chunk!r}. Expected 'word', 'character', or a function.")
    return Substring(tuple(chunks), name)


def special_token(token: str) -> SpecialToken:
    """A special token of the vocabulary, written ``<name>`` (``special_token("<end_of_turn>")``)."""
    m = re.fullmatch(r"<([^<>]+)>", token)
    if not m:
        raise ValueError(f"Only special tokens that start and end with '<' and '>' are currently supported, "
                         f"got: {token}")
    return SpecialToken(m.group(1))


def lark(lark_grammar: str, *, name: str | None = None, temperature: float | None = None,
         max_tokens: int | None = None) -> GrammarNode:
    """A grammar in llguidance's Lark dialect (``%json``, ``%regex``, ``max_tokens=`` attributes...)."""
    return Rule(LarkGrammar(lark_grammar), name or "lark", name, False, temperature, max_tokens, what="lark")


def gbnf_to_lark(gbnf_grammar: str) -> str:
    """A llama.cpp GBNF grammar converted to llguidance's Lark (best effort, llguidance's converter)."""
    from llguidance.gbnf_to_lark import gbnf_to_lark as convert

    return convert(gbnf_grammar)


def token_limit(value: GrammarNode, max_tokens: int) -> GrammarNode:
    """``value`` within ``max_tokens`` tokens."""
    from dataclasses import replace

    node = as_node(value, "token_limit()")
    if isinstance(node, (Gen, Json)):
        return replace(node, max_tokens=max_tokens)
    if isinstance(node, Rule):
        return Rule(node.value, node.name, node.capture, node.list_append, node.temperature, max_tokens, node.what)
    return Rule(node, "token_limit", max_tokens=max_tokens, what="token_limit")


def with_temperature(value: GrammarNode, temperature: float) -> GrammarNode:
    """``value`` sampled at ``temperature``."""
    from dataclasses import replace

    node = as_node(value, "with_temperature()")
    if isinstance(node, (Gen, Json)):
        return replace(node, temperature=temperature)
    if isinstance(node, Rule):
        return Rule(node.value, node.name, node.capture, node.list_append, temperature, node.max_tokens, node.what)
    return Rule(node, "with_temperature", temperature=temperature, what="with_temperature")


# -- what a local text model cannot do ---------------------------------------------------

def _multimodal(what: str):
    def refuse(*args, **kwargs):
        raise NotImplementedError(f"{what}: images, audio and video are not supported by guidance-tui's engines "
                                  "(text models on llama.cpp and transformers only)")

    refuse.__name__ = what
    return refuse


image = _multimodal("image")
audio = _multimodal("audio")
video = _multimodal("video")
gen_image = _multimodal("gen_image")
gen_audio = _multimodal("gen_audio")
gen_video = _multimodal("gen_video")
