"""The inspector app driven through Textual's pilot: behaviour, not pixels."""

from __future__ import annotations

import asyncio

import pytest
from _app_support import FakeRun, Producer, _tok, small_events, small_store, sync, synthetic_store
from textual.widgets import TabbedContent

from guidance_tui.app import InspectorApp
from guidance_tui.app.help import HelpScreen
from guidance_tui.widgets.backtrack_pane import LINES
from tracing import TraceStore
from tracing.synthetic import synthetic_events

SIZE = (100, 32)


def visible_text(app: InspectorApp) -> str:
    """The token stream as drawn (the lines on screen, scroll included)."""
    view = app.inspector.token_view
    return "\n".join(view.render_line(y).text.rstrip() for y in range(view.scrollable_content_region.height))


async def wait_for(pilot, predicate, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await pilot.pause(0.02)


@sync
async def test_scrubbing_moves_the_cursor_and_the_detail_pane_shows_that_token():
    app = InspectorApp(small_store())
    async with app.run_test(size=SIZE) as pilot:
        idx = app.inspector.index
        assert app.inspector.cursor.seq == app.inspector.cursor.end_seq
        await pilot.press("left")
        assert app.inspector.cursor.seq == idx.seqs[idx.n - 1]
        assert app.inspector.detail_pane.shown_token == idx.n - 1
        await pilot.press("left")
        await pilot.pause()
        assert app.inspector.cursor.seq == idx.seqs[idx.n - 2]
        assert app.inspector.detail_pane.shown_token == idx.n - 2
        text = app.inspector.detail_pane.plain_text()
        assert "forced" in text and "allowed 1" in text and "gen answer · open" in text
        assert "Sure" not in visible_text(app)  # the screen shows the store up to the cursor
        await pilot.press("home")
        assert app.inspector.cursor.seq == idx.seqs[0]
        assert visible_text(app).strip().startswith("user")
        await pilot.press("end")
        assert app.inspector.cursor.seq == app.inspector.cursor.end_seq
        assert "Sure" in visible_text(app)


@sync
async def test_jumping_to_a_backtrack_selects_the_token_it_took_back():
    app = InspectorApp(small_store())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("home", "b")
        await pilot.pause()
        idx = app.inspector.index
        bt = idx.backtracks[0]
        assert app.inspector.cursor.seq == bt.seq
        assert app.inspector.detail_pane.shown_token == bt.removed[-1]
        assert "taken back by backtrack 1" in app.inspector.detail_pane.plain_text()
        assert idx.backtracks_at(app.inspector.backtrack_pane.seq) == 1
        assert "? 4 is" in visible_text(app)  # struck through, still shown
        await pilot.press("x")  # hide backtracked tokens
        assert "? 4 is" not in visible_text(app)
        assert "? 4" in visible_text(app)
        await pilot.press("x")
        await pilot.press("B")
        assert app.inspector.cursor.seq == bt.seq  # no earlier backtrack: stays


@sync
async def test_choosing_a_backtrack_in_its_pane_moves_the_cursor_there():
    app = InspectorApp(synthetic_store(600))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("k")
        assert app.inspector.backtrack_pane.has_focus
        await pilot.press("home")
        app.inspector.backtrack_pane.highlighted = 2
        await pilot.press("enter")
        await pilot.pause()
        assert app.inspector.cursor.seq == app.inspector.index.backtracks[2].seq


def backtracks_tab_label(app: InspectorApp) -> str:
    return str(app.query_one("#tabs", TabbedContent).get_tab("tab-backtracks").label)


@sync
async def test_the_backtracks_tab_counts_the_whole_run_and_the_metrics_bar_those_up_to_the_cursor():
    app = InspectorApp(small_store())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert backtracks_tab_label(app) == "Backtracks 1"
        await pilot.press("home")
        bar = "".join(text for text, _ in app.inspector.metrics_bar.runs(SIZE[0]))
        assert "0/1 backtrack " in bar
        await pilot.press("end")
        bar = "".join(text for text, _ in app.inspector.metrics_bar.runs(SIZE[0]))
        assert "│ 1 backtrack " in bar and "/1 backtrack" not in bar


@sync
async def test_the_backtracks_tab_catches_up_with_backtracks_that_arrive_in_quick_succession():
    events = list(synthetic_events(1200, seed=5))
    half = len(events) // 2
    store = TraceStore()
    app = InspectorApp(store, live=True, use_monitor=False)
    async with app.run_test(size=SIZE) as pilot:
        for ev in events[:half]:
            store.append(ev)
        await wait_for(pilot, lambda: app.inspector.index.n > 0 and backtracks_tab_label(app) != "Backtracks")
        first = backtracks_tab_label(app)
        for ev in events[half:]:  # more backtracks, well within the tab's one-second relabel gap
            store.append(ev)
        await wait_for(pilot, lambda: app.inspector.cursor.end_seq == len(store) - 1)
        total = len(app.inspector.index.backtracks)
        assert first != f"Backtracks {total}"
        await wait_for(pilot, lambda: backtracks_tab_label(app) == f"Backtracks {total}", timeout=10.0)
        assert app.inspector.metrics_bar.stats.backtracks == app.inspector.metrics_bar.stats.backtracks_total == total


@sync
async def test_a_pane_in_an_inactive_tab_shows_the_cursor_once_its_tab_opens():
    app = InspectorApp(synthetic_store(3000))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("end", *["B"] * 5)  # the backtrack list sits in its inactive tab
        assert app.inspector.index.backtracks_at(app.inspector.cursor.seq) > app.inspector.backtrack_pane.size.height  # below its first page
        app.query_one("#tabs", TabbedContent).active = "tab-backtracks"  # as a click on the tab: no focus
        await pilot.pause()
        bts = app.inspector.backtrack_pane
        current = app.inspector.index.backtracks_at(app.inspector.cursor.seq) - 1
        line = current * LINES  # each backtrack takes LINES lines, in words
        top = bts.scroll_offset.y
        assert top <= line < top + bts.size.height
        marked = [y for y in range(bts.size.height) if bts.render_line(y).text.startswith("▸")]
        assert marked == [line - top]

        await pilot.press("end", "B", "B")  # now the tree is the hidden one
        await pilot.press("t")
        await pilot.pause()
        tree = app.inspector.tree_pane
        node = tree.trace.by_id[app.inspector.index.token(app.inspector._selected()).node_id]
        assert tree.cursor_line == tree.row_of(node)
        top = tree.scroll_offset.y
        assert top <= tree.cursor_line < top + tree.scrollable_content_region.height
        assert tree.label(node).plain in tree.render_line(tree.cursor_line - top).text


@sync
async def test_a_seek_holds_garbage_collection_only_until_its_frame_is_drawn():
    import gc

    app = InspectorApp(small_store())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert gc.isenabled()
        app.inspector.action_home()
        assert not gc.isenabled()
        await pilot.pause()
        assert gc.isenabled()
        app.inspector.action_end()
    assert gc.isenabled()  # the app went away before that frame: the collector is back all the same


@sync
async def test_next_low_probability_token():
    app = InspectorApp(small_store())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("home", "l")
        tok = app.inspector.index.token(app.inspector.detail_pane.shown_token)
        assert tok.bytes == b" is" and tok.prob < 0.1


@sync
async def test_selecting_a_tree_node_highlights_its_tokens_and_selects_its_first():
    app = InspectorApp(small_store())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("home")  # the node lies after the cursor: choosing it moves the cursor
        tree = app.inspector.tree_pane
        node = tree.trace.by_id[2]
        tree.focus()
        tree.choose(node)
        await pilot.pause()
        assert app.inspector.token_view.highlight == (node.open_seq, node.close_seq)
        first = app.inspector.index.count_at(node.open_seq)
        assert app.inspector.index.token(first).bytes == b" 4"
        assert app.inspector.detail_pane.shown_token == first
        assert app.inspector.cursor.seq >= node.close_seq
        await pilot.press("escape")
        assert app.inspector.token_view.highlight is None


@sync
async def test_clicking_a_token_selects_it_and_its_node():
    app = InspectorApp(small_store())
    async with app.run_test(size=SIZE) as pilot:
        view = app.inspector.token_view
        idx = app.inspector.index
        target = idx.n - 1  # " Sure", in the select node
        spot = next((x, y) for y in range(5) for x in range(60) if view.token_at_offset(x, y) == target)
        region = view.content_region
        await pilot.click(offset=(region.x + spot[0], region.y + spot[1]))
        await pilot.pause()
        assert app.inspector.detail_pane.shown_token == target
        assert tree_cursor_node_id(app) == 3


def tree_cursor_node_id(app: InspectorApp) -> int:
    node = app.inspector.tree_pane.cursor_node
    return getattr(node, "node_id", None)


@sync
async def test_an_error_run_shows_the_traceback_and_status_error():
    app = InspectorApp(small_store(error=True))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        pane = app.query_one("#error")
        assert pane.has_class("-shown")
        assert "ZeroDivisionError" in str(app.inspector.error_pane.body.render())
        assert app.inspector.metrics_bar.stats.status == "error"
        await pilot.press("left")  # before the RunEnd: no traceback yet...
        assert not pane.has_class("-shown")
        assert app.inspector.metrics_bar.stats.status == "error"  # ...but the run's status stays what it is


@sync
async def test_a_live_script_that_raises_is_marked_error_and_its_exit_code_returned():
    run = FakeRun(small_events(error=True), delay=0.002)
    app = InspectorApp(run.store, script_run=run, use_monitor=False)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, app.script_done.is_set)
        await wait_for(pilot, lambda: app.query_one("#error").has_class("-shown"))
        assert app.inspector.metrics_bar.stats.status == "error"
        await pilot.press("q")
    assert app.return_value == 3


