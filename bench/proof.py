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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True)
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--protocols", action="store_true", help="also rescore free evals under reclm-gen")
    args = ap.parse_args()
    run, out = Path(args.run), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pipe = json.loads((run / "pipeline.json").read_text())
    recipe = pipe["recipe"]
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
        strict = [m for m in pairs if m["protocol"]["name"] == "reclm-gen"]
        write_report(out / "protocols", strict)
        summary["protocols"] = {m["name"]: {"recalign": next(x for x in pairs if x["name"] == m["name"]
                                                             and x["protocol"]["name"] != "reclm-gen")["exact"],
                                            "reclm-gen": m["exact"]} for m in strict}
        shutil.rmtree(out / "protocols" / "plots", ignore_errors=True)
    shutil.copy(run / "report" / "report.md", out / "report.md")
    for png in (run / "report" / "plots").glob("*.png"):
        (out / "plots").mkdir(exist_ok=True)
        shutil.copy(png, out / "plots" / png.name)
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    total = sum(s for _, s in stage_times(run))
    lines = ["| stage | seconds |", "|---|---|"] + [f"| {n} | {s:.0f} |" for n, s in stage_times(run)]
    lines.append(f"| total | {total:.0f} ({total / 60:.1f} min) |")
    (out / "stages.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
