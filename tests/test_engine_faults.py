"""Engine faults found by a bad-input and fault matrix: threads sharing a model, empty results,
regexes that can never match or are cut by ``max_tokens``.

Model tests run the real Gemma 3 270M on llama.cpp; the transformers thread test uses a tiny model
built in the test (see test_transformers_backend.py).
"""

from __future__ import annotations

import json as stdjson
import os
import subprocess
import sys
import threading

import pytest

from engines import gen, models, regex, select
from engines.errors import GrammarError
from tracing import Capture, Message, NodeClose, Token, TokenKind


def text_at_node(store, node_id: int) -> bytes:
    seq = next(e.seq for e in store.events() if isinstance(e, NodeClose) and e.node_id == node_id)
    return store.text_bytes(store.state_at(seq))


def node_events(store, node_id: int, kind: type) -> list:
    return [e for e in store.events() if isinstance(e, kind) and e.node_id == node_id]


def warnings_of(store) -> list[str]:
    return [e.text for e in store.events() if isinstance(e, Message) and e.level == "warning"]


# -- 1. two threads on one model -------------------------------------------------------------------

# Run in a child process: before the fix this ended in a native abort (exit 134) that would take
# pytest down with it.  The child prints one JSON line: results and the trace checks.
_THREADS_SCRIPT = r"""
import json, sys, threading
from engines import gen, guidance, models, select, user
from engines.session import Session, activate
from tracing import NodeClose, NodeOpen, Token

s = Session(monitoring=False)
activate(s)
base = models.LlamaCpp(monitoring=False)

@guidance
def qa(lm, q):
    lm += q + " Answer:" + gen("a", max_tokens=10, stop="\n")
    return lm + "\nSure? " + select([" yes", " no"], name="sure")

PROGRAMS = {
    "t1p1": lambda: base + "Q1: What is the capital of France? A:" + gen("a", max_tokens=12),
    "t1p2": lambda: base + qa("Question: name a primary colour."),
    "t2p1": lambda: base + "Count from one: one, two," + gen("a", max_tokens=12),
    "t2p2": lambda: _roles(),
}

def _roles():
    lm = base
    with user():
        lm += "Say hello in French."
    return lm + gen("a", max_tokens=8)

def node_text(node_id):
    seq = next(e.seq for e in s.store.events() if isinstance(e, NodeClose) and e.node_id == node_id)
    return s.store.text_bytes(s.store.state_at(seq))

def summary(lm):
    return {"text": str(lm), "caps": {k: lm[k] for k in ("a", "sure") if k in lm},
            "trace_ok": node_text(lm.node_id) == lm.text_bytes}

serial = {k: summary(f()) for k, f in PROGRAMS.items()}

threaded, errors = {}, []
barrier = threading.Barrier(2)
def work(names):
    try:
        barrier.wait()
        for n in names:
            threaded[n] = summary(PROGRAMS[n]())
    except BaseException as e:
        errors.append(f"{type(e).__name__}: {e}")

rounds = []
for r in range(2):
    threaded.clear()
    ts = [threading.Thread(target=work, args=(names,)) for names in (["t1p1", "t1p2"], ["t2p1", "t2p2"])]
    [t.start() for t in ts]
    [t.join() for t in ts]
    rounds.append(dict(threaded))

# Every node of the trace: its text at close equals the text its model had (each node's tokens in
# its own branch); nodes are opened once and closed once.
opens = [e.node_id for e in s.store.events() if isinstance(e, NodeOpen)]
closes = [e.node_id for e in s.store.events() if isinstance(e, NodeClose)]
print(json.dumps({"serial": serial, "rounds": rounds, "errors": errors,
                  "opens_unique": len(opens) == len(set(opens)), "all_closed": sorted(opens) == sorted(closes)}))
"""


