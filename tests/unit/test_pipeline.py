"""The one-command pipeline on the tiny model: every stage runs, then resumes by skipping."""
import json
from pathlib import Path

import pytest
import yaml

from recalign.data import DataError
from recalign.pipeline import Pipeline, load_recipe

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "ml100k-smollm2.yaml"
TINY = {"model": "tiny-random", "build": {"max_users": 12}, "sft": {"max_steps": 2, "save_steps": 2},
        "eval": {"limit": 2, "max_new_tokens": 16, "backend": "hf"},
        "teacher": {"epochs": 1, "hidden": 16, "inner": 32},
        "rl": {"ppo": {"steps": 2, "prompts_per_step": 2, "max_new_tokens": 12, "ppo_epochs": 1,
                       "lora_top_layers": None, "rollout_backend": "hf"}}}
# (stage logic only: HF keeps it fast; vLLM eval and rollouts have their own tests)


def test_quick_profile_runs_then_skips_then_redoes_only_what_changed(tmp_path, monkeypatch):
    monkeypatch.setenv("RECALIGN_CACHE", str(tmp_path / "cache"))
    recipe = load_recipe(RECIPE, "quick", {**TINY, "out": str(tmp_path / "run")})
    p = Pipeline(recipe, log=lambda s: None)
    report = p.run()
    assert p.ran == ["data", "teacher", "inst", "eval-base", "sft", "eval-sft", "ppo", "eval-ppo"]
    text = (report / "report.md").read_text()
    assert "| I0 | base |" in text and "| I0 | sft |" in text and "SASRec teacher (reference)" in text
    assert "| I0 | ppo |" in text and "## Training curves" in text and "| ppo | 2 |" in text
    assert (report / "plots" / "training_curves.png").is_file()
    assert (tmp_path / "run" / "sft" / "adapter_model.safetensors").is_file()
    ppo_cfg = json.loads((tmp_path / "run" / "ppo" / "adapter_config.json").read_text())
    assert ppo_cfg["r"] == 16 + 4                                # SFT and PPO stacked into one adapter

    again = Pipeline(recipe, log=lambda s: None)
    again.run()
    assert again.ran == [] and len(again.skipped) == 8

    changed = load_recipe(RECIPE, "quick", {**TINY, "out": str(tmp_path / "run"),
                                             "sft": {"max_steps": 3, "save_steps": 3}})
    third = Pipeline(changed, log=lambda s: None)
    third.run()
    assert third.ran == ["sft", "eval-sft", "ppo", "eval-ppo"]      # everything downstream of SFT
    card = json.loads((tmp_path / "run" / "sft" / "card.json").read_text())
    assert card["config"]["max_steps"] == 3


def test_recipe_errors(tmp_path):
    with pytest.raises(DataError, match="no profile 'quik' \\(did you mean 'quick'\\?\\)"):
        load_recipe(RECIPE, "quik")
    bad = tmp_path / "r.yaml"
    bad.write_text("modle: x\n")
    with pytest.raises(DataError, match="unknown key 'modle' \\(did you mean 'model'\\?\\)"):
        load_recipe(bad)
    with pytest.raises(DataError, match="file not found"):
        load_recipe(tmp_path / "none.yaml")


def test_method_recipes_extend_the_main_one(tmp_path):
    grpo = load_recipe(ROOT / "recipes" / "ml100k-smollm2-grpo.yaml", "quick")
    assert list(grpo["rl"]) == ["grpo"] and grpo["rl"]["grpo"]["max_steps"] == 3      # quick applied
    assert grpo["sft"] == load_recipe(RECIPE, "quick")["sft"] and grpo["out"] == "runs/ml100k-smollm2"
    both = load_recipe(ROOT / "recipes" / "ml100k-smollm2-compare.yaml")
    assert list(both["rl"]) == ["ppo", "grpo", "rloo", "asft"]
    bad = tmp_path / "r.yaml"
    bad.write_text(f"extends: {RECIPE}\nrl:\n  dpo: {{}}\n")
    with pytest.raises(DataError, match="rl method 'dpo' unknown"):
        load_recipe(bad)
    loop = tmp_path / "loop.yaml"
    loop.write_text("extends: loop.yaml\n")
    with pytest.raises(DataError, match="cycle"):
        load_recipe(loop)


