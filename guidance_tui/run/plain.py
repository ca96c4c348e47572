"""A plain transcript of a run for a terminal that is not one (a pipe, a CI log).

Prints the model's text as it arrives, coloured by token kind and
probability when colour is on, with role labels, backtracks and the script's
messages, and a one-line summary at the end.  This module must not import
Textual: the headless ``record`` command uses it too.
"""

from __future__ import annotations

import codecs
import math
import os
import sys
from typing import TextIO

from tracing import Backtrack, Capture, Message, NodeOpen, RunEnd, RunStart, Token, TokenKind
from tracing.store import TraceStore

from guidance_tui.run.runner import clean_text, write_text

RESET = "\x1b[0m"
DIM = "\x1b[2m"
BOLD = "\x1b[1m"
ITALIC = "\x1b[3m"
STRIKE = "\x1b[9m"
RED, GREEN, YELLOW, BLUE, MAGENTA, CYAN = (f"\x1b[{n}m" for n in (31, 32, 33, 34, 35, 36))
REVERSE = "\x1b[7m"

_CONTROLS = str.maketrans({c: chr(0x2400 + c) for c in range(32) if c not in (9, 10)} | {127: "\u2421"})


def want_color(file: TextIO) -> bool:
    """Colour when the file is a terminal, unless NO_COLOR or TERM=dumb; FORCE_COLOR forces it."""
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    if os.environ.get("TERM", "").strip().lower() == "dumb":
        return False
    try:
        return file.isatty()
    except (AttributeError, ValueError):
        return False


def prob_color(p: float) -> str:
    if p != p:
        return ""
    if p >= 0.5:
        return GREEN
    if p >= 0.1:
        return YELLOW
    return RED


