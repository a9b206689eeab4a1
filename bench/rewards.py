"""Benchmark: RecLM-gen rewards (parse + match + item/list rewards) in lists per second.

K = 10 items per answer, synthetic catalogs of 1,682 (ml-100k's size) and 20,000
titles, a mix of all six tasks and ~15 % illegal items (unknown titles, repeats, history
items, one item too many). Ours (``recalign.rewards.item_and_list_rewards``, with row
validation) against a per-item Python loop written the way the paper's code does it
(RecLM-gen ``rl/reward.py``: ``title2item`` dict of lists on raw titles, ``rm_idx``
regex per line, ``category2item[c]`` lists, ``item in item_list[:idx]`` repeats,
``math.log2`` per item). A second baseline variant holds categories as sets, to show
what is due to list membership alone. Both sides compute the same numbers (checked).

Run (one core):  OMP_NUM_THREADS=1 python bench/rewards.py [--lists 4000] [--repeat 3]
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import random
import re
import time

import numpy as np

from recalign.data import Catalog
from recalign.rewards import item_and_list_rewards

K = 10
TASKS = ["I0", "I1+", "I1-", "I2<=", "I2>=", "I2~"]
_WORDS = ("star love night dark city last blue red man woman king queen dead life war story "
          "house river road fire ice dream heart ghost secret lost wild little big return day "
          "summer winter moon sun sea island game time girl boy family world happy sweet cold").split()


def make_catalog(n_items: int, n_categories: int = 20, seed: int = 0) -> Catalog:
    rng = random.Random(seed)
    titles, seen = [], set()
    while len(titles) < n_items:
        t = " ".join(rng.choice(_WORDS).title() for _ in range(rng.randint(1, 4)))
        t = f"{t} ({rng.randint(1930, 2020)})"
        if t not in seen:
            seen.add(t)
            titles.append(t)
    cats = [f"Genre{j}" for j in range(n_categories)]
    categories = [rng.sample(cats, rng.randint(1, 3)) for _ in range(n_items)]
    return Catalog(titles, categories)


def make_cases(cat: Catalog, n_lists: int, seed: int = 1):
    rng = random.Random(seed)
    nprs = np.random.default_rng(seed)
    n = len(cat)
    rank_pool = [nprs.permutation(n + 1).astype(np.int64) for _ in range(16)]   # index 0 = padding
    cases = []
    for i in range(n_lists):
        task = TASKS[i % len(TASKS)]
        history = rng.sample(range(1, n + 1), 10)
        target = rng.randint(1, n)
        row = {"task": task, "history": history, "target": target, "item_count": K,
               "category": cat.categories[rng.randrange(len(cat.categories))] if task != "I0" else None,
               "direction": None, "n": rng.randint(1, 9) if task.startswith("I2") else None}
        items: list = []
        for _ in range(K + (1 if rng.random() < 0.2 else 0)):
            u = rng.random()
            if u < 0.05:
                items.append(None)                              # not in the catalog
            elif u < 0.10 and items:
                items.append(rng.choice(items))                 # repeat
            elif u < 0.15:
                items.append(rng.choice(history))               # in the history window
            elif u < 0.20:
                items.append(target)
            else:
                items.append(rng.randint(1, n))
        lines = [f"{j + 1}. {cat.titles[it] if it is not None else 'Nonexistent Film ' + str(j)}"
                 for j, it in enumerate(items)]
        cases.append((row, "\n".join(lines), rank_pool[i % len(rank_pool)]))
    return cases


# ----------------------------------------------------------------------------- baseline

def rm_idx(s):
    return re.sub(r'^(\d+)\. *', '', s, count=1)


class PaperStyleReward:
    """The per-item loop of RecLM-gen's ``RewardModel.reward_calculate``, minus torch and
    the teacher server (ranks come from the same array ours gets)."""

    def __init__(self, cat: Catalog, category_sets: bool = False):
        self.title2item: dict[str, list[int]] = {}
        for i, t in enumerate(cat.titles[1:], 1):
            self.title2item.setdefault(t, []).append(i)
        self.category2item: dict = {}
        for i, cs in enumerate(cat.item_categories):
            for c in cs:
                self.category2item.setdefault(c, []).append(i)
        if category_sets:
            self.category2item = {c: set(v) for c, v in self.category2item.items()}
        self.best_ranking_score = [0]
        for i in range(0, K * 2):
            self.best_ranking_score.append(self.best_ranking_score[i] + self.ranking_score_func(i) / math.log2(i + 2))
        self.first_item = 0   # the paper maps unknown titles to some item; padding avoids false repeats

    @staticmethod
    def ranking_score_func(idx):
        return 1.0 / math.log2(idx + 2)

    def __call__(self, row, text, ranks):
        title_list = [rm_idx(line.strip()) for line in text.split("\n") if line.strip()]
        task = row["task"]
        alpha = 0.5
        ranking_score_frac, task_score_frac = alpha, 1.0 - alpha
        item_count = row["item_count"]
        category_count = row["n"]
        item_list = [self.title2item[t][0] if t in self.title2item else self.first_item for t in title_list]
        target_item = row["target"]
        item_ranking = [int(ranks[i]) for i in item_list]
        target_category = row["category"]
        in_cat = self.category2item[target_category] if target_category is not None else ()
        rank_score, rank_corrected_score, task_score = [], [], []
        in_category_count = out_category_count = 0
        for idx, (it, r) in enumerate(zip(item_list, item_ranking)):
            if idx >= item_count or title_list[idx] not in self.title2item or it in item_list[:idx] \
                    or it in row["history"]:
                rank_score.append(-1.0)
                rank_corrected_score.append(-1.0)
                task_score.append(-1.0)
                continue
            s = 1.0 if it == target_item else self.ranking_score_func(r + 1)
            rank_score.append(s)
            rank_corrected_score.append(s / math.log2(idx + 2))
            if it in in_cat:
                in_category_count += 1
            else:
                out_category_count += 1
            if task == "I0":
                pass
            elif task in ("I1+", "I1-"):
                if it in in_cat:
                    task_score.append(1.0 if "+" in task else 0.0)
                else:
                    task_score.append(1.0 if "-" in task else 0.0)
            elif task == "I2<=":
                if out_category_count > item_count - category_count:
                    task_score.append(0.5)
                elif it not in in_cat:
                    task_score.append(1.0)
                elif in_category_count < category_count:
                    task_score.append(0.5)
                else:
                    task_score.append(0.0)
            elif task == "I2>=":
                if in_category_count > category_count:
                    task_score.append(0.5)
                elif it in in_cat:
                    task_score.append(1.0)
                elif out_category_count < item_count - category_count:
                    task_score.append(0.5)
                else:
                    task_score.append(0.0)
            else:
                if it in in_cat:
                    task_score.append(1.0 if in_category_count <= category_count else 0.0)
                elif in_category_count >= category_count:
                    task_score.append(1.0)
                else:
                    task_score.append(0.5 if out_category_count <= item_count - category_count else 0.0)
        if task == "I0":
            item_reward = rank_score
            list_task_reward = 1.0 / math.log2(item_list.index(target_item) + 2) if target_item in item_list else 0.0
        else:
            item_reward = [a * ranking_score_frac + b * task_score_frac for a, b in zip(rank_score, task_score)]
            if task in ("I1+", "I1-"):
                target_count = min(item_count, len(self.category2item[target_category])) if "+" in task else item_count
                cnt = in_category_count if "+" in task else out_category_count
                list_task_reward = 1.0 / (target_count - cnt + 1)
            else:
                ok = {"I2<=": in_category_count <= category_count, "I2>=": in_category_count >= category_count,
                      "I2~": in_category_count == category_count}[task]
                list_task_reward = 1.0 if ok else 1.0 / (abs(in_category_count - category_count) + 1)
        list_reward = (sum(rank_corrected_score) / self.best_ranking_score[item_count] * ranking_score_frac
                       + list_task_reward * task_score_frac)
        return item_reward, float(list_reward * 10)


# ----------------------------------------------------------------------------- timing

def lists_per_second(fn, cases, repeat: int) -> float:
    """Lists per second of this process's CPU time (best of ``repeat``): single-threaded
    code, so this is one core's throughput, and less disturbed by other processes than
    wall time on a shared machine."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.process_time()
        for row, text, ranks in cases:
            fn(row, text, ranks)
        best = min(best, time.process_time() - t0)
    return len(cases) / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lists", type=int, default=4000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1682, 20000])
    args = ap.parse_args()
    print(f"python {platform.python_version()}, numpy {np.__version__}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, K={K}, {args.lists} lists, "
          f"best of {args.repeat} (process CPU time)")
    print(f"{'catalog':>8} {'ours lists/s':>13} {'paper-style':>12} {'ratio':>6} {'paper+sets':>11} {'ratio':>6}")
    for size in args.sizes:
        cat = make_catalog(size)
        cases = make_cases(cat, args.lists)
        base = PaperStyleReward(cat)
        base_sets = PaperStyleReward(cat, category_sets=True)

        def ours(row, text, ranks):
            return item_and_list_rewards(row, text, ranks, cat)

        # both sides agree on every list before we time them
        for row, text, ranks in cases:
            a, b = ours(row, text, ranks), base(row, text, ranks)
            assert np.allclose(a.item_rewards, b[0]) and math.isclose(a.list_reward, b[1], abs_tol=1e-9), (row, text)
        ours(*cases[0])   # warm the catalog index cache
        r_ours = lists_per_second(ours, cases, args.repeat)
        r_base = lists_per_second(base, cases, args.repeat)
        r_sets = lists_per_second(base_sets, cases, args.repeat)
        print(f"{size:>8} {r_ours:>13,.0f} {r_base:>12,.0f} {r_ours / r_base:>5.1f}x {r_sets:>11,.0f} "
              f"{r_ours / r_sets:>5.1f}x")


if __name__ == "__main__":
    main()
