"""Grammar nodes of the prompt-program API and their lowering to llguidance's Lark dialect.

Nodes are immutable values; ``+`` joins them.  ``to_lark`` turns a node into a
complete grammar whose captures carry the names given to ``gen``, ``select``,
``regex``, ``json``, ``capture``...  llguidance does all the parsing; nothing
here interprets the grammar.  The public constructors (guidance 0.3.1's names
and signatures) are in :mod:`engines.library`.

A grammar node is stateless.  Values that need the model between two parts (a
``@guidance`` program call, ``gen(tools=...)``) are :class:`Stateful`; joining
one with text or grammar gives a :class:`Chain`, which the model adds part by
part, as guidance does with its ``Function``.
"""

from __future__ import annotations

import json as _json
import re
from dataclasses import dataclass, field
from typing import Sequence

_ANY = r"(?s:.*)"


# -- f-string tags (guidance's ``f"Answer: {gen('x')}"``) ---------------------------

_TAG_START, _TAG_END = "{{G|", "|G}}"
_TAG_RE = re.compile(re.escape(_TAG_START) + r"([^|]+)" + re.escape(_TAG_END))
_tag_pool: dict[str, object] = {}


def _tag(obj: object) -> str:
    key = str(id(obj))
    _tag_pool.setdefault(key, obj)
    return _TAG_START + key + _TAG_END


def parse_tags(text: str) -> "GrammarNode | Chain":
    """Text with embedded values (``f"...{gen('x')}..."``) back to a grammar or chain."""
    parts = _TAG_RE.split(text)
    out: GrammarNode | Chain = Literal(parts[0])
    for i, part in enumerate(parts[1:]):
        if i % 2 == 0:
            obj = _tag_pool.get(part)
            if obj is None:
                raise ValueError(f"unknown embedded value {part!r} in a string")
            out = out + obj
        elif part:
            out = out + Literal(part)
    return out


def has_tags(text: str) -> bool:
    return _TAG_START in text


# -- stateful values ------------------------------------------------------------------

class Stateful:
    """A value that runs against the model (a program call, a gen with tools); ``+`` chains it."""

    def __add__(self, other) -> "Chain":
        return Chain((self,)) + other

    def __radd__(self, other) -> "Chain":
        return Chain((_as_value(other),)) + self

    def __str__(self) -> str:
        return _tag(self)


@dataclass(frozen=True, eq=False)
class Chain(Stateful):
    """Parts added to a model one after the other."""

    parts: tuple = ()

    def __add__(self, other) -> "Chain":
        other = _as_value(other)
        more = other.parts if isinstance(other, Chain) else (other,)
        return Chain(self.parts + more)

    def __radd__(self, other) -> "Chain":
        return Chain((_as_value(other),)) + self


def _as_value(x):
    if isinstance(x, (GrammarNode, Stateful)):
        return x
    if isinstance(x, str):
        return parse_tags(x) if has_tags(x) else Literal(x)
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        return Literal(str(x))
    raise TypeError(f"cannot use {type(x).__name__} in a grammar")


def as_node(x, what: str = "a grammar") -> "GrammarNode":
    """``x`` as a grammar node: strings and numbers are literals; stateful values are refused."""
    v = _as_value(x)
    if isinstance(v, Stateful):
        raise ValueError(f"cannot use a stateful value ({_stateful_name(v)}) in {what}: "
                         "only stateless grammars (gen without tools, select, regex, json, "
                         "@guidance(stateless=True) functions) can be combined there")
    return v


def _stateful_name(v) -> str:
    name = getattr(v, "name", None)
    return f"{name}()" if name else type(v).__name__


# -- grammar nodes ------------------------------------------------------------------

class GrammarNode:
    """Base of every grammar value; ``a + b`` is a sequence."""

    kind = "grammar"

    def __add__(self, other):
        other = _as_value(other)
        if isinstance(other, Stateful):
            return Chain((self,)) + other
        if self.is_null:
            return other
        if other.is_null:
            return self
        left = self.parts if isinstance(self, Join) else (self,)
        return Join(left + (other,))

    def __radd__(self, other):
        other = _as_value(other)
        if isinstance(other, Stateful):
            return other + self
        return other + self

    def __str__(self) -> str:  # embeds the node in an f-string, as guidance does
        return _tag(self)

    def __getitem__(self, key):
        raise TypeError("grammar values have no captures: add them to a model first (lm += ...; lm[name])")

    @property
    def is_null(self) -> bool:
        """Matches the empty string and nothing else."""
        return False

    # -- lowering ---------------------------------------------------------
    def lower(self, ctx: "_LarkBuilder") -> str:
        raise NotImplementedError

    def ll_grammar(self, enforce_max_tokens: bool = True) -> str:
        """The grammar in llguidance's Lark (guidance's ``GrammarNode.ll_grammar``)."""
        return lower(self, enforce_max_tokens=enforce_max_tokens).lark

    def match(self, byte_string: str | bytes, allow_partial: bool = False, raise_exceptions: bool = False,
              enforce_max_tokens: bool = True) -> "Match | None":
        """Whether the grammar matches ``byte_string`` (all of it unless ``allow_partial``), with captures."""
        return _match(self, byte_string, allow_partial, raise_exceptions, enforce_max_tokens)

    @property
    def label(self) -> str:
        """Name shown in the trace tree."""
        return getattr(self, "name", None) or ""

    def walk(self):
        yield self

    def children(self) -> tuple["GrammarNode", ...]:
        return ()


