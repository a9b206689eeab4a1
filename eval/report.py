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


def decoding(run: dict) -> str:
    """``free``, ``grounded`` or ``beam`` (runs written before beam search: from ``grounded``)."""
    return run.get("decoding") or ("grounded" if run.get("grounded") else "free")


def _label(run: dict) -> str:
    """A run's name in tables and legends: ``sft``, ``sft (grounded)`` or ``sft (beam)``."""
    d = decoding(run)
    return run["name"] + ("" if d == "free" else f" ({d})")


def _protocol_defaults() -> dict:
    from recalign.rewards.protocol import PROTOCOLS

    return {n: p.as_dict() for n, p in PROTOCOLS.items()}


PROTOCOL_DEFAULTS = _protocol_defaults()
REFERENCES = (("teacher", "SASRec teacher"), ("popularity", "most popular"))


def _references(runs: list[dict]) -> list[tuple[str, dict]]:
    """(label, block) of each ranking baseline on the I0 rows (from the first run that has it)."""
    out = []
    for key, label in REFERENCES:
        block = next((r[key] for r in runs if r.get(key)), None)
        if block:
            # the teacher's row says which teacher it is (id, content or hybrid)
            out.append((block.get("name", label) if key == "teacher" else label, block))
    return out


def _fmt_ci(key: str, v, ci) -> str:
    """``value [lo, hi]`` (95% bootstrap interval over rows) when the run has intervals."""
    if v is None or not ci:
        return _fmt(key, v)
    lo, hi = ci
    if key in PCT:
        return f"{100 * v:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]"
    return f"{v:.4f} [{lo:.4f}, {hi:.4f}]"


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
            label = _label(r)
            ci = (r.get("intervals") or {}).get(task, {}) if mode == "exact" else {}
            lines.append(f"| {task} | {label} | {m['n_samples']} | "
                         + " | ".join(_fmt_ci(k, m.get(k), ci.get(k)) for k, _ in COLUMNS) + " |")
        if task == "I0":
            for ref, t in _references(runs):
                ci = t.get("intervals", {}) if mode == "exact" else {}
                lines.append(f"| I0 | {ref} (reference) | {t['n_samples']} | "
                             f"{_fmt_ci('HR', t['HR'], ci.get('HR'))} | {_fmt_ci('NDCG', t['NDCG'], ci.get('NDCG'))} |"
                             + " – |" * (len(COLUMNS) - 2))
    if mode == "exact" and any(r.get("intervals") for r in runs):
        lines += ["", "Brackets: 95% bootstrap interval over the test rows (2,000 resamples, seed 0)."]
    return lines


# (task, metric) pairs that a comparison reports: the headline of each task
COMPARE = [("I0", "HR"), ("I0", "NDCG"), ("I1+", "TCP"), ("I1-", "TCP"), ("I2<=", "CPA"), ("I2>=", "CPA"),
           ("I2~", "CPA"), ("all", "CorrectCount"), ("all", "Errors_rate")]
LABELS = {"Errors_rate": "Repeat+NonExist+InHistory@10", "CorrectCount": "CorrectCount"}


def comparison_pairs(runs: list[dict]) -> list[tuple[dict, dict]]:
    """base → SFT and SFT → each other model, at the same decoding."""
    pairs = []
    for g in ("free", "grounded", "beam"):
        same = [r for r in runs if decoding(r) == g]
        base = next((r for r in same if r["name"] == "base"), None)
        sft = next((r for r in same if r["name"] == "sft"), None)
        if base and sft:
            pairs.append((base, sft))
        ref = sft or base
        pairs += [(ref, r) for r in same if ref is not None and r is not ref and r is not base and r is not sft]
    return pairs


