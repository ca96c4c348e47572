"""Running a script without the app: ``record``, and ``run`` when stdout is not a terminal.

The script runs in a worker thread; this thread pumps the transcript and
stays responsive to Ctrl-C, which cancels the run at its next token and keeps
the trace.  No Textual here.
"""

from __future__ import annotations

import sys
import threading

from guidance_tui import exit_codes
from guidance_tui.exit_codes import CliError
from guidance_tui.run.runner import RunnerError, RunResult, ScriptRun


def make_run(script, argv, args, *, capture_output: bool = False) -> ScriptRun:
    """A ScriptRun from the common options (--model, --backend, --record / -o); one-line errors."""
    record = getattr(args, "output", None) or getattr(args, "record", None)
    try:
        return ScriptRun(str(script), list(argv or ()), model=args.model, backend=args.backend, record=record,
                         capture_output=capture_output)
    except RunnerError as e:  # the script cannot be run: a missing file, not Python
        raise CliError(str(e), exit_codes.USAGE) from None
    except OSError as e:
        raise CliError(str(e)) from None


def execute(run, transcript=None) -> RunResult:
    """Run ``run`` (a ScriptRun) in a worker thread, pumping ``transcript`` meanwhile."""
    box: dict = {}
    done = threading.Event()

    def target() -> None:
        try:
            box["result"] = run.run()
        except BaseException as e:  # the runner itself failed (not the script)
            box["error"] = e
        finally:
            done.set()

    worker = threading.Thread(target=target, name="script", daemon=True)
    worker.start()
    interrupted = False
    # An Event, not Thread.join: a join interrupted by Ctrl-C can leave is_alive() False too early.
    while not done.is_set():
        try:
            done.wait(0.05)
            if transcript is not None:
                transcript.pump()
        except KeyboardInterrupt:
            if interrupted:
                break  # a second Ctrl-C: stop waiting for the script
            interrupted = True
            run.cancel()
            print("\nguidance-tui: interrupting (Ctrl-C again to stop waiting)", file=sys.stderr)
    if transcript is not None:
        transcript.finish(trace_path=run.trace_path)
    if "error" in box:
        raise CliError(str(box["error"]) or type(box["error"]).__name__)
    return box.get("result") or RunResult("interrupted", "interrupted", exit_code=exit_codes.INTERRUPTED)


def report(run, result: RunResult, *, frames: bool = True) -> int:
    """The outcome on stderr; returns the exit code.

    ``frames`` is False when a transcript already showed the trace path and the
    user's frames: then only a failure's one line is added.
    """
    where = f"trace: {run.trace_path}"
    if result.status == "done":
        if frames:
            print(where, file=sys.stderr)
        return exit_codes.OK
    if result.status == "interrupted":
        print(f"guidance-tui: interrupted; {where}", file=sys.stderr)
        return exit_codes.INTERRUPTED
    if frames and result.traceback:
        print(result.traceback.rstrip(), file=sys.stderr)
    print(f"guidance-tui: {result.error}", file=sys.stderr)
    print(f"{where} (kept)", file=sys.stderr)
    return result.exit_code or exit_codes.ERROR
