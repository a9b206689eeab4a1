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


_CPU_TUNED: list[str] | None = None
_TUNED_LIBC = None          # glibc, once its allocator is tuned: release_cpu_memory trims through it


def tune_cpu_training(torch_compile: bool = False) -> list[str]:
    """Two fixes for training on a CPU, measured in bench/sft.py (RESULTS.md, "SFT on CPU:
    allocator and completion-only head"); a no-op on a GPU. Returns what it changed.

    * glibc hands every allocation above 32 MB to ``mmap`` and unmaps it on free, so each
      logits tile of TRL's chunked LM head (tokens x 32k vocab, ~130 MB in fp32) is faulted
      in page by page on every step: a third of the step was system time. Large blocks now
      stay on the heap (``M_MMAP_MAX=0``) and the heap is not trimmed; RSS stays at its peak.
    * TRL's fused LM head scores only the completion positions on Triton devices and every
      position elsewhere, to spare compilers a new shape per batch (its comment names Neuron).
      Eager CPU training compiles nothing, so the prompt part of the 49k-vocab head was
      wasted work: it now scores completion positions on CPU too (not under torch_compile).
      The loss is the same (tests/unit/test_device.py).

    >>> tune_cpu_training() if not __import__("torch").cuda.is_available() else []  # doctest: +SKIP
    ['malloc', 'completion-only head']
    """
    global _CPU_TUNED, _TUNED_LIBC
    import torch

    if torch.cuda.is_available():
        return []
    if _CPU_TUNED is None:
        import ctypes
        import ctypes.util

        _CPU_TUNED = []
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            # M_TRIM_THRESHOLD = -1, M_MMAP_MAX = -4 (malloc.h); mallopt returns 1 on success
            if libc.mallopt(-4, 0) == 1 and libc.mallopt(-1, 2 ** 31 - 1) == 1:
                _CPU_TUNED.append("malloc")
                _TUNED_LIBC = libc
        except (OSError, AttributeError):      # not glibc (musl, macOS): nothing to tune
            pass
    done = list(_CPU_TUNED)
    if torch_compile:
        return done
    import trl.trainer.utils as trl_utils

    picker = getattr(trl_utils, "_use_triton", None)
    if picker is None:                         # TRL moved it: the head scores every position, still correct
        return done
    if not getattr(picker, "recalign_cpu", False):
        def compact_on_cpu(dev, _orig=picker):
            return dev.type == "cpu" or _orig(dev)
        compact_on_cpu.recalign_cpu = True
        trl_utils._use_triton = compact_on_cpu
    return done + ["completion-only head"]


def release_cpu_memory() -> bool:
    """Give the heap's free pages back to the OS (glibc ``malloc_trim``) once training is over.

    :func:`tune_cpu_training` keeps freed blocks on the heap for speed, so without this a
    process holds its training peak into whatever comes next: after 600 bf16 SFT steps the
    pipeline's process held 19 GB of a 24 GB machine going into the vLLM evaluations (proof
    run 4, bench/RESULTS.md). Returns True when memory was trimmed (tuned glibc only).
    """
    import gc

    if _TUNED_LIBC is None:
        return False
    gc.collect()
    _TUNED_LIBC.malloc_trim(0)
    return True

