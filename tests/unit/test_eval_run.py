"""recalign eval: end to end on the tiny model, the report's sections, adapter checks."""
import json
from pathlib import Path

import pytest

from recalign.data import DataError
from recalign.eval.report import write_report
from recalign.eval.run import EvalConfig, run_eval


def _run_metrics(name, hr, grounded=False):
    task = {"n_samples": 10, "HR": hr, "NDCG": hr / 2, "TCP": 0.5, "CPA": None, "CorrectCount": 0.9,
            "RepeatItem_rate": 0.1, "NonExist_rate": 0.2, "InHistory_rate": 0.0}
    return {"name": name, "model": "m", "adapter": None, "backend": "hf", "grounded": grounded, "split": "test",
            "n_rows": 20, "generation_seconds": 1.0,
            "exact": {"I0": task, "I1+": task, "all": task}, "fuzzy": {"I0": task, "all": task},
            "teacher": {"HR": 0.3, "NDCG": 0.15, "n_samples": 10},
            "retention": {"mmlu": {"accuracy": 0.31, "n": 57}, "gsm8k": {"accuracy": 0.02, "n": 50}},
            "by_history_length": {"1-3": {"HR": 0.1, "n": 3}, "10+": {"HR": 0.2, "n": 7}},
            "judge": {"mean_rating": 3.5 + hr, "coverage": 0.25, "n_known": 5, "n_recommended": 20},
            "provenance": {"git_commit": "abc", "seed": 0, "inputs": {"test.jsonl": "f" * 64}, "versions": {}}}


