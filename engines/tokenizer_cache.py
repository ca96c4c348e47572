"""Fast llguidance tokenizers for llama.cpp models: an on-disk cache of the vocabulary and a build that
overlaps model loading.

``llguidance.llamacpp.lltokenizer_from_vocab`` takes ~2 s on a 262k vocabulary: a Python loop over every
token (``llama_token_to_piece`` plus ``llama_token_get_attr`` through a deprecation wrapper), then the native
``LLTokenizer.from_llamacpp`` (token trie and mask "slices"; it holds the interpreter lock).  This module

* reads the token list with the raw, non-deprecated C functions (same bytes, same special-token marking as
  llguidance's helper), and caches it, with the EOS ids, in one binary file keyed by the model file's
  identity (size, mtime, a hash of its first and last MiB, library versions) under
  ``$GUIDANCE_TUI_CACHE`` or ``platformdirs.user_cache_dir("guidance-tui")``/``tokenizers``; a SHA-256 of
  the payload is checked on every load, and a damaged or stale file is deleted, never used;
* builds the native tokenizer from that list on a thread *while the model loads*.  ``from_llamacpp`` keeps
  llama.cpp's own ``llama_tokenize`` as the tokenizer; it gets a C trampoline that forwards every call
  unchanged to ``llama_tokenize`` with the live model's vocabulary, waiting for it if the model is still
  loading.  Same token bytes, same tokenizer function: the same ``LLTokenizer``.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import struct
import threading
import time
from pathlib import Path

import numpy as np

FORMAT = 1
MAGIC = b"GTUITOK\x00"
_MIB = 1 << 20
_PIECE_BUF = 16 * 1024  # what llguidance's helper uses

# Prototype of llama_tokenize with untyped pointers: the text may contain NUL bytes.
_TOKENIZE_PROTO = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int32,
                                   ctypes.c_void_p, ctypes.c_int32, ctypes.c_bool, ctypes.c_bool)


def cache_dir() -> Path:
    own = os.environ.get("GUIDANCE_TUI_TOKENIZER_CACHE")  # this cache only (benchmarks, tests)
    if own:
        return Path(own)
    env = os.environ.get("GUIDANCE_TUI_CACHE")
    if env:
        return Path(env) / "tokenizers"
    import platformdirs

    return Path(platformdirs.user_cache_dir("guidance-tui")) / "tokenizers"


def _versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for dist in ("llama_cpp_python", "llguidance"):
        try:
            out.append(f"{dist}={version(dist)}")
        except PackageNotFoundError:  # pragma: no cover
            out.append(f"{dist}=?")
    return ";".join(out)


def model_key(path: str | os.PathLike) -> str:
    """A cheap identity for a GGUF file: size, mtime, first and last MiB, library versions."""
    path = Path(path)
    st = path.stat()
    h = hashlib.sha256()
    h.update(f"{FORMAT}|{st.st_size}|{st.st_mtime_ns}|{_versions()}|".encode())
    with open(path, "rb") as fh:
        h.update(fh.read(_MIB))
        if st.st_size > _MIB:
            fh.seek(max(_MIB, st.st_size - _MIB))
            h.update(fh.read(_MIB))
    return h.hexdigest()[:40]


def cache_path(key: str) -> Path:
    return cache_dir() / f"{key}.tok"


# -- reading the vocabulary ------------------------------------------------------------------------
def read_tokens(llama_cpp, vocab, n_vocab: int | None = None) -> list[bytes]:
    """The token list exactly as ``llguidance.llamacpp.lltokenizer_from_vocab`` builds it, ~4x faster:
    control tokens (and user-defined ``<...>`` tokens) get a 0xff prefix; padded to ``n_vocab``."""
    lib = llama_cpp.llama_cpp._lib
    to_piece = lib.llama_token_to_piece
    get_attr = lib.llama_vocab_get_attr  # the non-deprecated name of llama_token_get_attr
    control = int(llama_cpp.LLAMA_TOKEN_ATTR_CONTROL)
    user = int(llama_cpp.LLAMA_TOKEN_ATTR_USER_DEFINED)
    ntok = llama_cpp.llama_vocab_n_tokens(vocab)
    buf = ctypes.create_string_buffer(_PIECE_BUF + 1)
    tokens: list[bytes] = []
    append = tokens.append
    for token in range(ntok):
        n = to_piece(vocab, token, buf, _PIECE_BUF, 0, True)
        if n < 0:
            raise ValueError(f"token {token} does not fit a {_PIECE_BUF}-byte buffer ({n})")
        tok = buf.raw[:n] if n else b""
        attr = get_attr(vocab, token)
        if attr & control or (attr & user and tok.startswith(b"<") and tok.endswith(b">")):
            tok = b"\xff" + tok
        append(tok)
    if n_vocab is not None:
        tokens.extend([b""] * (n_vocab - len(tokens)))
    return tokens


# -- the cache file --------------------------------------------------------------------------------
def _encode(tokens: list[bytes], eos: list[int]) -> bytes:
    header = json.dumps({"format": FORMAT, "n": len(tokens), "eos": list(map(int, eos))}).encode()
    lengths = np.fromiter((len(t) for t in tokens), dtype="<u4", count=len(tokens))
    payload = struct.pack("<I", len(header)) + header + lengths.tobytes() + b"".join(tokens)
    return MAGIC + hashlib.sha256(payload).digest() + payload


def _decode(data: bytes) -> tuple[list[bytes], list[int]]:
    if len(data) < len(MAGIC) + 36 or not data.startswith(MAGIC):
        raise ValueError("bad magic")
    digest, payload = data[len(MAGIC):len(MAGIC) + 32], data[len(MAGIC) + 32:]
    if hashlib.sha256(payload).digest() != digest:
        raise ValueError("checksum mismatch")
    (hlen,) = struct.unpack_from("<I", payload, 0)
    header = json.loads(payload[4:4 + hlen])
    if header.get("format") != FORMAT:
        raise ValueError("format")
    n = int(header["n"])
    off = 4 + hlen
    lengths = np.frombuffer(payload, dtype="<u4", count=n, offset=off)
    off += 4 * n
    ends = np.cumsum(lengths, dtype=np.int64) + off
    if n and ends[-1] != len(payload):
        raise ValueError("length mismatch")
    starts = (ends - lengths).tolist()
    tokens = [payload[s:e] for s, e in zip(starts, ends.tolist())]
    return tokens, [int(e) for e in header["eos"]]


def load(key: str) -> tuple[list[bytes], list[int]] | None:
    """The cached (tokens, eos ids), or None.  A damaged file is removed."""
    path = cache_path(key)
    try:
        data = path.read_bytes()
    except OSError:
        return None
    try:
        return _decode(data)
    except Exception:  # noqa: BLE001 - any damage: drop it, rebuild
        try:
            path.unlink()
        except OSError:
            pass
        return None


def save(key: str, tokens: list[bytes], eos: list[int]) -> None:
    """Write atomically; a cache that cannot be written is only slower, never an error."""
    path = cache_path(key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_bytes(_encode(tokens, eos))
        os.replace(tmp, path)
    except OSError:
        pass


# -- building the native tokenizer -----------------------------------------------------------------
class VocabHolder:
    """The vocabulary the tokenizer's ``llama_tokenize`` calls go to; may be set after the build starts."""

    def __init__(self, llama_cpp) -> None:
        addr = ctypes.cast(llama_cpp.llama_cpp._lib.llama_tokenize, ctypes.c_void_p).value
        self._real = _TOKENIZE_PROTO(addr)  # calling through ctypes releases the interpreter lock
        self._vocab: int | None = None
        self._ready = threading.Event()
        self._failed = False
        self.trampoline = _TOKENIZE_PROTO(self._tokenize)  # keep alive as long as the tokenizer
        self.fptr = ctypes.cast(self.trampoline, ctypes.c_void_p).value

    def set(self, vocab) -> None:
        self._vocab = vocab if isinstance(vocab, int) else ctypes.cast(vocab, ctypes.c_void_p).value
        self._ready.set()

    def fail(self) -> None:
        self._failed = True
        self._ready.set()

    def _tokenize(self, _vocab, text, text_len, tokens, n_max, add_special, parse_special):
        if self._vocab is None:
            self._ready.wait()
        if self._failed or self._vocab is None:
            return 0
        return self._real(self._vocab, text, text_len, tokens, n_max, add_special, parse_special)


