"""The inspector's pure logic: token index, layout and timeline cursor (no Textual)."""

from __future__ import annotations

import math

from _app_support import small_store, synthetic_store

from guidance_tui.state.cursor import Cursor
from guidance_tui.state.layout import TokenLayout
from guidance_tui.state.stats import stats_at
from guidance_tui.state.token_index import TokenIndex
from guidance_tui.state.token_text import BYTES, glyphs
from tracing import Backtrack, Token, TraceStore
from tracing.synthetic import synthetic_events


def indexed(store):
    idx = TokenIndex(store)
    idx.ingest()
    cur = Cursor(idx)
    cur.grow(idx.last_seq)
    return idx, cur


def test_live_tokens_minus_backtracked_ones_are_the_store_text():
    store = synthetic_store(3000)
    idx, _ = indexed(store)
    live = b"".join(idx.token(i).bytes for i in range(idx.n) if i not in idx.removed_at)
    assert live == store.text_bytes(store.state_at(store.last_seq))
    assert len(idx.backtracks) == len(store.seqs_of(Backtrack))


def test_ingesting_in_batches_equals_ingesting_at_once():
    events = list(synthetic_events(2000))
    whole = TraceStore(events)
    idx_whole = TokenIndex(whole)
    idx_whole.ingest()
    live = TraceStore()
    idx_live = TokenIndex(live)
    for i, ev in enumerate(events):
        live.append(ev, stamp=False)
        if i % 97 == 0:
            idx_live.ingest()
    idx_live.ingest()
    assert idx_live.seqs == idx_whole.seqs
    assert idx_live.removed_at == idx_whole.removed_at
    assert idx_live.cum_width == idx_whole.cum_width
    assert idx_live.special == idx_whole.special
    assert idx_live.labels == idx_whole.labels


def test_a_backtrack_records_the_removed_tokens_and_their_replacement():
    idx, _ = indexed(small_store())
    (bt,) = idx.backtracks
    assert [idx.token(t).bytes for t in bt.removed] == [b" is"]
    assert bt.reason == "grammar"
    assert [idx.token(t).bytes for t in idx.replacement(bt)] == [b"."]


def test_role_label_goes_on_the_first_token_of_the_role():
    idx, _ = indexed(small_store())
    assert idx.labels == {0: "user"}


def test_step_moves_one_token_at_a_time_and_stops_following():
    idx, cur = indexed(small_store())
    assert cur.following and cur.at_end
    cur.step(-1)
    assert not cur.following
    assert cur.seq == idx.seqs[idx.n - 1]
    cur.step(-1)
    assert cur.seq == idx.seqs[idx.n - 2]
    cur.step(1)
    assert cur.seq == idx.seqs[idx.n - 1]
    cur.step(1)  # past the last token: the end of the run
    assert cur.seq == cur.end_seq and not cur.following
    cur.end()
    assert cur.following


def test_step_back_from_a_backtrack_lands_on_the_token_before_it():
    idx, cur = indexed(small_store())
    cur.home()
    assert cur.next_backtrack()
    bt_seq = idx.bt_seqs[0]
    assert cur.seq == bt_seq
    cur.step(-1)
    assert cur.seq == idx.seqs[idx.token_at(bt_seq)]


def test_jumps_to_backtracks_and_low_probability_tokens():
    idx, cur = indexed(small_store())
    cur.home()
    assert cur.next_backtrack() and cur.seq == idx.bt_seqs[0]
    assert not cur.next_backtrack()
    assert not cur.prev_backtrack()
    cur.home()
    assert cur.next_low_prob(0.1)
    assert idx.token(idx.token_at(cur.seq)).bytes == b" is"


def test_home_and_end():
    idx, cur = indexed(small_store())
    cur.home()
    assert cur.seq == idx.seqs[0]
    cur.end()
    assert cur.seq == cur.end_seq


def test_following_cursor_tracks_growth_until_scrubbed():
    store = TraceStore()
    idx = TokenIndex(store)
    cur = Cursor(idx)
    events = list(synthetic_events(300))
    for ev in events[:100]:
        store.append(ev)
    cur.grow(idx.ingest().last_seq)
    assert cur.seq == store.last_seq
    cur.step(-3)
    held = cur.seq
    for ev in events[100:]:
        store.append(ev)
    cur.grow(idx.ingest().last_seq)
    assert cur.seq == held and cur.end_seq == store.last_seq


def test_playback_advances_at_recorded_pace_times_speed():
    idx, cur = indexed(small_store())
    cur.home()
    cur.toggle_play(now=100.0)
    start = cur.seq
    assert not cur.tick(now=100.0)
    cur.tick(now=100.0 + 0.021)  # a bit more than one token's latency
    assert cur.seq > start
    cur.speed = 1000.0
    cur.tick(now=200.0)
    assert cur.seq == cur.end_seq and not cur.playing


