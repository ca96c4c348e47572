"""What ``guidance-tui serve`` runs for each browser tab: ``python -m guidance_tui.export.served ARGS``.

The same commands as in a terminal (``replay TRACE``, ``run SCRIPT``, ``runs``),
started by textual-serve with Textual's web driver (``TEXTUAL_DRIVER``).  Their
stdout is a pipe to textual-serve, not a terminal, so the commands' "is this a
terminal?" check would print a plain transcript instead of opening the app:
here it is answered yes, since the web driver draws the app in the browser.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from guidance_tui.cli import app_commands

    if not app_commands._stdout_is_terminal():  # the web driver is the terminal
        app_commands._stdout_is_terminal = lambda: True
    from guidance_tui.cli import main as cli_main

    return cli_main(list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    raise SystemExit(main())
