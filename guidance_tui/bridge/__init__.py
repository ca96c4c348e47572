"""A bridge for the real guidance: run a guidance 0.3.x script in the user's own interpreter.

``guidance-tui run --python PY SCRIPT`` and ``record --python PY SCRIPT`` start
``PY guidance_tui/bridge/_inject.py SCRIPT ARGS...``.  That file needs only the standard library
and guidance; it subscribes to guidance's trace and metrics, runs the script as ``__main__``, and
sends one JSON object per line over a pipe inherited by the child (its descriptor number in
``GUIDANCE_TUI_BRIDGE_FD``; the script's stdout and stderr stay its own).  :class:`BridgeRun`
(this process) converts the lines into our events, fills a :class:`~tracing.TraceStore` and
writes the trace file, so the app, ``record``, ``attach`` and ``replay`` work as with our engine.

What guidance 0.3.1 exposes, and what the bridge hooks
-------------------------------------------------------
* ``guidance.registry.get_exchange()`` (``guidance/registry/_registry.py``) is a ``TopicExchange``
  (``guidance/visual/_exchange.py``): ``subscribe(callback, topic_pattern)``.  Topics are in
  ``guidance/_topics.py``: ``"/trace"`` carries ``TraceMessage(trace_id, parent_trace_id,
  node_attr)``, ``"/metrics"`` ``MetricMessage(name, value)`` (``guidance/visual/_message.py``).
  In a terminal guidance's ``AutoRenderer`` picks a ``DoNothingRenderer`` (``_renderer.py``): there
  is no stdout or JSON renderer and no setting that chooses one; subscribing is the way in.
* ``Model._update_trace_node`` (``guidance/models/_base/_model.py`` l. 81-98) publishes a
  ``TraceMessage`` only when the model has ``echo=True``.  For ``echo=False`` the bridge wraps that
  method and takes the same updates (the program's text and captures are unchanged).
* Node attributes (``guidance/trace/_trace.py``): inputs ``LiteralInput(value)``,
  ``StatelessGuidanceInput(value=<AST node>)`` (the value is excluded from guidance's JSON: the
  bridge reads the AST node in-process for the kind, the capture names and ``ll_grammar()``),
  ``RoleOpenerInput(name)``, ``RoleCloserInput(name)``, ``ImageInput``...; outputs
  ``TokenOutput(value, token=Token(token, bytes, prob, masked), top_k=[Token...], is_input,
  is_generated, is_force_forwarded, latency_ms)``, ``TextOutput``, ``Backtrack(n_tokens, bytes)``,
  ``CaptureOutput(name, value, is_append, log_probs)`` (``value=None``: a list capture reset).
  They are made in ``guidance/models/_engine/_interpreter.py`` (``EngineInterpreter.grammar``) from
  the engine's ``GenToken``s (``guidance/_schema.py``), which do have ``token_id``: the trace drops it.
* Probabilities (``guidance/models/_engine/_engine.py``): a generated token's ``prob`` is the
  softmax of the logits *before* the grammar mask (``get_next_token_with_top_k``), and its top-k
  are unmasked probabilities with ``masked`` = the grammar ruled it out; a forced or prompt token's
  ``prob`` is the model's probability of it, its top-k marks every other token masked.  All of it
  only with ``enable_token_probabilities`` / ``enable_top_k``, which ``models.LlamaCpp`` and
  ``models.Transformers`` set from ``echo`` (``_llama_cpp.py`` l. 259-260, ``_transformers.py`` l. 616-617): **pass ``echo=True``**
  for probabilities and top-k (``top_k=K``, default 5, sets how many; passing the two flags as
  well is a TypeError).  ``echo=True`` prints nothing in a terminal.  Otherwise ``prob`` is NaN.
* Metrics (``guidance/metrics/_metrics.py``): with ``enable_monitoring=True`` (the default) a
  ``PeriodicMetricsGenerator`` publishes ``cpu`` (fraction of all cores), ``ram`` (GiB used),
  ``gpu`` (max utilisation, fraction) and ``vram`` (MiB used; both 0 without ``gpustat``) every
  0.5 s; ``emit_usage`` publishes ``token reduction``, ``consumed`` and ``avg latency`` after each
  engine call (not converted: no event of ours holds them).
* ``guidance._ast.Function.__call__``: a stateful ``@guidance`` function runs there; guidance's
  trace does not show it, so the bridge wraps it (a ``program`` node).  ``Model.__init__``: which
  model and engine flags the script chose.  ``GUIDANCE_TUI_BRIDGE_TAPS=0`` turns these wraps (and
  the ``echo=False`` one) off: then only the exchange is read.

The lines (schema 1), child to us; every line has ``t`` (its type) and ``ts`` (µs, monotonic clock)
------------------------------------------------------------------------------------------------------
=========== ==========================================================================================
``hello``   ``v`` (1), ``guidance`` (version), ``python``, ``executable``, ``pid``, ``hooks`` (list),
            ``ram_total`` (bytes), ``gpustat`` (bool: can guidance see GPUs)
``model``   ``class``, ``model`` (a path or name), ``engine`` (class or null), ``echo``, ``probs``,
            ``top_k`` (0: off), ``monitoring``, ``backtrack``, ``ff_tokens``
``in``      an input node: ``id``, ``parent`` (guidance trace ids; ``parent`` is the nearest
            ancestor already sent, null for a fresh model), ``attr`` (``literal``, ``grammar``,
            ``role_open``, ``role_close``, ``other``), ``kind`` (``literal``, ``gen``, ``select``,
            ``regex``, ``json``, ``grammar``, ``tool_call``, ``role``...), ``name``, ``grammar`` (Lark)
``tok``     ``id``, ``parent``, ``b`` (bytes, base64), ``k`` (``prompt`` / ``generated`` /
            ``forced``), ``p`` (probability or null), ``lat`` (ms or null), ``top``
            (``[[bytes base64, p or null, masked], ...]`` or null)
``text``    text without a token (remote models): ``id``, ``parent``, ``b``, ``k``, ``lat``
``bt``      ``id``, ``parent``, ``n`` (tokens), ``b`` (the bytes taken back)
``cap``     ``id``, ``parent``, ``name``, ``value`` (null: a reset), ``lp`` (log-probability or
            null), ``append``
``other``   an output we do not convert (images...): ``id``, ``parent``, ``class``
``prog``    a stateful function starts: ``call`` (its number), ``name``, ``id`` (its model's state)
``prog_end``  ``call``, ``id`` (the model it returned; null when it raised), ``error``
``metric``  ``name`` (``cpu``, ``ram``, ``gpu``, ``vram``, ...), ``value`` (number or null)
``out``     a line the script wrote: ``s`` (``stdout`` / ``stderr``), ``text``
``msg``     a bridge notice: ``level``, ``text``
``end``     ``status`` (``done`` / ``error`` / ``interrupted``), ``error`` (one line),
            ``traceback`` (the script's own frames), ``code`` (its exit code)
=========== ==========================================================================================

The mapping to our events (:mod:`~guidance_tui.bridge.convert`)
-----------------------------------------------------------------
* ``RunStart``: the script, argv, backend ``guidance``; ``info``: ``python`` (version and path),
  ``guidance`` (version), ``pid``, ``cwd``.  ``model`` stays empty (the script picks it later);
  a ``Message`` names it when the script makes it, and warns when its probabilities are off.
* Each input is a ``NodeOpen``/``NodeClose``: literal, gen, select, regex, json (kind from the AST
  node; name: the capture names, or the literal's start; ``grammar``: its Lark text).  Role blocks
  are ``role`` containers (opener and closer tokens in them), stateful ``@guidance`` functions
  ``program`` containers.  A reused model is a branch (``base_id``), as with our engine.
* ``TokenOutput`` is a ``Token``: kind prompt (``is_input``) / generated / forced
  (``is_force_forwarded``); guidance's ``prob`` goes to ``prob_raw`` (it is before the mask);
  ``prob`` is NaN for generated tokens (the probability after the mask is unknown) and 1.0 for
  forced ones (the grammar left no rival; ``allowed`` 1); ``top`` from ``top_k`` with the masked
  flags; ``latency_us`` from ``latency_ms``.
* ``Backtrack``: ``n_tokens`` and bytes at the end of the text; reason ``healing`` when it comes
  before a node's first token (guidance backtracks only to heal a prompt then), else unknown ("").
* ``Capture``: name, value, ``append``; ``log_prob`` is guidance's (NaN in 0.3.1).  Resets
  (``value=None``) are dropped.
* ``Metric``: ``cpu`` × 100, ``ram`` GiB → bytes, ``ram_total`` from the child's machine, a GPU
  sample (``index`` 0: guidance reports the busiest GPU) only when guidance saw GPU memory in use.
* ``RunEnd``: done; error with the exception's one line and the script's own frames; interrupted
  (Ctrl-C, ``q``, ``cancel()``).  Token counts from the converted tokens.

What stays unknown (never shown as zero)
----------------------------------------
Token ids (``id`` -1, alternatives too), mask time (``mask_us`` -1), the allowed-set size
(``allowed`` -1) for generated tokens, the probability after the mask (``prob`` NaN), every
probability without ``echo=True`` (NaN, no top-k), backtrack reasons other than healing, stop
reasons, GPU total memory and power (0 and NaN: guidance does not report them), and the process's
own RSS (0).
"""

