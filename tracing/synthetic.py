"""Deterministic synthetic traces for tests, benchmarks and UI work without a model."""

from __future__ import annotations

import math
import random
from typing import Iterator

from .events import (
    Alt, AnyEvent, Backtrack, Capture, GpuSample, Metric, NodeClose, NodeOpen, RunEnd, RunStart, Token,
    TokenKind,
)

_WORDS = [" the", " a", " model", " token", " grammar", " of", " and", " to", "ing", " is", " in", "\n",
          " é", " 😀", "{", "}", '"', ":", " 42", ",", " JSON", " select", "  ", "\t"]


def synthetic_events(n_tokens: int = 1000, *, seed: int = 0, vocab: int = 262_144, top_k: int = 5,
                     gpus: int = 0) -> Iterator[AnyEvent]:
    """Yield a plausible run: roles, gens, forced runs, backtracks, captures, metrics.

    Probabilities include NaN now and then; some tokens are partial UTF-8.
    """
    rng = random.Random(seed)
    words: dict[int, bytes] = {}

    def tok_bytes(tid: int) -> bytes:
        b = words.get(tid)
        if b is None:
            if tid % 97 == 0:
                b = "😀".encode()[: 1 + tid % 3]  # a partial UTF-8 piece
            else:
                b = _WORDS[tid % len(_WORDS)].encode() + (str(tid % 13).encode() if tid % 5 == 0 else b"")
            words[tid] = b
        return b

    def zipf_id() -> int:
        return min(vocab - 1, int(math.exp(rng.random() * math.log(vocab))))

    yield RunStart(script="synthetic.py", argv=["synthetic.py"], model="synthetic", backend="synthetic",
                   info={"n_tokens": str(n_tokens)})
    yield NodeOpen(node_id=1, parent_id=0, base_id=0, kind="role", name="user")
    text_len = 0
    for tid in (2, 105, 2364):
        b = tok_bytes(tid)
        yield Token(node_id=1, pos=text_len, id=tid, bytes=b, kind=TokenKind.PROMPT)
        text_len += len(b)
    yield NodeClose(node_id=1)
    node = 1
    made = 3
    history: list[bytes] = []
    while made < n_tokens:
        node += 1
        kind = rng.choice(["gen", "gen", "select", "json", "regex"])
        yield NodeOpen(node_id=node, parent_id=0, base_id=node - 1, kind=kind, name=f"{kind}{node}",
                       grammar='start: /[a-z ]+/' if kind != "select" else 'start: "yes" | "no"')
        span = rng.randint(5, 60)
        value = bytearray()
        for _ in range(span):
            if made >= n_tokens:
                break
            forced = rng.random() < 0.15
            tid = zipf_id()
            b = tok_bytes(tid)
            top = []
            if not forced:
                ps = sorted((rng.random() ** 3 for _ in range(top_k)), reverse=True)
                total = sum(ps) * 1.2
                top = [Alt(tid if i == 0 else zipf_id(), b"", p / total, rng.random() < 0.3 and i > 0)
                       for i, p in enumerate(ps)]
                top = [Alt(a.id, tok_bytes(a.id), a.prob, a.masked) for a in top]
            prob = float("nan") if rng.random() < 0.01 else (top[0].prob if top else rng.random())
            yield Token(node_id=node, pos=text_len, id=tid, bytes=b,
                        kind=TokenKind.FORCED if forced else TokenKind.GENERATED, prob=prob,
                        prob_raw=prob * 0.9 if prob == prob else prob, top=top,
                        latency_us=rng.randint(15_000, 30_000), mask_us=rng.randint(3, 1500),
                        allowed=rng.choice([-1, 1, 17, vocab // 2, vocab]))
            text_len += len(b)
            value += b
            history.append(b)
            made += 1
            if rng.random() < 0.03 and len(history) > 2:
                k = rng.randint(1, 2)
                removed = b"".join(history[-k:])
                del history[-k:]
                text_len -= len(removed)
                value = value[: max(0, len(value) - len(removed))]
                yield Backtrack(node_id=node, n_tokens=k, bytes=removed, reason=rng.choice(["grammar", "healing"]))
            if made % 50 == 0:
                yield Metric(cpu=rng.uniform(50, 100), ram_used=rng.randint(2, 8) << 30, ram_total=24 << 30,
                             proc_rss=rng.randint(300, 900) << 20,
                             gpus=[GpuSample(i, rng.uniform(0, 100), 10 << 30, 80 << 30, 200.0) for i in range(gpus)])
        yield Capture(node_id=node, name=f"{kind}{node}", value=value.decode("utf-8", "replace"),
                      log_prob=-rng.random() * 5)
        yield NodeClose(node_id=node, stop_reason=rng.choice(["grammar", "max_tokens", "eos"]))
    yield RunEnd(status="done", generated_tokens=made)
