"""A recorded run as OpenTelemetry spans: OTLP/JSON lines, or OTLP/HTTP protobuf to a collector.

The spans
---------
One trace per run.  Its root span is the run (``run SCRIPT``); under it, a span
per program node (program function, role, gen, select, regex, json, tool call),
nested as in the inspector's tree.  Text-only nodes (``literal``) are not spans:
their tokens count in their parent's figures, and with ``content`` their text
is part of the next completion's input.  The tree's ``branch`` pseudo-nodes are
not spans either (they did no work): the nodes in a branch (a reused base
model) stay under the branch's structural parent, with ``guidance_tui.branch``
(the branch's label, "branch from ...") and ``guidance_tui.branch_base_id``,
and a span link to the span whose state the branch continued (the base node's,
or the span holding it when the base is a text node; none for the empty model).

Attributes follow the OpenTelemetry GenAI semantic conventions:

* completion spans (gen, select, regex, json): ``gen_ai.operation.name``
  (``text_completion``), ``gen_ai.provider.name`` (the backend),
  ``gen_ai.request.model``, ``gen_ai.request.temperature`` and
  ``gen_ai.request.max_tokens`` when the node's grammar states them,
  ``gen_ai.usage.input_tokens`` (the tokens of text the node continued from),
  ``gen_ai.usage.output_tokens`` (generated and forced tokens), and
  ``gen_ai.response.finish_reasons`` (``stop``, ``length``, ``tool_calls``; the
  engine's own word is ``guidance_tui.node.stop_reason``);
* tool calls: ``gen_ai.operation.name`` ``execute_tool``, ``gen_ai.tool.name``;
* the run: provider, model and the run's token usage.

``openinference.span.kind`` (CHAIN for the run, programs and roles) is set too,
so that Phoenix, which reads OpenInference, does not take a container for an LLM
call.  Our own figures are under ``guidance_tui.*``: token counts by kind,
backtracks, mean and lowest probability (after the mask; ``prob_raw``: before),
mask time, latency, allowed-set sizes, captures.  Each token becomes a span
event (``guidance_tui.token``: id, kind, probabilities, top-k ids and
probabilities, latency, mask time, allowed-set size), at most
``max_token_events`` per span; the span's ``droppedEventsCount`` says how many
were left out.  Backtracks and captures are events too.

Text (the prompt, the completion, token and alternative texts, capture values,
grammars, the script's argv and output) goes in only with ``content``: as
``gen_ai.input.messages`` / ``gen_ai.output.messages`` (JSON, the conventions'
message shape) on completions, and as event attributes.

Ids are derived from the run (a hash of its RunStart), so two exports of one
trace agree.  Times are the run's wall clock (RunStart.wall_time) plus each
event's offset; a trace without one starts at ``fallback_wall_time``.  The run's
status becomes the root's: done is OK, error and interrupted are ERROR with the
message (an ``exception`` event carries the type, message and traceback); nodes
left open by a failed run are ERROR too.

This module never imports Textual.  The protobuf classes (package
``opentelemetry-proto``) are imported only to send.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

import msgspec

from tracing import Token

from guidance_tui.export.runfacts import KIND_NAMES, NodeFacts, RunFacts, Stats

DEFAULT_MAX_TOKEN_EVENTS = 256
CONTENT_LIMIT = 16_384  # characters of one text attribute; longer texts keep their end ("…" first)
SPANS_PER_LINE = 512  # spans in one TracesData line
REQUEST_BYTES = 4 << 20  # about this much protobuf per OTLP/HTTP request at most
SCOPE_NAME = "guidance_tui.export.otlp"

SPAN_KIND_INTERNAL, SPAN_KIND_CLIENT = 1, 3
STATUS_UNSET, STATUS_OK, STATUS_ERROR = 0, 1, 2

FINISH_REASONS = {"eos": "stop", "stop": "stop", "grammar": "stop", "max_tokens": "length", "tool": "tool_calls"}
# Backends that call a model over the network: their completion spans are CLIENT spans.
REMOTE_BACKENDS = ("openai", "remote", "http", "server", "vllm", "sglang")

Attr = tuple[str, Any]


@dataclass
class SpanEvent:
    time_ns: int
    name: str
    attributes: list[Attr] = field(default_factory=list)


@dataclass
class SpanLink:
    trace_id: bytes
    span_id: bytes
    attributes: list[Attr] = field(default_factory=list)


@dataclass
class Span:
    span_id: bytes
    parent_span_id: bytes  # b"": the root
    name: str
    kind: int
    start_ns: int
    end_ns: int
    attributes: list[Attr] = field(default_factory=list)
    events: list[SpanEvent] = field(default_factory=list)
    dropped_events: int = 0
    links: list[SpanLink] = field(default_factory=list)
    status_code: int = STATUS_UNSET
    status_message: str = ""
    node_id: int = 0


@dataclass
class Trace:
    trace_id: bytes
    resource: list[Attr]
    scope_version: str
    spans: list[Span]


# -- ids and times -------------------------------------------------------------
def run_key(facts: RunFacts) -> bytes:
    """Bytes that identify the run: its RunStart (or, without one, its first events), encoded."""
    enc = msgspec.msgpack.Encoder()
    if facts.start is not None:
        return b"run_start\0" + enc.encode(facts.start)
    return b"events\0" + b"".join(enc.encode(ev) for ev in facts.events[:64])


def trace_id_of(facts: RunFacts) -> bytes:
    tid = hashlib.sha256(b"guidance-tui trace\0" + run_key(facts)).digest()[:16]
    return tid if any(tid) else b"\0" * 15 + b"\1"


def span_id_of(trace_id: bytes, node_id: int) -> bytes:
    sid = hashlib.sha256(trace_id + b"span\0" + str(node_id).encode()).digest()[:8]
    return sid if any(sid) else b"\0" * 7 + b"\1"


class _Clock:
    """Unix nanoseconds for a t_us of the run."""

    def __init__(self, facts: RunFacts, fallback_wall_time: float | None) -> None:
        wall = facts.start.wall_time if facts.start is not None else 0.0
        if not wall or not math.isfinite(wall):
            wall = fallback_wall_time or 0.0
        t0 = facts.root.t_open
        self.base_ns = int(round(wall * 1e9)) - t0 * 1000

    def __call__(self, t_us: int) -> int:
        return max(0, self.base_ns + max(0, t_us) * 1000)


# -- attribute helpers -----------------------------------------------------------
def _put(attrs: list[Attr], key: str, value) -> None:
    """Append ``key``: ``value`` unless the value is unknown (None, NaN, an empty list)."""
    if value is None:
        return
    if isinstance(value, float) and not math.isfinite(value):
        return
    if isinstance(value, (list, tuple)):
        if not value:
            return
        value = list(value)
    attrs.append((key, value))


def _clip(text: str, limit: int = CONTENT_LIMIT) -> str:
    return text if len(text) <= limit else "…" + text[-(limit - 1):]


def _text(data: bytes) -> str:
    return bytes(data).decode("utf-8", "replace")


def model_name(model: str) -> str:
    """``gemma-3-270m-q4_k_m.gguf (embedded default)`` → ``gemma-3-270m-q4_k_m.gguf``; a path → its file name."""
    m = model.strip()
    if m.endswith(")") and " (" in m:
        m = m[: m.rindex(" (")]
    return os.path.basename(m.rstrip("/")) or m


def _stats_attrs(attrs: list[Attr], s: Stats) -> None:
    _put(attrs, "guidance_tui.tokens.prompt", s.prompt)
    _put(attrs, "guidance_tui.tokens.generated", s.generated)
    _put(attrs, "guidance_tui.tokens.forced", s.forced)
    _put(attrs, "guidance_tui.tokens.backtracked", s.backtracked_tokens)
    _put(attrs, "guidance_tui.backtrack_count", s.backtracks)
    _put(attrs, "guidance_tui.backtrack_reasons", sorted(s.backtrack_reasons))
    _put(attrs, "guidance_tui.prob.mean", s.prob_mean)
    _put(attrs, "guidance_tui.prob.min", s.prob_lowest)
    _put(attrs, "guidance_tui.prob_raw.mean", s.prob_raw_mean)
    if s.mask_n:
        _put(attrs, "guidance_tui.mask_us.total", s.mask_sum)
        _put(attrs, "guidance_tui.mask_us.mean", s.mask_mean_us)
        _put(attrs, "guidance_tui.mask_us.max", s.mask_max)
    _put(attrs, "guidance_tui.latency_us.mean", s.latency_mean_us)
    if s.allowed_n:
        _put(attrs, "guidance_tui.allowed.min", s.allowed_min)
        _put(attrs, "guidance_tui.allowed.max", s.allowed_max)
        _put(attrs, "guidance_tui.allowed.mean", s.allowed_mean)


def _messages(role: str, text: str, finish_reason: str | None = None) -> str:
    msg: dict = {"role": role, "parts": [{"type": "text", "content": text}]}
    if finish_reason is not None:
        msg["finish_reason"] = finish_reason
    return json.dumps([msg], ensure_ascii=False)


def _token_event(tok: Token, index: int, clock: _Clock, content: bool, taken_back_by: int | None,
                 top: list) -> SpanEvent:
    a: list[Attr] = []
    _put(a, "guidance_tui.token.index", index)
    _put(a, "guidance_tui.token.id", int(tok.id))
    _put(a, "guidance_tui.token.kind", KIND_NAMES.get(tok.kind, str(int(tok.kind))))
    _put(a, "guidance_tui.token.prob", float(tok.prob))
    _put(a, "guidance_tui.token.prob_raw", float(tok.prob_raw))
    if tok.latency_us > 0:
        _put(a, "guidance_tui.token.latency_us", int(tok.latency_us))
    if tok.mask_us > 0:
        _put(a, "guidance_tui.token.mask_us", int(tok.mask_us))
    if tok.allowed >= 0:
        _put(a, "guidance_tui.token.allowed", int(tok.allowed))
    if taken_back_by is not None:
        _put(a, "guidance_tui.token.backtracked", True)
    if top:
        probs = [float(alt.prob) for alt in top]
        _put(a, "guidance_tui.token.top.ids", [int(alt.id) for alt in top])
        if all(math.isfinite(p) for p in probs):
            _put(a, "guidance_tui.token.top.probs", probs)
        _put(a, "guidance_tui.token.top.masked", [bool(alt.masked) for alt in top])
        if content:
            _put(a, "guidance_tui.token.top.texts", [_text(alt.bytes) for alt in top])
    allowed_top = tok.top_allowed  # the top-k after the mask, recorded where the mask removed some of ``top``
    if allowed_top:
        probs = [float(alt.prob) for alt in allowed_top]
        _put(a, "guidance_tui.token.top_allowed.ids", [int(alt.id) for alt in allowed_top])
        if all(math.isfinite(p) for p in probs):
            _put(a, "guidance_tui.token.top_allowed.probs", probs)
        if content:
            _put(a, "guidance_tui.token.top_allowed.texts", [_text(alt.bytes) for alt in allowed_top])
    if tok.prob_kind:  # not computed here from the logits: what kind of probability a server gave
        _put(a, "guidance_tui.token.prob_kind", tok.prob_kind.name.lower())
    if content:
        _put(a, "guidance_tui.token.text", _text(tok.bytes))
    return SpanEvent(clock(tok.t_us), "guidance_tui.token", a)


# -- building ---------------------------------------------------------------------
def build_trace(facts: RunFacts, *, content: bool = False, max_token_events: int = DEFAULT_MAX_TOKEN_EVENTS,
                project: str | None = None, fallback_wall_time: float | None = None,
                service_version: str = "") -> Trace:
    """The run's spans (see the module docstring)."""
    if not service_version:
        from guidance_tui import __version__ as service_version
    trace_id = trace_id_of(facts)
    clock = _Clock(facts, fallback_wall_time)
    start = facts.start
    backend = start.backend if start is not None else ""
    model = model_name(start.model) if start is not None and start.model else ""
    remote = any(word in backend.lower() for word in REMOTE_BACKENDS)
    status = facts.status
    end = facts.end
    failed = status in ("error", "interrupted")
    fail_message = ""
    if failed:
        fail_message = _one_line(end.error) if end is not None and end.error else status

    resource: list[Attr] = [("service.name", "guidance-tui"), ("service.version", service_version),
                            ("telemetry.sdk.name", "guidance-tui"), ("telemetry.sdk.language", "python")]
    if project:
        resource.append(("openinference.project.name", project))

    spans: list[Span] = []
    for node in facts.spans():
        is_root = node is facts.root
        sid = span_id_of(trace_id, node.node_id)
        parent = b"" if is_root else span_id_of(trace_id, node.parent.node_id if node.parent else 0)
        t_end = node.t_close if node.t_close is not None else node.t_last
        if is_root:
            t_end = max(node.t_close or 0, facts.t_last)
        span = Span(sid, parent, _span_name(node, facts), SPAN_KIND_INTERNAL, clock(node.t_open),
                    max(clock(node.t_open), clock(t_end)), node_id=node.node_id)
        a = span.attributes
        if is_root:
            _root_attrs(a, facts, backend, model, content)
            if status == "done":
                span.status_code = STATUS_OK
            elif failed:
                span.status_code, span.status_message = STATUS_ERROR, fail_message
                span.events.append(_exception_event(facts, clock))
        else:
            _node_attrs(a, node, facts, backend, model, content, remote)
            if node.generation and remote:
                span.kind = SPAN_KIND_CLIENT
            if not node.closed and failed:
                span.status_code, span.status_message = STATUS_ERROR, fail_message
            if node.branch and node.branch_base:
                base = facts.nodes.get(node.branch_base)
                if base is not None and base.folded:
                    base = base.parent
                if base is not None and base is not facts.root:
                    span.links.append(SpanLink(trace_id, span_id_of(trace_id, base.node_id),
                                               [("guidance_tui.link", "branch_base"),
                                                ("guidance_tui.node.base_id", node.branch_base)]))
        _stats_attrs(a, node.total)
        _add_events(span, node, facts, clock, content, max_token_events)
        spans.append(span)
    return Trace(trace_id, resource, service_version, spans)