def _as_node(x) -> GrammarNode:
    return as_node(x)


@dataclass(frozen=True)
class Literal(GrammarNode):
    text: str
    kind = "literal"

    @property
    def is_null(self) -> bool:
        return self.text == ""

    def lower(self, ctx):
        return _lark_string(self.text) if self.text else '""'


@dataclass(frozen=True)
class Join(GrammarNode):
    parts: tuple[GrammarNode, ...]
    kind = "join"

    @property
    def is_null(self) -> bool:
        return all(p.is_null for p in self.parts)

    def lower(self, ctx):
        return " ".join(p.lower(ctx) for p in self.parts if not p.is_null) or '""'

    def walk(self):
        yield self
        for p in self.parts:
            yield from p.walk()

    def children(self):
        return self.parts

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
    suffix: str | None = None
    stop_capture: str | None = None
    top_p: float = 1.0
    kind = "gen"

    def lower(self, ctx):
        attrs = []
        capture = self.name
        if self.regex is not None:
            ctx.regex(self.regex, f"gen({self.name!r}, regex=...)" if self.name else "gen(regex=...)")
        budget = self.max_tokens is not None and ctx.enforce_max_tokens
        if budget and not capture:
            capture = ctx.internal_capture()  # the loop needs the gen's text to tell why it stopped
        if budget and self.regex is not None:
            # The budget can cut the regex before it matches: the loop checks the captured text.
            ctx.cut_checks.append(CutCheck(capture, self.regex, int(self.max_tokens), self.name))
        if capture:
            ctx.capture(capture)
            attrs.append(f"capture={_lark_string(_capture_name(capture, self.list_append))}")
        if self.stop_regex is not None:
            attrs.append(f"stop=/{_lark_regex(self.stop_regex)}/")
        elif len(self.stop) == 1:
            attrs.append(f"stop={_lark_string(self.stop[0])}")
        elif self.stop:
            attrs.append("stop=/" + "|".join(_lark_regex(_re_escape(s)) for s in self.stop) + "/")
        stopped = self.stop_regex is not None or bool(self.stop)
        if self.suffix and not stopped:  # llguidance's suffix: a stop that is kept in the text
            attrs.append(f"suffix={_lark_string(self.suffix)}")
        if self.stop_capture:
            ctx.capture(self.stop_capture, optional=True)
            attrs.append(f"stop_capture={_lark_string(self.stop_capture)}")
        if budget:
            attrs.append(f"max_tokens={int(self.max_tokens)}")
            ctx.budget(capture, int(self.max_tokens))
        if self.temperature is not None:
            attrs.append(f"temperature={float(self.temperature)}")
        body = f"/{_lark_regex(self.regex if self.regex is not None else _ANY)}/"
        name = ctx.rule("gen", attrs, body)
        if self.suffix and stopped:  # llguidance takes one stop condition: the suffix follows the stop
            return f"{name} {_lark_string(self.suffix)}"
        return name


@dataclass(frozen=True)
class Select(GrammarNode):
    options: tuple[GrammarNode, ...]
    name: str | None = None
    list_append: bool = False
    kind = "select"

    @property
    def is_null(self) -> bool:
        return all(o.is_null for o in self.options)

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
        attrs = [f"capture={_lark_string(_capture_name(self.name, self.list_append))}"] if self.name else []
        return ctx.rule("select", attrs, body)

    def walk(self):
        yield self
        for o in self.options:
            yield from o.walk()

    def children(self):
        return self.options


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
        attrs = [f"capture={_lark_string(_capture_name(self.name, self.list_append))}"] if self.name else []
        return ctx.rule("regex", attrs, f"/{_lark_regex(self.pattern)}/")


