"""The command palette (``ctrl+p``): every action with a palette entry in ``actions``,
namespaced like "go: next backtrack"."""

from __future__ import annotations

from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider

from guidance_tui.app.actions import palette_entries


class InspectorCommands(Provider):
    """Inspector actions for the command palette."""

    def _run(self, action: str) -> None:
        # the inspector's actions live on its screen, below the palette
        screen = self.screen
        self.app.call_later(self.app.run_action, action, screen)

    async def discover(self) -> Hits:
        for text, action, help in palette_entries():
            yield DiscoveryHit(text, partial(self._run, action), help=help)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for text, action, help in palette_entries():
            score = matcher.match(text)
            if score > 0:
                yield Hit(score, matcher.highlight(text), partial(self._run, action), text=text, help=help)
