"""Streaming a trace file into a TraceStore, so a replay shows its first
screen before the whole file is decoded.

Decoding a large trace takes most of a second (about 8 µs a token); the app
decodes the first few thousand frames before its first frame and the rest in a
background thread, appending to the store exactly as a live run would.

A damaged frame never stops the loader: it is skipped, the good frames are
kept, and :attr:`TraceLoader.skipped` / :attr:`TraceLoader.warning` say what
was lost, exactly as ``info`` and ``export`` do (the same decoder).
"""

from __future__ import annotations

import ctypes
import gc
import os
import threading
import time
from pathlib import Path

from tracing.fileformat import HEADER, FrameDamage, FrameDecoder, TraceFormatError, check_header, read_bytes
from tracing.store import TraceStore

from guidance_tui.gc_policy import Freezer


def _trim_heap() -> None:
    """Give the C heap's free memory back to the system (glibc only): decoding a big file in this
    thread churned through many times what the store keeps, and the thread's heap would hold it."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


UNREAD_MAX = 48  # blocks decoded ahead of the store's reader before the loading thread waits
PACE_MAX_S = 1.0  # the longest it waits for one chunk (a reader that stopped reading)


class TraceLoader:
    """Reads ``path`` and appends its events to ``store`` in chunks."""

    def __init__(self, path: str | os.PathLike, store: TraceStore | None = None) -> None:
        self.path = Path(path)
        self._data = read_bytes(path)  # a FIFO, a device or a directory is refused here
        self.version = check_header(self._data, str(path))
        self.store = store if store is not None else TraceStore()
        # a token's top-k is unpacked when it is shown; the store forgets the tokens of each
        # block and decodes them again when asked for (a view of the file's bytes is kept)
        self._dec = FrameDecoder(alternatives=False, version=self.version, keep_blocks=True)
        self._pos = HEADER.size
        self.dropped_bytes = 0  # an incomplete last frame (the writer was stopped mid-frame)
        self.error: TraceFormatError | None = None  # reading stopped (never for a damaged frame: see skipped)
        self.done = threading.Event()
        self._thread: threading.Thread | None = None
        self._stop = False

    def load(self, max_events: int | None = None) -> bool:
        """Decode up to ``max_events`` more events into the store; True when the file is done."""
        if self._stop or self.done.is_set():
            return True
        try:
            events, dropped, self._pos = self._dec.decode_frames(self._data, self._pos, str(self.path), max_events,
                                                                 final=True)
        except Exception as e:  # a bug: the loading thread must still end, with one line
            self._fail(e if isinstance(e, TraceFormatError)
                       else TraceFormatError(f"{self.path}: cannot be read ({type(e).__name__})"))
            return True
        self.store.extend_recorded(events, self._dec.take_packed(), self._dec.take_blocks())
        if dropped:
            self.dropped_bytes = dropped
        if self._pos >= len(self._data):
            self._data = b""
            self.done.set()
            return True
        return False

    @property
    def skipped(self) -> list[FrameDamage]:
        """The damaged parts skipped so far (each a one-line TraceFormatError naming its byte offset)."""
        return self._dec.skipped

    @property
    def warning(self) -> str | None:
        """One line for the damage skipped so far (the words ``info`` and ``export`` print), None for none."""
        return self._dec.warning

    def _fail(self, err: TraceFormatError) -> None:
        self.error = err
        self._pos = len(self._data)
        self._data = b""
        self.done.set()

    def start(self, chunk: int = 4096) -> None:
        """Decode the rest in a daemon thread."""
        def run() -> None:
            freezer = Freezer()  # decoded events live as long as the app: keep them out of full collections
            while not self.load(chunk):
                freezer.grown(len(self.store))
                self._pace()
            gc.freeze()
            _trim_heap()

        if not self.done.is_set():
            self._thread = threading.Thread(target=run, name="trace-loader", daemon=True)
            self._thread.start()

    def _pace(self) -> None:
        """Wait (a little) while the store's reader (the app's index) is far behind: what it has not
        read stays decoded in the store, and running ahead only makes the heap grow."""
        store = self.store
        if not getattr(store, "read_once", False):
            return
        waited = 0.0
        while store.unread_blocks > UNREAD_MAX and not self._stop and waited < PACE_MAX_S:
            time.sleep(0.005)
            waited += 0.005

    def stop(self) -> None:
        self._stop = True
        if self._thread is not None:
            self._thread.join()
