"""The program tree: functions, roles, gen/select/regex/json nodes, tool calls,
captures with their values, and branches where a base model was reused.

A line-API widget over :class:`tracing.tree.TraceTree`: the tree is flattened
into rows (rebuilt lazily, only when nodes were added or a node was folded),
and only visible rows are drawn.  A live run adds thousands of nodes; a widget
object and a message per node (Textual's ``Tree``) would cost more than the
rest of the app.  Labels are drawn against the cursor: nodes that open after
it are faded, nodes open at it carry a marker, token counts are "so far".
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.cells import cell_len
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.cache import LRUCache
from textual.message import Message
from textual.reactive import reactive
from guidance_tui.widgets.line_list import LineList
from textual.strip import Strip

from tracing import Capture, NodeClose, NodeOpen
from tracing.tree import TraceNode, TraceTree

from guidance_tui.widgets.offscreen import displayed
from guidance_tui.state.token_index import TokenIndex
from guidance_tui.state.cursor import At
from guidance_tui.widgets.styles import Styles

KIND_TAGS = {
    "program": "fn", "role": "role", "gen": "gen", "select": "select", "regex": "regex", "json": "json",
    "literal": "text", "tool": "tool", "tool_call": "call", "branch": "⑂", "root": "run",
}


def short_value(value: str, limit: int = 40) -> str:
    r = repr(value)
    return r if len(r) <= limit else r[: limit - 1] + "…"


@dataclass(slots=True)
class Row:
    obj: object  # TraceNode or Capture
    prefix: str  # tree guides
    toggle: bool  # the node has rows under it


class NodeTree(LineList, can_focus=True):
    """Program-node tree, aware of the timeline cursor."""

    DEFAULT_CSS = """
    NodeTree { overflow-x: hidden; overflow-y: scroll; }
    NodeTree > .nodetree--cursor { background: $block-cursor-blurred-background; }
    NodeTree:focus > .nodetree--cursor {
        background: $block-cursor-background; color: $block-cursor-foreground; text-style: bold;
    }
    """
    COMPONENT_CLASSES = {"nodetree--cursor"}
    BINDINGS = [
        Binding("up", "move(-1)", "Up", show=False),
        Binding("down", "move(1)", "Down", show=False),
        Binding("enter", "choose", "Highlight node", show=False, id="tree-choose"),
        Binding("e", "toggle", "Fold / unfold", show=False, id="tree-toggle"),
    ]

    cursor_line: reactive[int] = reactive(0, always_update=True)

    class NodeChosen(Message):
        """The user picked a node (enter or click): highlight its tokens, select its first."""

        def __init__(self, node: TraceNode) -> None:
            super().__init__()
            self.node = node

    class NodeFocused(Message):
        """The user moved the tree cursor onto a node (preview: highlight its tokens)."""

        def __init__(self, node: TraceNode) -> None:
            super().__init__()
            self.node = node

    def __init__(self, index: TokenIndex, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.trace = TraceTree()
        self.index = index
        self.seq = -1
        self.text_styles = Styles()
        self.folded: set[int] = set()  # node ids the user folded
        self._rows: list[Row] = []
        self._row_of: dict[int, int] = {}  # id(obj) -> row
        self._dirty = True
        self._gen = 0
        self._cache: LRUCache[tuple, Strip] = LRUCache(128)
        self._styles: dict[tuple[str, bool], Style] = {}
        self._base = Style()  # what _styles were combined with
        self._shown_states: dict[int, tuple] = {}  # row -> _state() its drawn label is for
        self._stale = False  # the cursor moved while the tree was not displayed
        self.compare_mark: TraceNode | None = None  # the node marked for "compare branches" (v)

    # -- feeding ---------------------------------------------------------
    def feed(self, events: list) -> None:
        """Structural events of drained batches (Tokens already filtered out)."""
        structural = [e for e in events if type(e) in (NodeOpen, NodeClose, Capture)]
        if not structural:
            return
        self.trace.feed(structural)
        if any(type(e) is not NodeClose for e in structural):
            self._dirty = True
        self.restyle()

    # -- rows ------------------------------------------------------------
    @property
    def rows(self) -> list[Row]:
        if self._dirty:
            self._build()
        return self._rows

    def _build(self) -> None:
        rows: list[Row] = []
        folded = self.folded
        # iterative pre-order walk: (object, guides of the ancestors, is-last, depth)
        stack: list[tuple[object, str, bool, int]] = [(self.trace.root, "", True, 0)]
        while stack:
            obj, guides, last, depth = stack.pop()
            if isinstance(obj, TraceNode):
                kids: list = list(obj.children) + list(obj.captures)
            else:
                kids = []
            prefix = "" if depth == 0 else guides + ("└ " if last else "├ ")
            rows.append(Row(obj, prefix, bool(kids)))
            if kids and not (isinstance(obj, TraceNode) and obj.node_id in folded):
                child_guides = "" if depth == 0 else guides + ("  " if last else "│ ")
                for i in range(len(kids) - 1, -1, -1):
                    stack.append((kids[i], child_guides, i == len(kids) - 1, depth + 1))
        self._rows = rows
        self._row_of = {id(r.obj): i for i, r in enumerate(rows)}
        self._dirty = False
        self._gen += 1
        self.set_line_count(len(rows), self.size.width)

    @property
    def cursor_node(self) -> TraceNode | Capture | None:
        rows = self.rows
        return rows[self.cursor_line].obj if 0 <= self.cursor_line < len(rows) else None

    def row_of(self, obj) -> int | None:
        self.rows
        return self._row_of.get(id(obj))

    # -- cursor ----------------------------------------------------------
    def set_cursor(self, seq: int) -> None:
        """Redraw the visible rows whose label the new cursor changes (and only those)."""
        if seq == self.seq:
            return
        self.seq = seq
        if not displayed(self):
            self._stale = True
            return
        rows = self.rows
        top = self.top_line
        h = self.scrollable_content_region.height
        shown = self._shown_states
        changed = [row for row in range(top, min(len(rows), top + h)) if shown.get(row) != self._state(rows[row].obj)]
        if len(changed) > h // 2:
            self.refresh()
        else:
            for row in changed:
                self.refresh_line(row)

    def show_at(self, at: At) -> None:
        self.set_cursor(at.seq)
        if at.token >= 0 and not self.has_focus:
            self.show_node_id(self.index.token(at.token).node_id)

    def apply_styles(self, styles: Styles) -> None:
        self.text_styles = styles
        self.restyle()

    def restyle(self) -> None:
        self._cache.clear()
        self._styles.clear()
        self._shown_states = {}
        self.refresh()

    def show_node_id(self, node_id: int) -> None:
        """Move the cursor to the node with ``node_id``, or to the newest node
        when the tree has not been fed that one yet."""
        node = self.trace.by_id.get(node_id)
        if node is not None:
            self.show_node(node)
            return
        rows = self.rows
        row = next((i for i in range(len(rows) - 1, -1, -1) if isinstance(rows[i].obj, TraceNode)), None)
        if row is not None:
            self._move_cursor(row)

    def show_node(self, node: TraceNode) -> None:
        """Move the tree cursor to ``node`` (unfolding its ancestors) without a message."""
        parent = node.parent
        while parent is not None:
            if parent.node_id in self.folded:
                self.folded.discard(parent.node_id)
                self._dirty = True
            parent = parent.parent
        row = self.row_of(node)
        if row is not None:
            self._move_cursor(row)

    def _move_cursor(self, row: int) -> None:
        """Put the cursor on ``row`` and bring it into view, redrawing only the two
        rows that changed when nothing scrolled (a scroll redraws them all)."""
        old = self.cursor_line
        if row == old:
            return
        self.set_reactive(NodeTree.cursor_line, row)
        if not displayed(self):
            self._stale = True
            return
        top = self.top_line
        self.scroll_line_into_view(row)
        if self.top_line != top:
            self.refresh()
        else:
            self.refresh_line(old)
            self.refresh_line(row)

    def on_show(self) -> None:
        if self._stale:
            self._stale = False
            self.scroll_line_into_view(self.cursor_line)
            self.refresh()

    def choose(self, node: TraceNode) -> None:
        """Pick ``node`` as the user would (tests, the command palette)."""
        row = self.row_of(node)
        if row is not None:
            self.cursor_line = row
            self.post_message(self.NodeChosen(node))

    def watch_cursor_line(self, row: int) -> None:
        self.scroll_line_into_view(row)
        self.refresh()

    def _node_at(self, row: int) -> TraceNode | None:
        rows = self.rows
        if not 0 <= row < len(rows):
            return None
        obj = rows[row].obj
        if isinstance(obj, Capture):
            return self.trace.by_id.get(obj.node_id)
        return obj  # type: ignore[return-value]

    # -- keys and mouse ----------------------------------------------------
    def action_move(self, delta: int) -> None:
        n = len(self.rows)
        if not n:
            return
        self.cursor_line = max(0, min(n - 1, self.cursor_line + delta))
        node = self._node_at(self.cursor_line)
        if node is not None:
            self.post_message(self.NodeFocused(node))

    def action_choose(self) -> None:
        node = self._node_at(self.cursor_line)
        if node is not None:
            self.post_message(self.NodeChosen(node))

    def action_toggle(self) -> None:
        node = self._node_at(self.cursor_line)
        if node is None:
            return
        if node.node_id in self.folded:
            self.folded.discard(node.node_id)
        elif self.rows[self.row_of(node) or 0].toggle:
            self.folded.add(node.node_id)
        self._dirty = True
        row = self.row_of(node)
        if row is not None:
            self.cursor_line = row
        self.restyle()

    def on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is None:
            return
        row = self.line_at(offset.y)
        rows = self.rows
        if not 0 <= row < len(rows):
            return
        r = rows[row]
        self.cursor_line = row
        x = offset.x
        start = cell_len(r.prefix)
        if r.toggle and start <= x < start + 2 and isinstance(r.obj, TraceNode):
            self.action_toggle()
            return
        self.action_choose()

    # -- drawing ---------------------------------------------------------------
    def render_line(self, y: int) -> Strip:
        row = self.line_at(y)
        width = self.scrollable_content_region.width
        rows = self.rows
        if row >= len(rows):
            return Strip.blank(width, self.visual_style.rich_style)
        r = rows[row]
        state = self._shown_states[row] = self._state(r.obj)
        key = (row, self._gen, width, state, row == self.cursor_line, self.has_focus)
        strip = self._cache.get(key)
        if strip is None:
            base = self.visual_style.rich_style  # cached by Textual; rich_style walks the ancestors each time
            if base != self._base:
                self._base = base
                self._styles.clear()
            guide = self._style(self.text_styles.guide)
            segs = [Segment(r.prefix, guide)] if r.prefix else []
            if r.toggle and isinstance(r.obj, TraceNode):
                segs.append(Segment("▶ " if r.obj.node_id in self.folded else "▼ ", guide))
            cursor = row == self.cursor_line
            for part, style in self.label_parts(r.obj):
                segs.append(Segment(part, self._style(style, cursor)))
            strip = Strip(segs).extend_cell_length(width, base)
            if strip.cell_length > width:
                strip = strip.crop(0, width)
            self._cache[key] = strip
        return strip

    def _style(self, spec: str, cursor: bool = False) -> Style:
        """The widget's base style plus ``spec`` (plus the cursor row's), parsed once."""
        st = self._styles.get((spec, cursor))
        if st is None:
            st = Style.parse(spec) if spec else Style()
            if cursor:  # the cursor's style depends on focus: on_focus and on_blur clear this cache
                st += self.get_component_rich_style("nodetree--cursor")
            st = self._styles[(spec, cursor)] = self._base + st
        return st

    def _state(self, obj) -> tuple:
        """What of the cursor position a row's label depends on."""
        seq = self.seq
        if isinstance(obj, Capture):
            return (obj.seq <= seq,)
        node: TraceNode = obj  # type: ignore[assignment]
        if node.kind == "root":
            end = self.index.store.run_end()
            return (end is not None and end.seq <= seq,)
        if node.open_seq > seq:
            return (False,)
        close = node.close_seq
        hi = seq if close is None or close > seq else close
        return (True, close is not None and close <= seq, self.index.count_at(hi) - self.index.count_at(node.open_seq))

    def label(self, obj) -> Text:
        """The row's label as Rich text (tests, tooltips)."""
        text = Text(no_wrap=True, end="")
        for part, style in self.label_parts(obj):
            text.append(part, style)
        return text

    def label_parts(self, obj) -> list[tuple[str, str]]:
        c = self.text_styles
        muted = c.muted
        seq = self.seq
        parts: list[tuple[str, str]] = []
        add = parts.append
        if isinstance(obj, Capture):
            future = obj.seq > seq
            faint = c.faint
            add(("↳ ", faint if future else muted))
            add((obj.name, faint if future else "bold"))
            add((" = ", faint if future else muted))
            add((short_value(obj.value), faint if future else c.success))
            return parts
        node: TraceNode = obj  # type: ignore[assignment]
        kind = node.kind
        if kind == "root":
            store = self.index.store
            start, end = store.run_start(), store.run_end()
            add((start.script if start is not None and start.script else "run", "bold"))
            if start is not None and start.model:
                add((f"  {start.model}", muted))
            if end is not None and end.seq <= seq and end.status != "done":
                add((f"  {end.status}", c.error))
            return parts
        if node.open_seq > seq:  # not opened yet at the cursor: faded
            faint = c.faint
            tag = "⑂ " + node.name if kind == "branch" else f"{KIND_TAGS.get(kind, kind)} {node.name}".strip()
            add((tag, faint))
            return parts
        if kind == "branch":
            add(("⑂ " + node.name, c.warning))
            if node is self.compare_mark:
                add((" ⇄ marked", c.accent))
            return parts
        add((KIND_TAGS.get(kind, kind), c.role if kind == "role" else (c.tool if kind.startswith("tool") else c.kind)))
        if node.name:
            add((" ", ""))
            add((node.name, "bold"))
        _, closed, n = self._state(node)
        add((f" {n} tok", muted))
        if not closed:
            add((" ●", c.accent))
        elif node.stop_reason:
            add((f" · {node.stop_reason}", muted))
        if node is self.compare_mark:
            add((" ⇄ marked", c.accent))
        return parts

    def on_resize(self, event: events.Resize) -> None:
        self._cache.clear()
        self.set_line_count(len(self.rows), event.size.width)

    def on_focus(self) -> None:
        self._styles.clear()
        self.refresh()

    def on_blur(self) -> None:
        self._styles.clear()
        self.refresh()
