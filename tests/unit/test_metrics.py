"""List metrics (REFERENCE.md §1.5) against hand-computed values."""
from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recalign.data import Catalog
from recalign.eval.metrics import aggregate_metrics, evaluate, sample_metrics

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
L2 = math.log2

# items 1..4 (A-D) are in "x", 5..8 (E-H) in "y"
TITLES = ["A", "B", "C", "D", "E", "F", "G", "H"]
CATS = [["x"]] * 4 + [["y"]] * 4


@pytest.fixture(scope="module")
def cat() -> Catalog:
    return Catalog(TITLES, CATS)


def answer(*titles: str) -> str:
    return "\n".join(f"{i}. {t}" for i, t in enumerate(titles, 1))


def row(task="I0", m=10, history=(), target=None, category=None, n=None, **extra):
    r = {"task": task, "item_count": m, "history": list(history), "target": target, **extra}
    if category is not None:
        r["category"] = category
    if n is not None:
        r["n"] = n
    return r


CASES = [
    # I0: 4 items for m=3 -> CorrectCount 0; G (4th) is truncated away
    (row("I0", m=3, history=[8], target=2, full_history=[7, 8]), answer("A", "B", "H", "G"),
     dict(CorrectCount=0, HR=1, NDCG=1 / L2(3), MRR=0.5, NonExist=0, RepeatItem=0, InHistory=1, InFullHistory=1,
          InHistory_rate=1 / 3, InFullHistory_rate=1 / 3, TCP=None, CPA=None, K=3)),
    # I1-: TCP is the share NOT in the category (repeats count, as in the paper)
    (row("I1-", m=4, target=5, category="x"), answer("A", "ZZZ", "E", "E"),
     dict(CorrectCount=1, HR=1, NDCG=0.5, MRR=1 / 3, NonExist=1, NonExist_rate=0.25, RepeatItem=1,
          RepeatItem_rate=0.25, InHistory=0, InFullHistory=None, InFullHistory_rate=None, TCP=0.5, CPA=None)),
    # I1+: no target -> HR/NDCG/MRR undefined; the second ZZZ is truncated
    (row("I1+", m=2, category="x"), answer("B", "ZZZ", "ZZZ"),
     dict(CorrectCount=0, HR=None, NDCG=None, MRR=None, NonExist=1, RepeatItem=0, TCP=0.5)),
    # repeats of one unknown title (normalised) count; target absent -> 0
    (row("I0", m=3, target=4), answer("ZZZ", "zzz", "A"),
     dict(CorrectCount=1, HR=0, NDCG=0.0, MRR=0.0, NonExist=2, RepeatItem=1, NonExist_rate=2 / 3)),
    # I2 ≥ / ≈ / ≤ CPA rules (cnt = in-category items of the truncated list)
    (row("I2>=", m=3, category="x", n=2), answer("A", "B", "E"), dict(CPA=1, TCP=2 / 3)),
    (row("I2>=", m=3, category="x", n=2), answer("A", "E", "F"), dict(CPA=0, TCP=1 / 3)),
    (row("I2~", m=4, category="x", n=2), answer("A", "B", "C", "E"), dict(CPA=1)),     # |3-2| = 1
    (row("I2~", m=4, category="x", n=2), answer("E", "F", "G", "H"), dict(CPA=0)),     # |0-2| = 2
    (row("I2~", m=4, category="x", n=2), answer("A", "E", "F", "G"), dict(CPA=1)),
    (row("I2<=", m=3, category="x", n=1), answer("A", "E", "F"), dict(CPA=1)),         # 1 + 0 <= 1
    (row("I2<=", m=3, category="x", n=1), answer("A", "ZZZ", "F"), dict(CPA=0, NonExist=1)),   # 1 + 1 > 1
    (row("I2<=", m=3, category="x", n=1), answer("ZZZ", "E", "F"), dict(CPA=1)),       # 0 + 1 <= 1
    (row("I2<=", m=3, category="x", n=1), answer("A", "B"), dict(CPA=0, CorrectCount=0)),
]


@pytest.mark.parametrize("r, text, expected", CASES)
def test_sample_metrics_table(cat, r, text, expected):
    got = sample_metrics(r, text, cat)
    for key, value in expected.items():
        if value is None:
            assert got[key] is None, key
        else:
            assert got[key] == pytest.approx(value), key


def test_full_history_argument_and_rates(cat):
    r = row("I0", m=4, history=[1], target=3)
    got = sample_metrics(r, answer("A", "B", "C", "D"), cat, full_history=[1, 2, 9])
    assert (got["InHistory"], got["InFullHistory"]) == (1, 2)
    assert (got["InHistory_rate"], got["InFullHistory_rate"]) == (0.25, 0.5)
    assert sample_metrics(r, answer("A"), cat)["InFullHistory"] is None


def test_completion_forms(cat):
    r = row("I0", m=2, target=2)
    conv = [{"role": "user", "content": "x"}, {"role": "assistant", "content": answer("A", "B")}]
    for comp in (answer("A", "B"), conv, ["A", "B"]):
        got = sample_metrics(r, comp, cat)
        assert got["HR"] == 1 and got["MRR"] == 0.5 and got["CorrectCount"] == 1