@dataclass(frozen=True)
class Json(GrammarNode):
    schema: str  # JSON text, with the x-guidance options
    name: str | None = None
    list_append: bool = False
    temperature: float | None = None
    max_tokens: int | None = None
    kind = "json"

    def lower(self, ctx):
        attrs, _ = _rule_attrs(ctx, self.name, self.list_append, self.temperature, self.max_tokens)
        return ctx.rule("json", attrs, f"%json {self.schema}")


@dataclass(frozen=True)
class Repeat(GrammarNode):
    node: GrammarNode
    min: int
    max: int | None = None
    kind = "repeat"

    def __post_init__(self):
        if self.min < 0:
            raise ValueError("min must be >= 0")
        if self.max is not None and self.max < self.min:
            raise ValueError("max must be >= min")

    @property
    def is_null(self) -> bool:
        return self.node.is_null or self.min == self.max == 0

    def lower(self, ctx):
        ctx.optional += 1 if self.min == 0 else 0
        ctx.repeated += 1  # a capture inside is reported once per repetition
        try:
            inner = self.node.lower(ctx)
        finally:
            ctx.optional -= 1 if self.min == 0 else 0
            ctx.repeated -= 1
        inner = f"({inner})"
        if (self.min, self.max) == (0, None):
            body = f"{inner}*"
        elif (self.min, self.max) == (1, None):
            body = f"{inner}+"
        elif (self.min, self.max) == (0, 1):
            body = f"{inner}?"
        elif self.max is None:
            body = f"{inner}{{{self.min},}}"
        else:
            body = f"{inner}{{{self.min},{self.max}}}"
        return ctx.rule("repeat", [], body)

    def walk(self):
        yield self
        yield from self.node.walk()

    def children(self):
        return (self.node,)


@dataclass(frozen=True)
class Substring(GrammarNode):
    """Any contiguous run of ``chunks`` (whole words by default), llguidance's ``substring_chunks``."""

    chunks: tuple[str, ...]
    name: str | None = None
    kind = "substring"

    def lower(self, ctx):
        attrs = []
        if self.name:
            ctx.capture(self.name)
            attrs.append(f"capture={_lark_string(self.name)}")
        return ctx.rule("substring", attrs, "%regex " + _json.dumps({"substring_chunks": list(self.chunks)}))


@dataclass(frozen=True)
class SpecialToken(GrammarNode):
    """One special token of the model's vocabulary, by its text (``<end_of_turn>``)."""

    text: str
    kind = "special_token"

    def lower(self, ctx):
        return f"<{self.text}>"


@dataclass(frozen=True, eq=False)
class LarkGrammar(GrammarNode):
    """A grammar written in llguidance's Lark, embedded as a sub-grammar."""

    text: str
    kind = "lark"

    def lower(self, ctx):
        ctx.opaque = True  # its captures are its own: the checks cannot know which are always matched
        return ctx.rule("lark", [], "%lark {\n" + self.text.strip() + "\n}")


@dataclass(frozen=True, eq=False)
class Rule(GrammarNode):
    """A named part of a grammar with attributes: a capture, a token budget, a temperature.

    ``what`` is the kind the trace shows (``capture``, ``token_limit``, ``program``...).  A token
    budget or a temperature needs a terminal body: anything else is lowered as a sub-grammar, as
    guidance does.
    """

    value: GrammarNode
    name: str = "rule"
    capture: str | None = None
    list_append: bool = False
    temperature: float | None = None
    max_tokens: int | None = None
    what: str = "rule"

    @property
    def kind(self) -> str:  # type: ignore[override]
        return self.what

    @property
    def is_null(self) -> bool:
        return self.capture is None and self.value.is_null

    @property
    def label(self) -> str:
        return self.capture or (self.name if self.what == "program" else "") or self.value.label

    def lower(self, ctx):
        key = id(self)
        if key in ctx.named:  # a recursive reference, or the same rule used twice
            return ctx.named[key]
        rule_name = ctx.reserve(_rule_prefix(self.name))
        ctx.named[key] = rule_name
        attrs, budget = _rule_attrs(ctx, self.capture, self.list_append, self.temperature, self.max_tokens)
        if self.temperature is not None or budget:
            body = _sub_grammar(self.value, ctx)
        else:
            body = self.value.lower(ctx)
        ctx.define(rule_name, attrs, body)
        return rule_name

    def walk(self):
        yield self
        yield from self.value.walk()

    def children(self):
        return (self.value,)


