"""The trace file: a header, then length-prefixed msgpack frames.

Layout::

    MAGIC (8 bytes) | format version (u16 little-endian) | frames...
    frame = LEB128 length | msgpack array [tag, ...]

Frame tags: ``VOCAB`` [0, id, bytes] introduces a token's bytes once, before
the first frame that needs them; ``TOKEN`` [1, dt_us, node_id, pos_delta,
latency_us, mask_us, blob] is the compact token (ids, probabilities and top-k
packed into ``blob``); ``EVENT`` [2, dt_us, msgpack-of-event] is every other
event.  Seqs are implicit (frame order); times are deltas.  Data only: no
pickle anywhere.  A file cut short loses only its incomplete last frame.
"""

from __future__ import annotations

import contextlib
import gc
import os
import struct
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterable

import msgspec

from .events import FORMAT_VERSION, Alt, AnyEvent, Backtrack, Token, TokenKind

MAGIC = b"\x89GTTRC\r\n"
HEADER = struct.Struct("<8sH")
VOCAB, TOKEN, EVENT = 0, 1, 2
_WIDE = 0x80  # kind byte flag: token ids take 4 bytes instead of 3
_SELF = 0x40  # kind byte flag: top[0] is the token itself (greedy), its id is not repeated
_F32 = struct.Struct("<ff")
_U24 = 0xFFFFFF


class TraceFormatError(ValueError):
    """The file is not a trace this version can read; the message is one line."""