@pytest.mark.model
def test_two_threads_sharing_one_model_match_the_serial_run(tmp_path):
    script = tmp_path / "threads.py"
    script.write_text(_THREADS_SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    p = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600, env=env)
    assert p.returncode == 0, f"the process died (exit {p.returncode}): {p.stderr[-2000:]}"
    out = stdjson.loads(p.stdout.strip().splitlines()[-1])
    assert out["errors"] == []
    serial = out["serial"]
    assert all(v["trace_ok"] for v in serial.values())
    for threaded in out["rounds"]:
        assert threaded.keys() == serial.keys()
        for k in serial:
            assert threaded[k]["text"] == serial[k]["text"], k
            assert threaded[k]["caps"] == serial[k]["caps"], k
            assert threaded[k]["trace_ok"], f"{k}: the text rebuilt from the events differs"
    assert out["opens_unique"] and out["all_closed"]


@pytest.mark.transformers
def test_two_threads_sharing_one_transformers_model(tmp_path, session):
    pytest.importorskip("torch")
    from test_transformers_backend import make_model_dir

    d = make_model_dir(tmp_path / "tiny", "llama")
    base = models.Transformers(d, n_ctx=256, monitoring=False, progress=False, device="cpu")
    programs = {
        "a1": lambda: base + "The capital of France is" + gen("x", max_tokens=6),
        "a2": lambda: base + "Numbers: " + regex(r"[0-9]{2,4}", name="x") + " and " + gen("y", max_tokens=4),
        "b1": lambda: base + "yes no maybe;" + select([" red", " green", " blue"], name="x"),
        "b2": lambda: base + "def f(x):" + gen("x", max_tokens=6),
    }
    serial = {k: f() for k, f in programs.items()}
    for _ in range(3):
        threaded, errors = {}, []
        barrier = threading.Barrier(2)

        def work(names):
            try:
                barrier.wait()
                for n in names:
                    threaded[n] = programs[n]()
            except BaseException as e:  # noqa: BLE001
                errors.append(f"{type(e).__name__}: {e}")

        ts = [threading.Thread(target=work, args=(n,)) for n in (["a1", "a2"], ["b1", "b2"])]
        [t.start() for t in ts]
        [t.join() for t in ts]
        assert errors == []
        for k, lm in serial.items():
            assert str(threaded[k]) == str(lm), k
            assert threaded[k]._captures == lm._captures, k
            assert text_at_node(session.store, threaded[k].node_id) == threaded[k].text_bytes, k


# -- 2. empty results are captures too ---------------------------------------------------------------

@pytest.mark.model
@pytest.mark.parametrize("program", [
    pytest.param(lambda: gen("x", max_tokens=0), id="gen-max_tokens-0"),
    pytest.param(lambda: select([""], name="x"), id="select-empty-option"),
    pytest.param(lambda: gen("x", max_tokens=0) + " then", id="gen-max_tokens-0-then-literal"),
    pytest.param(lambda: regex("a{0}", name="x"), id="regex-only-empty"),
    pytest.param(lambda: regex("", name="x") + select([" yes", " no"], name="z"), id="regex-empty-then-select"),
])
def test_an_empty_result_is_an_empty_capture(session, program):
    lm = models.LlamaCpp() + "Answer:" + program()
    assert lm["x"] == ""
    caps = node_events(session.store, lm.node_id, Capture)
    assert [c.value for c in caps if c.name == "x"] == [""], "a Capture event is recorded"
    assert text_at_node(session.store, lm.node_id) == lm.text_bytes


@pytest.mark.model
def test_an_immediate_stop_and_an_empty_star_regex_give_empty_captures(session):
    m = models.LlamaCpp()
    lm = m + "1, 2, 3" + gen("x", stop=",", max_tokens=5)  # Gemma writes "," first: stops at once
    assert lm["x"] == "" and str(lm) == "1, 2, 3"
    lm2 = m + "Count: 1 2 3" + (regex("a*", name="r") + " 4")
    assert lm2["r"] == "" and str(lm2) == "Count: 1 2 3 4"
    for x in (lm, lm2):
        assert [c.value for c in node_events(session.store, x.node_id, Capture)] == [""]
        assert text_at_node(session.store, x.node_id) == x.text_bytes


@pytest.mark.model
def test_a_capture_in_an_option_not_taken_is_not_set(session):
    lm = models.LlamaCpp() + "Is water wet? Answer:" + select([" yes", " no" + gen("why", max_tokens=0)],
                                                              name="answer")
    if lm["answer"] == " yes":
        assert "why" not in lm
    else:
        assert lm["why"] == ""


