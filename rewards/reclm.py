"""RecLM-gen rule-based rewards (REFERENCE.md §1.3), item level and list level.

Pure functions, no tokenizer. The answer is parsed with :mod:`recalign.rewards.parser`
(the same parser the metrics use) and titles are matched with
:meth:`~recalign.data.Catalog.find` (exact; ``fuzzy=True`` adds Levenshtein ≤ 3).

Rules, for the parsed items in order (idx 0-based), requested count m = ``item_count``,
target y, category C, required in-category count n, α = 0.5:

* illegal item (idx ≥ m; not in the catalog; repeats an earlier item; in the prompt's
  history window, checked in that order): every per-item score is −1.
* legal item: rank_score = 1 if i == y else 1/log2(r + 3) (r = teacher's 0-based
  full-catalog rank); rank_corrected = rank_score / log2(idx + 2); then in_cnt or
  out_cnt is increased for this item; task_score by the task's rule.
* item reward: I0 rank_score; control tasks α·rank_score + (1−α)·task_score.
* list reward = 10·[α·Σ rank_corrected / B_m + (1−α)·task_list],
  B_m = Σ_{j<m} 1/log2(j+2)².

Tasks: ``I0`` (sequential), ``I1+`` / ``I1-`` (category wanted / unwanted),
``I2<=`` / ``I2>=`` / ``I2~`` (in-category count at most / at least / about n). The row
may also give ``task="I1"`` / ``"I2"`` and the direction in ``direction`` (``+ - <= >= ~``
or ``− ≤ ≥ ≈``).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping, NamedTuple, Sequence

from recalign.data import Catalog

from .parser import ParsedItem, catalog_index, completion_text, lookup_item, parse_answer

__all__ = ["ALPHA", "LIST_SCALE", "TASKS", "RewardResult", "RowSpec", "canonical_task", "row_spec", "row_rule",
           "item_and_list_rewards", "list_normalizer", "rank_score", "position_discount"]

ALPHA = 0.5            # weight of the ranking part (REFERENCE.md §1.3)
LIST_SCALE = 10.0      # the list reward is multiplied by 10
TASKS = ("I0", "I1+", "I1-", "I2<=", "I2>=", "I2~")
ILLEGAL = -1.0

_DIRECTIONS = {"+": "+", "-": "-", "\u2212": "-", "\u2013": "-",
               "<=": "<=", "\u2264": "<=", ">=": ">=", "\u2265": ">=", "~": "~", "\u2248": "~"}

_TASK_CACHE: dict[tuple, str] = {}
_TABLE = 4096
_DISCOUNT = [1.0 / math.log2(j + 2) for j in range(_TABLE)]
_BM = [0.0]
for _j in range(_TABLE):
    _BM.append(_BM[-1] + _DISCOUNT[_j] ** 2)


def position_discount(idx: int) -> float:
    """1/log2(idx + 2) for a 0-based position.

    >>> position_discount(0), round(position_discount(2), 4)
    (1.0, 0.5)
    """
    return _DISCOUNT[idx] if 0 <= idx < _TABLE else 1.0 / math.log2(idx + 2)


def list_normalizer(m: int) -> float:
    """B_m = Σ_{j<m} 1/log2(j+2)², the list reward's normaliser for a requested count m.

    >>> list_normalizer(1), round(list_normalizer(2), 6), round(list_normalizer(10), 4)
    (1.0, 1.398072, 2.4949)
    """
    if m <= _TABLE:
        return _BM[m]
    return _BM[_TABLE] + sum(1.0 / math.log2(j + 2) ** 2 for j in range(_TABLE, m))


def rank_score(rank: int) -> float:
    """1/log2(r + 3) for a teacher rank r (0-based); the target itself scores 1.0 instead.

    >>> rank_score(0) == 1 / math.log2(3), rank_score(1)
    (True, 0.5)
    """
    return 1.0 / math.log2(rank + 3)


def canonical_task(task: Any, direction: Any = None) -> str:
    """``"I0"``, ``"I1+"``, ``"I1-"``, ``"I2<="``, ``"I2>="`` or ``"I2~"``.

    >>> canonical_task("I2\u2264"), canonical_task("I1", "\u2212"), canonical_task("I2", "\u2248")
    ('I2<=', 'I1-', 'I2~')
    """
    if not isinstance(task, str):
        raise ValueError(f"row field 'task' must be one of {', '.join(TASKS)}, got {task!r}")
    t = task.strip()
    if t == "I0":
        return t
    family, suffix = t[:2], t[2:].strip()
    if family not in ("I1", "I2"):
        raise ValueError(f"row field 'task': unknown task {task!r} (expected one of {', '.join(TASKS)})")
    d = _DIRECTIONS.get(suffix) if suffix else None
    if suffix and d is None:
        raise ValueError(f"row field 'task': unknown direction in task {task!r}")
    if direction is not None and direction != "":
        rd = _DIRECTIONS.get(str(direction).strip())
        if rd is None:
            raise ValueError(f"row field 'direction': unknown direction {direction!r} for task {task!r} "
                             f"(expected + - <= >= ~ or \u2212 \u2264 \u2265 \u2248)")
        if d is not None and rd != d:
            raise ValueError(f"row fields 'task' {task!r} and 'direction' {direction!r} disagree")
        d = rd
    if d is None:
        raise ValueError(f"row is missing field 'direction' required by task {task!r}")
    out = family + d
    if out not in TASKS:
        raise ValueError(f"row field 'direction': {direction or suffix!r} is not valid for task {family!r}")
    return out


def _int_field(row: Mapping, name: str, task: str, minimum: int) -> int:
    v = row.get(name)
    if v is None:
        raise ValueError(f"row is missing field {name!r} required by task {task!r}")
    try:
        iv = int(v)
        ok = iv == v and iv >= minimum
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise ValueError(f"row field {name!r} must be an integer >= {minimum} for task {task!r}, got {v!r}")
    return iv


class RowSpec(NamedTuple):
    """A dataset row, validated (see :func:`row_spec`)."""
    task: str
    m: int
    n: int | None
    history: frozenset
    target: int | None
    category: str | None
    cat_mask: bytes | None
    cat_size: int


def _history_set(hist, task: str) -> frozenset:
    try:
        h = frozenset(hist) if hist is not None else frozenset()
    except TypeError:
        h = None
    if h is not None:
        for x in h:
            if type(x) is not int:
                break
        else:
            return h
    try:
        return frozenset(_as_index(x) for x in hist)
    except (TypeError, ValueError):
        raise ValueError(f"row field 'history' must be a list of item indices for task {task!r}, "
                         f"got {hist!r:.80}") from None


def _as_index(x) -> int:
    i = int(x)
    if i != x or isinstance(x, (str, bytes)):
        raise ValueError(x)
    return i


def row_rule(row: Mapping) -> str | None:
    """The scoring rule of a row (one of :data:`TASKS`), or None when it is not a list task.

    The builder writes ``rule`` from the task file (``reward`` + ``direction``); rows
    without it (older data, hand-made rows) are read by their task name.

    >>> row_rule({"task": "MyRec", "rule": "I0"}), row_rule({"task": "I3", "rule": None}), row_rule({"task": "I1+"})
    ('I0', None, 'I1+')
    """
    if "rule" in row:
        return canonical_task(row["rule"]) if row["rule"] else None
    try:
        return canonical_task(row.get("task"), row.get("direction"))
    except ValueError:
        return None


def row_spec(row: Mapping, catalog: Catalog) -> RowSpec:
    """Validate a row; a missing or malformed field raises ValueError naming it and the task.

    Required: ``task``, ``item_count`` (≥ 1), ``history`` (may be empty), ``target`` (the
    key; its value may be None: then no item is the target); ``category`` for I1/I2
    (must exist in the catalog); ``n`` (≥ 0) for I2; ``direction`` when ``task`` is just
    ``"I1"``/``"I2"``. ``category`` is optional for I0 (counts are then kept for it).

    >>> row_spec({"task": "I2", "direction": "\u2264", "history": [], "target": None, "item_count": 10},
    ...          Catalog(["A"], [["x"]]))
    Traceback (most recent call last):
    ...
    ValueError: row is missing field 'n' required by task 'I2<='
    """
    if not isinstance(row, dict) and not isinstance(row, Mapping):
        raise ValueError(f"row must be a mapping of dataset fields, got {type(row).__name__}")
    if "task" not in row:
        raise ValueError("row is missing field 'task'")
    # rows from `recalign data build` carry the rule their task file names (``rule``), so a
    # task a user defines judges its rows by that rule whatever it is called
    raw_task = row.get("rule") or row["task"]
    direction = None if row.get("rule") else row.get("direction")
    try:
        task = _TASK_CACHE[(raw_task, direction)]
    except (KeyError, TypeError):
        task = canonical_task(raw_task, direction)
        if len(_TASK_CACHE) < 1024 and isinstance(raw_task, str) and (direction is None or isinstance(direction, str)):
            _TASK_CACHE[(raw_task, direction)] = task
    m = _int_field(row, "item_count", task, 1)
    if "history" not in row:
        raise ValueError(f"row is missing field 'history' required by task {task!r}")
    history = _history_set(row["history"], task)
    if "target" not in row:
        raise ValueError(f"row is missing field 'target' required by task {task!r}")
    target = row["target"]
    if target is not None and type(target) is not int:
        try:
            target = _as_index(target)
        except (TypeError, ValueError, OverflowError):
            raise ValueError(f"row field 'target' must be an item index or None for task {task!r}, "
                             f"got {target!r:.80}") from None
    n = _int_field(row, "n", task, 0) if task[1] == "2" else None
    category = row.get("category")
    if category is None and task != "I0":
        raise ValueError(f"row is missing field 'category' required by task {task!r}")
    mask, size = None, 0
    if category is not None:
        try:
            mask, size = catalog_index(catalog).category(catalog, category)
        except (ValueError, TypeError) as e:
            raise ValueError(f"row field 'category' for task {task!r}: {e}") from None
    return RowSpec(task, m, n, history, target, category, mask, size)


class RewardResult:
    """What :func:`item_and_list_rewards` computed, one entry per parsed item.

    ``item_rewards`` (each in [−1, 1]) and ``list_reward`` are the training signal;
    ``spans``/``line_ends`` locate each item in the text (``line_end``: put the item reward
    on the token holding ``text[line_end - 1]``; the list reward goes on the last token).
    ``status`` per item: ``"ok"``, ``"exceed"`` (idx ≥ m), ``"nonexist"``, ``"repeat"``,
    ``"history"``. ``task_scores`` is None for I0's legal items (no task score).
    ``rank_part`` = Σ rank_corrected / B_m; ``task_list`` the list task score;
    ``format_score`` = legal items / max(m, number of items) in [0, 1].
    """
    __slots__ = ("task", "item_rewards", "list_reward", "parsed", "items", "status", "rank_scores",
                 "task_scores", "rank_part", "task_list", "in_cnt", "out_cnt", "n_legal", "format_score")

    def __init__(self, task, item_rewards, list_reward, parsed, items, status, rank_scores, task_scores,
                 rank_part, task_list, in_cnt, out_cnt, n_legal, format_score):
        self.task = task
        self.item_rewards: list[float] = item_rewards
        self.list_reward: float = list_reward
        self.parsed: list[ParsedItem] = parsed
        self.items: list[int | None] = items
        self.status: list[str] = status
        self.rank_scores: list[float] = rank_scores
        self.task_scores: list[float | None] = task_scores
        self.rank_part: float = rank_part
        self.task_list: float = task_list
        self.in_cnt: int = in_cnt
        self.out_cnt: int = out_cnt
        self.n_legal: int = n_legal
        self.format_score: float = format_score

    @property
    def spans(self) -> list[tuple[int, int]]:
        """(start, end) character offsets of each item's text (``(-1, -1)`` for given titles)."""
        return [(p.start, p.end) for p in self.parsed]

    @property
    def line_ends(self) -> list[int]:
        return [p.line_end for p in self.parsed]

    @property
    def titles(self) -> list[str]:
        return [p.title for p in self.parsed]

    def __repr__(self) -> str:
        return (f"RewardResult(task={self.task!r}, item_rewards={self.item_rewards!r}, "
                f"list_reward={self.list_reward!r}, status={self.status!r})")


