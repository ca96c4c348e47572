"""End to end: `guidance-tui run SCRIPT` in a real terminal (tmux): the script in its own
process, the app following it, the exit code and the trace path after quitting."""

from __future__ import annotations

import textwrap

import pytest
from _tmux_support import Tmux, _cli, needs_tmux

from tracing import Message, RunEnd, Token, read_trace

pytestmark = needs_tmux


def test_a_script_that_raises_shows_its_frames_and_exits_3(tmp_path):
    script = tmp_path / "crash.py"
    script.write_text(textwrap.dedent("""
        print("about to fail")
        def parse(x):
            return int(x)
        parse("forty-two")
    """))
    trace = tmp_path / "crash.gtt"
    term = Tmux(" ".join(_cli() + ["run", str(script), "--record", str(trace)]), width=110, height=32)
    try:
        term.wait_for("the script raised")
        screen = term.wait_for("Traceback (the script's frames)")
        assert "ValueError: invalid literal for int()" in screen and "error" in screen
        term.keys("o")  # the Output tab holds the script's print
        term.wait_for("about to fail")
        term.keys("q")
        screen = term.wait_for("EXIT=3")
        assert f"trace: {trace}" in screen.replace("\n", "")
    finally:
        term.close()
    events = read_trace(trace).events
    assert isinstance(events[-1], RunEnd) and events[-1].status == "error"
    assert "in parse" in events[-1].traceback


def test_quitting_mid_run_cancels_the_script_and_keeps_the_trace(tmp_path):
    script = tmp_path / "slow.py"
    script.write_text(textwrap.dedent("""
        import time
        print("tick", flush=True)
        time.sleep(120)
    """))
    trace = tmp_path / "slow.gtt"
    term = Tmux(" ".join(_cli() + ["run", str(script), "--record", str(trace)]), width=110, height=32)
    try:
        term.wait_for("LIVE")
        term.keys("o")
        term.wait_for("tick")
        term.keys("q")
        term.wait_for("EXIT=130", timeout=20)
    finally:
        term.close()
    events = read_trace(trace).events
    assert [e.text for e in events if isinstance(e, Message)] == ["tick"]
    assert isinstance(events[-1], RunEnd) and events[-1].status == "interrupted"


@pytest.mark.model
def test_the_demo_streams_a_real_model_run(tmp_path):
    trace = tmp_path / "demo.gtt"
    term = Tmux(" ".join(_cli() + ["demo", "json_extraction", "--record", str(trace)]), width=120, height=36)
    try:
        screen = term.wait_for("✔ done", timeout=120)
        assert "REPLAY" in screen and "tok/s" in screen  # the run ended: no longer LIVE
        assert '"name"' in screen  # the JSON the schema forced, on screen
        term.keys("Home")
        term.wait_for("1/")
        term.keys("q")
        term.wait_for("EXIT=0")
    finally:
        term.close()
    tokens = [e for e in read_trace(trace).events if isinstance(e, Token)]
    assert len(tokens) > 20
