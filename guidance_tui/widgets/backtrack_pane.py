"""Every backtrack of the run, in words: what was taken back, why, and what came next.

Two lines a backtrack: "removed ⏎ from gen reason", then why (a stop string
matched and is not kept; the grammar re-cut the text; token healing...) and
what came next, which is a replacement only when the engine re-cut the text
(for a stop, an end of sequence or a tool call it is simply what followed,
often the next node's first token).

A line-API list (a long run can backtrack thousands of times).  Backtracks
after the cursor are faded; the latest one at or before the cursor is marked.
Choosing a row (enter or click) moves the timeline cursor to it.
"""

from __future__ import annotations

from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding
from textual.cache import LRUCache
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from guidance_tui.widgets.line_list import LineList
from textual.strip import Strip

from guidance_tui.widgets.offscreen import displayed
from guidance_tui.state.token_index import TokenIndex
from guidance_tui.state.token_text import glyphs
from guidance_tui.state.cursor import At
from guidance_tui.widgets.styles import Styles


LINES = 2  # screen lines per backtrack

# reason -> (why, in words; what the tokens after it are: a replacement, or just what came next)
REASONS = {
    "stop": ("it matched a stop string, which the text does not keep", "next"),
    "eos": ("it ended the model's turn; the end token is not kept", "next"),
    "grammar": ("the grammar re-cut the text into other tokens", "replaced by"),
    "healing": ("token healing: the prompt's last token, cut again with what follows", "replaced by"),
    "tool": ("a tool call, cut out of the text to run the tool", "next"),
}


def _text_of(index: TokenIndex, tokens) -> str:
    return "".join(glyphs(index.token(t).bytes).visible for t in tokens)


def reason_words(reason: str) -> tuple[str, str]:
    """(why, the word for what came after) for a backtrack's ``reason``."""
    return REASONS.get(reason, (f"reason: {reason}" if reason else "no reason recorded", "then"))


