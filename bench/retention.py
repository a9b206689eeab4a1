"""Retention through lm-evaluation-harness: its ``hf`` model vs its ``vllm`` model, side by side.

The same MMLU (5-shot, lm-eval's mmlu template) and GSM8K (8-shot CoT, lm-eval's gsm8k_cot)
questions, the same model, evaluated by :func:`recalign.eval.retention.run_retention` with
each lm-eval model class, each in a fresh interpreter (one engine per process, nothing warm
from the other). Prints the accuracy with its 95% interval and n, the seconds per check
(model load included: that is what a pipeline stage pays), the time ratio, and how often the
two classes agree per question (paired, McNemar p): loglikelihoods from two kernels may flip
a near-tie, a systematic gap would be a bug.

    cd /work/main
    RECALIGN_ASSETS=/work/shared/assets HF_HUB_OFFLINE=1 /work/venv/bin/python bench/retention.py \\
        --mmlu ../shared/data/mmlu --gsm8k ../shared/data/gsm8k/test.jsonl --mmlu-limit 500 --gsm8k-limit 200
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results import write_section  # bench/ is on sys.path when a script runs

ROOT = Path(__file__).resolve().parent.parent
SECTION = "## Retention through lm-evaluation-harness: hf vs vllm model classes"
MODES = ("hf", "vllm")


def one(args, mode: str, dest: Path) -> None:
    from recalign.eval.retention import run_retention

    out = {}
    for check, kw in (("mmlu", {"mmlu": args.mmlu, "mmlu_limit": args.mmlu_limit}),
                      ("gsm8k", {"gsm8k": args.gsm8k, "gsm8k_limit": args.gsm8k_limit})):
        t0 = time.perf_counter()
        res = run_retention(args.model, backend=mode, batch_size=args.batch_size, **kw)
        out[check] = {**res[check], "wall_s": time.perf_counter() - t0, "command": res["lm_eval"]["command"]}
        out[check].pop("samples", None)
        out[check].pop("per_subject", None)
    dest.write_text(json.dumps(out))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--mmlu", default=str(ROOT.parent / "shared" / "data" / "mmlu"))
    ap.add_argument("--gsm8k", default=str(ROOT.parent / "shared" / "data" / "gsm8k" / "test.jsonl"))
    ap.add_argument("--mmlu-limit", type=int, default=500)
    ap.add_argument("--gsm8k-limit", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--results", default=str(ROOT / "bench" / "RESULTS.md"))
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--one", nargs=2, metavar=("MODE", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        return one(args, args.one[0], Path(args.one[1]))
    from recalign.data.stats import paired

    modes = args.modes.split(",")
    load0 = os.getloadavg()
    res = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in modes:
            dest = Path(tmp) / f"{mode}.json"
            subprocess.run([sys.executable, __file__, *sys.argv[1:], "--one", mode, str(dest)], check=True)
            res[mode] = json.loads(dest.read_text())
    load1 = os.getloadavg()
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    lines = [SECTION, "",
             f"{dt.date.today()}, commit {git}, {platform.processor() or platform.machine()}, "
             f"{os.cpu_count()} cores, load average {load0[0]:.2f} before / {load1[0]:.2f} after; model "
             f"{args.model}, batch size {args.batch_size}. Seconds include the model load (what a pipeline "
             "stage pays); each mode in a fresh process.", "",
             "```bash", "python bench/retention.py " + " ".join(sys.argv[1:]), "```", "",
             "| lm-eval model | MMLU 5-shot [95% CI] | n | s | GSM8K 8-shot CoT (flexible) [95% CI] | strict | n | s |",
             "|---|---|---|---|---|---|---|---|"]
    for m in modes:
        a, g = res[m]["mmlu"], res[m]["gsm8k"]
        lines.append(f"| {m} | {a['accuracy']:.1%} [{a['ci'][0]:.1%}, {a['ci'][1]:.1%}] | {a['n']} | "
                     f"{a['wall_s']:.0f} | {g['accuracy']:.1%} [{g['ci'][0]:.1%}, {g['ci'][1]:.1%}] | "
                     f"{g['strict_match']:.1%} | {g['n']} | {g['wall_s']:.0f} |")
    if len(modes) == 2:
        x, y = modes
        lines.append("")
        for check in ("mmlu", "gsm8k"):
            a = [int(c) for c in res[x][check]["correct"]]
            b = [int(c) for c in res[y][check]["correct"]]
            same = sum(i == j for i, j in zip(a, b)) / len(a)
            p = paired(a, b, binary=True)
            lines.append(f"- {check}: {y} / {x} time {res[y][check]['wall_s'] / res[x][check]['wall_s']:.2f}x; "
                         f"same outcome on {same:.1%} of {len(a)} questions; {y} − {x} = {p['diff']:+.3f} "
                         f"[{p['lo']:+.3f}, {p['hi']:+.3f}], p = {p['p']:.3g}")
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        write_section(Path(args.results), SECTION, text)


if __name__ == "__main__":
    main()
