"""Every process that uses engines records its runs.

A script started by ``guidance-tui run``/``record`` records through the
runner's own session.  Anything else (``python script.py``, ``python -c``, the
REPL, IPython and Jupyter, a long-lived service) uses the default session
(:func:`engines.session.current`), and its :class:`Recorder` records the way
``guidance-tui record`` does: the same trace format, a :class:`TraceWriter`
following the session's store from a background thread.

* **When.** A run starts at the first engines event (a model being built, or
  the first node of a program), never at import: importing ``engines`` has no
  side effects.  The process hooks (``atexit``, ``sys.excepthook``,
  ``threading.excepthook``, a fork handler) and the IPython cell hooks are
  installed then, once.
* **Where.** A new file in the runs directory (:func:`tracing.runs.runs_dir`:
  ``$GUIDANCE_TUI_RUNS``, else under the user data directory), created 0600
  and named for the script and the time, listed in the live registry while it
  is recorded.  Old runs are pruned (never live ones) when a run starts or
  ends, at most once a minute.
* **What.** A ``RunStart`` (``script``: ``sys.argv[0]`` resolved, or
  ``"python -c"``, ``"<stdin>"``, or the notebook cell; ``argv``; the model
  and backend when a model is known; ``info``: cwd and pid, and for a cell its
  ``source``, ``cell`` number, ``cell_id`` and ``notebook``), the events,
  and a ``RunEnd`` with the token counts.  The writer flushes every
  :data:`FLUSH_INTERVAL` seconds, so a viewer attaching to the file sees new
  tokens within about that.
* **The end, and its status.**
  - normal interpreter exit (``atexit``): ``done``;
  - an uncaught exception (``sys.excepthook``): ``error`` with the exception's
    one-line text (``interrupted`` for ``KeyboardInterrupt``), recorded at
    exit.  An uncaught exception in another thread (``threading.excepthook``)
    is recorded as an error message when it happens and makes the run's
    status ``error`` too;
  - ``sys.exit(N)``: ``done`` (an exit handler cannot see the exit status);
  - a process killed (SIGKILL, SIGTERM without a handler, ``os._exit``) writes
    no ``RunEnd``: its registry entry goes stale and the run browser shows the
    run as died.  Everything flushed before is kept.
  The writer is closed, the summary written (:func:`tracing.runs.write_summary`)
  and the registry entry removed.
* **A long-lived service** is one run for the life of the process, or until
  :func:`record` starts another.
* **IPython and Jupyter.** Each executed cell that uses engines is one run:
  it starts at the cell's first engines event and ends when the cell finishes
  (``post_run_cell``), with the cell's outcome as its status.  It is named
  ``In [n]``, after the notebook when the kernel knows it (``JPY_SESSION_NAME``,
  which Jupyter sets for a notebook's kernel and ipykernel copies into
  ``__session__``, or VS Code's ``__vsc_ipynb_file__``): ``nb.ipynb · In [3]``.
  A cell that does not use engines records nothing.  A model built in one
  cell and used in another is fine: the later run's trace first repeats the
  model's earlier text as prompt tokens ("text from an earlier run").
* **Controls.** ``GUIDANCE_TUI_RECORD=0`` turns the automatic recording off
  (read when a run would start; the store still works in memory);
  ``GUIDANCE_TUI_RUNS=DIR`` moves the runs directory; :func:`record` names the
  file from code.
* **Forks.** A forked child never writes its parent's file: its first engines
  event starts a run of its own.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
import time
import warnings
from pathlib import Path

from tracing import Message, RunEnd, RunStart, TraceStore, TraceWriter

#: How often the writer flushes (seconds).  ``record`` flushes every 0.25 s and the app's child every
#: 0.01 s; at 0.05 s a viewer attaching to a plain ``python`` program sees tokens within about 50 ms
#: plus its own poll, at no measurable cost to decoding (``benchmarks/bench_recording.py``).
FLUSH_INTERVAL = 0.05
PRUNE_EVERY_S = 60.0
EXIT_LOCK_WAIT_S = 1.0  # at exit, how long to wait for a daemon thread to finish its node
CELL_LOCK_WAIT_S = 5.0  # at a cell's end, the same for a thread still generating

_OUR_DIRS = tuple(str(Path(__file__).resolve().parents[1] / d) + os.sep for d in ("engines", "tracing"))
_abandoned: list = []  # runs a forked child inherited: kept alive, never closed there


class _Run:
    """One recorded run of the default session."""

    def __init__(self, path: Path, store: TraceStore, writer: TraceWriter, *, explicit: bool, in_runs_dir: bool,
                 cell: bool, model: str, backend: str) -> None:
        self.path = path
        self.store = store
        self.writer = writer
        self.explicit = explicit  # started by record(): ends when closed, not at a cell's end
        self.in_runs_dir = in_runs_dir
        self.cell = cell
        self.model = model
        self.backend = backend
        self.registration = None


class Recording:
    """What :func:`record` returns: ``close()`` ends the run, and ``with`` ends it on leaving
    (status from the block's exception).  ``path`` is None when the call was ignored."""

    def __init__(self, recorder: "Recorder | None", run: _Run | None) -> None:
        self._recorder = recorder
        self._run = run
        self.path: Path | None = run.path if run is not None else None

    @property
    def active(self) -> bool:
        """The run is still being recorded."""
        return self._recorder is not None and self._recorder.run is self._run

    def close(self) -> None:
        if self._recorder is not None:
            self._recorder.end(run=self._run)

    def __enter__(self) -> "Recording":
        return self

    def __exit__(self, typ, exc, tb) -> None:
        if self._recorder is not None:
            status, text = status_of(exc)
            self._recorder.end(status, text, user_frames(tb) if exc is not None else "", run=self._run)

    def __repr__(self) -> str:
        return f"<Recording {str(self.path)!r}{' active' if self.active else ''}>"


def record(path: str | os.PathLike) -> Recording:
    """Record this process's engines to ``path`` from now on.

    Ends the run that is open (``RunEnd`` done, as at exit) and starts a new one
    written to ``path`` at once (created 0600, its parent folders made; a
    relative path is relative to the current directory), registered in the live
    registry.  The run lasts until the returned :class:`Recording` is closed,
    the ``with`` block around it ends (``with engines.record("x.gtt"): ...``;
    an exception leaving the block is its status), the next ``record()`` call,
    or the end of the process; in IPython it spans cells.  After it, the
    automatic runs resume.  It records even with ``GUIDANCE_TUI_RECORD=0``.
    Under ``guidance-tui run``/``record``, which record the script already,
    it does nothing but leave a warning in that trace.  Raises ``OSError``
    when the file cannot be created.
    """
    from . import session as sessions

    runner = sessions.installed()
    if runner is not None:
        runner.warn(f"engines.record({str(path)!r}) ignored: guidance-tui records this run already")
        return Recording(None, None)
    recorder: Recorder = sessions.current().recorder  # type: ignore[assignment]
    return recorder.start_explicit(Path(path))


def status_of(exc: BaseException | None) -> tuple[str, str]:
    """(status, one-line error) of a run that ended with ``exc`` (None: done)."""
    from .errors import EngineError, one_line

    if exc is None:
        return "done", ""
    if isinstance(exc, KeyboardInterrupt):  # Cancelled too
        return "interrupted", "interrupted"
    if isinstance(exc, SystemExit):
        if exc.code in (None, 0):
            return "done", ""
        return "error", f"the program exited with status {exc.code}"
    if isinstance(exc, EngineError):
        return "error", one_line(exc)
    return "error", one_line(f"{type(exc).__name__}: {exc}")


def user_frames(tb) -> str:
    """A traceback without the engines' and tracing's own frames."""
    if tb is None:
        return ""
    import traceback

    try:
        frames = [f for f in traceback.extract_tb(tb) if not f.filename.startswith(_OUR_DIRS)]
    except Exception:
        return ""
    return "".join(["Traceback (most recent call last):\n", *traceback.format_list(frames)]) if frames else ""


def _interactive() -> bool:
    """An interactive interpreter survives an uncaught exception: it does not end the run."""
    return bool(sys.flags.interactive) or hasattr(sys, "ps1")


def _ipython_shell():
    """The running IPython shell, without importing IPython."""
    mod = sys.modules.get("IPython")
    if mod is None:
        return None
    try:
        return mod.get_ipython()
    except Exception:
        return None


def _backend_label(backend) -> tuple[str, str]:
    if backend is None:
        return "", ""
    name = getattr(backend, "name", "")
    return str(getattr(backend, "model_id", "")), {"llama.cpp": "llamacpp"}.get(name, name)


class Recorder:
    """The default session's runs, one at a time.

    ``idle`` is read on the engines' path (once per program node): True while
    no run is open, so that the next event calls :meth:`start_auto`."""

    def __init__(self, session) -> None:
        self.session = session
        self.idle = True
        self.run: _Run | None = None
        self._lock = threading.RLock()
        self._hooked = False
        self._shell = None  # the IPython shell whose cells we follow
        self._cell_info = None  # IPython's ExecutionInfo of the cell running now
        self._in_cell = False
        self._error: tuple[str, str, str] | None = None  # the open run's status, when something went wrong
        self._broken = False  # the runs directory is unusable: warned once, no more automatic runs
        self._last_prune = 0.0
        self._last_backend = None
        self.runs_started = 0

    # -- starting ------------------------------------------------------------------------
    def start_auto(self, backend=None) -> None:
        """Start a run in the runs directory, unless one is open or recording is off."""
        from tracing.runs import recording_enabled  # not at import: importing engines stays cheap

        if self._broken or not recording_enabled():
            self.session.accept_metrics = True  # the store works in memory, as without a recorder
            return
        session = self.session
        with session.lock, self._lock:
            if not self.idle:
                return
            try:
                self._start(None, backend if backend is not None else self._last_backend, explicit=False)
            except Exception as e:  # never the program's problem: warn once, go on in memory
                self._broken = True
                text = str(e) if isinstance(e, OSError) else f"{type(e).__name__}: {e}"  # RunsDirError: one line
                warnings.warn(f"guidance-tui: not recording this process's runs: {text}", RuntimeWarning,
                              stacklevel=2)

    def start_explicit(self, path: Path) -> Recording:
        session = self.session
        with session.lock, self._lock:
            if self.run is not None:
                self.end()
            run = self._start(path, self._last_backend, explicit=True)
        return Recording(self, run)

    def _start(self, path: Path | None, backend, *, explicit: bool) -> _Run:
        from tracing import runs

        session = self.session
        shell = _ipython_shell()
        first_in_shell = shell is not None and self._shell is not shell
        if first_in_shell:
            self._install_ipython(shell)
        self._install_process_hooks(shell)
        script, file_name, info, cell = self._describe(shell, first_in_shell)
        if path is None:
            path = runs.new_trace_path(file_name)
            in_runs_dir = True
        else:
            path = Path(os.path.abspath(path))
            path.parent.mkdir(parents=True, exist_ok=True)
            in_runs_dir = False
        runs.create_private_file(path)
        if len(session.store) or self.runs_started:
            # A fresh store per run; nodes of earlier runs are below run_base (see Model._carry_over).
            session.store = TraceStore()
            session.run_base = session.next_node_id()
            session.carried = set()
            session.state_node = 0
        store = session.store
        model, backend_name = _backend_label(backend)
        writer = TraceWriter(path, store, interval=FLUSH_INTERVAL)
        run = _Run(path, store, writer, explicit=explicit, in_runs_dir=in_runs_dir, cell=cell, model=model,
                   backend=backend_name)
        store.append(RunStart(script=script, argv=list(getattr(sys, "argv", []) or []), model=model,
                              backend=backend_name, wall_time=time.time(), info=info))
        self.run = run
        self.idle = False
        self._error = None
        self.runs_started += 1
        session.accept_metrics = True
        try:
            run.registration = runs.register(path, script=script, model=model, backend=backend_name)
        except OSError as e:
            warnings.warn(f"guidance-tui: the run {path.name} is recorded but not listed as live: {e}",
                          RuntimeWarning, stacklevel=3)
        if in_runs_dir:
            self._prune()
        return run

    def _describe(self, shell, first_in_shell: bool) -> tuple[str, str, dict[str, str], bool]:
        """(script, name for the file, info, started in a cell)."""
        info = {"cwd": os.getcwd(), "pid": str(os.getpid())}
        if shell is not None and (self._in_cell or not first_in_shell or _has_cells(shell)):
            nb = _notebook_name(shell)
            nb_label = Path(nb).name if nb else ""
            if self._in_cell or first_in_shell:  # the first use is inside a cell whose hook already ran
                n, source, cell_id = _cell_now(shell, self._cell_info)
                info.update(source=source, cell=str(n))
                if cell_id:
                    info["cell_id"] = cell_id
                if nb:
                    info["notebook"] = nb
                label = f"In [{n}]"
                script = f"{nb_label} · {label}" if nb_label else label
                return script, f"{Path(nb).stem if nb else 'ipython'}-In{n}", info, True
            if nb:
                info["notebook"] = nb
            script = f"{nb_label or 'IPython'} (outside a cell)"
            return script, f"{Path(nb).stem if nb else 'ipython'}-background", info, False
        argv0 = (getattr(sys, "argv", None) or [""])[0]
        if argv0 == "-c":
            script = "python -c"
        elif argv0 in ("", "-"):
            script = "<stdin>"
        else:
            p = Path(argv0)
            script = str(p.resolve()) if p.exists() else argv0
        return script, script, info, False

    # -- the model -----------------------------------------------------------------------
    def model_built(self, backend) -> None:
        """A model was built: the open run's registry entry names it (the RunStart names the
        model known when the run started; the model's own message names every one)."""
        self._last_backend = backend
        run = self.run
        if run is None or run.registration is None:
            return
        model, name = _backend_label(backend)
        if (model, name) != (run.model, run.backend):
            run.model, run.backend = model, name
            try:
                run.registration.update(model=model, backend=name)
            except OSError:
                pass

    # -- ending ----------------------------------------------------------------------------
    def end(self, status: str = "done", error: str = "", tb: str = "", *, run: _Run | None = None,
            wait: float = CELL_LOCK_WAIT_S) -> None:
        """End the open run (only if it is ``run``, when given): RunEnd, close the writer,
        write the summary, leave the registry, prune."""
        session = self.session
        locked = session.lock.acquire(timeout=wait)  # not inside another thread's node, if we can help it
        try:
            with self._lock:
                r = self.run
                if r is None or (run is not None and r is not run):
                    return
                if self._error is not None and status == "done":
                    status, error, tb = self._error
                self.run = None
                self.idle = True
                self._error = None
                with session._listener_lock:  # no monitor sample after the run's end
                    session.accept_metrics = False
                r.store.append(RunEnd(status=status, error=error, traceback=tb, **r.store.token_counts()))
                try:
                    r.writer.close()
                except Exception as e:  # a full disk at the last flush: the file keeps what was written
                    r.writer.error = r.writer.error or e
                if r.writer.error is not None:
                    warnings.warn(f"guidance-tui: writing {r.path} failed: {r.writer.error}", RuntimeWarning,
                                  stacklevel=2)
                if r.registration is not None:
                    r.registration.close()
                if r.in_runs_dir:
                    from tracing.runs import write_summary

                    write_summary(r.path, r.store.events())
                    self._prune()
        finally:
            if locked:
                session.lock.release()

    def _prune(self) -> None:
        now = time.monotonic()
        if self._last_prune and now - self._last_prune < PRUNE_EVERY_S:
            return
        self._last_prune = now
        try:
            from tracing.runs import prune

            prune()
        except Exception:  # retention is housekeeping: never the program's problem
            pass

    def _note_error(self, exc: BaseException | None, tb, thread: threading.Thread | None = None) -> None:
        """Remember an uncaught exception as the open run's status (the first one wins)."""
        if self.run is None:
            return
        status, text = status_of(exc)
        if status == "done":
            return
        if thread is not None:
            text = f"in thread {thread.name}: {text}"
            self.run.store.append(Message(level="error", text=f"uncaught exception {text}"))
        if self._error is None:
            self._error = (status, text, user_frames(tb))

    # -- process hooks ---------------------------------------------------------------------
    def _install_process_hooks(self, shell) -> None:
        if self._hooked:
            return
        self._hooked = True
        atexit.register(self._at_exit)
        if shell is None:  # IPython reports a cell's exception itself (post_run_cell)
            prev = sys.excepthook

            def excepthook(typ, value, tb):
                try:
                    if not _interactive():
                        self._note_error(value, tb)
                except Exception:
                    pass
                prev(typ, value, tb)

            sys.excepthook = excepthook
        prev_thread_hook = threading.excepthook

        def thread_excepthook(args):
            try:
                if args.exc_type is not SystemExit:
                    self._note_error(args.exc_value, args.exc_traceback, args.thread)
            except Exception:
                pass
            prev_thread_hook(args)

        threading.excepthook = thread_excepthook
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._after_fork)

    def _at_exit(self) -> None:
        if self.run is None:
            return
        status, error, tb = "done", "", ""
        if self._error is None and not _interactive() and _ipython_shell() is None:
            # An uncaught exception that a replaced sys.excepthook kept from us: the interpreter still
            # leaves it in sys.last_value (sys.last_exc from 3.12) before exiting.
            exc = getattr(sys, "last_exc", None) or getattr(sys, "last_value", None)
            if exc is not None:
                status, error = status_of(exc)
                tb = user_frames(getattr(exc, "__traceback__", None))
        try:
            self.end(status, error, tb, wait=EXIT_LOCK_WAIT_S)
        except Exception as e:  # never turn a clean exit into a traceback
            print(f"guidance-tui: could not finish the recording: {e}", file=sys.stderr)

    def _after_fork(self) -> None:
        """In a forked child: the parent's run, file and registry entry stay the parent's."""
        r = self.run
        if r is not None:
            fh = getattr(r.writer, "_fh", None)
            try:  # whatever the child's copy of the file object flushes goes nowhere
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, fh.fileno())
                os.close(devnull)
            except Exception:
                pass
            _abandoned.append(r)
        self.run = None
        self.idle = True
        self._error = None
        self._lock = threading.RLock()

    # -- IPython -----------------------------------------------------------------------------
    def _install_ipython(self, shell) -> None:
        try:
            shell.events.register("pre_run_cell", self._pre_run_cell)
            shell.events.register("post_run_cell", self._post_run_cell)
        except Exception:
            return
        self._shell = shell

    def _pre_run_cell(self, info=None) -> None:
        self._cell_info = info
        self._in_cell = True

    def _post_run_cell(self, result=None) -> None:
        self._in_cell = False
        self._cell_info = None
        r = self.run
        if r is None or r.explicit:
            return
        exc = getattr(result, "error_in_exec", None) or getattr(result, "error_before_exec", None)
        status, text = status_of(exc)
        self.end(status, text, user_frames(getattr(exc, "__traceback__", None)) if exc is not None else "", run=r)


