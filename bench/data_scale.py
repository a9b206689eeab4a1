"""Scale: prepare + I0-I3 build of a synthetic 10M-interaction, 100k-user, 20k-item log.

Each stage runs as its own ``recalign`` subprocess, so its peak RSS (``ru_maxrss`` from
``wait4``) and CPU seconds are that command's alone:

1. ``gen``: a generic CSV log (``interactions.csv``: user,item,timestamp,rating; ``items.csv``:
   item,title,categories with ``;``-separated tags), Zipf item popularity, per-user lengths
   uniform in [20, 180], 30 categories with 1-3 per item. Written once per size and seed.
2. ``recalign data prepare --dataset generic`` (k-core 5/5).
3. an untrained SASRec of the default shape (rows/s does not depend on teacher quality).
4. ``recalign data build --tasks I0,I1+,I1-,I2<=,I2>=,I2~,I3`` (1 train epoch + valid + test).

    TQDM_DISABLE=1 /work/venv/bin/python bench/data_scale.py --workdir /work/scale --results

Goals (issue 15): build at <= 2 CPU-minutes per million rows and peak RSS < 4 GB.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from results import write_section  # bench/ is on sys.path when a script runs

ROOT = Path(__file__).resolve().parent.parent
SECTION = "## Scale: 10M interactions, prepare and build"
TASKS = "I0,I1+,I1-,I2<=,I2>=,I2~,I3"


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def generate(out: Path, users: int, items: int, interactions: int, seed: int) -> dict:
    """The synthetic log as CSV (numpy + pyarrow: ~20 s for 10M rows)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pacsv

    marker = out / "gen.json"
    want = {"users": users, "items": items, "interactions": interactions, "seed": seed}
    if marker.is_file() and json.loads(marker.read_text()) == want:
        return want
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    mean = interactions / users
    lengths = rng.integers(20, int(2 * mean - 20) + 1, size=users)
    lengths = np.maximum(20, np.round(lengths * interactions / lengths.sum())).astype(np.int64)
    n = int(lengths.sum())
    p = 1.0 / np.arange(1, items + 1)
    p /= p.sum()
    item = rng.permutation(items)[rng.choice(items, size=n, p=p)] + 1
    user = np.repeat(np.arange(users), lengths)
    t0 = rng.integers(8.8e8, 1.5e9, size=users)
    ts = np.repeat(t0, lengths) + np.concatenate([np.sort(rng.integers(0, 10 ** 7, size=L)) for L in lengths])
    order = rng.permutation(n)                # a log is not sorted by user
    rating = rng.integers(1, 6, size=n)
    pacsv.write_csv(pa.table({"user": pa.array([f"u{u}" for u in user[order]]),
                              "item": pa.array([f"i{i}" for i in item[order]]),
                              "timestamp": ts[order], "rating": rating[order]}), out / "interactions.csv")
    names = [f"Genre {c:02d}" for c in range(30)]
    cat_p = 1.0 / np.arange(1, 31) ** 0.7
    cat_p /= cat_p.sum()
    cats = [";".join(names[c] for c in rng.choice(30, size=int(k), replace=False, p=cat_p))
            for k in rng.integers(1, 4, size=items)]
    pacsv.write_csv(pa.table({"item": [f"i{i}" for i in range(1, items + 1)],
                              "title": [f"Synthetic item {i}" for i in range(1, items + 1)],
                              "categories": cats}), out / "items.csv")
    marker.write_text(json.dumps(want))
    return want


def timed(cmd: list[str], env: dict | None = None) -> dict:
    """Wall, CPU (user+sys) and peak RSS of one subprocess (wait4's own rusage)."""
    print("$", " ".join(shlex.quote(c) for c in cmd), flush=True)
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, env={**os.environ, **(env or {})})
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    rc = os.waitstatus_to_exitcode(status)
    if rc:
        raise SystemExit(f"command failed ({rc}): {cmd}")
    return {"wall_s": round(wall, 1), "cpu_s": round(ru.ru_utime + ru.ru_stime, 1),
            "peak_rss_mb": round(ru.ru_maxrss / 1024)}


def untrained_teacher(data: Path, out: Path) -> None:
    code = f"""
import torch
from recalign.data import RecDataset
from recalign.teacher.config import TeacherTrainConfig
from recalign.teacher.train import build_model, save_teacher
torch.manual_seed(0)
ds = RecDataset.load({str(data)!r})
cfg = TeacherTrainConfig()
model, _ = build_model(ds, cfg)
save_teacher({str(out)!r}, model, {{"note": "untrained (bench/data_scale.py)"}}, cfg, ds, overwrite=True)
"""
    subprocess.run([sys.executable, "-c", code], check=True)


