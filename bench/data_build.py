"""Instruction-data build speed: rows per second, teacher share, peak memory, growth.

Three parts, each measurement in its own subprocess (so the peak RSS, VmHWM, is that run's own and
``torch.set_num_threads`` is clean):

* ``ml100k``: the embedded ml-100k prepared into a temp dir, a SASRec teacher trained for 2
  epochs (``--teacher untrained`` to skip; rows/s does not depend on its quality), tasks
  I0-I4 (I4 from a small synthetic ShareGPT file), 1 epoch, with 1 and 2 torch threads, plus
  one tracemalloc pass (Python-heap peak; slower, so timed separately).
* ``synthetic``: Zipf-popular items, sequence lengths 20-100, 30 categories with 1-3 per
  item, at ``--sizes`` USERSxITEMS, with an untrained SASRec teacher of the default shape;
  shows how time and memory grow with users and items.
* ``naive``: the I0 labelling one user at a time (``Teacher.topk`` per row, no batching) vs
  the batched builder on the same users; prints the speed ratio and checks the rows agree.

Teacher time is measured by wrapping ``Teacher.scores`` (the forward pass + item logits) and
``Teacher.topk`` (scores + masking + top-k); "rest" is everything else (contexts, sampling,
Jinja rendering, row dicts).

    RECALIGN_ASSETS=/work/shared/assets TQDM_DISABLE=1 \\
        /work/venv/bin/python bench/data_build.py --json-out /tmp/bench_data_build.json

Memory guard: every worker sets ``RLIMIT_AS`` below the memory available at its start, so a
size that does not fit fails with an allocation error instead of waking the OOM killer on a
shared machine. ``--chunked-teacher`` (or ``auto``: only where the unchunked score matrix
would not fit) swaps in a bench-only Teacher subclass that scores ``--chunk`` histories at
a time and keeps only their top-k, the fix suggested for ``Teacher.scores``/``topk``.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from results import write_section  # bench/ is on sys.path when a script runs

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve()
SECTION = "## Instruction-data build speed"


# --------------------------------------------------------------------------- machine state

def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def busy_processes(min_cpu: float = 20.0) -> list[str]:
    """Other processes using CPU right now (ps's lifetime-average %CPU)."""
    try:
        out = subprocess.run(["ps", "-eo", "pid,pcpu,rss,args", "--sort=-pcpu"], capture_output=True,
                             text=True, timeout=10).stdout.splitlines()[1:]
    except (OSError, subprocess.SubprocessError):
        return []
    me = {os.getpid(), os.getppid()}
    rows = []
    for line in out:
        parts = line.split(None, 3)
        if len(parts) < 4:
            continue
        pid, cpu, rss, args = int(parts[0]), float(parts[1]), int(parts[2]), parts[3]
        if cpu < min_cpu or pid in me or "ps -eo" in args:
            continue
        rows.append(f"{cpu:.0f}% CPU, {rss / 1024:.0f} MB: {args[:110]}")
    return rows


def mem_available_bytes() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def rss_bytes(field: str = "VmRSS") -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def peak_rss_mb() -> float:
    """This process's peak RSS. VmHWM, not ``ru_maxrss``: Linux keeps ``ru_maxrss`` across
    execve, so a worker forked from a big parent would report the parent's size."""
    return round(rss_bytes("VmHWM") / 2**20, 1)


# --------------------------------------------------------------------------- data

def synthetic_dataset(n_users: int, n_items: int, seed: int = 0, n_cats: int = 30,
                      zipf_a: float = 1.0, min_len: int = 20, max_len: int = 100):
    """Zipf-popular items (p ~ 1/rank^a), per-user lengths uniform in [min_len, max_len]
    (distinct items, time order = draw order), 30 categories with skewed sizes, 1-3 per item."""
    import numpy as np

    from recalign.data import RecDataset

    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, n_items + 1) ** zipf_a
    p /= p.sum()
    perm = rng.permutation(n_items) + 1                     # popularity rank -> item index
    lengths = rng.integers(min_len, max_len + 1, size=n_users)
    draws = perm[rng.choice(n_items, size=int(lengths.sum() * 1.6) + 1000, p=p)]
    seqs, pos = [], 0
    for L in lengths:
        while True:   # take draws until L distinct items (first occurrence order)
            chunk = draws[pos:pos + 2 * L]
            if len(chunk) < 2 * L:
                draws = perm[rng.choice(n_items, size=4 * L + 1000, p=p)]
                pos, chunk = 0, draws[:2 * L]
            _, first = np.unique(chunk, return_index=True)
            pos += 2 * L
            if len(first) >= L:
                seqs.append(chunk[np.sort(first)][:L])
                break
    cat_p = 1.0 / np.arange(1, n_cats + 1) ** 0.7
    cat_p /= cat_p.sum()
    names = [f"Genre {c:02d}" for c in range(n_cats)]
    k = rng.integers(1, 4, size=n_items)
    cats = [[names[c] for c in rng.choice(n_cats, size=int(m), replace=False, p=cat_p)] for m in k]
    titles = [f"Synthetic item {i}" for i in range(1, n_items + 1)]
    return RecDataset.from_sequences(seqs, titles=titles, categories=cats, n_items=n_items)


