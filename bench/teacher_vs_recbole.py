#!/usr/bin/env python
"""SASRec teacher vs RecBole 1.2.1's SASRec on the identical ml-100k leave-one-out split.

Both sides: hidden 64, 2 layers, 2 heads, inner 256, max length 50, full-softmax CE, dropout
0.2, Adam lr 1e-3, early stopping on validation NDCG@10 with patience 10, one torch thread.
Test metrics are HR@10 / NDCG@10 over full ranking of all items. RecBole does not mask the
user's history for sequential models (only padding), so the comparison uses our
``test.unmasked``; our ``test.masked`` is printed too (REFERENCE.md §5).

Data. Ours reads RecBole's exact per-user order
(``shared/data/ml100k-recbole-split/recbole_ml100k_sequences_all.tsv``, raw ml-100k item ids
1..1682) and checks each user's valid/test item against ``split_recbole_ml100k_all.tsv``.
RecBole reads its normal ml-100k atomic files (``shared/assets/ml-100k``, copied to a temp
dataset dir) and splits them itself (``LS: valid_and_test``, ``order: TO``); the script maps
RecBole's test targets and inputs back to raw ids and counts how many equal ours.

Environment (RecBole 1.2.1 needs an older stack; see bench/README.md)::

    python3 -m venv /work/venv-recbole
    /work/venv-recbole/bin/pip install torch==2.13.0            # CPU wheel; never a CUDA torch
    /work/venv-recbole/bin/pip install 'pandas<3' 'numpy<2.3' scipy scikit-learn tensorboard \
        tqdm 'colorlog==4.7.2' 'colorama==0.4.4' pyyaml tabulate texttable psutil
    /work/venv-recbole/bin/pip install --no-deps recbole==1.2.1   # skips ray (tuning only)
    /work/venv-recbole/bin/pip install safetensors pyarrow rapidfuzz
    /work/venv-recbole/bin/pip install --no-deps -e /work/main

Runtime shims applied below before RecBole is imported: numpy's removed aliases
(``np.float_``, ``np.float``, ``np.long``, ``np.int``, ``np.bool``, ``np.object``,
``np.complex_``, ``np.unicode_``, ``np.str``) are restored; ``torch.load`` defaults to
``weights_only=False`` (RecBole's checkpoints hold its Config object); autograd anomaly
detection, which ``recbole/model/sequential_recommender/sine.py`` switches on globally at
import, is switched back off (it slows training 2-3x).

Run::

    nohup /work/venv-recbole/bin/python bench/teacher_vs_recbole.py > /tmp/bench_teacher.log 2>&1 &

Options: ``--recbole-epochs`` (cap, default 30), ``--recbole-budget-min`` (wall-time cap,
default 40), ``--seeds`` (ours), ``--skip-recbole``/``--skip-ours``, ``--results`` (markdown
file whose section "## SASRec teacher vs RecBole 1.2.1" is written; ``''`` for none).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results import write_section  # bench/ is on sys.path when a script runs

import numpy as np

# ---- shim 1: numpy aliases removed in numpy 1.24/2.0 that RecBole 1.2.1 still uses ----------
for _name, _val in {"float_": np.float64, "float": float, "long": np.int64, "int": int, "bool": bool,
                    "object": object, "complex_": np.complex128, "unicode_": np.str_, "str": str}.items():
    if _name not in np.__dict__:
        setattr(np, _name, _val)

import torch  # noqa: E402

# ---- shim 2: torch>=2.6 loads weights_only by default; RecBole's checkpoints are pickles ----
_torch_load = torch.load


def _load_full(*args, **kwargs):
    kwargs.setdefault("weights_only", False)
    return _torch_load(*args, **kwargs)


torch.load = _load_full

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("RECALIGN_SHARED", REPO.parent / "shared"))
SPLIT_DIR = SHARED / "data" / "ml100k-recbole-split"
ASSET_DIR = SHARED / "assets" / "ml-100k"
SECTION = "## SASRec teacher vs RecBole 1.2.1"
N_ITEMS = 1682


def log(*a):
    print(*a, flush=True)


# --------------------------------------------------------------------------- data
def load_split(split_dir: Path):
    """Users' sequences in RecBole's order (raw ids) and the asserted valid/test items."""
    users, seqs = [], []
    with open(split_dir / "recbole_ml100k_sequences_all.tsv") as f:
        header = f.readline().rstrip("\n").split("\t")
        assert header == ["user_id", "item_ids_in_recbole_order"], header
        for line in f:
            u, items = line.rstrip("\n").split("\t")
            users.append(int(u))
            seqs.append(np.array([int(x) for x in items.split()], dtype=np.int64))
    split = {}
    with open(split_dir / "split_recbole_ml100k_all.tsv") as f:
        header = f.readline().rstrip("\n").split("\t")
        col = {c: i for i, c in enumerate(header)}
        for line in f:
            r = line.rstrip("\n").split("\t")
            split[int(r[col["user_id"]])] = (int(r[col["n_inter"]]), int(r[col["valid_item"]]),
                                             int(r[col["test_item"]]))
    assert set(split) == set(users) and len(users) == len(set(users)), "user sets differ"
    for u, s in zip(users, seqs):
        n, v, t = split[u]
        assert len(s) == n, (u, len(s), n)
        assert s[-2] == v and s[-1] == t, f"user {u}: valid/test {v}/{t} != seq[-2:] {s[-2:]}"
        assert 1 <= s.min() and s.max() <= N_ITEMS
    return users, seqs, split


# --------------------------------------------------------------------------- ours
def run_ours(seqs, seeds, batch_size, epochs):
    from recalign.data import RecDataset
    from recalign.teacher.config import TeacherTrainConfig
    from recalign.teacher.metrics import rank_metrics
    from recalign.teacher.train import popularity_ranks, train_teacher

    batch_size = batch_size or TeacherTrainConfig.batch_size

    ds = RecDataset.from_sequences(seqs, n_items=N_ITEMS)
    pop = {conv: rank_metrics(popularity_ranks(ds, "test", conv == "masked"), ks=(10,))
           for conv in ("unmasked", "masked")}
    runs = []
    for seed in seeds:
        cfg = TeacherTrainConfig(hidden=64, layers=2, heads=2, inner=256, dropout=0.2, max_len=50, loss="ce",
                                 lr=1e-3, batch_size=batch_size, epochs=epochs, patience=10,
                                 mask_history=False, seed=seed, threads=1)
        log(f"[ours] seed {seed}: {cfg}")
        torch.set_num_threads(1)
        cpu_at = {}

        def _log(s, _c0=time.process_time()):
            if s.startswith("{"):
                cpu_at[json.loads(s)["epoch"]] = time.process_time() - _c0
            log("[ours] " + s + (f" cpu_s={cpu_at[max(cpu_at)]:.2f}" if s.startswith("{") else ""))

        t0 = time.perf_counter()
        _, m = train_teacher(ds, cfg, log=_log)
        wall = time.perf_counter() - t0
        run = {"seed": seed, "best_epoch": m["best_epoch"], "epochs_run": m["epochs_run"],
               "train_time_s": m["train_time_s"], "time_to_best_s": m["time_to_best_s"], "wall_s": round(wall, 2),
               "s_per_epoch": round(m["train_time_s"] / max(m["epochs_run"], 1), 2),
               "cpu_to_best_s": round(cpu_at.get(m["best_epoch"], float("nan")), 2),
               "cpu_train_s": round(cpu_at[max(cpu_at)], 2) if cpu_at else float("nan"),
               "valid_ndcg10": m["valid"]["unmasked"]["NDCG@10"],
               "test_unmasked": m["test"]["unmasked"], "test_masked": m["test"]["masked"]}
        log(f"[ours] seed {seed} result: " + json.dumps(run))
        runs.append(run)
    return {"runs": runs, "popularity": pop, "batch_size": batch_size, "n_users": ds.n_users}


# --------------------------------------------------------------------------- RecBole
def run_recbole(users, seqs, split, max_epochs, budget_s, seed, keep_dir=False):
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.model.sequential_recommender import SASRec  # imports sine.py -> anomaly on
    from recbole.trainer import Trainer
    from recbole.utils import init_logger, init_seed

    # ---- shim 3: recbole.model.sequential_recommender.sine turns anomaly detection on globally
    torch.autograd.set_detect_anomaly(False)
    from recalign.teacher.metrics import rank_metrics

    class _Budget(Exception):
        pass

    class BudgetTrainer(Trainer):
        """RecBole's Trainer with a wall-time cap: before each epoch, stop if the previous
        epoch's duration (train + validation) would carry training past the budget."""

        def __init__(self, config, model, budget_s):
            super().__init__(config, model)
            self.budget_s = budget_s
            self.t0 = self.c0 = self.epoch_start = self.epoch_s = None
            self.cpu_to_best = self.cpu_s = None
            self.rows = []
            self.time_to_best = self.best_epoch = None
            self.stop_reason = "epoch_cap"

        def _train_epoch(self, train_data, epoch_idx, *args, **kwargs):
            now = time.perf_counter()
            if self.epoch_s is not None and (now - self.t0) + self.epoch_s > self.budget_s:
                self.stop_reason = "time_cap"
                raise _Budget()
            self.epoch_start = now
            return super()._train_epoch(train_data, epoch_idx, *args, **kwargs)

        def _on_valid(self, epoch_idx, valid_score):  # fit's callback_fn, after early_stopping()
            now, self.cpu_s = time.perf_counter(), time.process_time() - self.c0
            self.epoch_s = now - self.epoch_start     # last epoch's train + validation
            improved = self.cur_step == 0
            if improved:
                self.time_to_best, self.best_epoch = now - self.t0, epoch_idx + 1
                self.cpu_to_best = self.cpu_s
            self.rows.append({"epoch": epoch_idx + 1, "valid_ndcg10": float(valid_score),
                              "epoch_s": round(self.epoch_s, 2), "time_s": round(now - self.t0, 2),
                              "cpu_s": round(self.cpu_s, 2), "best": improved})
            log("[recbole] " + json.dumps(self.rows[-1]))
            if self.cur_step >= self.stopping_step:
                self.stop_reason = "early_stopping"

        def fit(self, train_data, valid_data=None, **kw):
            self.t0, self.c0 = time.perf_counter(), time.process_time()
            try:
                return super().fit(train_data, valid_data, callback_fn=self._on_valid, **kw)
            except _Budget:
                log(f"[recbole] wall-time cap {self.budget_s:.0f}s: stopping after {len(self.rows)} epochs")
                return self.best_valid_score, self.best_valid_result

    work = Path(tempfile.mkdtemp(prefix="bench_recbole_"))
    (work / "dataset" / "ml-100k").mkdir(parents=True)
    for name in ("ml-100k.inter", "ml-100k.item", "ml-100k.user"):
        shutil.copy(ASSET_DIR / name, work / "dataset" / "ml-100k" / name)
    cwd = os.getcwd()
    os.chdir(work)  # RecBole writes log/, log_tensorboard/, saved/ into the working directory
    try:
        config_dict = {
            "data_path": str(work / "dataset"),
            "checkpoint_dir": str(work / "saved"),
            "gpu_id": "", "use_gpu": False,                      # device cpu
            "seed": seed, "reproducibility": True, "show_progress": False, "log_wandb": False,
            "load_col": {"inter": ["user_id", "item_id", "rating", "timestamp"]},
            "user_inter_num_interval": None, "item_inter_num_interval": None, "val_interval": None,
            "loss_type": "CE", "train_neg_sample_args": None,
            "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full", "group_by": "user"},
            "metrics": ["Hit", "NDCG"], "topk": [10], "valid_metric": "NDCG@10", "metric_decimal_place": 6,
            "MAX_ITEM_LIST_LENGTH": 50,
            "hidden_size": 64, "inner_size": 256, "n_layers": 2, "n_heads": 2,
            "hidden_dropout_prob": 0.2, "attn_dropout_prob": 0.2,
            "train_batch_size": 256, "learner": "adam", "learning_rate": 0.001, "weight_decay": 0.0,
            "epochs": max_epochs, "stopping_step": 10, "eval_step": 1,
        }
        config = Config(model="SASRec", dataset="ml-100k", config_dict=config_dict)
        init_seed(config["seed"], config["reproducibility"])
        init_logger(config)
        t_prep = time.perf_counter()
        dataset = create_dataset(config)
        train_data, valid_data, test_data = data_preparation(config, dataset)
        prep_s = time.perf_counter() - t_prep
        init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
        model = SASRec(config, train_data._dataset).to(config["device"])
        torch.set_num_threads(1)
        assert not torch.is_anomaly_enabled()
        log(f"[recbole] {len(train_data._dataset)} training samples/epoch, device {config['device']}, "
            f"threads {torch.get_num_threads()}, data prep {prep_s:.1f}s")

        # ---- split check: RecBole's valid/test targets and test inputs, mapped to raw ids
        checks = {}
        ours = {u: s for u, s in zip(users, seqs)}
        for name, dl, pos in (("valid", valid_data, -2), ("test", test_data, -1)):
            feat = dl._dataset.inter_feat
            ru = dataset.id2token("user_id", feat["user_id"].numpy())
            ri = dataset.id2token("item_id", feat["item_id"].numpy())
            hist = feat["item_id_list"].numpy()
            hlen = feat["item_length"].numpy()
            tgt_ok = inp_ok = 0
            for u, i, h, n in zip(ru, ri, hist, hlen):
                s = ours[int(u)]
                tgt_ok += int(int(i) == int(s[pos]))
                raw_h = [int(x) for x in dataset.id2token("item_id", h[:n])]
                inp_ok += int(raw_h == [int(x) for x in s[:len(s) + pos][-50:]])
            checks[name] = {"users": len(ru), "target_match": tgt_ok, "input_match": inp_ok}
            log(f"[recbole] {name}: {tgt_ok}/{len(ru)} targets and {inp_ok}/{len(ru)} inputs equal the split file's")

        trainer = BudgetTrainer(config, model, budget_s)
        t0 = time.perf_counter()
        best_valid, _ = trainer.fit(train_data, valid_data, saved=True, show_progress=False, verbose=True)
        train_s = time.perf_counter() - t0
        test = trainer.evaluate(test_data, load_best_model=True, show_progress=False)
        log(f"[recbole] test (its evaluator): {dict(test)}")

        # the same best model scored by our metric code (ties count against the target)
        model.eval()
        ranks = []
        with torch.no_grad():
            for inter, _, _, pos_i in test_data:
                scores = model.full_sort_predict(inter)
                scores[:, 0] = -np.inf
                t = scores.gather(1, pos_i[:, None])
                ar = torch.arange(scores.shape[1])
                ranks.append(((scores > t) | ((scores == t) & (ar < pos_i[:, None]))).sum(1))
        ours_metric = rank_metrics(torch.cat(ranks).numpy(), ks=(10,))

        rows = trainer.rows
        n_run = len(rows)
        since_best = n_run - (trainer.best_epoch or 0)
        stop = trainer.stop_reason
        return {
            "hit10": float(test["hit@10"]), "ndcg10": float(test["ndcg@10"]), "our_metric_code": ours_metric,
            "best_valid_ndcg10": float(best_valid), "best_epoch": trainer.best_epoch, "epochs_run": n_run,
            "time_to_best_s": round(trainer.time_to_best or float("nan"), 2), "train_time_s": round(train_s, 2),
            "s_per_epoch": round(train_s / max(n_run, 1), 2),
            "cpu_to_best_s": round(trainer.cpu_to_best or float("nan"), 2),
            "cpu_train_s": round(trainer.cpu_s or float("nan"), 2), "data_prep_s": round(prep_s, 2),
            "stop_reason": stop, "epochs_since_best": since_best,
            "still_improving": stop != "early_stopping" and since_best < 3,
            "max_epochs": max_epochs, "budget_s": budget_s, "train_samples": len(train_data._dataset),
            "split_check": checks, "history": rows, "work_dir": str(work),
        }
    finally:
        os.chdir(cwd)
        if not keep_dir:
            shutil.rmtree(work, ignore_errors=True)


