"""`guidance-tui compare A B`: two recorded runs side by side.

In a terminal it opens the compare screen; with ``--plain``, or when stdout
is not a terminal, it prints a summary: the runs, where they first diverge
(with both sides' text), every other node whose text differs, and per node
the token counts, forced share, time and tokens per second with their deltas.
A trace that cannot be read is a one-line error (exit 1); damaged frames are
skipped with the same warning ``info`` prints.  Textual is imported only for
the screen.
"""

from __future__ import annotations

import gc
import sys
from pathlib import Path

from guidance_tui import exit_codes
from guidance_tui.exit_codes import CliError


def add_compare_parser(sub) -> None:
    p = sub.add_parser("compare", help="two trace files side by side: aligned by node, then text "
                                       "(a summary when not a terminal)")
    p.add_argument("a", metavar="A", help="trace file (the left side)")
    p.add_argument("b", metavar="B", help="trace file (the right side)")
    p.add_argument("--plain", action="store_true", help="print the summary instead of opening the screen")
    p.add_argument("--all", action="store_true", help="list every node and every difference (plain summary)")


def read_events(path: str) -> list:
    """A trace's events, read as ``info`` reads it (the same errors and warnings), without the
    tokens' alternatives: a comparison never shows them, and decoding them is half the time."""
    from tracing import TraceFormatError
    from tracing.fileformat import HEADER, FrameDecoder, check_header, read_bytes

    try:
        data = read_bytes(path)
        dec = FrameDecoder(alternatives=False, version=check_header(data, path))
        events, dropped, _ = dec.decode_frames(data, HEADER.size, path, final=True)
    except TraceFormatError as e:
        raise CliError(str(e)) from None
    damage = dec.warning
    if damage and not events:
        raise CliError(damage)  # nothing readable
    if damage:
        print(f"guidance-tui: warning: {damage}", file=sys.stderr)
    if dropped > 0:
        print(f"guidance-tui: warning: {path}: truncated: {dropped} bytes of an incomplete last frame dropped",
              file=sys.stderr)
    return events


def load_comparison(path_a: str, path_b: str):
    """Both traces read and aligned; unreadable ones raise CliError (one line)."""
    from guidance_tui.gc_policy import paused
    from guidance_tui.state.compare import build_side, compare

    sides = []
    with paused():  # hundreds of thousands of events, kept: no collection scans them meanwhile
        for path in (path_a, path_b):
            sides.append(build_side(read_events(path), Path(path).name))
        if Path(path_a).name == Path(path_b).name and path_a != path_b:  # two dirs, one name: say which
            sides[0].label, sides[1].label = path_a, path_b
        cmp = compare(*sides)
    gc.freeze()  # they live as long as the screen: out of every later collection's sight
    return cmp


def cmd_compare(args) -> int:
    from guidance_tui.cli.app_commands import _stdout_is_terminal
    from guidance_tui.state.compare import summary_lines

    cmp = load_comparison(args.a, args.b)
    if args.plain or not _stdout_is_terminal():
        sys.stdout.write("\n".join(summary_lines(cmp, all_nodes=args.all)) + "\n")
        return exit_codes.OK
    from guidance_tui.app.compare_screen import CompareApp

    try:
        CompareApp(cmp).run()
    except Exception as e:  # pragma: no cover - the app failing to start (a terminal problem)
        raise CliError(f"cannot open the compare screen ({type(e).__name__}: {e})") from None
    return exit_codes.OK