def test_profile_merges_nested_sections():
    r = load_recipe(RECIPE, "quick")
    assert r["sft"]["max_steps"] == 20 and r["sft"]["lora_r"] == 16     # override + kept base key
    assert r["eval"]["grounded"] == [False] and r["out"] == "runs/ml100k-smollm2"


@pytest.mark.parametrize("name", ["cpu", "ddp", "zero2", "zero3", "fsdp"])
def test_accelerate_configs_parse(name):
    """GPU configs can only be checked for syntax on these CPU machines."""
    from accelerate.commands.config.config_args import ClusterConfig

    path = ROOT / "recipes" / "accelerate" / f"{name}.yaml"
    cfg = ClusterConfig.from_yaml_file(str(path))
    assert cfg.num_processes >= 1
    assert yaml.safe_load(path.read_text())["distributed_type"] in ("NO", "MULTI_GPU", "DEEPSPEED", "FSDP")


def _config_class(method: str):
    from recalign.trainers.asft import RecASFTConfig
    from recalign.trainers.grpo import CONFIGS
    from recalign.trainers.ppo import RecPPOConfig
    from recalign.trainers.rlrf4rec import RLRF4RecConfig
    from recalign.trainers.sft import RecSFTConfig

    return {"sft": RecSFTConfig, "ppo": RecPPOConfig, "grpo": CONFIGS["grpo"], "rloo": CONFIGS["rloo"],
            "asft": RecASFTConfig, "dpo-loop": RLRF4RecConfig}[method]


def test_every_file_in_recipes_is_checked_against_what_reads_it():
    """Trainer configs (recipes/<model>/<method>/config_<dataset>.yaml) against their config
    dataclass, pipeline recipes (recipes/*.yaml) with every profile through validate_recipe,
    accelerate configs by accelerate itself: no file in recipes/ escapes a check."""
    import dataclasses

    from accelerate.commands.config.config_args import ClusterConfig

    from recalign.pipeline import validate_recipe

    checked = set()
    for path in sorted((ROOT / "recipes").glob("*/*/config_*.yaml")):
        fields = {f.name for f in dataclasses.fields(_config_class(path.parent.name))}
        keys = set(yaml.safe_load(path.read_text()))
        assert keys <= fields, f"{path}: unknown keys {sorted(keys - fields)}"
        assert f"--config recipes/{path.relative_to(ROOT / 'recipes')}" in path.read_text()   # its launch line
        checked.add(path)
    assert {p.parent.name for p in checked} == {"sft", "ppo", "grpo", "rloo", "asft", "dpo-loop"}
    main_profiles = yaml.safe_load(RECIPE.read_text()).get("profiles") or {}
    for path in sorted((ROOT / "recipes").glob("*.yaml")):
        own = yaml.safe_load(path.read_text())
        for profile in [None, *((own.get("profiles") or main_profiles) if "extends" in own or own.get("profiles")
                                else [])]:
            validate_recipe(load_recipe(path, profile))
        checked.add(path)
    for path in sorted((ROOT / "recipes" / "accelerate").glob("*.yaml")):
        assert ClusterConfig.from_yaml_file(str(path)).num_processes >= 1
        checked.add(path)
    assert set((ROOT / "recipes").rglob("*.yaml")) == checked