def test_layout_wraps_at_token_boundaries_and_newlines():
    store = TraceStore()
    pos = 0
    for text in ["hello", " world", " this", " is", "\n", "a", " test", " of", " wrapping"]:
        store.append(Token(pos=pos, id=1, bytes=text.encode()))
        pos += len(text)
    idx = TokenIndex(store)
    idx.ingest()
    lay = TokenLayout(idx, width=12)
    lay.extend()
    lines = []
    for y in range(lay.line_count()):
        t0, u0, t1, u1 = lay.line_span(y)
        lines.append("".join(glyphs(idx.token(t).bytes).plain for t in range(t0, t1 + (1 if u1 else 0))))
    assert lines == ["hello world", " this is ", "a test of", " wrapping"]


def test_layout_splits_a_token_wider_than_the_line():
    store = TraceStore()
    store.append(Token(pos=0, id=1, bytes=b"x" * 25))
    idx = TokenIndex(store)
    idx.ingest()
    lay = TokenLayout(idx, width=10)
    lay.extend()
    assert lay.line_count() == 3
    assert [lay.line_span(y)[1] for y in range(3)] == [0, 10, 20]


def test_layout_built_incrementally_matches_a_fresh_one():
    events = list(synthetic_events(1500))
    store = TraceStore()
    idx = TokenIndex(store)
    lay = TokenLayout(idx, width=37)
    for i, ev in enumerate(events):
        store.append(ev, stamp=False)
        if i % 53 == 0:
            idx.ingest()
            lay.extend()
    idx.ingest()
    lay.extend()
    fresh = TokenLayout(idx, width=37)
    fresh.extend()
    assert list(lay.line_tok) == list(fresh.line_tok)
    assert list(lay.line_off) == list(fresh.line_off)


def test_hidden_tokens_take_no_space_and_truncation_relayouts():
    idx, _ = indexed(synthetic_store(1500))
    lay = TokenLayout(idx, width=40)
    lay.extend()
    shown = lay.line_count()
    hidden = idx.hidden_upto(idx.last_seq)
    lay.hidden = hidden
    lay.truncate_from(hidden[0])
    lay.extend()
    fresh = TokenLayout(idx, width=40)
    fresh.reset(hidden=hidden)
    fresh.extend()
    assert list(lay.line_tok) == list(fresh.line_tok)
    assert fresh.line_count() <= shown


def test_partial_utf8_shows_as_bytes_and_whitespace_as_glyphs():
    g = glyphs("😀".encode()[:2])
    assert g.plain == "<0xF0><0x9F>" and all(k == BYTES for k in g.kinds)
    g = glyphs(b" a\tb\n")
    assert g.visible == "·a→b⏎" and g.plain == " a b "
    assert glyphs("é".encode()).plain == "é"
    assert glyphs(b"\x1b").plain == "\u241b"  # never an escape sequence on screen


def test_stats_at_the_cursor():
    idx, cur = indexed(small_store())
    s = stats_at(idx, cur.end_seq)
    assert s.status == "done"
    assert (s.tokens, s.prompt, s.generated, s.forced, s.backtracks) == (10, 6, 3, 1, 1)
    assert s.forced_pct == 25.0
    assert s.mean_latency_us == 20_000
    assert s.ttft_s is not None and s.tok_per_s is not None and s.tok_per_s > 0
    early = stats_at(idx, idx.seqs[2])
    assert early.status == "done" and early.tokens == 3 and early.forced_pct is None  # the run's, not the cursor's
    assert math.isclose(stats_at(idx, -1).tokens, 0)


def test_a_token_with_only_a_before_mask_probability_is_coloured_by_it():
    from tracing import NodeOpen, ProbKind, RunStart

    nan = float("nan")
    store = TraceStore([RunStart(), NodeOpen(node_id=1, kind="gen"),
                        Token(-1, b"a", node_id=1, pos=0, prob=nan, prob_raw=0.25, prob_kind=ProbKind.BEFORE_MASK),
                        Token(-1, b"b", node_id=1, pos=1, prob=nan, prob_raw=0.5),  # local: NaN means unknown
                        Token(-1, b"c", node_id=1, pos=2, prob=0.75, prob_raw=0.5, prob_kind=ProbKind.BEFORE_MASK)])
    idx, _ = indexed(store)
    assert idx.prob[0] == 0.25 and math.isnan(idx.prob[1]) and idx.prob[2] == 0.75
