"""The immutable model object of prompt programs, guidance-style.

``lm + x`` returns a new model: ``x`` may be text (prompt), a grammar node
(``gen``, ``select``...), a call of a ``@guidance`` program function, or a
chain of those.  Each addition is a node of the trace tree whose ``base_id`` is
the state it continues from, so reusing one base model for several programs
branches the tree instead of breaking it.  Blocks (``with user(): ...``,
``with block("name"): ...``) insert their opener and closer lazily, at the next
addition; a role's come from the model's chat template.
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import math
import queue
import re
import threading
from dataclasses import dataclass
from typing import Any, Iterator

from tracing import Capture, NodeClose, NodeOpen

from .grammar import (Chain, Gen, GrammarNode, Join, Json, Literal, Rule, Stateful, captures_appending, has_tags,
                      lower, main_kind, parse_tags)
from .loop import CallResult, Engine
from .program import GuidanceFunction, ProgramCall, guidance  # noqa: F401 - re-exported

# -- blocks and roles --------------------------------------------------------------

_block_ids = itertools.count(1)


@dataclass(frozen=True, eq=False)
class Block:
    """An open ``with`` block: a role turn (``role`` set) or a plain named block."""

    uid: int
    role: str | None = None
    name: str | None = None
    opener: str = ""
    closer: str = ""


_active_blocks: contextvars.ContextVar[tuple[Block, ...]] = contextvars.ContextVar("blocks", default=())


@contextlib.contextmanager
def block(name=None, opener=None, closer=None):
    """``with block("answer"): lm += ...``: ``lm["answer"]`` is the text added inside; ``opener``
    and ``closer`` (text) go around it."""
    new = Block(next(_block_ids), None, name, _block_text(opener, "opener"), _block_text(closer, "closer"))
    token = _active_blocks.set(_active_blocks.get() + (new,))
    try:
        yield
    finally:
        _active_blocks.reset(token)


def _block_text(x, what: str) -> str:
    if x is None:
        return ""
    if isinstance(x, str) and not has_tags(x):
        return x
    node = parse_tags(x) if isinstance(x, str) else x
    if isinstance(node, GrammarNode) and all(isinstance(n, (Literal, Join)) for n in node.walk()):
        return "".join(n.text for n in node.walk() if isinstance(n, Literal))
    raise NotImplementedError(f"block({what}=...): only text is supported as a block's {what}, "
                              "not a grammar or a program call")


@contextlib.contextmanager
def role(role: str):
    """``with role("user"): lm += ...``: text added inside is that role's turn."""
    new = Block(next(_block_ids), role)
    token = _active_blocks.set(_active_blocks.get() + (new,))
    try:
        yield
    finally:
        _active_blocks.reset(token)


def system():
    """The system turn (``with system(): lm += "You are..."``)."""
    return role("system")


def user():
    """The user's turn."""
    return role("user")


def assistant():
    """The assistant's turn: generate inside it."""
    return role("assistant")


@dataclass(frozen=True, eq=False)
class CapturedCall(Stateful):
    """``capture(program_call, name)``: the text the call adds, under ``name``."""

    value: Any
    name: str


def captured_call(value, name: str) -> CapturedCall:
    return CapturedCall(value, name)


# -- streaming (``lm.stream()``) --------------------------------------------------------

_stream_queues: contextvars.ContextVar[tuple[queue.Queue, ...]] = contextvars.ContextVar("streams", default=())


class ModelStream:
    """``lm.stream() + program``: iterating runs it in a thread and yields each model state."""

    def __init__(self, model: "Model", grammar=None, timeout: float = 5) -> None:
        self.model = model
        self.grammar = grammar
        self.timeout = timeout

    def __add__(self, grammar) -> "ModelStream":
        return ModelStream(self.model, grammar if self.grammar is None else self.grammar + grammar, self.timeout)

    def __iter__(self) -> Iterator["Model"]:
        events: queue.Queue = queue.Queue()
        ctx = contextvars.copy_context()

        def target():
            _stream_queues.set(_stream_queues.get() + (events,))
            try:
                self.model + (self.grammar if self.grammar is not None else "")
                events.put(None)
            except BaseException as e:  # noqa: BLE001 - handed to the iterating thread
                events.put(e)

        thread = threading.Thread(target=ctx.run, args=(target,), daemon=True)
        thread.start()
        while True:
            try:
                ev = events.get(timeout=self.timeout)
            except queue.Empty:
                if not thread.is_alive():
                    break
                continue
            if ev is None:
                break
            if isinstance(ev, BaseException):
                raise ev
            yield ev
        thread.join()


