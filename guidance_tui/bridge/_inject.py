"""The bridge's child side: runs a guidance script and streams guidance's trace as JSON lines.

Started by :class:`guidance_tui.bridge.BridgeRun` as ``PY .../_inject.py SCRIPT [ARGS...]`` in the
user's own interpreter PY, which has guidance 0.3.x and none of guidance-tui's packages: this file
imports only the standard library and guidance, and is loaded by path.  It

1. takes the channel: the write end of a pipe whose descriptor number is in
   ``GUIDANCE_TUI_BRIDGE_FD`` (made non-inheritable at once, so the script's own subprocesses never
   hold it);
2. hooks guidance (see below), then runs SCRIPT with ``runpy`` as ``__main__``, with
   ``sys.argv = [SCRIPT, *ARGS]`` and the script's folder first on ``sys.path``, as ``PY SCRIPT``
   would;
3. sends one ``end`` line (done / error with the script's own frames / interrupted) and exits with
   the script's code: 0, ``sys.exit(N)``'s N, 3 when it raised, 130 when interrupted (the codes of
   ``guidance_tui/exit_codes.py``).

The hooks (guidance 0.3.1; every one is guarded, and a failure inside one never reaches the script):

* ``guidance.registry.get_exchange().subscribe(cb, "/trace")`` and ``"/metrics"``: the messages
  guidance's notebook widget receives (``TraceMessage``, ``MetricMessage``,
  ``guidance/visual/_message.py``).  guidance publishes a ``TraceMessage`` from
  ``Model._update_trace_node`` (``guidance/models/_base/_model.py``) only when the model was made
  with ``echo=True``.
* ``Model._update_trace_node`` itself, for models with ``echo=False``: the same node updates,
  delivered here instead of being dropped.  The program's text and captures do not change; guidance
  just computes no probabilities for such a model.
* ``Model.__init__``: which model and engine the script made, and its instrumentation flags.
* ``guidance._ast.Function.__call__``: entering and leaving a stateful ``@guidance`` function (a
  "program" node; guidance's trace does not show them).

``GUIDANCE_TUI_BRIDGE_TAPS=0`` turns the last three off: then only the exchange is read.
``GUIDANCE_TUI_BRIDGE_CAPTURE=1`` sends the script's ``sys.stdout``/``sys.stderr`` writes as ``out``
lines, in order with the trace (``GUIDANCE_TUI_BRIDGE_ECHO=1``: to the real streams as well);
otherwise they go to the inherited streams untouched.

The line schema is documented in ``guidance_tui/bridge/__init__.py``.
"""

import base64
import itertools
import json
import os
import re
import signal
import sys
import threading
import time
import traceback

FD_ENV = "GUIDANCE_TUI_BRIDGE_FD"
TAPS_ENV = "GUIDANCE_TUI_BRIDGE_TAPS"
CAPTURE_ENV = "GUIDANCE_TUI_BRIDGE_CAPTURE"
ECHO_ENV = "GUIDANCE_TUI_BRIDGE_ECHO"
SCHEMA = 1
EXIT_ERROR, EXIT_USAGE, EXIT_SCRIPT_RAISED, EXIT_INTERRUPTED = 1, 2, 3, 130
GRAMMAR_MAX = 20000  # characters of a node's Lark grammar sent with it
_HERE = os.path.dirname(os.path.abspath(__file__))


def _now():
    return time.monotonic_ns() // 1000


def _b64(data):
    return base64.b64encode(bytes(data)).decode("ascii")


def _num(x):
    """A float for JSON: None when unknown (NaN, None, not a number)."""
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return f if f == f and f not in (float("inf"), float("-inf")) else None


def one_line(text):
    text = " ".join(str(text).split())
    return text if len(text) <= 300 else text[:297] + "..."


