"""Fork: regenerate one grammar node of a recorded run from token K with another token there.

A fork replays the node's own sampling decisions before K under the node's grammar (the Lark
text in its ``NodeOpen``) on the text it started from, puts the chosen alternative at K, then
lets the decode loop continue as usual until the grammar ends.  Replaying the decisions through
the same loop (rather than feeding llguidance the recorded text) keeps token healing, forced
tokens and backtracks exactly as the original node had them.  The result is a new node with the
same parent and base as the original: a branch of the run.  Nothing after the node runs again
(the Python that followed is not re-executed).

:func:`plan` reads the trace (no model needed); :func:`run` needs a loaded backend;
:func:`probe` answers "top-N before and after the mask" for one token the same way.
"""

from __future__ import annotations

import bisect
import codecs
import time
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import msgspec
import numpy as np

from tracing import Alt, AnyEvent, Message, NodeClose, NodeOpen, RunEnd, Token, TokenKind, forks
from tracing.store import TraceStore

from .errors import EngineError, ModelLoadError, one_line
from .grammar import Lowered
from .loop import Engine, Options, _Call
from .session import Session
from .stats import analyse, top_k_allowed

FORKABLE = ("gen", "select", "regex", "json")
MAX_PROBE = 50
_MODEL_MESSAGE = re.compile(r"^model: (.+) \(([^()]+)\)$")


class ForkError(EngineError):
    """A fork that cannot be done as asked; ``usage`` when the request itself is wrong (exit 2)."""

    def __init__(self, message: str, *, usage: bool = True) -> None:
        super().__init__(message)
        self.usage = usage


class Plan(msgspec.Struct, kw_only=True):
    """Everything a fork needs from the trace (a msgspec Struct: it travels to the worker process)."""

    k: int  # 1-based among the trace's tokens
    seq: int  # the token's seq
    token: Token
    node: NodeOpen  # the node the token belongs to
    base_text: bytes  # the text before the node
    choices: list[int]  # the node's sampled tokens before K, in order
    before: int  # how many of the node's tokens come before K
    new_node_id: int
    model: str
    backend: str
    alternatives: list[Alt] = []  # K's after-mask list, as recorded
    max_new: int = 1024  # sampled tokens after K before the fork gives up (a grammar that never ends)

    @property
    def label(self) -> str:
        return forks.label(self.node.name, self.node.kind, self.k)


def token_seq(store: TraceStore, k: int) -> int:
    seqs = store.seqs_of(Token)
    if not 1 <= k <= len(seqs):
        raise ForkError(f"token {k} is out of range: the trace has {len(seqs):,} tokens (1 to {len(seqs):,})")
    return seqs[k - 1]


def after_mask(store: TraceStore, seq: int) -> list[Alt]:
    """The recorded after-mask list of the token ``seq`` (its top-k unpacked first)."""
    store.alternatives(seq)
    return store[seq].after_mask()


def model_of(store: TraceStore, before_seq: int) -> tuple[str, str]:
    """(model path, backend) that produced the run, from the model's message, else the RunStart."""
    found = None
    for seq in store.seqs_of(Message):
        if seq > before_seq:
            break
        m = _MODEL_MESSAGE.match(store[seq].text)
        if m:
            found = m.group(1), {"llama.cpp": "llamacpp"}.get(m.group(2), m.group(2))
    if found:
        return found
    start = store.run_start()
    if start is None or not start.model:
        raise ForkError("the trace does not name its model (no RunStart model)", usage=False)
    if start.model.endswith("(embedded default)"):
        from .default_model import default_model_path

        return str(default_model_path(progress=False)), start.backend or "llamacpp"
    return start.model, start.backend or "llamacpp"


