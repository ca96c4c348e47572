"""`guidance-tui record` (a script, headless, to a trace file) and `guidance-tui model`.

Never imports Textual.  The script runs in a worker thread while this thread
echoes the transcript and stays responsive to Ctrl-C.
"""

from __future__ import annotations

import sys
import threading

from .cli import EXIT_INTERRUPTED, CliError
from .runner import RunnerError, RunResult, ScriptRun


def start_run(args, *, capture_output: bool = False) -> ScriptRun:
    """A ScriptRun from the common options (script, args, --model, --backend, --record/-o)."""
    record = getattr(args, "output", None) or getattr(args, "record", None)
    try:
        return ScriptRun(args.script, args.args, model=args.model, backend=args.backend, record=record,
                         capture_output=capture_output)
    except RunnerError as e:
        raise CliError(str(e)) from None


def run_headless(run: ScriptRun, transcript=None) -> RunResult:
    """Run in a worker thread; pump the transcript; Ctrl-C cancels the run and keeps the trace."""
    worker = threading.Thread(target=run.run, name="script", daemon=True)
    worker.start()
    interrupted = False
    while worker.is_alive():
        try:
            worker.join(0.1)
            if transcript is not None:
                transcript.pump()
        except KeyboardInterrupt:
            if interrupted:
                break  # a second Ctrl-C: stop waiting for the script
            interrupted = True
            run.cancel()
            print("\nguidance-tui: interrupting (Ctrl-C again to stop waiting)", file=sys.stderr)
    if transcript is not None:
        transcript.pump()
        transcript.finish()
    if run.result is None:  # the script never reached a token boundary to notice the cancel
        return RunResult("interrupted", "interrupted", exit_code=EXIT_INTERRUPTED)
    return run.result


def report(run: ScriptRun, result: RunResult) -> int:
    """Print the outcome on stderr (user frames and one line for errors); return the exit code."""
    where = f"trace: {run.trace_path}"
    if result.status == "done":
        print(where, file=sys.stderr)
        return 0
    if result.status == "interrupted":
        print(f"guidance-tui: interrupted; {where}", file=sys.stderr)
        return EXIT_INTERRUPTED
    if result.traceback:
        print(result.traceback.rstrip(), file=sys.stderr)
    print(f"guidance-tui: {result.error}", file=sys.stderr)
    print(f"{where} (kept)", file=sys.stderr)
    return result.exit_code or 1


def cmd_record(args) -> int:
    run = start_run(args)
    transcript = None
    if not args.quiet:
        from .plain import PlainTranscript

        transcript = PlainTranscript(run.store, file=sys.stdout)
    return report(run, run_headless(run, transcript))


def cmd_model(args) -> int:
    from engines.default_model import default_model_path
    from engines.errors import EngineError

    try:
        path = default_model_path(progress=not args.quiet)
    except EngineError as e:
        raise CliError(str(e)) from None
    if not args.quiet:
        print(path)
    return 0
