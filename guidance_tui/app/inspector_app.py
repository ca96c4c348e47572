"""The inspector app: one screen over a TraceStore, live or replayed.

Live and replay are one code path.  A timer (~30 Hz) drains whatever the store
gained since the last tick, in one batch, into the token index, the program
tree and the backtrack list; then every pane is drawn for "the store up to the
cursor seq".  Following a live run just keeps the cursor at the end; any scrub
stops following and End resumes it.  Panes that are costly to redraw are
throttled while events stream in; user actions redraw at once.
"""

from __future__ import annotations

import gc
import os
import threading
import time
from pathlib import Path

from textual import on
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, RichLog, Static, TabbedContent, TabPane

from tracing import Message, Metric, RunEnd, RunStart
from tracing.store import TraceStore
from tracing.tree import TraceNode

from guidance_tui.widgets.backtrack_pane import BacktrackList
from guidance_tui.widgets.colors import COLOR_METRICS, UNDERLINE_METRICS, Palette, ThemeColors
from guidance_tui.app.commands import InspectorCommands
from guidance_tui.run.cpu_split import CpuSplit
from guidance_tui.state.cursor import LOW_PROB, Cursor
from guidance_tui.widgets.detail_pane import DetailPane
from guidance_tui.app.help import HelpScreen
from guidance_tui.app.keymap import BINDINGS
from guidance_tui.widgets.metrics_bar import MetricsBar
from guidance_tui.widgets.resource_bar import ResourceBar
from guidance_tui.state.stats import stats_at
from guidance_tui.widgets.timeline_bar import TimelineBar
from guidance_tui.state.token_index import TokenIndex
from guidance_tui.widgets.token_view import TokenView
from guidance_tui.widgets.tree_pane import NodeTree

TICK_HZ = 30.0
SLOW_PANE_HZ = 4.0  # detail, tree cursor, metrics while events stream in
TREE_HZ = 1.0  # new nodes join a big tree this often while events stream in
FREEZE_EVERY = 20_000  # events; see _freeze_if_grown
FREEZE_POLLED = 2_000  # events read from a script process; see _poll_script_run
STREAM_HZ = 30.0  # the token stream redraws at most this often while following a run...
STREAM_HZ_BUSY = 8.0  # ...or this often while the machine has no idle core (see _pace_to_machine)
STREAM_HZ_FIREHOSE = 10.0  # ...or this often while over FIREHOSE_EVENTS_S arrive (too fast to read anyway)
FIREHOSE_EVENTS_S = 20_000.0
BUSY_CPU, IDLE_CPU = 92.0, 80.0  # machine CPU % (all cores) that enters / leaves the busy pace
POLL_MAX_EVENTS = 20_000  # a script process's events decoded per tick (~0.1 s of work: frames keep coming)
MONITOR_FALLBACK_S = 1.5  # live run without samples in the store: read the monitor after this


def _app_binding(b: Binding) -> Binding:
    import dataclasses

    return dataclasses.replace(b, action="app." + b.action)


class InspectorScreen(Screen):
    """The one screen; it owns the key bindings so modal screens (help, the
    command palette) do not see timeline keys."""

    BINDINGS = [_app_binding(b) for b in BINDINGS]

    def compose(self) -> ComposeResult:
        app: InspectorApp = self.app  # type: ignore[assignment]
        yield app.metrics_bar
        with Horizontal(id="main"):
            with Vertical(id="left"):
                yield app.token_view
                with VerticalScroll(id="error"):
                    yield app.error_text
            with Vertical(id="side"):
                with TabbedContent(id="tabs", initial="tab-tree"):
                    with TabPane("Tree", id="tab-tree"):
                        yield app.tree_pane
                    with TabPane("Backtracks", id="tab-backtracks"):
                        yield app.backtrack_pane
                    with TabPane("Output", id="tab-output"):
                        yield app.output_log
                yield app.detail_pane
        yield app.timeline_bar
        yield app.resource_bar
        yield Footer()

    def on_mount(self) -> None:
        self.app.start_inspector(self)  # type: ignore[attr-defined]


