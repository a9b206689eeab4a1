"""Stacked LoRA adapters: one adapter on the base equals SFT-merged base + RL adapter."""
import json

import pytest
import torch

from recalign.data import DataError
from recalign.models import load_model, load_policy, stack_adapters


def _random_lora(model, out, seed, **cfg):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    peft_model = get_peft_model(model, LoraConfig(**cfg))
    for name, p in peft_model.named_parameters():
        if "lora_B" in name:                       # B starts at zero: make the adapter do something
            p.data.normal_(std=0.5)
    peft_model.save_pretrained(out)
    return peft_model


def test_stacked_adapter_equals_merged_chain(tiny_inst, tmp_path):
    from peft import PeftModel

    model = str(tiny_inst[1])
    base, _ = load_model(model)
    # different targets, layers, ranks and scalings, so zero blocks and scaling both matter
    _random_lora(base, tmp_path / "sft", 0, r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                 layers_to_transform=[1])
    policy, _ = load_policy(model, tmp_path / "sft")
    rl = _random_lora(policy, tmp_path / "rl", 1, r=2, lora_alpha=2, target_modules="all-linear")
    x = torch.randint(0, 200, (2, 9))
    with torch.no_grad():
        want = rl(x).logits
        sft_only = PeftModel.from_pretrained(load_model(model)[0], str(tmp_path / "sft"))(x).logits
    stack_adapters(tmp_path / "sft", tmp_path / "rl", tmp_path / "both")
    cfg = json.loads((tmp_path / "both" / "adapter_config.json").read_text())
    assert cfg["r"] == 6 and cfg["lora_alpha"] == 6
    with torch.no_grad():
        got = PeftModel.from_pretrained(load_model(model)[0], str(tmp_path / "both"))(x).logits
    assert torch.allclose(got, want, atol=1e-5)
    assert not torch.allclose(got, sft_only, atol=1e-3)          # the RL part is in there


def test_stack_refuses_non_lora_and_foreign_adapters(tiny_inst, tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(DataError, match="not a PEFT adapter directory"):
        stack_adapters(tmp_path / "x", tmp_path / "x", tmp_path / "o")
    base, _ = load_model(str(tiny_inst[1]))
    _random_lora(base, tmp_path / "a", 0, r=2, lora_alpha=2, target_modules=["q_proj"])
    (tmp_path / "a" / "card.json").write_text(json.dumps({"base_fingerprint": "llama/1/2/3/4"}))
    with pytest.raises(DataError, match="trained on a base model with shape llama/1/2/3/4"):
        load_policy(str(tiny_inst[1]), tmp_path / "a")


def test_merged_model_dir_is_the_adapter_merged_and_cached(tiny_inst, tmp_path, monkeypatch):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from recalign.models.adapters import merged_model_dir

    monkeypatch.setenv("RECALIGN_CACHE", str(tmp_path / "cache"))
    model = str(tiny_inst[1])
    _random_lora(load_model(model)[0], tmp_path / "a", 0, r=4, lora_alpha=8, target_modules="all-linear")
    d = merged_model_dir(model, tmp_path / "a")
    x = torch.randint(0, 200, (2, 9))
    with torch.no_grad():
        want = PeftModel.from_pretrained(load_model(model)[0], str(tmp_path / "a"))(x).logits
        got = AutoModelForCausalLM.from_pretrained(d)(x).logits
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    stamp = (d / "config.json").stat().st_mtime_ns
    assert merged_model_dir(model, tmp_path / "a") == d                 # reused, not rebuilt
    assert (d / "config.json").stat().st_mtime_ns == stamp
    _random_lora(load_model(model)[0], tmp_path / "b", 1, r=4, lora_alpha=8, target_modules="all-linear")
    assert merged_model_dir(model, tmp_path / "b") != d                 # another adapter, another copy


def test_an_adapter_for_another_base_without_a_card_is_one_line(tiny_inst, tmp_path):
    from recalign.models.resolve import build_tiny_random

    _, model, _ = tiny_inst
    adapter = tmp_path / "a"
    _random_lora(load_model(str(model))[0], adapter, seed=0, r=2, target_modules=["q_proj", "v_proj"])
    assert not (adapter / "card.json").exists()
    narrow = build_tiny_random(tmp_path / "narrow", hidden=32)
    with pytest.raises(DataError, match="weight shapes do not fit --model .*narrow.*another base model"):
        load_policy(str(narrow), adapter)
    (adapter / "adapter_model.safetensors").write_bytes(b"not weights")
    with pytest.raises(DataError, match="cannot load it onto --model"):
        load_policy(str(model), adapter)


def test_policy_merge_loads_whole_weights_under_zero3(tiny_inst, tmp_path, monkeypatch):
    """With a ZeRO-3 trainer config alive, models load partitioned; the SFT merge must see
    whole weights (else it adds into empty shards), and the ZeRO-3 setting is back afterwards."""
    from transformers.integrations import deepspeed as ds

    from recalign.models import resolve as resolve_mod

    model = str(tiny_inst[1])
    _random_lora(load_model(model)[0], tmp_path / "sft", 0, r=2, lora_alpha=4, target_modules=["q_proj"])

    class Zero3:
        def is_zero3(self):
            return True

    cfg = Zero3()
    ds.set_hf_deepspeed_config(cfg)
    seen = []
    real = resolve_mod.load_model
    monkeypatch.setattr(resolve_mod, "load_model",
                        lambda *a, **k: seen.append(ds.is_deepspeed_zero3_enabled()) or real(*a, **k))
    try:
        policy, _ = load_policy(model, tmp_path / "sft")
        assert seen == [False] and ds.is_deepspeed_zero3_enabled()
    finally:
        ds.unset_hf_deepspeed_config()
    want, _ = load_policy(model, tmp_path / "sft")
    for (n, a), (_, b) in zip(policy.state_dict().items(), want.state_dict().items()):
        assert torch.equal(a, b), n
