"""An anytree view of the program tree recorded in a trace.

Nodes nest by their structural parent (program function, role block...).
Inside one container, a node that continues from the previous sibling's state
is a sibling; one that continues from an older state (a reused base model) is
put under a ``branch`` node, so reuse shows as a fork instead of breaking.
"""

from __future__ import annotations

from typing import Iterable

from anytree import NodeMixin, PreOrderIter

from .events import AnyEvent, Capture, NodeClose, NodeOpen, Token


class TraceNode(NodeMixin):
    """One program node (or a synthetic root/branch node) with its seq span."""

    def __init__(self, node_id: int, kind: str, name: str = "", *, base_id: int = 0,
                 grammar: str = "", open_seq: int = -1, parent: "TraceNode | None" = None) -> None:
        self.node_id = node_id
        self.kind = kind
        self.name = name
        self.base_id = base_id
        self.grammar = grammar
        self.open_seq = open_seq
        self.close_seq: int | None = None
        self.stop_reason = ""
        self.captures: list[Capture] = []
        self.n_tokens = 0
        self.parent = parent

    @property
    def label(self) -> str:
        if self.kind in ("root", "branch"):
            return self.name
        return f"{self.kind} {self.name}".strip()

    def contains_seq(self, seq: int) -> bool:
        """True when ``seq`` lies inside this node's open..close span."""
        end = self.close_seq if self.close_seq is not None else float("inf")
        return self.open_seq <= seq <= end

    def __repr__(self) -> str:
        return f"TraceNode({self.node_id}, {self.kind!r}, {self.name!r})"


class TraceTree:
    """Builds the tree incrementally from events; ``feed`` may be called repeatedly."""

    def __init__(self) -> None:
        self.root = TraceNode(0, "root", "run", open_seq=0)
        self.by_id: dict[int, TraceNode] = {0: self.root}
        # Per container id: (node new continuations attach to, id of the latest state).
        self._chain: dict[int, tuple[TraceNode, int]] = {}
        self._branches = 0
        self.orphans = 0  # nodes whose parent was never opened (attached to root)

    @classmethod
    def from_events(cls, events: Iterable[AnyEvent]) -> "TraceTree":
        tree = cls()
        tree.feed(events)
        return tree

    def feed(self, events: Iterable[AnyEvent]) -> None:
        for ev in events:
            if isinstance(ev, NodeOpen):
                self._open(ev)
            elif isinstance(ev, NodeClose):
                node = self.by_id.get(ev.node_id)
                if node is not None:
                    node.close_seq = ev.seq
                    node.stop_reason = ev.stop_reason
                    parent = self.by_id.get(self._container_of(node))
                    if parent is not None:
                        holder, _ = self._chain.get(parent.node_id, (parent, 0))
                        self._chain[parent.node_id] = (holder, node.node_id)
            elif isinstance(ev, Token):
                node = self.by_id.get(ev.node_id)
                if node is not None:
                    node.n_tokens += 1
            elif isinstance(ev, Capture):
                node = self.by_id.get(ev.node_id)
                if node is not None:
                    node.captures.append(ev)

    def _container_of(self, node: TraceNode) -> int:
        p = node.parent
        while p is not None and p.kind == "branch":
            p = p.parent
        return p.node_id if p is not None else 0

    def _open(self, ev: NodeOpen) -> None:
        container = self.by_id.get(ev.parent_id)
        if container is None:
            container = self.root
            self.orphans += 1
        # A container's first child continues from the container's own state.
        holder, latest = self._chain.get(container.node_id, (container, container.node_id))
        if ev.base_id != latest:
            self._branches += 1
            base = self.by_id.get(ev.base_id)
            base_name = base.label if base is not None and base is not self.root else "the empty model"
            holder = TraceNode(-self._branches, "branch", f"branch from {base_name}",
                               base_id=ev.base_id, open_seq=ev.seq, parent=container)
        node = TraceNode(ev.node_id, ev.kind, ev.name, base_id=ev.base_id, grammar=ev.grammar,
                         open_seq=ev.seq, parent=holder)
        self.by_id[ev.node_id] = node
        self._chain[container.node_id] = (holder, ev.node_id)

    def node_at_seq(self, seq: int, node_id: int | None = None) -> TraceNode:
        """The node an event belongs to: by id when known, else the deepest open span."""
        if node_id is not None and node_id in self.by_id:
            return self.by_id[node_id]
        best = self.root
        for node in PreOrderIter(self.root):
            if node.kind not in ("root", "branch") and node.contains_seq(seq):
                best = node
        return best

    def render(self) -> str:
        """Plain-text drawing, for `info` and tests."""
        from anytree import RenderTree

        return "\n".join(f"{pre}{node.label}" for pre, _, node in RenderTree(self.root))
