"""Evaluation speed: rows/s of `recalign eval`'s generation on HF vs vLLM, base vs adapter,
and for an adapter on vLLM: served through ``LoRARequest`` vs merged into a cached copy.

Each configuration runs in its own subprocess (vLLM binds threads for its process) on the
same instruction test rows (``--tasks``, ``--limit`` rows per task), greedy, grounded or
free (``--grounded``). Start-up (model load, merge, engine build) is timed apart from
generation. Greedy texts of each configuration are compared with the first one of the same
model (base or adapter) as a sanity check.

    cd /work/main
    RECALIGN_ASSETS=/work/shared/assets RECALIGN_CACHE=/work/cache-recalign HF_HUB_OFFLINE=1 \\
        /work/venv/bin/python bench/eval_backends.py --data runs/x/inst --adapter runs/x/sft
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results import write_section  # bench/ is on sys.path when a script runs

ROOT = Path(__file__).resolve().parent.parent
SECTION = "## Evaluation generation: HF vs vLLM, base vs adapter (LoRARequest vs merged)"
CONFIGS = {   # name: (backend, uses adapter, vLLM lora mode, dtype)
    "hf base": ("hf", False, None, "float32"),
    "vllm base": ("vllm", False, None, "float32"),
    "vllm base (bfloat16)": ("vllm", False, None, "bfloat16"),
    "hf adapter": ("hf", True, None, "float32"),
    "vllm adapter (LoRARequest)": ("vllm", True, "request", "float32"),
    "vllm adapter (merged)": ("vllm", True, "merge", "float32"),
}


def worker(spec: dict) -> dict:
    from recalign.data import RecDataset
    from recalign.eval.backends import Grounding, Sampling, make_backend
    from recalign.eval.run import load_rows

    rows = load_rows(spec["data"], "test", spec["tasks"], spec["limit"])
    from recalign.data.util import card_path

    card = json.loads((Path(spec["data"]) / "card.json").read_text())
    ds = RecDataset.load(card_path(card["config"]["data"], spec["data"]))
    kw = {"dtype": spec["dtype"], "batch_size": 32}
    if spec["backend"] == "vllm":
        kw.update(enforce_eager=spec["eager"], lora=spec["lora"] or "auto")
    t0 = time.perf_counter()
    b = make_backend(spec["backend"], spec["model"], spec["adapter"], **kw)
    start = time.perf_counter() - t0
    g = None
    if spec["grounded"]:
        g = Grounding(ds.catalog.titles[1:], [r["history"] for r in rows], strict=True,
                      max_items=[r["item_count"] or 10 for r in rows])
    t1 = time.perf_counter()
    texts = b.generate([r["prompt"] for r in rows], Sampling(spec["max_new_tokens"]), g)
    gen = time.perf_counter() - t1
    return {"start_s": start, "gen_s": gen, "rows": len(rows), "rows_per_s": len(rows) / gen, "texts": texts,
            "load": " ".join(Path("/proc/loadavg").read_text().split()[:3])}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--adapter", required=True)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--tasks", default="I0")
    ap.add_argument("--limit", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--grounded", default="false,true")
    ap.add_argument("--eager", action="store_true", help="vLLM enforce_eager")
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--results", default=str(ROOT / "bench" / "RESULTS.md"), help="'' to skip")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        spec = json.loads(Path(args.worker).read_text())
        Path(spec["out"]).write_text(json.dumps(worker(spec)))
        return
    load0 = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    res = []
    with tempfile.TemporaryDirectory() as tmp:
        for grounded in [g == "true" for g in args.grounded.split(",")]:
            for name in args.configs.split(","):
                backend, uses, lora, dtype = CONFIGS[name]
                spec = {"data": args.data, "model": args.model, "adapter": args.adapter if uses else None,
                        "backend": backend, "lora": lora, "dtype": dtype, "eager": args.eager,
                        "tasks": args.tasks, "limit": args.limit, "max_new_tokens": args.max_new_tokens,
                        "grounded": grounded, "out": f"{tmp}/out.json"}
                Path(f"{tmp}/spec.json").write_text(json.dumps(spec))
                subprocess.run([sys.executable, __file__, "--data", args.data, "--adapter", args.adapter,
                                "--worker", f"{tmp}/spec.json"], check=True, cwd=ROOT)
                r = json.loads(Path(f"{tmp}/out.json").read_text())
                r.update(name=name, grounded=grounded)
                print(json.dumps({k: v for k, v in r.items() if k != "texts"}), file=sys.stderr, flush=True)
                res.append(r)
    lines = []
    for r in res:
        ref = next(x for x in res if x["grounded"] == r["grounded"] and ("adapter" in x["name"]) == ("adapter" in r["name"]))
        hf = next((x for x in res if x["grounded"] == r["grounded"] and x["name"] == "hf base"), None)
        same = sum(a == b for a, b in zip(r["texts"], ref["texts"]))
        lines.append(f"| {'grounded' if r['grounded'] else 'free'} | {r['name']} | {r['start_s']:.0f} | {r['gen_s']:.1f} "
                     f"| {r['rows_per_s']:.2f} | {r['rows_per_s'] / hf['rows_per_s']:.2f}x | "
                     f"{same}/{r['rows']} vs {ref['name']} | {r['load']} |" if hf else "")
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    text = "\n".join([
        SECTION, "",
        f"Command: `{' '.join(['python bench/eval_backends.py', *map(shlex.quote, sys.argv[1:])])}`", "",
        f"Date {dt.date.today().isoformat()}, git {git}, {platform.processor() or platform.machine()}, load average "
        f"at start {load0}. {args.limit} test rows per task of {args.tasks}, greedy, max {args.max_new_tokens} new "
        f"tokens; HF and vLLM in float32 unless named (HF batch 32), {'eager' if args.eager else 'compiled'}. Start-up = model "
        "load (+ merge on first use, + engine build); rows/s = generation only.", "",
        "| decoding | configuration | start-up s | generation s | rows/s | vs hf base | same greedy text | load |",
        "|---|---|---|---|---|---|---|---|", *lines, ""])
    print(text)
    if args.results:
        write_section(Path(args.results), SECTION, text)


if __name__ == "__main__":
    main()
