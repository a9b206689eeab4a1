"""RecLM-gen rewards (REFERENCE.md §1.3), TRL adapters and A-SFT weights, against hand-computed values."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recalign.data import Catalog
from recalign.eval.metrics import sample_metrics
from recalign.rewards import (asft_weights, item_and_list_rewards, list_normalizer, make_format_reward,
                              make_list_reward)
from recalign.rewards.asft import advantages

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
L2 = math.log2

# items 1..4 (A-D) are in "x", 5..8 (E-H) in "y"; H is also the only "z" item
TITLES = ["A", "B", "C", "D", "E", "F", "G", "H"]
CATS = [["x"], ["x"], ["x"], ["x"], ["y"], ["y"], ["y"], ["y", "z"]]
RANKS = {i: i - 1 for i in range(1, 9)}          # teacher rank of item i = i - 1 (A is rank 0)
IDX = {t: i for i, t in enumerate(TITLES, 1)}


@pytest.fixture(scope="module")
def cat() -> Catalog:
    return Catalog(TITLES, CATS)


def answer(*titles: str) -> str:
    return "\n".join(f"{i}. {t}" for i, t in enumerate(titles, 1))


def row(task="I0", m=10, history=(), target=None, category=None, n=None, direction=None):
    r = {"task": task, "item_count": m, "history": list(history), "target": target}
    if category is not None:
        r["category"] = category
    if n is not None:
        r["n"] = n
    if direction is not None:
        r["direction"] = direction
    return r


def rs(item: int) -> float:
    """Rank score of a non-target item under RANKS."""
    return 1 / L2(RANKS[item] + 3)


# ------------------------------------------------------------------ constants

def test_list_normalizer_values():
    assert list_normalizer(1) == 1.0
    assert list_normalizer(2) == pytest.approx(1 + 1 / L2(3) ** 2)
    assert list_normalizer(3) == pytest.approx(1 + 1 / L2(3) ** 2 + 1 / 4)
    assert list_normalizer(10) == pytest.approx(sum(1 / L2(j + 2) ** 2 for j in range(10)))
    assert list_normalizer(5000) == pytest.approx(sum(1 / L2(j + 2) ** 2 for j in range(5000)))


# ------------------------------------------------------------------ illegal items and rank scores

def test_illegal_rules_in_order(cat):
    # m=5: A ok, ZZZ not in catalog, A repeat, H in history, B target (ok), C beyond m
    r = item_and_list_rewards(row("I0", m=5, history=[8], target=2), answer("A", "ZZZ", "A", "H", "B", "C"),
                              RANKS, cat)
    assert r.status == ["ok", "nonexist", "repeat", "history", "ok", "exceed"]
    assert r.item_rewards == pytest.approx([rs(1), -1, -1, -1, 1.0, -1])
    assert r.rank_scores == pytest.approx([rs(1), -1, -1, -1, 1.0, -1])
    assert r.items == [1, None, 1, 8, 2, 3]
    # exceed is checked first: an in-history item beyond m is "exceed"
    r = item_and_list_rewards(row("I0", m=1, history=[8], target=2), answer("A", "H"), RANKS, cat)
    assert r.status == ["ok", "exceed"]
    # a repeat of an in-history item is a repeat
    r = item_and_list_rewards(row("I0", m=3, history=[8]), answer("H", "H"), RANKS, cat)
    assert r.status == ["history", "repeat"]


def test_rank_score_and_target(cat):
    # the target scores 1.0 whatever its teacher rank; others 1/log2(r+3)
    r = item_and_list_rewards(row("I0", m=3, target=8), answer("H", "A", "D"), RANKS, cat)
    assert r.rank_scores == pytest.approx([1.0, 1 / L2(3), 1 / L2(6)])
    assert r.item_rewards == r.rank_scores        # I0: item reward = rank score
    assert r.task_scores == [None, None, None]


def test_list_reward_hand_computed(cat):
    # I0, m=3, target B (rank 1): B, A (rank 0), C (rank 2)
    r = item_and_list_rewards(row("I0", m=3, target=2), answer("B", "A", "C"), RANKS, cat)
    rc = 1.0 / L2(2) + (1 / L2(3)) / L2(3) + (1 / L2(5)) / L2(4)
    b3 = 1 + 1 / L2(3) ** 2 + 1 / L2(4) ** 2
    assert r.rank_part == pytest.approx(rc / b3)
    assert r.task_list == 1.0                                   # target at position 0
    assert r.list_reward == pytest.approx(10 * (0.5 * rc / b3 + 0.5 * 1.0))
    # target at position 2 -> task_list 1/log2(4); illegal items add -1 each to the sum
    r = item_and_list_rewards(row("I0", m=3, target=2), answer("A", "ZZZ", "B", "D"), RANKS, cat)
    rc = (1 / L2(3)) / L2(2) - 1 + 1.0 / L2(4) - 1
    assert r.task_list == pytest.approx(0.5)
    assert r.list_reward == pytest.approx(10 * (0.5 * rc / b3 + 0.5 * 0.5))
    # no target in the list -> task_list 0
    r = item_and_list_rewards(row("I0", m=3, target=7), answer("A"), RANKS, cat)
    assert r.task_list == 0.0 and r.list_reward == pytest.approx(10 * 0.5 * (1 / L2(3)) / b3)


def test_perfect_list_scores_exactly_ten(cat):
    # target first, then the teacher's top items in rank order: Σ rank_corrected = B_m
    ranks = {5: 7, 1: 0, 2: 1, 3: 2}
    r = item_and_list_rewards(row("I0", m=4, target=5), answer("E", "A", "B", "C"), ranks, cat)
    assert r.rank_part == pytest.approx(1.0) and r.list_reward == pytest.approx(10.0)


def test_list_normaliser_indexed_by_requested_count(cat):
    # the same single-item answer is normalised by B_m of the requested m, not of its length
    for m in (1, 2, 5):
        r = item_and_list_rewards(row("I0", m=m, target=1), answer("A"), RANKS, cat)
        assert r.list_reward == pytest.approx(10 * (0.5 * 1.0 / list_normalizer(m) + 0.5))


def test_empty_and_garbage_answers(cat):
    for text in ["", "Sure! I can't help with that.", "\n" * 1000, None, b"\xff\xfe"[:0]]:
        r = item_and_list_rewards(row("I1+", m=3, target=1, category="x"), text, RANKS, cat)
        assert r.item_rewards == [] and r.rank_part == 0.0
        assert r.list_reward == pytest.approx(10 * 0.5 * 1 / (3 - 0 + 1))
    # a line of binary garbage is one item that is not in the catalog
    r = item_and_list_rewards(row("I1+", m=3, target=1, category="x"), "\x00\xff\ufffd", RANKS, cat)
    assert r.status == ["nonexist"] and r.list_reward == pytest.approx(10 * (0.5 * -1 / list_normalizer(3) + 0.5 / 4))


# ------------------------------------------------------------------ control tasks

@pytest.mark.parametrize("task, m, n, seq, expected", [
    # ≤: 0.5 if out>m-n else (1 if i∉C elif in<n: 0.5 else 0); counts include the current item
    ("I2<=", 5, 2, "ABCE", [0.5, 0.0, 0.0, 1.0]),
    ("I2<=", 4, 2, "EFGA", [1.0, 1.0, 0.5, 0.5]),
    # ≥: 0.5 if in>n else (1 if i∈C elif out<m-n: 0.5 else 0)
    ("I2>=", 4, 2, "ABCE", [1.0, 1.0, 0.5, 0.5]),
    ("I2>=", 4, 2, "EFGA", [0.5, 0.0, 0.0, 1.0]),
    # ≈: i∈C: 1 if in<=n else 0; i∉C: 1 if in>=n else (0.5 if out<=m-n else 0)
    ("I2~", 5, 2, "ABCEF", [1.0, 1.0, 0.0, 1.0, 1.0]),
    ("I2~", 4, 2, "EFGA", [0.5, 0.5, 0.0, 1.0]),
    # +C / -C
    ("I1+", 3, None, "AEB", [1.0, 0.0, 1.0]),
    ("I1-", 3, None, "AEB", [0.0, 1.0, 0.0]),
])
def test_task_scores(cat, task, m, n, seq, expected):
    r = item_and_list_rewards(row(task, m=m, category="x", n=n), answer(*seq), RANKS, cat)
    assert r.status == ["ok"] * len(seq)
    assert r.task_scores == expected
    assert r.item_rewards == pytest.approx([0.5 * rs(IDX[t]) + 0.5 * ts for t, ts in zip(seq, expected)])


@pytest.mark.parametrize("task, m, n, category, seq, in_cnt, task_list", [
    ("I1+", 3, None, "x", "AEB", 2, 1 / (3 - 2 + 1)),
    ("I1+", 3, None, "z", "HA", 1, 1 / (1 - 1 + 1)),      # min(m, |C|) with |C| = 1
    ("I1+", 3, None, "x", "A", 1, 1 / (3 - 1 + 1)),
    ("I1-", 3, None, "x", "AEB", 2, 1 / (3 - 1 + 1)),     # out_cnt = 1
    ("I2<=", 3, 1, "x", "ABC", 3, 1 / (2 + 1)),
    ("I2<=", 3, 1, "x", "AEF", 1, 1.0),
    ("I2>=", 3, 3, "x", "AEF", 1, 1 / (2 + 1)),
    ("I2>=", 3, 2, "x", "ABC", 3, 1.0),
    ("I2~", 3, 2, "x", "ABE", 2, 1.0),
    ("I2~", 3, 2, "x", "AEF", 1, 1 / 2),
    ("I2~", 3, 0, "x", "ABC", 3, 1 / 4),
])
def test_control_list_task_scores(cat, task, m, n, category, seq, in_cnt, task_list):
    r = item_and_list_rewards(row(task, m=m, category=category, n=n), answer(*seq), RANKS, cat)
    assert r.in_cnt == in_cnt
    assert r.task_list == pytest.approx(task_list)
    rc = sum(rs(IDX[t]) / L2(i + 2) for i, t in enumerate(seq))
    assert r.list_reward == pytest.approx(10 * (0.5 * rc / list_normalizer(m) + 0.5 * task_list))


def test_illegal_items_are_not_counted(cat):
    # A, A (repeat), ZZZ, D (history): only the first A counts -> in_cnt = 1
    r = item_and_list_rewards(row("I1+", m=4, history=[4], category="x"), answer("A", "A", "ZZZ", "D"), RANKS, cat)
    assert (r.in_cnt, r.out_cnt) == (1, 0)
    assert r.task_list == pytest.approx(1 / (4 - 1 + 1))
    assert r.item_rewards[1:] == [-1.0, -1.0, -1.0] and r.task_scores[1:] == [-1.0, -1.0, -1.0]
    # ≈ with n=1: E after an illegal in-C repeat still sees in_cnt = 1 -> 1.0, and B -> in=2 > 1 -> 0
    r = item_and_list_rewards(row("I2~", m=4, n=1, category="x"), answer("A", "A", "E", "B"), RANKS, cat)
    assert r.task_scores == [1.0, -1.0, 1.0, 0.0]


def test_direction_spellings(cat):
    base = item_and_list_rewards(row("I2<=", m=3, n=1, category="x"), answer("A", "E"), RANKS, cat)
    for task, d in [("I2", "\u2264"), ("I2", "<="), ("I2\u2264", None), ("I2<=", "\u2264")]:
        r = item_and_list_rewards(row(task, m=3, n=1, category="x", direction=d), answer("A", "E"), RANKS, cat)
        assert r.task == "I2<=" and r.item_rewards == base.item_rewards
    r = item_and_list_rewards(row("I1", m=3, category="x", direction="\u2212"), answer("A", "E"), RANKS, cat)
    assert r.task == "I1-" and r.task_scores == [0.0, 1.0]
    r = item_and_list_rewards(row("I2", m=3, n=1, category="x", direction="\u2248"), answer("A"), RANKS, cat)
    assert r.task == "I2~"


# ------------------------------------------------------------------ teacher ranks, fuzzy, spans

def test_teacher_rank_forms(cat):
    text = answer("B", "C", "D")
    arr = np.array([0] + [RANKS[i] for i in range(1, 9)])
    results = [item_and_list_rewards(row("I0", m=3), text, tr, cat).item_rewards
               for tr in (RANKS, arr, list(arr), lambda i: RANKS[i])]
    assert all(x == pytest.approx(results[0]) for x in results)
    assert results[0] == pytest.approx([rs(2), rs(3), rs(4)])
    # missing rank -> ranked last (N - 1 = 7); None -> target-only rank score
    r = item_and_list_rewards(row("I0", m=3), text, {2: 0}, cat)
    assert r.rank_scores == pytest.approx([1 / L2(3), 1 / L2(10), 1 / L2(10)])
    r = item_and_list_rewards(row("I0", m=3, target=3), text, None, cat)
    assert r.rank_scores == [0.0, 1.0, 0.0]


def test_fuzzy_flag(cat):
    cat2 = Catalog(["Toy Story", "Heat"], [["x"], ["y"]])
    text = "1. Toy Stroy\n2. Heat"
    exact = item_and_list_rewards(row("I0", m=2, target=1), text, None, cat2)
    fuzzy = item_and_list_rewards(row("I0", m=2, target=1), text, None, cat2, fuzzy=True)
    assert exact.status == ["nonexist", "ok"] and exact.item_rewards == [-1.0, 0.0]
    assert fuzzy.status == ["ok", "ok"] and fuzzy.item_rewards == [1.0, 0.0]


def test_thousands_of_lines_stay_fast(cat):
    import time

    text = "\n".join(f"{i}. Unknown title number {i}" for i in range(1, 3001)) + "\n" + "\x00" * 10_000
    t0 = time.perf_counter()
    r = item_and_list_rewards(row("I2~", m=10, n=3, category="x"), text, RANKS, cat, fuzzy=True)
    assert len(r.item_rewards) == 3000 and set(r.item_rewards) == {-1.0}
    assert r.status[:10] == ["nonexist"] * 10 and r.status[10:] == ["exceed"] * 2990
    assert time.perf_counter() - t0 < 3


def test_conversational_text(cat):
    msgs = [{"role": "user", "content": "recommend"}, {"role": "assistant", "content": answer("A", "B")}]
    assert item_and_list_rewards(row("I0", m=2), msgs, RANKS, cat).items == [1, 2]


def test_spans_and_line_ends(cat):
    text = "Here you go:\n1. A\n2. \"E\" (2001)\n3. ZZZ"
    r = item_and_list_rewards(row("I0", m=3), text, RANKS, cat)
    assert [text[a:b] for a, b in r.spans] == ["A", '"E" (2001)', "ZZZ"]
    assert [text[e - 1] for e in r.line_ends] == ["A", ")", "Z"] and r.line_ends[-1] == len(text)
    assert r.items == [1, 5, None] and r.titles == ["A", "E (2001)", "ZZZ"]
    # a list of titles instead of text
    r2 = item_and_list_rewards(row("I0", m=3), ["A", "E (2001)", "ZZZ"], RANKS, cat)
    assert r2.item_rewards == r.item_rewards and r2.spans == [(-1, -1)] * 3


def test_format_score(cat):
    assert item_and_list_rewards(row("I0", m=3), answer("A", "B", "C"), None, cat).format_score == 1.0
    assert item_and_list_rewards(row("I0", m=3), answer("A", "B"), None, cat).format_score == pytest.approx(2 / 3)
    assert item_and_list_rewards(row("I0", m=2), answer("A", "B", "C", "D"), None, cat).format_score == 0.5
    assert item_and_list_rewards(row("I0", m=2), "", None, cat).format_score == 0.0


# ------------------------------------------------------------------ rows

@pytest.mark.parametrize("bad, field, task", [
    ({"item_count": 3, "history": [], "target": 1}, "task", None),
    ({"task": "I0", "history": [], "target": 1}, "item_count", "I0"),
    ({"task": "I0", "item_count": 3, "target": 1}, "history", "I0"),
    ({"task": "I0", "item_count": 3, "history": []}, "target", "I0"),
    ({"task": "I1+", "item_count": 3, "history": [], "target": 1}, "category", "I1+"),
    ({"task": "I2>=", "item_count": 3, "history": [], "target": 1, "category": "x"}, "n", "I2>="),
    ({"task": "I2", "item_count": 3, "history": [], "target": 1, "category": "x", "n": 1}, "direction", "I2"),
    ({"task": "I1+", "item_count": 3, "history": [], "target": 1, "category": "nope"}, "category", "I1+"),
    ({"task": "I0", "item_count": 0, "history": [], "target": 1}, "item_count", "I0"),
    ({"task": "I0", "item_count": 3, "history": ["a"], "target": 1}, "history", "I0"),
    ({"task": "I9", "item_count": 3, "history": [], "target": 1}, "task", "I9"),
    ({"task": "I1+", "direction": "-", "item_count": 3, "history": [], "target": 1, "category": "x"},
     "direction", "I1+"),
])
def test_bad_rows_raise_naming_field_and_task(cat, bad, field, task):
    with pytest.raises(ValueError) as e:
        item_and_list_rewards(bad, "1. A", RANKS, cat)
    assert f"'{field}'" in str(e.value)
    if task is not None:
        assert task in str(e.value)


# ------------------------------------------------------------------ properties

_LINES = st.one_of(st.sampled_from(TITLES + ["ZZZ", "A (1999)", '"B"', "", "Sure, here:", "\x00"]),
                   st.text(max_size=20))


@st.composite
def answers(draw):
    lines = draw(st.lists(_LINES, max_size=25))
    style = draw(st.sampled_from(["{i}. {t}", "{t}", "- {t}", "{i}) {t}"]))
    return "\n".join(style.format(i=i, t=t) for i, t in enumerate(lines, 1))


@FAST
@given(text=st.one_of(answers(), st.text(max_size=300)),
       task=st.sampled_from(["I0", "I1+", "I1-", "I2<=", "I2>=", "I2~"]),
       m=st.integers(1, 10), n=st.integers(0, 10), target=st.one_of(st.none(), st.integers(1, 8)),
       history=st.lists(st.integers(1, 8), max_size=4), perm=st.permutations(range(8)))
def test_reward_bounds(cat, text, task, m, n, target, history, perm):
    ranks = {i + 1: r for i, r in enumerate(perm)}
    r = item_and_list_rewards(row(task, m=m, history=history, target=target, category="x", n=min(n, m)),
                              text, ranks, cat)
    assert all(-1.0 <= x <= 1.0 for x in r.item_rewards)
    assert len(r.item_rewards) == len(r.spans) == len(r.status)
    assert 0.0 <= r.task_list <= 1.0 and 0.0 <= r.format_score <= 1.0
    n_items = len(r.item_rewards)
    lower = 10 * 0.5 * -n_items / list_normalizer(m)
    assert lower - 1e-9 <= r.list_reward <= 10.0 + 1e-9


# ------------------------------------------------------------------ rewards and metrics agree

@pytest.mark.parametrize("task", ["I0", "I1+", "I2>="])
@pytest.mark.parametrize("p", [0, 1, 4])
def test_reward_and_metric_agree_on_target_position(cat, task, p):
    others = ["A", "B", "C", "D", "E"]
    seq = others[:p] + ["H"] + others[p:4]
    rw = row(task, m=5, target=8, category="x", n=2)
    text = answer(*seq)
    r = item_and_list_rewards(rw, text, RANKS, cat)
    met = sample_metrics(rw, text, cat)
    assert met["HR"] == 1 and met["NDCG"] == pytest.approx(1 / L2(p + 2))
    assert r.rank_scores[p] == 1.0
    if task == "I0":
        assert r.item_rewards[p] == 1.0 and r.task_list == pytest.approx(met["NDCG"])
    # and both see the same items
    assert met["NonExist"] == r.status.count("nonexist") == 0


# ------------------------------------------------------------------ TRL adapters

def test_list_reward_adapter(cat):
    f = make_list_reward(cat)
    comps = [answer("B", "A"), [{"role": "user", "content": "hi"}, {"role": "assistant", "content": answer("B", "A")}],
             answer("A"), answer("A")]
    out = f(prompts=["p"] * 4, completions=comps, completion_ids=None, task=["I0", "I0", "I0", "I5"],
            history=[[], [], [], []], target=[2, 2, 2, 2], item_count=[2, 2, 2, 2],
            teacher_ranks=[{"1": 0}, {1: 0}, None, None], trainer_state=object())
    expect = 10 * (0.5 * (1.0 + (1 / L2(3)) / L2(3)) / list_normalizer(2) + 0.5)
    assert out[0] == pytest.approx(expect) and out[1] == pytest.approx(expect)
    assert out[2] == pytest.approx(0.0) and out[3] is None
    assert f.__name__ == "recalign_list_reward"


def test_list_reward_adapter_batched_teacher(cat):
    calls = []

    def teacher(rows):
        calls.append(len(rows))
        return [RANKS for _ in rows]

    f = make_list_reward(cat, teacher_ranks_fn=teacher)
    out = f(prompts=["p", "p", "p"], completions=[answer("B"), answer("C"), answer("C")], task=["I0", "I0", "I0"],
            history=[[], [], None], target=[None, None, None], item_count=[1, 1, None])
    assert calls == [2]                                       # one call, judgeable rows only
    assert out[0] == pytest.approx(10 * 0.5 * rs(2)) and out[1] == pytest.approx(10 * 0.5 * rs(3))
    assert out[2] is None


def test_format_reward_adapter(cat):
    f = make_format_reward(cat)
    out = f(prompts=["p"] * 3, completions=[answer("A", "B"), answer("A", "A", "Q"), "garbage"],
            task=["I0"] * 3, history=[[], [], []], target=[1, 1, 1], item_count=[2, 2, 2])
    assert out == pytest.approx([1.0, 1 / 3, 0.0])


# ------------------------------------------------------------------ A-SFT

def test_asft_weights():
    r = np.array([0.0, 1.0, 2.0])
    assert asft_weights(r) == pytest.approx(np.exp(r))
    assert asft_weights(r, lam=2.0) == pytest.approx(np.exp(r / 2))
    assert asft_weights(r, baselines=[1.0, 1.0, 1.0]) == pytest.approx(np.exp(r - 1))
    # per-user mean baseline
    w = asft_weights([1.0, 3.0, 5.0], "user_mean", user_ids=[7, 7, 9])
    assert w == pytest.approx(np.exp([-1.0, 1.0, 0.0]))
    assert advantages([2.0, 4.0], "user_mean", user_ids=["u", "u"]) == pytest.approx([-1.0, 1.0])
    # clipping of w and of A
    assert asft_weights(r, clip=2.0) == pytest.approx([1.0, 2.0, 2.0])
    assert asft_weights(r, clip_advantage=0.5) == pytest.approx(np.exp([0.0, 0.5, 0.5]))
    # normalisation to mean 1, also for huge rewards (no overflow)
    w = asft_weights(r, normalize=True)
    assert w.mean() == pytest.approx(1.0) and w == pytest.approx(np.exp(r) / np.exp(r).mean())
    w = asft_weights([1000.0, 1001.0], normalize=True)
    assert np.all(np.isfinite(w)) and w == pytest.approx(np.array([1, math.e]) / ((1 + math.e) / 2))
    assert asft_weights([1e6], clip=5.0) == pytest.approx([5.0])
    assert asft_weights([]).shape == (0,)


@pytest.mark.parametrize("kwargs", [dict(lam=0), dict(lam=-1), dict(clip=0), dict(baselines=[1.0]),
                                    dict(baselines="user_mean"), dict(baselines="median")])
def test_asft_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        asft_weights([1.0, 2.0], **kwargs)
    with pytest.raises(ValueError):
        asft_weights([1.0, float("nan")])


GARBAGE = st.one_of(answers(), st.text(max_size=400),
                    st.binary(max_size=300).map(lambda b: b.decode("latin-1")),
                    st.lists(st.sampled_from(TITLES + ["", " ", "1.", "\n", "A (1995)", "\"B\"", "Ä", "\x00"]),
                             max_size=40).map("".join))


@settings(max_examples=10_000, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(text=GARBAGE, task=st.sampled_from(["I0", "I1+", "I1-", "I2<=", "I2>=", "I2~"]),
       parser=st.sampled_from(["lenient", "strict"]), fuzzy=st.booleans(),
       m=st.integers(1, 10), target=st.one_of(st.none(), st.integers(1, 8)),
       history=st.lists(st.integers(1, 8), max_size=4))
def test_soak_garbage_answers_never_raise_or_go_non_finite(cat, text, task, parser, fuzzy, m, target, history):
    """10,000 generated answers through both parsers, the rewards and the metrics (~15 s)."""
    rw = row(task, m=m, history=history, target=target, category="x", n=min(2, m))
    r = item_and_list_rewards(rw, text, RANKS, cat, parser=parser, fuzzy=fuzzy and parser == "lenient")
    values = [*r.item_rewards, r.list_reward, r.task_list, r.format_score]
    met = sample_metrics(rw, text, cat, parser=parser, fuzzy=fuzzy and parser == "lenient")
    values += [v for v in met.values() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    assert all(math.isfinite(v) for v in values), values
