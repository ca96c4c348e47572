"""Searching a run: token text, node names, capture names and values; and two jumps,
to the least likely token and to the least certain choice.  Headless (no Textual).

Token text is searched as the run's text, not token by token, so a word the
tokenizer cut in two ("neut" + "ral") is found; the match starts at the token
holding its first byte.  Matching ignores case.  Backtracked tokens are
searched too (they are in the stream, struck through).  Hits are ordered by
seq, so "next" and "previous" go forward and back along the timeline.

The least certain choice is the generated token whose after-mask probability
is closest to (or below) that of the best other allowed token: the margin
``p(chosen) - p(next allowed)``, both after the grammar mask.  Where a token's
after-mask list was not recorded, the allowed tokens of its before-mask top-k
are rescaled by the chosen token's after/before ratio (the mask renormalises
every allowed token by the same factor).
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from itertools import accumulate

from tracing import Token
from tracing.tree import TraceTree

from guidance_tui.state.token_index import GENERATED, TokenIndex


@dataclass(frozen=True)
class Hit:
    """One match: where the timeline goes (``seq``) and what to select (``token``, -1: none)."""

    seq: int
    token: int
    what: str  # "text", "node" or "capture"
    label: str  # a few words for the status line
    node_id: int = -1  # the node a "node" hit names


class TextSearch:
    """The run's token text as one lower-cased byte string, extended as tokens arrive."""

    def __init__(self, index: TokenIndex) -> None:
        self.index = index
        self._blob = bytearray()
        self._starts: list[int] = [0]  # byte offset where token i starts; one more entry than tokens
        self._n = 0

    def _extend(self) -> None:
        idx = self.index
        if idx.n == self._n:
            return
        data = idx.data[self._n:idx.n]
        self._blob += b"".join(data).lower()
        self._starts.extend(accumulate(map(len, data), initial=self._starts[-1]))
        del self._starts[self._n + 1]  # accumulate repeats the initial value
        self._n = idx.n

    def token_hits(self, query: str, limit: int = 100_000) -> list[int]:
        """Token indices where a match of ``query`` starts (one per match, in text order)."""
        self._extend()
        q = query.lower().encode("utf-8")
        if not q:
            return []
        blob, starts = self._blob, self._starts
        out: list[int] = []
        i = blob.find(q)
        while i >= 0 and len(out) < limit:
            t = bisect.bisect_right(starts, i) - 1
            if not out or out[-1] != t:
                out.append(t)
            i = blob.find(q, i + max(1, len(q)))
        return out


def search(query: str, index: TokenIndex, tree: TraceTree, text: TextSearch | None = None,
           upto: int | None = None) -> list[Hit]:
    """Every hit of ``query`` in the run up to seq ``upto`` (default: all), ordered by seq."""
    query = query.strip()
    if not query:
        return []
    text = text or TextSearch(index)
    q = query.lower()
    hits: list[Hit] = []
    for t in text.token_hits(query):
        hits.append(Hit(index.seqs[t], t, "text", f"text at token {t + 1:,}"))
    for node in tree.by_id.values():
        if node.kind == "root":
            continue
        if q in node.name.lower() or q == node.kind.lower():
            first = index.count_at(node.open_seq)
            tok = first if first < index.n else -1
            label = f"node {node.kind} {node.name}".strip()
            hits.append(Hit(index.seqs[tok] if tok >= 0 else node.open_seq, tok, "node", label, node.node_id))
        for cap in node.captures:
            if q in cap.name.lower() or q in cap.value.lower():
                hits.append(Hit(cap.seq, index.token_at(cap.seq), "capture", f"capture {cap.name} = {cap.value!r}"))
    hits.sort(key=lambda h: (h.seq, h.what))
    if upto is not None:
        hits = [h for h in hits if h.seq <= upto]
    return hits


def step(hits: list[Hit], seq: int, direction: int) -> int | None:
    """Index in ``hits`` of the next hit after ``seq`` (direction 1) or before it (-1); wraps around."""
    if not hits:
        return None
    seqs = [h.seq for h in hits]
    if direction > 0:
        i = bisect.bisect_right(seqs, seq)
        return i if i < len(hits) else 0
    i = bisect.bisect_left(seqs, seq) - 1
    return i if i >= 0 else len(hits) - 1


def lowest_prob(index: TokenIndex, upto: int | None = None) -> int | None:
    """The generated token with the lowest (known) probability, up to token ``upto``; None when none."""
    n = index.n if upto is None else min(index.n, upto + 1)
    best, best_p = None, math.inf
    kind, prob = index.kind, index.prob
    for i in range(n):
        p = prob[i]
        if kind[i] == GENERATED and p < best_p:  # NaN compares False: skipped
            best, best_p = i, p
    return best


def allowed_alternatives(tok: Token, top: list) -> list[tuple[int, float]]:
    """(id, after-mask probability) of the allowed alternatives of ``tok``, best first."""
    if tok.top is not top:  # the store unpacked them lazily: give the token its list first
        tok.top = top
    after = tok.after_mask()
    if after:
        return [(a.id, a.prob) for a in after]
    if not (tok.prob == tok.prob and tok.prob_raw == tok.prob_raw and tok.prob_raw > 0):
        return []
    scale = tok.prob / tok.prob_raw
    return sorted(((a.id, min(1.0, a.prob * scale)) for a in top if not a.masked), key=lambda x: -x[1])


def margin(tok: Token, top: list) -> float | None:
    """``p(chosen) - p(best other allowed)`` after the mask; None when unknown or there was no other choice."""
    if tok.kind != GENERATED or tok.allowed == 1 or tok.prob != tok.prob:
        return None
    others = [p for tid, p in allowed_alternatives(tok, top) if tid != tok.id]
    if not others:
        return None
    return tok.prob - max(others)


def least_certain(index: TokenIndex, upto: int | None = None) -> tuple[int, float] | None:
    """(token, margin) of the generated token with the smallest margin, up to token ``upto``."""
    n = index.n if upto is None else min(index.n, upto + 1)
    store = index.store
    best: tuple[int, float] | None = None
    kind = index.kind
    for i in range(n):
        if kind[i] != GENERATED:
            continue
        seq = index.seqs[i]
        tok = store[seq]
        m = margin(tok, store.alternatives(seq))
        if m is not None and (best is None or m < best[1]):
            best = (i, m)
    return best
