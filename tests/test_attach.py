"""Watching a run another process records: attach, several viewers, a writer that
dies, replay of a live run, the run browser and bad input."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from _app_support import sync

from guidance_tui import exit_codes
from guidance_tui.cli import main
from guidance_tui.cli.app_commands import make_app
from guidance_tui.state.follower import TraceFollower
from guidance_tui.state.sources import open_recording
from tracing import TraceStore, read_trace, runs

ROOT = Path(__file__).resolve().parent.parent
SIZE = (110, 32)

# A recording process with no model: synthetic events at a steady pace, as a
# program recording by default writes them (private file, registry entry).
WRITER = textwrap.dedent("""
    import sys, time
    from tracing import TraceStore, TraceWriter
    from tracing.runs import create_private_file, register
    from tracing.synthetic import synthetic_events
    path, n, pause = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    create_private_file(path)
    store = TraceStore()
    writer = TraceWriter(path, store, interval=0.02)
    reg = register(path, script="writer.py", model="synthetic")
    print("started", flush=True)
    for i, ev in enumerate(synthetic_events(n, seed=3)):
        store.append(ev)
        if i % 25 == 0:
            time.sleep(pause)
    writer.close()
    reg.close()
""")


@pytest.fixture()
def rdir(tmp_path, monkeypatch) -> Path:
    d = tmp_path / "runs"
    monkeypatch.setenv(runs.RUNS_ENV, str(d))
    runs.runs_dir()
    return d


def start_writer(rdir: Path, n: int = 600, pause: float = 0.02) -> tuple[subprocess.Popen, Path]:
    path = rdir / "live.gtt"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(n), str(pause)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True, env={**os.environ})
    assert proc.stdout.readline().strip() == "started"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and (not path.exists() or path.stat().st_size < 2000):
        time.sleep(0.02)  # some events are on disk: the viewer joins mid-run
    return proc, path


async def wait_for(pilot, predicate, timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await pilot.pause(0.05)


def same_events(store: TraceStore, path: Path) -> bool:
    return [(type(e), e.seq) for e in store.events()] == [(type(e), e.seq) for e in read_trace(path).events]


@sync
async def test_attach_mid_run_replays_what_it_missed_then_follows_to_the_end(rdir):
    proc, path = start_writer(rdir)
    rec = open_recording(path)
    assert rec.follower is not None and rec.loader is None  # the registry says it is live
    app = make_app(rec.store, **rec.screen_options())
    async with app.run_test(size=SIZE) as pilot:
        ins = app.inspector
        await wait_for(pilot, lambda: ins.index.n > 0)
        assert ins.status == "live" and ins.mode == "live"
        first = len(rec.store)
        proc.wait(timeout=60)
        await wait_for(pilot, lambda: rec.store.run_end() is not None)
        assert len(rec.store) > first  # followed, not a snapshot
        await wait_for(pilot, lambda: "done" in ins.metrics_bar.render_line(0).text)
        assert ins.status == "done" and ins.mode == "replay"
        assert "REPLAY" in ins.metrics_bar.render_line(0).text  # not LIVE once the run ended
        assert app.is_running  # the app stays open
    assert same_events(rec.store, path)


@sync
async def test_two_viewers_follow_one_run_and_the_writer_is_not_held_up(rdir):
    proc, path = start_writer(rdir, n=800, pause=0.01)
    other = TraceFollower(path)
    rec = open_recording(path)
    app = make_app(rec.store, **rec.screen_options())
    async with app.run_test(size=SIZE) as pilot:
        t0 = time.monotonic()
        while proc.poll() is None:
            other.poll()
            await pilot.pause(0.02)
        assert proc.returncode == 0 and time.monotonic() - t0 < 60
        await wait_for(pilot, lambda: rec.store.run_end() is not None)
    while other.poll():
        pass
    assert same_events(rec.store, path) and same_events(other.store, path)


@sync
async def test_a_writer_killed_mid_run_shows_as_died_with_everything_it_flushed(rdir):
    proc, path = start_writer(rdir, n=5000, pause=0.05)
    rec = open_recording(path)
    app = make_app(rec.store, **rec.screen_options())
    async with app.run_test(size=SIZE) as pilot:
        ins = app.inspector
        await wait_for(pilot, lambda: ins.index.n > 20)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        await wait_for(pilot, lambda: ins.status == "died")
        await wait_for(pilot, lambda: "died" in ins.metrics_bar.render_line(0).text)
        assert any("Writer gone" in str(n.title) for n in app._notifications)
        await pilot.pause(0.3)
        assert rec.store.run_end() is None
    assert same_events(rec.store, path)  # everything the file holds, nothing lost


def test_replay_of_a_run_being_written_follows_it(rdir, monkeypatch):
    proc, path = start_writer(rdir, n=400, pause=0.02)
    seen = {}

    def fake_attach(args):
        seen["target"] = args.target
        return 0

    monkeypatch.setattr("guidance_tui.cli.app_commands._stdout_is_terminal", lambda: True)
    monkeypatch.setattr("guidance_tui.cli.runs_commands.cmd_attach", fake_attach)
    assert main(["replay", str(path)]) == 0
    assert seen["target"] == str(path)
    proc.wait(timeout=60)


# -- choosing what to attach to -------------------------------------------------------
@pytest.fixture()
def terminal(monkeypatch):
    monkeypatch.setattr("guidance_tui.cli.app_commands._stdout_is_terminal", lambda: True)


def test_attach_with_no_live_run_is_one_line(rdir, terminal, capsys):
    assert main(["attach"]) == exit_codes.ERROR
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no live run" in err


def test_attach_to_a_process_that_records_nothing_is_one_line(rdir, terminal, capsys):
    assert main(["attach", "999999"]) == exit_codes.ERROR
    assert "process 999999 is recording no run" in capsys.readouterr().err


def test_attach_to_a_path_that_is_not_a_trace_is_one_line(rdir, terminal, tmp_path, capsys):
    bad = tmp_path / "notes.txt"
    bad.write_text("hello")
    assert main(["attach", str(bad)]) == exit_codes.ERROR
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "notes.txt" in err
    assert main(["attach", str(tmp_path / "missing.gtt")]) == exit_codes.USAGE


def test_attach_without_a_terminal_says_so(rdir, monkeypatch, capsys):
    monkeypatch.setattr("guidance_tui.cli.app_commands._stdout_is_terminal", lambda: False)
    assert main(["attach"]) == exit_codes.USAGE
    assert "needs a terminal" in capsys.readouterr().err


def test_replay_with_no_file_opens_the_newest_finished_run(rdir, monkeypatch):
    from tracing import write_trace
    from tracing.synthetic import synthetic_events

    old, new = rdir / "a.gtt", rdir / "b.gtt"
    for p in (old, new):
        write_trace(p, list(synthetic_events(30)))
    os.utime(old, (1, 1))
    monkeypatch.setattr("guidance_tui.cli.app_commands._stdout_is_terminal", lambda: False)
    opened = []
    import guidance_tui.state.loader as loader_mod

    real = loader_mod.TraceLoader

    def spy(path, *a, **kw):
        opened.append(Path(path).name)
        return real(path, *a, **kw)

    monkeypatch.setattr(loader_mod, "TraceLoader", spy)
    assert main(["replay"]) == 0
    assert opened == ["b.gtt"]


def test_replay_with_no_file_and_no_runs_is_one_line(rdir, capsys):
    assert main(["replay"]) == exit_codes.ERROR
    assert "no finished run" in capsys.readouterr().err


@pytest.mark.model
@sync
async def test_attach_to_a_plain_python_program_on_the_real_model(rdir, tmp_path):
    script = tmp_path / "story.py"
    script.write_text("from engines import gen, models\n"
                      "lm = models.default() + 'Once upon a time' + gen('story', max_tokens=60)\n"
                      "print(lm['story'])\n")
    proc = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        deadline = time.monotonic() + 120
        live = []
        while not live and time.monotonic() < deadline and proc.poll() is None:
            live = runs.live_runs()
            time.sleep(0.05)
        assert live and live[0].pid == proc.pid and live[0].script == str(script)
        rec = open_recording(live[0].trace)
        assert rec.follower is not None
        app = make_app(rec.store, **rec.screen_options())
        async with app.run_test(size=SIZE) as pilot:
            ins = app.inspector
            await wait_for(pilot, lambda: rec.store.run_end() is not None, timeout=180)
            await wait_for(pilot, lambda: ins.status == "done")
            assert ins.index.n > 0
    finally:
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    path = Path(live[0].trace)
    assert same_events(rec.store, path)
    assert oct(path.stat().st_mode & 0o777) == oct(0o600)
    assert runs.live_runs() == []  # the writer's entry is gone with it


def test_a_followed_file_with_a_damaged_frame_is_read_past_and_the_feed_says_so_once(tmp_path):
    from tracing import write_trace
    from tracing.synthetic import synthetic_events

    from guidance_tui.state.feed import LiveFeed
    from guidance_tui.state.token_index import TokenIndex

    path = tmp_path / "t.gtt"
    write_trace(path, list(synthetic_events(3000, seed=5)))  # several frames
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # a byte in a frame in the middle
    path.write_bytes(bytes(data))
    follower = TraceFollower(path, ask_registry=False)
    feed = LiveFeed(TokenIndex(follower.store), follower)
    warnings = [feed.pump(end_seq=-1).warning for _ in range(3)]
    assert warnings[0] and "byte" in warnings[0] and warnings[1:] == [None, None]
    assert follower.store.run_end() is not None  # the frames after the damage are kept
