"""RLRF4Rec on the tiny model: prompts, encoder, pair selection, a DPO round, resume."""
import json

import numpy as np
import pytest
from safetensors.torch import load_file

from recalign.data import DataError, RecDataset
from recalign.tasks.knowledge import user_prompts
from recalign.trainers.rlrf4rec import RLRF4RecConfig, RLRF4RecLoop, select_pairs


@pytest.mark.parametrize("scores, want", [
    ([[0.2, 0.9, 0.1]], [(1, 2)]),
    ([[0.5, 0.5, 0.5]], [None]),                       # no preference: no pair
    ([[0.7, 0.1, 0.7, 0.1]], [(0, 3)]),                # ties: first best, last worst
    ([[float("nan"), 0.3]], [(1, 0)]),                 # a NaN score is the worst
    ([[0.0, 1.0], [1.0, 0.0]], [(1, 0), (0, 1)]),
])
def test_select_pairs_picks_best_and_worst(scores, want):
    assert select_pairs(scores) == want


def test_select_pairs_breaks_ties_with_the_second_key():
    assert select_pairs([[0.5, 0.5, 0.2]], [[0.1, 0.4, 0.9]]) == [(1, 2)]      # primary decides the worst
    assert select_pairs([[0.5, 0.5, 0.5]], [[0.2, 0.2, 0.1]]) == [(0, 2)]
    assert select_pairs([[0.5, 0.5]], [[0.3, 0.3]]) == [None]


def test_user_prompt_has_description_ratings_and_no_held_out_items(ml100k_dir):
    ds = RecDataset.load(ml100k_dir)
    seq = ds.sequences[0]
    cut = {0: len(seq) - 10}
    [msgs] = user_prompts(ds, [0], cut, history_len=5)
    text = msgs[-1]["content"]
    assert "age 24, gender M, occupation technician" in text
    shown = seq[cut[0] - 5:cut[0]]
    for item, rating in zip(shown, ds.ratings[0][cut[0] - 5:cut[0]]):
        assert f'"{ds.catalog.titles[item]}"' in text and f"{int(rating)} stars" in text
    for item in seq[cut[0]:]:                            # valid and test items never leak
        assert f'"{ds.catalog.titles[item]}"' not in text
    assert text.count(" stars\n") == 5 and "genre, director/actors" in text


def test_encoder_caches_and_zeroes_empty_text(tiny_inst, tmp_path):
    from recalign.models.encoder import KnowledgeEncoder

    enc = KnowledgeEncoder(str(tiny_inst[1]), cache_file=tmp_path / "c.npz")
    v = enc.encode(["likes dark thrillers", "", "likes dark thrillers", "prefers comedies"])
    assert v.shape == (4, 64) and np.all(v[1] == 0) and np.array_equal(v[0], v[2])
    assert not np.allclose(v[0], v[3]) and enc.misses == 2
    enc.save()
    again = KnowledgeEncoder(str(tiny_inst[1]), cache_file=tmp_path / "c.npz")
    assert np.array_equal(again.encode(["prefers comedies"])[0], v[3]) and again.misses == 0
    # padding does not change a text's vector (mean over its own tokens only)
    solo = KnowledgeEncoder(str(tiny_inst[1])).encode(["likes dark thrillers"])[0]
    assert np.allclose(solo, v[0], atol=1e-5)


def _cfg(ml100k_dir, model, out, **kw):
    args = dict(model=str(model), data=str(ml100k_dir), output_dir=str(out), max_users=6, history_len=4,
                rounds=1, samples=3, max_new_tokens=10, backbones="dlcm", kar_epochs=2, kar_patience=2,
                max_steps=1, per_device_train_batch_size=2, gradient_accumulation_steps=1, learning_rate=1e-2,
                lora_r=2, lora_alpha=4, max_length=512, seed=0)
    args.update(kw)
    return RLRF4RecConfig(**args)


def test_loop_runs_a_dpo_round_and_resumes(ml100k_dir, tiny_inst, tmp_path):
    logs = []
    out = tmp_path / "rl"
    report = RLRF4RecLoop(_cfg(ml100k_dir, tiny_inst[1], out), log=logs.append).run()
    r0 = json.loads((out / "round-0" / "metrics.json").read_text())
    r1 = json.loads((out / "round-1" / "metrics.json").read_text())
    assert r0["users"] == 6 and set(r0["metrics"]) == {"dlcm"} and set(r0["no_knowledge"]) == {"dlcm"}
    assert set(r0["items_only"]) == {"dlcm"}
    assert 0 <= r1["metrics"]["dlcm"]["NDCG@5"] <= 1
    assert r1["pairs"] + r1["tied_users"] == 6 and r1["pairs"] > 0
    pairs = [json.loads(x) for x in (out / "round-1" / "pairs.jsonl").read_text().splitlines()]
    for p in pairs:                                    # chosen/rejected are the best/worst scored texts
        if p["chosen"] is not None:
            key = list(zip(p["scores"], p["tiebreak"]))
            assert key[p["chosen"]] == max(key) and key[p["rejected"]] == min(key)
    lora_b = [v for k, v in load_file(str(out / "round-1" / "dpo_adapter" / "adapter_model.safetensors")).items()
              if "lora_B" in k]
    assert lora_b and any(v.abs().sum() > 0 for v in lora_b)          # DPO moved the adapter
    assert (out / "round-1" / "adapter" / "adapter_config.json").is_file()
    text = report.read_text()
    assert "| dlcm | none (item ids only) |" in text and "| dlcm | item facts, no user knowledge |" in text and "| dlcm | base LLM |" in text and "| dlcm | DPO round 1 |" in text
    assert (out / "plots" / "rounds.png").is_file()
    card = json.loads((out / "card.json").read_text())
    assert card["stage"] == "trainers.rlrf4rec" and len(card["rounds"]) == 2

    # a second run with one more round skips the finished ones and starts from round 1's adapter
    before = (out / "round-1" / "metrics.json").read_text()
    logs.clear()
    RLRF4RecLoop(_cfg(ml100k_dir, tiny_inst[1], out, rounds=2), log=logs.append).run()
    assert any("[round 0] done before, skipped" in s for s in logs)
    assert any("[round 1] done before, skipped" in s for s in logs)
    assert (out / "round-1" / "metrics.json").read_text() == before
    r2 = json.loads((out / "round-2" / "metrics.json").read_text())
    assert r2["round"] == 2 and json.loads((out / "round-2" / "adapter" / "adapter_config.json").read_text())["r"] == 4
    # finished rounds made with other settings are not silently mixed in
    with pytest.raises(DataError, match="round-0 was made with other settings \\(samples\\)"):
        RLRF4RecLoop(_cfg(ml100k_dir, tiny_inst[1], out, rounds=2, samples=4), log=logs.append).run()


def test_bad_settings_are_clear(ml100k_dir, tiny_inst, tmp_path, capsys):
    with pytest.raises(ValueError, match="loss_type must be 'sigmoid' or 'ipo'"):
        _cfg(ml100k_dir, tiny_inst[1], tmp_path, loss_type="hinge")
    with pytest.raises(ValueError, match="samples must be >= 2"):
        _cfg(ml100k_dir, tiny_inst[1], tmp_path, samples=1)
    from recalign.cli import main

    recipe = tmp_path / "r.yaml"
    recipe.write_text("rounds: 1\nsampels: 3\n")
    assert main(["rlrf4rec", "--recipe", str(recipe)]) == 2
    assert "unknown key 'sampels' (did you mean 'samples'?)" in capsys.readouterr().err
