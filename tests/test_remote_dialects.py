"""Protocol tests of the remote backend against a test server that answers in the documented shapes
of vLLM, SGLang and llama.cpp's llama-server, its tokens made by the real local engine."""

from __future__ import annotations

import json
import socket

import pytest

from _dialect_server import DialectServer
from _remote_support import errors, generated, recording
from engines import gen, select
from engines import json as gjson
from engines.default_model import default_model_path
from engines.remote import GrammarViolation, OpenAICompatible, RemoteError, UnsupportedGrammar, gbnf
from tracing import ProbKind, TokenKind

pytestmark = pytest.mark.model

SCHEMA = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"], "additionalProperties": False}


@pytest.fixture(scope="module")
def backend():
    from engines.llamacpp import LlamaCppBackend

    b = LlamaCppBackend(default_model_path(), n_ctx=1024)
    yield b
    b.close()


@pytest.fixture(scope="module")
def servers(backend):
    made = {}

    def get(dialect: str, **kw) -> tuple[DialectServer, str]:
        key = (dialect, tuple(sorted(kw.items())))
        if key not in made:
            srv = DialectServer(dialect, backend, **kw)
            made[key] = (srv, srv.start())
        srv, url = made[key]
        srv.mode = "ok"
        return srv, url

    yield get
    for srv, _ in made.values():
        srv.stop()


def model(url: str, **kw):
    return OpenAICompatible(url, tokenizer=str(default_model_path()), enable_monitoring=False, **kw)


def test_vllm_gets_the_lark_grammar_and_token_ids_with_probabilities_after_the_mask(servers):
    srv, url = servers("vllm")
    with recording() as s:
        lm = model(url) + "Is the sky blue? Answer:" + select([" yes", " no"], name="a")
    assert lm["a"] in (" yes", " no")
    body = srv.requests[-1]
    assert body["structured_outputs"]["grammar"].startswith("start:") and body["return_tokens_as_token_ids"]
    assert body["logprobs"] == 5
    toks = generated(s)
    assert b"".join(t.bytes for t in toks) == lm["a"].encode()
    assert all(t.prob_kind == ProbKind.AFTER_MASK and 0 < t.prob <= 1 for t in toks)
    assert toks[0].allowed >= 2 and toks[0].top and all(not a.masked for a in toks[0].top)


def test_vllm_chat_logprobs_shape_content_entries_are_read(servers):
    srv, url = servers("vllm", shape="content")
    with recording() as s:
        lm = model(url) + "The capital of France is" + gen("c", max_tokens=4)
    toks = generated(s)
    assert len(toks) == 4 and b"".join(t.bytes for t in toks).decode() == lm["c"]
    assert all(len(t.top) == 5 for t in toks)
    assert all(t.top[0].id == t.id and t.top[0].prob == t.prob for t in toks)  # greedy: the best after the mask


def test_llama_server_gets_llguidance_grammar_and_raw_probabilities_with_masked_flags(servers):
    srv, url = servers("llama-server")
    with recording() as s:
        lm = model(url) + "A person as JSON: " + gjson("p", schema=SCHEMA)
    assert isinstance(json.loads(lm["p"])["ok"], bool)
    assert srv.requests[-1]["grammar"].startswith("%llguidance {}\n") and srv.requests[-1]["n_probs"] == 5
    toks = generated(s)
    assert all(t.prob_kind == ProbKind.BEFORE_MASK for t in toks)
    assert all(0 <= t.prob_raw <= 1 for t in toks)
    assert toks[0].kind == TokenKind.FORCED and toks[0].allowed == 1 and toks[0].prob == 1.0  # '{"' is forced
    assert any(a.masked for t in toks for a in t.top)  # the raw top-k holds tokens the grammar ruled out


def test_sglang_text_only_tokens_get_their_ids_back(servers, backend):
    srv, url = servers("sglang")
    with recording() as s:
        model(url) + "Count: 1, 2, 3," + gen("n", max_tokens=3)
    assert srv.requests[-1]["ebnf"].startswith("start:")
    toks = generated(s)
    assert toks and all(t.id >= 0 and backend.token_bytes(t.id) == t.bytes for t in toks)
    assert all(t.prob_kind == ProbKind.UNKNOWN for t in toks)


