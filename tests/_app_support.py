"""Shared pieces for the inspector tests: deterministic traces and a fake run."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

from tracing import (
    Alt, Backtrack, Capture, Message, Metric, NodeClose, NodeOpen, RunEnd, RunStart, Token, TokenKind, TraceStore,
)
from tracing.synthetic import synthetic_events


def stamped(events, step_us: int = 500):
    """Give events a deterministic clock: each token takes its own latency."""
    t = 0
    out = []
    for ev in events:
        lat = getattr(ev, "latency_us", 0) or 0
        t += lat if lat else step_us
        ev.t_us = t
        out.append(ev)
    return out


def synthetic_store(n: int = 400, seed: int = 0, gpus: int = 0) -> TraceStore:
    return TraceStore(stamped(list(synthetic_events(n, seed=seed, gpus=gpus))))


def _tok(node: int, pos: int, text: str, kind=TokenKind.GENERATED, prob=0.9, top=(), tid=None) -> Token:
    data = text.encode()
    return Token(node_id=node, pos=pos, id=tid if tid is not None else (sum(data) % 5000) + 10, bytes=data,
                 kind=kind, prob=prob, prob_raw=prob, top=list(top), latency_us=20_000, mask_us=300,
                 allowed=17 if kind == TokenKind.GENERATED else 1)


def small_events(error: bool = False) -> list:
    """A tiny hand-written run: a role, a gen with a backtrack, a select, a capture."""
    ev: list = [RunStart(script="tiny.py", argv=["tiny.py"], model="tiny-model", backend="synthetic")]
    ev.append(NodeOpen(node_id=1, parent_id=0, base_id=0, kind="role", name="user"))
    pos = 0
    for text in ["What", " is", " 2", "+", "2", "?"]:
        ev.append(_tok(1, pos, text, TokenKind.PROMPT, float("nan")))
        pos += len(text)
    ev.append(NodeClose(node_id=1))
    ev.append(Metric(cpu=40.0, ram_used=4 << 30, ram_total=16 << 30, proc_rss=300 << 20))
    ev.append(NodeOpen(node_id=2, parent_id=0, base_id=1, kind="gen", name="answer", grammar="start: /[0-9 ]+/"))
    top = [Alt(52, b" 4", 0.7, False), Alt(53, b" four", 0.2, True), Alt(54, b" 5", 0.05, False)]
    ev.append(_tok(2, pos, " 4", prob=0.7, top=top, tid=52))
    pos += 2
    ev.append(_tok(2, pos, " is", prob=0.04, tid=60))  # unlikely, then taken back
    ev.append(Backtrack(node_id=2, n_tokens=1, bytes=b" is", reason="grammar"))
    ev.append(_tok(2, pos, ".", TokenKind.FORCED, prob=1.0, tid=61))
    pos += 1
    ev.append(Capture(node_id=2, name="answer", value=" 4."))
    ev.append(NodeClose(node_id=2, stop_reason="grammar"))
    ev.append(Metric(cpu=75.0, ram_used=5 << 30, ram_total=16 << 30, proc_rss=320 << 20))
    ev.append(NodeOpen(node_id=3, parent_id=0, base_id=2, kind="select", name="sure"))
    ev.append(_tok(3, pos, " Sure", prob=0.55, tid=70))
    pos += 5
    ev.append(Capture(node_id=3, name="sure", value=" Sure"))
    ev.append(NodeClose(node_id=3, stop_reason="grammar"))
    if error:
        ev.append(Message(level="info", text="about to divide"))
        ev.append(RunEnd(status="error", error="ZeroDivisionError: division by zero",
                         traceback='Traceback (most recent call last):\n  File "tiny.py", line 9, in <module>\n'
                                   "    print(1 / 0)\nZeroDivisionError: division by zero\n"))
    else:
        ev.append(RunEnd(status="done", generated_tokens=3, forced_tokens=1, prompt_tokens=6))
    return stamped(ev)


SENTENCE = "One fact about Mondays: Mondays are the only day of the week when the sun is not in the sky."


def long_line_events() -> list:
    """A run whose one line is wider than the token pane at 130 and at 80 columns (and than
    the view's starting layout width, 80): it must wrap, not lose the end of a row."""
    ev: list = [RunStart(script="fact.py", argv=["fact.py"], model="m", backend="synthetic"),
                NodeOpen(node_id=1, parent_id=0, base_id=0, kind="gen", name="fact")]
    pos = 0
    words = SENTENCE.replace(" ", "\0 ").split("\0")  # words with their leading space, as a tokenizer cuts
    for i, text in enumerate(words):
        ev.append(_tok(1, pos, text, TokenKind.PROMPT if i < 4 else TokenKind.GENERATED))
        pos += len(text)
    ev += [NodeClose(node_id=1, stop_reason="grammar"), RunEnd(status="done")]
    return stamped(ev)


def small_store(error: bool = False) -> TraceStore:
    return TraceStore(small_events(error))


@dataclass
class FakeResult:
    status: str
    error: str = ""
    traceback: str = ""
    exit_code: int = 0


class FakeRun:
    """Stands in for runner.ScriptRun: appends events into its store at a pace."""

    def __init__(self, events, delay: float = 0.0, trace_path: Path | None = None) -> None:
        self.store = TraceStore()
        self.events = events
        self.delay = delay
        self.trace_path = trace_path or Path("/tmp/fake.gtt")
        self._cancel = threading.Event()

    def run(self) -> FakeResult:
        for ev in self.events:
            if self._cancel.is_set():
                self.store.append(RunEnd(status="interrupted"))
                return FakeResult("interrupted", exit_code=130)
            if self.delay:
                time.sleep(self.delay)
            self.store.append(ev)
        end = self.store.run_end()
        status = end.status if end is not None else "done"
        return FakeResult(status, end.error if end else "", end.traceback if end else "",
                          0 if status == "done" else 3)

    def cancel(self) -> None:
        self._cancel.set()


class Producer(threading.Thread):
    """Appends synthetic events into a store, ``per_tick`` every ``interval`` seconds."""

    def __init__(self, store: TraceStore, n: int = 3000, per_tick: int = 20, interval: float = 0.01) -> None:
        super().__init__(daemon=True)
        self.store = store
        self.events = list(synthetic_events(n))
        self.per_tick = per_tick
        self.interval = interval
        self.stop = threading.Event()

    def run(self) -> None:
        for i in range(0, len(self.events), self.per_tick):
            if self.stop.is_set():
                return
            for ev in self.events[i:i + self.per_tick]:
                if type(ev) is not RunEnd:
                    self.store.append(ev)
            time.sleep(self.interval)


def sync(fn):
    """Run an async test function with asyncio (no pytest plugin needed)."""
    import asyncio
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return asyncio.run(fn(*args, **kwargs))

    return wrapper
