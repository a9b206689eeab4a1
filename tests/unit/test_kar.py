"""KAR-style knowledge-augmented reranker (REFERENCE.md §2): metrics, lists, model."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from recalign.data import RecDataset
from recalign.rerank.config import KARConfig
from recalign.rerank.kar import (KARReranker, KnowledgeAdapter, RerankLists, build_rerank_lists,
                                  score_lists, train_reranker)
from recalign.rerank.metrics import rerank_metrics

L2 = math.log2

# ----------------------------------------------------------------------------- metrics
# (scores, labels, ks, expected) for ONE list; computed by hand.
METRIC_CASES = [
    # perfect order: everything 1
    ([3, 2, 1, 0], [1, 1, 0, 0], (1, 2, 4),
     {"NDCG@1": 1, "MAP@1": 1, "NDCG@2": 1, "MAP@2": 1, "NDCG@4": 1, "MAP@4": 1}),
    # ranked labels [0, 1, 1]: DCG@3 = 1/log2(3) + 1/log2(4), IDCG@3 = 1 + 1/log2(3);
    # AP@2 = (P@2 = 1/2) / min(2, 2); AP@3 = (1/2 + 2/3) / 2
    ([0.9, 0.1, 0.5], [0, 1, 1], (1, 2, 3),
     {"NDCG@1": 0, "MAP@1": 0,
      "NDCG@2": (1 / L2(3)) / (1 + 1 / L2(3)), "MAP@2": 0.25,
      "NDCG@3": (1 / L2(3) + 0.5) / (1 + 1 / L2(3)), "MAP@3": (0.5 + 2 / 3) / 2}),
    # more positives than k: ranked [1, 1, 0, 1]; AP@3 = (1 + 1) / min(3, 3)
    ([4, 3, 0, 2], [1, 1, 1, 0], (1, 3),
     {"NDCG@1": 1, "MAP@1": 1, "NDCG@3": (1 + 1 / L2(3)) / (1 + 1 / L2(3) + 0.5), "MAP@3": 2 / 3}),
    # graded labels: ranked [1, 0, 2]; gains 2^rel - 1 = [1, 0, 3]; ideal [3, 1, 0];
    # AP counts rel > 0 as a hit: (P@1 + P@3) / min(3, 2)
    ([0, 1, 2], [2, 0, 1], (3,),
     {"NDCG@3": (1 + 3 / L2(4)) / (3 + 1 / L2(3)), "MAP@3": (1 + 2 / 3) / 2}),
    # k beyond the list: the whole list, AP divided by #positives = 1
    ([1, 2, 3], [0, 1, 0], (7,), {"NDCG@7": 1 / L2(3), "MAP@7": 0.5}),
    # ties keep list order (the first position wins): ranked [0, 1]
    ([5, 5], [0, 1], (1, 2), {"NDCG@1": 0, "MAP@1": 0, "NDCG@2": 1 / L2(3), "MAP@2": 0.5}),
    # no positive: 0, not NaN
    ([3, 2, 1], [0, 0, 0], (1, 3), {"NDCG@1": 0, "MAP@1": 0, "NDCG@3": 0, "MAP@3": 0}),
]


@pytest.mark.parametrize("scores, labels, ks, expected", METRIC_CASES)
def test_rerank_metrics_table(scores, labels, ks, expected):
    got = rerank_metrics([scores], [labels], ks=ks)
    assert set(got) == set(expected)
    for k, v in expected.items():
        assert got[k] == pytest.approx(v, abs=1e-12), k


def test_rerank_metrics_lists_without_positives_count_as_zero_and_per_list_aligns():
    scores = [[3, 2, 1, 0], [3, 2, 1, 0], [0, 1, 2, 3]]
    labels = [[1, 1, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0]]       # perfect, no positive, worst
    per = rerank_metrics(scores, labels, ks=(1, 4), per_list=True)
    assert per["NDCG@1"].tolist() == [1, 0, 0]
    np.testing.assert_allclose(per["NDCG@4"], [1, 0, 1 / L2(5)])
    np.testing.assert_allclose(per["MAP@4"], [1, 0, 0.25])
    mean = rerank_metrics(scores, labels, ks=(1, 4))
    assert mean["NDCG@4"] == pytest.approx((1 + 0 + 1 / L2(5)) / 3)   # the empty list is counted
    assert mean["MAP@4"] == pytest.approx((1 + 0 + 0.25) / 3)
    assert rerank_metrics(np.zeros((0, 4)), np.zeros((0, 4)), ks=(5,)) == {"NDCG@5": 0.0, "MAP@5": 0.0}
    with pytest.raises(ValueError):
        rerank_metrics([[1, 2]], [[1, 0, 0]])


# ----------------------------------------------------------------------------- lists
@pytest.fixture(scope="module")
def ml(ml100k_dir):
    ds = RecDataset.load(ml100k_dir)
    return ds, build_rerank_lists(ds, seed=3)


def test_lists_match_one_users_sequence_by_hand(ml):
    ds, (train, valid, test, info) = ml
    u = int(np.argmax([len(s) for s in ds.sequences]))     # long enough for 4 train windows
    s, r = ds.sequences[u], ds.ratings[u]
    n = len(s)
    rating = dict(zip(s.tolist(), r.tolist()))
    windows = {"test": [s[n - 5:]], "valid": [s[n - 10:n - 5]],
               "train": [s[n - 15:n - 10], s[n - 20:n - 15], s[n - 25:n - 20], s[n - 30:n - 25]]}
    firsts = []
    for name, lists in (("train", train), ("valid", valid), ("test", test)):
        rows = np.flatnonzero(lists.users == u)
        assert len(rows) == len(windows[name])
        for row, window in zip(rows, windows[name]):        # train: most recent window first
            items, labels = lists.items[row], lists.labels[row]
            assert items.shape == (10,) and len(set(items.tolist())) == 10
            pos = [i for i in items if i in set(window.tolist())]
            assert sorted(pos) == sorted(window.tolist())
            negs = [i for i in items if i not in set(window.tolist())]
            assert len(negs) == 5 and not set(negs) & set(s.tolist())          # never interacted
            assert all(1 <= i <= ds.n_items for i in negs)
            for i, lab in zip(items.tolist(), labels.tolist()):
                assert lab == (float(rating[i] >= 4) if i in rating else 0.0)
            firsts.append(tuple(np.flatnonzero(np.isin(items, window))))
    assert len(set(firsts)) > 1, "lists are shuffled: the positives do not always sit in the same slots"
    assert info["knowledge_cut"][u] == n - 10


def test_lists_on_all_of_ml100k(ml):
    ds, (train, valid, test, info) = ml
    assert info["skipped_users"] == 0 and len(valid) == len(test) == ds.n_users == info["n_users"]
    assert np.bincount(train.users, minlength=ds.n_users).max() == 4
    for lists in (train, valid, test):
        assert lists.items.shape[1] == 10 and lists.n_items == ds.n_items
        assert set(np.unique(lists.labels).tolist()) <= {0.0, 1.0}
        assert lists.labels.sum(1).max() <= 5
    # no valid or test item is inside the knowledge cut (what a prompt may show)
    for lists in (valid, test):
        for u, items, labels in zip(lists.users, lists.items, lists.labels):
            shown = set(ds.sequences[u][:info["knowledge_cut"][u]].tolist())
            window = set(ds.sequences[u][info["knowledge_cut"][u]:].tolist())
            assert not (set(items.tolist()) & window) & shown
    # seeded per user: one user's lists do not depend on who else is built
    u = 17
    t1, v1, s1, _ = build_rerank_lists(ds, users=[u], seed=3)
    np.testing.assert_array_equal(s1.items[0], test.items[test.users == u][0])
    np.testing.assert_array_equal(t1.items, train.items[train.users == u])
    _, _, other, _ = build_rerank_lists(ds, users=[u], seed=4)
    assert not np.array_equal(other.items, s1.items)


def test_too_short_users_are_skipped_and_counted():
    n_items = 30
    seqs = [np.arange(1, 17),          # 16 items: valid + test + one train window
            np.arange(1, 6),           # 5: too few
            np.arange(3, 17),          # 14 < 15: too few
            np.arange(1, 31)]          # every item: no negatives left
    ds = RecDataset.from_sequences(seqs, n_items=n_items)
    ds.ratings = [np.where(np.arange(len(s)) % 2 == 0, 5.0, 2.0).astype(np.float32) for s in seqs]
    train, valid, test, info = build_rerank_lists(ds)
    assert info["skipped_users"] == 3 and set(info["skipped"]) == {1, 2, 3}
    assert train.users.tolist() == valid.users.tolist() == test.users.tolist() == [0]
    assert info["knowledge_cut"] == {0: 6}
    # test window = positions 11..15 (items 12..16); rating 5 at even positions 12, 14 -> items 13, 15
    assert sorted(test.items[0][test.labels[0] == 1].tolist()) == [13, 15]
    assert sorted(valid.items[0][valid.labels[0] == 1].tolist()) == [7, 9, 11]    # positions 6, 8, 10
    train, valid, test, info = build_rerank_lists(ds, min_rated=17)
    assert info["skipped_users"] == 4 and len(train) == len(valid) == len(test) == 0
    assert test.items.shape == (0, 10)
    with pytest.raises(ValueError):
        build_rerank_lists(ds, list_len=5, n_pos=5)


# ----------------------------------------------------------------------------- synthetic task
N_ITEMS, N_CLUSTERS, DIM = 200, 4, 8
CLUSTER = np.arange(N_ITEMS) % N_CLUSTERS              # item i (1-based) is in CLUSTER[i - 1]


def synthetic_lists(n_users: int, seed: int, user0: int = 0, lists_per_user: int = 1, noise: float = 0.3):
    """Each user prefers one cluster; a list holds 2 items of every cluster (so without
    knowing the user nothing tells the positives apart); label = item in the user's
    cluster; user vector = noisy one-hot of the preferred cluster (fresh noise per list)."""
    rng = np.random.default_rng(seed)
    members = [np.flatnonzero(CLUSTER == c) + 1 for c in range(N_CLUSTERS)]
    users, items, labels, vecs = [], [], [], []
    for u in range(n_users):
        pref = rng.integers(N_CLUSTERS)
        for _ in range(lists_per_user):
            its = rng.permutation(np.concatenate([rng.choice(m, 2, replace=False) for m in members]))
            users.append(user0 + u)
            items.append(its)
            labels.append((CLUSTER[its - 1] == pref).astype(np.float32))
            v = rng.normal(0, noise, DIM)
            v[pref] += 1
            vecs.append(v)
    return RerankLists(np.array(users), np.array(items), np.array(labels), N_ITEMS), np.array(vecs, np.float32)


def synthetic_item_vecs(noise: float = 0.3, seed: int = 99) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = rng.normal(0, noise, (N_ITEMS + 1, DIM)).astype(np.float32)
    v[np.arange(1, N_ITEMS + 1), CLUSTER] += 1
    v[0] = 0
    return v


@pytest.fixture(scope="module")
def synth():
    train, tu = synthetic_lists(300, 1, lists_per_user=2)
    valid, vu = synthetic_lists(60, 2, user0=1000)
    test, su = synthetic_lists(200, 3, user0=2000)          # held-out users
    return train, tu, valid, vu, test, su, synthetic_item_vecs()


def small_cfg(backbone: str, **kw) -> KARConfig:
    return KARConfig(**{**dict(backbone=backbone, emb_dim=16, hidden=32, expert_hidden=32, expert_out=8,
                               batch_size=16, lr=3e-3, epochs=15, patience=6, seed=0), **kw})


@pytest.mark.parametrize("backbone", ["dlcm", "prm"])
def test_knowledge_beats_random_and_id_only_on_held_out_users(synth, backbone):
    train, tu, valid, vu, test, su, iv = synth
    rand = rerank_metrics(np.random.default_rng(0).random(test.items.shape), test.labels)["NDCG@5"]
    know, hist = train_reranker(train, valid, small_cfg(backbone), (tu, vu), iv)
    with_k = rerank_metrics(score_lists(know, test, su, iv), test.labels)["NDCG@5"]
    plain, _ = train_reranker(train, valid, small_cfg(backbone))
    id_only = rerank_metrics(score_lists(plain, test), test.labels)["NDCG@5"]
    assert with_k > rand + 0.2, (with_k, rand)
    assert with_k > id_only + 0.2, (with_k, id_only)
    assert id_only < rand + 0.1                          # by construction ids alone cannot tell
    assert hist["best_valid"]["NDCG@5"] == max(r["valid_NDCG@5"] for r in hist["epochs"])


def test_adapter_gates_are_softmax_and_towers_differ():
    torch.manual_seed(0)
    ad = KnowledgeAdapter(DIM, n_shared=2, n_tower=3, hidden=16, out=4)
    x = torch.randn(5, 7, DIM)
    for tower in ("user", "item"):
        g = ad.gate(x, tower)
        assert g.shape == (5, 7, 5) and (g >= 0).all()
        torch.testing.assert_close(g.sum(-1), torch.ones(5, 7))
        assert ad(x, tower).shape == (5, 7, 4)
    assert not torch.allclose(ad(x, "user"), ad(x, "item"))
    # the output is the gate-weighted sum of (shared, then the tower's own) experts
    experts = [*ad.shared, *ad.towers["item"]]
    manual = sum(ad.gate(x, "item")[..., i:i + 1] * e(x) for i, e in enumerate(experts))
    torch.testing.assert_close(ad(x, "item"), manual)


@pytest.mark.parametrize("backbone", ["dlcm", "prm"])
def test_scoring_is_deterministic_and_per_list(synth, backbone):
    train, tu, valid, vu, test, su, iv = synth
    cfg = small_cfg(backbone, epochs=2)
    model, hist = train_reranker(train, valid, cfg, (tu, vu), iv)
    a = score_lists(model, test, su, iv, batch_size=64)
    b = score_lists(model, test, su, iv, batch_size=64)
    assert a.shape == test.items.shape and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(score_lists(model, test, su, iv, batch_size=7), a, rtol=0, atol=1e-5)
    su2 = su.copy()
    su2[10] = -su2[10] + 1.0                                   # only list 10's user text changes
    c = score_lists(model, test, su2, iv, batch_size=64)
    assert np.abs(c[10] - a[10]).max() > 1e-4
    np.testing.assert_array_equal(np.delete(c, 10, axis=0), np.delete(a, 10, axis=0))
    # training is seeded: the same run again gives the same model; one concatenated
    # user_vecs array is the same as the (train, valid) pair
    # user_vecs (and the same given as valid_user_vecs=) is the same as the (train, valid) pair
    for kw in (dict(user_vecs=np.concatenate([tu, vu])), dict(user_vecs=tu, valid_user_vecs=vu)):
        again, hist2 = train_reranker(train, valid, cfg, item_vecs=iv, **kw)
        np.testing.assert_array_equal(score_lists(again, test, su, iv, batch_size=64), a)
        assert [r["loss"] for r in hist["epochs"]] == [r["loss"] for r in hist2["epochs"]]


def test_knowledge_inputs_are_checked(synth):
    train, tu, valid, vu, test, su, iv = synth
    with pytest.raises(ValueError, match="both"):
        train_reranker(train, valid, small_cfg("dlcm", epochs=1), (tu, vu), None)
    with pytest.raises(ValueError, match="rows"):
        train_reranker(train, valid, small_cfg("dlcm", epochs=1), tu, iv)
    model = KARReranker(N_ITEMS, small_cfg("prm"), knowledge_dim=DIM)
    with pytest.raises(ValueError):
        score_lists(model, test)                                # knowledge model without vectors
    with pytest.raises(ValueError, match="one vector per list"):
        score_lists(model, test, su[:5], iv)
    with pytest.raises(ValueError):
        KARConfig(backbone="lstm")
    plain, hist = train_reranker(train, None, small_cfg("dlcm", epochs=2, loss="bce"))
    assert hist["best_epoch"] == 2 and len(hist["epochs"]) == 2 and not plain.training
    # lists that lost n_items (built by hand): ids above the trained table score as unknown
    small = RerankLists(train.users[:50], np.minimum(train.items[:50], 150), train.labels[:50])
    model, _ = train_reranker(small, None, small_cfg("prm", epochs=1))
    assert model.n_items == 150
    assert np.isfinite(score_lists(model, test)).all()
    with pytest.raises(ValueError):
        score_lists(model, RerankLists(test.users, test.items - 1, test.labels))      # id 0 is padding


def test_ml100k_end_to_end_with_knowledge_vectors(ml):
    """The loop's path: lists from ml-100k, one user vector per list, item vectors by index."""
    ds, _ = ml
    train, valid, test, info = build_rerank_lists(ds, users=range(120), max_train_lists=2)
    rng = np.random.default_rng(0)
    item_vecs = rng.normal(size=(ds.n_items + 1, DIM)).astype(np.float32)
    per_user = rng.normal(size=(ds.n_users, DIM)).astype(np.float32)
    model, hist = train_reranker(train, valid, small_cfg("dlcm", epochs=2),
                                 (per_user[train.users], per_user[valid.users]), item_vecs)
    scores = score_lists(model, test, per_user[test.users], item_vecs)
    per = rerank_metrics(scores, test.labels, per_list=True)
    assert set(per) == {f"{m}@{k}" for m in ("NDCG", "MAP") for k in (1, 3, 5, 7)}
    assert all(v.shape == (len(test),) and ((0 <= v) & (v <= 1)).all() for v in per.values())
    assert {"epoch", "loss", "valid_NDCG@5", "valid_MAP@7"} <= set(hist["epochs"][0])
