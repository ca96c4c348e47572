"""Cold start: the llguidance tokenizer is built alongside the model load and from caches, and what a
run records does not depend on how the tokenizer was obtained.

* the build thread starts exactly when a model load has entered llama.cpp (C code, interpreter lock
  released), never before, and never waits for a load that does not happen;
* transformers: a tokenizer rebuilt from the cached token list is the one llguidance builds from the
  Hugging Face tokenizer (tokens, special tokens, EOS, tokenisation, masks);
* ``record`` of the same program with an empty tokenizer cache, with a filled one, and with the build
  overlapping the model load records the same tokens with the same probabilities.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import pytest

from engines import tokenizer_cache as tc

ROOT = Path(__file__).resolve().parent.parent
CLI = str(Path(sys.executable).with_name("guidance-tui"))


# -- the build waits for the load ---------------------------------------------------------------------
def _fake_llama_cpp(load):
    return types.SimpleNamespace(llama_cpp=types.SimpleNamespace(llama_model_load_from_file=load))


def test_the_build_starts_only_once_the_model_load_is_in_c_code(monkeypatch):
    started = threading.Event()

    def fake_build(holder, tokens, eos, slices=None):
        started.set()
        return ("tokenizer", tuple(tokens), tuple(eos))

    monkeypatch.setattr(tc, "build", fake_build)
    seen_during_load = []

    def load(path, params):  # stands for llama.cpp's loader: the build runs meanwhile
        seen_during_load.append(started.wait(5))
        return f"model of {path}"

    fake = _fake_llama_cpp(load)
    entered = threading.Event()
    builder = tc.Builder(None, [b"a", b"b"], [1], start=entered)
    time.sleep(0.2)
    assert not started.is_set()  # no load yet: the build has not taken the interpreter lock
    with tc.loading(fake, entered):
        assert fake.llama_cpp.llama_model_load_from_file("m.gguf", None) == "model of m.gguf"
    assert seen_during_load == [True]
    assert builder.wait() == ("tokenizer", (b"a", b"b"), (1,))
    tc._wrap_load(fake)  # wrapped once, not twice
    assert fake.llama_cpp.llama_model_load_from_file.__closure__ is not None
    assert fake.llama_cpp.llama_model_load_from_file("x", None) == "model of x"


def test_waiting_for_a_build_whose_load_never_came_does_not_hang(monkeypatch):
    monkeypatch.setattr(tc, "build", lambda holder, tokens, eos, slices=None: "tok")
    builder = tc.Builder(None, [b"a"], [0], start=threading.Event())
    assert builder.wait() == "tok"


def test_a_load_in_another_thread_does_not_start_this_threads_build():
    fake = _fake_llama_cpp(lambda path, params: None)
    mine, other = threading.Event(), threading.Event()
    tc._wrap_load(fake)

    def elsewhere():
        with tc.loading(fake, other):
            fake.llama_cpp.llama_model_load_from_file("o", None)

    with tc.loading(fake, mine):
        t = threading.Thread(target=elsewhere)
        t.start()
        t.join()
        assert other.is_set() and not mine.is_set()
        fake.llama_cpp.llama_model_load_from_file("m", None)
        assert mine.is_set()


# -- transformers: the cached token list --------------------------------------------------------------
@pytest.fixture(scope="module")
def hf_backend():
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from engines import models
    from engines.default_model import default_model_path

    # The process-wide shared backend (test_transformers_gemma uses the same one: one load per session).
    return models.Transformers(default_model_path(), monitoring=False).engine.backend


@pytest.mark.model
@pytest.mark.transformers
def test_a_transformers_tokenizer_from_the_cache_is_the_one_llguidance_builds(hf_backend, tmp_path, monkeypatch):
    import json

    import llguidance.hf
    import numpy as np
    from llguidance import LLInterpreter, LLMatcher

    b = hf_backend
    monkeypatch.setenv("GUIDANCE_TUI_TOKENIZER_CACHE", str(tmp_path))
    reference = llguidance.hf.from_tokenizer(b._tok, n_vocab=b.vocab_size, eos_token=list(b.eos_ids))
    first = b._build_ll_tokenizer()  # no cache yet: the Hugging Face way, and the token list is saved
    assert len(list(tmp_path.glob("*.tok"))) == 1
    cached = b._build_ll_tokenizer()  # from the cache
    for tok in (first, cached):
        assert tok.vocab_size == reference.vocab_size
        assert tok.eos_tokens == reference.eos_tokens and tok.eos_token == reference.eos_token
    n = reference.vocab_size
    assert [cached.is_special_token(i) for i in range(n)] == [reference.is_special_token(i) for i in range(n)]
    ids = list(range(n))
    assert cached.decode_bytes(ids) == reference.decode_bytes(ids)
    for text in ["Hello, world!", " The capital of France is", "<start_of_turn>user\nHi<end_of_turn>\n",
                 "naïve café — 東京 🙂", "    indented\n\tcode()", '{"name": "Ada", "age": 36}', "x" * 500]:
        assert cached.tokenize_str(text) == reference.tokenize_str(text)
        assert cached.tokenize_str(text, parse_special=True) == reference.tokenize_str(text, parse_special=True)
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
              "required": ["name", "age"], "additionalProperties": False}
    grammar = LLMatcher.grammar_from_json_schema(schema, defaults={"whitespace_flexible": False})
    prompt = reference.tokenize_str("<start_of_turn>user\nSay it<end_of_turn>\n<start_of_turn>model\nThe")
    target = reference.tokenize_str('{"name":"Ada Lovelace","age":36}')
    a = LLInterpreter(reference, grammar, enable_backtrack=True, enable_ff_tokens=True, log_level=0)
    c = LLInterpreter(cached, grammar, enable_backtrack=True, enable_ff_tokens=True, log_level=0)
    assert a.process_prompt(list(prompt)) == c.process_prompt(list(prompt))
    words = (n + 31) // 32
    for t in target:
        ma, mc = np.zeros(words, dtype=np.int32), np.zeros(words, dtype=np.int32)
        ra = json.loads(a.unsafe_compute_mask_ptr(ma.ctypes.data, ma.nbytes))
        rc = json.loads(c.unsafe_compute_mask_ptr(mc.ctypes.data, mc.nbytes))
        np.testing.assert_array_equal(ma, mc)
        assert ra.get("stop") == rc.get("stop")
        if ra.get("stop") or not ma[t // 32] >> (t % 32) & 1:
            break
        assert a.commit_token(t) == c.commit_token(t)


# -- what a run records ---------------------------------------------------------------------------------
PROGRAM = """from engines import models, gen
lm = models.default() + "The capital of France is" + gen(max_tokens=6)
"""


def _generated(path):
    from tracing import Token, TokenKind, read_trace

    return [(ev.id, ev.bytes, ev.prob, ev.prob_raw, [(a.id, a.prob) for a in ev.top])
            for ev in read_trace(path).events if type(ev) is Token and ev.kind != TokenKind.PROMPT]


@pytest.mark.model
def test_record_gives_the_same_numbers_with_a_cold_and_a_warm_tokenizer_cache(tmp_path):
    script = tmp_path / "six.py"
    script.write_text(PROGRAM)
    env = {**os.environ, "GUIDANCE_TUI_RUNS": str(tmp_path / "runs"),
           "GUIDANCE_TUI_TOKENIZER_CACHE": str(tmp_path / "tok")}
    runs = []
    # cold: the vocabulary read from the model and cached; warm: the tokenizer built from the cache on a
    # thread during the model load (the default); serial: built from the cache at the first grammar call
    for name, extra in (("cold", {}), ("warm", {}), ("serial", {"GUIDANCE_TUI_TOKENIZER_OVERLAP": "0"})):
        out = tmp_path / f"{name}.gtt"
        r = subprocess.run([CLI, "record", "-q", "-o", str(out), str(script)], cwd=ROOT, env={**env, **extra},
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        assert list((tmp_path / "tok").glob("*.tok"))
        runs.append(_generated(out))
    assert runs[0] and runs[0] == runs[1] == runs[2]
