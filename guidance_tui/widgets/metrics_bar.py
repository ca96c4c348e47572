"""The top line: run status and the run's figures at the cursor."""

from __future__ import annotations


from guidance_tui.state.cursor import At
from guidance_tui.state.stats import RunStats, stats_at
from guidance_tui.state.token_index import TokenIndex
from guidance_tui.widgets.strips import Run, RunsBar, runs_width
from guidance_tui.widgets.styles import Styles

STATUS_ICONS = {"running": "●", "done": "✔", "error": "✖", "interrupted": "■", "empty": "○"}
STATUS_COLORS = {"running": "accent", "done": "success", "error": "error", "interrupted": "warning",
                 "empty": "muted"}
MODES = {"live": "LIVE", "replay": "REPLAY", "loading": "LOADING"}


def fmt_rate(r: float | None) -> str:
    return "–" if r is None else (f"{r:.1f}" if r < 1000 else f"{r / 1000:.1f}k")


def fmt_secs(s: float | None) -> str:
    if s is None:
        return "–"
    return f"{s * 1000:.0f} ms" if s < 1 else f"{s:.2f} s"


class MetricsBar(RunsBar):
    DEFAULT_CSS = "MetricsBar { height: 1; }"

    def __init__(self, index: TokenIndex, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.index = index
        self.stats: RunStats | None = None
        self.mode = "replay"  # live | replay | loading
        self.title = ""
        self.text_styles = Styles()

    def show_at(self, at: At) -> None:
        self.show(stats_at(self.index, at.seq), at.mode)

    def apply_styles(self, styles: Styles) -> None:
        self.text_styles = styles
        self.refresh()

    def show(self, stats: RunStats, mode: str) -> None:
        if stats != self.stats or mode != self.mode:
            self.stats, self.mode = stats, mode
            self.refresh()

    def runs(self, width: int) -> list[Run]:
        """The line as (text, style) runs for a bar ``width`` cells wide."""
        c = self.text_styles
        muted = c.muted
        s = self.stats
        if s is None:
            return []
        wide = width >= 100
        color = c.status(STATUS_COLORS.get(s.status, "muted"))
        runs: list[Run] = [(f" {STATUS_ICONS.get(s.status, '?')} {s.status} ", color)]
        # Backtracks up to the cursor, out of the run's total (the Backtracks tab's count) when they differ.
        bts = f"{s.backtracks:,}" if s.backtracks == s.backtracks_total else f"{s.backtracks:,}/{s.backtracks_total:,}"
        parts: list[tuple[str, str, str]] = [  # (label before, value, label after)
            ("", f"{s.tokens:,}", " tok"),
            ("", "–" if s.forced_pct is None else f"{s.forced_pct:.0f}%", " forced"),
            ("", fmt_rate(s.tok_per_s), " tok/s"),
            ("TTFT ", fmt_secs(s.ttft_s), ""),
            ("", "–" if s.mean_latency_us is None else f"{s.mean_latency_us / 1000:.1f} ms", "/tok"),
            ("" if wide else "↶ ", bts, (" backtrack" if s.backtracks_total == 1 else " backtracks") if wide else ""),
        ]
        sep = " │ " if wide else " · "
        mode = MODES.get(self.mode, self.mode.upper())
        tail = f" {self.title}  {mode} " if self.title and width >= 110 else f" {mode} "
        room = width - runs_width(runs) - len(tail)
        for before, value, after in parts:  # what does not fit is dropped; the mode stays
            piece = [(sep, muted), (before, muted), (value, "bold"), (after, muted)]
            w = runs_width(piece)
            if w > room:
                break
            runs.extend(piece)
            room -= w
        if room > 0:
            runs.append((" " * room, ""))
        runs.append((tail, c.mode(self.mode)))
        return runs
