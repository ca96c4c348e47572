"""Model constructors: ``LlamaCpp``, ``Transformers`` and ``default``, with guidance 0.3.1's signatures.

Loaded backends are kept per process and shared, so building several models
on the same weights (or re-running a test) loads them once.

guidance's switches are accepted with their meaning; the ones that turn
recording off (``echo``, ``enable_token_probabilities``, ``enable_top_k``,
``compute_log_probs``) are accepted and recording stays on: recording is what
guidance-tui is for.  A keyword that applies nowhere is an error, and one that
cannot apply here raises ``NotImplementedError`` naming it.
"""

from __future__ import annotations

import os
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

#: guidance's engine switches whose effect we always have (recording stays on whatever they say).
_ALWAYS_ON = frozenset({"echo", "compute_log_probs", "enable_token_probabilities", "enable_top_k"})
#: Keyword arguments of llama_cpp.Llama that our backend applies itself.
_LLAMA_APPLIED = frozenset({"n_ctx", "n_threads", "n_gpu_layers", "n_batch", "verbose"})
#: llama_cpp.Llama's keyword arguments passed on as they are: where and how the model is stored and
#: computed (and, for chat_format, chat_handler, last_n_tokens_size and spm_infill, parts of
#: llama-cpp-python's own completion API that neither guidance nor we use: accepted, no effect).
_LLAMA_PASSED = frozenset({
    "split_mode", "main_gpu", "tensor_split", "use_mmap", "use_mlock", "kv_overrides", "n_ubatch",
    "n_threads_batch", "rope_scaling_type", "rope_freq_base", "rope_freq_scale", "yarn_ext_factor",
    "yarn_attn_factor", "yarn_beta_fast", "yarn_beta_slow", "yarn_orig_ctx", "offload_kqv", "flash_attn",
    "op_offload", "swa_full", "no_perf", "type_k", "type_v", "numa", "lora_base", "lora_scale", "lora_path",
    "chat_format", "chat_handler", "last_n_tokens_size", "spm_infill"})
#: llama_cpp.Llama's keyword arguments that would take away what the decode loop needs, and why.
_LLAMA_REFUSED = {
    "vocab_only": "a model without weights gives no logits",
    "embedding": "an embedding context gives no next-token logits",
    "pooling_type": "pooling is for embeddings",
    "attention_type": "generation needs causal attention",
    "tokenizer": "the backend tokenizes with the model's own vocabulary, as llguidance does",
    "draft_model": "the decode loop is guidance-tui's own, without speculative decoding",
}


def _options(kw: dict) -> Options:
    """Our engine options out of ``kw`` (the keys used are removed from it)."""
    names = Options.__dataclass_fields__.keys()
    aliases: dict[str, str] = {}
    out = {}
    for k in list(kw):
        if k in _ALWAYS_ON:
            kw.pop(k)
            continue
        k2 = aliases.get(k, k)
        if k2 in names:
            out[k2] = kw.pop(k)
    return Options(**out)


def _shared(key: tuple, make):
    with _lock:
        b = _backends.get(key)
        if b is None:
            b = _backends[key] = make()
        return b


def llamacpp_backend(path, *, n_ctx: int = 8192, n_threads: int | None = None, n_gpu_layers: int = 0,
                     n_batch: int = 512, verbose: bool = False, **options):
    """The process's llama.cpp backend of ``path`` with these settings (one per file and settings: a
    second backend of the file, later freed, would leave the shared llguidance tokenizer without a
    vocabulary)."""
    from .llamacpp import LlamaCppBackend

    key = ("llamacpp", str(path), n_ctx, n_threads, n_gpu_layers, n_batch, tuple(sorted((k, repr(v))
                                                                                   for k, v in options.items())))
    return _shared(key, lambda: LlamaCppBackend(path, n_ctx=n_ctx, n_threads=n_threads, n_gpu_layers=n_gpu_layers,
                                                n_batch=n_batch, verbose=verbose, **options))


def _markers_from(chat_template, backend) -> dict | None:
    """Role markers from a ``chat_template`` argument: Jinja text, or guidance's ``ChatTemplate``
    (a class or object with ``get_role_start(role)``/``get_role_end(role)``)."""
    if chat_template is None:
        return None
    if isinstance(chat_template, str):
        from .chat import role_markers

        bos = backend.token_bytes(backend.bos_id).decode("utf-8", "replace") if backend.bos_id is not None else ""
        return role_markers(chat_template, backend.architecture, bos)
    obj = chat_template() if isinstance(chat_template, type) else chat_template
    if hasattr(obj, "get_role_start") and hasattr(obj, "get_role_end"):
        return {r: (obj.get_role_start(r), obj.get_role_end(r)) for r in ("system", "user", "assistant")}
    raise TypeError(f"chat_template must be Jinja text or a ChatTemplate, got {type(chat_template).__name__}")


