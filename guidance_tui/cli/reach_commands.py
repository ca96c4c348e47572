"""``serve`` and the ``export`` formats that reach beyond the terminal: ``otlp`` (and ``--to URL``),
``html`` and ``svg``.

* ``export TRACE --format otlp [-o OUT]``: OTLP/JSON lines (one ``TracesData`` per
  line), the OpenTelemetry file exporter's layout.  ``--content`` adds the
  prompt and completion texts, ``--max-token-events N`` caps the token events per
  span (default 256), ``--project NAME`` names the Phoenix project
  (``openinference.project.name``).
* ``export TRACE --to URL``: the same spans as OTLP/HTTP protobuf, POSTed to
  ``URL/v1/traces`` (``--timeout S``, default 10; a big run goes in several
  requests of about 4 MiB).  An endpoint that cannot be reached, or answers
  other than 2xx, is one line and exit 1.  With ``-o OUT`` too, the OTLP/JSON
  lines are also written there.
* ``export TRACE --format html [-o OUT]``: a self-contained page;
  ``--format svg [-o OUT] [--size 120x40]``: a picture of the app's screen.
  ``--theme NAME`` picks the Textual theme (default ``textual-dark``).
* ``serve [TRACE | SCRIPT] [--host H] [--port N] [--public]``: the app in a
  browser, through textual-serve.  Loopback only, unless ``--public`` (a
  warning is printed: textual-serve has no authentication).

The lead's ``cli/__init__.py`` calls :func:`add_export_options` on the export
parser and :func:`add_serve_parser` on the sub-command set; ``cmd_export``
hands ``otlp``, ``--to``, ``html`` and ``svg`` here.  Importing this module
costs nothing (no Textual; each command imports what it needs).
"""

from __future__ import annotations

import argparse
import os
import stat
import sys
from typing import Iterable

from guidance_tui import exit_codes, gc_policy
from guidance_tui.exit_codes import CliError

EXPORT_FORMATS = ["jsonl", "otlp", "html", "svg"]


# -- argparse ---------------------------------------------------------------------------
def add_export_options(p: argparse.ArgumentParser) -> None:
    """The export options of the reach formats (the parser already has FILE, --format, -o, --force)."""
    p.add_argument("--to", metavar="URL",
                   help="send the run as OTLP/HTTP protobuf to URL/v1/traces (an OpenTelemetry collector, Phoenix)")
    p.add_argument("--content", action="store_true",
                   help="otlp: include prompt and completion texts (left out by default)")
    p.add_argument("--max-token-events", type=_non_negative_int, default=None, metavar="N",
                   help="otlp: at most N token events per span (default 256; 0: none)")
    p.add_argument("--project", metavar="NAME", help="otlp: the project the spans belong to (Phoenix)")
    p.add_argument("--timeout", type=_positive_float, default=10.0, metavar="SECONDS",
                   help="--to: give up after this long (default 10)")
    p.add_argument("--size", default=None, metavar="COLSxROWS", help="svg: screen size (default 120x40)")
    p.add_argument("--theme", default=None, metavar="NAME", help="html, svg: Textual theme (default textual-dark)")


SERVE_PORT = 8000  # here, not in export.serve: every command builds this parser, and serve imports socket


def add_serve_parser(sub) -> argparse.ArgumentParser:
    """``serve [TRACE | SCRIPT] [--host H] [--port N] [--public]``."""
    p = sub.add_parser("serve", help="open the app in a web browser (textual-serve): a trace, a script, or the runs")
    p.add_argument("target", nargs="?", metavar="TRACE|SCRIPT",
                   help="a trace to replay or a script to run (default: the run browser)")
    p.add_argument("--host", default=None,
                   help="address to listen on (default 127.0.0.1; one that is not loopback needs --public)")
    p.add_argument("--port", type=_port, default=SERVE_PORT, help=f"port (default {SERVE_PORT}; 0: any free one)")
    p.add_argument("--public", action="store_true",
                   help="allow a non-loopback --host (default then 0.0.0.0); there is no authentication")
    p.add_argument("--url", default=None, metavar="URL",
                   help="the address browsers use, when it differs from host:port (a proxy)")
    p.add_argument("--model", metavar="PATH", help="SCRIPT: the model (as for run)")
    p.add_argument("--backend", choices=["llamacpp", "transformers"], default=None, help="SCRIPT: the backend")
    return p


