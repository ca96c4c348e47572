"""Hugging Face transformers + torch backend.

One model, one sequence, one ``DynamicCache``.  As in the llama.cpp backend
the cache keeps the longest common prefix with the sequence asked for; the rest
is cropped off (a backtrack, a healed prompt token, another branch) and only
the new tokens are evaluated, with ``logits_to_keep`` so the vocabulary-wide
head runs only for the rows the loop needs.

Weights come from a Hugging Face model directory, or from a GGUF file (the
embedded Gemma by default): transformers dequantises it once, slowly, and the
result is saved in the user cache, from where later loads take seconds.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import shutil
import sys
import threading
from pathlib import Path

import numpy as np

if "torch" not in sys.modules:
    # torch's OpenMP threads spin while they wait for work.  When anything else wants a core (the
    # inspector's UI thread, the resource monitor, another process) a spinning team collapses:
    # measured on 2 cores with one other busy thread, 1.2 s per Gemma 270M token instead of 0.09 s.
    # Sleeping waits cost 0-8 % when the machine is otherwise idle.  Set OMP_WAIT_POLICY=ACTIVE to opt out;
    # it only takes effect when this module is what first imports torch.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache

from . import tokenizer_cache
from .backend import Backend, common_prefix
from .default_model import cache_dir
from .errors import ContextOverflow, EngineError, ModelLoadError, one_line
from .progress import Progress

_tokenizer_cache: dict[tuple, object] = {}
_tokenizer_lock = threading.Lock()
_sliced: set[tuple] = set()  # keys of _tokenizer_cache whose tokenizer has llguidance's mask slices
SLICES_AFTER_STEPS = 10_000  # see engines.llamacpp.SLICES_AFTER_STEPS

_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
}
_DONE = "guidance-tui-conversion.json"  # written last into a converted GGUF's cache directory
_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def _dtype(dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[str(dtype).lower().removeprefix("torch.")]
    except KeyError:
        raise ModelLoadError(f"unknown dtype {dtype!r} (use float32, float16 or bfloat16)") from None


def _device(device) -> torch.device:
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ModelLoadError(f"unknown device {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"device {device!r} asked for, but torch sees no CUDA GPU")
    return dev


_tqdm_lock = threading.Lock()


@contextlib.contextmanager
def _gguf_tensor_progress(update):
    """transformers dequantises a GGUF's tensors under ``tqdm.auto.tqdm`` directly (its own switch for
    progress bars does not reach it), a bar that became dozens of lines in a captured stderr.  For
    the conversion, that module's ``tqdm`` is a silent iterator that reports the fraction done."""
    try:
        from transformers import modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:  # another transformers layout: its bar stays
        yield
        return

    def quiet_tqdm(iterable=None, *args, total=None, **kwargs):
        items = list(iterable) if iterable is not None else []
        n = total or len(items) or 1

        def gen():
            for i, x in enumerate(items):
                update(i / n)
                yield x
            update(1.0)

        return gen()

    with _tqdm_lock:
        real = getattr(gguf_utils, "tqdm", None)
        if real is None:
            yield
            return
        gguf_utils.tqdm = quiet_tqdm
        try:
            yield
        finally:
            gguf_utils.tqdm = real


def _gguf_key(path: Path) -> str:
    """Identity of a GGUF file for the conversion cache: its checksum stamp if it has one, else size+mtime."""
    st = path.stat()
    stamp = path.with_suffix(".sha256")
    try:
        if stamp.stat().st_mtime_ns >= st.st_mtime_ns:
            digest = stamp.read_text().split()[0]
            if re.fullmatch(r"[0-9a-f]{64}", digest):
                return digest[:16]
    except (OSError, IndexError):
        pass
    return hashlib.sha256(f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:16]


def converted_path(gguf: str | os.PathLike) -> Path:
    """Where the transformers conversion of ``gguf`` is (or will be) cached."""
    p = Path(gguf)
    return cache_dir() / "hf" / f"{p.stem}-{_gguf_key(p)}"


