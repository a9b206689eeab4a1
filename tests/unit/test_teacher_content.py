"""LEARN-style content teachers: content / hybrid item representations, the content cache,
the new-item split and the cold-start report."""
import json

import numpy as np
import pandas as pd
import pytest
import torch

from recalign.data import DataError, RecDataset
from recalign.teacher import Teacher
from recalign.teacher.coldstart import (bucket_metrics, bucket_of, new_item_split, run_coldstart,
                                        write_coldstart)
from recalign.teacher.config import TeacherTrainConfig
from recalign.teacher.content import item_content, item_texts
from recalign.teacher.sasrec import SASRec, SASRecConfig
from recalign.teacher.train import build_model, full_ranks, popularity_ranks, save_teacher, train_teacher

GROUPS, PER_GROUP = 6, 20
N = GROUPS * PER_GROUP


def group_of(item: int) -> int:
    return (item - 1) % GROUPS


def taste_dataset(n_users=240, seed=0) -> tuple[RecDataset, np.ndarray]:
    """Each user likes one group and picks its items in random order; an item's text (here
    its content vector: the group one-hot plus noise) says which group it is in, so text
    determines preference by construction while ids only show it through co-occurrence.
    Items are drawn Zipf-like inside a group, so that the group's tail is rare."""
    rng = np.random.default_rng(seed)
    members = [[i for i in range(1, N + 1) if group_of(i) == g] for g in range(GROUPS)]
    weights = 1.0 / np.arange(1, PER_GROUP + 1)
    weights /= weights.sum()
    seqs = []
    for _ in range(n_users):
        g = int(rng.integers(GROUPS))
        length = int(rng.integers(6, 12))
        seqs.append(list(rng.choice(members[g], size=length, replace=False, p=weights)))
    content = np.zeros((N + 1, GROUPS + 8), dtype=np.float32)
    for i in range(1, N + 1):
        content[i, group_of(i)] = 1.0
        content[i, GROUPS:] = rng.normal(0, 0.3, 8)
    titles = [f"{['red', 'blue', 'green', 'black', 'white', 'gold'][group_of(i)]} item {i}" for i in range(1, N + 1)]
    return RecDataset.from_sequences(seqs, titles=titles, n_items=N), content


def small_cfg(**kw) -> TeacherTrainConfig:
    base = dict(hidden=32, inner=64, dropout=0.1, max_len=10, epochs=25, patience=25, batch_size=32,
                lr=5e-3, seed=0, threads=1)
    return TeacherTrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def taste():
    return taste_dataset()


def test_content_teacher_beats_random_and_popularity(taste):
    ds, content = taste
    model, m = train_teacher(ds, small_cfg(item_repr="content"), log=lambda s: None, content=content)
    assert m["item_repr"] == "content" and m["content"]["items_without_text"] == 0
    hr = m["test"]["masked"]["HR@10"]
    pop = rank_hr(popularity_ranks(ds, "test", True))
    random = 10 / (N - 8)                     # ten picks among the unmasked items
    # the group holds 20 items, about 10 left after masking: the ceiling is near 1
    assert hr > 2 * pop and hr > 4 * random, (hr, pop, random)
    assert m["test"]["masked"]["HR@10"] > 0.6


def rank_hr(ranks):
    return float((np.asarray(ranks) < 10).mean())


def test_content_teacher_ranks_new_items_an_id_teacher_cannot(taste, tmp_path):
    ds, content = taste
    res = run_coldstart(ds, small_cfg(), variants=("id", "content", "hybrid"), frac=0.2,
                        log=lambda s: None, content=content)
    assert res["protocol"]["held_out_in_training"] == 0
    new = {v: r["new_items"]["HR@10"]["mean"] for v, r in res["variants"].items()}
    # never-seen items: the id teacher's vectors for them only ever got pushed down; the
    # hybrid scores them by content alone against warm items that also have an id part, so
    # it gains less than the pure content teacher
    assert new["id"] < 0.05 and new["content"] > 0.4 and new["hybrid"] > new["id"] + 0.1, new
    for v in ("content", "hybrid"):
        c = res["vs_id"][v]["new_items"]["HR@10"]
        assert c["lo"] > 0 and c["p"] < 0.05, (v, c)
    out = write_coldstart(tmp_path / "cold", res, small_cfg(), ds)
    report = (out / "report.md").read_text()
    assert "LEARN (content)" in report and "new items" in report and "| n |" in report
    assert (out / "buckets.png").stat().st_size > 1000
    saved = json.loads((out / "metrics.json").read_text())
    assert set(saved["variants"]) == {"random", "popularity", "id", "content", "hybrid"}
    rnd = saved["variants"]["random"]["new_items"]["HR@10"]["mean"]
    assert 0 < rnd < 0.2 and new["content"] > 2 * rnd


