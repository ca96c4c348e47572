"""The model's tokenizer on this side of the wire, for the local llguidance matcher.

A remote server returns tokens; to recover what the grammar allowed at each
one (allowed-set sizes, masked alternatives, forced tokens) we need the same
vocabulary here.  It comes from a local GGUF (its vocabulary only, no weights:
what engines/llamacpp.py builds, through engines/tokenizer_cache.py) or from a
Hugging Face tokenizer (a name or a directory).  Without one, the matcher runs
on bytes: captures and grammar checks still work, mask facts are unknown.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from ..errors import ModelLoadError, one_line

_cache: dict[str, "LocalTokenizer"] = {}
_lock = threading.Lock()


class LocalTokenizer:
    """What the remote backend needs of a vocabulary."""

    name = ""
    vocab_size = 0
    bos_id: int | None = None
    eos_ids: tuple[int, ...] = ()
    exact = True  # token ids are the server's (False: the byte tokenizer)

    def tokenize(self, data: bytes) -> list[int]:
        raise NotImplementedError

    def token_bytes(self, token_id: int) -> bytes:
        raise NotImplementedError

    def ll_tokenizer(self):
        raise NotImplementedError

    def chat_template(self) -> str | None:
        return None

    architecture = ""

    def id_of(self, data: bytes) -> int | None:
        """The id of the token whose text is exactly ``data`` (servers that send only text)."""
        lookup = self.__dict__.get("_lookup")
        if lookup is None:
            lookup = {}
            for i in range(self.vocab_size):
                b = self.token_bytes(i)
                if b and b not in lookup:
                    lookup[b] = i
            self._lookup = lookup
        tid = lookup.get(data)
        if tid is None and data:
            ids = self.tokenize(data)
            if len(ids) == 1:
                tid = ids[0]
        return tid


class ByteTokenizer(LocalTokenizer):
    """No model vocabulary: one token per byte (llguidance's byte tokenizer)."""

    name = "bytes"
    exact = False

    def __init__(self) -> None:
        import llguidance

        self._tok = llguidance.LLTokenizer("byte")
        self.vocab_size = self._tok.vocab_size
        self.eos_ids = (self._tok.eos_token,)

    def tokenize(self, data: bytes) -> list[int]:
        return list(data)

    def token_bytes(self, token_id: int) -> bytes:
        return bytes((token_id,)) if 0 <= token_id < 256 else b""

    def ll_tokenizer(self):
        return self._tok

    def id_of(self, data: bytes) -> int | None:
        return None


class GGUFTokenizer(LocalTokenizer):
    """The vocabulary of a local GGUF file, loaded without its weights."""

    def __init__(self, path: Path) -> None:
        import llama_cpp

        from ..llamacpp import _silence_llama_log

        _silence_llama_log(llama_cpp)
        self._ll = llama_cpp
        try:
            self._llm = llama_cpp.Llama(str(path), vocab_only=True, verbose=False)
        except Exception as e:  # llama.cpp reports failures as a bare ValueError
            raise ModelLoadError(one_line(f"could not read the tokenizer of {path}: {e}")) from None
        self.name = str(path)
        self.path = path
        model = self._llm._model
        self._vocab = model.vocab
        self.vocab_size = self._llm.n_vocab()
        self.bos_id = model.token_bos()
        eos = {model.token_eos(), model.token_eot()}
        for marker in (b"<end_of_turn>", b"<|im_end|>", b"<|eot_id|>"):
            ids = self.tokenize(marker)
            if len(ids) == 1:
                eos.add(ids[0])
        self.eos_ids = tuple(sorted(i for i in eos if i is not None and i >= 0))
        self.architecture = self._llm.metadata.get("general.architecture", "")
        self._bytes: dict[int, bytes] = {}
        self._tok = None
        self._tok_lock = threading.Lock()

    def tokenize(self, data: bytes) -> list[int]:
        return self._llm.tokenize(data, add_bos=False, special=True)

    def token_bytes(self, token_id: int) -> bytes:
        b = self._bytes.get(token_id)
        if b is None:
            from ..llamacpp import piece_bytes

            b = self._bytes[token_id] = piece_bytes(self._ll, self._vocab, token_id)
        return b

    def ll_tokenizer(self):
        with self._tok_lock:
            if self._tok is None:
                from .. import tokenizer_cache

                key = None
                try:
                    key = tokenizer_cache.model_key(self.path)
                    cached = tokenizer_cache.load(key)
                except OSError:
                    cached = None
                eos = list(self.eos_ids)
                # self._holder keeps the C trampoline alive as long as the tokenizer
                if cached is not None and cached.eos == eos and len(cached.tokens) == self.vocab_size:
                    self._holder = tokenizer_cache.VocabHolder(self._ll)
                    self._holder.set(self._vocab)
                    self._tok = tokenizer_cache.build(self._holder, cached.tokens, eos)
                else:
                    self._tok, self._holder = tokenizer_cache.build_from_model(self._ll, self._vocab,
                                                                               self.vocab_size, eos, key)
            return self._tok

    def chat_template(self) -> str | None:
        return self._llm.metadata.get("tokenizer.chat_template") or None


class HFTokenizer(LocalTokenizer):
    """A Hugging Face tokenizer (a model name in the local cache, or a directory)."""

    def __init__(self, name: str) -> None:
        try:
            from transformers import AutoTokenizer
        except ImportError:
            raise ModelLoadError("a Hugging Face tokenizer needs the transformers package") from None
        try:
            self._hf = AutoTokenizer.from_pretrained(name)
        except Exception as e:  # noqa: BLE001 - any failure to load is the user's to fix
            raise ModelLoadError(one_line(f"could not load the tokenizer {name!r}: {e}")) from None
        import llguidance.hf

        self.name = name
        self._tok = llguidance.hf.from_tokenizer(self._hf)
        self.vocab_size = self._tok.vocab_size
        self.bos_id = self._hf.bos_token_id
        self.eos_ids = tuple(self._tok.eos_tokens) if hasattr(self._tok, "eos_tokens") else (self._tok.eos_token,)
        self._bytes: dict[int, bytes] = {}

    def tokenize(self, data: bytes) -> list[int]:
        return list(self._tok.tokenize_bytes(data))

    def token_bytes(self, token_id: int) -> bytes:
        b = self._bytes.get(token_id)
        if b is None:
            b = self._bytes[token_id] = self._tok.decode_bytes([token_id])
        return b

    def ll_tokenizer(self):
        return self._tok

    def chat_template(self) -> str | None:
        return getattr(self._hf, "chat_template", None) or None


def load(name: str | os.PathLike) -> LocalTokenizer:
    """A GGUF file, a Hugging Face directory or name; built once per process."""
    key = str(name)
    with _lock:
        tok = _cache.get(key)
        if tok is None:
            p = Path(key).expanduser()
            if p.is_file():
                with open(p, "rb") as fh:
                    magic = fh.read(4)
                if magic != b"GGUF":
                    raise ModelLoadError(f"not a GGUF file or tokenizer directory: {p}")
                tok = GGUFTokenizer(p.resolve())
            else:
                tok = HFTokenizer(str(p) if p.is_dir() else key)
            _cache[key] = tok
        return tok


def looks_local(name: str) -> bool:
    """A server's model name that names a tokenizer we can load here without a download."""
    p = Path(name).expanduser()
    if p.is_file():
        return True
    if p.is_dir():
        return (p / "tokenizer.json").exists() or (p / "tokenizer_config.json").exists()
    return False
