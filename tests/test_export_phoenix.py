"""`guidance-tui export TRACE --to URL` into a real Arize Phoenix, read back through Phoenix's REST API.

A fixture starts Phoenix's own server (``python -m phoenix.server.main serve``) on free ports, with its
SQLite storage in a temporary directory and its telemetry and outside requests off, waits until it
answers, and stops it afterwards.  The test pushes a recorded run (the classifier example on the
embedded Gemma) and reads the spans back (``GET /v1/projects/{project}/spans``): names, nesting,
GenAI attributes (and what Phoenix makes of them: LLM and CHAIN spans), our own attributes, events.

Needs the ``arize-phoenix`` package (the ``reach-test`` extra); skipped, saying so, without it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from guidance_tui.cli import main
from guidance_tui.export import otlp
from guidance_tui.export.runfacts import collect
from tracing import read_trace

DATA = Path(__file__).resolve().parent / "data"
CLASSIFIER = DATA / "reach_classifier.gtt"  # recorded: guidance_tui/examples/classifier.py on the embedded Gemma
ARITHMETIC = DATA / "reach_arithmetic.gtt"  # recorded: examples/arithmetic.py (a tool call, a branch)
START_TIMEOUT_S = 180  # Phoenix takes about 15 s to start on two cores

pytestmark = pytest.mark.skipif(importlib.util.find_spec("phoenix") is None,
                                reason="arize-phoenix is not installed (pip install -e '.[reach-test]')")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


@pytest.fixture(scope="module")
def phoenix(tmp_path_factory):
    work = tmp_path_factory.mktemp("phoenix")
    port, grpc_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PHOENIX_")}
    env.update({
        "PHOENIX_HOST": "127.0.0.1", "PHOENIX_PORT": str(port), "PHOENIX_GRPC_PORT": str(grpc_port),
        "PHOENIX_WORKING_DIR": str(work), "PHOENIX_TELEMETRY_ENABLED": "false",
        "PHOENIX_ALLOW_EXTERNAL_RESOURCES": "false",
    })
    log = work / "phoenix.log"
    # cwd: the working directory, so that nothing in the caller's folder shadows a module Phoenix imports
    proc = subprocess.Popen([sys.executable, "-m", "phoenix.server.main", "serve"], cwd=work, env=env,
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"Phoenix exited {proc.returncode}:\n{log.read_text('utf-8', 'replace')[-4000:]}")
            try:
                with urllib.request.urlopen(url + "/healthz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"Phoenix did not answer within {START_TIMEOUT_S} s:\n"
                            f"{log.read_text('utf-8', 'replace')[-4000:]}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def spans_in(url: str, project: str, want: int, timeout: float = 60) -> list[dict]:
    """The project's spans, once Phoenix has stored ``want`` of them (it inserts in the background)."""
    deadline = time.monotonic() + timeout
    spans: list[dict] = []
    while time.monotonic() < deadline:
        try:
            spans = get_json(f"{url}/v1/projects/{project}/spans?limit=1000")["data"]
        except urllib.error.HTTPError as e:
            if e.code != 404:  # 404: the project does not exist yet
                raise
            spans = []
        if len(spans) >= want:
            return spans
        time.sleep(0.5)
    pytest.fail(f"Phoenix holds {len(spans)} spans of {want} after {timeout} s")


