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
CATEGORY_RULES = ("uniform", "target", "teacher_frequent", "reference_frequent")
DIRECTIONS = ("+", "-", "<=", ">=", "~")

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
    splits: tuple[str, ...] = ("train",)
    direction: str | None = None
    train_category: str = "uniform"
    test_category: str = "target"
    min_category_size: int = 1
    proportions: tuple[float, ...] = ()
    test_proportion: float | None = None
    ratio: float = 0.0
    reward: str = "none"
    metrics: tuple[str, ...] = ()
    path: str = field(default="", compare=False)

    @property
    def id(self) -> str:
        return f"{self.task}@v{self.version}"


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


def parse_spec(path: Path) -> TaskSpec:
    data = _read(path)
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
    for k in ("item_count_train", "proportions", "splits", "metrics"):
        if k in data:
            check(isinstance(data[k], list), k, "a list")
            data[k] = tuple(data[k])
    if "item_count_train" in data:
        lo_hi = data["item_count_train"]
        check(len(lo_hi) == 2 and all(isinstance(x, int) for x in lo_hi) and 1 <= lo_hi[0] <= lo_hi[1],
              "item_count_train", "[low, high] with 1 <= low <= high")
    if "direction" in data:
        check(data["direction"] in DIRECTIONS, "direction", f"one of {', '.join(DIRECTIONS)}")
    for k in ("train_category", "test_category"):
        if k in data:
            check(data[k] in CATEGORY_RULES, k, f"one of {', '.join(CATEGORY_RULES)}")
    if "splits" in data:
        check(set(data["splits"]) <= {"train", "valid", "test"}, "splits", "a subset of [train, valid, test]")
    if "proportions" in data:
        check(all(0 < p < 1 for p in data["proportions"]), "proportions", "values strictly between 0 and 1")
    if data["builder"] == "proportion_control":
        check(bool(data.get("proportions")) and data.get("direction") in ("<=", ">=", "~"), "direction",
              "'<=', '>=' or '~' with a non-empty proportions list")
    if data["builder"] in ("category_control",):
        check(data.get("direction") in ("+", "-"), "direction", "'+' or '-'")
    check(isinstance(data.get("paraphrases", 1), int) and data.get("paraphrases", 1) >= 1,
          "paraphrases", "a positive integer")
    return TaskSpec(**data, path=str(path))


def load_specs(task_dir: str | Path | None = None) -> dict[str, TaskSpec]:
    """All task specs: built-in ones, overridden/extended by ``task_dir``'s files."""
    specs: dict[str, TaskSpec] = {}
    for folder in [BUILTIN] + ([Path(task_dir)] if task_dir else []):
        if not folder.is_dir():
            raise DataError(f"--task-dir {folder}: not a directory")
        for path in sorted(folder.glob("*.yaml")):
            if path.name.startswith("_"):
                continue
            spec = parse_spec(path)
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
    return out