@sync
async def test_live_mode_follows_the_end_and_stops_following_after_a_scrub():
    store = TraceStore()
    producer = Producer(store, n=4000, per_tick=10, interval=0.005)
    app = InspectorApp(store, live=True, use_monitor=False)
    async with app.run_test(size=SIZE) as pilot:
        producer.start()
        try:
            await wait_for(pilot, lambda: app.inspector.index.n > 200)
            await pilot.pause(0.1)
            assert app.inspector.cursor.following
            assert app.inspector.cursor.seq == app.inspector.cursor.end_seq
            await pilot.press("left")
            held = app.inspector.cursor.seq
            end_then = app.inspector.cursor.end_seq
            await wait_for(pilot, lambda: app.inspector.cursor.end_seq > end_then + 50)
            assert not app.inspector.cursor.following and app.inspector.cursor.seq == held
            await pilot.press("end")
            assert app.inspector.cursor.following
            await wait_for(pilot, lambda: app.inspector.cursor.end_seq > held + 100)
            await pilot.pause(0.1)
            assert app.inspector.cursor.seq == app.inspector.cursor.end_seq
        finally:
            producer.stop.set()
            producer.join()


@sync
async def test_play_advances_the_cursor_and_space_pauses():
    app = InspectorApp(synthetic_store(3000))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("home")
        start = app.inspector.cursor.seq
        await pilot.press("plus")  # 2×: ~90 tokens a second of this trace
        await pilot.press("space")
        assert app.inspector.cursor.playing
        await pilot.pause(0.3)
        assert app.inspector.cursor.seq > start
        await pilot.press("space")
        assert not app.inspector.cursor.playing
        held = app.inspector.cursor.seq
        await pilot.pause(0.1)
        assert app.inspector.cursor.seq == held


