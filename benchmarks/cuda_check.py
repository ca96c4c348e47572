"""The transformers engine on CUDA, recorded with the resource monitor on: are the GPU figures in the trace?

Run from the repository root on a machine with an NVIDIA GPU::

    .venv/bin/python benchmarks/cuda_check.py                       # embedded Gemma 3 270M, 256 tokens
    .venv/bin/python benchmarks/cuda_check.py --model DIR --tokens 512 --dtype bfloat16 --trace /tmp/cuda.gtt

It runs a short program (free text, then a constrained answer) in a recording
session, writes the trace to a file and reads it back, then prints the decode
speed and the GPU utilisation, memory and power found in the trace's Metric
events, with PASS/FAIL lines: the engine ran on CUDA; the trace holds GPU
samples; the GPU memory they report includes this process's model.

Exit status: 0 when everything passed or there is no CUDA (a message says so),
1 when a check failed.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="HF model directory or GGUF (default: the embedded Gemma 3 270M)")
    ap.add_argument("--tokens", type=int, default=256, help="free-text tokens to generate (default 256)")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--trace", help="where to write the trace (default: a temporary file, removed after)")
    ap.add_argument("--device", default="cuda", help="cuda (default); cpu only to try this script's own code")
    args = ap.parse_args(argv)

    try:
        import torch
    except ImportError:
        print("no CUDA check: torch is not installed (pip install -e '.[transformers]')")
        return 0
    if args.device != "cpu" and not torch.cuda.is_available():
        print(f"no CUDA GPU visible to torch {torch.__version__} (built for CUDA: {torch.version.cuda or 'no'}): "
              "nothing to check here; run this on a machine with an NVIDIA GPU")
        return 0

    from engines import gen, models, select
    from engines import session as sessions
    from tracing import Metric, RunEnd, RunStart, Token, TokenKind, read_trace, write_trace

    if torch.cuda.is_available():
        print(f"GPU: {torch.cuda.get_device_name(0)}; torch {torch.__version__}, CUDA {torch.version.cuda}")
    session = sessions.Session(monitoring=True)
    sessions.activate(session)
    ok = True
    try:
        t0 = time.perf_counter()
        lm = models.Transformers(args.model, device=args.device, dtype=args.dtype)
        backend = lm.engine.backend
        print(f"model: {backend.model_id} on {backend.device} ({args.dtype}), "
              f"loaded in {time.perf_counter() - t0:.1f} s")
        session.store.append(RunStart(script="benchmarks/cuda_check.py", argv=sys.argv[1:], model=backend.model_id,
                                      backend=backend.name, info=backend.info, wall_time=time.time()))
        lm + "Hello" + gen("warm", max_tokens=4)  # warm-up: kernels, allocator
        time.sleep(0.6)  # at least two monitor samples before the timed part
        t = time.perf_counter()
        out = (lm + "Write a long story about a lighthouse keeper.\n" + gen("story", max_tokens=args.tokens)
               + "\nWas the story happy? " + select(["yes", "no"], name="happy"))
        dt = time.perf_counter() - t
        time.sleep(0.6)  # let the monitor take samples while the model is still resident
        session.store.append(RunEnd(status="done"))
    finally:
        sessions.activate(None)
        session.close()

    events = session.store.events()
    n_gen = sum(1 for e in events if isinstance(e, Token) and e.kind == TokenKind.GENERATED)
    print(f"decode: {n_gen} generated tokens in {dt:.2f} s = {n_gen / dt:.1f} tok/s "
          f"(story {len(out['story'])} chars, happy={out['happy']!r})")

    path = Path(args.trace) if args.trace else Path(tempfile.mkstemp(suffix=".gtt")[1])
    try:
        write_trace(path, events)
        back = read_trace(path).events
    finally:
        if not args.trace:
            os.unlink(path)
    metrics = [e for e in back if isinstance(e, Metric)]
    gpu = [g for m in metrics for g in m.gpus]
    print(f"trace: {len(back)} events, {len(metrics)} Metric samples, {len(gpu)} GPU samples")

    def check(cond: bool, text: str) -> None:
        nonlocal ok
        ok = ok and cond
        print(f"{'PASS' if cond else 'FAIL'}  {text}")

    check(backend.device.type == "cuda" and next(backend._model.parameters()).is_cuda, "the engine ran on CUDA")
    check(bool(gpu), "the trace holds GPU samples (NVML through nvidia-ml-py)")
    if gpu:
        util = [g.util for g in gpu]
        mem = [g.mem_used for g in gpu]
        power = [g.power_w for g in gpu if g.power_w == g.power_w]
        print(f"GPU utilisation: max {max(util):.0f} %, mean {sum(util) / len(util):.0f} %")
        print(f"GPU memory used: max {max(mem) / 2**20:.0f} MiB of {gpu[0].mem_total / 2**20:.0f} MiB")
        if power:
            print(f"GPU power: max {max(power):.0f} W")
        reserved = torch.cuda.memory_reserved() if torch.cuda.is_available() else 0
        print(f"torch reserved: {reserved / 2**20:.0f} MiB")
        check(max(mem) >= reserved * 0.9, "the GPU memory in the trace covers this process's tensors")
        check(max(util) > 0, "the trace shows the GPU busy at some sample")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
