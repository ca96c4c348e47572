"""When the inspector draws what: frame pacing, pure and with an injected clock.

The app ticks about 30 times a second.  On each tick the live feed says what
arrived; the pacer decides what is drawn:

* the token stream, at most ``stream_hz`` times a second while events stream
  in (30 Hz; 10 Hz while over ``FIREHOSE_EVENTS_S`` arrive, too fast to read
  anyway; 8 Hz while the run's CPU samples say no core is idle, since every
  millisecond the app draws there delays a model that uses every core);
* the slower panes (detail, tree cursor, metrics) at ``SLOW_PANE_HZ``, and the
  tree's new nodes a few times a second, both only on ticks that did not draw
  the stream: Textual renders every widget inside the bounding box of what
  changed, so a frame that changes only the stream draws only the stream;
* user actions at once (``throttle=False``).

No Textual here: the flood and busy-machine rules are unit-tested with a fake
clock.
"""

from __future__ import annotations

import time
from typing import Callable

TICK_HZ = 30.0
SLOW_PANE_HZ = 4.0  # detail, tree cursor, metrics while events stream in
TREE_HZ = 1.0  # new nodes join a big tree this often while events stream in
BIG_TREE = 1000  # nodes; a smaller tree takes new nodes every 0.25 s
STREAM_HZ = 30.0  # the token stream redraws at most this often while following a run...
STREAM_HZ_BUSY = 8.0  # ...or this often while the machine has no idle core...
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
        self._rate_at = now
        self._firehose_until = 0.0
        self._streamed_at = -1.0
        self._stream_at = 0.0
        self._slow_at = 0.0
        self._tree_at = 0.0

    # -- what the feed said ------------------------------------------------------
    def begin_tick(self) -> float:
        self.drew_stream = False
        return self.clock()

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
        return 1.0 / self.stream_hz - 0.4 / self.tick_hz

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
        if throttle and (self.streaming or self.clock() - self._slow_at < 1.0 / SLOW_PANE_HZ):
            self.slow_pending = True
            return False
        return True

    def slow_drawn(self) -> None:
        self._slow_at = self.clock()
        self.slow_pending = False

    @property
    def quiet(self) -> bool:
        """This tick may do slow work: it did not draw the stream while streaming
        (a frame drawn from a pending one counts too)."""
        return not (self.streaming and self.drew_stream)

    def _slowdown(self) -> float:
        return 2.0 if self.firehose or self.busy else 1.0  # each such frame redraws the whole screen

    def slow_due(self, now: float) -> bool:
        return self.slow_pending and self.quiet and now - self._slow_at >= self._slowdown() / SLOW_PANE_HZ

    def tree_due(self, now: float, n_nodes: int) -> bool:
        """New nodes are waiting: may the tree take them now?  (It rebuilds its
        line list when nodes are added; big trees rebuild slower.)"""
        period = 0.25 if n_nodes < BIG_TREE else 1.0 / TREE_HZ
        return self.quiet and now - self._tree_at >= self._slowdown() * period

    def tree_fed(self, now: float) -> None:
        self._tree_at = now
