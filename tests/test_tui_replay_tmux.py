"""End to end: `guidance-tui replay FILE` in a real terminal (tmux), read back from the screen."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from _app_support import small_events, stamped

from tracing import write_trace
from tracing.synthetic import synthetic_events

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


def _cli() -> list[str]:
    exe = Path(sys.executable).with_name("guidance-tui")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "guidance_tui"]


class Tmux:
    def __init__(self, command: str, width: int = 100, height: int = 30) -> None:
        self.name = f"gtui-{uuid.uuid4().hex[:8]}"
        env = {"TERM": "xterm-256color", "COLORTERM": "truecolor", "TEXTUAL_ANIMATIONS": "none"}
        exports = " ".join(f"{k}={v}" for k, v in env.items())
        subprocess.run(["tmux", "new-session", "-d", "-s", self.name, "-x", str(width), "-y", str(height),
                        f"cd {ROOT} && env {exports} {command}; echo EXIT=$?; sleep 60"], check=True)
        subprocess.run(["tmux", "resize-window", "-t", self.name, "-x", str(width), "-y", str(height)],
                       capture_output=True)

    def screen(self) -> str:
        return subprocess.run(["tmux", "capture-pane", "-p", "-t", self.name], capture_output=True,
                              text=True).stdout

    def keys(self, *keys: str) -> None:
        for k in keys:
            subprocess.run(["tmux", "send-keys", "-t", self.name, k], check=True)
            time.sleep(0.15)

    def wait_for(self, text: str, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.2)
        raise AssertionError(f"{text!r} never appeared; the screen:\n{screen}")

    def close(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.name], capture_output=True)


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
