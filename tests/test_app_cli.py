"""`run`, `replay` and `demo` from the command line (no terminal: plain output)."""

from __future__ import annotations

import io

import pytest
from _app_support import FakeRun, small_events, stamped

from guidance_tui import cli, exit_codes
from guidance_tui.cli import app_commands as cmd_app
from guidance_tui.cli import main
from tracing import write_trace
from tracing.fileformat import encode_trace
from tracing.synthetic import synthetic_events


def test_replay_of_a_missing_file_is_a_one_line_error(tmp_path, capsys):
    assert main(["replay", str(tmp_path / "nope.gtt")]) == 1
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and "no such file" in err


def test_replay_of_a_file_that_is_not_a_trace(tmp_path, capsys):
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    assert main(["replay", str(path)]) == 1
    assert "not a guidance-tui trace file" in capsys.readouterr().err


def test_replay_without_a_terminal_prints_the_transcript(tmp_path, capsys):
    path = tmp_path / "t.gtt"
    write_trace(path, small_events())
    assert main(["replay", str(path)]) == 0
    out = capsys.readouterr().out
    assert "What is 2+2?" in out and "✔ done" in out


def test_replay_of_a_truncated_trace_warns(tmp_path, capsys):
    data = encode_trace(stamped(list(synthetic_events(200))))
    path = tmp_path / "cut.gtt"
    path.write_bytes(data[:-7])
    assert main(["replay", str(path)]) == 0
    assert "ends mid-event" in capsys.readouterr().err


def test_demo_with_an_unknown_name_lists_the_examples(capsys):
    assert main(["demo", "no-such-example"]) == 1
    err = capsys.readouterr().err
    assert "no example named 'no-such-example'" in err and "available:" in err


def test_run_of_a_missing_script(tmp_path, capsys):
    assert main(["run", str(tmp_path / "missing.py")]) == exit_codes.USAGE
    assert "no such file" in capsys.readouterr().err


@pytest.mark.parametrize("error, code", [(False, 0), (True, 3)])
def test_run_without_a_terminal_prints_a_transcript_and_returns_the_exit_code(tmp_path, monkeypatch, capsys,
                                                                               error, code):
    script = tmp_path / "tiny.py"
    script.write_text("# a prompt script\n")
    monkeypatch.setattr(cmd_app, "_make_run", lambda path, argv, args: FakeRun(small_events(error=error),
                                                                               trace_path=tmp_path / "r.gtt"))
    assert main(["run", str(script)]) == code
    out = capsys.readouterr().out
    assert "What is 2+2?" in out
    assert f"trace {tmp_path / 'r.gtt'}" in out
    assert ("ZeroDivisionError" in out) == error


def test_run_plain_cancels_the_script_on_ctrl_c():
    import signal
    import threading

    # The script runs in the main thread now: Ctrl-C is a real SIGINT there (see test_run_faults for scripts).
    run = FakeRun(small_events(), delay=0.05)
    timer = threading.Timer(0.12, signal.pthread_kill, (threading.main_thread().ident, signal.SIGINT))
    timer.start()
    out = io.StringIO()
    try:
        assert cmd_app.run_plain(run, file=out) == 130
    finally:
        timer.cancel()
    assert "interrupted" in out.getvalue()


def test_options_after_the_script_are_ours_until_a_double_dash():
    import argparse

    args = argparse.Namespace(args=["--record", "t.gtt", "x", "--plain", "--model=m.gguf", "--", "--record", "y"],
                              record=None, model=None, backend=None, plain=False)
    cli.take_own_options(args)
    assert (args.record, args.model, args.plain) == ("t.gtt", "m.gguf", True)
    assert args.args == ["x", "--record", "y"]


def test_the_readme_quotes_the_exit_code_table():
    import re
    from pathlib import Path

    table = [ln for ln in exit_codes.__doc__.splitlines() if re.match(r"\| \d+ \|", ln)]
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert table and all(row in readme for row in table)
    codes = {int(row.split("|")[1]) for row in table}
    assert codes == {v for k, v in vars(exit_codes).items() if k.isupper() and isinstance(v, int)}
