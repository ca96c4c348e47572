"""The live feed: what the store gained since the last tick, ready to draw.

One ``pump()`` a tick reads a script process's trace file (when the app
follows one), decodes it into the store, and indexes the new events.  It
returns a ``FeedBatch``: the new events, the structural ones the tree still
has to take, the newest CPU sample (for the pacer), and a decoding error if
the file turned out damaged.  No Textual here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tracing import Metric, TraceFormatError

from guidance_tui import gc_policy
from guidance_tui.state.token_index import Batch, TokenIndex

POLL_MAX_EVENTS = 20_000  # a script process's events decoded per tick (~0.1 s of work: frames keep coming)


@dataclass
class FeedBatch:
    batch: Batch  # what the index took in this tick
    first_seq: int  # the index's last seq before this tick
    grew: bool  # new events past the cursor's end
    cpu: float | None = None  # the newest CPU sample among the new events
    error: TraceFormatError | None = None  # the followed file is damaged: following stopped
    warning: str | None = None  # damaged frames were skipped (said once)
    events: list = field(default_factory=list)

    @property
    def n_events(self) -> int:
        return self.batch.last_seq - self.first_seq


class LiveFeed:
    """Pumps events from ``source`` (a ScriptProcess, or None when the store is
    filled by someone else: a loader, an in-process run) into ``index``."""

    def __init__(self, index: TokenIndex, source=None) -> None:
        self.index = index
        self.run = source
        self.source = source if source is not None and hasattr(source, "poll") else None
        if self.source is not None:
            self.source.polled_elsewhere = True  # we read its file on the app's thread
        self.structural: list = []  # node/capture/run events not yet fed to the tree
        self._freezer = gc_policy.Freezer()
        self._warned: str | None = None

    def pump(self, end_seq: int) -> FeedBatch:
        """Take in what arrived; ``end_seq`` is the cursor's end before this tick."""
        error = self._poll() if self.source is not None else None
        idx = self.index
        first_seq = idx.last_seq
        batch = idx.ingest()
        fb = FeedBatch(batch, first_seq, batch.last_seq > end_seq, error=error, events=batch.events)
        warning = getattr(self.source, "warning", None)
        if warning and warning != self._warned:
            fb.warning = self._warned = warning
        if fb.grew:
            self._freezer.grown(batch.last_seq)
            self.structural.extend(e for e in batch.events if type(e) is not Metric)
            fb.cpu = next((e.cpu for e in reversed(batch.events) if type(e) is Metric), None)
        return fb

    def take_structural(self) -> list:
        out, self.structural = self.structural, []
        return out

    def take_output(self) -> list[str]:
        """The script process's own output (warnings...), which is not in the trace."""
        take = getattr(self.run, "take_output", None)
        return take() if take is not None else []

    def _poll(self) -> TraceFormatError | None:
        # Decoding allocates a dozen tracked objects an event, all kept for the app's
        # lifetime: with the collector on, nearly half the decoding time went to
        # scanning them.  Off while decoding; a big enough batch is then frozen
        # before anything scans it.
        with gc_policy.paused() as was_enabled:
            try:
                self.source.poll(POLL_MAX_EVENTS)
            except TraceFormatError as e:  # the run goes on; the process watcher stops following
                self.source.polled_elsewhere = False
                self.source = None
                return e
            finally:
                if was_enabled:
                    self._freezer.grown(self.index.store.last_seq, gc_policy.FREEZE_POLLED)
        return None
