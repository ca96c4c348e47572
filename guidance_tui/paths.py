"""Where guidance-tui keeps things on the user's machine."""

from __future__ import annotations

import datetime as _dt
import re
from pathlib import Path

import platformdirs

APP = "guidance-tui"
TRACE_SUFFIX = ".gtt"


def data_dir() -> Path:
    return Path(platformdirs.user_data_dir(APP))


def default_trace_path(script: str) -> Path:
    """A fresh file under the user data directory, named for the script and the time."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(script).stem) or "run"
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    path = data_dir() / "runs" / f"{stamp}-{stem}{TRACE_SUFFIX}"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def examples_dir() -> Path:
    """The bundled examples, shipped inside the package so a wheel has them too."""
    return Path(__file__).resolve().parent / "examples"