@sync
async def test_colour_and_underline_metrics_cycle():
    app = InspectorApp(small_store())
    async with app.run_test(size=SIZE) as pilot:
        opts = app.inspector.token_view.options
        assert opts.color_metric == "probability"
        await pilot.press("c")
        assert opts.color_metric == "latency"
        await pilot.press("c", "c")
        assert opts.color_metric == "probability"
        await pilot.press("u")
        assert opts.underline_metric == "probability"
        assert "underline: unlikely" in app.inspector.token_view.border_subtitle
        await pilot.press("w")
        assert opts.show_whitespace
        assert "·is" in visible_text(app)


@sync
async def test_help_opens_with_question_mark_and_closes_with_escape():
    app = InspectorApp(small_store())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("left")  # timeline keys do not leak through the modal
        assert app.inspector.cursor.seq == app.inspector.cursor.end_seq
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)


@sync
async def test_command_palette_runs_inspector_commands():
    app = InspectorApp(small_store())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("home")
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"next backtrack")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.inspector.cursor.seq == app.inspector.index.backtracks[0].seq)


def test_every_binding_has_an_id_and_a_description():
    from guidance_tui.app.actions import bindings

    BINDINGS = bindings()
    ids = [b.id for b in BINDINGS]
    assert all(ids) and len(set(ids)) == len(ids)
    assert all(b.description and b.tooltip for b in BINDINGS)


@pytest.mark.parametrize("size", [(80, 24), (160, 48)])
@sync
async def test_usable_at_small_and_large_sizes(size):
    app = InspectorApp(synthetic_store(800, gpus=1))
    async with app.run_test(size=size) as pilot:
        await pilot.press("home", "right", "right", "b", "l", "c", "x", "end")
        await pilot.pause()
        assert app.inspector.token_view.size.width >= 30
        assert app.inspector.detail_pane.display


