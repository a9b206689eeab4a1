"""Where models run and in which precision: one rule for every stage.

On a CUDA machine models go to the GPU in bfloat16 (float16 where the GPU has no bf16);
on a CPU they stay in float32, which vLLM-CPU and the HF kernels run fastest without AMX
(bench/RESULTS.md). A stage asks these helpers instead of deciding on its own, so a GPU
user never finds one stage left on the CPU or in fp32.

>>> import torch
>>> compute_dtype() if not torch.cuda.is_available() else torch.float32
torch.float32
"""
from __future__ import annotations


def device():
    """``cuda`` when a GPU is visible (the local rank's under torchrun/accelerate), else ``cpu``."""
    import os

    import torch

    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % max(torch.cuda.device_count(), 1))
    return torch.device("cpu")


def compute_dtype():
    """bfloat16 on a GPU that has it, float16 on older GPUs, float32 on CPU."""
    import torch

    if not torch.cuda.is_available():
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def dtype_name(dtype) -> str:
    return str(dtype).removeprefix("torch.")


def trainer_precision() -> dict:
    """TrainingArguments precision flags for a trainer that has no ``cpu_bf16``-style choice:
    bf16 (or fp16) mixed precision on GPU, fp32 on CPU."""
    import torch

    if not torch.cuda.is_available():
        return {"bf16": False, "fp16": False, "use_cpu": True}
    bf16 = compute_dtype() == torch.bfloat16
    return {"bf16": bf16, "fp16": not bf16, "use_cpu": False}


def bnb_4bit_config():
    """QLoRA's 4-bit NF4 config: compute in the device's dtype (fp32 only on CPU), and store
    the packed weights in that dtype too, which ZeRO-3 and FSDP need to shard them."""
    from transformers import BitsAndBytesConfig

    dt = compute_dtype()
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dt,
                              bnb_4bit_quant_storage=dt)
