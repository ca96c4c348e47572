"""The timeline: play state, a scrubbable track with backtracks marked, the
cursor position in tokens and events, and whether the view follows a live run."""

from __future__ import annotations

import bisect

from textual import events
from textual.message import Message

from guidance_tui.state.cursor import At, Cursor
from guidance_tui.widgets.strips import Run, RunsBar, runs_width
from guidance_tui.widgets.styles import Styles


def fmt_speed(speed: float) -> str:
    return f"{speed:g}×"


def mark_cells(seqs, scale: float) -> set[int]:
    """``{round(s * scale) for s in seqs}`` for sorted ``seqs``, in a step per cell, not per
    seq: a long run has tens of thousands of backtracks and the track some 80 cells."""
    cells: set[int] = set()
    i, n = 0, len(seqs)
    while i < n:
        x = int(round(seqs[i] * scale))
        cells.add(x)
        j = bisect.bisect_left(seqs, (x + 0.5) / scale, i + 1)  # past the seqs that land on x
        while j > i + 1 and int(round(seqs[j - 1] * scale)) != x:  # (float error at the boundary)
            j -= 1
        i = j
    return cells


class TimelineBar(RunsBar):
    DEFAULT_CSS = "TimelineBar { height: 1; }"
    ELLIPSIS = False  # the track is cropped, never cut with "…"

    class Seek(Message):
        def __init__(self, seq: int) -> None:
            super().__init__()
            self.seq = seq

    def __init__(self, cursor: Cursor, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.cursor = cursor
        self.live = False
        self.text_styles = Styles()
        self._key = None
        self._track = (0, 0)  # x, width of the track, for clicks
        self._marks_key: tuple | None = None  # (end, backtracks) the cached marks are for
        self._marks_cache: dict[int, set[int]] = {}  # track width -> its cells holding a backtrack

    def show_at(self, at: At) -> None:
        self.sync()

    def apply_styles(self, styles: Styles) -> None:
        self.text_styles = styles
        self.refresh()

    def sync(self) -> None:
        c = self.cursor
        key = (c.seq, c.end_seq, c.playing, c.speed, c.following, self.live, len(c.index.bt_seqs), self.size.width)
        if key != self._key:
            self._key = key
            self.refresh()

    def runs(self, width: int) -> list[Run]:
        """The line as (text, style) runs for a bar ``width`` cells wide."""
        cur = self.cursor
        idx = cur.index
        c = self.text_styles
        muted = c.muted
        left: list[Run] = [(" ⏸ " if cur.playing else " ▶ ", c.accent),
                           (f"{fmt_speed(cur.speed):>5} ", muted)]
        k = idx.count_at(cur.seq)
        right: list[Run] = [(f" {k:,}", "bold"), (f"/{idx.n:,} tok", muted)]
        if width >= 100:
            right.append((f"  seq {max(cur.seq, 0):,}/{max(cur.end_seq, 0):,}", muted))
        if self.live:
            right.append(("  ● follow" if cur.following else "  ○ scrubbed",
                          c.accent if cur.following else c.muted))
        right.append((" ", ""))
        left_w = runs_width(left)
        track_w = max(4, width - left_w - runs_width(right) - 1)
        self._track = (left_w, track_w)
        end = max(cur.end_seq, 1)
        pos = int(round(max(cur.seq, 0) / end * (track_w - 1))) if cur.end_seq > 0 else 0
        marks = self._marks(track_w, end)
        played, rest = c.track_played, c.track_rest
        mark = c.track_mark
        # runs of equal style, not a call per cell
        cells = ["━" if x < pos else "─" for x in range(track_w)]
        kinds = [1 if x < pos else 2 for x in range(track_w)]
        for x in marks:
            if 0 <= x < track_w:
                kinds[x] = 3
        if 0 <= pos < track_w:
            cells[pos] = "●"
            kinds[pos] = 0
        styles = {0: c.accent, 1: played, 2: rest, 3: mark}
        runs = left
        start = 0
        for x in range(1, track_w + 1):
            if x == track_w or kinds[x] != kinds[start]:
                runs.append(("".join(cells[start:x]), styles[kinds[start]]))
                start = x
        runs.append((" ", ""))
        runs.extend(right)
        return runs

    def _marks(self, track_w: int, end: int) -> set[int]:
        """Track cells holding a backtrack (cached: a long run has thousands).  The track's
        width follows the digits of the position, so a seek often swaps between two or three
        widths: each keeps its own set."""
        bts = self.cursor.index.bt_seqs
        if self._marks_key != (end, len(bts)):
            self._marks_key = (end, len(bts))
            self._marks_cache = {}
        marks = self._marks_cache.get(track_w)
        if marks is None:
            marks = self._marks_cache[track_w] = mark_cells(bts, (track_w - 1) / end)
        return marks

    def on_click(self, event: events.Click) -> None:
        x0, w = self._track
        x = event.x - x0
        if 0 <= x < w and self.cursor.end_seq > 0:
            self.post_message(self.Seek(int(round(x / max(1, w - 1) * self.cursor.end_seq))))
