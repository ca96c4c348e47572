"""Fast llguidance tokenizers: an on-disk cache of the vocabulary and a build that overlaps model loading.

``llguidance.llamacpp.lltokenizer_from_vocab`` takes ~2 s on a 262k vocabulary: a Python loop over every
token (``llama_token_to_piece`` plus ``llama_token_get_attr`` through a deprecation wrapper), then the native
``LLTokenizer.from_llamacpp`` (token trie and mask "slices"; it holds the interpreter lock).
``llguidance.hf.from_tokenizer`` takes ~6 s (it parses tokenizer.json and walks the vocabulary in Rust,
interpreter lock held).  This module

* reads the token list with the raw, non-deprecated C functions (same bytes, same special-token marking as
  llguidance's helper), or takes it from a tokenizer llguidance built the Hugging Face way
  (:func:`tokens_of`), and caches it, with the EOS ids, in one binary file keyed by the model file's
  identity (size, mtime, a hash of its first and last MiB, library versions) under
  ``$GUIDANCE_TUI_CACHE`` or ``platformdirs.user_cache_dir("guidance-tui")``/``tokenizers``; a SHA-256 of
  the payload (``marshal``: 262k tokens come back in ~10 ms; slicing them out of one buffer took ~45 ms)
  is checked on every load, and a damaged or stale file is deleted, never used;
* builds the native tokenizer from that list with ``from_llamacpp``.  For llama.cpp it keeps llama.cpp's
  own ``llama_tokenize`` as the tokenizer, through a C trampoline that forwards every call unchanged with
  the live model's vocabulary (waiting for it if the model is still loading); for transformers the
  trampoline calls the Hugging Face tokenizer's ``encode`` (:class:`PyTokenize`).  Same token bytes, same
  tokenizer function: the same ``LLTokenizer``;
* for llama.cpp, builds it on a thread *while the model loads* (by default with more than one core, see
  engines.llamacpp; llama.cpp's log callback must then be native, not Python): the
  build holds the interpreter lock, so it starts only once the load has entered llama.cpp's C code
  (:func:`loading`), and the two run on two cores at once.  The build's own ``llama_tokenize`` calls
  (one, on Gemma) are answered from the cache until the model is there (:class:`VocabHolder`), so it
  need not wait for the load halfway through.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import marshal
import os
import sys
import threading
import time
from pathlib import Path
from typing import NamedTuple

FORMAT = 3  # 1: a JSON header, token lengths and the bytes; 2: marshal; 3: + the build's tokenize answers
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
    from .cache_root import cache_root

    return cache_root() / "tokenizers"


_MODULES = {"llama_cpp_python": "llama_cpp"}  # distribution -> its import name, where they differ


@functools.lru_cache(maxsize=None)
def _versions(dists: tuple[str, ...] = ("llama_cpp_python", "llguidance")) -> str:
    """The versions of ``dists``: an imported module's ``__version__`` (free), else the installed
    metadata (importlib.metadata scans every distribution: ~5 ms, at every start)."""
    out = []
    for dist in dists:
        v = getattr(sys.modules.get(_MODULES.get(dist, dist)), "__version__", None)
        if not isinstance(v, str):
            from importlib.metadata import PackageNotFoundError, version

            try:
                v = version(dist)
            except PackageNotFoundError:  # pragma: no cover
                v = "?"
        out.append(f"{dist}={v}")
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
class Entry(NamedTuple):
    """A cache file's contents."""

    tokens: list[bytes]
    eos: list[int]
    #: What ``llama_tokenize`` returned for each call the native build made ((text, add_special,
    #: parse_special) -> ids): the build can then finish before the model is loaded (VocabHolder).
    answers: dict = {}


def _encode(tokens: list[bytes], eos: list[int], answers: dict | None = None) -> bytes:
    payload = marshal.dumps({"format": FORMAT, "eos": [int(e) for e in eos], "tokens": [bytes(t) for t in tokens],
                             "answers": [[bytes(k[0]), bool(k[1]), bool(k[2]), [int(i) for i in v]]
                                         for k, v in (answers or {}).items()]})
    return MAGIC + hashlib.sha256(payload).digest() + payload