def write_results(w: Path, label: str, threads: int) -> None:
    """bench/RESULTS.md's section from every result-*.json in ``w`` (``label`` first)."""
    res = json.loads((w / f"result-{label}.json").read_text())
    gen, prep, build = res["log"], res["prepare"], res["build"]
    counts = res["prepared"]
    import platform

    import numpy
    import pyarrow
    import torch
    runs = {p.stem[len("result-"):]: json.loads(p.read_text()) for p in sorted(w.glob("result-*.json"))}
    table = ["| run (git) | stage | wall s | CPU s | peak RSS MB | rows | CPU s per million rows | load before |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    for name, r in sorted(runs.items(), key=lambda kv: kv[0] != label):
        p_, b_ = r["prepare"], r["build"]
        table.append(f"| {name} ({r.get('git', '?')}) | prepare | {p_['wall_s']} | {p_['cpu_s']} | "
                     f"{p_['peak_rss_mb']:,} | | | {r['load_before_prepare']} |")
        table.append(f"| {name} ({r.get('git', '?')}) | build | {b_['wall_s']} | {b_['cpu_s']} | "
                     f"{b_['peak_rss_mb']:,} | {b_['rows']:,} | {b_['cpu_s_per_million_rows']} | "
                     f"{r['load_before_build']} |")
    table = "\n".join(table)
    text = f"""{SECTION}

Date: {dt.datetime.now():%Y-%m-%d %H:%M}. Machine: {os.cpu_count()} CPU cores, x86_64; Python {platform.python_version()},
torch {torch.__version__}, numpy {numpy.__version__}, pyarrow {pyarrow.__version__}; git {res['git']}. Nothing else
ran beside it. Torch threads {threads}.

Command (each run; `--label` names it):

```bash
cd /work/main && TQDM_DISABLE=1 /work/venv/bin/python bench/data_scale.py --workdir {w} --label {label} --results
```

Log: {gen['interactions']:,} interactions written, {gen['users']:,} users, {gen['items']:,} items (Zipf popularity,
seed {gen['seed']}); after dedupe and 5-core: {counts['interactions']:,} interactions, {counts['users']:,} users,
{counts['items']:,} items. Build: tasks {TASKS}, 1 train epoch + valid + test, untrained SASRec (default shape).
Peak RSS is the command's own (wait4), CPU s its user + system time.

{table}

Goals for this run: build <= 120 CPU s per million rows
({'met' if build['cpu_s_per_million_rows'] <= 120 else 'missed'}: {build['cpu_s_per_million_rows']}), peak RSS < 4,096 MB
(prepare {'met' if prep['peak_rss_mb'] < 4096 else 'missed'}, build {'met' if build['peak_rss_mb'] < 4096 else 'missed'}).
"""
    write_section(ROOT / "bench" / "RESULTS.md", SECTION, text)
    print("wrote", ROOT / "bench" / "RESULTS.md")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default="/work/scale")
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--items", type=int, default=20_000)
    ap.add_argument("--interactions", type=int, default=10_000_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the build (OMP_NUM_THREADS)")
    ap.add_argument("--results", action="store_true", help="write the section of bench/RESULTS.md")
    ap.add_argument("--skip-prepare", action="store_true", help="reuse workdir/prep")
    ap.add_argument("--label", default="current", help="name of this run in workdir/result-LABEL.json; the "
                    "RESULTS table shows every result file there (e.g. one made before a change)")
    ap.add_argument("--report-only", action="store_true", help="rewrite RESULTS.md from the saved result files")
    args = ap.parse_args()
    w = Path(args.workdir)
    if args.report_only:
        write_results(w, args.label, args.threads)
        return
    t = time.perf_counter()
    gen = generate(w / "raw", args.users, args.items, args.interactions, args.seed)
    print(f"log ready in {time.perf_counter() - t:.0f} s: {gen}", flush=True)
    recalign = [sys.executable, "-m", "recalign.cli"]
    load0 = loadavg()
    env = {"OMP_NUM_THREADS": str(args.threads), "TQDM_DISABLE": "1"}
    if args.skip_prepare and (w / "prep" / "card.json").is_file():
        prep = json.loads((w / "prep.json").read_text())
    else:
        prep = timed(recalign + ["data", "prepare", "--dataset", "generic", "--input", str(w / "raw"),
                                 "--category-sep", ";", "--out", str(w / "prep"), "--overwrite"], env)
        (w / "prep.json").write_text(json.dumps(prep))
    counts = json.loads((w / "prep" / "card.json").read_text())["counts"]
    untrained_teacher(w / "prep", w / "teacher")
    load1 = loadavg()
    build = timed(recalign + ["data", "build", "--data", str(w / "prep"), "--teacher", str(w / "teacher"),
                              "--tasks", TASKS, "--out", str(w / "inst"), "--overwrite"], env)
    card = json.loads((w / "inst" / "card.json").read_text())
    rows = card["rows_total"]
    build["rows"] = rows
    build["cpu_s_per_million_rows"] = round(build["cpu_s"] / rows * 1e6, 1)
    res = {"log": gen, "prepared": {k: counts[k] for k in ("users", "items", "interactions")},
           "prepare": prep, "build": build, "load_before_prepare": load0, "load_before_build": load1,
           "threads": args.threads}
    git = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                         text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    res["git"] = git + ("+changes" if dirty else "")
    print(json.dumps(res, indent=1))
    (w / f"result-{args.label}.json").write_text(json.dumps(res, indent=1))
    if args.results:
        write_results(w, args.label, args.threads)


if __name__ == "__main__":
    main()
