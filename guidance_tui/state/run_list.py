"""The run browser's table, headless: rows, filtering and sorting of run summaries,
and the plain table ``guidance-tui runs --plain`` prints."""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from pathlib import Path

from tracing.runs import RunSummary

COLUMNS = ("status", "script or cell", "model", "tokens", "tok/s", "started", "duration", "size")
SORTS = ("started", "tokens", "tok/s", "duration", "size", "script or cell", "status")


def fmt_size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def fmt_duration(s: float) -> str:
    if s <= 0:
        return "–"
    if s < 60:
        return f"{s:.1f} s"
    m, s = divmod(int(s), 60)
    return f"{m}m{s:02d}s" if m < 60 else f"{m // 60}h{m % 60:02d}m"


def fmt_started(wall: float, now: float | None = None) -> str:
    if wall <= 0:
        return "–"
    t = _dt.datetime.fromtimestamp(wall)
    today = _dt.datetime.fromtimestamp(now).date() if now else _dt.date.today()
    return t.strftime("%H:%M:%S") if t.date() == today else t.strftime("%Y-%m-%d %H:%M")


def short_model(model: str) -> str:
    return Path(model.split(" (")[0]).name if model else "–"


@dataclass(frozen=True)
class Row:
    summary: RunSummary
    cells: tuple[str, ...]

    @property
    def path(self) -> str:
        return self.summary.path


def row_of(s: RunSummary, now: float | None = None) -> Row:
    status = f"{s.status}, damaged" if s.extra.get("damage") else s.status  # frames skipped: say so in the row
    return Row(s, (status, s.name, short_model(s.model), f"{s.tokens:,}", f"{s.tok_s:.1f}" if s.tok_s else "–",
                   fmt_started(s.started, now), fmt_duration(s.duration_s), fmt_size(s.size)))


def _sort_key(column: str):
    return {
        "started": lambda r: r.summary.started or r.summary.mtime_ns / 1e9,
        "tokens": lambda r: r.summary.tokens,
        "tok/s": lambda r: r.summary.tok_s,
        "duration": lambda r: r.summary.duration_s,
        "size": lambda r: r.summary.size,
        "script or cell": lambda r: r.summary.name.lower(),
        "status": lambda r: r.summary.status,
    }[column]


def table(summaries: list[RunSummary], *, query: str = "", sort: str = "started", reverse: bool = True,
          now: float | None = None) -> list[Row]:
    """Rows for ``summaries``: live runs first, then the rest sorted by ``sort``,
    keeping those whose cells or path contain every word of ``query`` (any case)."""
    rows = [row_of(s, now) for s in summaries]
    words = query.lower().split()
    if words:
        rows = [r for r in rows if all(w in (" ".join(r.cells) + " " + r.path).lower() for w in words)]
    rows.sort(key=_sort_key(sort), reverse=reverse)
    rows.sort(key=lambda r: r.summary.status != "live")  # stable: live first, each group as sorted
    return rows


def plain_table(rows: list[Row]) -> str:
    """One run per line, aligned, with its path last."""
    header = (*COLUMNS, "path")
    lines = [(*r.cells, r.path) for r in rows]
    widths = [max(len(str(c)) for c in col) for col in zip(header, *lines)]
    right = {3, 4, 6, 7}  # numbers
    out = []
    for cells in (header, *lines):
        out.append("  ".join(str(c).rjust(w) if i in right else str(c).ljust(w)
                             for i, (c, w) in enumerate(zip(cells, widths))).rstrip())
    return "\n".join(out)
