"""The top line: run status and the run's figures at the cursor."""

from __future__ import annotations


from rich.cells import cell_len, set_cell_size

from guidance_tui.state.cursor import At
from guidance_tui.state.stats import RunStats, stats_at
from guidance_tui.state.token_index import TokenIndex
from guidance_tui.widgets.strips import Run, RunsBar, runs_width
from guidance_tui.widgets.styles import Styles

STATUS_ICONS = {"live": "●", "done": "✔", "error": "✖", "interrupted": "■", "died": "✝", "incomplete": "…",
                "empty": "○"}
STATUS_COLORS = {"live": "accent", "done": "success", "error": "error", "interrupted": "warning",
                 "died": "error", "incomplete": "warning", "empty": "muted"}
MODES = {"live": "LIVE", "replay": "REPLAY", "loading": "LOADING"}


def fmt_rate(r: float | None) -> str:
    return "–" if r is None else (f"{r:.1f}" if r < 1000 else f"{r / 1000:.1f}k")


def fmt_secs(s: float | None) -> str:
    if s is None:
        return "–"
    return f"{s * 1000:.0f} ms" if s < 1 else f"{s:.2f} s"


Part = tuple[str, str, str]  # label before, value, label after
DROP_ORDER = ("ttft", "latency", "rate", "forced")  # the figures a narrow bar may leave out, least telling first
TITLE_KEEP = 24  # a title is cut no shorter than this while a figure can go instead
TITLE_MIN = 8  # nor shorter than this at all (else it is left out)


def _parts(s: RunStats, wide: bool) -> list[tuple[str, Part]]:
    """(key, part) for every figure, in the order shown; ``wide`` spells the labels out."""
    # Backtracks up to the cursor, out of the run's total (the Backtracks tab's count) when they differ.
    bts = f"{s.backtracks:,}" if s.backtracks == s.backtracks_total else f"{s.backtracks:,}/{s.backtracks_total:,}"
    return [
        ("tokens", ("", f"{s.tokens:,}", " tok")),
        ("forced", ("", "–" if s.forced_pct is None else f"{s.forced_pct:.0f}%", " forced")),
        ("rate", ("", fmt_rate(s.tok_per_s), " tok/s")),
        ("ttft", ("TTFT ", fmt_secs(s.ttft_s), "")),
        ("latency", ("", "–" if s.mean_latency_us is None else f"{s.mean_latency_us / 1000:.1f} ms", "/tok")),
        ("backtracks", ("", bts, " backtrack" if s.backtracks_total == 1 else " backtracks") if wide
         else ("↶ ", bts, "")),
    ]


def ellipsize(text: str, cells: int) -> str:
    """``text`` in at most ``cells`` cells, its end replaced by "…" when cut."""
    if cell_len(text) <= cells:
        return text
    return set_cell_size(text, max(0, cells - 1)).rstrip() + "…" if cells > 0 else ""


def fit(s: RunStats, title: str, mode: str, width: int) -> tuple[str, str, list[Part], str]:
    """(status, separator, figures, title and mode) for a bar ``width`` cells wide.

    The status, token count, backtrack count, title and mode are kept: first
    the labels get shorter (and a title longer than TITLE_KEEP cells is cut
    short with "…", down to that), then the other figures go, least telling
    first, and only then is the title cut further and the status word left
    out (its icon stays).  What still does not fit is cut by the bar."""
    icon = STATUS_ICONS.get(s.status, "?")
    everything = len(DROP_ORDER)
    # (wide labels, figures dropped, the shortest the title may be cut to; None: whole)
    tries = [(True, 0, None), (True, 0, TITLE_KEEP)]
    tries += [(False, k, TITLE_KEEP) for k in range(everything + 1)]
    tries += [(False, everything, TITLE_MIN)]
    for status in (f" {icon} {s.status} ", f" {icon} "):
        for wide, dropped, title_min in tries:
            sep = " │ " if wide else " · "
            every = _parts(s, wide)
            widths = {key: cell_len(sep + "".join(part)) for key, part in every}
            gone = set(DROP_ORDER[:dropped])
            used = cell_len(status) + sum(w for key, w in widths.items() if key not in gone)
            if not title:
                tail = f" {mode} "
            else:
                room = width - used - cell_len(f"    {mode} ")  # a blank, then " title  MODE "
                if room < (cell_len(title) if title_min is None else min(title_min, cell_len(title))):
                    continue
                tail = f" {ellipsize(title, room)}  {mode} "
            spare = width - used - cell_len(tail) - (1 if title else 0)  # the title is never flush with a figure
            if spare < 0:
                continue
            for key in reversed(DROP_ORDER[:dropped]):  # a more telling figure that went may fit after all
                if key in gone and widths[key] <= spare:
                    gone.discard(key)
                    spare -= widths[key]
            return status, sep, [part for key, part in every if key not in gone], tail
    return status, sep, [part for key, part in every if key not in DROP_ORDER], f" {mode} "  # the bar cuts it


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
        self.show(stats_at(self.index, at.seq, at.status), at.mode)

    def apply_styles(self, styles: Styles) -> None:
        self.text_styles = styles
        self.refresh()

    def show(self, stats: RunStats, mode: str) -> None:
        if stats != self.stats or mode != self.mode:
            self.stats, self.mode = stats, mode
            self.refresh()

    def runs(self, width: int) -> list[Run]:
        """The line as (text, style) runs for a bar ``width`` cells wide (see :func:`fit`)."""
        c = self.text_styles
        muted = c.muted
        s = self.stats
        if s is None:
            return []
        color = c.status(STATUS_COLORS.get(s.status, "muted"))
        status, sep, parts, tail = fit(s, self.title, MODES.get(self.mode, self.mode.upper()), width)
        runs: list[Run] = [(status, color)]
        for before, value, after in parts:
            runs.extend([(sep, muted), (before, muted), (value, "bold"), (after, muted)])
        room = width - runs_width(runs) - cell_len(tail)
        if room > 0:
            runs.append((" " * room, ""))
        runs.append((tail, c.mode(self.mode)))
        return runs