def plan(store: TraceStore, k: int) -> Plan:
    """What a fork at token ``k`` replays; :class:`ForkError` for a token that cannot be forked."""
    seq = token_seq(store, k)
    tok: Token = store[seq]
    if tok.kind == TokenKind.PROMPT:
        raise ForkError(f"token {k} ({tok.text!r}) is a prompt token: the program supplied it; "
                        "fork at a generated or forced token")
    open_seq = next((s for s in reversed(store.seqs_of(NodeOpen))
                     if s < seq and store[s].node_id == tok.node_id), None)
    node = store[open_seq] if open_seq is not None else None
    if node is None:
        raise ForkError(f"token {k} belongs to no recorded node: nothing to regenerate", usage=False)
    if node.kind not in FORKABLE or not node.grammar:
        raise ForkError(f"token {k} is in a {node.kind or 'unnamed'} node: a fork regenerates one "
                        f"{', '.join(FORKABLE)} node with its grammar")
    base_text = store.text_bytes(store.state_at(open_seq))
    seqs = store.seqs_of(Token)
    lo, hi = bisect.bisect_right(seqs, open_seq), bisect.bisect_left(seqs, seq)  # only the node's span
    mine = [store[s] for s in seqs[lo:hi] if store[s].node_id == node.node_id]
    path, backend = model_of(store, seq)
    new_id = 1 + max((store[s].node_id for s in store.seqs_of(NodeOpen)), default=0)
    return Plan(k=k, seq=seq, token=tok, node=node, base_text=base_text,
                choices=[t.id for t in mine if t.kind == TokenKind.GENERATED], before=len(mine), new_node_id=new_id,
                model=path, backend=backend, alternatives=list(after_mask(store, seq)))


def parse_alt(spec: str) -> tuple[str, object]:
    """``id:N`` -> ("id", N); a whole number -> ("rank", N); anything else -> ("text", bytes)."""
    s = spec.strip()
    if s.startswith("id:") and s[3:].strip().isdigit():
        return "id", int(s[3:])
    if s.isdigit():
        return "rank", int(s)
    try:  # "\n", "\t"... as a shell user types them
        text = codecs.decode(spec, "unicode_escape").encode("latin-1") if "\\" in spec else spec.encode()
    except (UnicodeDecodeError, UnicodeEncodeError):
        text = spec.encode()
    return "text", text


def resolve_alt(p: Plan, spec: str, tokenize: Callable[[bytes], list[int]] | None = None) -> int:
    """The token id ALT names; ranks and ids are checked against the recorded lists."""
    how, value = parse_alt(spec)
    tok = p.token
    masked = {a.id for a in tok.top if a.masked}
    if how == "rank":
        if not p.alternatives:
            raise ForkError(f"token {p.k} has no after-mask list recorded (an older trace or a remote server): "
                            "name the alternative as id:N or by its text")
        if not 1 <= value <= len(p.alternatives):
            raise ForkError(f"rank {value} is out of range: token {p.k} has {len(p.alternatives)} "
                            f"alternatives after the mask (1 to {len(p.alternatives)})")
        tid = p.alternatives[value - 1].id
    elif how == "id":
        tid = value
    else:
        known = [a.id for a in p.alternatives if a.bytes == value] + [a.id for a in tok.top if a.bytes == value]
        if known:
            tid = known[0]
        elif tokenize is None:
            raise ForkError(f"{spec!r} is not among token {p.k}'s recorded alternatives", usage=True)
        else:
            ids = tokenize(value)
            if len(ids) != 1:
                raise ForkError(f"{spec!r} is {len(ids)} tokens for this model, not one: give one token's text "
                                "(or id:N)")
            tid = ids[0]
    if tid in masked:
        raise ForkError(f"token {p.k}: the alternative {spec!r} (id {tid}) was masked by the grammar there: "
                        "pick an allowed one")
    if tok.kind == TokenKind.FORCED and tid != tok.id:
        raise ForkError(f"token {p.k} was forced by the grammar: no other token was allowed there")
    return tid


# -- the replay ------------------------------------------------------------------

class _Probed(Exception):
    def __init__(self, before: list[Alt], after: list[Alt]) -> None:
        super().__init__("probed")
        self.before, self.after = before, after


