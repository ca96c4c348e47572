"""Fork from the inspector: "Fork here…" on the token at the cursor (``F``, or the palette).

A small modal lists the token's allowed alternatives (the after-mask list) and takes a token's
text or ``id:N``; ``p`` asks the worker for the model's top 50 before and after the mask.  The
fork runs in the worker process (:mod:`guidance_tui.run.fork_worker`), which loads the run's
model once; the new branch streams into the store as the worker makes it, the view follows it,
and the forked run is recorded to a trace file.  A fork regenerates one grammar node: the
Python that came after it is not run again (the modal and the notices say so).
"""

from __future__ import annotations

import os
import time

import msgspec
from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, OptionList, Static
from textual.widgets.option_list import Option

from tracing import Alt, display_text

SCOPE_NOTE = ("A fork regenerates this one grammar node from the chosen token, under its grammar, in a worker "
              "that loads the run's model. The Python after the node is not run again.")
PROBE_N = 50


def _alt_row(rank: int, a: Alt, chosen: int) -> Text:
    t = Text()
    t.append(f"{rank:>2}  ", style="dim")
    t.append(f"{a.prob:8.4f}  ")
    t.append(repr(display_text(a.bytes)))
    t.append(f"  id {a.id}", style="dim")
    if a.masked:
        t.append("  masked", style="dim italic")
    if a.id == chosen:
        t.append("  ← chosen", style="bold")
    return t


class ForkScreen(ModalScreen):
    """Choose the alternative to fork with; dismisses with ("fork", ALT), ("probe", N) or None."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel", id="fork-cancel"),
                Binding("p", "probe", "Top 50 from the model", id="fork-probe")]
    DEFAULT_CSS = """
    ForkScreen { align: center middle; }
    ForkScreen > Vertical { width: 90%; max-width: 100; height: auto; max-height: 90%;
        border: round $primary; background: $surface; padding: 0 1; }
    ForkScreen OptionList { height: auto; max-height: 14; }
    ForkScreen #fork-note { color: $text-muted; }
    """

    def __init__(self, title: str, alternatives: list[Alt], chosen: int, note: str = "") -> None:
        super().__init__()
        self.title_text = title
        self.alternatives = alternatives
        self.chosen = chosen
        self.extra = note

    def compose(self) -> ComposeResult:
        box = Vertical()
        box.border_title = self.title_text
        box.border_subtitle = "enter: fork · p: top 50 from the model · esc: cancel"
        with box:
            yield Static(SCOPE_NOTE + (" " + self.extra if self.extra else ""), id="fork-note")
            if self.alternatives:
                yield Static("Allowed alternatives, after the mask (p renormalised over the allowed set):")
                yield OptionList(*[Option(_alt_row(i, a, self.chosen), id=f"alt-{i}")
                                   for i, a in enumerate(self.alternatives, 1)], id="fork-alts")
            else:
                yield Static("No after-mask list recorded for this token: type a token or press p.")
            yield Input(placeholder="or a token's text, or id:N", id="fork-input")

    def on_mount(self) -> None:
        alts = self.query("#fork-alts")
        (alts.first() if alts else self.query_one("#fork-input")).focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        rank = int(event.option.id.split("-")[1])
        self.dismiss(("fork", str(rank)))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.value:
            self.dismiss(("fork", event.value))

    def action_probe(self) -> None:
        if isinstance(self.focused, Input):
            self.focused.insert_text_at_cursor("p")
            return
        self.dismiss(("probe", PROBE_N))


class ProbeScreen(ModalScreen):
    """The model's top-N before and after the mask for one token; enter forks with an allowed one."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Close", id="probe-close")]
    DEFAULT_CSS = """
    ProbeScreen { align: center middle; }
    ProbeScreen > Vertical { width: 90%; max-width: 110; height: 90%;
        border: round $primary; background: $surface; padding: 0 1; }
    ProbeScreen OptionList { height: 1fr; }
    """

    def __init__(self, title: str, before: list[Alt], after: list[Alt], chosen: int) -> None:
        super().__init__()
        self.title_text, self.before, self.after, self.chosen = title, before, after, chosen

    def compose(self) -> ComposeResult:
        box = Vertical()
        box.border_title = self.title_text
        box.border_subtitle = "enter: fork with an allowed token · esc: close"
        with box:
            yield Static(f"After the mask: the top {len(self.after)} allowed tokens, p renormalised "
                         "(enter forks with one)")
            yield OptionList(*[Option(_alt_row(i, a, self.chosen), id=f"after-{a.id}")
                               for i, a in enumerate(self.after, 1)], id="probe-after")
            yield Static(f"Before the mask: the model's top {len(self.before)} (masked ones the grammar ruled out)")
            yield OptionList(*[Option(_alt_row(i, a, self.chosen), id=f"before-{a.id}", disabled=a.masked)
                               for i, a in enumerate(self.before, 1)], id="probe-before")

    def on_mount(self) -> None:
        self.query_one("#probe-after").focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(("fork", "id:" + event.option.id.split("-")[1]))


