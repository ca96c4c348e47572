"""The interface every model backend implements for the decode loop.

A backend owns the model weights and one KV cache.  The loop hands it the
whole token sequence each step; the backend reuses the longest cached prefix,
trims the rest (a backtrack or another branch) and evaluates only what is new,
computing only the logits rows the loop asks for.
"""

from __future__ import annotations

import abc
import threading

import numpy as np

_lock_guard = threading.Lock()


class Backend(abc.ABC):
    """Not thread-safe by itself: callers hold :attr:`lock` around anything that touches the cache."""

    name: str = "backend"

    #: path or identifier of the weights, for the trace's RunStart
    model_id: str = ""
    n_ctx: int = 0
    vocab_size: int = 0
    bos_id: int | None = None
    eos_ids: tuple[int, ...] = ()
    #: The forward pass keeps every CPU core busy (a model on the CPU): work handed to another thread
    #: during it takes a core from it, so the loop computes token statistics inline.  False where the
    #: pass runs on a GPU or leaves cores idle: there the statistics overlap it (engines.token_stats).
    forward_uses_every_core: bool = True

    @abc.abstractmethod
    def tokenize(self, data: bytes, *, add_bos: bool) -> list[int]:
        """Token ids for ``data``; special markers such as ``<start_of_turn>`` stay single tokens."""

    @abc.abstractmethod
    def token_bytes(self, token_id: int) -> bytes:
        """The exact bytes of one token (special tokens as their marker text)."""

    @abc.abstractmethod
    def ll_tokenizer(self):
        """An ``llguidance.LLTokenizer`` for this vocabulary (built once, cached)."""

    @abc.abstractmethod
    def chat_template(self) -> str | None:
        """The model's own Jinja chat template, if it ships one."""

    @property
    def architecture(self) -> str:
        return ""

    @property
    def lock(self) -> threading.RLock:
        """One lock per backend: the KV cache, the cached prefix and the native context are one state.

        The decode loop holds it for a whole grammar call (the cache must stay what the call left
        between two steps); re-entrant so a backend method may take it too.
        """
        lock = self.__dict__.get("_backend_lock")
        if lock is None:
            with _lock_guard:
                lock = self.__dict__.setdefault("_backend_lock", threading.RLock())
        return lock

    @abc.abstractmethod
    def logits(self, ids: list[int], n_rows: int = 1) -> np.ndarray:
        """Logits for the last ``n_rows`` positions of ``ids``, shape (n_rows, vocab).

        Row ``j`` predicts the token after position ``len(ids) - n_rows + j``; the
        last row predicts the next token.  The array may be a view that the next
        call overwrites: use it before calling again.
        """

    def reset(self) -> None:
        """Forget the KV cache."""

    def close(self) -> None:
        """Free native resources."""

    @property
    def info(self) -> dict[str, str]:
        return {"backend": self.name, "model": self.model_id, "n_ctx": str(self.n_ctx)}


def common_prefix(a: list[int], b: list[int]) -> int:
    """Length of the longest common prefix of two token lists."""
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    lo, hi = 0, n  # binary search on equal prefixes: O(log n) slice compares
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo
