"""The in-process trace store (seqs, batches, state at any seq, jumps) and the trace tree."""

from __future__ import annotations

import random
import threading
import time

import pytest

from tracing import (
    Backtrack, Capture, Message, Metric, NodeClose, NodeOpen, RunEnd, RunStart, Token, TokenKind, TraceStore,
    TraceTree,
)
from tracing.store import CHECKPOINT_EVERY
from tracing.synthetic import synthetic_events


# -- producers -----------------------------------------------------------------
def test_concurrent_producers_get_dense_unique_seqs():
    store = TraceStore()
    n_threads, n = 4, 10_000
    barrier = threading.Barrier(n_threads + 1)
    seen: list = []
    done = threading.Event()

    def produce(t: int) -> None:
        barrier.wait()
        for i in range(n):
            store.append(Message(text=f"{t}:{i}"))

    def consume() -> None:  # a reader draining batches while the producers run
        barrier.wait()
        last = -1
        while True:
            finished = done.is_set()
            batch = store.since(last)
            seen.extend(batch)
            if batch:
                last = batch[-1].seq
            elif finished:
                return
            else:
                time.sleep(0.001)  # a consumer polls on a timer, like the UI

    threads = [threading.Thread(target=produce, args=(t,)) for t in range(n_threads)]
    reader = threading.Thread(target=consume)
    for th in threads + [reader]:
        th.start()
    for th in threads:
        th.join()
    done.set()
    reader.join()

    events = store.events()
    assert len(store) == n_threads * n
    assert [e.seq for e in events] == list(range(n_threads * n))
    assert sorted(e.text for e in events) == sorted(f"{t}:{i}" for t in range(n_threads) for i in range(n))
    for t in range(n_threads):  # each producer's own order is kept
        mine = [int(e.text.split(":")[1]) for e in events if e.text.startswith(f"{t}:")]
        assert mine == list(range(n))
    assert [e.seq for e in seen] == list(range(n_threads * n))


def test_append_stamps_time_unless_told_to_keep_it():
    ticks = iter(range(0, 10**12, 5000))
    store = TraceStore(clock=lambda: next(ticks))
    store.append(Message(text="a"))
    store.append(Message(text="b", t_us=999), stamp=False)
    store.append(Message(text="c"), stamp=False)  # no time yet: stamped anyway
    assert [e.t_us for e in store.events()] == [5, 999, 10]


# -- batches ---------------------------------------------------------------------
def test_since_returns_events_after_a_seq_oldest_first():
    store = TraceStore(Message(text=str(i)) for i in range(10))
    assert [e.seq for e in store.since(-1)] == list(range(10))
    assert [e.seq for e in store.since(6)] == [7, 8, 9]
    assert store.since(9) == [] and store.since(50) == []
    assert [e.seq for e in store.since(-5)] == list(range(10))  # before the start means everything


def test_since_with_a_limit_drains_everything_in_batches():
    store = TraceStore(Message(text=str(i)) for i in range(100))
    assert [e.seq for e in store.since(10, limit=3)] == [11, 12, 13]
    got, last = [], -1
    while batch := store.since(last, limit=7):
        assert len(batch) <= 7
        got += batch
        last = batch[-1].seq
    assert [e.seq for e in got] == list(range(100))


# -- state at a seq -----------------------------------------------------------------
def naive_states(events) -> list[dict]:
    """The state after every event, by replaying from the start (independent of the store)."""
    text = bytearray()
    open_nodes: list[int] = []
    counts = {"tokens": 0, "generated": 0, "forced": 0, "prompt": 0, "backtracks": 0}
    metric_seq, status = -1, "empty"
    state_node, saved = 0, {0: b""}  # each node's latest text: a branch switches to its base's
    out = []
    for ev in events:
        if isinstance(ev, Token):
            del text[ev.pos:]  # a token starts at its pos: anything after it was taken back
            text += ev.bytes
            counts["tokens"] += 1
            key = {TokenKind.GENERATED: "generated", TokenKind.FORCED: "forced", TokenKind.PROMPT: "prompt"}
            counts[key[ev.kind]] += 1
        elif isinstance(ev, Backtrack):  # text from pos on, or the last len(bytes) bytes, is taken back
            del text[ev.pos if ev.pos >= 0 else max(0, len(text) - len(ev.bytes)):]
            counts["backtracks"] += 1
        elif isinstance(ev, NodeOpen):
            open_nodes.append(ev.node_id)
            saved[state_node] = bytes(text)
            if ev.base_id != state_node and ev.base_id in saved:
                text = bytearray(saved[ev.base_id])
            state_node = ev.node_id
        elif isinstance(ev, NodeClose):
            if ev.node_id in open_nodes:
                open_nodes.remove(ev.node_id)
            saved[ev.node_id] = bytes(text)
            state_node = ev.node_id
        elif isinstance(ev, Metric):
            metric_seq = ev.seq
        elif isinstance(ev, RunStart):
            status = "running"
        elif isinstance(ev, RunEnd):
            status = ev.status
        out.append(dict(seq=ev.seq, text=bytes(text), open_nodes=tuple(open_nodes), metric_seq=metric_seq,
                        status=status, **counts))
    return out


def random_events(n: int, seed: int) -> list:
    """Tokens that rewind by pos, backtracks cutting through tokens, nested nodes, metrics."""
    rng = random.Random(seed)
    out: list = [RunStart(script="r.py")]
    text_len, next_node, open_, seen = 0, 1, [], [0]
    for _ in range(n):
        r = rng.random()
        if r < 0.6:
            pos = text_len if rng.random() < 0.85 else rng.randint(0, text_len)
            data = bytes(rng.randrange(256) for _ in range(rng.randint(0, 5)))
            out.append(Token(node_id=open_[-1] if open_ else 0, pos=pos, id=rng.randrange(1000), bytes=data,
                             kind=rng.choice(list(TokenKind))))
            text_len = pos + len(data)
        elif r < 0.65:
            k = rng.randint(0, min(text_len, 9) + 2)
            out.append(Backtrack(n_tokens=1, bytes=b"x" * k, reason="grammar"))
            text_len = max(0, text_len - k)
        elif r < 0.7:  # a backtrack that says where the removed text started
            pos = rng.randint(max(0, text_len - 12), text_len)
            out.append(Backtrack(n_tokens=1, bytes=b"x" * (text_len - pos), pos=pos, reason="tool"))
            text_len = pos
        elif r < 0.8:  # mostly continuing from the latest state, sometimes from an older one
            base = seen[-1] if rng.random() < 0.7 else rng.choice(seen)
            out.append(NodeOpen(node_id=next_node, parent_id=open_[-1] if open_ else 0, base_id=base, kind="gen"))
            open_.append(next_node)
            seen.append(next_node)
            next_node += 1
        elif r < 0.88 and open_:
            out.append(NodeClose(node_id=open_.pop(rng.randrange(len(open_)))))
        elif r < 0.95:
            out.append(Metric(cpu=rng.random() * 100, ram_used=1, ram_total=2))
        else:
            out.append(Capture(name="c", value="v"))
    out.append(RunEnd(status="error", error="boom"))
    return out


def assert_state_matches(store: TraceStore, seq: int, want: dict) -> None:
    s = store.state_at(seq)
    got = dict(seq=s.seq, text=store.text_bytes(s), open_nodes=s.open_nodes, metric_seq=s.metric_seq,
               status=s.status, tokens=s.tokens, generated=s.generated, forced=s.forced, prompt=s.prompt,
               backtracks=s.backtracks)
    assert got == want, seq
    assert s.text_len == len(want["text"])