def test_report_has_every_section(tmp_path):
    curves = {"ppo": [{"step": 1, "reward/list": -1.0, "kl": 0.0}, {"step": 2, "reward/list": 0.5, "kl": 0.02}],
              "grpo": [{"step": 1, "rewards/recalign_list_reward/mean": 1.0, "kl": 0.0, "loss": 0.1}],
              "sft": [{"step": 10, "loss": 2.5}, {"step": 10, "eval_loss": 2.0}, {"step": 20, "loss": 1.9},
                      {"step": 20, "eval_loss": 1.7}, {"step": 30, "loss": 1.5}, {"step": 30, "eval_loss": 1.8}]}
    path = write_report(tmp_path, [_run_metrics("base", 0.1), _run_metrics("sft", 0.2, grounded=True)], curves)
    text = path.read_text()
    for heading in ("## Recommendation metrics (exact title matching)", "## Recommendation metrics (fuzzy",
                    "## Reward as judge (I0)", "## Retention", "## Plots", "## Training curves", "## Provenance"):
        assert heading in text
    assert "| sft (grounded) | 3.700 | 25.0% | 5 / 20 |" in text
    assert "| sft | 30 | – | – | 2.500 → 1.500 | 2.000 → 1.800; 1.700 at 20 |" in text   # valid loss: its lowest step
    assert "| ppo | 2 | -1.000 → 0.500 | 0.0200 | – |" in text and "| grpo | 1 | 1.000 → 1.000 | 0.0000 |" in text
    assert (tmp_path / "plots" / "training_curves.png").read_bytes()[:4] == b"\x89PNG"
    assert "| I0 | base | 10 | 0.1000 | 0.0500 |" in text
    assert "| I0 | sft (grounded) | 10 | 0.2000 |" in text
    assert "| I0 | SASRec teacher (reference) | 10 | 0.3000 | 0.1500 |" in text
    assert "| base | 31.0% | 57 | 2.0% | 50 |" in text
    for png in ("plots/metrics_by_task.png", "plots/hr_by_history.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG" and f"]({png})" in text


@pytest.fixture(scope="module")
def setup(tiny_inst, tmp_path_factory):
    data, model, ds = tiny_inst
    return data, model, tmp_path_factory.mktemp("eval"), ds


def test_eval_end_to_end_on_tiny_model(setup):
    data, model, tmp, ds = setup
    out = run_eval(EvalConfig(data=str(data), out=str(tmp / "ev"), model=str(model), tasks="I0,I1", limit=2,
                              max_new_tokens=12, name="tiny"))
    m = json.loads((out / "metrics.json").read_text())
    assert set(m["exact"]) == {"I0", "I1+", "I1-", "all"} and m["exact"]["I0"]["n_samples"] == 2
    assert set(m["fuzzy"]) == set(m["exact"])
    assert m["teacher"]["n_samples"] == 2 and 0 <= m["teacher"]["HR"] <= 1
    assert m["provenance"]["stage"] == "eval" and m["name"] == "tiny"
    lo, hi = m["intervals"]["I0"]["HR"]
    assert 0 <= lo <= m["exact"]["I0"]["HR"] <= hi <= 1 and len(m["per_row"]) == 6
    assert {p["key"] for p in m["teacher"]["per_row"]} <= {p["key"] for p in m["per_row"]}
    gens = [json.loads(x) for x in (out / "generations.jsonl").read_text().splitlines()]
    assert len(gens) == 6 and all("answer" in g and g["metrics"]["K"] == 10 for g in gens)
    report = (out / "report.md").read_text()
    assert "| I1- | tiny | 2 |" in report
    j = m["judge"]                                  # I0 answers judged by the logged ratings
    assert 0 <= j["n_known"] <= j["n_recommended"] and "## Reward as judge (I0)" in report


def test_strict_grounding_makes_formatting_errors_zero(setup):
    data, model, tmp, ds = setup
    out = run_eval(EvalConfig(data=str(data), out=str(tmp / "g"), model=str(model), tasks="I0,I1", limit=3,
                              max_new_tokens=300, grounded=True, name="tiny"))   # room for 10 whole titles
    m = json.loads((out / "metrics.json").read_text())
    assert m["grounded_strict"] is True
    for task, v in m["exact"].items():                 # an untrained model, and still only real, new titles
        assert v["NonExist_rate"] == v["RepeatItem_rate"] == v["InHistory_rate"] == 0, task
    gens = [json.loads(x) for x in (out / "generations.jsonl").read_text().splitlines()]
    assert all(g["answer"].startswith("1. ") for g in gens)


def test_adapter_from_another_base_is_refused(setup, tmp_path):
    from recalign.models.adapters import check_adapter
    from recalign.models.resolve import model_fingerprint

    data, model, _, _ = setup
    (tmp_path / "adapter_config.json").write_text("{}")
    (tmp_path / "card.json").write_text(json.dumps({"base_fingerprint": "llama/49152/576/30/9"}))
    with pytest.raises(DataError, match="trained on a base model with shape llama/49152"):
        check_adapter(tmp_path, model)
    (tmp_path / "card.json").write_text(json.dumps({"base_fingerprint": model_fingerprint(model)}))
    check_adapter(tmp_path, model)                       # the right base passes
    with pytest.raises(DataError, match="no adapter_config.json"):
        check_adapter(tmp_path / "nope", model)


def test_unknown_backend_and_missing_split(setup, tmp_path):
    from recalign.eval.backends import make_backend

    with pytest.raises(DataError, match="choose one of hf, vllm, auto"):
        make_backend("tgi", "tiny-random")
    with pytest.raises(DataError, match="valid.jsonl: not found"):
        run_eval(EvalConfig(data=str(tmp_path), out=str(tmp_path / "o"), split="valid"))


def _with_rows(m, hrs, errs):
    """A run with per-row values (60 I0 rows) and intervals, as run_eval writes them."""
    m = dict(m)
    m["per_row"] = [{"key": f"I0|u{i}|1|2", "task": "I0", "HR": h, "NDCG": h * 0.5, "CorrectCount": 1,
                     "Errors_rate": e} for i, (h, e) in enumerate(zip(hrs, errs))]
    m["intervals"] = {"I0": {"HR": [0.05, 0.25]}}
    m["rows_sha256"] = "same"
    return m


def test_report_renders_intervals_and_paired_comparisons(tmp_path):
    base_hr = [0] * 60
    sft_hr = [1] * 12 + [0] * 48                                     # +20 pp on the same rows
    runs = [_with_rows(_run_metrics("base", 0.0), base_hr, [0.5] * 60),
            _with_rows(_run_metrics("sft", 0.2), sft_hr, [0.5] * 60)]
    text = write_report(tmp_path, runs).read_text()
    assert "## Comparisons (paired, same rows)" in text
    assert "| I0 | sft | 10 | 0.2000 [0.0500, 0.2500] |" in text          # value [95% interval]
    line = next(x for x in text.splitlines() if x.startswith("| base → sft | I0 | HR |"))
    assert "| 60 |" in line and "+0.2000" in line and "| 0.000488 | higher |" in line  # McNemar: 2 * 2^-12
    err = next(x for x in text.splitlines() if "Repeat+NonExist+InHistory@10" in x)
    assert "+0.0 pp" in err and err.endswith("| 1 | no difference |")
    other = _with_rows(_run_metrics("sft", 0.2), sft_hr, [0.5] * 60)
    other["rows_sha256"] = "other"
    (tmp_path / "b").mkdir()
    text = write_report(tmp_path / "b", [runs[0], other]).read_text()
    assert "refused: cannot compare base and sft: they were evaluated on different test rows" in text


def test_beam_eval_ranks_real_titles_and_reports_baselines(setup):
    data, model, tmp, ds = setup
    out = run_eval(EvalConfig(data=str(data), out=str(tmp / "beam"), model=str(model), tasks="I0", limit=2,
                              grounded=True, beam=10, batch_size=10, name="tiny"))
    m = json.loads((out / "metrics.json").read_text())
    assert m["decoding"] == "beam" and m["backend"] == "hf"
    v = m["exact"]["I0"]
    assert v["CorrectCount"] == 1 and v["NonExist_rate"] == v["RepeatItem_rate"] == v["InHistory_rate"] == 0
    pop = m["popularity"]                              # the most-popular baseline on the same rows
    assert pop["n_samples"] == 2 and {p["key"] for p in pop["per_row"]} == {p["key"] for p in m["per_row"]}
    report = (out / "report.md").read_text()
    assert "| I0 | tiny (beam) | 2 |" in report and "| I0 | most popular (reference) | 2 |" in report
    with pytest.raises(DataError, match="needs --grounded"):
        run_eval(EvalConfig(data=str(data), out=str(tmp / "b2"), model=str(model), beam=5))
    # retention inputs fail before a model loads or a row is generated
    for kw, msg in (({"mmlu": str(tmp / "nope" / "mmlu")}, "--mmlu .*no such file or folder"),
                    ({"gsm8k": str(tmp / "x.jsonl"), "retention_limit": {"gsm8k": 5, "mmmlu": 5}},
                     "'mmmlu' is not a check"),
                    ({"gsm8k": str(tmp / "x.jsonl"), "retention_limit": 0}, "a positive number")):
        with pytest.raises(DataError, match=msg):
            run_eval(EvalConfig(data=str(data), out=str(tmp / "r"), model="no-such-model", **kw))


def test_popularity_masks_the_history_window(setup):
    import numpy as np

    from recalign.eval.run import popularity_on_rows

    _, _, _, ds = setup
    counts = np.bincount(np.concatenate(ds.train_sequences()), minlength=ds.n_items + 1)
    top = [int(i) for i in np.argsort(-counts[1:], kind="stable")[:12] + 1]
    rows = [{"task": "I0", "user_id": "u", "target": top[1], "history": [top[0]]},
            {"task": "I0", "user_id": "v", "target": top[11], "history": [top[0]]}]
    p = popularity_on_rows(ds, rows)
    # history masked: the second most popular item moves to rank 1, the 12th to rank 11 (a miss)
    assert [r["HR"] for r in p["per_row"]] == [1, 0] and p["per_row"][0]["NDCG"] == 1.0


def test_limit_per_task_and_its_warning(setup, capsys):
    from recalign.eval.run import load_rows

    data, _, _, _ = setup
    rows = load_rows(data, "test", "I0,I1", {"I0": 1, "default": 2})
    assert [r["task"] for r in rows] == ["I0", "I1+", "I1+", "I1-", "I1-"]
    load_rows(data, "test", "I0", {"I0": 10**6})
    assert "fewer rows than the eval limit" in capsys.readouterr().out
    with pytest.raises(DataError, match="'I9' is not a task"):
        load_rows(data, "test", "I0", {"I9": 3})


def test_rescore_under_the_reclm_gen_protocol_reuses_the_answers(setup):
    data, model, tmp, ds = setup
    src = run_eval(EvalConfig(data=str(data), out=str(tmp / "src"), model=str(model), tasks="I0", limit=3,
                              max_new_tokens=24, name="tiny"))
    out = run_eval(EvalConfig(data=str(data), out=str(tmp / "strict"), tasks="I0", limit=3, rescore=str(src),
                              protocol="reclm-gen", model="no-such-model"))   # no model is loaded
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (src, out))
    assert b["protocol"] == {"name": "reclm-gen", "parser": "strict", "reward_ranks": "unmasked", "tcp_minus": "inside"}
    assert a["protocol"]["parser"] == "lenient" and b["rescored_from"] == str(src) and b["name"] == "tiny"
    ga = [json.loads(x)["answer"] for x in (src / "generations.jsonl").read_text().splitlines()]
    gb = [json.loads(x)["answer"] for x in (out / "generations.jsonl").read_text().splitlines()]
    assert ga == gb and b["rows_sha256"] == a["rows_sha256"]
    from recalign.eval.metrics import sample_metrics
    rows = [json.loads(x) for x in (data / "test.jsonl").read_text().splitlines() if '"task": "I0"' in x][:3]
    want = [sample_metrics(r, t, ds.catalog, parser="strict")["CorrectCount"] for r, t in zip(rows, ga)]
    assert b["exact"]["I0"]["CorrectCount"] == sum(want) / 3
    with pytest.raises(DataError, match="are not for the 2 rows"):
        run_eval(EvalConfig(data=str(data), out=str(tmp / "x"), tasks="I0", limit=2, rescore=str(src)))


