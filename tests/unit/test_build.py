"""Instruction datasets: every label obeys its own instruction; determinism; bad input."""
import json
from collections import Counter

import numpy as np
import pytest
import torch

from recalign.data import DataError, RecDataset
from recalign.tasks.builder import BuildConfig, build_dataset, build_rows, load_sharegpt
from recalign.tasks.spec import TaskSpec, load_specs, parse_spec, resolve_tasks
from recalign.teacher import Teacher
from recalign.teacher.sasrec import SASRec, SASRecConfig
from recalign.templates import Renderer

from ..conftest import FIXTURES, untrained_teacher_dir

USERS = 120


@pytest.fixture(scope="module")
def ds(ml100k_dir):
    return RecDataset.load(ml100k_dir)


@pytest.fixture(scope="module")
def teacher(ds):
    """An untrained SASRec: the label rules must hold whatever the teacher prefers."""
    torch.manual_seed(0)
    return Teacher(SASRec(SASRecConfig(ds.n_items, hidden=32, inner=64, max_len=10)), ds.catalog)


@pytest.fixture(scope="module")
def built(ds, teacher):
    cfg = BuildConfig(epochs=2, max_users=USERS, sharegpt=str(FIXTURES / "sharegpt/chat.json"), chat_ratio=0.05)
    rows, b = build_rows(ds, teacher, resolve_tasks("I0,I1,I2,I3,I4", load_specs()), cfg, progress=False)
    return rows, b


def _by_task(rows, task, split="train"):
    return [r for r in rows[split] if r["task"] == task]


def test_counts_per_task_and_split(built):
    rows, b = built
    for task in ("I0", "I1+", "I1-", "I2<=", "I2>=", "I2~"):
        for split in ("valid", "test"):
            assert len(_by_task(rows, task, split)) == USERS - b.skipped.get(f"{task}/{split}: no category for the rule", 0)
        assert len(_by_task(rows, task)) >= 2 * USERS - 10      # two epochs
    assert {r["task"] for r in rows["valid"]} == {"I0", "I1+", "I1-", "I2<=", "I2>=", "I2~"}
    n_rec = sum(1 for r in rows["train"] if r["task"] != "I4" and r["epoch"] == 0)
    assert len([r for r in _by_task(rows, "I4") if r["epoch"] == 0]) == round(0.05 * n_rec)


def test_every_list_is_legal(built, ds):
    rows, _ = built
    n = ds.n_items
    for split, split_rows in rows.items():
        for r in split_rows:
            if r["task"] in ("I4", "I3-QA"):
                continue
            label = r["label"]
            assert len(label) == len(set(label)), r                     # no repeats
            assert not set(label) & set(r["history"]), r                # no history items
            assert all(1 <= i <= n for i in label)
            assert len(label) == r["item_count"], r                     # item_count honoured
            text = r["completion"][0]["content"].splitlines()
            assert text == [f"{k}. {ds.catalog.titles[i]}" for k, i in enumerate(label, 1)]
            assert str(r["item_count"]) in r["prompt"][-1]["content"]


def test_i0_target_first(built):
    rows, _ = built
    for split in ("train", "valid", "test"):
        for r in _by_task(rows, "I0", split):
            assert r["label"][0] == r["target"]
    counts = {r["item_count"] for r in _by_task(rows, "I0")}
    assert min(counts) == 1 and max(counts) == 10 and len(counts) > 5     # n ~ U{1..10}
    assert {r["item_count"] for r in _by_task(rows, "I0", "test")} == {10}


def test_category_control_labels(built, ds):
    rows, _ = built
    cat = ds.catalog
    for split in ("train", "valid", "test"):
        for r in _by_task(rows, "I1+", split):
            assert cat.in_category(r["label"], r["category"]).all()
            assert f"'{r['category']}'" in r["prompt"][-1]["content"]
            if r["target"] in r["label"]:
                assert r["label"][0] == r["target"]
        for r in _by_task(rows, "I1-", split):
            assert not cat.in_category(r["label"], r["category"]).any()
            assert r["category"] not in cat.item_categories[r["target"]]   # never the target's own
    for r in _by_task(rows, "I1+", "test"):
        assert r["category"] == cat.item_categories[r["target"]][-1]       # REFERENCE.md §1.5


