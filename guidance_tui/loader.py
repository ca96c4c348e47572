"""Streaming a trace file into a TraceStore, so a replay shows its first
screen before the whole file is decoded.

Decoding a large trace takes most of a second (about 8 µs a token); the app
decodes the first few thousand frames before its first frame and the rest in a
background thread, appending to the store exactly as a live run would.  The
frame walk mirrors :func:`tracing.fileformat.decode_trace`, which reads a
whole file at once.
"""

from __future__ import annotations

import gc
import os
import threading
from pathlib import Path

import msgspec

from tracing.fileformat import HEADER, MAGIC, FrameDecoder, TraceFormatError
from tracing.events import FORMAT_VERSION
from tracing.store import TraceStore

_DECODE_ERRORS = (msgspec.DecodeError, msgspec.ValidationError, KeyError, ValueError, TypeError, IndexError)


class TraceLoader:
    """Reads ``path`` and appends its events to ``store`` in chunks."""

    def __init__(self, path: str | os.PathLike, store: TraceStore | None = None) -> None:
        self.path = Path(path)
        name = str(path)
        try:
            self._data = self.path.read_bytes()
        except FileNotFoundError:
            raise TraceFormatError(f"{name}: no such file") from None
        except IsADirectoryError:
            raise TraceFormatError(f"{name}: is a directory") from None
        except OSError as e:
            raise TraceFormatError(f"{name}: cannot read ({e.strerror})") from None
        data = self._data
        if len(data) < HEADER.size or data[:8] != MAGIC:
            raise TraceFormatError(f"{name}: not a guidance-tui trace file")
        _, self.version = HEADER.unpack_from(data)
        if self.version > FORMAT_VERSION:
            raise TraceFormatError(f"{name}: written by a newer guidance-tui (format {self.version}; "
                                   f"this version reads up to {FORMAT_VERSION})")
        self.store = store if store is not None else TraceStore()
        self._dec = FrameDecoder()
        self._pos = HEADER.size
        self.dropped_bytes = 0  # an incomplete last frame (the writer was stopped mid-frame)
        self.error: TraceFormatError | None = None
        self.done = threading.Event()
        self._thread: threading.Thread | None = None
        self._stop = False

    @property
    def fraction(self) -> float:
        return self._pos / max(1, len(self._data))

    def load(self, max_events: int | None = None) -> bool:
        """Decode up to ``max_events`` more events into the store; True when the file is done."""
        data, end = self._data, len(self._data)
        view = memoryview(data)
        pos = self._pos
        dec = self._dec
        store = self.store
        added = 0
        name = str(self.path)
        while pos < end and (max_events is None or added < max_events) and not self._stop:
            start = pos
            n = shift = 0
            while True:
                if pos >= end:
                    n = -1
                    break
                b = data[pos]
                pos += 1
                n |= (b & 0x7F) << shift
                shift += 7
                if not b & 0x80:
                    break
                if shift > 35:
                    self._fail(TraceFormatError(f"{name}: corrupt frame length at byte {start}"))
                    return True
            if n < 0 or pos + n > end:
                self.dropped_bytes = end - start
                pos = end
                break
            try:
                ev = dec.decode(view[pos:pos + n], len(store))
            except _DECODE_ERRORS as e:
                self._fail(TraceFormatError(f"{name}: corrupt frame at byte {start} ({type(e).__name__})"))
                return True
            pos += n
            if ev is not None:
                store.append(ev, stamp=False)
                added += 1
        self._pos = pos
        if pos >= end:
            self._data = b""
            self.done.set()
            return True
        return False

    def _fail(self, err: TraceFormatError) -> None:
        self.error = err
        self._pos = len(self._data)
        self._data = b""
        self.done.set()

    def start(self, chunk: int = 4096) -> None:
        """Decode the rest in a daemon thread."""
        def run() -> None:
            frozen = len(self.store)
            while not self.load(chunk):
                if len(self.store) - frozen >= 20_000:
                    gc.freeze()  # decoded events live as long as the app: keep them out of full collections
                    frozen = len(self.store)
            gc.freeze()

        if not self.done.is_set():
            self._thread = threading.Thread(target=run, name="trace-loader", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop = True
        if self._thread is not None:
            self._thread.join()
