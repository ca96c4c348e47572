"""How a fork shows in a trace (written by ``engines.fork``, read by viewers and ``compare``).

A fork at token K of node N adds a node named ``"<N's name or kind> ⑂ fork at token K"`` beside N.
In a fork's own trace file N is cut there: its NodeClose says ``"cut: forked at token K"``.
"""

from __future__ import annotations

MARK = " ⑂ fork at token "
CUT = "cut: forked at token "


def label(name: str, kind: str, k: int) -> str:
    """The forked node's name."""
    return f"{name or kind}{MARK}{k}"


def cut_reason(k: int) -> str:
    """The stop reason of the original node, closed at the fork."""
    return f"{CUT}{k}"


def cut_at(stop_reason: str) -> int | None:
    """K, for a node a fork cut at token K (else None)."""
    if stop_reason.startswith(CUT):
        try:
            return int(stop_reason[len(CUT):])
        except ValueError:
            return None
    return None
