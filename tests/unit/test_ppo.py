"""RecLM-gen PPO on the tiny model: reward placement, learning, KL stop, skips, resume."""
import json
import math

import pytest
import torch
from safetensors.torch import load_file

from recalign.data import Catalog, DataError
from recalign.models import load_model
from recalign.rewards import item_and_list_rewards, parse_items
from recalign.trainers.ppo import RecPPOConfig, RecPPOTrainer, char_ends, gae, main, newline_ends, place_rewards


def _metaspace_tokenizer():
    """A second, unlike tokenizer: sentencepiece-style spaces, tiny character-level vocab."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE(unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Metaspace()
    tk.decoder = decoders.Metaspace()
    corpus = ["1. Toy Story\n2. Heat\n3. Alien", "Toy Heat Alien Fargo Story 1 2 3 . \n"] * 5
    tk.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=40, special_tokens=["<unk>", "<eos>"],
                                                       show_progress=False))
    return PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<eos>", unk_token="<unk>")


@pytest.fixture(scope="module")
def tiny(tiny_inst):
    return str(tiny_inst[1])


@pytest.mark.parametrize("which", ["bytelevel-bpe", "metaspace-chars"])
def test_item_rewards_land_on_the_last_token_of_their_line(which, tiny):
    tok = load_model(tiny)[1] if which == "bytelevel-bpe" else _metaspace_tokenizer()
    cat = Catalog(["Toy Story", "Heat", "Alien", "Fargo"], [["x"], ["x"], ["y"], ["y"]])
    ids = tok("1. Toy Story\n2. Heat\n3. Alien", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    text = tok.decode(ids, skip_special_tokens=True)
    res = item_and_list_rewards({"task": "I0", "history": [4], "target": 2, "item_count": 2}, text,
                                {1: 0, 2: 5, 3: 1}, cat)
    assert res.item_rewards == pytest.approx([1 / math.log2(3), 1.0, -1.0])   # distinct: traceable
    ends = char_ends(tok, ids)
    r = place_rewards(ends, res.line_ends, res.item_rewards, res.list_reward)
    assert r[-1] == pytest.approx(res.list_reward)                 # list reward on the final (EOS) token
    placed = [k for k in range(len(ids) - 1) if r[k] != 0]
    assert [r[k] for k in placed] == res.item_rewards
    for k, line_end in zip(placed, res.line_ends):                 # the token holding text[line_end - 1]
        assert len(tok.decode(ids[:k + 1], skip_special_tokens=True)) >= line_end
        assert len(tok.decode(ids[:k], skip_special_tokens=True)) < line_end
    if which == "metaspace-chars":                                 # really a different segmentation
        assert len(ids) != len(load_model(tiny)[1]("1. Toy Story\n2. Heat\n3. Alien")["input_ids"]) + 1
    # reclm-gen (item_reward_token: newline): on the token holding the newline after each title;
    # the last title has none and keeps its own end
    nl = place_rewards(ends, newline_ends(text, res.line_ends), res.item_rewards, res.list_reward)
    on = [k for k in range(len(ids) - 1) if nl[k] != 0]
    assert [nl[k] for k in on] == res.item_rewards and on[2] == placed[2] and on[:2] != placed[:2]
    for k, line_end in zip(on[:2], res.line_ends):
        assert tok.decode(ids[:k + 1], skip_special_tokens=True)[line_end:].startswith("\n")
        assert "\n" not in tok.decode(ids[:k], skip_special_tokens=True)[line_end:]


def test_sequence_mean_weighs_answers_equally():
    from recalign.trainers.ppo import masked_mean, sequence_mean

    x, m = torch.tensor([[1.0, 1.0, 0.0], [4.0, 9.0, 9.0]]), torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    assert float(sequence_mean(x, m)) == pytest.approx((1.0 + 4.0) / 2)      # padded positions ignored
    assert float(masked_mean(x, m)) == pytest.approx((1.0 + 1.0 + 4.0) / 3)


def test_gae_matches_hand_computation():
    r = torch.tensor([[0.0, 1.0, 2.0, 0.0]])
    v = torch.tensor([[0.5, 0.25, 1.0, 9.0]])
    m = torch.tensor([[1.0, 1.0, 1.0, 0.0]])                       # last position is padding
    adv, ret = gae(r, v, m, gamma=0.5, lam=0.5)
    d2 = 2.0 - 1.0
    d1 = 1.0 + 0.5 * 1.0 - 0.25
    d0 = 0.0 + 0.5 * 0.25 - 0.5
    a2, a1 = d2, d1 + 0.25 * d2
    a0 = d0 + 0.25 * a1
    assert adv[0].tolist() == pytest.approx([a0, a1, a2, 0.0])
    assert ret[0, :3].tolist() == pytest.approx([a0 + 0.5, a1 + 0.25, a2 + 1.0])


class _Toy:
    """Reward 1 when the (single) recommended title is "Alien"."""
    def __init__(self, text):
        items = parse_items(text)
        self.item_rewards = [1.0 if it.title == "Alien" else 0.0 for it in items]
        self.line_ends = [it.line_end for it in items]
        self.list_reward = float(bool(items) and items[0].title == "Alien")
        self.status = ["ok"] * len(items)


TOY_ROWS = [{"prompt": [{"role": "user", "content": "Recommend one movie."}], "history": [], "item_count": 1,
             "task": "toy"}]
TITLES = ["Heat", "Alien", "Fargo", "Babe"]


def _toy_trainer(tiny, tmp_path, reward_fn=None, **kw):
    model, tok = load_model(tiny)
    args = dict(model=tiny, data="unused", output_dir=str(tmp_path), steps=6, prompts_per_step=8,
                max_new_tokens=8, grounded=True, grounded_strict=True, learning_rate=1e-2, kl_coef=0.0,
                target_kl=None, save_steps=0, lora_alpha=8, seed=0, temperature=1.0,
                rollout_backend="hf")     # vLLM rollouts: tests/integration/test_vllm.py
    args.update(kw)
    fn = reward_fn or (lambda rows, texts: [_Toy(t) for t in texts])
    return RecPPOTrainer(RecPPOConfig(**args), model, tok, TOY_ROWS, fn, titles=TITLES, log=lambda s: None)


def test_ppo_raises_reward_on_a_toy_task(tiny, tmp_path):
    tr = _toy_trainer(tiny, tmp_path)
    hist = tr.train()
    rewards = [h["reward/list"] for h in hist]
    # one title in four earns reward: about 0.25 at first, most of the batch once learned
    assert rewards[0] < 0.5 and min(rewards[-3:]) > 0.7
    assert all(h["updates"] == 8 for h in hist)                       # 16 answers / 8 x 4 epochs
    assert all(h["illegal/nonexist"] == 0 for h in hist)               # grounded rollouts
    greedy = tr._generate(tr._encode(TOY_ROWS), TOY_ROWS, greedy=True)
    assert tr.tok.decode(tr._trim(greedy)[0], skip_special_tokens=True).strip() == "1. Alien"
    lines = (tmp_path / "log.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [1, 2, 3, 4, 5, 6]


def test_kl_penalty_and_forced_kl_early_stop(tiny, tmp_path):
    hist = _toy_trainer(tiny, tmp_path / "a", steps=3, kl_coef=0.3).train()
    assert hist[0]["kl"] == pytest.approx(0.0, abs=1e-6)                # actor == reference at step 1
    assert hist[-1]["kl"] > 0                                          # then the policy moved away
    stop = _toy_trainer(tiny, tmp_path / "b", steps=2, target_kl=1e-9).train()
    # the first minibatch is on-policy (KL 0) and updates; the next one sees KL > target: stop
    assert all(h["kl_early_stop"] and h["updates"] == 1 for h in stop)
    # kl_stop epoch_end (reclm-gen): the check waits for the end of an epoch, so a whole epoch
    # (2 minibatches of 8) runs before the stop
    epoch = _toy_trainer(tiny, tmp_path / "c", steps=2, target_kl=-1.0, kl_stop="epoch_end").train()
    assert all(h["kl_early_stop"] and h["updates"] == 2 and "epoch_end_kl" in h for h in epoch)
    assert RecPPOConfig(model=tiny, data="unused", protocol="reclm-gen").kl_stop == "epoch_end"


def test_failing_or_nan_rewards_skip_the_sample(tiny, tmp_path):
    calls = {"n": 0}

    def flaky(rows, texts):
        out = []
        for t in texts:
            calls["n"] += 1
            if calls["n"] % 4 == 1:
                raise RuntimeError("judge crashed")
            r = _Toy(t)
            if calls["n"] % 4 == 2:
                r.list_reward = math.nan
            out.append(r)
        return out

    hist = _toy_trainer(tiny, tmp_path, reward_fn=flaky, steps=2).train()
    for h in hist:
        assert h["skipped"] > 0 and h["samples"] == 16 - h["skipped"]
        assert math.isfinite(h["pg_loss"]) and math.isfinite(h["vf_loss"])


@pytest.fixture(scope="module")
def sft_adapter(tiny_inst, tmp_path_factory):
    from recalign.trainers.sft import main as sft_main

    data, model, _ = tiny_inst
    out = tmp_path_factory.mktemp("ppo_sft") / "sft"
    sft_main(["--model", str(model), "--data", str(data), "--output_dir", str(out), "--max_steps", "1",
              "--per_device_train_batch_size", "2", "--learning_rate", "1e-2", "--save_strategy", "no",
              "--report_to", "none", "--lora_top_layers", "1"])
    return out


def test_main_resumes_and_writes_a_loadable_adapter(tiny_inst, sft_adapter, tmp_path):
    from peft import PeftModel

    data, model, _ = tiny_inst
    out = tmp_path / "ppo"
    args = ["--model", str(model), "--adapter", str(sft_adapter), "--data", str(data), "--output_dir", str(out),
            "--prompts_per_step", "2", "--max_new_tokens", "12", "--learning_rate", "1e-3", "--save_steps", "2",
            "--lora_top_layers", "1", "--rollout_backend", "hf"]
    assert main([*args, "--steps", "2"]) == 0
    assert (out / "checkpoint-2" / "actor.safetensors").is_file()
    assert main([*args, "--steps", "3", "--resume", "true"]) == 0
    card = json.loads((out / "card.json").read_text())
    assert card["resumed_from"].endswith("checkpoint-2")
    assert [h["step"] for h in card["log_history"]] == [1, 2, 3]
    assert [json.loads(x)["step"] for x in (out / "log.jsonl").read_text().splitlines()] == [1, 2, 3]
    assert card["base_fingerprint"].startswith("llama/") and card["sft_adapter"] == str(sft_adapter)
    # one adapter on the original base: SFT (r 16) and PPO (r 4) stacked
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["r"] == 20
    PeftModel.from_pretrained(load_model(str(model))[0], str(out))
    ppo_only = [k for k in load_file(str(out / "adapter_model.safetensors")) if ".layers.0." in k]
    assert ppo_only == []                   # --lora_top_layers 1 for both: only layer 1 is adapted
    # resumed == uninterrupted: the same 3 steps in one go give the same adapter
    straight = tmp_path / "ppo-straight"
    assert main([*[str(straight) if a == str(out) else a for a in args], "--steps", "3"]) == 0
    a, b = load_file(str(out / "adapter_model.safetensors")), load_file(str(straight / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-6
    # and a resume that changes what is learned is refused, naming the setting
    with pytest.raises(DataError, match=r"learning_rate: 0\.001 -> 0\.01"):
        main([*[("1e-2" if a == "1e-3" else a) for a in args], "--steps", "4", "--resume", "true"])


def test_rows_missing_reward_fields_fail_before_any_rollout(tiny_inst, tmp_path):
    import datasets

    data, model, _ = tiny_inst
    dd = datasets.load_from_disk(str(data / "dataset"))
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "card.json").write_text((data / "card.json").read_text())
    datasets.DatasetDict({"train": dd["train"].remove_columns(["item_count"])}).save_to_disk(str(bad / "dataset"))
    with pytest.raises(DataError, match=r"row 0 \(task 'I0'\).*'item_count'"):
        main(["--model", str(model), "--data", str(bad), "--output_dir", str(tmp_path / "o"), "--steps", "1"])
    assert not (tmp_path / "o").exists()


def test_each_reward_lands_on_the_sample_it_scored(tiny, tmp_path):
    """A reward that encodes its own answer's text must sit on that answer's last token (a
    known failure elsewhere: rewards matched back to samples by prompt text)."""
    import zlib

    def code(t):
        return float(zlib.crc32(t.encode()) % 1000)

    class _Own(_Toy):
        def __init__(self, text):
            super().__init__(text)
            self.item_rewards = [0.0] * len(self.item_rewards)
            self.list_reward = code(text)

    tr = _toy_trainer(tiny, tmp_path, reward_fn=lambda rows, texts: [_Own(t) for t in texts], steps=1,
                      grounded=False, max_new_tokens=6)
    batch = tr.rollout()
    n = batch["resp"].shape[0]
    assert n == 16
    texts = set()
    for j in range(n):
        length = int(batch["mask"][j].sum())
        ans = batch["resp"][j, :length].tolist()
        text = tr.tok.decode(ans, skip_special_tokens=True)
        texts.add(text)
        kl = float(batch["old_logp"][j, length - 1] - batch["ref_logp"][j, length - 1])
        want = code(text)
        # the score tensor is not kept; the last-token reward is recoverable from GAE's input
        assert abs(float(batch["ret"][j, length - 1]) - (want - tr.cfg.kl_coef * kl)) < 1e-3, (j, text)
    assert len(texts) > 1                                # the samples really differ
    st = batch["stats"]
    assert 0.0 <= st["same_reward_share"] <= 1.0 and st["reward/spread"] >= 0.0


def test_validation_keeps_the_best_checkpoint_and_says_whether_it_beats_sft(tiny, tmp_path):
    tr = _toy_trainer(tiny, tmp_path, steps=6, save_steps=2, valid_rows=1)
    tr.valid_rows = TOY_ROWS * 4
    tr.train()
    steps = [v["step"] for v in tr.validation]
    assert steps == [0, 2, 4, 6]                          # the SFT model first, then each checkpoint
    rewards = [v["reward"] for v in tr.validation]
    assert rewards[0] < 1 and max(rewards) == 1.0         # greedy "1. Alien" once learned
    best = tr.restore_best(tmp_path)
    assert best == steps[rewards.index(max(rewards))]
    greedy = tr._generate(tr._encode(TOY_ROWS), TOY_ROWS, greedy=True)
    assert tr.tok.decode(tr._trim(greedy)[0], skip_special_tokens=True).strip() == "1. Alien"
    summary = tr.validation_summary(best)
    assert summary["best_step"] == best and summary["rows"] == 4 and len(summary["curve"]) == 4
    assert summary["best_vs_sft"]["n"] == 4 and summary["best_vs_sft"]["diff"] == pytest.approx(1 - rewards[0])
    c = summary["best_vs_sft"]
    assert summary["beats_sft"] == (c["lo"] > 0 and c["p"] < 0.05)


def test_reclm_gen_protocol_sets_the_official_optimisation(tiny, tmp_path):
    from recalign.trainers.ppo import RunningMoments

    cfg = RecPPOConfig(model=tiny, data="unused", protocol="reclm-gen", steps=8)
    assert (cfg.reward_scaling, cfg.lr_schedule, cfg.adam_eps, cfg.weight_decay, cfg.max_grad_norm,
            cfg.item_reward_token, cfg.loss_average) == ("running_std", "warmup_power2", 1e-5, 0.0, 0.5, "newline",
                                                         "sequence")
    ours = RecPPOConfig(model=tiny, data="unused", max_grad_norm=2.0)
    assert (ours.reward_scaling, ours.lr_schedule, ours.max_grad_norm, ours.item_reward_token) == \
        ("none", "constant", 2.0, "line_end")
    with pytest.raises(ValueError, match="protocol must be one of recalign, reclm-gen"):
        RecPPOConfig(model=tiny, data="unused", protocol="paper")
    tr = _toy_trainer(tiny, tmp_path, steps=4, protocol="reclm-gen", warmup_steps=1, learning_rate=1e-3)
    assert tr.opt.param_groups[0]["eps"] == 1e-5 and tr.opt.param_groups[0]["weight_decay"] == 0.0
    hist = tr.train()
    lrs = [h["lr"] for h in hist]
    # one warm-up step to 1e-3, then (1 - t/T)^2 decay to 0 at the last step
    assert lrs[0] == pytest.approx(1e-3) and lrs[1] == pytest.approx(1e-3 * (2 / 3) ** 2) and lrs[-1] == 0.0
    rm = RunningMoments()
    rm.update([2.0])
    assert rm.std == 1.0                                    # nothing to divide by yet
    rm.update([4.0, 6.0])
    assert rm.std == pytest.approx(math.sqrt(8 / 3))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(n: int, args: list[str], tmp_path) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.getcwd()}
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={n}", f"--master_port={_free_port()}",
           "-m", "recalign.trainers.ppo", *args]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]


def _ppo2_args(tiny_inst, sft_adapter, out) -> list[str]:
    data, model, _ = tiny_inst
    return ["--model", str(model), "--adapter", str(sft_adapter), "--data", str(data), "--output_dir", str(out),
            "--prompts_per_step", "2", "--samples_per_prompt", "2", "--max_new_tokens", "10",
            "--learning_rate", "1e-3", "--save_steps", "1", "--lora_top_layers", "1", "--rollout_backend", "hf",
            "--target_kl", "0.5"]


def test_two_process_ppo_stays_in_step_on_gloo(tiny_inst, sft_adapter, tmp_path):
    """DDP on CPU (gloo, torchrun): two ranks roll out their own prompts, average gradients and
    agree on the sample count and the KL stop, so they end with the same weights (the trainer
    checks and the card records it) and the log counts both ranks' samples."""
    out = tmp_path / "ppo2"
    _torchrun(2, [*_ppo2_args(tiny_inst, sft_adapter, out), "--steps", "2"], tmp_path)
    card = json.loads((out / "card.json").read_text())
    assert card["processes"] == 2 and len(card["rank_checksums"]) == 2
    assert card["rank_checksums"][0] == pytest.approx(card["rank_checksums"][1], rel=1e-9)
    assert [h["step"] for h in card["log_history"]] == [1, 2]
    assert all(h["ranks"] == 2 and h["samples"] + h["skipped"] == 8 for h in card["log_history"])
    state = json.loads((out / "checkpoint-2" / "state.json").read_text())
    assert len(state["rng_by_rank"]) == 2 and state["rng_by_rank"][0] != state["rng_by_rank"][1]


