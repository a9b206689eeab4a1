"""A-SFT and reward-weighted BC (REFERENCE.md §3) on the tiny model: logged examples, weights
per baseline, the weighted loss against a hand computation, training, the rating judge."""
import json

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from recalign.data import DataError, RecDataset
from recalign.models import load_model
from recalign.rewards import asft_weights
from recalign.templates import Renderer
from recalign.trainers.asft import (RecASFTConfig, WeightedCollator, example_weights, judge_ratings,
                                    logged_examples, main, tokenize_examples, weighted_nll)
from recalign.trainers.rewarding import load_reward_context


@pytest.fixture(scope="module")
def inst(tiny_inst, tmp_path_factory):
    data, model, ds = tiny_inst
    return data, model, ds, tmp_path_factory.mktemp("asft")


def _run(inst, out, *extra):
    data, model, _, _ = inst
    return main(["--model", str(model), "--data", str(data), "--output_dir", str(out), "--max_users", "3",
                 "--max_examples_per_user", "8", "--per_device_train_batch_size", "8", "--learning_rate", "5e-3",
                 "--logging_steps", "1", "--save_strategy", "no", "--report_to", "none", *extra])


def test_logged_examples_match_the_user_sequence(inst, ml100k_dir):
    ds = inst[2]
    seq, rat = ds.sequences[0], ds.ratings[0]
    tr = seq[:-2]
    rows = logged_examples(ds, max_users=2, history_len=10)
    u0 = [r for r in rows if r["user_idx"] == 0]
    assert len(u0) == len(tr) - 1 and {r["user_idx"] for r in rows} == {0, 1}   # positions 1..len(tr)-1
    by_t = {r["position"]: r for r in u0}
    # position 3: short history (all 3 items before it); position 200: the 10 before it
    assert by_t[3]["history"] == [int(i) for i in tr[:3]] and by_t[3]["target"] == int(tr[3])
    assert by_t[200]["history"] == [int(i) for i in tr[190:200]] and by_t[200]["target"] == int(tr[200])
    assert max(by_t) == len(tr) - 1 and u0[-1]["target"] == int(tr[-1])      # never the valid/test item
    # the reward is the rating in the raw interaction table, not just the parallel array
    inter = pd.read_parquet(ml100k_dir / "interactions.parquet")
    u = inter[inter["user_idx"] == 0].set_index("item_idx")["rating"]
    assert all(r["reward"] == float(u[r["target"]]) for r in u0)
    assert by_t[3]["reward"] == float(rat[3])
    # rows are I0 rows with item_count 1: same system message and template as the builder's
    r = by_t[200]
    titles = [ds.catalog.titles[i] for i in r["history"]]
    assert r["user_id"] == str(ds.users["user_id"].iloc[0]) and r["task"] == "I0" and r["item_count"] == 1
    assert r["prompt"][0] == json.loads((inst[0] / "train.jsonl").read_text().splitlines()[0])["prompt"][0]
    assert r["prompt"][1]["content"] == Renderer().render("i0_sequential.jinja", history=titles, item_count=1,
                                                          paraphrase=r["paraphrase"])
    assert r["completion"] == [{"role": "assistant", "content": f"1. {ds.catalog.titles[int(tr[200])]}"}]
    # the cap keeps each user's last positions; valid rows are the seq[-2] position
    capped = logged_examples(ds, max_users=1, max_examples_per_user=3)
    assert [r["position"] for r in capped] == [len(tr) - 3, len(tr) - 2, len(tr) - 1]
    (v,) = logged_examples(ds, max_users=1, split="valid")
    assert v["target"] == int(seq[-2]) and v["history"] == [int(i) for i in tr[-10:]] and v["reward"] == rat[-2]


