"""SFT throughput: padded batches vs padding-free vs packing (TRL SFTTrainer + PEFT LoRA).

The same instruction rows (ml-100k I0-I3, shuffled at one seed) are trained on with three
collation modes of the same RecSFTConfig (trainers/sft.py):

  padded        each batch padded to its longest row (TRL's default)
  padding_free  a batch's rows concatenated into one row, position_ids restart per row;
                transformers' masking then keeps attention inside each row (sdpa on CPU)
  packing       best-fit-decreasing packing into ``max_length`` blocks (TRL's "bfd")

``tuned`` and ``tuned_bf16`` add what recalign's trainers run on a CPU (models/device.py,
``tune_cpu_training``: large allocations kept on the heap, TRL's fused LM head on the
completion positions only). Each mode runs in a fresh interpreter, since both tunings are
process state that a later mode would otherwise inherit.

Throughput is real (non-padding) tokens per second of training, counted by the Trainer
(``include_num_input_tokens_seen="non_padding"``) and timed from the end of the warm-up
steps to the end of training, so model load and dataset tokenisation are excluded. Each
mode runs ``--repeats`` times in alternating order; the best run counts (the machine is
shared). The final training loss of each mode is printed as a sanity check: the three see
the same rows, so their losses must be close.

    cd /work/main
    RECALIGN_ASSETS=/work/shared/assets RECALIGN_CACHE=/work/cache-recalign HF_HUB_OFFLINE=1 \\
        OMP_NUM_THREADS=1 /work/venv/bin/python bench/sft.py --model smollm2-135m-instruct

``--data DIR`` reuses a built instruction set; otherwise one is built in a temp dir (ml-100k,
a 1-epoch teacher: the labels' quality does not matter for throughput).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import shlex
import sys
import tempfile
import time
from pathlib import Path

from results import write_section  # bench/ is on sys.path when a script runs

ROOT = Path(__file__).resolve().parent.parent
SECTION = "## SFT on CPU: allocator and completion-only head, fresh process per mode"
MODES = {
    # TRL SFTTrainer as a user would start it on CPU: LoRA on every layer, padded batches, fp32
    "plain_trl": {"lora_top_layers": None},
    "padded": {},
    # TRL does not truncate padding-free batches; no ml-100k row is near max_length anyway
    "padding_free": {"padding_free": True, "max_length": None},
    "packing": {"packing": True, "packing_strategy": "bfd"},
    # padding-free with bf16 autocast: only on CPUs with AVX512-BF16 or AMX (skipped elsewhere)
    "padding_free_bf16": {"padding_free": True, "max_length": None, "cpu_bf16": True},
    # what recalign's trainers run: padding-free plus models/device.py's tune_cpu_training
    # (large blocks kept on the heap, LM head on completion positions only)
    "tuned": {"padding_free": True, "max_length": None, "_tuned": True},
    "tuned_bf16": {"padding_free": True, "max_length": None, "cpu_bf16": True, "_tuned": True},
}


LIMIT = 900           # real tokens/s: this CPU's bf16 limit for LoRA on SmolLM2's top 10 layers (DESIGN.md)


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def build_data(out: Path, max_users: int) -> Path:
    from recalign.data import RecDataset
    from recalign.data.prepare import PrepareOptions, prepare_dataset
    from recalign.tasks.builder import BuildConfig, build_dataset
    from recalign.teacher.config import TeacherTrainConfig
    from recalign.teacher.train import save_teacher, train_teacher

    data = prepare_dataset(out / "data", PrepareOptions("ml-100k"))
    ds = RecDataset.load(data)
    cfg = TeacherTrainConfig(epochs=1, patience=1)
    model, metrics = train_teacher(ds, cfg, log=lambda s: None)
    save_teacher(out / "teacher", model, metrics, cfg, ds)
    return build_dataset(data, out / "teacher", "I0,I1,I2,I3", out / "inst", BuildConfig(max_users=max_users))


def run_mode(args, mode: str, data: Path, workdir: Path) -> dict:
    import torch
    from transformers import TrainerCallback

    from trl import SFTTrainer

    from recalign.models import load_model
    from recalign.trainers import sft
    from recalign.trainers.common import lora_config

    class Clock(TrainerCallback):
        def __init__(self):
            self.t0 = self.tok0 = None

        def on_step_end(self, a, state, control, **kw):
            if state.global_step == args.warmup:
                self.t0, self.tok0 = time.perf_counter(), state.num_input_tokens_seen
                self.ru0 = resource.getrusage(resource.RUSAGE_SELF)

    cfg = sft.RecSFTConfig(
        model=args.model, data=str(data), output_dir=str(workdir / mode), seed=args.seed,
        max_train_samples=args.rows, per_device_train_batch_size=args.batch_size,
        max_steps=args.warmup + args.steps, logging_steps=1,
        save_strategy="no", report_to=[], include_num_input_tokens_seen="non_padding", disable_tqdm=True,
        **{"max_length": args.max_length, "lora_top_layers": args.lora_top_layers,
           **{k: v for k, v in MODES[mode].items() if not k.startswith("_")}})
    clock = Clock()
    if MODES[mode].get("_tuned"):
        from recalign.models.device import tune_cpu_training

        log(f"tune_cpu_training: {tune_cpu_training()}")
    model, tok = load_model(cfg.model)
    tok.padding_side = "right"
    train_rows, _ = sft.load_rows(cfg)
    trainer = SFTTrainer(model=model, args=cfg, train_dataset=train_rows, processing_class=tok,
                             peft_config=lora_config(cfg, model), callbacks=[clock])
    trainer.train()
    seconds = time.perf_counter() - clock.t0
    ru = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (ru.ru_utime - clock.ru0.ru_utime) + (ru.ru_stime - clock.ru0.ru_stime)
    sys_share = (ru.ru_stime - clock.ru0.ru_stime) / cpu if cpu else 0.0
    tokens = int(trainer.state.num_input_tokens_seen - clock.tok0)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    del trainer, model
    torch.cuda.empty_cache() if torch.cuda.is_available() else None
    return {"mode": mode, "seconds": seconds, "tokens": tokens, "tokens_per_s": tokens / seconds,
            "steps_per_s": args.steps / seconds, "sys_share": sys_share, "loss_last5": sum(losses[-5:]) / len(losses[-5:]),
            "losses": losses}


def markdown(meta: dict, best: dict) -> str:
    ref = "plain_trl" if "plain_trl" in best else next(iter(best))
    base = best[ref]["tokens_per_s"]
    rows = [f"| {m} | {r['tokens_per_s']:.0f} | {r['steps_per_s']:.3f} | {r['tokens'] / meta['steps']:.0f} "
            f"| {r['tokens_per_s'] / base:.2f}x | {r['tokens_per_s'] / LIMIT:.0%} | {r['sys_share']:.0%} "
            f"| {r['loss_last5']:.3f} |"
            for m, r in best.items()]
    loss_rows = []
    for a_mode, b_mode, what in (("padding_free", "padding_free_bf16", "bf16 autocast against fp32"),
                                 ("padding_free", "tuned", "tuned against untuned, fp32"),
                                 ("padding_free", "tuned_bf16", "tuned bf16 against untuned fp32")):
        if a_mode not in best or b_mode not in best:
            continue
        a, b = best[a_mode]["losses"], best[b_mode]["losses"]
        diff = [abs(x - y) for x, y in zip(a, b)]
        loss_rows += [f"Loss curve, {what} on the same rows and order (padding-free, same LoRA): mean "
                      f"|difference| per step {sum(diff) / len(diff):.4f} over {len(diff)} steps (largest "
                      f"{max(diff):.4f}); {a_mode} {', '.join(f'{x:.3f}' for x in a)}; "
                      f"{b_mode} {', '.join(f'{x:.3f}' for x in b)}.", ""]
    return "\n".join([
        SECTION, "",
        f"Command: `{meta['command']}`", "",
        f"Date {meta['date']}, git {meta['git']}, {meta['cpu']}, torch threads {meta['threads']}, "
        f"load average at start {meta['load']}. Model `{meta['model']}`, LoRA on the top "
        f"{meta['lora_top_layers']} layers, batch {meta['batch_size']}, max_length {meta['max_length']}, "
        f"{meta['warmup']} warm-up + {meta['steps']} timed steps, best of {meta['repeats']}.", "",
        f"| mode | real tokens/s | steps/s | real tokens/step | vs {ref} | share of the {LIMIT} tokens/s limit "
        "| system time (share of CPU) | loss (last 5 steps) |",
        "|---|---|---|---|---|---|---|---|", *rows, "", *loss_rows,
        f"Goal (issue: speed): >= 500 real tokens/s on 2 idle cores, >= 5x {ref}, loss curve unchanged.", ""])


def run_in_fresh_process(mode: str, data: Path, workdir: Path) -> dict:
    """One mode in its own interpreter: glibc's heap and TRL's patched head are process state,
    so a mode run after another would inherit the first one's (measured: an untuned mode ran
    1.7x faster after a tuned one in the same process)."""
    import subprocess

    workdir.mkdir(parents=True, exist_ok=True)
    result = workdir / f"{mode}.json"
    subprocess.run([sys.executable, __file__, *sys.argv[1:], "--one-mode", mode, "--data", str(data),
                    "--workdir", str(workdir), "--result-json", str(result)], check=True)
    return json.loads(result.read_text())


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--data", help="directory from `recalign data build` (default: build one)")
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--lora-top-layers", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", 1)))
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--results", default=str(ROOT / "bench" / "RESULTS.md"), help="'' to skip")
    ap.add_argument("--one-mode", help=argparse.SUPPRESS)      # internal: run one mode, write --result-json
    ap.add_argument("--workdir", help=argparse.SUPPRESS)
    ap.add_argument("--result-json", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one_mode:
        import torch

        torch.set_num_threads(args.threads)
        r = run_mode(args, args.one_mode, Path(args.data), Path(args.workdir))
        Path(args.result_json).write_text(json.dumps(r))
        return

    import subprocess

    import torch

    torch.set_num_threads(args.threads)
    modes = args.modes.split(",")
    if not (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()) and not torch.cuda.is_available():
        dropped = [m for m in modes if MODES[m].get("cpu_bf16")]
        if dropped:
            log(f"note: this CPU ({torch.backends.cpu.get_cpu_capability()}) has no AVX512-BF16/AMX, so bf16 "
                f"autocast would be emulated; skipping {', '.join(dropped)}")
            modes = [m for m in modes if m not in dropped]
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(args.data) if args.data else build_data(Path(tmp), max_users=400)
        runs: dict[str, list] = {m: [] for m in modes}
        for rep in range(args.repeats):
            for m in (modes if rep % 2 == 0 else modes[::-1]):
                r = run_in_fresh_process(m, data, Path(tmp) / f"rep{rep}")
                log(json.dumps(r))
                runs[m].append(r)
    best = {m: max(rs, key=lambda r: r["tokens_per_s"]) for m, rs in runs.items()}
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                         text=True).stdout.strip()
    meta = {"command": " ".join(["python bench/sft.py", *map(shlex.quote, sys.argv[1:])]),
            "date": dt.date.today().isoformat(), "git": git, "cpu": platform.processor() or platform.machine(),
            "threads": args.threads, "load": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
            **{k: getattr(args, k) for k in ("model", "lora_top_layers", "batch_size", "max_length",
                                             "warmup", "steps", "repeats")}}
    text = markdown(meta, best)
    print(text)
    ref = "plain_trl" if "plain_trl" in best else next(iter(best))
    for m in best:
        print(f"{m}: {best[m]['tokens_per_s'] / best[ref]['tokens_per_s']:.2f}x {ref} tokens/s")
    if args.results:
        write_section(Path(args.results), SECTION, text)


if __name__ == "__main__":
    main()