@dataclass(frozen=True, eq=False)
class RuleRef(GrammarNode):
    """A reference to a rule defined later: recursive ``@guidance(stateless=True)`` functions."""

    target: list = field(default_factory=list)  # [Rule] once known
    kind = "rule_ref"

    def set_target(self, rule: Rule) -> None:
        if self.target:
            raise ValueError("the rule reference already has a target")
        self.target.append(rule)

    def lower(self, ctx):
        if not self.target:
            raise ValueError("a recursive grammar reference was never defined")
        return self.target[0].lower(ctx)

    def walk(self):
        yield self  # not into the target: it may contain this reference


def _sub_grammar(node: GrammarNode, ctx: "_LarkBuilder") -> str:
    """``node`` as an embedded ``%lark {...}`` grammar (rules with attributes need a terminal or this)."""
    if isinstance(node, Json) and not node.name and node.temperature is None and node.max_tokens is None:
        return f"%json {node.schema}"
    if isinstance(node, LarkGrammar):
        ctx.opaque = True
        return "%lark {\n" + node.text.strip() + "\n}"
    sub = ctx.child()
    start = node.lower(sub)
    return "%lark {\n" + "\n".join([f"start: {start}", *sub.rules]) + "\n}"


#: Prefix of the captures the engine adds for its own checks; never shown as the program's captures.
INTERNAL_CAPTURE = "__engine_"
#: guidance's (and llguidance's) marker of a list-append capture name.
LIST_APPEND = "__LIST_APPEND:"



def _rule_attrs(ctx, capture: str | None, list_append: bool, temperature: float | None,
                max_tokens: int | None) -> tuple[list[str], bool]:
    """A rule's capture, temperature and token-budget attributes, and whether the budget applies.

    A budget needs the rule's text to tell why it stopped: without a capture name, an internal one."""
    attrs = []
    budget = max_tokens is not None and ctx.enforce_max_tokens
    if budget and not capture:
        capture = ctx.internal_capture()
    if capture:
        ctx.capture(capture)
        attrs.append(f"capture={_lark_string(_capture_name(capture, list_append))}")
    if temperature is not None:
        attrs.append(f"temperature={float(temperature)}")
    if budget:
        attrs.append(f"max_tokens={int(max_tokens)}")
        ctx.budget(capture, int(max_tokens))
    return attrs, budget

def _capture_name(name: str, list_append: bool) -> str:
    return LIST_APPEND + name if list_append else name


def _rule_prefix(name: str) -> str:
    n = re.sub(r"[^0-9a-zA-Z_]", "_", name or "rule")
    n = re.sub(r"([a-z])([A-Z])", r"\1_\2", n).lower()
    return n if n and (n[0].isalpha() or n[0] == "_") else "r_" + n


@dataclass(frozen=True)
class CutCheck:
    """A ``gen(regex=..., max_tokens=N)``: when the budget runs out, llguidance ends the regex where it is."""

    capture: str  # the capture holding the gen's text (an internal one for an unnamed gen)
    pattern: str
    max_tokens: int
    name: str | None  # the program's name for the gen


@dataclass(frozen=True)
class Budget:
    """A part of the grammar with ``max_tokens``: the loop tells from its tokens whether it ran out."""

    capture: str
    max_tokens: int


@dataclass(frozen=True)
class Lowered:
    """A grammar in llguidance's Lark, with what the loop needs to check its result."""

    lark: str
    #: captures matched on every path through the grammar (none of them inside a select option)
    always: frozenset[str] = frozenset()
    #: (pattern, description) of every regex matched on every path: an empty language can never match
    regexes: tuple[tuple[str, str], ...] = ()
    cut_checks: tuple[CutCheck, ...] = ()
    #: token budgets on every path, each reported once (not inside a repeat)
    budgets: tuple[Budget, ...] = ()


