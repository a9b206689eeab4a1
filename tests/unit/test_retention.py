"""Retention checks (eval/retention.py): MMLU in three layouts, GSM8K, scoring with fakes and tiny-random."""
import json

import numpy as np
import pytest

from recalign.data.util import DataError
from recalign.eval.backends import Backend
from recalign.eval.retention import (GSM8K_EXEMPLARS, MMLUQuestion, evaluate_gsm8k, evaluate_mmlu,
                                     extract_last_number, gsm8k_gold, gsm8k_messages, gsm8k_prediction,
                                     load_gsm8k, load_mmlu, mmlu_prompt, mmlu_prompts, run_retention,
                                     spread_limit)

from ..conftest import FIXTURES

RET = FIXTURES / "retention"
LAYOUTS = ["mmlu_header", "mmlu_hendrycks", "mmlu_cais", "mmlu_cais_jsonl"]
GSM = RET / "gsm8k" / "test.jsonl"
# the fixture's test answers: astronomy A C B, college_biology D A B -> 2 of 6 are "A"
GOLD = {"astronomy": [0, 2, 1], "college_biology": [3, 0, 1]}


# ------------------------------------------------------------------------------- fakes

def _question_of(prompt: str) -> str:
    """The test question of an MMLU prompt (the last block, before its choices)."""
    return prompt.rsplit("\n\n", 1)[1].split("\nA. ")[0]


class OracleBackend(Backend):
    """Puts the most log-probability on the right letter."""

    def __init__(self, questions, batch_size=2):
        super().__init__("oracle", batch_size=batch_size)
        self.key = {q.question: q.answer for q in questions}
        self.calls = []

    def logprobs(self, texts, candidates):
        assert list(candidates) == [" A", " B", " C", " D"]
        self.calls.append(len(texts))
        out = np.full((len(texts), 4), np.log(0.01))
        for i, t in enumerate(texts):
            out[i, self.key[_question_of(t)]] = np.log(0.9)
        return out


class AlwaysA(Backend):
    def logprobs(self, texts, candidates):
        return np.tile(np.log([0.4, 0.3, 0.2, 0.1]), (len(texts), 1))


class Says18(Backend):
    def __init__(self):
        super().__init__("says18")
        self.prompts = []

    def generate(self, prompts, sampling, grounded=None):
        assert sampling.temperature == 0 and grounded is None
        self.prompts.extend(prompts)
        return ["She has 16 - 3 - 4 = 9 eggs. 9 * 2 = $18. The answer is 18.\n\nQ: Tom has 7 apples.\nA: 7"
                for _ in prompts]


class GoldEcho(Backend):
    """Answers each problem with its gold number (found through the question)."""

    def __init__(self, problems):
        super().__init__("echo", batch_size=2)
        self.key = {p.question: p.gold for p in problems}

    def generate(self, prompts, sampling, grounded=None):
        out = []
        for m in prompts:
            q = m[-1]["content"].rsplit("Q: ", 1)[1].removesuffix("\nA:")
            out.append(f"Step by step, 1,000 things. The answer is {self.key[q]}.")
        return out


# ------------------------------------------------------------------------------- MMLU loading

@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_layout_loads_the_same_questions(layout):
    want_test = load_mmlu(RET / "mmlu_header")
    want_dev = load_mmlu(RET / "mmlu_header", "dev")
    assert load_mmlu(RET / layout) == want_test
    assert load_mmlu(RET / layout, split="dev") == want_dev
    assert [q.subject for q in want_test] == ["astronomy"] * 3 + ["college_biology"] * 3
    assert [q.answer for q in want_test] == GOLD["astronomy"] + GOLD["college_biology"]
    assert len(want_dev) == 10
    q = want_test[1]
    assert q.question == 'Which planet has prominent rings, "the jewel" of the system?'
    assert q.choices == ("Mars", "Mercury", "Saturn", "Earth")


def test_layout_is_detected_and_reported():
    got = {lay: evaluate_mmlu(AlwaysA("a"), RET / lay, k_shot=0)["layout"] for lay in LAYOUTS}
    assert got == {"mmlu_header": "csv-header", "mmlu_hendrycks": "csv-hendrycks", "mmlu_cais": "cais",
                   "mmlu_cais_jsonl": "cais"}


