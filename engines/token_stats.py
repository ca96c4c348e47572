"""A sampled token's statistics, computed while the model runs its next forward pass.

Choosing a token needs only the mask and an argmax (or a draw); its probabilities before and
after the mask and both top-k lists need full passes over the vocabulary (~0.4 ms on 262k, more
in the loop with cold caches).  None of that is on the path to the next token, so where the
forward pass leaves a core to spare the loop hands it to one worker thread, which emits the
token; the loop waits for that job before it changes the text again (after the next pass, or
before a backtrack).  NumPy and llama.cpp both release the interpreter lock, so the two run at
once; the numbers are the same ones a serial loop computes, from a copy of the row (llama.cpp
overwrites its logits buffer on the next decode).  Where the pass uses every core the job runs
inline (:class:`StatsWorker`).
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

_pool: ThreadPoolExecutor | None = None
_lock = threading.Lock()


def _forget_pool() -> None:
    """A forked child has none of its parent's threads: it starts its own worker when it needs one."""
    global _pool, _lock
    _pool, _lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_pool)


class StatsWorker:
    """The process's one statistics thread (jobs run in submission order).

    A job runs inline, at once on the caller's thread, where the forward pass keeps every core busy
    (``Backend.forward_uses_every_core``): measured on 2 cores, llama.cpp at 0.978x raw inline and
    0.962x with the worker, whose ~1 ms a token then comes out of the pass's own threads.
    ``inline`` (GUIDANCE_TUI_STATS_INLINE=1 or 0) overrides that choice for every backend."""

    inline: bool | None = {"1": True, "0": False}.get(os.environ.get("GUIDANCE_TUI_STATS_INLINE", ""))

    @staticmethod
    def runs_inline(backend) -> bool:
        return StatsWorker.inline if StatsWorker.inline is not None else backend.forward_uses_every_core

    @staticmethod
    def submit(fn, *args, inline: bool = False) -> Future:
        global _pool
        if inline:
            done: Future = Future()
            done.set_result(fn(*args))
            return done
        if _pool is None:
            with _lock:
                if _pool is None:
                    _pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="token-stats")
        return _pool.submit(fn, *args)


class RowCopy:
    """One reusable buffer for the row a job reads: a job ends before the next row is copied."""

    def __init__(self) -> None:
        self._buf: np.ndarray | None = None

    def __call__(self, row: np.ndarray) -> np.ndarray:
        if self._buf is None or self._buf.shape != row.shape or self._buf.dtype != row.dtype:
            self._buf = np.empty_like(row)
        np.copyto(self._buf, row)
        return self._buf
