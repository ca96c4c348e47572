"""Token detail: what the model saw when it produced one token.

Probability after and before the grammar mask (each labelled; a remote
server's one number says which it is), the top-k before the mask (with the
ones the grammar masked) and the top-k after it (the allowed tokens,
renormalised; one list when the mask removed none of them), latency, mask
time, the size of the allowed set, the node the token belongs to and how that
node stopped, and whether a backtrack later took the token back.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.cells import cell_len, set_cell_size
from rich.text import Text
from textual.strip import Strip
from textual.widget import Widget

from tracing import Alt, Token
from tracing.tree import TraceTree

from guidance_tui.widgets.colors import KIND_NAMES
from guidance_tui.widgets.strips import Run, runs_strip
from guidance_tui.state.token_index import TokenIndex
from guidance_tui.state.token_text import glyphs
from guidance_tui.state.cursor import At
from guidance_tui.widgets.styles import Styles


BAR_W = 6
PROB_W = 7


def fmt_prob(p: float) -> str:
    if p != p:
        return "?"
    if p >= 0.9995:
        return "100%"
    if p < 0.001:
        return f"{p:.1e}" if p > 0 else "0%"
    return f"{p * 100:.1f}%"


def fmt_us(us: int) -> str:
    if us <= 0:
        return "–"
    if us < 1000:
        return f"{us} µs"
    if us < 1_000_000:
        return f"{us / 1000:.1f} ms"
    return f"{us / 1e6:.2f} s"


def token_repr(data: bytes, limit: int = 24) -> str:
    """A token's text with visible whitespace, shortened to ``limit`` cells."""
    text = glyphs(data).visible
    return text if len(text) <= limit else text[: limit - 1] + "…"


def prob_bar(p: float, width: int = 6) -> str:
    if p != p or p <= 0:
        return " " * width
    eighths = int(round(min(1.0, p) * width * 8))
    full, rest = divmod(eighths, 8)
    return ("█" * full + ("" if rest == 0 else "▏▎▍▌▋▊▉"[rest - 1])).ljust(width)


_CONSOLE = None


def _wrap_console():
    """A console to wrap text with, app or no app (plain_text in tests)."""
    global _CONSOLE
    if _CONSOLE is None:
        import io

        from rich.console import Console

        _CONSOLE = Console(file=io.StringIO(), color_system=None)
    return _CONSOLE


@dataclass(frozen=True, slots=True)
class Wrapped:
    """A row of one style that wraps onto more lines when the pane is narrow."""

    text: str
    style: str


@dataclass(frozen=True, slots=True)
class Flow:
    """Groups of runs side by side, two cells apart, a group moving to the next line when it does not fit."""

    groups: tuple[tuple[Run, ...], ...]


Row = list[Run] | Wrapped | Flow  # a one-line row (cut with "…" when too long), a wrapped one, or a flow


