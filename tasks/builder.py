"""Turn (users, teacher) into instruction rows for the tasks' specs (REFERENCE.md §1.1-1.2).

Rows are conversational and TRL-ready (``prompt`` and ``completion`` message lists) and
carry the fields rewards and metrics need (DESIGN.md "Dataset row"). Train rows are drawn
anew per epoch from ``seed`` and the epoch; valid/test rows use the fixed leave-one-out
windows: valid ``seq[-12:-2] -> seq[-2]``, test ``seq[-11:-1] -> seq[-1]``.

>>> rows = build_rows(ds, teacher, resolve_tasks("I0", load_specs()), BuildConfig())  # doctest: +SKIP
"""
from __future__ import annotations

import json
import math
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
from tqdm.auto import tqdm

from recalign.data import DataError, RecDataset
from recalign.templates import Renderer

from .spec import TaskSpec

SPLITS = ("train", "valid", "test", "rl")      # rl: RL prompts (BuildConfig.rl_split), after the others


@dataclass
class BuildConfig:
    epochs: int = 1
    seed: int = 42
    sharegpt: str | None = None
    chat_ratio: float | None = None          # overrides the I4 spec's ratio
    reference: str | None = None             # JSONL: {"user_id", "items": [titles or ids]}
    max_users: int | None = None             # a subset of users (the first N by index)
    templates: str | None = None             # a user template folder (sandboxed)
    rl_split: bool = False                   # also write an ``rl`` split: RL prompts drawn from the training
                                             # windows by each task's rl_* rules (the official code's, §1.7)
    protocol: str = "recalign"               # the task files' ``protocols`` block to apply (e.g. reclm-gen's
                                             # test proportions); recorded in the card
    notes: list[str] = field(default_factory=list)


@dataclass
class Context:
    user: int                 # user_idx, -1 for rows without a user
    history: np.ndarray       # item indices in the prompt window, oldest first
    target: int | None