# --------------------------------------------------------------------------- report
def _versions():
    import pandas

    v = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
         "pandas": pandas.__version__}
    try:
        import recbole

        v["recbole"] = recbole.__version__
    except Exception:  # noqa: BLE001
        v["recbole"] = "not importable"
    try:
        v["recalign_git"] = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                                           capture_output=True, text=True).stdout.strip() or "none"
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "teacher", "data"],
                               capture_output=True, text=True).stdout.strip()
        v["recalign_git"] += " (teacher/ or data/ modified)" if dirty else ""
    except Exception:  # noqa: BLE001
        v["recalign_git"] = "unknown"
    return v


def _cpu():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def render(res: dict) -> str:
    o, r = res.get("ours"), res.get("recbole")
    L = []
    L.append("| model | test HR@10 | test NDCG@10 | HR@10 masked | NDCG@10 masked | best epoch / run "
             "| time to best valid (wall) | CPU time to best | train time (wall) | s/epoch (wall) |")
    L.append("|---|---|---|---|---|---|---|---|---|---|")
    if r:
        L.append(f"| RecBole 1.2.1 SASRec (batch 256, one sample per prefix) | {r['hit10']:.4f} | {r['ndcg10']:.4f} "
                 f"| n/a | n/a | {r['best_epoch']} / {r['epochs_run']} | {r['time_to_best_s']:.0f} s | {r['cpu_to_best_s']:.0f} s "
                 f"| {r['train_time_s']:.0f} s | {r['s_per_epoch']:.1f} |")
        m = r["our_metric_code"]
        L.append(f"| (same RecBole model, our metric code) | {m['HR@10']:.4f} | {m['NDCG@10']:.4f} | | | | | | | |")
    if o:
        for run in o["runs"]:
            u, k = run["test_unmasked"], run["test_masked"]
            L.append(f"| ours, seed {run['seed']} (batch {o['batch_size']}, all positions) | {u['HR@10']:.4f} "
                     f"| {u['NDCG@10']:.4f} | {k['HR@10']:.4f} | {k['NDCG@10']:.4f} "
                     f"| {run['best_epoch']} / {run['epochs_run']} | {run['time_to_best_s']:.1f} s | {run['cpu_to_best_s']:.1f} s "
                     f"| {run['train_time_s']:.1f} s | {run['s_per_epoch']:.2f} |")
        s = o["summary"]
        L.append(f"| **ours, mean of {len(o['runs'])}** | **{s['hr_u']:.4f}** | **{s['ndcg_u']:.4f}** "
                 f"| {s['hr_m']:.4f} | {s['ndcg_m']:.4f} | | **{s['ttb']:.1f} s** | **{s['cpu_ttb']:.1f} s** "
                 f"| {s['train']:.1f} s | |")
        p = o["popularity"]
        L.append(f"| popularity (ours, train counts) | {p['unmasked']['HR@10']:.4f} | {p['unmasked']['NDCG@10']:.4f} "
                 f"| {p['masked']['HR@10']:.4f} | {p['masked']['NDCG@10']:.4f} | | | | | |")
    return "\n".join(L)


