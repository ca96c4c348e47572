"""The plain transcript printed when stdout is not a terminal."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

from _app_support import small_events, small_store

from guidance_tui.run.plain import PlainTranscript
from tracing import TraceStore

ROOT = Path(__file__).resolve().parent.parent


def transcript(store, color=False) -> str:
    out = io.StringIO()
    t = PlainTranscript(store, file=out, color=color)
    t.finish(trace_path="/tmp/run.gtt")
    return out.getvalue()


def test_transcript_shows_roles_text_backtracks_and_a_summary():
    text = transcript(small_store())
    assert "[user]\nWhat is 2+2? 4 is[↶ grammar: ' is']. Sure" in text  # streamed, then taken back
    assert "answer = ' 4.'" in text
    last = text.rstrip("\n").splitlines()[-1]
    assert last.startswith("✔ done · 10 tokens (3 generated, 1 forced, 6 prompt) · 1 backtracks")
    assert last.endswith("trace /tmp/run.gtt")
    assert "\x1b[" not in text


def test_transcript_of_an_error_run_prints_the_traceback():
    text = transcript(small_store(error=True))
    assert "│ about to divide" in text
    assert "✖ ZeroDivisionError: division by zero" in text
    assert 'File "tiny.py", line 9' in text
    assert text.rstrip("\n").splitlines()[-1].startswith("✖ error")


def test_colour_marks_kinds_and_strikes_backtracked_text():
    text = transcript(small_store(), color=True)
    assert "\x1b[9m" in text  # struck through
    assert "\x1b[2mWhat" in text  # prompt dimmed


def test_pump_prints_only_what_is_new():
    events = small_events()
    store = TraceStore()
    out = io.StringIO()
    t = PlainTranscript(store, file=out, color=False)
    for ev in events[:5]:
        store.append(ev)
    assert t.pump() == 5
    first = out.getvalue()
    assert t.pump() == 0 and out.getvalue() == first
    for ev in events[5:]:
        store.append(ev)
    t.pump()
    assert out.getvalue().startswith(first)


def test_a_character_split_across_tokens_prints_whole():
    from tracing import Token

    store = TraceStore()
    data = "é😀".encode()
    store.append(Token(pos=0, id=1, bytes=data[:3]))
    store.append(Token(pos=3, id=2, bytes=data[3:]))
    out = io.StringIO()
    PlainTranscript(store, file=out, color=False).finish()
    assert out.getvalue().startswith("é😀\n")


def test_plain_transcript_and_cmd_app_do_not_import_textual():
    code = ("import sys, json, guidance_tui.run.plain, guidance_tui.cli.app_commands, guidance_tui.cli; "
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    mods = set(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert "textual" not in mods
    assert "engines" not in mods
