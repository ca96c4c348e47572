"""Deterministic synthetic traces for tests, benchmarks and UI work without a model."""

from __future__ import annotations

import math
import random
from typing import Iterator

from .events import (
    Alt, AnyEvent, Backtrack, Capture, GpuSample, Metric, NodeClose, NodeOpen, ProbKind, RunEnd, RunStart, Token,
    TokenKind,
)

_WORDS = [" the", " a", " model", " token", " grammar", " of", " and", " to", "ing", " is", " in", "\n",
          " é", " 😀", "{", "}", '"', ":", " 42", ",", " JSON", " select", "  ", "\t"]


def synthetic_events(n_tokens: int = 1000, *, seed: int = 0, vocab: int = 262_144, top_k: int = 5,
                     gpus: int = 0, after_mask: bool = False) -> Iterator[AnyEvent]:
    """Yield a plausible run: roles, gens, forced runs, backtracks, captures, metrics.

    Probabilities include NaN now and then; some tokens are partial UTF-8.
    ``after_mask``: tokens with a masked alternative also get their top-k after
    the mask (``top_allowed``), and some tokens another ``prob_kind``; off, the
    events are those of earlier versions, seed for seed.
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
            tok = Token(node_id=node, pos=text_len, id=tid, bytes=b,
                        kind=TokenKind.FORCED if forced else TokenKind.GENERATED, prob=prob,
                        prob_raw=prob * 0.9 if prob == prob else prob, top=top,
                        latency_us=rng.randint(15_000, 30_000), mask_us=rng.randint(3, 1500),
                        allowed=rng.choice([-1, 1, 17, vocab // 2, vocab]))
            if after_mask:
                tok.top_allowed = _after_mask(tok, rng, zipf_id, tok_bytes, top_k)
                if rng.random() < 0.05:
                    tok.prob_kind = rng.choice(list(ProbKind))
            yield tok
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


def _after_mask(tok: Token, rng: random.Random, draw, tok_bytes, top_k: int) -> list[Alt]:
    """The top-k after the mask of a token whose top-k has masked alternatives: the unmasked ones
    (renormalised, mostly by the token's own after/before ratio), then other allowed tokens."""
    if not any(a.masked for a in tok.top):
        return []
    scale = tok.prob / tok.prob_raw if tok.prob == tok.prob and tok.prob_raw > 0 else 1.0
    if rng.random() < 0.1:
        scale *= 1.01  # a renormalisation of its own: the probabilities are stored
    out = [Alt(a.id, a.bytes, min(1.0, a.prob * scale), False) for a in tok.top if not a.masked]
    p = out[-1].prob if out else 0.5
    while len(out) < top_k and rng.random() < 0.9:
        p *= rng.uniform(0.2, 0.9)
        tid = draw()
        out.append(Alt(tid, tok_bytes(tid), p, False))
    return out


def write_synthetic_trace(path, n_tokens: int, *, seed: int = 2, gpus: int = 1, after_mask: bool = True,
                          batch: int = 4096, tile: int = 250_000) -> int:
    """Write ``synthetic_events`` straight to a trace file, a batch at a time (a ten-million-token
    file without ten million events in memory), with a recorded clock (each token its latency);
    the file's size in bytes.  Past ``tile`` tokens the run repeats its first ``tile`` tokens'
    events, shifted in time, text position and node ids (generating every event costs minutes
    per million tokens; encoding them is what a big file needs measured)."""
    from .fileformat import FrameEncoder

    enc = FrameEncoder()
    t = 0
    with open(path, "wb") as fh:
        fh.write(enc.header())
        head = list(synthetic_events(min(n_tokens, tile), seed=seed, gpus=gpus, after_mask=after_mask))
        for ev in head:
            t += getattr(ev, "latency_us", 0) or 300
            ev.t_us = t
        body = [ev for ev in head if not isinstance(ev, (RunStart, RunEnd))]
        period_t = t
        period_pos = max((ev.pos + len(ev.bytes) for ev in body if isinstance(ev, Token)), default=0)
        period_node = max((ev.node_id for ev in body if isinstance(ev, NodeOpen)), default=0)
        made, rep = 0, 0
        run_end = head[-1] if isinstance(head[-1], RunEnd) else None
        fh.write(enc.encode_batch(head[:1]))  # RunStart
        while made < n_tokens:
            out = []
            for ev in body:
                if made >= n_tokens:
                    break
                e = ev
                if rep:  # shifted copies: the same events later in the run
                    e = _shifted(ev, rep * period_t, rep * period_pos, rep * period_node)
                out.append(e)
                if isinstance(ev, Token):
                    made += 1
            for i in range(0, len(out), batch):
                fh.write(enc.encode_batch(out[i:i + batch]))
            rep += 1
        if run_end is not None:
            end = RunEnd(status="done", generated_tokens=n_tokens)
            end.t_us = rep * period_t
            fh.write(enc.encode_batch([end]))
        return fh.tell()


def _shifted(ev: AnyEvent, dt: int, dpos: int, dnode: int) -> AnyEvent:
    import msgspec

    changes: dict = {"t_us": ev.t_us + dt}
    if isinstance(ev, Token):
        changes["pos"] = ev.pos + dpos
    if isinstance(ev, Backtrack) and ev.pos >= 0:
        changes["pos"] = ev.pos + dpos
    if hasattr(ev, "node_id") and not isinstance(ev, Metric):
        changes["node_id"] = ev.node_id + dnode
    if isinstance(ev, NodeOpen):
        changes["base_id"] = ev.base_id + dnode if ev.base_id else 0
    return msgspec.structs.replace(ev, **changes)
