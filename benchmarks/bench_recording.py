"""Decoding throughput with the default session's recording on and off.

    flock /tmp/model.lock .venv/bin/python benchmarks/bench_recording.py [--tokens 128] [--rounds 5]
        [--intervals 0.05] [--processes]

Every process that uses engines records its runs (``engines/recording.py``): a
TraceWriter thread follows the store and flushes every ``FLUSH_INTERVAL``.
This measures what that costs a plain ``python`` program decoding on the
embedded Gemma (greedy, unconstrained ``gen(max_tokens=N)``, the KV cache
cleared before each generation).

In one process (the default): recording is off for the process
(``GUIDANCE_TUI_RECORD=0``); an "on" generation runs inside ``with
engines.record(file)``, which records exactly as the automatic run does
(same writer, same interval, registry entry), an "off" one outside it.  The
same model, session and monitor serve both.  Rounds are interleaved, each
round running every mode once in a rotating order; the figure is the median
of the per-round ratios on/off.  ``--intervals 0.01,0.05,0.25`` measures
several flush intervals side by side.

``--processes``: alternating subprocesses instead, each a plain ``python``
program (recording on: the automatic run into a temporary runs directory;
off: ``GUIDANCE_TUI_RECORD=0``) that loads the model, warms up and times
``--repeats`` generations.  This includes everything a recorded process does
differently, at the price of process-to-process noise.

Target: recording costs at most 1 % of decoding throughput (ratio >= 0.99).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROMPT = "Write a long story about a lighthouse keeper and a storm.\n\nOnce upon a time,"
ROOT = Path(__file__).resolve().parents[1]


def _generate(lm, tokens: int) -> tuple[int, float, float]:
    """One greedy generation: (generated tokens, wall seconds, tokens/s at the median time between two
    generated tokens: robust to bursts of other work on the machine, which wall time is not)."""
    from engines import gen
    from engines.session import current
    from tracing import Token, TokenKind

    store = current().store
    before = store.last_seq
    lm.engine.backend.reset()
    t = time.perf_counter()
    lm + PROMPT + gen(max_tokens=tokens)
    dt = time.perf_counter() - t
    gen_t = [store[s].t_us for s in store.seqs_of(Token) if s > before and store[s].kind == TokenKind.GENERATED]
    steps = [b - a for a, b in zip(gen_t, gen_t[1:])]
    decode = 1e6 / statistics.median(steps) if steps and statistics.median(steps) > 0 else 0.0
    n = len(gen_t)
    return n, dt, decode


def _writer_cpu() -> float:
    """CPU seconds the live run's trace-writer thread has used (Linux: psutil's per-thread times)."""
    import threading

    import psutil

    ids = {t.native_id for t in threading.enumerate() if t.name == "trace-writer"}
    return sum(t.user_time + t.system_time for t in psutil.Process().threads() if t.id in ids)


def in_process(a) -> None:
    os.environ["GUIDANCE_TUI_RECORD"] = "0"  # before engines start: only record() records
    tmp = Path(tempfile.mkdtemp(prefix="bench-recording-"))
    os.environ["GUIDANCE_TUI_RUNS"] = str(tmp / "runs")
    import engines
    from engines import models, recording

    lm = models.default()
    _generate(lm, 8)  # warm-up: tokenizer, caches
    intervals = [float(x) for x in a.intervals.split(",")]
    modes = ["off"] + [f"on@{i:g}" for i in intervals]
    wall: dict[str, list[float]] = {m: [] for m in modes}
    decode: dict[str, list[float]] = {m: [] for m in modes}
    start_end: list[float] = []
    writer_cpu: dict[str, list[float]] = {m: [] for m in modes}
    sizes: list[int] = []
    for r in range(a.rounds):
        order = modes[r % len(modes):] + modes[:r % len(modes)]
        for mode in order:
            if mode == "off":
                n, dt, d = _generate(lm, a.tokens)
            else:
                recording.FLUSH_INTERVAL = float(mode[3:])
                path = tmp / f"round{r}-{mode}.gtt"
                t0 = time.perf_counter()
                with engines.record(path):
                    t1 = time.perf_counter()
                    n, dt, d = _generate(lm, a.tokens)
                    t2 = time.perf_counter()
                    writer_cpu[mode].append(_writer_cpu() / dt)
                start_end.append((t1 - t0) + (time.perf_counter() - t2))
                sizes.append(path.stat().st_size)
            wall[mode].append(n / dt)
            decode[mode].append(d)
        print(f"round {r + 1}: " + "  ".join(f"{m} {wall[m][-1]:6.2f} tok/s" for m in modes), flush=True)
    _report(modes, wall, decode, a)
    for m in modes[1:]:
        print(f"trace-writer thread CPU, {m}: {statistics.median(writer_cpu[m]) * 100:.3f} % of one core "
              f"during generation (per round {[round(x * 100, 3) for x in writer_cpu[m]]})")
    print(f"per recorded run: start + end {statistics.median(start_end) * 1000:.1f} ms median "
          f"(file, registry entry, RunStart; RunEnd, close + fsync, summary), {statistics.median(sizes)} bytes")


def _report(modes, wall, decode, a) -> None:
    print(f"\n{a.tokens} greedy tokens, {a.rounds} interleaved rounds (median tok/s; wall per round)")
    for m in modes:
        print(f"  {m:8s} wall {statistics.median(wall[m]):6.2f}  median step {statistics.median(decode[m]):6.2f}   "
              f"{[round(x, 2) for x in wall[m]]}")
    for m in modes[1:]:
        ratios = [on / off for on, off in zip(wall[m], wall["off"])]
        dratios = [on / off for on, off in zip(decode[m], decode["off"]) if off > 0]
        r = statistics.median(ratios)
        print(f"ratio {m}/off: wall {r:.4f} (per round {[round(x, 4) for x in ratios]})   "
              f"target >= 0.99: {'PASS' if r >= 0.99 else 'FAIL'}")
        print(f"  median step {statistics.median(dratios):.4f} (per round {[round(x, 4) for x in dratios]})")


CHILD = r"""
import json, sys, time
from engines import models
sys.path.insert(0, {bench!r})
from bench_recording import _generate
lm = models.default()
_generate(lm, 8)
res = [_generate(lm, {tokens}) for _ in range({repeats})]
print("RESULT " + json.dumps([[n / dt, d] for n, dt, d in res]))
"""


def processes(a) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-recording-"))
    code = CHILD.format(bench=str(Path(__file__).resolve().parent), tokens=a.tokens, repeats=a.repeats)
    modes = ["off", "on"]
    wall: dict[str, list[float]] = {m: [] for m in modes}
    decode: dict[str, list[float]] = {m: [] for m in modes}
    for r in range(a.rounds):
        for mode in (modes if r % 2 == 0 else modes[::-1]):
            env = dict(os.environ, GUIDANCE_TUI_RUNS=str(tmp / "runs"),
                       GUIDANCE_TUI_RECORD="1" if mode == "on" else "0")
            proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True)
            line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if proc.returncode or not line:
                sys.exit(f"the {mode} child failed: {proc.stderr.strip()[-500:]}")
            res = json.loads(line[-1][7:])
            wall[mode].append(statistics.median(x[0] for x in res))
            decode[mode].append(statistics.median(x[1] for x in res))
        print(f"round {r + 1}: off {wall['off'][-1]:6.2f}  on {wall['on'][-1]:6.2f} tok/s", flush=True)
    runs = sorted((tmp / "runs").glob("*.gtt"))
    print(f"(recorded processes wrote {len(runs)} runs)")
    _report(modes, wall, decode, a)


def _load() -> str:
    try:
        return "load average %.2f %.2f %.2f" % os.getloadavg()
    except OSError:
        return "load average unknown"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--intervals", default="0.05", help="flush intervals to measure (in-process mode)")
    ap.add_argument("--processes", action="store_true", help="alternating subprocesses instead of one process")
    ap.add_argument("--repeats", type=int, default=2, help="generations per subprocess (--processes)")
    a = ap.parse_args()
    print(f"before: {_load()} on {os.cpu_count()} CPUs (other work on the machine shows up in the figures)",
          flush=True)
    if a.processes:
        processes(a)
    else:
        in_process(a)
    print(f"after: {_load()}")


if __name__ == "__main__":
    main()
