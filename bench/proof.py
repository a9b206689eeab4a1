"""Collect a finished proof run into bench/results/proof/ (small files only).

    recalign pipeline --recipe recipes/ml100k-smollm2.yaml --profile proof --set out=runs/proof
    python bench/proof.py --run runs/proof --log runs/proof.log

Writes ``report.md`` (the pipeline's report), ``summary.json`` (every eval's metrics without
the per-row values, each stage's seconds and settings, the recipe), ``stages.md`` (wall time
per stage) and, with ``--protocols``, rescoring of the free-decoding evals under the
``reclm-gen`` protocol (no generation) for the side-by-side table.
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

OUT = Path(__file__).resolve().parent / "results" / "proof"


def stage_times(run: Path) -> list[tuple[str, float]]:
    marks = sorted(run.glob("*.stage.json"), key=lambda p: p.stat().st_mtime)
    return [(p.name[:-len(".stage.json")], json.loads(p.read_text())["seconds"]) for p in marks]


def rescore(run: Path, name: str, recipe: dict, protocol: str) -> Path:
    """The answers of ``run/name`` scored again under ``protocol`` (same rows, no generation)."""
    from recalign.eval.run import EvalConfig, run_eval

    ev = recipe.get("eval") or {}
    src = run / name
    m = json.loads((src / "metrics.json").read_text())
    out = run / f"{name}-{protocol}"
    if not out.is_dir():
        tasks = ev.get("grounded_tasks") if m.get("grounded") and ev.get("grounded_tasks") else ev.get("tasks")
        run_eval(EvalConfig(data=str(run / "inst"), out=str(out), tasks=tasks or "I0,I1,I2", limit=ev.get("limit"),
                            rescore=str(src), protocol=protocol, name=m["name"]))
    return out


def _ci(m: dict, task: str, key: str, pct: bool) -> str:
    v = (m["exact"].get(task) or {}).get(key)
    ci = (m.get("intervals") or {}).get(task, {}).get(key)
    if v is None:
        return "–"
    if pct:
        return f"{100 * v:.1f}% [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else f"{100 * v:.1f}%"
    return f"{v:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else f"{v:.3f}"


def headline(evals: dict[str, dict]) -> str:
    """The README table: per model and decoding, I0 HR/NDCG@10 (n = the I0 rows), and over
    all tasks CorrectCount and Repeat+NonExist+InHistory; the baselines on the same I0 rows."""
    lines = ["| model | decoding | I0 HR@10 | I0 NDCG@10 | CorrectCount (tasks evaluated) | Repeat+NonExist+InHistory@10 | "
             "I1+ TCP@10 | I1- TCP@10 |", "|---|---|---|---|---|---|---|---|"]
    ref = None
    order = {"base": 0, "sft": 1}
    decs = {"free": 0, "grounded": 1, "beam": 2}
    items = sorted(evals.items(), key=lambda kv: (order.get(kv[1]["name"], 2), kv[1]["name"],
                                                   decs.get(kv[1].get("decoding") or "free", 0)))
    for name, m in items:
        if m.get("rescored_from"):
            continue
        dec = m.get("decoding") or ("grounded" if m.get("grounded") else "free")
        allm = m["exact"].get("all", {})
        err = sum(allm.get(k) or 0 for k in ("RepeatItem_rate", "NonExist_rate", "InHistory_rate"))
        eci = (m.get("intervals") or {}).get("all", {}).get("Errors_rate")
        errs = f"{100 * err:.1f}% [{100 * eci[0]:.1f}, {100 * eci[1]:.1f}]" if eci else f"{100 * err:.1f}%"
        lines.append(f"| {m['name']} | {dec} | {_ci(m, 'I0', 'HR', False)} | {_ci(m, 'I0', 'NDCG', False)} | "
                     f"{_ci(m, 'all', 'CorrectCount', True)} | {errs} | {_ci(m, 'I1+', 'TCP', True)} | "
                     f"{_ci(m, 'I1-', 'TCP', True)} |")
        ref = ref or m
    ret = [(m["name"], m["retention"]) for _, m in items if m.get("retention") and not m.get("rescored_from")]
    for key, label in (("teacher", "SASRec teacher"), ("popularity", "most popular")):
        t = (ref or {}).get(key)
        if t:
            label = t.get("name", label) if key == "teacher" else label
            ci = t.get("intervals", {})
            lines.append(f"| {label} | ranking | {t['HR']:.3f} [{ci['HR'][0]:.3f}, {ci['HR'][1]:.3f}] | "
                         f"{t['NDCG']:.3f} [{ci['NDCG'][0]:.3f}, {ci['NDCG'][1]:.3f}] | – | – | – | – |")
    if ret:
        def cell(r):
            if not r:
                return "– | –"
            ci = r.get("ci")
            return f"{100 * r['accuracy']:.1f}%" + (f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else "") + \
                f" | {r['n']}"
        lines += ["", "| model | MMLU 5-shot [95% CI] | n | GSM8K 8-shot CoT [95% CI] | n |", "|---|---|---|---|---|"]
        lines += [f"| {name} | {cell(r.get('mmlu'))} | {cell(r.get('gsm8k'))} |" for name, r in ret]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True)
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--protocols", action="store_true", help="also rescore free evals under reclm-gen")
    args = ap.parse_args()
    run, out = Path(args.run), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pipe = json.loads((run / "pipeline.json").read_text()) if (run / "pipeline.json").is_file() else {}
    recipe = pipe.get("recipe", {})
    summary = {"recipe": recipe, "stages": [], "evals": {}}
    for name, secs in stage_times(run):
        settings = json.loads((run / f"{name}.stage.json").read_text()).get("settings")
        summary["stages"].append({"stage": name, "seconds": secs, "settings": settings})
    for d in sorted(run.glob("eval-*")):
        if (d / "metrics.json").is_file():
            m = json.loads((d / "metrics.json").read_text())
            for k in ("per_row",):
                m.pop(k, None)
            for ref in ("teacher", "popularity"):
                if m.get(ref):
                    m[ref].pop("per_row", None)
            summary["evals"][d.name] = m
    if args.protocols:
        from recalign.eval.report import write_report

        pairs = []
        for name in ("eval-base", "eval-sft", *[f"eval-{m}" for m in recipe.get("rl") or {}]):
            if (run / name).is_dir():
                for proto in ("recalign", "reclm-gen"):
                    d = run / name if proto == "recalign" else rescore(run, name, recipe, proto)
                    pairs.append(json.loads((d / "metrics.json").read_text()))
        from recalign.rewards.protocol import protocol_of

        strict = [m for m in pairs if protocol_of(m)["name"] == "reclm-gen"]
        (out / "protocols").mkdir(parents=True, exist_ok=True)
        write_report(out / "protocols", strict)
        summary["protocols"] = {m["name"]: {"recalign": next(x for x in pairs if x["name"] == m["name"]
                                                             and protocol_of(x)["name"] != "reclm-gen")["exact"],
                                            "reclm-gen": m["exact"]} for m in strict}
        shutil.rmtree(out / "protocols" / "plots", ignore_errors=True)
    # the pipeline's report, rendered again from its stage outputs with this checkout's renderer
    from recalign.eval.report import write_report

    runs = [json.loads((run / n / "metrics.json").read_text()) for n, _ in stage_times(run)
            if n.startswith("eval-") and (run / n / "metrics.json").is_file()]
    curves, validation = {}, {}
    if (run / "sft" / "card.json").is_file():                 # the SFT loss and valid-loss curve
        curves["sft"] = json.loads((run / "sft" / "card.json").read_text()).get("log_history", [])
    for method in recipe.get("rl") or {}:
        card = run / method / "card.json"
        if card.is_file():
            c = json.loads(card.read_text())
            curves[method], validation[method] = c.get("log_history", []), c.get("validation")
    write_report(out, runs, curves=curves, validation=validation)
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    (out / "headline.md").write_text(headline(summary["evals"]))
    print(headline(summary["evals"]))
    total = sum(s for _, s in stage_times(run))
    lines = ["| stage | seconds |", "|---|---|"] + [f"| {n} | {s:.0f} |" for n, s in stage_times(run)]
    lines.append(f"| total | {total:.0f} ({total / 60:.1f} min) |")
    (out / "stages.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