def compare_runs(a: dict, b: dict) -> list[dict]:
    """Paired differences ``b − a`` on the rows both runs scored; refuses runs on other rows
    or protocols (ValueError naming both)."""
    from recalign.data.stats import paired

    if a.get("rows_sha256") and b.get("rows_sha256") and a["rows_sha256"] != b["rows_sha256"]:
        raise ValueError(f"cannot compare {a['name']} and {b['name']}: they were evaluated on different test rows")
    from recalign.rewards.protocol import protocol_of

    pa, pb = protocol_of(a), protocol_of(b)
    if pa != pb:
        raise ValueError(f"cannot compare {a['name']} ({pa}) and {b['name']} ({pb}): different protocols")
    ra = {p["key"]: p for p in a.get("per_row") or []}
    rb = {p["key"]: p for p in b.get("per_row") or []}
    keys = [k for k in ra if k in rb]
    out = []
    for task, metric in COMPARE:
        ks = [k for k in keys if task == "all" or ra[k]["task"] == task]
        xa, xb = [ra[k].get(metric) for k in ks], [rb[k].get(metric) for k in ks]
        c = paired(xa, xb)
        if c["n"]:
            both = [(x, y) for x, y in zip(xa, xb) if x is not None and y is not None]
            out.append({"task": task, "metric": metric, "first": sum(x for x, _ in both) / len(both),
                        "second": sum(y for _, y in both) / len(both), **c})
    return out


def _teacher_comparisons(runs: list[dict]) -> list[tuple[str, str, dict]]:
    """(model, reference, paired comparison) of each run's I0 HR/NDCG against each baseline."""
    from recalign.data.stats import paired

    out = []
    for ref, t in _references(runs):
        if not t.get("per_row"):
            continue
        tr = {p["key"]: p for p in t["per_row"]}
        for r in runs:
            rows = {p["key"]: p for p in r.get("per_row") or [] if p["task"] == "I0"}
            ks = [k for k in rows if k in tr]
            if not ks:
                continue
            for m in ("HR", "NDCG"):
                c = paired([tr[k][m] for k in ks], [rows[k][m] for k in ks])
                mean_t = sum(tr[k][m] for k in ks) / len(ks)
                c["ratio"] = (sum(rows[k][m] or 0 for k in ks) / len(ks)) / mean_t if mean_t else None
                out.append((_label(r), ref, {"task": "I0", "metric": m, **c}))
    return out


def _comparison_section(runs: list[dict]) -> list[str]:
    from recalign.data.stats import verdict

    if not any(r.get("per_row") for r in runs):
        return []
    lines = ["", "## Comparisons (paired, same rows)", "",
             "Difference = second − first on the rows both scored, 95% paired-bootstrap interval; p from "
             "McNemar's exact test for 0/1 metrics, else the paired bootstrap. A difference whose interval "
             "holds 0 is \"no difference\".", "",
             "| comparison | task | metric | n | first | second | difference [95% CI] | p | reads |",
             "|---|---|---|---|---|---|---|---|---|"]
    for a, b in comparison_pairs(runs):
        la, lb = _label(a), _label(b)
        try:
            comps = compare_runs(a, b)
        except ValueError as e:
            lines.append(f"| {la} → {lb} | – | – | – | – | – | refused: {e} | – | – |")
            continue
        for c in comps:
            key = c["metric"]
            pct = key in PCT or key == "Errors_rate"
            fmt_key = "CPA" if pct else key
            scale, unit = (100, " pp") if pct else (1, "")
            lines.append(f"| {la} → {lb} | {c['task']} | {LABELS.get(key, key)} | {c['n']} | {_fmt(fmt_key, c['first'])} | "
                         f"{_fmt(fmt_key, c['second'])} | {scale * c['diff']:+.{1 if pct else 4}f}{unit} "
                         f"[{scale * c['lo']:+.{1 if pct else 4}f}, {scale * c['hi']:+.{1 if pct else 4}f}] | "
                         f"{c['p']:.3g} | {verdict(c)} |")
    tc = _teacher_comparisons(runs)
    if tc:
        lines += ["", "Against the ranking baselines on the same I0 prompt windows (model − baseline):", "",
                  "| model | baseline | metric | n | ratio to baseline | difference [95% CI] | p | reads |",
                  "|---|---|---|---|---|---|---|---|"]
        for label, ref, c in tc:
            ratio = f"{c['ratio']:.2f}x" if c.get("ratio") is not None else "–"
            lines.append(f"| {label} | {ref} | {c['metric']}@10 | {c['n']} | {ratio} | {c['diff']:+.4f} "
                         f"[{c['lo']:+.4f}, {c['hi']:+.4f}] | {c['p']:.3g} | {verdict(c)} |")
    return lines


