"""Fork (regenerate one grammar node from token K with another token) on the real Gemma 3 270M:
the engine-level fork and probe, the worker process, the `fork` command and its errors, and the
app's "Fork here…" in replay (pilot).

One program is recorded once per module (a select, then a JSON object); the engine tests reuse its
loaded model, the CLI and the app load it again as a user's command would.
"""

from __future__ import annotations

import asyncio
import json as stdjson
from pathlib import Path

import pytest

from tracing import Message, NodeClose, NodeOpen, Token, TokenKind, TraceStore, read_trace, write_trace

pytestmark = pytest.mark.model

OPTIONS = ["positive", "negative", "mixed"]
# A bounded title: whatever token a fork puts in it, the string (and the object) must end.
SCHEMA = {"type": "object", "properties": {"title": {"type": "string", "maxLength": 24},
                                           "score": {"type": "integer", "minimum": 0, "maximum": 10}},
          "required": ["title", "score"], "additionalProperties": False}


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """(trace path, store, backend, final model) of one real run."""
    from engines import json, models, select
    from engines.session import Session, activate

    s = Session(monitoring=False)
    activate(s)
    try:
        lm = models.LlamaCpp() + "Review: the plot was thin but the acting was superb.\nSentiment: " + select(
            OPTIONS, name="label")
        lm = lm + "\nThe film as JSON: " + json("film", schema=SCHEMA)
    finally:
        activate(None)
        s.close()
    path = tmp_path_factory.mktemp("fork") / "run.gtt"
    write_trace(path, s.store.events())
    return path, s.store, lm.engine.backend, lm


def k_of(store: TraceStore, pred) -> int:
    """1-based number among the trace's tokens of the first token matching ``pred``."""
    for k, seq in enumerate(store.seqs_of(Token), 1):
        if pred(store[seq]):
            return k
    raise AssertionError("no such token")


def node_kind(store: TraceStore, node_id: int) -> str:
    return next(e.kind for e in store.events() if isinstance(e, NodeOpen) and e.node_id == node_id)


def json_value_k(store) -> int:
    """The first generated token inside the "title" string of the JSON node."""
    seen = b""
    for k, seq in enumerate(store.seqs_of(Token), 1):
        t = store[seq]
        if node_kind(store, t.node_id) != "json":
            continue
        if t.kind == TokenKind.GENERATED and b'"title"' in seen and seen.rstrip().endswith((b'"', b': "')):
            return k
        seen += t.bytes
    raise AssertionError("no generated token inside the title")


def other_option_alt(store, k: int) -> tuple[str, str]:
    """(ALT as a rank, the option it starts) for an allowed alternative at token ``k`` that starts an
    option other than the one the run chose."""
    from engines import fork

    p = fork.plan(store, k)
    taken = next(e.value for e in store.events() if type(e).__name__ == "Capture" and e.name == "label").strip()
    for rank, a in enumerate(p.alternatives, 1):
        word = a.bytes.strip().decode("utf-8", "replace")
        starts = [o for o in OPTIONS if word and o.startswith(word) and o != taken]
        if starts:
            return str(rank), starts[0]
    raise AssertionError(f"no allowed alternative starts another option: {p.alternatives}")


def select_k(store) -> int:
    """The first generated token of the select where another option could start."""
    for k, seq in enumerate(store.seqs_of(Token), 1):
        t = store[seq]
        if t.kind == TokenKind.GENERATED and node_kind(store, t.node_id) == "select":
            try:
                other_option_alt(store, k)
                return k
            except AssertionError:
                continue
    raise AssertionError("no select token to fork at")


# -- the engine ------------------------------------------------------------------------

def test_a_fork_at_a_selects_alternative_yields_that_option(recorded):
    from engines import fork

    _, store, backend, lm = recorded
    k = select_k(store)
    rank, option = other_option_alt(store, k)
    p = fork.plan(store, k)
    assert option != lm["label"]
    res = fork.run(backend, p, fork.resolve_alt(p, rank))
    assert dict((n, v) for n, v, _ in res.captures)["label"] == option
    assert res.text.endswith(option.encode())
    opened = res.events[0]
    assert isinstance(opened, NodeOpen) and opened.kind == "select"
    assert (opened.parent_id, opened.base_id) == (p.node.parent_id, p.node.base_id)  # a branch: same parent, base
    assert f"fork at token {k}" in opened.name
    assert isinstance(res.events[-1], NodeClose)


