"""Per-token statistics from one logits row, fused so a step costs a few hundred microseconds.

On a 262k vocabulary every full pass costs ~0.05-0.2 ms, and a fresh 1 MB array costs as much again
(glibc maps it anew and the kernel clears its pages): so each pass is done once, into buffers kept per
thread.  A step is one max, one exp, one sum, one masked dot product when the grammar masks anything, and
one compare pass for the top-k.  The arithmetic is that of a plain ``np.exp(row - m).sum()``: the
recorded numbers do not depend on the buffers.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Callable

import numpy as np

_PREFILTER = 20.0  # logits this far below the max have p < 2e-9: never in a top-k that matters
_scratch = threading.local()


def _buffer(name: str, n: int, dtype) -> np.ndarray:
    """A per-thread scratch array of ``n`` items, reused from step to step."""
    buf = getattr(_scratch, name, None)
    if buf is None or len(buf) != n or buf.dtype != dtype:
        buf = np.empty(n, dtype=dtype)
        setattr(_scratch, name, buf)
    return buf


@dataclass
class RowStats:
    """A row analysed once; token probabilities are looked up cheaply afterwards."""

    row: np.ndarray
    max: float
    log_z: float  # log of the partition over the whole vocabulary
    log_z_masked: float  # over the allowed set (== log_z when nothing is masked)
    top_ids: np.ndarray  # raw top-k by logit, best first
    near: np.ndarray | None = None  # ids with a logit within _PREFILTER of the max, found when first needed

    def prob_raw(self, token: int) -> float:
        return math.exp(float(self.row[token]) - self.log_z)

    def prob_masked(self, token: int) -> float:
        return math.exp(float(self.row[token]) - self.log_z_masked)

    @classmethod
    def light(cls, row: np.ndarray) -> "RowStats":
        """What choosing a token needs: the row, its max and the best id (one pass); the rest unknown."""
        best = int(np.argmax(row))
        return cls(row, float(row[best]), math.nan, math.nan, np.array([best], dtype=np.int64))

    def near_ids(self) -> np.ndarray:
        if self.near is None:
            self.near = np.flatnonzero(self.row >= self.max - _PREFILTER)
        return self.near


def top_k_ids(row: np.ndarray, k: int, row_max: float | None = None) -> np.ndarray:
    """The ``k`` ids with the highest logits, best first; ties go to the lower id.

    One compare pass against a threshold below the max, then a sort of the few ids above it.  The
    threshold starts at the gap the previous row needed (rows of one run look alike) and widens
    until k ids pass: a partition of the whole row costs ~1 ms on 262k, a pass ~30 us."""
    k = min(k, len(row))
    if k <= 0:
        return np.empty(0, dtype=np.int64)
    if k == 1:
        return np.array([np.argmax(row)], dtype=np.int64)
    m = float(row.max()) if row_max is None else row_max
    gap = getattr(_scratch, "gap", 2.0)
    above = _buffer("above", len(row), np.bool_)
    while True:
        cand = np.flatnonzero(np.greater_equal(row, m - gap, out=above))
        if len(cand) >= k or not math.isfinite(gap):
            break
        gap = gap * 2 if gap < 1e3 else math.inf  # NaN logits never pass: end with all ids
    if len(cand) > 8 * k:  # keep the k best (and any tied with the k-th) before the exact sort
        vals = row[cand]
        kth = np.partition(vals, len(vals) - k)[len(vals) - k]
        cand = cand[vals >= kth]
    best = cand[np.lexsort((cand, -row[cand]))[:k]]
    if len(best) == k:
        _scratch.gap = max(0.5, float(m - row[best[-1]]) * 1.25 + 0.25)
    return best


def analyse(row: np.ndarray, allowed: np.ndarray | None, k: int, row_max: float | None = None) -> RowStats:
    """Statistics of ``row``; ``allowed`` is a bool mask (None: everything allowed); ``row_max``
    is the row's max when the caller knows it already."""
    row = row[: len(allowed)] if allowed is not None and len(row) > len(allowed) else row
    m = float(row.max()) if row_max is None else row_max
    e = _buffer("exp", len(row), row.dtype)
    np.subtract(row, m, out=e)
    np.exp(e, out=e)
    z = float(e.sum())
    log_z = m + math.log(z)
    if allowed is None:
        log_z_masked = log_z
    else:
        weights = _buffer("weights", len(allowed), row.dtype)
        # A read-only mask (from mask_from_bitmask) cannot change: the weights made from it stay valid.
        made = getattr(_scratch, "weights_of", None)
        if made is None or made[0] is not allowed or made[1] is not weights or allowed.flags.writeable:
            np.copyto(weights, allowed)
            _scratch.weights_of = (allowed, weights)
        zm = float(np.dot(e, weights))
        log_z_masked = m + math.log(zm) if zm > 0 else float("inf")
    return RowStats(row, m, log_z, log_z_masked, top_k_ids(row, k, m))