def test_auto_probe_names_the_dialect_in_the_run(servers):
    for dialect in ("vllm", "sglang", "llama-server"):
        _, url = servers(dialect)
        with recording() as s:
            lm = model(url)
        assert lm.engine.backend.info["dialect"] == dialect
        assert any(f"dialect {dialect}" in getattr(e, "text", "") for e in [s.store[i] for i in range(len(s.store))])


def test_a_server_that_ignores_the_grammar_is_a_recorded_violation(servers):
    srv, url = servers("vllm")
    srv.mode = "ignore_grammar"
    with recording() as s:
        with pytest.raises(GrammarViolation, match="grammar violation"):
            model(url) + "Is the sky blue? Answer:" + select([" maybe", " perhaps"], name="a")
    assert errors(s) and errors(s)[0].startswith("grammar violation:")
    assert generated(s)  # the offending token is in the trace


def _one_line(e: BaseException) -> str:
    text = str(e)
    assert "\n" not in text and text
    return text


def test_connection_refused_is_one_line():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with recording():
        with pytest.raises(RemoteError) as e:
            model(f"http://127.0.0.1:{port}")
    assert "connection refused" in _one_line(e.value)


def test_401_unknown_model_and_5xx_are_one_line(servers):
    _, url = servers("vllm", api_key="sekrit")
    with recording(), pytest.raises(RemoteError) as e:
        model(url)
    assert "unauthorized" in _one_line(e.value)
    _, url = servers("vllm")
    with recording(), pytest.raises(RemoteError) as e:
        model(url, model="no-such-model")
    assert "unknown model 'no-such-model'" in _one_line(e.value)
    srv, url = servers("llama-server")
    with recording(), pytest.raises(RemoteError) as e:
        lm = model(url)
        srv.mode = "error500"
        lm + "Hi" + gen(max_tokens=2)
    assert "server error 500" in _one_line(e.value) and "out of memory" in str(e.value)


@pytest.mark.parametrize("mode,words", [("cut", "cut in the middle"), ("malformed", "malformed chunk")])
def test_a_broken_stream_is_one_line_and_keeps_the_tokens(servers, mode, words):
    srv, url = servers("vllm")
    with recording() as s:
        lm = model(url)
        srv.mode = mode
        with pytest.raises(RemoteError) as e:
            lm + "The capital of France is" + gen("c", max_tokens=8)
    assert words in _one_line(e.value)
    assert len(generated(s)) >= 1


def test_a_stalled_stream_times_out_with_one_line(servers):
    srv, url = servers("vllm")
    with recording(), pytest.raises(RemoteError) as e:
        lm = OpenAICompatible(url, tokenizer=str(default_model_path()), enable_monitoring=False, timeout=1.0)
        srv.mode = "stall"
        lm + "The capital of France is" + gen("c", max_tokens=4)
    assert "stalled" in _one_line(e.value)


def test_gbnf_plan_for_llama_cpp_python():
    from engines.grammar import lower

    p = gbnf.plan(lower("Answer:" + select([" yes", " no"], name="a")).lark)
    assert p.gbnf.startswith('root ::= "Answer:" (" yes" | " no")')
    p = gbnf.plan(lower(gjson("p", schema=SCHEMA)).lark)
    assert "gtui-json ::=" in p.gbnf and 'space ::= ""' in p.gbnf and '"item_separator": ","' in p.matcher_lark
    p = gbnf.plan(lower("Q: " + gen("x", stop="\n", max_tokens=5)).lark)
    assert p.stop == ["\n"] and p.max_tokens == 5 and p.gbnf.startswith('root ::= "Q: " gtui-any')
    assert gbnf.plan(lower(gen("x", stop=".")).lark).gbnf is None
    for g, words in [(gen("x", regex="[0-9]+"), "regex"), (select([gen("a"), "b"]), "nested grammar"),
                     (gen("x") + "!", "inside a grammar")]:
        with pytest.raises(UnsupportedGrammar, match=words):
            gbnf.plan(lower(g).lark)
