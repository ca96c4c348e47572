"""The `guidance-tui` command line.

Sub-commands live in their own modules and are imported only when used, so
`record`, `info` and `export` never import Textual.  Errors the user can fix
come out as one line on stderr and a non-zero exit code.
"""

from __future__ import annotations

import argparse
import atexit
import errno
import gc
import os
import sys
import threading

from guidance_tui import exit_codes
from guidance_tui.exit_codes import CliError


def _add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", metavar="PATH",
                   help="GGUF file or Hugging Face model directory (default: the embedded Gemma 3 270M)")
    p.add_argument("--backend", choices=["llamacpp", "transformers", "remote"], default=None,
                   help="engine backend (default: llamacpp for GGUF files, transformers for directories; "
                        "remote: an OpenAI-compatible server at --url)")
    p.add_argument("--url", metavar="URL", help="the server for --backend remote (vLLM, SGLang, llama-server, "
                                                 "llama-cpp-python's server); --model then names its tokenizer")
    p.add_argument("--model-name", metavar="NAME", help="the model the remote server should use (default: its first)")


def _add_python_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--python", metavar="PY",
                   help="run the script in PY with the real guidance 0.3.x, recorded through guidance-tui's bridge")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="guidance-tui",
                                     description="Terminal inspector for grammar-constrained LLM generation.")
    from guidance_tui import __version__

    parser.add_argument("--version", action="version", version=f"guidance-tui {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("run", help="run a prompt script under the inspector (plain transcript when not a terminal)")
    p.add_argument("script")
    p.add_argument("args", nargs=argparse.REMAINDER, help="arguments passed to the script")
    _add_model_options(p)
    p.add_argument("--record", metavar="FILE", help="trace file to write (default: in the user data directory)")
    p.add_argument("--plain", action="store_true", help="print a plain transcript instead of opening the app")
    _add_python_option(p)
    p.add_argument("--force", action="store_true", help="overwrite an existing FILE that is not a trace")

    p = sub.add_parser("replay", help="scrub through a recorded trace, no model needed (default: the newest run)")
    p.add_argument("file", nargs="?")

    p = sub.add_parser("runs", help="browse the recorded runs, live ones first (a table when not a terminal)")
    p.add_argument("filter", nargs="*", help="only runs whose row or path contains these words")
    p.add_argument("--plain", action="store_true", help="print the table instead of opening the browser")

    p = sub.add_parser("attach", help="join a run another process is recording: what it wrote so far, then live")
    p.add_argument("target", nargs="?", metavar="PID|PATH",
                   help="the recording process or its trace file (default: the newest live run)")

    p = sub.add_parser("demo", help="run a bundled example on the embedded default model")
    p.add_argument("name", nargs="?", default="arithmetic", help="example name (default: arithmetic)")
    _add_model_options(p)
    p.add_argument("--record", metavar="FILE")
    p.add_argument("--plain", action="store_true")
    p.add_argument("--force", action="store_true", help="overwrite an existing FILE that is not a trace")

    p = sub.add_parser("record", help="run a prompt script headless and write its trace file")
    p.add_argument("script")
    p.add_argument("args", nargs=argparse.REMAINDER)
    p.add_argument("-o", "--output", metavar="FILE", help="trace file (default: in the user data directory)")
    _add_model_options(p)
    p.add_argument("-q", "--quiet", action="store_true", help="do not echo the transcript")
    _add_python_option(p)
    p.add_argument("--force", action="store_true", help="overwrite an existing FILE that is not a trace")

    p = sub.add_parser("info", help="summarise a trace file")
    p.add_argument("file")

    from guidance_tui.cli import reach_commands

    p = sub.add_parser("export", help="convert a trace file: jsonl, OTLP (to a file, or --to an endpoint), html, svg")
    p.add_argument("file")
    p.add_argument("--format", choices=reach_commands.EXPORT_FORMATS, default="jsonl")
    p.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
    p.add_argument("--force", action="store_true", help="replace FILE even when it is a trace file")
    reach_commands.add_export_options(p)

    reach_commands.add_serve_parser(sub)

    from guidance_tui.cli import compare_commands

    compare_commands.add_compare_parser(sub)

    from guidance_tui.cli import fork_commands

    fork_commands.add_fork_parser(sub)

    p = sub.add_parser("model", help="assemble the embedded default model into the cache and print its path")
    p.add_argument("--quiet", action="store_true")
    return parser


_VALUE_OPTIONS = {"--model": "model", "--backend": "backend", "--url": "url", "--model-name": "model_name", "--record": "record", "-o": "output",
                  "--output": "output", "--python": "python"}
_FLAG_OPTIONS = {"--plain": "plain", "-q": "quiet", "--quiet": "quiet", "--force": "force"}


def take_own_options(args) -> None:
    """Pull our options out of the script's arguments.

    ``run SCRIPT ARGS...`` hands everything after the script to the script
    (argparse REMAINDER), so ``run demo.py --record t.gtt`` would give
    ``--record`` to the script.  Options we know are taken back until a ``--``;
    after ``--`` everything belongs to the script.
    """
    rest = list(getattr(args, "args", None) or ())
    out: list[str] = []
    i = 0
    while i < len(rest):
        a = rest[i]
        if a == "--":
            out.extend(rest[i + 1:])
            break
        name, eq, value = a.partition("=")
        if name in _VALUE_OPTIONS and hasattr(args, _VALUE_OPTIONS[name]):
            if not eq:
                if i + 1 >= len(rest):
                    raise CliError(f"{name} needs a value")
                value = rest[i + 1]
                i += 1
            if name == "--backend" and value not in ("llamacpp", "transformers", "remote"):
                raise CliError(f"--backend must be llamacpp, transformers or remote, not {value!r}")
            setattr(args, _VALUE_OPTIONS[name], value)
        elif a in _FLAG_OPTIONS and hasattr(args, _FLAG_OPTIONS[a]):
            setattr(args, _FLAG_OPTIONS[a], True)
        else:
            out.append(a)
        i += 1
    args.args = out



def _check_remote(args) -> None:
    """``--url`` implies ``--backend remote``, which needs a URL."""
    if getattr(args, "url", None) and getattr(args, "backend", None) in (None, "remote"):
        args.backend = "remote"
    elif getattr(args, "url", None):
        raise CliError(f"--url is for --backend remote, not --backend {args.backend}")
    if getattr(args, "backend", None) == "remote" and not getattr(args, "url", None):
        raise CliError("--backend remote needs --url URL (the OpenAI-compatible server)")
    if getattr(args, "model_name", None) and getattr(args, "backend", None) != "remote":
        raise CliError("--model-name is for --backend remote (with --url)")


def main(argv: list[str] | None = None) -> int:
    if argv is None:  # the real command line (tests pass argv): this process is ours
        _quiet_blas_threads()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command is None:  # the run browser
            args.command, args.plain, args.filter = "runs", False, []
        if hasattr(args, "args"):
            take_own_options(args)
        _check_remote(args)
        if args.command in ("runs", "attach"):
            from guidance_tui.cli import runs_commands as mod
        elif args.command in ("info", "export"):
            from guidance_tui.cli import inspect_commands as mod
        elif args.command == "serve":
            from guidance_tui.cli import reach_commands as mod
        elif args.command == "compare":
            from guidance_tui.cli import compare_commands as mod
        elif args.command == "fork":
            from guidance_tui.cli import fork_commands as mod
        elif args.command in ("record", "model"):
            from guidance_tui.cli import record_commands as mod
        else:
            from guidance_tui.cli import app_commands as mod
        code = getattr(mod, "cmd_" + args.command)(args)
        _flush_stdout()  # a full disk or a closed pipe shows here, not in Python's own flush at exit
        if argv is None and args.command == "record":
            _exit_now(code)
        return code
    except CliError as e:
        print(f"guidance-tui: {e}", file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        print("guidance-tui: interrupted", file=sys.stderr)
        return exit_codes.INTERRUPTED
    except BrokenPipeError:  # `... | head`: stop quietly
        _silence_stdout()
        return exit_codes.OK
    except OSError as e:  # writing the output failed (/dev/full, a full disk): one line, never a traceback
        print(f"guidance-tui: {_os_error_line(e)}", file=sys.stderr)
        _silence_stdout()
        return exit_codes.ERROR


def _quiet_blas_threads() -> None:
    """OpenBLAS (numpy's, imported with the engines) starts a worker thread per core that busy-waits
    ~0.1 s for work that a recording never gives it.  On a small machine that spin takes the core the
    start-up needs: ``import numpy`` took 0.097 s instead of 0.047 s (2 vCPUs).  With a short spin the
    workers sleep at once; BLAS calls still use every thread.  A value the user set wins."""
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")  # 2**4 cycles, OpenBLAS's minimum


def _exit_now(code: int) -> None:
    """End ``record`` without the interpreter's teardown: freeing the model (llama.cpp's vocabulary,
    the mapped weights), the llguidance tokenizer and every module took ~0.1 s of a one-token run's
    ~1.4 s, for memory the system takes back at once.  The trace is closed by now.  What Python's
    own exit does for the script, in the same order, still happens: ``threading._shutdown`` (what
    Py_Finalize calls: thread pools are told to stop, non-daemon threads are waited for), the atexit
    handlers, a collection (finalizers of what is unreachable), both streams flushed.  Where that
    function is missing (another Python), the usual exit."""
    shutdown = getattr(threading, "_shutdown", None)
    if shutdown is None:
        return
    try:
        shutdown()
        atexit._run_exitfuncs()
        gc.collect()
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
    except BaseException:  # noqa: BLE001 - anything unusual: let Python exit the usual way
        return
    os._exit(code if 0 <= code < 256 else exit_codes.ERROR)


_OUTPUT_ERRNOS = {errno.ENOSPC, errno.EIO, errno.EDQUOT, errno.EFBIG, errno.EBADF, errno.ENXIO, errno.EROFS}


def _os_error_line(e: OSError) -> str:
    reason = e.strerror or str(e) or type(e).__name__
    if e.filename:
        return f"{e.filename}: {reason}"
    if e.errno in _OUTPUT_ERRNOS:
        return f"cannot write the output ({reason})"
    return reason


def _flush_stdout() -> None:
    try:
        sys.stdout.flush()
    except (AttributeError, ValueError):  # no stdout, or a closed one
        pass


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so what is still buffered for it cannot fail again when
    Python flushes it at exit (that would print a traceback and exit 120)."""
    if sys.stdout is not sys.__stdout__:  # captured (a test): nothing to protect
        return
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
        os.close(null)
    except (OSError, ValueError, AttributeError):
        pass
