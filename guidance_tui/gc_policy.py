"""When the cyclic garbage collector may run: one home for the policy.

The inspector keeps every event for its lifetime, and decoding allocates a
dozen tracked objects an event.  Scanning them in every full collection is
pure cost (with a million live objects a full collection takes a third of a
second, and both the producer and the UI wait for it), so:

* ``paused()``: no collection while a batch is decoded;
* ``Freezer``: every ``FREEZE_EVERY`` events, ``gc.freeze()`` parks what is
  kept in the permanent generation, out of the collector's sight;
* ``hold_until(callback_scheduler)``: no collection between a seek and its
  frame (a frame allocates thousands of Strips); the collection runs after
  the frame, in the idle time before the next key.  Textual does the same
  around smooth scrolls (``App.PAUSE_GC_ON_SCROLL``).
"""

from __future__ import annotations

import gc
from contextlib import contextmanager
from typing import Callable, Iterator

FREEZE_EVERY = 20_000  # events kept between two freezes
FREEZE_POLLED = 2_000  # events read from a script process between two freezes (decoding is dearer)


@contextmanager
def paused() -> Iterator[bool]:
    """The collector off inside the block; yields whether it was on before."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield enabled
    finally:
        if enabled:
            gc.enable()


class Freezer:
    """Freezes the heap each time ``every`` more events are kept."""

    def __init__(self, every: int = FREEZE_EVERY) -> None:
        self.every = every
        self.frozen_at = 0

    def grown(self, last_seq: int, every: int | None = None) -> bool:
        """Call with the newest kept seq; freezes (and returns True) when due."""
        if last_seq - self.frozen_at >= (self.every if every is None else every):
            gc.freeze()
            self.frozen_at = last_seq
            return True
        return False


class FrameHold:
    """No collection between a user's action and the frame that shows it."""

    def __init__(self) -> None:
        self.held = False

    def hold(self, after_frame: Callable[[Callable[[], None]], object]) -> None:
        """Disable the collector until ``after_frame`` calls back (Textual's call_after_refresh)."""
        if self.held or not gc.isenabled():
            return
        gc.disable()
        self.held = True
        after_frame(self.release)

    def release(self) -> None:
        if self.held:
            self.held = False
            gc.enable()
