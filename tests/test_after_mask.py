"""The top-k after the grammar mask (``Token.top_allowed``): the pre-filter against brute force, and
what the engine records on the real model."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engines.stats import analyse, top_k_allowed
from tracing import Token, TokenKind


def brute_top_allowed(row: np.ndarray, allowed: np.ndarray, k: int) -> list[int]:
    ids = np.flatnonzero(allowed)
    best = float(row[ids].max())
    ids = [int(i) for i in ids if row[i] >= best - 20.0]
    return sorted(ids, key=lambda i: (-row[i], i))[:k]


@pytest.mark.parametrize("case", ["allowed near the top", "few allowed far below", "fewer than k allowed",
                                  "allowed just below the pre-filter"])
def test_top_k_allowed_equals_brute_force(case):
    rng = np.random.default_rng(7)
    v = 262_144
    row = rng.normal(0.0, 2.0, v).astype(np.float32)
    row[rng.choice(v, 40, replace=False)] += 25.0  # a peaked row, like a real model's
    allowed = np.zeros(v, dtype=bool)
    if case == "allowed near the top":
        allowed[rng.choice(v, v // 2, replace=False)] = True
    elif case == "few allowed far below":
        allowed[rng.choice(v, 17, replace=False)] = True
    elif case == "fewer than k allowed":
        allowed[np.argsort(row)[-3:]] = True
    else:
        top = np.argsort(row)[-1]
        low = rng.choice(v, 9, replace=False)
        row[low] = row[top] - 21.0 + np.arange(9, dtype=np.float32) * 0.1  # below the raw pre-filter
        allowed[low] = True
    st = analyse(row, allowed, 5)
    got = [int(i) for i in top_k_allowed(st, allowed, 5)]
    assert got == brute_top_allowed(row, allowed, 5)
    assert all(allowed[i] for i in got)
    # The renormalised probabilities are exp(logit - log_z over the allowed set).
    log_zm = float(np.log(np.exp(row[allowed].astype(np.float64) - row.max()).sum()) + row.max())
    for i in got:
        assert math.isclose(st.prob_masked(i), math.exp(float(row[i]) - log_zm), rel_tol=1e-4)


@pytest.fixture(scope="module")
def select_store():
    """One program on the real model: a select after a prompt where the model wants other tokens."""
    from engines import models, select
    from engines.session import Session, activate

    s = Session(monitoring=False)
    activate(s)
    try:
        lm = models.LlamaCpp() + "Review: the plot was thin.\nSentiment: " + select(
            ["positive", "negative", "mixed"], name="s")
        lm = lm + "\nSummary in one word, then a long explanation: " + select(
            ["Weak plot, strong acting overall", "Fine"], name="why")
    finally:
        activate(None)
        s.close()
    return s.store, lm


@pytest.mark.model
def test_a_select_records_its_options_after_the_mask(select_store):
    store, lm = select_store
    toks = [e for e in store.events() if isinstance(e, Token) and e.kind == TokenKind.GENERATED]
    first = next(t for t in toks if any(a.masked for a in t.top))
    alts = first.top_allowed
    assert alts, "a token whose pre-mask top-k has a masked alternative records its after-mask list"
    assert first.after_mask() is alts
    assert alts[0].id == first.id  # greedy: the chosen token is the best allowed one
    assert math.isclose(alts[0].prob, first.prob, rel_tol=1e-6)
    assert [a.prob for a in alts] == sorted((a.prob for a in alts), reverse=True)
    assert not any(a.masked for a in alts)
    assert 0.99 <= sum(a.prob for a in alts) <= 1.0 + 1e-6  # three options: the list holds nearly all
    opening = {a.bytes.strip() for a in alts} - {b""}
    assert any(o.startswith(b) or b.startswith(o) for o in (b"positive", b"negative", b"mixed") for b in opening)


@pytest.mark.model
def test_tokens_store_the_after_mask_list_only_when_the_mask_changed_the_top(select_store):
    store, _ = select_store
    toks = [e for e in store.events() if isinstance(e, Token) and e.kind != TokenKind.PROMPT]
    assert toks
    for t in toks:
        masked = any(a.masked for a in t.top)
        assert bool(t.top_allowed) == masked
        if t.kind == TokenKind.FORCED and masked:
            assert [(a.id, a.prob, a.masked) for a in t.top_allowed] == [(t.id, 1.0, False)]
        if not masked:
            assert t.after_mask() == t.top or all(not a.masked for a in t.after_mask())
    assert any(t.kind == TokenKind.FORCED for t in toks), "the long option's tail is forced"
