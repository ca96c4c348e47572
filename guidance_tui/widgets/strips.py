"""Rows drawn straight to Strips.

The one-line bars and the detail pane are redrawn on every cursor move.  A
Rich ``Text`` goes through Textual's visual pipeline (spans to content to
segments) each time; building the row's segments from ``(text, style)`` runs
costs a fraction of that, and the result is a plain Strip the widget can keep
until its content changes.
"""

from __future__ import annotations

from typing import Iterable

from rich.segment import Segment
from rich.style import Style
from textual.strip import Strip
from textual.widget import Widget

Run = tuple[str, str]  # text, Rich style spec ("" for none)

_STYLES: dict[str, Style] = {}


def style_of(spec: str) -> Style:
    """``Style.parse`` with a cache: the bars use a handful of specs, over and over."""
    st = _STYLES.get(spec)
    if st is None:
        st = _STYLES[spec] = Style.parse(spec) if spec else Style.null()
    return st


def runs_width(runs: Iterable[Run]) -> int:
    return sum(Segment(text).cell_length for text, _ in runs)


def runs_strip(runs: Iterable[Run], width: int, base: Style, *, ellipsis: bool = True) -> Strip:
    """One row of at most ``width`` cells: the runs over ``base``, cut with "…" when
    too long (``ellipsis``) or cropped.  A short row is left short: Textual pads it
    with the widget's background, as it does a rendered Text."""
    segs = [Segment(text, base + style_of(spec)) for text, spec in runs if text]
    strip = Strip(segs)
    if strip.cell_length > width:
        if ellipsis and width > 0:
            # As Rich's overflow="ellipsis": the last cell becomes "…" in the style it had.
            cut = strip.crop(0, width - 1)
            last = strip.crop(width - 1, width)
            style = next((s.style for s in last if s.text), base)
            return Strip([*cut, Segment("…", style)], width)
        return strip.crop(0, width)
    return strip


class RunsBar(Widget):
    """A one-row bar drawn from the (text, style) runs that :meth:`runs` gives."""

    ELLIPSIS = True  # a row too long for the bar ends in "…" (else it is cropped)

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        base = self.visual_style.rich_style
        if y != 0:
            return Strip.blank(width, base)
        return runs_strip(self.runs(width or 80), width, base, ellipsis=self.ELLIPSIS)

    def runs(self, width: int) -> list[Run]:
        """The row as (text, style) runs for a bar ``width`` cells wide."""
        raise NotImplementedError
