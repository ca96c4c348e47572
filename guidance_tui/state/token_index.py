"""Per-token facts the inspector needs, built incrementally from a TraceStore.

The app drains the store ~30 times a second while a producer may be appending
tens of thousands of tokens a second, so ingestion does no Python work per
token: every per-token column is filled with C-level ``map``/``accumulate``
over the new batch, and only rare events (backtracks, role openings, tokens
that are not plain ASCII) get a Python loop.  Nothing here imports Textual.
"""

from __future__ import annotations

import bisect
import math
from array import array
from dataclasses import dataclass, field
from itertools import accumulate, compress, count, islice, repeat
from operator import attrgetter, mul, not_

from tracing import Backtrack, NodeOpen, ProbKind, RunStart, Token, TokenKind
from tracing.store import TraceStore

PROMPT, GENERATED, FORCED = int(TokenKind.PROMPT), int(TokenKind.GENERATED), int(TokenKind.FORCED)
NEVER = 1 << 62  # "not removed"
_BIG = 1 << 62

_bytes = attrgetter("bytes")
_kind = attrgetter("kind")
_prob = attrgetter("prob")
_prob_kind = attrgetter("prob_kind")
_latency = attrgetter("latency_us")
_node = attrgetter("node_id")


@dataclass
class BacktrackInfo:
    """One Backtrack event and the tokens it took back."""

    seq: int
    rank: int  # 0-based position among the run's backtracks
    removed: list[int]  # token indices, oldest first
    reason: str
    data: bytes  # the bytes taken back, as the event reports them
    first_after: int  # index of the first token that came after it (its replacement starts here)

    @property
    def first_removed(self) -> int:
        return self.removed[0] if self.removed else self.first_after


@dataclass
class Batch:
    """What one :meth:`TokenIndex.ingest` call added."""

    first_token: int
    n_tokens: int
    events: list = field(default_factory=list)  # every non-Token event, in order
    last_seq: int = -1