class Channel:
    """The pipe to guidance-tui: one JSON object per line, written whole, from any thread."""

    def __init__(self, fd):
        self.fd = fd
        self.lock = threading.Lock()
        self.dead = False

    def send(self, obj):
        if self.dead:
            return
        obj.setdefault("ts", _now())
        data = (json.dumps(obj, separators=(",", ":"), allow_nan=False) + "\n").encode("utf-8", "surrogatepass")
        with self.lock:
            try:
                view = memoryview(data)
                while view:
                    n = os.write(self.fd, view)
                    view = view[n:]
            except BrokenPipeError:
                # guidance-tui went away (the app died): stop the script, as a closed control pipe does.
                self.dead = True
                try:
                    os.kill(os.getpid(), signal.SIGINT)
                except OSError:
                    pass
            except OSError:
                self.dead = True


class StreamToChannel:
    """The script's ``sys.stdout`` / ``sys.stderr``: whole lines become ``out`` messages (and,
    with ``echo``, go to the original stream too)."""

    def __init__(self, channel, original, name, echo=False):
        self._channel, self._orig, self._name, self._echo = channel, original, name, echo
        self._buf = ""
        self._lock = threading.Lock()

    def write(self, s):
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        if self._echo:
            try:
                self._orig.write(s)
            except (OSError, ValueError):
                pass
        with self._lock:
            self._buf += s
            if "\n" not in self._buf:
                return len(s)
            *lines, self._buf = self._buf.split("\n")
        for line in lines:
            self._channel.send({"t": "out", "s": self._name, "text": line})
        return len(s)

    def flush(self):
        if self._echo:
            try:
                self._orig.flush()
            except (OSError, ValueError):
                pass
        with self._lock:
            rest, self._buf = self._buf, ""
        if rest:
            self._channel.send({"t": "out", "s": self._name, "text": rest})

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def fileno(self):  # C libraries (llama.cpp) write to the real descriptor
        return self._orig.fileno()

    def isatty(self):
        return False

    def writable(self):
        return True

    def readable(self):
        return False

    @property
    def encoding(self):
        return "utf-8"

    @property
    def errors(self):
        return "strict"

    @property
    def buffer(self):
        return self._orig.buffer

    def __getattr__(self, name):
        return getattr(self._orig, name)


# -- describing guidance's input nodes --------------------------------------------------------
_GENERIC_RULES = {"gen", "select", "capture", "json", "regex", "repeat", "token_limit", "with_temperature",
                  "subgrammar", "tool_gen"}


def _children(node):
    try:
        return tuple(node.children())
    except Exception:  # noqa: BLE001  (an AST node we do not know)
        return ()


def _kind(node):
    """Our node kind for a guidance grammar node: the first part that is not a literal."""
    cls = type(node).__name__
    if cls == "RuleNode":
        value = node.value
        vcls = type(value).__name__
        if vcls == "SelectNode":
            return "select"
        if vcls == "JsonNode":
            return "json"
        if vcls == "RegexNode":
            return "regex" if node.name == "capture" and node.capture else "gen"
        if vcls in ("SubgrammarNode", "LarkNode"):
            return "grammar"
        return _kind(value)
    if cls in ("LiteralNode", "SpecialToken"):
        return "literal"
    if cls == "SelectNode":
        return "select"
    if cls == "RegexNode":
        return "regex"
    if cls == "JsonNode":
        return "json"
    if cls in ("SubgrammarNode", "LarkNode"):
        return "grammar"
    if cls == "ToolCallNode":
        return "tool_call"
    for child in _children(node):
        k = _kind(child)
        if k != "literal":
            return k
    return "literal"


def _walk(node, depth=0):
    yield node
    if depth < 200:
        for child in _children(node):
            yield from _walk(child, depth + 1)


def _preview(text, n=24):
    one = re.sub(r"\s+", " ", text).strip()
    return one if len(one) <= n else one[: n - 1] + "…"


def describe(node):
    """(kind, name, grammar) of the AST node a StatelessGuidanceInput carries."""
    kind = _kind(node)
    names = []
    for n in _walk(node):
        if type(n).__name__ == "RuleNode":
            name = n.capture or (n.name if n.name not in _GENERIC_RULES else None)
            if name and name not in names:
                names.append(name)
    if names:
        name = " + ".join(names)
    elif kind == "literal":
        name = _preview("".join(getattr(n, "value", "") or "" for n in _walk(node)
                                if type(n).__name__ == "LiteralNode"))
    else:
        name = ""
    grammar = ""
    try:
        grammar = node.ll_grammar()
    except Exception:  # noqa: BLE001
        pass
    if len(grammar) > GRAMMAR_MAX:
        grammar = grammar[:GRAMMAR_MAX] + "\n// (cut)"
    return kind, name, grammar


