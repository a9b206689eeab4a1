"""Recommendation-list metrics (REFERENCE.md §1.5), on the same parser as the rewards.

Per sample, K is the row's requested count ``item_count``; the parsed list is truncated
to K for every metric except CorrectCount:

* ``CorrectCount`` 1 if the number of items written equals K (before truncation).
* ``HR`` 1 if the target is in the list; ``NDCG`` 1/log2(pos+2); ``MRR`` 1/(pos+1)
  (pos: first occurrence, 0-based). None when the row has no target.
* ``TCP`` share of the K slots holding a catalog item in the row's category (``I1-``: NOT
  in it, higher is better; ``tcp_minus="inside"``: in it, lower is better, as the official
  RecLM-gen code reports it). None without a category.
* ``CPA`` (I2 only) with cnt = in-category items, n = the row's required count:
  ≥: cnt ≥ n; ≈: |cnt − n| ≤ 1; ≤: cnt + NonExist ≤ n.
* ``NonExist`` (no catalog title), ``RepeatItem`` (same item, or same unknown title, as an
  earlier slot), ``InHistory`` (item in the prompt's history window), ``InFullHistory``
  (item anywhere in the user's full history; None unless given): counts over the K slots
  in [0, K] (a slot can count for several; a repeated item counts again in InHistory and
  TCP/CPA, as in the paper's code), and ``*_rate`` = count / K in [0, 1].

Matching is exact (``fuzzy=False``) or also maps unknown titles to a catalog title within
Levenshtein 3 (``fuzzy=True``, the paper's eval); :func:`evaluate` reports both, separately.

>>> from recalign.data import Catalog
>>> cat = Catalog(["Heat", "Casino", "Toy Story"], [["Crime"], ["Crime"], ["Animation"]])
>>> row = {"task": "I1+", "history": [3], "target": 2, "item_count": 3, "category": "Crime"}
>>> s = sample_metrics(row, "1. Heat\\n2. Casino\\n3. Toy Stroy\\n4. Heat", cat)
>>> s["HR"], round(s["NDCG"], 4), s["MRR"], s["CorrectCount"], s["NonExist"], round(s["TCP"], 4)
(1, 0.6309, 0.5, 0, 1, 0.6667)
>>> sample_metrics(row, "1. Heat\\n2. Casino\\n3. Toy Stroy", cat, fuzzy=True)["InHistory"]
1
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

from recalign.data import Catalog, normalize_title
from recalign.rewards.parser import ParsedItem, completion_text, lookup_item, parse_answer
from recalign.rewards.reclm import RowSpec, row_rule, row_spec
from recalign.teacher.metrics import position_scores

__all__ = ["COUNT_METRICS", "sample_metrics", "aggregate_metrics", "evaluate"]

COUNT_METRICS = ("NonExist", "RepeatItem", "InHistory", "InFullHistory")
_ORDER = ("HR", "NDCG", "MRR", "TCP", "CPA", "CorrectCount", "NonExist", "NonExist_rate", "RepeatItem",
          "RepeatItem_rate", "InHistory", "InHistory_rate", "InFullHistory", "InFullHistory_rate", "K")


def sample_metrics(row: Mapping, completion, catalog: Catalog, *, fuzzy: bool = False,
                   full_history: Sequence[int] | None = None, spec: RowSpec | None = None,
                   parser: str = "lenient", tcp_minus: str = "outside") -> dict:
    """Metrics of one answer. ``completion``: text, conversational messages, or a list of
    titles. ``full_history`` (or the row's ``full_history`` field): the user's whole history
    for ``InFullHistory``. ``parser``: ``lenient`` (ours) or ``strict`` (RecLM-gen's: every
    line is an item, exact case-sensitive titles; see :func:`~recalign.rewards.parser.parse_answer`).
    A bad row raises ValueError naming the field and the task; model output never raises."""
    if spec is None:
        spec = row_spec(row, catalog)
    if isinstance(completion, (list, tuple)) and all(isinstance(t, str) for t in completion):
        parsed = [ParsedItem(t.strip(), -1, -1, -1) for t in completion]
    else:
        parsed = parse_answer(completion_text(completion), catalog, parser)
    if full_history is None:
        full_history = row.get("full_history")
    full = None
    if full_history is not None:
        try:
            full = frozenset(int(h) for h in full_history)
        except (TypeError, ValueError):
            raise ValueError(f"row field 'full_history' must be a list of item indices for task "
                             f"{spec.task!r}") from None
    k = spec.m
    top = parsed[:k]
    items = []
    if parser == "strict":
        items = [lookup_item(catalog, it.title, "strict", fuzzy) for it in top]
    else:
        items = [catalog.find(it.title, fuzzy) for it in top]

    nonexist = repeat = in_hist = in_full = in_cat = out_cat = 0
    seen: set = set()
    for it, item in zip(top, items):
        if item is None:
            nonexist += 1
            key = ("?", normalize_title(it.title))
        else:
            key = item
            if item in spec.history:
                in_hist += 1
            if full is not None and item in full:
                in_full += 1
            if spec.cat_mask is not None:
                if spec.cat_mask[item]:
                    in_cat += 1
                else:
                    out_cat += 1
        if key in seen:
            repeat += 1
        seen.add(key)

    # a user's task keeps its own name in reports; it is judged by its rule (spec.task)
    out: dict = {"task": row["task"] if row.get("rule") else spec.task, "K": k, "n_items": len(parsed),
                 "CorrectCount": int(len(parsed) == k)}
    if spec.target is None:
        out.update(HR=None, NDCG=None, MRR=None)
    else:
        pos = items.index(spec.target) if spec.target in items else -1
        out.update(position_scores(pos))
    if spec.cat_mask is None:
        out["TCP"] = None
    else:
        out["TCP"] = (out_cat if spec.task == "I1-" and tcp_minus == "outside" else in_cat) / k
    if spec.task.startswith("I2"):
        n = spec.n
        if spec.task == "I2>=":
            ok = in_cat >= n
        elif spec.task == "I2~":
            ok = abs(in_cat - n) <= 1
        else:
            ok = in_cat + nonexist <= n
        out["CPA"] = int(ok)
    else:
        out["CPA"] = None
    for name, c in (("NonExist", nonexist), ("RepeatItem", repeat), ("InHistory", in_hist),
                    ("InFullHistory", in_full if full is not None else None)):
        out[name] = c
        out[name + "_rate"] = None if c is None else c / k
    return out


def aggregate_metrics(samples: Iterable[Mapping]) -> dict[str, dict[str, float]]:
    """Means per task (and over ``"all"``) of :func:`sample_metrics` outputs.

    Each task's dict holds ``n_samples`` and the mean of every metric over the samples
    where it is defined; a metric defined for only some samples also gets ``n_<metric>``.

    >>> agg = aggregate_metrics([{"task": "I0", "HR": 1, "TCP": None}, {"task": "I0", "HR": 0, "TCP": 0.5}])
    >>> agg["I0"]
    {'n_samples': 2, 'HR': 0.5, 'TCP': 0.5, 'n_TCP': 1}
    """
    groups: dict[str, list[Mapping]] = {}
    everything: list[Mapping] = []
    for s in samples:
        groups.setdefault(str(s.get("task")), []).append(s)
        everything.append(s)
    names = sorted(groups)
    if everything:
        groups["all"] = everything
        names.append("all")
    result: dict[str, dict[str, float]] = {}
    for task in names:
        rows = groups[task]
        keys: list[str] = [k for k in _ORDER if any(k in r for r in rows)]
        keys += sorted({k for r in rows for k in r} - set(keys) - {"task"})
        agg: dict[str, float] = {"n_samples": len(rows)}
        for key in keys:
            vals = [r[key] for r in rows if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool)]
            if not vals:
                continue
            agg[key] = sum(vals) / len(vals)
            if len(vals) != len(rows):
                agg["n_" + key] = len(vals)
        result[task] = agg
    return result


def evaluate(rows: Sequence[Mapping], completions: Sequence, catalog: Catalog, *, fuzzy: bool = True,
             full_histories: Sequence[Sequence[int] | None] | None = None,
             return_samples: bool = False, skip_other_tasks: bool = True, parser: str = "lenient",
             tcp_minus: str = "outside") -> dict:
    """Aggregated metrics of a set of answers: ``{"exact": {task: {...}}, "fuzzy": {...}}``
    (``"fuzzy"`` only when asked; exact and fuzzy matching are reported separately).

    Rows whose task is not scored as a list (no ``rule``: item search I3, chat I4, ...) are skipped and
    counted in ``"skipped"`` (``skip_other_tasks=False`` makes them raise instead). With
    ``return_samples``, also ``"samples_exact"`` / ``"samples_fuzzy"``: the per-sample dicts
    of the evaluated rows, in input order."""
    if len(rows) != len(completions):
        raise ValueError(f"{len(rows)} rows but {len(completions)} completions")
    if full_histories is not None and len(full_histories) != len(rows):
        raise ValueError(f"{len(rows)} rows but {len(full_histories)} full_histories")
    keep, skipped = [], {}
    for i, r in enumerate(rows):
        task = r.get("task") if isinstance(r, Mapping) else None
        if skip_other_tasks and not (isinstance(r, Mapping) and row_rule(r)):
            skipped[str(task)] = skipped.get(str(task), 0) + 1
            continue
        keep.append((i, r, row_spec(r, catalog)))
    out: dict = {}
    for mode in ((False, True) if fuzzy else (False,)):
        samples = [sample_metrics(r, completions[i], catalog, fuzzy=mode, spec=s, parser=parser, tcp_minus=tcp_minus,
                                  full_history=None if full_histories is None else full_histories[i])
                   for i, r, s in keep]
        name = "fuzzy" if mode else "exact"
        out[name] = aggregate_metrics(samples)
        if return_samples:
            out["samples_" + name] = samples
    out["skipped"] = skipped
    return out
