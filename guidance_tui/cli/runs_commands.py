"""``runs`` (and ``guidance-tui`` with no command) and ``attach``: the runs any
process recorded, and joining one that is still running."""

from __future__ import annotations

import sys
from pathlib import Path

from guidance_tui import exit_codes
from guidance_tui.exit_codes import CliError


def _runs_dir() -> Path:
    from tracing.runs import runs_dir

    try:
        return runs_dir()
    except OSError as e:
        raise CliError(str(e)) from None


def _terminal() -> bool:
    from guidance_tui.cli.app_commands import _stdout_is_terminal

    return _stdout_is_terminal()


def cmd_runs(args) -> int:
    """The run browser on a terminal; else (or with --plain) the same list as a table."""
    d = _runs_dir()
    if getattr(args, "plain", False) or not _terminal():
        import time

        from tracing.runs import list_runs

        from guidance_tui.state.run_list import plain_table, table

        rows = table(list_runs(d), query=" ".join(getattr(args, "filter", None) or ()), now=time.time())
        if not rows:
            print(f"guidance-tui: no runs in {d}", file=sys.stderr)
            return exit_codes.OK
        print(plain_table(rows))
        return exit_codes.OK
    from guidance_tui.cli.app_commands import make_app

    make_app(None, browse=d).run()
    return exit_codes.OK


def cmd_attach(args) -> int:
    """Join a run another process is recording: replay what it wrote so far, then follow it."""
    from tracing.runs import live_runs

    from guidance_tui.state.sources import open_recording

    d = _runs_dir()
    target = getattr(args, "target", None)
    if not _terminal():
        raise CliError("attach opens the inspector: it needs a terminal (`guidance-tui runs --plain` lists runs)",
                       exit_codes.USAGE)
    if target is None:
        live = live_runs(d)
        if not live:
            raise CliError(f"no live run in {d} (`guidance-tui runs` lists the recent ones)")
        if len(live) > 1:  # let the user choose
            from guidance_tui.cli.app_commands import make_app

            make_app(None, browse=d, live_only=True).run()
            return exit_codes.OK
        path, writer = Path(live[0].trace), live[0]
    elif target.isdigit():
        mine = [r for r in live_runs(d) if r.pid == int(target)]
        if not mine:
            raise CliError(f"process {target} is recording no run (`guidance-tui runs` lists the live ones)")
        path, writer = Path(mine[0].trace), mine[0]
    else:
        path, writer = Path(target), None
        _check_trace_path(path)
    from tracing import TraceFormatError

    try:
        rec = open_recording(path, writer)
    except (TraceFormatError, OSError) as e:
        raise CliError(str(e)) from None
    from guidance_tui.cli.app_commands import make_app

    app = make_app(rec.store, **rec.screen_options())
    if rec.follower is None:
        app.startup_warning = f"{path.name} is not being recorded now: replaying it."
    elif rec.warning:
        app.startup_warning = rec.warning
    app.run()
    return exit_codes.OK


def _check_trace_path(path: Path) -> None:
    import stat

    try:
        st = path.stat()
    except FileNotFoundError:
        raise CliError(f"{path}: no such file", exit_codes.USAGE) from None
    except OSError as e:
        raise CliError(f"{path}: {e.strerror or e}") from None
    if not stat.S_ISREG(st.st_mode):
        raise CliError(f"{path}: not a regular file")


def newest_finished_run() -> Path:
    """For ``replay`` with no file: the newest run that is not live."""
    from tracing.runs import list_runs

    d = _runs_dir()
    for s in list_runs(d):
        if s.status != "live":
            return Path(s.path)
    raise CliError(f"no finished run in {d} yet: name a trace file")