# -- the bridge ----------------------------------------------------------------------------------
class Bridge:
    """Turns guidance's trace updates into lines on the channel (called from guidance's threads)."""

    def __init__(self, channel):
        self.channel = channel
        self.lock = threading.RLock()
        self.sent = set()  # trace ids already sent: parents resolve to one of these
        self.calls = itertools.count(1)
        self.warned = False
        self.trace_handler = None
        self.classes = {}

    def warn_once(self, where):
        if not self.warned:
            self.warned = True
            self.channel.send({"t": "msg", "level": "warning",
                               "text": f"guidance-tui bridge: {where}: {one_line(traceback.format_exc(limit=2))}"})

    # -- trace ids -------------------------------------------------------------------------------
    def resolve(self, gid):
        """``gid`` if it was sent, else its nearest sent ancestor in guidance's trace tree (model
        copies, ``set()`` and a fresh model make nodes guidance never publishes); None: none."""
        hops = 0
        handler = self.trace_handler
        while gid is not None and gid not in self.sent and hops < 10000:
            hops += 1
            node = handler.id_node_map.get(gid) if handler is not None else None
            if node is None or node.parent is None:
                return None
            gid = handler.node_id_map.get(node.parent)
        return gid

    # -- guidance's messages -----------------------------------------------------------------------
    def on_exchange(self, message):
        try:
            name = type(message).__name__
            if name == "TraceMessage":
                self._trace(message.trace_id, message.parent_trace_id, message.node_attr)
            elif name == "MetricMessage":
                value = message.value
                if isinstance(value, (int, float)):
                    self.channel.send({"t": "metric", "name": message.name, "value": _num(value)})
        except Exception:  # noqa: BLE001  (never let the bridge break the script)
            self.warn_once("a trace message")

    def on_update(self, gid, parent, attr):
        """A node update that guidance did not publish (a model with echo=False)."""
        try:
            self._trace(gid, parent, attr)
        except Exception:  # noqa: BLE001
            self.warn_once("a trace update")

    def _trace(self, gid, parent, attr):
        if attr is None:
            return
        with self.lock:
            line = self._line(attr)
            if line is None:
                return
            line["id"] = gid
            line["parent"] = parent if parent in self.sent else self.resolve(parent)
            self.sent.add(gid)
            self.channel.send(line)

    def _line(self, attr):
        cls = type(attr).__name__
        if cls == "TokenOutput":
            tok = attr.token
            top = None
            if attr.top_k:
                top = [[_b64(t.bytes), _num(t.prob), bool(t.masked)] for t in attr.top_k]
            return {"t": "tok", "b": _b64(tok.bytes), "k": _token_kind(attr), "p": _num(tok.prob),
                    "lat": _num(attr.latency_ms), "top": top}
        if cls == "Backtrack":
            return {"t": "bt", "n": int(attr.n_tokens), "b": _b64(attr.bytes)}
        if cls == "CaptureOutput":
            return {"t": "cap", "name": attr.name, "value": attr.value, "lp": _num(attr.log_probs),
                    "append": bool(attr.is_append)}
        if cls == "TextOutput":  # text without a token (remote models)
            return {"t": "text", "b": _b64(str(attr.value).encode("utf-8")), "k": _token_kind(attr),
                    "lat": _num(attr.latency_ms)}
        if cls == "RoleOpenerInput":
            return {"t": "in", "attr": "role_open", "kind": "role", "name": attr.name or "", "grammar": ""}
        if cls == "RoleCloserInput":
            return {"t": "in", "attr": "role_close", "kind": "role", "name": attr.name or "", "grammar": ""}
        if cls == "LiteralInput":
            return {"t": "in", "attr": "literal", "kind": "literal", "name": _preview(attr.value),
                    "grammar": ""}
        if cls == "StatelessGuidanceInput":
            try:
                kind, name, grammar = describe(attr.value)
            except Exception:  # noqa: BLE001
                kind, name, grammar = "grammar", type(attr.value).__name__, ""
            return {"t": "in", "attr": "grammar", "kind": kind, "name": name, "grammar": grammar}
        if cls.endswith("Input"):  # images, audio, ...
            return {"t": "in", "attr": "other", "kind": cls[: -len("Input")].lower(), "name": "", "grammar": ""}
        if cls.endswith("Output"):
            return {"t": "other", "class": cls}
        return None

    # -- the taps ------------------------------------------------------------------------------------
    def on_model(self, model):
        try:
            interp = getattr(model, "_interpreter", None)
            engine = getattr(interp, "engine", None)
            line = {"t": "model", "class": type(model).__name__, "echo": bool(getattr(model, "echo", False)),
                    "engine": type(engine).__name__ if engine is not None else None}
            source = getattr(engine, "model", None) if engine is not None else getattr(interp, "model", None)
            line["model"] = source if isinstance(source, str) else (type(source).__name__ if source else "")
            if engine is not None:
                line.update(probs=bool(getattr(engine, "_enable_token_probabilities", False)),
                            top_k=int(getattr(engine, "_top_k", 0) or 0)
                            if getattr(engine, "_enable_top_k", False) else 0,
                            monitoring=bool(getattr(engine, "_enable_monitoring", False)),
                            backtrack=bool(getattr(engine, "_enable_backtrack", False)),
                            ff_tokens=bool(getattr(engine, "_enable_ff_tokens", False)))
            self.channel.send(line)
        except Exception:  # noqa: BLE001
            self.warn_once("a new model")

    def call_function(self, original, function, model):
        name = getattr(function, "name", "") or ""
        if name in ("__add__", "__radd__"):  # guidance's own composition of functions
            return original(function, model)
        try:
            with self.lock:
                call = next(self.calls)
                self.channel.send({"t": "prog", "call": call, "name": name,
                                   "id": self.resolve(getattr(model, "_id", None))})
        except Exception:  # noqa: BLE001
            self.warn_once("a program function")
            return original(function, model)
        try:
            out = original(function, model)
        except BaseException:
            self.channel.send({"t": "prog_end", "call": call, "id": None, "error": True})
            raise
        try:
            with self.lock:
                self.channel.send({"t": "prog_end", "call": call, "error": False,
                                   "id": self.resolve(getattr(out, "_id", None))})
        except Exception:  # noqa: BLE001
            self.warn_once("a program function")
        return out


