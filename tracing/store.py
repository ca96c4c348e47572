"""The in-process trace store: append-only, seq-numbered, safe across threads.

Producers call :meth:`TraceStore.append` and never wait for consumers beyond a
short lock.  Consumers pull batches with :meth:`TraceStore.since`.  The state
at any seq (text so far, open nodes, backtracks, latest metrics) is answered
from checkpoints taken every ``CHECKPOINT_EVERY`` events, built lazily by the
first query that needs them, so appending stays cheap.

Scale.  Events read from a trace file's blocks need not stay Python objects:
:meth:`TraceStore.extend_recorded` takes the blocks as
:class:`tracing.fileformat.BlockRef` (a frame's bytes and what decoding it
needs), keeps the few events that are not tokens, and decodes a block's
tokens again when they are asked for (the last ``CACHE_BLOCKS`` blocks
decoded are kept, and those no reader of :meth:`TraceStore.since` has had
yet, so the app's index never decodes a block twice).  So a store of ten
million tokens holds a few arrays and the file's bytes, not ten million
objects.  The text of a state is a chain of
byte-log segments shared between checkpoints (``State.head``), so a
checkpoint costs the same whatever the length of the run.
"""

from __future__ import annotations

import bisect
import threading
import time
from array import array
from collections import OrderedDict
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Iterable, Sequence

from .events import AnyEvent, Backtrack, Metric, NodeClose, NodeOpen, RunEnd, RunStart, Token, TokenKind

CHECKPOINT_EVERY = 256
CACHE_BLOCKS = 64  # decoded blocks kept once read (about 32k events)
FULL_BLOCKS = 8  # blocks decoded with their alternatives kept (a scan unpacks a block's in one go)


class SeqArray(array):
    """Seqs of one event type: 8 bytes each (a list held an int object each), equal to a list of the same."""

    def __new__(cls, values=()):
        return super().__new__(cls, "q", values)

    def __eq__(self, other):
        if isinstance(other, list):
            return len(self) == len(other) and self.tolist() == other
        return super().__eq__(other)

    def __ne__(self, other):
        return not self == other

    __hash__ = None


_EMPTY = SeqArray()
_NO_TAIL = 1 << 62  # _tail_start when the last chunk is a block
_T_US = attrgetter("t_us")
_GENERATED, _FORCED = TokenKind.GENERATED, TokenKind.FORCED  # plain lookups on the hot path


# A state's text: a chain of (start, end, previous, text length up to end) over the store's byte log,
# newest segment first; chains share their older segments, so keeping one per checkpoint is cheap.
_Seg = tuple


@dataclass(frozen=True)
class State:
    """What the run looked like right after event ``seq``."""

    seq: int = -1
    head: _Seg | None = None  # the model's text as a chain of byte-log segments (see ``segments``)
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

    @property
    def segments(self) -> tuple[tuple[int, int], ...]:
        """The model's text as (start, end) ranges of the store's byte log, oldest first."""
        out = []
        h = self.head
        while h is not None:
            out.append((h[0], h[1]))
            h = h[2]
        out.reverse()
        return tuple(out)


# node id -> [(seq, head, text_len)]: the text each node's state had, as of a seq.
# A node that continues from an older state (a reused base model) switches to it.
_Saved = dict[int, list[tuple[int, object, int]]]


