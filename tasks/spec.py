"""Task specs: YAML files in this folder (or a user's), validated into :class:`TaskSpec`.

A task file names its template, sampler parameters, teacher label rule (``builder``),
reward and metrics, and carries ``version``; ``include: base.yaml`` pulls in a base whose
keys the variant overrides. Files starting with ``_`` are bases, not tasks.

>>> specs = load_specs()
>>> [s.task for s in resolve_tasks("I0,I1", specs)]
['I0', 'I1+', 'I1-']
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from recalign.data.util import DataError, suggest

BUILTIN = Path(__file__).resolve().parent
BUILDERS = ("sequential", "category_control", "proportion_control", "item_search", "category_qa", "chat")
CATEGORY_RULES = ("uniform", "target", "target_random", "teacher_frequent", "teacher_frequent_uniform",
                  "reference_frequent")
PROPORTION_RULES = ("draw", "count_uniform")
# SFT (train split) proportion draws: "draw" = p from ``proportions``; "count_offset" = the official
# SFT code's (REFERENCE.md §1.7): t ~ U{1..min(|C|, m)} for <= (U{0..min(|C|, m) - 1} for >=), n = t,
# p = t / m, and the label holds t - {0,1} (<=) or t + {0,1} (>=) in-category items
TRAIN_PROPORTION_RULES = ("draw", "count_offset")
SEARCH_DRAWS = ("popular", "per_item")      # I3: popular items of C per row, or one row per item (official)
QA_CATEGORIES = ("last", "random")          # I3-QA: the item's most specific category, or a random one
DIRECTIONS = ("+", "-", "<=", ">=", "~")
# reward: which RecLM-gen rule judges the answer (rewards/reclm.py); "task" (I3 item search)
# and "none" are not rewarded or scored as lists
REWARDS = ("rank", "rank+task", "task", "none")
# metric names a task file may list -> the keys of eval/metrics.py's per-sample dict
METRICS = {"HR@10": ("HR",), "NDCG@10": ("NDCG",), "MRR@10": ("MRR",), "TCP@10": ("TCP",), "CPA": ("CPA",),
           "CorrectCount": ("CorrectCount",), "RepeatItem@10": ("RepeatItem", "RepeatItem_rate"),
           "NonExist@10": ("NonExist", "NonExist_rate"), "InHistory@10": ("InHistory", "InHistory_rate"),
           "InFullHistory@10": ("InFullHistory", "InFullHistory_rate")}

# Shorthands accepted on the command line, and the paper's unicode spellings.
GROUPS = {"I1": ["I1+", "I1-"], "I2": ["I2<=", "I2>=", "I2~"], "I3": ["I3", "I3-QA"]}
ALIASES = {"I1−": "I1-", "I2≤": "I2<=", "I2≥": "I2>=", "I2≈": "I2~"}


@dataclass(frozen=True)
class TaskSpec:
    task: str
    version: int
    template: str
    builder: str
    description: str = ""
    paraphrases: int = 1
    system: str | None = "system.jinja"
    answer_template: str = "answer.jinja"
    history_window: int = 10
    item_count_train: tuple[int, int] = (1, 10)
    item_count_eval: int = 10
    # RL prompts (the build's ``rl`` split, ``--rl-split``; REFERENCE.md §1.7): None = as in train
    item_count_rl: tuple[int, int] | None = None
    rl_category: str | None = None
    rl_proportion: str = "draw"       # draw: from ``proportions``; count_uniform: n ~ U{0..min(|C|, m)}, p = n/m down to 10 %
    splits: tuple[str, ...] = ("train",)
    direction: str | None = None
    train_category: str = "uniform"
    test_category: str = "target"
    min_category_size: int = 1
    proportions: tuple[float, ...] = ()
    test_proportion: float | None = None
    train_proportion: str = "draw"    # proportion_control, train split: see TRAIN_PROPORTION_RULES
    ratio: float = 0.0
    # train split: tasks of one ``alternate`` group share the users, each user getting one of
    # them per epoch at random (the official SFT's one I1 row, + or -, per user); None = every task, every user
    alternate: str | None = None
    search_draw: str = "popular"      # item_search: see SEARCH_DRAWS
    qa_category: str = "last"         # category_qa: see QA_CATEGORIES
    reward: str = "none"
    metrics: tuple[str, ...] = ()
    path: str = field(default="", compare=False)

    @property
    def id(self) -> str:
        return f"{self.task}@v{self.version}"

    @property
    def rule(self) -> str | None:
        """The scoring rule rewards and metrics apply to this task's rows (rewards/reclm.py):
        ``I0`` (rank), ``I1+``/``I1-`` (rank+task, category control), ``I2<=``/``I2>=``/``I2~``
        (rank+task, proportion control), or None (not scored as a list).

        >>> load_specs()["I2<="].rule, load_specs()["I3"].rule
        ('I2<=', None)
        """
        if self.reward == "rank":
            return "I0"
        if self.reward == "rank+task" and self.direction:
            return ("I1" if self.direction in ("+", "-") else "I2") + self.direction
        return None

    def metric_keys(self) -> tuple[str, ...]:
        """The per-sample metric keys this task reports (from its ``metrics`` list)."""
        return tuple(k for m in self.metrics for k in METRICS[m])


_FIELDS = {f.name: f for f in dataclasses.fields(TaskSpec)}
_REQUIRED = [n for n, f in _FIELDS.items()
             if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]


def _read(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    if path in seen:
        raise DataError(f"{path}: include cycle ({' -> '.join(p.name for p in seen + (path,))})")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise DataError(f"{path}{line}: not valid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: a task file must be a mapping of keys to values")
    base = data.pop("include", None)
    if base is None:
        return data
    base_path = path.parent / base
    if not base_path.is_file():
        raise DataError(f"{path}: include: {base} not found next to it")
    return {**_read(base_path, seen + (path,)), **data}


def parse_spec(path: Path, protocol: str | None = None) -> TaskSpec:
    """One task file; under ``protocol`` its ``protocols: {<name>: {key: value}}`` block
    replaces those keys (e.g. the official test proportion of I2>=), checked like the rest."""
    from recalign.rewards.protocol import PROTOCOLS

    data = _read(path)
    overrides = data.pop("protocols", None) or {}
    if not isinstance(overrides, dict) or not all(isinstance(v, dict) for v in overrides.values()):
        raise DataError(f"{path}: key 'protocols' must map a protocol name to keys, e.g. "
                        f"{{reclm-gen: {{test_proportion: 0.3}}}}")
    for name, keys in overrides.items():
        if name not in PROTOCOLS:
            raise DataError(f"{path}: protocols: unknown protocol {name!r}{suggest(str(name), PROTOCOLS)}")
        fixed = sorted(set(keys) & {"task", "version", "builder", "path"})
        if fixed:
            raise DataError(f"{path}: protocols.{name}: {fixed[0]!r} cannot change with the protocol")
    if protocol is not None and protocol not in PROTOCOLS:
        raise DataError(f"protocol {protocol!r} unknown{suggest(protocol, PROTOCOLS)}; protocols: {', '.join(PROTOCOLS)}")
    data.update(overrides.get(protocol) or {})
    for key in data:
        if key not in _FIELDS or key == "path":
            raise DataError(f"{path}: unknown key {key!r}{suggest(key, _FIELDS)}")
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise DataError(f"{path}: missing required key(s) {', '.join(missing)}")

    def check(ok: bool, key: str, expected: str) -> None:
        if not ok:
            raise DataError(f"{path}: key {key!r} must be {expected}, got {data.get(key)!r}")

    check(isinstance(data["version"], int), "version", "an integer")
    check(data["builder"] in BUILDERS, "builder", f"one of {', '.join(BUILDERS)}")
    for k in ("item_count_train", "item_count_rl", "proportions", "splits", "metrics"):
        if k in data:
            check(isinstance(data[k], list), k, "a list")
            data[k] = tuple(data[k])
    for k in ("item_count_train", "item_count_rl"):
        if k in data:
            lo_hi = data[k]
            check(len(lo_hi) == 2 and all(isinstance(x, int) for x in lo_hi) and 1 <= lo_hi[0] <= lo_hi[1],
                  k, "[low, high] with 1 <= low <= high")
    if data.get("rl_category") is not None:
        check(data["rl_category"] in CATEGORY_RULES, "rl_category", f"one of {', '.join(CATEGORY_RULES)}")
    check(data.get("rl_proportion", "draw") in PROPORTION_RULES, "rl_proportion", f"one of {', '.join(PROPORTION_RULES)}")
    check(data.get("train_proportion", "draw") in TRAIN_PROPORTION_RULES, "train_proportion",
          f"one of {', '.join(TRAIN_PROPORTION_RULES)}")
    if data.get("train_proportion", "draw") == "count_offset":
        check(data.get("direction") in ("<=", ">="), "train_proportion",
              "'draw' for this direction ('count_offset' is defined for '<=' and '>=' only)")
    if data.get("alternate") is not None:
        check(isinstance(data["alternate"], str) and data["alternate"] != "", "alternate",
              "a group name (a string), e.g. I1")
    check(data.get("search_draw", "popular") in SEARCH_DRAWS, "search_draw", f"one of {', '.join(SEARCH_DRAWS)}")
    check(data.get("qa_category", "last") in QA_CATEGORIES, "qa_category", f"one of {', '.join(QA_CATEGORIES)}")
    if "direction" in data:
        check(data["direction"] in DIRECTIONS, "direction", f"one of {', '.join(DIRECTIONS)}")
    for k in ("train_category", "test_category"):
        if k in data:
            check(data[k] in CATEGORY_RULES, k, f"one of {', '.join(CATEGORY_RULES)}")
    if "splits" in data:
        check(set(data["splits"]) <= {"train", "valid", "test", "rl"}, "splits",
              "a subset of [train, valid, test, rl] (rl: RL prompts without SFT rows)")
    if "proportions" in data:
        check(all(0 < p < 1 for p in data["proportions"]), "proportions", "values strictly between 0 and 1")
    if data["builder"] == "proportion_control":
        check(bool(data.get("proportions")) and data.get("direction") in ("<=", ">=", "~"), "direction",
              "'<=', '>=' or '~' with a non-empty proportions list")
    if data["builder"] in ("category_control",):
        check(data.get("direction") in ("+", "-"), "direction", "'+' or '-'")
    check(isinstance(data.get("paraphrases", 1), int) and data.get("paraphrases", 1) >= 1,
          "paraphrases", "a positive integer")
    check(data.get("reward", "none") in REWARDS, "reward", f"one of {', '.join(REWARDS)}")
    bad = [m for m in data.get("metrics", ()) if m not in METRICS]
    check(not bad, "metrics", f"a list of {', '.join(METRICS)}")
    if data.get("reward") == "rank+task":
        check(data.get("direction") in DIRECTIONS and data["builder"] in ("category_control", "proportion_control"),
              "reward", "'rank', 'task' or 'none' here ('rank+task' needs a category_control or "
                        "proportion_control builder and a direction)")
    if protocol is None:
        for name in overrides:            # each protocol's variant must be a valid task too
            parse_spec(path, name)
    return TaskSpec(**data, path=str(path))


def validate_templates(spec: TaskSpec, template_dir: str | Path | None = None) -> None:
    """A task's templates must exist (in ``template_dir`` or recalign's template folder)."""
    from recalign.templates.render import BUILTIN as TEMPLATES

    dirs = ([Path(template_dir)] if template_dir else []) + [TEMPLATES]
    for key in ("template", "answer_template", "system"):
        name = getattr(spec, key)
        if name and not any((d / name).is_file() for d in dirs):
            have = sorted({p.name for d in dirs for p in d.glob("*.jinja")})
            raise DataError(f"{spec.path}: key {key!r}: template {name!r} not found{suggest(name, have)}; "
                            f"templates: {', '.join(have)}")


def specs_from_card(card: dict) -> dict[str, TaskSpec]:
    """The task specs a built dataset was made with (its card.json ``specs``): eval and RL
    judge rows by the rules of the tasks that made them, built-in or from ``--task-dir``."""
    out = {}
    for name, d in (card.get("specs") or {}).items():
        d = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in _FIELDS and k != "path"}
        try:
            out[name] = TaskSpec(**d)
        except TypeError:           # a card from an older spec format: use the built-in spec
            continue
    return out


def load_specs(task_dir: str | Path | None = None, protocol: str | None = None) -> dict[str, TaskSpec]:
    """All task specs: built-in ones, overridden/extended by ``task_dir``'s files, with each
    file's ``protocols`` block for ``protocol`` applied."""
    specs: dict[str, TaskSpec] = {}
    for folder in [BUILTIN] + ([Path(task_dir)] if task_dir else []):
        if not folder.is_dir():
            raise DataError(f"--task-dir {folder}: not a directory")
        for path in sorted(folder.glob("*.yaml")):
            if path.name.startswith("_"):
                continue
            spec = parse_spec(path, protocol)
            specs[spec.task] = spec
    return specs


def resolve_tasks(names: str | list[str], specs: dict[str, TaskSpec]) -> list[TaskSpec]:
    """'I0,I1,I2' -> the specs, groups expanded, order kept, duplicates dropped."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    out: list[TaskSpec] = []
    for name in names:
        name = ALIASES.get(name, name)
        for t in GROUPS.get(name, [name]):
            if t not in specs:
                raise DataError(f"unknown task {name!r}{suggest(name, list(specs) + list(GROUPS))}; "
                                f"valid: {', '.join(list(GROUPS) + list(specs))}")
            if specs[t] not in out:
                out.append(specs[t])
    if not out:
        raise DataError(f"--tasks {','.join(names) if isinstance(names, list) else names!r}: no task named; "
                        f"choose from {', '.join(list(GROUPS) + list(specs))}, e.g. --tasks I0,I1,I2,I3")
    return out
