"""`guidance-tui compare A B`: the plain summary, its errors, and the compare screen in the app
(two files, and two branches of one run from the tree); branch marks in the token stream."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from _app_support import sync
from test_compare import F, G, P, Run, sentiment

from tracing import write_trace

from guidance_tui.cli import main

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture()
def two_traces(tmp_path):
    a, b = tmp_path / "a.gtt", tmp_path / "b.gtt"
    write_trace(a, sentiment())
    write_trace(b, sentiment(label=(("Sentiment", F, 1.0), (":", F, 1.0), (" negative", G, 0.3)), model="other"))
    return str(a), str(b)


def test_plain_prints_where_the_runs_diverge_with_both_texts(two_traces, capsys):
    assert main(["compare", *two_traces, "--plain"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("A: a.gtt  (m, llamacpp)\nB: b.gtt  (other, llamacpp)\n")
    assert "model differs: A m · B other" in out
    assert "first divergence: select label, at byte 11: the generated text differs" in out
    assert "  A │ Sentiment: ⟦positive" in out and "  B │ Sentiment: ⟦negative" in out
    assert "node " in out and "tok/s A" in out


def test_a_stdout_that_is_not_a_terminal_gets_the_summary(two_traces):
    # a real process, stdout a pipe: no app, the summary
    got = subprocess.run([sys.executable, "-m", "guidance_tui", "compare", *two_traces], capture_output=True,
                         text=True, cwd=ROOT, timeout=60)
    assert got.returncode == 0, got.stderr
    assert "first divergence: select label" in got.stdout
    assert "Textual" not in got.stderr and got.stderr == ""


def test_all_lists_every_node(two_traces, capsys):
    assert main(["compare", *two_traces, "--plain", "--all"]) == 0
    out = capsys.readouterr().out
    assert "per node (all):" in out
    table = out[out.index("per node (all):"):]
    assert "prompt text" in table and "gen reason" in table  # the same-text nodes too


def test_a_file_that_is_not_a_trace_is_a_one_line_error(two_traces, tmp_path, capsys):
    bad = tmp_path / "notes.txt"
    bad.write_text("hello\n")
    assert main(["compare", two_traces[0], str(bad), "--plain"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("guidance-tui: ") and err.count("\n") == 1 and "Traceback" not in err


def test_a_missing_file_is_a_one_line_error(two_traces, tmp_path, capsys):
    assert main(["compare", str(tmp_path / "nope.gtt"), two_traces[1], "--plain"]) == 1
    err = capsys.readouterr().err
    assert "nope.gtt" in err and err.count("\n") == 1


def test_a_trace_cut_short_still_compares_with_a_warning(two_traces, tmp_path, capsys):
    cut = tmp_path / "cut.gtt"
    data = Path(two_traces[1]).read_bytes()
    cut.write_bytes(data[: len(data) - 7])
    assert main(["compare", two_traces[0], str(cut), "--plain"]) == 0
    captured = capsys.readouterr()
    assert "warning" in captured.err and "A: a.gtt" in captured.out


# -- the screen -----------------------------------------------------------------------
def branched_events() -> list:
    """One base (a system prompt), then the same program twice on it: the second is a branch."""
    r = Run()
    r.node(1, "role", "system", [("<sys>", P), (" Be careful.", P)])
    r.node(2, "program", "classify", [("Review: good.", P), (" positive", G, 0.7)], base=1)
    r.node(3, "program", "classify", [("Review: bad.", P), (" negative", G, 0.6)], base=1)
    return r.end()


@sync
async def test_the_compare_screen_opens_on_the_first_divergence(two_traces):
    from guidance_tui.app.compare_screen import CompareApp, CompareScreen
    from guidance_tui.cli.compare_commands import load_comparison

    cmp = load_comparison(*two_traces)
    app = CompareApp(cmp)
    async with app.run_test(size=(110, 32)) as pilot:
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, CompareScreen)
        assert screen.nodes.cursor == cmp.first
        assert screen.tokens.pair is cmp.pairs[cmp.first]
        assert screen.tokens.first_diff == 2  # " positive" vs " negative", after the two forced tokens
        await pilot.press("n")  # the only difference: stays, and says so
        assert screen.nodes.cursor == cmp.first
        await pilot.press("down")
        assert screen.tokens.pair is cmp.pairs[cmp.first + 1]
        await pilot.press("f")
        assert screen.nodes.cursor == cmp.first
        await pilot.press("q")
    assert app.return_value == 0


@sync
async def test_two_branches_of_one_run_compare_from_the_tree():
    from guidance_tui.app import InspectorApp
    from guidance_tui.app.compare_screen import CompareScreen
    from tracing import TraceStore

    app = InspectorApp(TraceStore(branched_events()), use_monitor=False)
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.pause()
        scr = app.inspector
        tree = scr.tree_pane
        await pilot.press("t")
        tree.cursor_line = tree.row_of(tree.trace.by_id[2])
        await pilot.press("v")  # mark the first program's line
        assert "⇄ marked" in tree.label(tree.trace.by_id[2]).plain
        branch = tree.trace.by_id[3].parent
        assert branch.kind == "branch"
        tree.cursor_line = tree.row_of(branch)
        await pilot.press("v")  # and compare it with the branch
        await pilot.pause()
        assert isinstance(app.screen, CompareScreen)
        cmp = app.screen.cmp
        assert cmp.a.label == "program classify (node 2)" and cmp.b.label.endswith("(node 3)")
        assert [p.label for p in cmp.pairs] == ["program classify"]
        assert cmp.pairs[0].diverge_at == len("Review: ")
        await pilot.press("q")
        assert app.screen is scr  # back to the inspector


@sync
async def test_a_branch_is_marked_in_the_token_stream_with_what_it_continues_from():
    from test_app_pilot import visible_text

    from guidance_tui.app import InspectorApp
    from tracing import TraceStore

    app = InspectorApp(TraceStore(branched_events()), use_monitor=False)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        text = visible_text(app)
        assert "<sys> Be careful.Review: good. positive" in text.replace("\n", "")
        assert " ⑂ from role system  Review: bad. negative" in text  # a line of its own, with its mark
        marks = app.inspector.token_view.marks
        assert list(marks.labels.items()) == [(4, "⑂ from role system")]  # its first token, "Review: bad."