def _non_negative_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more, not {n}")
    return n


def _positive_float(text: str) -> float:
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, not {text!r}") from None
    if not x > 0:
        raise argparse.ArgumentTypeError(f"expected more than 0, not {text}")
    return x


def _port(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, not {text!r}") from None
    if not 0 <= n <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port from 0 to 65535, not {n}")
    return n


# -- shared -------------------------------------------------------------------------------
def _load(args):
    from guidance_tui.cli.inspect_commands import _load as load_trace

    return load_trace(args.file)


def _write(args, chunks: Iterable[bytes]) -> None:
    """Write to ``-o FILE`` (atomically for a regular file, never over the trace or another trace
    without --force) or to stdout."""
    out = getattr(args, "output", None)
    if out and out != "-":
        from guidance_tui.cli.inspect_commands import _check_output

        st = _check_output(args)
        if st is not None and not stat.S_ISREG(st.st_mode):  # /dev/null, a named pipe: write through it
            try:
                with open(out, "wb") as fh:
                    for c in chunks:
                        fh.write(c)
            except BrokenPipeError:
                pass
            except OSError as e:
                raise CliError(f"{out}: cannot write ({e.strerror or e})") from None
            return
        tmp = f"{out}.tmp{os.getpid()}"
        try:
            with open(tmp, "wb") as fh:
                for c in chunks:
                    fh.write(c)
            os.replace(tmp, out)
        except OSError as e:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise CliError(f"{out}: cannot write ({e.strerror or e})") from None
        return
    buf = getattr(sys.stdout, "buffer", None)
    for c in chunks:
        if buf is None:
            sys.stdout.write(c.decode("utf-8"))
        else:
            buf.write(c)
    sys.stdout.flush()


def _check_early(args) -> None:
    """Refuse a bad ``-o`` before any work (the same checks as writing makes)."""
    out = getattr(args, "output", None)
    if out and out != "-":
        from guidance_tui.cli.inspect_commands import _check_output

        _check_output(args)


def _title(args) -> str:
    return os.path.basename(args.file)


# -- export: otlp ---------------------------------------------------------------------------
def export_otlp(args) -> int:
    """``export --format otlp`` (OTLP/JSON lines) and ``export --to URL`` (OTLP/HTTP protobuf)."""
    from guidance_tui.export import otlp
    from guidance_tui.export.runfacts import collect

    to = getattr(args, "to", None)
    fmt = getattr(args, "format", None)
    if to and fmt not in (None, "jsonl", "otlp"):
        raise CliError(f"--to sends OTLP; it does not go with --format {fmt}", exit_codes.USAGE)
    if to:
        try:
            otlp.traces_endpoint(to)
        except ValueError as e:
            raise CliError(f"--to: {e}", exit_codes.USAGE) from None
    _check_early(args)
    tf = _load(args)
    with gc_policy.paused():  # millions of small dicts, none in a cycle
        facts = collect(tf.events)
        cap = getattr(args, "max_token_events", None)
        trace = otlp.build_trace(
            facts, content=bool(getattr(args, "content", False)),
            max_token_events=otlp.DEFAULT_MAX_TOKEN_EVENTS if cap is None else cap,
            project=getattr(args, "project", None), fallback_wall_time=_fallback_wall_time(args.file, facts))
        if to:
            try:
                requests = otlp.send(trace, to, timeout=float(getattr(args, "timeout", None) or 10.0))
            except ImportError:
                raise CliError("--to needs the opentelemetry-proto package "
                               "(pip install opentelemetry-proto)") from None
            except otlp.SendError as e:
                raise CliError(str(e)) from None
            how = f" in {requests} requests" if requests > 1 else ""
            to_stdout = getattr(args, "output", None) == "-"  # the JSON goes there: the note does not
            print(f"sent {len(trace.spans)} spans{how} (trace {trace.trace_id.hex()}) to {otlp.traces_endpoint(to)}",
                  file=sys.stderr if to_stdout else sys.stdout)
            if not getattr(args, "output", None):  # with -o, the same spans go to the file too
                return exit_codes.OK
        _write(args, otlp.json_lines(trace))
    return exit_codes.OK


def _fallback_wall_time(path: str, facts) -> float | None:
    """For a trace without a wall clock: it ended when the file was last written."""
    try:
        mtime = os.stat(path).st_mtime
    except OSError:
        return None
    return mtime - max(0, facts.t_last - facts.root.t_open) / 1e6


# -- export: html, svg ------------------------------------------------------------------------
def export_picture(args) -> int:
    """``export --format html`` (a self-contained page) and ``--format svg`` (the app's screen)."""
    fmt = args.format
    if fmt not in ("html", "svg"):
        raise CliError(f"unknown picture format {fmt!r} (html or svg)", exit_codes.USAGE)
    if getattr(args, "to", None):
        raise CliError(f"--to sends OTLP; it does not go with --format {fmt}", exit_codes.USAGE)
    theme = getattr(args, "theme", None)
    if theme is not None:
        from guidance_tui.export.html import theme_names

        if theme not in theme_names():
            raise CliError(f"unknown theme {theme!r} (one of: {', '.join(theme_names())})", exit_codes.USAGE)
    size = None
    if fmt == "svg":
        from guidance_tui.export.svg import DEFAULT_SIZE, parse_size

        try:
            size = parse_size(args.size) if getattr(args, "size", None) else DEFAULT_SIZE
        except ValueError as e:
            raise CliError(f"--size: {e}", exit_codes.USAGE) from None
    _check_early(args)
    tf = _load(args)
    if fmt == "html":
        from guidance_tui.export.html import DEFAULT_THEME, iter_html

        with gc_policy.paused():
            pieces = iter_html(tf.events, title=_title(args), theme=theme or DEFAULT_THEME)
            _write(args, (piece.encode("utf-8") for piece in pieces))
        return exit_codes.OK
    from guidance_tui.export.svg import render_svg

    page = render_svg(tf.events, title=_title(args), size=size, theme=theme)
    _write(args, [page.encode("utf-8")])
    return exit_codes.OK


# -- serve --------------------------------------------------------------------------------------
def cmd_serve(args) -> int:
    from guidance_tui.export import serve

    try:
        host = serve.check_host(getattr(args, "host", None), bool(getattr(args, "public", False)))
        target = serve.resolve_target(getattr(args, "target", None))
        port = args.port if args.port else serve.free_port(host)
        serve.check_port(host, port)
    except serve.ServeError as e:
        raise CliError(str(e), exit_codes.USAGE if e.usage else exit_codes.ERROR) from None
    extra: list[str] = []
    if target.command == "run":
        if getattr(args, "model", None):
            extra += ["--model", os.path.abspath(args.model) if os.path.exists(args.model) else args.model]
        if getattr(args, "backend", None):
            extra += ["--backend", args.backend]
    if not serve.is_loopback(host):
        print(f"guidance-tui: {serve.public_warning(host, port)}", file=sys.stderr)
    url = getattr(args, "url", None) or serve.public_url_for(host, port)
    print(f"guidance-tui: serving {target.title} on {url} (Ctrl+C stops)", file=sys.stderr)
    sys.stderr.flush()
    try:
        serve.serve(serve.app_command(target, extra), host, port, title=target.title, public_url=url)
    except serve.ServeError as e:
        raise CliError(str(e)) from None
    return exit_codes.OK
