"""Runs a user's prompt script inside a recording session.

Everything the script's engines do lands in one :class:`TraceStore`, which a
:class:`TraceWriter` follows to disk from the start, so a crash, Ctrl-C or a
killed process keeps what was recorded.  Exceptions from the script are
recorded (message and the user's own frames) and never escape :meth:`ScriptRun.run`.

A script runs the same way under every command (``record``, ``run --plain``,
and the child process the app follows): in the thread that calls
:meth:`ScriptRun.run`, which is the process's main thread, as under plain
``python``: ``signal.signal`` works, and Ctrl-C is a KeyboardInterrupt in the
script.  Its ``sys.stdout`` and ``sys.stderr`` are :class:`ScriptOutput`
streams that look like real ones (``buffer``, ``fileno``, ``encoding``,
``write`` returning its count...); every line written to them becomes a
Message event, from any thread.

Stopping a run (:meth:`ScriptRun.interrupt`: the first Ctrl-C, the app's quit,
a trace that cannot be written) cancels it at the engines' next token; a
script still running INTERRUPT_AFTER_S later (busy in its own code, asleep)
gets a KeyboardInterrupt in its thread.  The trace always gets its RunEnd.

A trace that cannot be written (a full disk) is reported at once, with the
path (``on_trace_error``), and the run is stopped: the user asked for a
recording, and the rest of it would be lost.  Its status is then ``error``
("trace not fully written: ..."), never ``done``.

Text the script hands over that is not valid Unicode (a lone surrogate: a
Latin-1 file name, a non-UTF-8 argument, ``print("\\udcff")``) is recorded
with ``<0xNN>`` escapes (:func:`clean_text`), as token bytes are shown.

A script that forks: the child goes on with the script but records nothing
(the parent owns the trace); its output goes straight to the process's own
stdout and stderr, and it exits when its copy of the script ends.

This module does not import Textual: ``record`` uses it headless.
"""

from __future__ import annotations

import codecs
import io
import os
import re
import runpy
import signal
import stat
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from tracing import Message, RunEnd, RunStart, TraceStore, TraceWriter
from tracing.fileformat import MAGIC

from guidance_tui import exit_codes
from guidance_tui.gc_policy import Freezer

_OUR_DIRS = tuple(str(Path(__file__).resolve().parents[2] / d) + os.sep for d in ("tracing", "engines", "guidance_tui"))

INTERRUPT_AFTER_S = 1.0  # a script that ignored a cancel this long gets a KeyboardInterrupt
WATCH_S = 0.05  # how often a run checks that its trace is being written


class RunnerError(Exception):
    """The script cannot be run (missing, a directory, its trace cannot be created...): one-line message.
    ``code`` is the exit code: USAGE for what the command line named, ERROR for the rest."""

    def __init__(self, message: str, code: int = exit_codes.USAGE) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class RunResult:
    status: str  # done | error | interrupted
    error: str = ""
    traceback: str = ""
    exit_code: int = 0


# -- text ----------------------------------------------------------------------------
_SURROGATE = re.compile("[\ud800-\udfff]")


def _escape_surrogate(m: re.Match) -> str:
    c = ord(m.group())
    return f"<0x{c - 0xDC00:02X}>" if 0xDC80 <= c <= 0xDCFF else f"\\u{c:04x}"


def clean_text(text: str) -> str:
    """``text`` as any UTF-8 file or terminal can take it: a lone surrogate that
    stands for a byte that is not UTF-8 (``surrogateescape``: file names,
    arguments, ``bytes`` decoded by the script's stdout) becomes ``<0xNN>``, as
    token bytes are shown; any other lone surrogate ``\\udXXX``."""
    if text.isascii():
        return text
    return _SURROGATE.sub(_escape_surrogate, text)


def write_text(file, text: str) -> None:
    """``file.write(text)``; what the file's encoding cannot take is escaped, never an error."""
    try:
        file.write(text)
    except UnicodeEncodeError:
        encoding = getattr(file, "encoding", None) or "utf-8"
        file.write(clean_text(text).encode(encoding, "backslashreplace").decode(encoding, "replace"))


