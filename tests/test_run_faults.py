"""Bad input and faults around running a script (no model needed): non-UTF-8 text,
an output that would overwrite the input, a full disk, a closed stdout, stdio and
signals that behave as in plain Python under every command, Ctrl-C, exit statuses in
the app, fork, TERM=dumb.

Scripts that need tokens append them to the session's store themselves (see
``FAKE_TOKENS``), so none of these tests loads the model.
"""

from __future__ import annotations

import asyncio
import errno
import io
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from _app_support import FakeRun, small_events

from guidance_tui import exit_codes
from guidance_tui.cli import app_commands as cmd_app
from guidance_tui.cli import main
from tracing import Message, RunEnd, RunStart, Token, read_trace, write_trace

ROOT = Path(__file__).resolve().parent.parent

FAKE_TOKENS = """
from engines.session import current
from tracing import Token, TokenKind
_store = current().store
_pos = [0]
def token(text):
    data = text.encode()
    _store.append(Token(id=len(data), bytes=data, pos=_pos[0], kind=TokenKind.GENERATED, prob=0.9))
    _pos[0] += len(data)
"""


def write(path: Path, body: str) -> Path:
    path.write_text(textwrap.dedent(body))
    return path


def cli(*argv, cwd, timeout: float = 60, env=None, **kw) -> subprocess.CompletedProcess:
    """``guidance-tui ARGV`` in a subprocess; bytes in and out (arguments may be non-UTF-8)."""
    return subprocess.run([sys.executable, "-m", "guidance_tui", *map(os.fsencode, argv)], cwd=cwd,
                          capture_output=True, timeout=timeout, env=env, **kw)


def guidance_lines(stderr: bytes) -> list[str]:
    return [ln for ln in stderr.decode("utf-8", "replace").splitlines() if ln.startswith("guidance-tui:")]


def messages(path: Path) -> list[str]:
    return [e.text for e in read_trace(path).events if isinstance(e, Message)]


