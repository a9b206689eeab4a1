import numpy as np
import pytest
import torch

from recalign.data import DataError, RecDataset
from recalign.teacher import Teacher, rank_metrics
from recalign.teacher.config import TeacherTrainConfig
from recalign.teacher.sasrec import SASRec, SASRecConfig, left_pad
from recalign.teacher.train import full_ranks, popularity_ranks, save_teacher, train_teacher

N = 30


def cyclic_dataset(n_users=120, seed=0):
    """Next item = previous + 1 (mod N): learnable from order, useless for popularity."""
    rng = np.random.default_rng(seed)
    seqs = []
    for _ in range(n_users):
        start, length = rng.integers(0, N), rng.integers(8, 20)
        seqs.append([(start + j) % N + 1 for j in range(length)])
    cats = [["even"] if i % 2 == 0 else ["odd"] for i in range(1, N + 1)]
    return RecDataset.from_sequences(seqs, categories=cats, n_items=N)


@pytest.fixture(scope="module")
def trained():
    ds = cyclic_dataset()
    cfg = TeacherTrainConfig(hidden=32, inner=64, dropout=0.1, max_len=10, epochs=40, patience=40,
                             batch_size=32, lr=5e-3, seed=0)
    model, metrics = train_teacher(ds, cfg, log=lambda s: None)
    return ds, cfg, model, metrics


@pytest.mark.parametrize("ranks,expected", [
    ([0], {"HR@10": 1.0, "NDCG@10": 1.0, "MRR@10": 1.0}),
    ([1], {"HR@10": 1.0, "NDCG@10": 1 / np.log2(3), "MRR@10": 0.5}),
    ([9, 10], {"HR@10": 0.5, "NDCG@10": 0.5 / np.log2(11), "MRR@10": 0.05}),
    ([50], {"HR@10": 0.0, "NDCG@10": 0.0, "MRR@10": 0.0}),
])
def test_rank_metrics_hand_computed(ranks, expected):
    got = rank_metrics(np.array(ranks), ks=(10,))
    for k, v in expected.items():
        assert got[k] == pytest.approx(v)


def test_teacher_learns_sequence_and_beats_popularity(trained):
    ds, _, model, metrics = trained
    m = metrics["test"]["masked"]
    pop = metrics["popularity_test"]["masked"]
    assert m["HR@10"] > 0.9 and m["NDCG@10"] > 0.7
    assert m["HR@10"] > pop["HR@10"] + 0.3
    assert metrics["best_epoch"] >= 1 and metrics["history"][0]["loss"] > metrics["history"][-1]["loss"]


def test_topk_excludes_history_and_filters_categories(trained):
    ds, _, model, _ = trained
    t = Teacher(model, ds.catalog)
    hist = [[3, 4, 5, 6], [10, 11]]
    top = t.topk(hist, k=5)
    assert top[0][0] == 7 and top[1][0] == 12          # the learned successor
    for h, row in zip(hist, top):
        assert not set(row) & set(h) and len(row) == 5
    evens = t.topk(hist, k=5, include="even")
    assert all(i % 2 == 0 for row in evens for i in row) and evens[1][0] == 12
    no_even = t.topk(hist, k=5, exclude_category=["even", None])
    assert all(i % 2 == 1 for i in no_even[0]) and no_even[1][0] == 12
    extra = t.topk(hist, k=3, exclude=[[7], []])
    assert 7 not in extra[0]
    few = t.topk([[1]], k=100, include="odd")            # fewer allowed items than k
    assert len(few[0]) == N // 2 - 1


def test_rank_agrees_with_topk(trained):
    ds, _, model, _ = trained
    t = Teacher(model, ds.catalog)
    hist = [[3, 4, 5, 6], [20, 21, 22]]
    top = t.topk(hist, k=N)
    ranks = t.rank(hist, [top[0][:5], top[1][[0, 3]]])
    assert ranks[0].tolist() == [0, 1, 2, 3, 4] and ranks[1].tolist() == [0, 3]
    # an item of the history is masked: worst possible rank
    assert t.rank(hist, [[3], [20]])[0][0] == N
    unmasked = t.rank(hist, [[3], [20]], mask_history=False)
    assert unmasked[0][0] < N
    with pytest.raises(ValueError, match="1..30"):
        t.rank(hist, [[0], [1]])


def test_rank_all_is_rank_for_every_item(trained):
    ds, _, model, _ = trained
    t = Teacher(model, ds.catalog)
    hist = [[3, 4, 5, 6], [20, 21, 22], []]
    table = t.rank_all(hist)
    everything = np.arange(1, N + 1)
    for h, row, ranks in zip(hist, table, t.rank(hist, [everything] * 3)):
        assert row[1:].tolist() == ranks.tolist() and row[0] == N
        legal = [i for i in everything if i not in h]
        assert sorted(row[legal].tolist()) == list(range(len(legal)))   # a permutation of 0..
    assert (t.rank_all(hist, mask_history=False)[0][[3, 4, 5, 6]] < N).all()