def _is_gguf(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(4) == b"GGUF"


class TransformersBackend(Backend):
    name = "transformers"

    #: keyword options ``models.Transformers`` passes through to the constructor
    OPTIONS = frozenset({"dtype", "device", "n_ctx", "n_threads", "n_batch", "progress", "attn_implementation"})

    def __init__(self, path: str | os.PathLike, *, dtype="float32", device=None, n_ctx: int = 8192,
                 n_threads: int | None = None, n_batch: int = 512, progress: bool = True,
                 attn_implementation: str | None = None) -> None:
        path = Path(path).expanduser()
        if not path.exists():
            raise ModelLoadError(f"model not found: {path}")
        if not os.access(path, os.R_OK):
            raise ModelLoadError(f"model not readable: {path}")
        self.dtype = _dtype(dtype)
        self.device = _device(device)
        self.forward_uses_every_core = self.device.type == "cpu"
        if n_threads:
            torch.set_num_threads(n_threads)
        self._progress = Progress(enabled=progress, eager=True)  # its loads take seconds: say so at once
        self._attn = attn_implementation
        self.model_id = str(path)
        self.source = path
        if path.is_dir():
            if not (path / "config.json").is_file():
                raise ModelLoadError(f"{path} is not a Hugging Face model directory (no config.json)")
            self._tok, self._model = self._load_dir(path, what=str(path))
        else:
            try:
                gguf = _is_gguf(path)
            except OSError as e:
                raise ModelLoadError(f"model not readable: {path} ({e.strerror})") from None
            if not gguf:
                raise ModelLoadError(f"not a GGUF file or a model directory: {path}")
            self._tok, self._model = self._load_gguf(path)
        self._model.eval()
        self._setup_vocab()
        cfg = self._model.config
        limit = getattr(cfg.get_text_config(), "max_position_embeddings", None) or n_ctx
        self.n_ctx = min(n_ctx, limit)
        self.n_batch = max(1, n_batch)
        self._cache = DynamicCache()  # no config: Gemma's sliding-window layers could not be cropped far back
        self._cached: list[int] = []
        self._steps = 0  # decode calls, for SLICES_AFTER_STEPS

    # -- loading ----------------------------------------------------------
    def _from_pretrained(self, d: Path):
        kw = {"dtype": self.dtype}
        if self._attn:
            kw["attn_implementation"] = self._attn
        tok = AutoTokenizer.from_pretrained(d)
        model = AutoModelForCausalLM.from_pretrained(d, **kw)
        return tok, model

    def _load_dir(self, d: Path, what: str):
        self.converted = getattr(self, "converted", None)
        try:
            with self._quiet():
                tok, model = self._from_pretrained(d)
            model.to(self.device)
        except torch.cuda.OutOfMemoryError:
            raise ModelLoadError(f"out of GPU memory loading {what}") from None
        except Exception as e:
            raise ModelLoadError(f"could not load {what}: {one_line(e)}") from None
        if not getattr(tok, "is_fast", False):
            raise ModelLoadError(f"{what} has no fast tokenizer (tokenizer.json), which llguidance needs")
        return tok, model

    def _load_gguf(self, path: Path):
        target = converted_path(path)
        self.converted = target
        if (target / _DONE).is_file():
            with self._progress.phase(f"loading {path.name} (converted copy)"):
                return self._load_dir(target, what=f"{target} (converted from {path.name}; delete it to convert again)")
        ph = self._progress
        ph.say(f"converting {path.name} to a transformers model (once, 1-3 minutes); cached in {target}", force=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            with ph.phase("converting the tokenizer"), self._quiet():
                tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
            with ph.phase("dequantising the weights") as update, self._quiet(), _gguf_tensor_progress(update):
                model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
            if not getattr(tok, "chat_template", None):
                template = _gguf_chat_template(path)
                if template:
                    tok.chat_template = template
            # The dequantised model is a plain fp32 model: saving it must not try to re-quantise.
            model.hf_quantizer = None
            for cfg in {id(c): c for c in (model.config, model.config.get_text_config())}.values():
                if hasattr(cfg, "quantization_config"):
                    delattr(cfg, "quantization_config")
            with ph.phase(f"saving to {target}"), self._quiet():
                model.save_pretrained(tmp)
                tok.save_pretrained(tmp)
                (tmp / _DONE).write_text(json.dumps({
                    "source": str(path), "size": path.stat().st_size, "key": _gguf_key(path),
                    "transformers": transformers.__version__, "torch": torch.__version__,
                }, indent=1) + "\n")
            try:
                os.rename(tmp, target)
            except OSError:  # another process finished first (or a stale, incomplete copy): keep one
                if (target / _DONE).is_file():
                    shutil.rmtree(tmp, ignore_errors=True)
                else:
                    shutil.rmtree(target, ignore_errors=True)
                    os.rename(tmp, target)
        except ModelLoadError:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        except Exception as e:
            shutil.rmtree(tmp, ignore_errors=True)
            raise ModelLoadError(f"could not convert {path} for transformers: {one_line(e)}") from None
        if not getattr(tok, "is_fast", False):
            raise ModelLoadError(f"the tokenizer converted from {path.name} is not a fast tokenizer")
        try:
            model.to(device=self.device, dtype=self.dtype)
        except torch.cuda.OutOfMemoryError:
            raise ModelLoadError(f"out of GPU memory loading {path}") from None
        return tok, model

    @staticmethod
    @contextlib.contextmanager
    def _quiet(bars: bool = False):
        """Silence transformers' advisory warnings (and its progress bars unless ``bars``) during a load."""
        from transformers.utils import logging as tlog

        level = tlog.get_verbosity()
        had_bars = tlog.is_progress_bar_enabled()
        tlog.set_verbosity_error()
        if not bars:
            tlog.disable_progress_bar()
        try:
            yield
        finally:
            tlog.set_verbosity(level)
            if had_bars:
                tlog.enable_progress_bar()

    # -- vocabulary -----------------------------------------------------
    def _setup_vocab(self) -> None:
        tok, cfg = self._tok, self._model.config
        out = self._model.get_output_embeddings()
        width = out.weight.shape[0] if out is not None else cfg.get_text_config().vocab_size
        self.vocab_size = int(width)
        self._n_tok = len(tok)
        self._bytes: dict[int, bytes] = {}
        self._byte_ids: dict[int, int] | None = None
        self._special = {i: t.content.encode("utf-8") for i, t in tok.added_tokens_decoder.items()}
        self._mode = _decoder_mode(tok)
        if self._mode == "bytelevel":
            from transformers.convert_slow_tokenizer import bytes_to_unicode

            self._byte_decoder = {c: b for b, c in bytes_to_unicode().items()}
        # BOS only when the tokenizer itself adds one (GPT-2 style tokenizers name a BOS they never add).
        bos = tok.bos_token_id
        probe = tok.encode("a", add_special_tokens=True)
        self.bos_id = bos if bos is not None and probe[:1] == [bos] else None
        eos: set[int] = set()
        if tok.eos_token_id is not None:
            eos.add(tok.eos_token_id)
        gen = getattr(self._model, "generation_config", None)
        g_eos = getattr(gen, "eos_token_id", None) if gen is not None else None
        if isinstance(g_eos, int):
            eos.add(g_eos)
        elif g_eos:
            eos.update(int(i) for i in g_eos)
        vocab = tok.get_vocab()
        for marker in ("<end_of_turn>", "<|im_end|>", "<|eot_id|>", "<|endoftext|>"):
            if marker in vocab:
                eos.add(vocab[marker])
        self.eos_ids = tuple(sorted(i for i in eos if 0 <= i < self.vocab_size))

    def tokenize(self, data: bytes, *, add_bos: bool) -> list[int]:
        try:
            ids = self._tok.encode(data.decode("utf-8"), add_special_tokens=False)
        except UnicodeDecodeError:
            ids = self._tokenize_invalid(data)
        if add_bos and self.bos_id is not None and ids[:1] != [self.bos_id]:
            ids.insert(0, self.bos_id)
        return ids

    def _tokenize_invalid(self, data: bytes) -> list[int]:
        """Text with bytes that are not UTF-8 (a generation cut mid-character): those go as byte tokens."""
        ids: list[int] = []
        for part in re.split("([\udc80-\udcff]+)", data.decode("utf-8", "surrogateescape")):
            if not part:
                continue
            if "\udc80" <= part[0] <= "\udcff":
                for b in part.encode("utf-8", "surrogateescape"):
                    ids.append(self._byte_token(b))
            else:
                ids.extend(self._tok.encode(part, add_special_tokens=False))
        return ids

    def _byte_token(self, b: int) -> int:
        if self._byte_ids is None:
            self._byte_ids = {}
            for i in range(self._n_tok):
                if i in self._special:
                    continue
                tb = self.token_bytes(i)
                if len(tb) == 1 and tb[0] not in self._byte_ids:
                    self._byte_ids[tb[0]] = i
        try:
            return self._byte_ids[b]
        except KeyError:
            raise EngineError(f"the tokenizer has no token for the byte 0x{b:02x}") from None

    def token_bytes(self, token_id: int) -> bytes:
        b = self._bytes.get(token_id)
        if b is None:
            b = self._bytes[token_id] = self._piece_bytes(int(token_id))
        return b

    def _piece_bytes(self, i: int) -> bytes:
        special = self._special.get(i)
        if special is not None:
            return special
        if not 0 <= i < self._n_tok:
            return b""  # a padding row of the output layer: no text
        piece = self._tok.convert_ids_to_tokens(i)
        if piece is None:
            return b""
        if self._mode == "sentencepiece":
            m = _BYTE_PIECE.fullmatch(piece)
            if m:
                return bytes([int(m.group(1), 16)])
            return piece.replace("\u2581", " ").encode("utf-8")
        if self._mode == "bytelevel":
            try:
                return bytes(self._byte_decoder[c] for c in piece)
            except KeyError:
                return piece.encode("utf-8")
        if self._mode == "wordpiece" and piece.startswith("##"):
            return piece[2:].encode("utf-8")
        return self._tok.decode([i]).encode("utf-8")

    def ll_tokenizer(self):
        key = (self.model_id, self.vocab_size, self.eos_ids)
        with _tokenizer_lock:
            tok = _tokenizer_cache.get(key)
            if tok is None:
                tok = _tokenizer_cache[key] = self._build_ll_tokenizer()
            elif key not in _sliced and self._steps >= SLICES_AFTER_STEPS:  # as in the llama.cpp backend
                from llguidance import LLTokenizer

                tok = _tokenizer_cache[key] = tok.with_slices(LLTokenizer.general_slices())
                _sliced.add(key)
            return tok

    def _tokenizer_files_key(self) -> str | None:
        d = getattr(self, "converted", None) or (self.source if self.source.is_dir() else None)
        if d is None or not (Path(d) / "tokenizer.json").is_file():
            return None
        files = [Path(d) / n for n in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                                       "added_tokens.json")]
        try:
            return tokenizer_cache.files_key(files, f"hf|{self.vocab_size}|{list(self.eos_ids)}")
        except OSError:
            return None

    def _build_ll_tokenizer(self):
        """From the cached token list when there is one (~4x faster: the trie, without parsing and
        walking the Hugging Face vocabulary); else the Hugging Face way, and the list is cached."""
        from llguidance import LLTokenizer

        key = self._tokenizer_files_key()
        cached = tokenizer_cache.load(key) if key is not None else None
        encode = functools.partial(self._tok.encode, add_special_tokens=False)
        if cached is not None and cached[1] == list(self.eos_ids) and len(cached[0]) == self.vocab_size:
            self._ll_encode = tokenizer_cache.PyTokenize(encode)  # keeps the C callback alive
            with self._progress.phase("building the llguidance tokenizer"):
                # Without the mask slices at first, as in the llama.cpp backend (SLICES_AFTER_STEPS).
                return LLTokenizer.from_llamacpp(tokens=cached[0], vocab_ptr=1, tokenize_fptr=self._ll_encode.fptr,
                                                 eos_token=list(self.eos_ids), slices=[])
        import llguidance.hf

        with self._progress.phase("building the llguidance tokenizer (once for this model)"):
            try:
                tok = llguidance.hf.from_tokenizer(self._tok, n_vocab=self.vocab_size,
                                                   eos_token=list(self.eos_ids) or None)
            except Exception as e:
                raise EngineError(f"llguidance cannot use this tokenizer: {one_line(e)}") from None
        if key is not None and self.eos_ids:
            tokenizer_cache.save(key, tokenizer_cache.tokens_of(tok), list(self.eos_ids))
        _sliced.add((self.model_id, self.vocab_size, self.eos_ids))  # built with them
        return tok

    def chat_template(self) -> str | None:
        t = getattr(self._tok, "chat_template", None)
        if isinstance(t, dict):
            t = t.get("default")
        return t or None

    @property
    def architecture(self) -> str:
        mt = getattr(self._model.config, "model_type", "") or ""
        return mt.removesuffix("_text")

    @property
    def info(self) -> dict[str, str]:
        return {**super().info, "device": str(self.device), "dtype": str(self.dtype).removeprefix("torch."),
                "threads": str(torch.get_num_threads()), "architecture": self.architecture}

    # -- evaluation -----------------------------------------------------
    def reset(self) -> None:
        with self.lock:
            self._cache = DynamicCache()
            self._cached = []

    def _trim(self, keep: int) -> None:
        drop = len(self._cached) - keep
        if drop > 0:
            if keep == 0:
                self.reset()
                return
            self._cache.crop(-drop)
            del self._cached[keep:]

    def logits(self, ids: list[int], n_rows: int = 1) -> np.ndarray:
        with self.lock:  # the decode loop holds it already for a whole call; direct callers too
            return self._logits(ids, n_rows)

    def _logits(self, ids: list[int], n_rows: int) -> np.ndarray:
        self._steps += 1
        if len(ids) >= self.n_ctx:
            raise ContextOverflow(f"context overflow: {len(ids)} tokens do not fit the context of "
                                  f"{self.n_ctx} tokens (pass n_ctx= to the model)")
        if not ids:
            raise EngineError("logits of an empty sequence")
        n_rows = max(1, min(n_rows, len(ids)))
        keep = min(common_prefix(self._cached, ids), len(ids) - n_rows)
        self._trim(keep)
        keep = len(self._cached)
        new = ids[keep:]
        # Chunks of n_batch bound the attention's memory on long prompts; the last holds every row asked for.
        size = max(self.n_batch, n_rows)
        start = 0
        try:
            with torch.inference_mode():
                while True:
                    remaining = len(new) - start
                    last = remaining <= size
                    n = remaining if last else min(size, remaining - n_rows)
                    chunk = torch.tensor([new[start:start + n]], dtype=torch.long, device=self.device)
                    out = self._model(input_ids=chunk, past_key_values=self._cache, use_cache=True,
                                      logits_to_keep=n_rows if last else 1)
                    self._cached.extend(new[start:start + n])
                    start += n
                    if last:
                        break
                rows = out.logits[0, -n_rows:]
                if rows.dtype != torch.float32:
                    rows = rows.float()
                return rows.numpy() if rows.device.type == "cpu" else rows.cpu().numpy()
        except torch.cuda.OutOfMemoryError:
            self.reset()
            raise EngineError("out of GPU memory while decoding") from None
        except BaseException:  # an error or a cancel mid-forward: the cache may hold a half-evaluated chunk
            self.reset()
            raise

    def close(self) -> None:
        with self.lock:  # never drop the cache under a call running on another thread
            self._cache = None
            self._cached = []
            model = getattr(self, "_model", None)
            if model is not None:
                self._model = None
                if self.device.type == "cuda":
                    del model
                    torch.cuda.empty_cache()


def _decoder_mode(tok) -> str:
    """How token pieces map to bytes: "sentencepiece" (▁ and <0xNN>), "bytelevel" (GPT-2), "wordpiece" or "other"."""
    try:
        spec = json.loads(tok.backend_tokenizer.to_str())
    except Exception:
        return "other"
    dec = spec.get("decoder") or {}
    kinds = set()

    def walk(d) -> None:
        if isinstance(d, dict):
            kinds.add(d.get("type"))
            for v in d.get("decoders") or ():
                walk(v)
            if d.get("type") == "Replace" and (d.get("pattern") or {}).get("String") == "\u2581":
                kinds.add("ReplaceSpace")

    walk(dec)
    if "ByteLevel" in kinds:
        return "bytelevel"
    if "ByteFallback" in kinds or "ReplaceSpace" in kinds or "Metaspace" in kinds:
        return "sentencepiece"
    if "WordPiece" in kinds:
        return "wordpiece"
    return "other"


def _gguf_chat_template(path: Path) -> str | None:
    try:
        from gguf import GGUFReader

        field = GGUFReader(str(path)).fields.get("tokenizer.chat_template")
        if field is None:
            return None
        return bytes(field.parts[field.data[0]]).decode("utf-8")
    except Exception:
        return None
