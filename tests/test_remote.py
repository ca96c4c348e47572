"""The remote backend on a real llama-cpp-python server running the embedded Gemma."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from _remote_support import generated, recording
from engines import gen, models, select
from engines import json as gjson
from engines.default_model import default_model_path
from engines.remote import RemoteError, UnsupportedGrammar
from tracing import Backtrack, ProbKind, TokenKind

pytestmark = pytest.mark.model


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(default_model_path()), "--host", "127.0.0.1",
           "--port", str(port), "--n_ctx", "512", "--n_threads", str(os.cpu_count() or 2)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("llama-cpp-python's server exited at start")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError("llama-cpp-python's server did not answer within 60 s")


@pytest.fixture(scope="module")
def server():
    port = _free_port()
    proc = start_server(port)
    yield proc, f"http://127.0.0.1:{port}"
    if proc.poll() is None:
        proc.terminate()
        proc.wait(10)


def test_probe_finds_llama_cpp_python_and_its_gguf_as_tokenizer(server):
    _, url = server
    with recording():
        lm = models.OpenAICompatible(url, enable_monitoring=False)
    info = lm.engine.backend.info
    assert info["dialect"] == "llama-cpp-python" and info["tokenizer"] == str(default_model_path())


def test_select_is_sent_as_gbnf_and_the_matcher_recovers_the_mask(server):
    _, url = server
    with recording() as s:
        lm = models.OpenAICompatible(url, enable_monitoring=False) + "Is the sky blue? Answer:" + \
            select([" yes", " no"], name="a")
    assert lm["a"] in (" yes", " no")
    toks = generated(s)
    assert b"".join(t.bytes for t in toks) == lm["a"].encode()
    first = toks[0]
    assert first.prob_kind == ProbKind.BEFORE_MASK and 0 < first.prob_raw < 1 and 1 < first.allowed < 20
    assert any(a.masked for a in first.top)  # " Yes" / " No" are likelier before the mask, and ruled out


def test_a_json_program(server):
    _, url = server
    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 6}}, "required": ["name"]}
    with recording() as s:
        lm = models.OpenAICompatible(url, enable_monitoring=False) + "A person as JSON: " + gjson("p", schema=schema)
    assert isinstance(json.loads(lm["p"])["name"], str)
    toks = generated(s)
    assert toks[0].kind == TokenKind.FORCED and toks[0].allowed == 1  # '{"' is forced by the schema
    assert all(t.allowed >= 1 for t in toks)


def test_free_generation_with_probabilities_top_k_and_a_hidden_stop(server):
    _, url = server
    with recording() as s:
        lm = models.OpenAICompatible(url, enable_monitoring=False) + "Count: 1, 2, 3," + gen("n", stop=",", max_tokens=6)
    assert lm["n"].strip() == "4" and str(lm).endswith("3, 4")
    toks = generated(s)
    assert all(len(t.top) >= 3 and 0 <= t.prob_raw <= 1 and t.latency_us > 0 for t in toks)
    assert toks[0].top[0].prob >= toks[0].top[-1].prob


def test_a_regex_is_refused_before_any_request(server):
    _, url = server
    with recording() as s:
        with pytest.raises(UnsupportedGrammar, match="regex"):
            models.OpenAICompatible(url, enable_monitoring=False) + gen("x", regex="[0-9]+")
    assert not generated(s)


def test_record_cli_with_backend_remote(server, tmp_path):
    from tracing import Message, RunStart, Token, read_trace

    _, url = server
    script = tmp_path / "prog.py"
    script.write_text("from engines import models, select\n"
                      "lm = models.default() + 'Is the sky blue? Answer:' + select([' yes', ' no'], name='a')\n"
                      "print(lm['a'])\n")
    out = tmp_path / "run.gtt"
    proc = subprocess.run([sys.executable, "-m", "guidance_tui", "record", str(script), "-o", str(out), "-q",
                           "--backend", "remote", "--url", url], capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr
    evs = list(read_trace(out).events)
    start = next(e for e in evs if isinstance(e, RunStart))
    assert start.backend == "remote" and url in start.model
    assert any(isinstance(e, Message) and "dialect llama-cpp-python" in e.text for e in evs)
    assert any(isinstance(e, Token) and e.prob_kind == ProbKind.BEFORE_MASK for e in evs)
    bad = subprocess.run([sys.executable, "-m", "guidance_tui", "record", str(script), "-o", str(tmp_path / "b.gtt"),
                          "-q", "--url", url, "--model-name", "nope"], capture_output=True, text=True, timeout=240)
    assert bad.returncode != 0 and "unknown model 'nope'" in bad.stderr and "Traceback (most recent" not in bad.stderr


def test_killing_the_server_mid_stream_is_one_line_and_keeps_the_trace(server):
    proc, url = server
    with recording() as s:
        lm = models.OpenAICompatible(url, enable_monitoring=False)

        def kill_after_two(out: bytes):
            if len(generated(s)) >= 2 and proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            return None

        with pytest.raises(RemoteError) as e:
            (lm + "Count: 1, 2, 3,").grammar_call(gen("x", max_tokens=40), stop_check=kill_after_two)
    assert "\n" not in str(e.value) and ("cut" in str(e.value) or "connection" in str(e.value))
    assert len(generated(s)) >= 2
    assert not any(isinstance(ev, Backtrack) for ev in [s.store[i] for i in range(len(s.store))])