def _one_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return " / ".join(lines)


def _span_name(node: NodeFacts, facts: RunFacts) -> str:
    if node is facts.root:
        script = facts.start.script if facts.start is not None else ""
        return f"run {os.path.basename(script)}".strip() if script else "run"
    if node.kind == "tool_call":
        return f"tool_call {node.name}".strip()
    return node.label or node.kind or "node"


def _root_attrs(a: list[Attr], facts: RunFacts, backend: str, model: str, content: bool) -> None:
    a.append(("openinference.span.kind", "CHAIN"))
    _put(a, "gen_ai.provider.name", backend or None)
    _put(a, "gen_ai.request.model", model or None)
    tot = facts.root.total
    end = facts.end
    _put(a, "gen_ai.usage.input_tokens", end.prompt_tokens if end is not None and end.prompt_tokens else tot.prompt)
    _put(a, "gen_ai.usage.output_tokens", tot.generated + tot.forced)
    start = facts.start
    if start is not None:
        _put(a, "guidance_tui.run.script", os.path.basename(start.script) or None)
        _put(a, "guidance_tui.run.model", start.model or None)
        _put(a, "guidance_tui.run.backend", start.backend or None)
        if content:
            _put(a, "guidance_tui.run.argv", [str(x) for x in start.argv])
    _put(a, "guidance_tui.run.status", facts.status)
    if end is not None and end.error:
        _put(a, "guidance_tui.run.error", _one_line(end.error))
    _put(a, "guidance_tui.run.nodes", len(facts.nodes) - 1)
    if content:
        last = len(facts.events) - 1
        if last >= 0:
            _put(a, "guidance_tui.run.text", _clip(_text(facts.text_at(last))))


