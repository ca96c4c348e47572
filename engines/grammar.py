"""Grammar nodes of the prompt-program API and their lowering to llguidance's Lark dialect.

Nodes are immutable values; ``+`` joins them.  ``to_lark`` turns a node into a
complete grammar whose captures carry the names given to ``gen``, ``select``,
``regex`` and ``json``.  llguidance does all the parsing; nothing here
interprets the grammar.
"""

from __future__ import annotations

import json as _json
from dataclasses import dataclass, field
from typing import Callable, Sequence

_ANY = r"(?s:.*)"


class GrammarNode:
    """Base of every grammar value; ``a + b`` is a sequence."""

    kind = "grammar"

    def __add__(self, other: "GrammarNode | str") -> "Join":
        return Join((self, _as_node(other)))

    def __radd__(self, other: "GrammarNode | str") -> "Join":
        return Join((_as_node(other), self))

    # -- lowering ---------------------------------------------------------
    def lower(self, ctx: "_LarkBuilder") -> str:
        raise NotImplementedError

    @property
    def label(self) -> str:
        """Name shown in the trace tree."""
        return getattr(self, "name", None) or ""

    def walk(self):
        yield self


def _as_node(x: "GrammarNode | str") -> GrammarNode:
    if isinstance(x, GrammarNode):
        return x
    if isinstance(x, str):
        return Literal(x)
    raise TypeError(f"cannot use {type(x).__name__} in a grammar")


@dataclass(frozen=True)
class Literal(GrammarNode):
    text: str
    kind = "literal"

    def lower(self, ctx):
        return _lark_string(self.text) if self.text else '""'


@dataclass(frozen=True)
class Join(GrammarNode):
    parts: tuple[GrammarNode, ...]
    kind = "join"

    def __add__(self, other):
        return Join(self.parts + (_as_node(other),))

    def lower(self, ctx):
        return " ".join(p.lower(ctx) for p in self.parts) or '""'

    def walk(self):
        yield self
        for p in self.parts:
            yield from p.walk()

    @property
    def label(self) -> str:
        return " + ".join(p.label for p in self.parts if p.label)


@dataclass(frozen=True)
class Gen(GrammarNode):
    name: str | None = None
    regex: str | None = None
    stop: tuple[str, ...] = ()
    stop_regex: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    list_append: bool = False
    tools: tuple[Callable, ...] = ()
    kind = "gen"

    def lower(self, ctx):
        attrs = []
        capture = self.name
        if self.regex is not None:
            ctx.regex(self.regex, f"gen({self.name!r}, regex=...)" if self.name else "gen(regex=...)")
            if self.max_tokens is not None:
                # The budget can cut the regex before it matches: the loop checks the captured text.
                capture = capture or ctx.internal_capture()
                ctx.cut_checks.append(CutCheck(capture, self.regex, int(self.max_tokens), self.name))
        if capture:
            ctx.capture(capture)
            attrs.append(f"capture={_lark_string(capture)}")
        if self.stop_regex is not None:
            attrs.append(f"stop=/{_lark_regex(self.stop_regex)}/")
        elif len(self.stop) == 1:
            attrs.append(f"stop={_lark_string(self.stop[0])}")
        elif self.stop:
            attrs.append("stop=/" + "|".join(_lark_regex(_re_escape(s)) for s in self.stop) + "/")
        if self.max_tokens is not None:
            attrs.append(f"max_tokens={int(self.max_tokens)}")
        if self.temperature is not None:
            attrs.append(f"temperature={float(self.temperature)}")
        body = f"/{_lark_regex(self.regex if self.regex is not None else _ANY)}/"
        return ctx.rule("gen", attrs, body)


@dataclass(frozen=True)
class Select(GrammarNode):
    options: tuple[GrammarNode, ...]
    name: str | None = None
    list_append: bool = False
    kind = "select"

    def lower(self, ctx):
        if not self.options:
            raise ValueError("select() needs at least one option")
        if self.name:
            ctx.capture(self.name)
        ctx.optional += 1  # a capture inside one option is not matched when another option is taken
        try:
            body = " | ".join(o.lower(ctx) for o in self.options)
        finally:
            ctx.optional -= 1
        return ctx.rule("select", [f"capture={_lark_string(self.name)}"] if self.name else [], body)

    def walk(self):
        yield self
        for o in self.options:
            yield from o.walk()


@dataclass(frozen=True)
class Regex(GrammarNode):
    pattern: str
    name: str | None = None
    list_append: bool = False
    kind = "regex"

    def lower(self, ctx):
        ctx.regex(self.pattern, f"regex(name={self.name!r})" if self.name else "regex()")
        if self.name:
            ctx.capture(self.name)
        return ctx.rule("regex", [f"capture={_lark_string(self.name)}"] if self.name else [],
                        f"/{_lark_regex(self.pattern)}/")


@dataclass(frozen=True)
class Json(GrammarNode):
    schema: str  # JSON text
    name: str | None = None
    list_append: bool = False
    kind = "json"

    def lower(self, ctx):
        if self.name:
            ctx.capture(self.name)
        return ctx.rule("json", [f"capture={_lark_string(self.name)}"] if self.name else [],
                        f"%json {self.schema}")


#: Prefix of the captures the engine adds for its own checks; never shown as the program's captures.
INTERNAL_CAPTURE = "__engine_"


