"""LoRA adapters in a chain: train a new adapter on top of an earlier one, ship one adapter.

The RL methods (RecLM-gen's PPO, GRPO, RLOO, A-SFT) start from the SFT model: the SFT
adapter is merged into the base weights in memory, a fresh LoRA is trained on that, and
"adapters disabled" is then exactly the SFT model, the KL reference. To keep every stage's
output a single PEFT adapter on the original base (so ``recalign eval``, vLLM's
``LoRARequest`` and the adapter check work unchanged), :func:`stack_adapters` writes the two
as one LoRA: s1·B1A1 + s2·B2A2 = [s1·B1 | s2·B2]·[A1 ; A2] is a LoRA of rank r1 + r2 with
scaling 1, exact, with zero blocks where only one of them touches a module.

>>> model, tok = load_policy("tiny-random", "runs/sft")          # doctest: +SKIP
>>> stack_adapters("runs/sft", "runs/ppo.rl", "runs/ppo")        # doctest: +SKIP
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from recalign.data.util import DataError, atomic_dir

_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<ab>[AB])\.weight$")


def _read(adapter: Path) -> tuple[dict, dict]:
    from safetensors.torch import load_file

    cfg_path, w_path = adapter / "adapter_config.json", adapter / "adapter_model.safetensors"
    if not cfg_path.is_file() or not w_path.is_file():
        raise DataError(f"{adapter}: not a PEFT adapter directory (needs adapter_config.json and "
                        "adapter_model.safetensors)")
    cfg = json.loads(cfg_path.read_text())
    if cfg.get("peft_type") != "LORA":
        raise DataError(f"{adapter}/adapter_config.json: peft_type {cfg.get('peft_type')!r}, only LORA stacks")
    if cfg.get("use_dora") or cfg.get("use_rslora") or cfg.get("rank_pattern") or cfg.get("alpha_pattern"):
        raise DataError(f"{adapter}/adapter_config.json: DoRA, rsLoRA and rank/alpha patterns cannot be "
                        "stacked; train plain LoRA adapters")
    return cfg, load_file(str(w_path))


def _modules(weights: dict) -> dict[str, dict[str, "object"]]:
    out: dict = {}
    for k, v in weights.items():
        m = _KEY.match(k)
        if not m:
            raise DataError(f"adapter weight {k!r}: only lora_A/lora_B weights can be stacked "
                            "(no modules_to_save, no bias)")
        out.setdefault(m["module"], {})[m["ab"]] = v
    return out


def stack_adapters(first: str | Path, second: str | Path, out: str | Path, overwrite: bool = False) -> Path:
    """Write one LoRA adapter equal to applying ``first`` then ``second`` (both LoRA on the
    same base). The result has rank r1 + r2, ``lora_alpha`` = rank (scaling 1) and targets
    every module either adapter touched. ``card.json`` files are not copied: the caller
    writes the stage's own card."""
    import torch
    from safetensors.torch import save_file

    first, second, out = Path(first), Path(second), Path(out)
    (c1, w1), (c2, w2) = _read(first), _read(second)
    s1, s2 = c1["lora_alpha"] / c1["r"], c2["lora_alpha"] / c2["r"]
    r1, r2 = c1["r"], c2["r"]
    m1, m2 = _modules(w1), _modules(w2)
    stacked = {}
    for mod in sorted(set(m1) | set(m2)):
        a1, b1 = (m1[mod]["A"], m1[mod]["B"]) if mod in m1 else (None, None)
        a2, b2 = (m2[mod]["A"], m2[mod]["B"]) if mod in m2 else (None, None)
        ref_a, ref_b = (a1, b1) if a1 is not None else (a2, b2)
        d_in, d_out = ref_a.shape[1], ref_b.shape[0]
        if a1 is not None and a2 is not None and (a1.shape[1] != a2.shape[1] or b1.shape[0] != b2.shape[0]):
            raise DataError(f"{first} and {second} disagree on the shape of {mod}: not the same base model")
        dtype = ref_a.dtype
        a1 = a1 if a1 is not None else torch.zeros(r1, d_in, dtype=dtype)
        b1 = b1 if b1 is not None else torch.zeros(d_out, r1, dtype=dtype)
        a2 = a2 if a2 is not None else torch.zeros(r2, d_in, dtype=dtype)
        b2 = b2 if b2 is not None else torch.zeros(d_out, r2, dtype=dtype)
        stacked[f"{mod}.lora_A.weight"] = torch.cat([a1, a2.to(dtype)], 0).contiguous()
        stacked[f"{mod}.lora_B.weight"] = torch.cat([s1 * b1, s2 * b2.to(dtype)], 1).contiguous()
    names = sorted({_module_path(m) for m in stacked if m.endswith("lora_A.weight")})
    cfg = {**c1, "r": r1 + r2, "lora_alpha": r1 + r2, "target_modules": names,
           "layers_to_transform": None, "layers_pattern": None, "lora_dropout": 0.0}
    with atomic_dir(out, overwrite=overwrite) as tmp:
        save_file(stacked, str(tmp / "adapter_model.safetensors"))
        (tmp / "adapter_config.json").write_text(json.dumps(cfg, indent=2))
        for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"):
            if (second / f).is_file():
                (tmp / f).write_bytes((second / f).read_bytes())
    return out


