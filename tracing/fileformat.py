"""The trace file: a header, then length-prefixed, checksummed msgpack frames.

Layout (format 4)::

    MAGIC (8 bytes) | format version (u16 little-endian) | frames...
    frame = LEB128 length n | CRC-32 of the payload (u32 little-endian) | payload (n bytes)

The payload is a msgpack array ``[tag, ...]``.  ``BLOCK`` [3, n, m, codes,
columns, vocab_ids, vocab_bytes, other_index, other_events, seq, t_us, pos,
m2, m3] holds ``n`` consecutive events: the tokens among them column by
column (``m`` top-k alternatives in all), each integer column in the
narrowest type that holds it (``codes``: one struct code per column, one of
``BbHhTIiq``, where ``T`` is three bytes stored as a u16 column then a u8
column), with the vocabulary entries (token id -> bytes) the block
introduces; every other event msgpack-encoded with its index in the block.
A token's kind column holds ``kind | prob_kind << 2``.  Its after-mask
alternatives (``Token.top_allowed``) take one column value each
(``kx << 4 | p << 1 | d``: the first ``p`` are its top-k's unmasked ones, in
order, so only the ``kx`` after them store ids, ``m2`` in all; ``d``: their
probabilities are the top-k's times the token's ``prob / prob_raw`` within
f16 precision, else stored, ``m3`` f16 probabilities in all).  ``EVENT``
[2, t_us, event, seq] is one event on its own (a token whose own id and an
alternative's disagree on their bytes, or whose after-mask list a block
cannot say).  A frame says the seq of its first event and the time and text
position its deltas start from (``t_us``, ``pos``: a token's position is a
delta from the previous token's), so every frame can be read on its own.
Data only: no pickle anywhere.  Format 3 is the same without ``m2, m3``, the
after-mask column and ids, ``T`` and probability kinds (a BLOCK of 12).

Damage.  A reader checks every frame: its checksum, then that it holds only
what a writer writes (column codes, sizes, token kinds, ids the vocabulary
knows, tokens of nodes that were opened).  A bad frame is skipped, the good
ones around it are kept, and the damage is reported once, as a
:class:`FrameDamage` (a one-line :class:`TraceFormatError`) that names the
byte offset where it starts and how many events were lost (the next good
frame's seq says).  When the length of a damaged frame is intact, exactly
that frame is skipped; when the length itself is damaged, reading resumes at
the first later offset where an intact frame starts (its checksum holds);
consecutive bad frames are one damaged part.  After a loss, tokens whose bytes
were introduced in the lost part read as U+FFFD (:data:`LOST_BYTES`), and
tokens may name nodes whose opening was lost.  A file cut short loses only
its incomplete last frame (``dropped_bytes``): that is a truncation, not
damage.  Every reader (``read_trace``, the replay loader, a follower of a
growing file fed in any chunks) comes to the same verdict: the same events
kept, the same damage at the same offsets.

Formats 1, 2 and 3 are still read (their tokens have LOCAL probabilities and
no after-mask list).  Formats 1 and 2 have no checksum, and their frames are
deltas of the previous one, so at the first frame that fails the checks
reading stops there (the good frames before it are kept) with a
:class:`FrameDamage` that says the rest could not be read.  Format 2 framed
``LEB128 length | payload``, and its BLOCK was [3, n, m, codes, columns,
vocab_ids, vocab_bytes, other_index, other_events] with positions relative to
where the previous token ended, its EVENT [2, dt_us, event].  Format 1 wrote a
``TOKEN`` frame [1, dt_us, node_id, pos_delta, latency_us, mask_us, blob] per
token, an ``EVENT`` frame per other event and ``VOCAB`` [0, id, bytes]
frames.

Why blocks of columns: a reader (the app following a live run) does no
Python work per token, only C-level unpacking and ``map`` over each block.
The checksum (zlib's CRC-32) costs about 1 % of reading and writing.
"""

from __future__ import annotations

import bisect
import contextlib
import gc
import os
import re
import stat
import struct
import threading
import zlib
from collections import deque
from dataclasses import dataclass, field
from itertools import accumulate, chain, compress, count, filterfalse, repeat
from operator import add, and_, attrgetter, ge, is_, is_not, lshift, mul, not_, or_, rshift, sub
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Sequence

import msgspec

from .events import (
    FORMAT_VERSION, Alt, AnyEvent, Backtrack, Message, NodeOpen, ProbKind, Token, TokenKind, safe_text,
)
from .format1 import unpack_token

MAGIC = b"\x89GTTRC\r\n"
HEADER = struct.Struct("<8sH")
VOCAB, TOKEN, EVENT, BLOCK = 0, 1, 2, 3  # VOCAB and TOKEN: format 1 only
BLOCK_MAX = 512  # events per BLOCK frame
LOST_BYTES = "\ufffd".encode()  # the bytes of a token whose vocabulary entry was in a lost frame
_U32 = struct.Struct("<I")
_LEB_MAX = 5  # bytes of a frame length (35 bits)


class TraceFormatError(ValueError):
    """The file is not a trace this version can read; the message is one line."""


class FrameDamage(TraceFormatError):
    """A damaged part of a trace: skipped (``resumed``: where reading went on), or
    where reading stopped (``resumed`` None: formats 1 and 2).  ``lost``: events
    lost, None when unknown (nothing good came after).  One line."""

    def __init__(self, name: str, offset: int, resumed: int | None, reason: str, lost: int | None = None) -> None:
        super().__init__(name, offset)
        self.name, self.offset, self.resumed, self.reason, self.lost = name, offset, resumed, reason, lost

    def __str__(self) -> str:
        if self.resumed is None:
            return (f"{self.name}: damaged frame at byte {self.offset} ({self.reason}): "
                    "the rest of the file cannot be read")
        if self.resumed == self.offset:
            return f"{self.name}: {_events(self.lost)} missing before byte {self.offset}"
        lost = f"{_events(self.lost)} lost" if self.lost is not None else "an unknown number of events lost"
        return (f"{self.name}: damaged frame at byte {self.offset} ({self.reason}): skipped "
                f"{self.resumed - self.offset} bytes, {lost}")


def _events(n: int | None) -> str:
    return f"{n} event" if n == 1 else f"{n} events"


def lost_events(skipped: Sequence[FrameDamage]) -> str:
    """The events lost, in words: N, at least N, or an unknown number."""
    known = sum(d.lost or 0 for d in skipped)
    if not any(d.lost is None for d in skipped):
        return f"{_events(known)} lost"
    return f"at least {_events(known)} lost" if known else "an unknown number of events lost"


def damage_note(skipped: Sequence[FrameDamage], unknown_bytes: int = 0) -> str | None:
    """One line for a reader's damage (``FrameDecoder.skipped``), None for none."""
    if not skipped:
        return None
    first = skipped[0]
    if len(skipped) == 1:
        note = str(first)
    else:
        skips = [d for d in skipped if d.resumed is not None]
        note = (f"{first.name}: {len(skips)} damaged parts skipped, the first at byte {first.offset} "
                f"({first.reason}): {lost_events(skips)}")
        if skipped[-1].resumed is None:
            note += f"; the rest of the file from byte {skipped[-1].offset} cannot be read"
    if unknown_bytes:
        note += (f"; {unknown_bytes} later token{'s' if unknown_bytes != 1 else ''} show as \ufffd "
                 "(their bytes were lost)")
    return note


class _Bad(Exception):
    """A frame that fails a check; the message says which, in a few words."""


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


def _sanitized(obj):
    """``obj`` with every string made encodable (see :func:`tracing.events.safe_text`); ``obj`` itself if
    nothing changed.  Only called for events that failed to encode: the normal path costs nothing."""
    t = type(obj)
    if t is str:
        return safe_text(obj)
    if t is list:
        new = list(map(_sanitized, obj))
        return new if any(map(is_not, new, obj)) else obj
    if t is dict:
        items = [(_sanitized(k), _sanitized(v)) for k, v in obj.items()]
        if any(a is not k or b is not v for (a, b), (k, v) in zip(items, obj.items())):
            return dict(items)
        return obj
    if isinstance(obj, msgspec.Struct):
        changes = {}
        for name in obj.__struct_fields__:
            value = getattr(obj, name)
            new = _sanitized(value)
            if new is not value:
                changes[name] = new
        return msgspec.structs.replace(obj, **changes) if changes else obj
    return obj


