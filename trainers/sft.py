"""LoRA SFT on recalign instruction data: TRL's SFTTrainer + PEFT, completion-only loss.

Run it directly or under accelerate; every field of :class:`RecSFTConfig` (TRL's SFTConfig
plus the fields below) is a flag, and ``--config recipe.yaml`` loads them from a file:

    accelerate launch --config_file recipes/accelerate/cpu.yaml -m recalign.trainers.sft \\
        --config recipes/smollm2-135m/sft/config_ml100k.yaml
    python -m recalign.trainers.sft --model tiny-random --data runs/inst --output_dir runs/sft --max_steps 5

The adapter, the tokenizer and a ``card.json`` (config, versions, git commit, seed, data
and base-model fingerprints) land in ``output_dir``.
"""
from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from trl import SFTConfig

from .common import LoRAFields


@dataclass
class RecSFTConfig(LoRAFields, SFTConfig):
    model: str = field(default="smollm2-135m-instruct",
                       metadata={"help": "preset, .gguf file, local HF directory or hub id"})
    data: str | None = field(default=None, metadata={"help": "directory from `recalign data build`"})
    tasks: str | None = field(default=None, metadata={"help": "comma-separated tasks to train on (default: all)"})
    max_train_samples: int | None = field(default=None, metadata={"help": "subsample the training rows"})
    eval_samples: int = field(default=0, metadata={"help": "validation rows for eval loss (0: none)"})
    load_in_4bit: bool = field(default=False, metadata={"help": "QLoRA: load the base model in 4-bit (bitsandbytes)"})
    resume: bool = field(default=False, metadata={"help": "resume from the last checkpoint in output_dir"})
    cpu_bf16: bool = field(default=False, metadata={
        "help": "on a CPU with AVX512-BF16 (or AMX), train under bf16 autocast (LoRA master weights stay "
                "fp32); bench/RESULTS.md has its speed and loss curve against fp32"})
    # TRL defaults changed for LoRA on CPU: RecLM-gen's LoRA SFT uses 1e-4..1e-3, and
    # checkpointing activations only slows a small model down.
    learning_rate: float = field(default=1e-4, metadata={"help": "AdamW learning rate"})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "recompute activations (saves memory)"})

    def __post_init__(self):
        check_lora_fields(self)
        super().__post_init__()


def check_lora_fields(cfg) -> None:
    """Shared by every LoRA trainer config on a TRL config: --data required, CPU defaults."""
    import torch

    if cfg.data is None:
        raise ValueError("--data is required: the directory written by `recalign data build`")
    if not torch.cuda.is_available():
        cfg.use_cpu = True
        # TRL's bf16 default (True) is meant for GPUs; on CPU bf16 autocast is opt-in and needs
        # the instructions (without them it is emulated and slower than fp32)
        want = bool(getattr(cfg, "cpu_bf16", False))
        if want and not (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()):
            raise ValueError("--cpu_bf16: this CPU has neither AVX512-BF16 nor AMX; train in fp32")
        cfg.bf16 = want


def load_rows(cfg: RecSFTConfig):
    import datasets

    from recalign.data.util import DataError

    path = Path(cfg.data) / "dataset"
    if not path.is_dir():
        raise DataError(f"{cfg.data}: no dataset/ folder; build one with `recalign data build --out {cfg.data}`")
    dd = datasets.load_from_disk(str(path))
    train = dd["train"]
    if cfg.tasks:
        wanted = {t.strip() for t in cfg.tasks.split(",")}
        train = train.filter(lambda t: t in wanted, input_columns="task")
        if len(train) == 0:
            raise DataError(f"{cfg.data}: no training rows for tasks {sorted(wanted)}")
    if cfg.max_train_samples:
        train = train.shuffle(seed=cfg.seed).select(range(min(cfg.max_train_samples, len(train))))
    keep = ["prompt", "completion"]
    train = train.select_columns(keep)
    valid = None
    if cfg.eval_samples and "valid" in dd:
        valid = dd["valid"].shuffle(seed=cfg.seed).select(range(min(cfg.eval_samples, len(dd["valid"]))))
        valid = valid.select_columns(keep)
    return train, valid


def train(cfg: RecSFTConfig) -> Path:
    from trl import SFTTrainer

    from recalign.data.util import provenance, sha256_file, write_json
    from recalign.models import load_model, resolve_model
    from recalign.models.device import tune_cpu_training
    from recalign.models.resolve import model_fingerprint

    from .common import load_training_model, lora_config, resume_checkpoint

    train_rows, valid_rows = load_rows(cfg)
    cpu_tuning = tune_cpu_training(cfg.torch_compile)
    model, tok = load_training_model(cfg, lambda **kw: load_model(cfg.model, **kw))
    out = Path(cfg.output_dir)
    last = resume_checkpoint(cfg)
    trainer = SFTTrainer(model=model, args=cfg, train_dataset=train_rows, eval_dataset=valid_rows,
                         processing_class=tok, peft_config=lora_config(cfg, model))
    trainer.train(resume_from_checkpoint=last)
    trainer.save_model(str(out))
    if not trainer.accelerator.is_main_process:
        return out
    base = resolve_model(cfg.model)
    inputs = {"train_jsonl": sha256_file(Path(cfg.data) / "train.jsonl")} \
        if (Path(cfg.data) / "train.jsonl").is_file() else {}
    write_json(out / "card.json", provenance(
        "trainers.sft", {k: v for k, v in asdict(cfg).items() if not k.startswith("_")}, seed=cfg.seed,
        inputs=inputs, base_model=str(base), base_fingerprint=model_fingerprint(base),
        train_rows=len(train_rows), resumed_from=last, cpu_tuning=cpu_tuning, log_history=trainer.state.log_history))
    return out


def main(argv: list[str] | None = None) -> int:
    from . import cli_main

    return cli_main(RecSFTConfig, train, argv)


if __name__ == "__main__":
    from recalign.errors import run_guarded

    sys.exit(run_guarded(main, prog="recalign.trainers.sft"))
