"""The shared resource monitor: reference counting, listeners, GPUs or none, bounded history."""

from __future__ import annotations

import math
import threading

import pytest

from tracing import GpuSample, Metric, ResourceMonitor, get_monitor
from tracing.monitor import _Nvml

WAIT_S = 20.0  # generous: the machine running the tests may be busy


class NoGpu:
    available = False

    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


class FakeGpu:
    """Stands in for NVML with two GPUs."""

    available = True
    instances: list["FakeGpu"] = []

    def __init__(self) -> None:
        self.closed = False
        FakeGpu.instances.append(self)

    def sample(self) -> list[GpuSample]:
        return [GpuSample(0, 55.0, 2 << 30, 8 << 30, 120.5), GpuSample(1, 0.0, 0, 8 << 30, math.nan)]

    def close(self) -> None:
        self.closed = True


class Collector:
    """A listener that signals once it has seen ``want`` samples."""

    def __init__(self, want: int) -> None:
        self.want = want
        self.samples: list[Metric] = []
        self.enough = threading.Event()

    def __call__(self, m: Metric) -> None:
        self.samples.append(m)
        if len(self.samples) >= self.want:
            self.enough.set()


def monitor_threads() -> int:
    return sum(t.name == "resource-monitor" for t in threading.enumerate())


@pytest.fixture
def monitor():
    m = ResourceMonitor(hz=50, nvml_factory=NoGpu)
    yield m
    while m.refs:
        m.release()


def test_two_acquires_start_one_thread_and_the_last_release_stops_it(monitor):
    before = monitor_threads()
    monitor.acquire()
    monitor.acquire()
    assert monitor.running and monitor.refs == 2
    assert monitor_threads() == before + 1
    monitor.release()
    assert monitor.running and monitor.refs == 1
    monitor.release()
    assert not monitor.running and monitor.refs == 0
    assert monitor_threads() == before


def test_an_extra_release_is_harmless(monitor):
    monitor.release()
    monitor.acquire()
    monitor.release()
    monitor.release()
    assert not monitor.running and monitor.refs == 0


def test_monitor_restarts_after_it_was_stopped(monitor):
    first = Collector(2)
    monitor.acquire(first)
    assert first.enough.wait(WAIT_S)
    monitor.release(first)
    second = Collector(2)
    monitor.acquire(second)
    assert monitor.running
    assert second.enough.wait(WAIT_S)


def test_listener_receives_metric_samples(monitor):
    got = Collector(3)
    monitor.acquire(got)
    assert got.enough.wait(WAIT_S)
    m = got.samples[0]
    assert isinstance(m, Metric)
    assert 0.0 <= m.cpu <= 100.0
    assert 0 < m.ram_used <= m.ram_total
    assert m.proc_rss > 0
    assert monitor.latest() is not None


def test_each_listener_gets_its_own_copy_of_a_sample(monitor):
    a, b = Collector(2), Collector(2)
    monitor.acquire(a)
    monitor.acquire(b)
    assert a.enough.wait(WAIT_S) and b.enough.wait(WAIT_S)
    assert a.samples[0] is not b.samples[0]
    assert all(m is not h for m in a.samples for h in monitor.history())


def test_a_released_listener_stops_receiving_while_others_continue(monitor):
    a, b = Collector(1), Collector(1)
    monitor.acquire(a)
    monitor.acquire(b)
    assert a.enough.wait(WAIT_S)
    monitor.release(a)
    count = len(a.samples)
    later = Collector(3)
    monitor.acquire(later)
    assert later.enough.wait(WAIT_S)
    assert len(a.samples) == count
    assert monitor.running


def test_a_failing_listener_does_not_stop_the_sampler(monitor):
    def broken(m: Metric) -> None:
        raise RuntimeError("listener bug")

    monitor.acquire(broken)
    good = Collector(3)
    monitor.acquire(good)
    assert good.enough.wait(WAIT_S)


def test_without_a_gpu_samples_have_no_gpus_and_no_error(monitor):
    got = Collector(2)
    monitor.acquire(got)
    assert got.enough.wait(WAIT_S)
    assert all(m.gpus == [] for m in got.samples)
    assert monitor.gpu_available is False


def test_gpu_samples_from_nvml_show_up_in_metrics():
    FakeGpu.instances.clear()
    monitor = ResourceMonitor(hz=50, nvml_factory=FakeGpu)
    got = Collector(2)
    monitor.acquire(got)
    try:
        assert got.enough.wait(WAIT_S)
        assert monitor.gpu_available is True
        gpus = got.samples[-1].gpus
        assert [g.index for g in gpus] == [0, 1]
        assert gpus[0].util == 55.0 and gpus[0].mem_used == 2 << 30 and gpus[0].power_w == 120.5
        assert math.isnan(gpus[1].power_w)
    finally:
        monitor.release(got)
    assert [f.closed for f in FakeGpu.instances] == [True]  # NVML shut down with the thread


def test_history_is_bounded_by_time():
    monitor = ResourceMonitor(hz=50, history_s=0.1, nvml_factory=NoGpu)
    got = Collector(40)
    monitor.acquire(got)
    try:
        assert got.enough.wait(WAIT_S)
        history = monitor.history()
    finally:
        monitor.release(got)
    # 0.1 s at 50 Hz is about 5 samples; allow for scheduling jitter, never all 40.
    assert 1 <= len(history) <= 13
    assert len(history) < len(got.samples)


def test_real_nvml_wrapper_never_raises():
    nv = _Nvml()
    assert nv.available in (True, False)
    if nv.available:
        assert all(isinstance(g, GpuSample) for g in nv.sample())
    nv.close()


def test_get_monitor_returns_one_process_wide_instance():
    assert get_monitor() is get_monitor()


def test_without_an_nvidia_driver_nvml_is_not_even_imported():
    """On Linux with no NVIDIA device node or /proc entry, pynvml (~13 ms of every start) stays unimported."""
    import subprocess
    import sys

    code = ("import os, sys; real = os.path.exists\n"
            "os.path.exists = lambda p: False if 'nvidia' in str(p) or str(p) == '/dev/dxg' else real(p)\n"
            "from tracing.monitor import _Nvml\n"
            "nv = _Nvml()\n"
            "print(nv.available, 'pynvml' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]
