"""The run browser: live runs first, then recent ones; open, filter, sort, delete.

Each run is a row from its cached summary (``tracing.runs``), so a thousand
runs list in a fraction of a second.  Enter opens a run: followed live while
its writer runs, else replayed.  ``q`` in that run comes back here.
"""

from __future__ import annotations

import time
from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen, Screen
from textual.content import Content
from textual.widgets import DataTable, Footer, Input, Static

from tracing import TraceFormatError
from tracing.runs import RunsDirError, delete_run, list_runs

from guidance_tui.state.run_list import COLUMNS, SORTS, Row, table

REFRESH_S = 2.0  # live runs come and go, and their sizes grow


class ConfirmDelete(ModalScreen[bool]):
    BINDINGS = [Binding("y", "answer(True)", "delete", id="confirm-yes"),
                Binding("n,escape", "answer(False)", "keep", id="confirm-no")]
    DEFAULT_CSS = """
    ConfirmDelete { align: center middle; }
    ConfirmDelete > Static { width: auto; max-width: 90%; border: round $error; padding: 1 2; background: $surface; }
    """

    def __init__(self, what: str) -> None:
        super().__init__()
        self.what = what

    def compose(self) -> ComposeResult:
        yield Static(f"Delete {self.what}?\n\n[b]y[/b] delete · [b]n[/b] keep", id="confirm")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class RunsScreen(Screen):
    BINDINGS = [
        Binding("enter", "open", "open", id="runs-open", priority=True),
        Binding("slash", "filter", "filter", key_display="/", id="runs-filter"),
        Binding("s", "sort", "sort", id="runs-sort"),
        Binding("S", "reverse", "reverse", show=False, id="runs-reverse"),
        Binding("d", "delete", "delete", id="runs-delete"),
        Binding("D", "delete_listed", "delete listed", key_display="D", id="runs-delete-listed"),
        Binding("escape", "clear_filter", "clear filter", show=False, id="runs-clear-filter"),
        Binding("q", "quit", "quit", id="runs-quit"),
    ]
    DEFAULT_CSS = """
    RunsScreen #runs-title { height: 1; background: $panel; padding: 0 1; }
    RunsScreen #runs-query { height: 3; border: round $foreground 25%; display: none; }
    RunsScreen #runs-query.-shown { display: block; }
    RunsScreen #runs-query:focus { border: round $accent; }
    RunsScreen DataTable { height: 1fr; }
    RunsScreen #runs-empty { height: 1fr; content-align: center middle; color: $text-muted; display: none; }
    RunsScreen #runs-empty.-shown { display: block; }
    """

    def __init__(self, directory: Path, *, live_only: bool = False) -> None:
        super().__init__()
        self.directory = directory
        self.live_only = live_only
        self.sort_by = "started"
        self.reverse = True
        self.query_text = ""
        self.rows: list[Row] = []
        self._summaries = []
        self._listed_at = 0.0

    def compose(self) -> ComposeResult:
        yield Static("", id="runs-title")
        yield Input(placeholder="filter: words in the script, model, status or path", id="runs-query")
        with Vertical():
            yield DataTable(id="runs-table", cursor_type="row", zebra_stripes=True)
            yield Static("", id="runs-empty")
        yield Footer()

    def on_mount(self) -> None:
        t = self.query_one("#runs-table", DataTable)
        for col in COLUMNS:
            t.add_column(col, key=col)
        self.refresh_runs()
        self.set_interval(REFRESH_S, self.refresh_runs, name="runs-refresh")
        t.focus()

    # -- the list ----------------------------------------------------------------------
    def refresh_runs(self) -> None:
        try:
            self._summaries = list_runs(self.directory)
        except OSError as e:
            self._summaries = []
            self.notify(str(e), title="Runs", severity="error", timeout=8)
        if self.live_only:
            self._summaries = [s for s in self._summaries if s.status == "live"]
        self._listed_at = time.time()
        self._show()

    def _show(self) -> None:
        t = self.query_one("#runs-table", DataTable)
        keep = self.selected_path()
        self.rows = table(self._summaries, query=self.query_text, sort=self.sort_by, reverse=self.reverse,
                          now=self._listed_at)
        t.clear()
        tones = {"live": "bold $accent", "done": "$success", "error": "$error", "died": "$error",
                 "interrupted": "$warning", "damaged": "$error"}
        for r in self.rows:
            tone = "$warning" if r.summary.extra.get("damage") else tones.get(r.summary.status, "$text-muted")
            status = Content.styled(r.cells[0], tone)
            t.add_row(status, *r.cells[1:], key=r.path)
        if keep is not None:
            index = next((i for i, r in enumerate(self.rows) if r.path == keep), None)
            if index is not None:
                t.move_cursor(row=index, animate=False)
        live = sum(r.summary.status == "live" for r in self.rows)
        what = "live runs" if self.live_only else "runs"
        shown = f"{len(self.rows)} of {len(self._summaries)}" if self.query_text else f"{len(self.rows)}"
        arrow = "↓" if self.reverse else "↑"
        self.query_one("#runs-title", Static).update(Content.assemble(
            (f"{shown} {what}", "bold"), f" · {live} live · sorted by {self.sort_by} {arrow} · {self.directory}"))
        empty = self.query_one("#runs-empty", Static)
        empty.set_class(not self.rows, "-shown")
        t.display = bool(self.rows)
        if not self.rows:
            if self._summaries:
                empty.update("No run matches the filter (Esc clears it).")
            else:
                empty.update(f"No {what} yet in {self.directory}.\n\nRun a program that uses engines, or "
                             "`guidance-tui demo`, and it shows up here.")

    def selected_path(self) -> str | None:
        t = self.query_one("#runs-table", DataTable)
        if not self.rows or t.cursor_row is None or not 0 <= t.cursor_row < len(self.rows):
            return None
        return self.rows[t.cursor_row].path

    def selected_row(self) -> Row | None:
        path = self.selected_path()
        return next((r for r in self.rows if r.path == path), None)

    # -- actions -----------------------------------------------------------------------
    def action_open(self) -> None:
        if self.focused is self.query_one("#runs-query", Input):
            self.query_one("#runs-table", DataTable).focus()
            return
        row = self.selected_row()
        if row is None:
            return
        try:
            self.app.open_run(row.path)
        except (TraceFormatError, OSError) as e:
            self.notify(str(e), title="Cannot open the run", severity="error", timeout=8)

    def action_filter(self) -> None:
        q = self.query_one("#runs-query", Input)
        q.add_class("-shown")
        q.focus()

    def action_clear_filter(self) -> None:
        q = self.query_one("#runs-query", Input)
        q.value = ""
        q.remove_class("-shown")
        self.query_one("#runs-table", DataTable).focus()

    @on(Input.Changed, "#runs-query")
    def _query_changed(self, event: Input.Changed) -> None:
        self.query_text = event.value
        self._show()

    @on(DataTable.HeaderSelected)
    def _header_clicked(self, event: DataTable.HeaderSelected) -> None:
        column = str(event.column_key.value)
        if column in SORTS:
            self.reverse = not self.reverse if column == self.sort_by else True
            self.sort_by = column
            self._show()

    @on(DataTable.RowSelected)
    def _row_chosen(self, event: DataTable.RowSelected) -> None:
        self.action_open()

    def action_sort(self) -> None:
        self.sort_by = SORTS[(SORTS.index(self.sort_by) + 1) % len(SORTS)]
        self.reverse = True
        self._show()
        self.notify(f"Sorted by {self.sort_by}", timeout=1.5)

    def action_reverse(self) -> None:
        self.reverse = not self.reverse
        self._show()

    def action_delete(self) -> None:
        row = self.selected_row()
        if row is None:
            return
        if row.summary.status == "live":
            self.notify("A live run cannot be deleted while it is being recorded.", severity="warning", timeout=4)
            return
        name = Path(row.path).name

        def answer(yes: bool | None) -> None:
            if not yes:
                return
            try:
                delete_run(row.path)
            except (OSError, RunsDirError) as e:
                self.notify(str(e), title="Not deleted", severity="error", timeout=8)
                return
            self.notify(f"Deleted {name}", timeout=3)
            self.refresh_runs()

        self.app.push_screen(ConfirmDelete(f"{row.summary.name} ({name}, {row.cells[7]})"), answer)

    def action_delete_listed(self) -> None:
        """Delete every finished run the filter shows (``/error``, then D: clean up the failures)."""
        doomed = [r for r in self.rows if r.summary.status != "live"]
        if not doomed:
            self.notify("No finished run is listed.", timeout=3)
            return
        what = f"the {len(doomed)} finished runs listed" + (f" (filter: {self.query_text})" if self.query_text else "")

        def answer(yes: bool | None) -> None:
            if not yes:
                return
            failed = 0
            for r in doomed:
                try:
                    delete_run(r.path)
                except (OSError, RunsDirError):
                    failed += 1
            note = f"Deleted {len(doomed) - failed} runs" + (f"; {failed} could not be deleted" if failed else "")
            self.notify(note, severity="warning" if failed else "information", timeout=4)
            self.refresh_runs()

        self.app.push_screen(ConfirmDelete(what), answer)

    def action_quit(self) -> None:
        self.app.exit(0)
