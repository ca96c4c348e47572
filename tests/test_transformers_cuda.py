"""The transformers engine on CUDA, with the monitor recording the GPU.  Skips itself without CUDA."""

from __future__ import annotations

import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

if not torch.cuda.is_available():
    pytest.skip(f"needs an NVIDIA GPU with CUDA: torch {torch.__version__} sees none "
                f"(built for CUDA: {torch.version.cuda or 'no'})", allow_module_level=True)

from engines import gen, models, select  # noqa: E402
from engines import session as sessions  # noqa: E402
from engines.transformers_backend import TransformersBackend  # noqa: E402
from test_transformers_backend import full_logits, make_model_dir, sample_ids  # noqa: E402
from tracing import Metric  # noqa: E402

pytestmark = [pytest.mark.transformers, pytest.mark.cuda]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_model_dir(tmp_path_factory.mktemp("gemma3"), "gemma3")


def test_auto_device_is_cuda(model_dir):
    b = TransformersBackend(model_dir, progress=False)
    assert b.device.type == "cuda"
    assert next(b._model.parameters()).is_cuda
    assert b.info["device"].startswith("cuda")


def test_cuda_logits_match_cpu(model_dir):
    gpu = TransformersBackend(model_dir, device="cuda", progress=False)
    cpu = TransformersBackend(model_dir, device="cpu", progress=False)
    ids = sample_ids(cpu, 30, seed=7)
    ref = full_logits(cpu, ids)
    got = gpu.logits(ids[:20], 1)
    got = gpu.logits(ids, 4)
    assert got.dtype == np.float32 and got.shape == (4, cpu.vocab_size)
    np.testing.assert_allclose(got, ref[-4:], atol=1e-3, rtol=0)
    b = ids[:12] + sample_ids(cpu, 6, seed=8)[1:]  # crop on the GPU
    np.testing.assert_allclose(gpu.logits(b, 2), full_logits(cpu, b)[-2:], atol=1e-3, rtol=0)


def test_program_on_cuda_records_gpu_metrics(model_dir):
    s = sessions.Session(monitoring=True)
    sessions.activate(s)
    try:
        lm = models.Transformers(model_dir, device="cuda")
        assert lm.engine.backend.device.type == "cuda"
        lm += "The capital of France is" + gen("x", max_tokens=16) + " " + select(["yes", "no"], name="yn")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not any(isinstance(e, Metric) and e.gpus for e in s.store.events()):
            time.sleep(0.1)
    finally:
        sessions.activate(None)
        s.close()
    assert lm["yn"] in ("yes", "no")
    assert s.store.text_at(s.store.last_seq) == str(lm)
    gpus = [g for e in s.store.events() if isinstance(e, Metric) for g in e.gpus]
    if not gpus:
        pytest.skip("CUDA works but NVML (nvidia-ml-py) reports no GPU, so the monitor cannot sample it")
    assert all(g.mem_total > 0 for g in gpus)
    assert max(g.mem_used for g in gpus) > 0