@sync
async def test_a_live_run_on_a_machine_with_no_idle_core_is_drawn_less_often():
    from guidance_tui.state import pacer as app_module
    from tracing import Metric

    store = TraceStore()
    app = InspectorApp(store, live=True, use_monitor=False)
    async with app.run_test(size=SIZE) as pilot:
        assert app.inspector.pacer.stream_hz == app_module.STREAM_HZ
        store.append(Metric(cpu=99.0, ram_used=1, ram_total=2))
        await wait_for(pilot, lambda: app.inspector.pacer.stream_hz == app_module.STREAM_HZ_BUSY)
        assert app.inspector._tick_hz == app_module.STREAM_HZ_BUSY  # and ticks no more often than it draws
        store.append(Metric(cpu=85.0, ram_used=1, ram_total=2))  # between the thresholds: no change
        await pilot.pause(0.3)
        assert app.inspector.pacer.stream_hz == app_module.STREAM_HZ_BUSY
        store.append(Metric(cpu=40.0, ram_used=1, ram_total=2))
        await wait_for(pilot, lambda: app.inspector.pacer.stream_hz == app_module.STREAM_HZ)
        assert app.inspector._tick_hz == app_module.TICK_HZ
        store.append(_tok(1, 0, "a"))
        await wait_for(pilot, lambda: app.inspector.index.n == 1)  # the new timer ticks


@sync
async def test_a_live_run_pouring_in_events_is_drawn_less_often_and_most_stream_frames_draw_only_the_stream():
    import time

    from guidance_tui.state import pacer as app_module
    from tracing.synthetic import synthetic_events

    store = TraceStore()
    app = InspectorApp(store, live=True, use_monitor=False)
    events = [e for e in synthetic_events(100_000, seed=4) if type(e).__name__ != "Metric"]
    async with app.run_test(size=SIZE) as pilot:
        assert app.inspector.pacer.stream_hz == app_module.STREAM_HZ
        timeline_syncs, stream_frames = [], []
        real_sync, real_show = app.inspector.timeline_bar.sync, app.inspector.token_view.show_at
        app.inspector.timeline_bar.sync = lambda: (timeline_syncs.append(time.monotonic()), real_sync())
        app.inspector.token_view.show_at = lambda at: (stream_frames.append(time.monotonic()), real_show(at))
        # 4k events a tick, for about a second: far over FIREHOSE_EVENTS_S even on a slow machine
        t0 = time.monotonic()
        for i in range(0, len(events), 4_000):
            store.extend(events[i:i + 4_000])
            await pilot.pause(1 / app.inspector.pacer.tick_hz)
        assert app.inspector.pacer.stream_hz == app_module.STREAM_HZ_FIREHOSE
        # the timeline (a widget far from the stream: drawing it draws the whole screen) comes with
        # the slow panes, at their flood rate, not with every stream frame
        elapsed = time.monotonic() - t0
        assert timeline_syncs and len(timeline_syncs) <= elapsed * app_module.SLOW_PANE_HZ / 2 + 2
        assert len(stream_frames) > len(timeline_syncs)
        await wait_for(pilot, lambda: app.inspector.pacer.stream_hz == app_module.STREAM_HZ)  # the flood is over
        await wait_for(pilot, lambda: app.inspector.timeline_bar._key is not None and app.inspector.timeline_bar._key[1] == store.last_seq)


@sync
async def test_a_replayed_file_shows_a_tokens_top_k_read_on_demand(tmp_path):
    """The loader leaves the alternatives packed; the detail pane unpacks those of the token it shows."""
    from guidance_tui.state.loader import TraceLoader
    from tracing import Token, write_trace

    source = synthetic_store(600)
    path = tmp_path / "run.gtt"
    write_trace(path, source.events())
    tok = next(e for e in source.events() if isinstance(e, Token) and len(e.top) == 5 and any(a.masked for a in e.top))
    loader = TraceLoader(path)
    loader.load(100)
    app = InspectorApp(loader.store, loader=loader)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.inspector.loader is None)
        assert app.inspector.store[tok.seq].top == ()  # still packed
        app.inspector.cursor.seek(tok.seq)
        app.inspector._moved(True)
        await wait_for(pilot, lambda: app.inspector.detail_pane.shown_token == app.inspector.index.token_at(tok.seq))
        text = app.inspector.detail_pane.plain_text()
        assert "top-k" in text and "masked" in text and text.count("\n") >= 5
        got = app.inspector.store[tok.seq].top  # kept, as the file has them (probabilities in float16)
        assert [(a.id, a.bytes, a.masked) for a in got] == [(a.id, a.bytes, a.masked) for a in tok.top]
        assert all(abs(a.prob - b.prob) <= 1e-3 for a, b in zip(got, tok.top))


