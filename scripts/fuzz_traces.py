"""The long fuzz run of the trace readers, before a release.

    .venv/bin/python scripts/fuzz_traces.py                       # a million inputs on every core
    .venv/bin/python scripts/fuzz_traces.py --count 20000         # a quick look
    .venv/bin/python scripts/fuzz_traces.py --seconds 600         # at most ten minutes

The same inputs and checks as tests/test_trace_fuzz.py, many more of them:
real and synthetic traces of formats 1 to 4, mutated structure-aware
(one payload field, re-framed with a correct length and checksum) and byte
by byte; each goes through read_trace (info, export), TraceLoader (replay)
and a FrameDecoder fed in random chunks (a live follower), and every 10th
also through the store, the tree and the JSON export.  A crash is any
exception but a one-line TraceFormatError, or two paths that disagree on the
events kept or the damage found.  Input ``i`` of seed ``s`` is rebuilt from
``random.Random(f"{s}/{i}")`` alone, so ``--only I`` reproduces one; crashing
inputs are saved under ``--save`` (default ``fuzz-crashes/``).

Exit status: 0 when nothing crashed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

CHUNK = 500  # inputs per task
_SOURCES: list[tuple[str, bytes]] = []
_TMP: Path | None = None


def _init(tmp: str | None = None) -> None:
    global _SOURCES, _TMP
    import _trace_support
    from _trace_support import fuzz_sources

    _trace_support.ALT_EVERY = 23  # the top-k of every 23rd token (unpacking all of them was half the time)
    _SOURCES = fuzz_sources()
    _TMP = Path(tempfile.mkdtemp(dir=tmp))  # the replay loader reads a file: one directory per process


def _scratch() -> str:
    """A directory for the run's files (in memory where there is /dev/shm), removed at the end."""
    shm = Path("/dev/shm")
    return tempfile.mkdtemp(prefix="gtt-fuzz-", dir=shm if shm.is_dir() and os.access(shm, os.W_OK) else None)


def make_input(seed: str, i: int) -> tuple[random.Random, str, bytes]:
    from _trace_support import mutate

    rng = random.Random(f"{seed}/{i}")
    name, data = _SOURCES[rng.randrange(len(_SOURCES))]
    return rng, name, mutate(data, rng)


def run_chunk(task: tuple[str, int, int, float, str, int]) -> dict:
    seed, start, stop, deadline, save, deep_every = task
    from _trace_support import check_one

    stats = {"inputs": 0, "error": 0, "damaged": 0, "clean": 0, "crashes": 0, "examples": []}
    for i in range(start, stop):
        if deadline and time.monotonic() > deadline:
            break
        name, data = "?", b""
        try:
            rng, name, data = make_input(seed, i)
            v = check_one(data, rng, _TMP, deep=deep_every > 0 and i % deep_every == 0)
        except BaseException as e:  # noqa: BLE001 - every failure is a finding
            if isinstance(e, KeyboardInterrupt):
                raise
            stats["crashes"] += 1
            if len(stats["examples"]) < 5:
                path = Path(save) / f"crash-{seed}-{i}.gtt"
                try:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(data)
                except OSError:
                    path = None
                stats["examples"].append((i, name, str(path), "".join(traceback.format_exception(e))[-2000:]))
        else:
            stats["error" if v.error else "damaged" if v.skipped or v.dropped else "clean"] += 1
        stats["inputs"] += 1
    return stats


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=1_000_000, help="inputs to try (default 1,000,000)")
    ap.add_argument("--seconds", type=float, default=0, help="stop after this long (default: no limit)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes (default: every core)")
    ap.add_argument("--seed", default="0", help="seed of the inputs (default 0)")
    ap.add_argument("--start", type=int, default=0, help="first input index (default 0)")
    ap.add_argument("--only", type=int, default=None, help="run input ONLY alone, in this process, and say what it did")
    ap.add_argument("--deep-every", type=int, default=10, help="every Nth input also through store/tree/export")
    ap.add_argument("--save", default="fuzz-crashes", help="directory for crashing inputs")
    args = ap.parse_args(argv)

    scratch = _scratch()
    try:
        return _run(args, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _run(args, scratch: str) -> int:
    if args.only is not None:
        _init(scratch)
        rng, name, data = make_input(args.seed, args.only)
        from _trace_support import check_one

        v = check_one(data, rng, _TMP, deep=True)
        print(f"input {args.only} (from {name}, {len(data)} bytes): error={v.error!r} skipped={v.skipped} "
              f"dropped={v.dropped} events={len(v.events)}")
        return 0

    deadline = time.monotonic() + args.seconds if args.seconds else 0.0
    tasks = [(args.seed, s, min(s + CHUNK, args.start + args.count), deadline, args.save, args.deep_every)
             for s in range(args.start, args.start + args.count, CHUNK)]
    total = {"inputs": 0, "error": 0, "damaged": 0, "clean": 0, "crashes": 0}
    examples = []
    t0 = time.monotonic()
    last = t0
    print(f"fuzzing the trace readers: {args.count:,} inputs, seed {args.seed}, {args.workers} workers"
          + (f", at most {args.seconds:.0f} s" if args.seconds else ""), flush=True)
    with mp.get_context("fork" if sys.platform != "win32" else "spawn").Pool(args.workers, _init, (scratch,)) as pool:
        for stats in pool.imap_unordered(run_chunk, tasks):
            for k in total:
                total[k] += stats[k]
            examples += stats["examples"]
            now = time.monotonic()
            if now - last >= 30:
                last = now
                print(f"  {total['inputs']:,} inputs in {now - t0:.0f} s ({total['inputs'] / (now - t0):,.0f}/s), "
                      f"{total['crashes']} crashes", flush=True)
    dt = time.monotonic() - t0
    print(f"{total['inputs']:,} inputs in {dt:.0f} s ({total['inputs'] / max(dt, 1e-9):,.0f}/s): "
          f"{total['error']:,} refused with one line, {total['damaged']:,} read with damage reported, "
          f"{total['clean']:,} read clean; {total['crashes']} crashes")
    for i, name, path, tb in examples[:5]:
        print(f"\ncrash: input {i} (from {name}), saved as {path}; rerun with --only {i} --seed {args.seed}\n{tb}")
    return 1 if total["crashes"] else 0


if __name__ == "__main__":
    sys.exit(main())
