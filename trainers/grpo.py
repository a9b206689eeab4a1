"""GRPO and RLOO on recalign instruction data: TRL's GRPOTrainer / RLOOTrainer + PEFT, with
the RecLM-gen list reward (and a format reward) as TRL ``reward_funcs``.

The policy is the SFT model: ``--adapter`` (the SFT output) is merged into the base weights
in memory and a fresh LoRA is trained on top, so "adapters disabled" is the SFT model and
TRL's KL term is measured against it. The stage output in ``output_dir`` is one adapter on
the original base (SFT then RL, see :func:`recalign.models.stack_adapters`) that
``recalign eval`` loads; the RL part alone stays in ``output_dir/rl_adapter``. Every field
of :class:`RecGRPOConfig` / :class:`RecRLOOConfig` (TRL's config plus the fields below) is
a flag, and ``--config recipe.yaml`` loads them from a file:

    accelerate launch --config_file recipes/accelerate/cpu.yaml -m recalign.trainers.grpo \\
        --method grpo --config recipes/smollm2-135m/grpo/config_ml100k.yaml
    python -m recalign.trainers.grpo --method rloo --model tiny-random --data runs/inst \\
        --adapter runs/sft --output_dir runs/rloo --max_steps 5

Rewards: ``recalign_list_reward`` (RecLM-gen list-level reward, ×10 scale, REFERENCE.md
§1.3) weighted 1 and ``recalign_format_reward`` (legal items / max(m, written), in [0, 1])
weighted ``format_reward_weight``. A reward of None (a row that cannot be judged) becomes
NaN in TRL and is left out of the sums and baselines; a completion no reward can judge gets
advantage 0.
"""
from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from trl import GRPOConfig, RLOOConfig

from .common import LoRAFields

METHODS = ("grpo", "rloo")


@dataclass
class _RecRLFields(LoRAFields):
    """The fields GRPO and RLOO share on top of TRL's config, and CPU-sized defaults."""
    model: str = field(default="smollm2-135m-instruct",
                       metadata={"help": "base model: preset, .gguf file, local HF directory or hub id"})
    adapter: str | None = field(default=None, metadata={
        "help": "SFT adapter directory (from recalign.trainers.sft): merged into the policy and the KL reference; "
                "without it RL starts from the base model"})
    data: str | None = field(default=None, metadata={"help": "directory from `recalign data build`"})
    tasks: str | None = field(default=None, metadata={
        "help": "comma-separated tasks to train on (default: every task the rewards judge: I0, I1*, I2*)"})
    max_train_samples: int | None = field(default=None, metadata={"help": "subsample the training rows"})
    format_reward_weight: float = field(default=1.0, metadata={
        "help": "weight of the format reward (in [0, 1]) next to the list reward (weight 1, ×10 scale); sets "
                "TRL's reward_weights unless those are given"})
    fuzzy: bool = field(default=False, metadata={
        "help": "rewards match titles fuzzily (Levenshtein <= 3) as well as exactly"})
    protocol: str = field(default="recalign", metadata={
        "help": "reward rules: recalign (lenient parser, masked ranks) or reclm-gen (README, 'Protocols')"})
    parser: str | None = field(default=None, metadata={"help": "override the protocol's parser: lenient | strict"})
    reward_ranks: str | None = field(default=None, metadata={
        "help": "override the protocol's teacher ranks: masked | unmasked"})
    resume: bool = field(default=False, metadata={"help": "resume from the last checkpoint in output_dir"})
    rollout_backend: str = field(default="auto", metadata={
        "help": "GRPO without TRL's use_vllm: 'vllm' samples from an in-process vLLM engine synced to the policy "
                "each step (models/rollout.py, through TRL's rollout_func), 'hf' generates on the training "
                "model, 'auto' is vllm on a CPU where vLLM works and hf otherwise (on a GPU use TRL's own "
                "--use_vllm). RLOO has no rollout hook in TRL: it always generates with hf or --use_vllm"})
    rollout_dtype: str = field(default="auto", metadata={"help": "vLLM rollout dtype (auto: float32 on CPU)"})
    rollout_kv_cache_gib: float = field(default=1.0, metadata={"help": "vLLM rollout engine KV cache (GiB)"})
    rollout_enforce_eager: bool = field(default=True, metadata={
        "help": "vLLM rollouts without torch.compile (start in seconds, not minutes)"})
    # TRL defaults changed for LoRA RL on a CPU: few, short samples; LoRA needs a larger
    # learning rate than TRL's full-model 1e-6; checkpointing only slows a small model down.
    num_generations: int | None = field(default=4, metadata={
        "help": "completions sampled per prompt; per_device_train_batch_size × processes × steps_per_generation "
                "must be a multiple of it"})
    max_completion_length: int | None = field(default=160, metadata={
        "help": "maximum completion tokens (10 titles of SmolLM2 ≈ 100)"})
    learning_rate: float = field(default=1e-5, metadata={"help": "AdamW learning rate"})
    logging_steps: float = field(default=1, metadata={"help": "log every N optimizer steps"})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "recompute activations (saves memory)"})

    beta: float | None = field(default=None, metadata={
        "help": "KL coefficient against the SFT model (default: GRPO 0.04, the k3 estimator in the loss, as in "
                "DeepSeekMath; RLOO 0.05, k1 subtracted from the sequence reward, TRL's default). 0.0 means no "
                "KL and no reference pass"})

    _METHOD = ""                        # class attributes, not fields: "grpo" or "rloo",
    _BETA = 0.0                         # the method's KL default
    _LORA = (4, 2, 0.05)

    def __post_init__(self):
        if self.beta is None:
            self.beta = self._BETA
        from recalign.trainers.sft import check_lora_fields

        check_lora_fields(self)
        if self.reward_weights is None:
            self.reward_weights = [1.0, float(self.format_reward_weight)]
        elif len(self.reward_weights) != 2:
            raise ValueError(f"reward_weights needs 2 values (list reward, format reward), got {self.reward_weights}")
        if self.rollout_backend not in ("auto", "hf", "vllm"):
            raise ValueError(f"rollout_backend must be auto, hf or vllm, got {self.rollout_backend!r}")
        super().__post_init__()


