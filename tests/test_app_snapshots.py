"""Snapshots of the inspector's key screens (``pytest --snapshot-update`` to accept changes).

The traces are deterministic (fixed seeds, fixed clocks), the replay app reads
no live monitor and nothing on screen blinks, so the pictures are stable.
"""

from __future__ import annotations

from _app_support import small_store, synthetic_store

from guidance_tui.app import InspectorApp


def replay_app(store) -> InspectorApp:
    return InspectorApp(store, title="trace.gtt", use_monitor=False)


def test_replay_at_80x24(snap_compare):
    assert snap_compare(replay_app(synthetic_store(600)), terminal_size=(80, 24))


def test_replay_at_140x40(snap_compare):
    assert snap_compare(replay_app(synthetic_store(600, gpus=1)), terminal_size=(140, 40))


def test_token_detail_of_a_sampled_token(snap_compare):
    # Home, then a few tokens in: a generated token with its top-k table.
    assert snap_compare(replay_app(synthetic_store(600)), press=["home", *["right"] * 6],
                        terminal_size=(110, 32))


def test_backtrack_pane_after_jumping_to_a_backtrack(snap_compare):
    assert snap_compare(replay_app(synthetic_store(600)), press=["home", "b", "b", "k"], terminal_size=(120, 32))


def test_node_highlight_from_the_tree(snap_compare):
    async def choose(pilot):
        await pilot.pause()
        app = pilot.app
        tree = app.inspector.tree_pane
        tree.focus()
        tree.choose(tree.trace.by_id[2])
        await pilot.pause()

    assert snap_compare(replay_app(small_store()), run_before=choose, terminal_size=(100, 28))


def test_error_run_at_80x24(snap_compare):
    assert snap_compare(replay_app(small_store(error=True)), terminal_size=(80, 24))


def test_help_screen(snap_compare):
    assert snap_compare(replay_app(small_store()), press=["question_mark"], terminal_size=(80, 24))


def test_latency_colouring_with_visible_whitespace(snap_compare):
    assert snap_compare(replay_app(synthetic_store(300)), press=["c", "w"], terminal_size=(100, 30))


def test_compare_screen_of_two_runs(snap_compare):
    from test_compare import F, G, sentiment

    from guidance_tui.app.compare_screen import CompareApp
    from guidance_tui.state.compare import build_side, compare

    a = build_side(sentiment(), "a.gtt")
    b = build_side(sentiment(label=(("Sentiment", F, 1.0), (":", F, 1.0), (" neg", G, 0.3), ("ative", F, 1.0)),
                             model="other"), "b.gtt")
    assert snap_compare(CompareApp(compare(a, b)), terminal_size=(110, 30))
