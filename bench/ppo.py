"""PPO cost: rollout tokens/s, update steps/s, and where a step's time goes.

Runs ``RecPPOTrainer`` (trainers/ppo.py) with the real rule rewards and teacher on a built
ml-100k instruction set, for ``--steps`` steps per model (tiny-random, then SmolLM2-135M),
once per mode (``--modes``), each in a fresh interpreter because the CPU tuning is process-wide:

* ``hf-plain``: HF ``generate`` on the training model, without models/device.py's
  ``tune_cpu_training`` and with every forward through all layers (the configuration before
  the speed issue: the baseline of the ratios);
* ``hf``: HF rollouts with the tuning the PPO trainer applies and ``reuse_frozen_layers``
  (the layers below the lowest LoRA layer run once per rollout);
* ``vllm-whole``: vLLM rollouts, tuned, every forward through all layers;
* ``vllm``: the default, the in-process vLLM engine whose weights are synced to the actor each
  step, tuned, with the reuse;
* ``vllm-bf16``: ``vllm`` with ``cpu_bf16`` (the training model's forwards under bf16
  autocast; vLLM keeps its own dtype).

It splits each step's wall time into generation (greedy + sampled answers; for vLLM including the weight sync), scoring (parser + rewards + teacher ranks), the rollout forwards (old log-probs,
reference log-probs, values) and the PPO update (``ppo_epochs`` passes of actor and critic
forward/backward). The first step is a warm-up and is left out of the figures.

    cd /work/main
    RECALIGN_ASSETS=/work/shared/assets RECALIGN_CACHE=/work/cache-recalign HF_HUB_OFFLINE=1 \\
        OMP_NUM_THREADS=1 /work/venv/bin/python bench/ppo.py --data runs/inst

``--data`` is a directory from ``recalign data build`` (the README's main job makes one).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from results import write_section  # bench/ is on sys.path when a script runs

ROOT = Path(__file__).resolve().parent.parent
SECTION = "## PPO: rollout vs update time, HF vs vLLM rollouts"
PARTS = ("time/generate_s", "time/score_s", "time/rollout_forward_s", "time/update_s")


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# mode -> (rollout engine, CPU tuning, reuse of the frozen layers' output, bf16 autocast)
MODES = {"hf-plain": ("hf", False, False, False), "hf": ("hf", True, True, False),
         "vllm-whole": ("vllm", True, False, False), "vllm": ("vllm", True, True, False),
         "vllm-bf16": ("vllm", True, True, True)}


def run(model: str, mode: str, args, out: Path) -> dict:
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    rollout, tuned, reuse, bf16 = MODES[mode]
    tuning = []
    if tuned:
        from recalign.models.device import tune_cpu_training

        tuning = tune_cpu_training()

    from recalign.models import load_policy
    from recalign.trainers.ppo import RecPPOConfig, RecPPOTrainer, load_rows
    from recalign.trainers.rewarding import load_reward_context

    cfg = RecPPOConfig(model=model, data=args.data, output_dir=str(out), steps=args.steps + 1,
                       prompts_per_step=args.prompts, max_new_tokens=args.max_new_tokens,
                       lora_top_layers=args.lora_top_layers, save_steps=0, seed=args.seed,
                       mini_batch_size=args.mini_batch, ppo_epochs=args.ppo_epochs, target_kl=None,
                       rollout_backend=rollout, rollout_dtype=args.rollout_dtype, adapter=args.adapter or None,
                       reuse_frozen_layers=reuse, cpu_bf16=bf16)
    ctx = load_reward_context(args.data)
    rows = load_rows(cfg, ctx.catalog)
    m, tok = load_policy(model, cfg.adapter)
    tr = RecPPOTrainer(cfg, m, tok, rows, ctx.score, log=lambda s: None)
    hist = tr.train()[1:]                                   # step 1 is the warm-up
    if tr.engine is not None:
        tr.engine.close()
    step_s = sum(h["time/step_s"] for h in hist)
    gen_tokens = sum(h["rollout_tokens_per_s"] * h["time/generate_s"] for h in hist)
    res = {"model": model, "rollout": mode, "tuning": tuning, "steps": len(hist), "step_s": step_s / len(hist),
           "rollout_tokens_per_s": gen_tokens / sum(h["time/generate_s"] for h in hist),
           "update_steps_per_s": sum(h["updates"] for h in hist) / sum(h["time/update_s"] for h in hist),
           "answers_per_step": float(np.mean([h["samples"] for h in hist])),
           "response_length": float(np.mean([h["response_length"] for h in hist]))}
    for p in PARTS:
        res[p] = sum(h[p] for h in hist) / step_s
    return res


def markdown(meta: dict, results: list[dict]) -> str:
    ref = {r["model"]: r for r in results if r["rollout"] == meta["baseline"]}
    rows = [f"| {r['model']} | {r['rollout']} | {r['step_s']:.1f} | "
            f"{r['step_s'] / ref[r['model']]['step_s'] if r['model'] in ref else float('nan'):.2f}x"
            f" | {r['rollout_tokens_per_s']:.0f}"
            f" | {r['rollout_tokens_per_s'] / ref[r['model']]['rollout_tokens_per_s'] if r['model'] in ref else float('nan'):.2f}x"
            f" | {r['update_steps_per_s']:.2f} | "
            f"{r['answers_per_step']:.0f} x {r['response_length']:.0f} | "
            + " | ".join(f"{100 * r[p]:.0f}%" for p in PARTS) + " |" for r in results]
    return "\n".join([
        SECTION, "",
        f"Command: `{meta['command']}`", "",
        f"Date {meta['date']}, git {meta['git']}, {meta['cpu']}, torch threads {meta['threads']}, load average "
        f"at start {meta['load']}. {meta['prompts']} prompts x 2 answers (greedy + top-k 20 / T 0.7) per step, "
        f"max {meta['max_new_tokens']} new tokens, {meta['ppo_epochs']} PPO epochs over minibatches of "
        f"{meta['mini_batch']}, LoRA r 4 on the top {meta['lora_top_layers']} layers (actor and critic); "
        f"{meta['steps']} timed steps after one warm-up step; each mode in a fresh process. Start: "
        f"{meta['start']}.", "",
        f"vLLM rollouts in {meta['rollout_dtype']}, eager; log-probs for the update come from the training model.", "",
        f"| model | mode | s/step | step time vs {meta['baseline']} | rollout tokens/s | vs {meta['baseline']} "
        "| update steps/s | answers x tokens | generate | score | rollout fwd | update |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|", *rows, ""])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--models", default="tiny-random,smollm2-135m-instruct")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--mini-batch", type=int, default=8)
    ap.add_argument("--ppo-epochs", type=int, default=4)
    ap.add_argument("--lora-top-layers", type=int, default=10)
    ap.add_argument("--modes", default=",".join(MODES), help="comma-separated: " + ", ".join(MODES))
    ap.add_argument("--adapter", default="", help="start from this SFT adapter (as the pipeline's PPO does)")
    ap.add_argument("--rollout-dtype", default="auto")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", 1)))
    ap.add_argument("--results", default=str(ROOT / "bench" / "RESULTS.md"), help="'' to skip")
    ap.add_argument("--one", nargs=3, help=argparse.SUPPRESS)   # internal: MODEL MODE JSON, one run
    args = ap.parse_args()
    if args.one:
        model, mode, dest = args.one
        with tempfile.TemporaryDirectory() as tmp:
            Path(dest).write_text(json.dumps(run(model, mode, args, Path(tmp))))
        return

    modes = args.modes.split(",")
    bad = [m for m in modes if m not in MODES]
    if bad:
        ap.error(f"--modes: unknown {bad}; choose from {list(MODES)}")
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models.split(","):
            for mode in modes:
                dest = Path(tmp) / f"{len(results)}.json"
                subprocess.run([sys.executable, __file__, *sys.argv[1:], "--one", model, mode, str(dest)], check=True)
                r = json.loads(dest.read_text())
                log(json.dumps(r))
                results.append(r)
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    meta = {"command": " ".join(["python bench/ppo.py", *map(shlex.quote, sys.argv[1:])]),
            "date": dt.date.today().isoformat(), "git": git, "cpu": platform.processor() or platform.machine(),
            "load": load, "threads": args.threads, "prompts": args.prompts, "max_new_tokens": args.max_new_tokens,
            "ppo_epochs": args.ppo_epochs, "rollout_dtype": args.rollout_dtype, "mini_batch": args.mini_batch, "lora_top_layers": args.lora_top_layers,
            "steps": args.steps, "baseline": modes[0],
            "start": f"the SFT adapter {args.adapter}" if args.adapter else "the base model"}
    text = markdown(meta, results)
    print(text)
    if args.results:
        write_section(Path(args.results), SECTION, text)


if __name__ == "__main__":
    main()
