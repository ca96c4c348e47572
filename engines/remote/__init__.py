"""Remote engines: OpenAI-compatible servers (vLLM, SGLang, llama.cpp's llama-server,
llama-cpp-python's server) driven through the same Model API, with the same events.

``models.OpenAICompatible(base_url, model=None, api_key=None, dialect="auto")``.
"""

from .engine import RemoteBackend, RemoteEngine, connect, model
from .errors import GrammarViolation, RemoteError, UnsupportedGrammar

__all__ = ["OpenAICompatible", "RemoteBackend", "RemoteEngine", "connect", "model", "GrammarViolation",
           "RemoteError", "UnsupportedGrammar"]


def OpenAICompatible(base_url: str, model: str | None = None, api_key: str | None = None, dialect: str = "auto",
                     *, tokenizer=None, timeout: float = 60.0, max_tokens: int = 1024, **kw):
    """A model served by an OpenAI-compatible server at ``base_url``.

    ``model``: the server's model name (default: the first it lists); ``api_key``: sent as a
    bearer token; ``dialect``: ``auto`` (probe the server), ``vllm``, ``sglang``,
    ``llama-server`` or ``llama-cpp-python``; ``tokenizer``: a GGUF file or a Hugging Face
    tokenizer for the local matcher (default: what the server names, when it is on this
    machine); ``timeout``: seconds a read may wait; ``max_tokens``: the cap sent per grammar call.
    Engine options as for the local models: top_k (5), temperature (0: greedy), seed,
    enable_monitoring.
    """
    from ..models import _options
    from .engine import model as _model

    if "enable_monitoring" in kw:  # guidance's name for the resource monitor switch
        kw["monitoring"] = kw.pop("enable_monitoring")
    opts = _options(kw)
    if kw:
        raise TypeError(f"unknown option(s): {', '.join(kw)}")
    return _model(base_url, model, api_key, dialect, tokenizer=tokenizer, timeout=timeout, max_tokens=max_tokens,
                  options=opts)