def test_proportion_control_labels(built, ds):
    rows, _ = built
    cat = ds.catalog
    for split in ("train", "valid", "test"):
        for task, ok in (("I2<=", lambda c, n: c <= n), ("I2>=", lambda c, n: c >= n), ("I2~", lambda c, n: c == n)):
            for r in _by_task(rows, task, split):
                cnt = int(cat.in_category(r["label"], r["category"]).sum())
                assert r["item_count"] == 10 and r["n"] == round(r["proportion"] * 10)
                assert ok(cnt, r["n"]), (task, cnt, r["n"])
    assert {r["proportion"] for r in _by_task(rows, "I2<=", "test")} == {0.2}
    for r in _by_task(rows, "I2>=", "test"):
        assert r["category"] == cat.item_categories[r["target"]][-1]
    props = {r["proportion"] for r in _by_task(rows, "I2~")}
    assert len(props) > 4


def test_item_search_and_category_qa(built, ds):
    rows, _ = built
    cat = ds.catalog
    dirs = set()
    for r in _by_task(rows, "I3"):
        inside = cat.in_category(r["label"], r["category"])
        assert inside.all() if r["direction"] == "+" else not inside.any()
        assert r["history"] == [] and r["target"] is None
        dirs.add(r["direction"])
    assert dirs == {"+", "-"}
    for r in _by_task(rows, "I3-QA"):
        item = r["label"][0]
        assert r["completion"][0]["content"] == f'The category of "{cat.titles[item]}" is "{r["category"]}".'
        assert cat.titles[item] in r["prompt"][-1]["content"]


def test_chat_rows_end_with_assistant(built):
    rows, _ = built
    chats = _by_task(rows, "I4")
    assert chats and all(r["completion"][0]["role"] == "assistant" for r in chats)
    assert all(r["prompt"][-1]["role"] == "user" for r in chats)


def test_eval_windows(built, ds):
    rows, _ = built
    for r in _by_task(rows, "I0", "test"):
        u = int(r["user_id"]) - 1                 # ml-100k user ids are 1..943 in index order
        s = ds.sequences[u]
        assert r["history"] == list(s[-11:-1]) and r["target"] == s[-1]
    for r in _by_task(rows, "I0", "valid"):
        s = ds.sequences[int(r["user_id"]) - 1]
        assert r["history"] == list(s[-12:-2]) and r["target"] == s[-2]
    for r in _by_task(rows, "I0"):
        assert 1 <= len(r["history"]) <= 10


def test_epochs_differ_and_seed_is_reproducible(ml100k_dir, tmp_path, ds):
    tdir = untrained_teacher_dir(ds, tmp_path / "t", seed=1)
    cfg = dict(epochs=2, max_users=40, seed=7)
    a = build_dataset(ml100k_dir, tdir, "I0,I1,I2", tmp_path / "a", BuildConfig(**cfg))
    b = build_dataset(ml100k_dir, tdir, "I0,I1,I2", tmp_path / "b", BuildConfig(**cfg))
    c = build_dataset(ml100k_dir, tdir, "I0,I1,I2", tmp_path / "c", BuildConfig(**{**cfg, "seed": 8}))
    for split in ("train", "valid", "test"):
        assert (a / f"{split}.jsonl").read_bytes() == (b / f"{split}.jsonl").read_bytes()
    assert (a / "train.jsonl").read_bytes() != (c / "train.jsonl").read_bytes()
    rows = [json.loads(x) for x in (a / "train.jsonl").read_text().splitlines()]
    e0 = [(r["task"], r["user_id"], r["target"]) for r in rows if r["epoch"] == 0]
    e1 = [(r["task"], r["user_id"], r["target"]) for r in rows if r["epoch"] == 1]
    assert len(e0) == len(e1) and sum(x != y for x, y in zip(e0, e1)) > len(e0) // 2
    import datasets

    dd = datasets.load_from_disk(str(a / "dataset"))
    assert set(dd) == {"train", "valid", "test"} and dd["train"].num_rows == len(rows)
    assert dd["train"][0]["prompt"][0]["role"] == "system"
    card = json.loads((a / "card.json").read_text())
    assert card["counts"]["test"]["I0"] == 40 and card["seed"] == 7 and len(card["inputs"]["teacher"]) == 64
    assert any("teacher's I0 top-10" in n for n in card["notes"])


