"""``gen(tools=[fn])``: the model writes a call such as ``add(11, 9)``, the tool runs,
its result is inserted, and generation continues.

The call is spotted in the generated text after every token; text past the
closing parenthesis is backtracked (reason ``tool``).  A ``@guidance`` tool
appends to the model itself (the seed's ``add``); a plain function's return
value is inserted as `` = value``.  ``tool_choice="required"`` makes the first
thing generated a call.  A gen with tools is stateful (as in guidance): joined
with text or grammar by ``+``, the parts run one after the other, so the tools
still apply.
"""

from __future__ import annotations

import inspect
import re
import textwrap
import traceback
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from tracing import Message

from .grammar import Gen, Join, Literal, Regex, Select, Stateful

_ARGS = r"[^()\n]*"
_ARGS_BOUNDED = r"[^()\n]{0,80}"  # a forced call cannot run on inside its parentheses


@dataclass(frozen=True)
class GrammarFormat:
    syntax: str  # "lark" or "regex"
    definition: str
    type: str = "grammar"


@dataclass(frozen=True)
class FunctionTool:
    parameters: Any = None  # a pydantic model or a JSON schema dict (kept for the description only)
    type: str = "function"

    @classmethod
    def from_callable(cls, fn: Callable) -> "FunctionTool":
        return cls(parameters={name: p.annotation for name, p in inspect.signature(fn).parameters.items()})


@dataclass(frozen=True)
class CustomTool:
    format: GrammarFormat
    type: str = "custom"


