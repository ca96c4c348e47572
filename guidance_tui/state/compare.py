"""Comparing two runs, or two branches of one run: headless (no Textual).

Two sides are aligned by program node first, then by text:

* **Nodes** pair up by their place in the program: (depth, kind, name) in
  open order, matched with a longest-common-subsequence diff, so a node one
  side has and the other lacks does not shift every later pair.  A literal's
  name is its own text, so literals pair by place alone (that is where two
  prompts differ).  In a fork's own trace the forked node stands where the
  node it regenerated was, so it pairs with the original run's node.
* **Text** inside a pair: the node's own tokens (those a backtrack did not
  take back).  Up to the first byte where the two texts differ, tokens are
  grouped between the byte offsets both sides share (two tokenizers cut the
  same text differently); after it, the remaining tokens are diffed by their
  bytes so the runs can agree again.  A row holding one token on each side
  with the same bytes is "same", and carries the probability delta.

Per node (its own tokens and those of the nodes inside it): token counts,
the forced share, the time from open to close and tokens per second.  The
grammar each side's node lowered to, and whether the difference lies in
prompt text, are recorded for the summary.  Everything here is built from
event lists, so ``compare --plain``, the compare screen and tests share it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from functools import cached_property
from itertools import zip_longest
from operator import attrgetter
from typing import Iterable, Sequence

from tracing import Backtrack, Capture, NodeClose, NodeOpen, RunEnd, RunStart, Token, TokenKind, display_text, forks

PROMPT, GENERATED, FORCED = int(TokenKind.PROMPT), int(TokenKind.GENERATED), int(TokenKind.FORCED)
_bytes_of = attrgetter("bytes")
DIFF_LIMIT = 400_000  # tokens(A) x tokens(B) of a divergent stretch worth an LCS diff; above: one block


# -- one side ---------------------------------------------------------------------
@dataclass
class NodeFacts:
    """One program node of a side, with its own tokens and its subtree's counts."""

    node_id: int
    kind: str
    name: str
    parent_id: int
    depth: int
    grammar: str = ""
    tokens: list[Token] = field(default_factory=list)  # own tokens still in the text, in order
    captures: list[Capture] = field(default_factory=list)
    t_open: int = 0
    t_close: int = -1
    stop_reason: str = ""
    counts: list[int] = field(default_factory=lambda: [0, 0, 0])  # prompt, generated, forced: the subtree's
    pairs_as: str | None = None  # the name it pairs by, when not its own (a fork: the node it forked)

    @property
    def key(self) -> tuple:
        name = self.name if self.pairs_as is None else self.pairs_as
        return (self.depth, self.kind, "" if self.kind == "literal" else name)

    @property
    def label(self) -> str:
        if self.kind == "literal":
            return "prompt text"
        return f"{self.kind} {self.name}".strip()

    @cached_property
    def text(self) -> bytes:
        """The node's own text (read once the side is built: its tokens do not change after)."""
        return b"".join(map(_bytes_of, self.tokens))

    @property
    def n_tokens(self) -> int:
        return sum(self.counts)

    @property
    def sampled(self) -> int:
        return self.counts[GENERATED] + self.counts[FORCED]

    @property
    def forced_share(self) -> float:
        s = self.sampled
        return self.counts[FORCED] / s if s else math.nan

    @property
    def seconds(self) -> float:
        return max(0, self.t_close - self.t_open) / 1e6 if self.t_close >= 0 else math.nan

    @property
    def tok_per_s(self) -> float:
        s = self.seconds
        return self.sampled / s if s == s and s > 0 and self.sampled else math.nan


@dataclass
class Side:
    """What one side of a comparison is: a run (all its nodes) or a branch (some)."""

    label: str
    nodes: list[NodeFacts]
    start: RunStart | None = None
    end: RunEnd | None = None

    @property
    def model(self) -> str:
        return self.start.model if self.start is not None else ""

    @property
    def backend(self) -> str:
        return self.start.backend if self.start is not None else ""