def ratios(res: dict) -> list[str]:
    o, r = res.get("ours"), res.get("recbole")
    if not (o and r):
        return []
    s = o["summary"]
    q_hr, q_nd = s["hr_u"] / r["hit10"], s["ndcg_u"] / r["ndcg10"]
    t = s["ttb"] / r["time_to_best_s"]
    c = s["cpu_ttb"] / r["cpu_to_best_s"]
    return [f"quality ours/RecBole (unmasked, mean of seeds): HR@10 {q_hr:.3f}x, NDCG@10 {q_nd:.3f}x "
            f"(goal >= 1.0x: {'met' if min(q_hr, q_nd) >= 1.0 else 'NOT met'})",
            f"time to best validation ours/RecBole: {t:.4f}x ({s['ttb']:.1f} s vs {r['time_to_best_s']:.0f} s; "
            f"goal <= 0.2x: {'met' if t <= 0.2 else 'NOT met'})",
            f"CPU time to best validation ours/RecBole: {c:.4f}x ({s['cpu_ttb']:.1f} s vs {r['cpu_to_best_s']:.0f} s; "
            "process CPU time, less sensitive to other load on the machine)"]


def write_results(path: Path, res: dict):
    r, o, meta = res.get("recbole"), res.get("ours"), res["meta"]
    L = [SECTION, "",
         f"Date: {meta['date']}. Command (from the repo root): `{meta['command']}`", "",
         "Versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()) + ".", "",
         f"Machine: {meta['cpu']}, {meta['nproc']} cores; both sides with `torch.set_num_threads(1)`; "
         f"load average at start {meta['load_start']}, at end {meta['load_end']} (other processes may "
         "have been running, so wall times carry noise; the CPU-time columns are the process's CPU seconds, "
         "which other load inflates much less). Timings hold for this machine only.", "",
         "Split: ml-100k, all 100k ratings as interactions, no filtering, leave-one-out in RecBole's exact "
         "per-user order (shared/data/ml100k-recbole-split; valid = seq[-2], test = seq[-1] asserted for every "
         "user); full ranking over all 1682 items; history NOT masked (RecBole's convention) in the comparison "
         "columns; 'masked' = our convention (user's earlier items removed). Model on both sides: d 64, 2 layers, "
         "2 heads, inner 256, max length 50, CE over all items, dropout 0.2, Adam lr 1e-3, early stopping on "
         "validation NDCG@10 (unmasked) with patience 10. 943 test users: standard error about +-0.011 HR@10, "
         "+-0.005 NDCG@10.", ""]
    if r:
        c = r["split_check"]
        L += [f"RecBole split check: its test targets mapped back to raw ids equal the split file's for "
              f"{c['test']['target_match']}/{c['test']['users']} users (inputs {c['test']['input_match']}/"
              f"{c['test']['users']}); validation targets {c['valid']['target_match']}/{c['valid']['users']}.", "",
              f"RecBole run: {r['train_samples']} training samples per epoch (every prefix), batch 256, "
              f"seed {meta['recbole_seed']}, caps {r['max_epochs']} epochs / {r['budget_s'] / 60:g} min; "
              f"stopped by **{r['stop_reason']}** after {r['epochs_run']} epochs, best epoch {r['best_epoch']} "
              f"({r['epochs_since_best']} epochs before the stop)"
              + ("; **not converged**: the cap stopped it before early stopping (patience 10) could "
                 "decide" + (", with its best among the last 3 epochs" if r["still_improving"] else "")
                 + ", so its test numbers are its best within budget and its time to best is a lower "
                 "bound on its true time to best (it could find a better epoch later)."
                 if r["stop_reason"] != "early_stopping" else ".")
              + f" Data preparation ({r['data_prep_s']:.0f} s) is not counted in its times.", ""]
    if o:
        L += [f"Ours: `recalign.teacher.train.train_teacher`, batch {o['batch_size']} windows of 50 positions, "
              "every position of each training sequence trained at once; time to best = training start to the "
              f"end of the validation pass of the best epoch (same definition as RecBole's); seeds "
              f"{', '.join(str(x['seed']) for x in o['runs'])}.", ""]
    L += [render(res), ""]
    L += [f"- {x}" for x in ratios(res)]
    L += [""]
    write_section(path, SECTION, "\n".join(L))
    log(f"wrote {path}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--recbole-epochs", type=int, default=30, help="RecBole epoch cap")
    ap.add_argument("--recbole-budget-min", type=float, default=40.0, help="RecBole wall-time cap (minutes)")
    ap.add_argument("--recbole-seed", type=int, default=2020)
    ap.add_argument("--seeds", default="2020,2021,2022", help="comma-separated seeds for ours")
    ap.add_argument("--ours-batch", type=int, default=None, help="batch size for ours (default: TeacherTrainConfig's)")
    ap.add_argument("--ours-epochs", type=int, default=200, help="upper bound; early stopping ends sooner")
    ap.add_argument("--skip-recbole", action="store_true")
    ap.add_argument("--skip-ours", action="store_true")
    ap.add_argument("--keep-recbole-dir", action="store_true")
    ap.add_argument("--split-dir", type=Path, default=SPLIT_DIR)
    ap.add_argument("--results", default=str(REPO / "bench" / "RESULTS.md"),
                    help="markdown file to write the section into ('' for none)")
    ap.add_argument("--json-out", default="", help="also dump all numbers here")
    ap.add_argument("--render", default="", help="only re-render --results from a saved --json-out file")
    args = ap.parse_args(argv)
    if args.render:
        res = json.loads(Path(args.render).read_text())
        log(render(res))
        for line in ratios(res):
            log(line)
        if args.results:
            write_results(Path(args.results), res)
        return res

    torch.set_num_threads(1)
    load_start = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    meta = {"date": _dt.datetime.now().strftime("%Y-%m-%d %H:%M"), "cpu": _cpu(), "nproc": os.cpu_count(),
            "load_start": load_start, "versions": _versions(), "recbole_seed": args.recbole_seed,
            "command": " ".join([Path(sys.executable).as_posix()] + [os.path.relpath(sys.argv[0], REPO)]
                                + sys.argv[1:]) if argv is None else "main(" + repr(argv) + ")"}
    log(f"load average at start: {load_start} ({meta['nproc']} cores, {meta['cpu']})")
    log("versions: " + json.dumps(meta["versions"]))

    users, seqs, split = load_split(args.split_dir)
    log(f"split: {len(users)} users, {sum(len(s) for s in seqs)} interactions; valid = seq[-2], "
        "test = seq[-1] asserted for every user")
    res = {"meta": meta}
    if not args.skip_ours:
        o = run_ours(seqs, [int(x) for x in args.seeds.split(",") if x], args.ours_batch, args.ours_epochs)
        runs = o["runs"]
        o["summary"] = {"hr_u": float(np.mean([x["test_unmasked"]["HR@10"] for x in runs])),
                        "ndcg_u": float(np.mean([x["test_unmasked"]["NDCG@10"] for x in runs])),
                        "hr_m": float(np.mean([x["test_masked"]["HR@10"] for x in runs])),
                        "ndcg_m": float(np.mean([x["test_masked"]["NDCG@10"] for x in runs])),
                        "ttb": float(np.mean([x["time_to_best_s"] for x in runs])),
                        "cpu_ttb": float(np.mean([x["cpu_to_best_s"] for x in runs])),
                        "train": float(np.mean([x["train_time_s"] for x in runs]))}
        res["ours"] = o
    if not args.skip_recbole:
        log(f"load average before RecBole: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
        res["recbole"] = run_recbole(users, seqs, split, args.recbole_epochs, args.recbole_budget_min * 60,
                                     args.recbole_seed, keep_dir=args.keep_recbole_dir)
    meta["load_end"] = ", ".join(f"{x:.2f}" for x in os.getloadavg())

    log("\n" + render(res))
    for line in ratios(res):
        log(line)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(res, indent=1, default=str))
    if args.results:
        write_results(Path(args.results), res)
    return res


if __name__ == "__main__":
    main()
