"""LoRA SFT on the tiny model: the adapter learns, resumes, and respects its options."""
import json

import pytest
from safetensors.torch import load_file

from recalign.data import DataError
from recalign.trainers.sft import main


@pytest.fixture(scope="module")
def inst(tiny_inst, tmp_path_factory):
    data, model, _ = tiny_inst
    return data, model, tmp_path_factory.mktemp("sft")


def _run(inst, out, *extra):
    data, model, _ = inst
    return main(["--model", str(model), "--data", str(data), "--output_dir", str(out),
                 "--per_device_train_batch_size", "4", "--learning_rate", "5e-3", "--logging_steps", "1",
                 "--save_strategy", "no", *extra])


def test_sft_changes_adapter_and_records_provenance(inst):
    out = inst[2] / "a"
    assert _run(inst, out, "--max_steps", "4", "--lora_r", "4", "--lora_alpha", "8") == 0
    weights = load_file(str(out / "adapter_model.safetensors"))
    lora_b = [v for k, v in weights.items() if "lora_B" in k]
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b)        # B starts at zero: it moved
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["r"] == 4 and cfg["lora_alpha"] == 8
    card = json.loads((out / "card.json").read_text())
    assert card["stage"] == "trainers.sft" and card["train_rows"] == 36 and card["base_fingerprint"].startswith("llama/")
    losses = [h["loss"] for h in card["log_history"] if "loss" in h]
    assert len(losses) == 4 and losses[-1] < losses[0]


def test_top_layers_and_task_filter(inst):
    out = inst[2] / "b"
    assert _run(inst, out, "--max_steps", "1", "--lora_top_layers", "1", "--tasks", "I1+") == 0
    keys = load_file(str(out / "adapter_model.safetensors")).keys()
    assert keys and all(".layers.1." in k for k in keys)
    assert json.loads((out / "card.json").read_text())["train_rows"] == 12


def test_lora_config_comes_from_trls_model_config(inst):
    """The LoRA config is TRL's get_peft_config on our fields, plus the top-layers limit."""
    from types import SimpleNamespace

    from transformers import AutoModelForCausalLM

    from recalign.trainers.common import lora_config

    model = AutoModelForCausalLM.from_pretrained(str(inst[1]))
    base = dict(model=str(inst[1]), lora_r=4, lora_alpha=2, lora_dropout=0.05, lora_top_layers=None,
                lora_target_modules="all-linear")
    c = lora_config(SimpleNamespace(**base), model)
    assert c.target_modules == "all-linear" and c.layers_to_transform is None
    assert (c.r, c.lora_alpha, c.lora_dropout, c.task_type, c.bias) == (4, 2, 0.05, "CAUSAL_LM", "none")
    assert lora_config(SimpleNamespace(**{**base, "lora_target_modules": " q_proj, v_proj"}), model
                       ).target_modules == {"q_proj", "v_proj"}
    top = lora_config(SimpleNamespace(**{**base, "lora_top_layers": 1}), model)
    n = model.config.num_hidden_layers
    assert top.layers_to_transform == [n - 1] and {"q_proj", "v_proj", "down_proj"} <= set(top.target_modules)


def test_resume_continues_from_checkpoint(inst):
    out = inst[2] / "c"
    assert _run(inst, out, "--max_steps", "2", "--save_strategy", "steps", "--save_steps", "2") == 0
    assert (out / "checkpoint-2").is_dir()
    assert _run(inst, out, "--max_steps", "3", "--save_strategy", "steps", "--save_steps", "3", "--resume", "true") == 0
    steps = [h["step"] for h in json.loads((out / "card.json").read_text())["log_history"] if "loss" in h]
    card = json.loads((out / "card.json").read_text())
    assert card["resumed_from"].endswith("checkpoint-2") and steps == [1, 2, 3]
    # a finished run resumed with another learning rate would keep its weights and record the
    # new setting: refused, naming the difference, before any training
    before = (out / "adapter_model.safetensors").read_bytes()
    with pytest.raises(DataError, match=r"learning_rate: 0\.005 -> 0\.01.*without --resume"):
        _run(inst, out, "--max_steps", "3", "--save_strategy", "steps", "--save_steps", "3", "--resume", "true",
             "--learning_rate", "1e-2")
    assert (out / "adapter_model.safetensors").read_bytes() == before


def test_missing_data_is_a_clear_error(tmp_path, inst):
    with pytest.raises(DataError, match="no dataset/ folder"):
        main(["--model", str(inst[1]), "--data", str(tmp_path), "--output_dir", str(tmp_path / "o")])
