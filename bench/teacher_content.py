#!/usr/bin/env python
"""Content teachers' cost: item encoding, training and ranking, id vs content vs hybrid.

Three measurements on the embedded ml-100k, side by side in one process:

1. **encoding**: items/s of the frozen LM (default SmolLM2-135M) over every item's text,
   with an empty cache (the real first-run cost; later runs read the cache);
2. **training**: seconds per epoch of each variant over ``--epochs`` fixed epochs (no
   early stopping, so every variant does the same work), and the ratio to ``id``;
3. **ranking**: ``Teacher.topk`` queries/s (k 10, history masked) over every user's test
   history, windowed to 10 items as labels and rewards query it, and the ratio to ``id``.

Run it alone (two cores are easily oversubscribed)::

    python bench/teacher_content.py                       # writes its section of bench/RESULTS.md

``--results ''`` leaves RESULTS.md alone.
"""
from __future__ import annotations

import argparse
import datetime as dt
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results import write_section  # bench/ is on sys.path when a script runs

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Content teachers (LEARN): encoding, training, ranking cost"


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=5, help="ranking passes over all users")
    ap.add_argument("--results", default=str(ROOT / "bench" / "RESULTS.md"), help="'' to leave it alone")
    args = ap.parse_args()

    import torch

    from recalign.data.prepare import PrepareOptions, prepare_dataset
    from recalign.data import RecDataset
    from recalign.teacher import Teacher
    from recalign.teacher.config import TeacherTrainConfig
    from recalign.teacher.content import item_content
    from recalign.teacher.train import train_teacher

    torch.set_num_threads(args.threads)
    load0 = load()
    with tempfile.TemporaryDirectory() as tmp:
        ds = RecDataset.load(prepare_dataset(Path(tmp) / "ml100k", PrepareOptions("ml-100k")))
        t0 = time.perf_counter()
        emb, info = item_content(ds, args.model, cache_root=Path(tmp) / "cache", log=lambda s: None)
        enc_s = time.perf_counter() - t0                  # includes the model load
        t0 = time.perf_counter()
        item_content(ds, args.model, cache_root=Path(tmp) / "cache", log=lambda s: None)
        cached_s = time.perf_counter() - t0
        enc_load = load()
        rows = []
        hist = [h[-10:] for h in ds.split_examples("test")[0]]
        for v in ("id", "content", "hybrid"):
            cfg = TeacherTrainConfig(item_repr=v, epochs=args.epochs, patience=args.epochs + 1, threads=args.threads)
            t0 = time.perf_counter()
            model, m = train_teacher(ds, cfg, log=lambda s: None, content=emb if v != "id" else None)
            train_s = time.perf_counter() - t0
            t = Teacher(model, ds.catalog)
            t.topk(hist[:64], 10)                          # warm-up
            t0 = time.perf_counter()
            for _ in range(args.repeat):
                t.topk(hist, 10)
            q_s = len(hist) * args.repeat / (time.perf_counter() - t0)
            rows.append({"variant": v, "loss": cfg.loss, "epoch_s": train_s / args.epochs, "queries_s": q_s,
                         "params": sum(p.numel() for p in model.parameters()), "load": load()})
            print(rows[-1], file=sys.stderr, flush=True)
    base = rows[0]
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    n = ds.n_items
    lines = [SECTION, "",
             f"Command: `{' '.join(['python bench/teacher_content.py', *map(shlex.quote, sys.argv[1:])])}`", "",
             f"Date {dt.date.today().isoformat()}, git {git}, {platform.processor() or platform.machine()}, "
             f"{args.threads} torch threads, load average at start {load0}. ml-100k: {n} items, {ds.n_users} users.", "",
             f"Encoding ({args.model}, mean-pooled last hidden states, max {info['max_length']} tokens, batch 32, "
             f"float32): {n} items in {enc_s:.1f} s with the model load = **{n / enc_s:.1f} items/s** "
             f"({info['items_per_second']} items/s for the forward passes alone; load after it {enc_load}). "
             f"A second run reads the cache in {cached_s:.2f} s.", "",
             f"Training: {args.epochs} fixed epochs of the default shape (hidden 64, 2 layers, max length 50, "
             f"batch 32). Ranking: `Teacher.topk(k=10)` over all {ds.n_users} users' last-10 test windows, history "
             f"masked, {args.repeat} passes.", "",
             "| variant | loss | trainable params | s / epoch | vs id | ranking queries/s | vs id | load after |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['loss']} | {r['params']:,} | {r['epoch_s']:.2f} | "
                     f"{r['epoch_s'] / base['epoch_s']:.2f}x | {r['queries_s']:.0f} | "
                     f"{r['queries_s'] / base['queries_s']:.2f}x | {r['load']} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.results:
        write_section(Path(args.results), SECTION, text)


if __name__ == "__main__":
    main()
