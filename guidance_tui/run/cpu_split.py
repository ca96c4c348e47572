"""Keeping the inspector and a flooding script on different CPUs for a while.

While a script pours out events faster than anyone reads them (a Python-bound
producer: a model that uses every core never floods), the app follows on about
a quarter of a core.  Left to the scheduler, on a 2-core machine the script's
threads (its main thread and its trace writer hand the interpreter lock back
and forth) keep landing on the app's core, and the app on theirs: measured,
the script ran 5-7 % slower.  With the script's threads on one core and the
app's on the other, 0.3 %.  So during a flood the app takes one CPU and the
script the others, and afterwards every thread gets back the CPUs it had.

Linux only (``os.sched_setaffinity`` per thread, threads listed in /proc);
elsewhere, or with a single CPU, nothing happens.  Nothing here imports
Textual.
"""

from __future__ import annotations

import os

_CAN = hasattr(os, "sched_setaffinity") and os.path.isdir("/proc/self/task")


def _threads(pid: int) -> list[int]:
    try:
        return [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:  # gone
        return []


def _set(tid: int, cpus: set[int]) -> bool:
    try:
        os.sched_setaffinity(tid, cpus)
        return True
    except OSError:  # gone, or not ours
        return False


class CpuSplit:
    """One CPU for this process's threads, the others for the script process ``pid``."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.active = False
        self._saved: dict[int, set[int]] = {}  # tid (of either process) -> its CPUs before the split
        self._defaults: dict[int, set[int]] = {}  # pid -> CPUs for threads born during the split

    def apply(self) -> bool:
        """Split the CPUs; False (and nothing changed) when there is no CPU to spare."""
        if self.active or not _CAN:
            return self.active
        try:
            theirs, ours = os.sched_getaffinity(self.pid), os.sched_getaffinity(0)
        except OSError:
            return False
        shared = theirs & ours
        if len(theirs) < 2 or not shared:
            return False
        app_cpu = max(shared)
        self._defaults = {self.pid: theirs, os.getpid(): ours}
        for pid, cpus in ((self.pid, theirs - {app_cpu}), (os.getpid(), {app_cpu})):
            for tid in _threads(pid):
                try:
                    self._saved[tid] = os.sched_getaffinity(tid)
                except OSError:
                    continue
                _set(tid, cpus)
        self.active = True
        return True

    def restore(self) -> None:
        """Give every thread of both processes back the CPUs it had (threads
        started during the split: those their process had)."""
        if not self.active:
            return
        for pid, default in self._defaults.items():
            for tid in _threads(pid):
                _set(tid, self._saved.get(tid, default))
        self._saved.clear()
        self.active = False