def test_new_item_split_keeps_held_out_items_out_of_training(taste):
    ds, _ = taste
    split = new_item_split(ds, frac=0.1, seed=3)
    assert len(split.held) == round(0.1 * N)
    train_items = np.concatenate(split.train.sequences)
    assert not np.isin(train_items, split.held).any()
    hist, tgt = split.rows
    assert len(tgt) and np.isin(tgt, split.held).all()
    assert not any(np.isin(h, split.held).any() for h in hist)
    # every held-out interaction with an earlier warm item is a row
    expected = sum(int(np.isin(s[k], split.held) and (~np.isin(s[:k], split.held)).any())
                   for s in ds.sequences for k in range(len(s)))
    assert len(tgt) == expected
    with pytest.raises(DataError, match="--new-items"):
        new_item_split(ds, frac=1.5)


def test_hybrid_with_content_zeroed_ranks_as_the_id_teacher():
    torch.manual_seed(0)
    cfg = SASRecConfig(n_items=40, hidden=16, inner=32, max_len=8, dropout=0.0)
    ident = SASRec(cfg).eval()
    hybrid = SASRec(SASRecConfig(**{**cfg.to_dict(), "item_repr": "hybrid", "content_dim": 12})).eval()
    missing = hybrid.load_state_dict(ident.state_dict(), strict=False).missing_keys
    assert set(missing) == {"content", "content_proj.weight", "id_mask", "unk_id"}
    with torch.no_grad():
        hybrid.content.zero_()
        hybrid.content_proj.weight.normal_()          # any projection: zero content adds nothing
    rng = np.random.default_rng(0)
    hist = [list(rng.integers(1, 41, size=int(rng.integers(1, 8)))) for _ in range(20)]
    a, b = Teacher(ident), Teacher(hybrid)
    assert np.array_equal(a.rank_all(hist), b.rank_all(hist))
    assert all(np.array_equal(x, y) for x, y in zip(a.topk(hist, 10), b.topk(hist, 10)))
    # and with content it does change the ranking
    with torch.no_grad():
        hybrid.content.normal_()
    assert not np.array_equal(a.rank_all(hist), Teacher(hybrid).rank_all(hist))


def test_hybrid_drops_the_id_part_of_unseen_items_and_keeps_it_without_text():
    # item 5 appears only as a test target, item 6 only in training but has no text
    seqs = [[1, 2, 6, 3, 5], [2, 3, 4, 1, 2], [3, 1, 4, 2, 3]]
    ds = RecDataset.from_sequences(seqs, n_items=6)
    content = np.ones((7, 4), dtype=np.float32)
    content[0] = 0
    content[6] = 0
    content[5] = 2
    model, info = build_model(ds, small_cfg(item_repr="hybrid"), content=content, log=lambda s: None)
    assert model.id_mask.tolist() == [0, 1, 1, 1, 1, 0, 1]
    assert info["items_without_text"] == 1 and info["ids_dropped"] == 1
    keep_all, _ = build_model(ds, small_cfg(item_repr="hybrid", drop_unseen_id=False), content=content,
                              log=lambda s: None)
    assert keep_all.id_mask[1:].tolist() == [1] * 6
    with pytest.raises(DataError, match="1 of 6 items have no text.*--item-repr hybrid"):
        build_model(ds, small_cfg(item_repr="content"), content=content, log=lambda s: None)


def test_content_teacher_saves_and_loads_without_the_language_model(taste, tmp_path):
    ds, content = taste
    model, m = train_teacher(ds, small_cfg(item_repr="hybrid", epochs=2), log=lambda s: None, content=content)
    out = save_teacher(tmp_path / "t", model, m, small_cfg(item_repr="hybrid", epochs=2), ds)
    loaded = Teacher.load(out, data=ds)
    assert loaded.model.cfg.item_repr == "hybrid"
    card = json.loads((out / "card.json").read_text())
    assert card["config"]["item_repr"] == "hybrid" and card["content"]["items_without_text"] == 0
    hist = [s[:-1] for s in ds.sequences[:30]]
    assert all(np.array_equal(x, y) for x, y in zip(Teacher(model, ds.catalog).topk(hist, 10),
                                                      loaded.topk(hist, 10)))
    h, t = ds.split_examples("test")
    assert np.array_equal(full_ranks(model, h, t, True), full_ranks(loaded.model, h, t, True))


def test_infonce_options_train(taste):
    ds, content = taste
    for kw in ({"loss": "infonce", "logq": False}, {"loss": "ce"}, {"loss": "bce"}):
        _, m = train_teacher(ds, small_cfg(item_repr="content", epochs=3, **kw), log=lambda s: None,
                             content=content)
        assert m["history"][-1]["loss"] < m["history"][0]["loss"], kw
    assert TeacherTrainConfig(item_repr="content").loss == "infonce"
    assert TeacherTrainConfig(item_repr="hybrid").loss == "ce"


class CountingEncoder:
    identity = "counting-v1"

    def __init__(self):
        self.calls = 0

    def __call__(self, texts):
        self.calls += 1
        return np.stack([np.array([len(t), t.count(" "), hash(t) % 97], dtype=np.float32) for t in texts])