@dataclass
class RecGRPOConfig(_RecRLFields, GRPOConfig):
    _METHOD, _BETA = "grpo", 0.04       # DeepSeekMath's GRPO (TRL's default 0.0 is no KL at all)


@dataclass
class RecRLOOConfig(_RecRLFields, RLOOConfig):
    _METHOD, _BETA = "rloo", 0.05       # TRL's RLOO default


CONFIGS = {"grpo": RecGRPOConfig, "rloo": RecRLOOConfig}


def _rollout_engine(cfg: _RecRLFields, method: str, model, tok):
    """The in-process vLLM rollout engine for GRPO, or None (HF generate, or TRL's own vLLM)."""
    import torch

    from recalign.models.rollout import make_rollout_engine

    backend = cfg.rollout_backend
    if cfg.use_vllm or method != "grpo":
        if backend == "vllm" and not cfg.use_vllm:
            raise ValueError("--rollout_backend vllm: TRL's RLOOTrainer has no rollout hook; use --use_vllm "
                             "(TRL's colocate or server mode) or --rollout_backend hf")
        return None
    if backend == "auto" and torch.cuda.is_available():
        return None                 # on a GPU a second engine would compete for memory: TRL's --use_vllm
    return make_rollout_engine(backend, model, tok, log=lambda s: print(s, file=sys.stderr, flush=True),
                               who="GRPO", dtype=cfg.rollout_dtype, kv_cache_gib=cfg.rollout_kv_cache_gib,
                               enforce_eager=cfg.rollout_enforce_eager, seed=cfg.seed,
                               prefix="recalign-grpo-rollout-")


def _rollout_func(cfg: _RecRLFields, engine, model, tok):
    import os

    from recalign.models.rollout import trl_rollout_func

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")     # rollout_func is TRL-experimental; we pin TRL
    eos = {tok.eos_token_id}
    g = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    eos.update(g if isinstance(g, (list, tuple)) else [g])
    return trl_rollout_func(engine, max_new_tokens=cfg.max_completion_length, temperature=cfg.temperature,
                            top_k=cfg.top_k or None, top_p=cfg.top_p, seed=cfg.seed,
                            eos={e for e in eos if e is not None})


def reward_rows(cfg: _RecRLFields):
    """The training rows TRL sees: ``prompt`` plus the reward columns, no ``completion``."""
    from recalign.trainers.rewarding import train_reward_rows

    return train_reward_rows(cfg.data, cfg.tasks, cfg.max_train_samples, cfg.seed)