def probe_seqs(n: int, rng: random.Random) -> list[int]:
    seqs = set(rng.sample(range(n), min(n, 150)))
    for k in range(0, n // CHECKPOINT_EVERY + 1):  # both sides of every checkpoint
        seqs.update(s for s in range(k * CHECKPOINT_EVERY - 2, k * CHECKPOINT_EVERY + 2) if 0 <= s < n)
    seqs.update({0, n - 1})
    out = sorted(seqs)
    rng.shuffle(out)  # out of order: checkpoints are built lazily by whichever query comes first
    return out


@pytest.mark.parametrize("source", ["synthetic", "random"])
def test_state_at_equals_a_linear_replay(source):
    events = list(synthetic_events(3000, seed=11)) if source == "synthetic" else random_events(4000, seed=12)
    store = TraceStore(events)
    assert len(store) > 8 * CHECKPOINT_EVERY
    want = naive_states(store.events())
    for seq in probe_seqs(len(store), random.Random(13)):
        assert_state_matches(store, seq, want[seq])


def test_state_at_stays_right_while_the_store_grows():
    events = random_events(3000, seed=21)
    store = TraceStore()
    want = naive_states(TraceStore(events).events())
    rng = random.Random(22)
    for chunk_end in (700, 701, 1500, 2400, len(events)):
        store.extend(events[len(store):chunk_end])
        for seq in rng.sample(range(len(store)), 25) + [len(store) - 1]:
            assert_state_matches(store, seq, want[seq])


def test_state_before_any_event_and_past_the_end():
    store = TraceStore(synthetic_events(50, seed=1))
    assert store.state_at(-1).status == "empty" and store.state_at(-1).text_len == 0
    assert store.state_at(10**9) == store.state_at(store.last_seq)
    assert TraceStore().state_at(5).seq == -1


def test_text_at_and_metric_at_follow_the_state():
    store = TraceStore(synthetic_events(400, seed=2))
    last = store.last_seq
    assert store.text_at(last) == store.text_bytes(store.state_at(last)).decode("utf-8", "replace")
    m = store.metric_at(last)
    assert isinstance(m, Metric) and m.seq == store.seqs_of(Metric)[-1]
    assert store.metric_at(0) is None


# -- jumps --------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", [Backtrack, Capture, Token, RunEnd])
def test_next_of_and_prev_of_find_the_nearest_event_of_a_kind(kind):
    store = TraceStore(synthetic_events(1000, seed=3))
    seqs = [e.seq for e in store.events() if type(e) is kind]
    assert seqs and store.seqs_of(kind) == seqs
    for s in list(range(-1, len(store) + 1, 7)) + seqs:
        after = [x for x in seqs if x > s]
        before = [x for x in seqs if x < s]
        assert store.next_of(kind, s) == (after[0] if after else None)
        assert store.prev_of(kind, s) == (before[-1] if before else None)


def test_next_of_a_kind_never_seen_is_none():
    store = TraceStore([Message(text="x")])
    assert store.next_of(Backtrack, -1) is None and store.prev_of(Backtrack, 10) is None


def test_run_start_and_run_end_are_found():
    store = TraceStore(synthetic_events(100, seed=4))
    assert store.run_start().script == "synthetic.py"
    assert store.run_end().status == "done"
    assert TraceStore().run_start() is None and TraceStore().run_end() is None


# -- the tree -------------------------------------------------------------------------------
def tree_of(events) -> TraceTree:
    return TraceStore(events).tree()


def ids(nodes) -> list[int]:
    return [n.node_id for n in nodes]


def test_tree_of_a_linear_program_is_a_row_of_siblings():
    tree = tree_of([
        NodeOpen(node_id=1, base_id=0, kind="role", name="user"), NodeClose(node_id=1),
        NodeOpen(node_id=2, base_id=1, kind="gen", name="a"), NodeClose(node_id=2),
        NodeOpen(node_id=3, base_id=2, kind="select", name="b"), NodeClose(node_id=3),
    ])
    assert ids(tree.root.children) == [1, 2, 3]
    assert all(n.kind != "branch" for n in tree.root.descendants)
    assert tree.orphans == 0


def test_tree_puts_a_reused_base_under_a_branch_node():
    tree = tree_of([
        NodeOpen(node_id=1, base_id=0, kind="role", name="user"), NodeClose(node_id=1),
        NodeOpen(node_id=2, base_id=1, kind="gen", name="first"), NodeClose(node_id=2),
        NodeOpen(node_id=3, base_id=1, kind="gen", name="second"), NodeClose(node_id=3),  # lm reused
        NodeOpen(node_id=4, base_id=3, kind="gen", name="more"), NodeClose(node_id=4),
    ])
    first, second, branch = tree.root.children
    assert (first.node_id, second.node_id) == (1, 2)
    assert branch.kind == "branch" and "role user" in branch.name
    assert ids(branch.children) == [3, 4]  # the continuation stays on the branch
    assert tree.by_id[3].parent is branch


def test_tree_counts_an_unknown_parent_as_an_orphan_instead_of_raising():
    tree = tree_of([
        NodeOpen(node_id=5, parent_id=99, base_id=0, kind="gen"),
        Token(node_id=5, id=1, bytes=b"a"),
        Token(node_id=77, id=1, bytes=b"b"),  # unknown node: ignored
        Capture(node_id=77, name="x", value="y"),
        NodeClose(node_id=77),
        NodeClose(node_id=5),
    ])
    assert tree.orphans == 1
    assert tree.by_id[5].root is tree.root
    assert tree.by_id[5].n_tokens == 1 and tree.by_id[5].close_seq == 5


def test_tree_nests_children_inside_a_program_node():
    tree = tree_of([
        NodeOpen(node_id=10, parent_id=0, base_id=0, kind="program", name="qa"),
        NodeOpen(node_id=11, parent_id=10, base_id=10, kind="gen", name="q"),
        Token(node_id=11, id=1, bytes=b"x"), Token(node_id=11, id=2, bytes=b"y"),
        Capture(node_id=11, name="q", value="xy"),
        NodeClose(node_id=11, stop_reason="eos"),
        NodeOpen(node_id=12, parent_id=10, base_id=11, kind="select", name="a"),
        NodeClose(node_id=12),
        NodeClose(node_id=10),
        NodeOpen(node_id=13, parent_id=0, base_id=10, kind="gen", name="after"),
    ])
    program = tree.by_id[10]
    assert ids(tree.root.children) == [10, 13]
    assert ids(program.children) == [11, 12]
    q = tree.by_id[11]
    assert q.n_tokens == 2 and [c.value for c in q.captures] == ["xy"] and q.stop_reason == "eos"
    assert tree.node_at_seq(3) is q  # the deepest node whose span holds the seq
    assert tree.node_at_seq(3, node_id=12) is tree.by_id[12]


def test_tree_fed_in_batches_equals_the_tree_built_at_once():
    events = TraceStore(synthetic_events(800, seed=5)).events()
    whole = TraceTree.from_events(events)
    parts = TraceTree()
    for i in range(0, len(events), 37):
        parts.feed(events[i:i + 37])
    assert parts.render() == whole.render()
    assert sum(n.n_tokens for n in whole.by_id.values()) == sum(isinstance(e, Token) for e in events)


# -- a store read from a file: blocks decoded on demand ------------------------------------------------
def loaded_store(tmp_path, events, chunks=(100, 3000, None)):
    """The replay's store of ``events`` written to a file: TraceLoader, in chunks."""
    from guidance_tui.state.loader import TraceLoader
    from tracing import write_trace

    path = tmp_path / "run.gtt"
    write_trace(path, events)
    loader = TraceLoader(path)
    for n in chunks:
        loader.load(n)
    assert loader.done.is_set() and loader.warning is None
    return loader.store


def stamped_events(n: int, seed: int) -> list:
    t = iter(range(0, 10**15, 1_000_000))
    store = TraceStore(clock=lambda: next(t))
    store.extend(synthetic_events(n, seed=seed, after_mask=True))
    return list(store.events())


def test_a_loaded_store_forgets_its_tokens_and_reads_them_back_the_same(tmp_path, monkeypatch):
    import gc

    import msgspec

    from tracing import decode_trace, encode_trace

    CACHE_BLOCKS = 8
    monkeypatch.setattr("tracing.store.CACHE_BLOCKS", CACHE_BLOCKS)

    def tokens_alive() -> int:
        gc.collect()
        return sum(1 for o in gc.get_objects() if type(o) is Token)

    events = stamped_events(25_000, seed=31)
    want = decode_trace(encode_trace(events)).events  # what a full read gives
    before = tokens_alive()  # these, and whatever earlier tests left behind
    store = loaded_store(tmp_path, events)
    assert len(store) == len(want) and store.last_seq == want[-1].seq
    for a in range(-1, len(store), 5000):  # a reader (the app's index) has had them: they may go
        store.since(a, 5000)
    alive = tokens_alive() - before
    assert alive <= (CACHE_BLOCKS + 1) * 512 < 25_000  # the rest are bytes of the file
    enc = msgspec.msgpack.encode
    rng = random.Random(32)
    for seq in rng.sample(range(len(store)), 150) + [0, len(store) - 1]:
        got = store[seq]
        assert got.seq == seq
        if type(got) is Token:
            assert store.alternatives(seq) == got.top  # unpacked onto the token the caller holds
            assert enc(store.after_mask(seq)) == enc(want[seq].after_mask())
        assert enc(got) == enc(want[seq]), seq
    assert store[-1] is store[len(store) - 1]
    for a in (-1, 5, 511, 512, 20_000):
        assert [e.seq for e in store.since(a, 1000)] == list(range(a + 1, min(len(store), a + 1001)))
    assert enc([msgspec.structs.replace(e, top=[], top_allowed=[]) if type(e) is Token else e
                for e in store.events()]) == enc([msgspec.structs.replace(e, top=[], top_allowed=[])
                                                  if type(e) is Token else e for e in want])
    for kind in (Token, Backtrack, NodeOpen, Metric):
        seqs = store.seqs_of(kind)
        assert seqs == [e.seq for e in want if type(e) is kind] and seqs != [0]
    assert store.token_counts() == TraceStore(want).token_counts()


def test_a_loaded_store_seeks_state_as_one_built_from_events(tmp_path):
    events = stamped_events(8000, seed=33)
    store = loaded_store(tmp_path, events)
    whole = TraceStore(events)
    for seq in probe_seqs(len(store), random.Random(34)):
        assert store.text_bytes(store.state_at(seq)) == whole.text_bytes(whole.state_at(seq))
        assert store.state_at(seq) == whole.state_at(seq)


def test_checkpoints_share_their_text_segments():
    """A run with thousands of backtracks: each checkpoint's text is a few references, not a copy of
    every segment (a million-token run held gigabytes so)."""
    store = TraceStore(synthetic_events(12_000, seed=35))
    store.state_at(store.last_seq)
    cps = store._checkpoints[1:]
    assert len(cps) > 20 and max(len(cp.segments) for cp in cps) > 50
    heads = {id(cp.head) for cp in cps}
    shared = set()
    for cp in cps:  # the chains of later checkpoints run through the nodes of earlier ones
        h = cp.head
        while h is not None:
            shared.add(id(h))
            h = h[2]
    assert len(shared) < sum(len(cp.segments) for cp in cps) / 4 and heads <= shared