class ForkActions:
    """The inspector screen's fork action (mixed into InspectorScreen)."""

    _fork_worker = None
    _fork_plan = None
    _fork_t_base = 0
    _fork_started = 0.0  # perf_counter at the key press (or the choice) that started the fork
    _fork_branch: list = []
    fork_timing: dict = {}  # pressed/first_event/done perf_counter times of the latest fork (benchmarks)
    fork_recorded: Path | None = None

    def action_fork(self) -> None:
        from engines import fork

        if self.status == "live":
            self.notify("The run is still going: fork once it has ended (a fork adds a branch after the "
                        "run's last event).", title="Fork", severity="warning", timeout=6)
            return
        if self.index.n == 0:
            self.notify("No token to fork from yet.", title="Fork", timeout=4)
            return
        k = self._selected() + 1
        try:
            plan = fork.plan(self.store, k)
        except fork.ForkError as e:
            self.notify(str(e), title="Cannot fork here", severity="error", timeout=8)
            return
        if not Path(plan.model).exists():
            self.notify(f"The run's model file is missing: {plan.model}. A fork needs the model that made the "
                        "run.", title="Cannot fork", severity="error", timeout=10)
            return
        if self._fork_worker is not None and self._fork_worker.busy and self._fork_worker.loaded.is_set():
            self.notify("A fork is already running.", title="Fork", timeout=4)
            return
        self._fork_plan = plan
        self._worker_for(plan)  # start loading the model while the user chooses
        tok = plan.token
        title = f"Fork at token {k:,}: {display_text(tok.bytes)!r} in {plan.node.kind} {plan.node.name!r}"
        self.app.push_screen(ForkScreen(title, plan.alternatives, tok.id), self._fork_chosen)

    def _worker_for(self, plan):
        from guidance_tui.run.fork_worker import ForkWorker

        w = self._fork_worker
        if w is not None and (w.model, w.backend) == (plan.model, plan.backend) and w.proc.poll() is None:
            return w
        if w is not None:
            w.close()
        self._fork_worker = ForkWorker(plan.model, plan.backend, self._fork_reply_from_thread)
        return self._fork_worker

    def _fork_chosen(self, choice) -> None:
        if not choice or self._fork_plan is None:
            return
        what, value = choice
        w = self._worker_for(self._fork_plan)
        self._fork_started = time.perf_counter()
        self.fork_timing = {"pressed": self._fork_started}
        if what == "probe":
            w.probe(self._fork_plan, value)
            self.notify(f"Asking the model for the top {value} of token {self._fork_plan.k:,}"
                        + ("" if w.loaded.is_set() else " (loading the model first)") + "…", title="Fork",
                        timeout=4)
            return
        self._fork_branch = []
        w.fork(self._fork_plan, value)
        self.notify("Forking: regenerating this one node (the Python after it is not re-run)"
                    + ("" if w.loaded.is_set() else "; loading the model first") + "…", title="Fork", timeout=4)

    def on_unmount(self) -> None:  # Textual calls each class's handler along the MRO
        if self._fork_worker is not None:
            self._fork_worker.close()
            self._fork_worker = None

    def _fork_reply_from_thread(self, reply) -> None:
        try:
            self.app.call_from_thread(self._fork_reply, reply)
        except RuntimeError:  # the app is gone
            pass

    def _fork_reply(self, r) -> None:
        plan = self._fork_plan
        if r.op == "loaded":
            self.notify(f"Fork worker: the model loaded in {r.seconds:.1f} s.", title="Fork", timeout=4)
        elif r.op == "event":
            if not self._fork_branch:
                self.fork_timing["first_event"] = time.perf_counter()
                self._fork_t_base = max(0, self.store[self.store.last_seq].t_us) if len(self.store) else 0
            self._fork_branch.append(msgspec.structs.replace(r.event))  # times from the fork's start
            if type(r.event).__name__ == "Token" and "first_token" not in self.fork_timing:
                self.fork_timing["first_token"] = time.perf_counter()
            r.event.t_us = self._fork_t_base + max(0, r.event.t_us)  # after the run's last event
            self.store.append(r.event, stamp=False)
            if len(self._fork_branch) == 1:
                self.cursor.end()  # the view switches to the new branch and follows it
                self.pinned = None
        elif r.op == "done":
            self.fork_timing["done"] = time.perf_counter()
            where = self._record_fork(plan)
            self.notify(f"New text of the node: {display_text(r.text)!r}. Only this node was regenerated; the "
                        f"Python after it was not re-run.{where}", title=f"Forked at token {plan.k:,}", timeout=12)
            self._moved(self.cursor.end(), scroll="end")
        elif r.op == "probe":
            title = f"Token {plan.k:,}: {display_text(plan.token.bytes)!r} · the model's top {len(r.before)}"
            self.app.push_screen(ProbeScreen(title, r.before, r.after, plan.token.id), self._fork_chosen)
        elif r.op == "error":
            self.fork_timing["error"] = r.message
            self.notify(r.message, title="Fork failed", severity="error", timeout=10)

    def _record_fork(self, plan) -> str:
        """Write the forked run (the original up to K, then the branch) as a trace of its own."""
        from engines import fork
        from tracing import TraceStore, write_trace
        from tracing.runs import new_trace_path

        try:
            path = new_trace_path(f"fork-{plan.k}-{Path(self.run_title or 'run').stem}")
            events = fork.forked_run(self.store, plan, self._fork_branch)
            write_trace(path, TraceStore(events).events())
            os.chmod(path, 0o600)
        except (OSError, ValueError) as e:
            return f" Not recorded: {e}."
        self.fork_recorded = path
        return f" Recorded: {path}."