class InspectorApp(App[int]):
    """Inspect a run: ``store`` is read, never written (except by a live producer).

    ``script_run``: run in a thread worker (live mode): a ScriptProcess (the
    script in a child process; this app decodes its trace file on each tick)
    or anything with ``run()``, ``cancel()`` and ``store`` that fills the store.
    ``loader``: a TraceLoader still filling ``store`` (replay of a big file).
    """

    CSS_PATH = "app.tcss"
    TITLE = "guidance-tui"
    COMMANDS = App.COMMANDS | {InspectorCommands}
    ENABLE_COMMAND_PALETTE = True

    def __init__(self, store: TraceStore, *, script_run=None, live: bool = False, loader=None,
                 title: str = "", tick_hz: float = TICK_HZ, use_monitor: bool = True) -> None:
        super().__init__()
        self.store = store
        self.script_run = script_run
        self.live = live or script_run is not None
        self.loader = loader
        self.run_title = title
        self.tick_hz = tick_hz
        self.use_monitor = use_monitor
        self.index = TokenIndex(store)
        self.cursor = Cursor(self.index, following=True)
        self.palette = Palette(ThemeColors.from_variables({}))
        self.token_view = TokenView(self.index, self.palette, id="tokens")
        self.tree_pane = NodeTree(self.index, id="tree")
        self.backtrack_pane = BacktrackList(self.index, id="backtracks")
        self.detail_pane = DetailPane(self.index, self.tree_pane.trace, id="detail")
        self.metrics_bar = MetricsBar(id="metrics")
        self.timeline_bar = TimelineBar(self.cursor, id="timeline")
        self.resource_bar = ResourceBar(store, id="resources")
        self.error_text = Static("", id="error-text")
        self.output_log = RichLog(id="output", wrap=True, markup=False, highlight=False, max_lines=5000)
        self.pinned: int | None = None  # a token the user picked; None: the token at the cursor
        self.result = None  # the ScriptRun's RunResult once it finished
        self.run_error: BaseException | None = None
        self.startup_warning = ""
        self.script_done = threading.Event()
        self._slow_at = 0.0
        self._slow_pending = False
        self._fast_at = 0.0
        self._frozen_at = 0
        self._tab_at = 0.0
        self._fast_pending = False
        self._streaming = False  # events are arriving and the view follows them
        self._streamed_at = -1.0
        self._drew = False  # this tick redrew the stream
        self._busy = False  # the run's CPU samples say no core is idle
        self._firehose = False  # events arrive at over FIREHOSE_EVENTS_S
        self._rate_at = time.monotonic()
        self._firehose_until = 0.0
        # see cpu_split; GUIDANCE_TUI_CPU_SPLIT=0 leaves the scheduler alone
        self._cpu_split: CpuSplit | None = None
        self._may_split = os.environ.get("GUIDANCE_TUI_CPU_SPLIT", "1") != "0"
        self._structural: list = []  # node/capture events not yet fed to the tree
        self._tree_at = 0.0
        self._monitor = None
        self._monitor_checked = False
        self._started = time.monotonic()
        self._poll_run = None
        self._error_shown = False
        self.app_colors: dict[str, str] = {}
        # Display-lag probe for benchmarks: (t_us of the newest drawn token, wall time drawn).
        self.lag_probe = None

    # -- lifecycle ---------------------------------------------------------
    def get_default_screen(self) -> Screen:
        return InspectorScreen()

    def start_inspector(self, screen: Screen) -> None:
        """Called once the screen is composed: first drain, timer, workers."""
        self.metrics_bar.title = self.run_title
        self.token_view.border_title = "Tokens"
        self._update_token_title()
        self.timeline_bar.live = self.live
        self._apply_theme()
        self.theme_changed_signal.subscribe(screen, lambda _theme: self._apply_theme())
        self._drain(initial=True)
        self.set_interval(1.0 / self.tick_hz, self._tick, name="drain")
        if self.script_run is not None:
            if hasattr(self.script_run, "poll"):  # a script process: read its trace on this thread
                self.script_run.polled_elsewhere = True
                self._poll_run = self.script_run.poll
            self.run_worker(self._run_script, thread=True, name="script", exit_on_error=False)
        if self.loader is not None and not self.loader.done.is_set():
            self.call_after_refresh(self.loader.start)
        self.token_view.focus()
        if self.startup_warning:
            self.notify(self.startup_warning, severity="warning", timeout=8)

    def on_unmount(self) -> None:
        self._release_gc()
        if self._cpu_split is not None:
            self._cpu_split.restore()
        if self._monitor is not None:
            self._monitor.release()
            self._monitor = None
        if self.loader is not None:
            self.loader.stop()

    def _run_script(self) -> None:
        try:
            self.result = self.script_run.run()
        except BaseException as e:  # the runner itself failed; a script's own error is a RunEnd
            self.run_error = e
            self.call_from_thread(self.notify, f"{type(e).__name__}: {e}", title="The runner failed",
                                  severity="error", timeout=30)
        finally:
            self.script_done.set()

    # -- theme ---------------------------------------------------------------
    def _apply_theme(self) -> None:
        v = self.get_css_variables()
        dark = self.current_theme.dark if self.current_theme is not None else True
        tc = ThemeColors.from_variables(v, dark, background=v.get("background"))
        self.palette = Palette(tc)
        hexes = {
            "muted": tc.muted.hex, "faint": tc.foreground.blend(tc.background, 0.65).hex,
            "accent": tc.accent.hex, "success": tc.success.hex, "warning": tc.warning.hex,
            "error": tc.error.hex, "primary": tc.primary.hex,
        }
        on_accent = tc.accent.get_contrast_text(1.0).hex
        c = {
            **{k: val for k, val in hexes.items()},
            "chip": f"bold {tc.background.hex} on {tc.foreground.blend(tc.background, 0.15).hex}",
            "kind-prompt": f"bold {tc.muted.hex}", "kind-generated": f"bold {tc.primary.hex}",
            "kind-forced": f"bold italic {tc.accent.hex}",
            "status-accent": f"bold {on_accent} on {tc.accent.hex}",
            "status-success": f"bold {tc.success.get_contrast_text(1.0).hex} on {tc.success.hex}",
            "status-error": f"bold {tc.error.get_contrast_text(1.0).hex} on {tc.error.hex}",
            "status-warning": f"bold {tc.warning.get_contrast_text(1.0).hex} on {tc.warning.hex}",
            "status-muted": f"bold on {tc.panel.hex}",
            "mode-live": f"bold {tc.accent.hex}", "mode-replay": f"bold {tc.primary.hex}",
            "mode-loading": f"bold {tc.warning.hex}",
            "spark-cpu": tc.primary.hex, "spark-ram": tc.success.hex, "spark-gpu": tc.accent.hex,
            "spark-vram": tc.warning.hex,
            "track-played": tc.primary.hex, "track-rest": tc.foreground.blend(tc.background, 0.75).hex,
            "track-mark": tc.warning.hex, "bar": tc.primary.hex,
            "guide": tc.foreground.blend(tc.background, 0.7).hex,
            "role": f"bold {tc.primary.hex}", "kind": tc.accent.hex, "tool": f"bold {tc.warning.hex}",
        }
        self.app_colors = c
        for w in (self.tree_pane, self.detail_pane, self.metrics_bar, self.timeline_bar, self.resource_bar,
                  self.backtrack_pane):
            w.pcolors = c
        self.token_view.set_palette(self.palette)
        self.tree_pane.restyle()
        self.backtrack_pane.restyle()
        self.resource_bar.refresh()
        self.metrics_bar.refresh()
        self.timeline_bar.refresh()
        self.detail_pane.show(self._selected(), self.cursor.seq, force=True)

    # -- the timer -----------------------------------------------------------
    def _tick(self) -> None:
        self._drain()

    def _drain(self, initial: bool = False) -> None:
        idx = self.index
        cur = self.cursor
        now = time.monotonic()
        if self._poll_run is not None:
            self._poll_script_run()
        self._drew = False
        first_seq = idx.last_seq
        batch = idx.ingest()
        grew = batch.last_seq > cur.end_seq
        moved = False
        if grew:
            self._freeze_if_grown(batch.last_seq)
            self._structural.extend(e for e in batch.events if type(e) is not Metric)
            if self.live:
                self._pace_to_machine(batch.events)
            self.backtrack_pane.sync()
            self._log_events(batch.events)
            moved = cur.grow(batch.last_seq)
        if self.live:
            self._pace_to_rate(batch.last_seq - first_seq, now)
            self._split_cpus()
        streaming = grew and (cur.following or self.loader is not None)
        if self._structural and (initial or not streaming):
            self._feed_tree(now)
        if cur.playing:
            moved = cur.tick(now) or moved
        if self.live and not self._monitor_checked:
            self._check_monitor()
        take_output = getattr(self.script_run, "take_output", None)
        if take_output is not None:  # the script process's own output (warnings...), not in the trace
            for line in take_output():
                self.output_log.write(_styled(line, self.app_colors.get("muted", "dim")))
        if streaming:
            self._streamed_at = now
        # still streaming for a moment after the last events: a tick between two writes is no end
        self._streaming = now - self._streamed_at < 0.25 and (cur.following or self.loader is not None)
        if initial or moved or cur.playing:
            scroll = ("end" if initial else "follow") if cur.following else ("selected" if cur.playing else None)
            self._sync(scroll=scroll, throttle=(streaming or cur.playing) and not initial)
        elif grew:
            # new events after the cursor: only the timeline and counts change
            self._slow_pending = True
        if self._fast_pending and now - self._fast_at >= self._frame_gap():
            self._sync(scroll="follow" if cur.following else None, throttle=True)
        # While events stream in, the slower work (the tree's rebuild, the side
        # panes) waits for a tick that did not redraw the stream: a stream
        # frame is not held back by it.
        quiet = not (self._streaming and self._drew)  # a frame drawn from a pending one counts too
        # The tree rebuilds its line list when nodes are added: while events
        # stream in, feed it in batches a few times a second.
        tree_period = 0.25 if len(self.tree_pane.trace.by_id) < 1000 else 1.0 / TREE_HZ  # big trees rebuild slower
        slow_period = 1.0 / SLOW_PANE_HZ
        if self._firehose or self._busy:  # each such frame redraws the whole screen: fewer of them
            tree_period, slow_period = 2 * tree_period, 2 * slow_period
        if self._structural and quiet and now - self._tree_at >= tree_period:
            self._feed_tree(now)
        if self._slow_pending and quiet and now - self._slow_at >= slow_period:
            self._sync_slow()
        if self._monitor is not None:
            self.resource_bar.set_cursor(cur.seq)
        if self.loader is not None and self.loader.done.is_set() and batch.n_tokens == 0 and not grew:
            loader, self.loader = self.loader, None
            if loader.error is not None:
                self.notify(str(loader.error), title="Trace damaged", severity="error", timeout=10)
            elif loader.dropped_bytes:
                self.notify(f"The trace ends mid-event ({loader.dropped_bytes} bytes dropped): the run was "
                            "cut short.", severity="warning", timeout=8)
            self._sync(scroll="end" if cur.following else None, throttle=False)

    def _feed_tree(self, now: float) -> None:
        self.tree_pane.feed(self._structural)
        self._structural = []
        self._tree_at = now

    def _poll_script_run(self) -> None:
        from tracing import TraceFormatError

        # Decoding allocates a dozen tracked objects an event, all kept for the app's
        # lifetime: with the collector on, nearly half the decoding time went to
        # scanning them.  Off while decoding; a big enough batch is then frozen
        # (see _freeze_if_grown) before anything scans it.
        enabled = gc.isenabled()
        gc.disable()
        try:
            self._poll_run(POLL_MAX_EVENTS)
        except TraceFormatError as e:  # the run goes on; the process watcher stops following
            self._poll_run = None
            self.script_run.polled_elsewhere = False
            self.notify(str(e), title="Trace damaged", severity="error", timeout=10)
        finally:
            if enabled:
                self._freeze_if_grown(self.store.last_seq, FREEZE_POLLED)
                gc.enable()

    def _pace_to_machine(self, events: list) -> None:
        """Draw the stream less often while the machine has no idle core.

        A model on the CPU uses every core, its threads meeting at a barrier
        each token: every millisecond the app draws there delays a whole step
        (measured: the app at 19 % of a core slowed such a producer by 27 %).
        The run's own CPU samples say when that is the case."""
        cpu = next((e.cpu for e in reversed(events) if type(e) is Metric), None)
        if cpu is not None:
            if cpu >= BUSY_CPU:
                self._busy = True
            elif cpu < IDLE_CPU:
                self._busy = False

    @property
    def _stream_hz(self) -> float:
        return STREAM_HZ_BUSY if self._busy else STREAM_HZ_FIREHOSE if self._firehose else STREAM_HZ

    def _frame_gap(self) -> float:
        """Seconds between stream frames; less a little slack, as frames land on
        ticks, which jitter: 1/30 s would often wait for the next tick."""
        return 1.0 / self._stream_hz - 0.4 / self.tick_hz

    def _pace_to_rate(self, n_events: int, now: float) -> None:
        """Draw the stream at STREAM_HZ_FIREHOSE while events pour in faster than
        anyone reads: each frame costs the same whatever it shows, and on a
        small machine the app's CPU is taken from the script's."""
        dt = now - self._rate_at
        self._rate_at = now
        if dt > 0 and n_events / dt >= FIREHOSE_EVENTS_S:
            self._firehose_until = now + 1.0  # and for a second after: a pause between bursts is no end
        self._firehose = now < self._firehose_until

    def _split_cpus(self) -> None:
        """While events flood in from a script process (and the machine has idle
        cores), the app and the script keep to different CPUs (see cpu_split)."""
        want = self._firehose and not self._busy and self._may_split and not self.script_done.is_set()
        split = self._cpu_split
        if split is None:
            pid = getattr(self.script_run, "pid", None) if want else None
            if pid is None:
                return
            split = self._cpu_split = CpuSplit(pid)
        if want and not split.active:
            if not split.apply():
                self._may_split = False  # one CPU: never again
        elif not want and split.active:
            split.restore()

    def _freeze_if_grown(self, last_seq: int, every: int = FREEZE_EVERY) -> None:
        """Move the events so far out of the garbage collector's sight.

        The store keeps every event for the app's lifetime, so scanning them in
        each full collection is pure cost: with a million live objects a full
        collection takes a third of a second, and both the producer and the UI
        wait for it.  gc.freeze() parks them in the permanent generation."""
        if last_seq - self._frozen_at >= every:
            gc.freeze()
            self._frozen_at = last_seq

    def _check_monitor(self) -> None:
        from tracing import Metric

        if self.store.seqs_of(Metric):
            self._monitor_checked = True
        elif self.use_monitor and time.monotonic() - self._started > MONITOR_FALLBACK_S:
            from tracing import get_monitor

            self._monitor = get_monitor().acquire()
            self.resource_bar.monitor = self._monitor
            self._monitor_checked = True

    def _log_events(self, events: list) -> None:
        log = self.output_log
        c = self.app_colors
        for ev in events:
            t = type(ev)
            if t is Message:
                style = {"error": c.get("error", "red"), "warning": c.get("warning", "yellow")}.get(ev.level, "")
                log.write(_styled(ev.text.rstrip("\n"), style))
            elif t is RunStart:
                bits = [ev.script or "run"] + [x for x in (ev.model, ev.backend) if x]
                log.write(_styled("▶ " + " · ".join(bits), c.get("muted", "dim")))
            elif t is RunEnd:
                log.write(_styled(f"■ run {ev.status}" + (f": {ev.error}" if ev.error else ""),
                                  c.get("error" if ev.status == "error" else "muted", "")))

    # -- drawing for the cursor --------------------------------------------------
    def _selected(self) -> int:
        idx = self.index
        seq = self.cursor.seq
        if self.pinned is not None and self.pinned < idx.n and idx.seqs[self.pinned] <= seq:
            return self.pinned
        bt = idx.backtrack_by_seq(seq)
        if bt is not None and bt.removed:
            return bt.removed[-1]
        return idx.token_at(seq)

    def _sync(self, *, scroll: str | None = "selected", throttle: bool = False) -> None:
        """Redraw for the cursor: the stream and timeline now, the other panes
        now or (``throttle``, while events stream in) at most SLOW_PANE_HZ."""
        now = time.monotonic()
        if throttle and now - self._fast_at < self._frame_gap():
            self._fast_pending = True
            return
        self._fast_at = now
        self._fast_pending = False
        self._drew = True
        seq = self.cursor.seq
        sel = self._selected()
        self.token_view.update_view(seq, sel, scroll=scroll)
        if not (throttle and self._streaming):
            # While events stream in, the timeline waits for the slow panes: a frame
            # that redraws only the stream draws only the widgets under it
            # (Textual renders every widget in the bounding box of what changed).
            self.timeline_bar.sync()
        if self.lag_probe is not None:
            self.lag_probe(self.index.token(self.index.n - 1).t_us if self.index.n else 0)
        if throttle and (self._streaming or time.monotonic() - self._slow_at < 1.0 / SLOW_PANE_HZ):
            self._slow_pending = True
            return
        self._sync_slow()

    def _sync_slow(self) -> None:
        self._slow_at = time.monotonic()
        self._slow_pending = False
        seq = self.cursor.seq
        sel = self._selected()
        self.timeline_bar.sync()
        tree = self.tree_pane
        tree.set_cursor(seq)
        if sel >= 0 and not tree.has_focus:
            tree.show_node_id(self.index.token(sel).node_id)
        self.backtrack_pane.set_cursor(seq)
        self._update_backtrack_tab()
        if self.detail_pane.display:
            self.detail_pane.show(sel, seq)
        mode = "loading" if self.loader is not None else ("live" if self.live else "replay")
        self.metrics_bar.show(stats_at(self.index, seq), mode)
        self.resource_bar.set_cursor(seq)
        self._show_error(seq)

    _tab_label = "Backtracks"  # what the Backtracks tab says now
    _tab_timer = None  # a relabel waiting for the one-second gap

    def _update_backtrack_tab(self) -> None:
        """The tab counts every backtrack of the run so far (the metrics bar: those up to the cursor).

        Relabelling a tab re-lays out the screen: at most once a second while
        backtracks stream in, and the latest count always lands in the end."""
        n = len(self.index.backtracks)
        label = f"Backtracks {n}" if n else "Backtracks"
        if label == self._tab_label or self._tab_timer is not None:
            return
        wait = self._tab_at + 1.0 - time.monotonic()
        if wait > 0:
            self._tab_timer = self.set_timer(wait, self._relabel_backtrack_tab)
            return
        self._relabel_backtrack_tab()

    def _relabel_backtrack_tab(self) -> None:
        self._tab_timer = None
        self._tab_at = time.monotonic()
        n = len(self.index.backtracks)
        label = f"Backtracks {n}" if n else "Backtracks"
        try:
            tab = self.query_one("#tabs", TabbedContent).get_tab("tab-backtracks")
        except Exception:
            return
        self._tab_label = label
        if str(tab.label) != label:
            _relabel(tab, label)

    def _show_error(self, seq: int) -> None:
        end = self.store.run_end()
        show = end is not None and end.seq <= seq and end.status == "error"
        pane = self.query_one("#error")
        if show != self._error_shown:
            self._error_shown = show
            pane.set_class(show, "-shown")
            if show:
                pane.border_title = "✖ the script raised"
                error = self.app_colors.get("error", "red")
                body = _styled(end.error or "error", f"bold {error}")
                if end.traceback:
                    body.append("\n\n")
                    lines = end.traceback.rstrip("\n").split("\n")
                    for i, line in enumerate(lines):
                        frame = line.lstrip().startswith("File ")
                        body.append(line, "bold" if frame else (error if i == len(lines) - 1 else ""))
                        if i < len(lines) - 1:
                            body.append("\n")
                self.error_text.update(body)

    # -- actions -------------------------------------------------------------
    def _moved(self, moved: bool, scroll: str = "selected") -> None:
        self.pinned = None
        self._hold_gc_until_drawn()
        self._sync(scroll=scroll)

    _gc_held = False  # _hold_gc_until_drawn disabled the collector

    def _hold_gc_until_drawn(self) -> None:
        """No cyclic garbage collection between a seek and its frame.

        A frame allocates thousands of container objects (Textual's Strips), so
        the collector runs during most frames, and a full collection (~10 ms
        here) every few seeks: that one frame misses its slot.  Held until the
        frame is drawn, the collection runs right after it instead, in the
        idle time before the next key.  Textual does the same around smooth
        scrolls (App.PAUSE_GC_ON_SCROLL)."""
        if self._gc_held or not gc.isenabled():
            return
        gc.disable()
        self._gc_held = True
        self.call_after_refresh(self._release_gc)

    def _release_gc(self) -> None:
        if self._gc_held:
            self._gc_held = False
            gc.enable()

    def action_step(self, n: int) -> None:
        self._moved(self.cursor.step(n))

    def action_home(self) -> None:
        self._moved(self.cursor.home())

    def action_end(self) -> None:
        self._moved(self.cursor.end(), scroll="end")

    def action_backtrack(self, direction: int) -> None:
        ok = self.cursor.next_backtrack() if direction > 0 else self.cursor.prev_backtrack()
        if not ok:
            self.notify("No more backtracks " + ("after" if direction > 0 else "before") + " the cursor.",
                        timeout=2)
            return
        self._moved(True)

    def action_low_prob(self, direction: int) -> None:
        if not self.cursor.next_low_prob(LOW_PROB, 1 if direction > 0 else -1):
            self.notify(f"No generated token with p < {LOW_PROB:g} " + ("after" if direction > 0 else "before")
                        + " the cursor.", timeout=2)
            return
        self._moved(True)

    def action_play(self) -> None:
        self.cursor.toggle_play(time.monotonic())
        self.pinned = None
        self._sync(scroll="selected")

    def action_speed(self, direction: int) -> None:
        speed = self.cursor.faster() if direction > 0 else self.cursor.slower()
        self.timeline_bar.sync()
        self.notify(f"Playback speed {speed:g}×", timeout=1.5)

    def action_cycle_color(self) -> None:
        m = self.token_view.options.color_metric
        self.action_set_color(COLOR_METRICS[(COLOR_METRICS.index(m) + 1) % len(COLOR_METRICS)])

    def action_set_color(self, metric: str) -> None:
        self.token_view.set_options(color_metric=metric)
        self._update_token_title()

    def action_cycle_underline(self) -> None:
        m = self.token_view.options.underline_metric
        self.action_set_underline(UNDERLINE_METRICS[(UNDERLINE_METRICS.index(m) + 1) % len(UNDERLINE_METRICS)])

    def action_set_underline(self, metric: str) -> None:
        self.token_view.set_options(underline_metric=metric)
        self._update_token_title()

    def action_toggle_backtracked(self) -> None:
        hide = not self.token_view.options.hide_backtracked
        self.token_view.set_options(hide_backtracked=hide)
        self._sync(scroll="selected")
        self._update_token_title()

    def action_toggle_whitespace(self) -> None:
        self.token_view.set_options(show_whitespace=not self.token_view.options.show_whitespace)
        self._update_token_title()

    def action_toggle_detail(self) -> None:
        self.detail_pane.display = not self.detail_pane.display
        if self.detail_pane.display:
            self.detail_pane.show(self._selected(), self.cursor.seq, force=True)

    def action_clear_highlight(self) -> None:
        self.token_view.set_highlight(None)
        if self.pinned is not None:
            self.pinned = None
            self._sync(scroll="selected")

    def action_focus_pane(self, pane: str) -> None:
        tabs = self.query_one("#tabs", TabbedContent)
        if pane == "tokens":
            self.token_view.focus()
        elif pane == "tree":
            tabs.active = "tab-tree"
            self.tree_pane.focus()
        elif pane == "backtracks":
            tabs.active = "tab-backtracks"
            self.backtrack_pane.focus()
        elif pane == "output":
            tabs.active = "tab-output"
            self.output_log.focus()

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    async def action_quit(self) -> None:
        if self.script_run is not None and not self.script_done.is_set():
            self.script_run.cancel()
        self.exit(self._exit_code())

    def _exit_code(self) -> int:
        if self.result is not None:
            return int(getattr(self.result, "exit_code", 0))
        return 0

    def _update_token_title(self) -> None:
        o = self.token_view.options
        bits = [f"colour: {o.color_metric}"]
        if o.underline_metric != "none":
            bits.append(f"underline: {_UNDERLINE_WORDS[o.underline_metric]}")
        if o.hide_backtracked:
            bits.append("backtracked hidden")
        self.token_view.border_subtitle = " · ".join(bits)

    # -- messages from panes ---------------------------------------------------
    @on(TokenView.TokenClicked)
    def _token_clicked(self, event: TokenView.TokenClicked) -> None:
        self.pinned = event.index
        self.token_view.set_highlight(None)
        self._sync(scroll=None)
        node = self.tree_pane.trace.by_id.get(self.index.token(event.index).node_id)
        if node is not None:
            self.tree_pane.show_node(node)

    @on(NodeTree.NodeChosen)
    def _node_chosen(self, event: NodeTree.NodeChosen) -> None:
        self._choose_node(event.node, pin=True)

    @on(NodeTree.NodeFocused)
    def _node_focused(self, event: NodeTree.NodeFocused) -> None:
        self._choose_node(event.node, pin=False)

    def _choose_node(self, node: TraceNode, *, pin: bool) -> None:
        idx = self.index
        if node.kind == "root":
            self.token_view.set_highlight(None)
            return
        hi = node.close_seq if node.close_seq is not None else 1 << 62
        if node.kind == "branch":
            kids = [k for k in node.children]
            if kids:
                hi = max((k.close_seq if k.close_seq is not None else 1 << 62) for k in kids)
        self.token_view.set_highlight((node.open_seq, hi))
        first = idx.count_at(node.open_seq)  # first token after the node opened
        if first >= idx.n or idx.seqs[first] > hi:
            return
        if idx.seqs[first] > self.cursor.seq:
            if not pin:
                return
            self.cursor.seek(node.close_seq if node.close_seq is not None else self.cursor.end_seq)
        if pin:
            self.pinned = first
        self.token_view.scroll_to_token(first)
        self._sync(scroll=None)

    @on(BacktrackList.Chosen)
    def _backtrack_chosen(self, event: BacktrackList.Chosen) -> None:
        self.cursor.seek(event.seq)
        self._moved(True)

    @on(TimelineBar.Seek)
    def _seek(self, event: TimelineBar.Seek) -> None:
        self.cursor.seek(event.seq)
        self._moved(True)


def _relabel(tab, label: str) -> None:
    """Set a tab's label; without re-laying out the screen when its width is unchanged.

    ``ContentTab.label = ...`` always lays the whole screen out again (10-40
    ms here), and the Backtracks count changes every second while a run with
    many backtracks streams in: those were the slowest frames.  Same width,
    same place: only the tab needs drawing.  (Textual is pinned; this uses
    its ContentTab's label field.)"""
    from textual.content import Content
    from textual.widgets import Static

    new = Content.from_text(label)
    if new.cell_length != tab.label.cell_length or not hasattr(tab, "_label"):
        tab.label = label
        return
    tab._label = new
    Static.update(tab, new, layout=False)


_UNDERLINE_WORDS = {"latency": "slow", "probability": "unlikely", "kind": "forced", "none": "none"}


def _styled(text: str, style: str):
    from rich.text import Text

    return Text(text, style=style)


def default_title(store: TraceStore, path: str | Path | None = None) -> str:
    start = store.run_start()
    if path is not None:
        return Path(path).name
    return start.script if start is not None else ""
