"""Advantage-Weighted SFT (Netflix A-SFT, REFERENCE.md §3) and reward-weighted behaviour
cloning on logged next-item examples whose reward is the user's rating.

Contextual bandit: context = the last ``history_len`` items before a training position,
action = the item the user took there, reward = the rating they gave it. Each example's
completion-only SFT loss (mean token NLL of the answer) is multiplied by a weight:

  ``--weighting asft`` (default)  w = exp((r − b) / λ), :func:`recalign.rewards.asft_weights`
  ``--weighting bc``              w = r (reward-weighted behaviour cloning; needs baseline none)

with the baseline b (``--asft_baseline``):

  ``none``       b = 0: w = exp(r/λ)
  ``user_mean``  the user's mean rating over their whole training part ``seq[:-2]``
  ``teacher``    OUR CHOICE of reward-model stand-in (REFERENCE.md §3 says "a reward
                 model's prediction"): the teacher's top-``asft_teacher_k`` items for the
                 example's history window (history excluded), each valued at its mean
                 rating over every user's training part; b = the mean of those values over
                 the items that have one (the global mean training rating when none has).
                 These item means include the example's own rating (it is training data).

``asft_clip`` caps w, ``asft_clip_advantage`` clips A before the exponential, and
``asft_normalize`` divides the weights by their mean within each (per-device) batch: all
three are our choices, off by default. The loss of a batch is mean_i(w_i · NLL_i).

Prompts are exactly I0 instruction rows (the I0 task spec's system message and template,
rendered by the same builder, a paraphrase drawn per example) asking for 1 item; the
completion is "1. <title>". With ``--adapter`` (an SFT adapter) a fresh LoRA is trained on
the SFT-merged model and the shipped adapter is the two stacked
(:func:`recalign.models.stack_adapters`); the fresh LoRA alone stays in ``rl_adapter/``.

    accelerate launch --config_file recipes/accelerate/cpu.yaml -m recalign.trainers.asft \\
        --config recipes/smollm2-135m/asft/config_ml100k.yaml
    python -m recalign.trainers.asft --model tiny-random --data runs/inst --output_dir runs/asft --max_steps 5

:func:`judge_ratings` is the "reward as judge" evaluation: the mean logged rating of the
recommended items where the user's rating is known.
"""
from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from trl import SFTTrainer

from recalign.data import DataError, RecDataset
from recalign.data.util import suggest
from recalign.rewards.asft import asft_weights, judge_ratings  # noqa: F401 (judge: part of this API)

from .common import load_training_model, lora_config, resume_checkpoint
from .sft import RecSFTConfig

__all__ = ["BASELINES", "WEIGHTINGS", "ASFTTrainer", "RecASFTConfig", "WeightedCollator", "example_weights",
           "item_mean_ratings", "judge_ratings", "logged_examples", "main", "teacher_baselines",
           "tokenize_examples", "train", "weight_stats", "weighted_nll"]

BASELINES = ("none", "user_mean", "teacher")
WEIGHTINGS = ("asft", "bc")