def _retention_section(runs: list[dict]) -> list[str]:
    """MMLU and GSM8K accuracy per model with 95% intervals, then paired differences on the same
    questions: base → SFT and SFT → each other model (McNemar's exact p)."""
    from recalign.data.stats import verdict
    from recalign.eval.retention import compare_retention

    ret = [r for r in runs if r.get("retention")]
    if not ret:
        return []

    def cell(res: dict) -> str:
        if not res:
            return "– | –"
        ci = res.get("ci")
        iv = f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else ""
        return f"{_fmt('CPA', res.get('accuracy'))}{iv} | {res.get('n', '–')}"

    tool = next((r["retention"].get("lm_eval") for r in ret if r["retention"].get("lm_eval")), None)
    how = (f"lm-evaluation-harness {tool['version']}: its mmlu (5-shot) and gsm8k_cot (8-shot, flexible-extract) "
           f"task configs on local files ({tool['tasks_folder']}); each model's `lm_eval` command is in its "
           "metrics.json. " if tool else "")
    lines = ["", "## Retention", "", how + "Accuracy with its 95% bootstrap interval over questions.", "",
             "| model | MMLU (5-shot) [95% CI] | n | GSM8K (8-shot CoT) [95% CI] | n |", "|---|---|---|---|---|"]
    for r in ret:
        lines.append(f"| {r['name']} | {cell(r['retention'].get('mmlu') or {})} | "
                     f"{cell(r['retention'].get('gsm8k') or {})} |")
    base = next((r for r in ret if r["name"] == "base"), None)
    sft = next((r for r in ret if r["name"] == "sft"), None)
    pairs = ([(base, sft)] if base and sft else []) + [(sft or base, r) for r in ret
                                                       if (sft or base) and r is not base and r is not sft]
    rows = []
    for a, b in pairs:
        try:
            comps = compare_retention(a["retention"], b["retention"])
        except ValueError as e:
            rows.append(f"| {a['name']} → {b['name']} | – | – | – | – | refused: {e} | – | – |")
            continue
        for c in comps:
            rows.append(f"| {a['name']} → {b['name']} | {c['check'].upper()} | {c['n']} | {100 * c['first']:.1f}% | "
                        f"{100 * c['second']:.1f}% | {100 * c['diff']:+.1f} pp [{100 * c['lo']:+.1f}, "
                        f"{100 * c['hi']:+.1f}] | {c['p']:.3g} | {verdict(c)} |")
    if rows:
        lines += ["", "Paired on the same questions (second − first, McNemar's exact p):", "",
                  "| comparison | check | n | first | second | difference [95% CI] | p | reads |",
                  "|---|---|---|---|---|---|---|---|"] + rows
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
            cis = [(r.get("intervals") or {}).get(t, {}).get(key) for t in tasks]
            keep = [j for j, v in enumerate(vals) if v is not None]
            err = None
            if all(cis[j] for j in keep) and keep:
                err = [[max(vals[j] - cis[j][0], 0) for j in keep], [max(cis[j][1] - vals[j], 0) for j in keep]]
            label = _label(r)
            ax.bar([j + i * width for j in keep], [vals[j] for j in keep], width, yerr=err, capsize=2, label=label)
        teacher = next((r["teacher"] for r in runs if r.get("teacher")), None)
        if teacher and key in ("HR", "NDCG") and "I0" in tasks:
            j = tasks.index("I0")
            ax.hlines(teacher[key], j - 0.1, j + 0.9, colors="k", linestyles="--", label="teacher")
        ax.set_title(title)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(tasks))], tasks, rotation=30, fontsize=8)
    axes.flat[0].legend(fontsize=8)
    fig.suptitle("Metrics per task (exact matching; bars: 95% bootstrap intervals)")
    fig.tight_layout()
    fig.savefig(out / "plots" / "metrics_by_task.png", dpi=90)
    plt.close(fig)
    made.append("plots/metrics_by_task.png")

    if any(r.get("by_history_length") for r in runs):
        fig, ax = plt.subplots(figsize=(6, 4))
        for r in runs:
            h = r.get("by_history_length") or {}
            if h:
                ax.plot(list(h), [v["HR"] for v in h.values()], marker="o", label=_label(r))
        ax.set_xlabel("items in the prompt history")
        ax.set_ylabel("HR@10 (I0)")
        ax.set_title("HR@10 by history length")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "plots" / "hr_by_history.png", dpi=90)
        plt.close(fig)
        made.append("plots/hr_by_history.png")
    return made


