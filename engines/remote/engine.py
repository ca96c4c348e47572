"""The remote model: a Backend that holds a tokenizer but no weights, and an Engine whose
grammar calls go to the server (see follow.py).  Everything else — prompt tokens, role
markers, trace nodes, captures — is the local engines' own code, so ``lm += gen(...)``
records the same events whichever side computes the tokens."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from tracing import Message

from ..backend import Backend
from ..errors import EngineError
from ..grammar import Lowered
from ..loop import CallResult, Engine
from . import tokenizer as tokenizers
from .dialects import DIALECTS, Dialect
from .probe import ServerInfo, probe
from .sse import Client

DEFAULT_MAX_TOKENS = 1024  # a server needs a cap (vLLM's default is 16); a grammar stops sooner


@dataclass
class Remote:
    """One server connection: the client, what the probe found, the tokenizer the matcher uses."""

    client: Client
    server: ServerInfo
    dialect: Dialect
    tokenizer: tokenizers.LocalTokenizer
    tokenizer_source: str
    max_tokens: int = DEFAULT_MAX_TOKENS

    @property
    def model(self) -> str:
        return self.server.model


class RemoteBackend(Backend):
    """The tokenizer side of a remote model; it never computes logits."""

    def __init__(self, remote: Remote) -> None:
        self.remote = remote
        tok = remote.tokenizer
        self.name = f"remote:{remote.dialect.name}"
        self.model_id = f"{remote.model} @ {remote.client.base_url}"
        self.vocab_size = tok.vocab_size
        self.bos_id = tok.bos_id
        self.eos_ids = tuple(tok.eos_ids)

    def tokenize(self, data: bytes, *, add_bos: bool) -> list[int]:
        if not self.remote.tokenizer.exact:
            return []  # no vocabulary: the prompt is recorded as one piece
        ids = self.remote.tokenizer.tokenize(data)
        return ([self.bos_id] + ids) if add_bos and self.bos_id is not None else ids

    def token_bytes(self, token_id: int) -> bytes:
        return self.remote.tokenizer.token_bytes(token_id) if self.remote.tokenizer.exact else b""

    def ll_tokenizer(self):
        return self.remote.tokenizer.ll_tokenizer()

    def chat_template(self) -> str | None:
        return self.remote.tokenizer.chat_template() or self.remote.server.chat_template

    @property
    def architecture(self) -> str:
        return self.remote.tokenizer.architecture

    def logits(self, ids, n_rows=1):
        raise EngineError("a remote model computes its logits on the server")

    @property
    def info(self) -> dict[str, str]:
        s = self.remote.server
        out = {"backend": self.name, "model": s.model, "url": self.remote.client.base_url,
               "dialect": self.remote.dialect.name, "dialect_reason": s.reason,
               "prob_kind": self.remote.dialect.prob_kind.name.lower(), "tokenizer": self.remote.tokenizer_source}
        out.update({k: str(v) for k, v in s.extra.items()})
        return out


class RemoteEngine(Engine):
    """An Engine whose grammar calls are answered by the server."""

    def __init__(self, backend: RemoteBackend, session, options=None) -> None:
        super().__init__(backend, session, options)
        self.remote = backend.remote

    def run(self, text: bytes, lark: "str | Lowered", node_id: int, *, stop_check=None,
            temperature: float | None = None, **_sampling) -> CallResult:
        from .follow import RemoteCall

        lowered = lark if isinstance(lark, Lowered) else Lowered(lark)
        t = self.options.temperature if temperature is None else temperature
        with self.backend.lock:  # one call at a time per connection, as per local backend
            return RemoteCall(self, text, lowered, node_id, stop_check, t).run()


# -- building one ----------------------------------------------------------------------------
_remotes: dict[tuple, Remote] = {}
_lock = threading.Lock()


def _tokenizer_for(server: ServerInfo, tokenizer) -> tuple[tokenizers.LocalTokenizer, str]:
    if tokenizer is not None:
        return tokenizers.load(tokenizer), str(tokenizer)
    for candidate in (server.model_path, server.model):
        if candidate and tokenizers.looks_local(candidate):
            return tokenizers.load(candidate), candidate
    return tokenizers.ByteTokenizer(), "none (bytes)"


def connect(base_url: str, model: str | None = None, api_key: str | None = None, dialect: str = "auto", *,
            tokenizer=None, timeout: float = 60.0, max_tokens: int = DEFAULT_MAX_TOKENS) -> Remote:
    """Probe the server once per process (per URL, model, key, dialect and tokenizer)."""
    key = (base_url, model, api_key, dialect, str(tokenizer) if tokenizer is not None else None, timeout, max_tokens)
    with _lock:
        r = _remotes.get(key)
        if r is None:
            client = Client(base_url, api_key, timeout=timeout)
            server = probe(client, model, dialect)
            tok, source = _tokenizer_for(server, tokenizer)
            r = _remotes[key] = Remote(client, server, DIALECTS[server.dialect], tok, source, max_tokens)
        return r


_backends: dict[int, RemoteBackend] = {}


def model(base_url: str, model: str | None = None, api_key: str | None = None, dialect: str = "auto", *,
          tokenizer=None, timeout: float = 60.0, max_tokens: int = DEFAULT_MAX_TOKENS, options=None, session=None):
    """A :class:`~engines.model.Model` on a remote server (see ``models.OpenAICompatible``)."""
    from .. import session as sessions
    from ..model import Model

    remote = connect(base_url, model, api_key, dialect, tokenizer=tokenizer, timeout=timeout, max_tokens=max_tokens)
    with _lock:
        backend = _backends.get(id(remote))
        if backend is None:
            backend = _backends[id(remote)] = RemoteBackend(remote)
    session = session or sessions.current()
    session.ensure_run(backend)
    if session.recorder is not None:
        session.recorder.model_built(backend)
    engine = RemoteEngine(backend, session, options)
    s = remote.server
    session.store.append(Message(level="info", text=(
        f"model: {s.model} on {remote.client.base_url} (remote, dialect {remote.dialect.name}: {s.reason}; "
        f"probabilities {remote.dialect.prob_kind.name.lower().replace('_', ' ')}; tokenizer "
        f"{remote.tokenizer_source})")))
    if not remote.tokenizer.exact:
        session.warn("no tokenizer for the remote model (pass tokenizer= or --model): the local matcher checks "
                     "the grammar on bytes; allowed-set sizes, masked alternatives and forced tokens are unknown")
    return Model(engine)
