"""GRPO and RLOO on the tiny model: from an SFT adapter, against it as the KL reference, to
one stacked adapter that eval loads; bad rows fail before any rollout; None rewards pass."""
import json
import math

import datasets
import pytest
import torch

from recalign.data import DataError
from recalign.trainers.grpo import RecGRPOConfig, RecRLOOConfig, main


def _random_lora(model_dir, out):
    """An SFT-like adapter: LoRA r 2 on q/v with nonzero B, and the card eval checks."""
    from peft import LoraConfig, get_peft_model

    from recalign.models import load_model
    from recalign.models.resolve import model_fingerprint

    base, _ = load_model(str(model_dir))
    torch.manual_seed(0)
    peft_model = get_peft_model(base, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]))
    for name, p in peft_model.named_parameters():
        if "lora_B" in name:
            p.data.normal_(std=0.2)
    peft_model.save_pretrained(out)
    (out / "card.json").write_text(json.dumps({"base_fingerprint": model_fingerprint(model_dir)}))
    return out


@pytest.fixture(scope="module")
def inst(tiny_inst, tmp_path_factory):
    data, model, _ = tiny_inst
    tmp = tmp_path_factory.mktemp("rl")
    return data, model, _random_lora(model, tmp / "sft"), tmp


def _run(inst, method, out, *extra, adapter=True):
    data, model, sft, _ = inst
    args = ["--method", method, "--model", str(model), "--data", str(data), "--output_dir", str(out),
            "--per_device_train_batch_size", "4", "--num_generations", "4", "--max_completion_length", "24",
            "--learning_rate", "1e-2", "--save_strategy", "no", "--seed", "0",
            "--rollout_backend", "hf", *extra]          # vLLM rollouts: tests/integration/test_vllm.py
    return main(args + (["--adapter", str(sft)] if adapter else []))


def _logits(model_dir, adapter, x):
    from recalign.eval.backends import HFBackend

    backend = HFBackend(str(model_dir), adapter=str(adapter))
    with torch.no_grad():
        return backend.model_obj(x).logits


@pytest.mark.parametrize("method", ["grpo", "rloo"])
def test_rl_from_sft_adapter_moves_away_from_reference(inst, method):
    from peft import PeftModel

    from recalign.models import load_policy

    data, model, sft, tmp = inst
    out = tmp / method
    assert _run(inst, method, out, "--max_steps", "3") == 0
    card = json.loads((out / "card.json").read_text())
    assert card["stage"] == f"trainers.{method}" and card["method"] == method
    assert card["sft_adapter"] == str(sft) and card["base_fingerprint"].startswith("llama/")
    assert card["reward_funcs"] == ["recalign_list_reward", "recalign_format_reward"]
    assert card["config"]["beta"] > 0 and card["train_rows"] == 36
    logs = [h for h in card["log_history"] if "kl" in h]
    assert [h["step"] for h in logs] == [1, 2, 3]
    kl = [h["kl"] for h in logs]
    assert abs(kl[0]) < 1e-6              # fresh LoRA (B = 0): the policy is the SFT model
    assert max(kl[1:]) > 0                # after one update it has moved away from it
    assert all(math.isfinite(h["reward"]) for h in logs)
    # one adapter on the original base = SFT merged + RL adapter, and not the SFT adapter
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["r"] == 2 + 4 and (out / "rl_adapter" / "adapter_model.safetensors").is_file()
    x = torch.randint(0, 200, (2, 9))
    got = _logits(model, out, x)
    with torch.no_grad():
        want = PeftModel.from_pretrained(load_policy(str(model), sft)[0], str(out / "rl_adapter"))(x).logits
    assert torch.allclose(got, want, atol=1e-4)
    assert not torch.allclose(got, _logits(model, sft, x), atol=1e-4)


def test_grpo_resumes_from_checkpoint(inst):
    out = inst[3] / "resume"
    save = ["--save_strategy", "steps", "--save_steps", "2"]
    assert _run(inst, "grpo", out, "--max_steps", "2", *save, adapter=False) == 0
    assert (out / "checkpoint-2").is_dir()
    assert _run(inst, "grpo", out, "--max_steps", "3", *save, "--resume", "true", adapter=False) == 0
    card = json.loads((out / "card.json").read_text())
    assert card["resumed_from"].endswith("checkpoint-2") and card["sft_adapter"] is None
    assert [h["step"] for h in card["log_history"] if "kl" in h] == [1, 2, 3]
    # without --adapter the RL adapter itself is the output
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 4 and not (out / "rl_adapter").exists()