def test_weights_per_baseline_match_asft_weights(inst):
    ds = inst[2]
    rows = logged_examples(ds, max_users=4, max_examples_per_user=5)
    r = np.array([x["reward"] for x in rows])
    users = np.array([x["user_idx"] for x in rows])
    w, b = example_weights(rows, ds, "asft", "none", lam=2.0)
    assert b is None and np.allclose(w, asft_weights(r, lam=2.0)) and np.allclose(w, np.exp(r / 2))
    # user_mean: the mean over the user's whole training part, not over the capped examples
    train_mean = np.array([ds.ratings[u][:-2].mean() for u in users])
    assert not np.allclose(train_mean, [r[users == u].mean() for u in users])
    w, b = example_weights(rows, ds, "asft", "user_mean", lam=0.5, clip=5.0)
    assert np.allclose(b, train_mean) and np.allclose(w, asft_weights(r, train_mean, lam=0.5, clip=5.0))
    assert w.max() <= 5.0 + 1e-9
    # teacher: mean training rating of the teacher's top-3 items, computed here by hand
    ctx = load_reward_context(inst[0])
    sums, counts = {}, {}
    for s, rr in zip(ds.sequences, ds.ratings):
        for i, x in zip(s[:-2], rr[:-2]):
            sums[int(i)] = sums.get(int(i), 0.0) + float(x)
            counts[int(i)] = counts.get(int(i), 0) + 1
    top = ctx.teacher.topk([x["history"] for x in rows], k=3)
    want = np.array([np.mean([sums[int(i)] / counts[int(i)] for i in t if int(i) in counts]) for t in top])
    w, b = example_weights(rows, ds, "asft", "teacher", lam=1.0, teacher=ctx.teacher, teacher_k=3)
    assert np.allclose(b, want) and np.allclose(w, asft_weights(r, want, lam=1.0))
    # reward-weighted behaviour cloning: w = r
    w, b = example_weights(rows, ds, "bc", "none")
    assert b is None and np.array_equal(w, r)
    with pytest.raises(DataError, match="needs a teacher"):
        example_weights(rows, ds, "asft", "teacher")


def test_weighted_loss_equals_hand_computation(inst):
    ds, model_dir = inst[2], inst[1]
    model, tok = load_model(str(model_dir))
    tok.padding_side = "right"
    rows = logged_examples(ds, max_users=1, max_examples_per_user=2)
    rows[0]["prompt"][1]["content"] += " Thanks."        # different lengths: padding must not matter
    data, kept = tokenize_examples(rows, [0.0, 2.5], tok)
    assert kept == [0, 1]
    for f, row in zip(data, rows):          # labels: exactly the answer and the end of turn
        text = tok.decode([t for t in f["labels"] if t != -100])
        assert text.startswith(row["completion"][0]["content"]) and "<|im_end|>" in text
    batch = WeightedCollator(tok.pad_token_id)(list(data))
    assert batch["input_ids"].shape[0] == 2 and (batch["attention_mask"] == 0).any()

    def nll_alone(f):                       # one unpadded example, log-softmax by hand
        ids = torch.tensor([f["input_ids"]])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].double(), -1)
        lab = torch.tensor(f["labels"][1:])
        pos = (lab != -100).nonzero()[:, 0]
        return float(-logp[pos, lab[pos]].mean())

    n0, n1 = nll_alone(data[0]), nll_alone(data[1])
    with torch.no_grad():
        loss, nll = weighted_nll(model, batch)
        assert nll.tolist() == pytest.approx([n0, n1], rel=1e-5)
        assert float(loss) == pytest.approx((0.0 * n0 + 2.5 * n1) / 2, rel=1e-5)
        loss, _ = weighted_nll(model, batch, normalize=True)       # weights / batch mean = [0, 2]
        assert float(loss) == pytest.approx(n1, rel=1e-5)
        batch["weight"] = torch.tensor([1.0, 3.0])
        assert float(weighted_nll(model, batch)[0]) == pytest.approx((n0 + 3 * n1) / 2, rel=1e-5)


def _per_example_nll(model, tok, rows):
    data, _ = tokenize_examples(rows, [1.0] * len(rows), tok)
    with torch.no_grad():
        return weighted_nll(model, WeightedCollator(tok.pad_token_id)(list(data)))[1].numpy()