def _node_attrs(a: list[Attr], node: NodeFacts, facts: RunFacts, backend: str, model: str, content: bool,
                remote: bool) -> None:
    _put(a, "guidance_tui.node.id", node.node_id)
    _put(a, "guidance_tui.node.kind", node.kind)
    _put(a, "guidance_tui.node.name", node.name or None)
    _put(a, "guidance_tui.node.stop_reason", node.stop_reason or None)
    _put(a, "guidance_tui.node.base_id", node.base_id)
    if node.branch:
        _put(a, "guidance_tui.branch", node.branch)
        _put(a, "guidance_tui.branch_base_id", node.branch_base)
    if not node.closed:
        _put(a, "guidance_tui.node.closed", False)
    if node.captures:
        _put(a, "guidance_tui.captures", sorted({c.name for c in node.captures}))
    if content and node.grammar:
        _put(a, "guidance_tui.grammar", _clip(node.grammar))
    if node.generation:
        a.append(("gen_ai.operation.name", "text_completion"))
        _put(a, "gen_ai.provider.name", backend or None)
        _put(a, "gen_ai.request.model", model or None)
        params = node.request_params()
        _put(a, "gen_ai.request.temperature", params.get("temperature"))
        _put(a, "gen_ai.request.max_tokens", params.get("max_tokens"))
        _put(a, "gen_ai.usage.input_tokens", node.context_tokens)
        _put(a, "gen_ai.usage.output_tokens", node.total.generated + node.total.forced)
        finish = FINISH_REASONS.get(node.stop_reason, node.stop_reason) if node.stop_reason else None
        if finish:
            _put(a, "gen_ai.response.finish_reasons", [finish])
        if content:
            before, after = _node_texts(node, facts)
            _put(a, "gen_ai.input.messages", _messages("user", _clip(before)))
            _put(a, "gen_ai.output.messages", _messages("assistant", _clip(after), finish or "stop"))
    elif node.kind == "tool_call":
        a.append(("gen_ai.operation.name", "execute_tool"))
        a.append(("openinference.span.kind", "TOOL"))
        tool, _, args = node.name.partition("(")
        _put(a, "gen_ai.tool.name", tool.strip() or None)
        _put(a, "gen_ai.tool.type", "function")
        if content:
            _put(a, "gen_ai.tool.call.arguments", args[:-1] if args.endswith(")") else args or None)
            _, after = _node_texts(node, facts)
            _put(a, "gen_ai.tool.call.result", _clip(after) or None)
    else:
        a.append(("openinference.span.kind", "CHAIN"))


