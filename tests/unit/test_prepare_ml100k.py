"""The default dataset, end to end, checked against RecBole's own split."""
import json

import numpy as np
import pandas as pd

from recalign.data import RecDataset
from recalign.data.prepare import PrepareOptions, prepare_dataset, unique_titles


def test_counts_and_card(ml100k_dir):
    card = json.loads((ml100k_dir / "card.json").read_text())
    c = card["counts"]
    assert (c["users"], c["items"], c["interactions"]) == (943, 1682, 100000)
    assert c["min_sequence"] == 20
    assert card["stage"] == "data.prepare" and card["config"]["dataset"] == "ml-100k"
    assert all(len(h) == 64 for h in card["inputs"].values()) and len(card["inputs"]) == 3
    assert "tie_break" in card


def test_titles_unique_and_categories_ordered(ml100k_dir):
    ds = RecDataset.load(ml100k_dir)
    titles = ds.items["title"].str.casefold()
    assert titles.is_unique
    # "Chasing Amy" appears twice in ml-100k with the same year: the id disambiguates
    assert ds.items["title"].str.startswith("Chasing Amy").sum() == 2
    toy = ds.items[ds.items.title == "Toy Story"].iloc[0]
    # flat genres, most frequent first: Comedy (505) > Children's (122) > Animation (42)
    assert list(toy.categories) == ["Comedy", "Children's", "Animation"]
    assert toy.category == "Animation"
    assert "unknown" not in ds.catalog.categories
    assert len(ds.catalog.categories) == 18


def test_time_order_and_deterministic_ties(ml100k_dir, tmp_path):
    inter = pd.read_parquet(ml100k_dir / "interactions.parquet")
    ts = inter.groupby("user_idx")["timestamp"].apply(lambda s: bool(np.all(np.diff(s.to_numpy()) >= 0)))
    assert ts.all()
    again = prepare_dataset(tmp_path / "again", PrepareOptions("ml-100k"))
    a = pd.read_parquet(ml100k_dir / "sequences.parquet")
    b = pd.read_parquet(again / "sequences.parquet")
    assert all(np.array_equal(x, y) for x, y in zip(a["items"], b["items"]))


def test_split_matches_recbole(ml100k_dir, shared_dir):
    """Ties keep file order, as RecBole does; RecBole's float32 timestamps merge a few
    nearby seconds, so at most a handful of users may differ (REFERENCE.md §5)."""
    ds = RecDataset.load(ml100k_dir)
    split = pd.read_csv(shared_dir / "data/ml100k-recbole-split/split_recbole_ml100k_all.tsv", sep="\t")
    raw_to_idx = dict(zip(ds.items.item_id.astype(int), ds.items.item_idx))
    users = ds.users.set_index("user_id")["user_idx"]
    _, test_t = ds.split_examples("test")
    _, valid_t = ds.split_examples("valid")
    u = users.loc[split.user_id.astype(str)].to_numpy()
    test_match = (test_t[u] == split.test_item.map(raw_to_idx).to_numpy()).sum()
    valid_match = (valid_t[u] == split.valid_item.map(raw_to_idx).to_numpy()).sum()
    assert test_match >= 939 and valid_match >= 935


def test_split_shapes(ml100k_dir):
    ds = RecDataset.load(ml100k_dir)
    hist, tgt = ds.split_examples("test")
    vhist, vtgt = ds.split_examples("valid")
    for s, h, t, vh, vt, tr in zip(ds.sequences, hist, tgt, vhist, vtgt, ds.train_sequences()):
        assert t == s[-1] and vt == s[-2] and len(h) == len(s) - 1
        assert np.array_equal(vh, tr) and len(tr) == len(s) - 2


def test_unique_titles_rules():
    assert unique_titles(["A", "a", "B"], ["1990", "1991", None], ["1", "2", "3"]) == ["A (1990)", "a (1991)", "B"]
    assert unique_titles(["A", "A"], [None, None], ["x", "y"]) == ["A [x]", "A [y]"]
    out = unique_titles(["Cape Fear (1991)", "Cape Fear (1991)"], ["1991", "1991"], ["5", "6"])
    assert len(set(out)) == 2


def _raw(paths_per_item, inter_items, titles=None, **kw):
    from recalign.data.loaders import RawData

    n = len(paths_per_item)
    items = pd.DataFrame({"item": [str(i) for i in range(1, n + 1)],
                          "title": titles or [f"T{i}" for i in range(1, n + 1)],
                          "paths": paths_per_item, "year": [None] * n})
    inter = pd.DataFrame({"user": ["u"] * len(inter_items), "item": inter_items,
                          "timestamp": list(range(len(inter_items))), "rating": [5.0] * len(inter_items),
                          "line": list(range(1, len(inter_items) + 1))})
    return RawData(inter, items, None, [], **kw)


def test_deepest_category_last_across_paths():
    from recalign.data.prepare import prepare

    raw = _raw([[["Movies & TV", "Movies", "Drama"], ["Movies & TV", "TV"]], [["Movies & TV", "TV"]]],
               ["1", "2", "1"], drop_top_level=True, require_categories=True)
    res = prepare(raw, PrepareOptions("amazon", dedupe=False))
    first = res["items"].iloc[0]
    assert first.category == "Drama" and list(first.categories)[-1] == "Drama"
    assert set(first.categories) == {"Movies", "TV", "Drama"}


def test_unknown_item_is_an_error_even_after_a_dropped_item():
    import pytest

    from recalign.data import DataError
    from recalign.data.prepare import prepare

    raw = _raw([[["A"]], []], ["1", "2", "ZZZ"], titles=["T1", ""])   # item 2 dropped: no title
    with pytest.raises(DataError, match=r":3: item id 'ZZZ'"):
        prepare(raw, PrepareOptions("generic"))


def test_titles_unique_as_the_catalog_matches_them():
    out = unique_titles(['"Heat"', "Heat"], [None, None], ["1", "2"])
    from recalign.data import normalize_title

    assert len({normalize_title(t) for t in out}) == 2