def test_training_moves_high_weight_examples_more(inst):
    """Difference in differences against a control run with near-uniform weights (lambda
    1000): what every example shares (the "1. " format, the end of turn, common bytes) drops
    in both runs; only the A-SFT run should favour the examples it weights up."""
    from peft import PeftModel

    ds = inst[2]
    rows = logged_examples(ds, max_users=3, max_examples_per_user=8)
    w, _ = example_weights(rows, ds, "asft", "user_mean", lam=0.25, clip=50.0)
    high, low = w > 5, w < 0.1               # rated above the user's mean -> up to the clip, below -> ~0
    assert high.sum() >= 3 and low.sum() >= 3
    base, tok = load_model(str(inst[1]))
    tok.padding_side = "right"
    before = _per_example_nll(base, tok, rows)
    gaps = {}
    for lam in ("0.25", "1000"):
        out = inst[3] / f"train-{lam}"
        assert _run(inst, out, "--max_steps", "30", "--learning_rate", "2e-2", "--asft_baseline", "user_mean",
                    "--asft_lambda", lam, "--asft_clip", "50", "--lora_r", "4", "--lora_alpha", "8") == 0
        drop = before - _per_example_nll(PeftModel.from_pretrained(load_model(str(inst[1]))[0], str(out)), tok, rows)
        gaps[lam] = drop[high].mean() - drop[low].mean()
    assert gaps["0.25"] > 0.03 and gaps["0.25"] > gaps["1000"] + 0.05, gaps
    out = inst[3] / "train-0.25"
    lora_b = [v for k, v in load_file(str(out / "adapter_model.safetensors")).items() if "lora_B" in k]
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b)         # B starts at zero: it moved
    card = json.loads((out / "card.json").read_text())
    assert card["stage"] == "trainers.asft" and card["baseline"] == "user_mean" and card["train_examples"] == 24
    ws = card["weight_stats"]
    assert ws["max"] == pytest.approx(w.max()) and ws["min"] == pytest.approx(w.min())
    assert ws["mean"] == pytest.approx(w.mean()) and ws["ess"] == pytest.approx(w.sum() ** 2 / (w ** 2).sum())
    assert card["base_fingerprint"].startswith("llama/") and card["inputs"]["sequences"] == ds.fingerprint()


def test_sft_adapter_is_stacked_and_resume_continues(inst):
    from peft import LoraConfig, get_peft_model

    base, _ = load_model(str(inst[1]))
    torch.manual_seed(0)
    sft = get_peft_model(base, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]))
    for name, p in sft.named_parameters():
        if "lora_B" in name:
            p.data.normal_(std=0.1)
    sft.save_pretrained(inst[3] / "sft")
    out = inst[3] / "stacked"
    common = ["--adapter", str(inst[3] / "sft"), "--lora_r", "4", "--lora_alpha", "4", "--weighting", "bc",
              "--asft_baseline", "none", "--save_strategy", "steps"]
    assert _run(inst, out, *common, "--max_steps", "1", "--save_steps", "1") == 0
    assert (out / "checkpoint-1").is_dir() and (out / "rl_adapter" / "adapter_config.json").is_file()
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 6          # 2 (SFT) + 4 (new)
    assert json.loads((out / "rl_adapter" / "adapter_config.json").read_text())["r"] == 4
    assert _run(inst, out, *common, "--max_steps", "2", "--save_steps", "2", "--resume", "true") == 0
    card = json.loads((out / "card.json").read_text())
    assert card["resumed_from"].endswith("checkpoint-1") and card["sft_adapter"] == str(inst[3] / "sft")
    assert [h["step"] for h in card["log_history"] if "loss" in h] == [1, 2]
    assert card["weighting"] == "bc" and card["weight_stats"]["min"] >= 1.0      # w = rating in 1..5


