"""One device/dtype rule for every stage (models/device.py) and vLLM's memory arguments.

The GPU branches are exercised with torch.cuda patched: what they decide can be checked
here; that CUDA kernels then run is bench/gpu_check territory (no GPU on these machines)."""
import pytest
import torch

from recalign.data import DataError
from recalign.models import device as dev


@pytest.fixture
def fake_gpu(monkeypatch):
    def make(bf16=True):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    return make


def _qlora():
    """QLoRA's config as the trainers build it (TRL's get_quantization_config on our fields)."""
    from types import SimpleNamespace

    from trl import get_quantization_config

    from recalign.trainers.common import model_config

    cfg = SimpleNamespace(model="m", lora_r=4, lora_alpha=2, lora_dropout=0.0, lora_target_modules="all-linear",
                          load_in_4bit=True)
    q = get_quantization_config(model_config(cfg))
    assert q.load_in_4bit and q.bnb_4bit_quant_type == "nf4" and not q.bnb_4bit_use_double_quant
    return q


def test_cpu_keeps_float32_and_the_cpu():
    if torch.cuda.is_available():
        pytest.skip("this test describes a CPU machine")
    assert dev.compute_dtype() == torch.float32 and dev.device().type == "cpu"
    assert dev.trainer_precision() == {"bf16": False, "fp16": False, "use_cpu": True}
    q = _qlora()
    assert q.bnb_4bit_compute_dtype == torch.float32 and q.bnb_4bit_quant_storage == torch.float32


def test_gpu_gets_bf16_or_fp16_and_the_local_rank(fake_gpu, monkeypatch):
    fake_gpu(bf16=True)
    monkeypatch.setenv("LOCAL_RANK", "2")
    assert dev.compute_dtype() == torch.bfloat16 and dev.device() == torch.device("cuda", 2)
    assert dev.trainer_precision() == {"bf16": True, "fp16": False, "use_cpu": False}
    q = _qlora()
    assert q.bnb_4bit_compute_dtype == torch.bfloat16 and q.bnb_4bit_quant_storage == torch.bfloat16
    fake_gpu(bf16=False)
    assert dev.compute_dtype() == torch.float16 and dev.trainer_precision()["fp16"] is True


def test_vllm_memory_arguments(fake_gpu, monkeypatch):
    from recalign.eval.vllm_backend import engine_memory_kwargs

    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    if not torch.cuda.is_available():
        assert engine_memory_kwargs(1.0) == {"kv_cache_memory_bytes": 1 << 30}
        monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "4")
        assert engine_memory_kwargs(1.0) == {}               # the user's setting wins
        with pytest.raises(DataError, match="tensor parallelism needs GPUs"):
            engine_memory_kwargs(1.0, tensor_parallel_size=2)
    fake_gpu()
    # on a GPU the KV cache is what gpu_memory_utilization leaves: no fixed 1 GiB
    assert engine_memory_kwargs(1.0, 0.8, 2) == {"gpu_memory_utilization": 0.8, "tensor_parallel_size": 2}
    for bad in ({"gpu_memory_utilization": 1.5}, {"tensor_parallel_size": 0}):
        with pytest.raises(DataError):
            engine_memory_kwargs(1.0, **bad)


def test_auto_dtype_asks_the_device_rule(fake_gpu, monkeypatch):
    from recalign.eval import backends

    seen = {}

    class Engine:
        def __init__(self, model, adapter, **kw):
            seen.update(kw)

    import recalign.eval.vllm_backend as vb

    monkeypatch.setattr(backends, "vllm_problem", lambda: None)
    monkeypatch.setattr(vb, "VLLMBackend", Engine)
    fake_gpu()
    backends.make_backend("vllm", "tiny-random", dtype="auto", gpu_memory_utilization=0.7)
    assert seen["dtype"] == "bfloat16" and seen["gpu_memory_utilization"] == 0.7


def test_cpu_tuning_scores_only_completion_positions_with_the_same_loss(tmp_path, monkeypatch):
    """TRL's fused head scores every position off Triton; tuned, it scores only the labelled
    ones, and the loss and its gradient do not change."""
    if torch.cuda.is_available():
        pytest.skip("this test describes a CPU machine")
    import trl.kernels.chunked_logprob as kernels
    import trl.trainer.utils as trl_utils
    from transformers import AutoModelForCausalLM

    from recalign.models.resolve import build_tiny_random

    monkeypatch.setattr(trl_utils, "_use_triton", kernels._use_triton)   # TRL as shipped
    model = AutoModelForCausalLM.from_pretrained(build_tiny_random(tmp_path / "tiny"), dtype=torch.float32)
    trl_utils.add_fused_lm_head(model)
    ids = torch.randint(0, model.config.vocab_size, (2, 24), generator=torch.Generator().manual_seed(0))
    labels = ids.clone()
    labels[:, :16] = -100                   # the prompt: 15 of 23 scored positions carry no label
    scored = []
    apply = trl_utils._ChunkedLogProbFunction.apply
    monkeypatch.setattr(trl_utils._ChunkedLogProbFunction, "apply",
                        lambda h, *a: scored.append(h.shape[0]) or apply(h, *a))

    def loss_and_grad():
        model.zero_grad()
        loss = model(input_ids=ids, labels=labels, fused_lm_head=True).loss
        loss.backward()
        return loss.item(), model.lm_head.weight.grad.clone()

    before, grad_before = loss_and_grad()
    monkeypatch.setattr(dev, "_CPU_TUNED", None)
    assert "completion-only head" in dev.tune_cpu_training()
    after, grad_after = loss_and_grad()
    assert scored == [2 * 23, 2 * 8]
    assert after == pytest.approx(before, rel=1e-5)
    assert torch.allclose(grad_after, grad_before, atol=1e-6)
    assert "completion-only head" not in dev.tune_cpu_training(torch_compile=True)


def test_release_cpu_memory_gives_the_training_heap_back():
    """With the allocator tuned for training, a freed 256 MB tensor stays in the process until
    release_cpu_memory trims the heap (the pipeline calls it after every stage)."""
    import os

    if torch.cuda.is_available() or "malloc" not in dev.tune_cpu_training(torch_compile=True):
        pytest.skip("glibc's allocator is tuned only for CPU training")

    def rss():
        return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    x = torch.ones(64 * 2 ** 20)            # 256 MB, written, so resident
    del x
    held = rss()
    assert dev.release_cpu_memory() is True
    assert held - rss() > 200 * 2 ** 20