def user_frames(exc: BaseException) -> str:
    """The traceback limited to the user's own frames (no runpy, engines or runner frames)."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if not f.filename.startswith(_OUR_DIRS) and not f.filename.startswith(sys.prefix)
              and "runpy" not in f.filename and not f.filename.startswith(sys.base_prefix)]
    lines = ["Traceback (the script's frames):\n"] + traceback.format_list(frames) if frames else []
    return clean_text("".join(lines))


ENGINE_REFUSED = exit_codes.ENGINE_REFUSED_TEXT  # the start of a RunEnd error for an EngineError (exit 4)
NOT_WRITTEN = exit_codes.NOT_WRITTEN_TEXT  # the start of a RunEnd error when the trace lost events


def describe(exc: BaseException) -> str:
    from engines.errors import EngineError, one_line

    if isinstance(exc, EngineError):
        return clean_text(ENGINE_REFUSED + one_line(exc))
    return clean_text(one_line(f"{type(exc).__name__}: {exc}"))


def describe_write_error(err: BaseException, path: str | os.PathLike) -> str:
    """One line for a trace writer's failure, naming the file."""
    from engines.errors import one_line

    if isinstance(err, OSError) and err.strerror:
        return clean_text(f"cannot write {err.filename or path}: {err.strerror}")
    text = one_line(err) or type(err).__name__
    return clean_text(text if str(path) in text else f"cannot write {path}: {text}")


