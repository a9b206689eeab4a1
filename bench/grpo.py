"""GRPO step time: HF generate vs the in-process vLLM engine (TRL's rollout_func) for rollouts.

Each backend trains ``--steps`` GRPO steps from the same SFT adapter on the same rows, in a
fresh interpreter (``python -m recalign.trainers.grpo``), and the step times come from TRL's
log (``step_time``, the first step left out as a warm-up: the vLLM engine starts and syncs).

    cd /work/main
    RECALIGN_ASSETS=/work/shared/assets RECALIGN_CACHE=/work/cache-recalign HF_HUB_OFFLINE=1 \\
        /work/venv/bin/python bench/grpo.py --data runs/proof/inst --adapter runs/proof/sft
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results import write_section  # bench/ is on sys.path when a script runs

ROOT = Path(__file__).resolve().parent.parent
SECTION = "## GRPO: HF vs vLLM rollouts (rollout_func)"


def run(backend: str, args, out: Path) -> dict:
    cmd = [sys.executable, "-m", "recalign.trainers.grpo", "--method", "grpo", "--model", args.model,
           "--data", args.data, "--adapter", args.adapter, "--output_dir", str(out), "--max_steps", str(args.steps + 1),
           "--per_device_train_batch_size", str(args.batch), "--num_generations", str(args.generations),
           "--max_completion_length", str(args.max_new_tokens), "--lora_top_layers", "10", "--temperature", "0.7",
           "--top_k", "20", "--save_strategy", "no", "--logging_steps", "1", "--seed", "0",
           "--rollout_backend", backend, "--report_to", "none"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    hist = json.loads((out / "card.json").read_text())["log_history"]
    steps = [h for h in hist if "loss" in h]
    timed = steps[1:]                                   # step 1: warm-up
    key = next((k for k in ("step_time", "time/step_s") if k in steps[0]), None)
    per = [h[key] for h in timed] if key else []
    return {"backend": backend, "wall_s": wall, "step_s": sum(per) / len(per) if per else None,
            "completion_len": sum(h.get("completions/mean_length", 0) for h in timed) / max(len(timed), 1),
            "reward": sum(h.get("reward", 0) for h in timed) / max(len(timed), 1),
            "rollout": json.loads((out / "card.json").read_text()).get("rollout")}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--data", required=True)
    ap.add_argument("--adapter", required=True)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--generations", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--results", default=str(ROOT / "bench" / "RESULTS.md"), help="'' to skip")
    args = ap.parse_args()
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    with tempfile.TemporaryDirectory() as tmp:
        res = {b: run(b, args, Path(tmp) / b) for b in ("hf", "vllm")}
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    hf = res["hf"]["step_s"]
    rows = [f"| {r['rollout']} | {r['step_s']:.1f} | {r['step_s'] / hf:.2f}x | {r['completion_len']:.0f} | "
            f"{r['reward']:.3f} | {r['wall_s']:.0f} |" for b, r in res.items()]
    text = "\n".join([
        SECTION, "",
        f"Command: `python bench/grpo.py {' '.join(map(shlex.quote, sys.argv[1:]))}`", "",
        f"Date {dt.date.today().isoformat()}, git {git}, load average at start {load}. `{args.model}` with the SFT "
        f"adapter merged, LoRA r 4 on the top 10 layers, {args.batch} completions per step ({args.generations} per "
        f"prompt), T 0.7 / top-k 20, up to {args.max_new_tokens} tokens; {args.steps} timed steps after one warm-up "
        "step; each backend in a fresh process.", "",
        "| rollouts | s/step | vs hf | mean completion tokens | mean reward | process wall (s) |",
        "|---|---|---|---|---|---|", *rows, ""])
    print(text)
    if args.results:
        write_section(Path(args.results), SECTION, text)


if __name__ == "__main__":
    main()
