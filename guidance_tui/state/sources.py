"""Opening a recorded run for the inspector: follow it while its writer runs,
else load it (the first screen at once, the rest in the background)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tracing import TraceStore
from tracing.runs import LiveRun, live_run_for

from guidance_tui.state.follower import TraceFollower
from guidance_tui.state.loader import TraceLoader

FIRST_SCREEN_EVENTS = 3000  # decoded before the app's first frame; the rest streams in


@dataclass
class Recording:
    """What an InspectorScreen needs to show one recorded run."""

    store: TraceStore
    title: str
    loader: TraceLoader | None = None  # still decoding a finished file
    follower: TraceFollower | None = None  # the file is still being written
    warning: str = ""

    def screen_options(self) -> dict:
        return {"loader": self.loader, "follower": self.follower, "title": self.title}


def open_recording(path: str | Path, writer: LiveRun | None = None) -> Recording:
    """Open ``path``: followed from byte 0 if a live process writes it (``writer``,
    else the registry says), else loaded.  Raises TraceFormatError or OSError (one line)."""
    path = Path(path)
    if writer is None:
        try:
            writer = live_run_for(path)
        except OSError:  # an unusable runs directory: no registry to ask
            writer = None
    if writer is not None:
        follower = TraceFollower(path, writer=writer)
        follower.poll(FIRST_SCREEN_EVENTS)
        return Recording(follower.store, path.name, follower=follower)
    loader = TraceLoader(path)
    loader.load(FIRST_SCREEN_EVENTS)
    if loader.error is not None:
        raise loader.error
    warning = ""
    if loader.done.is_set() and loader.warning:  # damaged frames skipped, the good ones kept
        warning = loader.warning
    elif loader.done.is_set() and loader.dropped_bytes:
        warning = f"The trace ends mid-event ({loader.dropped_bytes} bytes dropped): the run was cut short."
    return Recording(loader.store, path.name, loader=None if loader.done.is_set() else loader, warning=warning)
