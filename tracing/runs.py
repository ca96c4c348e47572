"""The runs directory: where every recorded run lives, which are live, and a
small summary of each.

* **The directory** is ``$GUIDANCE_TUI_RUNS``, else ``runs/`` under the user
  data directory.  It is private: created 0700, and refused when it is a
  symlink, owned by another user, or writable by group or others.  Trace
  files are created 0600.
* **The live registry** is ``.live/`` inside it: one small JSON file per run
  that a process is recording now, with the pid and that pid's start time (so
  a reused pid is never mistaken for the writer), the trace path, the script
  or notebook, the model and the start time.  The recording process removes
  its entry when the run ends; an entry whose process is gone is stale, and
  readers drop it.  No network listener: the append-only trace file is the
  protocol, and any number of viewers read it without the writer knowing.
* **Summaries** are ``.index/NAME.json``: status, script, model, token counts,
  duration, keyed by the trace's size and mtime, so the run browser reads a
  few hundred bytes per run instead of the whole file.  A recorder writes its
  run's summary when the run ends; any other file is summarised on first
  listing (once) and cached.
* **Retention** keeps the newest runs up to a count and a total size; it
  never removes a live run.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import stat
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

RUNS_ENV = "GUIDANCE_TUI_RUNS"
RECORD_ENV = "GUIDANCE_TUI_RECORD"
KEEP_RUNS_ENV = "GUIDANCE_TUI_KEEP_RUNS"
KEEP_BYTES_ENV = "GUIDANCE_TUI_KEEP_BYTES"
TRACE_SUFFIX = ".gtt"
KEEP_RUNS = 500  # runs kept by default...
KEEP_BYTES = 2 * 2**30  # ...and at most this many bytes of them
_LIVE = ".live"
_INDEX = ".index"


class RunsDirError(OSError):
    """The runs directory (or an entry in it) cannot be used; the message is one line.
    An OSError, so every handler of file errors reports it as it is."""


# -- the directory ------------------------------------------------------------------
def runs_dir(create: bool = True) -> Path:
    """The private runs directory (created 0700 when missing)."""
    env = os.environ.get(RUNS_ENV)
    if env:
        d = Path(env).expanduser()
    else:
        import platformdirs

        d = Path(platformdirs.user_data_dir("guidance-tui")) / "runs"
    if create:
        ensure_private_dir(d)
    return d


def ensure_private_dir(d: Path) -> Path:
    """Create ``d`` (0700) if missing; refuse a symlink, a file, another user's
    directory, or one writable by group or others."""
    try:
        st = os.lstat(d)
    except FileNotFoundError:
        try:
            d.parent.mkdir(parents=True, exist_ok=True)
            os.mkdir(d, 0o700)
        except FileExistsError:
            pass
        except OSError as e:
            raise RunsDirError(f"cannot create the runs directory {d}: {e.strerror or e}") from None
        st = os.lstat(d)
    except OSError as e:
        raise RunsDirError(f"cannot use the runs directory {d}: {e.strerror or e}") from None
    check_private(d, st, what="the runs directory")
    return d


def check_private(path: Path, st: os.stat_result | None = None, *, what: str = "", want_dir: bool = True) -> None:
    """Refuse what another user could have planted or can change: a symlink, something
    of the wrong kind, another user's, or (a directory) writable by group or others."""
    what = f"{what} {path}" if what else str(path)
    st = st or os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise RunsDirError(f"{what} is a symlink: refusing it (name the real one instead)")
    if want_dir and not stat.S_ISDIR(st.st_mode):
        raise RunsDirError(f"{what} is not a directory")
    if not want_dir and not stat.S_ISREG(st.st_mode):
        raise RunsDirError(f"{what} is not a regular file")
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise RunsDirError(f"{what} belongs to another user")
    if want_dir and st.st_mode & 0o022:
        raise RunsDirError(f"{what} is writable by others (chmod go-w {path})")


