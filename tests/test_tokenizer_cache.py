"""The cached / overlapped llguidance tokenizer for llama.cpp (engines/tokenizer_cache.py).

The first tests need no model: the cache file format, its checksum, staleness.  The `model` tests compare
the fast path with llguidance's own ``lltokenizer_from_vocab`` on the real Gemma vocabulary: same token
bytes, same special/EOS handling, same tokenisation, same masks on a regex, a select and a JSON schema.
"""

from __future__ import annotations

import json
import os
import threading
import time
import warnings

import numpy as np
import pytest

from engines import tokenizer_cache as tc


@pytest.fixture()
def cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("GUIDANCE_TUI_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "tokenizers"


TOKENS = [b"", b"\xff<eos>", b"a", b"\x00\x01", "é".encode(), b"hello world" * 40, b"\xff<end_of_turn>"]


def test_round_trip(cache_home):
    tc.save("k1", TOKENS, [1, 6])
    assert (cache_home / "k1.tok").exists()
    assert tc.load("k1") == (TOKENS, [1, 6], {})
    answers = {(b"a", False, False): (236746,), (b"\x01a", True, True): (2, 1, 9), (b"", False, True): ()}
    tc.save("k1", TOKENS, [1, 6], answers)
    entry = tc.load("k1")
    assert entry.tokens == TOKENS and entry.eos == [1, 6] and entry.answers == answers


def test_an_older_format_is_not_read(cache_home):
    import marshal

    payload = marshal.dumps({"format": 2, "eos": [1], "tokens": TOKENS})
    cache_home.mkdir(parents=True)
    import hashlib

    (cache_home / "k3.tok").write_bytes(tc.MAGIC + hashlib.sha256(payload).digest() + payload)
    assert tc.load("k3") is None


def test_missing_is_none(cache_home):
    assert tc.load("nope") is None


@pytest.mark.parametrize("damage", ["flip", "truncate", "magic", "empty"])
def test_damaged_file_is_dropped(cache_home, damage):
    tc.save("k2", TOKENS, [1])
    p = cache_home / "k2.tok"
    data = bytearray(p.read_bytes())
    if damage == "flip":
        data[-3] ^= 0x40
    elif damage == "truncate":
        data = data[:-5]
    elif damage == "magic":
        data[0:4] = b"XXXX"
    else:
        data = bytearray()
    p.write_bytes(bytes(data))
    assert tc.load("k2") is None
    assert not p.exists()  # removed, so the next run rebuilds it


def test_key_tracks_file_identity(tmp_path):
    f = tmp_path / "m.gguf"
    f.write_bytes(b"GGUF" + os.urandom(3 << 20))
    k = tc.model_key(f)
    assert tc.model_key(f) == k
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert tc.model_key(f) != k  # touched: stale
    k2 = tc.model_key(f)
    data = bytearray(f.read_bytes())
    data[-10] ^= 1  # last MiB changed, same size; restore the mtime
    f.write_bytes(bytes(data))
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert tc.model_key(f) != k2


# -- the real model ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gemma():
    from engines.default_model import default_model_path
    from engines.llamacpp import LlamaCppBackend

    b = LlamaCppBackend(default_model_path(progress=False), n_ctx=512)
    yield b
    b.close()


@pytest.fixture(scope="module")
def reference(gemma):
    from llguidance.llamacpp import lltokenizer_from_vocab

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return lltokenizer_from_vocab(gemma._vocab, n_vocab=gemma.vocab_size, eos_token=list(gemma.eos_ids))


@pytest.fixture(scope="module")
def fast_tokens(gemma):
    import llama_cpp

    return tc.read_tokens(llama_cpp, gemma._vocab, n_vocab=gemma.vocab_size)


@pytest.fixture(scope="module")
def cached(gemma, fast_tokens, tmp_path_factory):
    """A tokenizer built from a cache file, on the thread, vocabulary set after the build started, without
    the mask "slices" (as a first build is): its masks must still be the reference's, which has them."""
    import llama_cpp

    os.environ["GUIDANCE_TUI_CACHE"] = str(tmp_path_factory.mktemp("tokcache"))
    try:
        tc.save("gemma", fast_tokens, list(gemma.eos_ids))
        tokens, eos, _ = tc.load("gemma")
    finally:
        del os.environ["GUIDANCE_TUI_CACHE"]
    holder = tc.VocabHolder(llama_cpp)
    start = threading.Event()
    builder = tc.Builder(holder, tokens, eos, start=start, slices=[])  # a first build has no slices
    start.set()  # as a model load entering llama.cpp would
    holder.set(gemma._vocab)
    return builder.wait(), holder  # the holder keeps the C trampoline alive


@pytest.mark.model
def test_token_list_equals_llguidance_helper(gemma, fast_tokens):
    import llguidance.llamacpp as helper

    seen = {}
    real = helper.LLTokenizer

    class Spy:
        @staticmethod
        def from_llamacpp(**kw):
            seen.update(kw)
            return real.from_llamacpp(**kw)

    helper.LLTokenizer = Spy
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            helper.lltokenizer_from_vocab(gemma._vocab, n_vocab=gemma.vocab_size, eos_token=list(gemma.eos_ids))
    finally:
        helper.LLTokenizer = real
    assert seen["tokens"] == fast_tokens
    assert len(fast_tokens) == gemma.vocab_size


@pytest.mark.model
def test_special_and_eos_identical(reference, cached):
    tok, _ = cached
    assert tok.vocab_size == reference.vocab_size
    assert tok.eos_tokens == reference.eos_tokens and tok.eos_token == reference.eos_token
    assert tok.is_canonical == reference.is_canonical
    n = reference.vocab_size
    assert [tok.is_special_token(i) for i in range(n)] == [reference.is_special_token(i) for i in range(n)]
    for start in range(0, n, 8192):
        ids = list(range(start, min(n, start + 8192)))
        assert tok.decode_bytes(ids) == reference.decode_bytes(ids)
        assert tok.dbg_tokens(ids[:200]) == reference.dbg_tokens(ids[:200])


TEXTS = ["Hello, world!", " The capital of France is", "<start_of_turn>user\nHi<end_of_turn>\n", "",
         "naïve café — 東京 🙂", "a\x00b", "    indented\n\tcode()", '{"name": "Ada", "age": 36}', "x" * 3000]


@pytest.mark.model
@pytest.mark.parametrize("text", TEXTS)
def test_tokenisation_identical(reference, cached, text):
    tok, _ = cached
    assert tok.tokenize_str(text) == reference.tokenize_str(text)
    assert tok.tokenize_bytes(text.encode()) == reference.tokenize_bytes(text.encode())
    assert tok.greedy_tokenize(text) == reference.greedy_tokenize(text)
    assert tok.tokenize_str(text, parse_special=True) == reference.tokenize_str(text, parse_special=True)


def _grammars():
    from llguidance import LLMatcher

    schema = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
              "required": ["name", "age"], "additionalProperties": False}
    return {
        "regex": (LLMatcher.grammar_from_regex(r"[A-Z][a-z]{2,8} \d{1,3}(\.\d+)?"), "Paris 12.5"),
        "select": (LLMatcher.grammar_from_lark('start: " yes" | " no" | " maybe so"'), " maybe so"),
        "json": (LLMatcher.grammar_from_json_schema(schema, defaults={"whitespace_flexible": False}),
                 '{"name":"Ada Lovelace","age":36}'),
        "lark": (LLMatcher.grammar_from_lark('start: "Answer: " /[0-9]+/ "<end_of_turn>"'), None),
    }