@dataclass
class _Builder:
    """Mutable twin of State used while applying events."""

    head: _Seg | None = None  # immutable segments: a checkpoint shares them instead of copying
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
            s.head, s.text_len, list(s.open_nodes), s.backtracks,
            s.tokens, s.generated, s.forced, s.prompt, s.metric_seq, s.status, s.state_node, saved,
        )

    def freeze(self, seq: int) -> State:
        return State(
            seq, self.head, self.text_len, tuple(self.open_nodes),
            self.backtracks, self.tokens, self.generated, self.forced, self.prompt,
            self.metric_seq, self.status, self.state_node,
        )

    def _remember(self, node: int, seq: int) -> None:
        if self.record:
            self.saved.setdefault(node, []).append((seq, self.head, self.text_len))

    def _switch_to(self, node: int, seq: int) -> None:
        """Make the text that of ``node``'s state as of just before ``seq``."""
        entries = self.saved.get(node)
        if node == 0 and not entries:
            self.head, self.text_len = None, 0
            return
        if entries:
            i = bisect.bisect_left(entries, (seq,)) - 1
            if i >= 0:
                _, self.head, self.text_len = entries[i]

    def truncate(self, n: int) -> None:
        n = max(0, min(n, self.text_len))
        h = self.head
        while h is not None and h[3] - (h[1] - h[0]) >= n:  # the segment starts at or after n
            h = h[2]
        if h is not None and h[3] > n:
            h = (h[0], h[1] - (h[3] - n), h[2], n)
        self.head = h
        self.text_len = n

    def apply(self, ev: AnyEvent, log_start: int) -> None:
        if isinstance(ev, Token):
            if ev.pos != self.text_len:
                self.truncate(ev.pos)
            a, b = log_start, log_start + len(ev.bytes)
            h = self.head
            if h is not None and h[1] == a:
                self.head = (h[0], b, h[2], h[3] + b - a)
            elif b > a:
                self.head = (a, b, h, self.text_len + b - a)
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
        # The events as chunks, in seq order: lists of events (only the last one grows) and
        # blocks of a trace file decoded on demand (BlockRef).  ``_starts``: each chunk's first seq.
        self._chunks: list = [[]]
        self._starts: list[int] = [0]
        self._tail: list[AnyEvent] = self._chunks[0]  # the growing list: the last chunk
        self._tail_start = 0
        self._n = 0
        self._cache: OrderedDict[int, list[AnyEvent]] = OrderedDict()  # chunk index -> its decoded block
        self._full: OrderedDict[int, list[AnyEvent]] = OrderedDict()  # blocks decoded with their top-k
        self._unread: OrderedDict[int, list[AnyEvent]] = OrderedDict()  # blocks no ``since`` has returned yet
        self.read_once = False  # a reader of ``since`` follows the store (TraceLoader paces itself by it)
        self._cache_lock = threading.Lock()
        self._clock = clock
        self._t0 = clock()
        # seq arrays per event type, for jumps (next backtrack, tokens only...).
        self._index: dict[type, SeqArray] = {}
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
            self._add_list(events)

    def _add_list(self, events: Iterable[AnyEvent]) -> None:
        """Append events to the growing list (the lock held)."""
        tail, index = self._tail, self._index
        if self._tail_start == _NO_TAIL:  # the last chunk is a block: start a list
            tail = []
            self._chunks.append(tail)
            self._starts.append(self._n)
            self._tail = tail
            self._tail_start = self._n
        seq = self._n
        for ev in events:
            ev.seq = seq
            if ev.t_us < 0:
                ev.t_us = (self._clock() - self._t0) // 1000
            tail.append(ev)
            seqs = index.get(type(ev))
            if seqs is None:
                seqs = index[type(ev)] = SeqArray()
            seqs.append(seq)
            seq += 1
            self._n = seq

    # -- producers -----------------------------------------------------
    def append(self, event: AnyEvent, *, stamp: bool = True) -> int:
        """Add one event, give it the next seq (and a timestamp unless it has one)."""
        with self._lock:
            if stamp:
                event.t_us = (self._clock() - self._t0) // 1000
            self._add_list((event,))
            return event.seq

    def extend(self, events: Iterable[AnyEvent]) -> None:
        for ev in events:
            self.append(ev)

    def extend_recorded(self, events: Sequence[AnyEvent], packed: list = (), blocks: Sequence = ()) -> None:
        """Add events decoded from a trace, keeping their timestamps, under one lock.

        ``packed``: the alternatives of tokens among them read without theirs
        (``FrameDecoder.take_packed``), registered first: a reader may ask for
        a token's as soon as it is in.  ``blocks``: the BLOCK frames among them
        (``FrameDecoder.take_blocks``, as ``BlockRef`` in seq order): their
        tokens are not kept, but decoded again when asked for."""
        if not blocks:
            for p in packed:
                self._packed.append(p)  # before its first seq: a reader bisects the seqs, then indexes this
                self._packed_first.append(p.seqs[0])
            self._load(events)
            return
        events = list(events)
        with self._lock:
            first = events[0].seq if events else 0  # the decoder's seqs: the same as ours
            lazy = []  # the blocks kept as blocks: every event there, and no time left to stamp
            for ref in blocks:
                k = ref.first - first
                part = events[k:k + ref.n]
                if len(part) == ref.n and min(map(_T_US, part)) >= 0:
                    lazy.append((k, ref, part))
            lazy_firsts = [ref.first for _, ref, _ in lazy]
            for p in packed:  # a kept block is decoded again with its alternatives: no need of these
                j = bisect.bisect_right(lazy_firsts, p.seqs[0]) - 1
                if j < 0 or p.seqs[0] >= lazy_firsts[j] + lazy[j][1].n:
                    self._packed.append(p)
                    self._packed_first.append(p.seqs[0])
            i = 0
            for k, ref, part in lazy:
                if k > i:
                    self._add_list(events[i:k])
                self._add_block(ref, part)
                i = k + ref.n
            if i < len(events):
                self._add_list(events[i:])

    def _add_block(self, ref, events: list[AnyEvent]) -> None:
        """A decoded block as a chunk that forgets its tokens (the lock held)."""
        seq = self._n
        ref.first = seq
        index = self._index
        for j, ev in enumerate(events):
            ev.seq = seq + j
            seqs = index.get(type(ev))
            if seqs is None:
                seqs = index[type(ev)] = SeqArray()
            seqs.append(seq + j)
        self._tail_start = _NO_TAIL  # readers stop looking in the list first
        self._chunks.append(ref)
        self._starts.append(seq)
        with self._cache_lock:  # kept until a reader of ``since`` has had them: no decoding them again
            self._unread[len(self._chunks) - 1] = events
        self._n = seq + len(events)

    @property
    def unread_blocks(self) -> int:
        """Blocks kept decoded until a reader of ``since`` has had them."""
        return len(self._unread)

    def _remember_block(self, i: int, events: list[AnyEvent]) -> None:
        cache = self._cache
        cache[i] = events
        cache.move_to_end(i)
        while len(cache) > CACHE_BLOCKS:
            cache.popitem(last=False)

    def _block_events(self, i: int, ref, alternatives: bool = False) -> list[AnyEvent]:
        """The events of the block chunk ``i``, decoded again if they are not kept (``alternatives``:
        with their top-k, for one token that is likely shown; a batch reader goes without)."""
        with self._cache_lock:
            events = self._unread.get(i)
            if events is not None:
                return events
            events = self._cache.get(i)
            if events is not None:
                self._cache.move_to_end(i)
                return events
            events = self._full.get(i)
        if events is None:
            events = ref.events(alternatives=alternatives)
        with self._cache_lock:
            self._remember_block(i, events)
        return events

    def _chunk_of(self, seq: int) -> tuple[int, int]:
        i = bisect.bisect_right(self._starts, seq) - 1
        return i, self._starts[i]

    # -- consumers -----------------------------------------------------
    def __len__(self) -> int:
        return self._n

    @property
    def last_seq(self) -> int:
        return self._n - 1

    def __getitem__(self, seq: int) -> AnyEvent:
        n = self._n
        if seq < 0:
            seq += n
        if not 0 <= seq < n:
            raise IndexError("event seq out of range")
        t = self._tail_start
        if seq >= t:
            tail = self._tail
            if seq - t < len(tail) and self._tail_start == t:
                return tail[seq - t]
        i, start = self._chunk_of(seq)
        chunk = self._chunks[i]
        if type(chunk) is list:
            return chunk[seq - start]
        kept = chunk.other(seq - start)  # an event that is not a token is kept: no decoding
        if kept is not None:
            return kept
        return self._block_events(i, chunk, True)[seq - start]

    def _range(self, a: int, b: int) -> list[AnyEvent]:
        """Events with seqs in [a, b)."""
        if a >= b:
            return []
        t = self._tail_start
        if a >= t:
            return self._tail[a - t:b - t]
        out: list[AnyEvent] = []
        i, start = self._chunk_of(a)
        chunks, starts = self._chunks, self._starts
        while a < b:
            chunk = chunks[i]
            start = starts[i]
            evs = chunk if type(chunk) is list else self._block_events(i, chunk)
            part = evs[a - start:b - start]
            out += part
            a += len(part)
            i += 1
            if i >= len(chunks):
                break
        return out

    def alternatives(self, seq: int) -> list:
        """The top-k alternatives of the token ``seq`` (ranked before the mask), unpacked on first
        use if it was read without them (the token keeps them, and its after-mask ones, from then on)."""
        tok = self[seq]
        if type(tok.top) is list:  # read with them (a tuple: left packed)
            return tok.top
        i, start = self._chunk_of(seq)
        chunk = self._chunks[i]
        if type(chunk) is not list:  # a block: decode it again, with its alternatives (kept for a scan)
            with self._cache_lock:
                full = self._full.get(i)
            if full is None:
                full = chunk.events(alternatives=True)
                with self._cache_lock:
                    self._full[i] = full
                    while len(self._full) > FULL_BLOCKS:
                        self._full.popitem(last=False)
            got = full[seq - start]
            got = (got.top, got.top_allowed)
        else:
            k = bisect.bisect_right(self._packed_first, seq) - 1
            got = self._packed[k].unpack(seq, tok.prob, tok.prob_raw) if k >= 0 else None
        tok.top, tok.top_allowed = got if got is not None else ([], [])  # None: its block had none
        return tok.top

    def after_mask(self, seq: int) -> list:
        """The alternatives of the token ``seq`` after the grammar mask (``Token.after_mask``), unpacked
        on first use: best first, with renormalised probabilities; empty when not recorded."""
        self.alternatives(seq)
        return self[seq].after_mask()

    def since(self, seq: int, limit: int | None = None) -> list[AnyEvent]:
        """Events with seq > ``seq``, oldest first, at most ``limit`` of them."""
        seq = max(seq, -1)  # a negative slice start would count from the end
        n = self._n
        end = n if limit is None else min(n, seq + 1 + limit)
        out = self._range(seq + 1, end)
        self.read_once = True
        if self._unread:  # blocks read through: kept only as long as other recent ones
            with self._cache_lock:
                unread, starts = self._unread, self._starts
                while unread:
                    i = next(iter(unread))
                    if starts[i] + self._chunks[i].n > end:
                        break
                    self._remember_block(i, unread.pop(i))
        return out

    def events(self) -> Sequence[AnyEvent]:
        """A snapshot list of every event so far (a store read from a file decodes them all)."""
        return self._range(0, self._n)

    def seqs_of(self, kind: type) -> Sequence[int]:
        """Seqs of every event of one type, ascending (a live array: do not mutate)."""
        return self._index.get(kind, _EMPTY)

    def token_counts(self) -> dict[str, int]:
        """Prompt, generated and forced tokens so far, as RunEnd's fields (``RunEnd(..., **counts)``)."""
        counts = [0, 0, 0]
        for a in range(0, self._n, 8192):
            for ev in self._range(a, min(self._n, a + 8192)):
                if type(ev) is Token:
                    counts[ev.kind] += 1
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
        return self[seqs[0]] if seqs else None  # type: ignore[return-value]

    def run_end(self) -> RunEnd | None:
        seqs = self.seqs_of(RunEnd)
        return self[seqs[-1]] if seqs else None  # type: ignore[return-value]

    # -- state at a seq ------------------------------------------------
    def _build_to(self, seq: int) -> None:
        """Extend the log and checkpoints to cover events up to ``seq``."""
        with self._cp_lock:
            log, log_at = self._log, self._log_at
            b = self._built
            apply = b.apply
            end = min(seq, self._n - 1) + 1
            s = self._built_upto + 1
            while s < end:
                batch = self._range(s, min(end, s + 4096))
                for ev in batch:
                    start = len(log)
                    log_at.append(start)
                    if type(ev) is Token:
                        log += ev.bytes
                    apply(ev, start)
                    self._built_upto = s
                    if (s + 1) % CHECKPOINT_EVERY == 0:
                        self._checkpoints.append(b.freeze(s))
                    s += 1

    def state_at(self, seq: int) -> State:
        """State right after event ``seq`` (-1: before any event)."""
        seq = min(seq, self._n - 1)
        if seq < 0:
            return State()
        self._build_to(seq)
        cp = self._checkpoints[min((seq + 1) // CHECKPOINT_EVERY, len(self._checkpoints) - 1)]
        if cp.seq == seq:
            return cp
        b = _Builder.from_state(cp, self._saved)
        log_at = self._log_at
        for ev in self._range(cp.seq + 1, seq + 1):
            b.apply(ev, log_at[ev.seq])
        return b.freeze(seq)

    def text_bytes(self, state: State) -> bytes:
        """The model's text in ``state``, as exact bytes."""
        log = self._log
        parts = []
        h = state.head
        while h is not None:
            parts.append(log[h[0]:h[1]])
            h = h[2]
        parts.reverse()
        return b"".join(parts)

    def text_at(self, seq: int) -> str:
        return self.text_bytes(self.state_at(seq)).decode("utf-8", errors="replace")

    def metric_at(self, seq: int) -> Metric | None:
        s = self.state_at(seq).metric_seq
        return self[s] if s >= 0 else None  # type: ignore[return-value]

    def tree(self):
        """An anytree view of the program tree (see :mod:`tracing.tree`)."""
        from .tree import TraceTree

        return TraceTree.from_events(self.events())