def test_single_file_subjects_and_limit():
    one = load_mmlu(RET / "mmlu_hendrycks" / "test" / "astronomy_test.csv")
    assert [q.subject for q in one] == ["astronomy"] * 3
    assert [q.subject for q in load_mmlu(RET / "mmlu_cais", subjects="college_biology")] == ["college_biology"] * 3
    # limit: a total spread evenly, alphabetical subjects first, first questions in file order
    three = load_mmlu(RET / "mmlu_header", limit=3)
    assert [(q.subject, q.answer) for q in three] == [("astronomy", 0), ("astronomy", 2), ("college_biology", 3)]
    assert len(load_mmlu(RET / "mmlu_header", limit=100)) == 6
    assert load_mmlu(RET / "mmlu_header", limit=0) == []
    with pytest.raises(DataError, match="did you mean 'astronomy'"):
        load_mmlu(RET / "mmlu_header", subjects=["astronomyy"])


def test_spread_limit():
    assert spread_limit({"b": 10, "a": 1, "c": 10}, 8) == {"a": 1, "b": 4, "c": 3}
    assert spread_limit({"a": 5, "b": 5, "c": 5}, 2) == {"a": 1, "b": 1, "c": 0}
    assert spread_limit({"a": 2, "b": 9}, None) == {"a": 2, "b": 9}
    assert spread_limit({"a": 2, "b": 3}, 50) == {"a": 2, "b": 3}
    assert sum(spread_limit({f"s{i:02d}": 100 + i for i in range(57)}, 114).values()) == 114
    assert set(spread_limit({f"s{i:02d}": 100 for i in range(57)}, 114).values()) == {2}


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


HDR = "question,choice0,choice1,choice2,choice3,answer\n"


@pytest.mark.parametrize("name,text,expect", [
    ("x_test.csv", HDR + "q1,a,b,c,d,0\nq2,a,b,c,d,1\nq3,a,b,c,1\n", r"x_test\.csv: row 4: expected 6 columns"),
    ("x_test.csv", HDR + "q1,a,b,c,d,7\n", r"x_test\.csv: row 2: answer '7' is not an index 0-3 or a letter A-D"),
    ("x_test.csv", "q1,a,b,c,d,A\nq2,a,b,c,d,E\n", r"x_test\.csv: row 2: answer 'E'"),
    ("x_test.csv", "q1,a,b,c,d,e,f,A\n", r"x_test\.csv: row 1: expected 6 columns .* found 8"),
    ("x_test.csv", "question,a,b,answer\n", r"x_test\.csv: row 1 \(header\): expected 6 columns"),
    ("x_test.csv", HDR, r"x_test\.csv: no questions"),
])
def test_malformed_csv_names_file_and_row(tmp_path, name, text, expect):
    _write(tmp_path / "test" / name, text)
    with pytest.raises(DataError, match=expect):
        load_mmlu(tmp_path)


