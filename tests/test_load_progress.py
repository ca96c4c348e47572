"""Load progress on the main screen: engines report it as ``Message(level="progress")`` events, the
app shows the newest one where the tokens will appear, ``record`` keeps ONE updating stderr line.

No model here: the engines' reporter is driven directly, the app gets a live store by hand, and
``record`` runs a script that reports a phase the way a backend's load does."""

from __future__ import annotations

import io
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _app_support import sync
from test_app_pilot import SIZE, visible_text, wait_for

from engines import progress as eprogress
from engines.session import Session
from guidance_tui.app import InspectorApp
from guidance_tui.run.plain import PlainTranscript
from guidance_tui.run.progress_line import CLEAR, ProgressLine
from tracing import Message, RunStart, Token, TokenKind, TraceStore, read_trace
from tracing import progress as tprogress

ROOT = Path(__file__).resolve().parent.parent
CLI = str(Path(sys.executable).with_name("guidance-tui"))


# -- the format ------------------------------------------------------------------------------------
def test_a_running_phase_shows_its_seconds_and_a_final_line_does_not():
    assert tprogress.with_elapsed("loading m.gguf …", 12.4) == "loading m.gguf … (12 s)"
    assert tprogress.with_elapsed("loading m.gguf …", 0.3) == "loading m.gguf …"
    assert tprogress.with_elapsed("loading m.gguf: done in 2.0 s", 40) == "loading m.gguf: done in 2.0 s"


def test_the_line_at_a_seq_is_the_newest_progress_with_the_time_until_that_event():
    store = TraceStore()
    store.append(RunStart(script="s.py"))
    store.append(Message(level="progress", text="converting …"))
    store.append(Message(level="info", text="not progress"))
    store.append(Message(level="progress", text="converting … 40%"))
    store[3].t_us = 1_000_000
    store.append(Message(level="info", text="later"))
    store[4].t_us = 6_000_000
    assert tprogress.line_at(store, 0) is None
    assert tprogress.line_at(store, 2) .startswith("converting …")
    assert tprogress.line_at(store, 4) == "converting … 40% (5 s)"  # replayed, it says what it said live


# -- the engines' reporter -------------------------------------------------------------------------
def test_under_a_runner_a_phase_is_trace_events_a_start_tenths_and_an_end():
    session = Session(monitoring=False)
    p = eprogress.Progress(session)
    with p.phase("dequantising the weights") as update:
        for i in range(200):
            update(i / 200)
    texts = [ev.text for ev in session.store.events() if type(ev) is Message]
    assert texts[0] == "dequantising the weights …"
    assert texts[-1].startswith("dequantising the weights: done in ")
    assert all(ev.level == "progress" for ev in session.store.events())
    assert len(texts) <= 13  # a line per tenth, not per tensor: the Output tab stays short
    assert "dequantising the weights … 50%" in texts


def test_a_failed_phase_says_so():
    session = Session(monitoring=False)
    with pytest.raises(ValueError), eprogress.Progress(session).phase("loading x"):
        raise ValueError("bad file")
    assert session.store[session.store.last_seq].text == "loading x: failed"


def test_without_a_runner_a_short_phase_prints_nothing_and_a_long_one_one_updating_line(monkeypatch):
    err = io.StringIO()
    err.isatty = lambda: True
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setattr(eprogress, "TICK_S", 0.05)
    with eprogress.Progress(None).phase("loading quick"):
        pass
    assert err.getvalue() == ""
    with eprogress.Progress(None).phase("loading slow"):
        time.sleep(0.3)
    out = err.getvalue()
    assert out.count("\n") == 1 and out.endswith("\n")  # one line, rewritten with \r, ended once
    assert "\rloading slow …" in out.replace("\x1b[2K", "")
    assert out.rstrip("\n").split("\r")[-1].replace("\x1b[2K", "").startswith("loading slow: done in ")


# -- record's stderr line --------------------------------------------------------------------------
class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def _progress(store, text):
    store.append(Message(level="progress", text=text))


def test_on_a_terminal_progress_is_one_line_rewritten_then_wiped_when_tokens_come():
    store, err = TraceStore(), _Tty()
    clock = [0.0]
    line = ProgressLine(store, err, clock=lambda: clock[0])
    _progress(store, "loading m.gguf …")
    line.pump()
    clock[0] = 3.2
    line.pump()
    _progress(store, "loading m.gguf: done in 3.4 s")
    line.pump()
    assert "\n" not in err.getvalue()
    shown = err.getvalue().split(CLEAR)
    assert shown[1:] == ["loading m.gguf …", "loading m.gguf … (3 s)", "loading m.gguf: done in 3.4 s"]
    line.wipe()  # the transcript prints next
    store.append(Token(node_id=1, pos=0, id=5, bytes=b"Hi", kind=TokenKind.GENERATED))
    line.pump()  # tokens came after the progress: it is not drawn again
    line.finish()
    assert err.getvalue().endswith(CLEAR)


def test_in_a_log_progress_is_sparse_lines():
    store, err = TraceStore(), io.StringIO()
    line = ProgressLine(store, err, tty=False)
    _progress(store, "dequantising the weights …")
    for pct in range(10, 100, 10):
        _progress(store, f"dequantising the weights … {pct}%")
    _progress(store, "dequantising the weights: done in 61.0 s")
    line.pump()
    lines = err.getvalue().splitlines()
    assert lines[0] == "dequantising the weights …" and lines[-1] == "dequantising the weights: done in 61.0 s"
    assert len(lines) <= 3


def test_the_transcript_leaves_progress_to_the_stderr_line():
    store, out = TraceStore(), io.StringIO()
    store.append(RunStart(script="s.py"))
    _progress(store, "loading m.gguf …")
    store.append(Message(level="info", text="model: m.gguf"))
    t = PlainTranscript(store, file=out, color=False)
    t.pump()
    assert "model: m.gguf" in out.getvalue() and "loading" not in out.getvalue()