def _untimed(res: dict) -> dict:
    """A mask result without its cost statistics (time, lexer work: a tokenizer without the mask slices
    does more work for the same mask)."""
    for item in res.get("progress", []):
        item.pop("stats", None)
    return res


@pytest.mark.model
@pytest.mark.parametrize("name", ["regex", "select", "json", "lark"])
def test_masks_identical(reference, cached, name):
    from llguidance import LLInterpreter

    grammar, text = _grammars()[name]
    tok, _ = cached
    a = LLInterpreter(reference, grammar, enable_backtrack=True, enable_ff_tokens=True, log_level=0)
    b = LLInterpreter(tok, grammar, enable_backtrack=True, enable_ff_tokens=True, log_level=0)
    prompt = reference.tokenize_str("<start_of_turn>user\nSay it<end_of_turn>\n<start_of_turn>model\nThe")
    assert a.process_prompt(list(prompt)) == b.process_prompt(list(prompt))  # token healing: same
    a = LLInterpreter(reference, grammar, enable_backtrack=True, enable_ff_tokens=True, log_level=0)
    b = LLInterpreter(tok, grammar, enable_backtrack=True, enable_ff_tokens=True, log_level=0)
    a.start_without_prompt()
    b.start_without_prompt()
    n = reference.vocab_size
    words = (n + 31) // 32
    steps = 0
    generated: list[int] = []
    target = text.encode() if text is not None else None
    while steps < 64:
        ma = np.zeros(words, dtype=np.int32)
        mb = np.zeros(words, dtype=np.int32)
        ra = json.loads(a.unsafe_compute_mask_ptr(ma.ctypes.data, ma.nbytes))
        rb = json.loads(b.unsafe_compute_mask_ptr(mb.ctypes.data, mb.nbytes))
        assert _untimed(ra) == _untimed(rb)
        np.testing.assert_array_equal(ma, mb)
        if ra.get("stop"):
            break
        allowed = np.flatnonzero(np.unpackbits(ma.view(np.uint8), bitorder="little", count=n))
        assert allowed.size
        t = int(allowed[len(allowed) // 2])
        if target is not None:  # follow the text where the mask allows it
            rest = target[len(reference.decode_bytes(generated)):]
            want = reference.tokenize_bytes(rest)[:1] if rest else []
            if want and ma[want[0] // 32] >> (want[0] % 32) & 1:
                t = want[0]
            elif reference.eos_token in allowed:
                t = reference.eos_token
        ca, cb = a.commit_token(t), b.commit_token(t)
        assert ca == cb
        backtrack, ff = ca
        if backtrack:
            del generated[-backtrack:]
        generated.extend(ff)
        steps += 1
    assert steps > 0
    if target is not None:  # the walk really went through the grammar
        assert reference.decode_bytes(generated).startswith(target)


@pytest.mark.model
def test_backend_uses_cache_and_matches(gemma, reference, tmp_path, monkeypatch):
    """A fresh backend: a cold run writes the cache; the next backend builds from it on the thread."""
    import engines.llamacpp as mod
    from engines.default_model import default_model_path

    monkeypatch.setenv("GUIDANCE_TUI_CACHE", str(tmp_path))
    monkeypatch.setenv("GUIDANCE_TUI_TOKENIZER_OVERLAP", "1")
    path = default_model_path(progress=False)
    monkeypatch.setattr(mod, "_tokenizer_cache", {})
    monkeypatch.setattr(mod, "_tokenizer_holders", {})
    b1 = mod.LlamaCppBackend(path, n_ctx=256)
    try:
        t1 = b1.ll_tokenizer()
        assert "read_vocab" in b1.tokenizer_timings
        files = list((tmp_path / "tokenizers").glob("*.tok"))
        assert len(files) == 1
        assert tc.load(files[0].stem).answers == {(b"a", False, False): tuple(b1.tokenize(b"a", add_bos=False))}
    finally:
        b1.close()
    mod._tokenizer_cache.clear()
    mod._tokenizer_holders.clear()
    b2 = mod.LlamaCppBackend(path, n_ctx=256)
    try:
        t2 = b2.ll_tokenizer()
        assert "build_thread" in b2.tokenizer_timings and "read_vocab" not in b2.tokenizer_timings
        # llama.cpp's log goes to a native no-op: a Python one would make the load wait for the build
        assert isinstance(mod._log_callback, int)
        for text in TEXTS:
            assert t2.tokenize_str(text) == reference.tokenize_str(text)
        assert t2.eos_tokens == reference.eos_tokens
    finally:
        b2.close()
    # Damage the file: the next backend notices, rebuilds from the model and rewrites it.
    data = bytearray(files[0].read_bytes())
    data[len(data) // 2] ^= 0xFF
    files[0].write_bytes(bytes(data))
    mod._tokenizer_cache.clear()
    mod._tokenizer_holders.clear()
    b3 = mod.LlamaCppBackend(path, n_ctx=256)
    try:
        t3 = b3.ll_tokenizer()
        assert "read_vocab" in b3.tokenizer_timings and "build_cached" not in b3.tokenizer_timings
        assert t3.tokenize_str(TEXTS[2]) == reference.tokenize_str(TEXTS[2])
        assert tc.load(files[0].stem) is not None  # rewritten, valid
    finally:
        b3.close()
    del t1


@pytest.mark.model
def test_a_build_with_the_cached_answers_finishes_before_the_model_is_there(gemma, fast_tokens, reference):
    """The native build tokenizes b"a" halfway through.  With the answers a live build recorded, a
    build whose vocabulary is never set (a model still loading) finishes; the answers are then
    confirmed against the live model, and the tokenizer is the reference's."""
    import llama_cpp

    live = tc.VocabHolder(llama_cpp)
    live.set(gemma._vocab)
    live.recorded = {}
    tc.build(live, fast_tokens, list(gemma.eos_ids), [])
    answers = live.recorded
    assert answers.get((b"a", False, False)) == tuple(gemma.tokenize(b"a", add_bos=False))

    holder = tc.VocabHolder(llama_cpp, answers)
    builder = tc.Builder(holder, fast_tokens, list(gemma.eos_ids), slices=[])
    builder._thread.join(timeout=120)
    assert builder.done, "the build waited for a vocabulary it had the answers for"
    assert holder.replayed == answers
    assert not holder.confirm()  # nothing to confirm with yet
    holder.set(gemma._vocab)
    assert holder.confirm()
    tok = builder.wait()
    for text in TEXTS:
        assert tok.tokenize_str(text) == reference.tokenize_str(text)


@pytest.mark.model
def test_a_wrong_cached_answer_is_caught(gemma, fast_tokens):
    """An answer the live model does not give (a cache that lies) fails ``confirm``; a call the cache
    has no answer for waits for the vocabulary, as before."""
    import llama_cpp

    holder = tc.VocabHolder(llama_cpp, {(b"a", False, False): (236747,)})  # not "a": llguidance then
    builder = tc.Builder(holder, fast_tokens, list(gemma.eos_ids), slices=[])  # asks for more, and waits
    builder._thread.join(timeout=2)
    holder.set(gemma._vocab)
    try:
        builder.wait()
    except ValueError:
        pass  # llguidance may refuse the tokenizer it was shown: either way the answer is caught
    assert holder.replayed == {(b"a", False, False): (236747,)}
    assert not holder.confirm()


@pytest.mark.model
def test_a_backend_rebuilds_when_the_cached_answers_are_wrong(gemma, reference, tmp_path, monkeypatch):
    import engines.llamacpp as mod
    from engines.default_model import default_model_path

    monkeypatch.setenv("GUIDANCE_TUI_CACHE", str(tmp_path))
    monkeypatch.setenv("GUIDANCE_TUI_TOKENIZER_OVERLAP", "1")
    monkeypatch.setattr(mod, "_tokenizer_cache", {})
    monkeypatch.setattr(mod, "_tokenizer_holders", {})
    path = default_model_path(progress=False)
    key = tc.model_key(path)
    true = {(b"a", False, False): tuple(gemma.tokenize(b"a", add_bos=False))}
    tokens = tc.read_tokens(__import__("llama_cpp"), gemma._vocab, n_vocab=gemma.vocab_size)
    tc.save(key, tokens, list(gemma.eos_ids), {(b"a", False, False): (236747,)})
    real_set = tc.VocabHolder.set

    def set_after_the_build_asked(self, vocab):  # as a slow model load: the build uses the cache's answer
        deadline = time.monotonic() + 60
        while not self.replayed and self._answers and time.monotonic() < deadline:
            time.sleep(0.01)
        real_set(self, vocab)

    monkeypatch.setattr(tc.VocabHolder, "set", set_after_the_build_asked)
    b = mod.LlamaCppBackend(path, n_ctx=256)
    try:
        tok = b.ll_tokenizer()
        assert "read_vocab" in b.tokenizer_timings  # rebuilt from the live model
        for text in TEXTS:
            assert tok.tokenize_str(text) == reference.tokenize_str(text)
        assert tc.load(key).answers == true  # and the cache now holds what the model says
    finally:
        b.close()


@pytest.mark.model
def test_the_slices_come_once_enough_tokens_were_decoded(gemma, monkeypatch):
    import engines.llamacpp as mod

    monkeypatch.setattr(mod, "SLICES_AFTER_STEPS", 2)
    monkeypatch.setattr(mod, "_tokenizer_cache", {})
    monkeypatch.setattr(mod, "_tokenizer_holders", {})
    monkeypatch.setattr(mod, "_sliced", set())
    monkeypatch.setattr(gemma, "_steps", 0)
    first = gemma.ll_tokenizer()
    assert gemma.model_id not in mod._sliced
    assert gemma.ll_tokenizer() is first  # not yet
    ids = gemma.tokenize(b"Hello", add_bos=True)
    gemma.logits(ids)
    gemma.logits(ids + [100])
    second = gemma.ll_tokenizer()
    assert second is not first and gemma.model_id in mod._sliced and "slices" in gemma.tokenizer_timings
    assert gemma.ll_tokenizer() is second  # once
    assert second.tokenize_str(TEXTS[2]) == first.tokenize_str(TEXTS[2])


FREED_BACKEND = """
import gc, sys
from engines.default_model import default_model_path
from engines.llamacpp import LlamaCppBackend

path = default_model_path()
a = LlamaCppBackend(path, n_ctx=512)
tok = a.ll_tokenizer()
want = tok.tokenize_str("hello world, again")
for how in ("close", "collect"):
    b = LlamaCppBackend(path, n_ctx=512)  # the shared tokenizer now tokenizes with b's vocabulary
    assert b.ll_tokenizer() is tok
    if how == "close":
        b.close()
    del b
    gc.collect()
    assert tok.tokenize_str("hello world, again") == want, how  # with a's, not the freed one's
    assert a.ll_tokenizer().tokenize_str("hello world, again") == want
print("ok")
"""


def test_the_shared_tokenizer_never_tokenizes_with_a_freed_models_vocabulary(tmp_path):
    """Two backends of one file share one llguidance tokenizer; closing or dropping the newer one
    used to leave it calling llama_tokenize on freed memory (a segfault)."""
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "GUIDANCE_TUI_TOKENIZER_CACHE": str(tmp_path)}
    r = subprocess.run([sys.executable, "-c", FREED_BACKEND], capture_output=True, text=True, env=env,
                       cwd=Path(__file__).resolve().parent.parent, timeout=300)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), (r.returncode, r.stderr[-2000:])
