"""Search in the inspector: ``/`` opens a one-line bar under the panes; enter
searches token text, node names, capture names and values (see
``guidance_tui.state.search``) and jumps to the first hit at or after the
cursor; ``n`` / ``N`` step to the next and previous hit (wrapping around).
``m`` jumps to the run's least likely generated token, ``M`` to its least
certain choice (the smallest margin over the next allowed token).

The actions live in :class:`SearchActions`, mixed into the inspector screen,
which provides ``index``, ``cursor``, ``tree_pane``, ``token_view``,
``_moved``, ``_sync`` and ``_choose_node``.
"""

from __future__ import annotations

from textual.binding import Binding
from textual.widgets import Input

from guidance_tui.state.search import Hit, TextSearch, least_certain, lowest_prob, search, step

# Priority keys of the screen that are also text: while the bar is focused they type.
_TYPING_ACTIONS = {"step", "home", "end", "play"}


class SearchBar(Input):
    """The search query; hidden until ``/``."""

    BINDINGS = [Binding("escape", "close", "Close search", show=False, id="search-close")]
    DEFAULT_CSS = """
    SearchBar { display: none; height: 1; border: none; padding: 0 1; background: $panel; }
    SearchBar.-open { display: block; }
    SearchBar:focus { border: none; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(placeholder="search tokens, nodes, captures — enter to find, esc to close", id=id)

    def open(self) -> None:
        self.add_class("-open")
        self.focus()

    def action_close(self) -> None:
        self.remove_class("-open")
        self.screen.token_view.focus()


class SearchActions:
    """The search and jump actions of the inspector screen."""

    _search_query = ""
    _search_text: TextSearch | None = None
    _search_at: Hit | None = None  # the hit last jumped to

    @property
    def search_bar(self) -> SearchBar:
        return self.query_one(SearchBar)  # type: ignore[attr-defined]

    def check_action(self, action: str, parameters) -> bool | None:
        if action in _TYPING_ACTIONS and self.search_bar.has_focus:
            return False  # the key goes to the bar (a space, an arrow)
        return True

    def action_search(self) -> None:
        self.search_bar.open()

    def on_input_submitted(self, event: Input.Submitted) -> None:  # (a mixin: @on would not be collected)
        if not isinstance(event.input, SearchBar):
            return
        event.stop()
        self._search_query = event.value.strip()
        self.search_bar.action_close()
        if self._search_query:
            self._search_step(1, from_here=True)

    def _hits(self) -> list[Hit]:
        if self._search_text is None:
            self._search_text = TextSearch(self.index)  # type: ignore[attr-defined]
        return search(self._search_query, self.index, self.tree_pane.trace, self._search_text)  # type: ignore

    def action_search_step(self, direction: int) -> None:
        if not self._search_query:
            self.notify("Nothing searched yet: press / to search.", timeout=3)  # type: ignore[attr-defined]
            return
        self._search_step(direction)

    def _search_step(self, direction: int, from_here: bool = False) -> None:
        hits = self._hits()
        if not hits:
            self.notify(f"No match for {self._search_query!r}.", timeout=3)  # type: ignore[attr-defined]
            return
        seq = self.cursor.seq  # type: ignore[attr-defined]
        last = self._search_at
        if from_here:
            i = step(hits, seq - 1, 1)
        elif last is not None and last.seq == seq and last in hits:
            i = (hits.index(last) + direction) % len(hits)  # several hits at one seq: each in turn
        else:
            i = step(hits, seq, direction)
        hit = hits[i]
        self._search_at = hit
        self._jump(hit.seq, hit.token, hit.node_id if hit.what == "node" else None)
        self.notify(f"{i + 1} of {len(hits)}: {hit.label}", title=f"/{self._search_query}",  # type: ignore
                    timeout=3)

    def _jump(self, seq: int, token: int, node_id: int | None = None) -> None:
        """Move the timeline to ``seq`` and select ``token`` (highlighting node ``node_id``)."""
        node = self.tree_pane.trace.by_id.get(node_id) if node_id is not None else None  # type: ignore
        self.cursor.seek(max(seq, self.cursor.seq) if node is not None else seq)  # type: ignore[attr-defined]
        self._moved(True)  # type: ignore[attr-defined]
        if node is not None:
            self._choose_node(node, pin=True)  # type: ignore[attr-defined]
            self.tree_pane.show_node(node)  # type: ignore[attr-defined]
        elif token >= 0:
            self.pinned = token
            self._sync(scroll="selected")  # type: ignore[attr-defined]

    def action_lowest_prob(self) -> None:
        t = lowest_prob(self.index)  # type: ignore[attr-defined]
        if t is None:
            self.notify("No generated token with a known probability.", timeout=3)  # type: ignore
            return
        self._jump(self.index.seqs[t], t)  # type: ignore[attr-defined]
        p = self.index.prob[t]  # type: ignore[attr-defined]
        self.notify(f"Token {t + 1:,}: p {p * 100:.2g}% after the mask, the lowest in the run.",  # type: ignore
                    title="Least likely token", timeout=4)

    def action_least_certain(self) -> None:
        found = least_certain(self.index)  # type: ignore[attr-defined]
        if found is None:
            self.notify("No generated token with another allowed alternative recorded.", timeout=3)  # type: ignore
            return
        t, m = found
        self._jump(self.index.seqs[t], t)  # type: ignore[attr-defined]
        words = (f"{m * 100:.1f} points ahead of the next allowed token" if m >= 0
                 else f"{-m * 100:.1f} points behind the best allowed token (sampled)")
        self.notify(f"Token {t + 1:,}: {words}, after the mask.", title="Least certain choice",  # type: ignore
                    timeout=5)
