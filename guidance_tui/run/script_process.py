"""A prompt script in its own process, followed through its trace file.

In one process the app and the script share the interpreter lock: every
millisecond the UI spends drawing, the script's Python waits, and a busy app
slowed a generating script by 10-30 %.  So ``run`` starts the script in a child
interpreter that records exactly as ``record`` does (flushing every
LIVE_FLUSH_S), and the app follows the file as it grows.  The file is the only
channel: what the app shows is what was recorded, and a child that dies keeps
everything it flushed.

Control goes the other way over the child's stdin: a line ``cancel`` (or the
pipe closing, when the app dies) stops the run as Ctrl-C does under ``record``:
at its next token, or with a KeyboardInterrupt in the script a second later
(``ScriptRun.interrupt``).  That pipe
is the control thread's alone: the script's stdin is at end of file (the app
has the terminal; nothing can type into the script), and its first read
records a warning saying so.  ``record`` and ``run --plain`` keep the real
stdin, so input can be piped in there.

The child's own lines that start with ``guidance-tui:`` (a trace it cannot
write, at once; a run it could not start) are notices the app shows
(:meth:`ScriptProcess.take_notices`): they are not in the trace.

Parent side: :class:`ScriptProcess`, a drop-in for ``runner.ScriptRun`` in the
app.  Child side: ``python -m guidance_tui.run.script_process SPEC``.  Neither
imports Textual.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from typing import Sequence

from tracing import Message, RunEnd, TraceStore
from tracing.fileformat import TraceFormatError

from guidance_tui import exit_codes
from guidance_tui.state.follower import TraceFollower
from guidance_tui.run.runner import (
    INTERRUPT_AFTER_S, RunResult, check_output, check_script, clean_text, trace_path_for,
)

LIVE_FLUSH_S = 0.01  # the child's trace writer flushes this often: the app's display lag floor
POLL_S = 0.02  # the parent reads the file's new bytes this often
WATCH_S = 0.1  # while the app reads them (polled_elsewhere), it only checks this often that the child lives
NOTICE = "guidance-tui: "  # the start of the child's lines the app shows as notices
CANCEL_GRACE_S = 10.0  # after a cancel, how long the child may take before it is killed


class StartError(Exception):
    """The child could not be started: one-line message."""


class ScriptProcess:
    """One run of one script in a child process; :meth:`run` blocks, :meth:`cancel` from any thread.

    ``store`` receives the child's events as they reach the trace file.
    ``output`` keeps the child's own stdout/stderr lines (library warnings,
    a start-up failure): the script's prints are Message events in the trace.
    """

    def __init__(self, script: str | os.PathLike, args: Sequence[str] = (), *, model: str | None = None,
                 backend: str | None = None, record: str | os.PathLike | None = None,
                 store: TraceStore | None = None, python: str = sys.executable, poll_s: float = POLL_S,
                 force: bool = False, url: str | None = None, model_name: str | None = None) -> None:
        self.script = check_script(script)
        self.args = list(args)
        self.model = model
        self.backend = backend
        self.url, self.model_name = url, model_name  # --backend remote
        self.trace_path = trace_path_for(script, record)
        check_output(self.trace_path, self.script, force)  # before start() empties what is there
        self.store = store if store is not None else TraceStore()
        self.python = python
        self.poll_s = poll_s
        self.output: deque[str] = deque(maxlen=500)
        self._new_output: list[str] = []
        self._notices: list[str] = []
        self._out_lock = threading.Lock()
        self._cancel = threading.Event()
        self.proc: subprocess.Popen | None = None
        self.result: RunResult | None = None
        self.polled_elsewhere = False  # the app's timer calls poll(); run() only watches the process
        # reads the child's file as it grows (the app unpacks a token's top-k when it shows it)
        self._follower = TraceFollower(self.trace_path, self.store, ask_registry=False)

    # -- control -------------------------------------------------------------------
    def cancel(self) -> None:
        self._cancel.set()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()

    @property
    def pid(self) -> int | None:
        """The child's process id while it runs."""
        return self.proc.pid if self.proc is not None and self.proc.returncode is None else None

    def take_output(self) -> list[str]:
        """Child output lines that arrived since the last call."""
        with self._out_lock:
            lines, self._new_output = self._new_output, []
        return lines

    def take_notices(self) -> list[str]:
        """The child's ``guidance-tui:`` lines (without that prefix) since the last call:
        a trace it cannot write (at once, with the path), a run it could not start."""
        with self._out_lock:
            notices, self._notices = self._notices, []
        return notices

    # -- the run -------------------------------------------------------------------
    def command(self) -> list[str]:
        spec = {"script": str(self.script), "args": self.args, "model": self.model, "backend": self.backend,
                "url": self.url, "model_name": self.model_name,
                "record": str(self.trace_path)}  # JSON escapes lone surrogates (non-UTF-8 names): ASCII
        return [self.python, "-m", "guidance_tui.run.script_process", json.dumps(spec)]

    def start(self) -> None:
        """Start the child (run() does, when not done before).  Start it before
        lowering this process's priority: the child must not inherit that."""
        if self.proc is not None:
            return
        # Created (or emptied) here, though the child truncates it too: the parent must never read a
        # previous run's bytes, and a file that cannot be created is one line before the app opens.
        # Something that is not a regular file (/dev/null) is left alone.
        path = self.trace_path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists() or path.is_file():
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
        except OSError as e:
            raise StartError(clean_text(f"cannot create the trace file {path}: {e.strerror or e}")) from None
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        try:
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT, env=env, start_new_session=True)
        except OSError as e:
            raise StartError(clean_text(f"cannot start {self.python}: {e.strerror or e}")) from None

    def run(self) -> RunResult:
        try:
            self.start()
        except StartError as e:
            self.store.append(RunEnd(status="error", error=str(e)))
            self.result = RunResult("error", str(e), exit_code=exit_codes.ERROR)
            return self.result
        reader = threading.Thread(target=self._read_output, name="script-output", daemon=True)
        reader.start()
        try:
            self._follow()
        finally:
            self._close_stdin()
            reader.join(timeout=2)
        self.result = self._outcome()
        return self.result

    def _follow(self) -> None:
        """Until the child has exited: pass on a cancel, and (unless someone
        else calls :meth:`poll`) decode the trace file into the store."""
        proc = self.proc
        cancel_sent_at = None
        try:
            while True:
                exited = proc.poll() is not None  # poll once more after the exit: the last flush
                if self._cancel.is_set() and cancel_sent_at is None:
                    cancel_sent_at = time.monotonic()
                    self._send("cancel")
                if cancel_sent_at is not None and not exited and time.monotonic() - cancel_sent_at > CANCEL_GRACE_S:
                    proc.kill()
                if exited:
                    while self.poll():
                        pass
                    return
                if not self.polled_elsewhere:
                    self.poll()
                    time.sleep(self.poll_s)
                elif cancel_sent_at is None:  # only watching for the exit: the app reads the file
                    self._cancel.wait(WATCH_S)
                else:
                    time.sleep(self.poll_s)
        except TraceFormatError as e:  # not ours to fix: report it, stop the child, keep the file
            self._note(f"guidance-tui: {e}")
            proc.kill()
            proc.wait()
        finally:
            self._follower.close()

    def poll(self, max_events: int | None = None, final: bool | None = None) -> int:
        """Decode what the trace file gained (up to ``max_events``) into the
        store; the number of events added.

        Thread-safe.  The app calls it from its timer (``polled_elsewhere``), so
        decoding runs on the UI thread between frames instead of competing with
        them for the interpreter lock."""
        if final is None:  # once the child is gone, nothing more will be written
            final = self.proc is not None and self.proc.poll() is not None
        return self._follower.poll(max_events, final=final)

    def _outcome(self) -> RunResult:
        code = self.proc.wait()
        end = self.store.run_end()
        said = [ln.removeprefix(NOTICE) for ln in self.output if ln.startswith(NOTICE)]
        if end is not None and (end.status != "done" or code == 0):
            return RunResult(end.status, end.error, end.traceback, exit_code=code)
        # No RunEnd: the child failed before the script started, or died, or could not write the
        # trace's end (a full disk).  Say so in the store too, so the app marks the run (the file
        # keeps what the child wrote).
        if code < 0:
            name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
            error = f"the script's process was killed by {name}"
            status = "interrupted" if self._cancel.is_set() else "error"
        else:
            error = said[-1] if said else f"the script's process exited with status {code}"
            status = "interrupted" if code == exit_codes.INTERRUPTED else "error"
        self.store.append(RunEnd(status=status, error=error))
        return RunResult(status, error, exit_code=code if code > 0 else (exit_codes.INTERRUPTED if status == "interrupted" else exit_codes.ERROR))

    # -- pipes ---------------------------------------------------------------------
    def _send(self, line: str) -> None:
        try:
            self.proc.stdin.write(line.encode() + b"\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            pass

    def _close_stdin(self) -> None:
        try:
            self.proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass

    def _read_output(self) -> None:
        for raw in self.proc.stdout:
            self._note(raw.decode("utf-8", "replace").rstrip("\n"))
        self.proc.stdout.close()

    def _note(self, line: str) -> None:
        with self._out_lock:
            self.output.append(line)
            self._new_output.append(line)
            if line.startswith(NOTICE):
                self._notices.append(line.removeprefix(NOTICE))


# -- the child -----------------------------------------------------------------------
STDIN_WARNING = ("the script read from stdin; under the inspector stdin is closed (EOF), so input() raises "
                 "EOFError. To pipe input into a script, use `guidance-tui record` or `guidance-tui run --plain`")


class ClosedStdin(io.TextIOBase):
    """The script's ``sys.stdin`` in the child: always at end of file, as a
    closed stdin is (``input()`` raises EOFError), and the first read puts
    :data:`STDIN_WARNING` in the trace."""

    def __init__(self, store: TraceStore) -> None:
        self._store = store
        self._warned = False

    def _eof(self) -> str:
        if not self._warned:
            self._warned = True
            self._store.append(Message(level="warning", text=STDIN_WARNING))
        return ""

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> str:
        return self._eof()

    def readline(self, size: int | None = -1) -> str:
        return self._eof()

    def readlines(self, hint: int | None = -1) -> list[str]:
        self._eof()
        return []

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return 0  # /dev/null by now (see _take_control_pipe): at end of file too

    @property
    def encoding(self) -> str:
        return "utf-8"

    @property
    def buffer(self) -> io.BufferedIOBase:
        return _ClosedBytes(self)


class _ClosedBytes(io.BufferedIOBase):
    """``sys.stdin.buffer`` of :class:`ClosedStdin`: end of file too."""

    def __init__(self, text: ClosedStdin) -> None:
        self._text = text

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        self._text._eof()
        return b""

    read1 = read
    readline = read

    def readinto(self, b) -> int:
        self._text._eof()
        return 0


def _take_control_pipe():
    """The control pipe (fd 0) as a file of its own; fd 0 becomes /dev/null, so
    nothing the script does (a C library, a subprocess) can read it and
    swallow a ``cancel``.  The copy is not inherited by the script's children."""
    control = os.fdopen(os.dup(0), "r", encoding="utf-8", errors="replace")
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    return control


def _watch_stdin(run, control) -> None:
    """Stop the run on a ``cancel`` line, or when the parent goes away (EOF).

    The engines stop at their next token; a script busy in its own code (or
    asleep) never looks, so after INTERRUPT_AFTER_S it gets a KeyboardInterrupt
    (the script runs on the main thread, where a SIGINT is one even inside a
    blocking call), and the runner records the run as interrupted."""
    for line in control:
        if line.strip() == "cancel":
            break
    run.interrupt(INTERRUPT_AFTER_S)


def child_main(argv: list[str]) -> int:
    from guidance_tui.run.runner import RunnerError, ScriptRun, clean_text

    for stream in (sys.stdout, sys.stderr):  # the pipe to the app: a non-UTF-8 name never fails a line
        try:
            stream.reconfigure(errors="backslashreplace")
        except (AttributeError, ValueError):
            pass
    spec = json.loads(argv[0])
    try:
        # force: the parent checked the path (check_output) and emptied the file
        run = ScriptRun(spec["script"], spec["args"], model=spec["model"], backend=spec["backend"],
                        url=spec.get("url"), model_name=spec.get("model_name"),
                        record=spec["record"], flush_interval=LIVE_FLUSH_S, monitor_from_start=True, force=True)
    except (RunnerError, OSError) as e:
        print(f"{NOTICE}{clean_text(str(e))}", file=sys.stderr)
        return e.code if isinstance(e, RunnerError) else exit_codes.ERROR
    control = _take_control_pipe()
    sys.stdin = ClosedStdin(run.store)
    threading.Thread(target=_watch_stdin, args=(run, control), name="control", daemon=True).start()
    try:
        result = run.run()
    except KeyboardInterrupt:  # Ctrl-C thrice while the runner finished the trace
        return exit_codes.INTERRUPTED
    except Exception as e:  # the runner failed (the trace file cannot be created...): one line
        print(f"{NOTICE}{clean_text(str(e))}", file=sys.stderr)
        return getattr(e, "code", exit_codes.ERROR)
    if run.write_error is not None:  # the file lacks the end: the app takes the outcome from this line
        print(f"{NOTICE}{result.error}", file=sys.stderr, flush=True)
    return result.exit_code


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:]))
