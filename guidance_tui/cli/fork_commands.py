"""`guidance-tui fork TRACE --at K --with ALT [-o OUT]`: regenerate one grammar node from token K.

Loads the run's model in this process (headless), writes the forked run (the original events up
to K, then the new branch) and prints the node's new text.  Never imports Textual.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from guidance_tui import exit_codes
from guidance_tui.exit_codes import CliError


def add_fork_parser(sub) -> None:
    p = sub.add_parser("fork", help="regenerate one grammar node of a trace from token K with another token there")
    p.add_argument("trace", metavar="TRACE")
    p.add_argument("--at", dest="at", metavar="K", required=True,
                   help='the token, 1-based among the trace\'s tokens (the app\'s "Token K of N")')
    p.add_argument("--with", dest="alt", metavar="ALT", required=True,
                   help="id:N (a token id), N (a rank in the after-mask list) or a token's text")
    p.add_argument("-o", "--output", metavar="OUT", help="the forked run's trace (default: TRACE-fork-K.gtt)")
    p.add_argument("--force", action="store_true", help="replace OUT even when it is a trace file")


def default_output(trace: str, k: int) -> Path:
    p = Path(trace)
    stem = p.name[:-4] if p.name.endswith(".gtt") else p.name
    return p.with_name(f"{stem}-fork-{k}.gtt")


def cmd_fork(args) -> int:
    from engines.errors import EngineError, ModelLoadError
    from engines import fork
    from guidance_tui.cli.inspect_commands import _load
    from tracing import TraceStore, write_trace

    try:
        k = int(args.at)
    except ValueError:
        raise CliError(f"--at must be a token number (1-based), not {args.at!r}", exit_codes.USAGE) from None
    out = Path(args.output) if args.output else default_output(args.trace, k)
    if out.exists() and os.path.realpath(out) == os.path.realpath(args.trace):
        raise CliError(f"-o {out} is the trace being forked: write the fork elsewhere", exit_codes.USAGE)
    if out.exists() and not args.force:
        raise CliError(f"{out} exists: choose another -o, or --force to replace it", exit_codes.USAGE)
    store = TraceStore()
    tf = _load(args.trace)
    store.extend_recorded(tf.events)
    try:
        plan = fork.plan(store, k)
        alt_spec = args.alt
        tid = None
        if fork.parse_alt(alt_spec)[0] != "text":  # ids and ranks are checked before the model loads
            tid = fork.resolve_alt(plan, alt_spec)
        t0 = time.perf_counter()
        backend = fork.load_backend(plan.model, plan.backend)
        backend.ll_tokenizer()  # part of loading: built once per model
        load_s = time.perf_counter() - t0
        if tid is None:
            tid = fork.resolve_alt(plan, alt_spec, lambda b: backend.tokenize(b, add_bos=False))
        t1 = time.perf_counter()
        result = fork.run(backend, plan, tid)
        gen_s = time.perf_counter() - t1
    except fork.ForkError as e:
        raise CliError(str(e), exit_codes.USAGE if e.usage else exit_codes.ENGINE_REFUSED) from None
    except ModelLoadError as e:
        raise CliError(str(e), exit_codes.ENGINE_REFUSED) from None
    except EngineError as e:
        raise CliError(str(e), exit_codes.ENGINE_REFUSED) from None
    events = fork.forked_run(store, plan, result.events)
    try:
        write_trace(out, TraceStore(events).events())
    except OSError as e:
        raise CliError(f"cannot write {out}: {e.strerror or e}") from None
    sys.stdout.write(result.node_text.decode("utf-8", "replace") + "\n")
    caps = ", ".join(f"{n}={v!r}" for n, v, _ in result.captures)
    print(f"guidance-tui: forked {plan.node.kind} node {plan.node.node_id} at token {k} with "
          f"{backend.token_bytes(tid).decode('utf-8', 'replace')!r} (id {tid}); model loaded in {load_s:.1f} s, "
          f"node regenerated in {gen_s:.2f} s{'; ' + caps if caps else ''}; the Python after the node was not "
          f"run again; wrote {out}", file=sys.stderr)
    return exit_codes.OK