# -- 1. non-UTF-8 text ---------------------------------------------------------------
@pytest.mark.parametrize("command", [["record"], ["record", "-q"], ["run"], ["run", "--plain"]])
def test_a_lone_surrogate_in_a_print_is_recorded_escaped(tmp_path, command):
    s = write(tmp_path / "s.py", 'print("bad \\udcff")\n')
    out = tmp_path / "s.gtt"
    opt = "-o" if command[0] == "record" else "--record"
    proc = cli(*command, s, opt, out, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert b"codec" not in proc.stderr and b"Traceback" not in proc.stderr
    events = read_trace(out).events
    assert isinstance(events[0], RunStart) and isinstance(events[-1], RunEnd) and events[-1].status == "done"
    assert messages(out) == ["bad <0xFF>"]
    info = cli("info", out, cwd=tmp_path)
    assert info.returncode == 0 and b"status:     done" in info.stdout


def test_a_latin1_script_path_and_a_non_utf8_argument(tmp_path):
    d = os.fsencode(tmp_path)
    name = d + b"/caf\xe9.py"
    with open(name, "wb") as f:
        f.write(b"import sys\nprint('args', sys.argv[1])\nprint(repr(sys.argv[1].encode('utf-8', 'surrogateescape')))\n")
    out = tmp_path / "t.gtt"
    for command in (["record", "-o"], ["run", "--plain", "--record"]):
        proc = subprocess.run([sys.executable, "-m", "guidance_tui", command[0], name, *map(os.fsencode, command[1:]),
                               os.fsencode(out), b"--", b"\xff\xfe"], cwd=tmp_path, capture_output=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        start, end = read_trace(out).events[0], read_trace(out).events[-1]
        assert start.script.endswith("caf<0xE9>.py") and start.argv[1:] == ["<0xFF><0xFE>"]
        assert end.status == "done"
        assert messages(out) == ["args <0xFF><0xFE>", "b'\\xff\\xfe'"]  # the script got the real bytes


def test_a_script_process_records_non_utf8_text(tmp_path):
    from guidance_tui.run.script_process import ScriptProcess

    s = write(tmp_path / "s.py", 'import sys\nprint("bad \\udcff")\nprint("err \\udc80", file=sys.stderr)\n')
    run = ScriptProcess(s, ["\udcff"], record=tmp_path / "t.gtt")
    result = run.run()
    assert (result.status, result.exit_code) == ("done", 0), (result, list(run.output))
    assert [e.text for e in run.store.since(-1) if isinstance(e, Message)] == ["bad <0xFF>", "err <0x80>"]
    assert run.store.run_start().argv[1:] == ["<0xFF>"]


def test_the_transcript_prints_lone_surrogates_to_a_strict_utf8_stream():
    from tracing import TraceStore

    from guidance_tui.run.plain import PlainTranscript

    raw = io.BytesIO()
    out = io.TextIOWrapper(raw, encoding="utf-8", errors="strict")
    store = TraceStore([RunStart(script="caf\udce9.py"), Message(level="stdout", text="bad \udcff"),
                        RunEnd(status="error", error="ValueError: \ud800")])
    t = PlainTranscript(store, file=out, color=False)
    t.finish(trace_path="t\udcff.gtt")
    text = raw.getvalue().decode("utf-8")
    assert "caf<0xE9>.py" in text and "│ bad <0xFF>" in text and "✖ error" in text and "t<0xFF>.gtt" in text


# -- 2. the output must not overwrite the input --------------------------------------
@pytest.mark.parametrize("command", [["record", "-o"], ["run", "--plain", "--record"], ["run", "--record"]])
def test_the_output_cannot_be_the_script(tmp_path, command):
    s = write(tmp_path / "v.py", 'print("hello")\n')
    before = s.read_bytes()
    os.link(s, tmp_path / "alias.py")
    for target in ("v.py", str(s), "alias.py", "./v.py"):
        proc = cli(command[0], "v.py", *command[1:], target, cwd=tmp_path)
        assert proc.returncode == exit_codes.USAGE, proc.stderr
        lines = proc.stderr.decode().strip().splitlines()
        assert len(lines) == 1 and "is the script" in lines[0], lines
        assert s.read_bytes() == before
        proc = cli(command[0], "v.py", *command[1:], target, "--force", cwd=tmp_path)
        assert proc.returncode == exit_codes.USAGE and s.read_bytes() == before  # not even with --force


@pytest.mark.parametrize("command", [["record", "-o"], ["run", "--plain", "--record"], ["demo", "arithmetic", "--record"]])
def test_a_file_that_is_not_a_trace_is_not_overwritten_without_force(tmp_path, command):
    s = write(tmp_path / "v.py", 'print("hello")\n')
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    argv = [command[0], *(["v.py"] if command[0] != "demo" else command[1:2]), *command[-1:]]
    proc = cli(*argv, notes, cwd=tmp_path)
    assert proc.returncode == exit_codes.USAGE, proc.stderr
    lines = proc.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "not a guidance-tui trace" in lines[0] and "--force" in lines[0], lines
    assert notes.read_text() == "my notes\n"
    if command[0] == "demo":
        return
    proc = cli(*argv, notes, "--force", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert messages(notes) == ["hello"]
    proc = cli(*argv, notes, cwd=tmp_path)  # a trace is overwritten without asking
    assert proc.returncode == 0, proc.stderr
    empty = tmp_path / "empty.gtt"
    empty.write_bytes(b"")
    assert cli(*argv, empty, cwd=tmp_path).returncode == 0  # nothing to lose


def test_a_script_process_refuses_to_overwrite_its_script(tmp_path):
    from guidance_tui.run.runner import RunnerError
    from guidance_tui.run.script_process import ScriptProcess

    s = write(tmp_path / "v.py", 'print("hello")\n')
    with pytest.raises(RunnerError, match="is the script"):
        ScriptProcess(s, record=s)
    assert s.read_text() == 'print("hello")\n'


# -- 3. a full disk ------------------------------------------------------------------
@pytest.fixture()
def small_fs(tmp_path):
    """A 200 kB filesystem (a tmpfs; needs root: skipped where mount fails)."""
    d = tmp_path / "small"
    d.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(d)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs: {proc.stderr.decode().strip()}")
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], capture_output=True)


FLOOD = """
import os, sys, time
for i in range(4000):
    print(os.urandom(400).hex())
    time.sleep(0.004)
open(sys.argv[1], "w").close()  # the script ran to its end
"""


@pytest.mark.parametrize("command", [["record"], ["record", "-q"], ["run", "--plain"]])
def test_a_full_disk_is_reported_at_once_and_stops_the_run(tmp_path, small_fs, command):
    s = write(tmp_path / "flood.py", FLOOD)
    out = small_fs / "t.gtt"
    opt = "-o" if command[0] == "record" else "--record"
    t0 = time.monotonic()
    proc = cli(*command, s, opt, out, "--", tmp_path / "finished", cwd=tmp_path, timeout=120)
    took = time.monotonic() - t0
    err = proc.stderr.decode()
    assert proc.returncode == exit_codes.ERROR, err
    assert not (tmp_path / "finished").exists(), "the script was not stopped"
    assert took < 12, took  # the whole flood takes over 16 s
    lines = guidance_lines(proc.stderr)
    assert lines[0] == f"guidance-tui: cannot write {out}: No space left on device (stopping the script)", err
    assert lines[-1] == f"guidance-tui: trace not fully written: cannot write {out}: No space left on device", err
    assert "Traceback" not in err and "Errno" not in err
    assert b"done" not in proc.stdout
    if command != ["record", "-q"]:
        assert b"\xe2\x9c\x96 error" in proc.stdout  # the summary: ✖ error
    tf = read_trace(out)  # what was written is readable
    assert isinstance(tf.events[0], RunStart)


class FullDiskWriter:
    """Stands in for the TraceWriter: the file fills up after 20 events (errors as an OSError, like
    an older writer) or fails to record some (a non-fatal error: the writer goes on)."""

    fatal = True

    def __init__(self, path, store, *, interval=0.25, on_written=None, **_):
        self.path, self._store = Path(path), store
        self.error = None
        self.errors = []
        self.failed = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self):
        while not self._stop.wait(0.02):
            self._check()

    def _check(self):
        if self._store.last_seq > 20 and self.error is None:
            if self.fatal:
                self.error = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path))
                self.failed = True
            else:
                self.error = RuntimeError(f"cannot record events 20-21 in {self.path}: ValueError: x")
            self.errors.append(self.error)

    def close(self):
        self._stop.set()
        self._thread.join()
        self._check()


