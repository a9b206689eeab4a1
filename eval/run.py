"""``recalign eval``: generate answers for instruction test rows, score them, write a report.

Output directory: ``generations.jsonl`` (one line per row: task, user, target, prompt,
answer, parsed items), ``metrics.json`` (exact and fuzzy per task, the teacher on the same
rows, retention, provenance), ``report.md`` and ``plots/*.png``.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from recalign.data import DataError, RecDataset
from recalign.data.util import atomic_dir, card_path, check_out, provenance, sha256_file, write_json

from recalign.rewards.reclm import row_rule

from .backends import Grounding, Sampling, make_backend
from .metrics import evaluate


@dataclass
class EvalConfig:
    data: str                                # directory from `recalign data build`
    out: str
    model: str = "smollm2-135m-instruct"
    adapter: str | None = None
    tasks: str = "I0,I1,I2"
    split: str = "test"
    limit: int | dict | None = None          # rows per task; a dict gives some tasks their own n:
                                             # {"I0": 200, "default": 100}
    grounded: bool = False
    grounded_strict: bool = True             # grounding also writes the numbering: the whole answer is
                                             # a numbered list of real titles (False: only marker-led lines)
    beam: int = 0                            # with grounded: 0 = greedy through the title trie; N = rank
                                             # titles by a grounded beam search of width N (eval/beam.py,
                                             # D3 scoring; Hugging Face generate, whatever the backend)
    beam_length_penalty: float = 0.0         # D3: none (transformers' default 1.0 favours long titles)
    backend: str = "auto"                   # vllm when it works here, else hf (with a note)
    dtype: str = "auto"                      # auto: float32 on CPU (faster there, bench/RESULTS.md), bfloat16
                                             # on GPU with vLLM
    enforce_eager: bool | None = None        # vLLM without torch.compile; None: eager when the run is
                                             # short (see eager_for), compiled (cached) when it is long
    max_new_tokens: int = 256
    batch_size: int = 16
    gpu_memory_utilization: float = 0.9      # vLLM on GPU: share of the GPU for weights + KV cache
    tensor_parallel_size: int = 1            # vLLM on GPU: GPUs one engine spans
    teacher: str | None = None               # default: the teacher recorded in the data card
    mmlu: str | None = None                  # MMLU folder (retention), off when None
    gsm8k: str | None = None                 # GSM8K test.jsonl (retention), off when None
    retention_limit: int | dict | None = 100    # questions per check; a dict gives each its own: {mmlu: 500, gsm8k: 200}
    seed: int = 0
    name: str | None = None                  # label in reports (default: adapter dir or "base")
    protocol: str = "recalign"               # scoring rules: recalign | reclm-gen (rewards/protocol.py)
    parser: str | None = None                # one protocol option overridden: lenient | strict
    rescore: str | None = None               # an eval output dir: score its answers again (same rows),
                                             # e.g. under another protocol; nothing is generated


def _limits(limit, wanted: list[str], known: set[str]) -> dict[str, int | None]:
    if not isinstance(limit, dict):
        return {t: limit for t in wanted}
    unknown = [k for k in limit if k != "default" and k not in known]
    if unknown:
        raise DataError(f"eval limit: {unknown[0]!r} is not a task ({', '.join(sorted(known))}) or 'default'")
    return {t: limit.get(t, limit.get("default")) for t in wanted}


def _check_retention(cfg: EvalConfig):
    """Retention inputs are read and written as lm-eval tasks before any generation, so a typo or
    a bad file costs seconds, not an eval. Returns the tasks (or None when retention is off)."""
    lim = cfg.retention_limit
    if isinstance(lim, dict):
        bad = [k for k in lim if k not in ("mmlu", "gsm8k")]
        if bad:
            raise DataError(f"eval retention_limit: {bad[0]!r} is not a check; use {{mmlu: N, gsm8k: M}}")
        vals = list(lim.values())
    else:
        vals = [lim]
    if any(v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1) for v in vals):
        raise DataError(f"eval retention_limit {lim!r}: a positive number of questions (or none for all)")
    from .retention import _looks_like_hub_id, write_tasks

    for name, path in (("mmlu", cfg.mmlu), ("gsm8k", cfg.gsm8k)):
        if path and not Path(str(path)).expanduser().exists() and not _looks_like_hub_id(str(path)):
            raise DataError(f"--{name} {path}: no such file or folder (e.g. ../shared/data/{name})")
    if not (cfg.mmlu or cfg.gsm8k):
        return None
    limits = lim if isinstance(lim, dict) else {"mmlu": lim, "gsm8k": lim}
    tasks = write_tasks(None, cfg.mmlu or None, cfg.gsm8k or None, mmlu_limit=limits.get("mmlu"),
                        gsm8k_limit=limits.get("gsm8k"))
    for check, got in (("mmlu", len(tasks.mmlu)), ("gsm8k", len(tasks.gsm8k))):
        want = limits.get(check)
        if getattr(cfg, check) and want is not None and got < want:
            print(f"warning: retention {check}: {got} questions available, fewer than the limit {want}; "
                  f"using all {got}", flush=True)
    return tasks


def task_specs(data: str | Path) -> dict:
    """The built-in task specs, updated with the ones the data was built with (its card:
    a user's own tasks included)."""
    from recalign.tasks.spec import load_specs, specs_from_card

    specs = load_specs()
    card = Path(data) / "card.json"
    if card.is_file():
        specs.update(specs_from_card(json.loads(card.read_text())))
    return specs


def load_rows(data: str | Path, split: str, tasks: str, limit: int | dict | None) -> list[dict]:
    from recalign.tasks.spec import resolve_tasks

    specs = task_specs(data)
    wanted = [s.task for s in resolve_tasks(tasks, specs)]
    lim = _limits(limit, wanted, set(specs))
    path = Path(data) / f"{split}.jsonl"
    if not path.is_file():
        raise DataError(f"{path}: not found; build instruction data with `recalign data build --out {data}`")
    per_task: dict[str, list[dict]] = {t: [] for t in wanted}
    with open(path, encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            bucket = per_task.get(row["task"])
            if bucket is not None and (lim[row["task"]] is None or len(bucket) < lim[row["task"]]):
                bucket.append(row)
    rows = [r for t in wanted for r in per_task[t]]
    short = [f"{t}: {len(per_task[t])} < {lim[t]}" for t in wanted
             if lim[t] is not None and 0 < len(per_task[t]) < lim[t]]
    if short:
        print(f"warning: {path} has fewer rows than the eval limit for some tasks; using all there are "
              f"({', '.join(short)})", flush=True)
    if not rows:
        raise DataError(f"{path}: no {split} rows for tasks {', '.join(wanted)}")
    return rows


EAGER_TOKENS = 40_000     # below this many answer tokens a run is faster uncompiled (bench/RESULTS.md)


def eager_for(cfg: EvalConfig, n_rows: int) -> bool:
    """vLLM's torch.compile start-up (~1-2 min on 2 cores, cached under ~/.cache/vllm) pays
    only for long runs: short ones (quick profile, tests) run eagerly.

    >>> eager_for(EvalConfig(data="d", out="o", max_new_tokens=128), 30)
    True
    """
    if cfg.enforce_eager is not None:
        return cfg.enforce_eager
    return n_rows * cfg.max_new_tokens < EAGER_TOKENS


def decoding(cfg: EvalConfig) -> str:
    """``free``, ``grounded`` (greedy through the title trie) or ``beam`` (grounded beam search)."""
    return "beam" if cfg.grounded and cfg.beam else "grounded" if cfg.grounded else "free"


def _reference(name: str, i0: list[dict], top: list, **extra) -> dict:
    from recalign.data.stats import bootstrap_ci

    from recalign.teacher.metrics import position_scores

    pos = [list(tp).index(r["target"]) if r["target"] in tp else -1 for r, tp in zip(i0, top)]
    scores = [position_scores(p) for p in pos]
    hrs, ndcgs = [x["HR"] for x in scores], [x["NDCG"] for x in scores]
    ci = {"HR": bootstrap_ci(hrs), "NDCG": bootstrap_ci(ndcgs)}
    return {"name": name, "HR": float(np.mean(hrs)), "NDCG": float(np.mean(ndcgs)), "n_samples": len(i0), **extra,
            "intervals": {m: [c["lo"], c["hi"]] for m, c in ci.items()},
            "per_row": [{"key": row_key(r), "HR": h, "NDCG": n} for r, h, n in zip(i0, hrs, ndcgs)]}


def teacher_on_rows(teacher_dir: str | Path, ds: RecDataset, rows: list[dict], k: int = 10) -> dict | None:
    """The teacher's HR@10/NDCG@10 on the same I0 rows (same 10-item windows): the reference."""
    from recalign.teacher import Teacher

    i0 = [r for r in rows if row_rule(r) == "I0"]
    if not i0:
        return None
    from recalign.teacher.config import TEACHER_LABELS

    t = Teacher.load(teacher_dir, data=ds)
    rep = t.model.cfg.item_repr
    return _reference(TEACHER_LABELS[rep], i0, t.topk([r["history"] for r in i0], k=k), teacher=str(teacher_dir),
                      item_repr=rep)


def popularity_on_rows(ds: RecDataset, rows: list[dict], k: int = 10) -> dict | None:
    """The most-popular baseline on the same I0 rows: the ``k`` items with the most training
    interactions, the row's history window masked (as for the teacher)."""
    i0 = [r for r in rows if row_rule(r) == "I0"]
    if not i0:
        return None
    counts = np.bincount(np.concatenate(ds.train_sequences()), minlength=ds.n_items + 1)
    order = [int(i) for i in np.argsort(-counts[1:], kind="stable") + 1]
    top = []
    for r in i0:
        seen = set(r["history"])
        top.append([i for i in order[:k + len(seen)] if i not in seen][:k])
    return _reference("popularity", i0, top)


CI_METRICS = ("HR", "NDCG", "TCP", "CPA", "CorrectCount", "RepeatItem_rate", "NonExist_rate", "InHistory_rate")


def row_key(row: dict) -> str:
    """Identifies a test row across runs, so that comparisons pair the same rows."""
    return f"{row['task']}|{row['user_id']}|{row['target']}|{','.join(map(str, row['history']))}"


def intervals_and_rows(rows: list[dict], samples: list[dict]) -> tuple[dict, list[dict]]:
    """Per task (and "all"): a 95% bootstrap interval of each metric; per row: the values
    the paired comparisons need (see :mod:`recalign.data.stats`)."""
    from recalign.data.stats import bootstrap_ci

    scored = [r for r in rows if row_rule(r)]
    per_row = []
    for r, s in zip(scored, samples):
        rec = {"key": row_key(r), "task": r["task"], **{m: s.get(m) for m in CI_METRICS}}
        rec["Errors_rate"] = sum(s.get(m) or 0 for m in ("RepeatItem_rate", "NonExist_rate", "InHistory_rate"))
        per_row.append(rec)
    out: dict[str, dict] = {}
    for task in sorted({p["task"] for p in per_row}) + ["all"]:
        group = [p for p in per_row if task == "all" or p["task"] == task]
        out[task] = {}
        for m in (*CI_METRICS, "Errors_rate"):
            c = bootstrap_ci([p[m] for p in group])
            if c["n"]:
                out[task][m] = [c["lo"], c["hi"]]
    return out, per_row


def run_eval(cfg: EvalConfig, overwrite: bool = False) -> Path:
    check_out(cfg.out, overwrite, _inputs(cfg))        # before generation, not after it
    rows = load_rows(cfg.data, cfg.split, cfg.tasks, cfg.limit)
    card = json.loads((Path(cfg.data) / "card.json").read_text()) if (Path(cfg.data) / "card.json").is_file() else {}
    made_at = card.get("made_at") or {}
    data_dir = card_path(card.get("config", {}).get("data"), cfg.data, made_at.get("data"))
    if not data_dir or not Path(data_dir).is_dir():
        raise DataError(f"{cfg.data}/card.json does not name an existing dataset directory; rebuild with "
                        "`recalign data build`")
    ds = RecDataset.load(data_dir)
    from recalign.rewards.protocol import get_protocol

    proto = get_protocol(cfg.protocol, parser=cfg.parser)
    if cfg.rescore:
        return _rescore(cfg, rows, ds, card, proto, overwrite)
    if cfg.beam and not cfg.grounded:
        raise DataError("--beam N ranks catalog titles: it needs --grounded")
    if cfg.beam < 0:
        raise DataError(f"--beam {cfg.beam}: the beam width must be 0 (off) or positive")
    ret_tasks = _check_retention(cfg)
    kind = "hf" if cfg.beam else cfg.backend     # beam search runs on transformers' generate
    if cfg.beam and cfg.backend == "vllm":
        print("note: --beam runs on Hugging Face generate (vLLM's beam search takes no logits processor)",
              flush=True)
    backend = make_backend(kind, cfg.model, cfg.adapter, batch_size=cfg.batch_size,
                           dtype=cfg.dtype, enforce_eager=eager_for(cfg, len(rows)),
                           gpu_memory_utilization=cfg.gpu_memory_utilization,
                           tensor_parallel_size=cfg.tensor_parallel_size)
    grounding = None
    if cfg.grounded:
        grounding = Grounding(ds.catalog.titles[1:], [r["history"] for r in rows], strict=cfg.grounded_strict,
                              max_items=[r["item_count"] or 10 for r in rows])
    t0 = time.perf_counter()
    if cfg.beam:
        answers = backend.beam_lists([r["prompt"] for r in rows], grounding, width=cfg.beam,
                                     length_penalty=cfg.beam_length_penalty)
    else:
        answers = backend.generate([r["prompt"] for r in rows], Sampling(cfg.max_new_tokens, seed=cfg.seed),
                                   grounding)
    gen_s = time.perf_counter() - t0
    backend_kind = getattr(backend, "kind", cfg.backend)
    name = cfg.name or backend.name
    if hasattr(backend, "close"):
        backend.close()             # an in-process engine holds its KV cache until closed
    del backend
    retention = {}
    if ret_tasks is not None:
        # lm-eval's own model classes (what its CLI runs), on the backend the answers came from
        from .retention import run_retention

        retention = run_retention(cfg.model, cfg.adapter, backend="vllm" if backend_kind == "vllm" else "hf",
                                  tasks=ret_tasks, dtype=cfg.dtype, batch_size=cfg.batch_size,
                                  gpu_memory_utilization=cfg.gpu_memory_utilization,
                                  tensor_parallel_size=cfg.tensor_parallel_size, seed=cfg.seed)
    return _score_and_write(cfg, rows, answers, ds, card, proto, overwrite, name=name,
                            backend=backend_kind, gen_s=gen_s, retention=retention)


def _score_and_write(cfg: EvalConfig, rows, answers, ds, card, proto, overwrite, *, name, backend, gen_s,
                     retention, extra: dict | None = None) -> Path:
    from .report import write_report

    full = {}
    if ds.users is not None:
        by_id = dict(zip(ds.users["user_id"].astype(str), ds.users["user_idx"]))
        cut = {"test": 1, "valid": 2}.get(cfg.split, 2)
        full = {r["user_id"]: ds.sequences[by_id[r["user_id"]]][:-cut] for r in rows if r["user_id"] in by_id}
    res = evaluate(rows, answers, ds.catalog, fuzzy=True, return_samples=True, parser=proto.parser,
                   tcp_minus=proto.tcp_minus,
                   full_histories=[full.get(r["user_id"]) for r in rows])
    _keep_task_metrics(res, cfg.data)
    intervals, per_row = intervals_and_rows(rows, res["samples_exact"])
    judge = None
    i0 = [(r, a) for r, a in zip(rows, answers) if row_rule(r) == "I0"]
    if i0 and ds.ratings is not None:
        from recalign.rewards import judge_ratings, parse_list

        judge = judge_ratings(ds, [r for r, _ in i0], [parse_list(a, ds.catalog) for _, a in i0])
        judge.pop("per_list")
    teacher_dir = cfg.teacher or card_path(card.get("config", {}).get("teacher"), cfg.data,
                                           (card.get("made_at") or {}).get("teacher"))
    teacher = teacher_on_rows(teacher_dir, ds, rows) if teacher_dir and Path(teacher_dir).is_dir() else None
    popularity = popularity_on_rows(ds, rows)
    metrics = {
        "name": name, "model": cfg.model, "adapter": cfg.adapter, "backend": backend, "protocol": proto.as_dict(),
        "grounded": cfg.grounded, "grounded_strict": cfg.grounded_strict if cfg.grounded else None,
        "decoding": decoding(cfg),
        "split": cfg.split, "n_rows": len(rows), "rows_sha256": _rows_hash(rows),
        "exact": res["exact"], "fuzzy": res["fuzzy"], "intervals": intervals, "per_row": per_row,
        "teacher": teacher, "popularity": popularity, "retention": retention,
        "judge": judge,
        "generation_seconds": round(gen_s, 1),
        "by_history_length": _hr_by_history(rows, res["samples_exact"]),
        **(extra or {}),
    }
    with atomic_dir(cfg.out, overwrite=overwrite, inputs=_inputs(cfg)) as tmp:
        with open(tmp / "generations.jsonl", "w", encoding="utf-8") as f:
            samples = iter(res["samples_exact"])
            for r, a in zip(rows, answers):
                scored = row_rule(r) is not None
                s = next(samples) if scored else None
                f.write(json.dumps({"task": r["task"], "user_id": r["user_id"], "target": r["target"],
                                    "category": r["category"], "n": r["n"], "item_count": r["item_count"],
                                    "prompt": r["prompt"][-1]["content"], "answer": a,
                                    "metrics": s}, ensure_ascii=False) + "\n")
        metrics["provenance"] = provenance(
            "eval", asdict(cfg), seed=cfg.seed,
            inputs={f"{cfg.split}.jsonl": sha256_file(Path(cfg.data) / f"{cfg.split}.jsonl")})
        write_json(tmp / "metrics.json", metrics)
        write_report(tmp, [metrics])
    return Path(cfg.out)


def _keep_task_metrics(res: dict, data: str | Path) -> None:
    """Each task's table holds the metrics its task file lists (``metrics:``); "all" keeps every one."""
    specs = task_specs(data)
    for mode in ("exact", "fuzzy"):
        for task, agg in res.get(mode, {}).items():
            spec = specs.get(task)
            if task == "all" or spec is None or not spec.metrics:
                continue
            keep = set(spec.metric_keys()) | {"n_samples", "K", "n_items"}
            for k in [k for k in agg if k not in keep and not (k.startswith("n_") and k[2:] in keep)]:
                del agg[k]


def _rescore(cfg: EvalConfig, rows, ds, card, proto, overwrite) -> Path:
    """Score the answers of an earlier eval (``cfg.rescore``) on the same rows, under
    ``proto``: a protocol comparison costs no generation."""
    src = Path(cfg.rescore)
    gens_path, metrics_path = src / "generations.jsonl", src / "metrics.json"
    if not gens_path.is_file() or not metrics_path.is_file():
        raise DataError(f"--rescore {src}: no generations.jsonl/metrics.json there (an output of `recalign eval`)")
    old = json.loads(metrics_path.read_text())
    gens = [json.loads(x) for x in gens_path.read_text(encoding="utf-8").splitlines() if x.strip()]
    mismatch = len(gens) != len(rows) or any(
        (g["task"], g["user_id"], g["target"]) != (r["task"], r["user_id"], r["target"]) for g, r in zip(gens, rows))
    if mismatch or (old.get("rows_sha256") and old["rows_sha256"] != _rows_hash(rows)):
        raise DataError(f"--rescore {src}: its {len(gens)} answers are not for the {len(rows)} rows selected by "
                        f"--data {cfg.data} --tasks {cfg.tasks} --limit {cfg.limit}; use that run's settings")
    extra = {k: old[k] for k in ("model", "adapter", "grounded", "grounded_strict", "decoding") if k in old}
    return _score_and_write(cfg, rows, [g["answer"] for g in gens], ds, card, proto, overwrite,
                            name=cfg.name or old.get("name"), backend=old.get("backend"),
                            gen_s=old.get("generation_seconds") or 0.0, retention=old.get("retention") or {},
                            extra={**extra, "rescored_from": str(src)})


def _inputs(cfg: EvalConfig) -> list:
    """What ``--overwrite`` must never delete."""
    return [cfg.data, cfg.adapter, cfg.rescore, cfg.teacher]


def _rows_hash(rows: list[dict]) -> str:
    import hashlib

    return hashlib.sha256("\n".join(row_key(r) for r in rows).encode()).hexdigest()


def _hr_by_history(rows: list[dict], samples: list[dict]) -> dict[str, dict]:
    """HR@K of I0 rows grouped by prompt-history length (1-3, 4-6, 7-9, 10)."""
    scored = [r for r in rows if row_rule(r)]
    bins: dict[str, list[int]] = {}
    for r, s in zip(scored, samples):
        if row_rule(r) != "I0" or s.get("HR") is None:
            continue
        n = len(r["history"])
        key = "1-3" if n <= 3 else "4-6" if n <= 6 else "7-9" if n <= 9 else "10+"
        bins.setdefault(key, []).append(s["HR"])
    return {k: {"HR": float(np.mean(v)), "n": len(v)} for k, v in sorted(bins.items())}
