"""What every LoRA trainer shares: its LoRA and 4-bit settings as TRL's ``ModelConfig`` (so
TRL's ``get_peft_config`` / ``get_quantization_config`` build them, as in ``trl sft``), the
training model's set-up, and the checkpoint a run resumes from.

>>> from types import SimpleNamespace
>>> cfg = SimpleNamespace(model="tiny-random", lora_r=4, lora_alpha=2, lora_dropout=0.0,
...                       lora_target_modules="q_proj,v_proj", lora_top_layers=None)
>>> model_config(cfg).lora_target_modules
['q_proj', 'v_proj']
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class LoRAFields:
    """The LoRA fields of every trainer config, named as in TRL's ``ModelConfig``. Rank, alpha
    and dropout default to the method's own values (class attribute ``_LORA``: SFT and A-SFT
    16/8/0.1 as RecLM-gen's SFT, PPO 4/2/0 and GRPO/RLOO 4/2/0.05 as its RL, the DPO loop 8/16/0.05)."""
    lora_r: int | None = field(default=None, metadata={
        "help": "LoRA rank (default: the method's: SFT 16, PPO/GRPO/RLOO 4, DPO loop 8)"})
    lora_alpha: int | None = field(default=None, metadata={
        "help": "LoRA alpha (default: the method's: SFT 8, PPO/GRPO/RLOO 2, DPO loop 16)"})
    lora_dropout: float | None = field(default=None, metadata={
        "help": "LoRA dropout (default: the method's: SFT 0.1, GRPO/RLOO and DPO loop 0.05, PPO 0 so that "
                "rollout and update log-probs come from the same function)"})
    lora_target_modules: str = field(default="all-linear", metadata={"help": "'all-linear' or comma-separated names"})
    lora_top_layers: int | None = field(default=None, metadata={
        "help": "LoRA only on the last N decoder layers (backward then stops early: faster on CPU)"})

    _LORA = (16, 8, 0.1)            # class attribute, not a field: (r, alpha, dropout) defaults

    def __post_init__(self):
        r, alpha, dropout = self._LORA
        self.lora_r = r if self.lora_r is None else self.lora_r
        self.lora_alpha = alpha if self.lora_alpha is None else self.lora_alpha
        self.lora_dropout = dropout if self.lora_dropout is None else self.lora_dropout
        if self.lora_r < 1:
            raise ValueError(f"lora_r must be >= 1, got {self.lora_r}")
        parent = getattr(super(), "__post_init__", None)
        if parent is not None:
            parent()


def model_config(cfg):
    """``cfg``'s LoRA and 4-bit fields as a ``trl.ModelConfig``.

    The quantized weights are stored in the compute dtype (fp32 on CPU, bf16/fp16 on GPU),
    which ZeRO-3 and FSDP need to shard them."""
    from trl import ModelConfig

    from recalign.models.device import compute_dtype, dtype_name

    targets = cfg.lora_target_modules
    if targets != "all-linear":
        targets = [m.strip() for m in targets.split(",") if m.strip()]
    dt = dtype_name(compute_dtype())
    return ModelConfig(model_name_or_path=cfg.model, use_peft=True, lora_r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                       lora_dropout=cfg.lora_dropout, lora_target_modules=targets,
                       load_in_4bit=bool(getattr(cfg, "load_in_4bit", False)), bnb_4bit_quant_type="nf4",
                       bnb_4bit_quant_storage=dt, dtype=dt)


def lora_config(cfg, model):
    """TRL's LoRA config for ``cfg``, limited to the top ``cfg.lora_top_layers`` decoder layers
    when set (the backward pass then stops early, which is most of LoRA's speed on a CPU)."""
    import dataclasses

    import torch
    from trl import get_peft_config

    mc = model_config(cfg)
    if not cfg.lora_top_layers:
        return get_peft_config(mc)
    if mc.lora_target_modules == "all-linear":
        # peft needs explicit names with layers_to_transform: every linear inside the blocks
        mc.lora_target_modules = sorted({name.rsplit(".", 1)[-1] for name, mod in model.named_modules()
                                         if isinstance(mod, torch.nn.Linear) and ".layers." in name})
    n = model.config.num_hidden_layers
    layers = list(range(max(0, n - cfg.lora_top_layers), n))
    return dataclasses.replace(get_peft_config(mc), layers_to_transform=layers)


def load_training_model(cfg, load):
    """``load(**kw)`` (e.g. ``lambda **kw: load_policy(cfg.model, cfg.adapter, **kw)``) with the
    4-bit config when ``cfg.load_in_4bit``, ready for LoRA training: tokenizer padding on the
    right, k-bit layers prepared. Returns ``(model, tokenizer)``."""
    from trl import get_quantization_config

    q = get_quantization_config(model_config(cfg))
    model, tok = load(**({"quantization_config": q} if q is not None else {}))
    tok.padding_side = "right"          # training pads on the right; generation sets left again
    if q is not None:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    return model, tok


def resume_checkpoint(cfg) -> str | None:
    """The checkpoint in ``cfg.output_dir`` to resume from (``cfg.resume``), after checking it was
    made with the same settings; ``None`` for a fresh run. Records this run's settings."""
    from transformers.trainer_utils import get_last_checkpoint

    from recalign.data.util import check_resume

    out = Path(cfg.output_dir)
    last = get_last_checkpoint(str(out)) if cfg.resume and out.is_dir() else None
    check_resume(out, cfg, last is not None)
    return last