def test_a_failing_writer_is_reported_at_once_with_its_path(tmp_path, monkeypatch):
    """The same with a fake writer that fails like a full disk (no root needed)."""
    from guidance_tui.run import runner

    monkeypatch.setattr(runner, "TraceWriter", FullDiskWriter)
    s = write(tmp_path / "flood.py", FLOOD)
    reported = []
    run = runner.ScriptRun(str(s), [str(tmp_path / "finished")], record=tmp_path / "t.gtt", monitoring=False)
    run.on_trace_error = lambda msg: reported.append((time.monotonic(), msg))
    t0 = time.monotonic()
    result = run.run()
    assert not (tmp_path / "finished").exists()
    want = f"cannot write {tmp_path / 't.gtt'}: No space left on device"
    assert [msg for _, msg in reported] == [f"{want} (stopping the script)"]
    assert reported[0][0] - t0 < 3
    assert (result.status, result.exit_code) == ("error", exit_codes.ERROR)
    assert result.error == f"trace not fully written: {want}"
    assert run.store.run_end().status == "error"


def test_events_the_writer_could_not_record_are_said_and_the_run_goes_on(tmp_path, monkeypatch):
    from guidance_tui.run import runner

    class LosesABatch(FullDiskWriter):
        fatal = False

    monkeypatch.setattr(runner, "TraceWriter", LosesABatch)
    s = write(tmp_path / "p.py", "for i in range(40):\n    print(i)\n")
    reported = []
    run = runner.ScriptRun(str(s), record=tmp_path / "t.gtt", monitoring=False)
    run.on_trace_error = reported.append
    result = run.run()
    want = f"cannot record events 20-21 in {tmp_path / 't.gtt'}: ValueError: x"
    assert reported in ([], [f"{want} (events are missing from it; the run goes on)"])  # the script may end first
    assert (result.status, result.error) == ("error", f"trace not fully written: {want}")
    assert sum(isinstance(e, Message) for e in run.store.since(-1)) == 40  # the script ran to its end