def _token_kind(attr):
    if getattr(attr, "is_generated", False):
        return "generated"
    if getattr(attr, "is_force_forwarded", False):
        return "forced"
    if getattr(attr, "is_input", False):
        return "prompt"
    return "forced"  # neither sampled nor the program's: text the engine added


def install(bridge, taps=True):
    """Subscribe to guidance's exchange and, with ``taps``, wrap the few places the trace misses.
    Returns the names of the hooks that are in place."""
    from guidance.registry import get_exchange, get_trace_handler

    bridge.trace_handler = get_trace_handler()
    exchange = get_exchange()
    exchange.subscribe(bridge.on_exchange, r"/trace$")
    exchange.subscribe(bridge.on_exchange, r"/metrics$")
    hooks = ["exchange"]
    if not taps:
        return hooks
    try:
        from guidance.models._base._model import Model

        update = Model._update_trace_node

        def _update_trace_node(self, identifier, parent_id, node_attr=None, echo=False):
            update(self, identifier, parent_id, node_attr, echo)
            if not echo and node_attr is not None:
                bridge.on_update(identifier, parent_id, node_attr)

        Model._update_trace_node = _update_trace_node
        hooks.append("echo")
        init = Model.__init__

        def __init__(self, *args, **kwargs):
            init(self, *args, **kwargs)
            bridge.on_model(self)

        Model.__init__ = __init__
        hooks.append("model")
    except (ImportError, AttributeError):
        pass
    try:
        from guidance._ast import Function

        call = Function.__call__

        def __call__(self, model):
            return bridge.call_function(call, self, model)

        Function.__call__ = __call__
        hooks.append("program")
    except (ImportError, AttributeError):
        pass
    return hooks


