"""Retention on the real model: SmolLM2-135M-Instruct through lm-evaluation-harness, MMLU
(2 questions x 57 subjects, lm-eval's 5-shot mmlu) and GSM8K (first 20 problems, gsm8k_cot),
on recalign-vllm (lm-eval's tokenisation on recalign's vLLM engine).

    RECALIGN_ASSETS=../shared/assets pytest -m slow tests/integration/test_retention_smollm2.py -s

SmolLM2-135M is near chance on MMLU (~25-30 %) and near zero on GSM8K, so only sane bounds
are asserted; the numbers are printed (``-s``) for the record. bench/retention.py has the
500/200-question figures.
"""
import json

import pytest

from recalign.eval.retention import run_retention

pytestmark = pytest.mark.slow


def test_retention_smollm2(shared_dir):
    d = shared_dir / "data"
    if not (d / "mmlu").is_dir() or not (d / "gsm8k").is_dir():
        pytest.skip("../shared/data has no mmlu/ or gsm8k/")
    res = run_retention("smollm2-135m-instruct", backend="vllm", mmlu=d / "mmlu", gsm8k=d / "gsm8k" / "test.jsonl",
                        mmlu_limit=57 * 2, gsm8k_limit=20)
    print("MMLU", json.dumps({k: v for k, v in res["mmlu"].items() if k not in ("per_subject", "correct")}))
    print("GSM8K", json.dumps({k: v for k, v in res["gsm8k"].items() if k not in ("samples", "correct")}))
    assert res["mmlu"]["n"] == 114 and len(res["mmlu"]["per_subject"]) == 57
    assert all(v["n"] == 2 for v in res["mmlu"]["per_subject"].values())
    assert 0.10 <= res["mmlu"]["accuracy"] <= 0.60
    assert res["gsm8k"]["n"] == 20 and 0.0 <= res["gsm8k"]["accuracy"] <= 0.5
    assert any(s["completion"] for s in res["gsm8k"]["samples"])        # it writes answers