def test_pipeline_sections_start_from_the_trainer_config(tmp_path):
    ppo = yaml.safe_load((ROOT / "recipes" / "smollm2-135m" / "ppo" / "config_ml100k.yaml").read_text())
    r = load_recipe(RECIPE)
    assert {k: v for k, v in ppo.items() if k not in ("model", "data", "adapter", "output_dir", "seed")} == r["rl"]["ppo"]
    assert "output_dir" not in r["sft"] and r["sft"]["lora_top_layers"] == 10
    quick = load_recipe(RECIPE, "quick")                           # a profile still overrides the file's values
    assert quick["rl"]["ppo"]["steps"] == 2 and quick["rl"]["ppo"]["kl_coef"] == ppo["kl_coef"]
    own = tmp_path / "r.yaml"
    own.write_text(f"extends: {RECIPE}\nrl:\n  grpo: {{config: {ROOT}/recipes/smollm2-135m/grpo/config_ml100k.yaml, "
                   "beta: 0.1}\n")
    g = load_recipe(own)["rl"]["grpo"]
    assert g["beta"] == 0.1 and g["num_generations"] == 4 and list(load_recipe(own)["rl"]) == ["grpo"]
    missing = tmp_path / "m.yaml"
    missing.write_text(f"extends: {RECIPE}\nsft: {{config: nowhere/sft.yaml}}\n")
    with pytest.raises(DataError, match=r"m\.yaml: sft\.config: nowhere/sft\.yaml not found"):
        load_recipe(missing)


def test_a_task_defined_only_in_a_yaml_goes_through_build_sft_rl_and_eval(tmp_path, monkeypatch):
    from tests.conftest import FIXTURES

    monkeypatch.setenv("RECALIGN_CACHE", str(tmp_path / "cache"))
    tiny = {**TINY, "out": str(tmp_path / "run"),
            "build": {"tasks": "SeqShort", "task_dir": str(FIXTURES / "tasks"), "max_users": 12},
            "eval": {**TINY["eval"], "tasks": "SeqShort", "grounded": [False, True],
                     "mmlu": str(FIXTURES / "retention" / "mmlu_cais"),
                     "gsm8k": str(FIXTURES / "retention" / "gsm8k" / "test.jsonl"),
                     "retention_limit": {"mmlu": 4, "gsm8k": 2}}}
    p = Pipeline(load_recipe(RECIPE, "quick", tiny), log=lambda s: None)
    p.run()
    for model in ("base", "sft", "ppo"):        # retention once per model, with its first decoding
        free = json.loads((tmp_path / "run" / f"eval-{model}" / "metrics.json").read_text())["retention"]
        assert free["mmlu"]["n"] == 4 and free["gsm8k"]["n"] == 2 and len(free["mmlu"]["correct"]) == 4
        grounded = json.loads((tmp_path / "run" / f"eval-{model}-grounded" / "metrics.json").read_text())
        assert not grounded["retention"]
    assert "| base → sft | MMLU | 4 |" in (tmp_path / "run" / "report" / "report.md").read_text()
    rows = [json.loads(x) for x in (tmp_path / "run" / "inst" / "train.jsonl").read_text().splitlines()]
    assert {r["task"] for r in rows} == {"SeqShort"} and {r["rule"] for r in rows} == {"I0"}
    assert all(len(r["history"]) <= 5 and 3 <= r["item_count"] <= 5 for r in rows)
    for run in ("eval-base", "eval-sft", "eval-ppo"):
        m = json.loads((tmp_path / "run" / run / "metrics.json").read_text())
        t = m["exact"]["SeqShort"]              # scored under its own name, by the I0 rule
        assert t["n_samples"] == 2 and "HR" in t and "NonExist_rate" in t
        assert "MRR" not in t and "InHistory" not in t   # only the metrics its file lists
    ppo = json.loads((tmp_path / "run" / "ppo" / "card.json").read_text())
    assert any("reward/list" in h for h in ppo["log_history"])   # RL rewarded its rows


def test_task_files_with_bad_rules_fail_with_the_file_and_the_choices(tmp_path):
    from recalign.tasks.spec import parse_spec, validate_templates

    base = (Path(__file__).resolve().parents[1] / "fixtures" / "tasks" / "seq_short.yaml").read_text()
    for old, new, msg in [("reward: rank", "reward: ndcg", "key 'reward' must be one of rank, rank\\+task"),
                          ("NonExist@10]", "Recall@10]", "key 'metrics' must be a list of HR@10"),
                          ("reward: rank", "reward: rank+task", "key 'reward' must be 'rank', 'task' or 'none' here")]:
        f = tmp_path / "t.yaml"
        f.write_text(base.replace(old, new))
        with pytest.raises(DataError, match=f"t.yaml: {msg}"):
            parse_spec(f)
    f.write_text(base.replace("i0_sequential.jinja", "i0_seq.jinja"))
    with pytest.raises(DataError, match="t.yaml: key 'template': template 'i0_seq.jinja' not found.*did you mean"):
        validate_templates(parse_spec(f))