@dataclass(frozen=True)
class CutCheck:
    """A ``gen(regex=..., max_tokens=N)``: when the budget runs out, llguidance ends the regex where it is."""

    capture: str  # the capture holding the gen's text (an internal one for an unnamed gen)
    pattern: str
    max_tokens: int
    name: str | None  # the program's name for the gen


@dataclass(frozen=True)
class Lowered:
    """A grammar in llguidance's Lark, with what the loop needs to check its result."""

    lark: str
    #: captures matched on every path through the grammar (none of them inside a select option)
    always: frozenset[str] = frozenset()
    #: (pattern, description) of every regex matched on every path: an empty language can never match
    regexes: tuple[tuple[str, str], ...] = ()
    cut_checks: tuple[CutCheck, ...] = ()


@dataclass
class _LarkBuilder:
    rules: list[str] = field(default_factory=list)
    optional: int = 0  # depth of select options around the node being lowered
    always: set[str] = field(default_factory=set)
    names: list[str] = field(default_factory=list)  # every capture name, with repeats
    regexes: list[tuple[str, str]] = field(default_factory=list)
    cut_checks: list[CutCheck] = field(default_factory=list)
    n_internal: int = 0

    def rule(self, prefix: str, attrs: Sequence[str], body: str) -> str:
        name = f"{prefix}_{len(self.rules)}"
        head = f"{name}[{', '.join(attrs)}]" if attrs else name
        self.rules.append(f"{head}: {body}")
        return name

    def capture(self, name: str) -> None:
        self.names.append(name)
        if not self.optional:
            self.always.add(name)

    def regex(self, pattern: str, what: str) -> None:
        if not self.optional:
            self.regexes.append((pattern, what))

    def internal_capture(self) -> str:
        self.n_internal += 1
        return f"{INTERNAL_CAPTURE}{self.n_internal}"


def lower(node: GrammarNode) -> Lowered:
    """``node`` lowered to a complete Lark grammar, with its checks."""
    ctx = _LarkBuilder()
    start = node.lower(ctx)
    lark = "\n".join([f"start: {start}", *ctx.rules]) + "\n"
    # A name used twice in one grammar is reported twice: which report is the cut gen's is unknown.
    checks = tuple(c for c in ctx.cut_checks if ctx.names.count(c.capture) == 1)
    always = frozenset(n for n in ctx.always if ctx.names.count(n) == 1)
    return Lowered(lark, always, tuple(ctx.regexes), checks)


def to_lark(node: GrammarNode) -> str:
    """A complete Lark grammar for ``node``."""
    return lower(node).lark


def main_kind(node: GrammarNode) -> str:
    """The kind the trace shows for a node: the first non-literal part."""
    for n in node.walk():
        if n.kind not in ("join", "literal"):
            return n.kind
    return "literal"


def captures_appending(node: GrammarNode) -> set[str]:
    return {n.name for n in node.walk() if getattr(n, "list_append", False) and getattr(n, "name", None)}


def _lark_string(text: str) -> str:
    # JSON string syntax is what llguidance's Lark reads for literals.
    return _json.dumps(text, ensure_ascii=False)


def _lark_regex(pattern: str) -> str:
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            out.append(pattern[i:i + 2])
            i += 2
            continue
        out.append("\\/" if c == "/" else c)
        i += 1
    return "".join(out)


def _re_escape(s: str) -> str:
    special = set(".^$*+?{}[]\\|()/")
    return "".join("\\" + c if c in special else c for c in s)


# -- the public constructors (guidance's names) ----------------------------------

def gen(name: str | None = None, *, regex: str | None = None, stop: str | Sequence[str] | None = None,
        stop_regex: str | None = None, max_tokens: int | None = None, temperature: float | None = None,
        list_append: bool = False, tools: Sequence[Callable] | None = None) -> Gen:
    """Generate text: free, or matching ``regex``; ends at ``stop`` (not kept), EOS or ``max_tokens``."""
    stops = (stop,) if isinstance(stop, str) else tuple(stop or ())
    if any(s == "" for s in stops):
        raise ValueError("stop strings must not be empty")
    return Gen(name, regex, stops, stop_regex, max_tokens, temperature, list_append, tuple(tools or ()))


def select(options: Sequence[GrammarNode | str], name: str | None = None, *, list_append: bool = False) -> Select:
    """Exactly one of ``options`` (strings or grammar nodes)."""
    return Select(tuple(_as_node(o) for o in options), name, list_append)


def regex(pattern: str, *, name: str | None = None, list_append: bool = False) -> Regex:
    """Text matching a (Rust-syntax) regular expression."""
    return Regex(pattern, name, list_append)


def json(name: str | None = None, *, schema: dict | str | None = None, list_append: bool = False,
         compact: bool = True) -> Json:
    """A JSON value valid for ``schema`` (any JSON object when omitted).

    ``compact`` fixes the separators: free whitespace lets small models run
    away in newlines.
    """
    if schema is None:
        schema = {"type": "object"}
    if isinstance(schema, str):
        schema = _json.loads(schema)
    if hasattr(schema, "model_json_schema"):  # a pydantic model class
        schema = schema.model_json_schema()
    schema = dict(schema)
    if compact:
        schema.setdefault("x-guidance", {"whitespace_flexible": False, "item_separator": ", ",
                                         "key_separator": ": "})
    return Json(_json.dumps(schema), name, list_append)