def _leb128(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


class FrameEncoder:
    """Turns events (in seq order) into frames; keeps the vocabulary it has written."""

    def __init__(self) -> None:
        self._enc = msgspec.msgpack.Encoder()
        self._vocab: dict[int, bytes] = {}
        self._prev_t = 0
        self._text_len = 0

    def header(self) -> bytes:
        return HEADER.pack(MAGIC, FORMAT_VERSION)

    def _frame(self, payload: bytes) -> bytes:
        return _leb128(len(payload)) + payload

    def _vocab_frames(self, out: list[bytes], tid: int, data: bytes) -> None:
        if self._vocab.get(tid) != data:
            self._vocab[tid] = data
            out.append(self._frame(self._enc.encode((VOCAB, tid, data))))

    def encode(self, ev: AnyEvent) -> bytes:
        out: list[bytes] = []
        dt = ev.t_us - self._prev_t
        self._prev_t = ev.t_us
        if isinstance(ev, Token):
            self._vocab_frames(out, ev.id, ev.bytes)
            for alt in ev.top:
                self._vocab_frames(out, alt.id, alt.bytes)
            pos_delta = ev.pos - self._text_len
            self._text_len = ev.pos + len(ev.bytes)
            out.append(self._frame(self._enc.encode(
                (TOKEN, dt, ev.node_id, pos_delta, ev.latency_us, ev.mask_us, _pack_token(ev)))))
        else:
            if isinstance(ev, Backtrack):
                self._text_len = ev.pos if ev.pos >= 0 else max(0, self._text_len - len(ev.bytes))
            bare = msgspec.structs.replace(ev, seq=-1, t_us=-1)
            out.append(self._frame(self._enc.encode((EVENT, dt, self._enc.encode(bare)))))
        return b"".join(out)


def _pack_token(ev: Token) -> bytes:
    ids = [ev.id] + [a.id for a in ev.top]
    wide = max(ids) > _U24 or ev.allowed + 1 > _U24
    k = len(ev.top)
    if k > 255:
        raise ValueError("at most 255 alternatives per token")
    own = bool(k) and ev.top[0].id == ev.id
    parts = [bytes((int(ev.kind) | (_WIDE if wide else 0) | (_SELF if own else 0), k))]
    w = 4 if wide else 3
    parts.append(ev.id.to_bytes(w, "little"))
    parts.append((ev.allowed + 1).to_bytes(w, "little"))
    parts.append(_F32.pack(ev.prob, ev.prob_raw))
    if k:
        parts.append(b"".join(a.id.to_bytes(w, "little") for a in ev.top[1 if own else 0:]))
        parts.append(struct.pack(f"<{k}e", *(a.prob for a in ev.top)))
        flags = 0
        for i, a in enumerate(ev.top):
            if a.masked:
                flags |= 1 << i
        parts.append(flags.to_bytes((k + 7) // 8, "little"))
    return b"".join(parts)


_KINDS = tuple(TokenKind)
_DECODE_ERRORS = (msgspec.DecodeError, KeyError, ValueError, TypeError, IndexError, struct.error)
_BLOB_LAYOUTS: dict[tuple[int, int], struct.Struct] = {}


def _blob_layout(flags: int, k: int) -> struct.Struct:
    """The whole token blob as one struct: 3-byte ids read as (u16, u8) pairs."""
    key = (flags, k)
    layout = _BLOB_LAYOUTS.get(key)
    if layout is None:
        uid = "I" if flags & _WIDE else "HB"
        n = k - 1 if (k and flags & _SELF) else k
        fmt = "<BB" + uid * 2 + "ff" + uid * n + "e" * k + (f"{(k + 7) // 8}s" if k else "")
        layout = _BLOB_LAYOUTS[key] = struct.Struct(fmt)
    return layout


_MASK_BITS: dict[tuple[int, bytes], tuple[bool, ...]] = {}


def _mask_bits(k: int, flags: bytes) -> tuple[bool, ...]:
    """The ``masked`` flags of ``k`` alternatives, from their bit set (cached for top-k <= 8)."""
    bits = _MASK_BITS.get((k, flags))
    if bits is None:
        n = int.from_bytes(flags, "little")
        bits = tuple(bool(n >> j & 1) for j in range(k))
        if k <= 8:
            _MASK_BITS[(k, flags)] = bits
    return bits


class FrameDecoder:
    """Inverse of :class:`FrameEncoder`."""

    def __init__(self) -> None:
        self._dec = msgspec.msgpack.Decoder()
        self._ev_dec = msgspec.msgpack.Decoder(AnyEvent)
        self.vocab: dict[int, bytes] = {}
        self._t = 0
        self._text_len = 0
        self._seq = 0  # next seq, for decode_frames

    def decode(self, payload: bytes, seq: int) -> AnyEvent | None:
        """The event in one frame, or None for a vocabulary frame."""
        frame = self._dec.decode(payload)
        tag = frame[0]
        if tag == TOKEN:
            _, dt, node_id, pos_delta, lat, mask, blob = frame
            self._t += dt
            pos = self._text_len + pos_delta
            ev = self._unpack_token(blob, seq, self._t, node_id, pos, lat, mask)
            self._text_len = pos + len(ev.bytes)
            return ev
        if tag == VOCAB:
            self.vocab[frame[1]] = frame[2]
            return None
        if tag == EVENT:
            self._t += frame[1]
            ev = self._ev_dec.decode(frame[2])
            if isinstance(ev, Backtrack):
                self._text_len = ev.pos if ev.pos >= 0 else max(0, self._text_len - len(ev.bytes))
            ev.seq, ev.t_us = seq, self._t
            return ev
        raise TraceFormatError(f"unknown frame tag {tag}")

    def decode_frames(self, data: bytes, pos: int, name: str,
                      max_events: int | None = None) -> tuple[list[AnyEvent], int, int]:
        """Complete frames from ``pos`` on, up to ``max_events`` events:
        (events, bytes of an incomplete last frame, position reached).

        The same as calling :meth:`decode` frame by frame, with the loop state
        kept in locals: reading a long trace is dominated by this loop.  Seqs
        continue across calls, so a file can be decoded in chunks.
        """
        raw = self._dec.decode
        ev_dec = self._ev_dec.decode
        unpack = self._unpack_token
        vocab = self.vocab
        t, text_len = self._t, self._text_len
        events: list[AnyEvent] = []
        append = events.append
        view = memoryview(data)
        end = len(data)
        dropped, seq = 0, self._seq
        limit = seq + max_events if max_events is not None else -1
        while pos < end and seq != limit:
            start = pos
            n = data[pos]
            pos += 1
            if n & 0x80:  # a length of 128 bytes or more takes several LEB128 bytes
                n &= 0x7F
                shift = 7
                while True:
                    if pos >= end:
                        n = -1
                        break
                    b = data[pos]
                    pos += 1
                    n |= (b & 0x7F) << shift
                    if not b & 0x80:
                        break
                    shift += 7
                    if shift > 35:
                        raise TraceFormatError(f"{name}: corrupt frame length at byte {start}")
            if n < 0 or pos + n > end:
                dropped = end - start  # the writer was stopped mid-frame
                break
            try:
                frame = raw(view[pos:pos + n])
                tag = frame[0]
                if tag == TOKEN:
                    _, dt, node_id, pos_delta, lat, mask, blob = frame
                    t += dt
                    text_pos = text_len + pos_delta
                    ev = unpack(blob, seq, t, node_id, text_pos, lat, mask)
                    text_len = text_pos + len(ev.bytes)
                    append(ev)
                    seq += 1
                elif tag == VOCAB:
                    vocab[frame[1]] = frame[2]
                elif tag == EVENT:
                    t += frame[1]
                    ev = ev_dec(frame[2])
                    if isinstance(ev, Backtrack):
                        text_len = ev.pos if ev.pos >= 0 else max(0, text_len - len(ev.bytes))
                    ev.seq, ev.t_us = seq, t
                    append(ev)
                    seq += 1
                else:
                    raise TraceFormatError(f"unknown frame tag {tag}")
            except _DECODE_ERRORS as e:
                raise TraceFormatError(f"{name}: corrupt frame at byte {start} ({type(e).__name__})") from None
            pos += n
        self._t, self._text_len, self._seq = t, text_len, seq
        return events, dropped, pos if not dropped else end

    def _unpack_token(self, blob: bytes, seq: int, t_us: int, node_id: int, pos: int, lat: int,
                      mask: int) -> Token:
        key = (blob[0] & (_WIDE | _SELF), blob[1])
        unpack = _UNPACKERS.get(key) or _make_unpacker(*key)
        return unpack(blob, self.vocab, seq, t_us, node_id, pos, lat, mask)


_UNPACKERS: dict[tuple[int, int], Callable[..., Token]] = {}


def _make_unpacker(shape: int, k: int) -> Callable[..., Token]:
    """A function that turns one token blob of this shape (id width, greedy flag, k) into a Token.

    Reading a trace is dominated by this step, so it is generated once per
    shape with every index a constant: one struct call for the whole blob,
    no loops or slices (about 30 % faster than a generic version).  Only the
    two integers ``shape`` and ``k`` go into the generated source.
    """
    shape, k = int(shape), int(k)
    own = bool(k and shape & _SELF)
    n = k - 1 if own else k  # ids stored for the alternatives
    if shape & _WIDE:
        tid, allowed, prob, prob_raw = "v[2]", "v[3] - 1", "v[4]", "v[5]"
        alt_ids = [f"v[{6 + i}]" for i in range(n)]
        e = 6 + n
    else:  # 3-byte ids are read as (u16, u8) pairs
        tid, allowed, prob, prob_raw = "v[2] | v[3] << 16", "(v[4] | v[5] << 16) - 1", "v[6]", "v[7]"
        alt_ids = [f"v[{8 + 2 * i}] | v[{9 + 2 * i}] << 16" for i in range(n)]
        e = 8 + 2 * n
    src = ["def unpack(blob, vocab, seq, t_us, node_id, pos, lat, mask):",
           "    v = layout.unpack_from(blob)",
           f"    tid = {tid}"]
    src += [f"    a{i} = {x}" for i, x in enumerate(alt_ids)]
    if k:
        names = (["tid"] if own else []) + [f"a{i}" for i in range(n)]
        src.append(f"    m = _MASK_BITS.get(({k}, v[{e + k}])) or _mask_bits({k}, v[{e + k}])")
        top = "[" + ", ".join(f"Alt({x}, vocab[{x}], v[{e + j}], m[{j}])" for j, x in enumerate(names)) + "]"
    else:
        top = "[]"
    src.append(f"    return Token(seq=seq, t_us=t_us, node_id=node_id, pos=pos, id=tid, bytes=vocab[tid], "
               f"kind=_KINDS[v[0] & 0x3F], prob={prob}, prob_raw={prob_raw}, top={top}, "
               f"latency_us=lat, mask_us=mask, allowed={allowed})")
    namespace = {"Alt": Alt, "Token": Token, "_KINDS": _KINDS, "_MASK_BITS": _MASK_BITS,
                 "_mask_bits": _mask_bits, "layout": _blob_layout(shape, k)}
    exec("\n".join(src), namespace)
    unpack = _UNPACKERS[(shape, k)] = namespace["unpack"]
    return unpack


@dataclass
class TraceFile:
    """What :func:`read_trace` found."""

    events: list[AnyEvent]
    version: int
    dropped_bytes: int  # bytes of an incomplete last frame (a truncated file)
    vocab: dict[int, bytes]


def read_bytes(path: str | os.PathLike) -> bytes:
    """A trace file's bytes; :class:`TraceFormatError` with one line when it cannot be read."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise TraceFormatError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise TraceFormatError(f"{path}: is a directory") from None
    except OSError as e:
        raise TraceFormatError(f"{path}: cannot read ({e.strerror})") from None


def check_header(data: bytes, name: str) -> int:
    """The format version of ``data``; :class:`TraceFormatError` for foreign or newer files."""
    if len(data) < HEADER.size or data[:8] != MAGIC:
        raise TraceFormatError(f"{name}: not a guidance-tui trace file")
    _, version = HEADER.unpack_from(data)
    if version > FORMAT_VERSION:
        raise TraceFormatError(
            f"{name}: written by a newer guidance-tui (format {version}; this version reads up to {FORMAT_VERSION})")
    return version


def read_trace(path: str | os.PathLike) -> TraceFile:
    """Read a whole trace file; raise :class:`TraceFormatError` on foreign or corrupt data."""
    return decode_trace(read_bytes(path), str(path))


def decode_trace(data: bytes, name: str = "trace") -> TraceFile:
    version = check_header(data, name)
    dec = FrameDecoder()
    with _gc_paused():  # hundreds of thousands of small objects, none in a cycle
        events, dropped, _ = dec.decode_frames(data, HEADER.size, name)
    return TraceFile(events, version, dropped, dec.vocab)


@contextlib.contextmanager
def _gc_paused():
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def encode_trace(events: Iterable[AnyEvent]) -> bytes:
    enc = FrameEncoder()
    return enc.header() + b"".join(enc.encode(ev) for ev in events)


def write_trace(path: str | os.PathLike, events: Iterable[AnyEvent]) -> None:
    """Write a whole trace at once (export, tests)."""
    Path(path).write_bytes(encode_trace(events))


WRITE_CHUNK = 512  # events per write while draining a backlog


class TraceWriter:
    """Follows a store and appends its events to a file from a background thread.

    Flushes every ``interval`` seconds (a killed process loses at most that),
    and drains everything on :meth:`close`.  The producer never waits on I/O.
    """

    def __init__(self, path: str | os.PathLike, store, *, interval: float = 0.25,
                 on_written: Callable[[int], None] | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._store = store
        self._interval = interval
        self._on_written = on_written  # called (on the writer thread) with each chunk's event count
        self._enc = FrameEncoder()
        self._fh: BinaryIO = open(self.path, "wb")
        self._fh.write(self._enc.header())
        self._fh.flush()
        self._written = -1
        self._stop = threading.Event()
        self._io_lock = threading.Lock()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="trace-writer", daemon=True)
        self._thread.start()

    @property
    def written_seq(self) -> int:
        return self._written

    def drain(self) -> None:
        """Write and flush everything the store has, including what arrives meanwhile.

        In chunks of WRITE_CHUNK events, each flushed: under a busy producer
        this thread gets the interpreter lock in slices, and a reader of the
        growing file (the app) should see each chunk as soon as it is encoded,
        not when the whole backlog is."""
        with self._io_lock:
            if self._fh.closed:
                return
            encode = self._enc.encode
            while True:
                batch = self._store.since(self._written, WRITE_CHUNK)
                if not batch:
                    break
                self._fh.write(b"".join(encode(ev) for ev in batch))
                self._written = batch[-1].seq
                self._fh.flush()
                if self._on_written is not None:
                    self._on_written(len(batch))
            self._fh.flush()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.drain()
            except Exception as e:  # keep the run going; close() reports it
                self.error = e
                return

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.drain()
        with self._io_lock:
            if not self._fh.closed:
                os.fsync(self._fh.fileno())
                self._fh.close()

    def __enter__(self) -> "TraceWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