def test_asft_resumed_equals_uninterrupted(inst):
    """Stopped after step 1 of 2 and resumed == 2 steps in one go (constant LR)."""
    from safetensors.torch import load_file

    save = ["--save_strategy", "steps", "--save_steps", "1", "--lr_scheduler_type", "constant"]
    cut, straight = inst[3] / "cut", inst[3] / "straight"
    assert _run(inst, cut, *save, "--max_steps", "1") == 0
    assert _run(inst, cut, *save, "--max_steps", "2", "--resume", "true") == 0
    assert _run(inst, straight, *save, "--max_steps", "2") == 0
    a = load_file(str(cut / "adapter_model.safetensors"))
    b = load_file(str(straight / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-6


def test_teacher_baseline_and_eval_loss_through_main(inst):
    out = inst[3] / "teacher"
    assert _run(inst, out, "--max_steps", "1", "--asft_baseline", "teacher", "--asft_teacher_k", "5",
                "--asft_normalize", "true", "--eval_samples", "3", "--eval_strategy", "steps", "--eval_steps", "1") == 0
    card = json.loads((out / "card.json").read_text())
    teacher = json.loads((inst[0] / "card.json").read_text())["made_at"]["teacher"]
    assert card["baseline"] == "teacher" and card["baseline_teacher"] == teacher and "teacher" in card["inputs"]
    assert card["normalize_per_batch"] is True and card["advantage_stats"]["max"] > card["advantage_stats"]["min"]
    (ev,) = [h for h in card["log_history"] if "eval_loss" in h]
    assert np.isfinite(ev["eval_loss"]) and [h["nll"] for h in card["log_history"] if "loss" in h]


def test_judge_ratings_hand_built():
    ds = RecDataset.from_sequences([[1, 2, 3, 4, 5], [5, 6, 2]], titles=["A", "B", "C", "D", "E", "F"])
    ds.ratings = [np.array([5, 4, 3, 2, 1], np.float32), np.array([2, 5, 1], np.float32)]
    ds.users = pd.DataFrame({"user_idx": [0, 1], "user_id": ["u1", "u2"]})
    rows = [{"user_id": "u1", "history": [1, 2]}, {"user_id": "u2", "history": [5]}]
    # u1: 1 is in the window (unknown), "C" -> 3 (rating 3), 4 (2), 6 never rated, 4 repeated counts once
    # u2: 2 (1), "Nope" unmatched, 5 in the window
    res = judge_ratings(ds, rows, [[1, "C", 4, 6, 4], [2, "Nope", 5]])
    assert res["n_recommended"] == 4 + 3 and res["n_known"] == 3
    assert res["mean_rating"] == pytest.approx((3 + 2 + 1) / 3)
    assert res["coverage"] == pytest.approx(3 / 7) and res["per_list"] == [pytest.approx(2.5), 1.0]
    # a user index has no window: item 1 is judged too
    res = judge_ratings(ds, [0], [[1, 6]])
    assert res["mean_rating"] == 5.0 and res["coverage"] == 0.5
    assert judge_ratings(ds, [1], [[3]])["mean_rating"] is None
    with pytest.raises(ValueError, match="2 rows/users but 1"):
        judge_ratings(ds, rows, [[1]])


@pytest.mark.parametrize("flags, message", [
    (["--asft_lambda", "0"], "asft_lambda must be > 0"),
    (["--asft_lambda", "-1"], "asft_lambda must be > 0"),
    (["--asft_baseline", "usermean"], "did you mean 'user_mean'"),
    (["--weighting", "awr"], "--weighting 'awr'"),
    (["--weighting", "bc", "--asft_baseline", "user_mean"], "pass --asft_baseline none"),
    (["--tasks", "I0"], "--tasks does not apply"),
    (["--padding_free", "true"], "--padding_free does not apply"),
])
def test_bad_config_is_a_clear_error(tmp_path, flags, message):
    with pytest.raises(ValueError, match=message):
        RecASFTConfig(output_dir=str(tmp_path), data=str(tmp_path), **{
            f[2:]: (float(v) if f == "--asft_lambda" else True if v == "true" else v)
            for f, v in zip(flags[::2], flags[1::2])})
    with pytest.raises(ValueError, match=message):
        main(["--data", str(tmp_path), "--output_dir", str(tmp_path / "o"), *flags])
