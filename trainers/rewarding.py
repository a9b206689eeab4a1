"""What every RL trainer needs to judge a completion: the catalog, the teacher's ranks and
an up-front check of the rows' reward fields. Shared by ppo, grpo/rloo and asft so that
all of them (and ``recalign eval``) judge with the same parser and the same teacher.

>>> ctx = load_reward_context("runs/inst")                       # doctest: +SKIP
>>> check_reward_rows(rows, ctx.catalog, "runs/inst/train.jsonl")  # doctest: +SKIP
>>> reward_funcs = [ctx.list_reward(), ctx.format_reward()]       # TRL GRPO/RLOO
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from recalign.data import Catalog, RecDataset
from recalign.data.util import DataError
from recalign.data.util import card_path as stored_path
from recalign.rewards import item_and_list_rewards
from recalign.rewards.adapters import make_format_reward, make_list_reward
from recalign.rewards.reclm import RewardResult, row_spec


@dataclass
class RewardContext:
    dataset: RecDataset
    teacher: object | None            # recalign.teacher.Teacher, or None: target-only rank score
    fuzzy: bool = False
    parser: str = "lenient"           # the protocol's parser (rewards/protocol.py)
    mask_ranks: bool = True           # reward ranks among non-history items (reclm-gen: unmasked)

    @property
    def catalog(self) -> Catalog:
        return self.dataset.catalog

    def ranks(self, rows: list[Mapping]) -> list:
        """Per row: an array of every item's teacher rank for the row's history (or None)."""
        if self.teacher is None or not rows:
            return [None] * len(rows)
        return list(self.teacher.rank_all([list(r["history"] or []) for r in rows], mask_history=self.mask_ranks))

    def score(self, rows: list[Mapping], texts: list[str]) -> list[RewardResult]:
        """RecLM-gen item and list rewards for each (row, completion text)."""
        ranks = self.ranks(rows)
        return [item_and_list_rewards(r, t, tr, self.catalog, fuzzy=self.fuzzy, parser=self.parser)
                for r, t, tr in zip(rows, texts, ranks)]

    def list_reward(self):
        return make_list_reward(self.catalog, self.ranks if self.teacher is not None else None, fuzzy=self.fuzzy,
                                parser=self.parser)

    def format_reward(self):
        return make_format_reward(self.catalog, fuzzy=self.fuzzy, parser=self.parser)


def load_reward_context(inst_dir: str | Path, teacher: str | Path | None = None,
                        fuzzy: bool = False, load_teacher: bool = True, protocol: str = "recalign",
                        parser: str | None = None, reward_ranks: str | None = None) -> RewardContext:
    """The dataset and teacher that built ``inst_dir`` (from its card.json); without
    ``load_teacher`` only the dataset (rank rewards then use the target only). ``protocol``
    (with single options overridden) sets the parser and the rank convention."""
    from recalign.rewards.protocol import get_protocol

    proto = get_protocol(protocol, parser=parser, reward_ranks=reward_ranks)
    card_path = Path(inst_dir) / "card.json"
    if not card_path.is_file():
        raise DataError(f"{inst_dir}: no card.json; build instruction data with `recalign data build --out {inst_dir}`")
    card = json.loads(card_path.read_text())
    cfg, made_at = card.get("config", {}), card.get("made_at") or {}
    data_dir = stored_path(cfg.get("data"), inst_dir, made_at.get("data"))
    if not data_dir or not Path(data_dir).is_dir():
        raise DataError(f"{card_path}: field config.data ({data_dir!r}) is not an existing dataset directory; "
                        "rebuild with `recalign data build`")
    ds = RecDataset.load(data_dir)
    teacher_dir = (teacher or stored_path(cfg.get("teacher"), inst_dir, made_at.get("teacher"))) \
        if load_teacher else None
    t = None
    if teacher_dir:
        if not Path(teacher_dir).is_dir():
            raise DataError(f"teacher {teacher_dir} (from {card_path if not teacher else '--teacher'}) does not "
                            "exist; pass --teacher DIR")
        from recalign.teacher import Teacher

        t = Teacher.load(teacher_dir, data=ds)
    return RewardContext(ds, t, fuzzy, parser=proto.parser, mask_ranks=proto.reward_ranks == "masked")


# what the rewards read (rewards/reclm.py row_spec); ``teacher_ranks`` when the data has it
REWARD_COLUMNS = ("task", "rule", "history", "target", "item_count", "category", "direction", "n", "teacher_ranks")


def train_reward_rows(data: str | Path, tasks: str | None = None, max_samples: int | None = None, seed: int = 0,
                      split: str | None = None):
    """RL prompts from ``data/dataset``: its ``rl`` split when the build wrote one
    (``--rl-split``: the official RL sampling), else ``train``; ``prompt`` (conversational)
    plus the reward columns, no ``completion``. Without ``tasks``: every task the rewards
    judge (I0, I1*, I2*; I3 and I4 rows have no item list to reward)."""
    import datasets

    path = Path(data) / "dataset"
    if not path.is_dir():
        raise DataError(f"{data}: no dataset/ folder; build one with `recalign data build --out {data}`")
    dd = datasets.load_from_disk(str(path))
    if split is None:
        split = "rl" if "rl" in dd else "train"
    if split not in dd:
        raise DataError(f"{data}: no {split} split in dataset/ (splits: {', '.join(dd)})")
    train = dd[split]
    if tasks:
        wanted = {t.strip() for t in tasks.split(",")}
        train = train.filter(lambda t: t in wanted, input_columns="task")
        what = f"tasks {sorted(wanted)}"
    else:
        from recalign.rewards.reclm import row_rule

        cols = [c for c in ("task", "direction", "rule") if c in train.column_names]
        train = train.filter(lambda *v: row_rule(dict(zip(cols, v))) is not None, input_columns=cols)
        what = "the rewarded tasks (a reward rule in their task file: I0, I1*, I2*)"
    if len(train) == 0:
        raise DataError(f"{data}: no training rows for {what}")
    if max_samples:
        train = train.shuffle(seed=seed).select(range(min(max_samples, len(train))))
    return train.select_columns(["prompt"] + [c for c in REWARD_COLUMNS if c in train.column_names])


def check_reward_rows(rows: Iterable[Mapping], catalog: Catalog, where: str) -> None:
    """Raise DataError at the first row whose reward fields are missing or malformed, before
    any rollout is spent on it."""
    for i, row in enumerate(rows):
        try:
            row_spec(dict(row), catalog)
        except ValueError as e:
            raise DataError(f"{where}: row {i} (task {row.get('task')!r}): {e}; rebuild the data with "
                            "`recalign data build` or drop the task with --tasks") from None


def finite_or_none(x) -> float | None:
    """A reward value, or None when it is NaN/inf or not a number (the sample is skipped)."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if np.isfinite(v) else None