def _node_texts(node: NodeFacts, facts: RunFacts) -> tuple[str, str]:
    """(the text the node continued from, the text it added)."""
    before = facts.text_at(node.open_seq)
    last = node.close_seq if node.close_seq is not None else len(facts.events) - 1
    after = facts.text_at(last)
    k = 0
    n = min(len(before), len(after))
    if after[:n] == before[:n]:
        k = n
    else:
        while k < n and before[k] == after[k]:
            k += 1
    return _text(before), _text(after[k:])


def _exception_event(facts: RunFacts, clock: _Clock) -> SpanEvent:
    end = facts.end
    message = _one_line(end.error) if end is not None and end.error else facts.status
    etype, sep, rest = message.partition(": ")
    a: list[Attr] = []
    if sep and etype.replace(".", "").replace("_", "").isalnum() and " " not in etype:
        _put(a, "exception.type", etype)
        _put(a, "exception.message", rest)
    else:
        _put(a, "exception.type", "KeyboardInterrupt" if facts.status == "interrupted" else "Error")
        _put(a, "exception.message", message)
    if end is not None and end.traceback:
        _put(a, "exception.stacktrace", end.traceback)
    t = end.t_us if end is not None else facts.t_last
    return SpanEvent(clock(t), "exception", a)


def _add_events(span: Span, node: NodeFacts, facts: RunFacts, clock: _Clock, content: bool, cap: int) -> None:
    events = facts.events
    toks = node.token_seqs
    shown = toks[:max(0, cap)]
    for i, seq in enumerate(shown):
        tok = events[seq]
        span.events.append(_token_event(tok, i, clock, content, facts.removed.get(seq), tok.top))
    span.dropped_events = len(toks) - len(shown)
    for seq in node.backtrack_seqs:
        bt = events[seq]
        a: list[Attr] = [("guidance_tui.backtrack.tokens", int(bt.n_tokens)),
                         ("guidance_tui.backtrack.bytes", len(bt.bytes)),
                         ("guidance_tui.backtrack.reason", bt.reason or "unknown")]
        if content:
            _put(a, "guidance_tui.backtrack.text", _text(bt.bytes))
        span.events.append(SpanEvent(clock(bt.t_us), "guidance_tui.backtrack", a))
    for cap_ev in node.captures:
        a = [("guidance_tui.capture.name", cap_ev.name)]
        _put(a, "guidance_tui.capture.log_prob", float(cap_ev.log_prob))
        if cap_ev.append:
            _put(a, "guidance_tui.capture.append", True)
        if content:
            _put(a, "guidance_tui.capture.value", _clip(cap_ev.value))
        span.events.append(SpanEvent(clock(cap_ev.t_us), "guidance_tui.capture", a))
    if node is facts.root and content:
        msgs = facts.messages[:max(0, cap)]
        for m in msgs:
            span.events.append(SpanEvent(clock(m.t_us), "guidance_tui.message",
                                         [("guidance_tui.message.level", m.level),
                                          ("guidance_tui.message.text", _clip(m.text))]))
        span.dropped_events += len(facts.messages) - len(msgs)
    span.events.sort(key=lambda e: e.time_ns)  # stable: tokens before the backtrack at the same time


