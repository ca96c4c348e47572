"""Load progress (model load, GGUF conversion, tokenizer build) as one line that keeps changing.

Under a runner (``guidance-tui run`` / ``record``) each update is a trace event,
``Message(level="progress")``: the app shows the newest one where the tokens
will appear until the first token arrives, ``record`` rewrites one stderr line
with it, and a trace read later says how long the load took.  Without a runner
(plain ``python``) the line goes to stderr directly, as one updating line on a
terminal and as sparse lines otherwise.

Updates are rate-limited (:data:`MIN_INTERVAL_S`); the last line of a phase
("...: done in 3.2 s") always goes out.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time

from tracing.progress import LEVEL, with_elapsed

MIN_INTERVAL_S = 0.25  # at most this often per reporter, so a tight loop cannot flood the trace
TICK_S = 1.0  # stderr on a terminal: the elapsed time is rewritten this often
STDERR_SPARSE_S = 10.0  # not a terminal: a line at most this often (a CI log stays short)


class Progress:
    """Reports load progress for one model load; see the module docstring."""

    def __init__(self, session=None, *, enabled: bool = True, eager: bool = False) -> None:
        """``session``: where the events go (default: the runner's, if one is installed; else stderr).
        ``eager``: on stderr, a phase shows from its start, not only once it has run a second."""
        if session is None and enabled:
            from . import session as _session

            session = _session.installed()
        self.session = session
        self.enabled = enabled
        self.eager = eager
        self._lock = threading.Lock()
        self._last = 0.0
        self._last_text = ""
        self._tty = False
        self._open_line = False  # stderr mode: a \r line is on the terminal
        if enabled and session is None:
            try:
                self._tty = sys.stderr.isatty()
            except (AttributeError, ValueError):
                self._tty = False

    def say(self, text: str, *, force: bool = False) -> None:
        """Report ``text`` as the current progress line (dropped when too soon after the last one)."""
        if not self.enabled:
            return
        now = time.monotonic()
        with self._lock:
            interval = MIN_INTERVAL_S if self.session is not None or self._tty else STDERR_SPARSE_S
            if not force and (now - self._last < interval or text == self._last_text):
                return
            self._last, self._last_text = now, text
            if self.session is not None:
                from tracing import Message

                self.session.store.append(Message(level=LEVEL, text=text))
            else:
                self._stderr(text)

    def done(self) -> None:
        """End the stderr line (stderr mode on a terminal); a no-op for trace events."""
        with self._lock:
            if self._open_line:
                self._open_line = False
                self._write("\n")

    def _stderr(self, text: str) -> None:
        if self._tty:
            self._open_line = True
            self._write(f"\r\x1b[2K{text}")
        else:
            self._write(text + "\n")

    @staticmethod
    def _write(s: str) -> None:
        try:
            sys.stderr.write(s)
            sys.stderr.flush()
        except (OSError, ValueError, AttributeError):
            pass

    @contextlib.contextmanager
    def phase(self, text: str):
        """``text …`` now, then "text: done in N s" (or "failed").  Yields ``update(fraction)`` for
        a phase that knows how far it is: a line per tenth.  Viewers add the elapsed seconds to a
        line that is not final (see :func:`with_elapsed`), so a long phase costs a few events, not
        one a second; on stderr a ticker rewrites the line every :data:`TICK_S` instead."""
        if not self.enabled:
            yield lambda _=None: None
            return
        t0 = time.monotonic()
        state = {"tenth": -1, "detail": ""}
        stop = threading.Event()

        def update(fraction: float) -> None:
            tenth = int(max(0.0, min(1.0, fraction)) * 10)
            if tenth != state["tenth"]:
                state["tenth"], state["detail"] = tenth, f" {tenth * 10}%"
                if shown["any"]:  # a log on stderr: at most every STDERR_SPARSE_S
                    self.say(f"{text} …{state['detail']}", force=self.session is not None or self._tty)

        ticker = None
        shown = {"any": self.session is not None or self.eager}
        if self.session is None:
            if self.eager:
                self.say(f"{text} …", force=True)
            # stderr: a phase shows once it has run a while (unless eager: a fast load prints nothing)
            def tick() -> None:
                while not stop.wait(TICK_S if self._tty else STDERR_SPARSE_S):
                    shown["any"] = True
                    self.say(with_elapsed(f"{text} …{state['detail']}", time.monotonic() - t0), force=True)

            ticker = threading.Thread(target=tick, name="load-progress", daemon=True)
            ticker.start()
        else:
            self.say(f"{text} …", force=True)
        ok = False
        try:
            yield update
            ok = True
        finally:
            stop.set()
            if ticker is not None:
                ticker.join()
            end = f"done in {time.monotonic() - t0:.1f} s" if ok else "failed"
            if shown["any"]:
                self.say(f"{text}: {end}", force=True)
                self.done()

