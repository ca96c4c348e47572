"""Wrapping the token stream into screen lines, incrementally.

Lines break at token boundaries (tokens are mostly words with their leading
space, so this is word wrap), inside a token only when it is wider than a line
or holds a newline, and before a role label or a branch mark (see ``branch_marks``).  A line is stored as the
(token, unit) where it starts; everything else is recomputed when the line is
drawn.  Runs of plain ASCII tokens are placed with a bisect over cumulative
widths, so laying out 100k tokens costs a bisect per line, not a Python step
per token.
"""

from __future__ import annotations

import bisect
from array import array
from typing import Sequence

from guidance_tui.state.branch_marks import BranchMarks
from guidance_tui.state.token_index import TokenIndex
from guidance_tui.state.token_text import NEWLINE, glyphs

LABEL_PAD = 1  # blank cell after a role label


def label_text(name: str) -> str:
    return f" {name} "


class TokenLayout:
    """Line starts for the tokens of a :class:`TokenIndex` at one width."""

    def __init__(self, index: TokenIndex, width: int = 80, marks: BranchMarks | None = None) -> None:
        self.index = index
        self.marks = marks  # branch starts: a label before their first token, as a role's
        self.width = max(4, width)
        self.hidden: Sequence[int] = ()  # token indices not shown (sorted)
        self.reset()

    def reset(self, width: int | None = None, hidden: Sequence[int] | None = None) -> None:
        if width is not None:
            self.width = max(4, width)
        if hidden is not None:
            self.hidden = hidden
        self.line_tok = array("q", [0])
        self.line_off = array("q", [0])
        self._t = 0  # next token to place
        self._off = 0  # next unit inside it
        self._x = 0  # cells used on the last line

    # -- queries -------------------------------------------------------
    def label_at(self, t: int) -> str | None:
        """The label drawn before token ``t``: a branch mark, a role name, or both."""
        role = self.index.labels.get(t)
        mark = self.marks.labels.get(t) if self.marks is not None else None
        if mark is None:
            return role
        return mark if role is None else f"{mark} · {role}"

    def line_count(self) -> int:
        return len(self.line_tok)

    def line_of(self, t: int) -> int:
        """The line where token ``t`` starts (placing tokens up to it first)."""
        self.extend(t)
        lt, lo = self.line_tok, self.line_off
        y = bisect.bisect_right(lt, t) - 1
        while y > 0 and lt[y] == t and lo[y] > 0:
            y -= 1
        return max(0, y)

    def line_span(self, y: int) -> tuple[int, int, int, int]:
        """(token, unit) where line ``y`` starts and where the next line starts."""
        lt, lo = self.line_tok, self.line_off
        if y + 1 < len(lt):
            return lt[y], lo[y], lt[y + 1], lo[y + 1]
        return lt[y], lo[y], self._t, self._off

    # -- building ------------------------------------------------------
    def truncate_from(self, t: int) -> None:
        """Forget placement from the line holding token ``t`` on."""
        if t >= self._t and not (t == self._t and self._off):
            return
        y = self.line_of(t) if t < self._t else len(self.line_tok) - 1
        del self.line_tok[y + 1:]
        del self.line_off[y + 1:]
        self._t, self._off, self._x = self.line_tok[y], self.line_off[y], 0

    def _newline(self, t: int, off: int) -> None:
        self.line_tok.append(t)
        self.line_off.append(off)
        self._x = 0

    def extend(self, upto: int | None = None) -> None:
        """Place tokens until token ``upto`` (default: every ingested token) is placed."""
        idx = self.index
        n = idx.n if upto is None else min(idx.n, upto + 1)
        t = self._t
        if t >= n:
            return
        W = self.width
        cum = idx.cum_width
        special = idx.special
        marks = self.marks
        hidden = self.hidden
        off, x = self._off, self._x
        line_tok, line_off = self.line_tok, self.line_off
        while t < n:
            if off == 0:
                s = bisect.bisect_left(special, t)
                nxt_s = special[s] if s < len(special) else n
                h = bisect.bisect_left(hidden, t) if hidden else 0
                nxt_h = hidden[h] if h < len(hidden) else n
                e = min(nxt_s, nxt_h, n, marks.next_from(t) if marks is not None and marks.tokens else n)
                if e > t:
                    # tokens t..e-1 are plain: fit as many as the line takes
                    k = bisect.bisect_right(cum, cum[t] + W - x, t, e + 1) - 1
                    if k > t:
                        x += cum[k] - cum[t]
                        t = k
                        continue
                    if x > 0:  # token t does not fit: wrap before it
                        line_tok.append(t)
                        line_off.append(0)
                        x = 0
                        continue
                    # wider than a whole line: split it below
                elif t == nxt_h:
                    t += 1  # hidden: takes no space
                    continue
            # slow path: one token, unit by unit
            g = glyphs(idx.token(t).bytes)
            units = len(g.plain)
            widths = g.widths
            if off == 0:
                label = self.label_at(t)
                if label is not None:
                    if x > 0:
                        line_tok.append(t)
                        line_off.append(0)
                    x = len(label_text(label)) + LABEL_PAD
                else:
                    head = _width_to_break(g)
                    if x > 0 and x + head > W and head <= W:
                        line_tok.append(t)
                        line_off.append(0)
                        x = 0
            kinds = g.kinds
            u = off
            while u < units:
                w = 1 if widths is None else widths[u]
                if x + w > W and x > 0:
                    line_tok.append(t)
                    line_off.append(u)
                    x = 0
                x += w
                u += 1
                if kinds[u - 1] == NEWLINE:
                    if u < units:
                        line_tok.append(t)
                        line_off.append(u)
                    else:
                        line_tok.append(t + 1)
                        line_off.append(0)
                    x = 0
            t += 1
            off = 0
        self._t, self._off, self._x = t, off, x


def _width_to_break(g) -> int:
    """Cells before the token's first newline (the part that must share a line)."""
    i = g.kinds.find(NEWLINE)
    end = len(g.kinds) if i < 0 else i + 1
    if g.widths is None:
        return end
    return sum(g.widths[:end])