# -- OTLP/JSON --------------------------------------------------------------------
def _json_value(v) -> dict:
    t = type(v)  # exact types first (the hot path: a big run has millions of values)
    if t is str:
        return {"stringValue": v}
    if t is int:
        return {"intValue": str(v)}  # OTLP/JSON: 64-bit integers as decimal strings
    if t is float:
        return {"doubleValue": v}
    if t is bool:
        return {"boolValue": v}
    if t is list or t is tuple:
        return {"arrayValue": {"values": _json_array(v)}}
    if isinstance(v, bool):
        return {"boolValue": bool(v)}
    if isinstance(v, int):
        return {"intValue": str(int(v))}
    if isinstance(v, float):
        return {"doubleValue": float(v)}
    return {"stringValue": str(v)}


def _json_array(v) -> list:
    t = type(v[0]) if v else None
    if t is int and all(type(x) is int for x in v):
        return [{"intValue": str(x)} for x in v]
    if t is float and all(type(x) is float for x in v):
        return [{"doubleValue": x} for x in v]
    if t is bool and all(type(x) is bool for x in v):
        return [{"boolValue": x} for x in v]
    if t is str and all(type(x) is str for x in v):
        return [{"stringValue": x} for x in v]
    return [_json_value(x) for x in v]


def _json_attrs(attrs: Iterable[Attr]) -> list[dict]:
    return [{"key": k, "value": _json_value(v)} for k, v in attrs]


