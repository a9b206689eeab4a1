"""Markdown report (+ PNG plots) for one or several evaluation runs.

    write_report(out_dir, [metrics_base, metrics_sft])     # metrics.json contents

Tables follow REFERENCE.md §1.5: HR@10, NDCG@10, TCP@10, CPA, CorrectCount and the
formatting errors as percentages of the list length, exact matching first, fuzzy
(Levenshtein ≤ 3) matching as a separate table; the teacher on the same I0 rows is the
reference row; retention (MMLU, GSM8K) when measured; provenance last.
"""
from __future__ import annotations

import json
from pathlib import Path

COLUMNS = [("HR", "HR@10"), ("NDCG", "NDCG@10"), ("TCP", "TCP@10"), ("CPA", "CPA"),
           ("CorrectCount", "CorrectCount"), ("RepeatItem_rate", "RepeatItem@10"),
           ("NonExist_rate", "NonExist@10"), ("InHistory_rate", "InHistory@10")]
PCT = {"TCP", "CPA", "CorrectCount", "RepeatItem_rate", "NonExist_rate", "InHistory_rate"}


def _fmt(key: str, v) -> str:
    if v is None:
        return "–"
    return f"{100 * v:.1f}%" if key in PCT else f"{v:.4f}"


def _tasks(runs: list[dict], mode: str) -> list[str]:
    seen: list[str] = []
    for r in runs:
        for t in r.get(mode, {}):
            if t != "all" and t not in seen:
                seen.append(t)
    return seen


def _table(runs: list[dict], mode: str) -> list[str]:
    lines = ["| task | model | n | " + " | ".join(h for _, h in COLUMNS) + " |",
             "|---|---|---|" + "---|" * len(COLUMNS)]
    for task in _tasks(runs, mode):
        for r in runs:
            m = r.get(mode, {}).get(task)
            if m is None:
                continue
            label = r["name"] + (" (grounded)" if r.get("grounded") else "")
            lines.append(f"| {task} | {label} | {m['n_samples']} | "
                         + " | ".join(_fmt(k, m.get(k)) for k, _ in COLUMNS) + " |")
        if task == "I0":
            t = next((r["teacher"] for r in runs if r.get("teacher")), None)
            if t:
                lines.append(f"| I0 | SASRec teacher (reference) | {t['n_samples']} | {_fmt('HR', t['HR'])} | "
                             f"{_fmt('NDCG', t['NDCG'])} |" + " – |" * (len(COLUMNS) - 2))
    return lines


def _plots(out: Path, runs: list[dict]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    (out / "plots").mkdir(exist_ok=True)
    tasks = _tasks(runs, "exact")
    metrics = [("HR", "HR@10"), ("NDCG", "NDCG@10"), ("TCP", "TCP@10"), ("CPA", "CPA"),
               ("CorrectCount", "CorrectCount"), ("NonExist_rate", "NonExist@10")]
    fig, axes = plt.subplots(2, 3, figsize=(13, 6.5))
    width = 0.8 / max(len(runs), 1)
    for ax, (key, title) in zip(axes.flat, metrics):
        for i, r in enumerate(runs):
            vals = [r["exact"].get(t, {}).get(key) for t in tasks]
            xs = [j + i * width for j, v in enumerate(vals) if v is not None]
            ax.bar(xs, [v for v in vals if v is not None], width, label=r["name"])
        teacher = next((r["teacher"] for r in runs if r.get("teacher")), None)
        if teacher and key in ("HR", "NDCG") and "I0" in tasks:
            j = tasks.index("I0")
            ax.hlines(teacher[key], j - 0.1, j + 0.9, colors="k", linestyles="--", label="teacher")
        ax.set_title(title)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(tasks))], tasks, rotation=30, fontsize=8)
    axes.flat[0].legend(fontsize=8)
    fig.suptitle("Metrics per task (exact matching)")
    fig.tight_layout()
    fig.savefig(out / "plots" / "metrics_by_task.png", dpi=90)
    plt.close(fig)
    made.append("plots/metrics_by_task.png")

    if any(r.get("by_history_length") for r in runs):
        fig, ax = plt.subplots(figsize=(6, 4))
        for r in runs:
            h = r.get("by_history_length") or {}
            if h:
                ax.plot(list(h), [v["HR"] for v in h.values()], marker="o", label=r["name"])
        ax.set_xlabel("items in the prompt history")
        ax.set_ylabel("HR@10 (I0)")
        ax.set_title("HR@10 by history length")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "plots" / "hr_by_history.png", dpi=90)
        plt.close(fig)
        made.append("plots/hr_by_history.png")
    return made


def write_report(out: str | Path, runs: list[dict]) -> Path:
    out = Path(out)
    lines = ["# recalign evaluation report", ""]
    lines += ["| model | backend | grounded | split | rows | generation (s) |", "|---|---|---|---|---|---|"]
    for r in runs:
        lines.append(f"| {r['name']} | {r.get('backend')} | {r.get('grounded')} | {r.get('split')} | "
                     f"{r.get('n_rows')} | {r.get('generation_seconds')} |")
    lines += ["", "## Recommendation metrics (exact title matching)", ""] + _table(runs, "exact")
    lines += ["", "## Recommendation metrics (fuzzy matching, Levenshtein ≤ 3)", ""] + _table(runs, "fuzzy")
    lines += ["", "Percentages: share of samples (CPA, CorrectCount) or of the K list slots (TCP and the "
                  "formatting errors). HR/NDCG use the target of the leave-one-out split; the teacher row "
                  "ranks the same 10-item prompt windows with history items masked."]
    ret = [r for r in runs if r.get("retention")]
    if ret:
        lines += ["", "## Retention", "", "| model | MMLU (5-shot) | n | GSM8K (8-shot CoT) | n |", "|---|---|---|---|---|"]
        for r in ret:
            mm, gs = r["retention"].get("mmlu") or {}, r["retention"].get("gsm8k") or {}
            lines.append(f"| {r['name']} | {_fmt('CPA', mm.get('accuracy'))} | {mm.get('n', '–')} | "
                         f"{_fmt('CPA', gs.get('accuracy'))} | {gs.get('n', '–')} |")
    plots = _plots(out, runs)
    lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    lines += ["", "## Provenance", ""]
    for r in runs:
        p = r.get("provenance", {})
        lines.append(f"- **{r['name']}**: model `{r.get('model')}`, adapter `{r.get('adapter')}`, git "
                     f"`{p.get('git_commit')}`, seed {p.get('seed')}, inputs "
                     + ", ".join(f"{k} `{v[:12]}`" for k, v in p.get("inputs", {}).items())
                     + f", versions {json.dumps(p.get('versions', {}))}")
    (out / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out / "report.md"