# -- the model ------------------------------------------------------------------

class Model:
    """Immutable: text so far, captures, and where in the trace tree this state sits."""

    __slots__ = ("engine", "_text", "_captures", "_log_probs", "_node", "_container", "_roles", "_markers",
                 "echo")

    def __init__(self, engine: Engine, *, _text: bytes = b"", _captures: dict | None = None,
                 _log_probs: dict | None = None, _node: int = 0, _container: int = 0, _roles: tuple = (),
                 _markers: dict | None = None, echo: bool = True) -> None:
        self.engine = engine
        self._text = _text
        self._captures = _captures or {}
        self._log_probs = _log_probs or {}
        self._node = _node
        self._container = _container
        self._roles = _roles  # tuple of (Block, block node id, container it opened in, text length at open)
        self.echo = echo  # guidance's display switch; we always record (accepted for compatibility)
        if _markers is None:
            from .chat import role_markers

            b = engine.backend
            bos = b.token_bytes(b.bos_id).decode("utf-8", "replace") if b.bos_id is not None else ""
            _markers = role_markers(b.chat_template(), b.architecture, bos)
        self._markers = _markers

    def _replace(self, **kw) -> "Model":
        fields = dict(_text=self._text, _captures=self._captures, _log_probs=self._log_probs, _node=self._node,
                      _container=self._container, _roles=self._roles, _markers=self._markers, echo=self.echo)
        fields.update(kw)
        return Model(self.engine, **fields)

    # -- reading --------------------------------------------------------------
    def __str__(self) -> str:
        return self._text.decode("utf-8", errors="replace")

    def __len__(self) -> int:
        return len(str(self))

    def __repr__(self) -> str:
        return f"<Model {self.engine.backend.model_id!r} text={str(self)[-40:]!r}>"

    @property
    def text_bytes(self) -> bytes:
        return self._text

    def __getitem__(self, name: str) -> Any:
        try:
            return self._captures[name]
        except KeyError:
            raise KeyError(f"Model does not contain the variable '{name}'") from None

    def __setitem__(self, key, value):
        raise TypeError("Model objects are immutable so you can't use __setitem__! Consider using the "
                        ".set(key, value) method instead to create a new updated model object.")

    def __contains__(self, name: str) -> bool:
        return name in self._captures

    def get(self, key: str, default: Any = None) -> Any:
        """The value of capture ``key``, or ``default``."""
        return self._captures.get(key, default)

    def set(self, key: str, value: "str | list[str]") -> "Model":
        """A new model with capture ``key`` set to ``value`` (its log-probability unknown: None)."""
        caps, lps = dict(self._captures), dict(self._log_probs)
        caps[key] = list(value) if isinstance(value, list) else value
        lps[key] = [None] * len(value) if isinstance(value, list) else None
        with self.engine.session.lock:  # recorded too: the trace shows every capture the program made
            for v in (value if isinstance(value, list) else [value]):
                self.engine.session.store.append(Capture(node_id=self._node, name=key, value=str(v),
                                                         append=isinstance(value, list)))
        return self._replace(_captures=caps, _log_probs=lps)

    def remove(self, key: str) -> "Model":
        """A new model without capture ``key`` (KeyError if it has none)."""
        caps, lps = dict(self._captures), dict(self._log_probs)
        caps.pop(key)
        lps.pop(key, None)
        return self._replace(_captures=caps, _log_probs=lps)

    def log_prob(self, key: str, default: Any = None) -> Any:
        """The log-probability of capture ``key`` (a list for a list-append capture), or ``default``.

        Summed over the tokens that produced it; forced tokens count as log 1 = 0.
        """
        if key not in self._captures:
            return default
        return self._log_probs.get(key)

    def token_count(self) -> int:
        """How many tokens the text so far is, in the model's vocabulary."""
        backend = self.engine.backend
        with backend.lock:
            return len(backend.tokenize(self._text, add_bos=False)) if self._text else 0

    def copy(self) -> "Model":
        """The same state (models are immutable: a copy is only another handle)."""
        return self._replace()

    def stream(self) -> ModelStream:
        """A stream: ``for part in lm.stream() + program: ...`` yields each state as it is reached."""
        return ModelStream(self)

    def with_sampling_params(self, sampling_params: dict) -> "Model":
        """A model sampling with guidance's ``SamplingParams``: ``top_p``, ``top_k``, ``min_p``
        (``repetition_penalty`` is not supported).  Greedy decoding (temperature 0) ignores them."""
        from dataclasses import replace

        params = dict(sampling_params or {})
        unknown = set(params) - {"top_p", "top_k", "min_p", "repetition_penalty"}
        if unknown:
            raise TypeError(f"with_sampling_params: unknown parameter(s): {', '.join(sorted(unknown))}")
        rp = params.get("repetition_penalty")
        if rp not in (None, 1, 1.0):
            raise NotImplementedError("with_sampling_params(repetition_penalty=...) is not supported by "
                                      "guidance-tui's engines")
        o = self.engine.options
        opts = replace(o, top_p=o.top_p if params.get("top_p") is None else float(params["top_p"]),
                       min_p=o.min_p if params.get("min_p") is None else float(params["min_p"]),
                       sample_top_k=o.sample_top_k if params.get("top_k") is None else int(params["top_k"]))
        engine = Engine(self.engine.backend, self.engine.session, opts)
        lm = self._replace()
        lm.engine = engine
        return lm

    @property
    def sampling_params(self) -> dict:
        o = self.engine.options
        return {"top_p": o.top_p, "top_k": o.sample_top_k or None, "min_p": o.min_p or None,
                "repetition_penalty": None}

    def with_step_config(self, step_config) -> "Model":
        raise NotImplementedError("with_step_config (step interjection) is not supported by guidance-tui's engines")

    @property
    def node_id(self) -> int:
        return self._node

    # -- adding -----------------------------------------------------------------
    def __add__(self, other: Any) -> "Model":
        if isinstance(other, str) and has_tags(other):
            other = parse_tags(other)
        lm = self._sync_roles()
        if isinstance(other, str):
            out = lm._literal(other) if other else lm
        elif isinstance(other, Chain):
            out = lm
            for part in other.parts:
                out = out + part
            return out
        elif isinstance(other, ProgramCall):
            out = lm._program(other)
        elif isinstance(other, CapturedCall):
            out = lm._captured(other)
        elif isinstance(other, Stateful):
            from .tools import ToolGen, run_with_tools

            if not isinstance(other, ToolGen):
                raise TypeError(f"cannot add {type(other).__name__} to a model")
            out = run_with_tools(lm, other)
        elif isinstance(other, GrammarNode):
            if other.is_null and not captures_appending(other) and not _has_capture(other):
                out = lm
            elif _is_literal(other):
                out = lm._literal("".join(p.text for p in other.walk() if isinstance(p, Literal)))
            else:
                out = lm._grammar(other)
        elif isinstance(other, GuidanceFunction):
            raise TypeError(f"cannot add the function {other.__name__} itself: call it, "
                            f"lm + {other.__name__}(...)")
        else:
            raise TypeError(f"cannot add {type(other).__name__} to a model")
        out = out._update_block_captures()
        for q in _stream_queues.get():
            q.put(out)
        return out

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
        temps = [n.temperature for n in g.walk() if isinstance(n, (Gen, Json, Rule)) and n.temperature is not None]
        top_ps = [n.top_p for n in g.walk() if isinstance(n, Gen) and n.top_p < 1.0]
        with self.engine.session.lock:
            node = self._open(kind or main_kind(g), name if name is not None else g.label, lowered.lark)
            try:
                res = self.engine.run(self._text, lowered, node, stop_check=stop_check,
                                      temperature=max(temps) if temps else None,
                                      top_p=min(top_ps) if top_ps else None)
            except BaseException as e:
                self._close(node, f"error: {type(e).__name__}")
                raise
            self._close(node, res.stop_reason)
        caps, lps = dict(self._captures), dict(self._log_probs)
        appending = captures_appending(g)
        fresh: set[str] = set()
        for cname, value, lp in res.captures:
            if cname in appending:
                if cname not in fresh:  # this call's items extend the list the model had
                    fresh.add(cname)
                    caps[cname] = list(_as_list(caps.get(cname)))
                    lps[cname] = list(_as_list(lps.get(cname), len(caps[cname])))
                caps[cname].append(value)
                lps[cname].append(lp)
            else:
                caps[cname] = value
                lps[cname] = lp
        return self._replace(_text=res.text, _captures=caps, _log_probs=lps, _node=node), res

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
            raise TypeError(f"The guidance function `{call.name}` did not return a model object! You need to "
                            f"return an updated model object at the end of your guidance function "
                            f"(got {type(out).__name__}).")
        out = out._sync_roles()  # close role blocks opened inside the function
        out._close_container(node)
        return out._replace(_node=node, _container=self._container)

    def _captured(self, c: CapturedCall) -> "Model":
        start = len(self._text)
        out = self + c.value
        value = out._text[start:].decode("utf-8", errors="replace")
        return out.set_capture(c.name, value)

    def set_capture(self, name: str, value: str, log_prob: float = math.nan,
                    list_append: bool = False) -> "Model":
        """A new model with capture ``name`` = ``value``, recorded as a Capture event of its node."""
        caps, lps = dict(self._captures), dict(self._log_probs)
        if list_append:
            caps[name] = list(_as_list(caps.get(name))) + [value]
            lps[name] = list(_as_list(lps.get(name), len(caps[name]) - 1)) + [log_prob]
        else:
            caps[name], lps[name] = value, log_prob
        with self.engine.session.lock:
            self.engine.session.store.append(Capture(node_id=self._node, name=name, value=value,
                                                     log_prob=log_prob, append=list_append))
        return self._replace(_captures=caps, _log_probs=lps)

    def _update_block_captures(self) -> "Model":
        """Named blocks still open capture the text added since they opened (as guidance does)."""
        named = [(b.name, start) for b, _, _, start in self._roles if b.name]
        if not named:
            return self
        caps, lps = dict(self._captures), dict(self._log_probs)
        for name, start in named:
            caps[name] = self._text[start:].decode("utf-8", errors="replace")
            lps[name] = None
        return self._replace(_captures=caps, _log_probs=lps)

    def _sync_roles(self) -> "Model":
        """Close the blocks that are no longer active, open the new ones."""
        active = _active_blocks.get()
        mine = self._roles
        common = 0
        while common < len(mine) and common < len(active) and mine[common][0] is active[common]:
            common += 1
        if common == len(mine) and common == len(active):
            return self
        lm = self
        with self.engine.session.lock:
            for blk, node, parent, start in reversed(mine[common:]):
                closer = lm._markers.get(blk.role, ("", ""))[1] if blk.role else blk.closer
                data = closer.encode()
                lm._resync()  # the closer's tokens continue this model's text
                lm.engine.emit_prompt(node, len(lm._text), data)
                lm._close(node)
                lm = lm._replace(_text=lm._text + data, _node=node, _container=parent, _roles=lm._roles[:-1])
                if blk.name:  # the block's capture: its text, closer included (as guidance does)
                    lm = lm.set_capture(blk.name, lm._text[start:].decode("utf-8", errors="replace"))
            for blk in active[common:]:
                if blk.role:
                    opener = lm._markers.get(blk.role, (f"{blk.role}: ", "\n"))[0]
                    node = lm._open("role", blk.role)
                else:
                    opener = blk.opener
                    node = lm._open("block", blk.name or "block")
                data = opener.encode()
                start = len(lm._text)
                lm.engine.emit_prompt(node, len(lm._text), data)
                lm = lm._replace(_text=lm._text + data, _node=node, _container=node,
                                 _roles=lm._roles + ((blk, node, lm._container, start),))
        return lm


def _as_list(x, n: int = 0) -> list:
    if isinstance(x, list):
        return x
    if x is None:
        return [None] * n
    return [x]


def _has_capture(g: GrammarNode) -> bool:
    return any(getattr(n, "name", None) if not isinstance(n, Rule) else n.capture for n in g.walk())


def _is_literal(g: GrammarNode) -> bool:
    return all(isinstance(n, (Literal, Join)) for n in g.walk())


def _preview(text: str, n: int = 24) -> str:
    one = re.sub(r"\s+", " ", text).strip()
    return one if len(one) <= n else one[: n - 1] + "…"
