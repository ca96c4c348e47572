"""Load progress in a trace: ``Message(level="progress")`` lines and how viewers show them.

Engines report what they do before the first token (loading a model, converting
it, building its tokenizer) as progress messages (see ``engines.progress``):
"loading X …" when a phase starts, "loading X … 40%" when it knows how far it
is, "loading X: done in 2.1 s" when it ends.  A viewer shows the newest one as
ONE line, adding the seconds a running phase has taken so far.
"""

from __future__ import annotations

import bisect

from .events import Message

LEVEL = "progress"


def is_progress(ev) -> bool:
    return type(ev) is Message and ev.level == LEVEL


def is_final(text: str) -> bool:
    """A phase's last line ("...: done in 2.1 s", "...: failed")."""
    return text.endswith(": failed") or ": done in " in text


def is_running(text: str) -> bool:
    """A running phase's line ("loading X …", "loading X … 40%"), which its final line supersedes."""
    head, sep, tail = text.rpartition("…")
    return bool(sep) and (tail == "" or (tail.startswith(" ") and tail.endswith("%") and tail[1:-1].isdigit()))


def with_elapsed(text: str, seconds: float) -> str:
    """A running phase's line with how long it has been going (a final line as it is)."""
    text = text.replace("\n", " ")
    if is_final(text) or seconds < 1:
        return text
    return f"{text} ({seconds:.0f} s)"


def latest(store, seq: int) -> Message | None:
    """The newest progress message at or before ``seq``."""
    seqs = store.seqs_of(Message)
    i = bisect.bisect_right(seqs, seq)
    while i > 0:
        i -= 1
        ev = store[seqs[i]]
        if ev.level == LEVEL:
            return ev
    return None


def line_at(store, seq: int) -> str | None:
    """What a viewer shows for the store up to ``seq``: the newest progress line, with the time
    its phase has run until the event at ``seq`` (the same in a replay as it was live)."""
    ev = latest(store, seq)
    if ev is None:
        return None
    try:
        now = store[seq].t_us
    except (IndexError, AttributeError):
        now = ev.t_us
    return with_elapsed(ev.text, (now - ev.t_us) / 1e6)
