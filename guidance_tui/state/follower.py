"""Following a trace file another process is writing: attach, and replay of a live run.

The file is the protocol: the follower reads it from byte 0 (everything
before the attach first), then whatever it gains, frame by frame, and never
talks to the writer, so any number of viewers follow one run and none can
slow it down.  Whether the writer is still there comes from the live registry
(its pid and that pid's start time), checked at most twice a second.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from tracing import TraceStore
from tracing.fileformat import HEADER, FrameDecoder
from tracing.runs import LiveRun, live_run_for

WRITER_CHECK_S = 0.5


def _writer_of(path: Path) -> LiveRun | None:
    try:
        return live_run_for(path)
    except OSError:  # an unusable runs directory: no registry to ask
        return None


class TraceFollower:
    """Decodes what ``path`` gains into ``store``; ``poll()`` from one thread at a time (the app's timer)."""

    def __init__(self, path: str | Path, store: TraceStore | None = None, writer: LiveRun | None = None, *,
                 ask_registry: bool = True) -> None:
        """``writer``: the registry entry of the process writing ``path`` (looked up when
        None and ``ask_registry``; a caller that started the writer itself knows better)."""
        self.path = Path(path)
        self.store = store if store is not None else TraceStore()
        self.writer = writer if writer is not None or not ask_registry else _writer_of(self.path)
        self.polled_elsewhere = False  # LiveFeed sets it: only there is poll() called
        self._lock = threading.Lock()
        # the detail pane unpacks a token's top-k when shown; the store forgets the tokens of each block
        self._dec = FrameDecoder(alternatives=False, keep_blocks=True)
        self._fh = None
        self._buf = b""
        self._header_ok = False
        self._closed = False
        self._alive = self.writer is not None
        self._checked_at = time.monotonic()

    def poll(self, max_events: int | None = None, final: bool | None = None) -> int:
        """Decode what the file gained (up to ``max_events`` events); the number added.

        ``final``: nothing more will be written (default: the writer is gone).  Only then
        is a frame that fails its checksum at the end known damaged, not half written:
        it is skipped and ``warning`` says so."""
        if final is None:
            final = not self.writer_alive()
        with self._lock:
            if self._closed:
                return 0
            if self._fh is None:
                try:
                    self._fh = open(self.path, "rb")
                except FileNotFoundError:
                    return 0
            buf = self._buf + self._fh.read()
            if not self._header_ok:
                if len(buf) < HEADER.size:
                    self._buf = buf
                    return 0
                self._dec.read_header(buf, str(self.path))  # the decoder learns the file's version
                buf = buf[HEADER.size:]
                self._header_ok = True
            if not buf:
                self._buf = b""
                return 0
            events, dropped, pos = self._dec.decode_frames(buf, 0, str(self.path), max_events, final=final)
            self._buf = buf[len(buf) - dropped:] if dropped else buf[pos:]  # an incomplete frame waits
            self.store.extend_recorded(events, self._dec.take_packed(), self._dec.take_blocks())
            return len(events)

    @property
    def warning(self) -> str | None:
        """Damage found so far (frames skipped, events lost), one line; None while the file is sound."""
        return self._dec.warning

    def writer_alive(self) -> bool:
        """The process writing the file is still running (checked at most every WRITER_CHECK_S)."""
        if not self._alive:
            return False
        now = time.monotonic()
        if now - self._checked_at >= WRITER_CHECK_S:
            self._checked_at = now
            self._alive = self.writer.writer_alive()
        return self._alive

    def close(self) -> None:
        """Stop following: later polls add nothing."""
        with self._lock:
            self._closed = True
            if self._fh is not None:
                self._fh.close()
                self._fh = None