def painted_stream_text(app: InspectorApp) -> str:
    """The token stream as Textual paints it (through the widget's line cache, unlike
    ``visible_text``), rows joined back into text: tokens carry their leading space."""
    from textual.geometry import Region

    view = app.inspector.token_view
    region = view.scrollable_content_region
    lines = view.render_lines(Region(region.x - view.region.x, region.y - view.region.y, region.width, region.height))
    return "".join(strip.text.rstrip() for strip in lines)


@pytest.mark.parametrize("size", [(130, 40), (80, 24)])
@sync
async def test_a_replay_paints_every_word_of_a_wrapped_line_on_its_first_frame_and_after_a_resize(size):
    from _app_support import SENTENCE, long_line_events

    app = InspectorApp(TraceStore(long_line_events()))
    async with app.run_test(size=size) as pilot:
        await pilot.pause()
        assert SENTENCE in painted_stream_text(app)
        other = (80, 24) if size[0] == 130 else (130, 40)
        await pilot.resize_terminal(*other)
        await pilot.pause()
        await pilot.pause()
        assert SENTENCE in painted_stream_text(app)


def header_row(app: InspectorApp) -> str:
    """The metrics bar's row as drawn."""
    return app.inspector.metrics_bar.render_line(0).text


@pytest.mark.parametrize("title", ["forced_and_backtrack.py",
                                   "a_prompt_script_with_a_name_far_too_long_for_the_bar.py"])
@sync
async def test_at_80x24_the_header_keeps_the_script_name_token_and_backtrack_counts_and_mode(title):
    app = InspectorApp(small_store(), title=title)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        row = header_row(app)
        assert len(row) <= 80 and "done" in row and "10 tok" in row and "↶ 1" in row
        assert row.rstrip().endswith("REPLAY")
        if len(title) < 30:
            assert title in row
        else:  # cut short with an ellipsis, not dropped
            assert title[:20] in row and "…" in row
        await pilot.press("home")  # the backtrack count up to the cursor, out of the run's
        await pilot.pause()
        row = header_row(app)
        assert "done" in row and "1 tok" in row and "↶ 0/1" in row and title[:20] in row


# -- what-ifs: the detail pane's two lists, backtracks in words -----------------------------
def _constrained_run(prob_kind=0) -> TraceStore:
    """A select after "Sentiment:": the chosen token's top-k before the mask is masked digits."""
    from tracing import Alt, NodeClose, NodeOpen, RunEnd, RunStart, Token, TokenKind

    top = [Alt(10, b"1", 0.3, True), Alt(11, b"2", 0.2, True), Alt(12, b" negative", 2e-8, False)]
    allowed = [Alt(12, b" negative", 0.51, False), Alt(13, b" positive", 0.3, False), Alt(14, b" mixed", 0.19, False)]
    return TraceStore([
        RunStart(script="s.py"), NodeOpen(node_id=1, kind="select", name="label"),
        Token(id=12, bytes=b" negative", node_id=1, kind=TokenKind.GENERATED, prob=0.51, prob_raw=2e-8, top=top,
              top_allowed=allowed, allowed=3, prob_kind=prob_kind),
        NodeClose(node_id=1, stop_reason="grammar"), RunEnd(status="done")])


@sync
async def test_the_detail_pane_shows_and_labels_the_lists_before_and_after_the_mask():
    app = InspectorApp(_constrained_run(), use_monitor=False)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        text = app.inspector.detail_pane.plain_text(60)
        assert "p 51.0% after mask  2.0e-08 before" in text
        before, after = text.split("# top-k before the mask")[1].split("# after the mask (allowed)")
        assert "1 1" in before and "masked" in before and "·negative" in before
        rows = [line.split() for line in after.strip().splitlines()]
        assert [(r[0], r[1], r[-2] if r[-1] == "◂" else r[-1]) for r in rows] == [
            ("1", "·negative", "51.0%"), ("2", "·positive", "30.0%"), ("3", "·mixed", "19.0%")]
        assert rows[0][-1] == "◂"  # the chosen one


@sync
async def test_a_servers_probability_says_which_side_of_the_mask_it_is():
    from tracing import ProbKind

    app = InspectorApp(_constrained_run(ProbKind.BEFORE_MASK), use_monitor=False)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert "p 2.0e-08 before mask  after: not given" in app.inspector.detail_pane.plain_text(60)


@sync
async def test_a_backtrack_row_says_what_was_removed_why_and_what_came_next():
    app = InspectorApp(small_store(), use_monitor=False)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert app.inspector.backtrack_pane.row_text(0) == (
            "▸  1 removed ·is (1 token of gen answer)\n"  # ▸: the latest at the cursor (the end)
            "     the grammar re-cut the text into other tokens · replaced by: .")