@dataclass
class RecASFTConfig(RecSFTConfig):
    adapter: str | None = field(default=None, metadata={
        "help": "SFT adapter to start from: merged in memory, a fresh LoRA trained on top, the two shipped stacked"})
    teacher: str | None = field(default=None, metadata={
        "help": "teacher directory for --asft_baseline teacher (default: the one in the data's card.json)"})
    max_users: int | None = field(default=None, metadata={"help": "logged examples of the first N users only"})
    history_len: int = field(default=10, metadata={"help": "items in each example's history window (I0: 10)"})
    max_examples_per_user: int | None = field(default=None, metadata={
        "help": "keep each user's last N training positions (default: all)"})
    weighting: str = field(default="asft", metadata={
        "help": "asft: w = exp((r - b)/lambda); bc: reward-weighted behaviour cloning, w = r"})
    asft_baseline: str = field(default="user_mean", metadata={
        "help": "b: none | user_mean (user's mean training rating) | teacher (mean item rating of the "
                "teacher's top-k, our choice)"})
    asft_lambda: float = field(default=1.0, metadata={"help": "temperature lambda > 0 of w = exp(A/lambda)"})
    asft_clip: float | None = field(default=None, metadata={"help": "cap each weight at this value (our choice)"})
    asft_clip_advantage: float | None = field(default=None, metadata={
        "help": "clip A to [-c, c] before the exponential (our choice)"})
    asft_normalize: bool = field(default=False, metadata={
        "help": "divide the weights by their mean within each batch (our choice)"})
    asft_teacher_k: int = field(default=10, metadata={"help": "top-k items of the teacher baseline"})

    def __post_init__(self):
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"--weighting {self.weighting!r}: expected one of {', '.join(WEIGHTINGS)}"
                             f"{suggest(self.weighting, WEIGHTINGS)}")
        if self.asft_baseline not in BASELINES:
            raise ValueError(f"--asft_baseline {self.asft_baseline!r}: expected one of {', '.join(BASELINES)}"
                             f"{suggest(self.asft_baseline, BASELINES)}")
        if not (np.isfinite(self.asft_lambda) and self.asft_lambda > 0):
            raise ValueError(f"--asft_lambda must be > 0 (the temperature of exp(A/lambda)), got {self.asft_lambda}")
        if self.weighting == "bc" and self.asft_baseline != "none":
            raise ValueError(f"--weighting bc weights by the reward itself (w = r); it takes no baseline, "
                             f"but --asft_baseline is {self.asft_baseline!r}: pass --asft_baseline none")
        if self.asft_clip is not None and not self.asft_clip > 0:
            raise ValueError(f"--asft_clip must be > 0, got {self.asft_clip}")
        if self.asft_clip_advantage is not None and not self.asft_clip_advantage >= 0:
            raise ValueError(f"--asft_clip_advantage must be >= 0, got {self.asft_clip_advantage}")
        for name in ("history_len", "asft_teacher_k", "max_users", "max_examples_per_user"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ValueError(f"--{name} must be >= 1, got {v}")
        if self.tasks:
            raise ValueError("--tasks does not apply to A-SFT: it trains on logged (history, item, rating) "
                             "examples built from the data's dataset, not on instruction rows")
        if self.padding_free:
            raise ValueError("--padding_free does not apply to A-SFT: its collator pads the weighted batches "
                             "itself (TRL allows no custom collator with padding-free); drop --padding_free")
        self.remove_unused_columns = False      # the collator needs the `weight` column
        # the rows arrive tokenised, with labels and weights (tokenize_examples): TRL's SFT preparation
        # (chat template, label masks, truncation) has been done, and would drop the weights
        self.dataset_kwargs = {**(self.dataset_kwargs or {}), "skip_prepare_dataset": True}
        self.prediction_loss_only = True        # eval = weighted loss; no logits gathered
        self.label_names = ["labels"]
        super().__post_init__()


# ----------------------------------------------------------------------- logged examples

def logged_examples(ds: RecDataset, max_users: int | None = None, history_len: int = 10,
                    max_examples_per_user: int | None = None, seed: int = 42,
                    split: str = "train") -> list[dict]:
    """Logged bandit examples as I0 rows asking for 1 item.

    ``split="train"``: every position t >= 1 of each user's training part ``seq[:-2]``
    (history ``tr[max(0, t - history_len):t]``, action ``tr[t]``, reward = the rating at t),
    the last ``max_examples_per_user`` positions per user when capped. ``split="valid"``:
    one per user, history ``seq[:-2][-history_len:]``, action and reward at ``seq[-2]``.
    Rows carry the I0 row fields (prompt, completion, task, user_id, history, target,
    item_count=1, paraphrase, ...) plus ``reward``, ``user_idx`` and ``position``.
    """
    from recalign.tasks.builder import BuildConfig, Builder, Context
    from recalign.tasks.spec import load_specs, resolve_tasks

    if ds.ratings is None:
        raise DataError(f"{ds.path or 'dataset'}: has no ratings; A-SFT needs a logged reward per interaction")
    if split not in ("train", "valid"):
        raise ValueError(f"split must be 'train' or 'valid', got {split!r}")
    spec = resolve_tasks("I0", load_specs())[0]
    b = Builder(ds, None, BuildConfig(seed=seed, max_users=max_users))
    rows = []
    for u in b.users:
        seq, rat = ds.sequences[u], ds.ratings[u]
        rng = np.random.default_rng([seed, int(u), 0 if split == "train" else 1])
        if split == "train":
            tr = seq[:-2]
            positions = list(range(1, len(tr)))
            if max_examples_per_user is not None:
                positions = positions[-max_examples_per_user:]
        else:
            positions = [len(seq) - 2] if len(seq) >= 3 else []
        for t in positions:
            hist = seq[max(0, t - history_len):t]
            ctx = Context(int(u), hist, int(seq[t]))
            row = b.row(spec, split, 0, ctx, rng, label=[int(seq[t])], item_count=1,
                        prompt_vars={"history": b.titles(hist), "item_count": 1})
            row.update(reward=float(rat[t]), user_idx=int(u), position=int(t))
            rows.append(row)
    return rows


def item_mean_ratings(ds: RecDataset) -> np.ndarray:
    """[n_items + 1] mean rating of each item over every user's training part (NaN: never rated there)."""
    items = np.concatenate([s[:-2] for s in ds.sequences] or [np.zeros(0, np.int64)])
    ratings = np.concatenate([r[:-2] for r in ds.ratings] or [np.zeros(0)]).astype(np.float64)
    total = np.bincount(items, weights=ratings, minlength=ds.n_items + 1)
    count = np.bincount(items, minlength=ds.n_items + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = total / count
    out[count == 0] = np.nan
    out[0] = np.nan
    return out


def teacher_baselines(ds: RecDataset, teacher, histories: Sequence[Sequence[int]], k: int = 10) -> np.ndarray:
    """Per history: mean item-mean-rating of the teacher's top-``k`` (history excluded) over
    the items rated in training; the global mean training rating when none of them is."""
    means = item_mean_ratings(ds)
    all_r = np.concatenate([r[:-2] for r in ds.ratings]).astype(np.float64)
    fallback = float(all_r.mean()) if all_r.size else 0.0
    out = np.empty(len(histories))
    for i, top in enumerate(teacher.topk([list(h) for h in histories], k=k)):
        v = means[np.asarray(top, dtype=np.int64)]
        v = v[np.isfinite(v)]
        out[i] = v.mean() if v.size else fallback
    return out


def example_weights(rows: Sequence[Mapping], ds: RecDataset, weighting: str = "asft", baseline: str = "user_mean",
                    lam: float = 1.0, clip: float | None = None, clip_advantage: float | None = None,
                    teacher=None, teacher_k: int = 10) -> tuple[np.ndarray, np.ndarray | None]:
    """(weights, baselines) for logged rows, before any per-batch normalisation.

    asft: :func:`recalign.rewards.asft_weights` on the rows' rewards with the chosen
    baseline; bc: w = r (capped at ``clip`` when given). Baselines are None for ``none``.
    """
    r = np.array([row["reward"] for row in rows], dtype=np.float64)
    if weighting == "bc":
        if baseline != "none":
            raise ValueError("weighting 'bc' takes no baseline (w = r); use baseline 'none'")
        return (np.minimum(r, clip) if clip is not None else r.copy()), None
    if weighting != "asft":
        raise ValueError(f"weighting must be one of {', '.join(WEIGHTINGS)}, got {weighting!r}")
    if baseline == "none":
        b = None
    elif baseline == "user_mean":
        user_mean = np.array([float(np.mean(x[:-2])) if len(x) > 2 else np.nan for x in ds.ratings])
        b = user_mean[[row["user_idx"] for row in rows]] if rows else np.zeros(0)
    elif baseline == "teacher":
        if teacher is None:
            raise DataError("--asft_baseline teacher needs a teacher: the data's card.json names none; "
                            "pass --teacher DIR")
        b = teacher_baselines(ds, teacher, [row["history"] for row in rows], teacher_k)
    else:
        raise ValueError(f"baseline must be one of {', '.join(BASELINES)}, got {baseline!r}")
    w = asft_weights(r, b, lam=lam, clip=clip, clip_advantage=clip_advantage)
    return w, b


def _stats(x: np.ndarray) -> dict:
    return {"mean": float(x.mean()), "min": float(x.min()), "max": float(x.max()), "std": float(x.std())}


def weight_stats(w: np.ndarray) -> dict:
    """Mean/min/max and the effective sample size (Σw)² / Σw² of the weights."""
    w = np.asarray(w, dtype=np.float64)
    if w.size == 0:
        return {"n": 0}
    ess = float(w.sum() ** 2 / max((w ** 2).sum(), 1e-300))
    return {"n": int(w.size), **_stats(w), "ess": ess, "ess_fraction": ess / w.size}


# ----------------------------------------------------------------------- tokens and loss

def tokenize_examples(rows: Sequence[Mapping], weights, tok, max_length: int | None = None):
    """(datasets.Dataset with input_ids / labels (−100 on the prompt) / weight, rows kept).

    Prompt = the chat template with the generation prompt; completion = the rest of the
    full conversation's text (answer + end of turn), tokenised separately so the label
    boundary is exact. Examples longer than ``max_length`` are dropped (counted by the caller).
    """
    import datasets

    prompts, completions = [], []
    for row in rows:
        p = tok.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True)
        full = tok.apply_chat_template(list(row["prompt"]) + list(row["completion"]), tokenize=False)
        if not full.startswith(p):
            raise DataError("the tokenizer's chat template does not render the prompt as a prefix of the "
                            "whole conversation; A-SFT cannot find the completion tokens")
        prompts.append(p)
        completions.append(full[len(p):])
    p_ids = tok(prompts, add_special_tokens=False)["input_ids"] if prompts else []
    c_ids = tok(completions, add_special_tokens=False)["input_ids"] if completions else []
    cols: dict[str, list] = {"input_ids": [], "labels": [], "weight": []}
    kept = []
    for i, (p, c) in enumerate(zip(p_ids, c_ids)):
        if max_length is not None and len(p) + len(c) > max_length:
            continue
        cols["input_ids"].append(p + c)
        cols["labels"].append([-100] * len(p) + c)
        cols["weight"].append(float(weights[i]))
        kept.append(i)
    return datasets.Dataset.from_dict(cols), kept


class WeightedCollator:
    """Right-pads input_ids (pad token), labels (−100) and returns the weights as a tensor."""

    def __init__(self, pad_token_id: int):
        self.pad = pad_token_id

    def __call__(self, features: list[dict]) -> dict:
        import torch

        n = max(len(f["input_ids"]) for f in features)
        ids = torch.full((len(features), n), self.pad, dtype=torch.long)
        labels = torch.full((len(features), n), -100, dtype=torch.long)
        mask = torch.zeros((len(features), n), dtype=torch.long)
        for i, f in enumerate(features):
            k = len(f["input_ids"])
            ids[i, :k] = torch.as_tensor(f["input_ids"])
            labels[i, :k] = torch.as_tensor(f["labels"])
            mask[i, :k] = 1
        weight = torch.tensor([float(f["weight"]) for f in features], dtype=torch.float32)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels, "weight": weight}


