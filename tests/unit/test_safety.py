"""--overwrite replaces only recalign's own output folders, never an input or the current folder."""
import pytest

from recalign.data import DataError
from recalign.data.prepare import PrepareOptions, prepare_dataset
from recalign.data.util import check_out
from tests.conftest import FIXTURES

GENERIC = FIXTURES / "generic"


def test_overwrite_refuses_the_current_folder_and_its_parents(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    (work / "mine.txt").write_text("keep me")
    (work / "card.json").write_text("{}")            # even one that looks like an output
    monkeypatch.chdir(work)
    for out in (".", str(tmp_path)):
        with pytest.raises(DataError, match="refusing to replace the current folder"):
            prepare_dataset(out, PrepareOptions("generic"), input_dir=GENERIC, overwrite=True)
    assert (work / "mine.txt").read_text() == "keep me"


def test_overwrite_refuses_an_input_or_a_folder_around_one(tmp_path):
    import shutil

    data = tmp_path / "raw"
    shutil.copytree(GENERIC, data)
    (data / "card.json").write_text("{}")
    with pytest.raises(DataError, match="is, holds or lies inside this command's input"):
        prepare_dataset(data, PrepareOptions("generic"), input_dir=data, overwrite=True)
    with pytest.raises(DataError, match="is, holds or lies inside this command's input"):
        check_out(tmp_path, True, [data])             # a folder holding the input
    assert sorted(p.name for p in data.iterdir()) == sorted(["card.json", *(f.name for f in GENERIC.iterdir())])
    assert (data / "interactions.csv").read_bytes() == (GENERIC / "interactions.csv").read_bytes()


def test_overwrite_refuses_a_folder_recalign_did_not_make(tmp_path):
    other = tmp_path / "photos"
    other.mkdir()
    (other / "a.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(DataError, match="is not a recalign output"):
        prepare_dataset(other, PrepareOptions("generic"), input_dir=GENERIC, overwrite=True)
    assert (other / "a.jpg").exists()
    with pytest.raises(FileExistsError, match="pass --overwrite"):
        prepare_dataset(other, PrepareOptions("generic"), input_dir=GENERIC)


def test_overwrite_replaces_its_own_output(tmp_path):
    out = prepare_dataset(tmp_path / "d", PrepareOptions("generic"), input_dir=GENERIC)
    again = prepare_dataset(out, PrepareOptions("generic"), input_dir=GENERIC, overwrite=True)
    assert (again / "card.json").is_file()


def test_eval_checks_its_out_before_generating(tiny_inst):
    from recalign.eval.run import EvalConfig, run_eval

    data, _, _ = tiny_inst
    ev = data / "ev"
    ev.mkdir(exist_ok=True)
    (ev / "metrics.json").write_text("{}")
    # "no-such-model" is never loaded: the --out check comes first
    with pytest.raises(DataError, match="lies inside this command's input"):
        run_eval(EvalConfig(data=str(data), out=str(ev), model="no-such-model"), overwrite=True)
    with pytest.raises(FileExistsError, match="pass --overwrite"):
        run_eval(EvalConfig(data=str(data), out=str(ev), model="no-such-model"))
    ev.joinpath("metrics.json").unlink()
    ev.rmdir()


def test_outputs_get_the_umask_permissions_not_private_temp_ones(tmp_path):
    import os
    import stat

    from recalign.data.util import atomic_dir, write_json

    old = os.umask(0o022)
    try:
        with atomic_dir(tmp_path / "out") as tmp:
            write_json(tmp / "card.json", {"a": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "out" / "card.json").stat().st_mode) == 0o644


def test_damaged_outputs_and_unwritable_out_are_one_line_errors(tmp_path, ml100k_dir):
    import shutil

    from recalign.data import RecDataset
    from recalign.data.util import atomic_dir
    from recalign.teacher import Teacher
    from tests.conftest import untrained_teacher_dir

    data = tmp_path / "d"
    shutil.copytree(ml100k_dir, data)
    ds = RecDataset.load(data)
    teacher = untrained_teacher_dir(ds, tmp_path / "t")
    (teacher / "model.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(DataError, match=r"model\.safetensors: cannot load the teacher's weights.*train it again"):
        Teacher.load(teacher, data=ds)
    (teacher / "config.json").write_text("{not json")
    with pytest.raises(DataError, match=r"config\.json: not a teacher config"):
        Teacher.load(teacher, data=ds)
    (data / "sequences.parquet").write_bytes(b"PAR1 but not really")
    with pytest.raises(DataError, match=r"sequences\.parquet: not a readable parquet file.*data prepare"):
        RecDataset.load(data)
    with pytest.raises(DataError, match=r"--out /proc/recalign-x/out: cannot write there"):
        with atomic_dir("/proc/recalign-x/out"):
            pass


def test_deeply_nested_json_is_a_clear_error(tmp_path):
    from recalign.data.loaders import load_raw
    from recalign.tasks.builder import load_sharegpt

    deep = "[" * 200_000 + "]" * 200_000
    (tmp_path / "s.json").write_text(deep)
    with pytest.raises(DataError, match="nested too deeply"):
        load_sharegpt(tmp_path / "s.json")
    d = tmp_path / "in"
    d.mkdir()
    (d / "interactions.jsonl").write_text('{"user": "u", "item": "a", "timestamp": 1}\n' + deep + "\n")
    (d / "items.jsonl").write_text('{"item": "a", "title": "A"}\n')
    with pytest.raises(DataError, match=r"interactions\.jsonl:2: JSON nested too deeply"):
        load_raw("generic", d)
