"""Panes in an inactive tab: redraw them when they are shown, not while hidden.

A refresh of a widget that is not on screen makes Textual re-arrange the whole
screen on the next frame (about a millisecond at 120×40, on every cursor move),
so the tree and the backtrack list note that they are stale instead and
redraw on their Show event.
"""

from __future__ import annotations

from textual.dom import DOMNode


def displayed(node: DOMNode) -> bool:
    """False when ``node`` or one of its ancestors is ``display: none`` (an inactive tab)."""
    n: DOMNode | None = node
    while n is not None:
        if not n.display:
            return False
        n = n.parent
    return True
