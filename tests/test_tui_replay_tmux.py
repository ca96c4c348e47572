"""End to end: `guidance-tui replay FILE` in a real terminal (tmux), read back from the screen."""

from __future__ import annotations

import subprocess
import time

import pytest
from _app_support import SENTENCE, long_line_events, small_events, stamped
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
        assert "done" in screen and "What" in screen and "2+2?" not in screen  # scrubbed back: still done
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


def token_pane_text(screen: str) -> str:
    """The token pane's rows (the first bordered box on the left) joined back into text."""
    rows = []
    for line in screen.splitlines():
        if line.startswith("│"):
            rows.append(line[1:line.index("│", 1)].removeprefix(" ").rstrip())
    return "".join(rows)


@pytest.mark.parametrize("width", [130, 80])
def test_replay_shows_every_word_of_a_wrapped_line_at_once_and_after_a_resize(tmp_path, width):
    path = tmp_path / "fact.gtt"
    write_trace(path, long_line_events())
    term = Tmux(" ".join(_cli() + ["replay", str(path)]), width=width, height=30)
    try:
        screen = term.wait_for("REPLAY")
        assert SENTENCE in token_pane_text(screen), screen  # on the first frame, with no key pressed
        other = 80 if width == 130 else 130
        subprocess.run(["tmux", "resize-window", "-t", term.name, "-x", str(other), "-y", "30"], check=True)
        pane_edge = screen.splitlines()[1].index("╮")  # the token pane's top right corner
        deadline = time.monotonic() + 10
        while screen.splitlines()[1].find("╮") == pane_edge and time.monotonic() < deadline:
            time.sleep(0.2)
            screen = term.screen()
        time.sleep(1.0)  # a stale frame would stay: nothing else redraws the stream
        screen = term.screen()
        assert SENTENCE in token_pane_text(screen), screen
        term.keys("q")
        term.wait_for("EXIT=0")
    finally:
        term.close()
