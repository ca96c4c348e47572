"""CPU, RAM, GPU and VRAM sparklines with current values.

Samples come from Metric events in the store (the runner records the shared
monitor's samples, so a replay shows them too), up to the cursor.  A live app
whose store carries no samples reads the shared monitor directly instead.
"""

from __future__ import annotations

import bisect
from typing import Sequence


from tracing import Metric
from tracing.store import TraceStore

from guidance_tui.widgets.strips import Run, RunsBar
from guidance_tui.state.cursor import At
from guidance_tui.widgets.styles import Styles

BLOCKS = "▁▂▃▄▅▆▇█"


def sparkline(values: Sequence[float], width: int, top: float = 100.0) -> str:
    """The last ``width`` values as block characters, scaled to 0..``top``."""
    vals = list(values)[-width:] if width > 0 else []
    out = []
    for v in vals:
        if v != v:
            out.append(" ")
            continue
        i = int(max(0.0, min(1.0, v / top if top else 0.0)) * (len(BLOCKS) - 1) + 0.5)
        out.append(BLOCKS[i])
    return "".join(out).rjust(width)


def fmt_bytes(n: float) -> str:
    for unit, size in (("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20)):
        if n >= size:
            v = n / size
            return f"{v:.1f}{unit}" if v < 100 else f"{v:.0f}{unit}"
    return f"{n / 1024:.0f}K"


class ResourceBar(RunsBar):
    """One line: ``CPU ▂▃▅ 62%  RAM ▃▃▄ 5.2/24G  GPU … | no GPU``."""

    DEFAULT_CSS = "ResourceBar { height: 1; }"

    def __init__(self, store: TraceStore, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.store = store
        self.seq = -1
        self.text_styles = Styles()
        self.monitor = None  # a ResourceMonitor read directly when the store has no samples
        self._key = None

    def samples(self, n: int) -> list[Metric]:
        seqs = self.store.seqs_of(Metric)
        if seqs:
            k = bisect.bisect_right(seqs, self.seq)
            return [self.store[s] for s in seqs[max(0, k - n):k]]  # type: ignore[misc]
        if self.monitor is not None:
            return self.monitor.history()[-n:]
        return []

    def show_at(self, at: At) -> None:
        self.set_cursor(at.seq)

    def apply_styles(self, styles: Styles) -> None:
        self.text_styles = styles
        self.refresh()

    def set_cursor(self, seq: int) -> None:
        self.seq = seq
        seqs = self.store.seqs_of(Metric)
        key = (bisect.bisect_right(seqs, seq) if seqs else None,
               len(self.monitor.history()) if self.monitor is not None and not seqs else 0)
        if key != self._key:
            self._key = key
            self.refresh()

    def runs(self, width: int) -> list[Run]:
        """The line as (text, style) runs for a bar ``width`` cells wide."""
        c = self.text_styles
        muted = c.muted
        samples = self.samples(max(8, width))
        gpus = samples[-1].gpus if samples else []
        cells = 4 if gpus else 3
        cell_w = max(16, width // cells)
        runs: list[Run] = []
        if not samples:
            runs.append((" resources ", muted))
            if self.store.seqs_of(Metric):
                runs.append(("no samples up to the cursor", muted))
            else:
                runs.append(("no samples yet" if self.monitor is not None else "not recorded in this trace", muted))
            return runs

        def cell(label: str, values: list[float], top: float, value: str, color: str) -> None:
            spark_w = max(3, cell_w - len(label) - len(value) - 4)
            runs.append((f" {label} ", muted))
            runs.append((sparkline(values, spark_w, top), getattr(c, color)))
            runs.append((f" {value} ", "bold"))

        last = samples[-1]
        cell("CPU", [m.cpu for m in samples], 100.0, f"{last.cpu:.0f}%", "spark_cpu")
        total = last.ram_total or 1
        cell("RAM", [m.ram_used for m in samples], float(total),
             f"{fmt_bytes(last.ram_used)}/{fmt_bytes(total)}", "spark_ram")
        if gpus:
            def mean_util(m: Metric) -> float:
                return sum(g.util for g in m.gpus) / len(m.gpus) if m.gpus else float("nan")

            def vram(m: Metric) -> float:
                return float(sum(g.mem_used for g in m.gpus)) if m.gpus else float("nan")

            vtotal = float(sum(g.mem_total for g in gpus)) or 1.0
            label = "GPU" if len(gpus) == 1 else f"GPU×{len(gpus)}"
            cell(label, [mean_util(m) for m in samples], 100.0, f"{mean_util(last):.0f}%", "spark_gpu")
            cell("VRAM", [vram(m) for m in samples], vtotal,
                 f"{fmt_bytes(vram(last))}/{fmt_bytes(vtotal)}", "spark_vram")
        else:
            runs.append((" GPU ", muted))
            runs.append(("none", muted))
        return runs
