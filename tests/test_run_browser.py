"""The run browser: `guidance-tui`, `guidance-tui runs` and `runs --plain`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from _app_support import sync
from textual.widgets import DataTable

from guidance_tui.app.inspector_screen import InspectorScreen
from guidance_tui.app.runs_screen import ConfirmDelete, RunsScreen
from guidance_tui.cli import main
from guidance_tui.cli.app_commands import make_app
from tracing import RunEnd, RunStart, write_trace
from tracing import runs
from tracing.synthetic import synthetic_events

SIZE = (120, 30)


@pytest.fixture()
def rdir(tmp_path, monkeypatch) -> Path:
    d = tmp_path / "runs"
    monkeypatch.setenv(runs.RUNS_ENV, str(d))
    runs.runs_dir()
    return d


def make_run(d: Path, name: str, script: str, n: int, status: str | None, mtime: int) -> Path:
    events = [e for e in synthetic_events(n, seed=n) if type(e) not in (RunStart, RunEnd)]
    start = RunStart(script=script, model="/m/gemma-3-270m.gguf", backend="llamacpp", wall_time=1_700_000_000 + mtime)
    end = [RunEnd(status=status)] if status else []
    path = d / name
    write_trace(path, [start, *events, *end])
    os.utime(path, (mtime, mtime))
    return path


@pytest.fixture()
def three_runs(rdir):
    a = make_run(rdir, "a.gtt", "classify.py", 40, "done", 1000)
    b = make_run(rdir, "b.gtt", "extract.py", 80, "error", 2000)
    c = make_run(rdir, "c.gtt", "story.py", 20, None, 3000)  # no end, no writer: died
    return a, b, c


def table_rows(screen: RunsScreen) -> list[list[str]]:
    t = screen.query_one("#runs-table", DataTable)
    return [[str(c) for c in t.get_row_at(i)] for i in range(t.row_count)]


@sync
async def test_the_browser_lists_runs_newest_first_with_their_figures(three_runs):
    app = make_app(None, browse=runs.runs_dir())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, RunsScreen)
        rows = table_rows(screen)
        assert [r[1] for r in rows] == ["story.py", "extract.py", "classify.py"]
        assert [r[0] for r in rows] == ["died", "error", "done"]
        assert rows[0][2] == "gemma-3-270m.gguf"


@sync
async def test_filter_and_sort(three_runs):
    app = make_app(None, browse=runs.runs_dir())
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        await pilot.press("slash", *"extract")
        await pilot.pause()
        assert [r[1] for r in table_rows(screen)] == ["extract.py"]
        await pilot.press("escape")
        await pilot.pause()
        assert len(table_rows(screen)) == 3
        await pilot.press("s")  # by tokens, most first
        await pilot.pause()
        assert screen.sort_by == "tokens"
        tokens = [int(r[3].replace(",", "")) for r in table_rows(screen)]
        assert tokens == sorted(tokens, reverse=True)


@sync
async def test_enter_opens_a_run_and_q_comes_back(three_runs):
    app = make_app(None, browse=runs.runs_dir())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("down", "enter")  # extract.py
        await pilot.pause()
        assert isinstance(app.screen, InspectorScreen)
        assert app.screen.status == "error" and app.screen.metrics_bar.title == "b.gtt"
        await pilot.press("q")
        await pilot.pause()
        assert isinstance(app.screen, RunsScreen) and app.is_running
        await pilot.press("q")
        await pilot.pause()
    assert app.return_value == 0


@sync
async def test_d_deletes_after_a_confirmation(three_runs):
    a, b, c = three_runs
    app = make_app(None, browse=runs.runs_dir())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("d")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmDelete)
        await pilot.press("n")  # keep it
        await pilot.pause()
        assert c.exists()
        await pilot.press("d", "y")
        await pilot.pause()
        assert not c.exists() and a.exists() and b.exists()
        assert [r[1] for r in table_rows(app.screen)] == ["extract.py", "classify.py"]


@sync
async def test_D_deletes_every_finished_run_the_filter_shows(three_runs):
    a, b, c = three_runs
    app = make_app(None, browse=runs.runs_dir())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("slash", *"error died", "enter")  # every word must match: none does
        await pilot.pause()
        assert table_rows(app.screen) == []
        await pilot.press("slash")
        app.screen.query_one("#runs-query").value = "extract"
        await pilot.press("enter", "D")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmDelete)
        await pilot.press("y")
        await pilot.pause()
        assert not b.exists() and a.exists() and c.exists()


@sync
async def test_an_empty_runs_directory_shows_an_empty_state(rdir):
    app = make_app(None, browse=rdir)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        empty = app.screen.query_one("#runs-empty")
        assert empty.display and "No runs yet" in str(empty.render())


def test_runs_plain_prints_one_run_per_line_with_its_path(three_runs, capsys):
    assert main(["runs", "--plain"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:2] == ["status", "script"]
    assert len(out) == 4
    assert out[1].startswith("died") and out[1].endswith("c.gtt")
    assert "extract.py" in out[2] and out[2].endswith("b.gtt")


def test_runs_without_a_terminal_prints_the_table(three_runs, capsys):
    assert main(["runs", "classify"]) == 0  # stdout is captured: not a terminal
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and "classify.py" in out[1]


def test_runs_plain_in_an_empty_directory_says_so(rdir, capsys):
    assert main(["runs", "--plain"]) == 0
    assert "no runs in" in capsys.readouterr().err


def test_a_bad_runs_directory_is_one_line(tmp_path, monkeypatch, capsys):
    f = tmp_path / "file"
    f.write_text("")
    monkeypatch.setenv(runs.RUNS_ENV, str(f))
    assert main(["runs", "--plain"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a directory" in err


def test_browser_snapshot(monkeypatch, snap_compare):
    import shutil
    import tempfile

    d = Path(tempfile.gettempdir()) / "guidance-tui-snapshot-runs"  # the title shows the path: a fixed one
    shutil.rmtree(d, ignore_errors=True)
    monkeypatch.setenv(runs.RUNS_ENV, str(d))
    runs.runs_dir()
    make_run(d, "a.gtt", "classify.py", 40, "done", 1000)
    make_run(d, "b.gtt", "extract.py", 80, "error", 2000)
    make_run(d, "c.gtt", "story.py", 20, None, 3000)
    app = make_app(None, browse=d)
    assert snap_compare(app, terminal_size=SIZE)
