"""The help screen (``?``): every key, and how to read the colours."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from guidance_tui.app.actions import help_rows

LEGEND = [
    ("background", "colour metric (c): probability red → yellow → green, latency green (fast) → red "
                   "(slow, relative to the run's median), or kind"),
    ("underline", "second metric (u): slow (> 2× median), unlikely (p < 0.25) or forced"),
    ("grey text", "prompt tokens (not sampled)"),
    ("italic", "forced by the grammar (no sampling)"),
    ("struck through", "taken back by a backtrack (x hides them)"),
    ("⑂ from …", "a branch starts: the text continues from that node's state, not from the text before it "
                 "(the program reused a base model); v on two tree nodes compares their branches"),
    ("/  n  N", "search token text, node names, captures; next / previous match · m: least likely token · "
                "M: least certain choice (smallest lead over the next allowed token)"),
    ("<0xF0>", "bytes of a character split across tokens"),
    ("·  →  ⏎", "space, tab, newline (w)"),
    ("▏", "the timeline cursor: the screen shows the run up to here"),
]


class HelpScreen(ModalScreen[None]):
    BINDINGS = [
        Binding("escape,q,question_mark", "dismiss", "Close help", id="help-close"),
    ]
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll {
        width: 90%; max-width: 96; height: 90%;
        border: round $primary; background: $surface; padding: 0 1;
        border-title-color: $text-primary; border-subtitle-color: $text-muted; scrollbar-size-vertical: 1;
    }
    """

    def _heading(self, text: str) -> Text:
        return Text(text, style=f"bold {self.app.text_styles.primary}")

    def compose(self) -> ComposeResult:
        scroll = VerticalScroll(Static(self._keys(), id="help-keys"), Static(self._legend(), id="help-legend"))
        scroll.border_title = "guidance-tui · keys"
        scroll.border_subtitle = "esc to close"
        yield scroll

    def _keys(self) -> Table:
        table = Table(box=None, show_header=False, padding=(0, 2, 0, 0), expand=True)
        table.add_column("key", style="bold", no_wrap=True, min_width=10)
        table.add_column("what")
        section = None
        for sec, keys, desc in help_rows(self.app.keymap):
            if sec != section:
                if section is not None:
                    table.add_row("", "")
                table.add_row(self._heading(sec), "")
                section = sec
            table.add_row(keys, desc)
        table.add_row("", "")
        table.add_row(self._heading("Mouse"), "")
        table.add_row("click", "a token: select it and its node · the timeline: seek · a backtrack: go there")
        table.add_row("ctrl+p", "command palette (themes too)")
        return table

    def _legend(self) -> Table:
        table = Table(box=None, show_header=False, padding=(0, 2, 0, 0), expand=True)
        table.add_column("key", style="bold", no_wrap=True, min_width=10)
        table.add_column("what")
        table.add_row("", "")
        table.add_row(self._heading("Reading the token stream"), "")
        for k, v in LEGEND:
            table.add_row(k, v)
        return table