# -- 3. regexes that can never match, or are cut before they match ---------------------------------------

@pytest.mark.model
@pytest.mark.parametrize("program", [
    pytest.param(lambda: regex(r"[^\s\S]", name="r"), id="empty-class"),
    pytest.param(lambda: regex(r"[^\x00-\x{10FFFF}]"), id="no-code-point"),
    pytest.param(lambda: gen("g", regex=r"x*[a&&b]y*", max_tokens=5), id="gen-empty-intersection"),
    pytest.param(lambda: "prefix " + regex(r"a[^\s\S]", name="r"), id="after-a-literal"),
    pytest.param(lambda: gen(max_tokens=3) + regex(r"[^\s\S]"), id="after-a-gen"),
    pytest.param(lambda: select([regex(r"[^\s\S]"), regex(r"[a&&b]")], name="s"), id="every-option-empty"),
])
def test_a_regex_that_can_never_match_is_a_grammar_error_before_decoding(session, program, monkeypatch):
    m = models.LlamaCpp() + "Answer:"
    calls = []
    real = type(m.engine.backend).logits
    monkeypatch.setattr(type(m.engine.backend), "logits", lambda self, *a, **kw: calls.append(1) or real(self, *a, **kw))
    with pytest.raises(GrammarError, match="can never match") as info:
        m + program()
    assert "\n" not in str(info.value)
    assert calls == [], "nothing was decoded"
    assert not [e for e in session.store.events() if isinstance(e, Token) and e.kind != TokenKind.PROMPT]
    last = [e for e in session.store.events() if isinstance(e, NodeClose)][-1]
    assert last.stop_reason == "error: GrammarError"


@pytest.mark.model
def test_an_empty_option_next_to_a_good_one_is_not_an_error(session):
    lm = models.LlamaCpp() + "Answer:" + select([regex(r"[^\s\S]"), " yes"], name="s")
    assert lm["s"] == " yes"
    assert not warnings_of(session.store)


@pytest.mark.model
@pytest.mark.parametrize("name", ["n", None])
def test_a_regex_cut_by_max_tokens_is_a_warning_with_stop_reason_max_tokens(session, name):
    lm = models.LlamaCpp() + "The year the Berlin wall fell: " + gen(name, regex=r"[0-9]{4}", max_tokens=2)
    out = str(lm).removeprefix("The year the Berlin wall fell: ")
    assert 1 <= len(out) < 4 and out.isdigit(), "the partial text is kept"
    if name:
        assert lm["n"] == out
        assert [c.value for c in node_events(session.store, lm.node_id, Capture)] == [out]
    else:
        assert not node_events(session.store, lm.node_id, Capture), "no internal capture leaks into the trace"
        assert lm._captures == {}
    close = node_events(session.store, lm.node_id, NodeClose)[0]
    assert close.stop_reason == "max_tokens"
    (w,) = warnings_of(session.store)
    assert "max_tokens=2" in w and "[0-9]{4}" in w and "\n" not in w
    assert text_at_node(session.store, lm.node_id) == lm.text_bytes


@pytest.mark.model
def test_a_regex_with_no_token_budget_at_all_is_cut_empty(session):
    lm = models.LlamaCpp() + "The year: " + (gen("n", regex=r"[0-9]{2}", max_tokens=0) + "!")
    assert lm["n"] == "" and str(lm) == "The year: !"
    assert node_events(session.store, lm.node_id, NodeClose)[0].stop_reason == "max_tokens"
    assert len(warnings_of(session.store)) == 1


@pytest.mark.model
def test_ordinary_max_tokens_ends_are_not_warnings(session):
    m = models.LlamaCpp() + "The year the Berlin wall fell: "
    a = m + gen("a", max_tokens=3)  # free text: any cut is a valid end
    b = m + gen("b", stop="\n", max_tokens=3)  # guidance semantics: max_tokens ends a stop= gen
    c = m + gen("c", regex=r"[0-9]{4}", max_tokens=8)  # completes within its budget
    d = m + gen("d", regex=r"[0-9]+", max_tokens=2)  # cut, but at a point where the regex matches
    assert len(c["c"]) == 4 and d["d"].isdigit() and a["a"] and b["b"]
    assert warnings_of(session.store) == []
