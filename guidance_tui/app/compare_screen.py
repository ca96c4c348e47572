"""The compare screen: two runs (or two branches of one run) side by side.

The top pane lists the node pairs (see ``guidance_tui.state.compare``) with
their figures and deltas; the first divergence is marked ``▶`` and every pair
whose text differs ``≠``.  The bottom pane shows the chosen pair token by
token, A on the left and B on the right, with each side's probability and
B's minus A's where both sampled the same token; the first row that differs
is highlighted, and a grammar or prompt difference is said above the rows.
Both panes draw only their visible lines (a 100k-token comparison costs what
a small one does).
"""

from __future__ import annotations

from rich.cells import cell_len, set_cell_size
from rich.segment import Segment
from rich.style import Style
from textual import events, on
from textual.app import App, ComposeResult
from textual.containers import Vertical
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.strip import Strip
from textual.widgets import Footer, Static

from guidance_tui.state.compare import (
    NODE_HEADER, Comparison, NodePair, TokenRow, divergence_lines, node_row, prob_delta, token_rows,
)
from guidance_tui.state.token_text import glyphs
from guidance_tui.widgets.line_list import LineList
from guidance_tui.widgets.styles import Styles

_COL_W = (5, 5, 4, 8, 4, 8, 8, 7, 5, 6)  # the figure columns of NODE_HEADER after the node's name


def _fmt_p(p: float) -> str:
    if p != p:
        return ""
    return "100%" if p >= 0.9995 else f"{p * 100:.1f}%"


class _Pane(LineList, can_focus=True):
    """A line list with a cursor row, drawn from ``line_runs``."""

    BINDINGS = [
        Binding("up", "move(-1)", "Up", show=False),
        Binding("down", "move(1)", "Down", show=False),
        Binding("pageup", "move(-10)", show=False),
        Binding("pagedown", "move(10)", show=False),
    ]

    def __init__(self, *, id: str) -> None:
        super().__init__(id=id)
        self.cursor = 0
        self.n = 0
        self.text_styles = Styles()

    def line_runs(self, y: int, width: int) -> list[tuple[str, str]]:
        raise NotImplementedError

    def set_rows(self, n: int) -> None:
        self.n = n
        self.cursor = min(self.cursor, max(0, n - 1))
        self.set_line_count(n, self.size.width)
        self.refresh()

    def move_to(self, row: int) -> None:
        self.cursor = max(0, min(self.n - 1, row))
        self.scroll_line_into_view(self.cursor)
        self.refresh()
        self.moved()

    def moved(self) -> None:
        pass

    def action_move(self, delta: int) -> None:
        if self.n:
            self.move_to(self.cursor + delta)

    def on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is not None and 0 <= self.line_at(offset.y) < self.n:
            self.move_to(self.line_at(offset.y))

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        base = self.visual_style.rich_style
        row = self.line_at(y)
        if row >= self.n:
            return Strip.blank(width, base)
        segs = [Segment(t, base + (Style.parse(s) if s else Style())) for t, s in self.line_runs(row, width) if t]
        strip = Strip(segs)
        if row == self.cursor:
            hl = Style(reverse=True) if self.has_focus else Style(underline=True)
            strip = Strip([Segment(s.text, (s.style or base) + hl) for s in strip])
        return strip.extend_cell_length(width, base).crop(0, width)

    def on_focus(self) -> None:
        self.refresh()

    def on_blur(self) -> None:
        self.refresh()


