import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
FIXTURES = Path(__file__).resolve().parent / "fixtures"

# Tests read the embedded defaults from ../shared/assets when it is there (CI lays it
# beside the checkout); otherwise recalign fetches them as it would for a user.
if "RECALIGN_ASSETS" not in os.environ and (SHARED / "assets").is_dir():
    os.environ["RECALIGN_ASSETS"] = str(SHARED / "assets")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def ml100k_dir(tmp_path_factory):
    """ml-100k prepared once per test session with default options."""
    from recalign.data.prepare import PrepareOptions, prepare_dataset

    out = tmp_path_factory.mktemp("data") / "ml100k"
    return prepare_dataset(out, PrepareOptions("ml-100k"))


@pytest.fixture(scope="session")
def shared_dir():
    if not SHARED.is_dir():
        pytest.skip("../shared is not beside this checkout")
    return SHARED


def untrained_teacher_dir(ds, out, seed: int = 0, hidden: int = 16):
    """A saved, untrained SASRec for ``ds``: label rules and plumbing must hold whatever the
    teacher prefers, and training one would only slow the tests down."""
    import torch

    from recalign.teacher.config import TeacherTrainConfig
    from recalign.teacher.sasrec import SASRec, SASRecConfig
    from recalign.teacher.train import save_teacher

    torch.manual_seed(seed)
    model = SASRec(SASRecConfig(ds.n_items, hidden=hidden, inner=2 * hidden, max_len=10))
    return save_teacher(out, model, {}, TeacherTrainConfig(), ds)


@pytest.fixture(scope="session")
def tiny_inst(ml100k_dir, tmp_path_factory):
    """(instruction data dir for I0/I1 of 12 users, tiny-random model dir, dataset), built once."""
    from recalign.data import RecDataset
    from recalign.models.resolve import build_tiny_random
    from recalign.tasks.builder import BuildConfig, build_dataset

    tmp = tmp_path_factory.mktemp("tiny_inst")
    ds = RecDataset.load(ml100k_dir)
    data = build_dataset(ml100k_dir, untrained_teacher_dir(ds, tmp / "t"), "I0,I1", tmp / "inst",
                         BuildConfig(max_users=12))
    return data, build_tiny_random(tmp / "tiny"), ds
