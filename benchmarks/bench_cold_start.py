"""Cold start of a one-token program on llama.cpp, whole processes, interleaved.

* raw: llama-cpp-python in a fresh process, ``Llama(...)`` then a one-token ``create_completion("Hi")``;
* record, cold: ``guidance-tui record`` of ``models.default() + "Hi" + gen(max_tokens=1)`` with an empty
  tokenizer cache (``GUIDANCE_TUI_TOKENIZER_CACHE`` pointed at a fresh directory each time);
* record, warm: the same with the tokenizer cache filled.

Median of N each, ratios against raw.  Target: warm <= 1.3x raw.  Run under the model lock:

    flock /tmp/model.lock .venv/bin/python benchmarks/bench_cold_start.py [-n 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
CLI = str(Path(PY).with_name("guidance-tui"))

RAW = """
import llama_cpp, sys
llm = llama_cpp.Llama(sys.argv[1], n_ctx=8192, n_threads=2, n_threads_batch=2, verbose=False)
out = llm.create_completion("Hi", max_tokens=1)
print(repr(out["choices"][0]["text"]))
"""

PROGRAM = """from engines import models, gen
lm = models.default() + "Hi" + gen(max_tokens=1)
"""


def timed(cmd: list[str], env: dict[str, str]) -> float:
    t = time.perf_counter()
    r = subprocess.run(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    dt = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"{cmd[:3]} failed ({r.returncode}):\n{r.stderr.decode()[-2000:]}")
    return dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=5)
    args = ap.parse_args()
    model = subprocess.run([CLI, "model"], capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
    tmp = Path(tempfile.mkdtemp(prefix="bench-cold-"))
    script = tmp / "one_token.py"
    script.write_text(PROGRAM)
    warm_dir = tmp / "warm"
    base = {**os.environ, "GUIDANCE_TUI_RUNS": str(tmp / "runs")}

    def record(cache_dir: Path, i: int) -> float:
        env = {**base, "GUIDANCE_TUI_TOKENIZER_CACHE": str(cache_dir)}
        return timed([CLI, "record", "-q", "-o", str(tmp / f"t{i}.gtt"), "--force", str(script)], env)

    # Warm-up: page the model file in, fill the warm cache.
    timed([PY, "-c", RAW, model], base)
    record(warm_dir, -1)
    assert list(warm_dir.glob("*.tok")), "record did not write the tokenizer cache"
    res: dict[str, list[float]] = {"raw": [], "record cold": [], "record warm": []}
    for i in range(args.n):
        res["raw"].append(timed([PY, "-c", RAW, model], base))
        cold = tmp / f"cold{i}"
        res["record cold"].append(record(cold, i))
        shutil.rmtree(cold, ignore_errors=True)
        res["record warm"].append(record(warm_dir, i))
    raw = statistics.median(res["raw"])
    print(f"one-token program, fresh processes, median of {args.n} (interleaved)")
    for k, v in res.items():
        m = statistics.median(v)
        print(f"  {k:12s} {m:6.3f} s  {m / raw:5.2f}x raw   [{', '.join(f'{x:.2f}' for x in v)}]")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
