"""Model constructors: ``LlamaCpp``, ``Transformers`` and ``default``.

Loaded backends are kept per process and shared, so building several models
on the same weights (or re-running a test) loads them once.
"""

from __future__ import annotations

import threading
from pathlib import Path

from tracing import Message

from . import session as _session
from .default_model import default_model_path
from .errors import ModelLoadError
from .loop import Engine, Options
from .model import Model

_backends: dict[tuple, object] = {}
_lock = threading.Lock()


def _options(kw: dict) -> Options:
    names = Options.__dataclass_fields__.keys()
    aliases = {"enable_monitoring": "monitoring", "echo": None}
    out = {}
    for k, v in list(kw.items()):
        k2 = aliases.get(k, k)
        if k2 is None:
            kw.pop(k)
            continue
        if k2 in names:
            out[k2] = v
            kw.pop(k)
    return Options(**out)


def _shared(key: tuple, make):
    with _lock:
        b = _backends.get(key)
        if b is None:
            b = _backends[key] = make()
        return b


def _model(backend, options: Options, session) -> Model:
    session.ensure_run(backend)  # the default session's run starts here (before the monitor's first sample)
    if session.recorder is not None:
        session.recorder.model_built(backend)
    engine = Engine(backend, session, options)
    session.store.append(Message(level="info", text=f"model: {backend.model_id} ({backend.name})"))
    return Model(engine)


def LlamaCpp(path: str | Path | None = None, *, n_ctx: int = 8192, n_threads: int | None = None,
             n_gpu_layers: int = 0, **kw) -> Model:
    """A model on llama.cpp: a GGUF path, or the embedded default Gemma 3 270M.

    Options: top_k (5), token_stats, enable_backtrack, enable_ff_tokens,
    enable_monitoring, temperature (0: greedy), seed.
    """
    from .llamacpp import LlamaCppBackend

    opts = _options(kw)
    if kw:
        raise TypeError(f"unknown option(s): {', '.join(kw)}")
    p = Path(path).expanduser().resolve() if path is not None else default_model_path()
    backend = _shared(("llamacpp", str(p), n_ctx, n_threads, n_gpu_layers),
                      lambda: LlamaCppBackend(p, n_ctx=n_ctx, n_threads=n_threads, n_gpu_layers=n_gpu_layers))
    return _model(backend, opts, _session.current())


def Transformers(path: str | Path | None = None, **kw) -> Model:
    """A model on Hugging Face transformers + torch: a model directory, or the default Gemma GGUF."""
    try:
        from .transformers_backend import TransformersBackend
    except ImportError as e:
        raise ModelLoadError(f"the transformers backend needs torch and transformers ({e.name} is missing)") from None
    opts = _options(kw)
    backend_kw = {k: kw.pop(k) for k in list(kw) if k in TransformersBackend.OPTIONS}
    if kw:
        raise TypeError(f"unknown option(s): {', '.join(kw)}")
    p = Path(path).expanduser().resolve() if path is not None else default_model_path()
    backend = _shared(("transformers", str(p), tuple(sorted(backend_kw.items()))),
                      lambda: TransformersBackend(p, **backend_kw))
    return _model(backend, opts, _session.current())


def default(**kw) -> Model:
    """The model named on the command line (``--model``/``--backend``), else the embedded default."""
    s = _session.current()
    path = s.model
    backend = s.backend or ("transformers" if path and Path(path).is_dir() else "llamacpp")
    if backend == "transformers":
        return Transformers(path, **kw)
    return LlamaCpp(path, **kw)