def _model(backend, options: Options, session, *, chat_template=None, sampling_params=None,
           echo: bool = True) -> Model:
    session.ensure_run(backend)  # the default session's run starts here (before the monitor's first sample)
    if session.recorder is not None:
        session.recorder.model_built(backend)
    engine = Engine(backend, session, options)
    passed = "".join(f", {k}={v!r}" for k, v in sorted(getattr(backend, "options", {}).items()))
    session.store.append(Message(level="info", text=f"model: {backend.model_id} ({backend.name}{passed})"))
    lm = Model(engine, _markers=_markers_from(chat_template, backend), echo=bool(echo))
    return lm.with_sampling_params(sampling_params) if sampling_params else lm


def _path(model, env: str) -> Path:
    """The weights: ``model``, else the runner's ``--model``, else ``env`` (as guidance reads it), else
    the embedded default."""
    if model is None or (isinstance(model, str) and not model.strip()):
        model = _session.current().model or os.environ.get(env, "").strip() or None
    return Path(model).expanduser().resolve() if model is not None else default_model_path()


def _unknown(kw: dict, what: str) -> None:
    if kw:
        raise TypeError(f"{what}: unknown keyword argument(s): {', '.join(sorted(kw))}")


def LlamaCpp(model=None, echo=True, chat_template=None, enable_backtrack=True, enable_ff_tokens=True,
             enable_monitoring=True, sampling_params=None, **llama_cpp_kwargs) -> Model:
    """A model on llama.cpp: a GGUF path, or the embedded default Gemma 3 270M.

    guidance's arguments, plus llama.cpp's ``n_ctx`` (8192), ``n_threads``, ``n_gpu_layers``,
    ``n_batch``, ``verbose`` and ``seed``, llama_cpp.Llama's storage and compute options as they
    are (``_LLAMA_PASSED``: ``flash_attn``, ``use_mlock``, ``type_k``, rope scaling...), and ours:
    ``top_k`` (5, alternatives recorded per token), ``token_stats``, ``temperature`` (0: greedy),
    ``monitoring``.
    """
    if model is not None and not isinstance(model, (str, Path)):
        raise NotImplementedError(f"LlamaCpp(model=<{type(model).__name__} object>): pass the GGUF file's path; "
                                  "guidance-tui loads the model itself")
    kw = dict(llama_cpp_kwargs, enable_backtrack=enable_backtrack, enable_ff_tokens=enable_ff_tokens)
    kw.pop("logits_all", None)  # we compute exactly the logits rows we need
    opts = _options(kw)
    opts.monitoring = opts.monitoring and bool(enable_monitoring)  # ours or guidance's name
    load = {k: kw.pop(k) for k in list(kw) if k in _LLAMA_APPLIED}
    passed = {k: kw.pop(k) for k in list(kw) if k in _LLAMA_PASSED}
    refused = sorted(k for k in kw if k in _LLAMA_REFUSED)
    if refused:
        raise NotImplementedError("LlamaCpp: " + "; ".join(f"{k}: {_LLAMA_REFUSED[k]}" for k in refused))
    _unknown(kw, "LlamaCpp")
    n_ctx, n_threads = int(load.get("n_ctx", 8192)), load.get("n_threads")
    n_gpu_layers, n_batch = int(load.get("n_gpu_layers", 0)), int(load.get("n_batch", 512))
    verbose = bool(load.get("verbose", False))
    p = _path(model, "LLAMA_CPP_MODEL")
    backend = llamacpp_backend(p, n_ctx=n_ctx, n_threads=n_threads, n_gpu_layers=n_gpu_layers, n_batch=n_batch,
                               verbose=verbose, **passed)
    return _model(backend, opts, _session.current(), chat_template=chat_template, sampling_params=sampling_params,
                  echo=echo)


#: Hugging Face ``from_pretrained`` spellings of our transformers backend's options.
_HF_ALIASES = {"torch_dtype": "dtype", "device_map": "device"}