def test_streamed_build_equals_rows_in_memory_and_batches_are_fixed(ml100k_dir, tmp_path, ds, monkeypatch):
    """build_dataset writes rows a user batch at a time: its JSONL and Arrow rows are exactly
    build_rows' rows, with one batch or many; the batch size changes the draws (so it is a
    constant, not a setting), never the rules."""
    import datasets

    from recalign.tasks import builder as builder_mod

    tdir = untrained_teacher_dir(ds, tmp_path / "t", seed=1)
    cfg = dict(max_users=30, seed=3, sharegpt=str(FIXTURES / "sharegpt/chat.json"), chat_ratio=0.1)
    specs = resolve_tasks("I0,I1,I2,I3,I4", load_specs())
    full = builder_mod.USER_CHUNK
    for chunk in (full, 7):
        monkeypatch.setattr(builder_mod, "USER_CHUNK", chunk)
        out = build_dataset(ml100k_dir, tdir, "I0,I1,I2,I3,I4", tmp_path / f"b{chunk}", BuildConfig(**cfg))
        mem, _ = build_rows(ds, Teacher.load(tdir, data=ds), specs, BuildConfig(**cfg), progress=False)
        dd = datasets.load_from_disk(str(out / "dataset"))
        for split in ("train", "valid", "test"):
            lines = [json.loads(x) for x in (out / f"{split}.jsonl").read_text().splitlines()]
            assert lines == json.loads(json.dumps(mem[split])) and len(lines) > 0
            assert dd[split].to_list() == lines          # Arrow rows: same values, None kept as None
        card = json.loads((out / "card.json").read_text())
        assert card["rows_total"] == sum(len(r) for r in mem.values())
        assert card["counts"]["train"]["I4"] == round(0.1 * sum(1 for r in mem["train"] if r["task"] != "I4"))
    one = (tmp_path / f"b{full}" / "train.jsonl").read_text()
    assert one != (tmp_path / "b7" / "train.jsonl").read_text()


# ----------------------------------------------------------------------------- specs and templates

SAMPLE_VARS = dict(history=["Heat", "Se7en"], item_count=5, category="Drama", proportion=0.3, n=3,
                   title="Heat", text="Hello!")


@pytest.mark.parametrize("spec", list(load_specs().values()), ids=lambda s: s.task)
def test_every_task_yaml_renders_every_paraphrase(spec):
    r = Renderer()
    texts = set()
    for p in range(spec.paraphrases):
        direction = spec.direction or "+"
        text = r.render(spec.template, task=spec.task, paraphrase=p, **{**SAMPLE_VARS, "direction": direction})
        assert text and "{{" not in text
        texts.add(text)
    assert len(texts) == spec.paraphrases                    # paraphrases really differ
    if spec.builder in ("category_control", "proportion_control", "item_search"):
        assert "'Drama'" in text
    assert r.render(spec.system) == "You are an expert recommender engine."


def test_paper_intention_phrasings_present():
    r = Renderer()
    plus = {r.render("i1_category.jinja", paraphrase=p, direction="+", **SAMPLE_VARS) for p in range(6)}
    minus = {r.render("i1_category.jinja", paraphrase=p, direction="-", **SAMPLE_VARS) for p in range(6)}
    assert any("I would like to buy some 'Drama' products." in t for t in plus)
    assert any("Don't recommend me any 'Drama' products." in t for t in minus)
    with pytest.raises(DataError, match="undefined variable"):
        r.render("i1_category.jinja", paraphrase=6, direction="+", **SAMPLE_VARS)


def test_unknown_task_lists_valid_names():
    with pytest.raises(DataError) as e:
        resolve_tasks("I0,I1x", load_specs())
    assert "did you mean 'I1" in str(e.value) and "I2<=" in str(e.value)
    assert [s.task for s in resolve_tasks("I2≤,I1−", load_specs())] == ["I2<=", "I1-"]
    for empty in ("", " , "):          # a 0-row dataset with rc 0 is a silent wrong result
        with pytest.raises(DataError, match="no task named.*--tasks I0"):
            resolve_tasks(empty, load_specs())


def test_template_syntax_error_names_file_and_line(tmp_path):
    (tmp_path / "i0_sequential.jinja").write_text("line one\n{% if x %}\nunclosed\n")
    with pytest.raises(DataError, match=r"i0_sequential.jinja:\d+: template syntax error") as e:
        Renderer(tmp_path).render("i0_sequential.jinja", task="I0", x=1)
    assert "task I0" in str(e.value)