@dataclass
class _LarkBuilder:
    rules: list[str] = field(default_factory=list)
    optional: int = 0  # depth of select options / optional repeats around the node being lowered
    repeated: int = 0  # depth of repeats around the node being lowered
    always: set[str] = field(default_factory=set)
    names: list[str] = field(default_factory=list)  # every capture name, with repeats
    regexes: list[tuple[str, str]] = field(default_factory=list)
    cut_checks: list[CutCheck] = field(default_factory=list)
    budgets: list[Budget] = field(default_factory=list)
    named: dict[int, str] = field(default_factory=dict)  # Rule identity -> its rule name
    counter: list[int] = field(default_factory=lambda: [0])  # shared with child builders
    enforce_max_tokens: bool = True
    opaque: bool = False  # an embedded Lark grammar: captures the checks know nothing about

    def reserve(self, prefix: str) -> str:
        self.counter[0] += 1
        return f"{prefix}_{self.counter[0]}"

    def define(self, name: str, attrs: Sequence[str], body: str) -> None:
        head = f"{name}[{', '.join(attrs)}]" if attrs else name
        self.rules.append(f"{head}: {body}")

    def rule(self, prefix: str, attrs: Sequence[str], body: str) -> str:
        name = self.reserve(prefix)
        self.define(name, attrs, body)
        return name

    def child(self) -> "_LarkBuilder":
        """A builder for an embedded grammar: its own rules, the same checks."""
        c = _LarkBuilder(optional=self.optional, repeated=self.repeated, always=self.always, names=self.names,
                         regexes=self.regexes, cut_checks=self.cut_checks, budgets=self.budgets, named={},
                         counter=self.counter, enforce_max_tokens=self.enforce_max_tokens)
        return c

    def capture(self, name: str, optional: bool = False) -> None:
        self.names.append(name)
        if self.repeated:
            self.names.append(name)  # reported any number of times: never a unique capture
        if not self.optional and not optional:
            self.always.add(name)

    def budget(self, capture: str, max_tokens: int) -> None:
        if not self.optional and not self.repeated:
            self.budgets.append(Budget(capture, max_tokens))

    def regex(self, pattern: str, what: str) -> None:
        if not self.optional:
            self.regexes.append((pattern, what))

    def internal_capture(self) -> str:
        self.counter[0] += 1
        return f"{INTERNAL_CAPTURE}{self.counter[0]}"


def lower(node: GrammarNode, *, enforce_max_tokens: bool = True) -> Lowered:
    """``node`` lowered to a complete Lark grammar, with its checks."""
    ctx = _LarkBuilder(enforce_max_tokens=enforce_max_tokens)
    start = node.lower(ctx)
    lark = "\n".join([f"start: {start}", *ctx.rules]) + "\n"
    # A name used twice in one grammar is reported twice: which report is the cut gen's is unknown.
    once = {n for n in ctx.names if ctx.names.count(n) == 1}
    checks = tuple(c for c in ctx.cut_checks if c.capture in once)
    budgets = tuple(b for b in ctx.budgets if b.capture in once)
    always = frozenset(n for n in ctx.always if n in once) if not ctx.opaque else frozenset()
    return Lowered(lark, always, tuple(ctx.regexes), checks, budgets)


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
    out = set()
    for n in node.walk():
        if getattr(n, "list_append", False):
            name = n.capture if isinstance(n, Rule) else getattr(n, "name", None)
            if name:
                out.add(name)
    return out


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
        if c == "\n":
            out.append("\\n")
        else:
            out.append("\\/" if c == "/" else c)
        i += 1
    return "".join(out)


def _re_escape(s: str) -> str:
    special = set(".^$*+?{}[]\\|()/")
    return "".join("\\" + c if c in special else c for c in s)


# -- matching text without a model (guidance's GrammarNode.match) ---------------------

class Match:
    """The captures of a grammar matched against text (guidance's ``Match``)."""

    def __init__(self, captures: dict, log_probs: dict, partial: bool) -> None:
        self.captures = captures
        self.log_probs = log_probs
        self.partial = partial

    def __getitem__(self, key):
        return self.captures[key]

    def __len__(self) -> int:
        return len(self.captures)

    def __bool__(self) -> bool:
        return True

    def __str__(self) -> str:
        return str(self.captures)

    def __repr__(self) -> str:
        return f"<Match captures={self.captures!r} partial={self.partial}>"


def _match(node: GrammarNode, data, allow_partial: bool, raise_exceptions: bool, enforce_max_tokens: bool):
    import llguidance

    from .errors import GrammarError, one_line

    data = data.encode() if isinstance(data, str) else bytes(data)
    m = llguidance.LLMatcher(llguidance.LLTokenizer("byte"), lower(node, enforce_max_tokens=False).lark,
                             log_level=0)
    if m.is_error():
        raise GrammarError(f"invalid grammar: {one_line(m.get_error())}")
    ok = m.consume_tokens(list(data)) if data else True
    if not ok:
        if raise_exceptions:
            raise ValueError(one_line(m.get_error() or "the text does not match the grammar"))
        return None
    matched = m.is_accepting()
    if not matched and not allow_partial:
        return None
    caps: dict = {}
    for name, value in m.get_captures():
        text = value.decode("utf-8", errors="replace")
        if name.startswith(LIST_APPEND):
            caps.setdefault(name[len(LIST_APPEND):], []).append(text)
        elif not name.startswith(INTERNAL_CAPTURE):
            caps[name] = text
    return Match(caps, {k: 0.0 for k in caps}, partial=not matched)
