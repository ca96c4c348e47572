"""A model-free engine for recording tests: llguidance's byte tokenizer and fixed logits
(every greedy token is "a").  ``fake_model()`` builds it the way ``models.LlamaCpp`` builds a model,
on the current session (the default one in a plain ``python`` process)."""

from __future__ import annotations

import llguidance
import numpy as np

from engines import models
from engines import session as sessions
from engines.backend import Backend
from engines.loop import Options


class ByteBackend(Backend):
    name = "fake"
    model_id = "fake-bytes"

    def __init__(self) -> None:
        self._tok = llguidance.LLTokenizer("byte")
        self.vocab_size = self._tok.vocab_size
        self.n_ctx = 1 << 16
        self.eos_ids = (self._tok.eos_token,)
        self.bos_id = None

    def tokenize(self, data: bytes, *, add_bos: bool) -> list[int]:
        return list(data)

    def token_bytes(self, token_id: int) -> bytes:
        return bytes([token_id]) if token_id < 256 else b""

    def ll_tokenizer(self):
        return self._tok

    def chat_template(self):
        return None

    def logits(self, ids, n_rows: int = 1):
        out = np.full((n_rows, self.vocab_size), -5.0, dtype=np.float32)
        out[:, ord("a")] = 5.0
        return out


def fake_model(monitoring: bool = False):
    return models._model(ByteBackend(), Options(monitoring=monitoring), sessions.current())
