"""End to end: `guidance-tui replay FILE` in a real terminal (tmux), read back from the screen."""

from __future__ import annotations

import pytest
from _app_support import small_events, stamped
from _tmux_support import Tmux, _cli, needs_tmux

from tracing import write_trace
from tracing.synthetic import synthetic_events

pytestmark = needs_tmux


@pytest.fixture
def trace(tmp_path):
    path = tmp_path / "run.gtt"
    write_trace(path, small_events())
    return path


def test_replay_in_a_real_terminal(trace):
    term = Tmux(" ".join(_cli() + ["replay", str(trace)]))
    try:
        screen = term.wait_for("REPLAY")
        assert "done" in screen and "What is 2+2?" in screen and "Sure" in screen
        assert "10/10 tok" in screen
        term.keys("Home")
        screen = term.wait_for("1/10 tok")
        assert "running" in screen and "What" in screen and "2+2?" not in screen
        term.keys("b")  # to the backtrack: the taken-back token is selected
        screen = term.wait_for("taken back by backtrack 1")
        assert "8/10 tok" in screen
        term.keys("?")
        term.wait_for("Step back one token")
        term.keys("Escape", "q")
        screen = term.wait_for("EXIT=0")
    finally:
        term.close()


def test_replay_of_a_large_trace_streams_in_and_scrubs(tmp_path):
    path = tmp_path / "big.gtt"
    write_trace(path, stamped(list(synthetic_events(20000))))
    term = Tmux(" ".join(_cli() + ["replay", str(path)]), width=120, height=36)
    try:
        term.wait_for("20,000/20,000 tok")
        term.keys("Home")
        term.wait_for("1/20,000 tok")
        term.keys("PageDown", "PageDown")
        term.wait_for("201/20,000 tok")
        term.keys("q")
        term.wait_for("EXIT=0")
    finally:
        term.close()