class PlainTranscript:
    """Follows a TraceStore and prints what is new at each :meth:`pump`."""

    def __init__(self, store: TraceStore, file: TextIO | None = None, color: bool | None = None) -> None:
        self.store = store
        self.file = file if file is not None else sys.stdout
        self.color = want_color(self.file) if color is None else color
        self._seq = -1
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._at_line_start = True
        self._live: list[Token] = []  # tokens in the text now, for backtracks
        self.tokens = self.generated = self.forced = self.prompt = self.backtracks = 0
        self._lat_sum = 0
        self._t_start: int | None = None
        self._t_first: int | None = None
        self._t_last: int | None = None
        self.captures: list[Capture] = []
        self.end: RunEnd | None = None
        self.broken = False  # the file failed (closed, a broken pipe): nothing more is printed
        self.error: Exception | None = None  # ...and why

    @property
    def seq(self) -> int:
        """The last seq printed."""
        return self._seq

    @property
    def at_line_start(self) -> bool:
        """Nothing half-printed on the current line (another writer may use the terminal now)."""
        return self._at_line_start

    # -- output helpers ------------------------------------------------------
    def _w(self, text: str, style: str = "") -> None:
        if not text:
            return
        self._at_line_start = text.endswith("\n")
        if self.broken:
            return
        text = clean_text(text)  # a lone surrogate (a file name, the script's own text) as <0xNN>
        try:
            write_text(self.file, style + text + RESET if self.color and style else text)
        except (OSError, ValueError) as e:  # stdout closed or gone (a pipe's reader quit): the run goes on
            self._broke(e)

    def _flush(self) -> None:
        if not self.broken:
            try:
                self.file.flush()
            except (OSError, ValueError) as e:
                self._broke(e)

    def _broke(self, e: Exception) -> None:
        """Stop printing; a closed pipe is pointed at /dev/null, so nothing fails on it at exit either."""
        self.broken = True
        self.error = e
        if isinstance(e, BrokenPipeError):
            try:
                null = os.open(os.devnull, os.O_WRONLY)
                os.dup2(null, self.file.fileno())
                os.close(null)
            except (OSError, ValueError, AttributeError):
                pass

    def _newline(self) -> None:
        if not self._at_line_start:
            self._w("\n")

    # -- events --------------------------------------------------------------
    def pump(self) -> int:
        """Print the events that arrived since the last call; returns how many."""
        events = self.store.since(self._seq)
        for ev in events:
            self._event(ev)
        if events:
            self._seq = events[-1].seq
            self._flush()
        return len(events)

    def _event(self, ev) -> None:
        t = type(ev)
        if t is Token:
            self._token(ev)
        elif t is Backtrack:
            self._backtrack(ev)
        elif t is NodeOpen and ev.kind == "role":
            self._flush_decoder()
            self._newline()
            self._w(f"[{ev.name or 'role'}]", BOLD + BLUE)
            self._w("\n")
        elif t is Capture:
            self.captures.append(ev)
        elif t is Message:
            if ev.level == "progress":  # loading progress: stderr's one updating line (ProgressLine), not this
                return
            self._flush_decoder()
            self._newline()
            style = RED if ev.level == "error" else (YELLOW if ev.level == "warning" else DIM)
            for line in ev.text.rstrip("\n").split("\n"):
                self._w(f"│ {line}\n", style)
        elif t is RunStart:
            self._t_start = ev.t_us
            bits = [ev.script or "run"] + [x for x in (ev.model, ev.backend) if x]
            self._newline()
            self._w("▶ " + " · ".join(bits) + "\n", DIM)
        elif t is RunEnd:
            self.end = ev
            self._flush_decoder()

    def _token(self, tok: Token) -> None:
        self.tokens += 1
        kind = tok.kind
        if kind == TokenKind.GENERATED:
            self.generated += 1
            self._lat_sum += tok.latency_us
        elif kind == TokenKind.FORCED:
            self.forced += 1
        else:
            self.prompt += 1
        if kind != TokenKind.PROMPT:
            if self._t_first is None:
                self._t_first = tok.t_us
            self._t_last = tok.t_us
        self._live.append(tok)
        text = self._decoder.decode(tok.bytes).translate(_CONTROLS)
        if kind == TokenKind.PROMPT:
            style = DIM
        elif kind == TokenKind.FORCED:
            style = ITALIC + CYAN
        else:
            style = prob_color(tok.prob)
        self._w(text, style)

    def _flush_decoder(self) -> None:
        rest = self._decoder.decode(b"", final=True)
        self._decoder.reset()
        if rest:
            self._w(rest.translate(_CONTROLS))

    def _backtrack(self, bt: Backtrack) -> None:
        self.backtracks += 1
        self._flush_decoder()
        want = len(bt.bytes)
        got = 0
        while self._live and (got < want if want else got < bt.n_tokens):
            got += len(self._live.pop().bytes) if want else 1
        removed = bt.bytes.decode("utf-8", "replace").translate(_CONTROLS)
        reason = f" {bt.reason}" if bt.reason else ""
        if self.color:
            self._w(f"↶{reason}:", DIM + MAGENTA)
            self._w(removed, STRIKE + MAGENTA)
            self._w("↷", DIM + MAGENTA)
        else:
            self._w(f"[↶{reason}: {removed!r}]")

    # -- the end -------------------------------------------------------------------
    def finish(self, trace_path: str | os.PathLike | None = None) -> None:
        """Print anything left, the error (if any) and a summary line."""
        self.pump()
        self._flush_decoder()
        self._newline()
        end = self.end
        if end is not None and end.status == "error":
            self._w(f"✖ {end.error or 'error'}\n", BOLD + RED)
            if end.traceback:
                self._w(end.traceback.rstrip("\n") + "\n", RED)
        for cap in self.captures:
            value = cap.value if len(cap.value) <= 60 else cap.value[:59] + "…"
            self._w(f"  {cap.name} = {value!r}\n", DIM)
        self._w(self.summary() + ("" if trace_path is None else f" · trace {trace_path}") + "\n",
                BOLD if end is None or end.status == "done" else BOLD + RED)
        self._flush()

    def summary(self) -> str:
        status = self.end.status if self.end is not None else "incomplete"
        icon = {"done": "✔", "error": "✖", "interrupted": "■"}.get(status, "…")
        sampled = self.generated + self.forced
        parts = [f"{icon} {status}", f"{self.tokens} tokens ({self.generated} generated, {self.forced} forced, "
                 f"{self.prompt} prompt)", f"{self.backtracks} backtracks"]
        if self._t_first is not None and self._t_last is not None and self._t_last > self._t_first and sampled > 1:
            parts.append(f"{(sampled - 1) / ((self._t_last - self._t_first) / 1e6):.1f} tok/s")
        if self._t_first is not None and self._t_start is not None:
            parts.append(f"TTFT {max(0, self._t_first - self._t_start) / 1000:.0f} ms")
        if self.generated:
            mean = self._lat_sum / self.generated / 1000
            if not math.isnan(mean):
                parts.append(f"{mean:.1f} ms/token")
        return " · ".join(parts)
