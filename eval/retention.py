"""Retention checks (REFERENCE.md §1.5): does an aligned model still know what its base knew?

* **MMLU**, 5-shot (Hendrycks et al.): raw text, no chat template; the prediction is the
  letter among `` A``/`` B``/`` C``/`` D`` with the highest next-token log-probability after
  ``Answer:`` (:meth:`Backend.logprobs`).
* **GSM8K**, 8-shot chain of thought with the 8 exemplars of Wei et al. 2022; the few-shot
  text goes in as ONE user message (the backends take chat messages), greedy decoding; the
  prediction is the last number of the answer (cut at a following ``Q:``), the gold the
  number after ``####``; compared as numbers (``18.00`` == ``18``).

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

>>> extract_last_number("She pays $1,234.50, so the answer is 18.")
'18'
>>> gsm8k_gold("3 + 4 = <<3+4=7>>7\\n#### 7")
'7'
>>> print(mmlu_prompt(MMLUQuestion("high_school_math", "1+1?", ("1", "2", "3", "4"), 1)))
The following are multiple choice questions (with answers) about high school math.
<BLANKLINE>
1+1?
A. 1
B. 2
C. 3
D. 4
Answer:
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
    "MMLUQuestion", "GSM8KProblem", "LETTERS", "GSM8K_EXEMPLARS",
    "load_mmlu", "spread_limit", "mmlu_prompt", "mmlu_prompts", "evaluate_mmlu",
    "load_gsm8k", "gsm8k_prompt", "gsm8k_messages", "extract_last_number", "gsm8k_gold",
    "gsm8k_prediction", "evaluate_gsm8k", "run_retention", "compare_retention",
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


def _subject_words(subject: str) -> str:
    return " ".join(w for w in subject.split("_") if w)


def _format_example(q: MMLUQuestion, with_answer: bool) -> str:
    text = q.question + "".join(f"\n{letter}. {c}" for letter, c in zip(LETTERS, q.choices)) + "\nAnswer:"
    return text + (f" {LETTERS[q.answer]}\n\n" if with_answer else "")


def mmlu_prompt(question: MMLUQuestion, shots: Sequence[MMLUQuestion] = ()) -> str:
    """The Hendrycks few-shot prompt (single space in "about {subject}", as lm-eval writes
    it; the original script has two)."""
    head = f"The following are multiple choice questions (with answers) about {_subject_words(question.subject)}.\n\n"
    return head + "".join(_format_example(s, True) for s in shots) + _format_example(question, False)


def mmlu_prompts(questions: Sequence[MMLUQuestion], dev: Sequence[MMLUQuestion] = (),
                 k_shot: int = 5, source: str = "dev split") -> list[str]:
    """One prompt per question; the shots are the first ``k_shot`` dev questions of its subject."""
    by = _group(dev)
    out = []
    for q in questions:
        shots = by.get(q.subject, [])[:k_shot]
        if len(shots) < k_shot:
            raise DataError(f"MMLU {source}: subject {q.subject!r} has {len(shots)} dev questions, "
                            f"{k_shot}-shot needs {k_shot}; add <subject>_dev.csv (dev/) or pass k_shot=0")
        out.append(mmlu_prompt(q, shots))
    return out


def _chunked_logprobs(backend, prompts: Sequence[str], candidates: Sequence[str], desc: str) -> np.ndarray:
    """Log-probs in chunks of the backend's batch size, longest prompts first (less padding,
    and an out-of-memory shows up at once), rows returned in the input order."""
    from tqdm.auto import tqdm

    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    size = max(1, int(getattr(backend, "batch_size", 16) or 16))
    out = np.zeros((len(prompts), len(candidates)), dtype=np.float64)
    starts = range(0, len(order), size)
    for s in tqdm(starts, desc=desc, disable=len(starts) < 2, mininterval=2.0):
        idx = order[s:s + size]
        lp = np.asarray(backend.logprobs([prompts[i] for i in idx], list(candidates)))
        if lp.shape != (len(idx), len(candidates)):
            raise RuntimeError(f"{type(backend).__name__}.logprobs returned shape {lp.shape}, expected "
                               f"{(len(idx), len(candidates))}")
        out[idx] = lp
    return out


def evaluate_mmlu(backend, path, limit: int | None = None, k_shot: int = 5,
                  subjects: Sequence[str] | str | None = None) -> dict:
    """MMLU accuracy: ``{accuracy, macro_accuracy, n, choice_mass, per_subject: {subject: {acc,
    n}}, k_shot, layout, limit, seconds}``: ``accuracy`` over questions, ``macro_accuracy`` the
    mean over subjects, ``choice_mass`` the mean next-token probability on " A".." D" (near 1
    when the model follows the answer format; a drop after alignment is a warning sign)."""
    t0 = time.time()
    everything, layout = _load_mmlu_all(path, "test")
    questions = _select(everything, subjects, limit, path)
    dev: list[MMLUQuestion] = []
    if k_shot > 0 and questions:
        try:
            dev = _load_mmlu_all(path, "dev")[0]
        except DataError as e:
            raise DataError(f"{e}; {k_shot}-shot prompts need the dev split (or pass k_shot=0)") from None
    prompts = mmlu_prompts(questions, dev, k_shot, source=str(path))
    lp = _chunked_logprobs(backend, prompts, [f" {c}" for c in LETTERS], "MMLU")
    pred = lp.argmax(axis=1) if len(questions) else np.zeros(0, dtype=int)
    gold = np.array([q.answer for q in questions], dtype=int)
    correct = pred == gold
    # probability mass on the four letters: near 1 when the model follows the format
    mass = np.exp(lp).sum(axis=1) if len(questions) else np.zeros(0)
    per = {}
    for s in sorted({q.subject for q in questions}):
        mask = np.array([q.subject == s for q in questions])
        per[s] = {"acc": float(correct[mask].mean()), "n": int(mask.sum())}
    return {
        "accuracy": float(correct.mean()) if len(questions) else float("nan"),
        **_outcomes(correct, [q.subject + "\x1f" + q.question for q in questions]),
        "macro_accuracy": float(np.mean([v["acc"] for v in per.values()])) if per else float("nan"),
        "n": len(questions),
        "choice_mass": float(mass.mean()) if len(questions) else float("nan"),
        "per_subject": per,
        "k_shot": k_shot,
        "layout": layout,
        "limit": limit,
        "seconds": round(time.time() - t0, 1),
    }


# -------------------------------------------------------------------------------- GSM8K

# The 8 chain-of-thought exemplars of Wei et al. 2022 (Table 20), verbatim.
GSM8K_EXEMPLARS: tuple[tuple[str, str], ...] = (
    ("There are 15 trees in the grove. Grove workers will plant trees in the grove today. After they "
     "are done, there will be 21 trees. How many trees did the grove workers plant today?",
     "There are 15 trees originally. Then there were 21 trees after some more were planted. So there "
     "must have been 21 - 15 = 6. The answer is 6."),
    ("If there are 3 cars in the parking lot and 2 more cars arrive, how many cars are in the parking lot?",
     "There are originally 3 cars. 2 more cars arrive. 3 + 2 = 5. The answer is 5."),
    ("Leah had 32 chocolates and her sister had 42. If they ate 35, how many pieces do they have left in "
     "total?",
     "Originally, Leah had 32 chocolates. Her sister had 42. So in total they had 32 + 42 = 74. After "
     "eating 35, they had 74 - 35 = 39. The answer is 39."),
    ("Jason had 20 lollipops. He gave Denny some lollipops. Now Jason has 12 lollipops. How many "
     "lollipops did Jason give to Denny?",
     "Jason started with 20 lollipops. Then he had 12 after giving some to Denny. So he gave Denny "
     "20 - 12 = 8. The answer is 8."),
    ("Shawn has five toys. For Christmas, he got two toys each from his mom and dad. How many toys does "
     "he have now?",
     "Shawn started with 5 toys. If he got 2 toys each from his mom and dad, then that is 4 more toys. "
     "5 + 4 = 9. The answer is 9."),
    ("There were nine computers in the server room. Five more computers were installed each day, from "
     "monday to thursday. How many computers are now in the server room?",
     "There were originally 9 computers. For each of 4 days, 5 more computers were added. So 5 * 4 = 20 "
     "computers were added. 9 + 20 is 29. The answer is 29."),
    ("Michael had 58 golf balls. On tuesday, he lost 23 golf balls. On wednesday, he lost 2 more. How "
     "many golf balls did he have at the end of wednesday?",
     "Michael started with 58 golf balls. After losing 23 on tuesday, he had 58 - 23 = 35. After losing "
     "2 more, he had 35 - 2 = 33 golf balls. The answer is 33."),
    ("Olivia has $23. She bought five bagels for $3 each. How much money does she have left?",
     "Olivia had 23 dollars. 5 bagels for 3 dollars each will be 5 x 3 = 15 dollars. So she has 23 - 15 "
     "dollars left. 23 - 15 is 8. The answer is 8."),
)

GSM8K_INSTRUCTION = ("Solve the last math word problem. Answer in the same format as the examples: "
                     "reason step by step, then end with \"The answer is N.\"\n\n")


@dataclass(frozen=True)
class GSM8KProblem:
    question: str
    answer: str          # the reference solution, ending "#### N"
    gold: str            # N, normalised (no commas, no trailing zeros)


# A number: optional sign (not after a word character, so "3-4" gives 4), optional $,
# digits with or without thousands commas, optional decimals. Never starts mid-number.
_NUMBER = re.compile(
    r"(?P<sign>(?<![\w)\].])[-\u2212])?\s?\$?\s?(?<![\d])"
    r"(?P<int>\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?P<frac>\.\d+)?")


def _normalize_number(text: str) -> str:
    d = Decimal(text)
    if d == 0:
        return "0"
    return format(d.normalize(), "f")


def extract_last_number(text: str) -> str | None:
    """The last number in ``text``, normalised ("1,234.50" -> "1234.5", "$-5"/"-$5" -> "-5",
    "18.00" -> "18"); None when there is none."""
    last = None
    for m in _NUMBER.finditer(text or ""):
        last = m
    if last is None:
        return None
    sign = "-" if last.group("sign") else ""
    return _normalize_number(sign + last.group("int").replace(",", "") + (last.group("frac") or ""))


def gsm8k_gold(answer: str) -> str:
    """The number after the last ``####`` of a GSM8K reference answer; ValueError otherwise."""
    if "####" not in answer:
        raise ValueError("no '####' before the final answer")
    tail = answer.rsplit("####", 1)[1].strip().replace(",", "").replace("$", "")
    try:
        return _normalize_number(tail.replace("\u2212", "-"))
    except InvalidOperation:
        raise ValueError(f"the text after '####' is not a number: {tail!r}") from None


