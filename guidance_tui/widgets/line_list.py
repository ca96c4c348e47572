"""A scroll view over numbered lines, drawn with Textual's line API.

The token stream, the program tree and the backtrack list each draw only
their visible lines (``render_line``) and change their line count as a run
streams in.  This base keeps their scroll plumbing in one place, and with it
every call into Textual internals (Textual is pinned).
"""

from __future__ import annotations

from textual.geometry import Size
from textual.scroll_view import ScrollView


class LineList(ScrollView):
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