def _decode(data: bytes) -> Entry:
    """The contents of a cache file; ValueError when it is not one, intact, of this format.

    The checksum comes first: ``marshal`` reads only what it wrote, and the file is the user's own."""
    if len(data) < len(MAGIC) + 33 or not data.startswith(MAGIC):
        raise ValueError("bad magic")
    view = memoryview(data)
    digest, payload = view[len(MAGIC):len(MAGIC) + 32], view[len(MAGIC) + 32:]
    if hashlib.sha256(payload).digest() != digest:
        raise ValueError("checksum mismatch")
    obj = marshal.loads(payload)
    if type(obj) is not dict or obj.get("format") != FORMAT:
        raise ValueError("format")
    tokens, eos, answers = obj.get("tokens"), obj.get("eos"), obj.get("answers")
    if type(tokens) is not list or type(eos) is not list or not set(map(type, tokens)) <= {bytes} \
            or not set(map(type, eos)) <= {int} or type(answers) is not list:
        raise ValueError("contents")
    calls = {}
    for a in answers:
        if type(a) is not list or len(a) != 4 or type(a[0]) is not bytes or type(a[1]) is not bool \
                or type(a[2]) is not bool or type(a[3]) is not list or not set(map(type, a[3])) <= {int}:
            raise ValueError("contents")
        calls[(a[0], a[1], a[2])] = tuple(a[3])
    return Entry(tokens, eos, calls)


def load(key: str) -> Entry | None:
    """The cached entry, or None.  A damaged file is removed."""
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


