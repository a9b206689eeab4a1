"""An in-process vLLM engine that samples RL rollouts from the current LoRA policy.

The engine holds a copy of the trunk (the base with the SFT adapter merged). Before a step
samples, :meth:`RolloutEngine.sync` loads the policy's effective weights (W + s·BA of every
LoRA module of the named adapter) into it, so vLLM samples from the current policy with no
LoRA kernel (slow on CPU) and no adapter files. Log-probs for the update still come from the
training model. PPO (trainers/ppo.py) and GRPO/RLOO (trainers/grpo.py, through TRL's
``rollout_func``) share it; grounded rollouts go through the same V1 logits processor as
grounded evaluation.
"""
from __future__ import annotations

import re
import tempfile
from typing import Callable, Sequence


class RolloutEngine:
    """vLLM on a saved copy of ``model``; ``sync`` it to a PEFT policy before sampling."""

    def __init__(self, model, tok, *, dtype: str = "auto", kv_cache_gib: float = 1.0, enforce_eager: bool = True,
                 seed: int = 0, prefix: str = "recalign-rollout-"):
        from recalign.eval.backends import make_backend

        self._dir = tempfile.TemporaryDirectory(prefix=prefix)
        model.save_pretrained(self._dir.name)
        tok.save_pretrained(self._dir.name)
        self.backend = make_backend("vllm", self._dir.name, dtype=dtype, kv_cache_gib=kv_cache_gib,
                                    enforce_eager=enforce_eager, seed=seed)
        self.synced_at = None            # the trainer step whose weights the engine holds

    def sync(self, peft_model, adapter: str, step=None) -> None:
        """Load ``adapter``'s effective weights: every linear layer of each decoder block that
        has a LoRA of it (whole blocks, so that stacked q/k/v and gate/up layers get all their
        shards). ``step`` only records which weights the engine holds."""
        import torch
        from peft.tuners.lora import LoraLayer

        block_of = re.compile(r"(.*\.layers\.\d+)\.")
        mods = dict(peft_model.named_modules())
        blocks = {m.group(1) for n, mod in mods.items() if isinstance(mod, LoraLayer) and adapter in mod.lora_A
                  for m in [block_of.match(n)] if m}
        weights = []
        with torch.no_grad():
            for name, mod in mods.items():
                block = block_of.match(name)
                if not block or block.group(1) not in blocks:
                    continue
                hf = name[len("base_model.model."):] if name.startswith("base_model.model.") else name
                if isinstance(mod, LoraLayer):
                    w = mod.get_base_layer().weight
                    if adapter in mod.lora_A:
                        w = w + mod.get_delta_weight(adapter)
                    weights.append((f"{hf}.weight", w))
                elif isinstance(mod, torch.nn.Linear) and ".base_layer" not in name and ".lora_" not in name:
                    weights.append((f"{hf}.weight", mod.weight))     # a block's linear without any LoRA
        self.backend.load_weights(weights)
        self.synced_at = step

    def generate_ids(self, prompts, sampling, grounded=None) -> list[list[int]]:
        return self.backend.generate_ids(prompts, sampling, grounded)

    def prompt_ids(self, prompts) -> list[list[int]]:
        """The token ids vLLM generates from for each chat prompt (its chat template applied)."""
        return [p["prompt_token_ids"] for p in self.backend._token_prompts(prompts)]

    def close(self) -> None:
        self.backend.close()
        self._dir.cleanup()


def make_rollout_engine(backend: str, model, tok, *, log: Callable[[str], None], who: str,
                        **engine_kw) -> RolloutEngine | None:
    """The engine for ``backend`` ('vllm', 'auto', 'hf'): None for 'hf', and for 'auto' when
    vLLM does not work here (with a one-line note saying why)."""
    if backend == "hf":
        return None
    if backend == "auto":
        from recalign.eval.backends import vllm_problem

        if problem := vllm_problem():
            log(f"note: {problem}; {who} rollouts use Hugging Face generate")
            return None
    return RolloutEngine(model, tok, **engine_kw)


def trim_after_eos(seqs: Sequence[Sequence[int]], eos: set[int]) -> list[list[int]]:
    """Each answer cut after its first end token (kept), as HF generate would stop."""
    out = []
    for row in seqs:
        cut = next((k + 1 for k, t in enumerate(row) if t in eos), len(row))
        out.append(list(row[:cut]))
    return out


def trl_rollout_func(engine: RolloutEngine, *, max_new_tokens: int, temperature: float, top_k: int | None,
                     seed: int, eos: set[int], top_p: float = 1.0, adapter: str = "default"):
    """TRL's ``rollout_func`` for GRPOTrainer/RLOOTrainer: one sampled completion per prompt row
    it is given (TRL's sampler already repeats each prompt ``num_generations`` times), from the
    engine synced to the trainer's current policy whenever the optimizer step changed. Returns
    no sampling log-probs: TRL then takes them from the training model, as without vLLM."""
    from recalign.eval.backends import Sampling

    calls = [0]

    def rollout(prompts, trainer):
        step = trainer.state.global_step
        if engine.synced_at != step:
            engine.sync(trainer.accelerator.unwrap_model(trainer.model), adapter, step)
        calls[0] += 1
        sampling = Sampling(max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                            seed=(seed * 1_000_003 + calls[0] * 7919 + trainer.accelerator.process_index)
                            % (2 ** 31))
        ids = trim_after_eos(engine.generate_ids(prompts, sampling), eos)
        return {"prompt_ids": engine.prompt_ids(prompts), "completion_ids": ids, "logprobs": None}

    return rollout
