"""What a recorded run did, node by node: the facts the exporters (OTLP, HTML) share.

One pass over the events gives, for every program node, its own tokens by
kind, probability, mask-time, latency and allowed-set figures, its
backtracks and captures, when it opened and closed, and how many tokens of
text it continued from (its context).  Sums over a node's subtree come after.

Nesting is :class:`tracing.TraceTree`'s: a node sits under its structural
parent, and a node that continues from an older state of its container (a
reused base model) sits under a ``branch`` pseudo-node there.  The facts name
that as ``branch`` (and ``base_id``) instead of a node of their own.

The context count is kept with a persistent stack of the live tokens: a token
or a backtrack pops what it overwrites, a node remembers the stack it ended
with, and a node that continues from an older state takes that state's stack
back, exactly as :class:`tracing.TraceStore` rebuilds the text.

Nothing here imports Textual or the engines.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable

from tracing import (
    AnyEvent, Backtrack, Capture, Message, NodeClose, NodeOpen, RunEnd, RunStart, Token, TokenKind, TraceTree,
)

PROMPT, GENERATED, FORCED = TokenKind.PROMPT, TokenKind.GENERATED, TokenKind.FORCED
KIND_NAMES = {PROMPT: "prompt", GENERATED: "generated", FORCED: "forced"}

# Kinds whose node is one grammar-constrained completion call.
GENERATION_KINDS = frozenset({"gen", "select", "regex", "json"})
# Pseudo and text-only nodes: not spans of their own (their tokens count in their parent's sums).
FOLDED_KINDS = frozenset({"literal", "branch", "root"})


@dataclass
class Stats:
    """Figures over a set of tokens (one node's own, or a subtree's)."""

    prompt: int = 0
    generated: int = 0
    forced: int = 0
    backtracks: int = 0
    backtracked_tokens: int = 0
    backtrack_reasons: Counter = field(default_factory=Counter)
    prob_n: int = 0  # generated tokens with a known probability (after the mask)
    prob_sum: float = 0.0
    prob_min: float = math.inf
    raw_n: int = 0  # ... and before the mask
    raw_sum: float = 0.0
    mask_n: int = 0  # sampled (generated or forced) tokens with a mask time
    mask_sum: int = 0
    mask_max: int = 0
    lat_n: int = 0  # generated tokens with a latency
    lat_sum: int = 0
    allowed_n: int = 0  # generated tokens with a known allowed-set size
    allowed_sum: int = 0
    allowed_min: int = 0
    allowed_max: int = 0

    @property
    def tokens(self) -> int:
        return self.prompt + self.generated + self.forced

    @property
    def sampled(self) -> int:
        return self.generated + self.forced

    def add_token(self, tok: Token) -> None:
        kind = tok.kind
        if kind == GENERATED:
            self.generated += 1
            p = tok.prob
            if p == p:
                self.prob_n += 1
                self.prob_sum += p
                if p < self.prob_min:
                    self.prob_min = p
            r = tok.prob_raw
            if r == r:
                self.raw_n += 1
                self.raw_sum += r
            if tok.latency_us > 0:
                self.lat_n += 1
                self.lat_sum += tok.latency_us
            a = tok.allowed
            if a >= 0:
                if not self.allowed_n:
                    self.allowed_min = self.allowed_max = a
                else:
                    self.allowed_min = min(self.allowed_min, a)
                    self.allowed_max = max(self.allowed_max, a)
                self.allowed_n += 1
                self.allowed_sum += a
        elif kind == FORCED:
            self.forced += 1
        else:
            self.prompt += 1
        if kind != PROMPT and tok.mask_us > 0:
            self.mask_n += 1
            self.mask_sum += tok.mask_us
            self.mask_max = max(self.mask_max, tok.mask_us)

    def add_backtrack(self, bt: Backtrack) -> None:
        self.backtracks += 1
        self.backtracked_tokens += bt.n_tokens
        self.backtrack_reasons[bt.reason or "unknown"] += 1

    def merge(self, o: "Stats") -> None:
        for name in ("prompt", "generated", "forced", "backtracks", "backtracked_tokens", "prob_n", "prob_sum",
                     "raw_n", "raw_sum", "mask_n", "mask_sum", "lat_n", "lat_sum", "allowed_sum"):
            setattr(self, name, getattr(self, name) + getattr(o, name))
        self.backtrack_reasons.update(o.backtrack_reasons)
        self.prob_min = min(self.prob_min, o.prob_min)
        self.mask_max = max(self.mask_max, o.mask_max)
        if o.allowed_n:
            if not self.allowed_n:
                self.allowed_min, self.allowed_max = o.allowed_min, o.allowed_max
            else:
                self.allowed_min = min(self.allowed_min, o.allowed_min)
                self.allowed_max = max(self.allowed_max, o.allowed_max)
        self.allowed_n += o.allowed_n

    # -- derived figures (None: unknown) --------------------------------
    @property
    def prob_mean(self) -> float | None:
        return self.prob_sum / self.prob_n if self.prob_n else None

    @property
    def prob_lowest(self) -> float | None:
        return self.prob_min if self.prob_n else None

    @property
    def prob_raw_mean(self) -> float | None:
        return self.raw_sum / self.raw_n if self.raw_n else None

    @property
    def mask_mean_us(self) -> float | None:
        return self.mask_sum / self.mask_n if self.mask_n else None

    @property
    def latency_mean_us(self) -> float | None:
        return self.lat_sum / self.lat_n if self.lat_n else None

    @property
    def allowed_mean(self) -> float | None:
        return self.allowed_sum / self.allowed_n if self.allowed_n else None


@dataclass
class NodeFacts:
    node_id: int
    kind: str
    name: str
    base_id: int = 0
    grammar: str = ""
    open_seq: int = -1
    t_open: int = 0  # t_us
    close_seq: int | None = None
    t_close: int | None = None
    t_last: int = 0  # t_us of the last event inside the node (its end when never closed)
    stop_reason: str = ""
    branch: str = ""  # the tree's branch it sits in ("branch from ..."): a reused base model
    branch_base: int = 0  # the node whose state that branch continued (0: the empty model)
    context_tokens: int = 0  # tokens of live text it continued from
    context_len: int = 0  # ... in bytes
    own: Stats = field(default_factory=Stats)
    total: Stats = field(default_factory=Stats)  # own plus every descendant's
    token_seqs: list[int] = field(default_factory=list)  # its own tokens, in order
    backtrack_seqs: list[int] = field(default_factory=list)
    captures: list[Capture] = field(default_factory=list)
    parent: "NodeFacts | None" = None  # the nearest ancestor that is not folded (None: the run)
    children: list["NodeFacts"] = field(default_factory=list)  # every child, folded ones included
    depth: int = 0

    @property
    def label(self) -> str:
        return f"{self.kind} {self.name}".strip()

    @property
    def closed(self) -> bool:
        return self.close_seq is not None

    @property
    def folded(self) -> bool:
        return self.kind in FOLDED_KINDS

    @property
    def generation(self) -> bool:
        return self.kind in GENERATION_KINDS

    def request_params(self) -> dict[str, float | int]:
        return request_params(self.grammar)


_MAX_TOKENS = re.compile(r"\bmax_tokens\s*=\s*(\d+)")
_TEMPERATURE = re.compile(r"\btemperature\s*=\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)")


def request_params(grammar: str) -> dict[str, float | int]:
    """``max_tokens`` and ``temperature`` from a node's Lark text (``gen_0[max_tokens=20, temperature=0.7]``).

    A value is given only when the grammar states it, and states it once (or the same each time)."""
    out: dict[str, float | int] = {}
    if not grammar:
        return out
    for key, rx, conv in (("max_tokens", _MAX_TOKENS, int), ("temperature", _TEMPERATURE, float)):
        values = {conv(m.group(1)) for m in rx.finditer(grammar)}
        if len(values) == 1:
            out[key] = values.pop()
    return out


@dataclass
class RunFacts:
    start: RunStart | None
    end: RunEnd | None
    events: list[AnyEvent]
    tree: TraceTree
    root: NodeFacts  # node 0: the run; ``total`` holds the run's sums
    nodes: dict[int, NodeFacts]
    messages: list[Message]
    t_first: int  # t_us of the first and last events
    t_last: int
    removed: dict[int, int] = field(default_factory=dict)  # token seq -> seq of the backtrack that took it

    @property
    def status(self) -> str:
        return self.end.status if self.end is not None else "incomplete"

    def spans(self) -> Iterable[NodeFacts]:
        """The root, then every node that is not folded, in tree order (parents first)."""
        stack = [self.root]
        while stack:
            n = stack.pop()
            if n is self.root or not n.folded:
                yield n
            stack.extend(reversed(n.children))

    def text_store(self):
        """A :class:`tracing.TraceStore` over the events, for texts (built once)."""
        store = getattr(self, "_store", None)
        if store is None:
            from tracing import TraceStore

            store = TraceStore(self.events)
            self._store = store
        return store

    def text_at(self, seq: int) -> bytes:
        """The model's text right after event ``seq``, as exact bytes."""
        store = self.text_store()
        return store.text_bytes(store.state_at(seq))


