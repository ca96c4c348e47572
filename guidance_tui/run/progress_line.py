"""The load progress of a headless run (``record``, ``run`` into a pipe) on stderr.

Engines report loading as ``Message(level="progress")`` events (see
``tracing.progress``).  On a terminal they become ONE line, rewritten in place
(``\\r``) with the seconds the phase has run, and wiped before anything else is
printed; elsewhere (a CI log) a line when a phase starts and ends, and at most
one every :data:`SPARSE_S` between.  No Textual here.
"""

from __future__ import annotations

import time
from typing import TextIO

from tracing import Message, Token
from tracing.progress import LEVEL, is_final, with_elapsed

from guidance_tui.run.runner import clean_text

SPARSE_S = 10.0
CLEAR = "\r\x1b[2K"


class ProgressLine:
    """Follows a store's progress messages; call :meth:`pump` often and :meth:`finish` once."""

    def __init__(self, store, file: TextIO, *, tty: bool | None = None, sparse: bool = True,
                 clock=time.monotonic) -> None:
        self.store = store
        self.file = file
        if tty is None:
            try:
                tty = file.isatty()
            except (AttributeError, ValueError):
                tty = False
        self.tty = tty
        self.sparse = sparse  # off: nothing unless a terminal (record -q leaves stderr to the script)
        self.clock = clock
        self._seen = 0  # how many Message seqs were looked at
        self._text = ""  # the newest progress text
        self._text_seq = -1  # its seq
        self._since = 0.0  # when it arrived
        self._shown = ""  # what the terminal shows now ("" when wiped)
        self._last_sparse = -SPARSE_S
        self.lines = 0  # lines printed in sparse mode
        self.broken = False

    def _new_texts(self) -> list[str]:
        store = self.store
        seqs = store.seqs_of(Message)
        n = len(seqs)
        out = []
        for seq in seqs[self._seen:n]:
            ev = store[seq]
            if ev.level == LEVEL:
                out.append(clean_text(ev.text.replace("\n", " ")))
                self._text_seq = seq
        self._seen = n
        return out

    def _write(self, s: str) -> None:
        if self.broken:
            return
        try:
            self.file.write(s)
            self.file.flush()
        except (OSError, ValueError):
            self.broken = True

    def wipe(self) -> None:
        """Take the line off the terminal (before other output goes there)."""
        if self._shown:
            self._write(CLEAR)
            self._shown = ""

    def pump(self, may_draw: bool = True) -> None:
        """Show what is new; ``may_draw``: nothing is half-printed on the terminal's current line."""
        texts = self._new_texts()
        now = self.clock()
        if texts:
            self._text, self._since = texts[-1], now
        if self.tty:
            tokens = self.store.seqs_of(Token)
            if tokens and tokens[-1] > self._text_seq:  # tokens came after it: the load is over
                self._text = ""
            if not self._text or not may_draw:
                return
            line = with_elapsed(self._text, now - self._since)
            if line != self._shown:
                self._write(CLEAR + line)
                self._shown = line
            return
        if not self.sparse:
            return
        for i, text in enumerate(texts):
            last = i == len(texts) - 1
            if is_final(text) or text.endswith("…") or (last and now - self._last_sparse >= SPARSE_S):
                self._write(text + "\n")
                self.lines += 1
                self._last_sparse = now

    def finish(self) -> None:
        """The run is over: the lines still due in a log; a terminal left without the line."""
        if self.tty:
            self._new_texts()
            self.wipe()
        else:
            self.pump()
