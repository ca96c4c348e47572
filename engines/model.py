"""The immutable model object of prompt programs, guidance-style.

``lm + x`` returns a new model: ``x`` may be text (prompt), a grammar node
(``gen``, ``select``...), or a call of a ``@guidance`` program function.  Each
addition is a node of the trace tree whose ``base_id`` is the state it
continues from, so reusing one base model for several programs branches the
tree instead of breaking it.  Role blocks (``with user(): ...``) insert the
chat template's opener and closer lazily, at the next addition.
"""

from __future__ import annotations

import contextvars
import functools
import itertools
import re
from dataclasses import dataclass
from typing import Any, Callable

from tracing import NodeClose, NodeOpen

from .grammar import Gen, GrammarNode, Join, Literal, captures_appending, lower, main_kind
from .loop import CallResult, Engine

# -- role blocks -------------------------------------------------------------

_block_ids = itertools.count(1)


@dataclass(frozen=True)
class _RoleBlock:
    role: str
    uid: int


_active_roles: contextvars.ContextVar[tuple[_RoleBlock, ...]] = contextvars.ContextVar("roles", default=())


class role:
    """``with role("user"): lm += ...``: text added inside is that role's turn."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._token = None

    def __enter__(self) -> "role":
        block = _RoleBlock(self.name, next(_block_ids))
        self._token = _active_roles.set(_active_roles.get() + (block,))
        return self

    def __exit__(self, *exc) -> None:
        _active_roles.reset(self._token)


def system() -> role:
    return role("system")


def user() -> role:
    return role("user")


def assistant() -> role:
    return role("assistant")


# -- program functions --------------------------------------------------------

@dataclass(frozen=True)
class ProgramCall:
    fn: Callable
    args: tuple
    kwargs: dict

    @property
    def name(self) -> str:
        return getattr(self.fn, "__name__", "program")


def guidance(fn: Callable | None = None, *, stateless: bool = False, name: str | None = None):
    """Decorate ``def f(lm, ...): ...; return lm`` so ``lm + f(...)`` runs it as a named node."""

    def decorate(f: Callable):
        @functools.wraps(f)
        def call(*args, **kwargs) -> ProgramCall:
            return ProgramCall(f, args, kwargs)

        call.__guidance_program__ = True
        if name:
            call.__name__ = name
        return call

    return decorate(fn) if fn is not None else decorate


# -- the model ------------------------------------------------------------------

class Model:
    """Immutable: text so far, captures, and where in the trace tree this state sits."""

    __slots__ = ("engine", "_text", "_captures", "_node", "_container", "_roles", "_markers")

    def __init__(self, engine: Engine, *, _text: bytes = b"", _captures: dict | None = None, _node: int = 0,
                 _container: int = 0, _roles: tuple = (), _markers: dict | None = None) -> None:
        self.engine = engine
        self._text = _text
        self._captures = _captures or {}
        self._node = _node
        self._container = _container
        self._roles = _roles  # tuple of (_RoleBlock, role node id, container it opened in)
        if _markers is None:
            from .chat import role_markers

            b = engine.backend
            bos = b.token_bytes(b.bos_id).decode("utf-8", "replace") if b.bos_id is not None else ""
            _markers = role_markers(b.chat_template(), b.architecture, bos)
        self._markers = _markers

    def _replace(self, **kw) -> "Model":
        fields = dict(_text=self._text, _captures=self._captures, _node=self._node, _container=self._container,
                      _roles=self._roles, _markers=self._markers)
        fields.update(kw)
        return Model(self.engine, **fields)

    # -- reading --------------------------------------------------------------
    def __str__(self) -> str:
        return self._text.decode("utf-8", errors="replace")

    def __repr__(self) -> str:
        return f"<Model {self.engine.backend.model_id!r} text={str(self)[-40:]!r}>"

    @property
    def text_bytes(self) -> bytes:
        return self._text

    def __getitem__(self, name: str) -> Any:
        return self._captures[name]

    def __contains__(self, name: str) -> bool:
        return name in self._captures

    def get(self, name: str, default: Any = None) -> Any:
        return self._captures.get(name, default)

    @property
    def node_id(self) -> int:
        return self._node

    # -- adding -----------------------------------------------------------------
    def __add__(self, other: Any) -> "Model":
        lm = self._sync_roles()
        if isinstance(other, str):
            return lm._literal(other)
        if isinstance(other, ProgramCall):
            return lm._program(other)
        if isinstance(other, GrammarNode):
            if _is_literal(other):
                return lm._literal("".join(p.text for p in other.walk() if isinstance(p, Literal)))
            if isinstance(other, Gen) and other.tools:
                from .tools import run_with_tools

                return run_with_tools(lm, other)
            return lm._grammar(other)
        raise TypeError(f"cannot add {type(other).__name__} to a model")

    # Threads: a node's events (open, tokens, backtracks, close) are appended under the session's
    # lock, so another thread's never fall between them.  The store rebuilds text from the order of
    # events: a NodeOpen switches to its base's text, and tokens extend whatever text is current.
    # Events that do not start with a NodeOpen (a role's closer, a container's close) first make
    # sure the current text is this model's (``_resync``).

    def _open(self, kind: str, name: str, grammar: str = "") -> int:
        session = self.engine.session
        with session.lock:
            session.ensure_run(self.engine.backend)  # the default session's run starts at its first node
            if 0 < self._node < session.run_base and self._node not in session.carried:
                self._carry_over()
            node = session.next_node_id()
            parent = self._container if self._container >= session.run_base else 0
            session.store.append(NodeOpen(node_id=node, parent_id=parent, base_id=self._node, kind=kind,
                                          name=name, grammar=grammar))
            session.state_node = node
        return node

    def _carry_over(self) -> None:
        """This model continues a state of an earlier run of the session (a notebook's previous
        cell): repeat its text as prompt tokens of a node with the same id, so this run's trace
        has the whole text and the next node's ``base_id`` names a node of this trace."""
        session = self.engine.session
        session.carried.add(self._node)
        session.store.append(NodeOpen(node_id=self._node, parent_id=0, base_id=0, kind="literal",
                                      name="text from an earlier run"))
        self.engine.emit_prompt(self._node, 0, self._text)
        session.store.append(NodeClose(node_id=self._node, stop_reason="earlier run"))
        session.state_node = self._node

    def _close(self, node: int, stop_reason: str = "") -> None:
        session = self.engine.session
        with session.lock:
            session.store.append(NodeClose(node_id=node, stop_reason=stop_reason))
            session.state_node = node

    def _resync(self) -> None:
        """Make the store's current text this model's again (call with the session's lock held).

        Another thread's events, or a branch taken from an older model, leave it elsewhere; an
        empty literal node based on this model's node switches it back.
        """
        if self.engine.session.state_node != self._node:
            self._close(self._open("literal", ""))

    def _close_container(self, node: int, stop_reason: str = "") -> None:
        """Close ``node`` (a program, a role, a tool call) whose final text is this model's."""
        with self.engine.session.lock:
            self._resync()
            self._close(node, stop_reason)

    def _literal(self, text: str, kind: str = "literal") -> "Model":
        data = text.encode("utf-8")
        with self.engine.session.lock:
            node = self._open(kind, _preview(text))
            self.engine.emit_prompt(node, len(self._text), data)
            self._close(node)
        return self._replace(_text=self._text + data, _node=node)

    def _grammar(self, g: GrammarNode) -> "Model":
        return self.grammar_call(g)[0]

    def grammar_call(self, g: GrammarNode, *, stop_check=None, kind: str | None = None,
                     name: str | None = None) -> "tuple[Model, CallResult]":
        """Run one grammar as one trace node; returns the new model and the call's result."""
        lowered = lower(g)
        temps = [n.temperature for n in g.walk() if isinstance(n, Gen) and n.temperature is not None]
        with self.engine.session.lock:
            node = self._open(kind or main_kind(g), name if name is not None else g.label, lowered.lark)
            try:
                res = self.engine.run(self._text, lowered, node, stop_check=stop_check,
                                      temperature=max(temps) if temps else None)
            except BaseException as e:
                self._close(node, f"error: {type(e).__name__}")
                raise
            self._close(node, res.stop_reason)
        caps = dict(self._captures)
        appending = captures_appending(g)
        for cname, value, _lp in res.captures:
            if cname in appending:
                caps[cname] = list(caps.get(cname, [])) + [value]
            else:
                caps[cname] = value
        return self._replace(_text=res.text, _captures=caps, _node=node), res

    def _program(self, call: ProgramCall) -> "Model":
        node = self._open("program", call.name)
        inner = self._replace(_node=node, _container=node)
        try:
            out = call.fn(inner, *call.args, **call.kwargs)
        except BaseException:
            self._close(node, "error")
            raise
        if not isinstance(out, Model):
            self._close(node, "error")
            raise TypeError(f"program function {call.name}() must return the model, got {type(out).__name__}")
        out = out._sync_roles()  # close role blocks opened inside the function
        out._close_container(node)
        return out._replace(_node=node, _container=self._container)

    def _sync_roles(self) -> "Model":
        """Close the role turns that are no longer active, open the new ones."""
        active = _active_roles.get()
        mine = self._roles
        common = 0
        while common < len(mine) and common < len(active) and mine[common][0] is active[common]:
            common += 1
        if common == len(mine) and common == len(active):
            return self
        lm = self
        with self.engine.session.lock:
            for block, node, parent in reversed(mine[common:]):
                _, closer = lm._markers.get(block.role, ("", ""))
                data = closer.encode()
                lm._resync()  # the closer's tokens continue this model's text
                lm.engine.emit_prompt(node, len(lm._text), data)
                lm._close(node)
                lm = lm._replace(_text=lm._text + data, _node=node, _container=parent, _roles=lm._roles[:-1])
            for block in active[common:]:
                opener, _ = lm._markers.get(block.role, (f"{block.role}: ", "\n"))
                node = lm._open("role", block.role)
                data = opener.encode()
                lm.engine.emit_prompt(node, len(lm._text), data)
                lm = lm._replace(_text=lm._text + data, _node=node, _container=node,
                                 _roles=lm._roles + ((block, node, lm._container),))
        return lm


def _is_literal(g: GrammarNode) -> bool:
    return all(isinstance(n, (Literal, Join)) for n in g.walk())


def _preview(text: str, n: int = 24) -> str:
    one = re.sub(r"\s+", " ", text).strip()
    return one if len(one) <= n else one[: n - 1] + "…"
