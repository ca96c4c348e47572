"""`guidance-tui export --format otlp` and `--to URL`: a run as OpenTelemetry spans (GenAI conventions).

The JSON lines are checked against the OpenTelemetry file exporter's layout and parsed, every line,
with opentelemetry-proto's own JSON reader; `--to` is checked against a local OTLP/HTTP receiver
that decodes the protobuf body (tests/test_export_phoenix.py sends to a real Phoenix).
"""

from __future__ import annotations

import base64
import http.server
import json
import re
import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import TracesData

from guidance_tui.cli import main
from guidance_tui.export import otlp
from guidance_tui.export.runfacts import collect, request_params
from tracing import (
    Alt, Backtrack, Capture, Message, NodeClose, NodeOpen, RunEnd, RunStart, Token, TokenKind, TraceStore,
    read_trace, write_trace,
)
from tracing.synthetic import synthetic_events

DATA = Path(__file__).resolve().parent / "data"
CLASSIFIER = DATA / "reach_classifier.gtt"  # recorded: guidance_tui/examples/classifier.py on the embedded Gemma
ARITHMETIC = DATA / "reach_arithmetic.gtt"  # recorded: examples/arithmetic.py (a tool call, a branch)
HEX32, HEX16 = re.compile(r"^[0-9a-f]{32}$"), re.compile(r"^[0-9a-f]{16}$")
SECRET = "zebra-secret-prompt"


def clocked(events, step_us: int = 1000) -> list:
    store = TraceStore()
    t = 0
    for ev in events:
        t += getattr(ev, "latency_us", 0) or step_us
        ev.t_us = t
        store.append(ev, stamp=False)
    return list(store.events())


def tok(node, pos, text, kind=TokenKind.GENERATED, prob=0.9, **kw) -> Token:
    return Token(node_id=node, pos=pos, id=len(text) * 7 + pos, bytes=text.encode(), kind=kind, prob=prob,
                 prob_raw=kw.pop("prob_raw", prob * 0.8), latency_us=kw.pop("latency_us", 20_000),
                 mask_us=kw.pop("mask_us", 300), allowed=kw.pop("allowed", 42), **kw)


def branching_events(status: str = "done") -> list:
    """A program with a role, two gens, a reused base (a branch from gen a), a tool call, a capture."""
    ev = [RunStart(script="/x/prog.py", argv=["prog.py", SECRET], model="/models/tiny.gguf", backend="llamacpp",
                   wall_time=1_700_000_000.5)]
    ev.append(NodeOpen(node_id=1, parent_id=0, base_id=0, kind="program", name="main"))
    ev.append(NodeOpen(node_id=2, parent_id=1, base_id=1, kind="role", name="user"))
    ev.append(NodeOpen(node_id=3, parent_id=2, base_id=2, kind="literal", name=SECRET[:10]))
    ev.append(tok(3, 0, SECRET, TokenKind.PROMPT, float("nan")))
    ev.append(NodeClose(node_id=3))
    ev.append(NodeClose(node_id=2))
    pos = len(SECRET)
    ev.append(NodeOpen(node_id=4, parent_id=1, base_id=2, kind="gen", name="a",
                       grammar='start: gen_0\ngen_0[capture="a", stop="\\n", max_tokens=20, temperature=0.7]: /.*/'))
    top = [Alt(11, b" yes", 0.6, False), Alt(12, b" no", 0.3, True)]
    ev.append(tok(4, pos, " yes", prob=0.6, top=top))
    ev.append(tok(4, pos + 4, " sir", prob=0.05))
    ev.append(Backtrack(node_id=4, n_tokens=1, bytes=b" sir", reason="grammar"))
    ev.append(tok(4, pos + 4, "!", TokenKind.FORCED, 1.0))
    ev.append(Capture(node_id=4, name="a", value=" yes!", log_prob=-0.5))
    ev.append(NodeClose(node_id=4, stop_reason="max_tokens"))
    ev.append(NodeOpen(node_id=5, parent_id=1, base_id=4, kind="tool_call", name="add(1, 2)"))
    ev.append(NodeOpen(node_id=6, parent_id=5, base_id=5, kind="literal", name=" = 3"))
    ev.append(tok(6, pos + 5, " = 3", TokenKind.PROMPT, float("nan")))
    ev.append(NodeClose(node_id=6))
    ev.append(NodeClose(node_id=5, stop_reason="tool"))
    # a branch: continues from gen a's state, not from the tool call's (the latest)
    ev.append(NodeOpen(node_id=7, parent_id=1, base_id=4, kind="select", name="b",
                       grammar='start: select_0\nselect_0[capture="b"]: " ok" | " no"'))
    if status == "error":
        ev.append(tok(7, pos + 5, " ok", prob=0.2))
        ev.append(Message(level="info", text="about to fail"))
        ev.append(RunEnd(status="error", error="ZeroDivisionError: division by zero",
                         traceback="Traceback (most recent call last):\nZeroDivisionError: division by zero\n"))
        return clocked(ev)
    ev.append(tok(7, pos + 5, " ok", prob=0.2))
    ev.append(NodeClose(node_id=7, stop_reason="grammar"))
    ev.append(NodeClose(node_id=1))
    ev.append(RunEnd(status=status, prompt_tokens=2, generated_tokens=3, forced_tokens=1))
    return clocked(ev)


