"""One resource sampler thread per process, shared by every user.

``acquire()`` starts the thread on first use and ``release()`` stops it after
the last user (reference counted).  Samples are immutable :class:`Metric`
events kept in a ring bounded by time; listeners (trace stores) get each
sample appended.  psutil gives CPU and RAM; NVML (nvidia-ml-py) gives every
GPU's utilisation, memory and power when a driver is present, and its absence
is silent: CPU and RAM only.
"""

from __future__ import annotations

import collections
import os
import threading
import time
from typing import Callable

import psutil

from .events import GpuSample, Metric

DEFAULT_HZ = 4.0
DEFAULT_HISTORY_S = 300.0


def _nvidia_driver_possible() -> bool:
    """False where there is certainly no NVIDIA driver (Linux without its device or /proc entry):
    importing pynvml took ~13 ms of a cold start there, to find no library or no device."""
    if not os.path.isdir("/proc"):  # not Linux: ask NVML itself
        return True
    return any(os.path.exists(p) for p in ("/dev/nvidiactl", "/proc/driver/nvidia", "/dev/dxg"))  # dxg: WSL2


class _Nvml:
    """Thin NVML wrapper; ``available`` is False when there is no library or GPU."""

    def __init__(self) -> None:
        self.available = False
        self._handles: list = []
        self._nv = None  # set once nvmlInit succeeded, so close() shuts it down
        if not _nvidia_driver_possible():
            return
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nv = pynvml
            self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
            self.available = bool(self._handles)
        except Exception:  # no module, no driver, no device: CPU/RAM only
            self._handles = []

    def sample(self) -> list[GpuSample]:
        out = []
        nv = self._nv
        for i, h in enumerate(self._handles):
            try:
                util = nv.nvmlDeviceGetUtilizationRates(h).gpu
                mem = nv.nvmlDeviceGetMemoryInfo(h)
                try:
                    power = nv.nvmlDeviceGetPowerUsage(h) / 1000.0
                except Exception:
                    power = float("nan")
                out.append(GpuSample(i, float(util), int(mem.used), int(mem.total), power))
            except Exception:
                continue
        return out

    def close(self) -> None:
        if self._nv is not None:
            try:
                self._nv.nvmlShutdown()
            except Exception:
                pass


class ResourceMonitor:
    """The sampler.  Use :func:`get_monitor` for the process-wide instance."""

    def __init__(self, hz: float = DEFAULT_HZ, history_s: float = DEFAULT_HISTORY_S,
                 nvml_factory: Callable[[], object] = _Nvml) -> None:
        self.hz = hz
        self.history_s = history_s
        self._nvml_factory = nvml_factory
        self._lock = threading.Lock()
        self._refs = 0
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._history: collections.deque[tuple[float, Metric]] = collections.deque()
        self._listeners: list[Callable[[Metric], None]] = []
        self.gpu_available = False
        self._proc = psutil.Process(os.getpid())

    # -- lifetime -------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def refs(self) -> int:
        return self._refs

    def acquire(self, listener: Callable[[Metric], None] | None = None) -> "ResourceMonitor":
        """Register a user (and optionally a per-sample callback); starts the thread if needed."""
        with self._lock:
            if listener is not None:
                self._listeners.append(listener)
            self._refs += 1
            if self._refs == 1:
                # A fresh event per thread: clearing a shared one could revive a
                # thread that a concurrent release() has just told to stop.
                self._stop = threading.Event()
                self._thread = threading.Thread(target=self._loop, args=(self._stop,),
                                                name="resource-monitor", daemon=True)
                self._thread.start()
        return self

    def release(self, listener: Callable[[Metric], None] | None = None) -> None:
        """Unregister a user; the last one stops the thread."""
        with self._lock:
            if listener is not None and listener in self._listeners:
                self._listeners.remove(listener)
            if self._refs == 0:
                return
            self._refs -= 1
            thread = self._thread if self._refs == 0 else None
            if thread is not None:
                self._stop.set()
                self._thread = None
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    # -- reading --------------------------------------------------------
    def latest(self) -> Metric | None:
        with self._lock:
            return self._history[-1][1] if self._history else None

    def history(self) -> list[Metric]:
        with self._lock:
            return [m for _, m in self._history]

    # -- the thread -----------------------------------------------------
    def sample_once(self, nvml) -> Metric:
        vm = psutil.virtual_memory()
        gpus = nvml.sample() if nvml.available else []
        try:
            rss = self._proc.memory_info().rss
        except psutil.Error:
            rss = 0
        return Metric(cpu=psutil.cpu_percent(interval=None), ram_used=int(vm.total - vm.available),
                      ram_total=int(vm.total), proc_rss=int(rss), gpus=gpus)

    def _loop(self, stop: threading.Event) -> None:
        nvml = self._nvml_factory()
        self.gpu_available = bool(getattr(nvml, "available", False))
        psutil.cpu_percent(interval=None)  # prime: the first reading is meaningless
        period = 1.0 / self.hz
        next_t = time.monotonic() + period
        try:
            while not stop.wait(max(0.0, next_t - time.monotonic())):
                m = self.sample_once(nvml)
                now = time.monotonic()
                # Skip missed periods (a suspended machine, a stalled thread)
                # instead of catching up with a burst of samples.
                next_t += period
                if next_t < now:
                    next_t = now + period
                with self._lock:
                    self._history.append((now, m))
                    while self._history and now - self._history[0][0] > self.history_s:
                        self._history.popleft()
                    listeners = list(self._listeners)
                for fn in listeners:
                    try:
                        # Each store stamps its own seq/time, so hand out copies.
                        fn(_copy(m))
                    except Exception:
                        pass
        finally:
            close = getattr(nvml, "close", None)
            if close:
                close()


def _copy(m: Metric) -> Metric:
    return Metric(cpu=m.cpu, ram_used=m.ram_used, ram_total=m.ram_total, proc_rss=m.proc_rss, gpus=list(m.gpus))


_monitor: ResourceMonitor | None = None
_monitor_lock = threading.Lock()


def get_monitor() -> ResourceMonitor:
    """The process-wide monitor (created on first call, not started until acquired)."""
    global _monitor
    with _monitor_lock:
        if _monitor is None:
            _monitor = ResourceMonitor()
        return _monitor
