"""`run` puts the script in its own process and follows its trace file."""

from __future__ import annotations

import asyncio
import textwrap
import threading
import time

import pytest
from _app_support import sync

from guidance_tui.app import InspectorApp
from guidance_tui.run.script_process import ScriptProcess
from tracing import Message, Metric, RunEnd, RunStart, Token, TokenKind, read_trace


def script(tmp_path, body: str, name: str = "s.py"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


def kinds(events) -> list[str]:
    return [type(e).__name__ for e in events if not isinstance(e, Metric)]


def test_a_raising_script_is_recorded_and_followed_event_for_event(tmp_path):
    s = script(tmp_path, """
        import sys
        print("hello")
        print("warn", file=sys.stderr)
        def inner():
            raise ValueError("bad value")
        inner()
    """)
    run = ScriptProcess(s, record=tmp_path / "t.gtt")
    result = run.run()
    assert (result.status, result.exit_code) == ("error", 3)
    assert "ValueError: bad value" in result.error
    assert 'line 7, in <module>' in result.traceback and "in inner" in result.traceback
    live = run.store.since(-1)
    assert kinds(live) == ["RunStart", "Message", "Message", "RunEnd"]
    assert [m.text for m in live if isinstance(m, Message)] == ["hello", "warn"]
    # What the app followed is what the file holds, seqs and timestamps included.
    recorded = read_trace(tmp_path / "t.gtt").events
    assert [(type(e), e.seq, e.t_us) for e in recorded] == [(type(e), e.seq, e.t_us) for e in live]


def test_arguments_reach_the_script_and_a_clean_exit_is_done(tmp_path):
    s = script(tmp_path, """
        import sys
        print(" ".join(sys.argv[1:]))
    """)
    run = ScriptProcess(s, ["a", "b c"], record=tmp_path / "t.gtt")
    result = run.run()
    assert (result.status, result.exit_code) == ("done", 0)
    assert [e.text for e in run.store.since(-1) if isinstance(e, Message)] == ["a b c"]


def test_a_previous_file_at_the_record_path_is_never_shown(tmp_path):
    old = script(tmp_path, 'print("old run")\n', "old.py")
    ScriptProcess(old, record=tmp_path / "t.gtt").run()
    new = script(tmp_path, 'print("new run")\n', "new.py")
    run = ScriptProcess(new, record=tmp_path / "t.gtt")
    run.run()
    assert [e.text for e in run.store.since(-1) if isinstance(e, Message)] == ["new run"]


def test_cancel_interrupts_a_script_busy_in_its_own_code(tmp_path):
    s = script(tmp_path, """
        import time
        print("started", flush=True)
        while True:
            time.sleep(0.01)
    """)
    run = ScriptProcess(s, record=tmp_path / "t.gtt")
    box = {}
    t = threading.Thread(target=lambda: box.setdefault("r", run.run()))
    t.start()
    deadline = time.monotonic() + 20
    while not any(isinstance(e, Message) for e in run.store.since(-1)):
        assert time.monotonic() < deadline, "the script never started"
        time.sleep(0.02)
    run.cancel()
    t.join(timeout=20)
    assert not t.is_alive()
    assert (box["r"].status, box["r"].exit_code) == ("interrupted", 130)
    end = read_trace(tmp_path / "t.gtt").events[-1]
    assert isinstance(end, RunEnd) and end.status == "interrupted"  # the child closed the file itself


def test_a_child_that_dies_keeps_what_it_recorded_and_the_run_is_an_error(tmp_path):
    s = script(tmp_path, """
        import os, signal, time
        print("before the crash", flush=True)
        time.sleep(0.3)  # the writer flushes meanwhile
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    run = ScriptProcess(s, record=tmp_path / "t.gtt")
    result = run.run()
    assert result.status == "error" and "SIGKILL" in result.error
    events = run.store.since(-1)
    assert kinds(events) == ["RunStart", "Message", "RunEnd"]  # the RunEnd is the parent's own note
    assert kinds(read_trace(tmp_path / "t.gtt").events) == ["RunStart", "Message"]


def test_a_child_that_fails_before_the_script_reports_its_last_line(tmp_path):
    s = script(tmp_path, "print('never')\n")
    fake_python = tmp_path / "python"
    fake_python.write_text("#!/bin/sh\necho 'some noise' >&2\necho 'guidance-tui: the model is missing' >&2\nexit 1\n")
    fake_python.chmod(0o755)
    result = ScriptProcess(s, record=tmp_path / "t.gtt", python=str(fake_python)).run()
    assert (result.status, result.exit_code, result.error) == ("error", 1, "the model is missing")


def test_a_python_that_cannot_start_is_an_error_not_a_traceback(tmp_path):
    s = script(tmp_path, "print('never')\n")
    run = ScriptProcess(s, record=tmp_path / "t.gtt", python=str(tmp_path / "no-python"))
    result = run.run()
    assert result.status == "error" and result.error.startswith("cannot start")
    assert isinstance(run.store[run.store.last_seq], RunEnd)


def test_a_missing_script_is_refused_before_any_process_starts(tmp_path):
    from guidance_tui.run.runner import RunnerError

    with pytest.raises(RunnerError, match="no such file"):
        ScriptProcess(tmp_path / "missing.py")


@sync
async def test_the_app_follows_a_script_process_and_shows_its_error(tmp_path):
    s = script(tmp_path, """
        print("working")
        1 / 0
    """)
    run = ScriptProcess(s, record=tmp_path / "t.gtt")
    app = InspectorApp(run.store, script_run=run, use_monitor=False)
    async with app.run_test(size=(100, 32)) as pilot:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while not (app.script_done.is_set() and app.query_one("#error").has_class("-shown")):
            assert loop.time() < deadline, "the error never showed"
            await pilot.pause(0.05)
        assert "ZeroDivisionError" in str(app.inspector.error_pane.body.render())
        assert app.inspector.metrics_bar.stats.status == "error"
        assert isinstance(run.store[0], RunStart)
        await pilot.press("q")
    assert app.return_value == 3


@sync
async def test_quitting_the_app_cancels_the_script_process(tmp_path):
    s = script(tmp_path, """
        import time
        print("started", flush=True)
        time.sleep(600)
    """)
    run = ScriptProcess(s, record=tmp_path / "t.gtt")
    app = InspectorApp(run.store, script_run=run, use_monitor=False)
    async with app.run_test(size=(100, 32)) as pilot:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while not any(isinstance(e, Message) for e in run.store.since(-1)):
            assert loop.time() < deadline
            await pilot.pause(0.05)
        await pilot.press("q")
    assert app.script_done.wait(20)
    assert run.result.status == "interrupted"
    assert run.proc.returncode == 130


@pytest.mark.model
def test_a_model_script_streams_tokens_through_the_file(tmp_path):
    s = script(tmp_path, """
        from engines import gen, models
        lm = models.default() + "The capital of France is"
        lm += gen("city", max_tokens=20)
        print("city:", lm["city"])
    """)
    run = ScriptProcess(s, record=tmp_path / "t.gtt")
    seen_while_running = []

    def watch():
        while run.proc is None or run.proc.poll() is None:
            seen_while_running.append(sum(isinstance(e, Token) for e in run.store.since(-1)))
            time.sleep(0.05)

    w = threading.Thread(target=watch)
    w.start()
    result = run.run()
    w.join()
    assert result.status == "done", result.error
    tokens = [e for e in run.store.since(-1) if isinstance(e, Token)]
    assert len(tokens) >= 6
    assert any(0 < n < len(tokens) for n in seen_while_running)  # streamed, not delivered at the end
    assert any(isinstance(e, Metric) for e in run.store.since(-1))  # the child's monitor, from the start
    # the follower left the top-k packed; asked for, a generated token's are the recorded ones
    generated = [t for t in tokens if t.kind == TokenKind.GENERATED]
    assert generated and not any(t.top for t in generated)
    recorded = {e.seq: e for e in read_trace(tmp_path / "t.gtt").events}
    for t in generated:
        top = run.store.alternatives(t.seq)
        assert len(top) == 5 and [(a.id, a.bytes, a.masked) for a in top] == [
            (a.id, a.bytes, a.masked) for a in recorded[t.seq].top]


def _run_in_thread(run: ScriptProcess, timeout: float):
    """``run.run()`` in a thread; its result, or None (the child killed) when it is not done in ``timeout``."""
    box = {}
    t = threading.Thread(target=lambda: box.setdefault("r", run.run()), daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        run.kill()
        t.join(10)
        return None
    return box["r"]


def test_a_script_reading_stdin_gets_end_of_file_at_once_and_the_trace_says_why(tmp_path):
    # Under the app the child's stdin is the control pipe: a script that read it waited forever.
    s = script(tmp_path, """
        import sys
        try:
            input("your name? ")
        except EOFError:
            print("no name")
        print("read:", repr(sys.stdin.read()), repr(sys.stdin.readline()), list(sys.stdin), sys.stdin.buffer.read())
        x = input()
    """)
    run = ScriptProcess(s, record=tmp_path / "t.gtt")
    result = _run_in_thread(run, 30)
    assert result is not None, "the script hung on stdin"
    assert (result.status, result.exit_code) == ("error", 3) and "EOFError" in result.error
    messages = [(e.level, e.text) for e in run.store.since(-1) if isinstance(e, Message)]
    warnings = [text for level, text in messages if level == "warning"]
    assert len(warnings) == 1 and "stdin" in warnings[0] and "EOF" in warnings[0]  # once, however often it reads
    assert ("stdout", "no name") in messages and ("stdout", "read: '' '' [] b''") in messages
    assert messages.index(("warning", warnings[0])) < messages.index(("stdout", "no name"))
    assert [e.text for e in read_trace(tmp_path / "t.gtt").events if isinstance(e, Message)].count(warnings[0]) == 1


def test_cancel_still_reaches_a_script_that_read_stdin(tmp_path):
    s = script(tmp_path, """
        import sys, time
        print("read:", repr(sys.stdin.read()), flush=True)
        while True:
            time.sleep(0.01)
    """)
    run = ScriptProcess(s, record=tmp_path / "t.gtt")
    box = {}
    t = threading.Thread(target=lambda: box.setdefault("r", run.run()), daemon=True)
    t.start()
    deadline = time.monotonic() + 20
    while not any(isinstance(e, Message) and e.text.startswith("read:") for e in run.store.since(-1)):
        if time.monotonic() > deadline:
            run.kill()
            raise AssertionError("the script never got past its read")
        time.sleep(0.02)
    run.cancel()
    t.join(timeout=20)
    assert not t.is_alive()
    assert (box["r"].status, box["r"].exit_code) == ("interrupted", 130)