def test_undefined_variable_names_variable_template_and_task():
    with pytest.raises(DataError) as e:
        Renderer().render("i0_sequential.jinja", task="I0", paraphrase=0, item_count=3)
    msg = str(e.value)
    assert "'history' is undefined" in msg and "i0_sequential.jinja" in msg and "task I0" in msg


def test_user_templates_are_sandboxed(tmp_path):
    payload = "{{ ''.__class__.__mro__[1].__subclasses__() }}"
    (tmp_path / "evil.jinja").write_text(payload)
    with pytest.raises(DataError, match="unsafe"):
        Renderer(tmp_path).render("evil.jinja")
    (tmp_path / "ok.jinja").write_text("Hi {{ name }}")
    assert Renderer(tmp_path).render("ok.jinja", name="you") == "Hi you"


def test_spec_validation_names_file_and_key(tmp_path):
    bad = tmp_path / "t.yaml"
    bad.write_text("task: X\nversion: 1\ntemplate: a.jinja\nbuilder: sequential\nparaphrase: 2\n")
    with pytest.raises(DataError, match=r"t.yaml: unknown key 'paraphrase' \(did you mean 'paraphrases'\?\)"):
        parse_spec(bad)
    bad.write_text("task: X\nversion: one\ntemplate: a.jinja\nbuilder: sequential\n")
    with pytest.raises(DataError, match="'version' must be an integer"):
        parse_spec(bad)
    bad.write_text("task: X\nversion: 1\ntemplate: a.jinja\n")
    with pytest.raises(DataError, match="missing required key.*builder"):
        parse_spec(bad)
    (tmp_path / "a.yaml").write_text("include: b.yaml\n")
    (tmp_path / "b.yaml").write_text("include: a.yaml\n")
    with pytest.raises(DataError, match="include cycle"):
        parse_spec(tmp_path / "a.yaml")


def test_variant_includes_base():
    spec = load_specs()["I1-"]
    assert isinstance(spec, TaskSpec) and spec.paraphrases == 6 and spec.direction == "-"
    assert spec.template == "i1_category.jinja" and spec.test_category == "reference_frequent"


