"""`guidance-tui record` from the command line ends without the interpreter's teardown (os._exit), and
what Python's own exit would have done for the script still happens: its non-daemon threads finish,
a thread pool left open is stopped, its atexit handlers run, both streams are flushed, the exit status is the script's, the trace is
complete.  (A file the script leaves open in a reference cycle loses its buffer under ``record``
with or without this, as under ``runpy`` itself: CPython may close the buffer before the text layer.)  Also: the
OpenBLAS spin default is set for the process, and a value the user set wins.

No model: the script generates nothing (one process start each, ~1 s).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLI = str(Path(sys.executable).with_name("guidance-tui"))

SCRIPT = """
import atexit, os, sys, threading, time
out = sys.argv[1]

atexit.register(lambda: open(os.path.join(out, "atexit.txt"), "w").write("ran"))

def late():
    time.sleep(0.3)
    open(os.path.join(out, "thread.txt"), "w").write("finished")

threading.Thread(target=late).start()
from concurrent.futures import ThreadPoolExecutor
pool = ThreadPoolExecutor(1)  # never shut down: its worker is a non-daemon thread waiting for work
pool.submit(lambda: None).result()
open(os.path.join(out, "blas.txt"), "w").write(os.environ.get("OPENBLAS_THREAD_TIMEOUT", "unset"))
print("no newline at the end", end="")
if len(sys.argv) > 2:
    sys.exit(int(sys.argv[2]))
"""


def _record(tmp_path, name, *script_args, env_extra=None):
    out = tmp_path / name
    out.mkdir()
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    env.update({"GUIDANCE_TUI_RUNS": str(tmp_path / "runs"), **(env_extra or {})})
    trace = tmp_path / f"{name}.gtt"
    r = subprocess.run([CLI, "record", "-q", "-o", str(trace), str(script), str(out), *script_args],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    return r, out, trace


def _files(out):
    return {p.name: p.read_text() for p in out.iterdir()}


def test_record_exits_early_but_does_what_pythons_exit_does(tmp_path):
    from tracing import RunEnd, read_trace

    r, out, trace = _record(tmp_path, "ok")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "no newline at the end"  # the echo, flushed
    assert _files(out) == {"atexit.txt": "ran", "thread.txt": "finished", "blas.txt": "4"}
    ends = [ev for ev in read_trace(trace).events if type(ev) is RunEnd]
    assert [e.status for e in ends] == ["done"]
    assert r.stderr == f"trace: {trace}\n"  # flushed before the early exit


def test_record_exit_status_is_the_scripts_and_a_users_blas_setting_wins(tmp_path):
    from tracing import RunEnd, read_trace

    r, out, trace = _record(tmp_path, "three", "3", env_extra={"OPENBLAS_THREAD_TIMEOUT": "7"})
    assert r.returncode == 3, r.stderr
    assert _files(out)["blas.txt"] == "7"
    assert _files(out)["thread.txt"] == "finished"
    ends = [ev for ev in read_trace(trace).events if type(ev) is RunEnd]
    assert [e.status for e in ends] == ["error"]
    assert "status 3" in ends[0].error
