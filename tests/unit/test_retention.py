"""Retention (eval/retention.py) through lm-evaluation-harness: MMLU in three layouts and GSM8K
read and written as lm-eval tasks; lm-eval's hf model and recalign-vllm checked against the
``lm_eval`` CLI on the same files with a tiny random model."""
import json
import os
import subprocess
import sys

import pytest
import yaml

from recalign.data.util import DataError
from recalign.eval.retention import (GSM8K_TASK, MMLU_GROUP, _load_mmlu_all, gsm8k_gold, lm_eval_command,
                                     lm_eval_model, load_gsm8k,
                                     load_mmlu, read_lm_eval_output, results_from_lm_eval, run_retention,
                                     spread_limit, write_tasks)

from ..conftest import FIXTURES

RET = FIXTURES / "retention"
LAYOUTS = ["mmlu_header", "mmlu_hendrycks", "mmlu_cais", "mmlu_cais_jsonl"]
GSM = RET / "gsm8k" / "test.jsonl"
# the fixture's test answers: astronomy A C B, college_biology D A B
GOLD = {"astronomy": [0, 2, 1], "college_biology": [3, 0, 1]}


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
    got = {lay: _load_mmlu_all(RET / lay, "test")[1] for lay in LAYOUTS}
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
        write_tasks(tmp_path / "t", tmp_path / "m")
    assert len(write_tasks(tmp_path / "t", tmp_path / "m", k_shot=1).mmlu) == 1
    _write(tmp_path / "m" / "test" / "y_test.csv", HDR + "q,a,b,c,d,0\n")
    with pytest.raises(DataError, match="'y' has 0 dev questions"):
        write_tasks(tmp_path / "t", tmp_path / "m", k_shot=1)
    _write(tmp_path / "n" / "test" / "x_test.csv", HDR + "q,a,b,c,d,0\n")
    with pytest.raises(DataError, match=r"found no dev questions.*pass k_shot=0"):
        write_tasks(tmp_path / "t", tmp_path / "n")
    assert write_tasks(tmp_path / "t", tmp_path / "n", k_shot=0).tasks == ["recalign_mmlu"]
    with pytest.raises(DataError, match="--mmlu and/or --gsm8k"):
        write_tasks(tmp_path / "t")
    with pytest.raises(DataError, match="no such file"):
        load_gsm8k("gsm8k/test.jsonl")                 # a missing relative path is not a hub id


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




# ------------------------------------------------------------------------------- the task folder

def test_tasks_are_lm_evals_own_templates_on_local_files(tmp_path):
    import lm_eval

    t = write_tasks(tmp_path / "t", RET / "mmlu_hendrycks", GSM, mmlu_limit=4, gsm8k_limit=3)
    assert t.tasks == [MMLU_GROUP, GSM8K_TASK] and t.folder == (tmp_path / "t").resolve()
    assert [(q.subject, q.answer) for q in t.mmlu] == [("astronomy", 0), ("astronomy", 2),
                                                        ("college_biology", 3), ("college_biology", 0)]
    lm = os.path.dirname(lm_eval.__file__)
    template = yaml.safe_load(open(os.path.join(lm, "tasks/mmlu/default/_default_template_yaml")))
    astro = yaml.safe_load((t.folder / f"{MMLU_GROUP}_astronomy.yaml").read_text())
    for key in ("doc_to_text", "doc_to_choice", "doc_to_target", "output_type", "metric_list", "fewshot_config"):
        assert astro[key] == template[key]                       # lm-eval's prompt and scoring, not ours
    assert astro["description"] == "The following are multiple choice questions (with answers) about astronomy.\n\n"
    assert astro["num_fewshot"] == 5 and astro["dataset_path"] == "json"
    test_file = astro["dataset_kwargs"]["data_files"]["test"]
    rows = [json.loads(line) for line in open(test_file)]
    assert [r["answer"] for r in rows] == [0, 2] and rows[1]["choices"] == ["Mars", "Mercury", "Saturn", "Earth"]
    assert len(open(astro["dataset_kwargs"]["data_files"]["dev"]).readlines()) == 5
    group = yaml.safe_load((t.folder / f"{MMLU_GROUP}.yaml").read_text())
    assert group["task"] == [f"{MMLU_GROUP}_astronomy", f"{MMLU_GROUP}_college_biology"]
    cot = yaml.safe_load(open(os.path.join(lm, "tasks/gsm8k/gsm8k-cot.yaml")))
    g = yaml.safe_load((t.folder / f"{GSM8K_TASK}.yaml").read_text())
    for key in ("doc_to_text", "doc_to_target", "fewshot_config", "filter_list", "generation_kwargs", "metric_list"):
        assert g[key] == cot[key]
    assert len(g["fewshot_config"]["samples"]) == 8 and g["num_fewshot"] == 8
    assert len(open(g["dataset_kwargs"]["data_files"]["test"]).readlines()) == 3
    # the default folder is named by its content: the same questions, the same folder
    a = write_tasks(None, RET / "mmlu_header", GSM, mmlu_limit=4, gsm8k_limit=3)
    b = write_tasks(None, RET / "mmlu_cais", GSM, mmlu_limit=4, gsm8k_limit=3)
    c = write_tasks(None, RET / "mmlu_cais", GSM, mmlu_limit=5, gsm8k_limit=3)
    assert a.folder == b.folder != c.folder


