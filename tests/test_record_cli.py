"""`guidance-tui record` end to end on the real model, in subprocesses: exit codes,
one-line errors, the user's own frames, and traces that keep what was recorded."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tracing import RunEnd, RunStart, Token, read_trace

from guidance_tui import exit_codes

pytestmark = pytest.mark.model


def record(tmp_path: Path, body: str, *extra: str, timeout: float = 300) -> tuple[subprocess.CompletedProcess, Path]:
    script = tmp_path / "prog.py"
    script.write_text(textwrap.dedent(body))
    out = tmp_path / "t.gtt"
    proc = subprocess.run([sys.executable, "-m", "guidance_tui", "record", str(script), "-o", str(out), "-q", *extra],
                          capture_output=True, text=True, timeout=timeout, cwd=tmp_path)
    return proc, out


def assert_one_error_line(stderr: str, needle: str) -> None:
    lines = [ln for ln in stderr.splitlines() if ln.startswith("guidance-tui:")]
    assert len(lines) == 1 and needle in lines[0], stderr
    assert "engines/" not in stderr and "guidance_tui/" not in stderr, "no frames of our own code"


def test_record_writes_a_complete_trace(tmp_path):
    proc, out = record(tmp_path, """
        from engines import gen, models, select
        lm = models.default() + "Is fire hot? Answer:" + select([" yes", " no"], name="a")
        lm += " Because" + gen("why", max_tokens=5)
        print(lm["a"])
    """)
    assert proc.returncode == 0, proc.stderr
    assert "trace:" in proc.stderr
    tf = read_trace(out)
    assert isinstance(tf.events[0], RunStart) and isinstance(tf.events[-1], RunEnd)
    assert tf.events[-1].status == "done" and tf.dropped_bytes == 0
    assert tf.events[-1].generated_tokens > 0


def test_record_passes_arguments_and_takes_its_own_options_back(tmp_path):
    proc, out = record(tmp_path, """
        import sys
        assert sys.argv[1:] == ["alpha", "--flag"], sys.argv
    """, "--", "alpha", "--flag")
    assert proc.returncode == 0, proc.stderr


def test_a_crashing_script_shows_its_own_frames_and_keeps_the_trace(tmp_path):
    proc, out = record(tmp_path, """
        from engines import gen, models
        lm = models.default() + "Hello" + gen("x", max_tokens=4)
        def check(value):
            raise ValueError("bad value " + repr(len(value)))
        check(lm["x"])
    """)
    assert proc.returncode == exit_codes.SCRIPT_RAISED
    assert 'prog.py", line 6, in <module>' in proc.stderr and "in check" in proc.stderr
    assert_one_error_line(proc.stderr, "ValueError: bad value")
    tf = read_trace(out)
    assert tf.events[-1].status == "error" and "bad value" in tf.events[-1].error
    assert sum(isinstance(e, Token) for e in tf.events) >= 5, "the tokens before the crash are kept"


def test_a_missing_model_is_one_line_and_recorded(tmp_path):
    proc, out = record(tmp_path, """
        from engines import models
        lm = models.default()
    """, "--model", str(tmp_path / "missing.gguf"))
    assert proc.returncode == exit_codes.ENGINE_REFUSED
    assert_one_error_line(proc.stderr, "model not found")
    assert read_trace(out).events[-1].status == "error"


def test_an_invalid_regex_is_one_line(tmp_path):
    proc, _ = record(tmp_path, """
        from engines import models, regex
        lm = models.default() + "x" + regex("[0-9")
    """)
    assert proc.returncode == exit_codes.ENGINE_REFUSED
    assert_one_error_line(proc.stderr, "invalid grammar")


def test_a_missing_script_is_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "guidance_tui", "record", str(tmp_path / "nope.py")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == exit_codes.USAGE
    assert proc.stderr.strip() == f"guidance-tui: {tmp_path / 'nope.py'}: no such file"


def test_ctrl_c_mid_generation_keeps_the_trace(tmp_path):
    script = tmp_path / "long.py"
    script.write_text("from engines import gen, models\n"
                      "lm = models.default() + 'A very long story:' + gen(max_tokens=2000)\n")
    out = tmp_path / "long.gtt"
    proc = subprocess.Popen([sys.executable, "-m", "guidance_tui", "record", str(script), "-o", str(out), "-q"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:  # wait until tokens reach the file
        time.sleep(0.5)
        if out.exists() and out.stat().st_size > 2000:
            break
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    tf = read_trace(out)
    assert tf.events[-1].status == "interrupted"
    assert sum(isinstance(e, Token) for e in tf.events) > 3