def test_exact_and_fuzzy_reported_separately():
    cat2 = Catalog(["Toy Story", "Heat", "Casino"], [["Animation"], ["Crime"], ["Crime"]])
    rows = [row("I0", m=2, target=1), row("I1+", m=2, target=2, category="Crime")]
    comps = ["1. Toy Stroy\n2. Heat", "1. Haet\n2. Toy Story"]
    out = evaluate(rows, comps, cat2, fuzzy=True)
    ex, fz = out["exact"], out["fuzzy"]
    assert ex["I0"]["HR"] == 0 and fz["I0"]["HR"] == 1 and fz["I0"]["NDCG"] == 1.0
    assert ex["I0"]["NonExist"] == 1 and fz["I0"]["NonExist"] == 0
    assert ex["I1+"]["TCP"] == 0.0 and fz["I1+"]["TCP"] == 0.5
    assert ex["all"]["n_samples"] == 2 and ex["all"]["NonExist_rate"] == pytest.approx(0.5)
    assert "fuzzy" not in evaluate(rows, comps, cat2, fuzzy=False)


def test_aggregation_per_task(cat):
    rows = [row("I0", m=2, target=1), row("I0", m=2, target=1), row("I1+", m=2, category="x", target=5)]
    comps = [answer("A", "B"), answer("B", "C", "D"), answer("E", "A")]
    out = evaluate(rows, comps, cat, fuzzy=False, return_samples=True)
    agg = out["exact"]
    assert agg["I0"]["n_samples"] == 2 and agg["I1+"]["n_samples"] == 1 and agg["all"]["n_samples"] == 3
    assert agg["I0"]["HR"] == 0.5 and agg["I0"]["NDCG"] == 0.5 and agg["I0"]["CorrectCount"] == 0.5
    assert agg["I1+"]["TCP"] == 0.5 and agg["I1+"]["HR"] == 1.0 and agg["I1+"]["MRR"] == 1.0
    assert agg["all"]["HR"] == pytest.approx(2 / 3)
    assert "TCP" not in agg["I0"] and agg["all"]["n_TCP"] == 1 and agg["all"]["TCP"] == 0.5
    assert [s["task"] for s in out["samples_exact"]] == ["I0", "I0", "I1+"]
    assert aggregate_metrics([]) == {}


@pytest.mark.parametrize("bad, field", [
    ({"task": "I0", "history": [], "target": 1}, "item_count"),
    ({"task": "I2<=", "item_count": 3, "history": [], "target": 1, "category": "x"}, "n"),
    ({"task": "I1-", "item_count": 3, "history": [], "target": 1}, "category"),
    ({"task": "I0", "item_count": 3, "history": [], "target": 1, "full_history": ["?"]}, "full_history"),
])
def test_bad_rows_raise(cat, bad, field):
    with pytest.raises(ValueError, match=f"'{field}'"):
        sample_metrics(bad, "1. A", cat)


def test_evaluate_skips_other_tasks(cat):
    rows = [row("I0", m=1, target=1), {"task": "I4", "prompt": "hi"}, {"task": "I3", "item_count": 3}]
    out = evaluate(rows, ["1. A", "chat", "1. A"], cat, fuzzy=False)
    assert out["skipped"] == {"I4": 1, "I3": 1} and out["exact"]["all"]["n_samples"] == 1
    with pytest.raises(ValueError, match="'task'"):
        evaluate(rows, ["1. A", "chat", "1. A"], cat, fuzzy=False, skip_other_tasks=False)


def test_evaluate_length_mismatch(cat):
    with pytest.raises(ValueError):
        evaluate([row("I0", m=1)], [], cat)


_LINES = st.one_of(st.sampled_from(TITLES + ["ZZZ", "A (1999)", '"B"', "", "Sure, here:", "\x00"]),
                   st.text(max_size=15))


@FAST
@given(lines=st.lists(_LINES, max_size=20), raw=st.text(max_size=200), use_raw=st.booleans(),
       task=st.sampled_from(["I0", "I1+", "I1-", "I2<=", "I2>=", "I2~"]), m=st.integers(1, 10),
       n=st.integers(0, 10), target=st.one_of(st.none(), st.integers(1, 8)),
       history=st.lists(st.integers(1, 8), max_size=4), fuzzy=st.booleans())
def test_metric_bounds(cat, lines, raw, use_raw, task, m, n, target, history, fuzzy):
    text = raw if use_raw else answer(*lines)
    r = row(task, m=m, history=history, target=target, category="x", n=min(n, m), full_history=history + [1])
    got = sample_metrics(r, text, cat, fuzzy=fuzzy)
    for key in ("HR", "NDCG", "MRR", "TCP", "CPA", "CorrectCount", "NonExist_rate", "RepeatItem_rate",
                "InHistory_rate", "InFullHistory_rate"):
        assert got[key] is None or 0.0 <= got[key] <= 1.0, key
    for key in ("NonExist", "RepeatItem", "InHistory", "InFullHistory"):
        assert 0 <= got[key] <= m and got[key] == pytest.approx(got[key + "_rate"] * m), key
    assert got["InHistory"] <= got["InFullHistory"]
