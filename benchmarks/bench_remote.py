"""The inspector's overhead on a remote stream, on a real llama-cpp-python server.

    flock /tmp/model.lock .venv/bin/python benchmarks/bench_remote.py [--tokens 48] [--rounds 5] [--port N]

Starts llama-cpp-python's OpenAI-compatible server on the embedded Gemma, then
times, round after round in a rotating order:

* **raw**: the request our backend sends for ``prompt + gen(max_tokens=N)``
  (same body: logprobs 5, greedy), POSTed and its SSE stream read to the end,
  no instrumentation;
* **inspected**: ``lm + prompt + gen(max_tokens=N)`` through
  ``models.OpenAICompatible``: the same request, plus the local llguidance
  matcher on every token, the probabilities, the events into a trace store.

The figure is the median of the per-round ratios inspected/raw minus one.
Target: at most 2 % of wall time.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PROMPT = "Write a short story about a robot who learns to paint.\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str, port: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", model, "--host", "127.0.0.1", "--port", str(port),
           "--n_ctx", "1024", "--n_threads", str(os.cpu_count() or 2)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2):
                return proc
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit("the server did not start")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()

    from engines import gen, models
    from engines import session as sessions
    from engines.default_model import default_model_path
    from engines.remote.dialects import DIALECTS
    from engines.remote.sse import Client
    from engines.session import Session

    port = free_port()
    proc = start_server(str(default_model_path()), port)
    url = f"http://127.0.0.1:{port}"
    try:
        session = Session(monitoring=False)
        sessions.activate(session)
        lm = models.OpenAICompatible(url, enable_monitoring=False, max_tokens=args.tokens)
        client = Client(url)
        req = DIALECTS["llama-cpp-python"].request(lm.engine.remote.model, PROMPT, None, max_tokens=args.tokens,
                                                  temperature=0.0, stop=[], top_k=5)

        def raw() -> float:
            t0 = time.perf_counter()
            n = sum(1 for _ in client.stream(req.path, req.body))
            assert n >= args.tokens
            return time.perf_counter() - t0

        def inspected() -> float:
            t0 = time.perf_counter()
            out = lm + PROMPT + gen("x", max_tokens=args.tokens)
            assert out["x"]
            return time.perf_counter() - t0

        raw(), inspected()  # warm up: the prompt in the server's cache, the tokenizer built
        ratios = []
        for r in range(args.rounds):
            order = [raw, inspected] if r % 2 == 0 else [inspected, raw]
            times = {f.__name__: f() for f in order}
            ratios.append(times["inspected"] / times["raw"])
            print(f"round {r + 1}: raw {times['raw']:.3f} s, inspected {times['inspected']:.3f} s, "
                  f"ratio {ratios[-1]:.4f}", flush=True)
        overhead = statistics.median(ratios) - 1
        print(f"overhead (median of {args.rounds} rounds, {args.tokens} tokens): {overhead * 100:+.2f} % of wall time "
              f"({'within' if overhead <= 0.02 else 'OVER'} the 2 % target)")
        return 0 if overhead <= 0.02 else 1
    finally:
        sessions.activate(None)
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)


if __name__ == "__main__":
    sys.exit(main())