@pytest.mark.parametrize("rows,expect", [
    ([{"question": "q", "subject": "s", "choices": ["a", "b", "c", "d"], "answer": 1},
      {"question": "q", "subject": "s", "choices": ["a", "b", "c"], "answer": 1}],
     r"test\.jsonl: line 2: choices must be a list of 4"),
    ([{"question": "q", "subject": "s", "choices": ["a", "b", "c", "d"], "answer": 4}],
     r"test\.jsonl: line 1: answer 4 is not"),
    ([{"question": "q", "subject": "s", "answer": 0}], r"test\.jsonl: line 1: missing field\(s\) choices"),
])
def test_malformed_cais_jsonl_names_file_and_line(tmp_path, rows, expect):
    _write(tmp_path / "all" / "test.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=expect):
        load_mmlu(tmp_path)


def test_malformed_cais_parquet_and_json(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "all").mkdir()
    pq.write_table(pa.Table.from_pylist([
        {"question": "q", "subject": "s", "choices": ["a", "b", "c", "d"], "answer": 0},
        {"question": "q", "subject": "s", "choices": ["a", "b", "c", "d"], "answer": 9}]),
        tmp_path / "all" / "test-00000-of-00001.parquet")
    with pytest.raises(DataError, match=r"test-00000-of-00001\.parquet: row 2: answer 9"):
        load_mmlu(tmp_path)
    _write(tmp_path / "j" / "all" / "test.jsonl", '{"question": "q",\n')
    with pytest.raises(DataError, match=r"test\.jsonl: line 1: invalid JSON"):
        load_mmlu(tmp_path / "j")


def test_missing_inputs_are_clear(tmp_path):
    with pytest.raises(DataError, match="no such file or folder"):
        load_mmlu(tmp_path / "nope")
    with pytest.raises(DataError, match="found no test questions"):
        load_mmlu(tmp_path)
    with pytest.raises(DataError, match="choose test, dev or val"):
        load_mmlu(RET / "mmlu_header", split="train")
    # a hub id offline (conftest sets HF_HUB_OFFLINE=1): a DataError, not a traceback
    with pytest.raises(DataError, match="hub"):
        load_mmlu("cais/mmlu-does-not-exist-here")
    # too few dev questions for k-shot
    _write(tmp_path / "m" / "test" / "x_test.csv", HDR + "q,a,b,c,d,0\n")
    _write(tmp_path / "m" / "dev" / "x_dev.csv", HDR + "q,a,b,c,d,0\n")
    with pytest.raises(DataError, match="'x' has 1 dev questions, 5-shot needs 5"):
        evaluate_mmlu(AlwaysA("a"), tmp_path / "m")
    assert evaluate_mmlu(AlwaysA("a"), tmp_path / "m", k_shot=1)["n"] == 1
    _write(tmp_path / "m" / "test" / "y_test.csv", HDR + "q,a,b,c,d,0\n")
    with pytest.raises(DataError, match="'y' has 0 dev questions"):
        evaluate_mmlu(AlwaysA("a"), tmp_path / "m", k_shot=1)
    _write(tmp_path / "n" / "test" / "x_test.csv", HDR + "q,a,b,c,d,0\n")
    with pytest.raises(DataError, match=r"found no dev questions.*pass k_shot=0"):
        evaluate_mmlu(AlwaysA("a"), tmp_path / "n")
    assert evaluate_mmlu(AlwaysA("a"), tmp_path / "n", k_shot=0)["accuracy"] == 1.0
    with pytest.raises(DataError, match="no such file"):
        load_gsm8k("gsm8k/test.jsonl")                 # a missing relative path is not a hub id


# ------------------------------------------------------------------------------- MMLU prompts + scoring

def test_prompt_is_the_standard_format():
    test = load_mmlu(RET / "mmlu_header", subjects=["college_biology"], limit=1)
    dev = load_mmlu(RET / "mmlu_header", "dev")
    [prompt] = mmlu_prompts(test, dev, k_shot=2)
    assert prompt == (
        "The following are multiple choice questions (with answers) about college biology.\n\n"
        "The powerhouse of the cell is the\nA. nucleus\nB. ribosome\nC. mitochondrion\nD. membrane\nAnswer: C\n\n"
        "DNA is made of\nA. amino acids\nB. nucleotides\nC. lipids\nD. sugars only\nAnswer: B\n\n"
        "Red blood cells carry\nA. glucose\nB. insulin\nC. DNA\nD. oxygen\nAnswer:")
    five = mmlu_prompts(test, dev)[0]
    assert five.count("\nAnswer: ") == 5 and five.endswith("D. oxygen\nAnswer:")
    q = MMLUQuestion("us_foreign_policy", "Q?", ("w", "x", "y", "z"), 0)
    assert mmlu_prompt(q) == ("The following are multiple choice questions (with answers) about us foreign "
                              "policy.\n\nQ?\nA. w\nB. x\nC. y\nD. z\nAnswer:")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_oracle_scores_100_and_always_a_scores_share_of_a(layout):
    questions = load_mmlu(RET / layout)
    oracle = OracleBackend(questions, batch_size=4)
    res = evaluate_mmlu(oracle, RET / layout)
    assert res["accuracy"] == 1.0 and res["n"] == 6 and res["k_shot"] == 5
    assert res["per_subject"] == {"astronomy": {"acc": 1.0, "n": 3}, "college_biology": {"acc": 1.0, "n": 3}}
    assert oracle.calls == [4, 2]                      # chunked by the backend's batch size
    assert res["choice_mass"] == pytest.approx(0.93)
    a = evaluate_mmlu(AlwaysA("a"), RET / layout)      # answers A: 1 of 3 and 1 of 3
    assert a["accuracy"] == pytest.approx(2 / 6)
    assert a["per_subject"]["astronomy"] == {"acc": pytest.approx(1 / 3), "n": 3}
    assert a["macro_accuracy"] == pytest.approx(1 / 3)


def test_limit_in_evaluate_mmlu():
    res = evaluate_mmlu(AlwaysA("a"), RET / "mmlu_header", limit=3)
    assert res["n"] == 3 and res["per_subject"]["astronomy"]["n"] == 2
    assert res["accuracy"] == pytest.approx(1 / 3)     # A, C | D


def test_bad_backend_shape_is_caught():
    class Wrong(Backend):
        def logprobs(self, texts, candidates):
            return np.zeros((len(texts), 3))

    with pytest.raises(RuntimeError, match="shape"):
        evaluate_mmlu(Wrong("w"), RET / "mmlu_header")


# ------------------------------------------------------------------------------- GSM8K

@pytest.mark.parametrize("text,want", [
    ("The answer is 18.", "18"),
    ("So she makes 9 * 2 = $18 every day.", "18"),
    ("He paid $1,234.50 in total.", "1234.5"),
    ("The answer is 1,000,000.", "1000000"),
    ("The temperature fell to -5 degrees.", "-5"),
    ("She lost -$7.", "-7"),
    ("x = −3", "-3"),
    ("It costs 0.50 dollars.", "0.5"),
    ("18.00", "18"),
    ("pages 3-4", "4"),
    ("1,2,3", "3"),
    ("50% of 80 is 40", "40"),
    ("(-12)", "-12"),
    ("No number here.", None),
    ("", None),
    ("The answer is 42\n\nQ: next one has 99", "99"),
])
def test_extract_last_number(text, want):
    assert extract_last_number(text) == want


def test_prediction_stops_at_the_next_question():
    assert gsm8k_prediction("The answer is 42.\n\nQ: Anna has 99 pens.\nA: 99") == "42"
    assert gsm8k_prediction("The answer is 42.\nQuestion: 7") == "42"
    assert gsm8k_prediction("I do not know.") is None


@pytest.mark.parametrize("answer,want", [
    ("5 + 3 = <<5+3=8>>8\n#### 8", "8"),
    ("... $<<80000+50000=130000>>130,000 ...\n#### 70,000", "70000"),
    ("#### -3", "-3"),
    ("#### 2.50", "2.5"),
    ("#### $12", "12"),
])
def test_gsm8k_gold(answer, want):
    assert gsm8k_gold(answer) == want


def test_gsm8k_gold_rejects():
    with pytest.raises(ValueError, match="####"):
        gsm8k_gold("the answer is 5")
    with pytest.raises(ValueError, match="not a number"):
        gsm8k_gold("#### five")


def test_load_gsm8k_and_errors(tmp_path):
    probs = load_gsm8k(GSM)
    assert [p.gold for p in probs] == ["18", "3", "70000", "540", "8"]
    assert load_gsm8k(GSM.parent, limit=2) == probs[:2]
    bad = _write(tmp_path / "g.jsonl", json.dumps({"question": "q", "answer": "#### 1"}) + "\n\n"
                 + json.dumps({"question": "q", "answer": "no marker"}) + "\n")
    with pytest.raises(DataError, match=r"g\.jsonl:3: answer has no '####'"):
        load_gsm8k(bad)
    _write(bad, '{"question": "q"}\n')
    with pytest.raises(DataError, match=r"g\.jsonl:1: expected string fields question and answer"):
        load_gsm8k(bad)
    _write(bad, '{"question": "q", \n')
    with pytest.raises(DataError, match=r"g\.jsonl:1: invalid JSON"):
        load_gsm8k(bad)
    with pytest.raises(DataError, match="no such file"):
        load_gsm8k(tmp_path / "missing.jsonl")


def test_gsm8k_prompt_is_8_shot_cot_in_one_user_message():
    [msg] = gsm8k_messages("How many?")
    assert msg["role"] == "user"
    text = msg["content"]
    assert len(GSM8K_EXEMPLARS) == 8 and text.count("\nA: ") == 8 and text.count("Q: ") == 9
    assert "Q: There are 15 trees in the grove. Grove workers will plant trees in the grove today." in text
    assert "23 - 15 is 8. The answer is 8.\n\nQ: How many?\nA:" in text
    assert text.endswith("Q: How many?\nA:")


def test_gsm8k_scoring_with_fakes():
    fake = Says18()
    res = evaluate_gsm8k(fake, GSM)
    assert res["n"] == 5 and res["accuracy"] == pytest.approx(1 / 5)   # only Janet's eggs is 18
    assert res["samples"][0]["correct"] and res["samples"][0]["prediction"] == "18"
    assert [s["gold"] for s in res["samples"]] == ["18", "3", "70000", "540", "8"]
    assert len(fake.prompts) == 5 and res["unparsed"] == 0
    echo = evaluate_gsm8k(GoldEcho(load_gsm8k(GSM)), GSM, limit=4)
    assert echo["accuracy"] == 1.0 and echo["n"] == 4


def test_run_retention_with_fakes():
    class Both(OracleBackend):
        def generate(self, prompts, sampling, grounded=None):
            return ["The answer is 3."] * len(prompts)

    rep = run_retention(Both(load_mmlu(RET / "mmlu_cais")), mmlu=RET / "mmlu_cais", gsm8k=GSM, limit=4)
    assert rep["mmlu"]["n"] == 4 and rep["mmlu"]["accuracy"] == 1.0
    assert rep["gsm8k"]["n"] == 4 and rep["gsm8k"]["accuracy"] == pytest.approx(1 / 4)
    assert rep["model"] == "oracle"
    json.dumps(rep)                                    # report-ready
    with pytest.raises(DataError, match="--mmlu and/or --gsm8k"):
        run_retention(AlwaysA("a"))


# ------------------------------------------------------------------------------- real backend, real data

def test_tiny_random_hf_backend_end_to_end():
    from recalign.eval.backends import HFBackend

    backend = HFBackend("tiny-random", batch_size=4)
    res = evaluate_mmlu(backend, RET / "mmlu_hendrycks")
    assert res["n"] == 6 and 0.0 <= res["accuracy"] <= 1.0
    assert sum(v["n"] for v in res["per_subject"].values()) == 6
    assert 0.0 < res["choice_mass"] <= 1.0
    g = evaluate_gsm8k(backend, GSM, limit=2, max_new_tokens=4)
    assert g["n"] == 2 and 0.0 <= g["accuracy"] <= 1.0


def test_real_shared_data_loads(shared_dir):
    data = shared_dir / "data"
    if not (data / "mmlu").is_dir() or not (data / "gsm8k").is_dir():
        pytest.skip("../shared/data has no mmlu/ or gsm8k/")
    test = load_mmlu(data / "mmlu")
    assert len(test) == 14042 and len({q.subject for q in test}) == 57
    dev = load_mmlu(data / "mmlu", "dev")
    assert len(dev) == 57 * 5
    assert len(load_mmlu(data / "mmlu", limit=114)) == 114
    assert len(mmlu_prompts(test[:3], dev)) == 3
    assert len(load_gsm8k(data / "gsm8k" / "test.jsonl")) == 1319


def test_docstring_examples():
    import doctest

    import recalign.eval.retention as mod

    res = doctest.testmod(mod, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert res.failed == 0 and res.attempted > 0


# ------------------------------------------------------------------------------- intervals and pairing

def test_outcomes_carry_an_interval_and_pair_on_the_same_questions():
    from recalign.eval.retention import compare_retention

    qs = load_mmlu(RET / "mmlu_cais")
    oracle = evaluate_mmlu(OracleBackend(qs), RET / "mmlu_cais")
    always_a = evaluate_mmlu(AlwaysA("a"), RET / "mmlu_cais")
    gold = [q.answer for q in qs]
    assert oracle["correct"] == "1" * len(qs)
    assert always_a["correct"] == "".join("1" if g == 0 else "0" for g in gold)
    assert always_a["questions_sha256"] == oracle["questions_sha256"]
    lo, hi = always_a["ci"]
    assert lo <= always_a["accuracy"] <= hi and hi - lo > 0          # 2 of 6 right: a wide interval
    assert oracle["ci"] == [1.0, 1.0]
    (c,) = compare_retention({"mmlu": always_a}, {"mmlu": oracle})
    assert c["n"] == 6 and c["diff"] == pytest.approx(4 / 6) and c["test"] == "McNemar exact"
    assert c["p"] == pytest.approx(2 * 0.5 ** 4)                    # 4 discordant pairs, all one way
    same = compare_retention({"mmlu": oracle}, {"mmlu": oracle})[0]
    assert same["diff"] == 0 and same["p"] == 1.0 and same["lo"] <= 0 <= same["hi"]
    fewer = evaluate_mmlu(OracleBackend(qs), RET / "mmlu_cais", limit=4)
    with pytest.raises(ValueError, match="mmlu: the two runs answered different questions"):
        compare_retention({"mmlu": oracle}, {"mmlu": fewer})
    g = evaluate_gsm8k(Says18(), GSM)
    assert g["correct"] == "10000" and len(g["questions_sha256"]) == 64