# -- the script's stdout and stderr ----------------------------------------------------
class ScriptOutput(io.TextIOBase):
    """The script's ``sys.stdout`` or ``sys.stderr``: each line it writes (from
    any thread) becomes a Message event of level ``stdout`` or ``stderr``, and
    with ``echo`` also goes to ``original`` as it is written.

    It looks like a real text stream: ``write`` takes str only and returns its
    length, ``buffer`` takes bytes (decoded as UTF-8, bytes that are not become
    ``<0xNN>``), ``fileno`` is the real stream's (writes there bypass the trace),
    ``encoding``, ``errors``, ``isatty`` (False: lines are captured),
    ``reconfigure``, ``close`` (further writes raise ValueError) all work.  A
    partial line becomes a Message when flushed (a prompt before ``input()``)."""

    encoding = "utf-8"
    errors = "surrogateescape"
    newlines = None
    line_buffering = True
    write_through = False
    mode = "w"

    def __init__(self, original, store: TraceStore, level: str, *, echo: bool = False) -> None:
        self._orig, self._store, self._level, self._echo = original, store, level, echo
        self.name = f"<{level}>"
        self._lock = threading.RLock()  # reentrant: a signal handler in the main thread may print mid-write
        self._buf = ""
        self._closed = False
        self._decoder = codecs.getincrementaldecoder("utf-8")("surrogateescape")
        self._child = None  # after a fork, in the child: a stream on the real file descriptor
        self.mid_line = False  # the echo's last line has no newline yet
        self.buffer = _ScriptBytes(self)

    # -- writing -----------------------------------------------------------------
    def write(self, s: str) -> int:
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        self._check_open()
        with self._lock:
            if self._child is not None:
                write_text(self._child, s)
                return len(s)
            if self._echo and s:
                try:
                    write_text(self._orig, s)
                except (OSError, ValueError) as e:
                    self._echo_failed(e)
                self.mid_line = not s.endswith("\n")
            self._take(s)
        return len(s)

    def _write_bytes(self, data: bytes) -> int:
        self._check_open()
        with self._lock:
            if self._child is not None:
                self._child.flush()
                self._child.buffer.write(data)
                return len(data)
            text = self._decoder.decode(data)
            if self._echo and data:
                self.mid_line = not data.endswith(b"\n")
                raw = getattr(self._orig, "buffer", None)
                try:
                    if raw is not None:
                        self._orig.flush()
                        raw.write(data)
                    else:
                        write_text(self._orig, text)
                except (OSError, ValueError) as e:
                    self._echo_failed(e)
            self._take(text)
        return len(data)

    def _echo_failed(self, e: Exception) -> None:
        """The real stream is gone (a pipe's reader quit, stdout closed): the lines are
        still recorded, the script goes on; a broken pipe is pointed at /dev/null so
        nothing fails on it at exit either."""
        self._echo = False
        if isinstance(e, BrokenPipeError):
            try:
                null = os.open(os.devnull, os.O_WRONLY)
                os.dup2(null, self._orig.fileno())
                os.close(null)
            except (OSError, ValueError, AttributeError):
                pass

    def _take(self, s: str) -> None:
        if "\n" not in s:
            self._buf += s
            return
        lines = (self._buf + s).split("\n")
        self._buf = lines.pop()
        append, level = self._store.append, self._level
        for line in lines:
            append(Message(level=level, text=clean_text(line)))

    def flush(self) -> None:
        self._check_open()
        self._emit_rest()
        if self._echo or self._child is not None:
            try:
                (self._child or self._orig).flush()
            except (OSError, ValueError):
                pass

    def end_echo_line(self) -> None:
        """After the run: a last echoed line without its newline gets one on a terminal,
        so what guidance-tui prints next ("trace: ...") starts a line of its own."""
        if self._echo and self.mid_line:
            self.mid_line = False
            try:
                if self._orig.isatty():
                    self._orig.write("\n")
                    self._orig.flush()
            except (OSError, ValueError, AttributeError):
                pass

    def _emit_rest(self) -> None:
        """A partial line (and bytes of an incomplete character) become a Message."""
        with self._lock:
            if self._child is not None:
                return
            rest = self._buf + self._decoder.decode(b"", final=True)
            self._buf = ""
            if rest:
                self._store.append(Message(level=self._level, text=clean_text(rest)))

    # -- what a real stream has --------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("I/O operation on closed file.")

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        if not self._closed:
            self._emit_rest()
            self._closed = True

    def writable(self) -> bool:
        self._check_open()
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False

    def isatty(self) -> bool:
        self._check_open()
        return False

    def fileno(self) -> int:
        self._check_open()
        return self._orig.fileno()  # io.UnsupportedOperation when the real stream has none

    def reconfigure(self, **options) -> None:
        """Accepted and ignored: the lines are recorded as UTF-8 text whatever the options."""
        self._check_open()

    def detach(self):
        raise io.UnsupportedOperation("detach")

    # -- after a fork, in the child ----------------------------------------------------
    def _after_fork_in_child(self) -> None:
        """The parent owns the trace: the child's output goes to the real file
        descriptor, through a stream of its own (the parent's threads may have
        held the original's lock when the process forked)."""
        self._lock = threading.RLock()
        try:
            fd = self._orig.fileno()
            self._child = open(fd, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False)
        except (OSError, ValueError, AttributeError):
            self._child = open(os.devnull, "w")


class _ScriptBytes(io.BufferedIOBase):
    """``buffer`` of a :class:`ScriptOutput`: bytes in, the same lines out."""

    def __init__(self, text: ScriptOutput) -> None:
        self._text = text

    def write(self, b) -> int:
        return self._text._write_bytes(bytes(b))

    def flush(self) -> None:
        self._text.flush()

    def writable(self) -> bool:
        return self._text.writable()

    def fileno(self) -> int:
        return self._text.fileno()

    def isatty(self) -> bool:
        return self._text.isatty()

    @property
    def closed(self) -> bool:
        return self._text.closed

    def close(self) -> None:
        self._text.close()

    @property
    def name(self) -> str:
        return self._text.name


# -- what may be run, and where its trace may go -------------------------------------
def check_script(script: str | os.PathLike) -> Path:
    """``script`` as a Path, or :class:`RunnerError` when it cannot be a prompt script."""
    path = Path(script)
    if not path.exists():
        raise RunnerError(f"{clean_text(str(script))}: no such file")
    if path.is_dir():
        raise RunnerError(f"{clean_text(str(script))}: is a directory, not a prompt script")
    return path