def test_two_process_ppo_resume_equals_an_uninterrupted_run(tiny_inst, sft_adapter, tmp_path):
    """Each rank resumes its own sampling stream: 1 step + resume to 2 == 2 steps straight."""
    out, straight = tmp_path / "ppo2", tmp_path / "straight"
    _torchrun(2, [*_ppo2_args(tiny_inst, sft_adapter, out), "--steps", "1"], tmp_path)
    _torchrun(2, [*_ppo2_args(tiny_inst, sft_adapter, out), "--steps", "2", "--resume", "true"], tmp_path)
    _torchrun(2, [*_ppo2_args(tiny_inst, sft_adapter, straight), "--steps", "2"], tmp_path)
    assert json.loads((out / "card.json").read_text())["resumed_from"].endswith("checkpoint-1")
    a, b = load_file(str(out / "adapter_model.safetensors")), load_file(str(straight / "adapter_model.safetensors"))
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-6


def test_reusing_the_frozen_layers_changes_nothing_but_the_work(tiny, tmp_path):
    """With LoRA on the top layer only, the bottom layer's output is computed once per rollout
    and reused by the reference, value and update forwards: the same rewards, losses and
    weights as running every forward whole."""
    runs = {}
    for reuse in (True, False):
        tr = _toy_trainer(tiny, tmp_path / str(reuse), steps=2, lora_top_layers=1, reuse_frozen_layers=reuse)
        assert tr._k == (1 if reuse else 0)
        hist = tr.train()
        runs[reuse] = (hist, {n: p.detach().clone() for n, p in tr.peft.named_parameters() if p.requires_grad},
                       tr.value_head.weight.detach().clone())
    (h1, w1, v1), (h0, w0, v0) = runs[True], runs[False]
    for a, b in zip(h1, h0):
        for key in ("reward/list", "kl", "pg_loss", "vf_loss", "entropy", "updates"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), key
    assert w1.keys() == w0.keys() and all(torch.allclose(w1[n], w0[n], rtol=1e-4, atol=1e-6) for n in w1)
    assert any((w1[n] != 0).any() for n in w1 if "lora_B" in n)        # it did train
    assert torch.allclose(v1, v0, rtol=1e-4, atol=1e-7)
    # LoRA on every layer: nothing is frozen below it
    assert _toy_trainer(tiny, tmp_path / "all", steps=1)._k == 0


