"""The runs directory: privacy, the live registry, summaries and retention."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tracing import RunEnd, RunStart, TraceStore, write_trace
from tracing import runs
from tracing.runs import RunsDirError
from tracing.synthetic import synthetic_events


@pytest.fixture()
def rdir(tmp_path, monkeypatch):
    d = tmp_path / "runs"
    monkeypatch.setenv(runs.RUNS_ENV, str(d))
    return d


def make_trace(d, name: str, *, status: str | None = "done", n: int = 20, script: str = "s.py"):
    events = [RunStart(script=script, model="m", backend="llamacpp", wall_time=1000.0)]
    events += [e for e in synthetic_events(n) if type(e).__name__ not in ("RunStart", "RunEnd")]
    if status is not None:
        events.append(RunEnd(status=status))
    store = TraceStore(events)
    path = d / name
    write_trace(path, store.events())
    return path


# -- the directory ------------------------------------------------------------------
def test_the_runs_directory_is_created_private(rdir):
    assert runs.runs_dir() == rdir
    assert oct(os.stat(rdir).st_mode & 0o777) == oct(0o700)


def test_a_symlinked_runs_directory_is_refused(tmp_path, monkeypatch):
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(real)
    monkeypatch.setenv(runs.RUNS_ENV, str(tmp_path / "link"))
    with pytest.raises(RunsDirError, match="symlink"):
        runs.runs_dir()


def test_a_runs_directory_writable_by_others_is_refused(tmp_path, monkeypatch):
    d = tmp_path / "open"
    d.mkdir()
    os.chmod(d, 0o777)
    monkeypatch.setenv(runs.RUNS_ENV, str(d))
    with pytest.raises(RunsDirError, match="writable by others"):
        runs.runs_dir()


def test_a_runs_path_that_is_a_file_is_one_clear_line(tmp_path, monkeypatch):
    f = tmp_path / "runs"
    f.write_text("")
    monkeypatch.setenv(runs.RUNS_ENV, str(f))
    with pytest.raises(RunsDirError, match="not a directory") as e:
        runs.runs_dir()
    assert "\n" not in str(e.value)


def test_new_trace_files_are_named_for_the_script_and_private(rdir):
    p = runs.new_trace_path("/x/my script.py")
    assert p.parent == rdir and p.name.endswith("-my_script.gtt")
    runs.create_private_file(p)
    assert oct(os.stat(p).st_mode & 0o777) == oct(0o600)


# -- the registry -------------------------------------------------------------------
def test_a_registered_run_is_live_until_closed(rdir):
    reg = runs.register(rdir / "a.gtt", script="a.py", model="gemma")
    (live,) = runs.live_runs()
    assert (live.pid, live.script, live.model) == (os.getpid(), "a.py", "gemma")
    assert oct(os.stat(live.entry).st_mode & 0o777) == oct(0o600)
    assert runs.live_run_for(rdir / "a.gtt") is not None
    reg.close()
    assert runs.live_runs() == []


def test_an_entry_of_a_dead_process_is_stale_and_dropped(rdir):
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(proc.stdout)
    reg = runs.register(rdir / "a.gtt")
    reg.update(pid=dead)
    assert runs.live_runs() == []
    assert not os.path.exists(reg.path)  # cleaned up


def test_a_reused_pid_is_not_mistaken_for_the_writer(rdir):
    reg = runs.register(rdir / "a.gtt")
    reg.update(pid_start=reg.run.pid_start - 3600)  # our pid, but a process that started an hour earlier
    assert runs.live_runs() == []


def test_entries_of_another_user_are_ignored(rdir, monkeypatch):
    runs.register(rdir / "a.gtt")
    real = os.getuid()
    monkeypatch.setattr(os, "getuid", lambda: real + 1)
    assert runs.registry_entries(rdir) == []


# -- summaries ----------------------------------------------------------------------
def test_a_summary_is_read_once_then_cached(rdir, monkeypatch):
    runs.runs_dir()
    p = make_trace(rdir, "t.gtt", n=30)
    s = runs.summarize(p)
    assert (s.status, s.script, s.model) == ("done", "s.py", "m") and s.tokens > 0
    import tracing.fileformat

    monkeypatch.setattr(tracing.fileformat, "read_trace", lambda *a: pytest.fail("read the whole file again"))
    again = runs.summarize(p)
    assert again.tokens == s.tokens and again.status == "done"


def test_a_changed_file_is_summarised_again(rdir):
    runs.runs_dir()
    p = make_trace(rdir, "t.gtt", status=None)
    assert runs.summarize(p).status == "incomplete"
    make_trace(rdir, "t.gtt", status="error", n=40)
    assert runs.summarize(p).status == "error"


def test_a_damaged_file_is_listed_as_damaged(rdir):
    runs.runs_dir()
    (rdir / "bad.gtt").write_bytes(b"not a trace at all")
    (s,) = runs.list_runs()
    assert s.status == "damaged" and s.error


def test_a_file_with_a_damaged_frame_is_summarised_and_flagged(rdir):
    from guidance_tui.state.run_list import row_of
    from tracing.fileformat import FrameEncoder

    runs.runs_dir()
    events = [RunStart(script="s.py", model="m", backend="llamacpp", wall_time=1000.0)]
    events += [e for e in synthetic_events(200) if type(e).__name__ not in ("RunStart", "RunEnd")]
    events.append(RunEnd(status="done"))
    events = TraceStore(events).events()
    enc = FrameEncoder()
    data = bytearray(enc.header() + b"".join(enc.encode_batch(events[i:i + 10]) for i in range(0, len(events), 10)))
    data[len(data) // 2] ^= 0xFF  # one frame in the middle fails its checksum
    p = rdir / "hurt.gtt"
    p.write_bytes(bytes(data))
    s = runs.summarize(p)
    assert s.status == "done" and "damaged" in s.extra["damage"] and s.tokens > 0
    assert row_of(s).cells[0] == "done, damaged"


def test_runs_are_listed_live_first_then_newest_first_and_dead_writers_show_as_died(rdir):
    runs.runs_dir()
    old = make_trace(rdir, "old.gtt")
    make_trace(rdir, "died.gtt", status=None)
    live = make_trace(rdir, "live.gtt", status=None)
    os.utime(old, (1, 1))
    reg = runs.register(live)
    listed = runs.list_runs()
    assert [os.path.basename(s.path) for s in listed][0] == "live.gtt"
    status = {os.path.basename(s.path): s.status for s in listed}
    assert status == {"live.gtt": "live", "died.gtt": "died", "old.gtt": "done"}
    reg.close()


def test_the_recorder_writes_its_summary_so_listing_reads_no_trace(rdir, monkeypatch):
    runs.runs_dir()
    p = make_trace(rdir, "t.gtt")
    from tracing import read_trace

    runs.write_summary(p, read_trace(p).events)
    import tracing.fileformat

    monkeypatch.setattr(tracing.fileformat, "read_trace", lambda *a: pytest.fail("read the whole file"))
    (s,) = runs.list_runs()
    assert s.status == "done"
    assert json.loads((rdir / ".index" / "t.gtt.json").read_text())["status"] == "done"


# -- retention ----------------------------------------------------------------------
def test_retention_keeps_the_newest_runs_and_never_a_live_one(rdir):
    runs.runs_dir()
    paths = [make_trace(rdir, f"r{i}.gtt") for i in range(5)]
    for i, p in enumerate(paths):
        os.utime(p, (1000 + i, 1000 + i))
    live = paths[0]  # the oldest, but being written
    reg = runs.register(live)
    removed = runs.prune(keep=2)
    assert sorted(p.name for p in removed) == ["r1.gtt", "r2.gtt"]
    assert live.exists() and paths[3].exists() and paths[4].exists()
    reg.close()


def test_retention_by_size(rdir):
    runs.runs_dir()
    paths = [make_trace(rdir, f"r{i}.gtt", n=200) for i in range(3)]
    for i, p in enumerate(paths):
        os.utime(p, (1000 + i, 1000 + i))
    size = paths[0].stat().st_size
    removed = runs.prune(keep=100, max_bytes=int(size * 2.5))
    assert [p.name for p in removed] == ["r0.gtt"]


def test_deleting_a_live_run_is_refused(rdir):
    runs.runs_dir()
    p = make_trace(rdir, "t.gtt", status=None)
    reg = runs.register(p)
    with pytest.raises(RunsDirError, match="still being recorded"):
        runs.delete_run(p)
    reg.close()
    runs.delete_run(p)
    assert not p.exists()