def span_json(s: Span, trace_id: bytes) -> dict:
    out: dict = {"traceId": trace_id.hex(), "spanId": s.span_id.hex()}
    if s.parent_span_id:
        out["parentSpanId"] = s.parent_span_id.hex()
    out.update({"name": s.name, "kind": s.kind, "startTimeUnixNano": str(s.start_ns),
                "endTimeUnixNano": str(s.end_ns), "attributes": _json_attrs(s.attributes)})
    if s.events:
        out["events"] = [{"timeUnixNano": str(e.time_ns), "name": e.name, "attributes": _json_attrs(e.attributes)}
                         for e in s.events]
    if s.dropped_events:
        out["droppedEventsCount"] = s.dropped_events
    if s.links:
        out["links"] = [{"traceId": ln.trace_id.hex(), "spanId": ln.span_id.hex(),
                         "attributes": _json_attrs(ln.attributes)} for ln in s.links]
    status: dict = {}
    if s.status_message:
        status["message"] = s.status_message
    if s.status_code:
        status["code"] = s.status_code
    out["status"] = status
    return out


def traces_data_json(trace: Trace, spans: list[Span]) -> dict:
    return {"resourceSpans": [{
        "resource": {"attributes": _json_attrs(trace.resource)},
        "scopeSpans": [{"scope": {"name": SCOPE_NAME, "version": trace.scope_version},
                        "spans": [span_json(s, trace.trace_id) for s in spans]}],
    }]}