def lines_of(data: bytes) -> list[dict]:
    text = data.decode("utf-8")
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def spans_of(objs: list[dict]) -> list[dict]:
    out = []
    for obj in objs:
        (rs,) = obj["resourceSpans"]
        for ss in rs["scopeSpans"]:
            out.extend(ss["spans"])
    return out


def attrs(span_or_event: dict) -> dict:
    def val(v):
        (kind, x), = v.items()
        if kind == "intValue":
            return int(x)
        if kind == "arrayValue":
            return [val(y) for y in x.get("values", [])]
        return x

    return {a["key"]: val(a["value"]) for a in span_or_event.get("attributes", [])}


def export(tmp_path, trace: Path, *extra: str) -> bytes:
    out = tmp_path / f"out{len(list(tmp_path.iterdir()))}.jsonl"
    assert main(["export", str(trace), "--format", "otlp", "-o", str(out), *extra]) == 0
    return out.read_bytes()


@pytest.fixture
def branching(tmp_path) -> Path:
    path = tmp_path / "branching.gtt"
    write_trace(path, branching_events())
    return path


# -- the file exporter's layout, parsed by opentelemetry-proto ------------------------------------
@pytest.mark.parametrize("trace", [CLASSIFIER, ARITHMETIC], ids=["classifier", "arithmetic"])
def test_every_line_is_a_traces_data_in_the_file_exporter_layout(tmp_path, trace):
    data = export(tmp_path, trace, "--content")
    objs = lines_of(data)
    tf = read_trace(trace)
    expected = otlp.build_trace(collect(tf.events), content=True, fallback_wall_time=0)
    request = otlp.to_request(expected)
    parsed = []
    for line, obj in zip(data.decode().splitlines(), objs):
        assert set(obj) == {"resourceSpans"}
        (rs,) = obj["resourceSpans"]
        assert attrs(rs["resource"])["service.name"] == "guidance-tui"
        (ss,) = rs["scopeSpans"]
        assert ss["scope"]["name"] == "guidance_tui.export.otlp"
        for span in ss["spans"]:
            assert HEX32.match(span["traceId"]) and HEX16.match(span["spanId"])
            assert "parentSpanId" not in span or HEX16.match(span["parentSpanId"])
            assert isinstance(span["kind"], int) and span["kind"] == 1  # INTERNAL: an in-process model
            for key in ("startTimeUnixNano", "endTimeUnixNano"):
                assert isinstance(span[key], str) and span[key].isdigit()
            assert int(span["startTimeUnixNano"]) <= int(span["endTimeUnixNano"])
            for a in span["attributes"]:
                if "intValue" in a["value"]:
                    assert isinstance(a["value"]["intValue"], str)  # 64-bit integers are decimal strings
            for e in span.get("events", []):
                assert e["timeUnixNano"].isdigit()
        # opentelemetry-proto's reader takes bytes fields as base64: hex ids must be converted first ...
        msg = json_format.Parse(json.dumps(otlp.hex_ids_to_base64(json.loads(line))), TracesData())
        parsed.extend(msg.resource_spans)
        # ... read as they are, they decode without an error into ids of the wrong length
        wrong = json_format.Parse(line, TracesData())
        assert len(wrong.resource_spans[0].scope_spans[0].spans[0].trace_id) == 24
    spans = [s for rs in parsed for ss in rs.scope_spans for s in ss.spans]
    assert len(spans) == len(expected.spans)
    assert all(len(s.trace_id) == 16 and len(s.span_id) == 8 for s in spans)
    # the JSON and the protobuf that --to sends are the same spans
    assert [s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans] == spans