def top_k_allowed(stats: RowStats, allowed: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` allowed ids with the highest logits, best first (the top-k after the mask).

    Allowed tokens more than ``_PREFILTER`` below the best allowed one have a renormalised
    p < 2e-9 and are left out.  Usually the ids near the raw max (one pass, kept in ``stats``)
    hold k allowed ones; otherwise one pass over the mask finds the allowed ids.
    """
    row = stats.row
    near = stats.near_ids()
    cand = near[allowed[near]]
    if len(cand) < k:  # the allowed set lies lower (or is small): look at all of it
        cand = np.flatnonzero(allowed[: len(row)])
        if len(cand) == 0:
            return cand
        vals = row[cand]
        cand = cand[vals >= float(vals.max()) - _PREFILTER]
    if len(cand) > k:
        cand = cand[np.argpartition(row[cand], -k)[-k:]]
    return cand[np.argsort(-row[cand], kind="stable")]


def greedy(stats: RowStats, allowed: np.ndarray | None) -> int:
    """The allowed token with the highest logit (ties: the lower id)."""
    best = int(stats.top_ids[0]) if len(stats.top_ids) else int(np.argmax(stats.row))
    if allowed is None or allowed[best]:
        return best
    return int(np.argmax(np.where(allowed, stats.row, -np.inf)))


def sample(stats: RowStats, allowed: np.ndarray | None, temperature: float,
           rng: np.random.Generator | Callable[[], np.random.Generator], *,
           top_p: float = 1.0, min_p: float = 0.0, top_k: int = 0) -> int:
    """Draw from softmax(row / temperature) restricted to the allowed set; greedy at 0.

    ``rng`` may be a function that gives the generator, called only for a draw.

    ``top_p`` keeps the smallest set of best tokens whose probability reaches it, ``min_p`` drops
    tokens below ``min_p`` times the best one, ``top_k`` keeps the k best (0: all).
    """
    if temperature <= 0:
        return greedy(stats, allowed)
    w = np.exp((stats.row - stats.max) / temperature)
    if allowed is not None:
        w = w * allowed
    if top_p < 1.0 or min_p > 0.0 or top_k > 0:
        w = truncate(w, top_p, min_p, top_k)
    c = np.cumsum(w, dtype=np.float64)
    if c[-1] <= 0:
        return greedy(stats, allowed)
    if callable(rng):
        rng = rng()
    return int(np.searchsorted(c, rng.random() * c[-1], side="right"))


def truncate(w: np.ndarray, top_p: float = 1.0, min_p: float = 0.0, top_k: int = 0) -> np.ndarray:
    """Weights ``w`` (unnormalised, masked) with the tokens outside top-k / min-p / top-p zeroed."""
    live = np.flatnonzero(w > w.max() * 1e-12)  # p below 1e-12 of the best: never kept, skip the sort
    if len(live) <= 1:
        return w
    order = live[np.argsort(-w[live], kind="stable")]
    keep = len(order)
    if top_k > 0:
        keep = min(keep, top_k)
    if min_p > 0.0:
        keep = min(keep, int(np.count_nonzero(w[order] >= min_p * w[order[0]])))
    if top_p < 1.0:
        c = np.cumsum(w[order], dtype=np.float64)
        keep = min(keep, int(np.searchsorted(c, top_p * c[-1], side="left")) + 1)
    out = np.zeros_like(w)
    out[order[:max(1, keep)]] = w[order[:max(1, keep)]]
    return out


def mask_from_bitmask(bitmask: np.ndarray, vocab: int) -> tuple[np.ndarray | None, int]:
    """(bool mask or None when all allowed, allowed count) from llguidance's int32 bitmask.

    A mask equal to the previous one (free text masks the same few special tokens at every step) is
    the same read-only array, so :func:`analyse` keeps the float weights it made from it."""
    words = bitmask.reshape(-1)
    full = vocab // 32
    if (words[:full] == -1).all() and (vocab % 32 == 0 or words[full] & ((1 << (vocab % 32)) - 1) == (1 << (vocab % 32)) - 1):
        return None, vocab
    last = getattr(_scratch, "last_mask", None)
    if last is not None and last[0].shape == words.shape and last[1].shape[0] == vocab \
            and np.array_equal(last[0], words):
        return last[1], last[2]
    allowed = np.unpackbits(words.view(np.uint8), bitorder="little", count=vocab).view(bool)
    allowed.flags.writeable = False
    n = int(np.count_nonzero(allowed))
    _scratch.last_mask = (words.copy(), allowed, n)
    return allowed, n
