"""Format 1's TOKEN frame blob, read (no longer written): a token and its top-k in one packed string.

Layout: kind byte (kind | _WIDE | _SELF), k; token id and allowed + 1 (3 bytes
each, 4 with _WIDE); prob, prob_raw (f32); the alternatives' ids (top[0]'s
left out with _SELF: it is the token itself); their probabilities (f16); their
masked flags as a bit set.
"""

from __future__ import annotations

import struct
from typing import Callable

from .events import Alt, Token, TokenKind

_WIDE = 0x80  # kind byte flag: token ids take 4 bytes instead of 3
_SELF = 0x40  # kind byte flag: top[0] is the token itself (greedy), its id is not repeated
_KINDS = tuple(TokenKind)


def unpack_token(blob: bytes, vocab: dict[int, bytes], seq: int, t_us: int, node_id: int, pos: int, lat: int,
                 mask: int) -> Token:
    key = (blob[0] & (_WIDE | _SELF), blob[1])
    unpack = _UNPACKERS.get(key) or _make_unpacker(*key)
    return unpack(blob, vocab, seq, t_us, node_id, pos, lat, mask)


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