def test_a_fork_inside_a_json_value_still_ends_in_valid_json(recorded):
    from engines import fork

    _, store, backend, _ = recorded
    k = json_value_k(store)
    p = fork.plan(store, k)
    assert len(p.alternatives) >= 2
    alt = p.alternatives[1]  # not the token the run took
    assert alt.id != p.token.id
    res = fork.run(backend, p, fork.resolve_alt(p, "2"))
    value = stdjson.loads(dict((n, v) for n, v, _ in res.captures)["film"])
    assert set(value) == {"title", "score"} and isinstance(value["score"], int)
    # The replayed tokens before K are the run's own, then the alternative.
    orig = [store[s] for s in store.seqs_of(Token) if store[s].node_id == p.node.node_id and s < p.seq]
    new = [e for e in res.events if isinstance(e, Token)]
    assert [t.id for t in new[: len(orig)]] == [t.id for t in orig]
    assert new[len(orig)].id == alt.id


def test_probe_gives_the_top_n_before_and_after_the_mask(recorded):
    from engines import fork

    _, store, backend, _ = recorded
    k = select_k(store)
    p = fork.plan(store, k)
    before, after = fork.probe(backend, p, 20)
    assert len(before) == 20 and any(a.masked for a in before)
    assert after and not any(a.masked for a in after)
    assert after[0].id == p.token.id  # greedy: the best allowed token is the one taken
    assert [a.id for a in after[: len(p.alternatives)]] == [a.id for a in p.alternatives]
    assert [a.prob for a in after] == sorted((a.prob for a in after), reverse=True)
    assert sum(a.prob for a in after) <= 1.0 + 1e-6
    with pytest.raises(fork.ForkError, match="1 to 50"):
        fork.probe(backend, p, 51)


def test_plan_refuses_prompt_tokens_masked_alternatives_and_out_of_range(recorded):
    from engines import fork

    _, store, _, _ = recorded
    with pytest.raises(fork.ForkError, match="prompt token"):
        fork.plan(store, 1)
    n = len(store.seqs_of(Token))
    with pytest.raises(fork.ForkError, match="out of range"):
        fork.plan(store, n + 1)
    p = fork.plan(store, select_k(store))
    masked = next(a for a in p.token.top if a.masked)
    with pytest.raises(fork.ForkError, match="masked"):
        fork.resolve_alt(p, f"id:{masked.id}")


def test_the_worker_process_streams_a_fork_and_answers_a_probe(recorded):
    import queue

    from engines import fork
    from guidance_tui.run.fork_worker import ForkWorker

    _, store, _, _ = recorded
    k = select_k(store)
    rank, option = other_option_alt(store, k)
    p = fork.plan(store, k)
    replies: queue.Queue = queue.Queue()
    w = ForkWorker(p.model, p.backend, replies.put)
    try:
        got = []
        w.fork(p, rank)
        while True:
            r = replies.get(timeout=120)
            got.append(r)
            if r.op in ("done", "error"):
                break
        assert [r.op for r in got][0] == "loaded" and w.load_seconds > 0
        assert got[-1].op == "done", got[-1].message
        events = [r.event for r in got if r.op == "event"]
        assert isinstance(events[0], NodeOpen) and isinstance(events[-1], NodeClose)
        assert got[-1].text.endswith(option.encode())
        w.probe(p, 5)
        r = replies.get(timeout=60)
        assert r.op == "probe" and len(r.before) == 5 and r.after[0].id == p.token.id
        masked = next(a for a in p.token.top if a.masked)
        w.fork(p, f"id:{masked.id}")
        r = replies.get(timeout=60)
        assert r.op == "error" and "masked" in r.message and r.usage
        assert not w.busy
    finally:
        w.close()
    assert w.proc.returncode is not None


# -- the command line ------------------------------------------------------------------------

def run_cli(*argv) -> tuple[int, str, str]:
    import contextlib
    import io

    from guidance_tui.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def test_fork_command_writes_the_forked_run_and_prints_the_new_text(recorded, tmp_path):
    path, store, _, _ = recorded
    k = select_k(store)
    _, option = other_option_alt(store, k)
    out = tmp_path / "forked.gtt"
    code, stdout, stderr = run_cli("fork", str(path), "--at", str(k), "--with", " " + option, "-o", str(out))
    assert code == 0, stderr
    assert stdout.strip().endswith(option)
    assert "not run again" in stderr and str(out) in stderr
    forked = TraceStore(read_trace(out).events)
    opens = [e for e in forked.events() if isinstance(e, NodeOpen)]
    new = opens[-1]
    assert f"fork at token {k}" in new.name
    orig = next(e for e in opens if e.kind == "select" and e.node_id != new.node_id)
    assert (new.parent_id, new.base_id) == (orig.parent_id, orig.base_id)
    # The original events up to K come first, unchanged; the branch's text ends with the option.
    assert [e.id for e in forked.events()[: store.seqs_of(Token)[k - 1] + 1] if isinstance(e, Token)] == \
        [store[s].id for s in store.seqs_of(Token)[:k]]
    assert forked.text_at(forked.last_seq).endswith(option)
    assert forked.run_end() is not None and forked.run_end().status == "done"
    # Compared with the original run, the forked select stands where the original one was.
    from guidance_tui.state.compare import build_side, compare

    cmp = compare(build_side(store.events(), "A"), build_side(forked.events(), "B"))
    pair = next(p for p in cmp.pairs if p.b is not None and p.b.node_id == new.node_id)
    assert pair.a is not None and pair.a.node_id == orig.node_id
    assert not pair.same_text and pair.b.text.endswith(option.encode())
    assert orig.node_id not in [p.b.node_id for p in cmp.pairs if p.b is not None]  # the cut one is not a node
    assert all(p.paired for p in cmp.pairs[: cmp.pairs.index(pair)])  # everything before it pairs too