class _ReplayCall(_Call):
    """A grammar call that takes its first sampling decisions from a script, then picks ``alt``."""

    def __init__(self, *a, script: list[int], before: int, alt: int | None, k: int, probe_n: int = 0,
                 max_new: int = 1024, **kw) -> None:
        super().__init__(*a, **kw)
        self.script = list(script)
        self.before = before  # the node's tokens before K
        self.alt = alt  # None: K is forced and stays
        self.k = k
        self.probe_n = probe_n
        self.emitted = 0
        self.free = 0
        self.max_new = max_new

    def emit_token(self, tid, kind, **kw) -> None:
        self.emitted += 1
        super().emit_token(tid, kind, **kw)

    def _choose(self, st, allowed, temperature: float) -> int:
        if self.script:
            tid = self.script.pop(0)
            if allowed is not None and not allowed[tid]:
                raise ForkError(f"the replay of the node diverged before token {self.k}: the worker's grammar "
                                f"masks the recorded token {tid} (another model or grammar version?)", usage=False)
            return tid
        if self.alt is None and not self.probe_n:  # past K (or K was forced): the loop's own choice
            self.free += 1
            if self.free > self.max_new:
                raise ForkError(f"the fork generated {self.max_new} tokens after token {self.k} and the grammar "
                                "has not ended: stopped", usage=False)
            return super()._choose(st, allowed, temperature)
        if self.emitted != self.before:
            raise ForkError(f"the replay of the node diverged before token {self.k} ({self.emitted} tokens "
                            f"replayed, the trace has {self.before})", usage=False)
        if self.probe_n:
            raise _Probed(*_lists(self, st, allowed, self.probe_n))
        tid, self.alt = self.alt, None
        if allowed is not None and not (tid < len(allowed) and allowed[tid]):
            best = ", ".join(repr(self.backend.token_bytes(int(t)).decode("utf-8", "replace"))
                             for t in top_k_allowed(st, allowed, 5))
            raise ForkError(f"token {self.k}: the alternative (id {tid}, {self.backend.token_bytes(tid)!r}) "
                            f"is masked by the grammar there: pick an allowed one ({best}...)")
        return tid

    def _flush_pending(self, rows: np.ndarray, step_us: int) -> None:
        if self.probe_n and not self.script and self.emitted <= self.before < self.emitted + len(self.pending):
            j = self.before - self.emitted - (len(self.pending) - len(rows))
            tid = self.pending[self.before - self.emitted]
            if j < 0:
                raise ForkError(f"token {self.k} was forced without its own logits row: nothing to rank",
                                usage=False)
            st = analyse(rows[j], None, self.probe_n)
            before = [Alt(a.id, a.bytes, a.prob, a.id != tid) for a in self._alts(st, None)]
            raise _Probed(before, [Alt(tid, self.backend.token_bytes(tid), 1.0, False)])
        super()._flush_pending(rows, step_us)


def _lists(call: _Call, st, allowed, n: int) -> tuple[list[Alt], list[Alt]]:
    st = analyse(st.row, allowed, n)
    tb = call.backend.token_bytes
    before = [Alt(int(i), tb(int(i)), st.prob_raw(int(i)), bool(allowed is not None and not allowed[i]))
              for i in st.top_ids]
    ids = top_k_allowed(st, allowed, n) if allowed is not None else st.top_ids
    after = [Alt(int(i), tb(int(i)), st.prob_masked(int(i)), False) for i in ids]
    return before, after


class _Sink:
    """A store stand-in: the loop's events go to a callback as they happen."""

    def __init__(self, emit: Callable[[AnyEvent], None]) -> None:
        self.emit = emit

    def append(self, ev: AnyEvent, *, stamp: bool = True) -> int:  # noqa: ARG002 - the store's signature
        self.emit(ev)
        return -1


@dataclass
class Result:
    events: list[AnyEvent]
    text: bytes  # the whole text after the forked node
    node_text: bytes  # the node's new text
    captures: list[tuple[str, str, float]]
    stop_reason: str


def _call(backend, p: Plan, alt: int | None, emit: Callable[[AnyEvent], None] | None, probe_n: int = 0,
          cancel=None, top_k: int = 5):
    events: list[AnyEvent] = []
    t0 = time.perf_counter_ns()

    def out(ev: AnyEvent) -> None:
        ev.t_us = (time.perf_counter_ns() - t0) // 1000  # from the fork's start (a receiving store restamps)
        events.append(ev)
        if emit is not None:
            emit(ev)

    session = Session(store=_Sink(out), monitoring=False)  # type: ignore[arg-type]
    if cancel is not None:
        session.cancel_event = cancel
    engine = Engine(backend, session, Options(top_k=top_k, monitoring=False))
    try:
        lowered = Lowered(p.node.grammar)
        with backend.lock:
            call = _ReplayCall(engine, p.base_text, lowered, p.new_node_id, None, script=p.choices,
                               before=p.before, alt=alt, k=p.k, probe_n=probe_n, max_new=p.max_new)
            return call, call.run(), events
    except (ValueError, RuntimeError) as e:
        raise EngineError(f"the fork failed: {one_line(e)}") from None