def trace_path_for(script: str | os.PathLike, record: str | os.PathLike | None) -> Path:
    """Where the run of ``script`` is recorded: ``record``, else a new file in the runs directory."""
    if record:
        return Path(record)
    from guidance_tui.paths import default_trace_path

    try:
        return default_trace_path(str(script))
    except OSError as e:  # the runs directory cannot be made or used; RunsDirError says which, in one line
        reason = str(e) if not e.strerror else f"cannot create the runs directory {e.filename or ''}: {e.strerror}"
        raise RunnerError(clean_text(reason), exit_codes.ERROR) from None


def check_output(path: Path, script: Path | None, force: bool = False) -> None:
    """Refuse (:class:`RunnerError`, a usage error) to write the trace over the
    script itself (the same file, under any name), or, without ``force``, over
    an existing file that is not a trace."""
    try:
        st = os.stat(path)
    except OSError:
        return  # nothing there (or nothing we can look at: the writer says why it cannot write)
    name = clean_text(str(path))
    if script is not None:
        try:
            same = os.path.samefile(path, script)
        except OSError:
            same = False
        if same:
            raise RunnerError(f"{name} is the script itself: refusing to overwrite it with the trace "
                              "(name another file)")
    if stat.S_ISDIR(st.st_mode):
        raise RunnerError(f"{name} is a directory: name a trace file")
    if force or not stat.S_ISREG(st.st_mode) or st.st_size == 0:
        return  # a device (/dev/null), a pipe, an empty file: nothing to lose
    try:
        with open(path, "rb") as f:
            head = f.read(len(MAGIC))
    except OSError:
        return
    if head != MAGIC:
        raise RunnerError(f"{name} exists and is not a guidance-tui trace: refusing to overwrite it "
                          "(--force overwrites it)")


# -- a forked child --------------------------------------------------------------------
_ACTIVE: "ScriptRun | None" = None  # the run whose script is running in this process


def _after_fork_in_child() -> None:
    run = _ACTIVE
    if run is not None and run._in_script:
        try:
            run._after_fork_in_child()
        except Exception:  # the child must go on: at worst it records into memory only
            run._forked = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _default_trace_error(stream) -> Callable[[str], None]:
    def say(message: str) -> None:
        try:
            print(f"guidance-tui: {message}", file=stream, flush=True)
        except (OSError, ValueError, RuntimeError):
            pass

    return say