def test_a_transcript_on_a_full_disk_stops_with_a_warning_and_the_trace_is_whole(tmp_path, small_fs):
    s = write(tmp_path / "many.py", 'for i in range(20000):\n    print("line", i)\n')
    out = tmp_path / "t.gtt"
    with open(small_fs / "transcript.txt", "w") as stdout:
        proc = subprocess.run([sys.executable, "-m", "guidance_tui", "record", str(s), "-o", str(out)], cwd=tmp_path,
                              stdout=stdout, stderr=subprocess.PIPE, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.decode().strip().splitlines() == [
        "guidance-tui: warning: the transcript stopped: No space left on device (the trace has everything)"]
    assert len(messages(out)) == 20000 and read_trace(out).events[-1].status == "done"


def test_a_full_disk_under_the_app_is_noticed_and_the_run_is_an_error(tmp_path, small_fs):
    from guidance_tui.run.script_process import ScriptProcess
    from guidance_tui.widgets.error_pane import error_title

    s = write(tmp_path / "flood.py", FLOOD)
    run = ScriptProcess(s, [str(tmp_path / "finished")], record=small_fs / "t.gtt")
    result = run.run()
    assert not (tmp_path / "finished").exists()
    assert (result.status, result.exit_code) == ("error", exit_codes.ERROR)
    want = f"cannot write {small_fs / 't.gtt'}: No space left on device"
    assert result.error == f"trace not fully written: {want}"
    assert run.take_notices() == [f"{want} (stopping the script)", f"trace not fully written: {want}"]
    assert error_title(run.store.run_end()) == "the trace could not be written"


def test_the_app_notifies_a_full_disk_at_once_and_names_it_in_the_error_pane(tmp_path, small_fs):
    from _app_support import sync

    from guidance_tui.app import InspectorApp
    from guidance_tui.run.script_process import ScriptProcess

    s = write(tmp_path / "flood.py", FLOOD)
    run = ScriptProcess(s, [str(tmp_path / "finished")], record=small_fs / "t.gtt")
    app = InspectorApp(run.store, script_run=run, use_monitor=False)
    seen = {}

    @sync
    async def drive():
        async with app.run_test(size=(110, 32)) as pilot:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 60
            while not any("No space left on device" in n.message for n in app._notifications):
                assert loop.time() < deadline, "no notification"
                await pilot.pause(0.05)
            seen["running"] = not app.script_done.is_set()  # said while the script still ran
            while not (app.script_done.is_set() and app.query_one("#error").has_class("-shown")):
                assert loop.time() < deadline, "the error never showed"
                await pilot.pause(0.05)
            seen["title"] = app.inspector.error_pane.border_title
            await pilot.press("q")

    drive()
    assert seen["running"]
    assert seen["title"] == "✖ the trace could not be written"
    assert app.return_value == exit_codes.ERROR


# -- 4. and 5. stdio and signals like plain Python, under every command --------------
SAME_EVERYWHERE = """
import signal, sys, threading
assert threading.current_thread() is threading.main_thread(), "not the main thread"
old = signal.signal(signal.SIGUSR1, lambda *a: None)
n = sys.stdout.write("count me\\n")
sys.stdout.buffer.write(b"bytes \\xc3\\xa9\\n")
sys.stdout.flush()
print("facts", n, sys.stdout.encoding, sys.stdout.isatty(), sys.stdout.fileno() >= 0, sys.stderr.fileno() >= 0,
      sys.stdout.writable(), sys.stdout.closed)
sys.stderr.buffer.write(b"to stderr\\n")
sys.stdout.reconfigure(line_buffering=True)
try:
    sys.stdout.write(b"bytes")
except TypeError as e:
    print("TypeError", e)
"""


@pytest.mark.parametrize("command", [["record", "-o"], ["record", "-q", "-o"], ["run", "--plain", "--record"],
                                     ["run", "--record"]])
def test_a_script_sees_the_same_stdio_and_main_thread_under_every_command(tmp_path, command):
    s = write(tmp_path / "same.py", SAME_EVERYWHERE)
    out = tmp_path / "t.gtt"
    proc = cli(command[0], s, *command[1:], out, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert messages(out) == ["count me", "bytes é", "facts 9 utf-8 False True True True False", "to stderr",
                             "TypeError write() argument must be str, not bytes"]


def test_the_app_child_gives_the_script_the_same_stdio(tmp_path):
    from guidance_tui.run.script_process import ScriptProcess

    s = write(tmp_path / "same.py", SAME_EVERYWHERE)
    run = ScriptProcess(s, record=tmp_path / "t.gtt")
    result = run.run()
    assert result.status == "done", (result, list(run.output))
    assert messages(tmp_path / "t.gtt") == ["count me", "bytes é", "facts 9 utf-8 False True True True False",
                                            "to stderr", "TypeError write() argument must be str, not bytes"]


@pytest.mark.parametrize("quiet", [False, True])
def test_a_script_that_closes_stdout_does_not_break_the_transcript(tmp_path, quiet):
    s = write(tmp_path / "close.py", """
        import sys
        print("before")
        sys.stdout.close()
        print("after", file=sys.stderr)
    """)
    out = tmp_path / "t.gtt"
    proc = cli("record", s, "-o", out, *(["-q"] if quiet else []), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert b"I/O operation on closed file" not in proc.stderr
    assert messages(out) == ["before", "after"]
    if not quiet:
        assert "✔ done" in proc.stdout.decode()


def test_the_script_output_under_record_starts_its_own_line(tmp_path):
    s = write(tmp_path / "mixed.py", FAKE_TOKENS + """
token("Hello")
token(" there")
print("the script says hi")
token(" world")
""")
    proc = cli("record", s, "-o", tmp_path / "t.gtt", cwd=tmp_path, env=dict(os.environ, NO_COLOR="1"))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.decode().splitlines()
    assert "Hello there" in lines and "│ the script says hi" in lines and " world" in lines, lines
    assert lines.index("Hello there") < lines.index("│ the script says hi") < lines.index(" world")


def test_record_quiet_still_shows_the_script_output(tmp_path):
    s = write(tmp_path / "p.py", 'import sys\nprint("to stdout")\nprint("to stderr", file=sys.stderr)\n')
    proc = cli("record", s, "-o", tmp_path / "t.gtt", "-q", cwd=tmp_path)
    assert proc.returncode == 0
    assert proc.stdout == b"to stdout\n" and b"to stderr\n" in proc.stderr


def test_a_last_line_without_its_newline_does_not_run_into_the_trace_line(tmp_path):
    import pty

    s = write(tmp_path / "p.py", 'print("status: done", end="")\n')
    master, slave = pty.openpty()
    try:
        proc = subprocess.run([sys.executable, "-m", "guidance_tui", "record", str(s), "-o", str(tmp_path / "t.gtt"),
                               "-q"], stdout=slave, stderr=slave, cwd=tmp_path, timeout=60)
    finally:
        os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    assert proc.returncode == 0
    assert b"status: done\r\ntrace: " in out, out


@pytest.mark.parametrize("quiet", [True, False])
def test_a_reader_that_goes_away_does_not_stop_the_recording(tmp_path, quiet):
    s = write(tmp_path / "many.py", 'for i in range(20000):\n    print("line", i)\n')
    out = tmp_path / "t.gtt"
    proc = subprocess.Popen([sys.executable, "-m", "guidance_tui", "record", str(s), "-o", str(out),
                             *(["-q"] if quiet else [])], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
    proc.stdout.readline()
    proc.stdout.close()  # `| head -1`
    err = proc.stderr.read()
    assert proc.wait(60) == 0, err
    assert b"Traceback" not in err and b"BrokenPipe" not in err and b"Exception ignored" not in err
    assert len(messages(out)) == 20000 and read_trace(out).events[-1].status == "done"


# -- 6. Ctrl-C -----------------------------------------------------------------------
@pytest.mark.parametrize("command", [["record", "-q", "-o"], ["record", "-o"], ["run", "--plain", "--record"]])
@pytest.mark.parametrize("busy", ["while True:\n    pass", "time.sleep(600)"])
def test_one_ctrl_c_stops_a_busy_or_sleeping_script_within_a_second(tmp_path, command, busy):
    s = write(tmp_path / "busy.py", FAKE_TOKENS + f"""
import time
token("tick")
print("started", flush=True)
{busy}
""")
    out = tmp_path / "t.gtt"
    proc = subprocess.Popen([sys.executable, "-m", "guidance_tui", command[0], str(s), *command[1:], str(out)],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not (out.exists() and "started" in _safe_messages(out)):
            assert time.monotonic() < deadline and proc.poll() is None, "the script never started"
            time.sleep(0.05)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == exit_codes.INTERRUPTED, err
    assert took < 4, took
    assert b"Traceback" not in err
    end = read_trace(out).events[-1]
    assert isinstance(end, RunEnd) and end.status == "interrupted"
    assert sum(isinstance(e, Token) for e in read_trace(out).events) == 1


def _safe_messages(path: Path) -> list[str]:
    try:
        return messages(path)
    except Exception:
        return []


# -- 7. exit statuses in the app -----------------------------------------------------
@pytest.mark.parametrize("error, title", [
    ("the script's process was killed by SIGKILL", "the script's process was killed by SIGKILL"),
    ("the script's process exited with status 3", "the script exited with status 3"),
    ("the script exited with status 3", "the script exited with status 3"),
    ("trace not fully written: cannot write /x.gtt: No space left on device", "the trace could not be written"),
    ("cannot write /x.gtt: No space left on device", "the trace could not be written"),
    ("the engine refused: model not found: /m.gguf", "the engine refused: model not found: /m.gguf"),
    ("ZeroDivisionError: division by zero", "the script raised"),
])
def test_the_error_pane_title_says_what_happened(error, title):
    from guidance_tui.widgets.error_pane import error_title

    assert error_title(RunEnd(status="error", error=error)) == title


def test_an_engine_error_is_recorded_as_the_engine_refusing(tmp_path):
    from guidance_tui.run.runner import ScriptRun

    s = write(tmp_path / "m.py", f"from engines import models\nlm = models.LlamaCpp({str(tmp_path / 'no.gguf')!r})\n")
    result = ScriptRun(str(s), record=tmp_path / "t.gtt", monitoring=False).run()
    assert result.exit_code == exit_codes.ENGINE_REFUSED
    assert result.error.startswith("the engine refused: ")
    from guidance_tui.widgets.error_pane import error_title

    assert error_title(read_trace(tmp_path / "t.gtt").events[-1]).startswith("the engine refused: ")


def test_the_app_says_the_script_exited_with_its_status(tmp_path):
    from _app_support import sync

    from guidance_tui.app import InspectorApp
    from guidance_tui.run.script_process import ScriptProcess

    s = write(tmp_path / "exit3.py", 'import os\nprint("bye", flush=True)\nos._exit(3)\n')
    run = ScriptProcess(s, record=tmp_path / "t.gtt")
    app = InspectorApp(run.store, script_run=run, use_monitor=False)

    @sync
    async def drive():
        async with app.run_test(size=(100, 32)) as pilot:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 30
            while not (app.script_done.is_set() and app.query_one("#error").has_class("-shown")):
                assert loop.time() < deadline, "the error never showed"
                await pilot.pause(0.05)
            assert "the script exited with status 3" in app.inspector.error_pane.border_title
            await pilot.press("q")

    drive()
    assert app.return_value == 3


# -- 8. small ones -------------------------------------------------------------------
def test_a_read_only_runs_directory_is_one_line_and_no_trace_is_named(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir(mode=0o700)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=16k,mode=0700", "tmpfs", str(runs)],
                          capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs: {proc.stderr.decode().strip()}")
    try:
        s = write(tmp_path / "s.py", 'print("hello")\n')
        for command in (["record"], ["run", "--plain"]):
            p = cli(*command, s, cwd=tmp_path, env=dict(os.environ, GUIDANCE_TUI_RUNS=str(runs)))
            assert p.returncode == exit_codes.ERROR, p.stderr
            lines = p.stderr.decode().strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("guidance-tui: cannot create the trace file ") \
                and "Read-only file system" in lines[0], lines
            assert b"trace" not in p.stdout and b"done" not in p.stdout
        from guidance_tui.run.script_process import ScriptProcess, StartError

        with pytest.raises(StartError, match="^cannot create the trace file .*: Read-only file system$"):
            ScriptProcess(s, record=runs / "x.gtt").start()  # under the app: one line before it opens
    finally:
        subprocess.run(["umount", "-l", str(runs)], capture_output=True)


def test_the_app_never_removes_a_record_path_that_is_not_a_file(tmp_path):
    import stat

    from guidance_tui.run.script_process import ScriptProcess

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    run = ScriptProcess(write(tmp_path / "s.py", "print(1)\n"), record=fifo)
    run.start()
    try:
        assert stat.S_ISFIFO(os.stat(fifo).st_mode)  # /dev/null would have been removed the same way
    finally:
        run.kill()
        run.proc.wait(10)


def test_a_runs_path_that_is_a_file_is_one_clear_line(tmp_path):
    runs = tmp_path / "runs"
    runs.write_text("x")
    s = write(tmp_path / "s.py", 'print("hello")\n')
    for command in (["record"], ["run", "--plain"]):
        p = cli(*command, s, cwd=tmp_path, env=dict(os.environ, GUIDANCE_TUI_RUNS=str(runs)))
        assert p.returncode == exit_codes.ERROR, p.stderr
        lines = p.stderr.decode().strip().splitlines()
        assert len(lines) == 1 and "Errno" not in lines[0] and str(runs) in lines[0], lines


def _pretend_terminal(monkeypatch):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True, raising=False)

    def no_app(*a, **k):
        raise AssertionError("the full-screen app was opened")

    monkeypatch.setattr(cmd_app, "make_app", no_app)
    monkeypatch.setattr(cmd_app, "run_app", no_app)


def test_term_dumb_runs_the_plain_transcript(tmp_path, monkeypatch, capsys):
    _pretend_terminal(monkeypatch)
    monkeypatch.setenv("TERM", "dumb")
    script = write(tmp_path / "tiny.py", "# a prompt script\n")
    monkeypatch.setattr(cmd_app, "_make_run", lambda path, argv, args: FakeRun(small_events(),
                                                                               trace_path=tmp_path / "r.gtt"))
    assert main(["run", str(script)]) == 0
    assert "What is 2+2?" in capsys.readouterr().out


def test_term_dumb_replay_prints_the_transcript(tmp_path, monkeypatch, capsys):
    _pretend_terminal(monkeypatch)
    monkeypatch.setenv("TERM", "dumb")
    path = tmp_path / "t.gtt"
    write_trace(path, small_events())
    assert main(["replay", str(path)]) == 0
    assert "What is 2+2?" in capsys.readouterr().out


FORK = """
import os, sys, time
print("parent before", flush=True)
pid = os.fork()
if pid == 0:
    print("child here", flush=True)
    time.sleep(0.2)
    {child_end}
open("child.pid", "w").write(str(pid))
{parent_wait}
print("parent after", flush=True)
"""


@pytest.mark.parametrize("child_end", ["sys.exit(0)", "pass", "raise ValueError('in the child')"])
@pytest.mark.parametrize("command", [["record", "-o"], ["record", "-q", "-o"], ["run", "--plain", "--record"]])
def test_a_forked_child_exits_cleanly_and_leaves_the_trace_alone(tmp_path, command, child_end):
    s = write(tmp_path / "fork.py", FORK.format(child_end=child_end, parent_wait="os.waitpid(pid, 0)"))
    out = tmp_path / "t.gtt"
    proc = cli(command[0], s, *command[1:], out, cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    tf = read_trace(out)
    assert tf.dropped_bytes == 0
    assert [type(e).__name__ for e in tf.events].count("RunEnd") == 1
    assert [type(e).__name__ for e in tf.events].count("RunStart") == 1
    assert tf.events[-1].status == "done"
    assert messages(out) == ["parent before", "parent after"]
    assert b"child here" in proc.stdout or b"child here" in proc.stderr
    assert b"done" in proc.stdout or "-q" in command
    if "raise" in child_end:
        assert b"ValueError: in the child" in proc.stderr


def test_a_forked_child_that_is_not_waited_for_does_not_linger(tmp_path):
    s = write(tmp_path / "fork.py", FORK.format(child_end="pass", parent_wait=""))
    proc = cli("record", s, "-o", tmp_path / "t.gtt", cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    pid = int((tmp_path / "child.pid").read_text())
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and "Z" not in _proc_state(pid):
        assert time.monotonic() < deadline, "the forked child lingers"
        time.sleep(0.1)


def _proc_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"
