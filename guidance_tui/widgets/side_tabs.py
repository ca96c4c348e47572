"""The side tabs: program tree, backtracks and the script's output.

The Backtracks tab counts every backtrack of the run so far (the metrics bar
counts those up to the cursor).  Relabelling a tab re-lays out the screen, so
while backtracks stream in the label changes at most once a second, and the
latest count always lands in the end.
"""

from __future__ import annotations

import time

from textual.content import Content
from textual.widgets import Static, TabbedContent

RELABEL_GAP_S = 1.0


class SideTabs(TabbedContent):
    def __init__(self, *, id: str | None = None, initial: str = "") -> None:
        super().__init__(id=id, initial=initial)
        self._label = "Backtracks"  # what the Backtracks tab says now
        self._timer = None  # a relabel waiting for the gap
        self._at = 0.0
        self._count = 0

    def count_backtracks(self, n: int) -> None:
        self._count = n
        if _backtracks_label(n) == self._label or self._timer is not None:
            return
        wait = self._at + RELABEL_GAP_S - time.monotonic()
        if wait > 0:
            self._timer = self.set_timer(wait, self._relabel)
            return
        self._relabel()

    def _relabel(self) -> None:
        self._timer = None
        self._at = time.monotonic()
        label = _backtracks_label(self._count)
        try:
            tab = self.get_tab("tab-backtracks")
        except Exception:  # not composed yet, or being torn down
            return
        self._label = label
        if str(tab.label) != label:
            _relabel(tab, label)


def _backtracks_label(n: int) -> str:
    return f"Backtracks {n}" if n else "Backtracks"


def _relabel(tab, label: str) -> None:
    """Set a tab's label; without re-laying out the screen when its width is unchanged.

    ``ContentTab.label = ...`` always lays the whole screen out again (10-40
    ms here), and the Backtracks count changes every second while a run with
    many backtracks streams in: those were the slowest frames.  Same width,
    same place: only the tab needs drawing.  (Textual is pinned; this uses its
    ContentTab's ``_label`` field, the one place we do.)"""
    new = Content.from_text(label)
    if new.cell_length != tab.label.cell_length or not hasattr(tab, "_label"):
        tab.label = label
        return
    tab._label = new
    Static.update(tab, new, layout=False)