# ------------------------------------------------------------------------------- against the lm_eval CLI

def _cli(command: str, out) -> dict:
    """Run a recorded retention command as a user would, and read what it wrote."""
    cmd = command.replace("<dir>", str(out))
    if cmd.startswith("python "):
        cmd = sys.executable + cmd[len("python"):]
    else:
        cmd = os.path.join(os.path.dirname(sys.executable), cmd)
    env = {**os.environ, "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}
    done = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return read_lm_eval_output(out)


def _loglikelihoods(res: dict, task: str) -> list[list[float]]:
    rows = sorted((res["samples"] or {})[task], key=lambda s: s["doc_id"])
    return [[float(r[0][0]) for r in s["resps"]] for s in rows]


@pytest.fixture(scope="module")
def tiny_adapter(tmp_path_factory):
    """A LoRA on the tiny model whose weights are far from zero, so it changes every score."""
    import torch
    from peft import LoraConfig, get_peft_model

    from recalign.models import load_model

    model, _ = load_model("tiny-random")
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(3)
    for name, p in peft_model.named_parameters():
        if "lora_" in name:
            p.data.normal_(0, 0.5)
    out = tmp_path_factory.mktemp("adapter") / "a"
    peft_model.save_pretrained(out)
    return out


def test_hf_equals_the_lm_eval_cli_with_and_without_an_adapter(tmp_path, tiny_adapter):
    runs = {}
    for name, adapter in (("base", None), ("adapter", tiny_adapter)):
        ours = run_retention("tiny-random", adapter, backend="hf", mmlu=RET / "mmlu_hendrycks", gsm8k=GSM,
                             gsm8k_limit=2, batch_size=4, folder=tmp_path / "tasks")
        assert ours["lm_eval"]["command"].startswith("lm_eval --model hf ")
        assert ("peft=" in ours["lm_eval"]["command"]) == (adapter is not None)
        cli = _cli(ours["lm_eval"]["command"], tmp_path / f"cli-{name}")
        tasks = write_tasks(tmp_path / "tasks", RET / "mmlu_hendrycks", GSM, gsm8k_limit=2)
        theirs = results_from_lm_eval(cli, tasks)
        for check in ("mmlu", "gsm8k"):
            assert ours[check]["correct"] == theirs[check]["correct"]
            assert ours[check]["accuracy"] == theirs[check]["accuracy"] == theirs[check]["lm_eval_acc"]
        assert ours["mmlu"]["n"] == 6 and ours["gsm8k"]["n"] == 2 and ours["mmlu"]["k_shot"] == 5
        assert ours["gsm8k"]["k_shot"] == 8
        assert [s["completion"] for s in ours["gsm8k"]["samples"]] == \
            [s["completion"] for s in theirs["gsm8k"]["samples"]]
        runs[name] = cli
    for subject in ("astronomy", "college_biology"):
        task = f"{MMLU_GROUP}_{subject}"
        assert _loglikelihoods(runs["base"], task) != _loglikelihoods(runs["adapter"], task)   # the adapter is on


def test_recalign_vllm_scores_as_lm_evals_hf_model(tmp_path, tiny_adapter):
    pytest.importorskip("vllm")
    from recalign.eval.backends import vllm_problem

    if vllm_problem():
        pytest.fail(vllm_problem())
    ours = run_retention("tiny-random", tiny_adapter, backend="vllm", mmlu=RET / "mmlu_hendrycks", gsm8k=GSM,
                         gsm8k_limit=2, folder=tmp_path / "tasks")
    assert ours["backend"] == "recalign-vllm"
    assert ours["lm_eval"]["command"].startswith("python -m recalign.eval.lm_eval_vllm --model recalign-vllm ")
    # the recorded command reproduces recalign-vllm's own numbers
    tasks = write_tasks(tmp_path / "tasks", RET / "mmlu_hendrycks", GSM, gsm8k_limit=2)
    cli = _cli(ours["lm_eval"]["command"], tmp_path / "cli")
    assert results_from_lm_eval(cli, tasks)["mmlu"]["correct"] == ours["mmlu"]["correct"]
    # and lm-eval's own hf model on the same files agrees: outcomes, answers, log-likelihoods
    hf_command = lm_eval_command(*lm_eval_model("hf", "tiny-random", tiny_adapter), tasks)
    hf_cli = _cli(hf_command, tmp_path / "cli-hf")
    hf = results_from_lm_eval(hf_cli, tasks)
    for check in ("mmlu", "gsm8k"):
        assert ours[check]["correct"] == hf[check]["correct"]
    assert [s["completion"] for s in ours["gsm8k"]["samples"]] == [s["completion"] for s in hf["gsm8k"]["samples"]]
    for subject in ("astronomy", "college_biology"):
        task = f"{MMLU_GROUP}_{subject}"
        for a, b in zip(_loglikelihoods(cli, task), _loglikelihoods(hf_cli, task)):
            assert a == pytest.approx(b, abs=2e-3)


def test_docstring_examples():
    import doctest

    import recalign.eval.retention as mod

    res = doctest.testmod(mod, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert res.failed == 0 and res.attempted > 0


# ------------------------------------------------------------------------------- intervals and pairing

def _fake_lm_eval(tasks, mmlu_flags, gsm_flags) -> dict:
    """What simple_evaluate returns, reduced to what recalign reads."""
    from recalign.eval.retention import _group

    samples, i = {}, 0
    for subject, qs in _group(tasks.mmlu).items():
        samples[f"{MMLU_GROUP}_{subject}"] = [{"doc_id": j, "filter": "none", "acc": float(mmlu_flags[i + j])}
                                              for j in range(len(qs))][::-1]      # any order
        i += len(qs)
    samples[GSM8K_TASK] = [{"doc_id": j, "filter": f, "exact_match": float(gsm_flags[j] if f == "flexible-extract"
                                                                             else 0), "resps": [["x"]],
                            "filtered_resps": ["1"]}
                           for j in range(len(tasks.gsm8k)) for f in ("strict-match", "flexible-extract")]
    return {"samples": samples, "n-shot": {},
            "results": {MMLU_GROUP: {"acc,none": sum(mmlu_flags) / len(mmlu_flags)},
                        GSM8K_TASK: {"exact_match,flexible-extract": sum(gsm_flags) / len(gsm_flags),
                                     "exact_match,strict-match": 0.0}}}


def test_outcomes_carry_an_interval_and_pair_on_the_same_questions(tmp_path):
    from recalign.eval.retention import compare_retention

    t = write_tasks(tmp_path / "t", RET / "mmlu_cais", GSM)
    gold = [q.answer for q in t.mmlu]
    oracle = results_from_lm_eval(_fake_lm_eval(t, [1] * 6, [1, 0, 0, 0, 0]), t)
    always_a = results_from_lm_eval(_fake_lm_eval(t, [int(g == 0) for g in gold], [0] * 5), t)
    assert oracle["mmlu"]["correct"] == "1" * 6 and oracle["gsm8k"]["correct"] == "10000"
    assert always_a["mmlu"]["correct"] == "".join("1" if g == 0 else "0" for g in gold)
    assert always_a["mmlu"]["per_subject"]["astronomy"] == {"acc": pytest.approx(1 / 3), "n": 3}
    assert always_a["mmlu"]["questions_sha256"] == oracle["mmlu"]["questions_sha256"]
    lo, hi = always_a["mmlu"]["ci"]
    assert lo <= always_a["mmlu"]["accuracy"] <= hi and hi - lo > 0          # 2 of 6 right: a wide interval
    assert oracle["mmlu"]["ci"] == [1.0, 1.0]
    assert oracle["gsm8k"]["strict_match"] == 0.0 and oracle["gsm8k"]["filter"] == "flexible-extract"
    (c,) = compare_retention({"mmlu": always_a["mmlu"]}, {"mmlu": oracle["mmlu"]})
    assert c["n"] == 6 and c["diff"] == pytest.approx(4 / 6) and c["test"] == "McNemar exact"
    assert c["p"] == pytest.approx(2 * 0.5 ** 4)                    # 4 discordant pairs, all one way
    same = compare_retention(oracle, oracle)
    assert [(s["check"], s["diff"], s["p"]) for s in same] == [("mmlu", 0, 1.0), ("gsm8k", 0, 1.0)]
    fewer = write_tasks(tmp_path / "f", RET / "mmlu_cais", mmlu_limit=4)
    short = results_from_lm_eval(_fake_lm_eval(fewer, [1] * 4, [0]), fewer)
    with pytest.raises(ValueError, match="mmlu: the two runs answered different questions"):
        compare_retention(oracle, short)
    with pytest.raises(RuntimeError, match="2 samples for MMLU astronomy, expected 3"):
        results_from_lm_eval(_fake_lm_eval(fewer, [1] * 4, [0]), t)
