"""The run browser's listing: 1,000 runs, from their cached summaries.

Baseline, in the same process and interleaved: listing the same runs by
reading every trace file (what the browser does once for a file it has no
summary of).  Target: 1,000 runs listed in <= 0.5 s, and the browser's first
frame with them.

    .venv/bin/python benchmarks/bench_runs.py [--runs 1000] [--tokens 300]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def make_runs(d: Path, n: int, tokens: int) -> None:
    from tracing import read_trace, runs, write_trace
    from tracing.synthetic import synthetic_events

    events = list(synthetic_events(tokens, seed=1))
    for i in range(n):
        p = d / f"run{i:05d}.gtt"
        write_trace(p, events)
        runs.write_summary(p, read_trace(p).events)  # as a recorder does when its run ends


def list_cached(d: Path) -> float:
    from tracing.runs import list_runs

    t = time.perf_counter()
    rows = list_runs(d)
    dt = time.perf_counter() - t
    assert len(rows) > 0
    return dt


def list_reading_files(d: Path) -> float:
    from tracing import read_trace
    from tracing.runs import summary_of_events

    t = time.perf_counter()
    for name in os.listdir(d):
        if name.endswith(".gtt"):
            summary_of_events(d / name, read_trace(d / name).events)
    return time.perf_counter() - t


async def first_frame(d: Path) -> float:
    from guidance_tui.app import InspectorApp

    t = time.perf_counter()
    app = InspectorApp(None, browse=d)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        dt = time.perf_counter() - t
        assert app.screen.rows
    return dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--tokens", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-runs-"))
    d = tmp / "runs"
    os.environ["GUIDANCE_TUI_RUNS"] = str(d)
    from tracing.runs import runs_dir

    runs_dir()
    try:
        make_runs(d, a.runs, a.tokens)
        cached, reading = [], []
        for _ in range(a.rounds):  # interleaved: the machine's noise hits both alike
            cached.append(list_cached(d))
            reading.append(list_reading_files(d))
        frame = asyncio.run(first_frame(d))
        c, r = statistics.median(cached), statistics.median(reading)
        ok = "ok" if c <= 0.5 else "MISSED"
        print(f"run browser listing · {a.runs:,} runs of {a.tokens} tokens · {a.rounds} interleaved rounds")
        print(f"  from cached summaries   median {c * 1000:7.1f} ms   target <= 500 ms   {ok}")
        print(f"  reading every trace     median {r * 1000:7.1f} ms   (baseline; {r / c:.1f}x the cached listing)")
        print(f"  browser's first frame   {frame * 1000:7.1f} ms with {a.runs:,} runs (app start included)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