def json_lines(trace: Trace, spans_per_line: int = SPANS_PER_LINE) -> Iterator[bytes]:
    """OTLP/JSON, the file exporter's layout: one ``TracesData`` per line (newline-terminated)."""
    enc = msgspec.json.Encoder()
    spans = trace.spans
    for i in range(0, max(1, len(spans)), spans_per_line):
        yield enc.encode(traces_data_json(trace, spans[i:i + spans_per_line])) + b"\n"


def hex_ids_to_base64(obj):
    """A copy of a parsed OTLP/JSON object with its hex ``traceId``/``spanId``/``parentSpanId``
    as base64, which is what protobuf's generic JSON reader expects for ``bytes`` fields."""
    if isinstance(obj, dict):
        return {k: (base64.b64encode(bytes.fromhex(v)).decode("ascii")
                    if k in ("traceId", "spanId", "parentSpanId") and isinstance(v, str) else hex_ids_to_base64(v))
                for k, v in obj.items()}
    if isinstance(obj, list):
        return [hex_ids_to_base64(x) for x in obj]
    return obj


# -- protobuf and OTLP/HTTP -----------------------------------------------------------
def to_request(trace: Trace):
    """The whole trace as one ``ExportTraceServiceRequest`` (package ``opentelemetry-proto``)."""
    requests = to_requests(trace, max_bytes=None)
    return requests[0]


