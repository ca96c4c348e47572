"""Every exit code guidance-tui returns, in one table (the README quotes it).

| code | meaning |
|---|---|
| 0 | done (a trace with damaged frames too: one warning, and the good frames) |
| 1 | guidance-tui could not do it: an unreadable trace (not a trace, nothing readable in it), an unwritable file or a full disk (the run is stopped), a stdout that cannot be written, the runner failed |
| 2 | bad command line: an unknown option, a missing script, a broken `keymap.toml`, an output file that is the script or not a trace (`--force`), an `export -o` onto the trace it exports or onto another trace (`--force`) |
| 3 | the script raised (its own error; its frames are shown) |
| 4 | the engine refused the script's input: a missing or invalid model, an invalid grammar, regex or JSON schema |
| 130 | interrupted: Ctrl-C, or `q` while the script ran |

A script that calls ``sys.exit(N)`` exits N.
"""

from __future__ import annotations

OK = 0
ERROR = 1
USAGE = 2
SCRIPT_RAISED = 3
ENGINE_REFUSED = 4
INTERRUPTED = 130

# How a recorded run's error begins when it is not the script's own exception (the app's
# error pane names what happened from these; see run/runner.py).
ENGINE_REFUSED_TEXT = "the engine refused: "  # an EngineError (exit 4)
NOT_WRITTEN_TEXT = "trace not fully written: "  # the trace lost events (a full disk; exit 1)


class CliError(Exception):
    """An error to print as one line (``guidance-tui: <message>``) and exit non-zero."""

    def __init__(self, message: str, code: int = ERROR) -> None:
        super().__init__(message)
        self.code = code


def for_exception(e: BaseException) -> int:
    """The exit code of a script that ended by raising ``e``."""
    from engines.errors import EngineError  # only where a script ran: engines is loaded already

    if isinstance(e, KeyboardInterrupt):
        return INTERRUPTED
    return ENGINE_REFUSED if isinstance(e, EngineError) else SCRIPT_RAISED