def weighted_nll(model, batch: Mapping, normalize: bool = False):
    """(loss, per-example mean token NLL over the completion): loss = mean_i(w_i · NLL_i),
    w divided by its batch mean first when ``normalize``. Only the positions from the
    batch's earliest completion token on go through the LM head."""
    import torch
    import torch.nn.functional as F

    labels = batch["labels"]
    is_label = labels[:, 1:] != -100
    if not bool(is_label.any()):
        raise ValueError("batch has no completion tokens")
    start = int(is_label.any(0).nonzero()[0])              # first shifted position with a label
    seq = labels.shape[1]
    keep = torch.arange(start, seq - 1, device=labels.device)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                   logits_to_keep=keep).logits.float()     # [B, K, V] for positions start..T-2
    target = labels[:, start + 1:]
    tok_nll = F.cross_entropy(logits.transpose(1, 2), target, ignore_index=-100, reduction="none")
    m = (target != -100).to(tok_nll.dtype)
    nll = (tok_nll * m).sum(1) / m.sum(1).clamp(min=1.0)
    w = batch["weight"].to(nll.dtype)
    if normalize:
        w = w / w.mean().clamp(min=torch.finfo(w.dtype).tiny)
    return (w * nll).mean(), nll


class ASFTTrainer(SFTTrainer):
    """TRL's SFTTrainer on pre-tokenised weighted rows (:func:`tokenize_examples`, padded by
    :class:`WeightedCollator`) whose loss is :func:`weighted_nll`; it also logs the unweighted
    completion NLL (``nll``) next to the weighted ``loss``."""

    loss_is_scaled_for_ga = False      # a per-batch mean: the Trainer divides by accumulation steps

    def __init__(self, *args, asft_normalize: bool = False, **kw):
        super().__init__(*args, **kw)
        self.asft_normalize = asft_normalize
        self.model_accepts_loss_kwargs = False      # no num_items_in_batch: the loss is per example
        self._nll_sum, self._nll_n = 0.0, 0

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, nll = weighted_nll(model, inputs, self.asft_normalize)
        if model.training:
            self._nll_sum += float(nll.detach().sum())
            self._nll_n += int(nll.numel())
        return (loss, {"nll": nll.detach()}) if return_outputs else loss

    def log(self, logs, *args, **kw):
        if self._nll_n and "loss" in logs:
            logs["nll"] = round(self._nll_sum / self._nll_n, 4)
            self._nll_sum, self._nll_n = 0.0, 0
        super().log(logs, *args, **kw)