def test_full_ranks_matches_teacher_rank(trained):
    ds, _, model, _ = trained
    hist, tgt = ds.split_examples("test")
    a = full_ranks(model, hist, tgt, mask_history=True)
    b = np.array([r[0] for r in Teacher(model).rank([h[-10:] for h in hist], [[x] for x in tgt])])
    assert np.array_equal(a, b)


def test_save_load_roundtrip(trained, tmp_path):
    ds, cfg, model, metrics = trained
    out = save_teacher(tmp_path / "t", model, metrics, cfg, ds)
    assert {"model.safetensors", "config.json", "metrics.json", "card.json"} <= {p.name for p in out.iterdir()}
    t2 = Teacher.load(out, data=ds)
    hist = [[1, 2, 3], [9]]
    assert torch.allclose(Teacher(model).scores(hist), t2.scores(hist))
    with pytest.raises(DataError, match="not a teacher directory"):
        Teacher.load(tmp_path)


def test_catalog_size_mismatch_is_clear(trained):
    _, _, model, _ = trained
    with pytest.raises(DataError, match="trained on 30 items"):
        Teacher(model, RecDataset.from_sequences([[1, 2, 3]], n_items=5).catalog)


def test_category_filter_needs_catalog(trained):
    _, _, model, _ = trained
    with pytest.raises(DataError, match="catalog"):
        Teacher(model).topk([[1]], k=3, include="even")


def test_padding_does_not_change_scores():
    torch.manual_seed(0)
    m = SASRec(SASRecConfig(n_items=20, hidden=16, inner=32, max_len=8, dropout=0.0)).eval()
    with torch.no_grad():
        short = m.item_logits(m(left_pad([[1, 2, 3]], 8))[:, -1])
        batched = m.item_logits(m(left_pad([[1, 2, 3], [4, 5, 6, 7, 8, 9, 10, 11, 12]], 8))[:, -1])
    assert torch.allclose(short[0], batched[0], atol=1e-5)


def test_bce_loss_option_trains():
    ds = cyclic_dataset(60)
    cfg = TeacherTrainConfig(hidden=32, inner=64, max_len=10, epochs=3, patience=3, loss="bce", batch_size=32)
    _, metrics = train_teacher(ds, cfg, log=lambda s: None)
    h = metrics["history"]
    assert h[-1]["loss"] < h[0]["loss"]
    with pytest.raises(ValueError, match="loss"):
        TeacherTrainConfig(loss="bpr")


def test_popularity_ranks():
    ds = RecDataset.from_sequences([[1, 2, 3, 4], [1, 2, 5, 1], [2, 1, 3, 2]], n_items=5)
    # training parts: [1,2], [1,2], [2,1] -> item 1 and 2 tie (3 each), ties broken by index
    r = popularity_ranks(ds, "test", mask_history=False)
    assert r.tolist() == [3, 0, 1]  # targets 4, 1, 2


def test_teacher_beats_popularity_on_ml100k(ml100k_dir):
    """A few epochs on the real data already clear the popularity baseline."""
    ds = RecDataset.load(ml100k_dir)
    cfg = TeacherTrainConfig(epochs=3, patience=3, batch_size=256, lr=2e-3)
    _, metrics = train_teacher(ds, cfg, log=lambda s: None)
    ours, pop = metrics["test"]["masked"], metrics["popularity_test"]["masked"]
    assert ours["NDCG@10"] > pop["NDCG@10"] and ours["HR@10"] > pop["HR@10"]


def test_every_target_trained_exactly_once_per_epoch():
    from recalign.teacher.train import _batch, _windows

    rng = np.random.default_rng(0)
    seqs = [np.arange(1, n + 1) for n in (1, 2, 5, 11, 12, 40, 137)]
    for _ in range(5):                                   # several epochs: random boundaries
        wins = _windows(seqs, max_len=10, rng=rng)
        _, y = _batch(wins, max_len=10)
        got = sorted(int(t) for t in y[y > 0])
        want = sorted(t for s in seqs for t in s[1:].tolist())
        assert got == want


def test_a_teacher_refuses_other_data_with_the_same_item_count(tmp_path):
    ds = cyclic_dataset(40, seed=0)
    other = cyclic_dataset(40, seed=1)                  # same 30 items, other sequences
    cfg = TeacherTrainConfig(hidden=16, inner=32, max_len=10, epochs=1, patience=1)
    model, metrics = train_teacher(ds, cfg, log=lambda s: None)
    out = save_teacher(tmp_path / "t", model, metrics, cfg, ds)
    assert Teacher.load(out, data=ds).n_items == N
    with pytest.raises(DataError, match="trained on other data"):
        Teacher.load(out, data=other)


def test_zero_epochs_is_refused():
    with pytest.raises(ValueError, match="untrained teacher"):
        TeacherTrainConfig(epochs=0)
