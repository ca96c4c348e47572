"""When the inspector draws what: frame pacing, pure and with an injected clock.

The app ticks about 30 times a second.  On each tick the live feed says what
arrived; the pacer decides what is drawn:

* the token stream, at most ``stream_hz`` times a second while events stream
  in (30 Hz; 10 Hz while over ``FIREHOSE_EVENTS_S`` arrive, too fast to read
  anyway; 8 Hz while the run's CPU samples say no core is idle, since every
  millisecond the app draws there delays a model that uses every core);
* the slower panes (detail, tree cursor, metrics, timeline) at ``SLOW_PANE_HZ``
  (1 Hz on a busy machine), and the tree's new nodes a few times a second.
  Textual renders every widget inside the bounding box of what changed, so a
  frame that changes only the stream draws only the stream, and one that
  changes the top bar and the bottom ones draws the whole screen: the slow
  panes (and the tree) go into a stream frame when they are due, making that
  one frame big instead of adding a second, big one;
* user actions at once (``throttle=False``).

The ticks themselves slow down to the stream's rate on a busy machine: there
is no point reading the trace file 30 times a second to draw 8 frames, and
each tick is work taken from the model.

No Textual here: the flood and busy-machine rules are unit-tested with a fake
clock.
"""

from __future__ import annotations

import time
from typing import Callable

TICK_HZ = 30.0
SLOW_PANE_HZ = 4.0  # detail, tree cursor, metrics while events stream in...
SLOW_PANE_HZ_BUSY = 1.0  # ...or this often while the machine has no idle core (each is a whole-screen frame)
TREE_HZ = 1.0  # new nodes join a big tree this often while events stream in
BIG_TREE = 1000  # nodes; a smaller tree takes new nodes every 0.25 s
STREAM_HZ = 30.0  # the token stream redraws at most this often while following a run...
STREAM_HZ_BUSY = 8.0  # ...or this often while the machine has no idle core (the ticks too)...
STREAM_HZ_FIREHOSE = 10.0  # ...or this often while over FIREHOSE_EVENTS_S arrive
FIREHOSE_EVENTS_S = 20_000.0
FIREHOSE_HOLD_S = 1.0  # a pause between bursts is no end of the flood
BUSY_CPU, IDLE_CPU = 92.0, 80.0  # machine CPU % (all cores) that enters / leaves the busy pace
STREAMING_HOLD_S = 0.25  # a tick between two writes is no end of the stream


class FramePacer:
    """Decides, tick by tick, which frames are due.  ``clock`` is injected."""

    def __init__(self, tick_hz: float = TICK_HZ, clock: Callable[[], float] = time.monotonic) -> None:
        self.tick_hz = tick_hz
        self.clock = clock
        now = clock()
        self.busy = False  # the run's CPU samples say no core is idle
        self.firehose = False  # events arrive at over FIREHOSE_EVENTS_S
        self.streaming = False  # events are arriving and the view follows them
        self.stream_pending = False  # a stream frame was skipped: draw it when due
        self.slow_pending = False  # the slow panes are out of date
        self.drew_stream = False  # this tick drew the stream
        self.drew_slow = False  # this tick drew the slow panes
        self._rate_at = now
        self._firehose_until = 0.0
        self._streamed_at = -1.0
        self._stream_at = 0.0
        self._slow_at = 0.0
        self._tree_at = 0.0

    # -- what the feed said ------------------------------------------------------
    def begin_tick(self) -> float:
        self.drew_stream = self.drew_slow = False
        return self.clock()

    @property
    def tick_hz_now(self) -> float:
        """How often the app should tick now: the stream's rate on a busy machine
        (unless events flood in: then they need reading), else ``tick_hz``."""
        if self.busy and not self.firehose:
            return min(self.tick_hz, STREAM_HZ_BUSY)
        return self.tick_hz

    def observe_cpu(self, cpu: float | None) -> None:
        """The machine's CPU % from the run's newest sample (None: no sample this tick)."""
        if cpu is not None:
            if cpu >= BUSY_CPU:
                self.busy = True
            elif cpu < IDLE_CPU:
                self.busy = False

    def observe_rate(self, n_events: int, now: float) -> None:
        """``n_events`` arrived since the last call."""
        dt = now - self._rate_at
        self._rate_at = now
        if dt > 0 and n_events / dt >= FIREHOSE_EVENTS_S:
            self._firehose_until = now + FIREHOSE_HOLD_S
        self.firehose = now < self._firehose_until

    def observe_stream(self, streamed: bool, following: bool, now: float) -> None:
        """``streamed``: new events arrived for a view that follows them."""
        if streamed:
            self._streamed_at = now
        self.streaming = following and now - self._streamed_at < STREAMING_HOLD_S

    # -- the stream ----------------------------------------------------------------
    @property
    def stream_hz(self) -> float:
        return STREAM_HZ_BUSY if self.busy else STREAM_HZ_FIREHOSE if self.firehose else STREAM_HZ

    def frame_gap(self) -> float:
        """Seconds between stream frames, less a little slack: frames land on
        ticks, which jitter, so 1/30 s would often wait for the next tick."""
        return 1.0 / self.stream_hz - 0.4 / self.tick_hz_now

    def stream_frame(self, throttle: bool) -> bool:
        """May the stream be drawn now?  A throttled frame too soon after the
        last one is left pending (``pending_stream_due``)."""
        now = self.clock()
        if throttle and now - self._stream_at < self.frame_gap():
            self.stream_pending = True
            return False
        self._stream_at = now
        self.stream_pending = False
        self.drew_stream = True
        return True

    def pending_stream_due(self, now: float) -> bool:
        return self.stream_pending and now - self._stream_at >= self.frame_gap()

    # -- the slow panes and the tree ------------------------------------------------
    def slow_with_stream(self, throttle: bool) -> bool:
        """After a stream frame: may the slow panes be drawn in the same frame?"""
        if throttle and self.clock() - self._slow_at < self._slow_period():
            self.slow_pending = True
            return False
        return True

    def slow_drawn(self) -> None:
        self._slow_at = self.clock()
        self.slow_pending = False
        self.drew_slow = True

    @property
    def quiet(self) -> bool:
        """This tick may do slow work: it did not draw the stream while streaming
        (a frame drawn from a pending one counts too)."""
        return not (self.streaming and self.drew_stream)

    def _slowdown(self) -> float:
        return 2.0 if self.firehose or self.busy else 1.0  # each such frame redraws the whole screen

    def _slow_period(self) -> float:
        return 1.0 / SLOW_PANE_HZ_BUSY if self.busy else self._slowdown() / SLOW_PANE_HZ

    def slow_due(self, now: float) -> bool:
        """On a tick that drew no stream: are the slow panes out of date and due?"""
        return self.slow_pending and self.quiet and now - self._slow_at >= self._slow_period()

    def tree_due(self, now: float, n_nodes: int) -> bool:
        """New nodes are waiting: may the tree take them now?  (It rebuilds its
        line list when nodes are added; big trees rebuild slower.)  On a tick
        that drew the stream only along with the slow panes: that frame is the
        whole screen anyway."""
        period = 0.25 if n_nodes < BIG_TREE else 1.0 / TREE_HZ
        return (self.quiet or self.drew_slow) and now - self._tree_at >= self._slowdown() * period

    def tree_fed(self, now: float) -> None:
        self._tree_at = now
