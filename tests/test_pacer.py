"""The frame pacer, with a fake clock: which frames are due, tick by tick."""

from __future__ import annotations

import pytest

from guidance_tui.state import pacer as P
from guidance_tui.state.pacer import FramePacer


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> float:
        self.t += dt
        return self.t


@pytest.fixture()
def clock() -> Clock:
    return Clock()


def test_the_stream_draws_at_30_hz_when_nothing_is_special(clock):
    pacer = FramePacer(clock=clock)
    assert pacer.stream_hz == P.STREAM_HZ
    assert pacer.stream_frame(throttle=True)
    clock.advance(0.01)
    assert not pacer.stream_frame(throttle=True)  # too soon: left pending
    assert pacer.stream_pending
    assert not pacer.pending_stream_due(clock())
    clock.advance(1 / P.STREAM_HZ)
    assert pacer.pending_stream_due(clock())


def test_an_unthrottled_frame_is_drawn_at_once(clock):
    pacer = FramePacer(clock=clock)
    assert pacer.stream_frame(throttle=True)
    assert pacer.stream_frame(throttle=False)  # a key press never waits
    assert pacer.drew_stream


def test_a_flood_lowers_the_stream_rate_and_a_second_of_calm_restores_it(clock):
    pacer = FramePacer(clock=clock)
    now = clock.advance(0.1)
    pacer.observe_rate(int(P.FIREHOSE_EVENTS_S * 0.1) + 1, now)  # just over the threshold
    assert pacer.firehose and pacer.stream_hz == P.STREAM_HZ_FIREHOSE
    now = clock.advance(0.5)
    pacer.observe_rate(0, now)  # a pause between bursts is no end
    assert pacer.firehose
    now = clock.advance(P.FIREHOSE_HOLD_S)
    pacer.observe_rate(0, now)
    assert not pacer.firehose and pacer.stream_hz == P.STREAM_HZ


def test_just_under_the_flood_rate_is_no_flood(clock):
    pacer = FramePacer(clock=clock)
    now = clock.advance(1.0)
    pacer.observe_rate(int(P.FIREHOSE_EVENTS_S) - 1, now)
    assert not pacer.firehose


def test_a_busy_machine_slows_the_stream_with_hysteresis(clock):
    pacer = FramePacer(clock=clock)
    pacer.observe_cpu(P.BUSY_CPU)
    assert pacer.busy and pacer.stream_hz == P.STREAM_HZ_BUSY
    pacer.observe_cpu((P.BUSY_CPU + P.IDLE_CPU) / 2)  # between the two: stays busy
    assert pacer.busy
    pacer.observe_cpu(None)  # no sample this tick: no change
    assert pacer.busy
    pacer.observe_cpu(P.IDLE_CPU - 1)
    assert not pacer.busy and pacer.stream_hz == P.STREAM_HZ


def test_busy_wins_over_a_flood(clock):
    pacer = FramePacer(clock=clock)
    pacer.observe_cpu(99.0)
    pacer.observe_rate(10**6, clock.advance(0.1))
    assert pacer.stream_hz == P.STREAM_HZ_BUSY


def test_slow_panes_ride_along_with_a_stream_frame_when_due_and_only_then(clock):
    pacer = FramePacer(clock=clock)
    pacer.observe_stream(True, following=True, now=clock())
    assert pacer.streaming
    pacer.begin_tick()
    assert pacer.stream_frame(throttle=True)
    assert pacer.slow_with_stream(throttle=True)  # due: one frame draws both
    pacer.slow_drawn()
    assert pacer.drew_slow
    clock.advance(1 / P.STREAM_HZ)
    pacer.begin_tick()
    assert pacer.stream_frame(throttle=True)
    assert not pacer.slow_with_stream(throttle=True)  # not due yet: a stream frame stays small
    assert pacer.slow_pending
    assert not pacer.quiet  # this tick drew the stream: no slow work
    assert not pacer.slow_due(clock())
    clock.advance(1 / P.SLOW_PANE_HZ)
    pacer.begin_tick()  # a tick that draws no stream
    assert pacer.quiet and pacer.slow_due(clock())
    pacer.slow_drawn()
    assert not pacer.slow_pending


def test_the_tree_takes_new_nodes_only_in_a_frame_that_is_big_anyway(clock):
    pacer = FramePacer(clock=clock)
    pacer.observe_stream(True, following=True, now=clock())
    pacer.tree_fed(clock())
    clock.advance(1.0)
    pacer.begin_tick()
    assert pacer.stream_frame(throttle=True)
    assert not pacer.tree_due(clock(), n_nodes=10)  # a stream-only frame
    pacer.slow_drawn()
    assert pacer.tree_due(clock(), n_nodes=10)  # the slow panes make it whole-screen


def test_a_busy_machine_slows_the_ticks_to_the_stream_rate_and_the_slow_panes_to_one_a_second(clock):
    pacer = FramePacer(clock=clock)
    assert pacer.tick_hz_now == P.TICK_HZ
    pacer.observe_cpu(99.0)
    assert pacer.tick_hz_now == P.STREAM_HZ_BUSY == pacer.stream_hz
    pacer.observe_stream(True, following=True, now=clock())
    for _ in range(3):  # every tick may draw the stream: the gap leaves slack for jitter
        pacer.begin_tick()
        assert pacer.stream_frame(throttle=True)
        clock.advance(1 / pacer.tick_hz_now)
    pacer.slow_drawn()
    clock.advance(0.9 / P.SLOW_PANE_HZ_BUSY)
    assert not pacer.slow_with_stream(throttle=True)
    clock.advance(0.1 / P.SLOW_PANE_HZ_BUSY)
    assert pacer.slow_with_stream(throttle=True)


