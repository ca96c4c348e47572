"""`guidance-tui compare A B` on two 100k-token runs: time until the compare screen's first frame.

What is timed is what the command does: read both trace files, build the two
sides, align them (nodes, then the first divergence of every pair), and open
the compare screen until its first frame is drawn (a headless Textual app).
Two pairs of synthetic traces (``tracing.synthetic``):

* near: the same run twice, B with its probabilities nudged and one token in
  the middle changed (two runs of one program: long equal stretches);
* apart: two runs of different seeds (every node differs: the worst case for
  the node and token diffs).

Baseline, in the same process and interleaved: opening a replay of one of
the 100k-token traces in the inspector, until its first frame (what
``replay`` does).  Target: compare opens in <= 1.5 s.

    .venv/bin/python benchmarks/bench_compare.py [--tokens 100000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TARGET_S = 1.5


def make_traces(d: Path, n: int) -> dict[str, tuple[Path, Path]]:
    from tracing import Token, write_trace
    from tracing.synthetic import synthetic_events

    a = list(synthetic_events(n, seed=1))
    write_trace(d / "a.gtt", a)
    rng = random.Random(7)
    b = list(synthetic_events(n, seed=1))
    toks = [e for e in b if isinstance(e, Token)]
    for t in toks:
        if t.prob == t.prob:
            t.prob = min(1.0, max(0.0, t.prob + rng.uniform(-0.05, 0.05)))
    toks[len(toks) // 2].bytes = b" changed"
    write_trace(d / "near.gtt", b)
    write_trace(d / "apart.gtt", synthetic_events(n, seed=2))
    return {"near": (d / "a.gtt", d / "near.gtt"), "apart": (d / "a.gtt", d / "apart.gtt")}


async def open_compare(a: Path, b: Path) -> tuple[float, float, float]:
    """(seconds to the first frame, of which reading and aligning, CPU seconds of this process) for
    ``compare a b``."""
    from guidance_tui.app.compare_screen import CompareApp
    from guidance_tui.cli.compare_commands import load_comparison

    c0 = time.process_time()
    t0 = time.perf_counter()
    cmp = load_comparison(str(a), str(b))
    t1 = time.perf_counter()
    app = CompareApp(cmp)
    async with app.run_test(size=(140, 40)) as pilot:
        await pilot.pause()
        t2 = time.perf_counter()
        c1 = time.process_time()
        assert app.screen.nodes.n == len(cmp.pairs)
    return t2 - t0, t1 - t0, c1 - c0


async def open_replay(path: Path) -> tuple[float, float]:
    """(seconds, CPU seconds) to the inspector's first frame of a replay, the whole file read first."""
    from tracing import TraceStore, read_trace

    from guidance_tui.app import InspectorApp

    c0 = time.process_time()
    t0 = time.perf_counter()
    store = TraceStore(read_trace(path).events)
    app = InspectorApp(store, title=path.name, use_monitor=False)
    async with app.run_test(size=(140, 40)) as pilot:
        await pilot.pause()
        t1 = time.perf_counter()
        c1 = time.process_time()
    return t1 - t0, c1 - c0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-compare-") as tmp:
        pairs = make_traces(Path(tmp), args.tokens)
        results: dict[str, list] = {"replay": [], "near": [], "apart": []}
        for _ in range(args.rounds):  # interleaved: replay, near, apart, replay, ...
            gc.collect()
            results["replay"].append(asyncio.run(open_replay(pairs["near"][0])))
            for name in ("near", "apart"):
                gc.collect()
                results[name].append(asyncio.run(open_compare(*pairs[name])))
    base = statistics.median(t for t, _ in results["replay"])
    base_cpu = statistics.median(c for _, c in results["replay"])
    print(f"{args.tokens:,} tokens a side, {args.rounds} rounds, medians (wall; CPU of this process: the "
          "machine's other load shows as wall > CPU)")
    print(f"  baseline: replay of one trace, first frame  {base:.3f} s  (CPU {base_cpu:.3f} s)")
    ok = True
    for name in ("near", "apart"):
        total = statistics.median(t for t, _, _ in results[name])
        load = statistics.median(x for _, x, _ in results[name])
        cpu = statistics.median(c for _, _, c in results[name])
        ok &= total <= TARGET_S
        print(f"  compare ({name:5}): first frame {total:.3f} s (read + align {load:.3f} s; CPU {cpu:.3f} s) "
              f"= {total / base:.2f}x the replay  [target <= {TARGET_S} s: {'ok' if total <= TARGET_S else 'MISSED'}]")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