def Transformers(model=None, tokenizer=None, interpreter_cls=None, echo=True, chat_template=None,
                 enable_backtrack=True, enable_ff_tokens=True, enable_monitoring=True, sampling_params=None,
                 **kwargs) -> Model:
    """A model on Hugging Face transformers + torch: a model directory, or the default Gemma GGUF.

    guidance's arguments, plus the backend's ``dtype`` (``torch_dtype``), ``device``
    (``device_map`` as one device), ``n_ctx``, ``n_threads``, ``n_batch``, ``progress``,
    ``attn_implementation``, and ours as for :func:`LlamaCpp`.
    """
    try:
        from .transformers_backend import TransformersBackend
    except ImportError as e:
        raise ModelLoadError(f"the transformers backend needs torch and transformers ({e.name} is missing)") from None
    if model is not None and not isinstance(model, (str, Path)):
        raise NotImplementedError(f"Transformers(model=<{type(model).__name__} object>): pass the model "
                                  "directory's path; guidance-tui loads the model itself")
    if tokenizer is not None:
        raise NotImplementedError("Transformers(tokenizer=...): guidance-tui loads the tokenizer that comes "
                                  "with the model")
    if interpreter_cls is not None:
        raise NotImplementedError("Transformers(interpreter_cls=...): guidance-tui has its own decode loop")
    kw = dict(kwargs, enable_backtrack=enable_backtrack, enable_ff_tokens=enable_ff_tokens)
    opts = _options(kw)
    opts.monitoring = opts.monitoring and bool(enable_monitoring)  # ours or guidance's name
    for hf, ours in _HF_ALIASES.items():
        if hf in kw:
            if ours in kw:
                raise TypeError(f"Transformers: both {hf} and {ours} given")
            kw[ours] = kw.pop(hf)
    if isinstance(kw.get("device"), dict):
        raise NotImplementedError("Transformers(device_map={...}): one device only (\"cpu\", \"cuda\", \"auto\")")
    if kw.get("device") == "auto":
        kw["device"] = None
    backend_kw = {k: kw.pop(k) for k in list(kw) if k in TransformersBackend.OPTIONS}
    _unknown(kw, "Transformers")
    p = _path(model, "TRANSFORMERS_MODEL")
    backend = _shared(("transformers", str(p), tuple(sorted((k, str(v)) for k, v in backend_kw.items()))),
                      lambda: TransformersBackend(p, **backend_kw))
    return _model(backend, opts, _session.current(), chat_template=chat_template, sampling_params=sampling_params,
                  echo=echo)


def default(**kw) -> Model:
    """The model named on the command line (``--model``/``--backend``), else the embedded default."""
    s = _session.current()
    path = s.model
    backend = s.backend or ("transformers" if path and Path(path).is_dir() else "llamacpp")
    if backend == "transformers":
        return Transformers(path, **kw)
    if backend == "remote":  # --backend remote --url URL [--model-name NAME]; --model names the tokenizer
        return OpenAICompatible(s.url or "", s.model_name, tokenizer=path, **kw)
    return LlamaCpp(path, **kw)


# -- what guidance offers and a local engine cannot be --------------------------------------

def _hosted(name: str, what: str):
    def refuse(*args, **kwargs):
        raise NotImplementedError(f"guidance.models.{name}: {what} is not supported by guidance-tui's engines "
                                  "(local llama.cpp and transformers models only); run the script with the "
                                  "real guidance through `guidance-tui run --python PY`")

    refuse.__name__ = name
    return refuse


def OpenAICompatible(base_url: str, model: str | None = None, api_key: str | None = None, dialect: str = "auto",
                     **kw) -> Model:
    """A model on an OpenAI-compatible server (vLLM, SGLang, llama-server, llama-cpp-python's server);
    see :func:`engines.remote.OpenAICompatible`.  Imported on first use: ``import engines`` stays cheap."""
    from .remote import OpenAICompatible as make

    return make(base_url, model, api_key, dialect, **kw)

OpenAI = _hosted("OpenAI", "a hosted OpenAI model")
create_azure_openai_model = _hosted("create_azure_openai_model", "a hosted Azure OpenAI model")
create_azure_aifoundry_model = _hosted("create_azure_aifoundry_model", "a hosted Azure AI Foundry model")
OnnxRuntimeGenAI = _hosted("OnnxRuntimeGenAI", "ONNX Runtime GenAI")
Mock = _hosted("Mock", "the Mock model (canned bytes, no model)")
