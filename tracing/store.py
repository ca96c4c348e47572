"""The in-process trace store: append-only, seq-numbered, safe across threads.

Producers call :meth:`TraceStore.append` and never wait for consumers beyond a
short lock.  Consumers pull batches with :meth:`TraceStore.since`.  The state
at any seq (text so far, open nodes, backtracks, latest metrics) is answered
from checkpoints taken every ``CHECKPOINT_EVERY`` events, built lazily by the
first query that needs them, so appending stays cheap.
"""

from __future__ import annotations

import bisect
import threading
from array import array
import time
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from .events import AnyEvent, Backtrack, Metric, NodeClose, NodeOpen, RunEnd, RunStart, Token, TokenKind

CHECKPOINT_EVERY = 256
_GENERATED, _FORCED = TokenKind.GENERATED, TokenKind.FORCED  # plain lookups on the hot path


@dataclass(frozen=True)
class State:
    """What the run looked like right after event ``seq``."""

    seq: int = -1
    # The model's text as segments of the store's byte log: cheap to copy.
    segments: tuple[tuple[int, int], ...] = ()
    text_len: int = 0
    open_nodes: tuple[int, ...] = ()
    backtracks: int = 0
    tokens: int = 0
    generated: int = 0
    forced: int = 0
    prompt: int = 0
    metric_seq: int = -1  # seq of the latest Metric event, -1 for none
    status: str = "empty"  # empty | running | done | error | interrupted
    state_node: int = 0  # the program node whose model state the text is


# node id -> [(seq, segments, text_len)]: the text each node's state had, as of a seq.
# A node that continues from an older state (a reused base model) switches to it.
_Saved = dict[int, list[tuple[int, tuple, int]]]


@dataclass
class _Builder:
    """Mutable twin of State used while applying events."""

    # Immutable (start, end) pairs, so a checkpoint shares them instead of copying.
    segments: list[tuple[int, int]] = field(default_factory=list)
    text_len: int = 0
    open_nodes: list[int] = field(default_factory=list)
    backtracks: int = 0
    tokens: int = 0
    generated: int = 0
    forced: int = 0
    prompt: int = 0
    metric_seq: int = -1
    status: str = "empty"
    state_node: int = 0
    saved: _Saved = field(default_factory=dict)  # shared with the store
    record: bool = False  # only the store's own builder writes ``saved``

    @classmethod
    def from_state(cls, s: State, saved: _Saved) -> "_Builder":
        return cls(
            list(s.segments), s.text_len, list(s.open_nodes), s.backtracks,
            s.tokens, s.generated, s.forced, s.prompt, s.metric_seq, s.status, s.state_node, saved,
        )

    def freeze(self, seq: int) -> State:
        return State(
            seq, tuple(self.segments), self.text_len, tuple(self.open_nodes),
            self.backtracks, self.tokens, self.generated, self.forced, self.prompt,
            self.metric_seq, self.status, self.state_node,
        )

    def _remember(self, node: int, seq: int) -> None:
        if self.record:
            self.saved.setdefault(node, []).append((seq, tuple(self.segments), self.text_len))

    def _switch_to(self, node: int, seq: int) -> None:
        """Make the text that of ``node``'s state as of just before ``seq``."""
        entries = self.saved.get(node)
        if node == 0 and not entries:
            self.segments, self.text_len = [], 0
            return
        if entries:
            i = bisect.bisect_left(entries, (seq,)) - 1
            if i >= 0:
                _, segs, n = entries[i]
                self.segments, self.text_len = list(segs), n

    def truncate(self, n: int) -> None:
        n = max(0, min(n, self.text_len))
        drop = self.text_len - n
        segments = self.segments
        while drop > 0 and segments:
            a, b = segments[-1]
            if b - a <= drop:
                drop -= b - a
                segments.pop()
            else:
                segments[-1] = (a, b - drop)
                drop = 0
        self.text_len = n

    def apply(self, ev: AnyEvent, log_start: int) -> None:
        if isinstance(ev, Token):
            if ev.pos != self.text_len:
                self.truncate(ev.pos)
            a, b = log_start, log_start + len(ev.bytes)
            segments = self.segments
            if segments and segments[-1][1] == a:
                segments[-1] = (segments[-1][0], b)
            elif b > a:
                segments.append((a, b))
            self.text_len += b - a
            self.tokens += 1
            kind = ev.kind
            if kind == _GENERATED:
                self.generated += 1
            elif kind == _FORCED:
                self.forced += 1
            else:
                self.prompt += 1
        elif isinstance(ev, Backtrack):
            self.truncate(ev.pos if ev.pos >= 0 else self.text_len - len(ev.bytes))
            self.backtracks += 1
        elif isinstance(ev, NodeOpen):
            self.open_nodes.append(ev.node_id)
            self._remember(self.state_node, ev.seq)
            if ev.base_id != self.state_node:  # continues from an older state: a branch
                self._switch_to(ev.base_id, ev.seq)
            self.state_node = ev.node_id
        elif isinstance(ev, NodeClose):
            if ev.node_id in self.open_nodes:
                self.open_nodes.remove(ev.node_id)
            self._remember(ev.node_id, ev.seq)
            self.state_node = ev.node_id
        elif isinstance(ev, Metric):
            self.metric_seq = ev.seq
        elif isinstance(ev, RunStart):
            self.status = "running"
        elif isinstance(ev, RunEnd):
            self.status = ev.status