def test_a_recorded_run_in_phoenix(phoenix, capsys):
    expected = otlp.build_trace(collect(read_trace(CLASSIFIER).events), content=True)
    assert main(["export", str(CLASSIFIER), "--to", phoenix, "--project", "reach-classifier", "--content"]) == 0
    assert f"sent {len(expected.spans)} spans" in capsys.readouterr().out
    spans = spans_in(phoenix, "reach-classifier", len(expected.spans))
    assert len(spans) == len(expected.spans)
    trace_id = expected.trace_id.hex()
    assert {s["context"]["trace_id"] for s in spans} == {trace_id}

    by_id = {s["context"]["span_id"]: s for s in spans}
    want = {s.span_id.hex(): s for s in expected.spans}
    assert set(by_id) == set(want)
    for sid, s in by_id.items():  # names and nesting, as sent
        assert s["name"] == want[sid].name
        assert (s["parent_id"] or "") == want[sid].parent_span_id.hex()
    (root,) = [s for s in spans if s["parent_id"] is None]
    assert root["name"] == "run classifier.py" and root["status_code"] == "OK" and root["span_kind"] == "CHAIN"

    def parent_name(s):
        return by_id[s["parent_id"]]["name"] if s["parent_id"] else None

    gens = [s for s in spans if s["name"] == "gen reason"]
    selects = [s for s in spans if s["name"] == "select label"]
    assert len(gens) == len(selects) == 3
    assert {parent_name(s) for s in gens + selects} == {"role assistant"}
    assert sorted(parent_name(s) for s in spans if s["name"].startswith("role ")) == \
        ["program classify"] * 6 + ["run classifier.py"]
    assert [parent_name(s) for s in spans if s["name"] == "program classify"] == ["run classifier.py"] * 3

    for s in gens:
        a = s["attributes"]
        assert s["span_kind"] == "LLM"  # what Phoenix made of gen_ai.operation.name=text_completion
        assert a["gen_ai.operation.name"] == "text_completion"
        assert a["gen_ai.provider.name"] == "llamacpp"
        assert a["gen_ai.request.model"] == "gemma-3-270m-q4_k_m.gguf"
        assert a["gen_ai.request.max_tokens"] == 20  # from the node's grammar: gen(max_tokens=20)
        assert a["gen_ai.response.finish_reasons"] == ["stop"]
        assert a["gen_ai.usage.input_tokens"] > 40 and a["gen_ai.usage.output_tokens"] > 0
        assert a["llm.token_count.completion"] == a["gen_ai.usage.output_tokens"]  # Phoenix's own reading
        assert 0 < a["guidance_tui.prob.min"] <= a["guidance_tui.prob.mean"] <= 1
        assert a["guidance_tui.node.kind"] == "gen" and a["guidance_tui.captures"] == ["reason"]
        assert "Reason:" in json.loads(a["gen_ai.output.messages"])[0]["parts"][0]["content"]
        names = [e["name"] for e in s["events"]]
        assert names.count("guidance_tui.token") == a["guidance_tui.tokens.generated"] + a["guidance_tui.tokens.forced"]
        assert "guidance_tui.capture" in names
    labels = sorted(json.loads(s["attributes"]["gen_ai.output.messages"])[0]["parts"][0]["content"]
                    for s in selects)
    assert labels == sorted(["Sentiment: positive", "Sentiment: neutral", "Sentiment: positive"])
    role = next(s for s in spans if s["name"] == "role user")
    assert role["span_kind"] == "CHAIN" and "gen_ai.operation.name" not in role["attributes"]
    token = next(e for e in gens[0]["events"] if e["name"] == "guidance_tui.token")
    assert {"guidance_tui.token.id", "guidance_tui.token.kind", "guidance_tui.token.text"} <= set(token["attributes"])


def test_a_tool_call_and_no_content(phoenix):
    expected = otlp.build_trace(collect(read_trace(ARITHMETIC).events))
    assert main(["export", str(ARITHMETIC), "--to", phoenix + "/v1/traces", "--project", "reach-arithmetic"]) == 0
    spans = spans_in(phoenix, "reach-arithmetic", len(expected.spans))
    tool = next(s for s in spans if s["name"].startswith("tool_call "))
    assert tool["name"] == "tool_call add(11, 9)" and tool["span_kind"] == "TOOL"
    assert tool["attributes"]["gen_ai.tool.name"] == "add"
    assert [s["name"] for s in spans if s["parent_id"] == tool["context"]["span_id"]] == ["program add"]
    branch = next(s for s in spans if s["name"] == "gen result")
    assert branch["attributes"]["guidance_tui.branch"] == "branch from the empty model"
    for s in spans:  # without --content, no text of the run reaches Phoenix
        flat = json.dumps(s["attributes"]) + json.dumps(s["events"])
        assert "11 + 9" not in flat and "gen_ai.input.messages" not in flat


def test_phoenix_refuses_what_is_not_protobuf(phoenix):
    req = urllib.request.Request(phoenix + "/v1/traces", data=b"{}", headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 415  # the reason --to sends protobuf