def test_malformed_sharegpt(tmp_path):
    p = tmp_path / "s.json"
    p.write_text(json.dumps([{"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]},
                             {"conversation": []}]))
    with pytest.raises(DataError, match=r"s.json: record 1: expected an object with a 'conversations' list"):
        load_sharegpt(p)
    p.write_text(json.dumps([{"conversations": [{"from": "robot", "value": "x"}]}]))
    with pytest.raises(DataError, match="record 0, turn 0: unknown speaker 'robot'"):
        load_sharegpt(p)
    for bad in (None, {"a": 1}, 42):          # never the chat texts "None" / "{'a': 1}"
        p.write_text(json.dumps([{"conversations": [{"from": "human", "value": bad}, {"from": "gpt", "value": "yo"}]}]))
        with pytest.raises(DataError, match="record 0, turn 0: 'value' must be a string"):
            load_sharegpt(p)
    p.write_text('{"conversations": []}\n{not json\n')
    with pytest.raises(DataError, match=r"s.json:2: not valid JSON"):
        load_sharegpt(p)
    msgs = load_sharegpt(FIXTURES / "sharegpt/chat.json")
    assert len(msgs) == 3 and msgs[2][-1] == {"role": "assistant", "content": "Red."}
    assert msgs[1][0]["role"] == "system"


def test_reference_lists_drive_test_categories(ds, teacher, tmp_path):
    """I1- at test time: the most frequent non-target category of the model's own top-10."""
    s = ds.sequences[0]
    target_cats = set(ds.catalog.item_categories[int(s[-1])])
    horror = [i for i in ds.catalog.items_in("Horror") if not target_cats & set(ds.catalog.item_categories[i])]
    assert "Horror" not in target_cats
    ref = tmp_path / "ref.jsonl"
    ref.write_text(json.dumps({"user_id": "1", "items": [ds.catalog.titles[i] for i in horror[:10]]}) + "\n")
    rows, _ = build_rows(ds, teacher, resolve_tasks("I1-", load_specs()),
                         BuildConfig(max_users=1, reference=str(ref)), progress=False)
    assert rows["test"][0]["category"] == "Horror"
    ref.write_text('{"user": 1}\n')
    with pytest.raises(DataError, match="ref.jsonl:1: expected a JSON object with 'user_id' and 'items'"):
        build_rows(ds, teacher, resolve_tasks("I1-", load_specs()), BuildConfig(max_users=1, reference=str(ref)),
                   progress=False)


def test_show_cli(ml100k_dir, tmp_path, capsys, ds):
    from recalign.cli import main

    tdir = untrained_teacher_dir(ds, tmp_path / "t")
    assert main(["data", "build", "--data", str(ml100k_dir), "--teacher", str(tdir), "--tasks", "I0,I1",
                 "--out", str(tmp_path / "inst"), "--max-users", "5"]) == 0
    out = capsys.readouterr().out
    assert "I1+: 5" in out and "note: I4" not in out
    assert main(["data", "show", "--data", str(tmp_path / "inst"), "--task", "I1", "-n", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count("===== I1") == 2 and "[assistant]\n1. " in out
    assert main(["data", "build", "--data", str(ml100k_dir), "--teacher", str(tdir), "--tasks", "I9",
                 "--out", str(tmp_path / "x")]) == 2
    assert "unknown task 'I9'" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_rl_split_draws_prompts_by_the_official_rules(ml100k_dir, tmp_path, ds):
    """--rl-split: RL prompts from the training windows with REFERENCE.md §1.7's draws
    (item_count U{6..10}; I1+ a category of the target; I1- uniform among the teacher list's
    frequent categories; I2 n ~ U{0..min(|C|, m)}, p = n/m down to 10 %), and the other
    splits exactly as without it."""
    import math

    import datasets

    from recalign.trainers.rewarding import train_reward_rows

    tdir = untrained_teacher_dir(ds, tmp_path / "t", seed=1)
    cfg = dict(max_users=60, seed=5)
    plain = build_dataset(ml100k_dir, tdir, "I0,I1,I2,I3", tmp_path / "plain", BuildConfig(**cfg))
    out = build_dataset(ml100k_dir, tdir, "I0,I1,I2,I3", tmp_path / "rl", BuildConfig(**cfg, rl_split=True))
    for split in ("train", "valid", "test"):
        assert (plain / f"{split}.jsonl").read_bytes() == (out / f"{split}.jsonl").read_bytes()
    rl = [json.loads(x) for x in (out / "rl.jsonl").read_text().splitlines()]
    assert {r["task"] for r in rl} == {"I0", "I1+", "I1-", "I2<=", "I2>=", "I2~"}    # rewarded tasks only
    assert all(6 <= r["item_count"] <= 10 and r["split"] == "rl" for r in rl)
    assert len({r["item_count"] for r in rl if r["task"] == "I0"}) > 2
    cat = ds.catalog
    for r in rl:
        seq = ds.sequences[[str(u) for u in ds.users["user_id"]].index(r["user_id"])] if ds.users is not None \
            else ds.sequences[int(r["user_id"])]
        assert r["target"] in set(map(int, seq[:-2]))               # a training window, never valid/test
        if r["task"] == "I1+":
            assert r["category"] in cat.item_categories[r["target"]]
        if r["task"].startswith("I2"):
            size = int(cat.category_mask(r["category"]).sum())
            assert 0 <= r["n"] <= min(size, r["item_count"])
            assert r["proportion"] == math.floor(10 * r["n"] / r["item_count"]) / 10
    assert len({r["n"] for r in rl if r["task"] == "I2<="}) > 3
    minus = [r for r in rl if r["task"] == "I1-"]
    top = Teacher.load(tdir, data=ds).topk([np.asarray(r["history"]) for r in minus], k=10)
    for r, t in zip(minus, top):                  # counted >= min(2, max) times in the teacher's top-10
        counts = Counter(c for i in t for c in cat.item_categories[int(i)])
        assert counts[r["category"]] >= min(2, max(counts.values()))
    dd = datasets.load_from_disk(str(out / "dataset"))
    assert set(dd) == {"train", "valid", "test", "rl"} and dd["rl"].num_rows == len(rl)
    assert json.loads((out / "card.json").read_text())["counts"]["rl"]["I0"] == 60
    assert train_reward_rows(out).num_rows == len(rl)              # RL trains on it when it is there
    assert train_reward_rows(plain).num_rows == sum(1 for x in (plain / "train.jsonl").read_text().splitlines()
                                                   if json.loads(x)["task"] not in ("I3", "I3-QA"))


def test_protocol_block_sets_the_official_test_proportion(ml100k_dir, tmp_path, ds):
    """Under --protocol reclm-gen, I2>= test rows ask for 30 % (the official MP_30); ours asks
    for 50 %; the other test rows are the same either way."""
    tdir = untrained_teacher_dir(ds, tmp_path / "t", seed=1)
    ours = build_dataset(ml100k_dir, tdir, "I2", tmp_path / "ours", BuildConfig(max_users=30))
    official = build_dataset(ml100k_dir, tdir, "I2", tmp_path / "off", BuildConfig(max_users=30, protocol="reclm-gen"))

    def rows(out, split):
        return [json.loads(x) for x in (out / f"{split}.jsonl").read_text().splitlines()]
    assert {r["proportion"] for r in rows(ours, "test") if r["task"] == "I2>="} == {0.5}
    assert {r["proportion"] for r in rows(official, "test") if r["task"] == "I2>="} == {0.3}
    assert all(r["n"] == 3 for r in rows(official, "test") if r["task"] == "I2>=")
    assert [r for r in rows(ours, "test") if r["task"] != "I2>="] == \
        [r for r in rows(official, "test") if r["task"] != "I2>="]
    # train rows: no I2~ (the official SFT does not train on it); <= and >= share the users
    assert {r["task"] for r in rows(ours, "train")} == {"I2<=", "I2>=", "I2~"}
    assert {r["task"] for r in rows(official, "train")} == {"I2<=", "I2>="}
    card = json.loads((official / "card.json").read_text())
    assert card["config"]["protocol"] == "reclm-gen" and card["specs"]["I2>="]["test_proportion"] == 0.3


@pytest.mark.parametrize("block, message", [
    ("protocols: {paper: {test_proportion: 0.3}}", "unknown protocol 'paper'"),
    ("protocols: {reclm-gen: {builder: item_search}}", "'builder' cannot change"),
    ("protocols: {reclm-gen: {direction: sideways}}", "key 'direction' must be"),
    ("protocols: [reclm-gen]", "must map a protocol name"),
])
def test_protocol_block_errors_name_the_file(tmp_path, block, message):
    from recalign.tasks.spec import BUILTIN, parse_spec

    f = tmp_path / "mine.yaml"
    f.write_text((BUILTIN / "i2_ge.yaml").read_text().replace("include: _i2_base.yaml",
                 f"include: {BUILTIN / '_i2_base.yaml'}").split("protocols:")[0] + block + "\n")
    with pytest.raises(DataError, match=message) as e:
        parse_spec(f)
    assert str(f) in str(e.value)


def test_reclm_gen_sft_mix(ml100k_dir, tmp_path, ds):
    """--protocol reclm-gen's task files give the official SFT mix (REFERENCE.md §1.7): no I2~
    training rows (but its test and RL rows), I3 one row per item asking for 1 item of a
    random category of it, I3-QA answering a random category, I4 at ratio 0.5."""
    tdir = untrained_teacher_dir(ds, tmp_path / "t", seed=2)
    cfg = BuildConfig(max_users=20, seed=4, sharegpt=str(FIXTURES / "sharegpt/chat.json"), protocol="reclm-gen",
                      rl_split=True)
    out = build_dataset(ml100k_dir, tdir, "I0,I2,I3,I4", tmp_path / "off", cfg)
    counts = json.loads((out / "card.json").read_text())["counts"]
    assert "I2~" not in counts["train"] and counts["test"]["I2~"] > 0 and counts["rl"]["I2~"] == 20
    train = [json.loads(x) for x in (out / "train.jsonl").read_text().splitlines()]
    cat = ds.catalog
    i3 = [r for r in train if r["task"] == "I3"]
    assert len(i3) == sum(1 for i in range(1, cat.n_items + 1) if cat.item_categories[i])
    assert len({r["label"][0] for r in i3}) == len(i3)                      # each item once
    assert all(r["item_count"] == 1 and r["category"] in cat.item_categories[r["label"][0]] for r in i3)
    qa = [r for r in train if r["task"] == "I3-QA"]
    multi = [r for r in qa if len(cat.item_categories[r["label"][0]]) > 1]
    assert all(r["category"] in cat.item_categories[r["label"][0]] for r in qa)
    assert any(r["category"] != cat.item_categories[r["label"][0]][-1] for r in multi)   # not always the last
    rec = sum(v for t, v in counts["train"].items() if t != "I4")
    assert counts["train"]["I4"] == round(0.5 * rec)


def test_reclm_gen_sft_alternates_i1_and_i2_and_draws_official_counts(ml100k_dir, tmp_path, ds):
    """Official SFT (REFERENCE.md §1.7): per user and epoch one I1 row (+ or -) and one I2 row
    (<= or >=), each direction about half the users; I2 asks for t items of C with p = t/10 and
    labels t-1 or t (<=), t or t+1 (>=) in-category items. Ours: every task for every user."""
    tdir = untrained_teacher_dir(ds, tmp_path / "t", seed=3)
    n_users, epochs = 60, 2
    off = build_dataset(ml100k_dir, tdir, "I1,I2", tmp_path / "off",
                        BuildConfig(max_users=n_users, epochs=epochs, seed=5, protocol="reclm-gen"))
    ours = build_dataset(ml100k_dir, tdir, "I1,I2", tmp_path / "ours",
                         BuildConfig(max_users=n_users, epochs=epochs, seed=5))

    def rows(out, split="train"):
        return [json.loads(x) for x in (out / f"{split}.jsonl").read_text().splitlines()]
    train = rows(off)
    for group in (("I1+", "I1-"), ("I2<=", "I2>=")):
        for epoch in range(epochs):
            users = Counter(r["user_id"] for r in train if r["task"] in group and r["epoch"] == epoch)
            assert max(users.values()) == 1                     # never both members for one user
            assert len(users) >= 0.8 * n_users                  # (a few skipped: no category for the rule)
            share = sum(1 for r in train if r["task"] == group[0] and r["epoch"] == epoch) / len(users)
            assert 0.25 < share < 0.75
        deal = [{r["user_id"] for r in train if r["task"] == group[0] and r["epoch"] == e} for e in range(epochs)]
        assert deal[0] != deal[1]                               # a fresh deal each epoch
    cat = ds.catalog
    for task, lo, hi in (("I2<=", -1, 0), ("I2>=", 0, 1)):
        offsets = Counter()
        for r in (r for r in train if r["task"] == task):
            t, cnt = r["n"], int(cat.in_category(r["label"], r["category"]).sum())
            assert r["item_count"] == 10 and r["proportion"] == t / 10
            offsets[cnt - t] += 1
        assert set(offsets) == {lo, hi}, offsets                # both offsets occur, nothing else
    ns = {r["n"] for r in train if r["task"] == "I2<="}
    assert min(ns) >= 1 and max(ns) == 10
    assert min(r["n"] for r in train if r["task"] == "I2>=") == 0
    # ours: every user gets every task, each epoch; test rows are not dealt out under either protocol
    mine = rows(ours)
    for task in ("I1+", "I2<="):
        assert len({r["user_id"] for r in mine if r["task"] == task and r["epoch"] == 0}) >= 0.8 * n_users
    test_off = Counter(r["task"] for r in rows(off, "test"))
    assert test_off["I1+"] >= 0.8 * n_users and test_off["I1-"] >= 0.8 * n_users


def test_alternate_and_train_proportion_are_validated(tmp_path):
    from recalign.tasks.spec import BUILTIN

    base = (BUILTIN / "i2_approx.yaml").read_text().replace("include: _i2_base.yaml",
                                                           f"include: {BUILTIN / '_i2_base.yaml'}").split("protocols:")[0]
    f = tmp_path / "mine.yaml"
    f.write_text(base + "train_proportion: count_offset\n")
    with pytest.raises(DataError, match="'count_offset' is defined for '<=' and '>=' only") as e:
        parse_spec(f)
    assert str(f) in str(e.value)
    f.write_text(base + "train_proportion: offsets\n")
    with pytest.raises(DataError, match="key 'train_proportion' must be one of draw, count_offset"):
        parse_spec(f)
    f.write_text(base + "alternate: 3\n")
    with pytest.raises(DataError, match="key 'alternate' must be a group name"):
        parse_spec(f)