@dataclass
class Tool:
    """A tool the model may call (guidance's ``Tool``): ``name(args)`` in the generated text."""

    name: str
    description: str
    tool: Any
    callable: Callable
    exc_formatter: Callable | None = None

    def call(self, *args, **kwargs) -> Any:
        """Run the tool; an exception becomes its formatted text (as guidance does)."""
        try:
            return self.callable(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - the model sees what went wrong
            if self.exc_formatter is None:
                return "".join(traceback.format_exception(type(e), e, e.__traceback__))
            return self.exc_formatter(type(e), e, e.__traceback__)

    @classmethod
    def from_callable(cls, callable: Callable, *, name: str | None = None, description: str | None = None,
                      parameters=None) -> "Tool":
        from .program import GuidanceFunction

        if isinstance(callable, GuidanceFunction):
            raise TypeError("An @guidance-wrapped function was passed to Tool.from_callable: pass it in "
                            "gen(tools=[...]) directly")
        tool = FunctionTool(parameters) if parameters is not None else FunctionTool.from_callable(callable)
        return cls(name or callable.__name__, description or textwrap.dedent((callable.__doc__ or "").strip()),
                   tool, callable)

    @classmethod
    def from_regex(cls, pattern: str, callable: Callable, *, name: str | None = None,
                   description: str | None = None) -> "Tool":
        return cls(name or callable.__name__, description or (callable.__doc__ or "").strip(),
                   CustomTool(GrammarFormat("regex", pattern)), callable)

    @classmethod
    def from_lark(cls, lark: str, callable: Callable, *, name: str | None = None,
                  description: str | None = None) -> "Tool":
        return cls(name or callable.__name__, description or (callable.__doc__ or "").strip(),
                   CustomTool(GrammarFormat("lark", lark)), callable)

    @classmethod
    def from_grammar(cls, grammar, callable: Callable, *, name: str | None = None,
                     description: str | None = None) -> "Tool":
        return cls.from_lark(grammar.ll_grammar(), callable, name=name, description=description)

    def with_name(self, name: str) -> "Tool":
        return self if name == self.name else replace(self, name=name)

    def to_openai_style(self) -> dict:
        if isinstance(self.tool, CustomTool):
            f = self.tool.format
            return {"type": "custom", "custom": {"name": self.name, "description": self.description, "format": {
                "type": "grammar", "grammar": {"syntax": f.syntax, "definition": f.definition}}}}
        params = self.tool.parameters
        schema = params.model_json_schema() if hasattr(params, "model_json_schema") else params
        return {"type": "function", "function": {"name": self.name, "description": self.description,
                                                 "parameters": schema, "strict": True}}

    # -- our call syntax -------------------------------------------------------------
    def matches_args(self, raw: str) -> bool:
        if not isinstance(self.tool, CustomTool):
            return True
        from .grammar import LarkGrammar, Regex as _Regex

        f = self.tool.format
        node = _Regex(f.definition) if f.syntax == "regex" else LarkGrammar(f.definition)
        return node.match(raw) is not None


def as_tools(tools) -> dict[str, "Tool | Callable"]:
    """{name: tool} from functions, ``@guidance`` functions and Tools; duplicate names are an error."""
    out: dict[str, Any] = {}
    for t in tools if isinstance(tools, (list, tuple)) else [tools]:
        if isinstance(t, Tool):
            name = t.name
        elif callable(t):
            name = getattr(t, "__name__", None) or str(t)
        else:
            raise ValueError(f"Unsupported tool type: {type(t)}")
        if name in out:
            raise ValueError(f"Duplicate tool name: {name}")
        out[name] = t
    return out


@dataclass(frozen=True, eq=False)
class ToolGen(Stateful):
    """``gen(..., tools=...)``: generation interleaved with tool calls."""

    gen: Gen
    tools: dict = field(default_factory=dict)
    tool_choice: str = "auto"

    @property
    def name(self) -> str:
        return self.gen.name or "gen"


_SIMPLE_TYPES = {"int": int, "float": float, "bool": bool}


def _convert(fn: Callable, args: list[str]) -> list:
    """Arguments as the model wrote them, converted where the function annotates int/float/bool."""
    try:
        params = list(inspect.signature(fn, eval_str=True).parameters.values())
    except (TypeError, ValueError, NameError):  # NameError: an annotation that does not resolve
        try:
            params = list(inspect.signature(fn).parameters.values())
        except (TypeError, ValueError):
            return args
    if getattr(fn, "__guidance_program__", False):
        params = params[1:] if params and params[0].name == "lm" else params
    out = []
    for i, a in enumerate(args):
        ann = params[i].annotation if i < len(params) else inspect.Parameter.empty
        ann = _SIMPLE_TYPES.get(ann, ann) if isinstance(ann, str) else ann  # unevaluated: `from __future__ import annotations`
        try:
            out.append(ann(a) if ann in (int, float) else (a.lower() == "true") if ann is bool else a)
        except ValueError:
            out.append(a)
    return out


def run_with_tools(lm, tg: ToolGen):
    g = tg.gen
    tools = tg.tools
    names = b"|".join(re.escape(n.encode()) for n in tools)
    pattern = re.compile(rb"\b(" + names + rb")\((" + _ARGS.encode() + rb")\)")

    def stop_check(out: bytes) -> int | None:
        m = pattern.search(out)
        return m.end() if m else None

    remaining = g.max_tokens
    plain = replace(g, name=None, list_append=False)
    start = len(lm.text_bytes)
    log_prob = 0.0
    required = tg.tool_choice == "required"
    while True:
        before = len(lm.text_bytes)
        if required:  # the first thing generated is a call of one of the tools
            call = Select(tuple(Join((Literal(f"{n}("), Regex(_ARGS_BOUNDED), Literal(")"))) for n in tools))
            lm, res = lm.grammar_call(call, kind="gen", name=g.name or "")
            res.stop_reason = "tool"
            required = False
        else:
            step = replace(plain, max_tokens=remaining)
            lm, res = lm.grammar_call(step, stop_check=stop_check, name=g.name or "")
        log_prob += res.log_prob
        if remaining is not None:
            remaining -= res.generated
        if res.stop_reason != "tool":
            break
        m = pattern.search(lm.text_bytes[before:])
        name, raw_args = m.group(1).decode(), m.group(2).decode()
        lm = _call_tool(lm, tools[name], name, raw_args)
        if remaining is not None and remaining <= 0:
            break
    if g.name:
        value = lm.text_bytes[start:].decode("utf-8", errors="replace")
        lm = lm.set_capture(g.name, value, log_prob, list_append=g.list_append)
    return lm


def _call_tool(lm, tool, name: str, raw_args: str):
    node = lm._open("tool_call", f"{name}({raw_args})")
    inner = lm._replace(_node=node, _container=node)
    try:
        if isinstance(tool, Tool):
            if isinstance(tool.tool, CustomTool):
                if not tool.matches_args(raw_args):
                    raise ValueError(f"the arguments {raw_args!r} do not match the tool's {tool.tool.format.syntax}")
                result = tool.call(raw_args)
            else:
                args = [a.strip().strip("\"'") for a in raw_args.split(",") if a.strip()]
                result = tool.call(*_convert(tool.callable, args))
            inner = inner + f" = {result}"
        else:
            args = [a.strip().strip("\"'") for a in raw_args.split(",") if a.strip()]
            if getattr(tool, "__guidance_program__", False):
                inner = inner + tool(*_convert(tool, args))
            else:
                inner = inner + f" = {tool(*_convert(tool, args))}"
    except Exception as e:  # a failing tool is reported in the trace, not fatal to the program
        lm.engine.session.store.append(Message(level="error", text=f"tool {name}({raw_args}) failed: {e}"))
        inner = inner + f" = error: {e}"
    inner._close_container(node, "tool")
    return inner._replace(_node=node, _container=lm._container)