def test_a_flood_keeps_the_ticks_fast_on_a_busy_machine(clock):
    pacer = FramePacer(clock=clock)
    pacer.observe_cpu(99.0)
    pacer.observe_rate(10**6, clock.advance(0.1))
    assert pacer.tick_hz_now == P.TICK_HZ  # the events need reading
    assert pacer.stream_hz == P.STREAM_HZ_BUSY  # but not drawing more often


def test_streaming_lasts_a_moment_after_the_last_events(clock):
    pacer = FramePacer(clock=clock)
    pacer.observe_stream(True, following=True, now=clock())
    pacer.observe_stream(False, following=True, now=clock.advance(P.STREAMING_HOLD_S / 2))
    assert pacer.streaming
    pacer.observe_stream(False, following=True, now=clock.advance(P.STREAMING_HOLD_S))
    assert not pacer.streaming


def test_a_scrubbed_view_is_never_streaming(clock):
    pacer = FramePacer(clock=clock)
    pacer.observe_stream(True, following=False, now=clock())
    assert not pacer.streaming
    pacer.begin_tick()
    assert pacer.stream_frame(throttle=False)
    assert pacer.slow_with_stream(throttle=False)  # a user's action draws everything at once


def test_slow_panes_and_the_tree_halve_their_rate_in_a_flood(clock):
    pacer = FramePacer(clock=clock)
    pacer.slow_pending = True
    pacer.slow_drawn()
    pacer.slow_pending = True
    now = clock.advance(1 / P.SLOW_PANE_HZ)
    assert pacer.slow_due(now)
    pacer.slow_drawn()
    pacer.slow_pending = True
    pacer.tree_fed(now)
    pacer.observe_rate(10**6, clock.advance(0.01))
    now = clock.advance(1 / P.SLOW_PANE_HZ - 0.01)
    assert not pacer.slow_due(now)  # twice the period now
    assert not pacer.tree_due(now, n_nodes=10)
    now = clock.advance(1 / P.SLOW_PANE_HZ)
    assert pacer.slow_due(now)
    assert pacer.tree_due(now, n_nodes=10)


def test_a_big_tree_takes_new_nodes_less_often(clock):
    pacer = FramePacer(clock=clock)
    pacer.tree_fed(clock())
    now = clock.advance(0.3)
    assert pacer.tree_due(now, n_nodes=P.BIG_TREE - 1)
    assert not pacer.tree_due(now, n_nodes=P.BIG_TREE)
    assert pacer.tree_due(clock.advance(1 / P.TREE_HZ), n_nodes=P.BIG_TREE)


def test_the_frame_gap_leaves_slack_for_tick_jitter():
    pacer = FramePacer(tick_hz=30.0, clock=lambda: 0.0)
    assert pacer.frame_gap() < 1 / P.STREAM_HZ
    assert pacer.frame_gap() > 1 / P.STREAM_HZ - 1 / 30.0


# -- the live feed ----------------------------------------------------------------
from tracing import Metric, NodeOpen, TraceFormatError, TraceStore  # noqa: E402

from guidance_tui.state.feed import LiveFeed  # noqa: E402
from guidance_tui.state.token_index import TokenIndex  # noqa: E402

from _app_support import _tok  # noqa: E402


def test_the_feed_hands_over_new_events_structural_ones_and_the_newest_cpu_sample():
    store = TraceStore()
    feed = LiveFeed(TokenIndex(store))
    assert not feed.pump(end_seq=-1).grew
    store.append(NodeOpen(node_id=1, parent_id=0, kind="gen", name="g"))
    store.append(_tok(1, 0, "a"))
    store.append(Metric(cpu=40.0, ram_used=1, ram_total=2))
    store.append(Metric(cpu=97.0, ram_used=1, ram_total=2))
    fb = feed.pump(end_seq=-1)
    assert fb.grew and fb.n_events == 4 and fb.batch.n_tokens == 1
    assert fb.cpu == 97.0
    assert [type(e).__name__ for e in feed.take_structural()] == ["NodeOpen"]
    assert feed.take_structural() == []
    assert not feed.pump(end_seq=store.last_seq).grew


class DamagedSource:
    """A script process whose trace file turns out damaged."""

    polled_elsewhere = False

    def __init__(self) -> None:
        self.polls = 0

    def poll(self, max_events: int) -> int:
        self.polls += 1
        raise TraceFormatError("t.gtt: damaged frame at byte 42")

    def take_output(self) -> list[str]:
        return ["a warning"]


def test_a_damaged_followed_file_is_reported_once_and_no_longer_polled():
    source = DamagedSource()
    feed = LiveFeed(TokenIndex(TraceStore()), source)
    assert source.polled_elsewhere  # the feed reads the file on the app's thread
    fb = feed.pump(end_seq=-1)
    assert "damaged frame" in str(fb.error)
    assert not source.polled_elsewhere  # the process watcher follows it again
    assert feed.pump(end_seq=-1).error is None and source.polls == 1
    assert feed.take_output() == ["a warning"]  # the script's own output still comes through
