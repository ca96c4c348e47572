"""The token stream: a LineList (scroll view on Textual's line API).

Only visible lines are drawn.  Line starts come from :class:`TokenLayout`
(computed once per width, extended as tokens arrive); a drawn line is kept in
an LRU keyed by what can change it, so scrolling and live appends redraw only
the lines that changed.  The view shows the store up to the cursor seq:
tokens after it are not drawn, tokens a backtrack took back before it are
struck through (or hidden).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from itertools import repeat

from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.cache import LRUCache
from textual.message import Message
from textual.strip import Strip

from tracing import progress as load_progress

from guidance_tui.widgets.colors import Palette
from guidance_tui.state.cursor import At
from guidance_tui.widgets.line_list import LineList
from guidance_tui.state.branch_marks import BranchMarks
from guidance_tui.state.layout import LABEL_PAD, TokenLayout, label_text
from guidance_tui.state.token_index import NEVER, TokenIndex
from guidance_tui.state.token_text import NEWLINE, glyphs


MEDIAN_SLACK = 0.1  # the latency median tokens are drawn against changes when it moves more than this


@dataclass
class ViewOptions:
    color_metric: str = "probability"
    underline_metric: str = "latency"
    show_whitespace: bool = False
    hide_backtracked: bool = False


class TokenView(LineList, can_focus=True):
    """Tokens laid out as wrapped text, coloured by a metric."""

    DEFAULT_CSS = """
    TokenView {
        overflow-y: scroll;
        overflow-x: hidden;
    }
    """

    class TokenClicked(Message):
        """The user clicked token ``index`` (or a role label before it)."""

        def __init__(self, index: int) -> None:
            super().__init__()
            self.index = index

    def __init__(self, index: TokenIndex, palette: Palette, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.index = index
        self.palette = palette
        self.options = ViewOptions()
        self.marks = BranchMarks(index)  # where the stream jumps to another branch
        self.layout_ = TokenLayout(index, 80, self.marks)
        self.seq = -1  # cursor
        self.selected = -1
        self.highlight: tuple[int, int] | None = None  # seq span of the highlighted node
        self.show_caret = True
        self._style_gen = 0
        self._hidden_count = -1  # backtracks counted into the hidden set (hide mode)
        self._rewrapped = False  # wrapped again for a new width: on_resize brings the selection into view
        self._cache: LRUCache[tuple, Strip] = LRUCache(256)
        self._lines = 0
        self._median = 0.0

    # -- state from the app --------------------------------------------
    def show_at(self, at: At) -> None:
        self.update_view(at.seq, at.token, scroll=at.scroll)

    def set_palette(self, palette: Palette) -> None:
        self.palette = palette
        self._restyle()

    def set_options(self, **changes) -> None:
        relayout = "hide_backtracked" in changes and changes["hide_backtracked"] != self.options.hide_backtracked
        for k, v in changes.items():
            setattr(self.options, k, v)
        if relayout:
            self._hidden_count = -1
            self._relayout()
        if "latency" in (self.options.color_metric, self.options.underline_metric):
            self._median = self.index.median_latency()  # every line is drawn again below
        self._restyle()

    def set_highlight(self, span: tuple[int, int] | None) -> None:
        if span != self.highlight:
            self.highlight = span
            self._restyle()

    def _restyle(self) -> None:
        self._style_gen += 1
        self.refresh()

    def _relayout(self, repaint: bool = True) -> None:
        """Wrap again from the first token, at the content width.  Every line may
        have changed: the lines Textual keeps from the last paint are dropped too
        (``repaint``), unless this is called while painting them."""
        width = max(4, self.scrollable_content_region.width or self.size.width or 80)
        hidden = self.index.hidden_upto(self.seq) if self.options.hide_backtracked else ()
        self._hidden_count = self.index.backtracks_at(self.seq) if self.options.hide_backtracked else -1
        self.layout_.reset(width, hidden)
        self._cache.clear()
        self._update_size()
        if repaint:
            self.refresh()

    def _fit_width(self, width: int | None = None, repaint: bool = True) -> None:
        """Wrap again when the content width is no longer the layout's.

        Textual gives the widget its new size and paints it before the Resize
        event arrives, so a resize (the first layout of all included) is
        checked where lines are drawn, not only in :meth:`on_resize`: a line
        wrapped for another width would lose its end to the crop, and stay so
        until something redrew it."""
        if width is None:
            width = self.scrollable_content_region.width
        if width and max(4, width) != self.layout_.width:
            self._relayout(repaint)
            self._rewrapped = True

    def update_view(self, seq: int, selected: int, *, scroll: str | None = None) -> None:
        """Show the store up to ``seq`` with token ``selected`` marked.

        ``scroll``: "end" puts the last line at the bottom, "follow" keeps it in
        view while a run streams in, "selected"
        brings the selected token into view, None leaves scrolling alone.
        Only the lines that can have changed are redrawn.
        """
        idx = self.index
        old_seq, old_sel, old_lines = self.seq, self.selected, self._lines
        full = False
        marked = self.marks.update()
        if marked is not None:  # a branch starts at a token that may be laid out already
            self.layout_.truncate_from(marked)
            self._cache.clear()
            full = True
        if self.options.hide_backtracked:
            k = idx.backtracks_at(seq)
            if k != self._hidden_count:
                lo, hi = sorted((k, max(0, self._hidden_count)))
                changed = [bt.first_removed for bt in idx.backtracks[lo:hi]]
                self.layout_.hidden = idx.hidden_upto(seq)
                self._hidden_count = k
                if changed:
                    self.layout_.truncate_from(min(changed))
                self._cache.clear()
                full = True
        self.seq = seq
        self.selected = selected
        if "latency" in (self.options.color_metric, self.options.underline_metric):
            median = idx.median_latency()
            # A new median recolours every line (a whole-view repaint): while a run streams
            # in, one within MEDIAN_SLACK of the drawn one changes too few tokens to be worth it.
            drawn = self._median
            if median != drawn and not (0 < drawn and abs(median - drawn) <= MEDIAN_SLACK * drawn):
                self._median = median
                self._style_gen += 1
                full = True
        self._update_size()
        top = self.top_line
        if scroll == "end":
            self.scroll_to_line(self._lines - self.page_height)
        elif scroll == "follow":
            # Following a live run: when the text reaches the bottom, scroll it up by a third
            # of the view at once, so the next frames only add lines (a scroll
            # redraws every line; appending redraws one).
            h = self.page_height
            if self._lines > top + h:
                self.scroll_to_line(self._lines - max(1, (2 * h) // 3))
            elif self._lines <= top:
                self.scroll_to_line(self._lines - h)
        elif scroll == "selected" and selected >= 0:
            self.scroll_to_token(selected)
        if full or self.top_line != top:
            self.refresh()
            return
        self._refresh_changed(old_seq, seq, old_sel, selected, old_lines)

    def _refresh_changed(self, old_seq: int, seq: int, old_sel: int, sel: int, old_lines: int) -> None:
        """Redraw the lines between what the old and the new cursor showed."""
        idx = self.index
        lo_seq, hi_seq = min(old_seq, seq), max(old_seq, seq)
        tokens = [t for t in (old_sel, sel, idx.token_at(lo_seq) + 1, idx.token_at(hi_seq)) if 0 <= t < idx.n]
        # tokens struck or unstruck by backtracks between the two positions: lines grow with
        # tokens, so the first and the last of them bound the lines (a long seek passes thousands)
        a, b = bisect.bisect_right(idx.bt_seqs, lo_seq), bisect.bisect_right(idx.bt_seqs, hi_seq)
        if b - a > 256:  # cheaper to redraw the whole view than to look at each of them
            self.refresh()
            return
        firsts = [bt.removed[0] for bt in idx.backtracks[a:b] if bt.removed]
        if firsts:
            tokens += (min(firsts), max(firsts))
        lay = self.layout_
        lines = [lay.line_of(t) for t in tokens] + [old_lines - 1, self._lines - 1]
        y0, y1 = max(0, min(lines)), max(lines)
        height = self.page_height
        top = self.top_line
        y0, y1 = max(y0, top), min(y1, top + height - 1)
        if y1 - y0 + 1 >= height:
            self.refresh()
        elif y1 >= y0:
            self.refresh_lines(y0, y1 - y0 + 1)

    def scroll_to_token(self, t: int) -> None:
        self.scroll_line_into_view(self.layout_.line_of(t))

    def _visible_lines(self) -> int:
        idx = self.index
        ct = idx.token_at(self.seq)
        if ct < 0:
            return 1
        lay = self.layout_
        lay.extend(ct)
        n = bisect.bisect_right(lay.line_tok, ct)
        lt = lay.line_tok
        if n < len(lt) and lt[n] == ct + 1 and lay.line_off[n] == 0:
            g = glyphs(idx.token(ct).bytes)
            if g.kinds and g.kinds[-1] == NEWLINE:
                n += 1
        return max(1, n)

    def _update_size(self) -> None:
        self._lines = self._visible_lines()
        self.set_line_count(self._lines)

    # -- Textual hooks ---------------------------------------------------
    def on_resize(self, event: events.Resize) -> None:
        self._fit_width()
        if self._rewrapped:  # here or when the new size was first painted
            self._rewrapped = False
            if self.selected >= 0:
                self.scroll_to_token(self.selected)

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        self._fit_width(width, repaint=False)  # (the lines being painted are drawn from the new layout)
        line = self.line_at(y)
        if line >= self._lines:
            return Strip.blank(width, self.palette.base)
        if line == 0 and self.index.token_at(self.seq) < 0:
            return self._empty_state(width)
        key, span = self._line_key(line)
        strip = self._cache.get(key)
        if strip is None:
            strip = self._render(line, span, width)
            self._cache[key] = strip
        return strip

    def _line_key(self, line: int):
        """What line ``line`` looks like depends on: these, and nothing else."""
        idx = self.index
        t0, u0, t1, u1 = span = self.layout_.line_span(line)
        last = min(t1 if u1 > 0 else t1 - 1, idx.n - 1)
        # the last event that changes the line: its last token's arrival, or a backtrack taking one back
        final = idx.seqs[last] if last >= t0 else -1
        if idx.removed_at and last >= t0:
            final = max(final, *map(idx.removed_at.get, range(t0, last + 1), repeat(-1)))
        sel = self.selected if t0 <= self.selected <= last else -1
        cursor = min(self.seq, final)
        caret = self.seq if self._caret_line() == line else -1
        return (line, self.layout_.width, self._style_gen, cursor, sel, caret, t0, u0, t1, u1), span

    def _caret_line(self) -> int:
        if not self.show_caret:
            return -1
        return self._lines - 1

    def _render(self, line: int, span, width: int) -> Strip:
        idx = self.index
        pal = self.palette
        opts = self.options
        t0, u0, t1, u1 = span
        ct = idx.token_at(self.seq)
        last = min(t1 if u1 > 0 else t1 - 1, ct)
        # Neighbouring tokens often look alike: one segment per run of equal style
        # (styles are cached, so "equal" is "the same object").
        texts: list[str] = []
        styles: list[Style] = []

        def add(text: str, style: Style) -> None:
            if styles and styles[-1] is style:
                texts[-1] += text
            else:
                texts.append(text)
                styles.append(style)

        seq = self.seq
        hide = opts.hide_backtracked
        removed_at = idx.removed_at
        metric, umetric = opts.color_metric, opts.underline_metric
        median = self._median  # the one the line cache is keyed on (through _style_gen)
        hl = self.highlight
        seqs, kinds, probs, lats, data = idx.seqs, idx.kind, idx.prob, idx.latency, idx.data
        ws = opts.show_whitespace
        selected = self.selected
        background, underlined, token_style = pal.background, pal.underlined, pal.token_style
        plain = pal.plain_style  # the common case: a whole token, nothing struck, selected or faded
        for t in range(t0, last + 1):
            struck = removed_at.get(t, NEVER) <= seq if removed_at else False
            if struck and hide:
                continue
            label = self.layout_.label_at(t) if t == t0 and u0 == 0 else None
            if label is not None:
                add(label_text(label), pal.label)
                add(" " * LABEL_PAD, pal.base)
            g = glyphs(data[t])
            a0 = u0 if t == t0 else 0
            a1 = u1 if t == t1 else len(g.plain)
            kind = kinds[t]
            p, lat = probs[t], lats[t]
            bg = background(metric, kind, p, lat, median)
            ul = underlined(umetric, kind, p, lat, median)
            text = g.visible if ws else g.plain
            sel = t == selected
            faded = hl is not None and not (hl[0] <= seqs[t] <= hl[1])
            if not ws and g.plain_runs:
                # one run: blanks need no style of their own when whitespace is not shown
                add(text[a0:a1], plain(bg, kind, ul) if not (struck or sel or faded)
                    else token_style(bg, kind, underline=ul, struck=struck, selected=sel, faded=faded))
                continue
            for a, b, part in g.runs(a0, a1):
                add(text[a:b], token_style(bg, kind, underline=ul, struck=struck, selected=sel, faded=faded,
                                           part=part))
        if self._caret_line() == line and not self._run_finished_at_cursor():
            add("▏", pal.cursor)
        strip = Strip([Segment(text, style) for text, style in zip(texts, styles) if text])
        strip = strip.extend_cell_length(width, pal.base)
        return strip.crop(0, width) if strip.cell_length > width else strip

    def _empty_state(self, width: int) -> Strip:
        """No token at the cursor yet: the caret, and what the engine is doing meanwhile (loading a
        model, converting it, building its tokenizer), the newest progress line of the trace."""
        pal = self.palette
        segments = []
        if self.show_caret and not self._run_finished_at_cursor():
            segments.append(Segment("▏", pal.cursor))
        text = load_progress.line_at(self.index.store, self.seq)
        if text:
            segments.append(Segment(" " + text, pal.label))
        strip = Strip(segments).extend_cell_length(width, pal.base)
        return strip.crop(0, width) if strip.cell_length > width else strip

    def _run_finished_at_cursor(self) -> bool:
        end = self.index.store.run_end()
        return end is not None and end.seq <= self.seq

    # -- mouse -----------------------------------------------------------
    def token_at_offset(self, x: int, y: int) -> int | None:
        """The token drawn at content cell (x, y) of the view, scroll included."""
        line = self.line_at(y)
        if line >= self._lines or line < 0:
            return None
        idx = self.index
        t0, u0, t1, u1 = self.layout_.line_span(line)
        ct = idx.token_at(self.seq)
        last = min(t1 if u1 > 0 else t1 - 1, ct)
        cx = 0
        hide = self.options.hide_backtracked
        for t in range(t0, last + 1):
            if hide and idx.is_removed(t, self.seq):
                continue
            label = self.layout_.label_at(t) if t == t0 and u0 == 0 else None
            if label is not None:
                cx += len(label_text(label)) + LABEL_PAD
                if x < cx:
                    return t
            g = glyphs(idx.token(t).bytes)
            a0 = u0 if t == t0 else 0
            a1 = u1 if t == t1 else len(g.plain)
            w = (a1 - a0) if g.widths is None else sum(g.widths[a0:a1])
            if cx <= x < cx + w:
                return t
            cx += w
        return None

    def on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is None:
            return
        t = self.token_at_offset(offset.x, offset.y)
        if t is not None:
            self.post_message(self.TokenClicked(t))
