"""Cold-start evaluation of teacher variants (issue: LEARN content embeddings).

Two views, both with 95% bootstrap intervals over rows and paired tests on the same rows:

- **popularity buckets**: the leave-one-out test rows grouped by how many training
  interactions the target item has (``<=5``, ``6-20``, ``>20``);
- **new items**: a random ``frac`` of the items is held out of training entirely (every
  interaction with them removed from every sequence before the leave-one-out split), and
  each held-out interaction becomes a test row: the user's earlier non-held-out items as the
  history, the held-out item as the target, ranked against the whole catalog. An id-only
  teacher has never seen these items as positives; a content teacher can still place them.

>>> split = new_item_split(RecDataset.load("runs/ml100k"), frac=0.1, seed=0)   # doctest: +SKIP
>>> len(split.held), len(split.rows[1])                                       # doctest: +SKIP
(168, 9876)
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from recalign.data import DataError, RecDataset
from recalign.data.stats import bootstrap_ci, paired

from .config import VARIANT_NAMES

BUCKETS = ((0, 5, "<=5"), (6, 20, "6-20"), (21, None, ">20"))
K = 10


def per_row(ranks: np.ndarray, k: int = K) -> dict[str, np.ndarray]:
    """Per-row HR@k (0/1) and NDCG@k from 0-based ranks."""
    ranks = np.asarray(ranks, dtype=np.float64)
    hit = ranks < k
    return {f"HR@{k}": hit.astype(np.float64), f"NDCG@{k}": np.where(hit, 1.0 / np.log2(ranks + 2), 0.0)}


def bucket_of(counts: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Bucket label of each target by its training-interaction count."""
    c = np.asarray(counts)[np.asarray(targets, dtype=np.int64)]
    out = np.empty(len(c), dtype=object)
    for lo, hi, name in BUCKETS:
        out[(c >= lo) & ((c <= hi) if hi is not None else True)] = name
    return out


def bucket_metrics(ranks: np.ndarray, targets: np.ndarray, counts: np.ndarray, k: int = K) -> dict:
    """``{bucket: {"n", "HR@k": {mean, lo, hi, n}, "NDCG@k": {...}}}`` plus ``"all"``."""
    return _bucket_rows(per_row(ranks, k), targets, counts)


@dataclass
class NewItemSplit:
    train: RecDataset                   # held-out items removed from every sequence
    held: np.ndarray                    # held-out item indices
    rows: tuple[list[np.ndarray], np.ndarray]   # (histories, held-out targets)


def new_item_split(ds: RecDataset, frac: float = 0.1, seed: int = 0, min_len: int = 3) -> NewItemSplit:
    """Hold out ``frac`` of the items (uniformly at random among items with interactions).

    Users left with fewer than ``min_len`` items are dropped from the training dataset (the
    leave-one-out split needs three); their held-out interactions still become test rows
    when an earlier item remains as history.
    """
    if not 0 < frac < 1:
        raise DataError(f"--new-items {frac}: the held-out share of items must be in (0, 1), e.g. 0.1")
    seen = np.unique(np.concatenate(ds.sequences))
    rng = np.random.default_rng(seed)
    held = np.sort(rng.choice(seen, size=max(1, int(round(frac * len(seen)))), replace=False))
    is_held = np.zeros(ds.n_items + 1, dtype=bool)
    is_held[held] = True
    kept, hist, tgt = [], [], []
    for s in ds.sequences:
        warm = s[~is_held[s]]
        if len(warm) >= min_len:
            kept.append(warm)
        for t in np.flatnonzero(is_held[s]):
            h = s[:t][~is_held[s[:t]]]
            if len(h):
                hist.append(h)
                tgt.append(int(s[t]))
    if not kept:
        raise DataError(f"--new-items {frac}: no user keeps {min_len} items; hold out fewer items")
    train = replace(ds, sequences=kept, ratings=None, users=None, card=None, path=None)
    train._catalog = ds.catalog
    return NewItemSplit(train=train, held=held, rows=(hist, np.asarray(tgt, dtype=np.int64)))


NAMES = {**VARIANT_NAMES, "random": "random (expected)", "popularity": "most popular"}


