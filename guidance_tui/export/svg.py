"""A picture of a run: the inspector's own screen, drawn headless, as SVG.

The app is run with Textual's headless driver (``App.run_test``) over the
recorded events, at a chosen size, with no live monitor; once it has taken in
every event (the cursor at the end of the run), ``App.export_screenshot``
gives the SVG: the token stream coloured by probability, the program tree,
the token detail and the metrics bar, exactly as the app draws them.
"""

from __future__ import annotations

import asyncio
from typing import Iterable

from tracing import AnyEvent

DEFAULT_SIZE = (120, 40)
SETTLE_TIMEOUT_S = 30.0


def parse_size(text: str) -> tuple[int, int]:
    """``"120x40"`` → (120, 40); ValueError for anything else (at least 40x12, at most 1000x500)."""
    cols, sep, rows = text.lower().partition("x")
    if not sep:
        raise ValueError(f"size {text!r}: expected COLUMNSxROWS, e.g. 120x40")
    try:
        c, r = int(cols), int(rows)
    except ValueError:
        raise ValueError(f"size {text!r}: expected COLUMNSxROWS, e.g. 120x40") from None
    if not (40 <= c <= 1000 and 12 <= r <= 500):
        raise ValueError(f"size {text!r}: between 40x12 and 1000x500")
    return c, r


def render_svg(events: Iterable[AnyEvent], *, title: str = "trace", size: tuple[int, int] = DEFAULT_SIZE,
               theme: str | None = None) -> str:
    """The SVG the app's screenshot gives for these events, at ``size`` (columns, rows)."""
    return asyncio.run(render_svg_async(events, title=title, size=size, theme=theme))


async def render_svg_async(events: Iterable[AnyEvent], *, title: str = "trace",
                           size: tuple[int, int] = DEFAULT_SIZE, theme: str | None = None) -> str:
    from tracing import TraceStore

    from guidance_tui.app import InspectorApp

    store = TraceStore(list(events))
    app = InspectorApp(store, title=title, use_monitor=False, theme=theme or "textual-dark")
    async with app.run_test(size=size) as pilot:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SETTLE_TIMEOUT_S
        screen = app.inspector
        while loop.time() < deadline:
            await pilot.pause(0.05)
            if screen.index.last_seq >= store.last_seq:
                break
        await pilot.pause(0.2)  # a frame after the last events were taken in
        return app.export_screenshot(title=f"guidance-tui · {title}")
