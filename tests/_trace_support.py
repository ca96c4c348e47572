"""Trace files taken apart and put back together, and every reader path run on one file.

Used by the fault tests, the fuzz test and ``scripts/fuzz_traces.py``.  Frames
are parsed here independently of ``tracing.fileformat`` (a header, then frames
of LEB128 length, a CRC32 of the payload from format 3 on, and the msgpack
payload), so a test can damage a file precisely and re-frame a mutated payload
with a correct length and checksum.
"""

from __future__ import annotations

import random
import struct
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

HEADER_SIZE = 10  # magic (8) + version (u16)
_enc = msgspec.msgpack.Encoder()


def version_of(data: bytes) -> int:
    return struct.unpack_from("<H", data, 8)[0]


def leb128(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)


@dataclass
class Frame:
    start: int  # the length's first byte
    body: int  # the payload's first byte
    end: int  # one past the payload


def frames(data: bytes) -> list[Frame]:
    """Every complete frame of an undamaged file."""
    crc = 4 if version_of(data) >= 3 else 0
    out = []
    pos = HEADER_SIZE
    while pos < len(data):
        start, n, shift = pos, 0, 0
        while True:
            if pos >= len(data):
                return out
            b = data[pos]
            pos += 1
            n |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        body = pos + crc
        if body + n > len(data):
            return out
        out.append(Frame(start, body, body + n))
        pos = body + n
    return out


def payload(data: bytes, fr: Frame):
    return msgspec.msgpack.decode(data[fr.body:fr.end])


def frame_bytes(version: int, body: bytes) -> bytes:
    """A frame holding ``body``, with a correct length (and checksum from format 3 on)."""
    crc = struct.pack("<I", zlib.crc32(body)) if version >= 3 else b""
    return leb128(len(body)) + crc + body


def replace_frame(data: bytes, fr: Frame, obj) -> bytes:
    """``data`` with frame ``fr``'s payload replaced by ``obj`` (msgpack-encoded, framed correctly)."""
    body = obj if isinstance(obj, (bytes, bytearray)) else _enc.encode(obj)
    return data[:fr.start] + frame_bytes(version_of(data), bytes(body)) + data[fr.end:]


def frame_events(version: int, obj) -> int:
    """Events a frame holds (a VOCAB frame of format 1: none)."""
    tag = obj[0]
    return obj[1] if tag == 3 else 0 if tag == 0 else 1


# -- every reader path ---------------------------------------------------------------------------
@dataclass
class Verdict:
    """What one reader path made of a file."""

    events: list[bytes] = field(default_factory=list)  # each event msgpack-encoded, top-k unpacked
    skipped: list[tuple] = field(default_factory=list)  # (offset, resumed, lost) of each damaged part
    dropped: int = 0  # bytes of an incomplete last frame
    error: str | None = None  # the one-line TraceFormatError, when the file is refused

    def key(self) -> tuple:
        return (self.error, self.skipped, self.dropped, len(self.events))


def _one_line(e: Exception) -> str:
    msg = str(e)
    assert msg and "\n" not in msg, repr(msg)
    return msg


ALT_EVERY = 1  # compare the top-k of every Nth token (the long fuzz run samples; the tests check all)


def _canonical(events, store=None) -> list[bytes]:
    """Each event msgpack-encoded, with its top-k unpacked (a follower's are left packed) when its
    index is a multiple of ALT_EVERY, else without."""
    from tracing import Token

    out = []
    every = ALT_EVERY
    for j, ev in enumerate(events):
        if type(ev) is Token:
            if j % every:
                top, after = [], []
            elif type(ev.top) is list or store is None:
                top, after = list(ev.top), list(ev.top_allowed)
            else:  # a follower's "none unpacked yet"
                top, after = list(store.alternatives(ev.seq)), list(store[ev.seq].top_allowed)
            ev = msgspec.structs.replace(ev, top=top, top_allowed=after)
        out.append(_enc.encode(ev))
    return out


def _skips(skipped) -> list[tuple]:
    for s in skipped:
        _one_line(s)
    return [(s.offset, s.resumed, s.lost) for s in skipped]