@pytest.mark.parametrize("override,match", [
    ({"sft": {"learning_rat": 1e-3}}, r"sft\.learning_rat: unknown key \(did you mean 'learning_rate'\?\)"),
    ({"sft": {"lora_r": "big"}}, r"sft\.lora_r: 'big' does not fit int"),
    ({"eval": {"limt": 5}}, r"eval\.limt: unknown key \(did you mean 'limit'\?\)"),
    ({"rl": {"ppo": {"stepz": 3}}}, r"rl\.ppo\.stepz: unknown key \(did you mean 'steps'\?\)"),
    ({"modle": "x"}, r"unknown key 'modle' \(did you mean 'model'\?\)"),
    ({"eval": {"grounded": "maybe"}}, r"eval\.grounded: 'maybe' is not one of"),
    ({"teacher": {"item_repr": "text"}}, r"teacher: item_repr must be one of id, content, hybrid"),
    ({"teacher": {"epochs": True}}, r"teacher\.epochs: True does not fit int"),
    ({"build": {"tasks": ""}}, r"build\.tasks: empty"),
])
def test_recipe_mistakes_fail_before_any_stage(tmp_path, override, match):
    """Every section is checked against its stage's dataclass first: nothing is written."""
    out = tmp_path / "run"
    recipe = load_recipe(RECIPE, "quick", {**TINY, "out": str(out), **override})
    with pytest.raises(DataError, match=match):
        Pipeline(recipe, log=lambda s: None).run()
    assert not out.exists()


def test_a_mistyped_set_is_one_line_and_writes_nothing(tmp_path, capsys):
    from recalign.cli import main

    out = tmp_path / "run"
    rc = main(["pipeline", "--recipe", str(RECIPE), "--profile", "quick", "--set", f"out={out}",
               "--set", "sft.lora_r=big"])
    err = capsys.readouterr().err
    assert rc == 2 and "sft.lora_r: 'big' does not fit int" in err and "Traceback" not in err
    assert not out.exists()


def test_type_check_reads_string_and_resolved_annotations():
    from typing import Optional, Union

    from recalign.pipeline import _type_ok

    assert _type_ok(3, Optional[int]) and not _type_ok("x", Optional[int]) and _type_ok(None, "int | None")
    assert _type_ok({"I0": 200}, Union[str, dict, None]) and not _type_ok(3, Union[str, dict, None])
    assert _type_ok(1, "float") and not _type_ok(True, "int") and not _type_ok(1.5, int)
    assert _type_ok(["a"], "list[str]") and _type_ok("anything", "Literal['a']")


def test_cpu_bf16_on_a_cpu_without_bf16_fails_before_any_stage(monkeypatch):
    import torch

    from recalign.pipeline import validate_recipe

    recipe = load_recipe(RECIPE, "proof", {"sft": {"cpu_bf16": True}})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    with pytest.raises(DataError, match=r"sft\.cpu_bf16: this CPU has neither AVX512-BF16 nor AMX.*"
                                        r"--set sft\.cpu_bf16=false"):
        validate_recipe(recipe)
    with pytest.raises(DataError, match=r"rl\.ppo\.cpu_bf16: .*--set rl\.ppo\.cpu_bf16=false"):
        validate_recipe(load_recipe(RECIPE, "proof", {"sft": {"cpu_bf16": False}}))   # the proof's PPO too
    validate_recipe(load_recipe(RECIPE, "proof", {"sft": {"cpu_bf16": False}, "rl": {"ppo": {"cpu_bf16": False}}}))