def collect(events: Iterable[AnyEvent]) -> RunFacts:
    """Facts of a run from its events (in seq order)."""
    events = list(events)
    tree = TraceTree.from_events(events)
    root = NodeFacts(0, "root", "run", open_seq=0)
    nodes: dict[int, NodeFacts] = {0: root}
    start: RunStart | None = None
    end: RunEnd | None = None
    messages: list[Message] = []
    # The live tokens as a persistent stack: (start byte, depth, below, seq) cells; a state is a cell.
    top = None
    cur_len = 0
    saved: dict[int, tuple] = {}
    removed: dict[int, int] = {}  # token seq -> seq of the backtrack that took it back
    state_node = 0
    t_first = t_last = None
    for ev in events:
        t = ev.t_us
        if t >= 0:
            t_first = t if t_first is None else t_first
            t_last = t if t_last is None else max(t_last, t)
        if isinstance(ev, Token):
            pos = ev.pos
            while top is not None and top[0] >= pos:
                top = top[2]
            top = (pos, (top[1] if top is not None else 0) + 1, top, ev.seq)
            cur_len = pos + len(ev.bytes)
            node = nodes.get(ev.node_id, root)
            node.own.add_token(ev)
            node.token_seqs.append(ev.seq)
            node.t_last = max(node.t_last, t)
        elif isinstance(ev, NodeOpen):
            saved[state_node] = (top, cur_len)
            if ev.base_id != state_node:
                top, cur_len = saved.get(ev.base_id, (None, 0))
            state_node = ev.node_id
            nodes[ev.node_id] = NodeFacts(
                ev.node_id, ev.kind, ev.name, base_id=ev.base_id, grammar=ev.grammar, open_seq=ev.seq,
                t_open=t, t_last=t, context_tokens=top[1] if top is not None else 0, context_len=cur_len)
        elif isinstance(ev, NodeClose):
            saved[ev.node_id] = (top, cur_len)
            state_node = ev.node_id
            node = nodes.get(ev.node_id)
            if node is not None:
                node.close_seq, node.t_close = ev.seq, t  # a container closed again (a role's closer): the last
                node.t_last = max(node.t_last, t)
                node.stop_reason = ev.stop_reason or node.stop_reason
        elif isinstance(ev, Backtrack):
            target = ev.pos if ev.pos >= 0 else cur_len - len(ev.bytes)
            while top is not None and top[0] >= target:
                removed[top[3]] = ev.seq
                top = top[2]
            cur_len = max(0, target)
            node = nodes.get(ev.node_id, root)
            node.own.add_backtrack(ev)
            node.backtrack_seqs.append(ev.seq)
            node.t_last = max(node.t_last, t)
        elif isinstance(ev, Capture):
            node = nodes.get(ev.node_id, root)
            node.captures.append(ev)
            node.t_last = max(node.t_last, t)
        elif isinstance(ev, Message):
            messages.append(ev)
        elif isinstance(ev, RunStart):
            start = start or ev
        elif isinstance(ev, RunEnd):
            end = ev
    t_first = t_first or 0
    t_last = t_last if t_last is not None else t_first
    root.t_open = start.t_us if start is not None and start.t_us >= 0 else t_first
    root.t_close = end.t_us if end is not None and end.t_us >= 0 else None
    root.t_last = t_last
    _link(tree, nodes, root)
    return RunFacts(start, end, events, tree, root, nodes, messages, t_first, t_last, removed)