def recording_enabled() -> bool:
    """``GUIDANCE_TUI_RECORD=0`` turns recording by default off."""
    return os.environ.get(RECORD_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def new_trace_path(name: str, directory: Path | None = None) -> Path:
    """A fresh trace file name in the runs directory, named for ``name`` and the time."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(name).stem) or "run"
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    return (directory or runs_dir()) / f"{stamp}-{stem}{TRACE_SUFFIX}"


def create_private_file(path: Path) -> None:
    """Create (or truncate) ``path`` as an empty file readable by its owner only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.close(fd)
    os.chmod(path, 0o600)  # an existing file keeps its mode through O_CREAT


# -- the live registry ----------------------------------------------------------------
def process_start_time(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch), or None if it is gone."""
    try:
        import psutil

        return psutil.Process(pid).create_time()
    except Exception:  # gone, or not ours to see
        return None


@dataclass
class LiveRun:
    """A registry entry: a run a process is (or was) recording."""

    pid: int
    pid_start: float
    trace: str
    script: str = ""
    model: str = ""
    backend: str = ""
    started: float = 0.0
    entry: str = ""  # the registry file, filled in when read

    def writer_alive(self) -> bool:
        """The recording process is still running (the same process, not a reused pid)."""
        t = process_start_time(self.pid)
        return t is not None and abs(t - self.pid_start) < 1.0


_counter_lock = threading.Lock()
_counter = 0


class Registration:
    """This process's entry for one run; ``close()`` removes it."""

    def __init__(self, run: LiveRun, path: Path) -> None:
        self.run = run
        self.path = path

    def update(self, **changes) -> None:
        for k, v in changes.items():
            setattr(self.run, k, v)
        _write_json(self.path, _entry_dict(self.run))

    def close(self) -> None:
        try:
            os.unlink(self.path)
        except OSError:
            pass


def _entry_dict(run: LiveRun) -> dict:
    d = asdict(run)
    d.pop("entry", None)
    return d


def register(trace: str | os.PathLike, *, script: str = "", model: str = "", backend: str = "",
             directory: Path | None = None) -> Registration:
    """Announce that this process records ``trace`` now."""
    global _counter
    live = ensure_private_dir((directory or runs_dir()) / _LIVE)
    pid = os.getpid()
    with _counter_lock:
        _counter += 1
        n = _counter
    run = LiveRun(pid=pid, pid_start=process_start_time(pid) or time.time(), trace=str(Path(trace).resolve()),
                  script=script, model=model, backend=backend, started=time.time())
    path = live / f"{pid}-{n}.json"
    _write_json(path, _entry_dict(run))
    return Registration(run, path)


def registry_entries(directory: Path | None = None) -> list[LiveRun]:
    """Every readable entry of this user's registry, live or stale (newest first).

    Entries owned by another user, or that are not regular files, are skipped."""
    live = (directory or runs_dir()) / _LIVE
    out = []
    try:
        names = os.listdir(live)
    except OSError:
        return []
    for name in names:
        if not name.endswith(".json"):
            continue
        p = live / name
        try:
            check_private(p, what="the registry entry", want_dir=False)
            data = json.loads(p.read_text())
            run = LiveRun(**{k: data[k] for k in LiveRun.__dataclass_fields__ if k in data and k != "entry"})
        except (RunsDirError, OSError, ValueError, TypeError):
            continue
        run.entry = str(p)
        out.append(run)
    out.sort(key=lambda r: r.started, reverse=True)
    return out


def live_runs(directory: Path | None = None, *, drop_stale: bool = True) -> list[LiveRun]:
    """The runs whose writer is running now (newest first); stale entries are removed."""
    out = []
    for run in registry_entries(directory):
        if run.writer_alive():
            out.append(run)
        elif drop_stale:
            try:
                os.unlink(run.entry)
            except OSError:
                pass
    return out


def live_run_for(trace: str | os.PathLike, directory: Path | None = None) -> LiveRun | None:
    """The live registry entry writing ``trace``, if any."""
    target = str(Path(trace).resolve())
    return next((r for r in live_runs(directory) if r.trace == target), None)


# -- summaries --------------------------------------------------------------------------
@dataclass
class RunSummary:
    path: str
    status: str = "incomplete"  # done | error | interrupted | incomplete (no run end) | live | died
    script: str = ""
    model: str = ""
    backend: str = ""
    tokens: int = 0
    generated: int = 0
    started: float = 0.0  # wall time
    duration_s: float = 0.0
    size: int = 0
    mtime_ns: int = 0
    error: str = ""
    pid: int = 0  # the writer, while live
    extra: dict = field(default_factory=dict)

    @property
    def tok_s(self) -> float:
        return self.generated / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def name(self) -> str:
        return self.script or Path(self.path).name


def summary_of_events(path: str | os.PathLike, events, size: int = 0, mtime_ns: int = 0) -> RunSummary:
    """A summary of ``events`` (one run's, in order)."""
    from .events import RunEnd, RunStart, Token, TokenKind

    s = RunSummary(str(path), size=size, mtime_ns=mtime_ns)
    first_t = last_t = -1
    for ev in events:
        t = type(ev)
        if t is Token:
            s.tokens += 1
            if ev.kind == TokenKind.GENERATED:
                s.generated += 1
        elif t is RunStart:
            s.script, s.model, s.backend, s.started = ev.script, ev.model, ev.backend, ev.wall_time
        elif t is RunEnd:
            s.status, s.error = ev.status, ev.error
        if ev.t_us >= 0:
            if first_t < 0:
                first_t = ev.t_us
            last_t = ev.t_us
    if last_t > first_t >= 0:
        s.duration_s = (last_t - first_t) / 1e6
    return s


def _index_path(trace: Path) -> Path:
    return trace.parent / _INDEX / (trace.name + ".json")


def write_summary(trace: str | os.PathLike, events) -> None:
    """Cache the summary of a run that just ended (its recorder has every event at hand)."""
    trace = Path(trace)
    try:
        st = trace.stat()
        s = summary_of_events(trace, events, st.st_size, st.st_mtime_ns)
        ensure_private_dir(trace.parent / _INDEX)
        _write_json(_index_path(trace), asdict(s))
    except (OSError, RunsDirError):
        pass  # a cache: the browser summarises the file itself


def summarize(trace: str | os.PathLike) -> RunSummary:
    """The summary of ``trace``: from the cache while the file is unchanged, else read once and cached."""
    trace = Path(trace)
    st = trace.stat()
    idx = _index_path(trace)
    try:
        data = json.loads(idx.read_text())
        if data.get("size") == st.st_size and data.get("mtime_ns") == st.st_mtime_ns:
            return RunSummary(**{k: v for k, v in data.items() if k in RunSummary.__dataclass_fields__})
    except (OSError, ValueError, TypeError):
        pass
    from .fileformat import TraceFormatError, read_trace

    try:
        tf = read_trace(trace)
    except TraceFormatError as e:
        s = RunSummary(str(trace), status="damaged", size=st.st_size, mtime_ns=st.st_mtime_ns, error=str(e))
    else:
        s = summary_of_events(trace, tf.events, st.st_size, st.st_mtime_ns)
        if tf.warning:  # readable, but frames were skipped: the listing says so
            s.extra["damage"] = tf.warning
            s.error = s.error or tf.warning
    try:
        ensure_private_dir(idx.parent)
        _write_json(idx, asdict(s))
    except (OSError, RunsDirError):
        pass
    return s


def list_runs(directory: Path | None = None) -> list[RunSummary]:
    """Every run in the runs directory: live ones first (newest first), then the others, newest first.

    A run without a run end whose writer is gone is "died"."""
    d = directory or runs_dir()
    live = {r.trace: r for r in live_runs(d)}
    out = []
    try:
        names = [n for n in os.listdir(d) if n.endswith(TRACE_SUFFIX)]
    except OSError:
        return []
    for name in names:
        p = d / name
        try:
            s = summarize(p)
        except OSError:
            continue
        run = live.get(str(p.resolve()))
        if run is not None:
            s.status, s.pid = "live", run.pid
            s.script = s.script or run.script
            s.model = s.model or run.model
        elif s.status == "incomplete":
            s.status = "died"
        out.append(s)
    out.sort(key=lambda s: (s.status != "live", -(s.started or s.mtime_ns / 1e9)))
    return out


def delete_run(trace: str | os.PathLike) -> None:
    """Remove a finished run's trace and its cached summary; a live run is refused."""
    trace = Path(trace)
    if live_run_for(trace, trace.parent) is not None:
        raise RunsDirError(f"{trace.name} is still being recorded")
    trace.unlink()
    try:
        _index_path(trace).unlink()
    except OSError:
        pass


def prune(directory: Path | None = None, *, keep: int | None = None, max_bytes: int | None = None) -> list[Path]:
    """Remove the oldest finished runs beyond ``keep`` runs or ``max_bytes`` in all; live runs stay.

    Defaults: ``GUIDANCE_TUI_KEEP_RUNS`` (500) and ``GUIDANCE_TUI_KEEP_BYTES`` (2 GiB)."""
    d = directory or runs_dir()
    keep = keep if keep is not None else int(os.environ.get(KEEP_RUNS_ENV, KEEP_RUNS))
    max_bytes = max_bytes if max_bytes is not None else int(os.environ.get(KEEP_BYTES_ENV, KEEP_BYTES))
    live = {r.trace for r in live_runs(d)}
    files = []
    try:
        for name in os.listdir(d):
            if name.endswith(TRACE_SUFFIX):
                p = d / name
                try:
                    st = p.stat()
                except OSError:
                    continue
                files.append((st.st_mtime_ns, st.st_size, p))
    except OSError:
        return []
    files.sort(reverse=True)  # newest first
    removed, total = [], 0
    for i, (_, size, p) in enumerate(files):
        total += size
        if str(p.resolve()) in live:
            continue
        if i >= keep or total > max_bytes:
            try:
                delete_run(p)
                removed.append(p)
            except (OSError, RunsDirError):
                pass
    return removed


def _write_json(path: Path, data: dict) -> None:
    """Atomically, readable by the owner only."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)
