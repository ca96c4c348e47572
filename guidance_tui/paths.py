"""Where guidance-tui keeps things on the user's machine."""

from __future__ import annotations

from pathlib import Path

import platformdirs

APP = "guidance-tui"


def data_dir() -> Path:
    return Path(platformdirs.user_data_dir(APP))


def default_trace_path(script: str) -> Path:
    """A fresh file in the runs directory (``$GUIDANCE_TUI_RUNS``, else under the user data
    directory), named for the script and the time.  Raises RunsDirError (one line)."""
    from tracing.runs import new_trace_path

    return new_trace_path(script)


def examples_dir() -> Path:
    """The bundled examples, shipped inside the package so a wheel has them too."""
    return Path(__file__).resolve().parent / "examples"