class NodePairs(_Pane):
    """One row per node pair: marker, node, then the figures of both sides and their deltas."""

    class Chosen(Message):
        def __init__(self, index: int) -> None:
            super().__init__()
            self.index = index

    def __init__(self, cmp: Comparison, *, id: str) -> None:
        super().__init__(id=id)
        self.cmp = cmp
        self._rows: dict[int, tuple[str, ...]] = {}  # figures of the pairs drawn so far
        self._name_w = max([len(NODE_HEADER[0])] + [2 * p.depth + len(p.label) for p in cmp.pairs]) + 1

    def on_mount(self) -> None:
        self.set_rows(len(self.cmp.pairs))

    def moved(self) -> None:
        self.post_message(self.Chosen(self.cursor))

    def header(self, width: int) -> str:
        name_w = min(self._name_w, max(12, width - sum(_COL_W) - len(_COL_W) - 2))
        return "  " + NODE_HEADER[0].ljust(name_w) + "".join(" " + h.rjust(w) for h, w in zip(NODE_HEADER[1:], _COL_W))

    def line_runs(self, y: int, width: int) -> list[tuple[str, str]]:
        c = self.text_styles
        p = self.cmp.pairs[y]
        cells = self._rows.get(y)
        if cells is None:
            cells = self._rows[y] = node_row(p)
        if y == self.cmp.first:
            mark, mstyle = "▶ ", c.warning
        elif not p.paired:
            mark, mstyle = ("A " if p.b is None else "B "), c.error
        elif not p.same_text:
            mark, mstyle = "≠ ", c.warning
        else:
            mark, mstyle = "  ", ""
        name_w = min(self._name_w, max(12, width - sum(_COL_W) - len(_COL_W) - 2))
        name = cells[0] if len(cells[0]) <= name_w - 1 else cells[0][: name_w - 2] + "…"
        runs = [(mark, mstyle), (name.ljust(name_w), "bold" if not p.same_text else "")]
        for k, (cell, w) in enumerate(zip(cells[1:], _COL_W)):
            style = c.muted
            if k in (2, 9) and cell and cell not in ("0", "+0.0", "-0.0"):  # the deltas
                style = c.success if cell.startswith("+") else c.error
            elif k in (0, 1, 3, 4, 5, 6, 7, 8):
                style = ""
            runs.append((" " + cell.rjust(w), style))
        return runs