SCRIPT = """
import time
from engines.progress import Progress
with Progress().phase("loading a fake model") as update:
    for i in range(4):
        update(i / 4)
        time.sleep(0.4)
print("after the load")
"""


def _record(tmp_path, stderr_tty: bool):
    script = tmp_path / "load.py"
    script.write_text(SCRIPT)
    out = tmp_path / "t.gtt"
    env = {**os.environ, "GUIDANCE_TUI_RUNS": str(tmp_path / "runs"), "NO_COLOR": "1"}
    cmd = [CLI, "record", "-o", str(out), str(script)]
    if not stderr_tty:
        r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        return r.returncode, r.stdout, r.stderr, out
    master, slave = pty.openpty()
    p = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    err = b""
    while True:
        ready, _, _ = select.select([master], [], [], 30)
        if not ready:
            break
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the child closed it
            break
        if not chunk:
            break
        err += chunk
    stdout = p.stdout.read().decode()
    p.wait(timeout=30)
    os.close(master)
    return p.returncode, stdout, err.decode(), out


def test_record_on_a_terminal_keeps_one_updating_progress_line(tmp_path):
    code, stdout, stderr, out = _record(tmp_path, stderr_tty=True)
    assert code == 0, stderr
    assert "after the load" in stdout and "loading a fake model" not in stdout
    assert "loading a fake model …" in stderr and "\n" not in stderr.strip("\r\n").replace("\r\n", "")
    assert stderr.count("\r") >= 3  # rewritten in place, not a line each
    assert stderr.rstrip("\r\n").endswith(CLEAR)  # wiped before the transcript's summary
    texts = [ev.text for ev in read_trace(out).events if type(ev) is Message and ev.level == "progress"]
    assert texts[0] == "loading a fake model …" and texts[-1].startswith("loading a fake model: done in ")


def test_record_into_a_log_prints_sparse_progress_lines(tmp_path):
    code, stdout, stderr, _ = _record(tmp_path, stderr_tty=False)
    assert code == 0, stderr
    lines = [ln for ln in stderr.splitlines() if "fake model" in ln]
    assert lines[0] == "loading a fake model …" and lines[-1].startswith("loading a fake model: done in ")
    assert len(lines) <= 3 and "\r" not in stderr


# -- the app ---------------------------------------------------------------------------------------
def _live_app():
    store = TraceStore()
    store.append(RunStart(script="s.py", model="m.gguf", backend="llama.cpp"))
    return store, InspectorApp(store, live=True, use_monitor=False)


@sync
async def test_the_app_shows_the_progress_line_until_the_first_token_replaces_it():
    store, app = _live_app()
    async with app.run_test(size=SIZE) as pilot:
        _progress(store, "converting m.gguf to a transformers model …")
        await wait_for(pilot, lambda: "converting m.gguf" in visible_text(app))
        _progress(store, "dequantising the weights … 40%")
        await wait_for(pilot, lambda: "dequantising the weights … 40%" in visible_text(app))
        assert "converting" not in visible_text(app)  # one line, replaced
        store.append(Token(node_id=1, pos=0, id=9, bytes=b"Hello there", kind=TokenKind.GENERATED, prob=0.9))
        await wait_for(pilot, lambda: "Hello there" in visible_text(app))
        assert "dequantising" not in visible_text(app)


@pytest.mark.parametrize("text, running", [
    ("loading m.gguf …", True), ("dequantising the weights … 40%", True), ("loading m.gguf: done in 0.4 s", False),
    ("loading m.gguf: failed", False), ("converting m.gguf (once, 1-3 minutes); cached in /c", False),
    ("a note … about 40% of it", False), ("saving … 100%", True),
])
def test_a_running_phase_line_is_told_from_a_final_line_and_a_note(text, running):
    assert tprogress.is_running(text) is running


@sync
async def test_the_output_tab_keeps_how_each_phase_ended_not_its_running_lines():
    store, app = _live_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("o")  # the Output tab (a hidden log renders nothing)
        _progress(store, "converting m.gguf to a transformers model (once); cached in /c")
        for tenth in range(11):
            _progress(store, f"dequantising the weights … {tenth * 10}%")
        _progress(store, "dequantising the weights: done in 61.0 s")
        store.append(Message(level="info", text="model: m.gguf (transformers)"))
        await wait_for(pilot, lambda: any("model: m.gguf" in ln.text for ln in app.screen.output_log.lines))
        lines = [ln.text for ln in app.screen.output_log.lines]
        assert any("cached in /c" in ln for ln in lines)
        assert any("dequantising the weights: done in 61.0 s" in ln for ln in lines)
        assert not any("%" in ln for ln in lines)


def test_the_gguf_conversion_reports_tensors_done_instead_of_a_tqdm_bar():
    pytest.importorskip("torch")
    gguf_utils = pytest.importorskip("transformers.modeling_gguf_pytorch_utils")
    from engines.transformers_backend import _gguf_tensor_progress

    real = gguf_utils.tqdm
    seen: list[float] = []
    err = io.StringIO()
    with _gguf_tensor_progress(seen.append):
        sys_err, sys.stderr = sys.stderr, err
        try:
            items = list(gguf_utils.tqdm(range(20), desc="Converting and de-quantizing GGUF tensors..."))
        finally:
            sys.stderr = sys_err
    assert items == list(range(20))
    assert seen[0] == 0.0 and seen[-1] == 1.0 and seen == sorted(seen)
    assert err.getvalue() == ""  # no bar
    assert gguf_utils.tqdm is real  # put back
