"""The error pane under the token stream: the script's error and its frames,
shown once the cursor reaches the run's end and the run ended in an error.
Its title says what happened (:func:`error_title`)."""

from __future__ import annotations

import re

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

from tracing.store import TraceStore

from guidance_tui import exit_codes
from guidance_tui.state.cursor import At
from guidance_tui.widgets.styles import Styles

_EXITED = re.compile(r"the script(?:'s process)? exited with status (-?\d+)")
_EXCEPTION = re.compile(r"[A-Za-z_][\w.]*: ")  # "ValueError: ...": how the runner describes an exception
TITLE_MAX = 90


def error_title(end) -> str:
    """What ended a run in an error, in words, from its RunEnd (see runner.ScriptRun
    and script_process for the errors they record)."""
    error = " ".join((end.error or "").split())
    if error.startswith("the script's process was killed by"):
        return error
    m = _EXITED.match(error)
    if m:
        return f"the script exited with status {m.group(1)}"
    if error.startswith("the script exited"):  # sys.exit("a message")
        return "the script exited with status 1"
    if error.startswith((exit_codes.NOT_WRITTEN_TEXT, "cannot write ", "cannot create the trace file")):
        return "the trace could not be written"
    if error.startswith(exit_codes.ENGINE_REFUSED_TEXT):
        return error if len(error) <= TITLE_MAX else error[:TITLE_MAX - 1] + "…"
    if end.traceback or _EXCEPTION.match(error):
        return "the script raised"
    return "the run failed"


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
            self.border_title = "✖ " + error_title(end)
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
