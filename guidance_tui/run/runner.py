"""Runs a user's prompt script inside a recording session.

Everything the script's engines do lands in one :class:`TraceStore`, which a
:class:`TraceWriter` follows to disk from the start, so a crash, Ctrl-C or a
killed process keeps what was recorded.  Exceptions from the script are
recorded (message and the user's own frames) and never escape :meth:`run`.
This module does not import Textual: ``record`` uses it headless.
"""

from __future__ import annotations

import io
import os
import runpy
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from tracing import Message, RunEnd, RunStart, Token, TokenKind, TraceStore, TraceWriter

from guidance_tui import exit_codes
from guidance_tui.gc_policy import Freezer
from guidance_tui.paths import default_trace_path

_OUR_DIRS = tuple(str(Path(__file__).resolve().parents[2] / d) + os.sep for d in ("tracing", "engines", "guidance_tui"))




class RunnerError(Exception):
    """The script cannot be started (missing, a directory...): one-line message."""


@dataclass
class RunResult:
    status: str  # done | error | interrupted
    error: str = ""
    traceback: str = ""
    exit_code: int = 0


def user_frames(exc: BaseException) -> str:
    """The traceback limited to the user's own frames (no runpy, engines or runner frames)."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if not f.filename.startswith(_OUR_DIRS) and not f.filename.startswith(sys.prefix)
              and "runpy" not in f.filename and not f.filename.startswith(sys.base_prefix)]
    lines = ["Traceback (the script's frames):\n"] + traceback.format_list(frames) if frames else []
    return "".join(lines)


def describe(exc: BaseException) -> str:
    from engines.errors import EngineError, one_line

    if isinstance(exc, EngineError):
        return one_line(exc)
    return one_line(f"{type(exc).__name__}: {exc}")


class _Tee(io.TextIOBase):
    """Stands in for stdout/stderr while the script runs in a worker thread:
    the script's writes become Message events, other threads write through."""

    def __init__(self, original, store: TraceStore, thread: threading.Thread, level: str) -> None:
        self._orig, self._store, self._thread, self._level = original, store, thread, level
        self._buf = ""

    def write(self, s: str) -> int:
        if threading.current_thread() is not self._thread:
            return self._orig.write(s)
        self._buf += s
        while "\n" in self._buf:
            line, self._buf = self._buf.split("\n", 1)
            self._store.append(Message(level=self._level, text=line))
        return len(s)

    def flush(self) -> None:
        if threading.current_thread() is not self._thread:
            self._orig.flush()
        elif self._buf:
            self._store.append(Message(level=self._level, text=self._buf))
            self._buf = ""


def check_script(script: str | os.PathLike) -> Path:
    """``script`` as a Path, or :class:`RunnerError` when it cannot be a prompt script."""
    path = Path(script)
    if not path.exists():
        raise RunnerError(f"{script}: no such file")
    if path.is_dir():
        raise RunnerError(f"{script}: is a directory, not a prompt script")
    return path


class ScriptRun:
    """One run of one script; :meth:`run` blocks, :meth:`cancel` may come from any thread."""

    def __init__(self, script: str, args: Sequence[str] = (), *, model: str | None = None,
                 backend: str | None = None, record: str | os.PathLike | None = None,
                 store: TraceStore | None = None, monitoring: bool = True, capture_output: bool = False,
                 flush_interval: float = 0.25, monitor_from_start: bool = False) -> None:
        from engines.session import Session

        self.script = check_script(script)
        self.args = list(args)
        self.model = model
        self.backend = backend
        self.store = store if store is not None else TraceStore()
        self.trace_path = Path(record) if record else default_trace_path(script)
        self.capture_output = capture_output
        self.flush_interval = flush_interval
        self.monitor_from_start = monitor_from_start
        self.session = Session(store=self.store, model=model, backend=backend, monitoring=monitoring)
        self.result: RunResult | None = None
        self._written = 0
        self._freezer = Freezer()

    def _freeze_written(self, n: int) -> None:
        """Keep written events out of the collector's sight (see gc_policy): the
        store keeps every event to the end, and with a few hundred thousand of
        them each full collection stopped the script for over 100 ms.  (What
        else is alive at that moment is frozen too; a cyclic temporary among it
        is never collected, a small price at this rate.)"""
        self._written += n
        self._freezer.grown(self._written)

    def cancel(self) -> None:
        self.session.cancel_event.set()

    def _model_label(self) -> str:
        if self.model:
            return str(self.model)
        from engines.default_model import NAME

        return f"{NAME} (embedded default)"

    def _backend_label(self) -> str:
        if self.backend:
            return self.backend
        return "transformers" if self.model and Path(self.model).is_dir() else "llamacpp"

    def run(self) -> RunResult:
        from engines import session as sessions
        from engines.errors import Cancelled

        store = self.store
        try:
            writer = TraceWriter(self.trace_path, store, interval=self.flush_interval,
                                 on_written=self._freeze_written)
        except OSError as e:
            raise RunnerError(f"cannot write the trace file {self.trace_path}: {e.strerror}") from None
        store.append(RunStart(script=str(self.script), argv=[str(self.script), *self.args], model=self._model_label(),
                              backend=self._backend_label(), wall_time=time.time(),
                              info={"cwd": os.getcwd(), "pid": str(os.getpid())}))
        if self.monitor_from_start:  # resources from the first moment (model loading), not the first token
            self.session.start_monitoring()
        sessions.activate(self.session)
        old_argv, old_path = sys.argv, list(sys.path)
        old_out, old_err = sys.stdout, sys.stderr
        sys.argv = [str(self.script), *self.args]
        sys.path.insert(0, str(self.script.resolve().parent))
        if self.capture_output:
            me = threading.current_thread()
            sys.stdout = _Tee(old_out, store, me, "stdout")
            sys.stderr = _Tee(old_err, store, me, "stderr")
        result = RunResult("done")
        try:
            runpy.run_path(str(self.script), run_name="__main__")
        except SystemExit as e:
            if e.code not in (None, 0):
                result = RunResult("error", f"the script exited with status {e.code}",
                                   exit_code=e.code if isinstance(e.code, int) else exit_codes.ERROR)
        except (KeyboardInterrupt, Cancelled):
            result = RunResult("interrupted", "interrupted", exit_code=exit_codes.INTERRUPTED)
        except BaseException as e:  # the script's own failure: record it, never raise
            result = RunResult("error", describe(e), user_frames(e), exit_code=exit_codes.for_exception(e))
        finally:
            if self.capture_output:
                for s in (sys.stdout, sys.stderr):
                    s.flush()
                sys.stdout, sys.stderr = old_out, old_err
            sys.argv = old_argv
            sys.path[:] = old_path
            sessions.activate(None)
            self.session.close()
            counts = _token_counts(store)
            store.append(RunEnd(status=result.status, error=result.error, traceback=result.traceback, **counts))
            writer.close()
        if writer.error is not None:
            result.error = result.error or f"trace writer failed: {writer.error}"
        self.result = result
        return result


def _token_counts(store: TraceStore) -> dict[str, int]:
    counts = {TokenKind.PROMPT: 0, TokenKind.GENERATED: 0, TokenKind.FORCED: 0}
    for seq in store.seqs_of(Token):
        counts[store[seq].kind] += 1
    return {"prompt_tokens": counts[TokenKind.PROMPT], "generated_tokens": counts[TokenKind.GENERATED],
            "forced_tokens": counts[TokenKind.FORCED]}
