"""Which server is this?  ``/v1/models`` first, then ``/props``, ``/get_model_info``, ``/version``.

| server | tell-tale |
|---|---|
| vLLM | ``/v1/models``: ``owned_by: "vllm"``; ``/version`` |
| SGLang | ``owned_by: "sglang"``; ``/get_model_info`` |
| llama.cpp's llama-server | ``owned_by: "llamacpp"``; ``/props`` with ``default_generation_settings`` |
| llama-cpp-python's server | ``owned_by: "me"``; no ``/props``, ``/version`` |
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .dialects import DIALECTS
from .errors import RemoteError
from .sse import Client, HttpError

_OWNERS = {"vllm": "vllm", "sglang": "sglang", "llamacpp": "llama-server", "me": "llama-cpp-python"}


@dataclass
class ServerInfo:
    dialect: str
    model: str  # the model name requests carry
    models: list[str]
    reason: str  # how the dialect was chosen
    model_path: str = ""  # a path the server reports for its weights (llama-server, llama-cpp-python)
    chat_template: str | None = None
    extra: dict = field(default_factory=dict)


def _optional(client: Client, path: str):
    try:
        return client.get_json(path, retry=False)
    except HttpError as e:
        if e.status in (401, 403):
            raise
        return None
    except RemoteError:
        return None


def probe(client: Client, model: str | None, dialect: str = "auto") -> ServerInfo:
    """Ask the server what it serves; a one-line :class:`RemoteError` when it cannot be used."""
    if dialect != "auto" and dialect not in DIALECTS:
        raise RemoteError(f"unknown dialect {dialect!r} (one of: auto, {', '.join(DIALECTS)})")
    listing = client.get_json("/v1/models")
    data = listing.get("data") if isinstance(listing, dict) else None
    if not isinstance(data, list):
        raise RemoteError(f"{client.base_url}/v1/models: not an OpenAI-compatible model list")
    entries = [d for d in data if isinstance(d, dict) and d.get("id")]
    names = [str(d["id"]) for d in entries]
    if model is None:
        if not names:
            raise RemoteError(f"{client.base_url} serves no model")
        model = names[0]
    elif names and model not in names:
        raise RemoteError(f"unknown model {model!r}: {client.base_url} serves {', '.join(names[:5])}")
    entry = next((d for d in entries if d["id"] == model), {})
    info = ServerInfo(dialect, model, names, "named by the caller")
    owner = str(entry.get("owned_by", ""))
    props = None
    if dialect == "auto":
        if owner in _OWNERS:
            info.dialect, info.reason = _OWNERS[owner], f"/v1/models owned_by={owner!r}"
        else:
            props = _optional(client, "/props")
            if isinstance(props, dict) and "default_generation_settings" in props:
                info.dialect, info.reason = "llama-server", "/props answers"
            elif isinstance(_optional(client, "/get_model_info"), dict):
                info.dialect, info.reason = "sglang", "/get_model_info answers"
            elif isinstance(v := _optional(client, "/version"), dict) and "version" in v:
                info.dialect, info.reason = "vllm", "/version answers"
            else:
                raise RemoteError(f"cannot tell which server {client.base_url} is (owned_by={owner!r}): "
                                  "pass dialect= (vllm, sglang, llama-server, llama-cpp-python)")
    if info.dialect == "llama-server":
        props = props if props is not None else _optional(client, "/props")
        if isinstance(props, dict):
            info.model_path = str(props.get("model_path") or "")
            info.chat_template = props.get("chat_template") or None
            if props.get("build_info"):
                info.extra["build"] = str(props["build_info"])
    elif info.dialect == "llama-cpp-python":
        info.model_path = model  # its model id is the GGUF path unless the server was given an alias
    elif info.dialect == "vllm":
        v = _optional(client, "/version")
        if isinstance(v, dict) and v.get("version"):
            info.extra["version"] = str(v["version"])
        if entry.get("root"):
            info.model_path = str(entry["root"])
    return info
