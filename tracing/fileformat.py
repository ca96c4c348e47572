"""The trace file: a header, then length-prefixed msgpack frames.

Layout::

    MAGIC (8 bytes) | format version (u16 little-endian) | frames...
    frame = LEB128 length | msgpack array [tag, ...]

Frame tags: ``BLOCK`` [3, n, m, codes, columns, vocab_ids, vocab_bytes,
other_index, other_events] holds ``n`` consecutive events: the tokens among
them column by column (``m`` top-k alternatives in all), each integer column
in the narrowest type that holds it (``codes``: one struct code per column),
with the vocabulary entries (token id -> bytes) the block introduces; every
other event msgpack-encoded with its index in the block.  ``EVENT`` [2,
dt_us, msgpack-of-event] is one event on its own.  Format 1 wrote a
``TOKEN`` frame [1, dt_us, node_id, pos_delta, latency_us, mask_us, blob] per
token, an ``EVENT`` frame per other event and ``VOCAB`` [0, id, bytes]
frames; all are still read.  Seqs are implicit (frame order); times and text
positions are deltas.  Data only: no pickle anywhere.  A file cut short
loses only its incomplete last frame.

Why blocks of columns: a reader (the app following a live run) does no
Python work per token, only C-level unpacking and ``map`` over each block.
"""

from __future__ import annotations

import bisect
import contextlib
import gc
import os
import struct
import threading
from collections import deque
from dataclasses import dataclass
from itertools import accumulate, chain, compress, count, filterfalse, repeat
from operator import add, attrgetter, ge, is_, not_, sub
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Sequence

import msgspec

from .events import FORMAT_VERSION, Alt, AnyEvent, Backtrack, Token, TokenKind
from .format1 import unpack_token