def run(backend, p: Plan, alt: int, emit: Callable[[AnyEvent], None] | None = None, cancel=None) -> Result:
    """Regenerate the node from token K with ``alt`` there; events go to ``emit`` as they happen."""
    opened = NodeOpen(node_id=p.new_node_id, parent_id=p.node.parent_id, base_id=p.node.base_id,
                      kind=p.node.kind, name=p.label, grammar=p.node.grammar, t_us=0)
    head = [opened]
    if emit is not None:
        emit(opened)
    forced_k = p.token.kind == TokenKind.FORCED
    call, res, events = _call(backend, p, None if forced_k else alt, emit, cancel=cancel)
    if call.script or call.alt is not None:
        raise ForkError(f"the grammar ended before token {p.k} in the replay: the node cannot be forked there",
                        usage=False)
    closed = NodeClose(node_id=p.new_node_id, stop_reason=res.stop_reason, t_us=events[-1].t_us if events else 0)
    if emit is not None:
        emit(closed)
    cut = _common_prefix(p.base_text, res.text)
    return Result(head + events + [closed], res.text, res.text[cut:], res.captures, res.stop_reason)


def probe(backend, p: Plan, n: int) -> tuple[list[Alt], list[Alt]]:
    """The top-``n`` alternatives of token K before and after the mask, computed again by the model."""
    if not 1 <= n <= MAX_PROBE:
        raise ForkError(f"N must be 1 to {MAX_PROBE}, not {n}")
    try:
        _call(backend, p, None, None, probe_n=n, top_k=max(5, n))
    except _Probed as got:
        return got.before, got.after
    raise ForkError(f"the replay never reached token {p.k}", usage=False)


def _common_prefix(a: bytes, b: bytes) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


# -- models ------------------------------------------------------------------------

def load_backend(path: str, backend: str):
    """The backend for a fork (no recording session, no monitor)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise ModelLoadError(f"the run's model file is missing: {path} (a fork needs the model that made the run)")
    # The process-wide shared backend (as models.LlamaCpp/Transformers build it): a second backend on
    # the same file that is later freed would leave the cached llguidance tokenizer a dead vocabulary.
    from .models import _shared, llamacpp_backend

    p = p.resolve()
    if backend == "transformers":
        from .transformers_backend import TransformersBackend

        return _shared(("transformers", str(p), ()), lambda: TransformersBackend(p))
    if backend not in ("llamacpp", ""):
        raise ModelLoadError(f"a fork cannot run the {backend!r} backend here (llamacpp or transformers)")
    return llamacpp_backend(p)


# -- the forked run, as a file -------------------------------------------------------

def forked_run(store: TraceStore, p: Plan, branch: list[AnyEvent]) -> list[AnyEvent]:
    """The original events up to token K, the original node closed there, the branch, then the
    containers closed and a RunEnd: a trace a replay shows as a run with a fork at K."""
    events = [e for e in store.events()[: p.seq + 1]]
    state = store.state_at(p.seq)
    out: list[AnyEvent] = [_copy(e) for e in events]
    if p.node.node_id in state.open_nodes:
        out.append(NodeClose(node_id=p.node.node_id, stop_reason=forks.cut_reason(p.k)))
    t_base = max((e.t_us for e in events), default=0)
    for e in branch:  # the branch's times are from the fork's start: place them after the original
        c = _copy(e)
        c.t_us = t_base + max(0, e.t_us)
        out.append(c)
    for node in reversed(state.open_nodes):
        if node != p.node.node_id:
            out.append(NodeClose(node_id=node, stop_reason="cut at the fork"))
    counts = TraceStore(out).token_counts()
    out.append(RunEnd(status="done", **counts))
    return out


def _copy(ev: AnyEvent) -> AnyEvent:
    c = msgspec.structs.replace(ev)
    c.seq = -1
    return c
