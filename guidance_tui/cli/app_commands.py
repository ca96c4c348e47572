"""``run``, ``replay`` and ``demo``: the commands that open the inspector.

``run`` executes a prompt script under the app (or prints a plain transcript
when stdout is not a terminal, or with ``--plain``); every run is recorded.
``replay`` opens a recorded trace, no model needed.  ``demo`` runs a bundled
example on the embedded default model.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from guidance_tui import exit_codes
from guidance_tui.exit_codes import CliError
from guidance_tui.paths import examples_dir

FIRST_SCREEN_EVENTS = 3000  # decoded before the app's first frame; the rest streams in


def _stdout_is_terminal() -> bool:
    """A terminal that can draw the app: not a pipe or a file, and not ``TERM=dumb``
    (an editor's shell, a serial console): those get the plain transcript."""
    if os.environ.get("TERM", "").strip().lower() == "dumb":
        return False
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def _make_run(script: Path, argv, args):
    from guidance_tui.run.headless import make_run

    # The script's prints become Message events, shown in order in the transcript.
    return make_run(script, argv, args)


def _make_process(script: Path, argv, args):
    """The script in a child process (see script_process): the app cannot slow it down."""
    from guidance_tui.run.runner import RunnerError, clean_text
    from guidance_tui.run.script_process import ScriptProcess

    try:
        return ScriptProcess(script, list(argv or ()), model=args.model, backend=args.backend,
                             url=getattr(args, "url", None), model_name=getattr(args, "model_name", None),
                             record=getattr(args, "record", None), force=bool(getattr(args, "force", False)))
    except RunnerError as e:
        raise CliError(str(e), e.code) from None
    except OSError as e:
        raise CliError(clean_text(str(e))) from None


def _exit_code(result) -> int:
    if result is None:
        return exit_codes.INTERRUPTED
    return int(getattr(result, "exit_code", exit_codes.OK if result.status == "done" else exit_codes.ERROR))


def run_plain(run, file=None) -> int:
    """Run the script (in this thread) and print its transcript as it goes."""
    from guidance_tui.run.headless import execute, report
    from guidance_tui.run.plain import PlainTranscript

    return report(run, execute(run, PlainTranscript(run.store, file=file)), frames=False)


def make_app(store, **options):
    """The inspector app with the user's keymap and saved theme; a broken keymap is a one-line error."""
    from guidance_tui import config
    from guidance_tui.app import InspectorApp
    from guidance_tui.app.actions import BY_ID

    try:
        keymap = config.load_keymap(BY_ID)
    except config.ConfigError as e:
        raise CliError(str(e), exit_codes.USAGE) from None
    settings, warning = config.load_settings()

    def save_theme(name: str) -> None:
        settings.theme = name
        config.save_settings(settings)

    app = InspectorApp(store, keymap=keymap, theme=settings.theme, on_theme=save_theme, **options)
    app.startup_warning = warning or ""
    return app


def run_app(run, title: str) -> int:
    """Open the inspector over ``run`` (a ScriptProcess); returns the script's exit code."""
    from guidance_tui.run.script_process import StartError

    app = make_app(run.store, script_run=run, live=True, title=title)  # first: a bad keymap starts nothing
    try:
        run.start()
    except StartError as e:
        raise CliError(str(e)) from None
    _lower_priority()
    app.run()
    if not app.script_done.is_set():
        run.cancel()
        if not app.script_done.wait(timeout=30):
            run.kill()
            app.script_done.wait(timeout=5)
    if app.run_error is not None:
        raise CliError(str(app.run_error) or type(app.run_error).__name__)
    from guidance_tui.run.runner import clean_text

    print(f"trace: {clean_text(str(run.trace_path))}")
    return _exit_code(app.result)


APP_NICE = 10  # see _lower_priority


def _lower_priority() -> None:
    """Let the script's process win when both want a core (a model uses them all).

    Called after the child started, so it keeps its priority; threads started
    from here on inherit ours (Linux keeps a nice value per thread).  The app
    still gets about a tenth of a contended core, and all of an idle one."""
    try:
        os.nice(APP_NICE)
    except (AttributeError, OSError):
        pass


def _run_script(script: Path, args) -> int:
    argv = getattr(args, "args", ())
    if getattr(args, "python", None):
        return _run_bridged(script, argv, args)
    if getattr(args, "plain", False) or not _stdout_is_terminal():
        return run_plain(_make_run(script, argv, args))
    return run_app(_make_process(script, argv, args), script.name)


def _run_bridged(script: Path, argv, args) -> int:
    """``--python PY``: the script in the user's own interpreter, with the real guidance."""
    from guidance_tui.bridge import make_bridge_run, refuse_engine_options

    refuse_engine_options(args)
    plain = getattr(args, "plain", False) or not _stdout_is_terminal()
    run = make_bridge_run(script, argv, args, app=not plain)
    if not plain:
        return run_app(run, script.name)
    _start(run)
    return run_plain(run)


def _start(run) -> None:
    from guidance_tui.run.script_process import StartError

    try:
        run.start()
    except StartError as e:
        raise CliError(str(e)) from None


def cmd_run(args) -> int:
    return _run_script(Path(args.script), args)


def cmd_demo(args) -> int:
    name = args.name
    path = examples_dir() / f"{name}.py"
    if not path.is_file():
        available = sorted(p.stem for p in examples_dir().glob("*.py") if not p.stem.startswith("_"))
        listing = ", ".join(available) if available else "none installed"
        raise CliError(f"no example named {name!r} (available: {listing})")
    return _run_script(path, args)


def cmd_replay(args) -> int:
    from tracing import TraceFormatError

    from guidance_tui.state.loader import TraceLoader

    if args.file is None:
        from guidance_tui.cli.runs_commands import newest_finished_run

        args.file = str(newest_finished_run())
    if _stdout_is_terminal() and _writer_of(args.file) is not None:  # still being written: follow it
        from guidance_tui.cli.runs_commands import cmd_attach

        args.target = args.file
        return cmd_attach(args)
    try:
        loader = TraceLoader(args.file)
    except TraceFormatError as e:
        raise CliError(str(e)) from None
    if not _stdout_is_terminal():
        loader.load()
        if loader.error is not None:
            raise CliError(str(loader.error))
        if loader.warning and len(loader.store) == 0:  # damaged, nothing readable
            raise CliError(loader.warning)
        from guidance_tui.run.plain import PlainTranscript

        out = _Output(sys.stdout)
        transcript = PlainTranscript(loader.store, file=out)
        transcript.finish()
        if out.error is not None and not isinstance(out.error, BrokenPipeError):
            raise out.error  # a full disk: one line, exit 1 (cli.main)
        _warn_truncated(loader)
        return exit_codes.OK
    loader.load(FIRST_SCREEN_EVENTS)
    if loader.error is not None:
        raise CliError(str(loader.error))
    if len(loader.store) == 0 and loader.done.is_set():
        raise CliError(loader.warning or f"{args.file}: the trace holds no events")
    app = make_app(loader.store, loader=None if loader.done.is_set() else loader, title=Path(args.file).name)
    if loader.done.is_set() and loader.dropped_bytes:
        app.startup_warning = (f"The trace ends mid-event ({loader.dropped_bytes} bytes dropped): "
                               "the run was cut short.")
    if loader.done.is_set() and loader.warning:  # damage found later is notified when loading ends
        app.startup_warning = loader.warning
    app.run()
    loader.stop()
    if loader.error is not None:
        raise CliError(str(loader.error))
    _warn_truncated(loader)
    return exit_codes.OK


def _writer_of(path: str):
    """The live process writing ``path``, if any (the registry may be unreadable: then none)."""
    from tracing.runs import live_run_for

    try:
        return live_run_for(path)
    except OSError:
        return None


class _Output:
    """stdout for a transcript, which stops quietly when its file fails: this remembers why."""

    def __init__(self, file) -> None:
        self._file = file
        self.error: OSError | None = None

    def write(self, text: str):
        try:
            return self._file.write(text)
        except OSError as e:
            self.error = self.error or e
            raise

    def flush(self) -> None:
        try:
            self._file.flush()
        except OSError as e:
            self.error = self.error or e
            raise

    def __getattr__(self, name: str):
        return getattr(self._file, name)


def _warn_truncated(loader) -> None:
    """The warnings ``info`` and ``export`` print for the same file: damage skipped, a cut end."""
    if loader.warning:
        print(f"guidance-tui: warning: {loader.warning}", file=sys.stderr)
    if loader.dropped_bytes:
        print(f"guidance-tui: warning: {loader.path} ends mid-event ({loader.dropped_bytes} bytes dropped); "
              "the run was cut short", file=sys.stderr)
