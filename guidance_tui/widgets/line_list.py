"""A scroll view over numbered lines, drawn with Textual's line API.

The token stream, the program tree and the backtrack list each draw only
their visible lines (``render_line``) and change their line count as a run
streams in.  This base keeps their scroll plumbing in one place, and with it
every call into Textual internals (Textual is pinned).
"""

from __future__ import annotations

from rich.segment import Segment
from rich.style import Style
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.scrollbar import ScrollBar
from textual.strip import Strip


class LineScrollBar(ScrollBar):
    """A vertical scrollbar drawn as Strips, kept until it moves.

    Textual's draws a Rich renderable through the visual pipeline on every
    repaint: the two scrollbars of a seek (the stream's and the tree's) cost
    as much as the lines of the stream.  Same bar, same segments (Textual's
    ``render_bar``), one Strip per row."""

    def __init__(self, vertical: bool = True, name: str | None = None, *, thickness: int = 1) -> None:
        super().__init__(vertical, name, thickness=thickness)
        self._bar_key: tuple | None = None  # what _bar_rows were drawn for
        self._bar_rows: list[Strip] = []
        self._bar_segments: tuple | None = None  # the segments and base style _bar_rows were drawn from
        self._rows_now: list[Strip] | None = None  # the rows of the repaint under way
        self._shown_rows: list[Strip] | None = None  # the rows last painted or asked for

    def refresh(self, *regions, repaint: bool = True, layout: bool = False, recompose: bool = False):
        # A scroll view sets three reactives of its bar on every change of its line count: a
        # live stream grows a line at a time, the thumb moves an eighth of a cell now and then,
        # and a repainted bar makes the frame every row of the view tall.  Unchanged rows: no repaint.
        if (self.vertical and not (regions or layout or recompose) and self._shown_rows is not None
                and self.is_mounted and self.parent is not None and self.size.height):
            rows = self._rows()
            if rows is self._shown_rows or rows == self._shown_rows:
                return self
            self._shown_rows = rows
        return super().refresh(*regions, repaint=repaint, layout=layout, recompose=recompose)

    def render_lines(self, crop):
        if self.vertical:
            self._rows_now = None  # the bar is looked at once a repaint, not once a row
        return super().render_lines(crop)

    def render_line(self, y: int) -> Strip:
        if not self.vertical:
            return super().render_line(y)
        rows = self._rows_now
        if rows is None:
            rows = self._rows_now = self._shown_rows = self._rows()
        return rows[y] if 0 <= y < len(rows) else Strip.blank(self.size.width, self.visual_style.rich_style)

    def _rows(self) -> list[Strip]:
        bar = self.render()  # a ScrollBarRender: what Textual would draw, not yet drawn
        width, height = self.size
        base = self.visual_style.rich_style
        key = (width, height, bar.virtual_size, bar.window_size, bar.position, bar.style, base)
        if key != self._bar_key:
            self._bar_key = key
            style = bar.style if isinstance(bar.style, Style) else Style.parse(str(bar.style))
            segments = bar.render_bar(size=height, virtual_size=bar.virtual_size, window_size=bar.window_size,
                                      position=bar.position, thickness=width, vertical=True,
                                      back_color=style.bgcolor or Style.parse("on #555555").bgcolor,
                                      bar_color=style.color or Style.parse("bright_magenta").color).segments
            if (segments, base) != self._bar_segments:  # most changes of a long list's size move no eighth of a cell
                self._bar_segments = (segments, base)
                self._bar_rows = [Strip([Segment(seg.text, base + seg.style)], width) for seg in segments]
        return self._bar_rows


class LineList(ScrollView):
    @property
    def vertical_scrollbar(self) -> ScrollBar:
        """Textual's property (``Widget.vertical_scrollbar``), with a :class:`LineScrollBar`."""
        if self._vertical_scrollbar is None:
            bar = self._vertical_scrollbar = LineScrollBar(vertical=True, name="vertical",
                                                            thickness=self.scrollbar_size_vertical)
            bar.display = False
            self.app._start_widget(self, bar)
        return self._vertical_scrollbar

    @property
    def top_line(self) -> int:
        return self.scroll_offset.y

    @property
    def page_height(self) -> int:
        return self.scrollable_content_region.height

    def line_at(self, y: int) -> int:
        """The line drawn at row ``y`` of the view."""
        return y + self.scroll_offset.y

    def visible(self, line: int) -> bool:
        top = self.scroll_offset.y
        return top <= line < top + self.page_height

    def set_line_count(self, n: int, width: int | None = None) -> None:
        """Resize the scrollable area to ``n`` lines without laying out the screen again.

        Setting ``virtual_size`` the usual way re-lays out the whole screen: on
        every token of a live run, that was most of a frame.  The scrollbar is
        always shown, so nothing else moves; Textual's ``_scroll_update`` then
        fixes the scrollbars and the scroll range."""
        if width is None:
            width = self.scrollable_content_region.width or self.size.width
        size = Size(width, n)
        if size != self.virtual_size:
            self.set_reactive(ScrollView.virtual_size, size)
            self._scroll_update(size)

    def scroll_to_line(self, y: int) -> None:
        """Put line ``y`` at the top, now (no animation: a seek redraws at once)."""
        self.scroll_to(y=max(0, y), animate=False, immediate=True)

    def scroll_line_into_view(self, line: int, *, at: float = 1 / 3) -> None:
        """If ``line`` is off screen, scroll so that it sits ``at`` of the way down."""
        if not self.visible(line):
            self.scroll_to_line(line - int(self.page_height * at))