def _use(events, store) -> None:
    """What the commands and the app do with the events: nothing here may raise."""
    from guidance_tui.cli.inspect_commands import event_to_json, summarize
    from tracing import TraceTree

    store.text_bytes(store.state_at(store.last_seq))
    if len(store) > 2:
        store.state_at(len(store) // 2)
    TraceTree.from_events(events)
    for ev in events[:50]:
        msgspec.json.encode(event_to_json(ev))


def read_trace_path(data: bytes, name: str, deep: bool = False) -> Verdict:
    """``info`` and ``export``: read_trace."""
    from tracing import TraceFormatError, TraceStore, decode_trace

    try:
        tf = decode_trace(data, name)
    except TraceFormatError as e:
        return Verdict(error=_one_line(e))
    if deep:
        from guidance_tui.cli.inspect_commands import summarize

        summarize(tf, name)
    store = TraceStore(tf.events, clock=_zero)  # an unknown (negative) time: the store stamps it, as in replay
    if deep:
        _use(tf.events, store)
    return Verdict(_canonical(tf.events), _skips(tf.skipped), tf.dropped_bytes)


def _zero() -> int:
    return 0


def loader_path(path: Path, rng: random.Random, deep: bool = False) -> Verdict:
    """``replay``: TraceLoader, a first screen, then chunks."""
    from guidance_tui.state.loader import TraceLoader
    from tracing import TraceFormatError

    from tracing import TraceStore

    try:
        loader = TraceLoader(path, TraceStore(clock=_zero))
    except TraceFormatError as e:
        return Verdict(error=_one_line(e))
    while not loader.load(rng.choice((1, 7, 100, 3000, None))):
        pass
    assert loader.error is None or not loader.skipped or _one_line(loader.error)
    store = loader.store
    events = list(store.events())
    if deep:
        _use(events, store)
    return Verdict(_canonical(events, store), _skips(loader.skipped), loader.dropped_bytes)


def follower_path(data: bytes, name: str, rng: random.Random, deep: bool = False) -> Verdict:
    """The live follower (ScriptProcess.poll, TraceFollower.poll): the file as it grows, in
    chunks of any size, each decoded as far as it goes; then, the writer gone, the rest."""
    from tracing import TraceFormatError, TraceStore
    from tracing.fileformat import HEADER, FrameDecoder

    dec = FrameDecoder(alternatives=False)
    store = TraceStore(clock=_zero)
    buf = b""
    header_ok = False
    # where the file stops growing for a while: anywhere, a frame's length cut included
    cuts = sorted(rng.randrange(len(data) + 1) for _ in range(rng.choice((0, 1, 3, 10, 40))))
    cuts.append(len(data))
    at = 0
    try:
        for cut in cuts + [None]:
            final = cut is None
            if not final:
                buf += data[at:cut]
                at = max(at, cut)
            if not header_ok:
                if len(buf) < HEADER.size:
                    if final:
                        dec.read_header(buf, name)  # raises: too short to be a trace
                    continue
                dec.read_header(buf, name)
                buf = buf[HEADER.size:]
                header_ok = True
            if buf or final:
                max_events = rng.choice((None, 1, 50, 20_000))
                while True:
                    events, dropped, pos = dec.decode_frames(buf, 0, name, max_events, final=final)
                    buf = buf[len(buf) - dropped:] if dropped else buf[pos:]
                    store.extend_recorded(events, dec.take_packed())
                    if not final or not buf or dropped == len(buf) or not events:
                        break
    except TraceFormatError as e:
        return Verdict(error=_one_line(e))
    events = list(store.events())
    if deep:
        _use(events, store)
    return Verdict(_canonical(events, store), _skips(dec.skipped), len(buf))


def all_paths(data: bytes, rng: random.Random, tmp: Path | None = None, *, deep: bool = False,
              name: str = "x.gtt") -> dict[str, Verdict]:
    """Every reader path's verdict on ``data`` (``tmp``: a directory for the loader's file)."""
    if tmp is None:
        with tempfile.TemporaryDirectory() as d:
            return all_paths(data, rng, Path(d), deep=deep, name=name)
    path = tmp / name
    path.write_bytes(data)
    return {"read_trace": read_trace_path(data, str(path), deep),
            "loader": loader_path(path, rng, deep),
            "follower": follower_path(data, str(path), rng, deep)}


def assert_consistent(verdicts: dict[str, Verdict]) -> Verdict:
    """Every path kept the same events and reported the same damage; returns read_trace's."""
    ref = verdicts["read_trace"]
    for name, v in verdicts.items():
        assert v.error == ref.error, (name, v.error, ref.error)
        if ref.error is not None:
            continue
        assert v.skipped == ref.skipped, (name, v.skipped, ref.skipped)
        assert v.dropped == ref.dropped, (name, v.dropped, ref.dropped)
        assert len(v.events) == len(ref.events), (name, len(v.events), len(ref.events))
        assert v.events == ref.events, name
    return ref


# -- sources and mutations for the fuzz tests -----------------------------------------------------
DATA = Path(__file__).resolve().parent / "data"


def fuzz_sources() -> list[tuple[str, bytes]]:
    """Real and synthetic traces of every format this version reads."""
    from tracing import Alt, Message, NodeOpen, Token, TraceStore
    from tracing.fileformat import FrameEncoder
    from tracing.synthetic import synthetic_events

    def stamped(events):
        t = iter(range(0, 10**15, 1_234_000))
        store = TraceStore(clock=lambda: next(t))
        store.extend(events)
        return list(store.events())

    synthetic = stamped(list(synthetic_events(400, seed=11, gpus=1, after_mask=True))
                        # an id whose bytes differ between a token and an alternative: an EVENT frame
                        + [NodeOpen(node_id=999), Token(node_id=999, pos=0, id=77, bytes=b"x",
                                                        top=[Alt(77, b"y", 0.5, False)]),
                           Message(text="caf\udcc3\udca9 \udcff")])
    out = []
    for version in (2, 3, 4):
        enc = FrameEncoder(version)
        rng = random.Random(version)
        chunks, i = [enc.header()], 0
        while i < len(synthetic):  # in batches, as the writer flushes them: blocks of any size
            n = rng.randint(20, 200)
            chunks.append(enc.encode_batch(synthetic[i:i + n]))
            i += n
        out.append((f"synthetic format {version}", b"".join(chunks)))
    format1 = (DATA / "format1.gtt").read_bytes()
    cut = next(f.end for f in frames(format1) if f.end > 12_000)  # a frame per token: the first 12 kB
    out.append(("format1.gtt", format1[:cut]))
    for name in ("format2_forced_and_backtrack.gtt", "format3_forced_and_backtrack.gtt"):
        out.append((name, (DATA / name).read_bytes()))
    return out


_CODE_CHARS = "BbHhIiqQLlpPsxe?n0 "
_ANY = [0, 1, -1, 2, 7, 255, 256, -129, 1 << 20, 1 << 40, -(1 << 62), True, None, 0.5, "x", b"xx", [], {}, [1, 2]]


def _tweak_value(v, rng: random.Random):
    """A nearby or a wrong value for one payload field."""
    r = rng.random()
    if isinstance(v, bool) or v is None:
        return rng.choice(_ANY)
    if isinstance(v, int):
        return v + rng.choice((-1, 1, -2, 2, 128, -(1 << 16), 1 << 31)) if r < 0.7 else rng.choice(_ANY)
    if isinstance(v, str):
        if r < 0.6 and v:
            i = rng.randrange(len(v))
            return v[:i] + rng.choice(_CODE_CHARS) + v[i + 1:]
        return rng.choice((v[:-1], v + rng.choice(_CODE_CHARS), "", v * 2, rng.choice(_ANY)))
    if isinstance(v, (bytes, bytearray)):
        b = bytearray(v)
        if r < 0.5 and b:
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        elif r < 0.7:
            b = b[:rng.randrange(len(b) + 1)]
        elif r < 0.85:
            b += bytes(rng.randrange(256) for _ in range(rng.randint(1, 4)))
        else:
            return rng.choice(_ANY)
        return bytes(b)
    if isinstance(v, list):
        v = list(v)
        if r < 0.3 and v:
            i = rng.randrange(len(v))
            v[i] = _tweak_value(v[i], rng)
        elif r < 0.5 and v:
            del v[rng.randrange(len(v))]
        elif r < 0.65:
            v.append(rng.choice(v) if v and rng.random() < 0.5 else rng.choice(_ANY))
        elif r < 0.8 and len(v) > 1:
            rng.shuffle(v)
        else:
            return rng.choice(_ANY)
        return v
    return rng.choice(_ANY)


def _event_blob(rng: random.Random) -> bytes:
    """A msgpack event that may be valid or nearly so."""
    from tracing import Backtrack, Capture, Message, NodeClose, NodeOpen, Token

    ev = rng.choice([
        Token(id=rng.choice((1, 5, 77, 1 << 33)), bytes=b"ab", node_id=rng.choice((0, 1, 2, 999, 12345)),
              pos=rng.choice((0, 3, -5))),
        NodeOpen(node_id=rng.choice((0, 1, 5000, -3)), parent_id=rng.choice((0, 1, 77))),
        NodeClose(node_id=rng.choice((1, 31337))), Message(text="m"),
        Backtrack(n_tokens=rng.choice((1, -4)), bytes=b"a", pos=rng.choice((-1, 0, 10**9))),
        Capture(name="c", value="v"),
    ])
    d = msgspec.to_builtins(ev)
    if rng.random() < 0.3:
        key = rng.choice(list(d))
        d[key] = rng.choice(_ANY)
    return _enc.encode(d)


def mutate_structure(data: bytes, rng: random.Random) -> bytes:
    """One field of one frame's payload changed, the frame re-framed with a correct length (and
    checksum): what only the semantic checks can catch."""
    fs = frames(data)
    if not fs:
        return data
    fr = rng.choice(fs)
    try:
        obj = payload(data, fr)
    except Exception:
        return data
    r = rng.random()
    if not isinstance(obj, list) or not obj or r < 0.05:
        obj = rng.choice(_ANY + [[3], [2, 0], obj])
    elif r < 0.85:
        i = rng.randrange(len(obj))
        if isinstance(obj[i], list) and obj[i] and all(isinstance(x, bytes) for x in obj[i]) and rng.random() < 0.5:
            obj[i] = list(obj[i])
            obj[i][rng.randrange(len(obj[i]))] = _event_blob(rng)  # another event among a block's others
        elif isinstance(obj[i], bytes) and obj[0] == 2 and rng.random() < 0.5:
            obj[i] = _event_blob(rng)
        else:
            obj[i] = _tweak_value(obj[i], rng)
    elif r < 0.92:
        obj = obj[:-1] if rng.random() < 0.5 else obj + [rng.choice(_ANY)]
    else:  # a whole frame again, elsewhere
        other = rng.choice(fs)
        return data[:other.start] + data[fr.start:fr.end] + data[other.start:]
    return replace_frame(data, fr, obj)


def mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    """Damage that knows nothing of the format: flips, overwrites, cuts, insertions, moved frames."""
    b = bytearray(data)
    r = rng.random()
    lo = HEADER_SIZE if rng.random() < 0.97 else 0
    if len(b) <= lo:
        return bytes(b) + bytes([rng.randrange(256)])
    if r < 0.35:
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(lo, len(b))] ^= 1 << rng.randrange(8)
    elif r < 0.5:
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(lo, len(b))] = rng.randrange(256)
    elif r < 0.6:
        del b[rng.randrange(lo, len(b) + 1):]
    elif r < 0.72:
        at = rng.randrange(lo, len(b) + 1)
        b[at:at] = bytes(rng.randrange(256) for _ in range(rng.choice((1, 2, 5, 16, 300))))
    elif r < 0.82:
        at = rng.randrange(lo, len(b))
        del b[at:at + rng.choice((1, 3, 10, 200))]
    elif r < 0.9:  # a frame's length byte
        fs = frames(data)
        if fs:
            fr = rng.choice(fs)
            b[fr.start] = rng.randrange(256)
    else:  # two frames swapped
        fs = frames(data)
        if len(fs) >= 2:
            x, y = sorted(rng.sample(fs, 2), key=lambda f: f.start)
            return (data[:x.start] + data[y.start:y.end] + data[x.end:y.start] + data[x.start:x.end]
                    + data[y.end:])
    return bytes(b)


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One to three mutations, structure-aware or not."""
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        data = mutate_structure(data, rng) if rng.random() < 0.5 else mutate_bytes(data, rng)
    return data


def check_one(data: bytes, rng: random.Random, tmp: Path, deep: bool = False) -> Verdict:
    """Every reader path on ``data``: only one-line errors, and one verdict."""
    return assert_consistent(all_paths(data, rng, tmp, deep=deep))
