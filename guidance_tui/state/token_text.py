"""How a token's bytes look on screen: one display character per cell unit.

Whitespace is kept distinguishable (``·`` for a space, ``→`` for a tab, ``⏎``
for a newline when visible whitespace is on; blanks of the same width when it
is off, so the layout never changes with the toggle).  Control characters
become their Unicode "control pictures"; bytes that are not complete UTF-8
(a token that ends mid-character) are shown as ``<0xNN>``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from rich.cells import get_character_cell_size

TEXT, SPACE, NEWLINE, BYTES, CONTROL = 0, 1, 2, 3, 4

_CONTROL_PICTURES = {c: chr(0x2400 + c) for c in range(32) if c not in (9, 10)}
_CONTROL_PICTURES[127] = "\u2421"
_PLAIN = str.maketrans({9: " ", 10: " ", **_CONTROL_PICTURES})
_VISIBLE = str.maketrans({32: "·", 9: "→", 10: "⏎", **_CONTROL_PICTURES})


@dataclass(frozen=True, slots=True)
class Glyphs:
    """A token's cells: ``plain`` and ``visible`` have one character per unit."""

    plain: str  # whitespace as blanks
    visible: str  # whitespace as glyphs
    kinds: bytes  # TEXT/SPACE/NEWLINE/BYTES/CONTROL per unit
    widths: tuple[int, ...] | None  # cells per unit; None when every unit is one cell

    @property
    def plain_runs(self) -> bool:
        """True when only text and whitespace: one style covers the whole token."""
        return BYTES not in self.kinds and CONTROL not in self.kinds

    @property
    def width(self) -> int:
        return len(self.plain) if self.widths is None else sum(self.widths)

    def runs(self, start: int = 0, end: int | None = None):
        """(start, end, kind) runs of equal kind within [start, end)."""
        kinds = self.kinds
        end = len(kinds) if end is None else end
        i = start
        while i < end:
            k = kinds[i]
            j = i + 1
            while j < end and kinds[j] == k:
                j += 1
            yield i, j, k
            i = j


def _kind_of(ch: str) -> int:
    if ch == " " or ch == "\t":
        return SPACE
    if ch == "\n":
        return NEWLINE
    o = ord(ch)
    if o < 32 or o == 127:
        return CONTROL
    return TEXT


def _units(data: bytes) -> list[tuple[str, int]]:
    """(character, kind) units; undecodable bytes become <0xNN> units."""
    try:
        text = data.decode("utf-8")
        return [(ch, _kind_of(ch)) for ch in text]
    except UnicodeDecodeError:
        pass
    out: list[tuple[str, int]] = []
    i = 0
    while i < len(data):
        for j in range(len(data), i, -1):
            try:
                piece = data[i:j].decode("utf-8")
            except UnicodeDecodeError:
                continue
            out.extend((ch, _kind_of(ch)) for ch in piece)
            i = j
            break
        else:
            out.extend((ch, BYTES) for ch in f"<0x{data[i]:02X}>")
            i += 1
    return out


@lru_cache(maxsize=1 << 16)
def glyphs(data: bytes) -> Glyphs:
    """Display cells for one token's bytes (cached: a vocabulary repeats)."""
    if data.isascii():
        plain = data.decode("ascii")
        kinds = bytes(_kind_of(ch) for ch in plain) if not plain.isalnum() else bytes(len(plain))
        return Glyphs(plain.translate(_PLAIN), plain.translate(_VISIBLE), kinds, None)
    units = _units(data)
    raw = "".join(ch for ch, _ in units)
    kinds = bytes(k for _, k in units)
    widths = tuple(max(0, get_character_cell_size(ch)) if k == TEXT else 1 for ch, k in units)
    plain = raw.translate(_PLAIN)
    visible = raw.translate(_VISIBLE)
    if any(w != 1 for w in widths):
        # Zero-width characters (combining marks, joiners) would make a cell
        # disappear from the layout: show them as a visible placeholder.
        plain = "".join("◌" if w == 0 else c for c, w in zip(plain, widths))
        visible = "".join("◌" if w == 0 else c for c, w in zip(visible, widths))
        widths = tuple(w or 1 for w in widths)
        return Glyphs(plain, visible, kinds, None if all(w == 1 for w in widths) else widths)
    return Glyphs(plain, visible, kinds, None)