def write_sharegpt(path: Path, n: int = 300, seed: int = 0) -> Path:
    import random

    r = random.Random(seed)
    words = ("the a recipe for travel code music history science garden weather book film "
             "write explain compare summarise list why how plan budget python poem").split()
    recs = []
    for i in range(n):
        conv = []
        for _ in range(r.randint(1, 3)):
            conv.append({"from": "human", "value": " ".join(r.choices(words, k=r.randint(5, 25))) + "?"})
            conv.append({"from": "gpt", "value": " ".join(r.choices(words, k=r.randint(20, 120))) + "."})
        recs.append({"id": str(i), "conversations": conv})
    path.write_text(json.dumps(recs), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- teacher helpers

def make_chunked_teacher_class():
    """The shipped Teacher now scores, masks and selects per batch (``topk_many``), which is
    what this bench's earlier chunked stand-in did; ``chunked`` runs use it unchanged."""
    from recalign.teacher import Teacher

    return Teacher


class TeacherClock:
    """Wraps a teacher's scoring and top-k methods on the instance and sums their time
    (outermost calls only, so nested calls are not counted twice)."""

    def __init__(self, teacher, forward_attr: str = "scores"):
        self.forward_s = 0.0      # Teacher.scores: SASRec forward + item logits
        self.total_s = 0.0        # all teacher calls: scores + masking + top-k
        self.calls = Counter()
        self._depth = 0
        for name in {forward_attr, "item_scores", "topk", "topk_many"}:
            setattr(teacher, name, self._wrap(getattr(teacher, name), name, name == forward_attr))

    def _wrap(self, fn, name, is_forward):
        def inner(*a, **kw):
            self.calls[name] += 1
            t0 = time.perf_counter()
            self._depth += 1
            try:
                return fn(*a, **kw)
            finally:
                self._depth -= 1
                dt_ = time.perf_counter() - t0
                if is_forward:
                    self.forward_s += dt_
                if self._depth == 0:
                    self.total_s += dt_
        return inner


# --------------------------------------------------------------------------- worker (one run)

def worker(job: dict) -> dict:
    """One measurement in this (fresh) process; returns a JSON-able dict."""
    limit = job.get("rlimit_as")
    if limit:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    import torch

    from recalign.data import RecDataset
    from recalign.tasks.builder import BuildConfig, build_rows
    from recalign.tasks.spec import load_specs, resolve_tasks
    from recalign.teacher import Teacher
    from recalign.teacher.sasrec import SASRec, SASRecConfig

    torch.set_num_threads(job["threads"])
    res = {k: job[k] for k in ("name", "part", "threads", "tasks", "tracemalloc", "chunked") if k in job}
    res["loadavg_start"] = loadavg()
    t0 = time.perf_counter()
    if job.get("data"):
        ds = RecDataset.load(job["data"])
    else:
        ds = synthetic_dataset(job["users"], job["items"], seed=job.get("seed", 0))
    res.update(users=ds.n_users, items=ds.n_items, interactions=int(sum(len(s) for s in ds.sequences)),
               categories=len(ds.catalog.categories), data_s=round(time.perf_counter() - t0, 2))
    cls = make_chunked_teacher_class() if job.get("chunked") else Teacher
    if job.get("teacher_dir"):
        teacher = cls.load(job["teacher_dir"], data=ds)
    else:
        torch.manual_seed(0)
        teacher = cls(SASRec(SASRecConfig(ds.n_items)), ds.catalog)
    if job.get("chunked"):
        teacher.chunk = job["chunk"]
    specs = resolve_tasks(job["tasks"], load_specs())
    cfg = BuildConfig(epochs=1, seed=42, sharegpt=job.get("sharegpt"), max_users=job.get("max_users"))
    rss0 = rss_bytes()

    if job["part"] == "naive":
        res.update(naive_vs_batched(ds, teacher, specs, cfg, job))
        res["maxrss_mb"] = peak_rss_mb()
        return res

    clock = TeacherClock(teacher, "item_scores")
    if job.get("tracemalloc"):
        import tracemalloc

        tracemalloc.start()
    t0 = time.perf_counter()
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    try:
        rows, b = build_rows(ds, teacher, specs, cfg, progress=False)
    except (MemoryError, RuntimeError) as e:
        res.update(error=f"{type(e).__name__}: {str(e).splitlines()[0][:200]}",
                   failed_after_s=round(time.perf_counter() - t0, 1),
                   maxrss_mb=peak_rss_mb())
        return res
    build_s = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu_s = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    if job.get("tracemalloc"):
        import tracemalloc

        res["tracemalloc_peak_mb"] = round(tracemalloc.get_traced_memory()[1] / 2**20, 1)
        tracemalloc.stop()
    n = sum(len(r) for r in rows.values())
    res.update(
        rows=n, rows_by_split={s: len(r) for s, r in rows.items()},
        rows_by_task=dict(sorted(Counter(r["task"] for rs in rows.values() for r in rs).items())),
        build_s=round(build_s, 2), rows_per_s=round(n / build_s, 1),
        cpu_s=round(cpu_s, 2), rows_per_cpu_s=round(n / max(cpu_s, 1e-9), 1),
        teacher_forward_s=round(clock.forward_s, 2), teacher_total_s=round(clock.total_s, 2),
        rest_s=round(build_s - clock.total_s, 2),
        rest_rows_per_s=round(n / max(build_s - clock.total_s, 1e-9), 1),
        teacher_calls=dict(clock.calls), skipped=dict(b.skipped),
        rss_before_mb=round(rss0 / 2**20, 1), rss_after_mb=round(rss_bytes() / 2**20, 1),
        maxrss_mb=peak_rss_mb(),
        notes=list(cfg.notes))
    res["rows_mb_per_1k_rows"] = round((res["rss_after_mb"] - res["rss_before_mb"]) / max(n, 1) * 1000, 2)
    return res


def naive_vs_batched(ds, teacher, specs, cfg, job) -> dict:
    """I0 for every split: the builder's batched rule vs the same rule with one
    ``Teacher.topk`` call per row, on the same users and random streams."""
    from recalign.tasks.builder import SPLITS, Builder

    spec = next(s for s in specs if s.task == "I0")
    b = Builder(ds, teacher, cfg)

    def naive(split):
        rng = b.rng(spec, split, 0)
        ctx = b.contexts(spec, split, rng)
        counts = [b.item_count(spec, split, rng) for _ in ctx]
        rows = []
        for c, m in zip(ctx, counts):   # same rng order as Builder.sequential
            t = b.teacher.topk([c.history], k=max(m - 1, 1), exclude=[[c.target]])[0]
            label = [c.target] + list(t[:m - 1])
            rows.append(b.row(spec, split, 0, c, rng, label=label, item_count=m,
                              prompt_vars={"history": b.titles(c.history), "item_count": m}))
        return rows

    out = {}
    for mode, fn in (("batched", lambda s: b.sequential(spec, s, 0, b.rng(spec, s, 0))), ("naive", naive)):
        t0 = time.perf_counter()
        rows = {s: fn(s) for s in SPLITS}
        out[mode] = (time.perf_counter() - t0, rows)
    nb, nn = (sum(len(r) for r in out[m][1].values()) for m in ("batched", "naive"))
    same = sum(x == y for s in SPLITS for x, y in zip(out["batched"][1][s], out["naive"][1][s]))
    same_label = sum(x["label"] == y["label"] for s in SPLITS
                     for x, y in zip(out["batched"][1][s], out["naive"][1][s]))
    return {"rows": nb, "batched_s": round(out["batched"][0], 2), "naive_s": round(out["naive"][0], 2),
            "batched_rows_per_s": round(nb / out["batched"][0], 1),
            "naive_rows_per_s": round(nn / out["naive"][0], 1),
            "speedup": round(out["naive"][0] / out["batched"][0], 1),
            "rows_identical": same, "labels_identical": same_label}


def run_worker(job: dict, timeout: int | None = None) -> dict:
    """Run ``job`` in a fresh interpreter; its last stdout line is the JSON result."""
    job = dict(job)
    if job.get("mem_guard", True):
        job["rlimit_as"] = int(max(mem_available_bytes() - 1.0 * 2**30, 6 * 2**30))   # address space, not RSS
    env = dict(os.environ, TQDM_DISABLE="1")
    t0 = time.perf_counter()
    try:
        p = subprocess.run([sys.executable, str(HERE), "--worker", json.dumps(job)], capture_output=True,
                           text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {**job, "error": f"timed out after {timeout} s"}
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode != 0 or not lines:
        return {**{k: v for k, v in job.items() if k != "rlimit_as"},
                "error": f"exit {p.returncode}: {p.stderr.strip().splitlines()[-1:] or p.stdout[-300:]}",
                "wall_s": round(time.perf_counter() - t0, 1)}
    res = json.loads(lines[-1])
    res["rlimit_as_gb"] = round(job["rlimit_as"] / 2**30, 1) if job.get("rlimit_as") else None
    return res


# --------------------------------------------------------------------------- parts

def score_matrix_gb(users: int, items: int) -> float:
    return users * (items + 1) * 4 / 2**30


def part_ml100k(args, tmp: Path, log) -> list[dict]:
    from recalign.data import RecDataset
    from recalign.data.prepare import PrepareOptions, prepare_dataset

    data = prepare_dataset(tmp / "ml100k", PrepareOptions("ml-100k"))
    teacher_dir = None
    if args.teacher == "trained":
        import torch

        from recalign.teacher import TeacherTrainConfig
        from recalign.teacher.train import save_teacher, train_teacher

        ds = RecDataset.load(data)
        t0 = time.perf_counter()
        cfg = TeacherTrainConfig(epochs=2, patience=2, threads=2)
        model, metrics = train_teacher(ds, cfg, log=lambda *_: None)
        teacher_dir = save_teacher(tmp / "teacher", model, metrics, cfg, ds)
        log(f"  teacher: trained 2 epochs in {time.perf_counter() - t0:.0f} s, "
            f"test HR@10 (masked) {metrics['test']['masked']['HR@10']:.4f}")
        torch.set_num_threads(torch.get_num_threads())
    sharegpt = str(write_sharegpt(tmp / "sharegpt.json"))
    base = {"part": "ml100k", "data": str(data), "teacher_dir": str(teacher_dir) if teacher_dir else None,
            "tasks": args.ml_tasks, "sharegpt": sharegpt if "I4" in args.ml_tasks else None}
    out = []
    for threads in args.threads:
        for rep in range(args.repeats):
            r = run_worker({**base, "name": f"ml-100k, {threads} thread(s)", "threads": threads})
            r["repeat"] = rep
            log("  " + summary_line(r))
            out.append(r)
    if not args.no_tracemalloc:
        r = run_worker({**base, "name": "ml-100k, 1 thread, tracemalloc on", "threads": 1, "tracemalloc": True})
        log("  " + summary_line(r))
        out.append(r)
    return out


def part_synthetic(args, log) -> list[dict]:
    out = []
    for size in args.sizes:
        # USERSxITEMS[:TASKS joined by '+'][:chunked|shipped]
        dims, *rest = size.split(":")
        users, items = (int(x) for x in dims.lower().split("x"))
        tasks = args.synthetic_tasks
        mode = None
        for r in rest:
            if r in ("chunked", "shipped"):
                mode = r
            elif r:
                tasks = r.replace("+", ",")
        need = 3 * score_matrix_gb(users, items)
        chunked = mode == "chunked" or (mode is None and (args.chunked_teacher == "always" or (
            args.chunked_teacher == "auto" and need > 0.6 * mem_available_bytes() / 2**30)))
        job = {"part": "synthetic", "name": f"synthetic {users / 1000:g}k x {items / 1000:g}k",
               "users": users, "items": items, "threads": args.synthetic_threads,
               "tasks": tasks, "chunked": chunked, "chunk": args.chunk,
               "max_users": args.max_users}
        if chunked:
            job["name"] += " (chunked teacher)"
        r = run_worker(job, timeout=args.size_timeout)
        r["score_matrix_gb"] = round(score_matrix_gb(users, items), 2)
        log("  " + summary_line(r))
        out.append(r)
        if args.also_unchunked and chunked and args.chunked_teacher == "auto":
            job2 = {**job, "chunked": False, "name": job["name"].replace(" (chunked teacher)", " (as shipped)")}
            r2 = run_worker(job2, timeout=args.size_timeout)
            r2["score_matrix_gb"] = r["score_matrix_gb"]
            log("  " + summary_line(r2))
            out.append(r2)
    return out


def part_naive(args, tmp: Path, log) -> list[dict]:
    out = []
    data = tmp / "ml100k"
    if not data.is_dir():
        from recalign.data.prepare import PrepareOptions, prepare_dataset

        prepare_dataset(data, PrepareOptions("ml-100k"))
    td = tmp / "teacher"
    jobs = [{"part": "naive", "name": "naive vs batched I0, ml-100k (943 users)", "data": str(data),
             "teacher_dir": str(td) if td.is_dir() else None, "tasks": "I0", "threads": 1}]
    if args.naive_synthetic:
        u, i = (int(x) for x in args.naive_synthetic.lower().split("x"))
        jobs.append({"part": "naive", "name": f"naive vs batched I0, synthetic {u / 1000:g}k x {i / 1000:g}k "
                     f"(first {args.naive_users} users)", "users": u, "items": i, "tasks": "I0",
                     "threads": 1, "max_users": args.naive_users})
    for job in jobs:
        r = run_worker(job)
        log(f"  {r['name']}: " + (r.get("error") or
            f"{r['rows']} rows, batched {r['batched_s']} s ({r['batched_rows_per_s']:.0f} rows/s), "
            f"naive {r['naive_s']} s ({r['naive_rows_per_s']:.0f} rows/s), speedup {r['speedup']}x, "
            f"identical rows {r['rows_identical']}/{r['rows']} (labels {r['labels_identical']})"))
        out.append(r)
    return out


def summary_line(r: dict) -> str:
    if r.get("error"):
        return f"{r.get('name')}: FAILED {r['error']} (peak RSS {r.get('maxrss_mb', '?')} MB)"
    tm = f", tracemalloc peak {r['tracemalloc_peak_mb']} MB" if "tracemalloc_peak_mb" in r else ""
    return (f"{r['name']} [{r['tasks']}]: {r['rows']} rows in {r['build_s']} s = {r['rows_per_s']:.0f} rows/s "
            f"(CPU {r['cpu_s']} s = {r['rows_per_cpu_s']:.0f} rows/CPU-s); "
            f"teacher {r['teacher_total_s']} s (forward {r['teacher_forward_s']} s), rest {r['rest_s']} s; "
            f"peak RSS {r['maxrss_mb']} MB (before build {r['rss_before_mb']}, after {r['rss_after_mb']})"
            f"{tm}; load {r['loadavg_start']}")


# --------------------------------------------------------------------------- report

def markdown(meta: dict, results: list[dict]) -> str:
    L = [SECTION, ""]
    L.append(f"Date: {meta['date']}. Machine: {meta['machine']}. torch {meta['torch']}, numpy {meta['numpy']}, "
             f"Python {meta['python']}.")
    L.append(f"Load average at start: {meta['loadavg']}" + (
        "; other busy processes: " + "; ".join(f"`{p}`" for p in meta["busy"]) if meta["busy"] else
        "; no other busy processes") + ".")
    L.append("")
    L.append("Command:")
    L.append("")
    L.append("```bash")
    L.append(meta["command"])
    L.append("```")
    L.append("")
    L.append("Rows/s = all rows of all splits (train 1 epoch + valid + test) / wall time of `build_rows`. "
             "Teacher = time inside `Teacher.topk`/`Teacher.scores` (forward = `Teacher.scores` only); "
             "rest = contexts, sampling, Jinja rendering and row dicts. Peak RSS = VmHWM of the "
             "run's own subprocess (includes the dataset, torch and the teacher; 'before' is RSS after "
             "loading them). Each run's load average is its 1/5/15-min value when it started.")
    L.append("")
    L.append("| run | users | items | tasks | threads | rows | seconds | rows/s | CPU s | rows/CPU-s | "
             "teacher s (forward) | rest s | rest rows/s | peak RSS MB | RSS before / after MB | load at start |")
    L.append("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in results:
        if r.get("part") == "naive":
            continue
        if r.get("error"):
            L.append(f"| {r['name']} | {r.get('users', '')} | {r.get('items', '')} | {r.get('tasks', '')} | "
                     f"{r.get('threads', '')} | failed: {r['error']} | | | | | | | | {r.get('maxrss_mb', '')} | | "
                     f"{r.get('loadavg_start', '')} |")
            continue
        tm = f" (tracemalloc peak {r['tracemalloc_peak_mb']:.0f} MB)" if "tracemalloc_peak_mb" in r else ""
        L.append(f"| {r['name']}{tm} | {r['users']:,} | {r['items']:,} | {r['tasks']} | {r['threads']} | "
                 f"{r['rows']:,} | {r['build_s']:.1f} | {r['rows_per_s']:,.0f} | {r['cpu_s']:.1f} | "
                 f"{r['rows_per_cpu_s']:,.0f} | {r['teacher_total_s']:.1f} ({r['teacher_forward_s']:.1f}) | {r['rest_s']:.1f} | "
                 f"{r['rest_rows_per_s']:,.0f} | {r['maxrss_mb']:,.0f} | "
                 f"{r['rss_before_mb']:,.0f} / {r['rss_after_mb']:,.0f} | {r['loadavg_start']} |")
    naive = [r for r in results if r.get("part") == "naive"]
    if naive:
        L.append("")
        L.append("Batched vs naive (the I0 rule with one `Teacher.topk` call per row, same users and "
                 "random streams, all three splits, 1 thread):")
        L.append("")
        L.append("| data | rows | batched s (rows/s) | naive s (rows/s) | batched/naive speed | identical rows |")
        L.append("|---|---:|---:|---:|---:|---:|")
        for r in naive:
            if r.get("error"):
                L.append(f"| {r['name']} | failed: {r['error']} | | | | |")
                continue
            L.append(f"| {r['name']} | {r['rows']:,} | {r['batched_s']:.2f} ({r['batched_rows_per_s']:,.0f}) | "
                     f"{r['naive_s']:.2f} ({r['naive_rows_per_s']:,.0f}) | {r['speedup']}x | "
                     f"{r['rows_identical']}/{r['rows']} |")
    L.append("")
    return "\n".join(L)


# --------------------------------------------------------------------------- main

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--parts", default="ml100k,naive,synthetic")
    ap.add_argument("--teacher", choices=["trained", "untrained"], default="trained",
                    help="ml-100k teacher: 2 quick epochs, or an untrained SASRec")
    ap.add_argument("--ml-tasks", default="I0,I1,I2,I3,I4")
    ap.add_argument("--threads", default="1,2", help="torch threads for the ml-100k runs")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--no-tracemalloc", action="store_true")
    ap.add_argument("--sizes", default="10000x2000,30000x2000,100000x2000,10000x20000,30000x20000,"
                    "10000x20000:I0:chunked,30000x20000:I0:chunked,100000x20000:I0:chunked",
                    help="USERSxITEMS[:TASKS joined by +][:chunked|shipped], comma-separated")
    ap.add_argument("--synthetic-tasks", default="I0,I1,I2,I3")
    ap.add_argument("--synthetic-threads", type=int, default=1)
    ap.add_argument("--max-users", type=int, default=None)
    ap.add_argument("--chunked-teacher", choices=["never", "auto", "always"], default="auto")
    ap.add_argument("--also-unchunked", action="store_true",
                    help="with --chunked-teacher auto: also try the shipped Teacher where it would not fit")
    ap.add_argument("--chunk", type=int, default=2048)
    ap.add_argument("--size-timeout", type=int, default=1800)
    ap.add_argument("--naive-synthetic", default="10000x20000", help="'' to skip")
    ap.add_argument("--naive-users", type=int, default=1000)
    ap.add_argument("--json-out", default=None)
    ap.add_argument("--results", default=str(ROOT / "bench" / "RESULTS.md"), help="'' to leave it alone")
    ap.add_argument("--from-json", default=None,
                    help="don't measure: render a saved --json-out file into --results")
    args = ap.parse_args(argv)

    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))), flush=True)
        return 0
    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        text = markdown(saved["meta"], saved["results"])
        print(text)
        if args.results:
            write_section(Path(args.results), SECTION, text)
        return 0

    args.threads = [int(t) for t in args.threads.split(",")]
    args.sizes = [s for s in args.sizes.split(",") if s]
    parts = args.parts.split(",")
    import numpy
    import torch

    meta = {"date": dt.date.today().isoformat(), "loadavg": loadavg(), "busy": busy_processes(),
            "machine": f"{os.cpu_count()} CPU cores, {round(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30)} GiB RAM, "
                       f"{platform.processor() or platform.machine()}",
            "torch": torch.__version__, "numpy": numpy.__version__, "python": platform.python_version(),
            "command": "cd /work/main && RECALIGN_ASSETS=/work/shared/assets TQDM_DISABLE=1 " + shlex.join(
                [Path(sys.executable).as_posix(), "bench/data_build.py"] + (argv if argv is not None else sys.argv[1:]))}

    def log(msg):
        print(msg, flush=True)

    log(f"load average {meta['loadavg']}; busy: {meta['busy'] or 'none'}")
    results: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench_data_build_") as tmp:
        tmp = Path(tmp)
        if "ml100k" in parts:
            log("ml-100k:")
            results += part_ml100k(args, tmp, log)
        if "naive" in parts:
            log("naive vs batched:")
            results += part_naive(args, tmp, log)
        if "synthetic" in parts:
            log("synthetic:")
            results += part_synthetic(args, log)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    text = markdown(meta, results)
    print("\n" + text)
    if args.results:
        write_section(Path(args.results), SECTION, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