def run_coldstart(ds: RecDataset, cfg, variants=("id", "content", "hybrid"), frac: float = 0.1,
                  max_rows: int | None = 5000, log=print, content: np.ndarray | None = None,
                  loss: str = "auto") -> dict:
    """Train each variant on the new-item split's training data; rank its warm test rows
    (overall and by bucket) and the held-out items' rows. Returns the metrics dict.
    ``loss`` applies to every variant (auto: infonce for content, ce otherwise)."""
    from .train import count_ranks, full_ranks, train_counts, train_teacher

    split = new_item_split(ds, frac, seed=cfg.seed)
    hist, tgt = split.rows
    if max_rows and len(tgt) > max_rows:
        pick = np.sort(np.random.default_rng(cfg.seed).choice(len(tgt), max_rows, replace=False))
        hist, tgt = [hist[i] for i in pick], tgt[pick]
    counts = train_counts(split.train)
    warm_hist, warm_tgt = split.train.split_examples("test")
    out = {"protocol": {
        "new_items": {"frac": frac, "held_out": int(len(split.held)), "rows": int(len(tgt)),
                      "rows_available": int(len(split.rows[1])), "seed": cfg.seed},
        "warm_test": {"rows": int(len(warm_tgt)), "users_kept": split.train.n_users, "users": ds.n_users},
        "buckets": [b[2] for b in BUCKETS], "k": K, "mask_history": True,
        "held_out_in_training": int(np.isin(np.concatenate(split.train.sequences), split.held).sum()),
    }, "variants": {}}
    per_variant_rows = {}
    for v in ["random", "popularity", *variants]:
        t0 = time.perf_counter()
        info = {}
        if v == "random":
            rows_w, rows_n = _random_rows(ds.n_items, warm_hist, warm_tgt), _random_rows(ds.n_items, hist, tgt)
        elif v == "popularity":
            rows_w, rows_n = per_row(count_ranks(counts, warm_hist, warm_tgt)), per_row(count_ranks(counts, hist, tgt))
        else:
            log(f"cold start: training {v} on {split.train.n_users} users without {len(split.held)} held-out items")
            vcfg = replace(cfg, item_repr=v, loss=loss)
            model, m = train_teacher(split.train, vcfg, log=log, content=content)
            rows_w = per_row(full_ranks(model, warm_hist, warm_tgt, mask_history=True))
            rows_n = per_row(full_ranks(model, hist, tgt, mask_history=True))
            info = {"best_epoch": m["best_epoch"], "train_time_s": m["train_time_s"],
                    "content": m.get("content"), "loss": vcfg.loss}
        per_variant_rows[v] = (rows_w, rows_n)
        out["variants"][v] = {
            "name": NAMES[v], **info,
            "warm_buckets": _bucket_rows(rows_w, warm_tgt, counts),
            "new_items": {m: bootstrap_ci(x) for m, x in rows_n.items()},
            "seconds": round(time.perf_counter() - t0, 1),
        }
    # paired: each variant against the id teacher on the same rows
    if "id" in per_variant_rows:
        labels = bucket_of(counts, warm_tgt)
        comp = {}
        for v, (w, n) in per_variant_rows.items():
            if v == "id":
                continue
            w0, n0 = per_variant_rows["id"]
            c = {"new_items": {m: paired(n0[m], n[m]) for m in n}}
            for b, sel in _bucket_masks(labels):
                c[b] = {m: paired(w0[m][sel], w[m][sel]) for m in w}
            comp[v] = c
        out["vs_id"] = comp
    return out


def _random_rows(n_items: int, hist, tgt, k: int = K) -> dict[str, np.ndarray]:
    """Per row, the expected HR@k / NDCG@k of a uniformly random order of the row's
    candidates (the catalog minus the masked history): the floor a teacher must clear."""
    disc = np.cumsum(1.0 / np.log2(np.arange(k) + 2))
    m = np.array([n_items - len(set(map(int, h)) - {int(t)}) for h, t in zip(hist, tgt)], dtype=np.float64)
    kk = np.minimum(k, m).astype(int)
    return {f"HR@{k}": kk / m, f"NDCG@{k}": disc[kk - 1] / m}


def _bucket_masks(labels: np.ndarray):
    """(bucket, row mask) for each bucket and then "all"."""
    for name in [b[2] for b in BUCKETS]:
        yield name, labels == name
    yield "all", np.ones(len(labels), bool)


def _bucket_rows(rows: dict[str, np.ndarray], targets, counts) -> dict:
    return {name: {"n": int(sel.sum()), **{m: bootstrap_ci(v[sel]) for m, v in rows.items()}}
            for name, sel in _bucket_masks(bucket_of(counts, targets))}


def _fmt(ci: dict) -> str:
    if ci.get("mean") is None:
        return "–"
    return f"{ci['mean']:.4f} [{ci['lo']:.4f}, {ci['hi']:.4f}]"


