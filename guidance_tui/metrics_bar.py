"""The top line: run status and the run's figures at the cursor."""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget

from .stats import RunStats

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


class MetricsBar(Widget):
    DEFAULT_CSS = "MetricsBar { height: 1; }"

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.stats: RunStats | None = None
        self.mode = "replay"  # live | replay | loading
        self.title = ""
        self.pcolors: dict[str, str] = {}

    def show(self, stats: RunStats, mode: str) -> None:
        if stats != self.stats or mode != self.mode:
            self.stats, self.mode = stats, mode
            self.refresh()

    def render(self) -> Text:
        c = self.pcolors
        muted = c.get("muted", "dim")
        s = self.stats
        text = Text(no_wrap=True, overflow="ellipsis", end="")
        if s is None:
            return text
        width = self.size.width or 80
        wide = width >= 100
        color = c.get("status-" + STATUS_COLORS.get(s.status, "muted"), "bold")
        text.append(f" {STATUS_ICONS.get(s.status, '?')} {s.status} ", color)
        parts: list[tuple[str, str, str]] = [  # (label before, value, label after)
            ("", f"{s.tokens:,}", " tok"),
            ("", "–" if s.forced_pct is None else f"{s.forced_pct:.0f}%", " forced"),
            ("", fmt_rate(s.tok_per_s), " tok/s"),
            ("TTFT ", fmt_secs(s.ttft_s), ""),
            ("", "–" if s.mean_latency_us is None else f"{s.mean_latency_us / 1000:.1f} ms", "/tok"),
            ("" if wide else "↶ ", f"{s.backtracks:,}", " backtracks" if wide else ""),
        ]
        sep = " │ " if wide else " · "
        mode = MODES.get(self.mode, self.mode.upper())
        tail = f" {self.title}  {mode} " if self.title and width >= 110 else f" {mode} "
        room = width - text.cell_len - len(tail)
        for before, value, after in parts:  # what does not fit is dropped; the mode stays
            piece = Text(no_wrap=True, end="")
            piece.append(sep, muted)
            if before:
                piece.append(before, muted)
            piece.append(value, "bold")
            if after:
                piece.append(after, muted)
            if piece.cell_len > room:
                break
            text.append_text(piece)
            room -= piece.cell_len
        if room > 0:
            text.append(" " * room)
        text.append(tail, c.get("mode-" + self.mode, muted))
        return text
