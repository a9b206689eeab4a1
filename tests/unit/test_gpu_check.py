"""bench/gpu_check.py: the GPU check's steps, and its CPU dry mode end to end."""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench" / "gpu_check.py")
gpu_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu_check)


def test_the_gpu_run_checks_every_path_the_issue_names(tmp_path):
    names = [n for n, _, _ in gpu_check.steps(tmp_path, cpu=False)]
    for want in ("versions", "sft under ddp", "sft under zero3", "sft under fsdp", "sft 4-bit", "eval hf on cuda",
                 "eval vllm grounded + adapter", "vllm == hf grounded", "grpo under zero3", "ppo 1 step under ddp",
                 "grpo with vllm colocate"):
        assert want in names
    flat = lambda c: c if isinstance(c, str) else " ".join(c)  # noqa: E731
    assert all("tiny-random" not in flat(c) for _, c, _ in gpu_check.steps(tmp_path, cpu=False))
    assert any("tiny-random" in flat(c) for _, c, _ in gpu_check.steps(tmp_path, cpu=True))
    cmds = {n: c for n, c, _ in gpu_check.steps(tmp_path, cpu=False)}
    assert "recipes/accelerate/zero3.yaml" in cmds["sft under zero3"] and "--num_processes" in cmds["sft under zero3"]


def _run(tmp_path, *args):
    env = {**os.environ, "RECALIGN_CACHE": os.environ.get("RECALIGN_CACHE", str(tmp_path / "cache"))}
    return subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--out", str(tmp_path), *args],
                          capture_output=True, text=True, env=env, timeout=900)


def test_summary_exit_status_and_budget(tmp_path):
    p = _run(tmp_path, "--cpu", "--only", "versions")
    text = (tmp_path / "summary.md").read_text()
    assert p.returncode == 0 and "| versions | pass |" in text and "| data | skipped |" in text
    assert "cuda available" in text
    # the whole run fits its budget: a step that no longer fits is a failure, not an overrun
    p = _run(tmp_path, "--cpu", "--only", "versions,data", "--budget", "3")
    text = (tmp_path / "summary.md").read_text()
    assert p.returncode == 2 and text.count("not run: --budget spent") == 2


@pytest.mark.slow
def test_cpu_dry_mode_passes_every_cpu_step(tmp_path):
    p = _run(tmp_path, "--cpu")
    text = (tmp_path / "summary.md").read_text()
    assert p.returncode == 0, text
    assert text.count("| pass |") == len(gpu_check.steps(tmp_path, cpu=True)), text
