"""The app and a flooding script process keep to different CPUs, and get them back after."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap

from _app_support import sync

from guidance_tui.app import InspectorApp
from guidance_tui.run.cpu_split import CpuSplit, _threads
from guidance_tui.run.script_process import ScriptProcess

CHILD = """
import threading, time
threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
print("ready", flush=True)
time.sleep(60)
"""


def masks(pid: int) -> dict[int, set[int]]:
    return {tid: os.sched_getaffinity(tid) for tid in _threads(pid)}


def test_a_split_gives_this_process_one_cpu_and_the_child_the_others_then_restores_them():
    child = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        ours_before, theirs_before = masks(os.getpid()), masks(child.pid)
        assert len(theirs_before) == 2  # the child's main thread and its sleeper
        split = CpuSplit(child.pid)
        cpus = os.sched_getaffinity(0)
        if len(cpus) < 2:  # nothing to split: nothing changes
            assert not split.apply() and masks(child.pid) == theirs_before
            return
        assert split.apply() and split.active
        app_cpu = max(cpus)
        assert set(map(frozenset, masks(os.getpid()).values())) == {frozenset({app_cpu})}
        assert set(map(frozenset, masks(child.pid).values())) == {frozenset(cpus - {app_cpu})}
        split.restore()
        assert not split.active
        assert masks(child.pid) == theirs_before
        assert {t: m for t, m in masks(os.getpid()).items() if t in ours_before} == ours_before
    finally:
        child.kill()
        child.wait()


def test_restoring_after_the_child_is_gone_is_quiet():
    child = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "ready"
    ours_before = os.sched_getaffinity(0)
    split = CpuSplit(child.pid)
    split.apply()
    child.kill()
    child.wait()
    split.restore()
    assert os.sched_getaffinity(0) == ours_before and not split.active


FLOOD = """
import time
from engines.session import current
from tracing.synthetic import synthetic_events

store = current().store
t0 = time.monotonic()
while time.monotonic() - t0 < 2.5:  # a flood of events, for longer than the app needs to see it
    for ev in synthetic_events(2000, seed=1):
        store.append(ev)
"""


@sync
async def test_the_app_splits_the_cpus_during_a_flood_and_gives_them_back_when_the_script_ends(tmp_path):
    path = tmp_path / "flood.py"
    path.write_text(textwrap.dedent(FLOOD))
    run = ScriptProcess(path, record=tmp_path / "t.gtt")
    app = InspectorApp(run.store, script_run=run, use_monitor=False)
    ours_before = os.sched_getaffinity(0)
    seen: list[set[int]] = []  # the child's CPUs while the split was on
    async with app.run_test(size=(100, 32)) as pilot:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while not app.script_done.is_set():
            assert loop.time() < deadline, "the script never ended"
            split = app.inspector._cpu_split
            if split is not None and split.active and run.pid is not None:
                try:
                    seen.append(os.sched_getaffinity(run.pid))
                except ProcessLookupError:
                    pass
            await pilot.pause(0.05)
        await pilot.pause(0.2)  # a tick after the end
        assert run.result.status == "done"
        assert app.inspector._cpu_split is None or not app.inspector._cpu_split.active
        assert os.sched_getaffinity(0) == ours_before
        if len(ours_before) >= 2:
            assert seen and all(s == ours_before - {max(ours_before)} for s in seen)
        else:
            assert not seen