@pytest.mark.parametrize("case", ["prompt token", "masked", "masked, not recorded", "out of range", "not a number",
                                  "bad rank"])
def test_fork_command_errors_are_one_line_with_exit_2(recorded, tmp_path, case):
    path, store, _, _ = recorded
    k = select_k(store)
    masked = next(a for a in store[store.seqs_of(Token)[k - 1]].top if a.masked)
    at, alt, words = {
        "prompt token": ("1", "1", "prompt token"),
        "masked": (str(k), f"id:{masked.id}", "masked by the grammar"),
        # <pad>: in neither recorded list, so the worker's mask refuses it and names what it allows
        "masked, not recorded": (str(k), "id:0", "pick an allowed one ("),
        "out of range": (str(len(store.seqs_of(Token)) + 5), "1", "out of range"),
        "not a number": ("x", "1", "token number"),
        "bad rank": (str(k), "99", "rank 99 is out of range"),
    }[case]
    code, stdout, stderr = run_cli("fork", str(path), "--at", at, "--with", alt, "-o", str(tmp_path / "o.gtt"))
    assert code == 2
    assert stderr.startswith("guidance-tui: ") and words in stderr and stderr.count("\n") == 1
    assert "Traceback" not in stderr and not (tmp_path / "o.gtt").exists()


def test_fork_command_with_the_model_missing_exits_4(recorded, tmp_path):
    path, store, _, _ = recorded
    gone = str(tmp_path / "gone.gguf")
    events = [Message(level="info", text=f"model: {gone} (llama.cpp)") if isinstance(e, Message)
              and e.text.startswith("model: ") else e for e in read_trace(path).events]
    moved = tmp_path / "moved.gtt"
    write_trace(moved, events)
    code, _, stderr = run_cli("fork", str(moved), "--at", str(select_k(store)), "--with", "1",
                              "-o", str(tmp_path / "o.gtt"))
    assert code == 4 and "model file is missing" in stderr and gone in stderr


# -- the app (replay) ------------------------------------------------------------------------

def test_fork_in_replay_streams_the_branch_into_the_store_and_records_it(recorded, tmp_path):
    from guidance_tui.app import InspectorApp
    from guidance_tui.app.fork_screen import ForkScreen
    from guidance_tui.state.sources import open_recording

    path, store, _, _ = recorded
    k = select_k(store)
    rank, option = other_option_alt(store, k)

    async def go():
        app = InspectorApp(TraceStore())
        async with app.run_test(size=(110, 34)) as pilot:
            app.open_run(path)
            await pilot.pause()
            screen = app.screen
            while screen.loader is not None:
                await pilot.pause(0.05)
            screen.cursor.seek(screen.index.seqs[k - 1])
            screen.pinned = k - 1
            n_before = len(screen.store)
            await pilot.press("F")
            await pilot.pause()
            assert isinstance(app.screen, ForkScreen)
            assert "not run again" in str(app.screen.query_one("#fork-note").render())
            app.screen.query_one("#fork-alts").highlighted = int(rank) - 1
            await pilot.press("enter")
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 120
            while not {"done", "error"} & screen.fork_timing.keys() and loop.time() < deadline:
                await pilot.pause(0.1)
            assert "done" in screen.fork_timing, screen.fork_timing.get("error", "the fork did not finish")
            new = screen.store.events()[n_before:]
            assert isinstance(new[0], NodeOpen) and f"fork at token {k}" in new[0].name
            assert screen.store.text_at(screen.store.last_seq).endswith(option)
            while screen.cursor.seq != screen.store.last_seq and loop.time() < deadline:
                await pilot.pause(0.05)  # the next tick ingests the branch's last events
            assert screen.cursor.following and screen.cursor.seq == screen.store.last_seq  # the view switched
            assert screen.fork_recorded is not None and Path(screen.fork_recorded).exists()
            assert "first_token" in screen.fork_timing

    asyncio.run(go())