def build(holder: VocabHolder, tokens: list[bytes], eos: list[int], slices=None):
    from llguidance import LLTokenizer

    return LLTokenizer.from_llamacpp(tokens=tokens, vocab_ptr=1, tokenize_fptr=holder.fptr,
                                     eos_token=list(eos), slices=slices)


class Builder:
    """Builds the tokenizer on a thread.  ``from_llamacpp`` holds the interpreter lock, so it only
    overlaps C code that released it: start it just before the model load and it runs alongside."""

    def __init__(self, holder: VocabHolder, tokens: list[bytes], eos: list[int], delay: float = 0.02) -> None:
        self.holder, self.tokens, self.eos = holder, tokens, list(eos)
        self.result = None
        self.error: BaseException | None = None
        self.seconds = 0.0
        self._delay = delay
        self._thread = threading.Thread(target=self._run, name="lltokenizer-build", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        # Let the caller reach the model load (C code, lock released) before we take the lock for ~1 s.
        time.sleep(self._delay)
        t0 = time.perf_counter()
        try:
            self.result = build(self.holder, self.tokens, self.eos)
        except BaseException as e:  # noqa: BLE001 - reported to the caller of wait()
            self.error = e
        self.seconds = time.perf_counter() - t0

    def wait(self):
        self._thread.join()
        if self.error is not None:
            raise self.error
        return self.result