MAGIC = b"\x89GTTRC\r\n"
HEADER = struct.Struct("<8sH")
VOCAB, TOKEN, EVENT, BLOCK = 0, 1, 2, 3  # VOCAB and TOKEN: format 1 only
BLOCK_MAX = 512  # events per BLOCK frame


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
        self._known = self._vocab.items().__contains__  # (id, bytes) already written
        self._prev_t = 0
        self._text_len = 0

    def header(self) -> bytes:
        return HEADER.pack(MAGIC, FORMAT_VERSION)

    def _frame(self, payload: bytes) -> bytes:
        return _leb128(len(payload)) + payload

    def encode(self, ev: AnyEvent) -> bytes:
        return self.encode_batch((ev,))

    def encode_batch(self, events: Sequence[AnyEvent]) -> bytes:
        """Frames for ``events``: blocks of up to BLOCK_MAX events."""
        out: list[bytes] = []
        for i in range(0, len(events), BLOCK_MAX):
            self._events(events[i:i + BLOCK_MAX], out)
        return b"".join(out)

    def _events(self, events: Sequence[AnyEvent], out: list[bytes]) -> None:
        block = self._block(events)
        if block is not None:
            out.append(block)
        elif len(events) > 1:  # an id with two byte strings: smaller blocks
            half = len(events) // 2
            self._events(events[:half], out)
            self._events(events[half:], out)
        else:  # a token whose own id and an alternative's differ in bytes
            out.append(self._event_frame(events[0]))

    def _event_frame(self, ev: AnyEvent) -> bytes:
        dt = ev.t_us - self._prev_t
        self._prev_t = ev.t_us
        if isinstance(ev, Backtrack):
            self._text_len = ev.pos if ev.pos >= 0 else max(0, self._text_len - len(ev.bytes))
        elif isinstance(ev, Token):
            self._text_len = ev.pos + len(ev.bytes)
        return self._frame(self._enc.encode((EVENT, dt, self._bare(ev))))

    def _bare(self, ev: AnyEvent) -> bytes:
        return self._enc.encode(msgspec.structs.replace(ev, seq=-1, t_us=-1))

    def _block(self, events: Sequence[AnyEvent]) -> bytes | None:
        """One BLOCK frame, built with C-level maps (this runs on the producer's
        writer thread); None when the block's vocabulary is inconsistent."""
        n = len(events)
        is_token = list(map(is_, map(type, events), repeat(Token)))
        toks = list(compress(events, is_token))
        other_index = list(compress(count(), map(not_, is_token)))
        ts = list(map(_T_US, events))
        ids = list(map(_ID, toks))
        data = list(map(_BYTES, toks))
        lens = list(map(len, data))
        pos = list(map(_POS, toks))
        tops = list(map(_TOP, toks))
        alts = list(chain.from_iterable(tops))
        alt_ids = list(map(_ID, alts))
        all_ids = ids + alt_ids
        all_data = data + list(map(_BYTES, alts))
        vocab = dict(zip(all_ids, all_data))
        if list(map(vocab.__getitem__, all_ids)) != all_data:
            return None  # the same id with different bytes: the block's table cannot say both
        new = sorted(filterfalse(self._known, vocab.items()))
        self._vocab.update(new)
        dts = list(map(sub, ts, chain((self._prev_t,), ts)))
        self._prev_t = ts[-1]
        # a token's position relative to where the previous token ended
        pos_deltas = list(map(sub, pos, chain((self._text_len,), map(add, pos, lens))))
        if toks:
            self._text_len = pos[-1] + lens[-1]
        m = len(alts)
        masked = "".join(map("01".__getitem__, map(_MASKED, reversed(alts))))
        int_cols = (dts, list(map(_NODE, toks)), pos_deltas, list(map(_LATENCY, toks)), list(map(_MASK, toks)),
                    ids, list(map(_ALLOWED, toks)), list(map(int, map(_KIND, toks))), list(map(len, tops)), alt_ids)
        codes = "".join(map(_int_code, int_cols))
        columns = _block_layout(n, len(toks), m, codes).pack(
            *chain(*int_cols[:9]), *map(_PROB, toks), *map(_PROB_RAW, toks), *alt_ids, *map(_PROB, alts))
        bits = int(masked, 2).to_bytes((m + 7) // 8, "little") if m else b""
        others = list(map(self._bare, (events[i] for i in other_index)))
        return self._frame(self._enc.encode((BLOCK, n, m, codes, columns + bits, [i for i, _ in new],
                                             [b for _, b in new], other_index, others)))


_T_US, _ID, _BYTES, _POS, _TOP = (attrgetter(a) for a in ("t_us", "id", "bytes", "pos", "top"))
_NODE, _LATENCY, _MASK, _ALLOWED, _KIND = (attrgetter(a) for a in ("node_id", "latency_us", "mask_us", "allowed",
                                                                      "kind"))
_PROB, _PROB_RAW, _MASKED, _SEQ = (attrgetter(a) for a in ("prob", "prob_raw", "masked", "seq"))
# struct codes for an integer column, narrowest first, with the range each holds
_INT_CODES = (("B", 0, 0xFF), ("b", -0x80, 0x7F), ("H", 0, 0xFFFF), ("h", -0x8000, 0x7FFF),
              ("I", 0, 0xFFFFFFFF), ("i", -0x80000000, 0x7FFFFFFF), ("q", -1 << 63, (1 << 63) - 1))
_N_INT_COLS = 10  # dt; tokens' node, pos delta, latency, mask time, id, allowed, kind, k; alternative ids


def _int_code(col: Sequence[int]) -> str:
    if not col:
        return "B"
    lo, hi = min(col), max(col)
    for code, a, b in _INT_CODES:
        if a <= lo and hi <= b:
            return code
    raise ValueError(f"an integer in a token is out of the 64-bit range: {lo if lo < 0 else hi}")


def _block_layout(n: int, n_tok: int, m: int, codes: str) -> struct.Struct:
    """Columns of a BLOCK: time deltas of all n events; eight integer columns of
    the n_tok tokens, their probabilities and raw probabilities (f32); the ids
    and probabilities (f16) of the m alternatives."""
    key = (n, n_tok, m, codes)
    layout = _BLOCK_LAYOUTS.get(key)
    if layout is None:
        fmt = f"<{n}{codes[0]}" + "".join(f"{n_tok}{c}" for c in codes[1:9]) + f"{n_tok}f{n_tok}f{m}{codes[9]}{m}e"
        layout = struct.Struct(fmt)
        if len(_BLOCK_LAYOUTS) < 4096:
            _BLOCK_LAYOUTS[key] = layout
    return layout


_BLOCK_LAYOUTS: dict[tuple[int, int, int, str], struct.Struct] = {}


# byte -> its 8 bits as booleans, least significant first
_BITS8 = tuple(tuple(bool(b >> j & 1) for j in range(8)) for b in range(256))


_KINDS = tuple(TokenKind)
_DECODE_ERRORS = (msgspec.DecodeError, KeyError, ValueError, TypeError, IndexError, struct.error)


class PackedAlternatives:
    """The top-k alternatives of one block's tokens, as the file has them.

    A reader that only follows a run (the app) leaves them packed: building the
    Alt objects was a third of decoding, and only the token under the cursor
    ever shows them.  :meth:`of` unpacks one token's."""

    __slots__ = ("seqs", "starts", "blob", "offset", "m", "id_code", "vocab")

    def __init__(self, seqs: list[int], starts: list[int], blob: bytes, offset: int, m: int, id_code: str,
                 vocab: dict[int, bytes]) -> None:
        self.seqs = seqs  # the block's token seqs, ascending
        self.starts = starts  # token j's alternatives are [starts[j], starts[j + 1])
        self.blob, self.offset, self.m, self.id_code, self.vocab = blob, offset, m, id_code, vocab

    def of(self, seq: int) -> list[Alt] | None:
        """The alternatives of the token ``seq``; None when it is not in this block."""
        j = bisect.bisect_left(self.seqs, seq)
        if j == len(self.seqs) or self.seqs[j] != seq:
            return None
        a, b = self.starts[j], self.starts[j + 1]
        if a == b:
            return []
        size = struct.calcsize(self.id_code)
        ids = struct.unpack_from(f"<{b - a}{self.id_code}", self.blob, self.offset + a * size)
        probs = struct.unpack_from(f"<{b - a}e", self.blob, self.offset + self.m * size + a * 2)
        bits = self.blob[self.offset + self.m * (size + 2):]
        masked = [bool(bits[i >> 3] >> (i & 7) & 1) for i in range(a, b)]
        vocab = self.vocab
        return [Alt(i, vocab.get(i, b""), p, k) for i, p, k in zip(ids, probs, masked)]


class FrameDecoder:
    """Inverse of :class:`FrameEncoder`.

    ``alternatives=False``: tokens of format-2 blocks come without their top-k
    (``top`` is an empty tuple); :attr:`packed` collects them, packed, for
    ``TraceStore.extend_recorded`` and ``TraceStore.alternatives``."""

    def __init__(self, *, alternatives: bool = True) -> None:
        self._dec = msgspec.msgpack.Decoder()
        self._ev_dec = msgspec.msgpack.Decoder(AnyEvent)
        self.alternatives = alternatives
        self.packed: list[PackedAlternatives] = []
        self.vocab: dict[int, bytes] = {}
        self._t = 0
        self._text_len = 0
        self._seq = 0  # next seq, for decode_frames

    def decode_frames(self, data: bytes, pos: int, name: str,
                      max_events: int | None = None) -> tuple[list[AnyEvent], int, int]:
        """Complete frames from ``pos`` on, up to ``max_events`` events:
        (events, bytes of an incomplete last frame, position reached).

        The loop state is kept in locals: reading a long trace is dominated by
        this loop.  Seqs continue across calls, so a file can be decoded in
        chunks.
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
        limit = seq + max_events if max_events is not None else 1 << 62
        block = self._block
        while pos < end and seq < limit:
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
                if tag == BLOCK:
                    got, t, text_len = block(frame, seq, t, text_len)
                    events += got
                    seq += len(got)
                elif tag == TOKEN:
                    _, dt, node_id, pos_delta, lat, mask, blob = frame
                    t += dt
                    text_pos = text_len + pos_delta
                    ev = unpack(blob, seq, t, node_id, text_pos, lat, mask)
                    text_len = text_pos + len(ev.bytes)
                    append(ev)
                    seq += 1
                elif tag == VOCAB:
                    if type(frame[2]) is not bytes:
                        raise TypeError("token bytes that are not bytes")
                    vocab[frame[1]] = frame[2]
                elif tag == EVENT:
                    t += frame[1]
                    ev = ev_dec(frame[2])
                    if isinstance(ev, Backtrack):
                        text_len = ev.pos if ev.pos >= 0 else max(0, text_len - len(ev.bytes))
                    elif isinstance(ev, Token):
                        text_len = ev.pos + len(ev.bytes)
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

    def take_packed(self) -> list[PackedAlternatives]:
        """The packed alternatives decoded since the last call."""
        packed, self.packed = self.packed, []
        return packed

    def _block(self, frame: list, seq: int, t: int, text_len: int) -> tuple[list[AnyEvent], int, int]:
        """The events of one BLOCK frame, and the time and text length after them.

        Tokens column by column at C speed: one struct call, then map and
        accumulate, and map(Token, ...) over the columns; the few other events
        one by one."""
        _, n, m, codes, blob, vids, vdata, other_index, others = frame
        vocab = self.vocab
        lazy = not self.alternatives
        n_tok = n - len(other_index)
        if (not (0 < n <= 1 << 20 and 0 <= n_tok and 0 <= m <= len(blob)) or (m and not n_tok)
                or len(codes) != _N_INT_COLS
                or len(others) != len(other_index) or not all(map(isinstance, vdata, repeat(bytes)))):
            raise ValueError("bad block")
        if vids:
            if lazy and not vocab.keys().isdisjoint(vids):
                # an id's bytes change: packed alternatives keep the table they were written with
                self.vocab = vocab = dict(vocab)
            vocab.update(zip(vids, vdata))
        layout = _block_layout(n, n_tok, m, codes)
        if len(blob) != layout.size + (m + 7) // 8:
            raise ValueError("bad block")
        if lazy:  # everything but the alternatives' ids and probabilities
            head = _block_layout(n, n_tok, 0, codes)
            alt_at = head.size
            v = head.unpack_from(blob)
        else:
            v = layout.unpack_from(blob)
        ts = list(accumulate(v[:n], initial=t))
        del ts[0]
        toks: list = []
        if n_tok:
            nodes, pos_deltas, lats, masks, ids, allowed, kinds, ks = (v[n + i * n_tok:n + (i + 1) * n_tok]
                                                                        for i in range(8))
            e = n + 8 * n_tok
            probs, probs_raw, alt_ids, alt_probs = v[e:e + n_tok], v[e + n_tok:e + 2 * n_tok], v[
                e + 2 * n_tok:e + 2 * n_tok + m], v[e + 2 * n_tok + m:]
            data = list(map(vocab.__getitem__, ids))
            lens = list(map(len, data))
            pos = list(accumulate(map(add, pos_deltas, chain((text_len,), lens))))
            text_len = pos[-1] + lens[-1]
            starts = list(accumulate(ks, initial=0))
            if starts[-1] != m or min(kinds) < 0 or max(kinds) >= len(_KINDS):
                raise ValueError("bad block")
            if lazy:
                tops = repeat(())
            else:
                masked = chain.from_iterable(map(_BITS8.__getitem__, blob[layout.size:]))
                alts = list(map(Alt, alt_ids, map(vocab.__getitem__, alt_ids), alt_probs, masked))
                tops = list(map(alts.__getitem__, map(slice, starts, starts[1:])))
            toks = list(map(Token, ids, data, nodes, pos, map(_KINDS.__getitem__, kinds), probs, probs_raw,
                            tops, lats, masks, allowed))
        events = toks
        if other_index:
            if other_index[-1] >= n or any(map(ge, other_index, other_index[1:])):
                raise ValueError("bad block")
            events = list(toks)
            insert = events.insert
            for i, ev in zip(other_index, map(self._ev_dec.decode, others)):
                insert(i, ev)
        deque(map(setattr, events, repeat("seq"), count(seq)), 0)
        deque(map(setattr, events, repeat("t_us"), ts), 0)
        if lazy and m:
            self.packed.append(PackedAlternatives(list(map(_SEQ, toks)), starts, blob, alt_at, m, codes[9], vocab))
        return events, ts[-1], text_len

    def _unpack_token(self, blob: bytes, seq: int, t_us: int, node_id: int, pos: int, lat: int,
                      mask: int) -> Token:
        return unpack_token(blob, self.vocab, seq, t_us, node_id, pos, lat, mask)


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
    return enc.header() + enc.encode_batch(list(events))


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
            encode = self._enc.encode_batch
            while True:
                batch = self._store.since(self._written, WRITE_CHUNK)
                if not batch:
                    break
                self._fh.write(encode(batch))
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
