"""A guidance script in the user's own interpreter, followed through the bridge's pipe.

:class:`BridgeRun` is a drop-in for ``ScriptProcess`` in the app and for ``ScriptRun`` in the
headless runner (``record``, the plain transcript): ``start()``, ``run()`` (blocks; call it in the
main thread headless, in a worker thread under the app), ``cancel()`` and ``kill()`` from any
thread, ``store``, ``trace_path``, ``pid``, ``take_output()``, ``take_notices()``, ``result``,
``write_error``.

It starts ``PY guidance_tui/bridge/_inject.py SCRIPT ARGS...`` with the write end of a pipe (its
number in ``GUIDANCE_TUI_BRIDGE_FD``), decodes the JSON lines that come back, converts them
(:mod:`~guidance_tui.bridge.convert`), appends the events to ``store`` and writes the trace with
a :class:`~tracing.TraceWriter` itself.  The app follows the store (this object has no ``poll``:
the live feed treats it as an in-process producer); ``attach`` and ``replay`` follow the file.

Events carry the child's own times: both processes read the same monotonic clock.

``cancel()`` interrupts the script as Ctrl-C does: a SIGINT to the child (guidance has no
cooperative cancel), then a SIGKILL if it has not ended ``CANCEL_GRACE_S`` later.  The run ends
``interrupted`` either way, and the trace keeps everything that came before.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections import deque
from pathlib import Path
from typing import Sequence

from tracing import Message, RunEnd, RunStart, TraceStore, TraceWriter

from guidance_tui import exit_codes
from guidance_tui.bridge.convert import Converter

INJECT = Path(__file__).resolve().parent / "_inject.py"
FD_ENV = "GUIDANCE_TUI_BRIDGE_FD"
CAPTURE_ENV = "GUIDANCE_TUI_BRIDGE_CAPTURE"
ECHO_ENV = "GUIDANCE_TUI_BRIDGE_ECHO"
CANCEL_GRACE_S = 10.0  # after the SIGINT, how long the script may take before it is killed
WAIT_S = 0.05  # the run checks the child and a cancel this often
PROBE_TIMEOUT_S = 60.0
FLUSH_S = 0.05  # the trace writer's interval: attach and replay see the run this late at most

# Asks PY what it is, without importing guidance (quick): one JSON line.
_PROBE = ("import json, sys\n"
          "try:\n"
          "    from importlib.metadata import version\n"
          "    g = version('guidance')\n"
          "except Exception:\n"
          "    g = None\n"
          "print(json.dumps({'python': sys.version.split()[0], 'executable': sys.executable, 'guidance': g}))\n")


class BridgeRun:
    """One run of a guidance script in ``python`` (the user's interpreter, with guidance 0.3.x).

    ``echo``: the script's prints also go to the real stdout/stderr (``record -q``; otherwise they
    are Message events only).  ``pipe_output``: the child's own stdout/stderr (C libraries such as
    llama.cpp) come back through :meth:`take_output` (the app); otherwise they are inherited.
    ``keep_stdin``: the script reads the real stdin (headless); otherwise it reads /dev/null.
    """

    def __init__(self, script: str | os.PathLike, args: Sequence[str] = (), *, python: str,
                 record: str | os.PathLike | None = None, store: TraceStore | None = None,
                 echo: bool = False, pipe_output: bool = True, keep_stdin: bool = False,
                 force: bool = False) -> None:
        from guidance_tui.run.runner import check_output, check_script, trace_path_for

        self.script = check_script(script)
        self.args = list(args)
        self.python = str(python)
        self.trace_path = trace_path_for(script, record)
        self.in_runs_dir = not record  # a summary for the run browser goes next to runs-dir traces only
        check_output(self.trace_path, self.script, force)
        self.store = store if store is not None else TraceStore()
        self.echo = echo
        self.pipe_output = pipe_output
        self.keep_stdin = keep_stdin
        self.output: deque[str] = deque(maxlen=500)
        self.result = None  # a runner.RunResult once run() returned
        self.write_error: str | None = None
        self.probe: dict = {}
        self.proc: subprocess.Popen | None = None
        self.converter = Converter()
        self._new_output: list[str] = []
        self._notices: list[str] = []
        self._out_lock = threading.Lock()
        self._append_lock = threading.Lock()
        self._cancel = threading.Event()
        self._writer: TraceWriter | None = None
        self._readers: list[threading.Thread] = []
        self._offset_us = 0  # store time minus the monotonic clock, in µs
        self._last_t = 0
        self._bad_lines = 0
        self._started = False
        self._registration = None  # this process's entry in the live-run registry (attach, runs)

    # -- control ---------------------------------------------------------------------------------
    def cancel(self) -> None:
        """Interrupt the script (from any thread): SIGINT now, SIGKILL after CANCEL_GRACE_S."""
        self._cancel.set()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self._signal(signal.SIGKILL)

    @property
    def pid(self) -> int | None:
        """The child's process id while it runs."""
        return self.proc.pid if self.proc is not None and self.proc.returncode is None else None

    def take_output(self) -> list[str]:
        """The child's own output lines (not the script's prints) since the last call."""
        with self._out_lock:
            lines, self._new_output = self._new_output, []
        return lines

    def take_notices(self) -> list[str]:
        """One-line notices for the app (the trace cannot be written...) since the last call."""
        with self._out_lock:
            notices, self._notices = self._notices, []
        return notices

    # -- starting ----------------------------------------------------------------------------------
    def command(self) -> list[str]:
        return [self.python, str(INJECT), str(self.script), *self.args]

    def check_python(self) -> dict:
        """What ``python`` is (version, guidance's version); StartError when it cannot run the bridge."""
        from guidance_tui.run.script_process import StartError

        try:
            done = subprocess.run([self.python, "-c", _PROBE], stdin=subprocess.DEVNULL, capture_output=True,
                                  timeout=PROBE_TIMEOUT_S)
        except FileNotFoundError:
            raise StartError(f"cannot start {self.python}: no such interpreter") from None
        except PermissionError:
            raise StartError(f"cannot start {self.python}: permission denied") from None
        except OSError as e:
            raise StartError(f"cannot start {self.python}: {e.strerror or e}") from None
        except subprocess.TimeoutExpired:
            raise StartError(f"{self.python} did not answer within {PROBE_TIMEOUT_S:.0f} s") from None
        try:
            info = json.loads(done.stdout.decode("utf-8", "replace").strip().splitlines()[-1])
        except (ValueError, IndexError):
            said = done.stderr.decode("utf-8", "replace").strip().splitlines()
            raise StartError(f"{self.python} is not a Python 3 interpreter guidance-tui can use"
                             + (f": {said[-1]}" if said else "")) from None
        if not info.get("guidance"):
            raise StartError(f"{self.python} has no guidance installed (pip install guidance==0.3.1 there, "
                             "or run the script with our own engines: drop --python)")
        return info

    def start(self) -> None:
        """Check the interpreter, open the trace, start the child (run() does, when not done
        before).  StartError (one line) when it cannot; nothing is written then."""
        from guidance_tui.run.runner import describe_write_error
        from guidance_tui.run.script_process import StartError

        if self._started:
            return
        self.probe = self.check_python()
        try:
            self.trace_path.unlink()  # a reader must never see a previous run's bytes
        except FileNotFoundError:
            pass
        except OSError as e:
            raise StartError(describe_write_error(e, self.trace_path)) from None
        try:
            self._writer = TraceWriter(self.trace_path, self.store, interval=FLUSH_S)
        except OSError as e:
            raise StartError(describe_write_error(e, self.trace_path)) from None
        r, w = os.pipe()
        env = dict(os.environ, PYTHONUNBUFFERED="1", **{FD_ENV: str(w), CAPTURE_ENV: "1",
                                                        ECHO_ENV: "1" if self.echo else "0"})
        out = subprocess.PIPE if self.pipe_output else None
        try:
            self.proc = subprocess.Popen(
                self.command(), stdin=None if self.keep_stdin else subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT if self.pipe_output else None, env=env, pass_fds=(w,),
                start_new_session=True)  # Ctrl-C reaches us only: cancel() passes it on, once
        except OSError as e:
            os.close(r)
            os.close(w)
            self._writer.close()
            raise StartError(f"cannot start {self.python}: {e.strerror or e}") from None
        finally:
            self._started = True
        os.close(w)  # the child holds the only write end: end of file when it exits
        self._start_event()
        self._register()
        self._readers = [threading.Thread(target=self._read_bridge, args=(r,), name="bridge-lines", daemon=True)]
        if self.pipe_output:
            self._readers.append(threading.Thread(target=self._read_output, name="bridge-output", daemon=True))
        for t in self._readers:
            t.start()

    def _register(self) -> None:
        """This process writes the trace: announce it in the live-run registry (best effort)."""
        try:
            from tracing import runs

            self._registration = runs.register(self.trace_path, script=str(self.script), backend="guidance")
        except Exception:  # noqa: BLE001  (no registry: the run goes on, attach just cannot find it)
            self._registration = None

    def _unregister(self) -> None:
        registration, self._registration = self._registration, None
        try:
            from tracing import runs

            if registration is not None:
                registration.close()
            if self.write_error is None and self.in_runs_dir:
                runs.write_summary(self.trace_path, self.store.events())
        except Exception:  # noqa: BLE001
            pass

    def _start_event(self) -> None:
        info = {"python": f"{self.probe.get('python', '?')} ({self.probe.get('executable') or self.python})",
                "guidance": str(self.probe.get("guidance") or "?"), "pid": str(self.proc.pid),
                "cwd": os.getcwd(), "bridge": "guidance"}
        ev = RunStart(script=str(self.script), argv=[str(self.script), *self.args], backend="guidance",
                      info=info, wall_time=time.time())
        before = time.monotonic_ns() // 1000
        self.store.append(ev)
        self._offset_us = ev.t_us - before
        self._last_t = ev.t_us

    # -- the run -----------------------------------------------------------------------------------
    def run(self):
        """Run the script to its end; the RunResult (the script's failures are results, not raised)."""
        from guidance_tui.run.runner import RunResult
        from guidance_tui.run.script_process import StartError

        try:
            self.start()
        except StartError as e:
            self.store.append(RunEnd(status="error", error=str(e)))
            self.result = RunResult("error", str(e), exit_code=exit_codes.ERROR)
            return self.result
        try:
            self._wait()
        except KeyboardInterrupt:  # a second Ctrl-C under the headless runner: stop at once
            self._cancel.set()
            self.kill()
        while True:
            try:
                code = self.proc.wait()
                for t in self._readers:
                    t.join(timeout=5)  # the last lines: the pipe ends when the child does
                break
            except KeyboardInterrupt:
                self._cancel.set()
                self.kill()
        self.result = self._finish(code)
        return self.result

    def _wait(self) -> None:
        sent_at = None
        while self.proc.poll() is None:
            if self._cancel.is_set():
                now = time.monotonic()
                if sent_at is None:
                    sent_at = now
                    self._signal(signal.SIGINT)
                elif now - sent_at > CANCEL_GRACE_S:
                    self._signal(signal.SIGKILL)
            time.sleep(WAIT_S)

    def _signal(self, sig: int) -> None:
        try:  # the child leads its own process group: its subprocesses get it too
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            try:
                self.proc.send_signal(sig)
            except (ProcessLookupError, OSError):
                pass

    def _finish(self, code: int):
        from guidance_tui.run.runner import RunResult, describe_write_error

        conv = self.converter
        end = conv.end
        if end is not None:
            status = str(end.get("status") or "error")
            error = str(end.get("error") or "")
            frames = str(end.get("traceback") or "")
        else:  # the child died, or never got to the script
            frames = ""
            said = [ln for ln in self.output if ln.strip()]
            if code < 0:
                name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
                error = f"the script's process was killed by {name}"
                status = "interrupted" if self._cancel.is_set() else "error"
            else:
                error = said[-1] if said else f"the script's process exited with status {code}"
                status = "interrupted" if code == exit_codes.INTERRUPTED else "error"
        if status not in ("done", "error", "interrupted"):
            status = "error"
        if status == "interrupted" and not error:
            error = "interrupted"
        if code < 0:
            code = exit_codes.INTERRUPTED if status == "interrupted" else exit_codes.ERROR
        elif code == 0 and status != "done":
            code = exit_codes.INTERRUPTED if status == "interrupted" else exit_codes.ERROR
        if self._bad_lines:
            self._append(Message(level="warning", text=f"guidance-tui bridge: {self._bad_lines} unreadable "
                                                       "lines from the script's process were dropped"))
        for ev in conv.finish(status):
            self._append(ev)
        self._append(RunEnd(status=status, error=error, traceback=frames, **conv.token_counts()))
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
            if writer.error is not None:
                self.write_error = describe_write_error(writer.error, self.trace_path)
                with self._out_lock:
                    self._notices.append(self.write_error)
        self._unregister()
        return RunResult(status, error, frames, exit_code=code)

    # -- the pipes ---------------------------------------------------------------------------------
    def _append(self, ev, ts: int | None = None) -> None:
        """Append with the child's time ``ts`` (µs on the monotonic clock), else now; never earlier
        than the event before."""
        with self._append_lock:
            t = (ts if isinstance(ts, int) else time.monotonic_ns() // 1000) + self._offset_us
            t = max(t, self._last_t)
            self._last_t = t
            ev.t_us = t
            self.store.append(ev, stamp=False)

    def _read_bridge(self, fd: int) -> None:
        conv = self.converter
        with open(fd, "rb", buffering=1 << 16) as pipe:
            for raw in pipe:  # read to the end whatever happens: a full pipe would stop the script
                try:
                    line = json.loads(raw)
                    if not isinstance(line, dict):
                        raise ValueError("not an object")
                    ts = line.get("ts")
                    for ev in conv.feed(line):
                        self._append(ev, ts)
                except Exception:  # noqa: BLE001  (a damaged line, or a bug of ours: counted, said at the end)
                    self._bad_lines += 1

    def _read_output(self) -> None:
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self._out_lock:
                self.output.append(line)
                self._new_output.append(line)
        self.proc.stdout.close()