def test_content_cache_is_keyed_by_template_and_never_reused_across(taste, tmp_path):
    ds, _ = taste
    enc = CountingEncoder()
    a, info_a = item_content(ds, template="{{ title }}", cache_root=tmp_path, encode=enc, log=lambda s: None)
    again, info_again = item_content(ds, template="{{ title }}", cache_root=tmp_path, encode=enc, log=lambda s: None)
    assert enc.calls == 1 and info_again["cached"] and np.array_equal(a, again)
    b, info_b = item_content(ds, template="{{ title | upper }}", cache_root=tmp_path, encode=enc, log=lambda s: None)
    assert enc.calls == 2 and info_b["key"] != info_a["key"] and not info_b["cached"]
    assert not np.array_equal(a, b)
    # a cache whose card says another model is not trusted even under the right key
    card = tmp_path / info_a["key"] / "card.json"
    saved = json.loads(card.read_text())
    card.write_text(json.dumps({**saved, "model": "someone-else"}))
    notes = []
    item_content(ds, template="{{ title }}", cache_root=tmp_path, encode=enc, log=notes.append)
    assert enc.calls == 3 and "made with another model" in notes[0]


def test_content_embeddings_from_a_real_language_model(tmp_path):
    from recalign.models.resolve import build_tiny_random

    tiny = build_tiny_random(tmp_path / "tiny")
    ds = RecDataset.from_sequences([[1, 2, 3, 4]] * 3, titles=["Heat", "Se7en", "", "Alien"],
                                   categories=[["Crime"], ["Crime"], [], ["Sci-Fi"]], n_items=4)
    emb, info = item_content(ds, str(tiny), cache_root=tmp_path / "cache", log=lambda s: None)
    assert emb.shape == (5, 64) and not emb[0].any() and not emb[3].any()
    assert info["items_without_text"] == 1 and info["items_without_text_examples"] == [3]
    assert all(np.abs(emb[i]).sum() > 0 for i in (1, 2, 4)) and not np.allclose(emb[1], emb[4])
    emb2, info2 = item_content(ds, str(tiny), cache_root=tmp_path / "cache", log=lambda s: None)
    assert info2["cached"] and np.array_equal(emb, emb2)


def test_item_text_template_errors_name_the_field():
    items = pd.DataFrame({"item_idx": [1, 2], "title": ["Heat", "Alien"], "year": ["1995", None],
                          "categories": [np.array(["Crime"]), np.array([], dtype=object)]})
    assert item_texts(items) == ["Heat (1995). Categories: Crime", "Alien"]
    with pytest.raises(DataError, match="'plot'.*fields: title, year, categories"):
        item_texts(items, "{{ title }} {{ plot }}")
    with pytest.raises(DataError, match="--content-template.*line 1"):
        item_texts(items, "{{ title ")


def test_random_reference_is_the_expected_hit_rate():
    from recalign.teacher.coldstart import _random_rows

    r = _random_rows(20, [np.array([1, 2, 3]), np.array([5])], np.array([4, 5]))
    # 17 candidates (3 masked), then 20 (the target itself is never masked)
    assert r["HR@10"].tolist() == pytest.approx([10 / 17, 10 / 20])
    assert r["NDCG@10"][1] == pytest.approx(sum(1 / np.log2(i + 2) for i in range(10)) / 20)


def test_bucket_metrics_by_training_interactions():
    counts = np.array([0, 0, 3, 10, 50])              # items 1..4
    targets = np.array([1, 2, 3, 4, 4])
    ranks = np.array([0, 20, 1, 5, 30])
    assert bucket_of(counts, targets).tolist() == ["<=5", "<=5", "6-20", ">20", ">20"]
    b = bucket_metrics(ranks, targets, counts)
    assert b["<=5"]["n"] == 2 and b["<=5"]["HR@10"]["mean"] == 0.5
    assert b["6-20"]["NDCG@10"]["mean"] == pytest.approx(1 / np.log2(3))
    assert b[">20"]["HR@10"]["mean"] == 0.5 and b["all"]["n"] == 5


def test_eval_reference_row_and_recipe_name_the_teacher_variant(taste, tmp_path):
    from pathlib import Path

    from recalign.eval.run import teacher_on_rows
    from recalign.pipeline import load_recipe

    ds, content = taste
    cfg = small_cfg(item_repr="hybrid", epochs=1)
    model, m = train_teacher(ds, cfg, log=lambda s: None, content=content)
    out = save_teacher(tmp_path / "t", model, m, cfg, ds)
    rows = [{"task": "I0", "rule": "I0", "user_id": str(u), "history": [int(x) for x in s[-4:-1]],
             "target": int(s[-1])} for u, s in enumerate(ds.sequences[:20])]
    ref = teacher_on_rows(out, ds, rows)
    assert ref["name"] == "SASRec id+content teacher (hybrid)" and ref["item_repr"] == "hybrid"
    recipe = load_recipe(Path(__file__).resolve().parents[2] / "recipes" / "ml100k-smollm2-learn.yaml", "quick")
    assert recipe["teacher"]["item_repr"] == "hybrid" and recipe["out"] != "runs/ml100k-smollm2"
    assert recipe["teacher"]["epochs"] == 5                       # the parent's quick profile still applies
    TeacherTrainConfig(**recipe["teacher"])                        # every key is a teacher option