def test_reuse_is_refused_where_the_trunk_rescales_its_input(tiny, tmp_path):
    """A trunk whose forward changes inputs_embeds (Gemma multiplied them by sqrt(hidden) there
    before transformers 5 moved the scale into the embedding) cannot start from layer k's input:
    the check at start turns the reuse off, says so, and training runs every forward whole."""
    model, tok = load_model(tiny)
    body = model.model
    plain = body.forward

    def rescaling(*a, inputs_embeds=None, **kw):
        return plain(*a, inputs_embeds=None if inputs_embeds is None else inputs_embeds * 2.0, **kw)
    body.forward = rescaling
    notes = []
    cfg = RecPPOConfig(model=tiny, data="unused", output_dir=str(tmp_path), steps=1, lora_top_layers=1,
                       rollout_backend="hf", save_steps=0, max_new_tokens=8)
    tr = RecPPOTrainer(cfg, model, tok, TOY_ROWS, lambda rows, texts: [_Toy(t) for t in texts],
                       titles=TITLES, log=notes.append)
    assert tr._k == 0 and any("does not start cleanly from layer 1" in n for n in notes)
    assert "hidden" not in tr.rollout()


def test_cpu_bf16_runs_every_forward_under_autocast_and_stays_on_policy(tiny, tmp_path):
    """cpu_bf16: the forwards compute in bf16 (log-probs differ from fp32 by rounding only), and
    rollout and update share the autocast, so the first minibatch is exactly on-policy (KL 0: it
    updates once before target_kl 1e-9 stops the next, as in fp32)."""
    if not (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()):
        pytest.skip("this CPU has no bf16 instructions (the refusal is tested below)")
    fp = _toy_trainer(tiny, tmp_path / "fp", steps=1)
    bf = _toy_trainer(tiny, tmp_path / "bf", steps=1, cpu_bf16=True)
    batch = fp.rollout()
    T = batch["resp"].shape[1]
    with torch.no_grad():
        a = fp._logp(fp._forward_logits(batch["ids"], batch["attn"], T), batch["resp"])
        b = bf._logp(bf._forward_logits(batch["ids"], batch["attn"], T), batch["resp"])
    diff = ((a - b).abs() * batch["mask"]).max()
    assert 0 < diff < 0.1
    assert all(h["kl_early_stop"] and h["updates"] == 1
               for h in _toy_trainer(tiny, tmp_path / "stop", steps=2, cpu_bf16=True, target_kl=1e-9).train())


def test_cpu_bf16_is_refused_where_bf16_would_be_emulated(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    with pytest.raises(ValueError, match="cpu_bf16: this CPU has neither AVX512-BF16 nor AMX"):
        RecPPOConfig(cpu_bf16=True)