def _notebook_name(shell) -> str:
    """The notebook's path or name, when the kernel knows it (best effort)."""
    name = os.environ.get("JPY_SESSION_NAME", "")
    if not name:
        ns = getattr(shell, "user_ns", None) or {}
        name = ns.get("__session__") or ns.get("__vsc_ipynb_file__") or ""
    return str(name)


def _has_cells(shell) -> bool:
    """Some cell has been entered (else IPython runs a file: ``ipython script.py``)."""
    hist = getattr(getattr(shell, "history_manager", None), "input_hist_raw", None)
    return bool(hist) and len(hist) > 1


def _cell_now(shell, info) -> tuple[int | str, str, str]:
    """(execution count, source, cell id) of the cell running now.

    The history has the cell's source at ``In[n]`` before it runs, in every IPython version;
    ``execution_count`` is already n + 1 then in IPython 9, still n in 8."""
    source = getattr(info, "raw_cell", None)
    cell_id = getattr(info, "cell_id", None) or ""
    n: int | str = "?"
    hm = getattr(shell, "history_manager", None)
    hist = getattr(hm, "input_hist_raw", None)
    if hist and (info is None or getattr(info, "store_history", True)):
        n = len(hist) - 1
        if source is None:
            source = hist[-1]
    elif info is not None:
        n = getattr(shell, "execution_count", "?")
    return n, source or "", str(cell_id)