def test_spans_nest_as_the_program_tree(tmp_path, branching):
    spans = spans_of(lines_of(export(tmp_path, branching)))
    by_name = {s["name"]: s for s in spans}
    assert [s["name"] for s in spans] == ["run prog.py", "program main", "role user", "gen a",
                                          "tool_call add(1, 2)", "select b"]  # no literal spans
    root = by_name["run prog.py"]
    assert "parentSpanId" not in root
    parent = {s["name"]: next((p["name"] for p in spans if p["spanId"] == s.get("parentSpanId")), None)
              for s in spans}
    assert parent == {"run prog.py": None, "program main": "run prog.py", "role user": "program main",
                      "gen a": "program main", "tool_call add(1, 2)": "program main", "select b": "program main"}
    assert len({s["traceId"] for s in spans}) == 1
    # the reused base: a branch of its container, linked to the span it continued
    b = by_name["select b"]
    assert attrs(b)["guidance_tui.branch"].startswith("branch from")
    assert attrs(b)["guidance_tui.branch_base_id"] == 4
    (link,) = b["links"]
    assert link["spanId"] == by_name["gen a"]["spanId"] and link["traceId"] == b["traceId"]
    assert "links" not in by_name["gen a"]
    # children lie within their parents, in time
    for s in spans:
        if s.get("parentSpanId"):
            p = next(x for x in spans if x["spanId"] == s["parentSpanId"])
            assert int(p["startTimeUnixNano"]) <= int(s["startTimeUnixNano"])
            assert int(s["endTimeUnixNano"]) <= int(p["endTimeUnixNano"])
    assert root["startTimeUnixNano"].startswith("17000000005")  # the run's wall clock


def test_genai_and_own_attributes(tmp_path, branching):
    spans = {s["name"]: s for s in spans_of(lines_of(export(tmp_path, branching)))}
    a = attrs(spans["gen a"])
    assert a["gen_ai.operation.name"] == "text_completion"
    assert a["gen_ai.provider.name"] == "llamacpp"
    assert a["gen_ai.request.model"] == "tiny.gguf"
    assert a["gen_ai.request.temperature"] == 0.7 and a["gen_ai.request.max_tokens"] == 20
    assert a["gen_ai.usage.input_tokens"] == 1  # the prompt token it continued from
    assert a["gen_ai.usage.output_tokens"] == 3  # generated and forced, the backtracked one included
    assert a["gen_ai.response.finish_reasons"] == ["length"]
    assert a["guidance_tui.node.stop_reason"] == "max_tokens"
    assert a["guidance_tui.tokens.forced"] == 1 and a["guidance_tui.tokens.generated"] == 2
    assert a["guidance_tui.backtrack_count"] == 1 and a["guidance_tui.tokens.backtracked"] == 1
    assert a["guidance_tui.prob.min"] == pytest.approx(0.05)
    assert a["guidance_tui.prob.mean"] == pytest.approx((0.6 + 0.05) / 2)
    assert a["guidance_tui.mask_us.total"] == 900 and a["guidance_tui.allowed.max"] == 42
    assert a["guidance_tui.captures"] == ["a"]
    b = attrs(spans["select b"])
    assert b["gen_ai.usage.input_tokens"] == 3  # the branch took gen a's text back: the prompt, " yes", "!"
    assert "gen_ai.request.temperature" not in b and "gen_ai.request.max_tokens" not in b  # not in its grammar
    t = attrs(spans["tool_call add(1, 2)"])
    assert t["gen_ai.operation.name"] == "execute_tool" and t["gen_ai.tool.name"] == "add"
    r = attrs(spans["run prog.py"])
    assert r["gen_ai.usage.input_tokens"] == 2 and r["gen_ai.usage.output_tokens"] == 4
    assert r["openinference.span.kind"] == "CHAIN" and attrs(spans["role user"])["openinference.span.kind"] == "CHAIN"
    assert spans["run prog.py"]["status"] == {"code": 1}
    assert "gen_ai.operation.name" not in r


