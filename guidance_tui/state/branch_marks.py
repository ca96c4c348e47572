"""Where the token stream jumps to another branch, and what that branch continues from.

A program that reuses one base model (``lm = base + classify(r)`` for each
review) records branch after branch; each continues from an older state than
the text before it (``NodeOpen.base_id`` is not the latest state, exactly as
``tracing.store`` switches text there).  Without a mark the stream reads as
one conversation.  :class:`BranchMarks` finds the first token of each branch
and the words its label shows ("⑂ from role system"); the layout and the
token view draw it as a chip before that token.  Incremental and cheap: it
reads only the store's NodeOpen/NodeClose events it has not seen.
"""

from __future__ import annotations

import bisect

from tracing import NodeClose, NodeOpen

from guidance_tui.state.token_index import TokenIndex

NAME_LIMIT = 18  # characters of a base node's name in a mark


def node_words(kind: str, name: str) -> str:
    """A node as a mark names it: "role system", "gen reason", "text “You are…”"."""
    if len(name) > NAME_LIMIT:
        name = name[: NAME_LIMIT - 1].rstrip() + "…"
    if kind == "literal":
        return f"text “{name}”" if name else "text"
    return f"{kind} {name}".strip()


class BranchMarks:
    """Token index -> mark text, for the tokens that start a branch."""

    def __init__(self, index: TokenIndex) -> None:
        self.index = index
        self.labels: dict[int, str] = {}
        self.tokens: list[int] = []  # the marked token indices, sorted
        self._opens = 0  # NodeOpen / NodeClose events seen
        self._closes = 0
        self._state = 0  # the node whose state the text is, as the store tracks it
        self._words: dict[int, str] = {0: "the empty model"}
        self._from: dict[int, str] = {}  # node id -> what a branch from it says it continues from
        self._pending: list[tuple[int, str]] = []  # (seq of the branch's NodeOpen, mark) without a token yet

    def update(self) -> int | None:
        """Read what the index ingested since the last call; the lowest newly marked token, or None."""
        idx = self.index
        store = idx.store
        opens, closes = store.seqs_of(NodeOpen), store.seqs_of(NodeClose)
        upto = idx.last_seq
        i, j = self._opens, self._closes
        while True:  # the two seq lists, merged in seq order, up to what the index has ingested
            so = opens[i] if i < len(opens) and opens[i] <= upto else None
            sc = closes[j] if j < len(closes) and closes[j] <= upto else None
            if so is None and sc is None:
                break
            if sc is None or (so is not None and so < sc):
                ev = store[so]
                words = self._words[ev.node_id] = node_words(ev.kind, ev.name)
                if ev.kind == "literal" and ev.parent_id in self._words and ev.parent_id != 0:
                    # a prompt text: name where it sits, then its first words
                    words = f"{self._words[ev.parent_id]}: {words[5:] if ev.name else 'text'}"
                self._from[ev.node_id] = words
                if ev.base_id != self._state:
                    self._pending.append((ev.seq, f"⑂ from {self._from.get(ev.base_id, 'node %d' % ev.base_id)}"))
                self._state = ev.node_id
                i += 1
            else:
                self._state = store[sc].node_id
                j += 1
        self._opens, self._closes = i, j
        if not self._pending:
            return None
        lowest = None
        left = []
        for seq, text in self._pending:
            t = idx.count_at(seq)  # the first token after the branch opened
            if t >= idx.n:
                left.append((seq, text))
                continue
            if t in self.labels:  # two branches before one token: the later one is the one shown
                self.labels[t] = text
            else:
                self.labels[t] = text
                bisect.insort(self.tokens, t)
            lowest = t if lowest is None else min(lowest, t)
        self._pending = left
        return lowest

    def next_from(self, t: int) -> int:
        """The first marked token at or after ``t`` (``index.n`` when none)."""
        k = bisect.bisect_left(self.tokens, t)
        return self.tokens[k] if k < len(self.tokens) else self.index.n
