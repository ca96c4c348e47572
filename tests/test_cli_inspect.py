"""`guidance-tui info` and `guidance-tui export`, in-process and as a real command."""

from __future__ import annotations

import base64
import json
import math
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from guidance_tui.cli import main
from guidance_tui.cli.inspect_commands import read_jsonl
from tracing import (
    FORMAT_VERSION, Alt, Backtrack, Capture, NodeClose, NodeOpen, RunEnd, RunStart, Token, TokenKind, TraceStore,
    decode_trace, display_text, encode_trace, read_trace, write_trace,
)
from tracing.synthetic import synthetic_events

ROOT = Path(__file__).resolve().parent.parent
NAN = float("nan")


def fake_clock():
    t = iter(range(0, 10**15, 2_000_000))  # 2 ms per event
    return lambda: next(t)


def run_events(*, end: RunEnd | None = ...) -> list:
    events = [
        RunStart(script="examples/qa.py", model="gemma-3-270m", backend="llamacpp"),
        NodeOpen(node_id=1, kind="gen", name="answer"),
        Token(node_id=1, pos=0, id=1, bytes=b"Q:", kind=TokenKind.PROMPT),
        Token(node_id=1, pos=2, id=2, bytes=b" yes", prob=NAN, prob_raw=0.5,
              top=[Alt(2, b" yes", NAN, False), Alt(3, b"\xf0\x9f", 0.125, True)]),
        Token(node_id=1, pos=6, id=4, bytes=b"!", kind=TokenKind.FORCED, prob=1.0),
        Backtrack(node_id=1, n_tokens=1, bytes=b"!", reason="healing"),
        Token(node_id=1, pos=6, id=5, bytes=b".", prob=0.75, prob_raw=0.5),
        Capture(node_id=1, name="answer", value="yes", log_prob=NAN),
        NodeClose(node_id=1),
    ]
    if end is ...:
        end = RunEnd(status="done", generated_tokens=2)
    if end is not None:
        events.append(end)
    store = TraceStore(clock=fake_clock())
    store.extend(events)
    return list(store.events())


@pytest.fixture
def trace(tmp_path) -> Path:
    path = tmp_path / "run.gtt"
    write_trace(path, run_events())
    return path


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def info_fields(out: str) -> dict[str, str]:
    fields = {}
    for line in out.splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields


# -- info ------------------------------------------------------------------------------
def test_info_summarises_a_trace(capsys, trace):
    code, out, err = cli(capsys, "info", trace)
    assert code == 0 and err == ""
    f = info_fields(out)
    assert f["format"] == f"version {FORMAT_VERSION}"
    assert f["events"] == "10"
    assert f["tokens"] == "4 (prompt 1, generated 2, forced 1)"
    assert f["backtracks"] == "1" and f["captures"] == "1" and f["nodes"] == "1"
    assert f["duration"] == "0.018 s"  # 10 events 2 ms apart
    assert (f["model"], f["backend"], f["script"]) == ("gemma-3-270m", "llamacpp", "examples/qa.py")
    assert f["status"] == "done"
    assert "error" not in f and "warning" not in f


def test_info_shows_the_error_of_a_failed_run(capsys, tmp_path):
    path = tmp_path / "failed.gtt"
    write_trace(path, run_events(end=RunEnd(status="error", error="ValueError: bad schema")))
    code, out, _ = cli(capsys, "info", path)
    f = info_fields(out)
    assert code == 0
    assert f["status"] == "error" and f["error"] == "ValueError: bad schema"


def test_info_says_incomplete_when_the_run_never_ended(capsys, tmp_path):
    path = tmp_path / "killed.gtt"
    write_trace(path, run_events(end=None))
    code, out, _ = cli(capsys, "info", path)
    assert code == 0
    assert info_fields(out)["status"] == "incomplete (no run end)"


def test_info_on_a_truncated_file_warns_and_succeeds(capsys, tmp_path, trace):
    data = trace.read_bytes()
    cut = tmp_path / "cut.gtt"
    cut.write_bytes(data[:-2])
    dropped = read_trace(cut).dropped_bytes
    assert dropped > 0
    code, out, err = cli(capsys, "info", cut)
    assert code == 0
    note = f"truncated: {dropped} bytes of an incomplete last frame dropped"
    assert err.splitlines() == [f"guidance-tui: warning: {cut}: {note}"]
    f = info_fields(out)
    assert f["status"] == "incomplete (no run end)"
    assert f["warning"] == note


# -- export ---------------------------------------------------------------------------
def test_export_writes_one_json_object_per_event_in_seq_order(capsys, trace):
    code, out, err = cli(capsys, "export", trace, "--format", "jsonl")
    assert code == 0 and err == ""
    rows = [json.loads(line) for line in out.splitlines()]
    events = read_trace(trace).events
    assert [r["seq"] for r in rows] == list(range(len(events)))
    assert [r["type"] for r in rows] == ["run_start", "node_open", "token", "token", "token", "backtrack", "token",
                                         "capture", "node_close", "run_end"]
    assert [r["t_us"] for r in rows] == [e.t_us for e in events]


def test_export_writes_bytes_as_base64_next_to_their_text(capsys, trace):
    _, out, _ = cli(capsys, "export", trace)
    rows = [json.loads(line) for line in out.splitlines()]
    tok = rows[3]
    assert base64.b64decode(tok["bytes"]) == b" yes" and tok["text"] == " yes"
    assert tok["kind"] == "generated"
    alt = tok["top"][1]
    assert base64.b64decode(alt["bytes"]) == b"\xf0\x9f" and alt["text"] == display_text(b"\xf0\x9f")
    assert alt["masked"] is True and alt["id"] == 3
    assert rows[5]["text"] == "!" and base64.b64decode(rows[5]["bytes"]) == b"!"


