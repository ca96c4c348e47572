"""The transformers backend on tiny models built here (a byte-level BPE tokenizer and random weights).

Fast: no downloads, no real weights.  The numbers the model produces are
meaningless; what is tested is the cache bookkeeping, the rows returned, the
vocabulary plumbing and that constrained programs and their traces hold.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from engines import ModelLoadError, gen, models, regex, select  # noqa: E402
from engines.transformers_backend import TransformersBackend  # noqa: E402

pytestmark = pytest.mark.transformers

CORPUS = [
    "The capital of France is Paris. The capital of Germany is Berlin.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 42 100 2024.",
    "yes no maybe; red green blue; cats and dogs.",
    "Unicode: café naïve € 日本語 ✓ — emoji 🙂.",
    "def f(x):\n    return x + 1\n",
]
SPECIALS = ["<s>", "</s>", "<pad>", "<turn>"]


def make_tokenizer(vocab_size: int = 400):
    from tokenizers import Tokenizer, decoders, models as tmodels, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(tmodels.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS * 4, trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", bos)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   additional_special_tokens=["<turn>"])


def make_model_dir(path, kind: str):
    tok = make_tokenizer()
    v = len(tok)
    torch.manual_seed(0)
    common = dict(vocab_size=v, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=8, max_position_embeddings=256, initializer_range=0.5,
                  bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    if kind == "gemma3":
        # A window of 4 with sliding and full layers mixed: cropping far back must still work.
        cfg = transformers.Gemma3TextConfig(sliding_window=4, layer_types=["sliding_attention", "full_attention",
                                                                           "sliding_attention"], **common)
        model = transformers.Gemma3ForCausalLM(cfg)
    else:
        cfg = transformers.LlamaConfig(**common)
        model = transformers.LlamaForCausalLM(cfg)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module", params=["llama", "gemma3"])
def model_dir(request, tmp_path_factory):
    torch.set_num_threads(min(2, torch.get_num_threads()))
    return make_model_dir(tmp_path_factory.mktemp(request.param), request.param)


@pytest.fixture(scope="module")
def backend(model_dir):
    return TransformersBackend(model_dir, progress=False, device="cpu")  # numbers compared here: CPU always


def full_logits(backend: TransformersBackend, ids: list[int]) -> np.ndarray:
    """Every row of one uncached forward pass, the reference."""
    with torch.inference_mode():
        out = backend._model(input_ids=torch.tensor([ids], device=backend.device), use_cache=False)
    return out.logits[0].float().cpu().numpy()


def sample_ids(backend, n: int, seed: int = 1) -> list[int]:
    rng = np.random.default_rng(seed)
    return [backend.bos_id] + [int(i) for i in rng.integers(10, backend.vocab_size, n - 1)]


ATOL = 1e-4


def test_basic_properties(backend):
    assert backend.vocab_size == len(backend._tok)
    assert backend.bos_id == backend._tok.convert_tokens_to_ids("<s>")
    assert backend._tok.convert_tokens_to_ids("</s>") in backend.eos_ids
    assert backend.name == "transformers"
    assert backend.device.type == "cpu"
    assert backend.info["dtype"] == "float32"
    assert backend.architecture in ("llama", "gemma3")


def test_incremental_equals_full_forward(backend):
    ids = sample_ids(backend, 24)
    ref = full_logits(backend, ids)
    backend.reset()
    for n in range(1, len(ids) + 1):
        row = backend.logits(ids[:n], 1)
        assert row.shape == (1, backend.vocab_size)
        assert row.dtype == np.float32
        np.testing.assert_allclose(row[0], ref[n - 1], atol=ATOL, rtol=0)
    assert backend._cached == ids


def test_n_rows(backend):
    ids = sample_ids(backend, 20, seed=2)
    ref = full_logits(backend, ids)
    backend.reset()
    rows = backend.logits(ids[:12], 1)
    rows = backend.logits(ids, 5)  # 8 new tokens, 5 rows
    assert rows.shape == (5, backend.vocab_size)
    np.testing.assert_allclose(rows, ref[-5:], atol=ATOL, rtol=0)
    # rows reaching back into the cache: the cache is trimmed so they are recomputed
    rows = backend.logits(ids, 9)
    np.testing.assert_allclose(rows, ref[-9:], atol=ATOL, rtol=0)
    # the same sequence again: the last row is recomputed, not lost
    rows = backend.logits(ids, 1)
    np.testing.assert_allclose(rows[0], ref[-1], atol=ATOL, rtol=0)
    assert backend._cached == ids


def test_crop_on_backtrack_matches_fresh(backend):
    a = sample_ids(backend, 30, seed=3)
    b = a[:9] + sample_ids(backend, 12, seed=4)[1:]  # shares 9 tokens, past the sliding window of 4
    backend.reset()
    backend.logits(a, 1)
    got = backend.logits(b, 3)
    assert backend._cached == b
    np.testing.assert_allclose(got, full_logits(backend, b)[-3:], atol=ATOL, rtol=0)
    backend.reset()
    fresh = backend.logits(b, 3)
    np.testing.assert_allclose(got, fresh, atol=ATOL, rtol=0)
    # a one-token backtrack then a different token, repeatedly (what the loop does)
    seq = list(b)
    for k in range(5):
        seq = seq[:-1] + [100 + k]
        row = backend.logits(seq, 1)
        np.testing.assert_allclose(row[0], full_logits(backend, seq)[-1], atol=ATOL, rtol=0)


def test_chunked_prompt(model_dir):
    small = TransformersBackend(model_dir, progress=False, n_batch=4, device="cpu")
    ids = sample_ids(small, 23, seed=5)
    rows = small.logits(ids, 3)
    np.testing.assert_allclose(rows, full_logits(small, ids)[-3:], atol=ATOL, rtol=0)
    rows = small.logits(ids + [50, 51, 52, 53, 54, 55], 6)  # more rows than a chunk
    np.testing.assert_allclose(rows, full_logits(small, ids + [50, 51, 52, 53, 54, 55])[-6:], atol=ATOL, rtol=0)


TEXTS = ["The capital of France is Paris.", "café € 日本語 🙂", "  two  spaces\nand\ttab", "<turn>user\nhi</s>",
         "Numbers: 42"]


@pytest.mark.parametrize("text", TEXTS)
def test_tokenize_round_trip(backend, text):
    data = text.encode()
    ids = backend.tokenize(data, add_bos=False)
    assert b"".join(backend.token_bytes(i) for i in ids) == data
    with_bos = backend.tokenize(data, add_bos=True)
    assert with_bos == [backend.bos_id] + ids
    # no double BOS when the text already starts with it
    assert backend.tokenize(b"<s>" + data, add_bos=True) == with_bos


def test_special_markers_stay_single_tokens(backend):
    ids = backend.tokenize(b"<turn>user</s>", add_bos=False)
    assert ids[0] == backend._tok.convert_tokens_to_ids("<turn>")
    assert ids[-1] == backend._tok.convert_tokens_to_ids("</s>")
    assert backend.token_bytes(ids[0]) == b"<turn>"


def test_token_bytes_agree_with_llguidance(backend):
    ll = backend.ll_tokenizer()
    special = set(backend._special)
    for i in range(backend.vocab_size):
        if i in special or backend.token_bytes(i) == b"\xff":  # llguidance marks special tokens with 0xff
            continue
        assert backend.token_bytes(i) == ll.decode_bytes([i]), i


def test_invalid_utf8_tokenizes_to_bytes(backend):
    data = "ab€".encode()[:-1] + b"cd"  # a cut multi-byte character in the middle
    ids = backend.tokenize(data, add_bos=False)
    assert b"".join(backend.token_bytes(i) for i in ids) == data


def test_context_overflow(model_dir):
    from engines import ContextOverflow

    small = TransformersBackend(model_dir, progress=False, n_ctx=16)
    assert small.n_ctx == 16
    with pytest.raises(ContextOverflow):
        small.logits(list(range(5, 21)), 1)


def test_bad_paths(tmp_path):
    with pytest.raises(ModelLoadError, match="not found"):
        TransformersBackend(tmp_path / "missing", progress=False)
    with pytest.raises(ModelLoadError, match="no config.json"):
        TransformersBackend(tmp_path, progress=False)
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not a model at all")
    with pytest.raises(ModelLoadError, match="not a GGUF"):
        TransformersBackend(junk, progress=False)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{")
    with pytest.raises(ModelLoadError) as e:
        TransformersBackend(broken, progress=False)
    assert "\n" not in str(e.value)
    with pytest.raises(ModelLoadError, match="dtype"):
        TransformersBackend(tmp_path, dtype="float8")
    # through the public constructor too
    with pytest.raises(ModelLoadError):
        models.Transformers(tmp_path / "missing")


def test_unknown_option_is_rejected(model_dir):
    with pytest.raises(TypeError):
        models.Transformers(model_dir, bogus=1)


# -- programs through the decode loop ------------------------------------------------

def trace_text(s) -> str:
    return s.store.text_at(s.store.last_seq)


def test_program_gen_select_regex(model_dir, session):
    lm = models.Transformers(model_dir, dtype="float32", n_ctx=256, monitoring=False)
    lm += "Numbers: " + regex(r"[0-9]{2,4}", name="num")
    assert re.fullmatch(r"[0-9]{2,4}", lm["num"])
    lm += " and " + select(["red", "green", "blue"], name="colour")
    assert lm["colour"] in ("red", "green", "blue")
    lm += ". " + gen("free", max_tokens=8)
    assert str(lm).startswith("Numbers: " + lm["num"] + " and " + lm["colour"] + ". ")
    assert trace_text(session) == str(lm)


def test_program_with_backtracking_branches(model_dir, session):
    base = models.Transformers(model_dir, monitoring=False) + "The capital of France is"
    b = base + gen("rest", max_tokens=5, stop=".")
    a = base + select([" Paris", " Berlin"], name="city")  # another branch from the same base
    c = a + ". Yes " + gen("n", regex=r"[0-9]+", max_tokens=3)
    assert a["city"] in (" Paris", " Berlin")
    assert re.fullmatch(r"[0-9]*", c["n"])
    assert "." not in b["rest"]
    assert trace_text(session) == str(c)


def test_cuda_device_refused_without_cuda(model_dir):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ModelLoadError, match="CUDA"):
        TransformersBackend(model_dir, device="cuda", progress=False)


# -- the GGUF conversion cache ----------------------------------------------------------

def test_gguf_cache_hit_and_failed_conversion(model_dir, tmp_path, monkeypatch, capsys):
    """A GGUF whose conversion is cached loads from the cache; a broken one fails cleanly, leaving nothing."""
    import shutil

    from engines.transformers_backend import _DONE, converted_path

    monkeypatch.setenv("GUIDANCE_TUI_CACHE", str(tmp_path / "cache"))
    fake = tmp_path / "tiny.gguf"
    fake.write_bytes(b"GGUF" + bytes(60))
    target = converted_path(fake)
    assert target == converted_path(fake)  # stable
    assert target.parent == tmp_path / "cache" / "models" / "hf" and target.name.startswith("tiny-")

    # not converted yet: transformers cannot read this file -> one-line error, no debris
    with pytest.raises(ModelLoadError) as e:
        TransformersBackend(fake, device="cpu")
    assert "\n" not in str(e.value) and "convert" in str(e.value)
    assert not target.exists() and list(target.parent.iterdir()) == []
    assert "converting tiny.gguf" in capsys.readouterr().err

    # a finished conversion in the cache is used as it is
    shutil.copytree(model_dir, target)
    (target / _DONE).write_text("{}")
    b = TransformersBackend(fake, device="cpu")
    assert b.model_id == str(fake)
    assert b.vocab_size == len(b._tok)
    assert "loading tiny.gguf" in capsys.readouterr().err
    # a changed file gets another cache entry
    fake.write_bytes(b"GGUF" + bytes(61))
    assert converted_path(fake) != target


# -- the command line -----------------------------------------------------------------

def test_record_with_backend_transformers(tmp_path):
    """`guidance-tui record --backend transformers --model DIR` records a run made by this engine."""
    import subprocess
    import sys

    model_dir = make_model_dir(tmp_path / "tiny", "llama")

    from tracing import Message, RunEnd, RunStart, Token, TraceStore, read_trace

    script = tmp_path / "prog.py"
    script.write_text("from engines import gen, models, select\n"
                      "lm = models.default() + 'Numbers: ' + gen('n', regex='[0-9]{2}') + ' ' + select(['yes', 'no'])\n"
                      "print(str(lm))\n")
    out = tmp_path / "run.gtt"
    proc = subprocess.run([sys.executable, "-m", "guidance_tui", "record", "-q", "--backend", "transformers",
                           "--model", str(model_dir), "-o", str(out), str(script)],
                          capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    events = read_trace(out).events
    assert any(isinstance(e, RunStart) and e.backend == "transformers" for e in events)
    assert any(isinstance(e, Message) and "(transformers)" in e.text for e in events)
    assert sum(isinstance(e, Token) for e in events) > 3
    assert [e.status for e in events if isinstance(e, RunEnd)] == ["done"]
    store = TraceStore(events)
    assert re.fullmatch(r"Numbers: [0-9]{2} (yes|no)", store.text_at(store.last_seq))
