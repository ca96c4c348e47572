"""``@guidance``: program functions, as in guidance 0.3.1.

``@guidance def f(lm, ...): ...; return lm`` makes ``f(...)`` a value that
``lm + f(...)`` runs as a named node of the trace.  With ``stateless=True``
(or a predicate on the arguments that says so) ``f(...)`` is a grammar
instead: ``f`` is called once with an empty grammar and what it builds is
lowered with the rest (so it may sit inside ``select``, repeats, and refer to
itself).  ``cache=True`` memoises ``f``; ``dedent=True`` (the default) strips
the indentation of multi-line strings written inside ``f``.
"""

from __future__ import annotations

import ast
import functools
import inspect
import textwrap
import threading
import types
from dataclasses import dataclass
from typing import Any, Callable

from .grammar import GrammarNode, Literal, Rule, RuleRef, Stateful


@dataclass(frozen=True, eq=False)
class ProgramCall(Stateful):
    """A stateful program function with its arguments, run when added to a model."""

    fn: Callable
    args: tuple
    kwargs: dict

    @property
    def name(self) -> str:
        return getattr(self.fn, "__name__", "program")


def guidance(f=None, *, stateless=False, cache=False, dedent=True, model=None):
    """Decorate a program function (guidance's signature; ``model`` is accepted and unused, as there)."""
    if f is None:
        return functools.partial(guidance, stateless=stateless, cache=cache, dedent=dedent, model=model)
    if dedent is True or dedent == "python":
        f = strip_multiline_string_indents(f)
    return GuidanceFunction(f, stateless=stateless, cache=cache)


class GuidanceFunction:
    """What ``@guidance`` returns: calling it gives a program call or (stateless) a grammar."""

    __guidance_program__ = True

    def __init__(self, f: Callable, *, stateless=False, cache=False) -> None:
        self.f = f
        self.stateless = stateless
        self.cache = cache
        self._impl = _make(functools.cache(f) if cache else f, f.__name__, stateless)
        functools.update_wrapper(self, f)
        try:
            sig = inspect.signature(f)
            self.__signature__ = sig.replace(parameters=list(sig.parameters.values())[1:])
        except (TypeError, ValueError):
            pass

    def __call__(self, *args, **kwargs):
        return self._impl(*args, **kwargs)

    def __get__(self, instance, owner=None):
        if instance is None:
            return self
        impl = _make(lambda lm, *a, **k: self.f(instance, lm, *a, **k), self.f.__name__, self.stateless)
        return functools.wraps(self.f)(lambda *a, **k: impl(*a, **k))

    def __repr__(self) -> str:
        return f"<GuidanceFunction {self.__qualname__}>"


def _make(f: Callable, name: str, stateless) -> Callable:
    local = threading.local()  # the reference a recursive stateless call returns, per thread

    def call(*args, **kwargs):
        if stateless is True or (callable(stateless) and stateless(*args, **kwargs)):
            ref = getattr(local, "ref", None)
            if ref is not None:
                return ref
            no_args = not args and not kwargs
            if no_args:
                local.ref = RuleRef()
            try:
                node = f(Literal(""), *args, **kwargs)
                if not isinstance(node, GrammarNode):
                    raise TypeError(f"stateless program function {name}() must return a grammar, "
                                    f"got {type(node).__name__} (does it use a model's state?)")
                rule = Rule(node, name, what="program")
                if no_args:
                    local.ref.set_target(rule)
            finally:
                if no_args:
                    del local.ref
            return rule
        return _named_call(f, name, args, kwargs)

    return call


def _named_call(f: Callable, name: str, args: tuple, kwargs: dict) -> ProgramCall:
    if getattr(f, "__name__", None) != name:
        f = functools.wraps(f)(functools.partial(f))
        f.__name__ = name  # type: ignore[attr-defined]
    return ProgramCall(f, args, kwargs)


# -- dedent ------------------------------------------------------------------------

class _Dedent(ast.NodeTransformer):
    """Multi-line string constants lose the indentation of the line they start on."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines

    def visit_JoinedStr(self, node):
        for value in node.values:
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                self._strip(value, node.lineno)
        return node

    def visit_Constant(self, node):
        if isinstance(node.value, str) and "\n" in node.value:
            self._strip(node, node.lineno)
        return node

    def _strip(self, node, lineno: int) -> None:
        line = self.lines[lineno - 1] if 0 < lineno <= len(self.lines) else ""
        indent = len(line) - len(line.lstrip())
        if indent:
            pad = " " * indent
            node.value = "\n".join(ln[indent:] if ln.startswith(pad) else ln for ln in node.value.split("\n"))


def strip_multiline_string_indents(f: Callable) -> Callable:
    """``f`` recompiled with its multi-line strings dedented (guidance's ``dedent=True``).

    A function whose source is not available (typed at a prompt, built by ``exec``), or that has
    no multi-line string, is returned as it is.  A closure is recompiled inside a function with
    the same free variables and keeps its cells (guidance refuses closures here).
    """
    try:
        source = textwrap.dedent(inspect.getsource(f))
    except (OSError, TypeError):
        return f
    lines = source.split("\n")
    # Drop the decorator lines and pad, so line numbers match the file for tracebacks.
    first = next((i for i, ln in enumerate(lines) if ln.lstrip().startswith(("def ", "async def "))), None)
    if first is None:  # a lambda or a callable object: nothing to rewrite
        return f
    body = "\n".join(lines[first:])
    try:
        parsed = ast.parse(body)
    except SyntaxError:
        return f
    if not any(isinstance(n, ast.Constant) and isinstance(n.value, str) and "\n" in n.value
               for n in ast.walk(parsed)):
        return f  # no multi-line string: nothing to dedent
    free = f.__code__.co_freevars
    padded = "\n" * (f.__code__.co_firstlineno + first - 1) + body
    tree = _Dedent(padded.split("\n")).visit(ast.parse(padded))
    if free:  # a closure: compile it inside a function that has the same free variables
        outer = ast.parse("def __guidance_outer__():\n    " + " = ".join(free) + " = None\n").body[0]
        outer.body.extend(tree.body)
        tree.body = [outer]
        ast.fix_missing_locations(tree)
    code = compile(tree, f.__code__.co_filename, "exec")
    const = _find_code(code, f.__name__)
    if const is None or const.co_freevars != free:
        return f
    g = types.FunctionType(const, f.__globals__, f.__name__, f.__defaults__, f.__closure__)
    g.__kwdefaults__ = f.__kwdefaults__
    g.__qualname__ = f.__qualname__
    g.__annotations__ = f.__annotations__
    g.__doc__ = f.__doc__
    g.__module__ = f.__module__
    return g


def _find_code(code: types.CodeType, name: str) -> "types.CodeType | None":
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            if const.co_name == name:
                return const
            inner = _find_code(const, name)
            if inner is not None:
                return inner
    return None


def is_program(x: Any) -> bool:
    return isinstance(x, GuidanceFunction) or getattr(x, "__guidance_program__", False)