class DetailPane(Widget):
    """Shows one token; :meth:`show` is called by the app when the selection moves.

    The rows are built once per shown token as (text, style) runs and drawn as
    Strips on Textual's line API: a seek redraws eleven short rows, not a Rich
    renderable through the visual pipeline."""

    def __init__(self, index: TokenIndex, trace: TraceTree, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.index = index
        self.trace = trace
        self.text_styles = Styles()
        self._shown: tuple | None = None
        self.shown_token = -1
        self._rows: list[Row] = []
        self._sections: list[tuple[Row, list[Row]]] = []  # alternatives: (header, rows) before / after the mask
        self._drawn_at: tuple | None = None  # (width, base style) _lines_at_width and _strips are for
        self._lines_at_width: list[list[Run]] = []
        self._strips: dict[int, Strip] = {}

    def show_at(self, at: At, *, force: bool = False) -> None:
        if self.display:
            self.show(at.token, at.seq, force=force)

    def apply_styles(self, styles: Styles) -> None:
        self.text_styles = styles
        self._shown = None  # the rows carry their styles: build them again
        self.refresh()

    def show(self, t: int, seq: int, *, force: bool = False) -> None:
        key = (t, seq if t >= 0 and self.index.removed_at.get(t, -1) >= 0 else 0,
               self._node_close_key(t, seq), self.text_styles)
        if key == self._shown and not force:
            return
        self._shown = key
        self.shown_token = t
        self._rows = self.render_token(t, seq)
        self._drawn_at = None
        self.refresh()  # a fixed-height pane: no re-layout of the screen

    def _lines(self, width: int, height: int | None = None) -> list[list[Run]]:
        """The rows as lines of runs ``width`` cells wide: wrapped rows wrap, the others stay one line.
        The alternatives' lists share the ``height`` left under the other rows (None: no limit)."""
        lines: list[list[Run]] = []
        for row in self._rows:
            lines.extend(self._row_lines(row, width))
        sections = self._sections
        if not sections:
            return lines
        counts = [len(rows) for _, rows in sections]
        if height is not None:  # share what is left: each list keeps its header and as many rows as fit
            left = max(0, height - len(lines) - len(sections))
            give = [0] * len(sections)
            while left > 0 and any(g < n for g, n in zip(give, counts)):
                for k in range(len(sections)):
                    if left > 0 and give[k] < counts[k]:
                        give[k] += 1
                        left -= 1
            counts = give
        for (head, rows), n in zip(sections, counts):
            lines.extend(self._row_lines(head, width))
            for row in rows[:n]:
                lines.extend(self._row_lines(row, width))
        return lines

    @staticmethod
    def _row_lines(row: Row, width: int) -> list[list[Run]]:
        if isinstance(row, Wrapped):
            return [[(part.plain, row.style)] for part in Text(row.text).wrap(_wrap_console(), max(1, width))]
        if isinstance(row, Flow):
            lines: list[list[Run]] = [[]]
            x = 0
            for group in row.groups:
                w = sum(cell_len(t) for t, _ in group)
                if x and x + 2 + w > width:
                    lines.append([])
                    x = 0
                if x:
                    lines[-1].append(("  ", ""))
                    x += 2
                lines[-1].extend(group)
                x += w
            return lines
        return [row]

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        base = self.visual_style.rich_style
        if self._drawn_at != (width, base, self.size.height):  # _rows changed (show cleared this) or the pane did
            self._drawn_at = (width, base, self.size.height)
            self._lines_at_width = self._lines(width, self.size.height or None)
            self._strips.clear()
        strip = self._strips.get(y)
        if strip is None:
            lines = self._lines_at_width
            strip = runs_strip(lines[y], width, base) if y < len(lines) else Strip.blank(width, base)
            self._strips[y] = strip
        return strip

    def plain_text(self, width: int = 60) -> str:
        """What the pane shows, as plain text (tests, screen readers)."""
        out = []
        for runs in self._lines(width):
            text = "".join(t for t, _ in runs)
            out.append((text if cell_len(text) <= width else set_cell_size(text, width - 1) + "…").rstrip())
        return "\n".join(out) + "\n"

    def _node_close_key(self, t: int, seq: int):
        if t < 0:
            return None
        node = self.trace.by_id.get(self.index.token(t).node_id)
        return None if node is None or node.close_seq is None else node.close_seq <= seq

    def render_token(self, t: int, seq: int) -> list[Row]:
        """The pane's rows for token ``t`` at cursor ``seq`` (and its border title)."""
        c = self.text_styles
        muted = c.muted
        idx = self.index
        self.border_title = "Token"
        self._sections = []
        if t < 0 or t >= idx.n:
            return [Wrapped("No token at the cursor yet.", muted)]
        tok: Token = idx.token(t)
        kind = int(tok.kind)
        self.border_title = f"Token {t + 1:,} of {idx.n:,}"
        rows: list[Row] = []
        rows.append([(f" {token_repr(tok.bytes)} ", c.chip),
                     (f"  {KIND_NAMES.get(kind, '?')}", c.for_kind(KIND_NAMES.get(kind, ""))),
                     (f"  id {tok.id}" if tok.id >= 0 else "  id ?", muted)])  # -1: the engine did not say (guidance bridge)
        text = glyphs(tok.bytes)
        if 3 in text.kinds:  # raw bytes: a character split across tokens
            rows.append(Wrapped(f"bytes {tok.bytes.hex(' ')}  (partial UTF-8)", muted))
        if kind != 0:
            rows.append(Flow(self._prob_groups(tok)))
            allowed = [("allowed ", muted), ("?" if tok.allowed < 0 else f"{tok.allowed:,}",
                                              c.accent if tok.allowed == 1 else "")]
            if tok.allowed > 1 and idx.vocab_size:
                allowed.append((f" of {idx.vocab_size:,}", muted))
            rows.append(Flow((((fmt_us(tok.latency_us), ""),), (("mask ", muted), (fmt_us(tok.mask_us), "")),
                              tuple(allowed))))
        node = self.trace.by_id.get(tok.node_id)
        if node is not None and node.kind != "root":
            row = [(f"{node.kind} ", muted), (node.name or "", "bold")]
            if node.close_seq is not None and node.close_seq <= seq:
                row += [(" · stop ", muted), (node.stop_reason or "end", "")]
            else:
                row.append((" · open", c.accent))
            rows.append(row)
        bt = idx.backtrack_of(t)
        if bt is not None and bt.seq <= seq:
            row = [(f"↶ taken back by backtrack {bt.rank + 1}", c.warning)]
            if bt.reason:
                row.append((f" ({bt.reason})", muted))
            rows.append(row)
        top = idx.store.alternatives(tok.seq)
        self._sections = []
        if top:
            after = tok.after_mask()
            if after is top:  # the mask removed none of them: one list
                self._sections.append(self._alt_section("top-k: the mask removed none", tok, top))
            else:
                self._sections.append(self._alt_section("top-k before the mask", tok, top))
                if after:
                    self._sections.append(self._alt_section("after the mask (allowed)", tok, after))
                elif tok.prob == tok.prob and tok.prob_raw == tok.prob_raw and tok.prob_raw > 0 and \
                        any(not a.masked for a in top):  # an older trace: the allowed ones above, rescaled
                    scale = tok.prob / tok.prob_raw  # the mask renormalises every allowed token alike
                    kept = [Alt(a.id, a.bytes, min(1.0, a.prob * scale), False) for a in top if not a.masked]
                    self._sections.append(self._alt_section("after the mask (rescaled)", tok, kept))
                else:
                    self._sections.append((Wrapped("after the mask: not recorded in this trace", muted), []))
        elif kind == 1:
            rows.append(Wrapped("no top-k recorded", muted))
        return rows

    def _prob_groups(self, tok: Token) -> tuple[tuple[Run, ...], ...]:
        """The token's probability, saying which side of the grammar mask each number is from."""
        muted = self.text_styles.muted
        pk = int(getattr(tok, "prob_kind", 0))

        def p(x: float) -> Run:
            return (fmt_prob(x) if x == x else "unknown", "bold")

        if pk == 1:  # a server's number from before the mask
            return ((("p ", muted), p(tok.prob_raw), (" before mask", muted)), (("after: not given", muted),))
        if pk == 3:
            return ((("p ", muted), p(tok.prob), (" after mask and sampling", muted)),)
        if pk == 4:
            return ((("p ", muted), p(tok.prob), (" (the server does not say which)", muted)),)
        groups: tuple[tuple[Run, ...], ...] = ((("p ", muted), p(tok.prob), (" after mask", muted)),)
        if tok.prob_raw == tok.prob_raw and pk == 0:
            groups += (((fmt_prob(tok.prob_raw), ""), (" before", muted)),)
        return groups

    def _alt_section(self, title: str, tok: Token, alts) -> tuple[Row, list[Row]]:
        """A header row and one row per alternative (bar, probability, masked / chosen)."""
        c = self.text_styles
        muted = c.muted
        name_w = max(6, min(16, max(cell_len(token_repr(a.bytes, 16)) for a in alts)))
        head: Row = [(f" # {title}", muted)]
        rows: list[Row] = []
        for rank, alt in enumerate(alts, 1):
            chosen = alt.id == tok.id if tok.id >= 0 else alt.bytes == tok.bytes
            row = [(f"{rank:>2} ", muted),
                   (set_cell_size(token_repr(alt.bytes, name_w), name_w), "bold" if chosen else ""),
                   (" ", ""),
                   (prob_bar(alt.prob, BAR_W), c.error if alt.masked else c.bar),
                   (" ", ""),
                   (fmt_prob(alt.prob).rjust(PROB_W), muted if alt.masked else "")]
            if alt.masked:
                row.append((" masked", c.error))
            elif chosen:
                row.append((" ◂", c.accent))
            rows.append(row)
        return head, rows
