"""Instrumented transformers decoding against ``model.generate`` (greedy), in one process.

Run from the repository root::

    .venv/bin/python benchmarks/bench_transformers.py                 # embedded Gemma, 64 tokens, 4 rounds
    .venv/bin/python benchmarks/bench_transformers.py --tokens 128 --rounds 5
    .venv/bin/python benchmarks/bench_transformers.py --model DIR_OR_GGUF --device cuda

Both sides use the same weights object, prompt, thread count and number of new
tokens.  ``generate`` runs with ``do_sample=False`` and EOS disabled so it
always produces ``--tokens`` tokens; the engine runs an unconstrained
``gen(max_tokens=N)`` with all instrumentation on (probabilities, top-5
alternatives, grammar masks, trace events, the resource monitor).  The two
alternate, so drift in the machine's load hits both; tokens/s counts only
generated tokens (wall time includes the prompt's prefill on both sides).

Prints both rates, their ratio and PASS/FAIL against the target of issue #5:
engine ≥ 0.95 × generate.  It asserts nothing and never breaks the suite.

Each round also splits the time per token into the model's forward pass (timed
by hooks on the model) and everything else (generate's logits processing; the
engine's mask, statistics and events).  On a shared machine other processes
slow the forward pass, sometimes a lot; the "estimate" line combines the
fastest forward seen with each side's own overhead, which is what the ratio
would be on a quiet machine.  Rounds alternate which side goes first.

Measured on the 2-core CI kind of machine (quiet, 2 threads, monitor on):
generate 16.6 tok/s, engine 16.3 tok/s, ratio 0.978; overhead outside the
forward pass 1.2 ms/token (generate) and 1.9 ms/token (engine).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PROMPT = ("Write a short story about a lighthouse keeper who finds a message in a bottle. "
          "Once upon a time, on a rocky island far from the coast,")
TARGET = 0.95


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="HF model directory or GGUF (default: the embedded Gemma 3 270M)")
    ap.add_argument("--tokens", type=int, default=64, help="new tokens per run (default 64)")
    ap.add_argument("--rounds", type=int, default=4, help="alternating rounds (default 4)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--no-monitor", action="store_true", help="engine without the resource monitor")
    ap.add_argument("--profile", action="store_true", help="cProfile one engine run and print the top entries")
    args = ap.parse_args(argv)

    import engines.transformers_backend  # noqa: F401  (first: it picks torch's OpenMP wait policy)
    import torch

    torch.set_num_threads(args.threads)
    from engines import gen, models
    from engines import session as sessions
    from tracing import Backtrack, Token, TokenKind

    kw = {"dtype": args.dtype}
    if args.device:
        kw["device"] = args.device
    t0 = time.perf_counter()
    base = models.Transformers(args.model, monitoring=not args.no_monitor, **kw)
    backend = base.engine.backend
    model = backend._model
    print(f"model: {backend.model_id} ({backend.architecture}, {backend.device}, {args.dtype}, "
          f"{torch.get_num_threads()} threads, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '')}), "
          f"loaded in {time.perf_counter() - t0:.1f} s")
    print(f"prompt: {len(backend.tokenize(PROMPT.encode(), add_bos=True))} tokens; {args.tokens} new tokens per run")

    ids = torch.tensor([backend.tokenize(PROMPT.encode(), add_bos=True)], device=backend.device)

    def sync() -> None:
        if backend.device.type == "cuda":
            torch.cuda.synchronize()

    # Time spent inside the model's forward, to tell the model's cost from everything around it.
    fwd = {"t": 0.0, "start": 0.0}

    def pre_hook(module, args, kwargs=None) -> None:
        sync()
        fwd["start"] = time.perf_counter()

    def post_hook(module, args, output) -> None:
        sync()
        fwd["t"] += time.perf_counter() - fwd["start"]

    model.register_forward_pre_hook(pre_hook)
    model.register_forward_hook(post_hook)

    def run_generate(n: int) -> tuple[float, int]:
        fwd["t"] = 0.0
        sync()
        t = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                                 do_sample=False, eos_token_id=None, pad_token_id=backend.eos_ids[0],
                                 top_p=None, top_k=None, temperature=None)
        sync()
        return time.perf_counter() - t, out.shape[1] - ids.shape[1]

    def run_engine(n: int) -> tuple[float, int, str]:
        s = sessions.Session(monitoring=not args.no_monitor)
        sessions.activate(s)
        try:
            lm = models.Transformers(args.model, monitoring=not args.no_monitor, **kw)
            backend.reset()  # a cold cache, as generate starts from one
            fwd["t"] = 0.0
            sync()
            t = time.perf_counter()
            out = lm + PROMPT + gen("story", max_tokens=n)
            sync()
            dt = time.perf_counter() - t
        finally:
            sessions.activate(None)
            s.close()
        events = s.store.events()
        generated = sum(1 for e in events if isinstance(e, Token) and e.kind == TokenKind.GENERATED)
        # a healed prompt token is generated again: count only the tokens past the prompt
        healed = sum(e.n_tokens for e in events if isinstance(e, Backtrack) and e.reason == "healing")
        return dt, generated - healed, out["story"]

    # warm-up (first calls allocate and pick kernels)
    run_generate(4)
    run_engine(4)
    if args.profile:
        import cProfile
        import pstats

        pr = cProfile.Profile()
        pr.enable()
        run_engine(args.tokens)
        pr.disable()
        pstats.Stats(pr).sort_stats("cumulative").print_stats(25)

    rates_g, rates_e, over_g, over_e, fw_g, fw_e = [], [], [], [], [], []
    text = ""
    for r in range(args.rounds):
        if r % 2 == 0:  # alternate which goes first, so order effects cancel
            dt_g, n_g = run_generate(args.tokens)
            fwd_g = fwd["t"]
            dt_e, n_e, text = run_engine(args.tokens)
            fwd_e = fwd["t"]
        else:
            dt_e, n_e, text = run_engine(args.tokens)
            fwd_e = fwd["t"]
            dt_g, n_g = run_generate(args.tokens)
            fwd_g = fwd["t"]
        rates_g.append(n_g / dt_g)
        rates_e.append(n_e / dt_e)
        over_g.append((dt_g - fwd_g) / n_g * 1e3)
        over_e.append((dt_e - fwd_e) / n_e * 1e3)
        fw_g.append(fwd_g / n_g * 1e3)
        fw_e.append(fwd_e / n_e * 1e3)
        print(f"round {r + 1}: generate {n_g} tok in {dt_g:.2f} s = {rates_g[-1]:.1f} tok/s "
              f"(forward {fwd_g / n_g * 1e3:.1f} + other {over_g[-1]:.2f} ms/tok); "
              f"engine {n_e} tok in {dt_e:.2f} s = {rates_e[-1]:.1f} tok/s "
              f"(forward {fwd_e / n_e * 1e3:.1f} + other {over_e[-1]:.2f} ms/tok); "
              f"ratio {rates_e[-1] / rates_g[-1]:.3f}")
        if n_e < args.tokens:
            print(f"  note: the engine stopped after {n_e} tokens (end of sequence)")
    med_g, med_e = statistics.median(rates_g), statistics.median(rates_e)
    ratio = med_e / med_g
    best = max(rates_e) / max(rates_g)
    print(f"engine text: {text[:100]!r}")
    print(f"model.generate greedy:  {med_g:.1f} tok/s (median of {args.rounds}; best {max(rates_g):.1f})")
    print(f"instrumented engine:    {med_e:.1f} tok/s (median of {args.rounds}; best {max(rates_e):.1f})")
    print(f"outside the forward pass: generate {statistics.median(over_g):.2f} ms/tok, "
          f"engine {statistics.median(over_e):.2f} ms/tok (medians)")
    # Other processes slow the forward pass, not the per-token work around it: an estimate that
    # combines the least-disturbed forward time with each side's own per-token overhead.
    f_min = min(min(fw_g), min(fw_e))
    est = (f_min + statistics.median(over_g)) / (f_min + statistics.median(over_e))
    print(f"estimate with the fastest forward seen ({f_min:.1f} ms/tok) for both: ratio {est:.3f}")
    print(f"ratio engine/generate:  {ratio:.3f} (medians), {best:.3f} (bests)  "
          f"{'PASS' if ratio >= TARGET else 'FAIL'} (target >= {TARGET})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