def stack_into(first: str | Path, second: str | Path, out: str | Path) -> Path:
    """:func:`stack_adapters` written into an existing folder ``out`` (a trainer's output dir
    with its checkpoints and card), each file replacing its namesake whole."""
    import tempfile

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=".stack-") as tmp:
        for f in stack_adapters(first, second, Path(tmp) / "a").iterdir():
            f.replace(out / f.name)
    return out


def _module_path(key: str) -> str:
    # "base_model.model.model.layers.3.mlp.up_proj.lora_A.weight" -> "model.layers.3.mlp.up_proj"
    mod = key.rsplit(".lora_", 1)[0]
    return mod[len("base_model.model."):] if mod.startswith("base_model.model.") else mod


def check_adapter(adapter: str | Path, base_path) -> None:
    """An adapter trained on another base model is an error, not a silent mismatch."""
    from .resolve import model_fingerprint

    adapter = Path(adapter)
    if not (adapter / "adapter_config.json").is_file():
        raise DataError(f"--adapter {adapter}: no adapter_config.json; give a directory written by a "
                        "recalign trainer (or any PEFT adapter)")
    card = adapter / "card.json"
    if card.is_file():
        want = json.loads(card.read_text()).get("base_fingerprint")
        have = model_fingerprint(base_path)
        if want and want != have:
            raise DataError(f"--adapter {adapter} was trained on a base model with shape {want}, but "
                            f"--model resolves to {have}; pass the base model it was trained on")


def load_policy(model: str, adapter: str | Path | None = None, **kw):
    """(model, tokenizer): the base model with ``adapter`` (e.g. the SFT output) merged into
    its weights, ready for a fresh LoRA whose "adapters disabled" state is the SFT model.
    ``kw`` goes to :func:`recalign.models.load_model` (dtype, quantization_config)."""
    from .resolve import load_model, resolve_model

    if adapter is None:
        return load_model(model, **kw)
    check_adapter(adapter, resolve_model(model))
    from peft import PeftModel

    with _whole_weights():
        base, tok = load_model(model, **kw)
        return load_adapter(PeftModel, base, adapter, model).merge_and_unload(), tok


def _whole_weights():
    """Load without ZeRO-3's partitioned init for the ``with`` block. Under ZeRO-3 a model
    loaded after the trainer's config exists is born partitioned (each rank holds a shard,
    the rest are empty placeholders), and ``merge_and_unload`` would add the SFT delta into
    those placeholders; loaded whole, it is merged exactly and DeepSpeed partitions the merged
    model when the trainer prepares it."""
    import contextlib

    @contextlib.contextmanager
    def block():
        try:
            from transformers.integrations import deepspeed as ds
        except ImportError:
            yield
            return
        ref = ds._hf_deepspeed_config_weak_ref
        ds._hf_deepspeed_config_weak_ref = None
        try:
            yield
        finally:
            ds._hf_deepspeed_config_weak_ref = ref
    return block()


def load_adapter(peft_cls, base, adapter, model: str):
    """PEFT's loader, with its wall of size-mismatch lines (an adapter without a card, made for
    another base) or a damaged weights file turned into one line."""
    try:
        return peft_cls.from_pretrained(base, str(adapter))
    except Exception as e:  # torch, safetensors and PEFT each raise their own types here
        text = str(e)
        if "size mismatch" in text:
            raise DataError(f"--adapter {adapter}: its weight shapes do not fit --model {model} (it was made "
                            "for another base model); pass the base model it was trained on") from None
        first = (text.strip().splitlines() or [type(e).__name__])[0][:200]
        raise DataError(f"--adapter {adapter}: cannot load it onto --model {model} ({first}); give an adapter "
                        "directory written by a recalign trainer") from None


MERGED_KEEP = 4          # merged copies kept in the cache (each is a full model)


def merged_model_dir(model: str, adapter: str | Path) -> Path:
    """A cached Hugging Face model directory with ``adapter`` merged into ``model``'s weights.

    vLLM on CPU serves a LoRA through ``LoRARequest`` ~5× slower than the same weights merged
    (bench/RESULTS.md), so the CPU eval path loads this instead. The directory is keyed by the
    adapter's files and the base, made once (atomically) and reused; the oldest copies beyond
    :data:`MERGED_KEEP` are removed.
    """
    import hashlib
    import os
    import shutil

    from .resolve import model_fingerprint, models_cache, resolve_model

    adapter = Path(adapter)
    base = resolve_model(model)
    check_adapter(adapter, base)
    h = hashlib.sha256(f"{base}|{model_fingerprint(base)}".encode())
    for f in ("adapter_config.json", "adapter_model.safetensors"):
        if not (adapter / f).is_file():
            raise DataError(f"--adapter {adapter}: no {f}; give a directory written by a recalign trainer")
        h.update((adapter / f).read_bytes())
    root = models_cache() / "merged"
    out = root / h.hexdigest()[:20]
    if (out / "config.json").is_file():
        os.utime(out)
        return out
    merged, tok = load_policy(model, adapter)
    with atomic_dir(out, overwrite=True) as tmp:
        merged.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "merged_from.json").write_text(json.dumps({"base": str(base), "adapter": str(adapter.resolve())}))
    old = sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")),
                 key=lambda p: p.stat().st_mtime, reverse=True)
    for p in old[MERGED_KEEP:]:
        shutil.rmtree(p, ignore_errors=True)
    return out
