"""The error pane under the token stream: the script's error and its frames,
shown once the cursor reaches the run's end and the run ended in an error."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

from tracing.store import TraceStore

from guidance_tui.state.cursor import At
from guidance_tui.widgets.styles import Styles


class ErrorPane(VerticalScroll):
    def __init__(self, store: TraceStore, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.store = store
        self.text_styles = Styles()
        self.body = Static("", id=f"{id}-text" if id else None)
        self._shown = False

    def compose(self) -> ComposeResult:
        yield self.body

    def show_at(self, at: At) -> None:
        end = self.store.run_end()
        show = end is not None and end.seq <= at.seq and end.status == "error"
        if show == self._shown:
            return
        self._shown = show
        self.set_class(show, "-shown")
        if show:
            self.border_title = "✖ the script raised"
            self.body.update(self.render_error(end.error or "error", end.traceback))

    def apply_styles(self, styles: Styles) -> None:
        self.text_styles = styles
        if self._shown:
            end = self.store.run_end()
            self.body.update(self.render_error(end.error or "error", end.traceback))

    def render_error(self, error: str, traceback: str | None) -> Text:
        """The error line in bold, then the traceback with the frames in bold."""
        color = self.text_styles.error
        body = Text(error, style=f"bold {color}")
        if traceback:
            body.append("\n\n")
            lines = traceback.rstrip("\n").split("\n")
            for i, line in enumerate(lines):
                frame = line.lstrip().startswith("File ")
                body.append(line, "bold" if frame else (color if i == len(lines) - 1 else ""))
                if i < len(lines) - 1:
                    body.append("\n")
        return body