_NEXT_QUESTION = re.compile(r"\n\s*(?:Q|Question)\s*:")


def gsm8k_prediction(completion: str) -> str | None:
    """The last number of the answer, ignoring any further "Q: ..." the model goes on to write."""
    return extract_last_number(_NEXT_QUESTION.split(completion or "", maxsplit=1)[0])


def gsm8k_prompt(question: str) -> str:
    """The 8-shot chain-of-thought text: ``Q: ...\\nA: ...\\n\\n`` x 8, then ``Q: {question}\\nA:``."""
    shots = "".join(f"Q: {q}\nA: {a}\n\n" for q, a in GSM8K_EXEMPLARS)
    return f"{shots}Q: {question}\nA:"


def gsm8k_messages(question: str) -> list[dict]:
    return [{"role": "user", "content": GSM8K_INSTRUCTION + gsm8k_prompt(question)}]


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


def _same_number(a: str | None, b: str) -> bool:
    if a is None:
        return False
    try:
        return Decimal(a) == Decimal(b)
    except InvalidOperation:
        return False


def evaluate_gsm8k(backend, path, limit: int | None = None, max_new_tokens: int = 256,
                   n_samples: int = 5) -> dict:
    """GSM8K accuracy on the first ``limit`` problems: ``{accuracy, n, k_shot, max_new_tokens,
    unparsed, samples}``; ``samples``: the first ``n_samples`` problems' question, gold,
    prediction, correct flag and completion."""
    from recalign.eval.backends import Sampling

    t0 = time.time()
    problems = load_gsm8k(path, limit=limit)
    prompts = [gsm8k_messages(p.question) for p in problems]
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i][0]["content"]))
    texts = backend.generate([prompts[i] for i in order], Sampling(max_new_tokens=max_new_tokens,
                                                                    temperature=0.0))
    if len(texts) != len(prompts):
        raise RuntimeError(f"{type(backend).__name__}.generate returned {len(texts)} texts for "
                           f"{len(prompts)} prompts")
    completions = [""] * len(prompts)
    for i, t in zip(order, texts):
        completions[i] = t
    preds = [gsm8k_prediction(c) for c in completions]
    correct = [_same_number(pr, p.gold) for pr, p in zip(preds, problems)]
    return {
        "accuracy": float(np.mean(correct)) if problems else float("nan"),
        **_outcomes(correct, [p.question for p in problems]),
        "n": len(problems),
        "k_shot": len(GSM8K_EXEMPLARS),
        "max_new_tokens": max_new_tokens,
        "unparsed": sum(p is None for p in preds),
        "limit": limit,
        "seconds": round(time.time() - t0, 1),
        "samples": [{"question": p.question, "gold": p.gold, "prediction": pr, "correct": c,
                     "completion": comp}
                    for p, pr, c, comp in list(zip(problems, preds, correct, completions))[:n_samples]],
    }


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


