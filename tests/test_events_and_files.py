"""Trace events and trace files: round trips, NaN, truncation, corruption, the writer."""

from __future__ import annotations

import math
import struct
import time
from itertools import accumulate
from pathlib import Path

import msgspec
import pytest
from _trace_support import frames as _frames
from _trace_support import payload as _payload

from tracing import (
    FORMAT_VERSION, Alt, Backtrack, Capture, GpuSample, Message, Metric, NodeClose, NodeOpen, RunEnd, RunStart,
    Token, TokenKind, TraceFormatError, TraceStore, TraceWriter, decode_trace, display_text, encode_trace,
    read_trace, write_trace,
)
from tracing.fileformat import FrameDecoder, FrameEncoder
from tracing.synthetic import synthetic_events

NAN = float("nan")
HEADER_SIZE = 10  # magic (8) + version (u16)
VOCAB_TAG, BLOCK_TAG = 0, 3


def fake_clock(step_us: int = 1234):
    t = iter(range(0, 10**15, step_us * 1000))
    return lambda: next(t)


def stamped(events) -> list:
    """Events as a live store numbers and stamps them (a deterministic clock)."""
    store = TraceStore(clock=fake_clock())
    store.extend(events)
    return list(store.events())


def nan_events() -> list:
    """A small hand-made run with NaN in every float that may be unknown."""
    return [
        RunStart(script="nan.py", argv=["nan.py", "--x"], model="m", backend="b", info={"k": "v"},
                 wall_time=1700000000.25),
        NodeOpen(node_id=1, kind="gen", name="answer", grammar="start: /[a-z]+/ " + "x" * 300),
        Token(node_id=1, pos=0, id=5, bytes=b"Hi", kind=TokenKind.PROMPT),
        Token(node_id=1, pos=2, id=7, bytes=b" there", prob=NAN, prob_raw=NAN,
              top=[Alt(7, b" there", NAN, False), Alt(9, b" you", 0.25, True), Alt(300_000, b"\xf0\x9f", NAN, True)],
              latency_us=21_000, mask_us=300, allowed=17),
        Token(node_id=1, pos=8, id=11, bytes=b"!", kind=TokenKind.FORCED, prob=0.5, prob_raw=NAN, allowed=1),
        Token(node_id=1, pos=9, id=70_000_000, bytes=b"\xe2\x82", prob=0.125, prob_raw=0.0625,
              top=[Alt(3, b"a", 0.5, False), Alt(70_000_000, b"\xe2\x82", 0.125, False)]),
        Backtrack(node_id=1, n_tokens=2, bytes=b"!\xe2\x82", reason="grammar"),
        Backtrack(node_id=1, n_tokens=1, bytes=b" there", pos=2, reason="tool"),
        Token(node_id=1, pos=2, id=7, bytes=b" there", prob=0.5, prob_raw=0.5),
        Capture(node_id=1, name="answer", value="Hi there", log_prob=NAN),
        Capture(node_id=1, name="items", value="x", log_prob=-1.5, append=True),
        Metric(cpu=12.5, ram_used=1 << 30, ram_total=8 << 30, proc_rss=300 << 20,
               gpus=[GpuSample(0, 50.0, 1 << 30, 80 << 30, NAN)]),
        Message(level="warning", text="a warning"),
        NodeClose(node_id=1, stop_reason="grammar"),
        RunEnd(status="error", error="ValueError: boom", traceback="Traceback...\n  line 1",
               prompt_tokens=1, generated_tokens=2, forced_tokens=1),
    ]