class Builder:
    def __init__(self, ds: RecDataset, teacher, cfg: BuildConfig):
        self.ds, self.teacher, self.cfg = ds, teacher, cfg
        self.cat = ds.catalog
        self.render = Renderer(cfg.templates)
        n_users = ds.n_users if cfg.max_users is None else min(cfg.max_users, ds.n_users)
        self.users = np.arange(n_users)
        self.user_ids = (list(ds.users["user_id"].astype(str)) if ds.users is not None
                         else [str(u) for u in range(ds.n_users)])
        train = ds.train_sequences()
        pop = np.bincount(np.concatenate(train) if train else np.zeros(0, np.int64),
                          minlength=ds.n_items + 1).astype(np.float64)
        pop[0] = 0
        self.popularity = pop
        self.cat_sizes = self.cat.membership.sum(axis=1)
        self.skipped: Counter = Counter()
        self._reference: dict[str, dict[int, list[int]]] = {}
        self._external_reference = self._load_reference(cfg.reference) if cfg.reference else None
        self._chat = None
        self._system: dict[str, str] = {}
        self._pools: dict[tuple[str, str], np.ndarray] = {}

    # ----------------------------------------------------------------- sampling helpers

    def rng(self, spec: TaskSpec, split: str, epoch: int) -> np.random.Generator:
        return np.random.default_rng([self.cfg.seed, epoch, SPLITS.index(split), zlib.crc32(spec.task.encode())])

    def contexts(self, spec: TaskSpec, split: str, rng: np.random.Generator,
                 users: np.ndarray | None = None) -> list[Context]:
        w = spec.history_window
        out = []
        for u in self.users if users is None else users:
            s = self.ds.sequences[u]
            if split in ("train", "rl"):
                tr = s[:-2]
                if len(tr) < 2:
                    self.skipped[f"{spec.task}/train: user with < 2 training items"] += 1
                    continue
                t = int(rng.integers(1, len(tr)))
                h = int(rng.integers(1, min(w, t) + 1))
                out.append(Context(int(u), tr[t - h:t], int(tr[t])))
            elif split == "valid":
                out.append(Context(int(u), s[:-2][-w:], int(s[-2])))
            else:
                out.append(Context(int(u), s[:-1][-w:], int(s[-1])))
        return out

    def eligible(self, spec: TaskSpec, min_outside: int = 0) -> np.ndarray:
        n = self.cat.n_items
        ok = (self.cat_sizes >= spec.min_category_size) & (n - self.cat_sizes >= min_outside)
        return np.flatnonzero(ok)

    def item_count(self, spec: TaskSpec, split: str, rng, cap: int | None = None) -> int:
        if split not in ("train", "rl"):
            n = spec.item_count_eval
        else:
            lo, hi = (spec.item_count_rl or spec.item_count_train) if split == "rl" else spec.item_count_train
            hi = min(hi, cap) if cap is not None else hi
            if hi < lo:
                return 0
            n = int(rng.integers(lo, hi + 1))
        return min(n, cap) if cap is not None else n

    def titles(self, items) -> list[str]:
        return [self.cat.titles[int(i)] for i in items]

    def reference_lists(self, split: str) -> dict[int, list[int]]:
        """The model's own I0 top-10 per user when given (--reference), else the teacher's."""
        if self._external_reference is not None:
            return self._external_reference
        if split not in self._reference:
            ctx = self.contexts(_I0_WINDOW, split, np.random.default_rng(0))
            top = self.teacher.topk([c.history for c in ctx], k=10)
            self._reference[split] = {c.user: list(map(int, t)) for c, t in zip(ctx, top)}
        return self._reference[split]

    def _load_reference(self, path: str) -> dict[int, list[int]]:
        by_id = {u: i for i, u in enumerate(self.user_ids)}
        out: dict[int, list[int]] = {}
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                    uid, items = str(rec["user_id"]), rec["items"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise DataError(f"{path}:{lineno}: expected a JSON object with 'user_id' and 'items'") from None
                if uid not in by_id:
                    raise DataError(f"{path}:{lineno}: user_id {uid!r} is not in the dataset")
                idx = [self.cat.match(str(x)) if isinstance(x, str) else int(x) for x in items]
                out[by_id[uid]] = [i for i in idx if i is not None]
        self.cfg.notes.append(f"test-time categories from the reference lists in {path}")
        return out

    def most_frequent_category(self, items: list[int], avoid: set[str], rng, weighted: bool) -> str | None:
        counts = Counter(c for i in items for c in self.cat.item_categories[i] if c not in avoid)
        counts = {c: k for c, k in counts.items() if self.cat_sizes[self.cat.category_index(c)] > 0}
        if not counts:
            return None
        names = sorted(counts)
        if weighted:
            p = np.array([counts[c] for c in names], dtype=np.float64)
            return names[int(rng.choice(len(names), p=p / p.sum()))]
        best = max(counts.values())
        return sorted(c for c in names if counts[c] == best)[0]

    # ----------------------------------------------------------------- rows

    def system_prompt(self, spec: TaskSpec) -> str:
        if spec.system not in self._system:
            self._system[spec.system] = self.render.render(spec.system, task=spec.task)
        return self._system[spec.system]

    def row(self, spec: TaskSpec, split: str, epoch: int, ctx: Context, rng, *, prompt_vars: dict | None = None,
            label: list[int] | None = None, answer: str | None = None, item_count: int | None = None,
            category: str | None = None, direction: str | None = None, n: int | None = None,
            proportion: float | None = None, messages: list[dict] | None = None) -> dict[str, Any]:
        paraphrase = int(rng.integers(0, spec.paraphrases))
        if messages is None:
            text = self.render.render(spec.template, task=spec.task, paraphrase=paraphrase, **(prompt_vars or {}))
            prompt = ([{"role": "system", "content": self.system_prompt(spec)}]
                      if spec.system else []) + [{"role": "user", "content": text}]
            if answer is None:
                answer = self.render.render(spec.answer_template, task=spec.task, titles=self.titles(label))
            completion = [{"role": "assistant", "content": answer}]
        else:
            prompt, completion = messages[:-1], messages[-1:]
        return {
            "prompt": prompt,
            "completion": completion,
            "task": spec.task,
            "rule": spec.rule,              # how rewards and metrics judge the row (tasks/spec.py)
            "task_version": spec.version,
            "split": split,
            "epoch": epoch,
            "user_id": self.user_ids[ctx.user] if ctx.user >= 0 else None,
            "history": [int(i) for i in ctx.history],
            "target": ctx.target,
            "item_count": item_count,
            "category": category,
            "direction": direction,
            "n": n,
            "proportion": proportion,
            "label": [int(i) for i in (label or [])],
            "paraphrase": paraphrase,
        }

    # ----------------------------------------------------------------- label rules

    def sequential(self, spec, split, epoch, rng, users=None) -> list[dict]:
        ctx = self.contexts(spec, split, rng, users)
        counts = [self.item_count(spec, split, rng) for _ in ctx]
        k = max(max(counts, default=1) - 1, 1)
        top = self.teacher.topk([c.history for c in ctx], k=k, exclude=[[c.target] for c in ctx])
        rows = []
        for c, m, t in zip(ctx, counts, top):
            label = [c.target] + list(t[:m - 1])
            rows.append(self.row(spec, split, epoch, c, rng, label=label, item_count=m,
                                 prompt_vars={"history": self.titles(c.history), "item_count": m}))
        return rows

    @staticmethod
    def category_rule(spec, split) -> str:
        if split == "rl":
            return spec.rl_category or spec.train_category
        return spec.train_category if split == "train" else spec.test_category

    def _control_category(self, spec, split, c: Context, rng, eligible: np.ndarray) -> str | None:
        rule = self.category_rule(spec, split)
        target_cats = set(self.cat.item_categories[c.target]) if c.target else set()
        ok = set(self.cat.categories[i] for i in eligible)
        if rule == "uniform":
            return self.cat.categories[int(rng.choice(eligible))] if len(eligible) else None
        if rule == "target":
            cats = self.cat.item_categories[c.target]
            return cats[-1] if cats else None
        if rule == "target_random":             # the official RL rule for I1+: any category of the target
            cats = sorted(set(self.cat.item_categories[c.target]) & ok)
            return cats[int(rng.integers(len(cats)))] if cats else None
        if rule == "teacher_frequent":
            top = self._teacher_top10.get(c.user, [])
            return self.most_frequent_category(top, target_cats, rng, weighted=True)
        if rule == "teacher_frequent_uniform":  # the official I1- rule: uniform among the categories
            top = self._teacher_top10.get(c.user, [])   # counted at least min(2, max) times in the teacher's list
            counts = Counter(x for i in top for x in self.cat.item_categories[i] if x in ok)
            if not counts:
                return None
            floor = min(2, max(counts.values()))
            cats = sorted(x for x, k in counts.items() if k >= floor)
            return cats[int(rng.integers(len(cats)))]
        ref = self.reference_lists(split).get(c.user, [])
        return self.most_frequent_category(ref, target_cats, rng, weighted=False)

    def _teacher_top10_for(self, ctx: list[Context]) -> None:
        top = self.teacher.topk([c.history for c in ctx], k=10)
        self._teacher_top10 = {c.user: list(map(int, t)) for c, t in zip(ctx, top)}

    def _with_categories(self, spec, split, rng, eligible: np.ndarray, users=None):
        """(context, category) for each user whose split rule yields a category."""
        ctx = self.contexts(spec, split, rng, users)
        if self.category_rule(spec, split) in ("teacher_frequent", "teacher_frequent_uniform"):
            self._teacher_top10_for(ctx)
        for c in ctx:
            cat = self._control_category(spec, split, c, rng, eligible)
            if cat is None:
                self.skipped[f"{spec.task}/{split}: no category for the rule"] += 1
            else:
                yield c, cat

    def category_control(self, spec, split, epoch, rng, users=None) -> list[dict]:
        plan = []
        for c, cat in self._with_categories(spec, split, rng, self.eligible(spec), users):
            mask = self.cat.category_mask(cat)
            size = int(self.cat_sizes[self.cat.category_index(cat)])
            in_hist = int(mask[c.history].sum())
            avail = (size - in_hist) if spec.direction == "+" else \
                (self.cat.n_items - size - (len(c.history) - in_hist))
            m = self.item_count(spec, split, rng, cap=avail)
            if m < 1:
                self.skipped[f"{spec.task}/{split}: category has no items left"] += 1
                continue
            plan.append((c, cat, m))
        if not plan:
            return []
        k = max(m for _, _, m in plan)
        hist = [c.history for c, _, _ in plan]
        cats = [cat for _, cat, _ in plan]
        top = (self.teacher.topk(hist, k=k, include=cats) if spec.direction == "+"
               else self.teacher.topk(hist, k=k, exclude_category=cats))
        rows = []
        for (c, cat, m), t in zip(plan, top):
            label = list(map(int, t[:m]))
            if c.target in label:          # the target goes first only when it is in the list
                label.remove(c.target)
                label.insert(0, c.target)
            rows.append(self.row(spec, split, epoch, c, rng, label=label, item_count=m, category=cat,
                                 direction=spec.direction,
                                 prompt_vars={"history": self.titles(c.history), "item_count": m,
                                              "category": cat, "direction": spec.direction}))
        return rows

    def proportion_control(self, spec, split, epoch, rng, users=None) -> list[dict]:
        m_max = {"train": spec.item_count_train[1], "rl": (spec.item_count_rl or spec.item_count_train)[1]}.get(
            split, spec.item_count_eval)
        eligible = self.eligible(spec, min_outside=m_max + spec.history_window)
        eligible = eligible[self.cat_sizes[eligible] >= m_max + spec.history_window]
        plan = []
        for c, cat in self._with_categories(spec, split, rng, eligible, users):
            m = self.item_count(spec, split, rng)
            if split == "rl" and spec.rl_proportion == "count_uniform":
                # the official RL draw: n ~ U{0..min(|C|, m)}, p = n / m rounded down to 10 %
                n = int(rng.integers(0, min(int(self.cat_sizes[self.cat.category_index(cat)]), m) + 1))
                plan.append((c, cat, m, math.floor(10 * n / m) / 10, n, None))
                continue
            if split == "train" and spec.train_proportion == "count_offset":
                # the official SFT draw: t in-category items asked for, the label holds t - {0,1}
                # (<=) or t + {0,1} (>=) of them, so the bound is met both tightly and loosely
                cmax = min(int(self.cat_sizes[self.cat.category_index(cat)]), m)
                if spec.direction == "<=":
                    t = int(rng.integers(1, cmax + 1))
                    k_in = t - int(rng.integers(0, 2))
                else:
                    t = int(rng.integers(0, cmax))
                    k_in = t + int(rng.integers(0, 2))
                plan.append((c, cat, m, t / m, t, k_in))
                continue
            p = float(rng.choice(spec.proportions)) if split in ("train", "rl") else float(spec.test_proportion)
            plan.append((c, cat, m, p, int(round(p * m)), None))
        if not plan:
            return []
        hist = [c.history for c, *_ in plan]
        cats = [cat for _, cat, *_ in plan]
        k = max(m for _, _, m, *_ in plan)
        base, inside, outside = self.teacher.topk_many(hist, k, [{}, {"include": cats},
                                                                 {"exclude_category": cats}])
        rows = []
        for (c, cat, m, p, n, k_in), b, ins, out in zip(plan, base, inside, outside):
            if k_in is None:
                natural = int(self.cat.in_category(b[:m], cat).sum())
                k_in = {"<=": min(natural, n), ">=": max(natural, n), "~": n}[spec.direction]
            if k_in > len(ins) or m - k_in > len(out):
                self.skipped[f"{spec.task}/{split}: not enough items in/outside the category"] += 1
                continue
            label = list(map(int, ins[:k_in])) + list(map(int, out[:m - k_in]))
            label = [label[i] for i in rng.permutation(len(label))]
            rows.append(self.row(spec, split, epoch, c, rng, label=label, item_count=m, category=cat,
                                 direction=spec.direction, n=n, proportion=p,
                                 prompt_vars={"history": self.titles(c.history), "item_count": m,
                                              "category": cat, "direction": spec.direction,
                                              "proportion": p, "n": n}))
        return rows

    def item_search(self, spec, split, epoch, rng, users=None) -> list[dict]:
        if spec.search_draw == "per_item":
            return self._item_search_per_item(spec, split, epoch, rng, users)
        eligible = self.eligible(spec, min_outside=spec.min_category_size)
        rows = []
        for _ in self.users if users is None else users:
            cat = self.cat.categories[int(rng.choice(eligible))]
            direction = "+" if rng.random() < 0.5 else "-"
            pool = self._search_pool(cat, direction)
            m = self.item_count(spec, split, rng, cap=len(pool))
            w = self.popularity[pool] + 1.0
            pick = rng.choice(len(pool), size=m, replace=False, p=w / w.sum())
            label = [int(pool[i]) for i in sorted(pick)]       # most popular first
            rows.append(self.row(spec, split, epoch, Context(-1, np.zeros(0, np.int64), None), rng,
                                 label=label, item_count=m, category=cat, direction=direction,
                                 prompt_vars={"item_count": m, "category": cat, "direction": direction}))
        return rows

    def _item_search_per_item(self, spec, split, epoch, rng, users=None) -> list[dict]:
        """The official ControlRec_re draw (REFERENCE.md §1.7): one row per catalog item with a
        category, asking for ``item_count`` (1 under reclm-gen) items of a random category of
        it, labelled with that item. Streamed builds make these rows with the first user batch."""
        if users is not None and len(users) and int(users[0]) != int(self.users[0]):
            return []
        rows = []
        items = [i for i in range(1, self.cat.n_items + 1) if self.cat.item_categories[i]]
        for item in rng.permutation(np.asarray(items, dtype=np.int64)):
            cats = self.cat.item_categories[int(item)]
            cat = cats[int(rng.integers(0, len(cats)))]
            m = self.item_count(spec, split, rng, cap=1)
            rows.append(self.row(spec, split, epoch, Context(-1, np.zeros(0, np.int64), None), rng,
                                 label=[int(item)], item_count=m, category=cat, direction="+",
                                 prompt_vars={"item_count": m, "category": cat, "direction": "+"}))
        return rows

    def _search_pool(self, cat: str, direction: str) -> np.ndarray:
        """The 100 most popular items of (or outside) a category, most popular first."""
        key = (cat, direction)
        if key not in self._pools:
            mask = self.cat.category_mask(cat).copy()
            if direction == "-":
                mask = ~mask
                mask[0] = False
            pool = np.flatnonzero(mask)
            self._pools[key] = pool[np.argsort(-self.popularity[pool], kind="stable")][:100]
        return self._pools[key]

    def category_qa(self, spec, split, epoch, rng, users=None) -> list[dict]:
        with_cat = [i for i in range(1, self.cat.n_items + 1) if self.cat.item_categories[i]]
        rows = []
        for _ in self.users if users is None else users:
            item = int(with_cat[int(rng.integers(0, len(with_cat)))])
            cats = self.cat.item_categories[item]
            cat = cats[-1] if spec.qa_category == "last" else cats[int(rng.integers(0, len(cats)))]
            title = self.cat.titles[item]
            answer = self.render.render(spec.answer_template, task=spec.task, title=title, category=cat)
            rows.append(self.row(spec, split, epoch, Context(-1, np.zeros(0, np.int64), None), rng,
                                 answer=answer, category=cat, label=[item], prompt_vars={"title": title}))
        return rows

    def chat(self, spec, split, epoch, rng, n_rec_rows: int) -> list[dict]:
        if self.cfg.sharegpt is None:
            note = "I4 skipped: no --sharegpt file given"
            if note not in self.cfg.notes:
                self.cfg.notes.append(note)
                print(f"note: {note}")
            return []
        if self._chat is None:
            self._chat = load_sharegpt(self.cfg.sharegpt)
        ratio = spec.ratio if self.cfg.chat_ratio is None else self.cfg.chat_ratio
        k = int(round(ratio * n_rec_rows))
        pick = rng.choice(len(self._chat), size=k, replace=k > len(self._chat))
        return [self.row(spec, split, epoch, Context(-1, np.zeros(0, np.int64), None), rng,
                         messages=self._chat[int(i)]) for i in pick]


_I0_WINDOW = TaskSpec(task="I0", version=1, template="", builder="sequential")


def load_sharegpt(path: str | Path) -> list[list[dict]]:
    """ShareGPT JSON (a list) or JSON lines: ``{"conversations": [{"from": "human"|"gpt"|"system",
    "value": ...}, ...]}`` -> message lists ending with an assistant turn."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"--sharegpt {path}: file not found")
    text = path.read_text(encoding="utf-8")
    try:
        records = json.loads(text)
        if isinstance(records, dict):
            records = [records]
    except RecursionError:
        raise DataError(f"{path}: JSON nested too deeply to read; expected a list of conversations") from None
    except json.JSONDecodeError:
        records = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except RecursionError:
                    raise DataError(f"{path}:{lineno}: JSON nested too deeply to read") from None
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}:{lineno}: not valid JSON ({e.msg}); expected a JSON list of "
                                    "conversations or one conversation per line") from None
    roles = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
             "chatgpt": "assistant", "bard": "assistant", "system": "system"}
    out = []
    for i, rec in enumerate(records):
        conv = rec.get("conversations") if isinstance(rec, dict) else None
        if not isinstance(conv, list):
            raise DataError(f"{path}: record {i}: expected an object with a 'conversations' list")
        msgs = []
        for j, turn in enumerate(conv):
            if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
                raise DataError(f"{path}: record {i}, turn {j}: expected {{'from': ..., 'value': ...}}")
            role = roles.get(str(turn["from"]).lower())
            if role is None:
                raise DataError(f"{path}: record {i}, turn {j}: unknown speaker {turn['from']!r}; "
                                f"expected one of {', '.join(roles)}")
            if not isinstance(turn["value"], str):      # null or an object would become "None" / "{...}"
                raise DataError(f"{path}: record {i}, turn {j}: 'value' must be a string, got "
                                f"{type(turn['value']).__name__} ({str(turn['value'])[:40]!r})")
            msgs.append({"role": role, "content": turn["value"]})
        while msgs and msgs[-1]["role"] != "assistant":
            msgs.pop()
        if len(msgs) >= 2 and any(m["role"] == "user" for m in msgs):
            out.append(msgs)
    if not out:
        raise DataError(f"{path}: no usable conversation (each needs a user turn and an assistant reply)")
    return out


# Users per batch of rows: rows are made, written and dropped a batch at a time, so memory
# does not grow with the user count. Draws follow the batches, so this is fixed (not a knob)
# to keep a seed's rows the same everywhere; a dataset of up to this many users is one batch.
USER_CHUNK = 8192


def _jobs(specs: list[TaskSpec], cfg: BuildConfig) -> list[tuple[str, int, TaskSpec]]:
    """(split, epoch, spec) in build order: split, then epoch, then task (chat last: it counts the others)."""
    jobs = [(split, epoch, spec) for split in SPLITS[:3] for epoch in (range(cfg.epochs) if split == "train" else [0])
            for spec in sorted(specs, key=lambda s: s.builder == "chat") if split in spec.splits]
    if cfg.rl_split:            # every task the rewards judge, once per user
        jobs += [("rl", 0, spec) for spec in specs if spec.rule is not None and {"train", "rl"} & set(spec.splits)]
    return jobs


def alternation(b: Builder, groups: dict[str, list[str]], spec: TaskSpec, split: str, epoch: int):
    """Which users get ``spec``'s train rows this epoch when it alternates with the other tasks
    of its group (a boolean mask over user index), or None: every user. Each user is dealt one
    member of the group uniformly at random, fresh each epoch; the deal depends on the group,
    seed and epoch only, so the members of one group agree on it.

    A group of one (``--tasks I1+`` alone) keeps every user."""
    if split != "train" or spec.alternate is None or len(groups.get(spec.alternate, ())) < 2:
        return None
    members = sorted(groups[spec.alternate])
    rng = np.random.default_rng([b.cfg.seed, epoch, zlib.crc32(spec.alternate.encode())])
    slot = rng.integers(len(members), size=len(b.users))
    mask = np.zeros(int(b.users.max()) + 1 if len(b.users) else 0, dtype=bool)
    mask[b.users] = slot == members.index(spec.task)
    return mask


def iter_rows(b: Builder, specs: list[TaskSpec], progress: bool = True) -> Iterator[tuple[str, list[dict]]]:
    """(split, rows) batches in a fixed order: split, epoch, task, then users in batches of
    ``USER_CHUNK``; all rows of one split come before the next split's."""
    rules: dict[str, Callable] = {"sequential": b.sequential, "category_control": b.category_control,
                                  "proportion_control": b.proportion_control,
                                  "item_search": b.item_search, "category_qa": b.category_qa}
    jobs = _jobs(specs, b.cfg)
    chunks = [b.users[i:i + USER_CHUNK] for i in range(0, len(b.users), USER_CHUNK)] or [b.users]
    groups: dict[str, list[str]] = {}
    for s in specs:
        if s.alternate is not None and "train" in s.splits:
            groups.setdefault(s.alternate, []).append(s.task)
    n_rec: Counter = Counter()         # (split, epoch) -> rows of the recommendation tasks (I4's ratio)
    bar = tqdm(total=sum(1 if s.builder == "chat" else len(chunks) for *_, s in jobs), desc="building",
               unit="batch", disable=not progress, mininterval=1.0)
    for split, epoch, spec in jobs:
        bar.set_postfix_str(f"{split} {spec.task} epoch {epoch}")
        rng = b.rng(spec, split, epoch)
        if spec.builder == "chat":
            yield split, b.chat(spec, split, epoch, rng, n_rec[split, epoch])
            bar.update()
            continue
        mine = alternation(b, groups, spec, split, epoch)
        for users in chunks:
            if mine is not None:
                users = users[mine[users]]
            rows = rules[spec.builder](spec, split, epoch, rng, users) if len(users) else []
            n_rec[split, epoch] += len(rows)
            yield split, rows
            bar.update()
    bar.close()


def build_rows(ds: RecDataset, teacher, specs: list[TaskSpec], cfg: BuildConfig,
               progress: bool = True) -> tuple[dict[str, list[dict]], Builder]:
    """All rows per split in memory (tests, benchmarks; ``build_dataset`` streams them)."""
    b = Builder(ds, teacher, cfg)
    out: dict[str, list[dict]] = {s: [] for s in SPLITS}
    for split, rows in iter_rows(b, specs, progress):
        out[split].extend(rows)
    return out, b


def row_features():
    """The Arrow schema of a row (``Builder.row``), fixed so that batches written one at a time
    agree (inferring it per batch would type an all-None column as null)."""
    from datasets import Features, List, Value

    msgs = List({"role": Value("string"), "content": Value("string")})
    return Features({
        "prompt": msgs, "completion": msgs, "task": Value("string"), "rule": Value("string"),
        "task_version": Value("int64"), "split": Value("string"), "epoch": Value("int64"),
        "user_id": Value("string"), "history": List(Value("int64")), "target": Value("int64"),
        "item_count": Value("int64"), "category": Value("string"), "direction": Value("string"),
        "n": Value("int64"), "proportion": Value("float64"), "label": List(Value("int64")),
        "paraphrase": Value("int64"),
    })


def build_dataset(data: str | Path, teacher_dir: str | Path, tasks: str | list[str], out: str | Path,
                  cfg: BuildConfig, task_dir: str | Path | None = None, overwrite: bool = False) -> Path:
    """``recalign data build``: rows for every task and split, written atomically as a
    Hugging Face ``DatasetDict`` (``out/dataset``), JSONL per split and ``card.json``."""
    import time

    import datasets

    from recalign.data.util import atomic_dir, card_relative, check_out, provenance, sha256_file, write_json
    from recalign.teacher import Teacher

    from .spec import load_specs, resolve_tasks, validate_templates

    inputs = [data, teacher_dir, task_dir, cfg.templates, cfg.sharegpt, cfg.reference]
    check_out(out, overwrite, inputs)
    specs = resolve_tasks(tasks, load_specs(task_dir, cfg.protocol))
    for spec in specs:              # a missing template fails here, before the teacher loads
        validate_templates(spec, cfg.templates)
    ds = RecDataset.load(data)
    teacher = Teacher.load(teacher_dir, data=ds)
    t0 = time.perf_counter()
    b = Builder(ds, teacher, cfg)
    tally: dict[str, Counter] = {s: Counter() for s in SPLITS}
    with atomic_dir(out, overwrite=overwrite, inputs=inputs) as tmp:
        # rows go to JSONL and Arrow a batch at a time (nothing holds all rows), then the
        # Arrow files become the saved DatasetDict
        from datasets.arrow_writer import ArrowWriter

        features = row_features()
        files = {s: open(tmp / f"{s}.jsonl", "w", encoding="utf-8") for s in SPLITS[:3] + (("rl",) if cfg.rl_split else ())}
        writers: dict[str, ArrowWriter] = {}
        try:
            for split, batch in iter_rows(b, specs):
                if not batch:
                    continue
                files[split].writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in batch)
                if split not in writers:
                    writers[split] = ArrowWriter(features=features, path=str(tmp / f".{split}.arrow"))
                writers[split].write_batch({k: [r[k] for r in batch] for k in features})
                tally[split].update(r["task"] for r in batch)
        finally:
            for f in files.values():
                f.close()
            for w in writers.values():
                w.finalize()
                w.close()
        elapsed = time.perf_counter() - t0
        n_rows = sum(sum(c.values()) for c in tally.values())
        if not n_rows:
            raise DataError(f"{data}: no rows for tasks {', '.join(s.id for s in specs)} (skipped: "
                            f"{dict(b.skipped) or 'none'}); users need longer histories, or choose other tasks")
        dd = datasets.DatasetDict({s: datasets.Dataset.from_file(str(tmp / f".{s}.arrow")) for s in writers})
        dd.save_to_disk(str(tmp / "dataset"))
        del dd
        for s in writers:
            (tmp / f".{s}.arrow").unlink()
        counts = {s: dict(sorted(tally[s].items())) for s in SPLITS if s != "rl" or cfg.rl_split}
        inputs = {"sequences": ds.fingerprint(), "teacher": sha256_file(Path(teacher_dir) / "model.safetensors")}
        if cfg.sharegpt:
            inputs["sharegpt"] = sha256_file(cfg.sharegpt)
        if cfg.reference:
            inputs["reference"] = sha256_file(cfg.reference)
        test_rules = sorted({f"{s.task}: {s.test_category}" for s in specs if "test" in s.splits
                             and s.builder in ("category_control", "proportion_control")})
        notes = list(cfg.notes)
        if not cfg.reference and any("reference" in r for r in test_rules):
            notes.append("reference_frequent categories come from the teacher's I0 top-10 "
                         "(no --reference lists of the model's own I0 output were given)")
        write_json(tmp / "card.json", provenance(
            "data.build", {**cfg.__dict__, "tasks": [s.id for s in specs],
                           # relative to this card's folder: a run folder can move (data/util.py)
                           "data": card_relative(data, out), "teacher": card_relative(teacher_dir, out)},
            made_at={"data": str(Path(data).resolve()), "teacher": str(Path(teacher_dir).resolve())},
            seed=cfg.seed, inputs=inputs, counts=counts,
            rows_total=n_rows, rows_per_second=round(n_rows / max(elapsed, 1e-9), 1),
            skipped=dict(b.skipped), test_category_rules=test_rules, notes=notes,
            specs={s.task: {k: v for k, v in s.__dict__.items() if k != "path"} for s in specs}))
    return Path(out)