def test_export_writes_nan_as_a_string(capsys, trace):
    _, out, _ = cli(capsys, "export", trace)
    assert "NaN" in out and "null" not in out
    rows = [json.loads(line) for line in out.splitlines()]
    tok = rows[3]
    assert tok["prob"] == "NaN" and tok["prob_raw"] == 0.5 and tok["top"][0]["prob"] == "NaN"
    assert rows[7]["log_prob"] == "NaN"


def test_export_round_trips_to_the_same_trace_nan_included(capsys, tmp_path):
    events = list(TraceStore(synthetic_events(500, seed=9, gpus=1), clock=fake_clock()).events())
    path = tmp_path / "syn.gtt"
    write_trace(path, events + run_events())
    _, out, _ = cli(capsys, "export", path)
    back = read_jsonl(out.splitlines())
    assert any(isinstance(e, Token) and math.isnan(e.prob) for e in back)
    # repr shows every field, floats exactly and NaN as nan
    original = [repr(e) for e in read_trace(path).events]
    assert [repr(e) for e in back] == original
    assert [repr(e) for e in decode_trace(encode_trace(back)).events] == original


def test_export_to_a_file_writes_the_same_lines_and_nothing_on_stdout(capsys, tmp_path, trace):
    _, to_stdout, _ = cli(capsys, "export", trace)
    target = tmp_path / "out.jsonl"
    code, out, err = cli(capsys, "export", trace, "-o", target)
    assert code == 0 and out == "" and err == ""
    assert target.read_text() == to_stdout


def test_export_to_an_unwritable_place_is_a_one_line_error(capsys, tmp_path, trace):
    code, out, err = cli(capsys, "export", trace, "-o", tmp_path / "no" / "such" / "dir.jsonl")
    assert code != 0 and out == ""
    assert len(err.splitlines()) == 1 and "cannot write" in err
    assert not list((tmp_path).glob("*.tmp*"))


# -- bad input ----------------------------------------------------------------------------
def make_bad(kind: str, tmp_path: Path) -> Path:
    path = tmp_path / f"{kind}.gtt"
    good = encode_trace(run_events())
    if kind == "missing":
        return path
    if kind == "directory":
        path.mkdir()
    elif kind == "foreign":
        path.write_bytes(b"%PDF-1.7\n" + b"x" * 100)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "corrupt":
        path.write_bytes(good[:40] + b"\xff" * 12 + good[40:])
    elif kind == "newer":
        path.write_bytes(good[:8] + struct.pack("<H", 999) + good[10:])
    return path


BAD = ["missing", "directory", "foreign", "empty", "corrupt", "newer"]


@pytest.mark.parametrize("command", ["info", "export"])
@pytest.mark.parametrize("kind", BAD)
def test_bad_input_is_one_line_on_stderr_and_a_nonzero_exit(capsys, tmp_path, kind, command):
    path = make_bad(kind, tmp_path)
    code, out, err = cli(capsys, command, path)
    assert code != 0
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("guidance-tui: ") and str(path) in lines[0]
    assert "Traceback" not in err


# -- as a real command ------------------------------------------------------------------------
def command(*argv, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "guidance_tui", *map(str, argv)], cwd=ROOT, capture_output=True,
                          timeout=120, **kw)


def test_module_command_info_and_export(trace):
    info = command("info", trace)
    assert info.returncode == 0 and info.stderr == b""
    assert info_fields(info.stdout.decode())["tokens"] == "4 (prompt 1, generated 2, forced 1)"
    export = command("export", trace)
    assert export.returncode == 0
    assert len(export.stdout.decode().splitlines()) == 10


@pytest.mark.parametrize("kind", ["corrupt", "missing"])
def test_module_command_bad_input_exits_nonzero_with_one_line(tmp_path, kind):
    proc = command("info", make_bad(kind, tmp_path))
    assert proc.returncode == 1
    err = proc.stderr.decode()
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_console_script_runs_info(trace):
    exe = Path(sys.executable).parent / "guidance-tui"
    if not exe.exists():
        pytest.skip("guidance-tui console script not installed (pip install -e .)")
    proc = subprocess.run([str(exe), "info", str(trace)], capture_output=True, timeout=120)
    assert proc.returncode == 0 and b"status:" in proc.stdout


def test_export_into_a_closed_pipe_stops_quietly(tmp_path):
    path = tmp_path / "big.gtt"
    write_trace(path, TraceStore(synthetic_events(3000, seed=1)).events())  # a few MB of JSON
    proc = subprocess.Popen([sys.executable, "-m", "guidance_tui", "export", str(path)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ})
    assert proc.stdout.readline().startswith(b'{"type":"run_start"')
    proc.stdout.close()  # like `| head -1`
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 0
    assert err == b""


def test_export_round_trips_after_mask_alternatives_and_probability_kinds(capsys, tmp_path):
    from tracing import ProbKind

    events = run_events()
    events[3].top_allowed = [Alt(2, b" yes", 0.75, False), Alt(7, b" no", 0.25, False)]
    events[6].prob_kind = ProbKind.AFTER_SAMPLING
    path = tmp_path / "after.gtt"
    write_trace(path, events)
    _, out, _ = cli(capsys, "export", path)
    back = read_jsonl(out.splitlines())
    assert [repr(e) for e in back] == [repr(e) for e in read_trace(path).events]
    assert back[3].top_allowed[1] == Alt(7, b" no", 0.25, False) and back[6].prob_kind == ProbKind.AFTER_SAMPLING
