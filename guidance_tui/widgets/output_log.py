"""The Output tab: what the script printed, its warnings and the run's start and end.

Of the load progress it keeps how each phase ended ("loading X: done in 0.4 s") and one-off notes; a
running phase's lines ("… 40%") are the main screen's, where they replace each other.
"""

from __future__ import annotations

from rich.text import Text
from textual.widgets import RichLog

from tracing import Message, RunEnd, RunStart
from tracing import progress as load_progress

from guidance_tui.widgets.styles import Styles


class OutputLog(RichLog):
    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, wrap=True, markup=False, highlight=False, max_lines=5000)
        self.text_styles = Styles()

    def apply_styles(self, styles: Styles) -> None:
        self.text_styles = styles  # lines already written keep their colours

    def take_events(self, events: list) -> None:
        """Log the messages, run starts and run ends among ``events``."""
        c = self.text_styles
        for ev in events:
            t = type(ev)
            if t is Message:
                if ev.level == load_progress.LEVEL and load_progress.is_running(ev.text):
                    continue
                style = {"error": c.error, "warning": c.warning}.get(ev.level, "")
                self.write(Text(ev.text.rstrip("\n"), style=style))
            elif t is RunStart:
                bits = [ev.script or "run"] + [x for x in (ev.model, ev.backend) if x]
                self.write(Text("▶ " + " · ".join(bits), style=c.muted))
            elif t is RunEnd:
                self.write(Text(f"■ run {ev.status}" + (f": {ev.error}" if ev.error else ""),
                                style=c.error if ev.status == "error" else c.muted))

    def take_output(self, lines: list[str]) -> None:
        """The script process's own output, which is not in the trace (warnings...)."""
        for line in lines:
            self.write(Text(line, style=self.text_styles.muted))