def build_side(events: Iterable, label: str, only: set[int] | None = None) -> Side:
    """A side from a run's events; ``only``: node ids that are the side (with the nodes inside them)."""
    nodes: dict[int, NodeFacts] = {}
    order: list[NodeFacts] = []
    tokens: list[Token] = []  # arrival order, for backtracks
    removed: set[int] = set()  # positions in ``tokens`` a backtrack took back
    start = end = None
    last_t = 0
    for ev in events:
        tp = type(ev)
        if tp is Token:
            tokens.append(ev)
        elif tp is NodeOpen:
            parent = nodes.get(ev.parent_id)
            nf = NodeFacts(ev.node_id, ev.kind, ev.name, ev.parent_id, parent.depth + 1 if parent else 0,
                           ev.grammar, t_open=ev.t_us)
            nodes[ev.node_id] = nf
            order.append(nf)
        elif tp is NodeClose:
            nf = nodes.get(ev.node_id)
            if nf is not None:
                nf.t_close, nf.stop_reason = ev.t_us, ev.stop_reason
        elif tp is Backtrack:
            _take_back(tokens, removed, ev)
        elif tp is Capture:
            nf = nodes.get(ev.node_id)
            if nf is not None:
                nf.captures.append(ev)
        elif tp is RunStart:
            start = start or ev
        elif tp is RunEnd:
            end = ev
        if ev.t_us > last_t:
            last_t = ev.t_us
    for i, tok in enumerate(tokens):
        if i not in removed:
            nf = nodes.get(tok.node_id)
            if nf is not None:
                nf.tokens.append(tok)
                nf.counts[tok.kind] += 1
    order = _fork_in_place(order, nodes)
    for nf in reversed(order):  # children after parents: add each subtree's counts to its parent
        if nf.t_close < 0:
            nf.t_close = last_t
        parent = nodes.get(nf.parent_id)
        if parent is not None:
            for k in range(3):
                parent.counts[k] += nf.counts[k]
    if only is not None:
        keep = set()
        for nf in order:  # parents come first: a node is kept when it or its parent is
            if nf.node_id in only or nf.parent_id in keep:
                keep.add(nf.node_id)
        order = [nf for nf in order if nf.node_id in keep]
        top = min((nf.depth for nf in order), default=0)
        for nf in order:  # depths relative to the side's top, so two branches at different depths align
            nf.depth -= top
    return Side(label, order, start, end)


def _fork_in_place(order: list[NodeFacts], nodes: dict[int, NodeFacts]) -> list[NodeFacts]:
    """A fork's own trace: the node it regenerated stands where the original was (which the fork cut
    at token K), so comparing the original run with the fork pairs the two versions of the node."""
    cut = {nf.node_id: k for nf in order if (k := forks.cut_at(nf.stop_reason)) is not None}
    if not cut:
        return order
    drop = set()
    for nf in order:
        for node_id, k in cut.items():
            orig = nodes[node_id]
            if nf.parent_id == orig.parent_id and nf.kind == orig.kind \
                    and nf.name == forks.label(orig.name, orig.kind, k):
                nf.pairs_as = orig.name
                drop.add(node_id)
    for node_id in drop:
        del nodes[node_id]
    return [nf for nf in order if nf.node_id not in drop]


def _take_back(tokens: list[Token], removed: set[int], ev: Backtrack) -> None:
    """Mark the tokens ``ev`` took back: from the end of the text, by bytes (else by count)."""
    want, got, n = len(ev.bytes), 0, 0
    i = len(tokens) - 1
    while i >= 0 and (got < want if want else n < ev.n_tokens):
        if i not in removed:
            removed.add(i)
            got += len(tokens[i].bytes)
            n += 1
        i -= 1


# -- aligning ---------------------------------------------------------------------
@dataclass(frozen=True)
class TokenRow:
    """Aligned tokens: ``a[a0:a1]`` against ``b[b0:b1]`` (either may be empty)."""

    a0: int
    a1: int
    b0: int
    b1: int
    same: bool  # one token each side, the same bytes


@dataclass
class NodePair:
    a: NodeFacts | None
    b: NodeFacts | None
    rows: list[TokenRow] | None = None  # built on first use (:func:`token_rows`)
    diverge_at: int = -1  # first byte where the own texts differ; -1: the same text

    @property
    def paired(self) -> bool:
        return self.a is not None and self.b is not None

    @property
    def same_text(self) -> bool:
        return self.paired and self.diverge_at < 0

    @property
    def label(self) -> str:
        return (self.a or self.b).label  # type: ignore[union-attr]

    @property
    def depth(self) -> int:
        return (self.a or self.b).depth  # type: ignore[union-attr]

    @property
    def grammar_differs(self) -> bool:
        return self.paired and self.a.grammar != self.b.grammar  # type: ignore[union-attr]

    @property
    def prompt_differs(self) -> bool:
        """The texts differ, and the first difference is in text the program supplied."""
        if not self.paired or self.diverge_at < 0:
            return False
        ka, kb = token_kind_at(self.a, self.diverge_at), token_kind_at(self.b, self.diverge_at)  # type: ignore
        return PROMPT in (ka, kb)