class TraceStore:
    """Append-only event list with seq numbers, batch reads and seekable state."""

    def __init__(self, events: Iterable[AnyEvent] = (), *, clock=time.monotonic_ns) -> None:
        self._lock = threading.Lock()
        self._events: list[AnyEvent] = []
        self._clock = clock
        self._t0 = clock()
        # seq lists per event type, for jumps (next backtrack, tokens only...).
        self._index: dict[type, list[int]] = {}
        # Lazily built: the byte log, its length before each seq, the checkpoints.
        self._cp_lock = threading.Lock()
        self._log = bytearray()
        self._log_at = array("q")  # 8 bytes per event
        self._checkpoints: list[State] = [State()]
        self._saved: _Saved = {}
        self._built = _Builder(saved=self._saved, record=True)
        self._built_upto = -1
        self._packed: list = []  # PackedAlternatives of tokens read without their top-k, by first seq
        self._packed_first: list[int] = []
        self._load(events)

    def _load(self, events: Iterable[AnyEvent]) -> None:
        """``append(ev, stamp=False)`` for each event, under one lock (replaying a file)."""
        with self._lock:
            store, index = self._events, self._index
            for ev in events:
                seq = len(store)
                ev.seq = seq
                if ev.t_us < 0:
                    ev.t_us = (self._clock() - self._t0) // 1000
                store.append(ev)
                seqs = index.get(type(ev))
                if seqs is None:
                    seqs = index[type(ev)] = []
                seqs.append(seq)

    # -- producers -----------------------------------------------------
    def append(self, event: AnyEvent, *, stamp: bool = True) -> int:
        """Add one event, give it the next seq (and a timestamp unless it has one)."""
        with self._lock:
            seq = len(self._events)
            event.seq = seq
            if stamp or event.t_us < 0:
                event.t_us = (self._clock() - self._t0) // 1000
            self._events.append(event)
            self._index.setdefault(type(event), []).append(seq)
        return seq

    def extend(self, events: Iterable[AnyEvent]) -> None:
        for ev in events:
            self.append(ev)

    def extend_recorded(self, events: Iterable[AnyEvent], packed: list = ()) -> None:
        """Add events decoded from a trace, keeping their timestamps, under one lock.

        ``packed``: the alternatives of tokens among them read without theirs
        (``FrameDecoder.take_packed``), registered first: a reader may ask for
        a token's as soon as it is in."""
        for p in packed:
            self._packed.append(p)  # before its first seq: a reader bisects the seqs, then indexes this
            self._packed_first.append(p.seqs[0])
        self._load(events)

    # -- consumers -----------------------------------------------------
    def __len__(self) -> int:
        return len(self._events)

    @property
    def last_seq(self) -> int:
        return len(self._events) - 1

    def __getitem__(self, seq: int) -> AnyEvent:
        return self._events[seq]

    def alternatives(self, seq: int) -> list:
        """The top-k alternatives of the token ``seq``, unpacked on first use if
        it was read without them (the token keeps them from then on)."""
        tok = self._events[seq]
        if tok.top or not self._packed:
            return tok.top
        i = bisect.bisect_right(self._packed_first, seq) - 1
        alts = self._packed[i].of(seq) if i >= 0 else None
        if alts is None:
            return tok.top
        tok.top = alts
        return alts

    def since(self, seq: int, limit: int | None = None) -> list[AnyEvent]:
        """Events with seq > ``seq``, oldest first, at most ``limit`` of them."""
        seq = max(seq, -1)  # a negative slice start would count from the end
        end = len(self._events) if limit is None else min(len(self._events), seq + 1 + limit)
        return self._events[seq + 1 : end]

    def events(self) -> Sequence[AnyEvent]:
        """A snapshot list of every event so far."""
        return self._events[: len(self._events)]

    def seqs_of(self, kind: type) -> list[int]:
        """Seqs of every event of one type, ascending (a live list: do not mutate)."""
        return self._index.get(kind, [])

    def token_counts(self) -> dict[str, int]:
        """Prompt, generated and forced tokens so far, as RunEnd's fields (``RunEnd(..., **counts)``)."""
        counts = [0, 0, 0]
        for seq in self.seqs_of(Token):
            counts[self[seq].kind] += 1
        return {"prompt_tokens": counts[TokenKind.PROMPT], "generated_tokens": counts[TokenKind.GENERATED],
                "forced_tokens": counts[TokenKind.FORCED]}

    def next_of(self, kind: type, seq: int) -> int | None:
        """Seq of the first event of ``kind`` after ``seq``."""
        seqs = self.seqs_of(kind)
        i = bisect.bisect_right(seqs, seq)
        return seqs[i] if i < len(seqs) else None

    def prev_of(self, kind: type, seq: int) -> int | None:
        """Seq of the last event of ``kind`` before ``seq``."""
        seqs = self.seqs_of(kind)
        i = bisect.bisect_left(seqs, seq)
        return seqs[i - 1] if i > 0 else None

    def run_start(self) -> RunStart | None:
        seqs = self.seqs_of(RunStart)
        return self._events[seqs[0]] if seqs else None  # type: ignore[return-value]

    def run_end(self) -> RunEnd | None:
        seqs = self.seqs_of(RunEnd)
        return self._events[seqs[-1]] if seqs else None  # type: ignore[return-value]

    # -- state at a seq ------------------------------------------------
    def _build_to(self, seq: int) -> None:
        """Extend the log and checkpoints to cover events up to ``seq``."""
        with self._cp_lock:
            events, log, log_at = self._events, self._log, self._log_at
            b = self._built
            apply = b.apply
            for s in range(self._built_upto + 1, min(seq, len(events) - 1) + 1):
                ev = events[s]
                start = len(log)
                log_at.append(start)
                if isinstance(ev, Token):
                    log += ev.bytes
                apply(ev, start)
                self._built_upto = s
                if (s + 1) % CHECKPOINT_EVERY == 0:
                    self._checkpoints.append(b.freeze(s))

    def state_at(self, seq: int) -> State:
        """State right after event ``seq`` (-1: before any event)."""
        seq = min(seq, len(self._events) - 1)
        if seq < 0:
            return State()
        self._build_to(seq)
        cp = self._checkpoints[min((seq + 1) // CHECKPOINT_EVERY, len(self._checkpoints) - 1)]
        if cp.seq == seq:
            return cp
        b = _Builder.from_state(cp, self._saved)
        for s in range(cp.seq + 1, seq + 1):
            b.apply(self._events[s], self._log_at[s])
        return b.freeze(seq)

    def text_bytes(self, state: State) -> bytes:
        """The model's text in ``state``, as exact bytes."""
        log = self._log
        return b"".join(bytes(log[a:b]) for a, b in state.segments)

    def text_at(self, seq: int) -> str:
        return self.text_bytes(self.state_at(seq)).decode("utf-8", errors="replace")

    def metric_at(self, seq: int) -> Metric | None:
        s = self.state_at(seq).metric_seq
        return self._events[s] if s >= 0 else None  # type: ignore[return-value]

    def tree(self):
        """An anytree view of the program tree (see :mod:`tracing.tree`)."""
        from .tree import TraceTree

        return TraceTree.from_events(self.events())