def test_context_counts_follow_backtracks_and_branches():
    facts = collect(branching_events())
    # prompt (1 token), then gen a kept " yes" and "!" (" sir" was taken back): 3 tokens
    assert facts.nodes[4].context_tokens == 1
    assert facts.nodes[5].context_tokens == 3
    # the select continues from gen a's state (3 tokens), not the tool call's (4)
    assert facts.nodes[7].context_tokens == 3
    assert request_params('gen_0[max_tokens=5, temperature=1e-1]: /x/\ngen_1[max_tokens=6]: /y/') == \
        {"temperature": 0.1}  # two different budgets: neither


def test_token_events_are_capped_and_carry_the_token_facts(tmp_path, branching):
    spans = {s["name"]: s for s in spans_of(lines_of(export(tmp_path, branching)))}
    events = spans["gen a"]["events"]
    toks = [e for e in events if e["name"] == "guidance_tui.token"]
    assert len(toks) == 3
    first = attrs(toks[0])
    assert first["guidance_tui.token.kind"] == "generated" and first["guidance_tui.token.prob"] == pytest.approx(0.6)
    assert first["guidance_tui.token.prob_raw"] == pytest.approx(0.48)
    assert first["guidance_tui.token.top.ids"] == [11, 12] and first["guidance_tui.token.top.masked"] == [False, True]
    assert first["guidance_tui.token.mask_us"] == 300 and first["guidance_tui.token.allowed"] == 42
    assert attrs(toks[1])["guidance_tui.token.backtracked"] is True
    (bt,) = [e for e in events if e["name"] == "guidance_tui.backtrack"]
    assert attrs(bt)["guidance_tui.backtrack.reason"] == "grammar"
    (cap,) = [e for e in events if e["name"] == "guidance_tui.capture"]
    assert attrs(cap)["guidance_tui.capture.name"] == "a"

    capped = {s["name"]: s for s in spans_of(lines_of(export(tmp_path, branching, "--max-token-events", "1")))}
    toks = [e for e in capped["gen a"]["events"] if e["name"] == "guidance_tui.token"]
    assert len(toks) == 1 and capped["gen a"]["droppedEventsCount"] == 2
    none = {s["name"]: s for s in spans_of(lines_of(export(tmp_path, branching, "--max-token-events", "0")))}
    assert not [e for e in none["gen a"].get("events", []) if e["name"] == "guidance_tui.token"]


def test_texts_only_with_content(tmp_path, branching):
    plain = export(tmp_path, branching).decode()
    for text in (SECRET, " yes", " sir", "yes!", "prog.py\", \"" + SECRET):
        assert text not in plain
    assert "token.text" not in plain and "gen_ai.input.messages" not in plain
    full = export(tmp_path, branching, "--content").decode()
    spans = {s["name"]: s for s in spans_of(lines_of(full.encode()))}
    a = attrs(spans["gen a"])
    (inp,) = json.loads(a["gen_ai.input.messages"])
    assert inp["parts"] == [{"type": "text", "content": SECRET}]
    (out,) = json.loads(a["gen_ai.output.messages"])
    assert out["role"] == "assistant" and out["parts"][0]["content"] == " yes!" and out["finish_reason"] == "length"
    assert attrs(spans["tool_call add(1, 2)"])["gen_ai.tool.call.result"] == " = 3"
    assert SECRET in attrs(spans["run prog.py"])["guidance_tui.run.argv"]
    texts = [attrs(e).get("guidance_tui.token.text") for e in spans["gen a"]["events"]]
    assert " yes" in texts