# ----------------------------------------------------------------------- training

def _rows_and_weights(cfg: RecASFTConfig, ctx, split: str):
    rows = logged_examples(ctx.dataset, cfg.max_users, cfg.history_len,
                           cfg.max_examples_per_user if split == "train" else None, cfg.seed, split)
    if split == "valid":
        rows = rows[:cfg.eval_samples]
    w, b = example_weights(rows, ctx.dataset, cfg.weighting, cfg.asft_baseline, cfg.asft_lambda, cfg.asft_clip,
                           cfg.asft_clip_advantage, ctx.teacher, cfg.asft_teacher_k)
    return rows, w, b


def train(cfg: RecASFTConfig) -> Path:
    from peft import get_peft_model

    from recalign.data.util import provenance, sha256_file, write_json
    from recalign.models import load_policy, resolve_model, stack_into
    from recalign.models.resolve import model_fingerprint

    from .rewarding import load_reward_context

    ctx = load_reward_context(cfg.data, teacher=cfg.teacher, load_teacher=cfg.asft_baseline == "teacher")
    rows, w, b = _rows_and_weights(cfg, ctx, "train")
    if not rows:
        raise DataError(f"{cfg.data}: no logged training examples (users need >= 2 training items)")
    if cfg.max_train_samples and cfg.max_train_samples < len(rows):
        pick = np.sort(np.random.default_rng(cfg.seed).choice(len(rows), cfg.max_train_samples, replace=False))
        rows, w = [rows[i] for i in pick], w[pick]
        b = b[pick] if b is not None else None
    from recalign.models.device import tune_cpu_training

    cpu_tuning = tune_cpu_training(cfg.torch_compile)
    model, tok = load_training_model(cfg, lambda **kw: load_policy(cfg.model, cfg.adapter, **kw))
    train_ds, kept = tokenize_examples(rows, w, tok, cfg.max_length)
    too_long = len(rows) - len(kept)
    if not kept:
        raise DataError(f"every logged example is longer than --max_length {cfg.max_length}")
    if too_long:
        print(f"note: dropped {too_long} of {len(rows)} examples longer than --max_length {cfg.max_length}")
    eval_ds = None
    if cfg.eval_samples:
        v_rows, v_w, _ = _rows_and_weights(cfg, ctx, "valid")
        eval_ds = tokenize_examples(v_rows, v_w, tok, cfg.max_length)[0] if v_rows else None

    from transformers import set_seed

    set_seed(cfg.seed)       # LoRA's A matrices are drawn here, before the Trainer seeds: a run repeats
    model = get_peft_model(model, lora_config(cfg, model))
    out = Path(cfg.output_dir)
    last = resume_checkpoint(cfg)
    trainer = ASFTTrainer(model=model, args=cfg, train_dataset=train_ds, eval_dataset=eval_ds,
                          processing_class=tok, data_collator=WeightedCollator(tok.pad_token_id),
                          asft_normalize=cfg.asft_normalize)
    trainer.train(resume_from_checkpoint=last)
    rl_dir = out / "rl_adapter" if cfg.adapter else out
    trainer.save_model(str(rl_dir))                 # every process: FSDP/DeepSpeed gather here
    if not trainer.is_world_process_zero():        # under accelerate: one process writes the rest
        return out
    if cfg.adapter:
        stack_into(cfg.adapter, rl_dir, out)        # SFT then A-SFT; checkpoints and rl_adapter/ stay

    base = resolve_model(cfg.model)
    inputs = {"sequences": ctx.dataset.fingerprint()}
    if (Path(cfg.data) / "card.json").is_file():
        inputs["data_card"] = sha256_file(Path(cfg.data) / "card.json")
    teacher_dir = None
    if cfg.asft_baseline == "teacher":
        from recalign.data.util import card_path

        card = json.loads((Path(cfg.data) / "card.json").read_text())
        teacher_dir = cfg.teacher or card_path(card["config"]["teacher"], cfg.data,
                                               (card.get("made_at") or {}).get("teacher"))
        inputs["teacher"] = sha256_file(Path(teacher_dir) / "model.safetensors")
    if cfg.adapter and (Path(cfg.adapter) / "adapter_model.safetensors").is_file():
        inputs["sft_adapter"] = sha256_file(Path(cfg.adapter) / "adapter_model.safetensors")
    w_kept = w[kept]
    r_kept = np.array([rows[i]["reward"] for i in kept])
    write_json(out / "card.json", provenance(
        "trainers.asft", {k: v for k, v in asdict(cfg).items() if not k.startswith("_")}, seed=cfg.seed,
        inputs=inputs, base_model=str(base), base_fingerprint=model_fingerprint(base),
        sft_adapter=cfg.adapter, rl_adapter=str(rl_dir), cpu_tuning=cpu_tuning,
        weighting=cfg.weighting, baseline=cfg.asft_baseline, baseline_teacher=teacher_dir,
        lam=cfg.asft_lambda, clip=cfg.asft_clip, clip_advantage=cfg.asft_clip_advantage,
        normalize_per_batch=cfg.asft_normalize,
        train_examples=len(kept), dropped_too_long=too_long,
        users=len({rows[i]["user_idx"] for i in kept}),
        reward_stats=_stats(r_kept),
        advantage_stats=None if cfg.weighting == "bc" else _stats(r_kept - (b[kept] if b is not None else 0.0)),
        weight_stats=weight_stats(w_kept),
        resumed_from=last, log_history=trainer.state.log_history))
    return out


def main(argv: list[str] | None = None) -> int:
    from . import cli_main

    return cli_main(RecASFTConfig, train, argv)


if __name__ == "__main__":
    from recalign.errors import run_guarded

    sys.exit(run_guarded(main, prog="recalign.trainers.asft"))
