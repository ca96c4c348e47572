"""Per-token statistics: the fast paths compute the numbers the plain formulas give, and the loop's
worker thread records exactly the trace a serial loop records."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engines import gen, json, select
from engines.session import current
from engines.stats import analyse, greedy, mask_from_bitmask, top_k_allowed, top_k_ids
from engines.token_stats import StatsWorker
from tracing import Backtrack, Capture, Token


def reference(row: np.ndarray, allowed: np.ndarray | None, k: int):
    """The statistics as plain NumPy writes them (what the loop computed before it was made fast)."""
    m = float(row.max())
    e = np.exp(row - m)
    log_z = m + math.log(float(e.sum()))
    log_zm = log_z if allowed is None else m + math.log(float(np.dot(e, allowed.astype(row.dtype))))
    order = sorted(range(len(row)), key=lambda i: (-row[i], i))[:k]
    return log_z, log_zm, order


def rows(seed: int = 0):
    rng = np.random.default_rng(seed)
    for shape in ("peaked", "flat", "ties"):
        row = (rng.standard_normal(50_000) * (8 if shape == "peaked" else 0.5)).astype(np.float32)
        if shape == "ties":
            row[[10, 20, 30, 40, 50, 60]] = row.max() + 1  # six equal best logits: the lower ids first
        allowed = rng.random(len(row)) < 0.7
        allowed[int(np.argmax(row))] = False  # the best token masked
        yield row, None
        yield row, allowed


@pytest.mark.parametrize("k", [1, 3, 5, 40])
def test_analyse_gives_the_plain_formulas_numbers_exactly(k):
    for row, allowed in rows():
        st = analyse(row, allowed, k)
        log_z, log_zm, order = reference(row, allowed, k)
        assert st.log_z == log_z and st.log_z_masked == log_zm
        assert list(st.top_ids) == order


def test_top_k_ids_finds_far_apart_logits_and_keeps_ties_in_id_order():
    row = np.full(10_000, -50.0, dtype=np.float32)
    row[[7, 9000, 123, 4567, 42]] = [10.0, -40.0, 3.0, 3.0, -45.0]  # gaps far beyond the first threshold
    assert list(top_k_ids(row, 5)) == [7, 123, 4567, 9000, 42]
    row2 = np.zeros(100, dtype=np.float32)  # every logit equal: the k lowest ids
    assert list(top_k_ids(row2, 4)) == [0, 1, 2, 3]


def test_greedy_is_the_best_allowed_token_with_or_without_the_full_statistics():
    from engines.stats import RowStats

    for row, allowed in rows(1):
        want = int(np.argmax(np.where(allowed, row, -np.inf))) if allowed is not None else int(np.argmax(row))
        assert greedy(analyse(row, allowed, 5), allowed) == want
        assert greedy(RowStats.light(row), allowed) == want


def test_a_mask_changed_in_place_is_not_taken_for_the_previous_one():
    row = np.linspace(0, 5, 1000, dtype=np.float32)
    allowed = np.ones(1000, dtype=bool)
    allowed[::2] = False
    first = analyse(row, allowed, 3).log_z_masked
    allowed[::2] = True  # same array object, new content
    allowed[1::2] = False
    assert analyse(row, allowed, 3).log_z_masked == reference(row, allowed, 3)[1] != first


def test_an_unchanged_bitmask_gives_the_same_read_only_mask():
    vocab = 1000
    bits = np.ones(vocab, dtype=bool)
    bits[[3, 500, 999]] = False
    words = np.packbits(np.pad(bits, (0, 1024 - vocab)), bitorder="little").view(np.int32).copy()
    a, n = mask_from_bitmask(words, vocab)
    b, n2 = mask_from_bitmask(words.copy(), vocab)
    assert b is a and n == n2 == vocab - 3 and not a.flags.writeable
    assert list(np.flatnonzero(~a)) == [3, 500, 999]
    words[0] &= ~(1 << 7)  # token 7 masked too
    c, n3 = mask_from_bitmask(words, vocab)
    assert c is not a and n3 == vocab - 4 and not c[7]
    st = analyse(np.arange(vocab, dtype=np.float32), c, 5)
    assert list(top_k_allowed(st, c, 2)) == [998, 997]


def _trace(lm, programs) -> list[str]:
    """The programs' token, backtrack and capture events, without timings and node ids."""
    store = current().store
    start = len(store)
    for program in programs:
        lm.engine.backend.reset()
        program(lm)
    keep = (Token, Backtrack, Capture)
    skip = {"t_us", "latency_us", "mask_us", "node_id", "seq"}
    return [repr({f: getattr(ev, f) for f in ev.__struct_fields__ if f not in skip})
            for ev in (store[s] for s in range(start, len(store))) if isinstance(ev, keep)]


PROGRAMS = [
    lambda lm: lm + "Once upon a time," + gen(max_tokens=24),
    lambda lm: lm + "A person as JSON: " + json(schema={"type": "object", "properties": {
        "name": {"type": "string"}, "age": {"type": "integer"}}, "required": ["name", "age"]}, max_tokens=30),
    lambda lm: lm + "Is the sky blue? " + select(["yes", "no", "maybe"]) + " " + gen(regex="[0-9]{3}"),
]


def test_the_worker_thread_records_exactly_what_a_serial_loop_records(lm0, monkeypatch):
    monkeypatch.setattr(StatsWorker, "inline", False)
    worker = _trace(lm0, PROGRAMS)
    monkeypatch.setattr(StatsWorker, "inline", True)
    serial = _trace(lm0, PROGRAMS)
    assert len(worker) > 60
    assert worker == serial


def test_a_slow_worker_still_reads_the_row_it_was_given(lm0, monkeypatch):
    """The next forward pass overwrites llama.cpp's logits buffer: the job must read its own copy."""
    import threading
    import time

    import engines.loop as loop

    real = loop.analyse

    def slow(*args, **kw):
        if threading.current_thread() is not threading.main_thread():
            time.sleep(0.1)  # still running when the next pass returns
        return real(*args, **kw)

    serial_programs = PROGRAMS[:1]
    monkeypatch.setattr(StatsWorker, "inline", True)
    serial = _trace(lm0, serial_programs)
    monkeypatch.setattr(StatsWorker, "inline", False)
    monkeypatch.setattr(loop, "analyse", slow)
    assert _trace(lm0, serial_programs) == serial


@pytest.mark.parametrize("every_core", [True, False])
def test_statistics_move_to_the_worker_only_where_the_forward_pass_leaves_cores_idle(lm0, monkeypatch, every_core):
    import threading

    import engines.loop as loop

    threads = set()
    real = loop.analyse

    def spy(*args, **kw):
        threads.add(threading.current_thread().name)
        return real(*args, **kw)

    monkeypatch.setattr(StatsWorker, "inline", None)
    monkeypatch.setattr(lm0.engine.backend, "forward_uses_every_core", every_core)
    monkeypatch.setattr(loop, "analyse", spy)
    lm0 + "Hello" + gen(max_tokens=3)
    on_worker = any(name.startswith("token-stats") for name in threads)
    assert on_worker is (not every_core)
