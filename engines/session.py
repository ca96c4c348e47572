"""Where engines send their events: the active recording session.

The runner (``guidance-tui run`` / ``record``) installs a session with its
store, the model the user named on the command line, and a cancel flag.  A
script run with plain ``python`` gets a default session with a store of its
own, so programs behave the same either way.  That default session records
too: its :class:`~engines.recording.Recorder` starts a run (a trace file in the
runs directory) at the first engines event, not at import; see
:mod:`engines.recording`.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, field

from tracing import Message, Metric, TraceStore, get_monitor

from .errors import Cancelled


@dataclass
class Session:
    store: TraceStore = field(default_factory=TraceStore)
    model: str | None = None  # --model
    backend: str | None = None  # --backend
    url: str | None = None  # --url (--backend remote)
    model_name: str | None = None  # --model-name (--backend remote)
    monitoring: bool = True
    cancel_event: threading.Event = field(default_factory=threading.Event)
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))
    #: Held while a model appends one node's events (open, tokens, close), so programs on several
    #: threads never interleave inside a node: the store rebuilds text from the event order.
    lock: threading.RLock = field(default_factory=threading.RLock)
    #: The node whose text the store's state is in after the last node event (see Model._resync).
    state_node: int = 0
    _monitor_listener: object = None
    _listener_lock: threading.Lock = field(default_factory=threading.Lock)
    _closed: bool = False
    #: The default session's recorder (None for a runner's session, which records itself).
    recorder: object = None
    #: Whether the monitor's samples go into the store (not between the default session's runs).
    accept_metrics: bool = True
    #: Node ids below this one belong to an earlier run of this session (see Model._carry_over).
    run_base: int = 1
    #: Nodes of earlier runs whose text this run's trace already repeats.
    carried: set = field(default_factory=set)

    def next_node_id(self) -> int:
        return next(self._ids)

    def ensure_run(self, backend=None) -> None:
        """An engines event is about to be recorded: the default session's recorder starts a
        run now if none is open (``backend``: the model, for the run's start and registry entry)."""
        r = self.recorder
        if r is not None and r.idle:
            r.start_auto(backend)

    def check_cancelled(self) -> None:
        if self.cancel_event.is_set():
            raise Cancelled("run cancelled")

    def start_monitoring(self) -> None:
        """Feed the shared monitor's samples into this session's store (once)."""
        if self.monitoring and self._monitor_listener is None:
            self._closed = False

            def listener(m: Metric) -> None:
                # The sampler may call a listener just after release(): never append past close().
                # The store is looked up each time: the default session has a new one per run.
                with self._listener_lock:
                    if not self._closed and self.accept_metrics:
                        self.store.append(m)

            self._monitor_listener = listener
            get_monitor().acquire(listener)

    def close(self) -> None:
        if self._monitor_listener is not None:
            with self._listener_lock:
                self._closed = True
            get_monitor().release(self._monitor_listener)
            self._monitor_listener = None

    def warn(self, text: str) -> None:
        self.store.append(Message(level="warning", text=text))


_lock = threading.Lock()
_active: Session | None = None
_default: Session | None = None


def activate(session: Session | None) -> None:
    """Make ``session`` the one new engines record into (None: back to the default)."""
    global _active
    with _lock:
        _active = session


def installed() -> Session | None:
    """The session a runner installed with :func:`activate`, if any."""
    return _active


def current() -> Session:
    """The runner's session if one is installed, else this process's default session
    (created on first use, with a recorder that starts a run at its first event)."""
    global _default
    with _lock:
        if _active is not None:
            return _active
        if _default is None:
            from .recording import Recorder

            _default = Session()
            _default.recorder = Recorder(_default)
        return _default
