"""TRL ``reward_funcs`` adapters: ``f(prompts, completions, completion_ids=None, **columns)``.

TRL (GRPO, RLOO) calls a reward function with the batch's prompts, completions and every
other dataset column as a keyword list; it returns one float per completion, or None
where the row cannot be judged (missing fields, unknown task) so TRL ignores it. Since
TRL passes only columns, the catalog (and optionally a teacher) is bound by a factory.

>>> from recalign.data import Catalog
>>> cat = Catalog(["A", "B", "C"], [["x"], ["x"], ["y"]])
>>> f = make_list_reward(cat)
>>> comp = [[{"role": "assistant", "content": "1. B\\n2. C"}], "1. A\\n2. A"]
>>> out = f(prompts=["p", "p"], completions=comp, task=["I0", "I0"], history=[[], []],
...         target=[2, 2], item_count=[2, 2])
>>> [round(x, 4) for x in out]
[8.5764, -3.5764]
>>> make_format_reward(cat)(prompts=["p"], completions=["1. A\\n2. C\\n3. B"], task=["I0"],
...                         history=[[]], target=[2], item_count=[2])
[0.6666666666666666]
>>> f(prompts=["p"], completions=["1. A"], task=["I7"], history=[[]], target=[1], item_count=[1])
[None]
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

from recalign.data import Catalog

from .parser import completion_text
from .reclm import item_and_list_rewards, row_spec

__all__ = ["completion_text", "make_list_reward", "make_format_reward", "rows_from_columns"]

_NOT_COLUMNS = {"trainer_state", "log_extra", "log_metric", "completion_ids", "prompts", "completions"}


def rows_from_columns(n: int, columns: Mapping[str, Any]) -> list[dict]:
    """Per-row dicts from TRL's column lists (non-list keyword arguments are skipped)."""
    cols = {k: v for k, v in columns.items()
            if k not in _NOT_COLUMNS and isinstance(v, (list, tuple)) and len(v) == n}
    return [{k: v[i] for k, v in cols.items()} for i in range(n)]


def _ranks_from_column(value: Any) -> Any:
    """A ``teacher_ranks`` column value: a mapping (keys may be strings after Arrow) or a
    sequence/array indexed by item index."""
    if isinstance(value, Mapping):
        try:
            return {int(k): v for k, v in value.items() if v is not None}
        except (TypeError, ValueError):
            return None
    return value


def _make(catalog: Catalog, teacher_ranks_fn, fuzzy: bool, pick: Callable, name: str,
          parser: str = "lenient") -> Callable:
    def reward(prompts=None, completions=None, completion_ids=None, **columns) -> list[float | None]:
        completions = list(completions or [])
        rows = rows_from_columns(len(completions), columns)
        specs: list = []
        for row in rows:
            try:
                specs.append(row_spec(row, catalog))
            except ValueError:
                specs.append(None)
        if teacher_ranks_fn is not None:
            judged = [i for i, s in enumerate(specs) if s is not None]
            got = list(teacher_ranks_fn([rows[i] for i in judged])) if judged else []
            ranks: list = [None] * len(rows)
            for i, r in zip(judged, got):
                ranks[i] = r
        else:
            ranks = [_ranks_from_column(row.get("teacher_ranks")) for row in rows]
        out: list[float | None] = []
        for comp, row, spec, tr in zip(completions, rows, specs, ranks):
            if spec is None:
                out.append(None)
                continue
            res = item_and_list_rewards(row, completion_text(comp), tr, catalog, fuzzy=fuzzy, spec=spec,
                                            parser=parser)
            out.append(float(pick(res)))
        return out

    reward.__name__ = reward.__qualname__ = name
    return reward


def make_list_reward(catalog: Catalog, teacher_ranks_fn: Callable[[list[dict]], Sequence[Any]] | None = None,
                     *, fuzzy: bool = False, parser: str = "lenient") -> Callable:
    """A TRL reward function returning the RecLM-gen list-level reward (×10 scale).

    ``teacher_ranks_fn(rows) -> per-row teacher_ranks`` is called once per batch with the
    judgeable rows (dicts of the dataset columns) so a teacher can rank a whole batch at
    once; each returned value is what :func:`item_and_list_rewards` takes (mapping,
    array indexed by item, callable, or None). Without it, a ``teacher_ranks`` column is
    used when the dataset has one, else the target-only rank score.
    """
    return _make(catalog, teacher_ranks_fn, fuzzy, lambda r: r.list_reward, "recalign_list_reward", parser)


def make_format_reward(catalog: Catalog, *, fuzzy: bool = False, parser: str = "lenient") -> Callable:
    """A TRL reward function scoring the format: legal items / max(requested count, items
    written), in [0, 1] (1 = exactly m distinct catalog titles, none from the history)."""
    return _make(catalog, None, fuzzy, lambda r: r.format_score, "recalign_format_reward", parser)
