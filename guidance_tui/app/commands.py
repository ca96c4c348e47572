"""Command palette entries (``ctrl+p``), namespaced like "go: next backtrack"."""

from __future__ import annotations

from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider

# (palette text, app action, help)
COMMANDS: list[tuple[str, str, str]] = [
    ("go: next backtrack", "backtrack(1)", "Move the cursor to the next backtrack"),
    ("go: previous backtrack", "backtrack(-1)", "Move the cursor to the previous backtrack"),
    ("go: next low-probability token", "low_prob(1)", "Next generated token with p < 0.1"),
    ("go: previous low-probability token", "low_prob(-1)", "Previous generated token with p < 0.1"),
    ("go: first token", "home", "Move the cursor to the start of the run"),
    ("go: end and follow", "end", "Move the cursor to the end; follow a live run"),
    ("play: play / pause", "play", "Replay at the recorded pace"),
    ("play: faster", "speed(1)", "Increase the playback speed"),
    ("play: slower", "speed(-1)", "Decrease the playback speed"),
    ("view: colour by probability", "set_color('probability')", "Token background by sampled probability"),
    ("view: colour by latency", "set_color('latency')", "Token background by latency relative to the median"),
    ("view: colour by kind", "set_color('kind')", "Token background by prompt / generated / forced"),
    ("view: underline slow tokens", "set_underline('latency')", "Underline tokens slower than 2× the median"),
    ("view: underline unlikely tokens", "set_underline('probability')", "Underline tokens with p < 0.25"),
    ("view: underline forced tokens", "set_underline('kind')", "Underline tokens the grammar forced"),
    ("view: no underline", "set_underline('none')", "No second metric"),
    ("view: struck-through / hidden backtracked tokens", "toggle_backtracked", "Show or hide taken-back tokens"),
    ("view: visible whitespace", "toggle_whitespace", "Show spaces, tabs and newlines as glyphs"),
    ("view: token detail pane", "toggle_detail", "Show or hide the token detail pane"),
    ("pane: program tree", "focus_pane('tree')", "Focus the program tree"),
    ("pane: backtracks", "focus_pane('backtracks')", "Focus the backtrack list"),
    ("pane: script output", "focus_pane('output')", "Show what the script printed"),
    ("pane: token stream", "focus_pane('tokens')", "Focus the token stream"),
    ("help: keys", "help", "Every key binding"),
]


class InspectorCommands(Provider):
    """Inspector actions for the command palette."""

    def _run(self, action: str) -> None:
        self.app.call_later(self.app.run_action, action)

    async def discover(self) -> Hits:
        for text, action, help in COMMANDS:
            yield DiscoveryHit(text, partial(self._run, action), help=help)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for text, action, help in COMMANDS:
            score = matcher.match(text)
            if score > 0:
                yield Hit(score, matcher.highlight(text), partial(self._run, action), text=text, help=help)