def _fmt_diff(c: dict) -> str:
    from recalign.data.stats import verdict

    if c.get("diff") is None:
        return "–"
    return f"{c['diff']:+.4f} [{c['lo']:+.4f}, {c['hi']:+.4f}], p = {c['p']:.2g} ({verdict(c)})"


def report_md(res: dict) -> str:
    """The cold-start report a person reads."""
    p = res["protocol"]
    lines = ["# Teacher cold-start report", "",
             f"New-item split: {p['new_items']['held_out']} items ({p['new_items']['frac']:.0%}, seed "
             f"{p['new_items']['seed']}) held out of training entirely; {p['new_items']['rows']} of their "
             f"{p['new_items']['rows_available']} interactions are the new-item rows (history: the user's "
             f"earlier items that were not held out). Held-out items found in training: "
             f"{p['held_out_in_training']}. Warm rows: the leave-one-out test rows of the remaining data "
             f"({p['warm_test']['rows']} users), bucketed by the target's training interactions. Full-catalog "
             f"ranking, history masked; HR@{p['k']} / NDCG@{p['k']} with 95% bootstrap intervals.", ""]
    cols = [*p["buckets"], "all"]
    for metric in (f"HR@{p['k']}", f"NDCG@{p['k']}"):
        lines += [f"## {metric}", "", "| teacher | " + " | ".join(f"warm {c}" for c in cols) + " | new items |",
                  "|---" * (len(cols) + 2) + "|"]
        for v, r in res["variants"].items():
            cells = [_fmt(r["warm_buckets"][c][metric]) for c in cols] + [_fmt(r["new_items"][metric])]
            lines.append(f"| {r['name']} | " + " | ".join(cells) + " |")
        ns = [str(next(iter(res["variants"].values()))["warm_buckets"][c]["n"]) for c in cols]
        lines += ["| n | " + " | ".join(ns) + f" | {p['new_items']['rows']} |", ""]
    if res.get("vs_id"):
        lines += ["## Paired differences against the id teacher (same rows)", "",
                  "| teacher | metric | rows | difference [95% CI], p |", "|---|---|---|---|"]
        for v, comp in res["vs_id"].items():
            for rows in ["new_items", *cols]:
                for metric, c in comp[rows].items():
                    lines.append(f"| {res['variants'][v]['name']} | {metric} | {rows} | {_fmt_diff(c)} |")
        lines.append("")
    lines += ["## Training", "", "| teacher | loss | best epoch | train time (s) | items without text |",
              "|---|---|---|---|---|"]
    for v, r in res["variants"].items():
        if v in ("popularity", "random"):
            continue
        lines.append(f"| {r['name']} | {r.get('loss')} | {r.get('best_epoch')} | {r.get('train_time_s')} | "
                     f"{(r.get('content') or {}).get('items_without_text', '–')} |")
    return "\n".join(lines) + "\n"


def plot_buckets(res: dict, path: Path) -> None:
    """Bars per bucket (and new items) per teacher with the 95% intervals as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = res["protocol"]
    groups = [*p["buckets"], "new items"]
    names = list(res["variants"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, metric in zip(axes, (f"HR@{p['k']}", f"NDCG@{p['k']}")):
        w = 0.8 / len(names)
        for j, v in enumerate(names):
            r = res["variants"][v]
            cis = [r["warm_buckets"][b][metric] for b in p["buckets"]] + [r["new_items"][metric]]
            mean = [c["mean"] or 0 for c in cis]
            err = [[(c["mean"] or 0) - (c["lo"] or 0) for c in cis], [(c["hi"] or 0) - (c["mean"] or 0) for c in cis]]
            ax.bar(np.arange(len(groups)) + j * w, mean, w, yerr=err, capsize=2, label=r["name"])
        ax.set_xticks(np.arange(len(groups)) + 0.4 - w / 2, [f"warm {g}" if g != "new items" else g for g in groups])
        ax.set_title(f"{metric} by target's training interactions")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def write_coldstart(out: str | Path, res: dict, cfg, ds: RecDataset, overwrite: bool = False) -> Path:
    from recalign.data.util import atomic_dir, provenance, write_json

    with atomic_dir(out, overwrite=overwrite, inputs=[ds.path] if ds.path else None) as tmp:
        write_json(tmp / "metrics.json", res)
        (tmp / "report.md").write_text(report_md(res))
        plot_buckets(res, tmp / "buckets.png")
        write_json(tmp / "card.json", provenance("teacher.coldstart", asdict(cfg), seed=cfg.seed,
                                                 inputs={"sequences": ds.fingerprint(),
                                                         "data_dir": str(ds.path) if ds.path else None},
                                                 protocol=res["protocol"]))
    return Path(out)