def run_retention(backend, mmlu=None, gsm8k=None, limit: int | None = None, *,
                  mmlu_limit: int | None = None, gsm8k_limit: int | None = None, k_shot: int = 5,
                  max_new_tokens: int = 256) -> dict:
    """Both checks for a report: ``{model, adapter, mmlu: {...} | None, gsm8k: {...} | None}``.
    ``limit`` applies to both unless ``mmlu_limit`` / ``gsm8k_limit`` is given."""
    if mmlu is None and gsm8k is None:
        raise DataError("retention: give --mmlu and/or --gsm8k (e.g. ../shared/data/mmlu, "
                        "../shared/data/gsm8k/test.jsonl)")
    out = {"model": getattr(backend, "model", None), "adapter": getattr(backend, "adapter", None),
           "mmlu": None, "gsm8k": None}
    if mmlu is not None:
        res = evaluate_mmlu(backend, mmlu, limit=mmlu_limit if mmlu_limit is not None else limit,
                            k_shot=k_shot)
        out["mmlu"] = {"path": str(mmlu), **res}
    if gsm8k is not None:
        res = evaluate_gsm8k(backend, gsm8k, limit=gsm8k_limit if gsm8k_limit is not None else limit,
                             max_new_tokens=max_new_tokens)
        out["gsm8k"] = {"path": str(gsm8k), **res}
    return out