class BacktrackList(LineList, can_focus=True):
    """Two lines per backtrack: what was removed and from which node; why, and what came next."""

    DEFAULT_CSS = """
    BacktrackList { overflow-x: hidden; overflow-y: scroll; }
    BacktrackList > .backtrack--cursor { background: $block-cursor-background; color: $block-cursor-foreground; }
    """
    COMPONENT_CLASSES = {"backtrack--cursor"}
    BINDINGS = [
        Binding("up", "move(-1)", "Previous", show=False),
        Binding("down", "move(1)", "Next", show=False),
        Binding("enter", "choose", "Go to backtrack", show=False, id="backtrack-choose"),
    ]

    highlighted: reactive[int] = reactive(-1, always_update=True)

    class Chosen(Message):
        def __init__(self, rank: int, seq: int) -> None:
            super().__init__()
            self.rank = rank
            self.seq = seq

    def __init__(self, index: TokenIndex, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.index = index
        self.seq = -1
        self.text_styles = Styles()
        self._cache: LRUCache[tuple, Strip] = LRUCache(256)
        self._gen = 0
        self._count = 0
        self._stale = False  # the cursor moved while the pane was not displayed
        self._node_names: dict[int, str] = {}  # node id -> "gen reason", read from the store's NodeOpens
        self._opens_seen = 0

    def sync(self) -> None:
        n = len(self.index.backtracks)
        if n != self._count:
            self._count = n
            self._gen += 1  # replacements of the previous rows may have grown
            self.set_line_count(n * LINES, self.size.width)
            self._redraw(scroll=False)

    def set_cursor(self, seq: int) -> None:
        if seq != self.seq:
            before = self.index.backtracks_at(self.seq)
            self.seq = seq
            after = self.index.backtracks_at(seq)
            if before != after:
                self._redraw(scroll=True)

    def _redraw(self, *, scroll: bool) -> None:
        """Redraw (``scroll``: and bring the current backtrack into view) now, or
        when shown again while the pane sits in an inactive tab."""
        if not displayed(self):
            self._stale = True
            return
        self.refresh()
        current = self.index.backtracks_at(self.seq)
        if (scroll or self._stale) and not self.has_focus and current > 0:
            self.scroll_line_into_view((current - 1) * LINES, at=0.5)
        self._stale = False

    def on_show(self) -> None:
        if self._stale:
            self._redraw(scroll=True)

    def show_at(self, at: At) -> None:
        self.set_cursor(at.seq)

    def apply_styles(self, styles: Styles) -> None:
        self.text_styles = styles
        self.restyle()

    def restyle(self) -> None:
        self._gen += 1
        self.refresh()

    def watch_highlighted(self, row: int) -> None:
        if row >= 0:
            self.scroll_line_into_view(row * LINES, at=0.5)
        self.refresh()

    def action_move(self, delta: int) -> None:
        n = len(self.index.backtracks)
        if not n:
            return
        cur = self.highlighted if self.highlighted >= 0 else max(0, self.index.backtracks_at(self.seq) - 1)
        self.highlighted = max(0, min(n - 1, cur + delta))

    def action_choose(self) -> None:
        row = self.highlighted
        if 0 <= row < len(self.index.backtracks):
            self.post_message(self.Chosen(row, self.index.backtracks[row].seq))

    def on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is None:
            return
        row = self.line_at(offset.y) // LINES
        if 0 <= row < len(self.index.backtracks):
            self.highlighted = row
            self.action_choose()

    def render_line(self, y: int) -> Strip:
        row, part = divmod(self.line_at(y), LINES)
        width = self.size.width
        idx = self.index
        base = self.visual_style.rich_style  # cached by Textual; rich_style walks the ancestors each time
        if row >= len(idx.backtracks):
            if row == 0 and part == 0:
                return Strip([Segment("No backtracks" + (" yet" if idx.store.run_end() is None else ""),
                                      Style.parse(self.text_styles.muted))]).extend_cell_length(width)
            return Strip.blank(width, base)
        current = idx.backtracks_at(self.seq) - 1
        tail = idx.n if row >= len(idx.backtracks) - 2 else 0  # its replacement may still be arriving
        key = (row, part, width, self._gen, row == current, row <= current,
               row == self.highlighted and self.has_focus, tail)
        strip = self._cache.get(key)
        if strip is None:
            strip = self._cache[key] = self._render_row(row, part, width, current, base)
        return strip

    def _node_name(self, node_id: int) -> str:
        """"gen reason" for a node id, from the NodeOpen events the store has (read once each)."""
        from tracing import NodeOpen

        store = self.index.store
        seqs = store.seqs_of(NodeOpen)
        for s in seqs[self._opens_seen:]:
            ev = store[s]
            self._node_names[ev.node_id] = ("text" if ev.kind == "literal" else f"{ev.kind} {ev.name}".strip())
        self._opens_seen = len(seqs)
        return self._node_names.get(node_id, "")

    def row_text(self, row: int) -> str:
        """A backtrack's two lines as plain text (tests, screen readers)."""
        current = self.index.backtracks_at(self.seq) - 1
        return "\n".join(self._render_row(row, k, 10_000, current, Style()).text.rstrip() for k in range(LINES))

    def _render_row(self, row: int, part: int, width: int, current: int, base: Style) -> Strip:
        idx = self.index
        c = self.text_styles
        bt = idx.backtracks[row]
        past = row <= current
        def st(name: str, **kw) -> Style:
            color = getattr(c, name)
            return base + (Style.parse(color) if color else Style()) + Style(**kw)

        removed = _text_of(idx, bt.removed) or glyphs(bt.data).visible
        why, then = reason_words(bt.reason)
        if part == 0:
            node = self._node_name(idx.token(bt.removed[0]).node_id) if bt.removed else ""
            segs = [
                Segment("▸" if row == current else " ", st("accent", bold=True)),
                Segment(f"{row + 1:>3} ", st("muted")),
                Segment("removed ", st("warning" if past else "muted")),
                Segment(removed or "nothing", st("error", strike=True)),
            ]
            n = len(bt.removed)
            segs.append(Segment(f" ({n} token{'s' if n != 1 else ''}" + (f" of {node})" if node else ")"),
                                st("muted")))
        else:
            repl_range = idx.replacement(bt)
            repl = _text_of(idx, repl_range)
            segs = [Segment("     " + why + " · ", st("muted"))]
            if repl:
                same = bt.removed and repl_range and \
                    idx.token(repl_range[0]).node_id == idx.token(bt.removed[0]).node_id
                segs += [Segment(then + ": ", st("muted")), Segment(repl, st("success"))]
                if not same:
                    other = self._node_name(idx.token(repl_range[0]).node_id)
                    if other:
                        segs.append(Segment(f" ({other})", st("muted")))
            else:
                segs.append(Segment("nothing came next yet" if idx.store.run_end() is None
                                    else "nothing came next", st("muted")))
        strip = Strip(segs).crop(0, width)
        if row == self.highlighted and self.has_focus:
            cursor = self.get_component_rich_style("backtrack--cursor")
            strip = Strip([Segment(seg.text, (seg.style or base) + cursor) for seg in strip])
        elif not past:
            strip = Strip([Segment(seg.text, (seg.style or base) + Style.parse(c.faint))
                           for seg in strip])
        return strip.extend_cell_length(width, base)

    def on_resize(self, event: events.Resize) -> None:
        self.virtual_size = Size(event.size.width, len(self.index.backtracks) * LINES)
        self._cache.clear()

    def on_focus(self) -> None:
        if self.highlighted < 0:
            self.highlighted = max(0, self.index.backtracks_at(self.seq) - 1)
        self.refresh()

    def on_blur(self) -> None:
        self.refresh()
