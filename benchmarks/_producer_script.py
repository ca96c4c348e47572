"""A prompt script for bench_tui.py: appends synthetic events to its session's store at full speed.

    python -m guidance_tui.run.script_process ... benchmarks/_producer_script.py MODE N NATIVE_ROUNDS

Run through the same child process as ``guidance-tui run``.  Prints (as
Message events in the trace) ``T0 <ns>``, the store's monotonic clock origin,
so the benchmark can measure display lag across processes, and
``ELAPSED <s>``, the producer's own time.

MODE "generate": builds each event in Python (synthetic_events) and appends it;
"burst": appends pre-built events in a tight loop;  "model": before each token,
one step of GIL-free native work spread over every core (a thread pool,
whose threads sleep between steps, unlike llama.cpp's, which spin);  "llama":
the embedded model really generating N tokens (loaded before the clock starts).
"""

import hashlib
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from engines.session import current
from tracing import Metric
from tracing.synthetic import synthetic_events as _synthetic


def synthetic_events(n, seed):
    """Without the generator's made-up CPU samples: the run's monitor records real ones."""
    return (ev for ev in _synthetic(n, seed=seed) if type(ev) is not Metric)


mode, n, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
store = current().store
time.sleep(1.0)  # as a model load would: the app starts up meanwhile, as it does under `run`
append = store.append
print(f"T0 {store._t0}", flush=True)

if mode == "llama":
    from engines import gen, models

    lm = models.default() + "Once upon a time"
    lm += gen("warm", max_tokens=2)  # the first call's one-off costs stay out of the timing
    t0 = time.perf_counter()
    lm += gen("story", max_tokens=n)
elif mode == "generate":
    t0 = time.perf_counter()
    for ev in synthetic_events(n, seed=1):
        append(ev)
elif mode == "burst":
    events = list(synthetic_events(n, seed=1))
    t0 = time.perf_counter()
    for ev in events:
        append(ev)
else:
    events = list(synthetic_events(n, seed=1))
    workers = os.cpu_count() or 1
    chunk = os.urandom(64 * 1024)  # over 2 KiB: hashlib releases the GIL
    pool = ThreadPoolExecutor(workers)

    def work(_):
        for _ in range(rounds):
            hashlib.sha256(chunk).digest()

    t0 = time.perf_counter()
    for ev in events:
        if type(ev).__name__ == "Token":
            list(pool.map(work, range(workers)))
        append(ev)
print(f"ELAPSED {time.perf_counter() - t0:.6f}", flush=True)
