"""llama.cpp backend through llama-cpp-python's low-level API.

One context, one sequence.  The KV cache keeps the longest common prefix with
the sequence asked for; anything after it is removed with
``llama_memory_seq_rm`` (a backtrack, a healed prompt token, another branch).
Only the rows the loop needs get logits, never ``logits_all``.
"""

from __future__ import annotations

import ctypes
import os
import threading
import time
import weakref
from pathlib import Path

import numpy as np

from . import tokenizer_cache
from .backend import Backend, common_prefix
from .errors import ContextOverflow, EngineError, ModelLoadError
from .progress import Progress

_tokenizer_cache: dict[str, object] = {}
_tokenizer_holders: dict[str, object] = {}  # model id -> tokenizer_cache.VocabHolder of its tokenizer
# The tokenizer of a model file tokenizes with the vocabulary of one live backend of that file: the one
# that made the last grammar call, and when that one is freed, another live one (never a freed one).
_live_vocabs: dict[str, dict[int, object]] = {}  # model id -> {id(backend): its llama vocab pointer}
_sliced: set[str] = set()  # model ids whose cached tokenizer has llguidance's mask "slices"
#: The first tokenizer is built without llguidance's mask "slices": they double the build (~0.7 s more
#: on 262k tokens, interpreter lock held, at every cold start) and change no mask, only what a mask
#: costs (measured on Gemma: +20-65 us a token, free text and JSON).  Past this many decode steps in a
#: process they pay for themselves, and the next grammar call gets them.
SLICES_AFTER_STEPS = 10_000
_log_callback = None


def _native_no_op():
    """The address of a C function that can stand for llama.cpp's log callback and does nothing.

    A Python callback takes the interpreter lock for each of the hundreds of lines llama.cpp logs
    while it loads a model, so the load waited for any thread holding the lock (the tokenizer build:
    0.72 s instead of 0.49 s).  C's ``abs`` reads its first argument (the log level) and touches
    nothing: called with llama.cpp's three arguments it is a no-op on every C calling convention in
    use (the caller passes and clears the arguments)."""
    try:
        libc = ctypes.CDLL(None) if os.name != "nt" else ctypes.cdll.msvcrt
        return ctypes.cast(libc.abs, ctypes.c_void_p).value
    except (OSError, AttributeError):
        return None


def _silence_llama_log(llama_cpp) -> None:
    """llama.cpp prints notices to stderr even with verbose=False; they would cut into our output."""
    global _log_callback
    if _log_callback is None:
        native = _native_no_op()
        if native is not None:
            _log_callback = native
            set_log = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p)(
                ctypes.cast(llama_cpp.llama_cpp._lib.llama_log_set, ctypes.c_void_p).value)
            set_log(native, None)
            return

        @llama_cpp.llama_log_callback
        def _quiet(level, text, user_data):  # noqa: ARG001
            pass

        _log_callback = _quiet  # keep a reference: the C side holds only the pointer
        llama_cpp.llama_log_set(_log_callback, ctypes.c_void_p(0))
_tokenizer_lock = threading.RLock()  # re-entrant: a backend collected while it is held releases its vocabulary


def _first_slices():
    """The slices of a first build: none, or llguidance's default with GUIDANCE_TUI_TOKENIZER_SLICES=1."""
    return None if os.environ.get("GUIDANCE_TUI_TOKENIZER_SLICES") == "1" else []



def piece_bytes(ll, vocab, token_id: int) -> bytes:
    """A token's exact bytes from llama.cpp (special tokens as their text)."""
    # A buffer per call, not a shared one: ctypes lets other threads run during the call.
    buf = ctypes.create_string_buffer(256)
    n = ll.llama_token_to_piece(vocab, token_id, buf, 256, 0, True)
    if n < 0:
        buf = ctypes.create_string_buffer(-n)
        n = ll.llama_token_to_piece(vocab, token_id, buf, -n, 0, True)
    return bytes(buf[:max(n, 0)])

def _release_vocab(model_id: str, key: int) -> None:
    """A backend is closed or collected: its vocabulary must no longer serve the shared tokenizer."""
    with _tokenizer_lock:
        live = _live_vocabs.get(model_id, {})
        vocab = live.pop(key, None)
        holder = _tokenizer_holders.get(model_id)
        if vocab is not None and holder is not None:
            holder.release(vocab, next(reversed(live.values()), None))


