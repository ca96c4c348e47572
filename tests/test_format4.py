"""Trace format 4: after-mask alternatives (``Token.top_allowed``) and probability kinds in BLOCK frames.

Every reader path (read_trace, a follower that leaves alternatives packed) gets
the same tokens back; older formats still read, with LOCAL probabilities and
no after-mask list; the exporters keep both fields.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path

import msgspec
import pytest
from _trace_support import HEADER_SIZE, frames, payload, replace_frame

from tracing import (
    FORMAT_VERSION, Alt, NodeOpen, ProbKind, RunStart, Token, TokenKind, TraceStore, decode_trace, encode_trace,
)
from tracing.fileformat import BLOCK, FrameDecoder, FrameEncoder
from tracing.synthetic import synthetic_events

DATA = Path(__file__).resolve().parent / "data"
NAN = float("nan")


def f16(x: float) -> float:
    return struct.unpack("<e", struct.pack("<e", x))[0]


def stamped(events):
    store = TraceStore(clock=iter(range(0, 10**15, 1_000_000)).__next__)
    store.extend(events)
    return list(store.events())


def _tokens():
    """Tokens covering each way an after-mask list is stored."""
    a, b, c = Alt(1000, b" yes", 0.5, False), Alt(70_000, b"7", 0.3, True), Alt(9, b" no", 0.1, False)
    scale = 1 / 0.65
    prob, raw = 0.5 * scale, 0.5
    out = [
        # the unmasked top-k renormalised by the token's own ratio, then one more allowed token
        Token(id=1000, bytes=b" yes", node_id=1, pos=0, prob=prob, prob_raw=raw, top=[a, b, c],
              top_allowed=[Alt(1000, b" yes", 0.5 * scale, False), Alt(9, b" no", 0.1 * scale, False),
                           Alt(200_000, b" maybe", 0.02, False)]),
        # a renormalisation of its own: every probability stored
        Token(id=9, bytes=b" no", node_id=1, pos=4, prob=0.4, prob_raw=0.1, top=[a, b, c],
              top_allowed=[Alt(1000, b" yes", 0.55, False), Alt(9, b" no", 0.4, False)],
              prob_kind=ProbKind.AFTER_MASK),
        # NaN everywhere a probability can be
        Token(id=1000, bytes=b" yes", node_id=1, pos=7, prob=NAN, prob_raw=NAN, top=[a, b],
              top_allowed=[Alt(1000, b" yes", NAN, False), Alt(5, b"\xf0\x9f", NAN, False)],
              prob_kind=ProbKind.UNKNOWN),
        # the whole top-k masked: nothing shared with it
        Token(id=200_000, bytes=b" maybe", node_id=1, pos=11, prob=0.9, prob_raw=1e-8,
              top=[Alt(70_000, b"7", 0.6, True), Alt(70_001, b"8", 0.3, True)],
              top_allowed=[Alt(200_000, b" maybe", 0.9, False), Alt(1000, b" yes", 0.06, False)],
              prob_kind=ProbKind.AFTER_SAMPLING),
        # an after-mask list with no top-k (a server that gives only that)
        Token(id=9, bytes=b" no", node_id=1, pos=17, prob=0.7, top_allowed=[Alt(9, b" no", 0.7, False)],
              prob_kind=ProbKind.AFTER_MASK),
        # a long top-k: more shared entries than the column's 3 bits say (the rest stored)
        Token(id=101, bytes=b"b", node_id=1, pos=20, prob=0.2, prob_raw=0.1,
              top=[Alt(100 + i, bytes([97 + i]), 0.1 / (i + 1), i == 3) for i in range(1, 12)],
              top_allowed=[Alt(100 + i, bytes([97 + i]), 0.2 / (i + 1), False) for i in range(1, 12) if i != 3]),
        Token(id=16_777_300, bytes=b"wide", node_id=1, pos=21, prob=0.5, prob_raw=0.25,
              top=[Alt(16_777_300, b"wide", 0.25, False), Alt(103, b"d", 0.2, True)],
              top_allowed=[Alt(16_777_300, b"wide", 0.5, False)], prob_kind=ProbKind.BEFORE_MASK),
        Token(id=102, bytes=b"c", node_id=1, pos=25, kind=TokenKind.FORCED, prob=1.0, prob_raw=0.3),
    ]
    return out


def events():
    return stamped([RunStart(script="s.py"), NodeOpen(node_id=1, kind="select")] + _tokens())


def assert_same_token(got: Token, want: Token) -> None:
    assert (got.id, got.bytes, got.kind, got.prob_kind) == (want.id, want.bytes, want.kind, want.prob_kind)
    assert type(got.prob_kind) is ProbKind
    for x, y in ((got.prob, want.prob), (got.prob_raw, want.prob_raw)):
        assert (math.isnan(x) and math.isnan(y)) or x == struct.unpack("<f", struct.pack("<f", y))[0]
    assert [(a.id, a.bytes, a.masked) for a in got.top] == [(a.id, a.bytes, a.masked) for a in want.top]
    assert [(a.id, a.bytes, a.masked) for a in got.top_allowed] == [(a.id, a.bytes, False) for a in want.top_allowed]
    for a, b in zip(got.top_allowed, want.top_allowed):
        if math.isnan(b.prob):
            assert math.isnan(a.prob)
        else:  # f16 precision: half a unit in the last of 11 significant bits
            assert abs(a.prob - b.prob) <= abs(b.prob) * 2 ** -11 + 2 ** -25, (a, b)


def test_after_mask_lists_and_prob_kinds_round_trip():
    evs = events()
    data = encode_trace(evs)
    tf = decode_trace(data)
    assert tf.version == FORMAT_VERSION == 4 and not tf.skipped
    kinds = [type(p).__name__ for p in (payload(data, fr) for fr in frames(data))]
    assert kinds == ["list"] and payload(data, frames(data)[0])[0] == BLOCK  # one block holds them all
    got = [e for e in tf.events if isinstance(e, Token)]
    want = [e for e in evs if isinstance(e, Token)]
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert_same_token(g, w)
    # the first token's shared entries were derived from its top-k: exactly the top-k's f16 times the ratio
    first = got[0]
    assert first.top_allowed[1].prob == f16(0.1) * (first.prob / first.prob_raw)


def test_a_follower_unpacks_both_lists_on_demand():
    evs = events()
    data = encode_trace(evs)
    full = decode_trace(data).events
    dec = FrameDecoder(alternatives=False)
    got, dropped, _ = dec.decode_frames(data, HEADER_SIZE, "x")
    assert dropped == 0
    store = TraceStore()
    store.extend_recorded(got, dec.take_packed())
    for a, b in zip(full, got):
        if isinstance(a, Token):
            assert b.prob_kind == a.prob_kind  # never packed
            enc = msgspec.msgpack.encode  # NaN == NaN as bytes
            assert enc(store.after_mask(b.seq)) == enc(a.after_mask())
            assert enc(store.alternatives(b.seq)) == enc(a.top) and enc(b.top_allowed) == enc(a.top_allowed)


def test_synthetic_runs_read_the_same_in_both_paths():
    evs = stamped(list(synthetic_events(3000, seed=5, after_mask=True)))
    assert sum(1 for e in evs if isinstance(e, Token) and e.top_allowed) > 500
    data = encode_trace(evs)
    full = decode_trace(data).events
    dec = FrameDecoder(alternatives=False)
    got, _, _ = dec.decode_frames(data, HEADER_SIZE, "x")
    store = TraceStore()
    store.extend_recorded(got, dec.take_packed())
    for orig, a, b in zip(evs, full, got):
        if isinstance(orig, Token):
            assert_same_token(a, orig)
            store.alternatives(b.seq)
            assert msgspec.msgpack.encode(a) == msgspec.msgpack.encode(b)


def test_an_after_mask_alternative_marked_masked_goes_in_an_event_frame_exactly():
    odd = Token(id=5, bytes=b"x", node_id=1, pos=0, top=[Alt(5, b"x", 0.5, False), Alt(6, b"y", 0.5, True)],
                top_allowed=[Alt(5, b"x", 0.9, True)])
    evs = stamped([NodeOpen(node_id=1), odd, Token(id=6, bytes=b"y", node_id=1, pos=1)])
    tf = decode_trace(encode_trace(evs))
    assert not tf.skipped
    assert tf.events[1].top_allowed == [Alt(5, b"x", 0.9, True)]
    assert tf.events[2].bytes == b"y"


def test_format_3_files_still_read_with_local_probabilities_and_no_after_mask_list():
    old = (DATA / "format3_forced_and_backtrack.gtt").read_bytes()
    tf = decode_trace(old)
    assert tf.version == 3 and not tf.skipped
    toks = [e for e in tf.events if isinstance(e, Token)]
    assert toks and all(t.prob_kind is ProbKind.LOCAL and t.top_allowed == [] for t in toks)
    dec = FrameDecoder(alternatives=False, version=3)
    got, _, _ = dec.decode_frames(old, HEADER_SIZE, "x")
    store = TraceStore()
    store.extend_recorded(got, dec.take_packed())
    for a, b in zip(tf.events, got):
        if isinstance(a, Token):
            assert store.alternatives(b.seq) == a.top and b.top_allowed == [] and b.prob_kind is ProbKind.LOCAL
            assert msgspec.msgpack.encode(store.after_mask(b.seq)) == msgspec.msgpack.encode(a.after_mask())
    # re-encoded as format 4, the same events (and smaller: three-byte ids)
    again = encode_trace(tf.events)
    enc = msgspec.msgpack.encode
    assert enc(decode_trace(again).events) == enc(tf.events) and len(again) < len(old)


def test_format_3_writer_has_no_place_for_the_new_fields():
    evs = events()
    enc = FrameEncoder(version=3)
    tf = decode_trace(enc.header() + enc.encode_batch(evs))
    assert tf.version == 3
    toks = [e for e in tf.events if isinstance(e, Token)]
    assert all(t.top_allowed == [] and t.prob_kind is ProbKind.LOCAL for t in toks)


@pytest.mark.parametrize("damage", ["counts", "kind"])
def test_a_block_with_bad_after_mask_columns_is_skipped_with_its_offset(damage):
    evs = events()
    enc = FrameEncoder()
    data = enc.header() + enc.encode_batch(evs[:2]) + enc.encode_batch(evs[2:5]) + enc.encode_batch(evs[5:])
    fr = frames(data)[1]
    obj = payload(data, fr)
    if damage == "counts":
        obj[12] += 1  # one more after-mask id than the tokens say
        obj[4] += b"\0\0\0"
    else:  # a token kind with a probability kind past the last
        codes = obj[3]
        at = struct.calcsize("<" + (f"{obj[1]}H{obj[1]}B" if codes[0] == "T" else f"{obj[1]}{codes[0]}"))
        for c in codes[1:7]:
            at += struct.calcsize(f"<3{c}") if c != "T" else 9
        blob = bytearray(obj[4])
        blob[at] = 3 | 7 << 2
        obj[4] = bytes(blob)
    bad = replace_frame(data, fr, obj)
    tf = decode_trace(bad, "bad.gtt")
    (skip,) = tf.skipped
    assert skip.offset == fr.start and skip.lost == 3
    assert ("after-mask counts" if damage == "counts" else "token kind") in str(skip)
    assert len([e for e in tf.events if isinstance(e, Token)]) == len(_tokens()) - 3


def test_exports_keep_the_after_mask_list_and_the_probability_kind():
    from guidance_tui.export import otlp
    from guidance_tui.export.runfacts import collect

    tf = decode_trace(encode_trace(events()))
    trace = otlp.build_trace(collect(tf.events), content=True, fallback_wall_time=0)
    token_events = [ev for span in trace.spans for ev in span.events if ev.name == "guidance_tui.token"]
    attrs = [dict(ev.attributes) for ev in token_events]
    assert attrs[0]["guidance_tui.token.top_allowed.ids"] == [1000, 9, 200_000]
    assert attrs[0]["guidance_tui.token.top_allowed.texts"] == [" yes", " no", " maybe"]
    assert "guidance_tui.token.prob_kind" not in attrs[0]
    assert attrs[1]["guidance_tui.token.prob_kind"] == "after_mask"
    assert "guidance_tui.token.top_allowed.probs" not in attrs[2]  # NaN: left out, as for the top-k