@dataclass
class Comparison:
    a: Side
    b: Side
    pairs: list[NodePair]
    first: int | None  # index in ``pairs`` of the first divergence (text, or a node only one side has)

    @property
    def differing(self) -> list[int]:
        return [i for i, p in enumerate(self.pairs) if not p.same_text]

    def run_differences(self) -> list[tuple[str, str, str]]:
        """(what, A's, B's) for the run facts that differ: script, model, backend, status."""
        out = []
        sa, sb, ea, eb = self.a.start, self.b.start, self.a.end, self.b.end
        for what, va, vb in (("script", sa and sa.script, sb and sb.script), ("model", self.a.model, self.b.model),
                             ("backend", self.a.backend, self.b.backend),
                             ("status", ea.status if ea else "incomplete", eb.status if eb else "incomplete")):
            if (va or "") != (vb or ""):
                out.append((what, va or "-", vb or "-"))
        return out


def compare(a: Side, b: Side) -> Comparison:
    """Align two sides by node, then (for each pair) find where their texts first differ."""
    pairs: list[NodePair] = []
    ka, kb = [n.key for n in a.nodes], [n.key for n in b.nodes]
    if ka == kb:
        opcodes = [("equal", 0, len(ka), 0, len(kb))]
    else:
        opcodes = SequenceMatcher(None, ka, kb, autojunk=False).get_opcodes()
    for op, i1, i2, j1, j2 in opcodes:
        if op == "equal":
            pairs.extend(NodePair(a.nodes[i], b.nodes[j]) for i, j in zip(range(i1, i2), range(j1, j2)))
            continue
        # an unmatched stretch: nodes at the same place with the same kind and depth still pair
        for i, j in zip_longest(range(i1, i2), range(j1, j2)):
            na = a.nodes[i] if i is not None else None
            nb = b.nodes[j] if j is not None else None
            if na is not None and nb is not None and (na.kind, na.depth) == (nb.kind, nb.depth):
                pairs.append(NodePair(na, nb))
                continue
            if na is not None:
                pairs.append(NodePair(na, None))
            if nb is not None:
                pairs.append(NodePair(None, nb))
    first = None
    for i, p in enumerate(pairs):
        if p.paired:
            ta, tb = p.a.text, p.b.text  # type: ignore[union-attr]
            if ta != tb:
                p.diverge_at = _common_prefix(ta, tb)
        else:
            p.diverge_at = 0
        if first is None and p.diverge_at >= 0:
            first = i
    return Comparison(a, b, pairs, first)