class LlamaCppBackend(Backend):
    name = "llama.cpp"

    def __init__(self, path: str | os.PathLike, *, n_ctx: int = 8192, n_threads: int | None = None,
                 n_batch: int = 512, n_gpu_layers: int = 0, verbose: bool = False, **llama_options) -> None:
        """``llama_options``: more keyword arguments for ``llama_cpp.Llama`` (``flash_attn``,
        ``use_mlock``, ``type_k``...), passed as they are; ``n_threads_batch`` overrides ours."""
        import llama_cpp

        self._ll = llama_cpp
        if not verbose:
            _silence_llama_log(llama_cpp)
        path = Path(path).expanduser()
        if not path.exists():
            raise ModelLoadError(f"model not found: {path}")
        if path.is_dir():
            raise ModelLoadError(f"{path} is a directory; the llama.cpp backend needs a .gguf file "
                                 "(use --backend transformers for a Hugging Face directory)")
        if not os.access(path, os.R_OK):
            raise ModelLoadError(f"model not readable: {path}")
        with open(path, "rb") as fh:
            if fh.read(4) != b"GGUF":
                raise ModelLoadError(f"not a GGUF file: {path}")
        self.model_id = str(path)
        # The default is cpu_count()//2 threads, which is 1 on a 2-core machine: half speed.
        threads = n_threads or max(1, os.cpu_count() or 1)
        self._tok_key: str | None = None
        self._tok_builder = None
        self._tok_cached = None
        self._tok_holder = None
        self.tokenizer_timings: dict[str, float] = {}
        self._steps = 0  # decode calls, for SLICES_AFTER_STEPS
        entered = threading.Event()  # set when the load below is in C code (see _start_tokenizer_build)
        if self.model_id not in _tokenizer_cache:
            self._start_tokenizer_build(llama_cpp, path, entered)
        try:
            with Progress().phase(f"loading {path.name}"), tokenizer_cache.loading(llama_cpp, entered):
                self._llm = llama_cpp.Llama(str(path), **{
                    "n_ctx": n_ctx, "n_threads": threads, "n_threads_batch": threads, "n_batch": n_batch,
                    "n_gpu_layers": n_gpu_layers, **llama_options, "logits_all": False, "verbose": verbose})
        except Exception as e:  # llama.cpp reports failures as a bare ValueError
            if self._tok_holder is not None:
                self._tok_holder.fail()
            raise ModelLoadError(f"could not load {path}: {e}") from None
        self._ctx = self._llm._ctx.ctx
        self._model = self._llm._model
        self._vocab = self._model.vocab
        self._mem = llama_cpp.llama_get_memory(self._ctx)
        self.n_ctx = self._llm.n_ctx()
        self.n_batch = self._llm.n_batch  # llama-cpp-python clamps it to n_ctx
        self.vocab_size = self._llm.n_vocab()
        self.bos_id = self._model.token_bos()
        eos = {self._model.token_eos(), self._model.token_eot()}
        # Chat models end a turn with <end_of_turn> (Gemma) or similar markers: treat them as EOS too.
        for marker in (b"<end_of_turn>", b"<|im_end|>", b"<|eot_id|>"):
            ids = self.tokenize(marker, add_bos=False)
            if len(ids) == 1:
                eos.add(ids[0])
        self.eos_ids = tuple(sorted(i for i in eos if i is not None and i >= 0))
        if self._tok_holder is not None:
            self._tok_holder.set(self._vocab)
        elif self.model_id in _tokenizer_holders:
            # The tokenizer built for an earlier backend of this file tokenizes with the newest live model.
            _tokenizer_holders[self.model_id].set(self._vocab)
        offloaded = n_gpu_layers != 0 and bool(llama_cpp.llama_supports_gpu_offload())
        self.forward_uses_every_core = not offloaded and threads >= (os.cpu_count() or 1)
        self._batch = llama_cpp.llama_batch_init(self.n_batch, 0, 1)
        _live_vocabs.setdefault(self.model_id, {})[id(self)] = self._vocab
        self._release = weakref.finalize(self, _release_vocab, self.model_id, id(self))
        self._cached: list[int] = []
        self._bytes_cache: dict[int, bytes] = {}
        self.threads = threads
        self.options = {k: v for k, v in llama_options.items() if k != "chat_handler"}  # named in the trace

    # -- vocabulary -----------------------------------------------------
    def tokenize(self, data: bytes, *, add_bos: bool) -> list[int]:
        return self._llm.tokenize(data, add_bos=add_bos, special=True)

    def token_bytes(self, token_id: int) -> bytes:
        b = self._bytes_cache.get(token_id)
        if b is None:
            b = self._bytes_cache[token_id] = piece_bytes(self._ll, self._vocab, token_id)
        return b

    def _start_tokenizer_build(self, llama_cpp, path: Path, entered: threading.Event) -> None:
        """Read the cached vocabulary and build the llguidance tokenizer on a thread while the model
        loads (with GUIDANCE_TUI_TOKENIZER_OVERLAP=0 or on one core: at the first grammar call).

        The build holds the interpreter lock (~0.5 s for 262k tokens) and the load (C code, its log
        callback native) does not: the thread starts only once the load is inside llama.cpp
        (``entered``), so both run at once.  It reads the cache file too (~20 ms: the file's key, the
        checksum, unmarshalling), which then no longer delays the start of the load."""
        overlap = os.environ.get("GUIDANCE_TUI_TOKENIZER_OVERLAP", "1" if (os.cpu_count() or 1) > 1 else "0")
        if overlap == "1":
            # Measured on 2 cores, quiet: load + build 0.88 s overlapped against 1.13-1.23 s one after
            # the other.  (While llama.cpp's log callback was Python, the load waited for the build.)
            self._tok_holder = tokenizer_cache.VocabHolder(llama_cpp)
            self._tok_builder = tokenizer_cache.Builder(self._tok_holder, read=lambda: self._read_cache(path),
                                                        start=entered, slices=_first_slices())
            return
        cached = self._read_cache(path)
        if cached is not None:
            self._tok_holder = tokenizer_cache.VocabHolder(llama_cpp, cached.answers)
            self._tok_cached = (cached.tokens, cached.eos)

    def _read_cache(self, path: Path):
        """The cache entry of this model file, or None; sets ``_tok_key`` (where a build is saved)."""
        t0 = time.perf_counter()
        try:
            self._tok_key = tokenizer_cache.model_key(path)
            cached = tokenizer_cache.load(self._tok_key)
        except OSError:
            return None
        self.tokenizer_timings["cache_read"] = time.perf_counter() - t0
        return cached

    def ll_tokenizer(self):
        with _tokenizer_lock:
            tok = _tokenizer_cache.get(self.model_id)
            if tok is not None:
                _tokenizer_holders[self.model_id].set(self._vocab)  # this call's own, live vocabulary
                if self.model_id not in _sliced and self._steps >= SLICES_AFTER_STEPS:
                    from llguidance import LLTokenizer

                    t0 = time.perf_counter()
                    tok = _tokenizer_cache[self.model_id] = tok.with_slices(LLTokenizer.general_slices())
                    _sliced.add(self.model_id)
                    self.tokenizer_timings["slices"] = time.perf_counter() - t0
                return tok
            builder, self._tok_builder = self._tok_builder, None
            if builder is not None:
                try:
                    if builder.done:
                        tok = builder.wait()
                    else:
                        with Progress().phase("building the llguidance tokenizer"):
                            tok = builder.wait()
                except Exception:  # noqa: BLE001 - fall back to a fresh build
                    tok = None
                if tok is not None and not self._tok_holder.confirm():  # never seen: a cache that lies
                    tok = None
                # The cache is keyed by the file; still check what the live model says.
                if tok is not None and (builder.eos != list(self.eos_ids) or len(builder.tokens) != self.vocab_size):
                    tok = None
                if tok is not None:
                    self.tokenizer_timings["build_thread"] = builder.seconds
            cached, self._tok_cached = self._tok_cached, None
            if tok is None and cached is not None and cached[1] == list(self.eos_ids) \
                    and len(cached[0]) == self.vocab_size:
                t0 = time.perf_counter()
                tok = tokenizer_cache.build(self._tok_holder, cached[0], cached[1], _first_slices())
                self.tokenizer_timings["build_cached"] = time.perf_counter() - t0
            if tok is None:
                with Progress().phase("building the llguidance tokenizer (once for this model)"):
                    tok = self._build_uncached()
            _tokenizer_holders[self.model_id] = self._tok_holder  # keeps the C trampoline alive
            _tokenizer_cache[self.model_id] = tok
            if _first_slices() is None:
                _sliced.add(self.model_id)
            else:
                _sliced.discard(self.model_id)
            return tok

    def _build_uncached(self):
        """Read the vocabulary from the live model, build, and cache the vocabulary for next time."""
        tok, self._tok_holder = tokenizer_cache.build_from_model(
            self._ll, self._vocab, self.vocab_size, list(self.eos_ids), self._tok_key, _first_slices(),
            self.tokenizer_timings)
        return tok

    def chat_template(self) -> str | None:
        return self._llm.metadata.get("tokenizer.chat_template") or None

    @property
    def architecture(self) -> str:
        return self._llm.metadata.get("general.architecture", "")

    @property
    def info(self) -> dict[str, str]:
        return {**super().info, "threads": str(self.threads), "architecture": self.architecture,
                **{k: repr(v) for k, v in self.options.items()}}

    # -- evaluation -----------------------------------------------------
    def reset(self) -> None:
        with self.lock:
            self._ll.llama_memory_clear(self._mem, True)
            self._cached = []

    def _trim(self, keep: int) -> None:
        if keep < len(self._cached):
            if not self._ll.llama_memory_seq_rm(self._mem, 0, keep, -1):
                self.reset()  # this cache type cannot cut in the middle: start over
                return
            del self._cached[keep:]

    def logits(self, ids: list[int], n_rows: int = 1) -> np.ndarray:
        with self.lock:  # the decode loop holds it already for a whole call; direct callers too
            return self._logits(ids, n_rows)

    def _logits(self, ids: list[int], n_rows: int) -> np.ndarray:
        self._steps += 1
        if len(ids) >= self.n_ctx:
            raise ContextOverflow(f"context overflow: {len(ids)} tokens do not fit the context of "
                                  f"{self.n_ctx} tokens (pass n_ctx= to the model)")
        n_rows = max(1, min(n_rows, len(ids), self.n_batch))
        keep = min(common_prefix(self._cached, ids), len(ids) - n_rows)
        self._trim(keep)
        keep = len(self._cached)
        new = ids[keep:]
        batch = self._batch
        # Chunks of n_batch; the final chunk holds every requested row.
        start = 0
        out = None
        while start < len(new):
            remaining = len(new) - start
            size = min(self.n_batch, remaining)
            if remaining > self.n_batch and remaining - self.n_batch < n_rows:
                size = remaining - n_rows  # leave the requested rows for the last chunk
            last = start + size == len(new)
            batch.n_tokens = size
            for i in range(size):
                batch.token[i] = new[start + i]
                batch.pos[i] = keep + start + i
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = 0
                batch.logits[i] = last and i >= size - n_rows
            rc = self._ll.llama_decode(self._ctx, batch)
            if rc != 0:
                self.reset()
                raise EngineError(f"llama_decode failed (code {rc})")
            self._cached.extend(new[start:start + size])
            if last:
                out = [self._row(i) for i in range(size - n_rows, size)]
            start += size
        if out is None:  # nothing new to decode: the last row is not stored, recompute it
            self._trim(len(ids) - 1)
            return self._logits(ids, n_rows)
        return out[0][None, :] if n_rows == 1 else np.stack(out)

    def _row(self, i: int) -> np.ndarray:
        ptr = self._ll.llama_get_logits_ith(self._ctx, i)
        return np.ctypeslib.as_array(ptr, shape=(self.vocab_size,))

    def close(self) -> None:
        with self.lock:  # never free the context under a call running on another thread
            release = getattr(self, "_release", None)
            if release is not None:
                release()  # before the model (and its vocabulary) is freed
            if getattr(self, "_batch", None) is not None:
                self._ll.llama_batch_free(self._batch)
                self._batch = None
            llm = getattr(self, "_llm", None)
            if llm is not None:
                llm.close()
                self._llm = None