def _rank_getter(teacher_ranks) -> Callable[[int], Any] | None:
    if teacher_ranks is None:
        return None
    if hasattr(teacher_ranks, "__getitem__"):
        return teacher_ranks.__getitem__
    if callable(teacher_ranks):
        return teacher_ranks
    raise ValueError(f"teacher_ranks must be a mapping, a sequence/array indexed by item, a callable "
                     f"or None, got {type(teacher_ranks).__name__}")


def item_and_list_rewards(row: Mapping, text: str | Sequence[str], teacher_ranks, catalog: Catalog, *,
                          fuzzy: bool = False, alpha: float = ALPHA, scale: float = LIST_SCALE,
                          spec: RowSpec | None = None, parser: str = "lenient") -> RewardResult:
    """Item-level and list-level rewards of one answer (REFERENCE.md §1.3).

    ``row``: the dataset row (fields in :func:`row_spec`). ``text``: the model's answer
    (a string, or conversational messages: the last assistant message), or an
    already-parsed list of title strings (spans are then ``(-1, -1)``). ``teacher_ranks``:
    item index -> the teacher's 0-based full-catalog rank for this row's history, as a
    mapping, a sequence/array indexed by item, or a callable. An item the teacher gives no
    rank for (missing key, ``None``, negative) counts as ranked last (N − 1). With
    ``teacher_ranks=None`` the rank score comes from the target only: 1.0 for the target,
    0.0 for any other legal item (our choice). ``fuzzy``: match titles within Levenshtein 3.
    ``spec``: a pre-validated :func:`row_spec` (skips validation). ``parser``: ``lenient``
    (ours) or ``strict`` (RecLM-gen's: every line an item, exact case-sensitive titles, never
    fuzzy; REFERENCE.md §1.7).

    Bad model output never raises; a bad row raises ValueError naming the field and task.

    >>> cat = Catalog(["A", "B", "C", "D"], [["x"], ["x"], ["y"], ["y"]])
    >>> row = {"task": "I0", "history": [4], "target": 2, "item_count": 2}
    >>> r = item_and_list_rewards(row, "1. B\\n2. C\\n3. A", {1: 0, 2: 5, 3: 1}, cat)
    >>> r.item_rewards, r.status
    ([1.0, 0.5, -1.0], ['ok', 'ok', 'exceed'])
    >>> round(r.list_reward, 4)   # 10 * (0.5 * (1 + 0.5/log2(3) - 1) / B_2 + 0.5 * 1)
    6.1282
    >>> row = {"task": "I1+", "history": [], "target": 3, "item_count": 2, "category": "x"}
    >>> r = item_and_list_rewards(row, "1. A\\n2. C", {1: 0, 3: 1}, cat)
    >>> [round(x, 4) for x in r.item_rewards], r.in_cnt, r.task_list
    ([0.8155, 0.5], 1, 0.5)
    """
    if spec is None:
        spec = row_spec(row, catalog)
    if isinstance(text, str):
        parsed = parse_answer(text, catalog, parser)
    elif isinstance(text, (list, tuple)) and all(isinstance(t, str) for t in text):
        parsed = [ParsedItem(t.strip(), -1, -1, -1) for t in text]
    else:   # conversational messages, bytes, None, ...
        parsed = parse_answer(completion_text(text), catalog, parser)
    cidx = catalog_index(catalog)
    rank_table = cidx.rank_table()
    n_table = len(rank_table)
    worst = cidx.n_items - 1
    get_rank = _rank_getter(teacher_ranks)
    task, m, n, hist, target, _, mask, cat_size = spec
    is_i0 = task == "I0"
    kind = task[2:]
    mn = m - n if n is not None else 0
    beta = 1.0 - alpha
    disc = _DISCOUNT

    status: list[str] = []
    rank_scores: list[float] = []
    task_scores: list[float | None] = []
    item_rewards: list[float] = []
    add_status, add_rs, add_ts, add_reward = (
        status.append, rank_scores.append, task_scores.append, item_rewards.append)
    seen: set[int] = set()
    in_cnt = out_cnt = n_legal = 0
    in_c = False
    rc_sum = 0.0
    target_pos = -1
    if parser == "strict":
        items = [lookup_item(catalog, p[0], "strict") for p in parsed]
    else:   # beyond m an item is illegal anyway: no (slow) fuzzy search there
        items = [catalog.find(p[0], fuzzy and idx < m) for idx, p in enumerate(parsed)]
    for idx, item in enumerate(items):
        if idx >= m:
            st = "exceed"
        elif item is None:
            st = "nonexist"
        elif item in seen:
            st = "repeat"
        elif item in hist:
            st = "history"
        else:
            st = "ok"
        if item is not None:
            if item == target and target_pos < 0:
                target_pos = idx
            seen.add(item)
        add_status(st)
        if st != "ok":
            add_rs(ILLEGAL)
            add_ts(ILLEGAL)
            add_reward(ILLEGAL)
            rc_sum += ILLEGAL
            continue
        # ---- legal item (idx < m)
        n_legal += 1
        if item == target:
            rs = 1.0
        elif get_rank is None:
            rs = 0.0
        else:
            try:
                r = get_rank(item)
                r = int(r) if r is not None else worst
            except (KeyError, IndexError, TypeError, ValueError, OverflowError):
                r = worst
            if r < 0:
                r = worst
            rs = rank_table[r] if r < n_table else 1.0 / math.log2(r + 3)
        add_rs(rs)
        rc_sum += rs * (disc[idx] if idx < _TABLE else 1.0 / math.log2(idx + 2))
        if mask is not None:
            in_c = mask[item] == 1
            if in_c:
                in_cnt += 1
            else:
                out_cnt += 1
        if is_i0:
            add_ts(None)
            add_reward(rs)
            continue
        if kind == "+":
            ts = 1.0 if in_c else 0.0
        elif kind == "-":
            ts = 0.0 if in_c else 1.0
        elif kind == "<=":
            if out_cnt > mn:
                ts = 0.5
            elif not in_c:
                ts = 1.0
            elif in_cnt < n:
                ts = 0.5
            else:
                ts = 0.0
        elif kind == ">=":
            if in_cnt > n:
                ts = 0.5
            elif in_c:
                ts = 1.0
            elif out_cnt < mn:
                ts = 0.5
            else:
                ts = 0.0
        else:   # "~"
            if in_c:
                ts = 1.0 if in_cnt <= n else 0.0
            elif in_cnt >= n:
                ts = 1.0
            else:
                ts = 0.5 if out_cnt <= mn else 0.0
        add_ts(ts)
        add_reward(alpha * rs + beta * ts)

    # ---- list level
    if is_i0:
        task_list = 0.0 if target_pos < 0 else (
            disc[target_pos] if target_pos < _TABLE else 1.0 / math.log2(target_pos + 2))
    elif kind == "+":
        task_list = 1.0 / (min(m, cat_size) - in_cnt + 1)
    elif kind == "-":
        task_list = 1.0 / (m - out_cnt + 1)
    else:
        ok = in_cnt <= n if kind == "<=" else in_cnt >= n if kind == ">=" else in_cnt == n
        task_list = 1.0 if ok else 1.0 / (abs(in_cnt - n) + 1)
    rank_part = rc_sum / (_BM[m] if m <= _TABLE else list_normalizer(m))
    list_reward = scale * (alpha * rank_part + beta * task_list)
    return RewardResult(task, item_rewards, list_reward, parsed, items, status, rank_scores, task_scores,
                        rank_part, task_list, in_cnt, out_cnt, n_legal, n_legal / max(m, len(parsed)))
