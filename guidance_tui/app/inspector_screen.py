"""The inspector screen: one run's panes over a TraceStore, live or replayed.

Live and replay are one code path.  A timer (~30 Hz; 8 Hz while the machine
has no idle core, see pacer) pumps the live feed
(whatever the store gained since the last tick, in one batch, into the token
index); the pacer decides which panes are drawn for "the store up to the
cursor seq".  Following a live run keeps the cursor at the end; any scrub
stops following and End resumes it.  The screen composes the panes, owns the
key bindings (so modal screens do not see timeline keys) and reacts to the
panes' messages; each pane draws itself from an ``At``.
"""

from __future__ import annotations

import os
import threading
import time

from textual import events, on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, TabPane

from tracing.store import TraceStore
from tracing.tree import TraceNode

from guidance_tui.app.actions import bindings
from guidance_tui.app.commands import InspectorCommands
from guidance_tui.app.compare_screen import CompareActions
from guidance_tui.app.fork_screen import ForkActions
from guidance_tui.app.help import HelpScreen
from guidance_tui.app.search_bar import SearchActions, SearchBar
from guidance_tui.gc_policy import FrameHold
from guidance_tui.run.cpu_split import CpuSplit
from guidance_tui.state.cursor import LOW_PROB, At, Cursor
from guidance_tui.state.feed import FeedBatch, LiveFeed
from guidance_tui.state.pacer import TICK_HZ, FramePacer
from guidance_tui.state.stats import run_status
from guidance_tui.state.token_index import TokenIndex
from guidance_tui.widgets.backtrack_pane import BacktrackList
from guidance_tui.widgets.colors import COLOR_METRICS, UNDERLINE_METRICS, Palette, ThemeColors
from guidance_tui.widgets.detail_pane import DetailPane
from guidance_tui.widgets.error_pane import ErrorPane
from guidance_tui.widgets.metrics_bar import MetricsBar
from guidance_tui.widgets.output_log import OutputLog
from guidance_tui.widgets.resource_bar import ResourceBar
from guidance_tui.widgets.side_tabs import SideTabs
from guidance_tui.widgets.styles import Styles
from guidance_tui.widgets.timeline_bar import TimelineBar
from guidance_tui.widgets.token_view import TokenView
from guidance_tui.widgets.tree_pane import NodeTree

MONITOR_FALLBACK_S = 1.5  # live run without samples in the store: read the monitor after this
_UNDERLINE_WORDS = {"latency": "slow", "probability": "unlikely", "kind": "forced", "none": "none"}


