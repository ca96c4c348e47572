"""What the app paints, and when: a seek is painted at once, scrollbars and the timeline are
drawn as Textual draws them but only when they change, a live stream does not recolour the
view for every small change of the latency median."""

from __future__ import annotations

import asyncio
import random

from _app_support import _tok, sync, synthetic_store
from textual.scrollbar import ScrollBar

from guidance_tui.app import InspectorApp
from guidance_tui.widgets.line_list import LineScrollBar
from guidance_tui.widgets.timeline_bar import mark_cells
from tracing import TraceStore

SIZE = (100, 30)


def _textual_rows(bar: ScrollBar) -> list:
    """The rows Textual's own ScrollBar draws for ``bar`` as it stands (its visual pipeline)."""
    bar._render_content()
    return list(bar._render_cache.lines)


@sync
async def test_the_line_lists_scrollbar_draws_exactly_what_textuals_does():
    app = InspectorApp(synthetic_store(3000))
    async with app.run_test(size=SIZE) as pilot:
        view = app.inspector.token_view
        await pilot.press("end")
        for top in (0, 7, 50, 10**6):
            view.scroll_to_line(top)
            await pilot.pause()
            bar = view.vertical_scrollbar
            assert isinstance(bar, LineScrollBar) and bar.display
            ours = [bar.render_line(y) for y in range(bar.size.height)]
            assert ours == _textual_rows(bar)
            assert any(seg.style.reverse for row in ours for seg in row)  # a thumb is drawn


@sync
async def test_a_scrollbar_whose_rows_do_not_change_is_not_repainted(monkeypatch):
    app = InspectorApp(synthetic_store(3000))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("end")
        bar = app.inspector.token_view.vertical_scrollbar
        bar.render_lines(bar.size.region)  # painted as it stands
        asked = []
        real = ScrollBar.refresh

        def refresh(self, *args, **kwargs):  # Textual's, under LineScrollBar's
            if self is bar:
                asked.append(args)
            return real(self, *args, **kwargs)

        monkeypatch.setattr(ScrollBar, "refresh", refresh)
        bar.refresh()  # nothing moved
        assert not asked
        bar.position = 0  # the thumb moves to the top
        assert asked


def test_the_timelines_backtrack_marks_are_one_per_cell_as_rounding_puts_them():
    rng = random.Random(5)
    for _ in range(200):
        end = rng.randrange(1, 10**6)
        seqs = sorted(rng.randrange(0, end) for _ in range(rng.randrange(0, 2000)))
        scale = (rng.randrange(4, 200) - 1) / end
        assert mark_cells(seqs, scale) == {int(round(s * scale)) for s in seqs}
    for end in range(1, 200):  # every seq of a short run: cells on exact halves included
        scale = 7 / end
        assert mark_cells(range(end + 1), scale) == {int(round(s * scale)) for s in range(end + 1)}


@sync
async def test_a_seek_is_painted_at_the_next_idle_without_textuals_update_timer():
    app = InspectorApp(synthetic_store(800))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        screen = app.inspector
        screen._update_timer.stop()  # Textual's own way to the screen: gone
        painted = []
        real_display = app._display
        app._display = lambda s, renderable: (painted.append(renderable is not None), real_display(s, renderable))

        async def paints() -> bool:
            for _ in range(100):
                if painted:
                    return True
                await asyncio.sleep(0.01)
            return False

        screen.token_view.refresh()  # not a user's action: waits for the (stopped) timer
        assert not await paints()
        await pilot.press("home")
        assert await paints()
        assert screen.detail_pane.shown_token == 0


@sync
async def test_a_small_change_of_the_latency_median_does_not_recolour_a_streaming_view():
    store = TraceStore()
    app = InspectorApp(store, live=True, use_monitor=False)
    async with app.run_test(size=SIZE) as pilot:
        view = app.inspector.token_view
        assert view.options.underline_metric == "latency"

        async def add(latencies) -> None:
            for lat in latencies:
                tok = _tok(1, 0, " a")
                tok.latency_us = lat
                store.append(tok)
            n = store.last_seq
            while app.inspector.cursor.seq < n:
                await pilot.pause(0.02)

        await add([20_000] * 8)
        gen, median = view._style_gen, view._median
        assert median == 20_000
        await add([21_000] * 16)  # the median moves 5 %: the tokens keep the one they were drawn with
        assert app.inspector.index.median_latency() == 21_000
        assert (view._style_gen, view._median) == (gen, median)
        await add([40_000] * 48)  # it doubles: every token is drawn again against the new one
        assert view._median == 40_000 and view._style_gen > gen