class ScriptRun:
    """One run of one script.  :meth:`run` blocks (call it in the main thread:
    the script then gets signals and Ctrl-C as under plain ``python``);
    :meth:`cancel` and :meth:`interrupt` may come from any thread.

    ``echo``: the script's output also goes to the real stdout and stderr (when
    no transcript shows it).  ``on_interrupt`` is called on the first Ctrl-C,
    ``on_trace_error`` with one line as soon as the trace cannot be written or
    loses events (by default, printed on the real stderr)."""

    def __init__(self, script: str, args: Sequence[str] = (), *, model: str | None = None,
                 backend: str | None = None, record: str | os.PathLike | None = None,
                 store: TraceStore | None = None, monitoring: bool = True, echo: bool = False,
                 flush_interval: float = 0.25, monitor_from_start: bool = False, force: bool = False,
                 url: str | None = None, model_name: str | None = None) -> None:
        from engines.session import Session

        self.script = check_script(script)
        self.args = list(args)
        self.model = model
        self.backend = backend
        self.store = store if store is not None else TraceStore()
        self.trace_path = trace_path_for(script, record)
        check_output(self.trace_path, self.script, force)
        self.echo = echo
        self.flush_interval = flush_interval
        self.monitor_from_start = monitor_from_start
        self.session = Session(store=self.store, model=model, backend=backend, monitoring=monitoring,
                               url=url, model_name=model_name)
        self.result: RunResult | None = None
        self.write_error: str | None = None  # why the trace could not be written, once it could not
        self._write_failed = False  # ...and whether the file failed (not only some events)
        self.interrupted = False  # someone asked the run to stop (Ctrl-C, the app's quit, the trace failing)
        self.on_interrupt: Callable[[], None] | None = None
        self.on_trace_error: Callable[[str], None] = _default_trace_error(sys.stderr)
        self._written = 0
        self._freezer = Freezer()
        self._in_script = False
        self._script_ended = False
        self._main_ident: int | None = None  # the script's thread, when a KeyboardInterrupt can reach it
        self._escalate = False
        self._sigints = 0
        self._timer: threading.Timer | None = None
        self._ilock = threading.Lock()
        self._old_sigint = None
        self._forked = False
        self._streams: tuple[ScriptOutput, ...] = ()

    def _freeze_written(self, n: int) -> None:
        """Keep written events out of the collector's sight (see gc_policy): the
        store keeps every event to the end, and with a few hundred thousand of
        them each full collection stopped the script for over 100 ms.  (What
        else is alive at that moment is frozen too; a cyclic temporary among it
        is never collected, a small price at this rate.)"""
        self._written += n
        self._freezer.grown(self._written)

    # -- stopping ----------------------------------------------------------------------
    def cancel(self) -> None:
        """The engines stop at their next token (Cancelled); the script's own code is not interrupted."""
        self.session.cancel_event.set()

    def interrupt(self, grace: float = INTERRUPT_AFTER_S) -> None:
        """Stop the run, from any thread: cancel it, and if the script still runs
        ``grace`` seconds later, raise KeyboardInterrupt in its thread (even in a
        blocking call: it gets a SIGINT)."""
        if not self._script_ended:  # a Ctrl-C while the trace is being finished changes nothing
            self.interrupted = True
        self.cancel()
        with self._ilock:
            if self._timer is None:
                self._timer = threading.Timer(grace, self._interrupt_now)
                self._timer.daemon = True
                self._timer.start()

    def _interrupt_now(self) -> None:
        if self._in_script and self._main_ident is not None:
            self._escalate = True
            try:
                signal.pthread_kill(self._main_ident, signal.SIGINT)
            except (OSError, ValueError):
                pass

    def _on_sigint(self, signum, frame) -> None:
        """SIGINT while the script runs: the first cancels (and interrupts a second
        later), another raises KeyboardInterrupt in the script at once.  Outside
        the script (the trace being finished) it waits, unless pressed thrice."""
        if self._escalate:
            self._escalate = False
            if self._in_script:
                raise KeyboardInterrupt
            return
        self._sigints += 1
        if self._sigints == 1:
            if self.on_interrupt is not None:
                try:
                    self.on_interrupt()
                except (OSError, ValueError, RuntimeError):
                    pass
            self.interrupt()
        elif self._in_script or self._sigints >= 3:
            raise KeyboardInterrupt

    def _install_sigint(self) -> bool:
        """Our SIGINT handler while the run lasts; False where signals cannot reach
        this thread (not the main thread): there, stopping only cancels."""
        if threading.current_thread() is not threading.main_thread():
            return False
        try:
            old = signal.signal(signal.SIGINT, self._on_sigint)
        except (ValueError, OSError):
            return False
        self._old_sigint = signal.default_int_handler if old is None else old
        self._main_ident = threading.get_ident()
        return True

    # -- the trace ---------------------------------------------------------------------
    def _watch_writer(self, writer: TraceWriter, stop: threading.Event) -> None:
        """Say at once when the trace loses events; stop the run when the file cannot be written."""
        while not stop.wait(WATCH_S):
            if writer.error is not None and self._trace_problem(writer, during_run=True):
                return

    def _trace_problem(self, writer: TraceWriter, *, during_run: bool, error: BaseException | None = None) -> bool:
        """Note the writer's error (or ``error``); True when the file cannot be written any more.

        The first problem is kept (``write_error``), unless a failure of the file
        comes later: that one says more.  During the run it is said at once
        (``on_trace_error``), and a failed file stops the run."""
        failed = error is not None or getattr(writer, "failed", True)  # an older writer stopped at its first error
        if error is None:
            errors = getattr(writer, "errors", None) or [writer.error]
            error = errors[-1] if failed else errors[0]
        with self._ilock:
            if self.write_error is not None and (self._write_failed or not failed):
                return self._write_failed
            self.write_error = describe_write_error(error, self.trace_path)
            self._write_failed = failed
        if during_run:
            note = " (stopping the script)" if failed else " (events are missing from it; the run goes on)"
            try:
                self.on_trace_error(self.write_error + note)
            except Exception:
                pass
            if failed:
                self.interrupt()
        return failed

    # -- labels ------------------------------------------------------------------------
    def _model_label(self) -> str:
        if self.backend == "remote":  # the server's model; the dialect is in the run's "model:" message
            return f"{self.session.model_name or '(first served)'} @ {self.session.url}"
        if self.model:
            return str(self.model)
        from engines.default_model import NAME

        return f"{NAME} (embedded default)"

    def _backend_label(self) -> str:
        if self.backend:
            return self.backend
        return "transformers" if self.model and Path(self.model).is_dir() else "llamacpp"

    # -- the run -----------------------------------------------------------------------
    def run(self) -> RunResult:
        global _ACTIVE
        from engines import session as sessions
        from tracing.runs import RunsDirError

        store = self.store
        real_out, real_err = sys.stdout, sys.stderr
        try:
            writer = TraceWriter(self.trace_path, store, interval=self.flush_interval,
                                 on_written=self._freeze_written)
        except RunsDirError as e:
            raise RunnerError(clean_text(str(e)), exit_codes.ERROR) from None
        except OSError as e:
            raise RunnerError(f"cannot create the trace file {clean_text(str(self.trace_path))}: "
                              f"{e.strerror or e}", exit_codes.ERROR) from None
        try:
            cwd = os.getcwd()
        except OSError:
            cwd = ""
        argv = [str(self.script), *self.args]
        store.append(RunStart(script=clean_text(str(self.script)), argv=list(map(clean_text, argv)),
                              model=clean_text(self._model_label()), backend=self._backend_label(),
                              wall_time=time.time(), info={"cwd": clean_text(cwd), "pid": str(os.getpid())}))
        if self.monitor_from_start:  # resources from the first moment (model loading), not the first token
            self.session.start_monitoring()
        stop_watch = threading.Event()
        threading.Thread(target=self._watch_writer, args=(writer, stop_watch), name="trace-watch",
                         daemon=True).start()
        handling_sigint = self._install_sigint()
        old_argv, old_path = sys.argv, list(sys.path)
        sys.argv = argv
        sys.path.insert(0, str(self.script.resolve().parent))
        self._streams = (ScriptOutput(real_out, store, "stdout", echo=self.echo),
                         ScriptOutput(real_err, store, "stderr", echo=self.echo))
        sys.stdout, sys.stderr = self._streams
        sessions.activate(self.session)
        _ACTIVE = self
        result = RunResult("interrupted", "interrupted", exit_code=exit_codes.INTERRUPTED)
        try:
            result = self._call_script()
        finally:
            if self._forked:
                self._end_forked_child(result)  # never returns
            sys.stdout, sys.stderr = real_out, real_err
            _ACTIVE = None
            for stream in self._streams:
                stream._emit_rest()
                stream.end_echo_line()
            sys.argv = old_argv
            sys.path[:] = old_path
            sessions.activate(None)
            self.session.close()
            stop_watch.set()
            self.result = result = self._finish(writer, result)
            with self._ilock:
                if self._timer is not None:
                    self._timer.cancel()
            if handling_sigint:
                signal.signal(signal.SIGINT, self._old_sigint)
            self._main_ident = None
        return result

    def _call_script(self) -> RunResult:
        from engines.errors import Cancelled

        from engines.guidance_compat import install as serve_guidance

        # ``import guidance`` in the script gets our API when the real one is not installed here
        # (this process only, until the script ends); the trace says so when the script imports it.
        unserve = serve_guidance(lambda text: self.store.append(Message(level="info", text=text)))
        try:
            try:
                self._in_script = True
                runpy.run_path(str(self.script), run_name="__main__")
            finally:
                self._in_script = False  # a KeyboardInterrupt from here on is caught below
                self._script_ended = True
                unserve()
        except SystemExit as e:
            code = e.code
            if code is None or code == 0:
                return RunResult("done")
            if isinstance(code, int):
                return RunResult("error", f"the script exited with status {int(code)}", exit_code=int(code))
            return RunResult("error", clean_text(f"the script exited: {code}"), exit_code=exit_codes.ERROR)
        except (KeyboardInterrupt, Cancelled):
            return RunResult("interrupted", "interrupted", exit_code=exit_codes.INTERRUPTED)
        except BaseException as e:  # the script's own failure: record it, never raise
            return RunResult("error", describe(e), user_frames(e), exit_code=exit_codes.for_exception(e))
        return RunResult("done")

    def _finish(self, writer: TraceWriter, result: RunResult) -> RunResult:
        """The RunEnd, into the store and the file; the result says whether the trace holds it all."""
        store = self.store
        if writer.error is not None:
            self._trace_problem(writer, during_run=False)
        result = self._honest(result)
        counts = store.token_counts()
        store.append(RunEnd(status=result.status, error=result.error, traceback=result.traceback, **counts))
        try:
            writer.close()
        except OSError as e:  # an older writer raised here
            self._trace_problem(writer, during_run=False, error=e)
            fh = getattr(writer, "_fh", None)
            if fh is not None:  # closed now, so not again (with an error) when it is collected
                try:
                    fh.close()
                except OSError:
                    pass
        if writer.error is not None:
            self._trace_problem(writer, during_run=False)
        final = self._honest(result)
        if final is not result:  # the end never reached the file: the store says so too (a transcript reads it)
            store.append(RunEnd(status=final.status, error=final.error, traceback=final.traceback, **counts))
        return final

    def _honest(self, result: RunResult) -> RunResult:
        """Never "done" over a trace that lost events, nor after the run was asked to stop."""
        if self.write_error is not None and not result.error.startswith(NOT_WRITTEN):
            return RunResult("error", NOT_WRITTEN + self.write_error, result.traceback, exit_code=exit_codes.ERROR)
        if self.interrupted and result.status == "done":
            return RunResult("interrupted", "interrupted", exit_code=exit_codes.INTERRUPTED)
        return result

    # -- a forked child ----------------------------------------------------------------
    def _after_fork_in_child(self) -> None:
        """In a child the script forked (only its thread survives): record
        nothing, take no lock a thread of the parent may have held, and write
        output straight to the real stdout and stderr."""
        self._forked = True
        self.on_interrupt = None
        self.on_trace_error = lambda message: None
        self._ilock = threading.Lock()
        self._timer = None
        self._main_ident = threading.get_ident()
        for obj, name, make in ((self.session, "lock", threading.RLock),
                                (self.session, "_listener_lock", threading.Lock),
                                (self.store, "_lock", threading.Lock), (self.store, "_cp_lock", threading.Lock)):
            if hasattr(obj, name):
                setattr(obj, name, make())
        for s in self._streams:
            s._after_fork_in_child()

    def _end_forked_child(self, result: RunResult) -> None:
        """The child's copy of the script ended: say how (as Python would) and exit."""
        err = sys.stderr
        try:
            if result.status == "error" and result.traceback:
                err.write(result.traceback.rstrip("\n") + "\n")
            if result.status == "error" and not result.error.startswith("the script exited"):
                err.write(result.error + "\n")
            for s in (sys.stdout, sys.stderr):
                s.flush()
        except Exception:
            pass
        os._exit(result.exit_code if 0 <= result.exit_code < 256 else exit_codes.ERROR)
