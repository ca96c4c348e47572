"""Running a script without the app: ``record``, and ``run`` when stdout is not a terminal.

The script runs in this thread, the main one, as under plain ``python`` (see
runner); another thread pumps the transcript meanwhile.  The first Ctrl-C
cancels the run at its next token and interrupts a script that has not
stopped a second later (ScriptRun.interrupt); another Ctrl-C interrupts it at
once.  The trace keeps everything and gets its RunEnd.  No Textual here.
"""

from __future__ import annotations

import signal
import sys
import threading

from guidance_tui import exit_codes
from guidance_tui.exit_codes import CliError
from guidance_tui.run.progress_line import ProgressLine
from guidance_tui.run.runner import RunnerError, RunResult, ScriptRun, clean_text

PUMP_S = 0.05  # the transcript prints what is new this often
INTERRUPTING = ("guidance-tui: interrupting: the script stops at its next token, or in a second "
                "(Ctrl-C again: at once)")


def make_run(script, argv, args, *, echo: bool = False) -> ScriptRun:
    """A ScriptRun from the common options (--model, --backend, --record / -o, --force); one-line errors.

    ``echo``: the script's output also goes to the real stdout and stderr (no transcript shows it)."""
    record = getattr(args, "output", None) or getattr(args, "record", None)
    try:
        return ScriptRun(str(script), list(argv or ()), model=args.model, backend=args.backend, record=record,
                         url=getattr(args, "url", None), model_name=getattr(args, "model_name", None),
                         echo=echo, force=bool(getattr(args, "force", False)))
    except RunnerError as e:  # the script cannot be run: a missing file, an output that would overwrite it
        raise CliError(str(e), e.code) from None
    except OSError as e:
        raise CliError(clean_text(str(e))) from None


def _say(line: str) -> None:
    try:
        print(line, file=sys.__stderr__ if sys.stderr is None else sys.stderr, flush=True)
    except (OSError, ValueError, RuntimeError):
        pass


def execute(run, transcript=None) -> RunResult:
    """Run ``run`` (a ScriptRun) in this thread, pumping ``transcript`` from another one meanwhile."""
    err = sys.stderr
    stop = threading.Event()
    pump = None
    # Loading progress: one line rewritten on a terminal; with -q (no transcript) only there.
    progress = ProgressLine(run.store, err, sparse=transcript is not None) if hasattr(run, "store") else None
    if progress is not None and not progress.tty and transcript is None:
        progress = None
    if transcript is not None or progress is not None:
        def pump_once() -> None:
            if transcript is not None:
                if progress is not None and run.store.last_seq > transcript.seq:
                    progress.wipe()  # the transcript prints next: not after the progress text
                try:
                    transcript.pump()
                except Exception:  # a transcript that cannot go on must not stop the run: the trace has it all
                    transcript.broken = True
            if progress is not None:
                # Only at a line start: a half-printed line of tokens is never cut by the progress text.
                progress.pump(may_draw=transcript is None or transcript.at_line_start)

        def pump_loop() -> None:
            while not stop.wait(PUMP_S):
                pump_once()

        pump = threading.Thread(target=pump_loop, name="transcript", daemon=True)
        pump.start()
    restore = None
    if hasattr(run, "interrupt"):
        run.on_interrupt = lambda: print(INTERRUPTING, file=err, flush=True)
    else:  # a stand-in without its own Ctrl-C handling: the first Ctrl-C cancels it
        restore = _cancel_on_first_sigint(run)
    try:
        result = run.run()
    except RunnerError as e:  # its trace could not be created: nothing ran
        raise CliError(str(e), e.code) from None
    except KeyboardInterrupt:  # Ctrl-C thrice while the runner finished the trace
        result = RunResult("interrupted", "interrupted", exit_code=exit_codes.INTERRUPTED)
    except Exception as e:  # the runner itself failed (not the script)
        raise CliError(clean_text(f"the runner failed: {type(e).__name__}: {e}")) from None
    finally:
        stop.set()
        if pump is not None:
            pump.join()
        if progress is not None:
            progress.finish()
        if restore is not None:
            restore()
    if transcript is not None:
        transcript.finish(trace_path=run.trace_path)
        error = getattr(transcript, "error", None)
        if error is not None and not isinstance(error, (BrokenPipeError, ValueError)):  # not a reader gone
            _say(clean_text(f"guidance-tui: warning: the transcript stopped: {getattr(error, 'strerror', None) or error}"
                            " (the trace has everything)"))
    return result


def _cancel_on_first_sigint(run):
    if threading.current_thread() is not threading.main_thread():
        return None
    presses = []

    def handler(signum, frame):
        presses.append(1)
        if len(presses) > 1:
            raise KeyboardInterrupt
        _say("guidance-tui: interrupting (Ctrl-C again: at once)")
        run.cancel()

    old = signal.signal(signal.SIGINT, handler)
    return lambda: signal.signal(signal.SIGINT, old if old is not None else signal.default_int_handler)


def report(run, result: RunResult, *, frames: bool = True) -> int:
    """The outcome on stderr; returns the exit code.

    ``frames`` is False when a transcript already showed the trace path and the
    user's frames: then only a failure's one line is added.
    """
    where = f"trace: {clean_text(str(run.trace_path))}"
    if result.status == "done":
        if frames:
            _say(where)
        return exit_codes.OK
    if result.status == "interrupted":
        _say(f"guidance-tui: interrupted; {where}")
        return exit_codes.INTERRUPTED
    if frames and result.traceback:
        _say(result.traceback.rstrip())
    _say(f"guidance-tui: {result.error}")
    _say(f"{where} ({'incomplete' if getattr(run, 'write_error', None) else 'kept'})")
    return result.exit_code or exit_codes.ERROR