class InspectorScreen(SearchActions, CompareActions, ForkActions, Screen):
    """Inspect one run: ``store`` is read, never written (except by a live producer).

    ``script_run``: run in a thread worker (live mode): a ScriptProcess (the
    script in a child process; the live feed decodes its trace file on each
    tick) or anything with ``run()``, ``cancel()`` and ``store`` that fills
    the store.  ``follower``: a TraceFollower reading a file another process
    writes (attach, or replay of a live run).  ``loader``: a TraceLoader still
    filling ``store`` (replay of a big file).
    """

    BINDINGS = bindings()
    COMMANDS = {InspectorCommands}

    def __init__(self, store: TraceStore, *, script_run=None, follower=None, live: bool = False, loader=None,
                 title: str = "", tick_hz: float = TICK_HZ, use_monitor: bool = True) -> None:
        super().__init__()
        self.store = store
        self.script_run = script_run
        self.follower = follower
        self.live = live or script_run is not None or follower is not None
        self.loader = loader
        self.run_title = title
        self.use_monitor = use_monitor
        self.index = TokenIndex(store)
        self.cursor = Cursor(self.index, following=True)
        self.pacer = FramePacer(tick_hz)
        self.feed = LiveFeed(self.index, follower if follower is not None else script_run)
        self._ended_said = False  # the run's end was announced
        self.token_view = TokenView(self.index, Palette(ThemeColors.from_variables({})), id="tokens")
        self.tree_pane = NodeTree(self.index, id="tree")
        self.backtrack_pane = BacktrackList(self.index, id="backtracks")
        self.detail_pane = DetailPane(self.index, self.tree_pane.trace, id="detail")
        self.metrics_bar = MetricsBar(self.index, id="metrics")
        self.timeline_bar = TimelineBar(self.cursor, id="timeline")
        self.resource_bar = ResourceBar(store, id="resources")
        self.error_pane = ErrorPane(store, id="error")
        self.output_log = OutputLog(id="output")
        self.side_tabs = SideTabs(id="tabs", initial="tab-tree")
        # every pane that draws the cursor, in drawing order after the stream
        self.slow_panes = (self.timeline_bar, self.tree_pane, self.backtrack_pane, self.detail_pane,
                           self.metrics_bar, self.resource_bar, self.error_pane)
        self.pinned: int | None = None  # a token the user picked; None: the token at the cursor
        self.result = None  # the ScriptRun's RunResult once it finished
        self.run_error: BaseException | None = None
        self.script_done = threading.Event()
        self._gc_hold = FrameHold()
        # see cpu_split; GUIDANCE_TUI_CPU_SPLIT=0 leaves the scheduler alone
        self._cpu_split: CpuSplit | None = None
        self._may_split = os.environ.get("GUIDANCE_TUI_CPU_SPLIT", "1") != "0"
        self._monitor = None
        self._monitor_checked = False
        self._started = time.monotonic()
        self._paint_wanted = False  # paint at the next idle, not on the update timer (_paint_soon)
        self._ticker = None  # the timer that calls _drain, _tick_hz times a second
        self._tick_hz = 0.0
        # Display-lag probe for benchmarks: called with t_us of the newest token each stream frame.
        self.lag_probe = None

    def compose(self) -> ComposeResult:
        yield self.metrics_bar
        with Horizontal(id="main"):
            with Vertical(id="left"):
                yield self.token_view
                yield self.error_pane
            with Vertical(id="side"):
                with self.side_tabs:
                    with TabPane("Tree", id="tab-tree"):
                        yield self.tree_pane
                    with TabPane("Backtracks", id="tab-backtracks"):
                        yield self.backtrack_pane
                    with TabPane("Output", id="tab-output"):
                        yield self.output_log
                yield self.detail_pane
        yield SearchBar(id="search")
        yield self.timeline_bar
        yield self.resource_bar
        yield Footer()

    # -- lifecycle ---------------------------------------------------------
    def on_mount(self) -> None:
        """First drain, the timer, the workers."""
        self.metrics_bar.title = self.run_title
        self.token_view.border_title = "Tokens"
        self._update_token_title()
        self.timeline_bar.live = self.live
        self.apply_theme(self.app.theme_colors())
        self._drain(initial=True)
        self._tick_hz = self.pacer.tick_hz_now
        self._ticker = self.set_interval(1.0 / self._tick_hz, self._drain, name="drain")
        if self.script_run is not None:
            self.run_worker(self._run_script, thread=True, name="script", exit_on_error=False)
        if self.loader is not None and not self.loader.done.is_set():
            self.call_after_refresh(self.loader.start)
        self.token_view.focus()

    def on_unmount(self) -> None:
        self._gc_hold.release()
        if self._cpu_split is not None:
            self._cpu_split.restore()
        if self._monitor is not None:
            self._monitor.release()
            self._monitor = None
        if self.loader is not None:
            self.loader.stop()
        if self.follower is not None:
            self.follower.close()

    def _run_script(self) -> None:
        try:
            self.result = self.script_run.run()
        except BaseException as e:  # the runner itself failed; a script's own error is a RunEnd
            self.run_error = e
            self.app.call_from_thread(self.notify, f"{type(e).__name__}: {e}", title="The runner failed",
                                      severity="error", timeout=30)
        finally:
            self.script_done.set()

    def stop_script(self) -> None:
        if self.script_run is not None and not self.script_done.is_set():
            self.script_run.cancel()

    def apply_theme(self, colors) -> None:
        """Restyle every pane for the theme's ``colors`` (a ThemeColors)."""
        styles = Styles.from_theme(colors)
        self.token_view.set_palette(Palette(colors))
        for pane in (*self.slow_panes, self.output_log):
            pane.apply_styles(styles)
        self.detail_pane.show_at(self._at(), force=True)

    # -- the timer -----------------------------------------------------------
    @property
    def writer(self) -> str:
        """live (the run is being written), gone (it was, and its writer ended) or none (a recording)."""
        if self.script_run is not None:
            return "gone" if self.script_done.is_set() else "live"
        if self.follower is not None:
            return "live" if self.follower.writer_alive() else "gone"
        return "live" if self.live else "none"  # a test's producer, filling the store in-process

    @property
    def status(self) -> str:
        return run_status(self.store, self.writer)

    @property
    def mode(self) -> str:
        if self.loader is not None:
            return "loading"
        return "live" if self.status == "live" else "replay"

    def _announce_end(self) -> None:
        """Once: the run ended while the app watched it (the app stays open)."""
        if self._ended_said or not self.live or self.status == "live":
            return
        self._ended_said = True
        status = self.status
        if status == "died":
            self.notify("The run's writer is gone without an end: showing everything it flushed.",
                        title="Writer gone", severity="error", timeout=10)
        elif self.follower is not None:
            self.notify(f"The run ended: {status}.", title="Run ended", timeout=6)
        self.pacer.slow_pending = True  # the header's status and mode change

    def _drain(self, initial: bool = False) -> None:
        cur = self.cursor
        pacer = self.pacer
        now = pacer.begin_tick()
        fb = self.feed.pump(cur.end_seq)
        if fb.error is not None:
            self.notify(str(fb.error), title="Trace damaged", severity="error", timeout=10)
        if fb.warning:
            self.notify(fb.warning, title="Trace damaged", severity="warning", timeout=10)
        moved = False
        if fb.grew:
            if self.live:
                pacer.observe_cpu(fb.cpu)
            self.backtrack_pane.sync()
            self.output_log.take_events(fb.events)
            moved = cur.grow(fb.batch.last_seq)
        if self.live:
            pacer.observe_rate(fb.n_events, now)
            self._split_cpus()
        following = cur.following or self.loader is not None
        streamed = fb.grew and following
        if self.feed.structural and (initial or not streamed):
            self._feed_tree(now)
        if cur.playing:
            moved = cur.tick(now) or moved
        if self.live and not self._monitor_checked:
            self._check_monitor()
        self.output_log.take_output(self.feed.take_output())
        for notice in getattr(self.script_run, "take_notices", list)():  # a trace the script cannot write...
            self.notify(notice, title="guidance-tui", severity="error", timeout=20)
        pacer.observe_stream(streamed, following, now)
        if initial or moved or cur.playing:
            scroll = ("end" if initial else "follow") if cur.following else ("selected" if cur.playing else None)
            self._sync(scroll=scroll, throttle=(streamed or cur.playing) and not initial)
        elif fb.grew:
            pacer.slow_pending = True  # new events after the cursor: only the timeline and counts change
        if pacer.pending_stream_due(now):
            self._sync(scroll="follow" if cur.following else None, throttle=True)
        if self.feed.structural and pacer.tree_due(now, len(self.tree_pane.trace.by_id)):
            self._feed_tree(now)
        if pacer.slow_due(now):
            self._sync_slow()
        if self._monitor is not None:
            self.resource_bar.set_cursor(cur.seq)
        self._finish_loading(fb)
        if self.live and not self._ended_said:
            self._announce_end()
        if pacer.tick_hz_now != self._tick_hz and self._ticker is not None:
            self._retime(pacer.tick_hz_now)

    def _retime(self, hz: float) -> None:
        """Tick ``hz`` times a second from now on (the pacer slows the ticks on a busy machine)."""
        self._ticker.stop()
        self._tick_hz = hz
        self._ticker = self.set_interval(1.0 / hz, self._drain, name="drain")

    def _finish_loading(self, fb: FeedBatch) -> None:
        loader = self.loader
        if loader is None or not loader.done.is_set() or fb.batch.n_tokens or fb.grew:
            return
        self.loader = None
        if loader.error is not None:
            self.notify(str(loader.error), title="Trace damaged", severity="error", timeout=10)
        elif getattr(loader, "warning", None):  # damaged frames skipped, the good ones kept
            self.notify(loader.warning, title="Trace damaged", severity="warning", timeout=10)
        elif loader.dropped_bytes:
            self.notify(f"The trace ends mid-event ({loader.dropped_bytes} bytes dropped): the run was "
                        "cut short.", severity="warning", timeout=8)
        self._sync(scroll="end" if self.cursor.following else None, throttle=False)

    def _feed_tree(self, now: float) -> None:
        self.tree_pane.feed(self.feed.take_structural())
        self.pacer.tree_fed(now)

    def _split_cpus(self) -> None:
        """While events flood in from a script process (and the machine has idle
        cores), the app and the script keep to different CPUs (see cpu_split)."""
        pacer = self.pacer
        want = pacer.firehose and not pacer.busy and self._may_split and not self.script_done.is_set()
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

    def _check_monitor(self) -> None:
        from tracing import Metric

        if self.store.seqs_of(Metric):
            self._monitor_checked = True
        elif self.use_monitor and time.monotonic() - self._started > MONITOR_FALLBACK_S:
            from tracing import get_monitor

            self._monitor = get_monitor().acquire()
            self.resource_bar.monitor = self._monitor
            self._monitor_checked = True

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

    def _at(self, scroll: str | None = None) -> At:
        status = self.status
        mode = "loading" if self.loader is not None else ("live" if status == "live" else "replay")
        return At(self.cursor.seq, self._selected(), mode, scroll, status)

    def _sync(self, *, scroll: str | None = "selected", throttle: bool = False) -> None:
        """Redraw for the cursor: the stream and timeline now, the other panes
        now or (``throttle``, while events stream in) at the pacer's slow rate."""
        pacer = self.pacer
        if not pacer.stream_frame(throttle):
            return
        if not throttle:
            self._paint_soon()
        at = self._at(scroll)
        self.token_view.show_at(at)
        if not (throttle and pacer.streaming):
            # While events stream in, the timeline waits for the slow panes: a frame
            # that redraws only the stream draws only the widgets under it.
            self.timeline_bar.show_at(at)
        if self.lag_probe is not None:
            self.lag_probe(self.index.token(self.index.n - 1).t_us if self.index.n else 0)
        if pacer.slow_with_stream(throttle):
            self._sync_slow(at)

    def _paint_soon(self) -> None:
        """Paint what a user's action changed at the screen's next idle with something to paint.

        Textual paints on its update timer, and after a paint that timer sleeps one to two
        frame periods (1/60 s) before it looks again: an action right after a frame waited
        up to 33 ms for its own.  Keys that arrive together still share one paint (idle
        comes once the queued messages are handled)."""
        self._paint_wanted = True

    def _on_idle(self, event: events.Idle) -> None:
        # Before Screen._on_idle, which would resume the update timer instead.
        if self._paint_wanted and (self._dirty_widgets or self._layout_required or self._scroll_required
                                   or self._repaint_required) and self.is_current:
            self._paint_wanted = False
            self._on_timer_update()  # the update timer's own tick (Textual is pinned): layout, then paint

    def _sync_slow(self, at: At | None = None) -> None:
        self.pacer.slow_drawn()
        at = at or self._at()
        for pane in self.slow_panes:
            pane.show_at(at)
        self.side_tabs.count_backtracks(len(self.index.backtracks))

    # -- actions -------------------------------------------------------------
    def _moved(self, moved: bool, scroll: str = "selected") -> None:
        self.pinned = None
        self._sync(scroll=scroll)
        self._gc_hold.hold(self.call_after_refresh)  # after the panes asked for their paint

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
        self.detail_pane.show_at(self._at(), force=True)

    def action_clear_highlight(self) -> None:
        self.token_view.set_highlight(None)
        if self.pinned is not None:
            self.pinned = None
            self._sync(scroll="selected")

    def action_focus_pane(self, pane: str) -> None:
        tab, widget = {"tokens": (None, self.token_view), "tree": ("tab-tree", self.tree_pane),
                       "backtracks": ("tab-backtracks", self.backtrack_pane),
                       "output": ("tab-output", self.output_log)}[pane]
        if tab is not None:
            self.side_tabs.active = tab
        widget.focus()

    def action_help(self) -> None:
        self.app.push_screen(HelpScreen())

    async def action_quit(self) -> None:
        """Quit; a run opened from the run browser goes back to it instead."""
        from guidance_tui.app.runs_screen import RunsScreen

        stack = self.app.screen_stack
        if len(stack) > 1 and stack[-1] is self and isinstance(stack[-2], RunsScreen):
            self.stop_script()
            self.app.pop_screen()
            return
        await self.app.action_quit()

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
        if node.kind == "branch" and node.children:
            hi = max((k.close_seq if k.close_seq is not None else 1 << 62) for k in node.children)
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