def to_requests(trace: Trace, max_bytes: int | None = REQUEST_BYTES) -> list:
    """The trace as ``ExportTraceServiceRequest`` s of at most about ``max_bytes`` each (a span
    bigger than that goes alone); collectors refuse bodies past a limit (often 4 to 20 MiB)."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.common.v1 import common_pb2
    from opentelemetry.proto.resource.v1 import resource_pb2
    from opentelemetry.proto.trace.v1 import trace_pb2

    def value(v) -> common_pb2.AnyValue:
        if isinstance(v, bool):
            return common_pb2.AnyValue(bool_value=v)
        if isinstance(v, int):
            return common_pb2.AnyValue(int_value=v)
        if isinstance(v, float):
            return common_pb2.AnyValue(double_value=v)
        if isinstance(v, (list, tuple)):
            return common_pb2.AnyValue(array_value=common_pb2.ArrayValue(values=[value(x) for x in v]))
        return common_pb2.AnyValue(string_value=str(v))

    def attrs(items: Iterable[Attr]) -> list:
        return [common_pb2.KeyValue(key=k, value=value(v)) for k, v in items]

    pspans = []
    for s in trace.spans:
        pspans.append(trace_pb2.Span(
            trace_id=trace.trace_id, span_id=s.span_id, parent_span_id=s.parent_span_id, name=s.name,
            kind=s.kind, start_time_unix_nano=s.start_ns, end_time_unix_nano=s.end_ns,
            attributes=attrs(s.attributes),
            events=[trace_pb2.Span.Event(time_unix_nano=e.time_ns, name=e.name, attributes=attrs(e.attributes))
                    for e in s.events],
            dropped_events_count=s.dropped_events,
            links=[trace_pb2.Span.Link(trace_id=ln.trace_id, span_id=ln.span_id, attributes=attrs(ln.attributes))
                   for ln in s.links],
            status=trace_pb2.Status(code=s.status_code, message=s.status_message)))
    batches: list[list] = [[]]
    size = 0
    for ps in pspans:
        n = ps.ByteSize() if max_bytes is not None else 0
        if max_bytes is not None and batches[-1] and size + n > max_bytes:
            batches.append([])
            size = 0
        batches[-1].append(ps)
        size += n
    resource = resource_pb2.Resource(attributes=attrs(trace.resource))
    scope = common_pb2.InstrumentationScope(name=SCOPE_NAME, version=trace.scope_version)
    return [ExportTraceServiceRequest(resource_spans=[trace_pb2.ResourceSpans(
        resource=resource, scope_spans=[trace_pb2.ScopeSpans(scope=scope, spans=batch)])]) for batch in batches]


class SendError(Exception):
    """Sending failed; the message is one line."""


def traces_endpoint(url: str) -> str:
    """``http://host:port`` → ``http://host:port/v1/traces`` (a URL that already ends so is kept)."""
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{url!r} is not an http:// or https:// URL")
    path = parts.path.rstrip("/")
    if not path.endswith("/v1/traces"):
        path += "/v1/traces"
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def send(trace: Trace, url: str, *, timeout: float = 10.0, headers: dict[str, str] | None = None,
         max_bytes: int = REQUEST_BYTES) -> int:
    """POST the trace as OTLP/HTTP protobuf to ``url`` (see :func:`traces_endpoint`), in requests of
    about ``max_bytes`` at most; how many requests it took.

    Raises :class:`SendError` with one line for an endpoint that cannot be reached, a timeout, or
    an answer that is not 2xx (the spans sent before it stay sent)."""
    endpoint = traces_endpoint(url)
    requests = to_requests(trace, max_bytes)
    for request in requests:
        _post(endpoint, request.SerializeToString(), timeout, headers)
    return len(requests)


def _post(endpoint: str, body: bytes, timeout: float, headers: dict[str, str] | None) -> int:
    req = urllib.request.Request(endpoint, data=body, method="POST",
                                 headers={"Content-Type": "application/x-protobuf", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            resp.read()
            return resp.status
    except urllib.error.HTTPError as e:
        detail = ""
        try:
            detail = _one_line(e.read(300).decode("utf-8", "replace"))
        except Exception:
            pass
        raise SendError(f"{endpoint} answered {e.code} {e.reason}" + (f": {detail}" if detail else "")) from None
    except urllib.error.URLError as e:
        reason = e.reason
        if isinstance(reason, TimeoutError):
            raise SendError(f"cannot reach {endpoint}: timed out (after {timeout:g} s)") from None
        why = getattr(reason, "strerror", None) or str(reason)
        raise SendError(f"cannot reach {endpoint}: {why}") from None
    except TimeoutError:
        raise SendError(f"cannot reach {endpoint}: timed out (after {timeout:g} s)") from None
    except OSError as e:
        raise SendError(f"cannot reach {endpoint}: {e.strerror or e}") from None