def test_grpo_resumed_equals_uninterrupted(inst):
    """Interrupted after step 2 of 3 and resumed == 3 steps in one go (constant LR, so the
    schedule does not depend on the planned length)."""
    from safetensors.torch import load_file

    save = ["--save_strategy", "steps", "--save_steps", "2", "--lr_scheduler_type", "constant"]
    cut, straight = inst[3] / "cut", inst[3] / "straight"
    assert _run(inst, "grpo", cut, "--max_steps", "2", *save, adapter=False) == 0
    assert _run(inst, "grpo", cut, "--max_steps", "3", *save, "--resume", "true", adapter=False) == 0
    assert _run(inst, "grpo", straight, "--max_steps", "3", *save, adapter=False) == 0
    a = load_file(str(cut / "adapter_model.safetensors"))
    b = load_file(str(straight / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-5


def test_missing_reward_field_fails_before_training(inst, tmp_path, monkeypatch):
    data, model, _, _ = inst
    dd = datasets.load_from_disk(str(data / "dataset"))
    bad = tmp_path / "inst"
    dd["train"] = dd["train"].remove_columns("item_count")
    dd.save_to_disk(str(bad / "dataset"))
    (bad / "card.json").write_text((data / "card.json").read_text())

    def no_model(*a, **k):
        raise AssertionError("the model was loaded before the rows were checked")

    monkeypatch.setattr("recalign.models.adapters.load_policy", no_model)
    with pytest.raises(DataError, match="row 0 .*missing field 'item_count'"):
        main(["--model", str(model), "--data", str(bad), "--output_dir", str(tmp_path / "o")])
    with pytest.raises(DataError, match="no training rows"):
        main(["--model", str(model), "--data", str(data), "--tasks", "I9", "--output_dir", str(tmp_path / "o")])


@pytest.mark.parametrize("method", ["grpo", "rloo"])
def test_none_and_nan_rewards_do_not_crash(inst, method, monkeypatch):
    """TRL 1.16 turns None into NaN, sums rewards with nansum, keeps NaN out of the group
    baselines and gives a completion that no reward judged advantage 0."""
    from recalign.trainers.rewarding import RewardContext

    seen = []

    def holes(factory, values):
        def make(self):
            f = factory(self)

            def reward(*a, **k):
                out = f(*a, **k)
                seen.append(len(out))
                return [values.get(i, r) for i, r in enumerate(out)]

            reward.__name__ = f.__name__
            return reward
        return make

    # completion 0: no reward judges it; completion 1: only the format reward does
    monkeypatch.setattr(RewardContext, "list_reward", holes(RewardContext.list_reward, {0: None, 1: float("nan")}))
    monkeypatch.setattr(RewardContext, "format_reward", holes(RewardContext.format_reward, {0: None}))
    out = inst[3] / f"holes-{method}"
    assert _run(inst, method, out, "--max_steps", "2", adapter=False) == 0
    assert seen and all(n == 4 for n in seen)
    logs = [h for h in json.loads((out / "card.json").read_text())["log_history"] if "kl" in h]
    assert len(logs) == 2
    for h in logs:
        assert math.isfinite(h["loss"]) and math.isfinite(h["reward"])
        assert math.isfinite(h["rewards/recalign_list_reward/mean"])


def test_configs_set_kl_and_reward_weights(inst):
    data = str(inst[0])
    g = RecGRPOConfig(data=data, output_dir="/tmp/unused", format_reward_weight=0.5)
    r = RecRLOOConfig(data=data, output_dir="/tmp/unused")
    assert g.beta > 0 and r.beta > 0                     # TRL's GRPO default 0.0 = no KL
    assert g.reward_weights == [1.0, 0.5] and r.reward_weights == [1.0, 1.0]
    assert g.use_cpu == (not torch.cuda.is_available()) and g.num_generations == 4
    with pytest.raises(ValueError, match="--data is required"):
        RecGRPOConfig(output_dir="/tmp/unused")
    with pytest.raises(SystemExit, match="--method must be one of"):
        main(["--method", "ppo", "--data", data])


@pytest.mark.parametrize("method", ["grpo", "rloo"])
def test_recipes_parse_and_name_their_launch_line(method):
    from pathlib import Path

    from trl import TrlParser

    from recalign.trainers.grpo import CONFIGS

    recipe = Path(__file__).resolve().parents[2] / "recipes" / "smollm2-135m" / method / "config_ml100k.yaml"
    launch = (f"accelerate launch --config_file recipes/accelerate/cpu.yaml -m recalign.trainers.grpo "
              f"--method {method} --config recipes/smollm2-135m/{method}/config_ml100k.yaml")
    assert launch in recipe.read_text().splitlines()[1]
    (cfg,) = TrlParser((CONFIGS[method],)).parse_args_and_config(args=["--config", str(recipe)])
    assert cfg.adapter == "runs/sft" and cfg.data == "runs/inst" and cfg.output_dir == f"runs/{method}"
    assert cfg.beta > 0 and cfg.generation_batch_size % cfg.num_generations == 0