def test_ids_are_derived_from_the_run(tmp_path, branching):
    one, two = export(tmp_path, branching), export(tmp_path, branching)
    assert one == two  # two exports of one trace agree, byte for byte
    other = tmp_path / "other.gtt"
    events = branching_events()
    events[0].wall_time += 1  # another run of the same program
    write_trace(other, events)
    ids = {s["spanId"] for s in spans_of(lines_of(one))}
    other_spans = spans_of(lines_of(export(tmp_path, other)))
    assert not ids & {s["spanId"] for s in other_spans}
    assert len(ids) == len(spans_of(lines_of(one)))


def test_a_failed_run_is_an_error_span(tmp_path):
    path = tmp_path / "err.gtt"
    write_trace(path, branching_events(status="error"))
    spans = {s["name"]: s for s in spans_of(lines_of(export(tmp_path, path)))}
    root = spans["run prog.py"]
    assert root["status"] == {"code": 2, "message": "ZeroDivisionError: division by zero"}
    (exc,) = [e for e in root["events"] if e["name"] == "exception"]
    assert attrs(exc)["exception.type"] == "ZeroDivisionError"
    assert attrs(exc)["exception.message"] == "division by zero"
    assert "Traceback" in attrs(exc)["exception.stacktrace"]
    # the nodes the failure left open fail with it; closed ones keep no status
    assert spans["select b"]["status"]["code"] == 2 and spans["program main"]["status"]["code"] == 2
    assert spans["gen a"]["status"] == {}
    assert attrs(spans["select b"])["guidance_tui.node.closed"] is False


def test_a_big_run_splits_into_lines(tmp_path):
    path = tmp_path / "big.gtt"
    write_trace(path, clocked(list(synthetic_events(3000, seed=3))))
    spans = spans_of(lines_of(export(tmp_path, path)))
    trace = otlp.build_trace(collect(read_trace(path).events))
    objs = lines_of(b"".join(otlp.json_lines(trace, spans_per_line=16)))
    assert len(objs) == -(-len(spans) // 16) > 1
    assert [(s["spanId"], s["name"], s["attributes"]) for s in spans_of(objs)] == \
        [(s["spanId"], s["name"], s["attributes"]) for s in spans]  # the CLI's times come from the file's mtime
    assert len({s["spanId"] for s in spans}) == len(spans)
    for s in spans:
        for a in s["attributes"]:  # NaN probabilities never reach a value
            assert a["value"].get("doubleValue", 0) == a["value"].get("doubleValue", 0)


# -- --to: OTLP/HTTP protobuf ----------------------------------------------------------------------
class _Receiver(http.server.BaseHTTPRequestHandler):
    answer = 200
    got: list = []

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).got.append((self.path, self.headers["Content-Type"], body))
        self.send_response(self.answer)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()
        self.wfile.write(b"" if self.answer == 200 else b"collector says no\nsecond line")

    def log_message(self, *args):
        pass


@pytest.fixture
def receiver():
    handler = type("Receiver", (_Receiver,), {"got": [], "answer": 200})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield handler, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_to_posts_an_export_trace_service_request(receiver, tmp_path, capsys):
    handler, url = receiver
    assert main(["export", str(CLASSIFIER), "--to", url]) == 0
    (path, ctype, body), = handler.got
    assert path == "/v1/traces" and ctype == "application/x-protobuf"
    req = ExportTraceServiceRequest()
    req.ParseFromString(body)
    spans = [s for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]
    from_file = spans_of(lines_of(export(tmp_path, CLASSIFIER)))
    assert [s.name for s in spans] == [s["name"] for s in from_file]
    assert [s.span_id.hex() for s in spans] == [s["spanId"] for s in from_file]
    out = capsys.readouterr().out
    assert f"sent {len(spans)} spans" in out and url + "/v1/traces" in out
    # a URL that already names the path is kept; -o also writes the OTLP/JSON lines
    target = tmp_path / "both.jsonl"
    assert main(["export", str(CLASSIFIER), "--to", url + "/v1/traces", "-o", str(target)]) == 0
    assert handler.got[-1][0] == "/v1/traces"
    assert [s["spanId"] for s in spans_of(lines_of(target.read_bytes()))] == [s.span_id.hex() for s in spans]