def _link(tree: TraceTree, nodes: dict[int, NodeFacts], root: NodeFacts) -> None:
    """Nest the facts as the tree nests its nodes (branch pseudo-nodes become ``branch`` flags),
    then sum each subtree (children before parents)."""
    order: list[NodeFacts] = []

    def visit(tnode, parent: NodeFacts, span_parent: NodeFacts, branch) -> None:
        for child in tnode.children:
            if child.kind == "branch":
                visit(child, parent, span_parent, child)
                continue
            facts = nodes.get(child.node_id)
            if facts is None:  # pragma: no cover - the tree only holds opened nodes
                continue
            if branch is not None:
                facts.branch, facts.branch_base = branch.name, branch.base_id
            facts.parent = span_parent
            facts.depth = parent.depth + 1
            parent.children.append(facts)
            order.append(facts)
            visit(child, facts, span_parent if facts.folded else facts, None)

    visit(tree.root, root, root, None)
    for facts in reversed(order):  # children first
        facts.total.merge(facts.own)
        for c in facts.children:
            facts.total.merge(c.total)
        end = facts.t_close if facts.t_close is not None else facts.t_last
        facts.t_last = max(facts.t_last, end, *(c.t_last for c in facts.children)) if facts.children else \
            max(facts.t_last, end)
    root.total.merge(root.own)
    for c in root.children:
        root.total.merge(c.total)
