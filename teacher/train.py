"""Train and evaluate the SASRec teacher.

Training uses every position of a user's training sequence at once (inputs ``s[:-1]``,
targets ``s[1:]``, in windows of ``max_len``) with full-softmax cross-entropy over all
items, which carries the same signal as RecBole's one-sample-per-prefix scheme for about
1/50 of the compute (REFERENCE.md §5). Early stopping on validation NDCG@10. The same loop
trains every item representation (``item_repr`` id | content | hybrid, :mod:`.sasrec`);
``content`` defaults to InfoNCE over in-batch negatives, as LEARN trains.

Evaluation ranks the target against all items. ``mask_history=True`` removes the user's
own earlier items from the ranking (the convention of most papers and of RecLM-gen's
teacher server); ``False`` is RecBole's (only padding removed). Both are reported.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from recalign.data import DataError, RecDataset
from recalign.data.util import atomic_dir, card_relative, provenance, write_json

from .config import TeacherTrainConfig
from .metrics import rank_metrics
from .sasrec import SASRec, SASRecConfig, left_pad


def _windows(seqs: list[np.ndarray], max_len: int, rng: np.random.Generator) -> list[tuple[np.ndarray, int]]:
    """Cut each sequence into windows of up to max_len+1 items so that every target is
    trained exactly once per epoch. For long sequences the first (most recent) window
    keeps only its last ``max_len - shift`` targets, ``shift`` random per epoch, so the
    boundaries and hence the contexts vary between epochs. Returns (window, skip): the
    number of leading targets of the window that belong to another window."""
    out = []
    for s in seqs:
        n = len(s)
        if n < 2:
            continue
        shift = int(rng.integers(0, max_len)) if n > max_len + 1 else 0
        end, first = n, True
        while end > 1:
            start = max(0, end - max_len - 1)
            targets = end - start - 1
            skip = max(0, targets - (max_len - shift)) if first else 0
            out.append((s[start:end], skip))
            end -= targets - skip
            first = False
    return out


def _batch(windows: list[tuple[np.ndarray, int]], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.zeros(len(windows), max_len, dtype=torch.long)
    y = torch.zeros(len(windows), max_len, dtype=torch.long)
    for i, (w, skip) in enumerate(windows):
        k = len(w) - 1
        x[i, max_len - k:] = torch.from_numpy(np.array(w[:-1], dtype=np.int64))
        y[i, max_len - k:] = torch.from_numpy(np.array(w[1:], dtype=np.int64))
        y[i, max_len - k:max_len - k + skip] = 0       # targets another window covers
    return x, y


def _loss(model: SASRec, x: torch.Tensor, y: torch.Tensor, kind: str, n_items: int,
          gen: torch.Generator, log_q: torch.Tensor | None = None) -> torch.Tensor:
    h = model(x)
    keep = y > 0
    h, y = h[keep], y[keep]
    if kind == "ce":
        return F.cross_entropy(model.item_logits(h), y)
    if kind == "infonce":
        # in-batch negatives: every target of the batch is a candidate for every position
        # (deduplicated, so a repeated item is never its own negative)
        cand, label = torch.unique(y, return_inverse=True)
        logits = model.item_logits(h, cand)
        if log_q is not None:
            logits = logits - log_q[cand]
        return F.cross_entropy(logits, label)
    neg = torch.randint(1, n_items + 1, y.shape, generator=gen)
    u = model.user_vectors(h)
    pos_s = (u * model.output_vectors(y)).sum(-1)
    neg_s = (u * model.output_vectors(neg)).sum(-1)
    return F.binary_cross_entropy_with_logits(torch.cat([pos_s, neg_s]),
                                              torch.cat([torch.ones_like(pos_s), torch.zeros_like(neg_s)]))


@torch.no_grad()
def full_ranks(model: SASRec, histories: list, targets: np.ndarray, mask_history: bool,
               batch_size: int = 512) -> np.ndarray:
    """0-based rank of each target among all items (ties count against the target)."""
    model.eval()
    ranks = []
    for i in range(0, len(histories), batch_size):
        hb = histories[i:i + batch_size]
        tb = torch.tensor(np.asarray(targets[i:i + batch_size]), dtype=torch.long)
        scores = model.item_logits(model(left_pad(hb, model.cfg.max_len))[:, -1])
        if mask_history:
            for r, h in enumerate(hb):
                if len(h):
                    idx = torch.tensor(np.asarray(h), dtype=torch.long)
                    scores[r, idx[idx != tb[r]]] = float("-inf")
        tgt = scores.gather(1, tb[:, None])
        ranks.append(((scores > tgt) | ((scores == tgt) & (torch.arange(scores.shape[1]) < tb[:, None]))).sum(1))
    return torch.cat(ranks).numpy() if ranks else np.zeros(0, dtype=np.int64)


def popularity_ranks(ds: RecDataset, split: str, mask_history: bool) -> np.ndarray:
    """The popularity baseline: items ranked by training-interaction count."""
    return count_ranks(train_counts(ds), *ds.split_examples(split), mask_history=mask_history)


def count_ranks(counts: np.ndarray, histories, targets, mask_history: bool = True) -> np.ndarray:
    """0-based rank of each target when items are ordered by ``counts`` (ties by index)."""
    base = counts.astype(np.float64)
    base[0] = -np.inf
    ranks = np.empty(len(targets), dtype=np.int64)
    for u, (h, t) in enumerate(zip(histories, targets)):
        s = base.copy()
        if mask_history and len(h):
            s[h[h != t]] = -np.inf
        ranks[u] = int((s > s[t]).sum() + ((s == s[t]) & (np.arange(len(s)) < t)).sum())
    return ranks


def evaluate(model: SASRec, ds: RecDataset, split: str, mask_history: bool, ks=(5, 10, 20),
             window: int | None = None) -> dict:
    """Full-ranking metrics; ``window``: only the last N history items are the input (and,
    masked, the items removed), as labels and rewards query the teacher (windows of <= 10)."""
    hist, targets = ds.split_examples(split)
    if window:
        hist = [h[-window:] for h in hist]
    return rank_metrics(full_ranks(model, hist, targets, mask_history), ks)


def build_model(ds: RecDataset, cfg: TeacherTrainConfig, content: np.ndarray | None = None,
                log=print) -> tuple[SASRec, dict | None]:
    """An untrained teacher of ``cfg.item_repr`` with its frozen content embeddings in place.

    ``content``: a precomputed ``[N+1, d]`` matrix (tests, benchmarks); otherwise the items'
    texts are encoded by ``cfg.content_model`` (cached, :mod:`.content`). Returns the model and
    the content card (None for ``id``).
    """
    from .content import item_content, standardize

    info = None
    dim = 0
    if cfg.item_repr != "id":
        if content is None:
            content, info = item_content(ds, cfg.content_model, cfg.content_template,
                                         max_length=cfg.content_max_length, log=log)
        else:
            info = {"model": "given"}
        if content.shape[0] != ds.n_items + 1:
            raise DataError(f"content embeddings have {content.shape[0]} rows for {ds.n_items} items (+ padding)")
        no_text = np.abs(content).sum(1) == 0
        no_text[0] = False
        info["items_without_text"] = int(no_text.sum())
        if cfg.item_repr == "content" and no_text.any():
            raise DataError(
                f"{ds.path or 'dataset'}: {int(no_text.sum())} of {ds.n_items} items have no text to encode "
                f"(e.g. item_idx {', '.join(map(str, np.flatnonzero(no_text)[:5]))}); item_repr 'content' "
                "scores items by their text alone. Use --item-repr hybrid (those items keep their id "
                "embedding), or give them titles/categories and --content-template that renders them")
        dim = int(content.shape[1])
    model = SASRec(SASRecConfig(ds.n_items, cfg.hidden, cfg.layers, cfg.heads, cfg.inner, cfg.dropout, cfg.max_len,
                                item_repr=cfg.item_repr, content_dim=dim, temperature=cfg.temperature,
                                id_dropout=cfg.id_dropout if cfg.item_repr == "hybrid" else 0.0))
    if cfg.item_repr != "id":
        with torch.no_grad():
            model.content.copy_(torch.from_numpy(standardize(content)))
    if cfg.item_repr == "hybrid":
        counts = train_counts(ds)
        keep = np.ones(ds.n_items + 1, dtype=np.float32)
        if cfg.drop_unseen_id:
            keep = ((counts > 0) | no_text).astype(np.float32)   # no text: the id part is all there is
            info["ids_dropped"] = int(ds.n_items - keep[1:].sum())
        keep[0] = 0.0
        with torch.no_grad():
            model.id_mask.copy_(torch.from_numpy(keep))
    return model, info


def train_counts(ds: RecDataset) -> np.ndarray:
    """Training interactions per item index (``[N+1]``, padding 0)."""
    seqs = ds.train_sequences()
    flat = np.concatenate(seqs) if seqs else np.zeros(0, dtype=np.int64)
    return np.bincount(flat, minlength=ds.n_items + 1)[:ds.n_items + 1]


def train_teacher(ds: RecDataset, cfg: TeacherTrainConfig, log=print,
                  content: np.ndarray | None = None) -> tuple[SASRec, dict]:
    """Train with early stopping; returns the best model and a metrics dict.

    >>> model, metrics = train_teacher(RecDataset.load("runs/ml100k"), TeacherTrainConfig())  # doctest: +SKIP
    >>> metrics["test"]["masked"]["HR@10"]                                                    # doctest: +SKIP
    """
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    model, content_info = build_model(ds, cfg, content, log=log)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    train = ds.train_sequences()
    log_q = None
    if cfg.loss == "infonce" and cfg.logq:
        # targets of training positions: every item of a sequence but its first
        targets = np.bincount(np.concatenate([s[1:] for s in train] or [np.zeros(0, np.int64)]),
                              minlength=ds.n_items + 1)[:ds.n_items + 1]
        log_q = torch.log(torch.from_numpy((targets + 1) / (targets + 1).sum()).float())
    best, best_state, best_epoch, bad = -1.0, None, 0, 0
    history = []
    t0 = time.perf_counter()
    time_to_best = 0.0
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        wins = _windows(train, cfg.max_len, rng)
        order = rng.permutation(len(wins))
        total, steps = 0.0, 0
        for i in tqdm(range(0, len(order), cfg.batch_size), desc=f"teacher epoch {epoch}",
                      leave=False, mininterval=2.0):
            x, y = _batch([wins[j] for j in order[i:i + cfg.batch_size]], cfg.max_len)
            loss = _loss(model, x, y, cfg.loss, ds.n_items, gen, log_q)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item()
            steps += 1
        row = {"epoch": epoch, "loss": total / max(steps, 1), "time_s": round(time.perf_counter() - t0, 2)}
        if epoch % cfg.eval_every == 0:
            valid = evaluate(model, ds, "valid", cfg.mask_history, ks=(10,))
            row.update({f"valid_{k}": v for k, v in valid.items()})
            if valid["NDCG@10"] > best:
                best, best_epoch, bad = valid["NDCG@10"], epoch, 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                time_to_best = time.perf_counter() - t0
            else:
                bad += 1
        history.append(row)
        log(json.dumps(row))
        if bad >= cfg.patience:
            break
        if cfg.time_budget_s is not None and time.perf_counter() - t0 > cfg.time_budget_s:
            log(f"time budget {cfg.time_budget_s}s reached after epoch {epoch}")
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    test_hist, test_targets = ds.split_examples("test")
    test_ranks = full_ranks(model, test_hist, test_targets, mask_history=True)
    from .coldstart import bucket_metrics

    metrics = {
        "item_repr": cfg.item_repr,
        "content": content_info,
        "best_epoch": best_epoch,
        "epochs_run": len(history),
        "train_time_s": round(time.perf_counter() - t0, 2),
        "time_to_best_s": round(time_to_best, 2),
        "valid": {"masked" if cfg.mask_history else "unmasked": {"NDCG@10": best}},
        "test": {
            "masked": rank_metrics(test_ranks),
            "unmasked": evaluate(model, ds, "test", False),
        },
        # the teacher as labels and rewards use it: the prompt's window of the last 10 items
        "test_window10": {"masked": evaluate(model, ds, "test", True, window=10)},
        # cold start: the test split by how often the target was seen in training
        "test_buckets": {"masked": bucket_metrics(test_ranks, test_targets, train_counts(ds))},
        "popularity_test": {
            "masked": rank_metrics(popularity_ranks(ds, "test", True)),
            "unmasked": rank_metrics(popularity_ranks(ds, "test", False)),
        },
        "conventions": {
            "masked": "user's earlier items removed from the ranking (RecLM-gen, most papers)",
            "unmasked": "all items ranked, only padding removed (RecBole)",
        },
        "users": ds.n_users,
        "history": history,
    }
    return model, metrics


def save_teacher(out: str | Path, model: SASRec, metrics: dict, cfg: TeacherTrainConfig,
                 ds: RecDataset, overwrite: bool = False) -> Path:
    from safetensors.torch import save_file

    with atomic_dir(out, overwrite=overwrite, inputs=[ds.path]) as tmp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp / "model.safetensors"))
        write_json(tmp / "config.json", {"model": model.cfg.to_dict(),
                                         # relative to the teacher's folder: runs can move
                                         "data": card_relative(ds.path, out) if ds.path else None})
        write_json(tmp / "metrics.json", metrics)
        write_json(tmp / "card.json", provenance("teacher.train", asdict(cfg), seed=cfg.seed,
                                                 inputs={"sequences": ds.fingerprint(),
                                                         "data_dir": str(ds.path) if ds.path else None},
                                                 # content/hybrid: model, template, cache key, items without text
                                                 content=metrics.get("content")))
    return Path(out)


def summary_table(metrics: dict) -> str:
    """A few lines a person reads after training."""
    from .config import VARIANT_NAMES

    name = VARIANT_NAMES.get(metrics.get("item_repr", "id"), "SASRec")
    lines = [f"{'':36s} {'HR@10':>8s} {'NDCG@10':>8s} {'MRR@10':>8s}"]
    for label, block in ((name, metrics["test"]), ("Popularity", metrics["popularity_test"])):
        for conv in ("masked", "unmasked"):
            m = block[conv]
            lines.append(f"{label + ' (' + conv + ')':36s} {m['HR@10']:8.4f} {m['NDCG@10']:8.4f} {m['MRR@10']:8.4f}")
    buckets = (metrics.get("test_buckets") or {}).get("masked")
    if buckets:
        lines.append("by the target's training interactions (masked): " + ", ".join(
            f"{b} HR@10 {r['HR@10']['mean']:.4f} (n {r['n']})" for b, r in buckets.items()
            if b != "all" and r["n"]))
    return "\n".join(lines)