class TokenPairs(_Pane):
    """The chosen pair, token by token: A │ B, with probabilities and B − A."""

    def __init__(self, cmp: Comparison, *, id: str) -> None:
        super().__init__(id=id)
        self.cmp = cmp
        self.pair: NodePair | None = None
        self.rows: list[TokenRow] = []
        self.head: list[tuple[str, str]] = []  # what differs, shown above the rows (``head_text``)
        self.first_diff = -1  # row index (in rows) of the first one that differs

    def show_pair(self, index: int) -> None:
        self.pair = self.cmp.pairs[index] if 0 <= index < len(self.cmp.pairs) else None
        self.rows = token_rows(self.pair) if self.pair is not None else []
        self.first_diff = next((i for i, r in enumerate(self.rows) if not r.same), -1)
        c = self.text_styles
        self.head = []
        p = self.pair
        if p is not None and not p.same_text:
            for line in divergence_lines(self.cmp, index):
                self.head.append((line, c.warning if not line.startswith("  ") else ""))
        elif p is not None:
            self.head.append((f"{p.label}: the same text on both sides", c.muted))
        self.cursor = max(0, self.first_diff)
        self.set_rows(len(self.rows))
        self.scroll_to_line(0)
        if self.first_diff >= 0:
            self.scroll_line_into_view(self.first_diff, at=0.3)

    def head_text(self):
        from rich.text import Text

        text = Text(no_wrap=True, overflow="ellipsis")
        for i, (line, style) in enumerate(self.head):
            text.append(("\n" if i else "") + line, style)
        return text

    def line_runs(self, y: int, width: int) -> list[tuple[str, str]]:
        c = self.text_styles
        p = self.pair
        k = y
        row = self.rows[k]
        half = max(10, (width - 12) // 2)
        text_w = max(4, half - 8)

        def side(tokens, lo, hi) -> list[tuple[str, str]]:
            if lo >= hi:
                return [("".ljust(half), c.faint)]
            toks = tokens[lo:hi]
            text = "".join(glyphs(t.bytes).visible for t in toks)
            text = text if cell_len(text) <= text_w else set_cell_size(text, text_w - 1) + "…"
            prob = _fmt_p(toks[0].prob) if hi - lo == 1 and toks[0].kind != 0 else ""
            style = "" if row.same else ("bold " + c.warning if k == self.first_diff else "bold")
            return [(set_cell_size(text, text_w), style), (prob.rjust(7) + " ", c.muted)]

        runs = [("▶ " if k == self.first_diff else "  ", c.warning)]
        runs += side(p.a.tokens if p and p.a else [], row.a0, row.a1)
        runs.append(("│ ", c.guide))
        runs += side(p.b.tokens if p and p.b else [], row.b0, row.b1)
        d = prob_delta(p, row) if p is not None else float("nan")
        if d == d:
            runs.append((f"{d * 100:+.1f}".rjust(6), c.success if d > 0.0005 else c.error if d < -0.0005 else c.muted))
        return runs


class CompareScreen(Screen):
    """Two sides of a :class:`Comparison`; ``q``/``escape`` goes back (or quits when it is the app's only screen)."""

    BINDINGS = [
        Binding("q,escape", "close", "back", id="compare-close"),
        Binding("n", "next_diff(1)", "next difference", id="compare-next-diff"),
        Binding("N", "next_diff(-1)", "previous difference", id="compare-prev-diff"),
        Binding("f", "first_diff", "first divergence", id="compare-first"),
        Binding("tab", "switch_pane", "switch pane", id="compare-switch"),
    ]
    DEFAULT_CSS = """
    CompareScreen { layout: vertical; }
    CompareScreen #cmp-head { height: auto; max-height: 6; padding: 0 1; background: $panel; }
    CompareScreen .cmp-box {
        border: round $foreground 25%; border-title-color: $text-muted; padding: 0 1; background: $background;
    }
    CompareScreen .cmp-box:focus-within { border: round $accent; }
    CompareScreen #cmp-nodes, CompareScreen #cmp-tokens {
        height: 1fr; background: $background; overflow-x: hidden; overflow-y: scroll; scrollbar-size-vertical: 1;
    }
    CompareScreen .cmp-box-head { height: auto; max-height: 6; color: $text-muted; }
    CompareScreen #cmp-nodes-box { height: 45%; }
    CompareScreen #cmp-tokens-box { height: 1fr; }
    """

    def __init__(self, cmp: Comparison) -> None:
        super().__init__()
        self.cmp = cmp
        self.nodes = NodePairs(cmp, id="cmp-nodes")
        self.tokens = TokenPairs(cmp, id="cmp-tokens")

    def compose(self) -> ComposeResult:
        yield Static(self._head_text(), id="cmp-head")
        with Vertical(id="cmp-nodes-box", classes="cmp-box") as box:
            box.border_title = "Nodes (A | B)"
            yield Static("", id="cmp-nodes-head", classes="cmp-box-head")
            yield self.nodes
        with Vertical(id="cmp-tokens-box", classes="cmp-box") as box:
            box.border_title = "Tokens"
            yield Static("", id="cmp-tokens-head", classes="cmp-box-head")
            yield self.tokens
        yield Footer()

    def _head_text(self) -> str:
        from rich.markup import escape

        cmp = self.cmp
        lines = [f"[b]A[/b] {escape(cmp.a.label)}  [dim]{escape(cmp.a.model)} · {escape(cmp.a.backend)}[/]",
                 f"[b]B[/b] {escape(cmp.b.label)}  [dim]{escape(cmp.b.model)} · {escape(cmp.b.backend)}[/]"]
        diffs = ", ".join(what for what, _, _ in cmp.run_differences())
        if diffs:
            lines.append(f"[dim]differ in:[/] {diffs}")
        if cmp.first is None:
            lines.append("no divergence: every node has the same text on both sides")
        else:
            n = len(cmp.differing)
            lines.append(f"first divergence ▶ {escape(divergence_lines(cmp, cmp.first)[0])}"
                         + f"  [dim]({n} node{'s differ' if n != 1 else ' differs'})[/]")
        return "\n".join(lines)

    def on_mount(self) -> None:
        app = self.app
        styles = app.theme_styles() if isinstance(app, CompareApp) else getattr(app, "text_styles", None) or Styles()
        self.nodes.text_styles = self.tokens.text_styles = styles
        self._node_header(self.size.width)
        start = self.cmp.first if self.cmp.first is not None else 0
        self.nodes.focus()
        self.nodes.move_to(start)

    def on_resize(self, event: events.Resize) -> None:
        self._node_header(event.size.width)

    def _node_header(self, width: int) -> None:
        self.query_one("#cmp-nodes-head", Static).update(self.nodes.header(max(20, width - 5)))

    @on(NodePairs.Chosen)
    def _chosen(self, event: NodePairs.Chosen) -> None:
        self.tokens.show_pair(event.index)
        p = self.tokens.pair
        self.query_one("#cmp-tokens-box").border_title = (f"{p.label} · token by token: A │ B, p, B − A (points)"
                                                          if p is not None else "Tokens")
        self.query_one("#cmp-tokens-head", Static).update(self.tokens.head_text())

    def action_next_diff(self, step: int) -> None:
        diffs = self.cmp.differing
        cur = self.nodes.cursor
        nxt = [i for i in diffs if i > cur] if step > 0 else [i for i in reversed(diffs) if i < cur]
        if not nxt:
            self.notify("No more differences " + ("after" if step > 0 else "before") + " this node.", timeout=2)
            return
        self.nodes.move_to(nxt[0])

    def action_first_diff(self) -> None:
        if self.cmp.first is not None:
            self.nodes.move_to(self.cmp.first)

    def action_switch_pane(self) -> None:
        (self.tokens if self.nodes.has_focus else self.nodes).focus()

    async def action_close(self) -> None:
        if len(self.app.screen_stack) > 1 and self.app.screen_stack[-1] is self:
            self.app.pop_screen()
        else:
            self.app.exit(0)


class CompareApp(App[int]):
    """``guidance-tui compare A B``: just the compare screen."""

    CSS_PATH = "app.tcss"
    TITLE = "guidance-tui compare"

    def __init__(self, cmp: Comparison) -> None:
        super().__init__()
        self.cmp = cmp
        self.text_styles = Styles()

    def get_default_screen(self) -> Screen:
        return CompareScreen(self.cmp)

    def theme_styles(self) -> Styles:
        """The panes' styles under the current theme (as the inspector app derives them)."""
        from guidance_tui.widgets.colors import ThemeColors

        v = self.get_css_variables()
        dark = self.current_theme.dark if self.current_theme is not None else True
        self.text_styles = Styles.from_theme(ThemeColors.from_variables(v, dark, background=v.get("background")))
        return self.text_styles


class CompareActions:
    """The inspector's "compare two branches" action (mixed into its screen).

    ``=`` on a node of the program tree marks the line of nodes it starts (a
    branch, or a program and what continued from it); ``=`` on another opens
    the compare screen for the two.  ``=`` on the marked one again unmarks it."""

    _compare_mark = None  # the marked TraceNode

    def action_compare_branch(self) -> None:
        from tracing.tree import TraceNode

        from guidance_tui.state.compare import build_side, compare, line_ids

        tree = self.tree_pane.trace  # type: ignore[attr-defined]
        obj = self.tree_pane.cursor_node  # type: ignore[attr-defined]
        node = obj if isinstance(obj, TraceNode) else tree.by_id.get(getattr(obj, "node_id", -1))
        if node is None or node.kind == "root":
            self.notify("Put the tree's cursor on a branch or a program node first (t focuses the tree).",  # type: ignore
                        timeout=4)
            return
        mark = self._compare_mark
        if mark is None or mark is node:
            self._compare_mark = None if mark is node else node
            self.tree_pane.compare_mark = self._compare_mark  # type: ignore[attr-defined]
            self.tree_pane.restyle()  # type: ignore[attr-defined]
            self.notify(f"Unmarked {_node_words(node)}." if mark is node else
                        f"Marked {_node_words(node)}: put the cursor on another branch and press = again.",
                        title="Compare", timeout=5)  # type: ignore[attr-defined]
            return
        self._compare_mark = self.tree_pane.compare_mark = None  # type: ignore[attr-defined]
        self.tree_pane.restyle()  # type: ignore[attr-defined]
        events = self.store.events()  # type: ignore[attr-defined]
        cmp = compare(build_side(events, _node_words(mark), line_ids(tree, mark)),
                      build_side(events, _node_words(node), line_ids(tree, node)))
        self.app.push_screen(CompareScreen(cmp))  # type: ignore[attr-defined]


def _node_words(node) -> str:
    """A node as the compare screen names a side: "program classify (node 3)"."""
    if node.kind == "branch":
        return f"{node.name} (node {node.children[0].node_id})" if node.children else node.name
    return f"{node.label} (node {node.node_id})"