_FAILED = object()
_T_SAFE = 1 << 62  # a time that leaves room for deltas in 64 bits


class FrameEncoder:
    """Turns events (in order) into frames; keeps the vocabulary it has written.

    No event stops it: a string that is not valid Unicode is recorded as
    :func:`tracing.events.safe_text` shows it, and an event that still cannot
    be encoded (an integer past 64 bits) is recorded as a Message that says so
    (``replaced`` counts them).  ``version`` 2 or 3 writes an older format (for
    tests; they have no place for ``top_allowed`` and ``prob_kind``)."""

    def __init__(self, version: int = FORMAT_VERSION) -> None:
        if version not in (2, 3, 4):
            raise ValueError(f"cannot write trace format {version}")
        self.version = version
        self._enc = msgspec.msgpack.Encoder()
        self._vocab: dict[int, bytes] = {}
        self._known = self._vocab.items().__contains__  # (id, bytes) already written
        self._prev_t = 0
        self._text_len = 0
        self._seq = 0  # seq of the next event: format 3 frames say theirs
        self.replaced = 0
        self._error: Exception | None = None

    def header(self) -> bytes:
        return HEADER.pack(MAGIC, self.version)

    def _frame(self, payload: bytes) -> bytes:
        if self.version >= 3:
            return _leb128(len(payload)) + _U32.pack(zlib.crc32(payload)) + payload
        return _leb128(len(payload)) + payload

    def skip(self, n: int) -> None:
        """``n`` events will never be written (the writer could not): readers count them as lost."""
        self._seq += n

    def encode(self, ev: AnyEvent) -> bytes:
        return self.encode_batch((ev,))

    def encode_batch(self, events: Sequence[AnyEvent]) -> bytes:
        """Frames for ``events``: blocks of up to BLOCK_MAX events."""
        out: list[bytes] = []
        for i in range(0, len(events), BLOCK_MAX):
            self._events(events[i:i + BLOCK_MAX], out)
        return b"".join(out)

    def _try_block(self, events: Sequence[AnyEvent]):
        try:
            return self._block(events)
        except Exception as e:  # a string or a number msgpack cannot hold: see _events
            self._error = e
            return _FAILED

    def _events(self, events: Sequence[AnyEvent], out: list[bytes]) -> None:
        block = self._try_block(events)
        if block is _FAILED:
            fixed = list(map(_sanitized, events))
            if any(map(is_not, fixed, events)):
                block = self._try_block(fixed)
                events = fixed
        if block is not None and block is not _FAILED:
            out.append(block)
        elif len(events) > 1:  # an id with two byte strings, or an event that cannot be encoded: smaller blocks
            half = len(events) // 2
            self._events(events[:half], out)
            self._events(events[half:], out)
        else:
            out.append(self._lone(events[0], block is None))

    def _lone(self, ev: AnyEvent, conflict: bool) -> bytes:
        """One event that no block holds: a token whose own id and an alternative's differ in
        bytes (an EVENT frame), or an event that cannot be encoded (a Message saying so)."""
        if conflict:
            try:
                return self._event_frame(ev)
            except Exception as e:
                self._error = e
        err = self._error
        self.replaced += 1
        t = ev.t_us if type(ev.t_us) is int and -_T_SAFE < ev.t_us < _T_SAFE else self._prev_t
        msg = Message(level="error", text=safe_text(
            f"guidance-tui: a {type(ev).__name__} event could not be recorded ({type(err).__name__}: {err})"))
        msg.seq, msg.t_us = ev.seq if type(ev.seq) is int else -1, t
        block = self._try_block([msg])
        if block is _FAILED or block is None:
            msg.t_us = self._prev_t
            block = self._block([msg])
        return block

    def _event_frame(self, ev: AnyEvent) -> bytes:
        bare = self._bare(ev)
        if self.version >= 3:
            frame = self._frame(self._enc.encode((EVENT, ev.t_us, bare, self._seq)))
        else:
            frame = self._frame(self._enc.encode((EVENT, ev.t_us - self._prev_t, bare)))
        self._prev_t = ev.t_us
        if isinstance(ev, Backtrack):
            self._text_len = ev.pos if ev.pos >= 0 else max(0, self._text_len - len(ev.bytes))
        elif isinstance(ev, Token):
            self._text_len = ev.pos + len(ev.bytes)
        self._seq += 1
        return frame

    def _bare(self, ev: AnyEvent) -> bytes:
        return self._enc.encode(msgspec.structs.replace(ev, seq=-1, t_us=-1))

    def _block(self, events: Sequence[AnyEvent]) -> bytes | None:
        """One BLOCK frame, built with C-level maps (this runs on the producer's
        writer thread); None when the block's vocabulary is inconsistent.  The
        encoder's state changes only once the frame is built."""
        n = len(events)
        is_token = list(map(is_, map(type, events), repeat(Token)))
        other_index = list(compress(count(), map(not_, is_token)))
        others = list(map(self._bare, map(events.__getitem__, other_index)))  # text that cannot be encoded fails first
        toks = list(compress(events, is_token))
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
        if self.version >= 4:
            allowed_alts = list(chain.from_iterable(map(_TOP_ALLOWED, toks)))
            all_ids += map(_ID, allowed_alts)
            all_data += map(_BYTES, allowed_alts)
        vocab = dict(zip(all_ids, all_data))
        if list(map(vocab.__getitem__, all_ids)) != all_data:
            return None  # the same id with different bytes: the block's table cannot say both
        new = sorted(filterfalse(self._known, vocab.items()))
        t0, pos0 = self._prev_t, self._text_len
        dts = list(map(sub, ts, chain((t0,), ts)))
        if self.version >= 3:  # a token's position relative to the previous token's
            pos_deltas = list(map(sub, pos, chain((pos0,), pos)))
        else:  # relative to where the previous token ended
            pos_deltas = list(map(sub, pos, chain((pos0,), map(add, pos, lens))))
        m = len(alts)
        masked = "".join(map("01".__getitem__, map(_MASKED, reversed(alts))))
        kinds = list(map(int, map(_KIND, toks)))
        v4 = self.version >= 4
        if v4:
            after = _after_mask_columns(toks, vocab)
            if after is None:
                return None  # an after-mask alternative marked masked: an EVENT frame says it exactly
            shared, al_ids, al_probs = after
            kinds = list(map(or_, kinds, map(lshift, map(int, map(_PROB_KIND, toks)), repeat(2))))
            int_cols = (dts, list(map(_NODE, toks)), pos_deltas, list(map(_LATENCY, toks)), list(map(_MASK, toks)),
                        ids, list(map(_ALLOWED, toks)), kinds, list(map(len, tops)), shared, alt_ids, al_ids)
            codes = "".join(map(_int_code_v4, int_cols))
            columns = _block_layout(n, len(toks), m, codes, len(al_ids), len(al_probs)).pack(
                *chain.from_iterable(map(_packed_ints, int_cols[:10], codes)), *map(_PROB, toks),
                *map(_PROB_RAW, toks), *_packed_ints(alt_ids, codes[10]), *map(_PROB, alts),
                *_packed_ints(al_ids, codes[11]), *al_probs)
        else:
            int_cols = (dts, list(map(_NODE, toks)), pos_deltas, list(map(_LATENCY, toks)), list(map(_MASK, toks)),
                        ids, list(map(_ALLOWED, toks)), kinds, list(map(len, tops)), alt_ids)
            codes = "".join(map(_int_code, int_cols))
            columns = _block_layout(n, len(toks), m, codes).pack(
                *chain(*int_cols[:9]), *map(_PROB, toks), *map(_PROB_RAW, toks), *alt_ids, *map(_PROB, alts))
        bits = int(masked, 2).to_bytes((m + 7) // 8, "little") if m else b""
        fields = (BLOCK, n, m, codes, columns + bits, [i for i, _ in new], [b for _, b in new], other_index, others)
        if self.version >= 3:
            fields += (self._seq, t0, pos0)
        if v4:
            fields += (len(al_ids), len(al_probs))
        frame = self._frame(self._enc.encode(fields))
        self._vocab.update(new)
        self._prev_t = ts[-1]
        if toks:
            self._text_len = pos[-1] + lens[-1]
        self._seq += n
        return frame


_T_US, _ID, _BYTES, _POS, _TOP = (attrgetter(a) for a in ("t_us", "id", "bytes", "pos", "top"))
_NODE, _LATENCY, _MASK, _ALLOWED, _KIND = (attrgetter(a) for a in ("node_id", "latency_us", "mask_us", "allowed",
                                                                      "kind"))
_PROB, _PROB_RAW, _MASKED, _SEQ = (attrgetter(a) for a in ("prob", "prob_raw", "masked", "seq"))
_TOP_ALLOWED, _PROB_KIND = attrgetter("top_allowed"), attrgetter("prob_kind")
# struct codes for an integer column, narrowest first, with the range each holds
_INT_CODES = (("B", 0, 0xFF), ("b", -0x80, 0x7F), ("H", 0, 0xFFFF), ("h", -0x8000, 0x7FFF),
              ("I", 0, 0xFFFFFFFF), ("i", -0x80000000, 0x7FFFFFFF), ("q", -1 << 63, (1 << 63) - 1))
# Format 4 adds "T": three bytes (token ids of a 262k vocabulary), stored as a u16 column then a u8 column.
_INT_CODES_V4 = _INT_CODES[:4] + (("T", 0, 0xFFFFFF),) + _INT_CODES[4:]
_CODES = frozenset(c for c, _, _ in _INT_CODES)  # exactly the codes a writer writes
_CODES_V4 = _CODES | {"T"}
_N_INT_COLS = 10  # dt; tokens' node, pos delta, latency, mask time, id, allowed, kind, k; alternative ids
_N_INT_COLS_V4 = 12  # the same with, after k, the after-mask column; then after-mask ids after alternative ids
_INT_SIZE = {"B": 1, "b": 1, "H": 2, "h": 2, "T": 3, "I": 4, "i": 4, "q": 8}
# Format 4's kind column: kind | prob_kind << 2
_KIND_CODES_V4 = frozenset(k | p << 2 for k in range(len(TokenKind)) for p in range(len(ProbKind)))
_PROB_KINDS = tuple(ProbKind)
_F16 = struct.Struct("<e")
_F32X2 = struct.Struct("<ff")
_PREFIX_MAX = 7  # after-mask alternatives a token may take from its top-k (3 bits)
_F16_REL = 2.0 ** -11  # the relative error of a probability stored in f16


def _int_code(col: Sequence[int], table=_INT_CODES) -> str:
    if not col:
        return "B"
    lo, hi = min(col), max(col)
    for code, a, b in table:
        if a <= lo and hi <= b:
            return code
    raise ValueError(f"an integer in a token is out of the 64-bit range: {lo if lo < 0 else hi}")


def _int_code_v4(col: Sequence[int]) -> str:
    return _int_code(col, _INT_CODES_V4)


def _packed_ints(col: Sequence[int], code: str):
    """A column's values as its struct format takes them (a "T" column: low 16 bits, then high 8)."""
    if code != "T":
        return col
    return chain(map(and_, col, repeat(0xFFFF)), map(rshift, col, repeat(16)))


def _col_fmt(count: int, code: str) -> str:
    return f"{count}H{count}B" if code == "T" else f"{count}{code}"


def _take(v: Sequence, i: int, count: int, code: str) -> tuple[Sequence[int], int]:
    """One integer column from an unpacked tuple ``v`` at ``i``: (the column, where the next starts)."""
    if code != "T":
        return v[i:i + count], i + count
    return list(map(or_, v[i:i + count], map(lshift, v[i + count:i + 2 * count], repeat(16)))), i + 2 * count


def _ints_at(blob, offset: int, total: int, code: str, a: int, b: int) -> Sequence[int]:
    """Items ``a:b`` of an integer column of ``total`` items stored at ``offset``."""
    if code != "T":
        return struct.unpack_from(f"<{b - a}{code}", blob, offset + a * _INT_SIZE[code])
    lo = struct.unpack_from(f"<{b - a}H", blob, offset + 2 * a)
    hi = struct.unpack_from(f"<{b - a}B", blob, offset + 2 * total + a)
    return list(map(or_, lo, map(lshift, hi, repeat(16))))


def _block_layout(n: int, n_tok: int, m: int, codes: str, m2: int = 0, m3: int = 0) -> struct.Struct:
    """Columns of a BLOCK: time deltas of all n events; eight integer columns of
    the n_tok tokens (format 4: nine), their probabilities and raw probabilities
    (f32); the ids and probabilities (f16) of the m alternatives; format 4: the
    ids of the m2 after-mask alternatives not taken from the top-k, and the m3
    after-mask probabilities (f16) stored (see :func:`_after_mask_columns`)."""
    key = (n, n_tok, m, codes, m2, m3)
    layout = _BLOCK_LAYOUTS.get(key)
    if layout is None:
        if len(codes) == _N_INT_COLS_V4:
            fmt = ("<" + _col_fmt(n, codes[0]) + "".join(_col_fmt(n_tok, c) for c in codes[1:10])
                   + f"{n_tok}f{n_tok}f" + _col_fmt(m, codes[10]) + f"{m}e" + _col_fmt(m2, codes[11]) + f"{m3}e")
        else:
            fmt = (f"<{n}{codes[0]}" + "".join(f"{n_tok}{c}" for c in codes[1:9])
                   + f"{n_tok}f{n_tok}f{m}{codes[9]}{m}e")
        layout = struct.Struct(fmt)
        if len(_BLOCK_LAYOUTS) < 4096:
            _BLOCK_LAYOUTS[key] = layout
    return layout


_BLOCK_LAYOUTS: dict[tuple, struct.Struct] = {}


# byte -> its 8 bits as booleans, least significant first
_BITS8 = tuple(tuple(bool(b >> j & 1) for j in range(8)) for b in range(256))


_KINDS = tuple(TokenKind)


def _after_mask_columns(toks: Sequence[Token], vocab: dict[int, bytes]):
    """Format 4's after-mask alternatives of a block's tokens: (one value per token, the ids
    stored, the probabilities stored); None when one is marked masked (no block can say so).

    Each token's value is ``kx << 4 | p << 1 | d``.  The after-mask list starts with
    the top-k's unmasked alternatives, in order (what the mask leaves of the best
    tokens is the best of what it allows): its first ``p`` entries are those, and
    only the ``kx`` after them store their ids.  ``d``: the first ``p`` probabilities
    are not stored either, since they are the top-k's (f16) times the token's
    ``prob / prob_raw`` (f32), within f16 precision; else all ``p + kx`` are stored."""
    shared = [0] * len(toks)
    ids: list[int] = []
    probs: list[float] = []
    for j, tok in enumerate(toks):
        allowed = tok.top_allowed
        if not allowed:
            continue
        if any(map(_MASKED, allowed)):
            return None
        unmasked = [a for a in tok.top if not a.masked]
        p, most = 0, min(len(allowed), len(unmasked), _PREFIX_MAX)
        while p < most and allowed[p].id == unmasked[p].id:
            p += 1
        d = 0
        if p:
            prob, raw = _F32X2.unpack(_F32X2.pack(tok.prob, tok.prob_raw))
            if raw > 0 and prob == prob and raw != float("inf"):
                scale = prob / raw
                d = 1
                for a, u in zip(allowed[:p], unmasked):
                    want = a.prob
                    got = _F16.unpack(_F16.pack(u.prob))[0] * scale
                    if not abs(got - want) <= abs(want) * _F16_REL:  # a NaN fails too
                        d = 0
                        break
        rest = allowed[p:]
        shared[j] = len(rest) << 4 | p << 1 | d
        ids += map(_ID, rest)
        probs += map(_PROB, rest if d else allowed)
    return shared, ids, probs


def _after_mask_list(top: Sequence[Alt], value: int, ids: Sequence[int], probs: Sequence[float], prob: float,
                     prob_raw: float, get: Callable[[int, bytes], bytes]) -> list[Alt]:
    """One token's after-mask alternatives from its share of the columns (see :func:`_after_mask_columns`):
    ``ids`` its stored ids, ``probs`` its stored probabilities, ``get(id, default)`` an id's bytes."""
    p, d = value >> 1 & 7, value & 1
    prefix = list(compress(top, map(not_, map(_MASKED, top))))[:p] if p else ()  # a damaged count: what there is
    if not p:
        out = []
    elif d:
        scale = prob / prob_raw if prob_raw > 0 and prob == prob and prob_raw != _INF else _NAN
        out = list(map(Alt, map(_ID, prefix), map(_BYTES, prefix), map(mul, map(_PROB, prefix), repeat(scale)),
                       repeat(False)))
    else:
        out = list(map(Alt, map(_ID, prefix), map(_BYTES, prefix), probs[:p], repeat(False)))
        probs = probs[p:]
    if ids:
        out += map(Alt, ids, map(get, ids, repeat(LOST_BYTES)), probs, repeat(False))
    return out


_INF, _NAN = float("inf"), float("nan")


def _all(items: list, kind: type) -> bool:
    """Every item is exactly of type ``kind`` (a bool is not an int here)."""
    return not items or set(map(type, items)) == {kind}


class PackedAlternatives:
    """The top-k (and format 4's after-mask) alternatives of one block's tokens, as the file has them.

    A reader that only follows a run (the app) leaves them packed: building the
    Alt objects was a third of decoding, and only the token under the cursor
    ever shows them.  :meth:`unpack` unpacks one token's."""

    __slots__ = ("seqs", "starts", "blob", "offset", "m", "id_code", "shared", "m2", "after_code", "m3", "vocab",
                 "intro", "serial", "_after_starts")

    def __init__(self, seqs: list[int], starts: list[int], blob: bytes, offset: int, m: int, id_code: str,
                 shared: Sequence[int] | None = None, m2: int = 0, after_code: str = "B", m3: int = 0, *,
                 vocab: dict[int, bytes], intro: dict[int, int] | None = None, serial: int = 0) -> None:
        self.seqs = seqs  # the block's token seqs, ascending
        self.starts = starts  # token j's alternatives are [starts[j], starts[j + 1])
        self.blob, self.offset, self.m, self.id_code, self.vocab = blob, offset, m, id_code, vocab
        # format 4: each token's after-mask value (None: no token has any), the m2 ids and m3 probabilities stored
        self.shared, self.m2, self.after_code, self.m3 = shared, m2, after_code, m3
        self._after_starts = None
        # id -> the block that introduced it: an id introduced after this block reads as lost, as it
        # does when the block is read with its alternatives (the vocabulary as it was then)
        self.intro, self.serial = intro, serial

    def _bytes_of(self, i: int, default: bytes = LOST_BYTES) -> bytes:
        intro = self.intro
        if intro is None or intro.get(i, _LATE) <= self.serial:
            return self.vocab.get(i, default)
        return default

    def of(self, seq: int) -> list[Alt] | None:
        """The top-k alternatives of the token ``seq``; None when it is not in this block."""
        got = self.unpack(seq)
        return None if got is None else got[0]

    def unpack(self, seq: int, prob: float = float("nan"), prob_raw: float = float("nan")):
        """(top-k, after-mask alternatives) of the token ``seq`` (whose ``prob`` and
        ``prob_raw`` are given); None when it is not in this block."""
        j = bisect.bisect_left(self.seqs, seq)
        if j == len(self.seqs) or self.seqs[j] != seq:
            return None
        a, b = self.starts[j], self.starts[j + 1]
        m, size = self.m, _INT_SIZE[self.id_code]
        bytes_of = self._bytes_of
        top: list[Alt] = []
        if a != b:
            ids = _ints_at(self.blob, self.offset, m, self.id_code, a, b)
            probs = struct.unpack_from(f"<{b - a}e", self.blob, self.offset + m * size + a * 2)
            bits = self.blob[len(self.blob) - (m + 7) // 8:]
            masked = [bool(bits[i >> 3] >> (i & 7) & 1) for i in range(a, b)]
            top = list(map(Alt, ids, map(bytes_of, ids), probs, masked))
        value = self.shared[j] if self.shared is not None else 0
        if not value:
            return top, []
        if self._after_starts is None:
            kx = list(map(rshift, self.shared, repeat(4)))
            stored = [k + (0 if v & 1 else v >> 1 & 7) for k, v in zip(kx, self.shared)]
            self._after_starts = (list(accumulate(kx, initial=0)), list(accumulate(stored, initial=0)))
        id_starts, prob_starts = self._after_starts
        at = self.offset + m * (size + 2)
        ids = _ints_at(self.blob, at, self.m2, self.after_code, id_starts[j], id_starts[j + 1])
        at += self.m2 * _INT_SIZE[self.after_code]
        pa, pb = prob_starts[j], prob_starts[j + 1]
        probs = struct.unpack_from(f"<{pb - pa}e", self.blob, at + 2 * pa)
        return top, _after_mask_list(top, value, ids, probs, prob, prob_raw, bytes_of)


_LATE = 1 << 62


# The first two bytes of a payload: an EVENT array of 4, a BLOCK array of 12 (format 3) or 14 (format 4).
_SYNC = re.compile(rb"\x94\x02|\x9c\x03")
_SYNC_V4 = re.compile(rb"\x94\x02|\x9e\x03")
_WAIT = object()  # a decision that needs more of a growing file
_RESYNC_TRIES = 1 << 20  # candidate frames checked while looking for an intact one
_RESYNC_BYTES = 1 << 28  # bytes checksummed doing so (about 0.1 s)


def _leb_exact(data: bytes, p: int, size: int) -> int | None:
    """The length at ``p`` when it takes exactly ``size`` bytes, minimally encoded; else None."""
    n = 0
    for i in range(size):
        b = data[p + i]
        last = i == size - 1
        if bool(b & 0x80) == last or (last and size > 1 and b == 0):
            return None
        n |= (b & 0x7F) << (7 * i)
    return n


class FrameDecoder:
    """Inverse of :class:`FrameEncoder`, for one file read from its first frame on.

    ``alternatives=False``: tokens of blocks come without their top-k (``top``
    is an empty tuple); :attr:`packed` collects them, packed, for
    ``TraceStore.extend_recorded`` and ``TraceStore.alternatives``.
    ``keep_blocks``: :attr:`blocks` collects each BLOCK frame read with no loss
    before it as a :class:`BlockRef`, so a store can forget its tokens.
    ``version``: the file's (:meth:`read_header` sets it; a follower of a file
    this version writes may leave the default).  :attr:`skipped` lists the
    damage found so far (see the module docstring), :attr:`unknown_bytes` the
    tokens read after a loss whose bytes were lost with it."""

    def __init__(self, *, alternatives: bool = True, version: int = FORMAT_VERSION, keep_blocks: bool = False) -> None:
        self._dec = msgspec.msgpack.Decoder()
        self.keep_blocks = keep_blocks
        self.blocks: list[BlockRef] = []
        self._as_of: tuple[dict[int, int], int] | None = None  # BlockRef.events: (intro, serial)
        self._ev_dec = msgspec.msgpack.Decoder(AnyEvent)
        self.alternatives = alternatives
        self.version = version
        self.packed: list[PackedAlternatives] = []
        self.vocab: dict[int, bytes] = {}
        self.skipped: list[FrameDamage] = []
        self.unknown_bytes = 0
        self._t = 0
        self._text_len = 0
        self._seq = 0  # next seq handed out: dense, whatever was lost
        self._file_seq = 0  # the seq the next format-3 frame should start at
        self._nodes: set[int] = {0}  # node ids opened so far (0: the run itself)
        self._serial = 0  # blocks read
        self._intro: dict[int, int] = {}  # id -> the block that introduced it (for packed alternatives)
        self._next_at = HEADER.size  # file offset of the next frame
        self._pending: FrameDamage | None = None  # damage no good frame has followed yet
        self._stopped = False

    def read_header(self, data: bytes, name: str) -> int:
        """Check the header at the start of ``data`` and read the rest as its version; its size."""
        self.version = check_header(data, name)
        return HEADER.size

    @property
    def warning(self) -> str | None:
        """One line for the damage found so far, None for none."""
        return damage_note(self.skipped, self.unknown_bytes)

    def decode_frames(self, data: bytes, pos: int, name: str, max_events: int | None = None, *,
                      final: bool = False) -> tuple[list[AnyEvent], int, int]:
        """Complete frames from ``pos`` on, up to ``max_events`` events:
        (events, bytes of an incomplete last frame, position reached).

        Calls continue where the last one stopped: ``data[pos:]`` must be the
        file from there on (a follower passes what it kept plus what the file
        gained).  ``final``: nothing more will come (a whole file, or a writer
        that is gone), so a frame that cannot be complete is damage or a cut,
        not a frame still being written.  Damage never raises: see
        :attr:`skipped`.
        """
        base = self._next_at - pos  # file offset of data[0]
        end = len(data)
        events: list[AnyEvent] = []
        if self._stopped:
            self._next_at = base + end
            return events, 0, end
        crc = self.version >= 3
        limit = self._seq + max_events if max_events is not None else 1 << 62
        view = memoryview(data)
        dropped = 0
        frame = self._frame
        while pos < end and self._seq < limit:
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
                    if shift >= 7 * _LEB_MAX:
                        n = -2
                        break
            if n == -2:  # no writer writes such a length
                if not crc:
                    self._stop(name, base + start, "a corrupt frame length")
                    break
                nxt = self._resync(data, start, end, final)
                if nxt is _WAIT:
                    dropped = end - start
                    break
                if nxt is None:
                    self._stop(name, base + start, "a corrupt frame length")
                    break
                self._damage(name, base + start, base + nxt, "a corrupt frame length")
                pos = nxt
                continue
            body = pos + 4 if crc else pos
            stop = body + n
            if n < 0 or stop > end:  # incomplete: still being written, or cut short, or a damaged length
                if crc and final:
                    nxt = self._resync(data, start, end, True)
                    if nxt is not None:
                        self._damage(name, base + start, base + nxt, "a damaged frame length")
                        pos = nxt
                        continue
                dropped = end - start
                break
            if crc and zlib.crc32(view[body:stop]) != _U32.unpack_from(data, pos)[0]:
                nxt = self._resync(data, start, end, final)
                if nxt is _WAIT:
                    dropped = end - start
                    break
                self._damage(name, base + start, base + (stop if nxt is None else nxt), "a checksum mismatch")
                pos = stop if nxt is None else nxt
                continue
            try:
                got = frame(view[body:stop], name, base + start)
            except Exception as e:  # any content no writer writes: the frame is bad
                reason = str(e) if isinstance(e, _Bad) else "undecodable data"
                if not crc:
                    self._stop(name, base + start, reason)
                    break
                self._damage(name, base + start, base + stop, reason)
                pos = stop
                continue
            events += got
            pos = stop
        self._next_at = base + (end - dropped if dropped else end if self._stopped else pos)
        return events, dropped, end if dropped or self._stopped else pos

    def take_packed(self) -> list[PackedAlternatives]:
        """The packed alternatives decoded since the last call."""
        packed, self.packed = self.packed, []
        return packed

    def take_blocks(self) -> list["BlockRef"]:
        """The blocks decoded since the last call (``keep_blocks``), for ``TraceStore.extend_recorded``."""
        blocks, self.blocks = self.blocks, []
        return blocks

    # -- damage ---------------------------------------------------------------------------
    def _damage(self, name: str, offset: int, resumed: int, reason: str) -> None:
        pending = self._pending
        if pending is not None and pending.resumed == offset:  # no good frame since: one damaged part
            pending.resumed = resumed
        else:
            self._pending = FrameDamage(name, offset, resumed, reason)
            self.skipped.append(self._pending)

    def _stop(self, name: str, offset: int, reason: str) -> None:
        pending = self._pending
        if pending is not None and pending.resumed == offset:
            pending.resumed = None
        else:
            self.skipped.append(FrameDamage(name, offset, None, reason))
        self._pending = None
        self._stopped = True

    def _resync(self, data: bytes, start: int, end: int, final: bool):
        """The offset of the first intact format-3 frame after ``start`` (its payload
        starts like an EVENT or a BLOCK, its length is minimal, its checksum holds);
        None when there is none; _WAIT when a growing file may still hold one
        before any found (the same answer as the whole file would give).

        Bounded: a crafted file of false starts stops the search after
        _RESYNC_TRIES candidates or _RESYNC_BYTES checksummed, then the best
        found so far (a growing file: wait for the writer to finish)."""
        best = None
        undecided = end if final else max(start + 1, end - 10)  # a length there may end past the data
        crc32 = zlib.crc32
        view = memoryview(data)
        tries, budget = _RESYNC_TRIES, _RESYNC_BYTES
        for hit in (_SYNC_V4 if self.version >= 4 else _SYNC).finditer(data, start + 6, end):
            h = hit.start()
            if h - 9 > (best if best is not None else undecided):
                break
            for size in range(1, _LEB_MAX + 1):
                p = h - 4 - size
                if p <= start:
                    break
                if best is not None and p >= best:
                    continue
                n = _leb_exact(data, p, size)
                if n is None or n < 2:
                    continue
                # The same candidates come in the same order in every reader.  A growing file counts
                # a frame that may still end past its data at its full length (at most what the whole
                # file costs), and waits when the bound is reached: only the whole file decides then.
                complete = h + n <= end
                tries -= 1
                if complete or not final:
                    budget -= n
                if tries < 0 or budget < 0:
                    return best if final else _WAIT
                if not complete:
                    if not final:
                        undecided = min(undecided, p)
                    continue
                if crc32(view[h:h + n]) == _U32.unpack_from(data, p + size)[0]:
                    best = p
        if best is not None and best < undecided:
            return best
        return None if final else _WAIT

    # -- frames -----------------------------------------------------------------------------
    def _frame(self, payload, name: str, offset: int) -> list[AnyEvent]:
        """The events of one frame; the decoder's state changes only when the whole frame is good."""
        frame = self._dec.decode(payload)
        if type(frame) is not list or not frame:
            raise _Bad("not a frame")
        tag, size = frame[0], len(frame)
        lossy, t_start, len_start = False, self._t, self._text_len
        if self.version >= 3:
            if tag == BLOCK and size == (14 if self.version >= 4 else 12):
                seq0, t0, pos0 = frame[9:12]
            elif tag == EVENT and size == 4:
                seq0, t0, pos0 = frame[3], frame[1], 0
            else:
                raise _Bad("not a frame")
            if type(seq0) is not int or type(t0) is not int or type(pos0) is not int:
                raise _Bad("not a frame")
            if seq0 < self._file_seq:
                raise _Bad("a frame out of order")
            gap = seq0 - self._file_seq
            lossy = bool(self.skipped) or gap > 0
            if tag == BLOCK:
                got, t, text_len, nodes, packed, vocab, unknown = self._block(frame, t0, pos0, lossy)
            else:
                ev = self._event(frame[2], lossy)
                ev.t_us = t0
                got, t, text_len, nodes, packed, vocab, unknown = [ev], t0, self._text_len, _opened(ev), None, None, 0
            if self._pending is not None:
                self._pending.lost = gap
                self._pending = None
            elif gap:
                self.skipped.append(FrameDamage(name, offset, offset, "events missing", gap))
            self._file_seq = seq0 + len(got)
        else:
            if tag == BLOCK and size == 9 and self.version == 2:
                got, t, text_len, nodes, packed, vocab, unknown = self._block(frame, self._t, self._text_len, False)
            elif tag == EVENT and size == 3:
                dt = frame[1]
                if type(dt) is not int:
                    raise _Bad("not a frame")
                ev = self._event(frame[2], False)
                t = ev.t_us = self._t + dt
                text_len = self._text_len
                if isinstance(ev, Backtrack):
                    text_len = ev.pos if ev.pos >= 0 else max(0, text_len - len(ev.bytes))
                elif isinstance(ev, Token):
                    text_len = ev.pos + len(ev.bytes)
                got, nodes, packed, vocab, unknown = [ev], _opened(ev), None, None, 0
            elif tag == TOKEN and size == 7 and self.version == 1:
                _, dt, node_id, pos_delta, lat, mask, blob = frame
                if not _all([dt, node_id, pos_delta, lat, mask], int) or type(blob) is not bytes:
                    raise _Bad("not a frame")
                if node_id not in self._nodes:
                    raise _Bad("a token of a node never opened")
                t = self._t + dt
                text_pos = self._text_len + pos_delta
                if text_pos < 0:
                    raise _Bad("a negative text position")
                ev = unpack_token(blob, self.vocab, self._seq, t, node_id, text_pos, lat, mask)
                text_len = text_pos + len(ev.bytes)
                got, nodes, packed, vocab, unknown = [ev], (), None, None, 0
            elif tag == VOCAB and size == 3 and self.version == 1:
                if type(frame[1]) is not int or type(frame[2]) is not bytes:
                    raise _Bad("not a frame")
                self.vocab[frame[1]] = frame[2]
                return []
            else:
                raise _Bad("not a frame")
        # commit
        deque(map(setattr, got, repeat("seq"), count(self._seq)), 0)
        self._seq += len(got)
        self._t, self._text_len = t, text_len
        if nodes:
            self._nodes.update(nodes)
        if vocab is not None:
            self.vocab = vocab
        if packed is not None:
            toks, extra, serial = packed
            self.packed.append(PackedAlternatives(list(map(_SEQ, toks)), *extra, vocab=self.vocab,
                                                  intro=self._intro, serial=serial))
        if tag == BLOCK:
            self._serial += 1
            if self.keep_blocks and not lossy and got:
                other_index = frame[7]
                self.blocks.append(BlockRef(got[0].seq, len(got), payload, self.version, self.vocab, t_start,
                                            len_start, other_index, [got[i] for i in other_index],
                                            self._intro, self._serial))
        self.unknown_bytes += unknown
        return got

    def _event(self, blob, lossy: bool) -> AnyEvent:
        """One msgpack-encoded event, checked."""
        if type(blob) is not bytes:
            raise _Bad("not a frame")
        ev = self._ev_dec.decode(blob)
        if type(ev) is Token:
            if ev.pos < 0:
                raise _Bad("a negative text position")
            if not lossy and ev.node_id not in self._nodes:
                raise _Bad("a token of a node never opened")
        return ev

    def _block(self, frame: list, t: int, text_len: int, lossy: bool, kept: list | None = None):
        """The events of one BLOCK frame, checked, and what the decoder keeps after it:
        (events, time, text length, nodes opened, packed alternatives, vocabulary, unknown tokens).

        Tokens column by column at C speed: one struct call, then map and
        accumulate, and map(Token, ...) over the columns; the few other events
        one by one.  The vocabulary is updated in place (undone if the block
        turns out bad), or copied when a follower's packed alternatives must
        keep an id's earlier bytes."""
        v3, v4 = self.version >= 3, self.version >= 4
        _, n, m, codes, blob, vids, vdata, other_index, others = frame[:9]
        m2, m3 = frame[12:14] if v4 else (0, 0)
        if (type(n) is not int or type(m) is not int or not 0 < n <= BLOCK_MAX or m < 0
                or type(m2) is not int or type(m3) is not int or m2 < 0 or m3 < 0):
            raise _Bad("bad block sizes")
        if (type(codes) is not str or len(codes) != (_N_INT_COLS_V4 if v4 else _N_INT_COLS)
                or not (_CODES_V4 if v4 else _CODES).issuperset(codes)):
            raise _Bad("bad column codes")
        if (type(blob) is not bytes or type(vids) is not list or type(vdata) is not list or len(vids) != len(vdata)
                or type(other_index) is not list or type(others) is not list or len(others) != len(other_index)
                or not _all(vids, int) or not _all(vdata, bytes) or not _all(other_index, int)):
            raise _Bad("bad block")
        n_tok = n - len(other_index)
        if n_tok < 0 or ((m or m3) and not n_tok) or m + m2 + m3 > len(blob):
            raise _Bad("bad block sizes")
        if other_index and (other_index[0] < 0 or other_index[-1] >= n
                            or any(map(ge, other_index, other_index[1:]))):
            raise _Bad("bad event order")
        layout = _block_layout(n, n_tok, m, codes, m2, m3)
        if len(blob) != layout.size + (m + 7) // 8:
            raise _Bad("bad column sizes")
        event = self._event
        if kept is not None:  # decoded before (BlockRef): the events that are not tokens, and the vocabulary
            other_events, vids = kept, ()
        else:
            other_events = [event(b, lossy) for b in others]
        opened = {ev.node_id for ev in other_events if type(ev) is NodeOpen}
        vocab = self.vocab
        lazy = not self.alternatives
        undo = None
        known = ()
        if vids:
            known = () if vocab.keys().isdisjoint(vids) else vocab.keys() & vids
            if (lazy or self.keep_blocks) and known:
                # an id's bytes change: packed alternatives and kept blocks keep the table they were written with
                vocab = dict(vocab)
            else:
                undo = {i: vocab[i] for i in known}  # and the ids that are new: vids
            vocab.update(zip(vids, vdata))
        try:
            toks, ts, text_len, extra, unknown = self._tokens(
                n, n_tok, m, codes, blob, layout, vocab, t, text_len, frame[11] if v3 else None, opened, lossy,
                m2, m3)
        except BaseException:
            if undo is not None:  # the block is bad: its vocabulary was never there
                for i in vids:
                    vocab.pop(i, None)
                vocab.update(undo)
            raise
        serial = self._serial + 1
        if lazy and vids:  # the block that introduced each new id (an id seen before keeps its own)
            self._intro.update(zip(vids, repeat(serial)) if not known else
                               ((i, serial) for i in vids if i not in known))
        events = toks
        if other_events:
            events = list(toks)
            insert = events.insert
            for i, ev in zip(other_index, other_events):
                insert(i, ev)
        deque(map(setattr, events, repeat("t_us"), ts), 0)
        packed = (toks, extra, serial) if lazy and (m or m3) else None
        return events, ts[-1], text_len, opened, packed, vocab, unknown

    def _tokens(self, n, n_tok, m, codes, blob, layout, vocab, t, text_len, pos0, opened, lossy, m2=0, m3=0):
        """A block's tokens from its columns: (tokens, times of all n events, text length, what a
        follower's PackedAlternatives needs, tokens of unknown bytes)."""
        lazy = not self.alternatives
        v4 = len(codes) == _N_INT_COLS_V4
        alt_at = 0
        if lazy:  # everything but the alternatives' ids and probabilities
            head = _block_layout(n, n_tok, 0, codes)
            alt_at = head.size
            v = head.unpack_from(blob)
        else:
            v = layout.unpack_from(blob)
        dts, i = _take(v, 0, n, codes[0])
        ts = list(accumulate(dts, initial=t))
        del ts[0]
        if not n_tok:
            return [], ts, text_len, None, 0
        cols = []
        for code in codes[1:10 if v4 else 9]:
            col, i = _take(v, i, n_tok, code)
            cols.append(col)
        nodes, pos_deltas, lats, masks, ids, allowed, kinds, ks = cols[:8]
        shared = cols[8] if v4 else None
        prob_kinds = None
        if v4:
            if not _KIND_CODES_V4.issuperset(kinds):
                raise _Bad("a bad token kind")
            if max(kinds) > 3:  # a probability kind other than LOCAL
                prob_kinds = list(map(rshift, kinds, repeat(2)))
                kinds = list(map(and_, kinds, repeat(3)))
        elif min(kinds) < 0 or max(kinds) >= len(_KINDS):
            raise _Bad("a bad token kind")
        if min(ks) < 0:
            raise _Bad("bad alternative counts")
        starts = list(accumulate(ks, initial=0))
        if starts[-1] != m:
            raise _Bad("bad alternative counts")
        has_after = False
        if v4:
            if min(shared) < 0:
                raise _Bad("bad after-mask counts")
            if max(shared):
                has_after = True
                kx = list(map(rshift, shared, repeat(4)))
                ps = list(map(and_, map(rshift, shared, repeat(1)), repeat(7)))
                derived = sum(map(mul, ps, map(and_, shared, repeat(1))))
                if sum(kx) != m2 or sum(kx) + sum(ps) - derived != m3:
                    raise _Bad("bad after-mask counts")
            elif m2 or m3:
                raise _Bad("bad after-mask counts")
        if not lossy and not self._nodes.issuperset(nodes) and not opened.issuperset(set(nodes) - self._nodes):
            raise _Bad("a token of a node never opened")
        unknown = 0
        if lossy:
            unknown = sum(map(not_, map(vocab.__contains__, ids)))
            data = list(map(vocab.get, ids, repeat(LOST_BYTES)))
        else:
            try:
                data = list(map(vocab.__getitem__, ids))
            except KeyError:
                raise _Bad("a token id never introduced") from None
        if pos0 is not None:  # format 3: deltas of the previous token's position
            pos = list(accumulate(pos_deltas, initial=pos0))
            del pos[0]
        else:  # format 2: deltas of where the previous token ended
            lens = list(map(len, data))
            pos = list(accumulate(map(add, pos_deltas, chain((text_len,), lens))))
            text_len = pos[-1] + lens[-1]
        if min(pos) < 0:
            raise _Bad("a negative text position")
        probs, probs_raw = v[i:i + n_tok], v[i + n_tok:i + 2 * n_tok]
        i += 2 * n_tok
        # An alternative's id the vocabulary does not know: formats 1 and 2 have no checksum, so a
        # damaged id is caught here, in every reader alike (a follower unpacks the ids to check
        # them).  Format 3's checksum covers them and its writer introduces every id it writes: a
        # reader skips that check (a follower leaves the ids packed) and shows such bytes as lost.
        id_code = codes[10 if v4 else 9]
        check_alts = m and not lossy and self.version < 3
        if lazy:
            alt_ids = struct.unpack_from(f"<{m}{id_code}", blob, alt_at) if check_alts else ()
        else:
            alt_ids, i = _take(v, i, m, id_code)
        if check_alts and not vocab.keys() >= set(alt_ids):
            raise _Bad("an alternative id never introduced")
        afters = None
        if lazy:
            tops = repeat(())
        else:
            alt_probs = v[i:i + m]
            i += m
            masked = chain.from_iterable(map(_BITS8.__getitem__, blob[layout.size:]))
            alt_bytes = vocab.get
            if self._as_of is not None:  # a block decoded again: ids introduced after it read as lost
                intro, serial = self._as_of
                ids_here = set(alt_ids).union(_take(v, i, m2, codes[11])[0] if v4 else ())
                late = {a for a in ids_here if intro.get(a, _LATE) > serial}
                if late:
                    def alt_bytes(a, default, get=vocab.get):
                        return default if a in late else get(a, default)
            alts = list(map(Alt, alt_ids, map(alt_bytes, alt_ids, repeat(LOST_BYTES)), alt_probs, masked))
            tops = list(map(alts.__getitem__, map(slice, starts, starts[1:])))
            if has_after:
                al_ids, i = _take(v, i, m2, codes[11])
                al_probs = v[i:i + m3]
                afters = []
                ai = pi = 0
                append = afters.append
                for top, value, prob, raw in zip(tops, shared, probs, probs_raw):
                    if not value:
                        append([])
                        continue
                    kx, p = value >> 4, value >> 1 & 7
                    if value & 1 and not kx:  # the common case, inline: every entry from the top-k
                        scale = prob / raw if raw > 0 and prob == prob and raw != _INF else _NAN
                        append([Alt(a.id, a.bytes, a.prob * scale, False) for a in top if not a.masked][:p])
                        continue
                    np_ = kx + (0 if value & 1 else p)
                    append(_after_mask_list(top, value, al_ids[ai:ai + kx], al_probs[pi:pi + np_], prob, raw,
                                            alt_bytes))
                    ai += kx
                    pi += np_
        toks = list(map(Token, ids, data, nodes, pos, map(_KINDS.__getitem__, kinds), probs, probs_raw,
                        tops, lats, masks, allowed))
        if afters is not None:
            deque(map(setattr, toks, repeat("top_allowed"), afters), 0)
        elif lazy:
            deque(map(setattr, toks, repeat("top_allowed"), repeat(())), 0)
        if prob_kinds is not None:
            deque(map(setattr, toks, repeat("prob_kind"), map(_PROB_KINDS.__getitem__, prob_kinds)), 0)
        extra = None
        if lazy:
            extra = (starts, blob, alt_at, m, id_code, shared if has_after else None, m2,
                     codes[11] if v4 else "B", m3)
        return toks, ts, text_len, extra, unknown


class BlockRef:
    """A BLOCK frame a store keeps instead of its tokens: its bytes (a view of the file's),
    what decoding it needs again, and its events that are not tokens (few, and kept)."""

    __slots__ = ("first", "n", "payload", "version", "vocab", "t", "text_len", "other_index", "others", "intro",
                 "serial")

    def __init__(self, first: int, n: int, payload, version: int, vocab: dict[int, bytes], t: int, text_len: int,
                 other_index: list[int], others: list[AnyEvent], intro: dict[int, int], serial: int) -> None:
        self.first, self.n, self.payload, self.version = first, n, payload, version
        # the vocabulary as of this block: a decoder copies it before an id's bytes change, and
        # ``intro`` says which block introduced each id (a later one: an alternative's bytes are lost)
        self.vocab, self.t, self.text_len, self.intro, self.serial = vocab, t, text_len, intro, serial
        self.other_index, self.others = other_index, others

    def other(self, offset: int) -> AnyEvent | None:
        """The event at ``offset`` in the block when it is not a token (kept); else None."""
        j = bisect.bisect_left(self.other_index, offset)
        if j < len(self.other_index) and self.other_index[j] == offset:
            return self.others[j]
        return None

    def events(self, alternatives: bool = False) -> list[AnyEvent]:
        """The block's events, its tokens decoded again (their top-k left out, as a follower reads
        them, unless ``alternatives``), seqs from ``first``."""
        frame = _PLAIN.decode(self.payload)
        dec = FrameDecoder(alternatives=alternatives, version=self.version)
        dec.vocab = self.vocab
        dec._as_of = (self.intro, self.serial)
        v3 = self.version >= 3
        events = dec._block(frame, frame[10] if v3 else self.t, self.text_len, True, self.others)[0]
        deque(map(setattr, events, repeat("seq"), count(self.first)), 0)
        return events


_PLAIN = msgspec.msgpack.Decoder()


def _opened(ev: AnyEvent) -> tuple[int, ...]:
    return (ev.node_id,) if type(ev) is NodeOpen else ()


@dataclass
class TraceFile:
    """What :func:`read_trace` found."""

    events: list[AnyEvent]
    version: int
    dropped_bytes: int  # bytes of an incomplete last frame (a truncated file)
    vocab: dict[int, bytes]
    skipped: list[FrameDamage] = field(default_factory=list)  # damaged parts skipped (see the module docstring)
    unknown_bytes: int = 0  # tokens after a loss whose bytes were lost with it

    @property
    def warning(self) -> str | None:
        """One line for the damage, None for none (a truncation is ``dropped_bytes``)."""
        return damage_note(self.skipped, self.unknown_bytes)


_NOT_REGULAR = ((stat.S_ISDIR, "is a directory"), (stat.S_ISFIFO, "not a regular file (a named pipe)"),
                (stat.S_ISCHR, "not a regular file (a character device)"),
                (stat.S_ISBLK, "not a regular file (a block device)"), (stat.S_ISSOCK, "not a regular file (a socket)"))


def _check_regular(mode: int, name: str) -> None:
    if stat.S_ISREG(mode):
        return
    for test, what in _NOT_REGULAR:
        if test(mode):
            raise TraceFormatError(f"{name}: {what}")
    raise TraceFormatError(f"{name}: not a regular file")


def read_bytes(path: str | os.PathLike) -> bytes:
    """A trace file's bytes; :class:`TraceFormatError` with one line when it cannot be read.

    Anything but a regular file (a FIFO, a device, a directory) is refused
    before it is read, and never opened in a way that could block."""
    name = str(path)
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError, ValueError):  # ValueError: a NUL in the name
        raise TraceFormatError(f"{name}: no such file") from None
    except OSError as e:
        raise TraceFormatError(f"{name}: cannot read ({e.strerror or e})") from None
    _check_regular(mode, name)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise TraceFormatError(f"{name}: no such file") from None
    except OSError as e:
        raise TraceFormatError(f"{name}: cannot read ({e.strerror or e})") from None
    try:
        _check_regular(os.fstat(fd).st_mode, name)  # it may have been replaced since the stat
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb") as fh:
            fd = -1
            return fh.read()
    except OSError as e:
        raise TraceFormatError(f"{name}: cannot read ({e.strerror or e})") from None
    finally:
        if fd >= 0:
            os.close(fd)


def check_header(data: bytes, name: str) -> int:
    """The format version of ``data``; :class:`TraceFormatError` for foreign or newer files."""
    if len(data) < HEADER.size or data[:8] != MAGIC:
        raise TraceFormatError(f"{name}: not a guidance-tui trace file")
    _, version = HEADER.unpack_from(data)
    if version > FORMAT_VERSION:
        raise TraceFormatError(
            f"{name}: written by a newer guidance-tui (format {version}; this version reads up to {FORMAT_VERSION})")
    if version < 1:
        raise TraceFormatError(f"{name}: not a trace format this version reads (format {version})")
    return version


def read_trace(path: str | os.PathLike) -> TraceFile:
    """Read a whole trace file; :class:`TraceFormatError` for a file that is not a trace (or cannot be
    read).  Damage inside a trace does not raise: the good frames are returned, and ``skipped`` says."""
    return decode_trace(read_bytes(path), str(path))


def decode_trace(data: bytes, name: str = "trace") -> TraceFile:
    version = check_header(data, name)
    dec = FrameDecoder(version=version)
    with _gc_paused():  # hundreds of thousands of small objects, none in a cycle
        events, dropped, _ = dec.decode_frames(data, HEADER.size, name, final=True)
    return TraceFile(events, version, dropped, dec.vocab, dec.skipped, dec.unknown_bytes)


@contextlib.contextmanager
def _gc_paused():
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def encode_trace(events: Iterable[AnyEvent], version: int = FORMAT_VERSION) -> bytes:
    enc = FrameEncoder(version)
    return enc.header() + enc.encode_batch(list(events))


def write_trace(path: str | os.PathLike, events: Iterable[AnyEvent]) -> None:
    """Write a whole trace at once (export, tests)."""
    Path(path).write_bytes(encode_trace(events))


WRITE_CHUNK = 512  # events per write while draining a backlog


class TraceWriteError(Exception):
    """The trace writer could not write (the message names the file) or record some events."""


class TraceWriter:
    """Follows a store and appends its events to a file from a background thread.

    Flushes every ``interval`` seconds (a killed process loses at most that),
    and drains everything on :meth:`close`.  The producer never waits on I/O.

    Nothing stops it but the file: text that is not valid Unicode, or an event
    that cannot be encoded, is recorded as the encoder can (see
    :class:`FrameEncoder`).  When writing fails (a full disk: "cannot write
    PATH: No space left on device"), :attr:`error` holds a
    :class:`TraceWriteError`, ``on_error`` is called with it at once (on the
    writer thread, or in :meth:`close`), and nothing more is written; the file
    keeps every frame written before.  Any other failure of a batch is kept
    the same way and the writer goes on with the next batch (the reader
    counts the batch as lost events).  :attr:`error` is the first error,
    :attr:`errors` all of them.  :meth:`close` never raises.
    """

    def __init__(self, path: str | os.PathLike, store, *, interval: float = 0.25,
                 on_written: Callable[[int], None] | None = None,
                 on_error: Callable[[TraceWriteError], None] | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._store = store
        self._interval = interval
        self._on_written = on_written  # called (on the writer thread) with each chunk's event count
        self._on_error = on_error
        self._enc = FrameEncoder()
        self._fh: BinaryIO = open(self.path, "wb")
        try:
            self._fh.write(self._enc.header())
            self._fh.flush()
        except BaseException:
            with contextlib.suppress(OSError):
                self._fh.close()
            raise
        self._written = -1
        self._stop = threading.Event()
        self._io_lock = threading.Lock()
        self.error: TraceWriteError | None = None
        self.errors: list[TraceWriteError] = []
        self.failed = False  # the file could not be written: nothing more will be
        self._thread = threading.Thread(target=self._loop, name="trace-writer", daemon=True)
        self._thread.start()

    @property
    def written_seq(self) -> int:
        return self._written

    def _report(self, err: TraceWriteError) -> None:
        self.errors.append(err)
        if self.error is None:
            self.error = err
        if self._on_error is not None:
            try:
                self._on_error(err)
            except Exception:  # the callback's own failure must not stop the writer
                pass

    def _io_failed(self, e: OSError) -> None:
        self.failed = True
        self._report(TraceWriteError(f"cannot write {self.path}: {e.strerror or e}"))

    def drain(self) -> None:
        """Write and flush everything the store has, including what arrives meanwhile.

        In chunks of WRITE_CHUNK events, each flushed: under a busy producer
        this thread gets the interpreter lock in slices, and a reader of the
        growing file (the app) should see each chunk as soon as it is encoded,
        not when the whole backlog is."""
        with self._io_lock:
            if self._fh.closed or self.failed:
                return
            encode = self._enc.encode_batch
            while True:
                batch = self._store.since(self._written, WRITE_CHUNK)
                if not batch:
                    break
                try:
                    data = encode(batch)
                except Exception as e:  # never expected (the encoder repairs events): lose this batch only
                    self._enc.skip(len(batch))
                    self._written = batch[-1].seq
                    self._report(TraceWriteError(
                        f"cannot record events {batch[0].seq}-{batch[-1].seq} in {self.path}: "
                        f"{type(e).__name__}: {safe_text(str(e))}"))
                    continue
                try:
                    self._fh.write(data)
                    self._fh.flush()
                except OSError as e:
                    self._io_failed(e)
                    return
                self._written = batch[-1].seq
                if self._on_written is not None:
                    self._on_written(len(batch))

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.drain()
            except Exception as e:  # on_written failed, or a bug: keep it, keep writing
                self._report(TraceWriteError(f"trace writer for {self.path}: {type(e).__name__}: {e}"))
            if self.failed:
                return

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        try:
            self.drain()
        except Exception as e:
            self._report(TraceWriteError(f"trace writer for {self.path}: {type(e).__name__}: {e}"))
        with self._io_lock:
            if self._fh.closed:
                return
            try:
                if not self.failed:
                    self._fh.flush()
                    os.fsync(self._fh.fileno())
            except OSError as e:
                self._io_failed(e)
            finally:
                try:
                    self._fh.close()  # after a failed write this flushes (and fails) again: the error is known
                except OSError:
                    pass

    def __enter__(self) -> "TraceWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