# -- running the script ----------------------------------------------------------------------------
def user_frames(exc):
    """The traceback limited to the script's own frames (not runpy, this file, guidance or the
    interpreter's libraries)."""
    prefixes = tuple({os.path.join(p, "") for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, _HERE)})
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if not f.filename.startswith(prefixes) and "runpy" not in f.filename
              and not f.filename.startswith("<frozen")]
    if not frames:
        return ""
    return "".join(["Traceback (the script's frames):\n"] + traceback.format_list(frames))


def run_script(script, args):
    """Run ``script`` as ``__main__``: (status, error, traceback, exit code); never raises."""
    import runpy

    sys.argv = [script, *args]
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as e:
        code = e.code
        if code in (None, 0):
            return "done", "", "", 0
        if isinstance(code, int):
            return "error", f"the script exited with status {code}", "", code
        return "error", one_line(code), "", EXIT_ERROR
    except KeyboardInterrupt:
        return "interrupted", "interrupted", "", EXIT_INTERRUPTED
    except BaseException as e:  # noqa: BLE001  (the script's own failure: recorded, never raised)
        return "error", one_line(f"{type(e).__name__}: {e}"), user_frames(e), EXIT_SCRIPT_RAISED
    return "done", "", "", 0


def _ram_total():
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def _take_channel():
    try:
        fd = int(os.environ.pop(FD_ENV))
        os.set_inheritable(fd, False)
        os.fstat(fd)
    except (KeyError, ValueError, OSError):
        return None
    return fd


def main(argv):
    if not argv:
        print("usage: PY _inject.py SCRIPT [ARGS...] (started by guidance-tui)", file=sys.stderr)
        return EXIT_USAGE
    script, args = argv[0], argv[1:]
    # ``PY _inject.py`` put this folder first on sys.path; ``PY SCRIPT`` would put the script's.
    script_dir = os.path.dirname(os.path.abspath(script))
    if sys.path and os.path.abspath(sys.path[0] or os.curdir) == _HERE:  # not under PYTHONSAFEPATH
        sys.path[0] = script_dir
    fd = _take_channel()
    if fd is None:
        print(f"guidance-tui bridge: no channel ({FD_ENV} is not an open descriptor)", file=sys.stderr)
        return EXIT_USAGE
    channel = Channel(fd)
    taps = os.environ.pop(TAPS_ENV, "1") != "0"
    capture = os.environ.pop(CAPTURE_ENV, "0") == "1"
    echo = os.environ.pop(ECHO_ENV, "0") == "1"
    try:
        import guidance
    except BaseException as e:  # noqa: BLE001
        channel.send({"t": "end", "status": "error", "error": one_line(f"cannot import guidance: {e}"),
                      "traceback": "", "code": EXIT_ERROR})
        return EXIT_ERROR
    bridge = Bridge(channel)
    try:
        hooks = install(bridge, taps)
    except Exception as e:  # noqa: BLE001
        hooks = []
        channel.send({"t": "msg", "level": "warning",
                      "text": one_line(f"guidance-tui bridge: cannot subscribe to guidance's trace: {e}")})
    import importlib.util

    channel.send({"t": "hello", "v": SCHEMA, "guidance": getattr(guidance, "__version__", ""),
                  "python": sys.version.split()[0], "executable": sys.executable, "pid": os.getpid(),
                  "hooks": hooks, "ram_total": _ram_total(),
                  "gpustat": importlib.util.find_spec("gpustat") is not None})
    if capture:
        sys.stdout = StreamToChannel(channel, sys.stdout, "stdout", echo)
        sys.stderr = StreamToChannel(channel, sys.stderr, "stderr", echo)
    status, error, frames, code = run_script(script, args)
    try:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
    except Exception:  # noqa: BLE001
        pass
    channel.send({"t": "end", "status": status, "error": error, "traceback": frames, "code": code})
    return code


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:  # landed outside the script (start-up, the last message)
        sys.exit(EXIT_INTERRUPTED)