def test_report_says_whether_rl_beat_sft_on_validation(tmp_path):
    won = {"rows": 32, "curve": [{"step": 0, "reward": 1.0}, {"step": 4, "reward": 1.5}], "best_step": 4,
           "best_vs_sft": {"n": 32, "diff": 0.5, "lo": 0.1, "hi": 0.9, "p": 0.01}, "beats_sft": True}
    lost = {"rows": 32, "curve": [{"step": 0, "reward": 1.0}, {"step": 4, "reward": 0.5}], "best_step": 0,
            "beats_sft": False}
    text = write_report(tmp_path, [_run_metrics("base", 0.1)], validation={"ppo": won, "grpo": lost}).read_text()
    assert "## RL checkpoint selection (validation)" in text
    assert "| ppo | 32 | 0: 1.000, 4: 1.500 | 4 | +0.500 [+0.100, +0.900] | 0.01 | yes |" in text
    assert "| grpo | 32 | 0: 1.000, 4: 0.500 | 0 | – | – | no: no RL checkpoint scored above the SFT model |" in text


def test_a_moved_run_folder_works_from_another_directory(ml100k_dir, tmp_path, monkeypatch):
    import shutil

    from recalign.data import RecDataset
    from recalign.models.resolve import build_tiny_random
    from recalign.tasks.builder import BuildConfig, build_dataset
    from recalign.trainers.rewarding import load_reward_context
    from tests.conftest import untrained_teacher_dir

    run = tmp_path / "runs" / "x"
    shutil.copytree(ml100k_dir, run / "data")
    ds = RecDataset.load(run / "data")
    monkeypatch.chdir(tmp_path)                         # relative paths, as a user types them
    build_dataset("runs/x/data", untrained_teacher_dir(ds, Path("runs/x/teacher")), "I0", "runs/x/inst",
                  BuildConfig(max_users=4))
    card = json.loads((run / "inst" / "card.json").read_text())
    assert card["config"]["data"] == "../data" and card["config"]["teacher"] == "../teacher"
    shutil.move(str(tmp_path / "runs"), str(tmp_path / "moved"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    inst = tmp_path / "moved" / "x" / "inst"
    ctx = load_reward_context(inst)                     # data and teacher found beside the card
    assert ctx.teacher is not None and ctx.dataset.n_items == ds.n_items
    out = run_eval(EvalConfig(data=str(inst), out="ev", model=str(build_tiny_random(tmp_path / "tiny")),
                              tasks="I0", limit=1, max_new_tokens=8, backend="hf"))
    assert json.loads((out / "metrics.json").read_text())["teacher"]["n_samples"] == 1


def test_report_retention_has_intervals_and_paired_comparisons(tmp_path):
    def ret(correct, sha="q"):
        return {"mmlu": {"accuracy": correct.count("1") / len(correct), "n": len(correct), "ci": [0.1, 0.9],
                         "correct": correct, "questions_sha256": sha}}

    runs = [_run_metrics("base", 0.1), _run_metrics("sft", 0.2), _run_metrics("ppo", 0.2)]
    runs[0]["retention"], runs[1]["retention"] = ret("1111000000"), ret("0000000000")
    runs[2]["retention"] = ret("00000", sha="other")
    text = write_report(tmp_path, runs).read_text()
    assert "| base | 40.0% [10.0, 90.0] | 10 | – | – |" in text
    assert "| base → sft | MMLU | 10 | 40.0% | 0.0% | -40.0 pp [" in text
    assert "| 0.125 | no difference |" in text or "| 0.125 | lower |" in text   # 4 discordant: p = 2/16
    assert "| sft → ppo | – | – | – | – | refused: mmlu: the two runs answered different questions" in text