def frames(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of every complete frame, parsed independently of tracing.fileformat."""
    return [(f.start, f.end) for f in _frames(data)]


def payload(data: bytes, frame: tuple[int, int]) -> list:
    return next(_payload(data, f) for f in _frames(data) if f.start == frame[0])


def frame_events(frame: list) -> int:
    return frame[1] if frame[0] == BLOCK_TAG else 0 if frame[0] == VOCAB_TAG else 1


def vocab_entries(data: bytes) -> int:
    """Token byte strings the file introduces: in blocks (formats 2, 3) or VOCAB frames (format 1)."""
    frames_ = [payload(data, f) for f in frames(data)]
    return sum(len(f[5]) if f[0] == BLOCK_TAG else f[0] == VOCAB_TAG for f in frames_)


def f32(x: float) -> float:
    return struct.unpack("<f", struct.pack("<f", x))[0]


def same_float(a: float, b: float, rel: float, abs_tol: float = 0.0) -> bool:
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=rel, abs_tol=abs_tol)


def assert_same_event(a, b) -> None:
    """Field by field; token probabilities are float32 in the file and alternatives float16."""
    assert type(a) is type(b)
    for name in a.__struct_fields__:
        x, y = getattr(a, name), getattr(b, name)
        if isinstance(a, Token) and name in ("prob", "prob_raw"):
            assert same_float(x, y, 2**-24, 1e-45), (name, x, y)
        elif isinstance(a, Token) and name == "top":
            assert len(x) == len(y)
            for p, q in zip(x, y):
                assert (p.id, p.bytes, p.masked) == (q.id, q.bytes, q.masked)
                # float16: 11 significant bits, steps of 2**-24 below 2**-14 (subnormals)
                assert same_float(p.prob, q.prob, 2**-11, 2**-25), (p, q)
        elif name == "gpus":
            assert len(x) == len(y)
            for p, q in zip(x, y):
                assert (p.index, p.util, p.mem_used, p.mem_total) == (q.index, q.util, q.mem_used, q.mem_total)
                assert same_float(p.power_w, q.power_w, 0)
        elif isinstance(x, float):
            assert same_float(x, y, 0), (name, x, y)
        else:
            assert x == y, (type(a).__name__, name, x, y)


def assert_same_events(got, want) -> None:
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert_same_event(b, a)


# -- round trips ---------------------------------------------------------------
@pytest.mark.parametrize("source", ["synthetic", "hand-made NaN"])
def test_file_to_store_to_file_is_byte_identical(source):
    events = stamped(synthetic_events(2000, seed=3) if source == "synthetic" else nan_events())
    data = encode_trace(events)
    store = TraceStore(decode_trace(data).events)
    assert encode_trace(store.events()) == data


def test_nan_probabilities_survive_the_file():
    events = decode_trace(encode_trace(stamped(nan_events()))).events
    tokens = [e for e in events if isinstance(e, Token)]
    assert math.isnan(tokens[1].prob) and math.isnan(tokens[1].prob_raw)
    assert math.isnan(tokens[1].top[0].prob) and math.isnan(tokens[1].top[2].prob)
    assert tokens[1].top[1].prob == 0.25
    assert math.isnan(tokens[2].prob_raw) and tokens[2].prob == 0.5
    captures = [e for e in events if isinstance(e, Capture)]
    assert math.isnan(captures[0].log_prob) and captures[1].log_prob == -1.5
    metric = next(e for e in events if isinstance(e, Metric))
    assert math.isnan(metric.gpus[0].power_w)


@pytest.mark.parametrize("source", ["synthetic", "hand-made NaN"])
def test_live_store_to_file_to_store_keeps_every_field(source, tmp_path):
    live = TraceStore(clock=fake_clock())
    live.extend(synthetic_events(1500, seed=5, gpus=2) if source == "synthetic" else nan_events())
    path = tmp_path / "run.gtt"
    write_trace(path, live.events())
    replay = TraceStore(read_trace(path).events)
    assert len(replay) == len(live)
    for a, b in zip(live.events(), replay.events()):
        assert_same_event(a, b)
    assert replay.text_bytes(replay.state_at(replay.last_seq)) == live.text_bytes(live.state_at(live.last_seq))


def test_token_probabilities_are_stored_as_float32_exactly():
    tok = Token(id=1, bytes=b"a", prob=0.1, prob_raw=1 / 3, top=[Alt(1, b"a", 0.1, False)])
    back = decode_trace(encode_trace(stamped([tok]))).events[0]
    assert back.prob == f32(0.1) and back.prob_raw == f32(1 / 3)


def test_unstamped_events_keep_their_unknown_time():
    events = decode_trace(encode_trace([Message(text="a"), Message(text="b")])).events
    assert [(e.seq, e.t_us) for e in events] == [(0, -1), (1, -1)]


# -- truncation --------------------------------------------------------------------
def test_truncated_file_recovers_every_complete_frame_at_every_cut_point():
    events = stamped(nan_events() + list(synthetic_events(25, seed=1)))
    data = encode_trace(events)
    bounds = frames(data)
    assert bounds[-1][1] == len(data)
    assert any(data[s] & 0x80 for s, _ in bounds), "want a frame whose length takes two bytes"
    # events in each frame: a TOKENS block holds n, a vocabulary frame (format 1) none
    counts = [frame_events(payload(data, f)) for f in bounds]
    assert max(counts) > 1, "want a block of several tokens"
    full = [msgspec.msgpack.encode(e) for e in decode_trace(data).events]
    for cut in range(HEADER_SIZE, len(data) + 1):
        tf = decode_trace(data[:cut])
        complete = [i for i, (_, end) in enumerate(bounds) if end <= cut]
        last_end = bounds[complete[-1]][1] if complete else HEADER_SIZE
        assert tf.dropped_bytes == cut - last_end, cut
        n_events = sum(counts[i] for i in complete)
        assert [msgspec.msgpack.encode(e) for e in tf.events] == full[:n_events], cut


def test_truncated_file_on_disk_is_read_with_dropped_bytes(tmp_path):
    data = encode_trace(stamped(synthetic_events(1500, seed=2)))
    path = tmp_path / "cut.gtt"
    path.write_bytes(data[: len(data) - 3])
    tf = read_trace(path)
    assert tf.dropped_bytes > 0
    last = frame_events(payload(data, frames(data)[-1]))
    assert 0 < last < len(tf.events)
    assert len(tf.events) == len(decode_trace(data).events) - last


# -- bad input ---------------------------------------------------------------------
def one_line_error(exc_info) -> str:
    msg = str(exc_info.value)
    assert msg and "\n" not in msg
    return msg


def test_garbage_inside_a_frame_skips_that_frame_with_a_one_line_warning():
    events = stamped(synthetic_events(2000, seed=4))
    data = bytearray(encode_trace(events))
    bounds = frames(bytes(data))
    start, end = bounds[len(bounds) // 2]
    lost = frame_events(payload(bytes(data), (start, end)))
    data[end - 40:end] = b"\xc1" * 40  # 0xc1 is never valid msgpack
    tf = decode_trace(bytes(data), "x.gtt")
    assert [(d.offset, d.resumed, d.lost) for d in tf.skipped] == [(start, end, lost)]
    assert len(tf.events) == len(events) - lost
    msg = one_line(tf.skipped[0])
    assert msg.startswith(f"x.gtt: damaged frame at byte {start} (a checksum mismatch)")
    assert f"{lost} events lost" in msg
    assert tf.warning.startswith(msg)  # and how many later tokens lost their bytes with it


def test_garbage_between_frames_is_skipped_up_to_the_next_intact_frame():
    events = stamped(synthetic_events(2000, seed=4))
    data = encode_trace(events)
    assert len(frames(data)) >= 3
    cut = frames(data)[len(frames(data)) // 2][0]
    tf = decode_trace(data[:cut] + b"\xff" * 16 + data[cut:], "x.gtt")
    assert [(d.offset, d.resumed, d.lost) for d in tf.skipped] == [(cut, cut + 16, 0)]
    assert "corrupt frame length" in one_line(tf.skipped[0])
    assert_same_events(tf.events, events)


def one_line(err: Exception) -> str:
    msg = str(err)
    assert msg and "\n" not in msg
    return msg


_MSG = msgspec.msgpack.encode(Message(text="x"))
BAD_FRAMES = [  # each as format 3 writes its frames: [..., seq, t_us, pos] after a block's fields
    [7, 0],  # unknown frame tag
    [1, 0, 1, 0, 0, 0, b"\x01\x00\x63\x00\x00\x00\x00\x00" + b"\x00" * 8],  # a format-1 token frame
    [0, 5, b"a"],  # a format-1 vocabulary frame
    [2, 0, b"\x81\xa4type\xa4nope", 1],  # event of an unknown type
    [2, 0, _MSG],  # an event frame of format 2
    [3, 1, 0, "B" * 10, b"\x00" * 10, [], [], [], [], 1, 0, 0],  # block: a token of an id never introduced
    [3, 1, 0, "B" * 10, b"\x00" * 9, [0], [b"a"], [], [], 1, 0, 0],  # block columns cut short
    [3, 1, 2, "B" * 10, b"\x00" * 10, [0], [b"a"], [], [], 1, 0, 0],  # block: alternatives that no token counts
    [3, 1, 0, "B" * 9 + "Z", b"\x00" * 10, [0], [b"a"], [], [], 1, 0, 0],  # block: not a column type
    [3, 1, 0, "B" * 9 + "p", b"\x00" * 10, [0], [b"a"], [], [], 1, 0, 0],  # block: a code no writer writes
    [3, 1, 0, "B" * 9 + "L", b"\x00" * 10, [0], [b"a"], [], [], 1, 0, 0],  # block: another
    [3, 1, 0, "B" * 8, b"\x00" * 10, [0], [b"a"], [], [], 1, 0, 0],  # block: too few column types
    [3, 1, 0, "B" * 10, b"\x00" * 8 + b"\x09\x00", [0], [b"a"], [], [], 1, 0, 0],  # block: token kind 9
    [3, 1, 0, "B" * 10, b"\x00\x07" + b"\x00" * 8, [0], [b"a"], [], [], 1, 0, 0],  # a token of node 7, never opened
    [3, 0, 0, "B" * 10, b"", [], [], [], [], 1, 0, 0],  # block of no events
    [3, 1, 0, "B" * 10, b"\x00", [], [], [1], [_MSG], 1, 0, 0],  # block: index past its end
    [3, 2, 0, "B" * 10, b"\x00" * 2, [], [], [1, 1], [_MSG] * 2, 1, 0, 0],  # block: index twice
    [3, 1, 0, "B" * 10, b"\x00", [], [], [0], [b"\x81\xa4type\xa4nope"], 1, 0, 0],  # block: an unknown event
    [3, 1, 0, "B" * 10, b"\x00", [], [], [0], [_MSG], 0, 0, 0],  # block: a seq already read
    [3, 1, 0, "B" * 10, b"\x00", [], [], [0], [_MSG]],  # a block of format 2
    [3, 1, 0, "B" * 10, b"\x00", [], [], [0], [_MSG], 1, 0.5, 0],  # block: a time that is not an integer
    {"not": "a frame"},
    42,
]


@pytest.mark.parametrize("frame", BAD_FRAMES)
def test_well_formed_msgpack_that_is_not_a_valid_frame_is_skipped_with_a_one_line_warning(frame):
    from _trace_support import frame_bytes

    good = encode_trace(stamped([Message(text="ok")]))
    after = FrameEncoder()
    after.encode(Message(text="first"))  # seq 0 is the "ok" above
    tail = after.encode(Message(text="after"))
    data = good + frame_bytes(3, msgspec.msgpack.encode(frame)) + tail
    tf = decode_trace(data, "x.gtt")
    assert [e.text for e in tf.events] == ["ok", "after"]
    assert [(d.offset, d.lost) for d in tf.skipped] == [(len(good), 0)]
    assert one_line(tf.skipped[0]).startswith(f"x.gtt: damaged frame at byte {len(good)} (")


_FORMAT_3_ONLY = (BAD_FRAMES[18], BAD_FRAMES[20])  # bad only in what format 3 adds to a block


@pytest.mark.parametrize("frame", [f for f in BAD_FRAMES if isinstance(f, list) and f[0] in (2, 3)
                                   and len(f) not in (3, 9) and not any(f is g for g in _FORMAT_3_ONLY)])
def test_a_format_2_file_stops_at_a_frame_that_is_not_valid(frame):
    from _trace_support import frame_bytes

    frame = frame[:9] if frame[0] == 3 else frame[:3]  # the same frame as format 2 wrote it
    enc = FrameEncoder(version=2)
    good = enc.header() + enc.encode(Message(text="ok"))
    data = good + frame_bytes(2, msgspec.msgpack.encode(frame)) + enc.encode(Message(text="after"))
    tf = decode_trace(data, "x.gtt")
    assert [e.text for e in tf.events] == ["ok"]
    assert [(d.offset, d.resumed, d.lost) for d in tf.skipped] == [(len(good), None, None)]
    assert one_line(tf.skipped[0]).endswith("the rest of the file cannot be read")


def test_foreign_file_is_a_one_line_format_error(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello, this is not a trace\n" * 10)
    with pytest.raises(TraceFormatError) as e:
        read_trace(path)
    assert "not a guidance-tui trace file" in one_line_error(e)


def test_empty_file_is_a_one_line_format_error(tmp_path):
    path = tmp_path / "empty.gtt"
    path.write_bytes(b"")
    with pytest.raises(TraceFormatError) as e:
        read_trace(path)
    assert str(path) in one_line_error(e)


def test_file_of_a_newer_format_version_is_refused_with_the_versions():
    data = bytearray(encode_trace(stamped(nan_events())))
    struct.pack_into("<H", data, 8, FORMAT_VERSION + 1)
    with pytest.raises(TraceFormatError) as e:
        decode_trace(bytes(data), "new.gtt")
    msg = one_line_error(e)
    assert "newer" in msg and str(FORMAT_VERSION + 1) in msg


def test_directory_path_is_a_one_line_format_error(tmp_path):
    with pytest.raises(TraceFormatError) as e:
        read_trace(tmp_path)
    assert "is a directory" in one_line_error(e)


def test_missing_file_is_a_one_line_format_error(tmp_path):
    with pytest.raises(TraceFormatError) as e:
        read_trace(tmp_path / "nope.gtt")
    assert "no such file" in one_line_error(e)


def test_formats_2_3_and_4_of_the_same_events_read_the_same():
    events = stamped(nan_events() + list(synthetic_events(1500, seed=3)))
    v2, v3, v4 = encode_trace(events, version=2), encode_trace(events, version=3), encode_trace(events)
    assert [decode_trace(d).version for d in (v2, v3, v4)] == [2, 3, FORMAT_VERSION] == [2, 3, 4]
    for data in (v2, v3, v4):
        assert_same_events(decode_trace(data).events, events)
    overhead = len(v3) - len(v2)
    assert 0 < overhead < 20 * len(frames(v3))  # a checksum, a seq, a time and a position per frame
    assert len(v4) < len(v3)  # three-byte ids: more than the after-mask columns cost


def test_a_file_of_format_0_is_refused():
    data = bytearray(encode_trace(stamped(nan_events())))
    struct.pack_into("<H", data, 8, 0)
    with pytest.raises(TraceFormatError) as e:
        decode_trace(bytes(data), "zero.gtt")
    assert "format 0" in one_line_error(e)


def test_header_only_file_is_an_empty_trace():
    tf = decode_trace(encode_trace([]))
    assert tf.events == [] and tf.dropped_bytes == 0 and tf.version == FORMAT_VERSION


# -- the writer ----------------------------------------------------------------------
def test_trace_writer_file_grows_and_is_readable_before_close(tmp_path):
    path = tmp_path / "live.gtt"
    store = TraceStore()
    events = list(synthetic_events(400, seed=6))
    writer = TraceWriter(path, store, interval=3600)  # only explicit drains in this test
    try:
        assert read_trace(path).events == []
        store.extend(events[:200])
        writer.drain()
        size1 = path.stat().st_size
        assert len(read_trace(path).events) == 200
        store.extend(events[200:])
        writer.drain()
        assert path.stat().st_size > size1
        assert len(read_trace(path).events) == len(events)
        assert writer.written_seq == store.last_seq
    finally:
        writer.close()
    assert_same_events(read_trace(path).events, store.events())  # block boundaries follow the writes


def test_trace_writer_thread_flushes_while_a_producer_appends(tmp_path):
    path = tmp_path / "live.gtt"
    store = TraceStore()
    events = list(synthetic_events(3000, seed=7))
    with TraceWriter(path, store, interval=0.005) as writer:
        for i, ev in enumerate(events):
            store.append(ev)
            if i == len(events) // 2:
                deadline = time.monotonic() + 20
                while writer.written_seq < 0 and time.monotonic() < deadline:
                    time.sleep(0.005)
                assert writer.written_seq >= 0, "the background thread never wrote"
                assert 0 < len(read_trace(path).events) <= len(store)
    assert writer.error is None
    assert_same_events(read_trace(path).events, store.events())  # block boundaries follow the writes


def test_trace_writer_drains_a_backlog_in_flushed_chunks_and_reports_each(tmp_path):
    from tracing.fileformat import WRITE_CHUNK

    path = tmp_path / "chunks.gtt"
    store = TraceStore()
    store.extend(list(synthetic_events(2 * WRITE_CHUNK, seed=8)))
    seen: list[tuple[int, int]] = []  # (chunk size, events readable from the file at that moment)
    writer = TraceWriter(path, store, interval=3600,
                         on_written=lambda n: seen.append((n, len(read_trace(path).events))))
    writer.close()
    assert sum(n for n, _ in seen) == len(store)
    assert [n for n, _ in seen[:-1]] == [WRITE_CHUNK] * (len(store) // WRITE_CHUNK) and len(seen) >= 3
    assert [readable for _, readable in seen] == list(accumulate(n for n, _ in seen))  # flushed as it goes
    assert_same_events(read_trace(path).events, store.events())  # block boundaries follow the writes


def test_a_format_1_file_is_still_read():
    """tests/data/format1.gtt was written by format 1 (a frame per token) from these events."""
    tf = read_trace(Path(__file__).parent / "data" / "format1.gtt")
    assert tf.version == 1
    assert_same_events(tf.events, stamped(nan_events() + list(synthetic_events(400, seed=7, gpus=1))))


def test_a_block_holds_any_integers_and_any_number_of_alternatives():
    """Each column takes the narrowest type that holds it, per block: wide, negative and
    empty columns, text positions that jump back, tokens without alternatives and with hundreds."""
    toks = [
        NodeOpen(node_id=70_000),
        Token(id=0, bytes=b"a", pos=0, top=[]),
        Token(id=2**40, bytes=b"bcd", pos=1, node_id=70_000, latency_us=2**40, mask_us=2**33, allowed=2**31,
              top=[Alt(1000 + i, b"x%d" % i, 1 / (i + 1), i % 3 == 0) for i in range(300)]),
        Token(id=7, bytes=b"e", pos=2, kind=TokenKind.FORCED, allowed=-1, top=[Alt(7, b"e", 1.0, False)]),
        Token(id=8, bytes=b"", pos=0, kind=TokenKind.PROMPT, prob=NAN, top=[]),
    ]
    events = stamped(toks)
    data = encode_trace(events)
    assert [payload(data, f)[0] for f in frames(data)] == [BLOCK_TAG]
    assert_same_events(decode_trace(data).events, events)


@pytest.mark.parametrize("source", ["synthetic", "reintroduced ids"])
def test_alternatives_left_packed_are_the_same_when_unpacked(source):
    """A follower (the app) decodes without the top-k and unpacks a token's on demand."""
    if source == "synthetic":
        events = stamped(nan_events() + list(synthetic_events(1500, seed=9)))
    else:  # id 7's bytes change between blocks: earlier tokens keep the bytes they were written with
        events = stamped([Token(id=1, bytes=b"a", pos=i, top=[Alt(7, b"old", 0.5, i % 2 == 0), Alt(1, b"a", 0.25,
                                                                                                False)])
                          for i in range(600)] + [Token(id=7, bytes=b"new", pos=600, top=[Alt(7, b"new", 1.0, False)])])
    data = encode_trace(events)
    full = decode_trace(data).events
    dec = FrameDecoder(alternatives=False)
    got, dropped, _ = dec.decode_frames(data, HEADER_SIZE, "x")
    assert dropped == 0 and len(got) == len(full)
    store = TraceStore()
    store.extend_recorded(got, dec.take_packed())
    tokens = [e for e in got if isinstance(e, Token)]
    assert any(e.top for e in full if isinstance(e, Token)) and not any(t.top for t in tokens)
    for a, b in zip(full, got):
        if isinstance(a, Token):
            b = msgspec.structs.replace(b, top=store.alternatives(b.seq))
        assert_same_event(a, b)
    with_top = next(e.seq for e in full if isinstance(e, Token) and e.top)
    assert store[with_top].top == store.alternatives(with_top)  # kept once unpacked


# -- vocabulary -------------------------------------------------------------------------
def test_token_bytes_are_stored_once_per_id():
    word = "a long token that repeats ".encode() * 4  # 104 bytes
    alt = b" other"
    events = stamped(
        Token(pos=i * len(word), id=42, bytes=word, prob=0.5, prob_raw=0.5,
              top=[Alt(42, word, 0.5, False), Alt(43, alt, 0.25, True)])
        for i in range(1000))
    data = encode_trace(events)
    blocks = [payload(data, f) for f in frames(data)]
    assert [b[0] for b in blocks] == [BLOCK_TAG, BLOCK_TAG] and blocks[0][1] + blocks[1][1] == 1000
    assert vocab_entries(data) == 2  # one for the token, one for the alternative
    assert len(data) < 1000 * len(word) // 2
    tf = decode_trace(data)
    assert tf.vocab == {42: word, 43: alt}
    assert all(e.bytes == word for e in tf.events)


def test_an_id_seen_again_with_other_bytes_is_reintroduced():
    events = stamped([Token(pos=0, id=1, bytes=b"a"), Token(pos=1, id=1, bytes=b"bb"), Token(pos=3, id=1, bytes=b"a")])
    data = encode_trace(events)
    assert vocab_entries(data) == 3  # the block would say both: a block per token
    assert [e.bytes for e in decode_trace(data).events] == [b"a", b"bb", b"a"]


@pytest.mark.parametrize("tid, allowed", [(5, -1), (5, 2**24), (2**24 + 5, 17), (300_000, 0)])
@pytest.mark.parametrize("own", [True, False])
def test_token_with_many_alternatives_round_trips(tid, allowed, own):
    alt_ids = ([tid] if own else []) + [1000 + i for i in range(12 - own)]
    top = [Alt(a, f"w{a}".encode(), 1 / (i + 2), i in (1, 9, 11)) for i, a in enumerate(alt_ids)]
    tok = Token(pos=0, id=tid, bytes=f"w{tid}".encode(), prob=0.5, prob_raw=NAN, top=top, allowed=allowed,
                kind=TokenKind.GENERATED, latency_us=7, mask_us=3, node_id=4)
    back = decode_trace(encode_trace(stamped([NodeOpen(node_id=4), tok]))).events[1]
    assert_same_event(stamped([NodeOpen(node_id=4), tok])[1], back)
    assert [a.masked for a in back.top] == [i in (1, 9, 11) for i in range(12)]


# -- display text -------------------------------------------------------------------------
@pytest.mark.parametrize("data, text", [
    (b" caf\xc3\xa9", " café"),
    (b"\xf0\x9f", "<0xF0><0x9F>"),  # the first half of an emoji
    (b"\x98\x80 ok", "<0x98><0x80> ok"),  # its second half
    (b"a\xe2\xe2\x82\xac", "a<0xE2>€"),
    (b"", ""),
])
def test_display_text_escapes_bytes_that_are_not_a_whole_character(data, text):
    assert display_text(data) == text
    assert Token(id=1, bytes=data).text == text


def test_display_text_of_long_binary_data_escapes_every_byte():
    data = bytes(range(0x80, 0x100)) * 16  # no valid character anywhere (cubic time before the fix)
    assert display_text(data) == "".join(f"<0x{b:02X}>" for b in data)


def test_an_alternative_whose_id_a_later_block_introduces_reads_the_same_packed_or_not():
    """Alternatives left packed are unpacked with the vocabulary as it was at their block, as a
    reader with alternatives sees them: an id introduced only later reads as lost in both."""
    import random

    from _trace_support import all_paths, assert_consistent, replace_frame
    from _trace_support import frames as frames_

    from tracing.fileformat import LOST_BYTES

    first = [NodeOpen(node_id=1), Token(node_id=1, pos=0, id=5, bytes=b"a", top=[Alt(98, b"zz", 0.5, False)])]
    enc = FrameEncoder()
    data = enc.header() + enc.encode_batch(stamped(first))
    del enc._vocab[98]  # as if the first block had not introduced it
    data += enc.encode_batch([Token(node_id=1, pos=1, id=98, bytes=b"zz", seq=2, t_us=9)])
    fr = frames_(data)[0]
    block = _payload(data, fr)
    assert 98 in block[5]
    at = block[5].index(98)
    del block[5][at], block[6][at]  # the first block no longer introduces id 98: the second one does
    data = replace_frame(data, fr, block)
    verdict = assert_consistent(all_paths(data, random.Random(0)))
    assert verdict.skipped == [] and verdict.error is None
    top = decode_trace(data).events[1].top
    assert [(a.id, a.bytes) for a in top] == [(98, LOST_BYTES)]
