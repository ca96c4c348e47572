"""`guidance-tui record` (a script, headless, to a trace file) and `guidance-tui model`.

Never imports Textual.
"""

from __future__ import annotations

import sys

from guidance_tui import exit_codes
from guidance_tui.exit_codes import CliError
from guidance_tui.run.headless import execute, make_run, report


def cmd_record(args) -> int:
    if getattr(args, "python", None):  # the real guidance in the user's interpreter, through the bridge
        from guidance_tui.bridge import make_bridge_run, refuse_engine_options
        from guidance_tui.cli.app_commands import _start

        refuse_engine_options(args)
        run = make_bridge_run(args.script, args.args, args, app=False, echo=args.quiet)
        _start(run)
    else:
        run = make_run(args.script, args.args, args, echo=args.quiet)  # -q: the script's own output, as it is
    transcript = None
    if not args.quiet:
        from guidance_tui.run.plain import PlainTranscript

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
    return exit_codes.OK