def test_a_big_run_is_sent_in_several_requests(receiver):
    handler, url = receiver
    trace = otlp.build_trace(collect(read_trace(CLASSIFIER).events))
    assert otlp.send(trace, url, max_bytes=4000) > 3
    got = []
    for path, _, body in handler.got:
        req = ExportTraceServiceRequest()
        req.ParseFromString(body)
        spans = [s for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]
        assert path == "/v1/traces"
        assert len(spans) == 1 or len(body) < 4000 + 300  # a span bigger than the limit goes alone
        got += [s.span_id for s in spans]
    assert got == [s.span_id for s in trace.spans]  # each span once, in order


def test_to_a_non_2xx_answer_is_one_line(receiver, capsys):
    handler, url = receiver
    handler.answer = 500
    assert main(["export", str(CLASSIFIER), "--to", url]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert err.startswith("guidance-tui: ") and "answered 500" in err and "collector says no" in err


def test_to_an_unreachable_endpoint_is_one_line(capsys):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["export", str(CLASSIFIER), "--to", f"http://127.0.0.1:{port}", "--timeout", "5"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"guidance-tui: cannot reach http://127.0.0.1:{port}/v1/traces: Connection refused"


def test_to_a_silent_endpoint_times_out(capsys):
    with socket.socket() as s:  # listens, never answers
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        assert main(["export", str(CLASSIFIER), "--to", f"http://127.0.0.1:{port}", "--timeout", "0.5"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "timed out" in err


@pytest.mark.parametrize("argv, message", [
    (["--to", "ftp://example.org"], "not an http:// or https:// URL"),
    (["--to", "http://127.0.0.1:9", "--format", "html"], "does not go with --format html"),
])
def test_bad_to_is_a_usage_error(argv, message, capsys):
    assert main(["export", str(CLASSIFIER), *argv]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--format", "bogus"], ["--max-token-events", "-1"], ["--timeout", "0"]])
def test_bad_export_options_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(["export", str(CLASSIFIER), *argv])
    assert e.value.code == 2
    assert f"argument {argv[0]}" in capsys.readouterr().err


def test_otlp_export_and_serve_checks_load_no_textual(tmp_path):
    out = tmp_path / "o.jsonl"
    code = textwrap.dedent(f"""
        import contextlib, io, json, sys
        import guidance_tui.export.runfacts, guidance_tui.export.otlp, guidance_tui.export.serve
        import guidance_tui.export.served, guidance_tui.cli.reach_commands
        from guidance_tui.cli import main
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            assert main(["export", {str(CLASSIFIER)!r}, "--format", "otlp", "-o", {str(out)!r}]) == 0
            assert main(["serve", {str(CLASSIFIER)!r}, "--host", "10.0.0.1"]) == 2
        print(json.dumps(sorted({{name.split(".")[0] for name in sys.modules}})))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    mods = set(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert "textual" not in mods and "engines" not in mods
    assert "opentelemetry" not in mods and "google" not in mods  # protobuf only to send
    assert "textual_serve" not in mods and "aiohttp" not in mods
    assert lines_of(out.read_bytes())


def test_hex_ids_to_base64():
    obj = {"a": [{"traceId": "00" * 15 + "01", "spanId": "ff" * 8, "parentSpanId": "", "name": "x"}]}
    out = otlp.hex_ids_to_base64(obj)
    assert base64.b64decode(out["a"][0]["traceId"]) == b"\0" * 15 + b"\1"
    assert out["a"][0]["parentSpanId"] == "" and out["a"][0]["name"] == "x"
