"""`guidance-tui record` (a script, headless, to a trace file) and `guidance-tui model`.

Never imports Textual.
"""

from __future__ import annotations

import sys

from .cli import CliError
from .headless import execute, report
from .runner import RunnerError, ScriptRun


def start_run(args, *, capture_output: bool = False) -> ScriptRun:
    """A ScriptRun from the common options (script, args, --model, --backend, --record/-o)."""
    record = getattr(args, "output", None) or getattr(args, "record", None)
    try:
        return ScriptRun(args.script, args.args, model=args.model, backend=args.backend, record=record,
                         capture_output=capture_output)
    except RunnerError as e:
        raise CliError(str(e)) from None


def cmd_record(args) -> int:
    run = start_run(args)
    transcript = None
    if not args.quiet:
        from .plain import PlainTranscript

        transcript = PlainTranscript(run.store, file=sys.stdout)
    return report(run, execute(run, transcript), frames=transcript is None)


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