def train(cfg: _RecRLFields, method: str | None = None) -> Path:
    """Train ``cfg`` with GRPO or RLOO (``method`` defaults to the config's class) and write
    the stage's adapter and ``card.json`` to ``cfg.output_dir``."""
    from trl import GRPOTrainer, RLOOTrainer

    from recalign.data.util import provenance, sha256_file, write_json
    from recalign.models import resolve_model
    from recalign.models.adapters import load_policy, stack_into
    from recalign.models.resolve import model_fingerprint
    from recalign.trainers.rewarding import check_reward_rows, load_reward_context
    from recalign.trainers.common import lora_config, resume_checkpoint

    method = method or cfg._METHOD
    if method not in METHODS or not isinstance(cfg, CONFIGS[method]):
        raise ValueError(f"method {method!r} needs a {CONFIGS.get(method, RecGRPOConfig).__name__}, "
                         f"got {type(cfg).__name__}")
    rows = reward_rows(cfg)
    ctx = load_reward_context(cfg.data, fuzzy=cfg.fuzzy, protocol=cfg.protocol, parser=cfg.parser,
                              reward_ranks=cfg.reward_ranks)
    check_reward_rows(rows, ctx.catalog, f"{cfg.data}/dataset (train)")    # before any rollout
    from recalign.models.device import tune_cpu_training

    cpu_tuning = tune_cpu_training(cfg.torch_compile)
    model, tok = load_policy(cfg.model, cfg.adapter)
    out = Path(cfg.output_dir)
    last = resume_checkpoint(cfg)
    trainer_cls = GRPOTrainer if method == "grpo" else RLOOTrainer
    engine = _rollout_engine(cfg, method, model, tok)
    extra = {} if engine is None else {"rollout_func": _rollout_func(cfg, engine, model, tok)}
    trainer = trainer_cls(model=model, reward_funcs=[ctx.list_reward(), ctx.format_reward()], args=cfg,
                          train_dataset=rows, processing_class=tok, peft_config=lora_config(cfg, model), **extra)
    trainer.train(resume_from_checkpoint=last)
    if engine is not None:
        engine.close()
    rollout = "vllm (rollout_func)" if engine is not None else ("vllm (TRL)" if cfg.use_vllm else "hf")
    rl_dir = out / "rl_adapter" if cfg.adapter else out
    trainer.save_model(str(rl_dir))
    if not trainer.accelerator.is_main_process:
        return out
    if cfg.adapter:
        stack_into(cfg.adapter, rl_dir, out)        # one adapter: SFT then RL; checkpoints, rl_adapter/ stay
    base = resolve_model(cfg.model)
    inputs = {"train_jsonl": sha256_file(Path(cfg.data) / "train.jsonl")} \
        if (Path(cfg.data) / "train.jsonl").is_file() else {}
    if cfg.adapter and (Path(cfg.adapter) / "adapter_model.safetensors").is_file():
        inputs["sft_adapter"] = sha256_file(Path(cfg.adapter) / "adapter_model.safetensors")
    write_json(out / "card.json", provenance(
        f"trainers.{method}", {k: v for k, v in asdict(cfg).items() if not k.startswith("_")}, seed=cfg.seed,
        inputs=inputs, method=method, base_model=str(base), base_fingerprint=model_fingerprint(base),
        sft_adapter=cfg.adapter, rl_adapter=str(rl_dir), train_rows=len(rows), resumed_from=last, cpu_tuning=cpu_tuning, rollout=rollout,
        reward_funcs=list(trainer.reward_func_names), reward_weights=list(cfg.reward_weights),
        log_history=trainer.state.log_history))
    return out


def _pop_method(argv: list[str]) -> tuple[str, list[str]]:
    """``--method X`` / ``--method=X`` taken out of ``argv`` (default grpo)."""
    rest, method, i = [], "grpo", 0
    while i < len(argv):
        a = argv[i]
        if a == "--method" and i + 1 < len(argv):
            method, i = argv[i + 1], i + 2
            continue
        if a.startswith("--method="):
            method = a.split("=", 1)[1]
        else:
            rest.append(a)
        i += 1
    if method not in METHODS:
        raise SystemExit(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    return method, rest


def main(argv: list[str] | None = None) -> int:
    from . import cli_main

    method, rest = _pop_method(list(sys.argv[1:] if argv is None else argv))
    return cli_main(CONFIGS[method], lambda cfg: train(cfg, method), rest, what=f"{method} adapter")


if __name__ == "__main__":
    from recalign.errors import run_guarded

    sys.exit(run_guarded(main, prog="recalign.trainers.grpo"))
