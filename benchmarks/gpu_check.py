"""Helpers for the GPU check (benchmarks/gpu_check.sh): a random-weight model directory, and the app's view of a trace.

Run from the repository root::

    python benchmarks/gpu_check.py make-model /tmp/gpu_model [--hidden 512 --layers 8]
    python benchmarks/gpu_check.py screenshot TRACE --out DIR

``make-model`` writes a Hugging Face directory (a byte-level BPE tokenizer
trained on a few sentences, Llama weights drawn at random: the same recipe as
tests/test_transformers_backend.py, larger, so a GPU has something to do).
The text it produces is meaningless; what is checked is the engine and the
monitor on the GPU.

``screenshot`` opens TRACE in the inspector headless (120x40, the cursor at
the end), saves ``resources.svg`` (the whole screen) and ``resources.txt``
(the resources bar's line, and the GPU figures found in the trace's Metric
events) into DIR, and exits 1 when the bar shows no GPU or VRAM cell.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def make_model(path: str, hidden: int, layers: int, vocab: int) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    import torch
    import transformers
    from test_transformers_backend import make_tokenizer

    tok = make_tokenizer(vocab)
    heads = max(1, hidden // 64)
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 4, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=max(1, heads // 2), head_dim=hidden // heads,
        max_position_embeddings=4096, initializer_range=0.05,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model = transformers.LlamaForCausalLM(cfg)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    n = sum(p.numel() for p in model.parameters())
    print(f"model: {path}: llama, {layers} layers, hidden {hidden}, vocab {len(tok)}, {n / 1e6:.1f} M parameters")


def gpu_summary(events) -> dict:
    from tracing import Metric

    metrics = [e for e in events if isinstance(e, Metric)]
    gpus = [g for m in metrics for g in m.gpus]
    out: dict = {"metric_samples": len(metrics), "gpu_samples": len(gpus)}
    if gpus:
        power = [g.power_w for g in gpus if g.power_w == g.power_w]
        out.update(
            util_max=max(g.util for g in gpus), util_mean=sum(g.util for g in gpus) / len(gpus),
            vram_used_max_mib=max(g.mem_used for g in gpus) / 2**20,
            vram_used_min_mib=min(g.mem_used for g in gpus) / 2**20,
            vram_total_mib=gpus[0].mem_total / 2**20,
            power_w_max=max(power) if power else None, power_w_min=min(power) if power else None,
            util_series=[g.util for g in gpus],
        )
    return out


def screenshot(trace: str, out_dir: str, size: tuple[int, int] = (120, 40)) -> int:
    from guidance_tui.app import InspectorApp
    from guidance_tui.state.loader import TraceLoader

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    loader = TraceLoader(trace)
    loader.load(3000)
    app = InspectorApp(loader.store, loader=loader, title="gpu check", use_monitor=False)
    box: dict = {}

    async def drive() -> None:
        async with app.run_test(headless=True, size=size) as pilot:
            for _ in range(1000):
                if app.inspector.loader is None:
                    break
                await asyncio.sleep(0.01)
            await pilot.press("end")
            await pilot.pause(0.5)
            bar = app.inspector.resource_bar
            box["runs"] = "".join(text for text, _ in bar.runs(bar.size.width))
            box["drawn"] = bar.render_line(0).text
            box["width"] = bar.size.width
            box["svg"] = app.save_screenshot(filename="resources.svg", path=str(out))

    asyncio.run(drive())
    summary = gpu_summary(loader.store.events())
    drawn = box["drawn"]
    ok = "GPU" in drawn and "VRAM" in drawn and "none" not in drawn.split("GPU", 1)[1][:8]
    lines = [f"resources bar ({box['width']} cells), as drawn:", drawn,
             "resources bar runs:", box["runs"],
             "GPU figures in the trace: " + json.dumps({k: v for k, v in summary.items() if k != "util_series"}),
             "GPU utilisation series: " + " ".join(f"{u:.0f}" for u in summary.get("util_series", [])),
             f"{'PASS' if ok else 'FAIL'}  the resources bar shows GPU and VRAM cells"]
    text = "\n".join(lines) + "\n"
    (out / "resources.txt").write_text(text)
    print(text, end="")
    print(f"screenshot: {box['svg']}")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make-model")
    m.add_argument("path")
    m.add_argument("--hidden", type=int, default=512)
    m.add_argument("--layers", type=int, default=8)
    m.add_argument("--vocab", type=int, default=400)
    s = sub.add_parser("screenshot")
    s.add_argument("trace")
    s.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    if args.cmd == "make-model":
        make_model(args.path, args.hidden, args.layers, args.vocab)
        return 0
    return screenshot(args.trace, args.out)


if __name__ == "__main__":
    sys.exit(main())