# what each trainer logs as its list reward (PPO: our log; GRPO/RLOO: TRL's per-function mean)
REWARD_KEYS = ("reward/list", "rewards/recalign_list_reward/mean")


def curve(log_history: list[dict]) -> dict[str, list]:
    """(step, list reward, KL, loss) series from a trainer's log history (card.json)."""
    out: dict[str, list] = {"step": [], "reward": [], "kl": [], "loss": [], "eval_loss": []}
    for h in log_history or []:
        if "step" not in h:
            continue
        reward = next((h[k] for k in REWARD_KEYS if k in h), None)
        loss = h.get("loss", h.get("pg_loss"))
        if reward is None and loss is None and "kl" not in h and "eval_loss" not in h:
            continue
        out["step"].append(h["step"])
        out["reward"].append(reward)
        out["kl"].append(h.get("kl"))
        out["loss"].append(loss)
        out["eval_loss"].append(h.get("eval_loss"))
    return out


def _curve_section(out: Path, curves: dict[str, list[dict]]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = {m: curve(h) for m, h in curves.items()}
    series = {m: c for m, c in series.items() if c["step"]}
    if not series:
        return []
    lines = ["", "## Training curves", "", "| method | steps | list reward (first → last) | KL (last) | loss (first → last) "
             "| valid loss (first → last; lowest at step) |", "|---|---|---|---|---|---|"]

    def ends(v):
        v = [x for x in v if x is not None]
        return f"{v[0]:.3f} → {v[-1]:.3f}" if v else "–"

    def valid(c):
        pts = [(s, v) for s, v in zip(c["step"], c["eval_loss"]) if v is not None]
        if not pts:
            return "–"
        best = min(pts, key=lambda sv: sv[1])
        return f"{pts[0][1]:.3f} → {pts[-1][1]:.3f}; {best[1]:.3f} at {best[0]}"
    for m, c in series.items():
        kl = [x for x in c["kl"] if x is not None]
        lines.append(f"| {m} | {c['step'][-1]} | {ends(c['reward'])} | {f'{kl[-1]:.4f}' if kl else '–'} | "
                     f"{ends(c['loss'])} | {valid(c)} |")
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, key, title in zip(axes, ("reward", "kl", "loss"), ("list reward", "KL to the SFT model", "loss")):
        for m, c in series.items():
            pts = [(s, v) for s, v in zip(c["step"], c[key]) if v is not None]
            if pts:
                ax.plot(*zip(*pts), marker=".", label=m)
            ev = [(s, v) for s, v in zip(c["step"], c["eval_loss"]) if v is not None]
            if key == "loss" and ev:
                ax.plot(*zip(*ev), marker="o", linestyle="--", label=f"{m} (valid)")
        ax.set_title(title)
        ax.set_xlabel("step")
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    (out / "plots").mkdir(exist_ok=True)
    fig.savefig(out / "plots" / "training_curves.png", dpi=90)
    plt.close(fig)
    return lines + ["", "![plots/training_curves.png](plots/training_curves.png)"]


def _validation_section(validation: dict[str, dict]) -> list[str]:
    rows = {m: v for m, v in (validation or {}).items() if v}
    if not rows:
        return []
    lines = ["", "## RL checkpoint selection (validation)", "",
             "Greedy answers on the same validation rows before RL (step 0 = the SFT model) and at every "
             "checkpoint, scored with the list reward; the stage keeps the best. \"beats SFT\": the paired "
             "interval of best − SFT lies above 0 and p < 0.05.", "",
             "| method | rows | list reward per step | best step | best − SFT [95% CI] | p | beats SFT |",
             "|---|---|---|---|---|---|---|"]
    for m, v in rows.items():
        curve = ", ".join(f"{c['step']}: {c['reward']:.3f}" for c in v["curve"] if c["reward"] is not None)
        c = v.get("best_vs_sft")
        diff = f"{c['diff']:+.3f} [{c['lo']:+.3f}, {c['hi']:+.3f}]" if c else "–"
        p = f"{c['p']:.3g}" if c else "–"
        won = v.get("beats_sft") if not c else bool(c["lo"] > 0 and c["p"] < 0.05)
        beats = {True: "yes", False: "no"}.get(won, "–")
        if v.get("best_step") == 0:
            beats = "no: no RL checkpoint scored above the SFT model"
        lines.append(f"| {m} | {v['rows']} | {curve} | {v.get('best_step')} | {diff} | {p} | {beats} |")
    return lines


def write_report(out: str | Path, runs: list[dict], curves: dict[str, list[dict]] | None = None,
                 validation: dict[str, dict] | None = None) -> Path:
    """``runs``: metrics.json contents; ``curves``: method -> trainer log history;
    ``validation``: method -> the RL card's validation summary (checkpoint selection)."""
    out = Path(out)
    lines = ["# recalign evaluation report", ""]
    from recalign.rewards.protocol import protocol_of

    lines += ["| model | backend | decoding | protocol | split | rows | generation (s) |",
              "|---|---|---|---|---|---|---|"]
    for r in runs:
        p = protocol_of(r)
        proto = p["name"] + "".join(f", {k} {v}" for k, v in p.items()
                                    if k != "name" and v != PROTOCOL_DEFAULTS[p["name"]].get(k))
        lines.append(f"| {r['name']} | {r.get('backend')} | {decoding(r)} | {proto} | {r.get('split')} | "
                     f"{r.get('n_rows')} | {r.get('generation_seconds')} |")
    lines += ["", "## Recommendation metrics (exact title matching)", ""] + _table(runs, "exact")
    lines += ["", "## Recommendation metrics (fuzzy matching, Levenshtein ≤ 3)", ""] + _table(runs, "fuzzy")
    lines += ["", "Percentages: share of samples (CPA, CorrectCount) or of the K list slots (TCP and the "
                  "formatting errors). HR/NDCG use the target of the leave-one-out split; the reference rows "
                  "rank the same 10-item prompt windows with history items masked (teacher: the run's, named in its row; most "
                  "popular: training-interaction counts). Decoding: free; grounded = greedy through the title "
                  "trie; beam = grounded beam search over titles (D3 scoring)."]
    from recalign.rewards.protocol import protocol_of

    inside = sorted({r["name"] for r in runs if protocol_of(r).get("tcp_minus") == "inside"})
    lines[-1] += (" I1- TCP: the share of slots outside the excluded category (higher is better)"
                  + (f"; for {', '.join(inside)} (protocol tcp_minus: inside, as the official code reports it) "
                     "the share inside it (lower is better)." if inside else "."))
    judged = [r for r in runs if r.get("judge")]
    if judged:
        lines += ["", "## Reward as judge (I0)", "",
                  "Mean logged rating (1-5) of the recommended items the user rated outside the prompt's "
                  "history window; coverage = share of recommended items with a known rating.", "",
                  "| model | mean rating | coverage | items rated / recommended |", "|---|---|---|---|"]
        for r in judged:
            j = r["judge"]
            mr = f"{j['mean_rating']:.3f}" if j.get("mean_rating") is not None else "–"
            lines.append(f"| {_label(r)} | {mr} | "
                         f"{_fmt('CPA', j.get('coverage'))} | {j['n_known']} / {j['n_recommended']} |")
    lines += _retention_section(runs)
    lines += _comparison_section(runs)
    plots = _plots(out, runs)
    lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    lines += _curve_section(out, curves or {})
    lines += _validation_section(validation or {})
    lines += ["", "## Provenance", ""]
    for r in runs:
        p = r.get("provenance", {})
        lines.append(f"- **{r['name']}**: model `{r.get('model')}`, adapter `{r.get('adapter')}`, git "
                     f"`{p.get('git_commit')}`, seed {p.get('seed')}, inputs "
                     + ", ".join(f"{k} `{v[:12]}`" for k, v in p.get("inputs", {}).items())
                     + f", versions {json.dumps(p.get('versions', {}))}")
    (out / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out / "report.md"


def write_rlrf4rec_report(out: Path, results: list[dict], backbones: list[str]) -> Path:
    """report.md: no knowledge / base-LLM knowledge / rounds per backbone, plus plots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = (1, 3, 5, 7)
    cols = [f"NDCG@{k}" for k in ks] + [f"MAP@{k}" for k in ks]
    lines = ["# RLRF4Rec report", "",
             f"{results[0]['users']} users ({results[0].get('skipped_users', 0)} skipped: too few ratings); "
             "reranking lists of 10 items (interacted + random negatives), label = rating >= 4; "
             "metrics on each user's held-out test list.", "",
             "| backbone | knowledge | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
    for b in backbones:
        for key, label in (("no_knowledge", "none (item ids only)"), ("items_only", "item facts, no user knowledge")):
            nk = results[0].get(key, {}).get(b)
            if nk:
                lines.append(f"| {b} | {label} | " + " | ".join(f"{nk[c]:.4f}" for c in cols) + " |")
        for res in results:
            m = res["metrics"][b]
            label = "base LLM" if res["round"] == 0 else f"DPO round {res['round']}"
            lines.append(f"| {b} | {label} | " + " | ".join(f"{m[c]:.4f}" for c in cols) + " |")
    rounds = [r for r in results if r["round"] > 0]
    if rounds:
        lines += ["", "| round | pairs | tied users | empty texts | mean candidate score | chosen − rejected |",
                  "|---|---|---|---|---|---|"]
        for r in rounds:
            lines.append(f"| {r['round']} | {r['pairs']} | {r['tied_users']} | {r['empty_texts']} | "
                         f"{r['candidate_score_mean']:.4f} | {r['chosen_minus_rejected']:.4f} |")
    (out / "plots").mkdir(exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, metric in zip(axes, ("NDCG@5", "MAP@5")):
        for b in backbones:
            xs = [r["round"] for r in results]
            line, = ax.plot(xs, [r["metrics"][b][metric] for r in results], marker="o", label=b)
            nk = results[0].get("items_only", {}).get(b)
            if nk:
                ax.axhline(nk[metric], color=line.get_color(), linestyle="--", linewidth=1,
                           label=f"{b}, no user knowledge")
        ax.set_xlabel("round (0 = base LLM)")
        ax.set_title(metric)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "plots" / "rounds.png", dpi=90)
    plt.close(fig)
    lines += ["", "![plots/rounds.png](plots/rounds.png)", ""]
    path = out / "report.md"
    from recalign.data.util import atomic_write

    atomic_write(path, "\n".join(lines))
    return path