def save(key: str, tokens: list[bytes], eos: list[int], answers: dict | None = None) -> None:
    """Write atomically; a cache that cannot be written is only slower, never an error."""
    path = cache_path(key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_bytes(_encode(tokens, eos, answers))
        os.replace(tmp, path)
    except OSError:
        pass


# -- building the native tokenizer -----------------------------------------------------------------
def address(vocab) -> int:
    return vocab if isinstance(vocab, int) else ctypes.cast(vocab, ctypes.c_void_p).value


class VocabHolder:
    """The vocabulary the tokenizer's ``llama_tokenize`` calls go to; may be set after the build starts.

    The native build tokenizes a little (``b"a"``, to see whether the tokenizer adds a space) about
    halfway through; waiting there for the model load kept it idle ~0.2 s of a 1 s cold start.  The
    cache keeps those answers (``answers``), so before the vocabulary is set they come from it
    (``replayed``) and :meth:`confirm` checks them against the live model afterwards.  A call that is
    not among them still waits.  ``recorded`` (when a dict) collects the live calls, to be cached."""

    def __init__(self, llama_cpp, answers: dict | None = None) -> None:
        addr = ctypes.cast(llama_cpp.llama_cpp._lib.llama_tokenize, ctypes.c_void_p).value
        self._real = _TOKENIZE_PROTO(addr)  # calling through ctypes releases the interpreter lock
        self._vocab: int | None = None
        self._ready = threading.Event()
        self._failed = False
        self._answers = dict(answers or {})
        self.replayed: dict = {}
        self.recorded: dict | None = None
        self.trampoline = _TOKENIZE_PROTO(self._tokenize)  # keep alive as long as the tokenizer
        self.fptr = ctypes.cast(self.trampoline, ctypes.c_void_p).value

    def set(self, vocab) -> None:
        self._vocab = address(vocab)
        self._ready.set()

    def answer(self, answers: dict) -> None:
        """Cached answers to use until the vocabulary is set (before the build starts)."""
        self._answers = dict(answers)

    def release(self, vocab, successor=None) -> None:
        """``vocab`` is about to be freed: tokenize with ``successor`` (a live model's), or not at all."""
        if self._vocab is not None and self._vocab == address(vocab):
            self._vocab = address(successor) if successor is not None else None

    def fail(self) -> None:
        self._failed = True
        self._ready.set()

    def confirm(self) -> bool:
        """The answers given before the vocabulary was there are what the live model says."""
        return all(self.tokenize_live(*key) == ids for key, ids in self.replayed.items())

    def tokenize_live(self, text: bytes, add_special: bool, parse_special: bool) -> tuple[int, ...] | None:
        """``llama_tokenize`` with the live vocabulary (None without one)."""
        if self._vocab is None:
            return None
        n_max = len(text) + 8
        while True:
            buf = (ctypes.c_int32 * n_max)()
            n = self._real(self._vocab, text, len(text), buf, n_max, add_special, parse_special)
            if n >= 0:
                return tuple(buf[:n])
            n_max = -n

    def _tokenize(self, _vocab, text, text_len, tokens, n_max, add_special, parse_special):
        if not self._ready.is_set():
            key = (ctypes.string_at(text, text_len), bool(add_special), bool(parse_special))
            ids = self._answers.get(key)
            if ids is not None:
                self.replayed[key] = ids
                return _give(ids, tokens, n_max)
            self._ready.wait()
        if self._failed or self._vocab is None:
            return 0
        n = self._real(self._vocab, text, text_len, tokens, n_max, add_special, parse_special)
        if self.recorded is not None and n >= 0:
            key = (ctypes.string_at(text, text_len), bool(add_special), bool(parse_special))
            self.recorded[key] = tuple((ctypes.c_int32 * n).from_address(tokens)) if n else ()
        return n


def _give(ids, tokens: int, n_max: int) -> int:
    """Hand ``ids`` back as ``llama_tokenize`` does (a negative count: the buffer is too small)."""
    if len(ids) > n_max:
        return -len(ids)
    if ids:
        (ctypes.c_int32 * len(ids)).from_address(tokens)[:] = ids
    return len(ids)


class PyTokenize:
    """A ``llama_tokenize``-shaped C callback that tokenizes with a Python function (a Hugging Face
    tokenizer's ``encode``), so a cached token list can be built with ``from_llamacpp`` for any model."""

    def __init__(self, encode) -> None:
        self._encode = encode
        self.trampoline = _TOKENIZE_PROTO(self._tokenize)  # keep alive as long as the tokenizer
        self.fptr = ctypes.cast(self.trampoline, ctypes.c_void_p).value

    def _tokenize(self, _vocab, text, text_len, tokens, n_max, add_special, parse_special):
        try:
            ids = self._encode(ctypes.string_at(text, text_len).decode("utf-8", "replace"))
        except Exception:  # noqa: BLE001 - an exception cannot cross into Rust
            return 0
        return _give(ids, tokens, n_max)


def tokens_of(tok) -> list[bytes]:
    """The token list of a built ``LLTokenizer``, special tokens marked with 0xff as llguidance
    expects them: ``from_llamacpp`` on it rebuilds the same token trie."""
    decode, special = tok.decode_bytes, tok.is_special_token
    return [b"\xff" + decode([i]) if special(i) else decode([i]) for i in range(tok.vocab_size)]


def files_key(paths, extra: str = "") -> str:
    """An identity for a set of tokenizer files (as :func:`model_key`), plus ``extra``."""
    h = hashlib.sha256()
    h.update(f"{FORMAT}|{extra}|{_versions(('tokenizers', 'transformers'))}|".encode())
    for p in paths:
        p = Path(p)
        if p.is_file():
            h.update(model_key(p).encode())
    return h.hexdigest()[:40]


def build(holder: VocabHolder, tokens: list[bytes], eos: list[int], slices=None):
    """The llguidance tokenizer of this token list; llama.cpp's ``llama_tokenize`` through ``holder``."""
    from llguidance import LLTokenizer

    return LLTokenizer.from_llamacpp(tokens=tokens, vocab_ptr=1, tokenize_fptr=holder.fptr,
                                     eos_token=list(eos), slices=slices)


def build_from_model(llama_cpp, vocab, n_vocab: int, eos: list[int], key: str | None, slices=None,
                     timings: dict | None = None):
    """(tokenizer, its holder) for a live model whose token list is not cached: read the list from the
    model, build with its vocabulary, and cache the list with the build's tokenize answers under
    ``key`` (None: not cached).  ``timings`` gets ``read_vocab`` and ``build`` (seconds)."""
    t0 = time.perf_counter()
    tokens = read_tokens(llama_cpp, vocab, n_vocab=n_vocab)
    t1 = time.perf_counter()
    holder = VocabHolder(llama_cpp)
    holder.set(vocab)
    holder.recorded = {}
    tok = build(holder, tokens, eos, slices)
    answers, holder.recorded = holder.recorded, None
    if timings is not None:
        timings["read_vocab"], timings["build"] = t1 - t0, time.perf_counter() - t1
    if key is not None:
        save(key, tokens, eos, answers)
    return tok, holder


class Builder:
    """Builds the tokenizer on a thread.  ``from_llamacpp`` holds the interpreter lock for its whole
    run (~0.5 s for 262k tokens), so it only overlaps C code that released it: the build waits for
    ``start`` (set by :func:`loading` when the model load enters llama.cpp) and then runs alongside it.

    The token list is given (``tokens``, ``eos``), or ``read`` gives it on the thread (an
    :class:`Entry` with the answers for ``holder``, or None: nothing cached, and no result)."""

    def __init__(self, holder: VocabHolder, tokens: list[bytes] | None = None, eos: list[int] | None = None,
                 start: threading.Event | None = None, slices=None, read=None) -> None:
        self.holder, self.tokens, self.eos = holder, tokens, list(eos or ())
        self.result = None
        self.error: BaseException | None = None
        self.seconds = 0.0
        self._start = start
        self._slices = slices
        self._read = read
        self._thread = threading.Thread(target=self._run, name="lltokenizer-build", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        if self._start is not None:
            self._start.wait()
        try:
            if self._read is not None:
                entry = self._read()
                if entry is None:
                    return
                self.tokens, self.eos = entry.tokens, list(entry.eos)
                self.holder.answer(entry.answers)
            t0 = time.perf_counter()
            self.result = build(self.holder, self.tokens, self.eos, self._slices)
            self.seconds = time.perf_counter() - t0
        except BaseException as e:  # noqa: BLE001 - reported to the caller of wait()
            self.error = e

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    def wait(self):
        if self._start is not None:
            self._start.set()  # never wait for a load that did not happen
        self._thread.join()
        if self.error is not None:
            raise self.error
        return self.result


# -- knowing when a model load is in C code ----------------------------------------------------------
_signal = threading.local()
_wrap_lock = threading.Lock()


def _wrap_load(llama_cpp) -> None:
    """Wrap ``llama_model_load_from_file`` (once) so that a thread loading a model through
    ``llama_cpp.Llama`` can tell another one the moment the load enters C code (and has released
    the interpreter lock).  The wrapper calls the real function with the same arguments."""
    mod = llama_cpp.llama_cpp
    with _wrap_lock:
        real = mod.llama_model_load_from_file
        if getattr(real, "_signals_entry", False):
            return

        def llama_model_load_from_file(path_model, params):
            event = getattr(_signal, "event", None)
            if event is not None:
                event.set()
            return real(path_model, params)

        llama_model_load_from_file._signals_entry = True
        mod.llama_model_load_from_file = llama_model_load_from_file


@contextlib.contextmanager
def loading(llama_cpp, event: threading.Event):
    """Around ``llama_cpp.Llama(...)`` in this thread: ``event`` is set as the model load enters
    llama.cpp (and in any case when the block ends)."""
    _wrap_load(llama_cpp)
    _signal.event = event
    try:
        yield
    finally:
        _signal.event = None
        event.set()