from __future__ import annotations

from guidance_tui.bridge.bridge_run import INJECT, BridgeRun
from guidance_tui.bridge.convert import Converter

__all__ = ["INJECT", "BridgeRun", "Converter", "make_bridge_run"]


def make_bridge_run(script, argv, args, *, app: bool, echo: bool = False) -> BridgeRun:
    """A BridgeRun from the command line (``--python``, ``--record`` / ``-o``, ``--force``);
    one-line errors (CliError) as ``headless.make_run`` gives them.

    ``app``: for the inspector (the child's own output comes back through ``take_output``, its
    stdin is /dev/null); else headless (``record``, the plain transcript: inherited streams and
    stdin; ``echo`` also prints the script's lines, for ``record -q``)."""
    from guidance_tui import exit_codes
    from guidance_tui.exit_codes import CliError
    from guidance_tui.run.runner import RunnerError

    record = getattr(args, "output", None) or getattr(args, "record", None)
    try:
        return BridgeRun(str(script), list(argv or ()), python=args.python, record=record,
                         echo=echo and not app, pipe_output=app, keep_stdin=not app,
                         force=bool(getattr(args, "force", False)))
    except RunnerError as e:
        raise CliError(str(e), getattr(e, "code", exit_codes.USAGE)) from None
    except OSError as e:
        raise CliError(str(e)) from None


def refuse_engine_options(args) -> None:
    """``--model``/``--backend`` choose our engine's model: with ``--python`` the script picks its own."""
    from guidance_tui import exit_codes
    from guidance_tui.exit_codes import CliError

    if getattr(args, "model", None) or getattr(args, "backend", None):
        raise CliError("--model and --backend choose guidance-tui's engine; with --python the script picks its own "
                       "model", exit_codes.USAGE)