class TokenIndex:
    """Columns over the run's tokens in arrival order (backtracked ones included)."""

    def __init__(self, store: TraceStore) -> None:
        self.store = store
        self.n = 0  # tokens ingested
        self.last_seq = -1  # last event ingested
        # Columns are arrays: a million tokens in a few dozen MB (lists held an int or float object
        # per cell, most of a replay's memory).  Extending one from a map is still a C loop.
        self.seqs = array("q")  # store seq of token i
        self.kind = array("B")
        self.prob = array("d")
        self.latency = array("q")
        self.nbytes = array("I")
        self.data: list[bytes] = []  # token i's bytes (the vocabulary's: a pointer each)
        self.cum_width = array("q", [0])  # cells before token i, for plain tokens
        self.cum_gen = array("I", [0])  # counts of tokens: 4 bytes hold four billion
        self.cum_forced = array("I", [0])
        self.cum_gen_latency = array("q", [0])
        self.special: list[int] = []  # tokens the layout must look at closely (sorted)
        self.labels: dict[int, str] = {}  # token index -> role name shown before it
        self._pending_roles: list[tuple[int, str]] = []
        self.removed_at: dict[int, int] = {}  # token index -> seq of the backtrack that took it
        self.removed_sorted: list[int] = []  # removed token indices, ascending
        self.backtracks: list[BacktrackInfo] = []
        self.bt_seqs: list[int] = []
        self.vocab_size = 0  # from RunStart.info["vocab"] when the engine records it
        self.first_sampled = -1  # first generated or forced token (time to first token)
        self._median_latency = 0.0
        self._median_at = 0

    # -- ingestion -----------------------------------------------------
    def ingest(self, upto: int | None = None) -> Batch:
        """Take every event the store has (or up to seq ``upto``) that is not ingested yet."""
        store = self.store
        events = store.since(self.last_seq, None if upto is None else max(0, upto - self.last_seq))
        batch = Batch(self.n, 0, last_seq=self.last_seq)
        if not events:
            return batch
        toks = [e for e in events if type(e) is Token]
        batch.events = [e for e in events if type(e) is not Token] if toks else events
        batch.last_seq = self.last_seq = events[-1].seq
        if toks:
            self._add_tokens(toks)
            batch.n_tokens = len(toks)
        for ev in batch.events:
            if type(ev) is Backtrack:
                self._backtrack(ev)
            elif type(ev) is RunStart:
                try:
                    self.vocab_size = int(ev.info.get("vocab_size") or ev.info.get("vocab") or 0)
                except ValueError:
                    pass
            elif type(ev) is NodeOpen and ev.kind == "role":
                self._pending_roles.append((ev.seq, ev.name or "role"))
        if self._pending_roles:
            self._resolve_roles()
        return batch

    def _add_tokens(self, toks: list[Token]) -> None:
        base = self.n
        bl = list(map(_bytes, toks))
        kinds = list(map(_kind, toks))
        lats = list(map(_latency, toks))
        try:  # converted before any column changes: a value an array cannot hold changes none
            lat_col, prob_col = array("q", lats), array("d", map(_prob, toks))
        except (OverflowError, TypeError):  # a live producer's odd number: shown as unknown
            lats = [x if type(x) is int and -_BIG < x < _BIG else 0 for x in lats]
            lat_col = array("q", lats)
            prob_col = array("d", [p if type(p) is float else math.nan for p in map(_prob, toks)])
        if any(map(_prob_kind, toks)):  # a server's or guidance's one number
            for j, t in enumerate(toks):  # before the mask: shown where the after-mask one is unknown
                if t.prob_kind == ProbKind.BEFORE_MASK and prob_col[j] != prob_col[j] and type(t.prob_raw) is float:
                    prob_col[j] = t.prob_raw
        self.seqs.extend(map(attrgetter("seq"), toks))
        self.kind.extend(kinds)
        self.prob.extend(prob_col)
        self.latency.extend(lat_col)
        self.data.extend(bl)
        widths = list(map(len, bl))
        self.nbytes.extend(widths)
        self.cum_width.extend(_running(widths, self.cum_width[-1]))
        is_gen = list(map(GENERATED.__eq__, kinds))
        self.cum_gen.extend(_running(is_gen, self.cum_gen[-1]))
        self.cum_forced.extend(_running(map(FORCED.__eq__, kinds), self.cum_forced[-1]))
        self.cum_gen_latency.extend(_running(map(mul, lats, is_gen), self.cum_gen_latency[-1]))
        # Tokens that are not plain one-line ASCII need the layout's slow path.
        odd = set(compress(count(base), map(not_, map(bytes.isascii, bl))))
        odd.update(compress(count(base), map(bytes.count, bl, repeat(b"\n"))))
        if odd:
            self.special.extend(sorted(odd))
        if self.first_sampled < 0:
            for i, k in enumerate(kinds):
                if k != PROMPT:
                    self.first_sampled = base + i
                    break
        self.n = base + len(toks)

    def _resolve_roles(self) -> None:
        left = []
        for seq, name in self._pending_roles:
            i = bisect.bisect_right(self.seqs, seq)
            if i < self.n:
                if i not in self.labels:
                    self.labels[i] = name
                    j = bisect.bisect_left(self.special, i)
                    if j >= len(self.special) or self.special[j] != i:
                        self.special.insert(j, i)
            else:
                left.append((seq, name))
        self._pending_roles = left

    def _backtrack(self, ev: Backtrack) -> None:
        # Take tokens back from the end of the live text: by bytes (what the
        # store does), or by count when the event carries no bytes.
        removed: list[int] = []
        i = bisect.bisect_left(self.seqs, ev.seq) - 1
        want = len(ev.bytes)
        got = 0
        removed_at = self.removed_at
        while i >= 0 and (got < want if want else len(removed) < ev.n_tokens):
            if i not in removed_at:
                removed.append(i)
                got += self.nbytes[i]
            i -= 1
        removed.reverse()
        for t in removed:
            removed_at[t] = ev.seq
        if removed:
            if self.removed_sorted and removed[0] < self.removed_sorted[-1]:
                self.removed_sorted = sorted(self.removed_sorted + removed)
            else:
                self.removed_sorted.extend(removed)
        first_after = bisect.bisect_right(self.seqs, ev.seq)
        self.backtracks.append(BacktrackInfo(ev.seq, len(self.backtracks), removed, ev.reason, ev.bytes,
                                             first_after))
        self.bt_seqs.append(ev.seq)

    # -- lookups -------------------------------------------------------
    def token(self, i: int) -> Token:
        return self.store[self.seqs[i]]  # type: ignore[return-value]

    def count_at(self, seq: int) -> int:
        """How many tokens have seq <= ``seq``."""
        return bisect.bisect_right(self.seqs, seq, 0, self.n)

    def token_at(self, seq: int) -> int:
        """Index of the last token with seq <= ``seq`` (-1 when none)."""
        return self.count_at(seq) - 1

    def is_removed(self, i: int, seq: int) -> bool:
        """True when token ``i`` has been taken back by a backtrack at or before ``seq``."""
        return self.removed_at.get(i, NEVER) <= seq

    def backtracks_at(self, seq: int) -> int:
        """How many backtracks happened at or before ``seq``."""
        return bisect.bisect_right(self.bt_seqs, seq)

    def backtrack_by_seq(self, seq: int) -> BacktrackInfo | None:
        k = bisect.bisect_left(self.bt_seqs, seq)
        if k < len(self.bt_seqs) and self.bt_seqs[k] == seq:
            return self.backtracks[k]
        return None

    def backtrack_of(self, i: int) -> BacktrackInfo | None:
        """The backtrack that took token ``i`` back, if any."""
        seq = self.removed_at.get(i)
        return None if seq is None else self.backtrack_by_seq(seq)

    def replacement(self, bt: BacktrackInfo, limit: int = 12) -> range:
        """Tokens that came next at the same position: about as many bytes as
        were removed, within one node, before the next backtrack."""
        start = bt.first_after
        want = max(1, len(bt.data))
        got = 0
        end = start
        nxt = self.bt_seqs[bt.rank + 1] if bt.rank + 1 < len(self.bt_seqs) else NEVER
        node = self.token(start).node_id if start < self.n else None
        while (end < self.n and end - start < limit and got < want and self.seqs[end] < nxt
               and self.token(end).node_id == node):
            got += self.nbytes[end]
            end += 1
        return range(start, end)

    def hidden_upto(self, seq: int) -> list[int]:
        """Sorted indices of tokens taken back at or before ``seq``."""
        if not self.removed_sorted:
            return []
        return [t for t in self.removed_sorted if self.removed_at[t] <= seq]

    def median_latency(self) -> float:
        """Median latency of generated tokens: from a strided sample of at most
        8k tokens, recomputed each time the run doubles.  (A new median recolours
        every token on screen: recomputed on every new token, the first 64 of a live
        run each redrew the whole stream.)"""
        n = self.n
        if n >= 2 * self._median_at and n > self._median_at:
            step = max(1, n // 8192)
            lats = sorted(compress(self.latency[::step], map(GENERATED.__eq__, self.kind[::step])))
            self._median_latency = float(lats[len(lats) // 2]) if lats else 0.0
            self._median_at = n
        return self._median_latency

    def find_low_prob(self, start: int, threshold: float, step: int = 1) -> int | None:
        """Next (``step`` = 1) or previous (-1) generated token from ``start`` with p < threshold."""
        prob, kind = self.prob, self.kind
        rng = range(start, self.n) if step > 0 else range(min(start, self.n - 1), -1, -1)
        for i in rng:
            p = prob[i]
            if kind[i] == GENERATED and p < threshold and not math.isnan(p):
                return i
        return None


def _running(values, start: int):
    """Running totals of ``values`` after ``start`` (excluding ``start`` itself), at C speed."""
    return islice(accumulate(values, initial=start), 1, None)