def _common_prefix(x: bytes, y: bytes) -> int:
    n = min(len(x), len(y))
    if x[:n] == y[:n]:
        return n
    lo, hi = 0, n  # binary search over slice equality: C-speed compares
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if x[:mid] == y[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def token_kind_at(node: NodeFacts, offset: int) -> int | None:
    """The kind of the token of ``node`` covering byte ``offset`` of its own text (the last one at the end)."""
    pos = 0
    for t in node.tokens:
        pos += len(t.bytes)
        if offset < pos:
            return int(t.kind)
    return int(node.tokens[-1].kind) if node.tokens else None


def token_rows(pair: NodePair) -> list[TokenRow]:
    """The aligned token rows of a pair (computed once)."""
    if pair.rows is None:
        pair.rows = _align_tokens(pair.a.tokens if pair.a else [], pair.b.tokens if pair.b else [])
    return pair.rows


def _align_tokens(ta: Sequence[Token], tb: Sequence[Token]) -> list[TokenRow]:
    rows: list[TokenRow] = []
    ba = list(map(_bytes_of, ta))
    bb = list(map(_bytes_of, tb))
    # 1. the common text prefix, grouped between the byte offsets both sides share
    i = j = 0
    pa = pb = 0
    gi, gj = 0, 0
    prefix = _common_prefix(b"".join(ba), b"".join(bb))
    while i < len(ba) and j < len(bb):
        na, nb = pa + len(ba[i]), pb + len(bb[j])
        if min(na, nb) > prefix:
            break
        if na <= nb:
            pa, i = na, i + 1
        if nb <= na:
            pb, j = nb, j + 1
        if pa == pb:  # a boundary on both sides: close the group
            rows.append(TokenRow(gi, i, gj, j, i - gi == 1 and j - gj == 1 and ba[gi] == bb[gj]))
            gi, gj = i, j
    i, j = gi, gj  # an open group past the prefix belongs to the divergent part
    # 2. the rest: diffed by token bytes (same tokenizer), else one block
    ra, rb = ba[i:], bb[j:]
    if not ra and not rb:
        return rows
    if ra and rb and len(ra) * len(rb) <= DIFF_LIMIT:
        ops = SequenceMatcher(None, ra, rb, autojunk=False).get_opcodes()
    else:
        ops = [("replace", 0, len(ra), 0, len(rb))]
    for op, i1, i2, j1, j2 in ops:
        if op == "equal":
            rows.extend(TokenRow(i + x, i + x + 1, j + y, j + y + 1, True)
                        for x, y in zip(range(i1, i2), range(j1, j2)))
        else:  # side by side, one token a row, until the shorter side runs out
            for x, y in zip_longest(range(i1, i2), range(j1, j2)):
                rows.append(TokenRow(i + x if x is not None else i + i2, i + x + 1 if x is not None else i + i2,
                                     j + y if y is not None else j + j2, j + y + 1 if y is not None else j + j2,
                                     False))
    return rows


def prob_delta(pair: NodePair, row: TokenRow) -> float:
    """B's probability minus A's for a "same" row of sampled tokens; NaN otherwise."""
    if not row.same or pair.a is None or pair.b is None:
        return math.nan
    x, y = pair.a.tokens[row.a0], pair.b.tokens[row.b0]
    if x.kind == PROMPT or y.kind == PROMPT:
        return math.nan
    return y.prob - x.prob


def prob_deltas(pair: NodePair) -> list[tuple[bytes, float, float]]:
    """(token bytes, A's p, B's p) for every aligned sampled token of a pair with both probabilities known."""
    out = []
    for row in token_rows(pair):
        d = prob_delta(pair, row)
        if d == d:
            out.append((pair.a.tokens[row.a0].bytes, pair.a.tokens[row.a0].prob,  # type: ignore[union-attr]
                        pair.b.tokens[row.b0].prob))  # type: ignore[union-attr]
    return out


# -- words for people -----------------------------------------------------------------
def fmt_delta(x: float, fmt: str = "{:+.0f}") -> str:
    return "" if x != x else fmt.format(x)


def fmt_rate(x: float) -> str:
    return "–" if x != x else f"{x:.1f}"


def fmt_share(x: float) -> str:
    return "–" if x != x else f"{x * 100:.0f}%"


def fmt_secs(x: float) -> str:
    if x != x:
        return "–"
    return f"{x * 1000:.0f} ms" if x < 1 else f"{x:.2f} s"


def excerpt(data: bytes, at: int, before: int = 30, after: int = 50) -> str:
    """The text around byte ``at`` as one line: ``…before⟦after…`` (``⟦`` marks the divergence)."""
    lo = max(0, at - before)
    head = display_text(data[lo:at])
    tail = display_text(data[at:at + after])
    one = lambda s: s.replace("\n", "⏎").replace("\t", "→")  # noqa: E731
    return ("…" if lo > 0 else "") + one(head) + "⟦" + one(tail) + ("…" if at + after < len(data) else "")


def divergence_lines(cmp: Comparison, index: int) -> list[str]:
    """Where pair ``index`` diverges, with both sides' text."""
    p = cmp.pairs[index]
    if not p.paired:
        side = "A" if p.a is not None else "B"
        only = p.a or p.b
        return [f"{only.label} is only in {side}: {excerpt(only.text, 0, 0, 80)[1:]}"]  # type: ignore
    where = "the prompts differ" if p.prompt_differs else "the generated text differs"
    lines = [f"{p.label}, at byte {p.diverge_at}: {where}"]
    lines.append(f"  A │ {excerpt(p.a.text, p.diverge_at)}")  # type: ignore[union-attr]
    lines.append(f"  B │ {excerpt(p.b.text, p.diverge_at)}")  # type: ignore[union-attr]
    if p.grammar_differs:
        lines.append(f"  grammar A │ {_one_line(p.a.grammar)}")  # type: ignore[union-attr]
        lines.append(f"  grammar B │ {_one_line(p.b.grammar)}")  # type: ignore[union-attr]
    return lines


def _one_line(s: str, limit: int = 100) -> str:
    s = " ".join(s.split()) or "(none)"
    return s if len(s) <= limit else s[: limit - 1] + "…"


NODE_HEADER = ("node", "tok A", "B", "Δ", "forced A", "B", "time A", "B", "tok/s A", "B", "Δ")


def node_row(p: NodePair) -> tuple[str, ...]:
    """The per-node figures of a pair as strings (see ``NODE_HEADER``)."""
    a, b = p.a, p.b
    ta = str(a.n_tokens) if a else "–"
    tb = str(b.n_tokens) if b else "–"
    dt = fmt_delta(b.n_tokens - a.n_tokens) if a and b else ""
    ra, rb = (a.tok_per_s if a else math.nan), (b.tok_per_s if b else math.nan)
    return ("  " * p.depth + p.label, ta, tb, dt if dt not in ("+0",) else "0",
            fmt_share(a.forced_share) if a else "–", fmt_share(b.forced_share) if b else "–",
            fmt_secs(a.seconds) if a else "–", fmt_secs(b.seconds) if b else "–",
            fmt_rate(ra), fmt_rate(rb), fmt_delta(rb - ra, "{:+.1f}"))


def summary_lines(cmp: Comparison, *, all_nodes: bool = False) -> list[str]:
    """What ``compare --plain`` prints: the runs, where they diverge with both texts, then per node."""
    a, b = cmp.a, cmp.b
    out = [f"A: {a.label}  ({a.model or 'model ?'}, {a.backend or 'backend ?'})",
           f"B: {b.label}  ({b.model or 'model ?'}, {b.backend or 'backend ?'})"]
    for what, va, vb in cmp.run_differences():
        out.append(f"{what} differs: A {va} · B {vb}")
    pairs = cmp.pairs
    paired = sum(p.paired for p in pairs)
    same = sum(p.same_text for p in pairs)
    out.append(f"nodes: {paired} paired ({same} with the same text, {paired - same} differ), "
               f"{sum(p.b is None for p in pairs)} only in A, {sum(p.a is None for p in pairs)} only in B")
    deltas = [(p, d) for p in pairs if p.paired for d in prob_deltas(p)]
    if deltas:
        mean = sum(abs(pb - pa) for _, (_, pa, pb) in deltas) / len(deltas)
        out.append(f"shared sampled tokens: {len(deltas)}, mean |Δp| {mean * 100:.1f} points; the largest:")
        for p, (data, pa, pb) in sorted(deltas, key=lambda x: -abs(x[1][2] - x[1][1]))[:3]:
            out.append(f"  {display_text(data)!r} in {p.label}: {pa * 100:.1f}% → {pb * 100:.1f}% "
                       f"({(pb - pa) * 100:+.1f})")
    if not pairs:
        out.append("no divergence: neither run has a program node")
    elif cmp.first is None:
        out.append("no divergence: every node has the same text on both sides")
    else:
        out.append("")
        out.append("first divergence: " + divergence_lines(cmp, cmp.first)[0])
        out += divergence_lines(cmp, cmp.first)[1:]
        rest = [i for i in cmp.differing if i != cmp.first]
        if rest:
            out.append("")
            out.append(f"other differences ({len(rest)}):")
            for i in rest[: None if all_nodes else 20]:
                out += ["- " + divergence_lines(cmp, i)[0]] + divergence_lines(cmp, i)[1:]
            if not all_nodes and len(rest) > 20:
                out.append(f"… and {len(rest) - 20} more (--all lists every one)")
    out.append("")
    shown = [p for p in pairs if all_nodes or not p.same_text or p.depth == 0]
    out.append(f"per node ({'all' if all_nodes or len(shown) == len(pairs) else 'top level and differing'}):")
    out += _table([NODE_HEADER] + [node_row(p) for p in shown])
    return out


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) if c == 0 else cell.rjust(w) for c, (cell, w) in enumerate(zip(r, widths)))
            .rstrip() for r in rows]


# -- branches of one run --------------------------------------------------------------
def line_ids(tree, node) -> set[int]:
    """The node ids of the line of nodes ``node`` starts in a TraceTree: a branch node's
    children, or ``node`` and the later siblings that continue from it, one from the other."""
    if node.kind == "branch":
        kids = [k for k in node.children if k.kind != "branch"]
        return {k.node_id for k in kids}
    holder = node.parent
    if holder is None:
        return {node.node_id}
    kids = list(holder.children)
    out = {node.node_id}
    last = node.node_id
    for k in kids[kids.index(node) + 1:]:
        if k.kind == "branch" or k.base_id != last:
            break
        out.add(k.node_id)
        last = k.node_id
    return out
