"""Loaders + prepare on small fixtures in every supported format (tests/fixtures/*)."""
from __future__ import annotations

import calendar
import gzip
import json
import os
from collections import Counter
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recalign.data import DataError, RecDataset
from recalign.data import prepare as prepare_mod
from recalign.data.loaders import load_raw
from recalign.data.prepare import PrepareOptions, prepare_dataset

FIX = Path(__file__).resolve().parents[1] / "fixtures"


def prep(tmp_path: Path, dataset: str, input_dir=None, name: str = "out", **kw):
    files = {k: kw.pop(k) for k in ("interactions", "items", "users") if k in kw}
    out = prepare_dataset(tmp_path / name, PrepareOptions(dataset=dataset, **kw), input_dir=input_dir, **files)
    return out, RecDataset.load(out)


def seqs(ds: RecDataset) -> list[list[int]]:
    return [s.tolist() for s in ds.sequences]


def by_id(ds: RecDataset) -> dict[str, dict]:
    return {r["item_id"]: r for r in ds.items.to_dict("records")}


def day(s: str) -> int:
    return calendar.timegm(date.fromisoformat(s).timetuple())


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir())


# ----------------------------------------------------------------------------- every format

FORMATS = [
    ("ml-100k", "ml100k_atomic", 3, 9, 11),
    ("ml-100k", "ml100k_grouplens", 3, 7, 11),
    ("ml-1m", "ml1m", 3, 5, 11),
    ("amazon", "amazon2014", 3, 6, 10),
    ("amazon", "amazon2018", 3, 5, 10),
    ("steam", "steam", 3, 7, 9),
    ("generic", "generic", 3, 8, 10),
    ("generic", "generic/jsonl", 2, 4, 6),
]


@pytest.mark.parametrize("dataset,folder,n_users,n_items,n_inter", FORMATS)
def test_every_format_invariants(tmp_path, dataset, folder, n_users, n_items, n_inter):
    out, ds = prep(tmp_path, dataset, FIX / folder)
    assert (ds.n_users, ds.n_items) == (n_users, n_items)
    assert sum(len(s) for s in ds.sequences) == n_inter
    assert ds.card["counts"]["interactions"] == n_inter
    # indices: items 1..N (0 is padding), every user has >= 3 items
    assert ds.items["item_idx"].tolist() == list(range(1, n_items + 1))
    assert all(len(s) >= 3 for s in ds.sequences)
    # titles unique (case-insensitively), cleaned
    titles = ds.items["title"].tolist()
    assert len({t.casefold() for t in titles}) == len(titles)
    assert not any("&amp;" in t or "  " in t or t != t.strip() for t in titles)
    # category = deepest/last of categories
    for cats, cat in zip(ds.items["categories"], ds.items["category"]):
        assert (cat == cats[-1]) if len(cats) else (cat is None or pd.isna(cat))
    # interactions: time order within a user, positions 0..n-1, same as sequences
    inter = pd.read_parquet(out / "interactions.parquet")
    for u, g in inter.groupby("user_idx"):
        assert g["position"].tolist() == list(range(len(g)))
        assert g["timestamp"].is_monotonic_increasing
        assert g.sort_values("position")["item_idx"].tolist() == ds.sequences[u].tolist()
    # leave-one-out split
    hist, target = ds.split_examples("test")
    assert target.tolist() == [s[-1] for s in seqs(ds)]
    assert [h.tolist() for h in hist] == [s[:-1] for s in seqs(ds)]
    vhist, vtarget = ds.split_examples("valid")
    assert vtarget.tolist() == [s[-2] for s in seqs(ds)]
    assert [h.tolist() for h in vhist] == [s[:-2] for s in seqs(ds)]
    assert ds.card["inputs"] and all(len(h) == 64 for h in ds.card["inputs"].values())


@pytest.mark.parametrize("dataset,folder", [(d, f) for d, f, *_ in FORMATS])
def test_two_runs_are_identical(tmp_path, dataset, folder):
    a, da = prep(tmp_path, dataset, FIX / folder, name="a")
    b, db = prep(tmp_path, dataset, FIX / folder, name="b")
    for name in ("sequences", "items", "interactions", "users"):
        assert (a / f"{name}.parquet").read_bytes() == (b / f"{name}.parquet").read_bytes(), name
    assert seqs(da) == seqs(db)
    assert da.fingerprint() == db.fingerprint()


# ----------------------------------------------------------------------------- MovieLens


def test_ml100k_atomic(tmp_path):
    out, ds = prep(tmp_path, "ml-100k", FIX / "ml100k_atomic")
    # user 1: items 3 and 1 share a timestamp -> file order (3 before 1); user 2 re-rated item 2 (first kept);
    # user 4 has only 2 items -> dropped
    assert ds.users["user_id"].tolist() == ["1", "2", "3"]
    assert seqs(ds) == [[3, 1, 4, 7], [2, 5, 8, 9], [6, 1, 2]]
    assert ds.card["counts"]["duplicate_interactions_dropped"] == 1
    items = by_id(ds)
    assert items["5"]["title"] == "Deceiver (1997) [5]" and items["6"]["title"] == "Deceiver (1997) [6]"
    assert items["7"]["title"] == "Hamlet (1996)" and items["8"]["title"] == "Hamlet (1948)"
    assert items["9"]["title"] == "Heat" and list(items["9"]["categories"]) == []  # 'unknown' genre dropped
    # flat genres: most frequent first, rarest (most specific) last, ties by name
    assert list(items["1"]["categories"]) == ["Comedy", "Animation", "Children's"]
    assert list(items["4"]["categories"]) == ["Drama", "Action", "Comedy"]
    assert items["2"]["category"] == "Adventure"
    assert ds.users["occupation"].tolist() == ["technician", "other", "writer"]
    hist, target = ds.split_examples("test")
    assert target.tolist() == [7, 9, 2] and hist[0].tolist() == [3, 1, 4]
    assert ds.ratings[1].tolist() == [3.0, 1.0, 4.0, 2.0]


def test_ml100k_grouplens(tmp_path):
    _, ds = prep(tmp_path, "ml-100k", FIX / "ml100k_grouplens")
    assert ds.items["item_id"].tolist() == ["1", "2", "3", "267", "309", "1010", "1606"]  # numeric order
    assert ds.users["user_id"].tolist() == ["22", "186", "196"]
    # user 196: items 309 and 1 tie at 881250949 -> file order
    assert seqs(ds) == [[7, 2, 3, 1], [1, 7, 4], [5, 1, 6, 2]]
    items = by_id(ds)
    assert items["1010"]["title"] == "Café au Lait (1994)"            # latin-1 decoded
    assert items["309"]["title"] == "Deceiver (1997) [309]"           # year already in the title
    assert items["1606"]["title"] == "Deceiver (1997) [1606]"
    assert items["267"]["title"] == "unknown" and list(items["267"]["categories"]) == []
    assert list(items["1"]["categories"]) == ["Comedy", "Animation", "Children's"]
    assert items["1010"]["year"] == "1994"
    assert ds.users["age"].tolist() == ["25", "39", "49"]
    assert ds.split_examples("test")[1].tolist() == [1, 4, 2]


def test_ml1m(tmp_path):
    _, ds = prep(tmp_path, "ml-1m", FIX / "ml1m")
    assert ds.items["item_id"].tolist() == ["1", "2", "3", "73", "1389"]
    items = by_id(ds)
    assert items["73"]["title"] == "Misérables, Les (1995)"
    assert items["1389"]["year"] == "1983"
    assert seqs(ds) == [[1, 4, 2, 3], [5, 1, 3, 4], [2, 1, 5]]   # user 1: items 1 and 73 tie -> file order
    assert ds.users["gender"].tolist() == ["F", "M", "M"]
    assert ds.card["categories"].startswith("flat tags")


def test_min_rating(tmp_path):
    _, ds = prep(tmp_path, "ml-1m", FIX / "ml1m", min_rating=3.0)
    # ratings >= 3 only: user 2 keeps 2 items and is dropped
    assert ds.users["user_id"].tolist() == ["1", "3"]
    assert seqs(ds) == [[1, 4, 3], [2, 1, 5]]
    assert all((r >= 3).all() for r in ds.ratings)


def test_min_rating_without_ratings_is_an_error(tmp_path):
    with pytest.raises(DataError, match="has no ratings"):
        prep(tmp_path, "steam", FIX / "steam", min_rating=1.0)


# ----------------------------------------------------------------------------- Amazon


def test_amazon_2014(tmp_path):
    _, ds = prep(tmp_path, "amazon", FIX / "amazon2014")
    assert ds.users["user_id"].tolist() == ["A1ZZZZZZZZZZZZ", "A3R5OBKS7OM2IR", "AH3QC2PC1VTGP"]
    # A2M1CU2IRZG0K9 falls to 2 items once the top-level-only item is removed -> dropped
    assert "A2M1CU2IRZG0K9" not in set(ds.users["user_id"])
    items = by_id(ds)
    assert "B00005JKZY" not in items          # no title
    assert "B0000AQS0F" not in items          # only the top-level category
    assert items["B00000F1HY"]["title"] == "Pride & Prejudice"
    assert items["B00004CZ8P"]["title"] == "Hamlet [B00004CZ8P]"
    assert items["B00004CZ8Q"]["title"] == "Hamlet [B00004CZ8Q]"
    assert items["B000FOPQKA"]["title"] == "The King's Speech"
    assert items["B00AAAAAAA"]["title"] == "Doctor Who: Series 1"
    # every prefix of the path, top level dropped, deepest last
    assert list(items["0005019281"]["categories"]) == ["Movies", "Holidays & Seasonal", "Christmas"]
    assert items["0005019281"]["category"] == "Christmas"
    assert list(items["B000FOPQKA"]["categories"]) == ["Movies", "Drama", "Historical"]
    two_paths = list(items["B00000F1HY"]["categories"])
    assert set(two_paths) == {"Movies", "Drama", "TV"} and two_paths.index("Movies") < two_paths.index("Drama")
    assert not any("Movies & TV" in c for c in ds.items["categories"])
    # A3R5...: M3 and M7 tie at +1200 -> file order; the title-less item is gone
    assert seqs(ds) == [[6, 4, 1], [1, 2, 3, 5], [2, 4, 5]]
    assert ds.ratings[1].tolist() == [5.0, 4.0, 5.0, 3.0]
    counts = ds.card["counts"]
    assert counts["items_without_title"] == 1 and counts["items_without_category"] == 1


def test_amazon_2018(tmp_path):
    _, ds = prep(tmp_path, "amazon", FIX / "amazon2018")
    items = by_id(ds)
    assert list(items) == ["0001527665", "0005089549", "0005092663", "B00000F1HX", "B00003CXCT"]
    assert items["0001527665"]["title"] == "Tom & Jerry: The Movie"
    assert list(items["0001527665"]["categories"]) == ["Movies", "Kids & Family"]
    assert items["B00003CXCT"]["title"] == "Pulp Fiction"   # repeated meta record ignored
    assert list(items["B00003CXCT"]["categories"]) == ["Movies", "Action & Adventure"]
    assert items["0005092663"]["title"] == "Hamlet (1996)" and items["B00000F1HX"]["title"] == "Hamlet (2000)"
    assert list(items["0005089549"]["categories"]) == ["TV"]
    # A1JV...: N2 and N1 tie at 1352419200, N2 comes first in the file
    assert ds.users["user_id"].tolist() == ["A1JVQTAGHYOL7F", "A2M1CU2IRZG0K9", "AZ0KH1O9GJ1OU"]
    assert seqs(ds) == [[2, 1, 3, 5], [3, 4, 5], [5, 1, 4]]
    assert any("repeated item record" in n for n in ds.card["notes"])


def test_amazon_explicit_files(tmp_path):
    d = FIX / "amazon2018"
    _, ds = prep(tmp_path, "amazon", interactions=d / "Movies_and_TV_5.json",
                 items=d / "meta_Movies_and_TV.json.gz")
    assert seqs(ds) == [[2, 1, 3, 5], [3, 4, 5], [5, 1, 4]]


def test_amazon_ambiguous_reviews(tmp_path):
    d = tmp_path / "amz"
    for f in (FIX / "amazon2018").iterdir():
        write(d / f.name, f.read_bytes())
    write(d / "Books_5.json", (FIX / "amazon2018" / "Movies_and_TV_5.json").read_bytes())
    with pytest.raises(DataError) as e:
        load_raw("amazon", d)
    msg = str(e.value)
    assert "Books_5.json" in msg and "Movies_and_TV_5.json" in msg and "--interactions" in msg


@pytest.mark.parametrize("bad,field", [
    ({"unixReviewTime": "soon"}, "unixReviewTime"),
    ({"unixReviewTime": None}, "unixReviewTime"),
    ({"reviewerID": None}, "reviewerID"),
    ({"asin": ""}, "asin"),
])
def test_amazon_bad_review(tmp_path, bad, field):
    d = tmp_path / "amz"
    lines = (FIX / "amazon2018" / "Movies_and_TV_5.json").read_text().splitlines()
    rec = json.loads(lines[2])
    rec.update(bad)
    rec = {k: v for k, v in rec.items() if v is not None}
    lines[2] = json.dumps(rec)
    write(d / "Movies_and_TV_5.json", "\n".join(lines) + "\n")
    write(d / "meta_Movies_and_TV.json.gz", (FIX / "amazon2018" / "meta_Movies_and_TV.json.gz").read_bytes())
    with pytest.raises(DataError, match=rf"Movies_and_TV_5\.json:3: field '{field}'"):
        load_raw("amazon", d)


# ----------------------------------------------------------------------------- Steam


def test_steam(tmp_path):
    out, ds = prep(tmp_path, "steam", FIX / "steam")
    # user_id wins over username; 'Ariman1' without user_id is another user (2 items -> dropped)
    assert ds.users["user_id"].tolist() == ["76561198007483075", "Chaos Syren", "hello"]
    assert ds.items["item_id"].tolist() == ["91310", "383150", "643980", "670290", "761140", "767400", "772540"]
    # Chaos Syren: 761140 and 643980 on the same day -> file order; 282010 (no genres/tags) dropped
    assert seqs(ds) == [[1, 6, 2], [5, 3, 4], [7, 4, 5]]
    inter = pd.read_parquet(out / "interactions.parquet")
    assert inter[inter.user_idx == 1]["timestamp"].tolist() == [day("2017-12-17")] * 2 + [day("2018-01-05")]
    assert inter["rating"].isna().all()
    items = by_id(ds)
    assert "282010" not in items
    assert items["91310"]["title"] == "Dead Island (2011)" and items["383150"]["title"] == "Dead Island (2016)"
    assert items["643980"]["title"] == "Ironbound"                       # repeated record ignored
    assert items["767400"]["title"] == "弹炸人2222"
    assert list(items["767400"]["categories"]) == ["Action", "Casual", "Adventure"]   # from tags
    assert list(items["761140"]["categories"]) == ["Action", "Casual", "Indie", "Simulation", "Strategy"]
    assert list(items["670290"]["categories"]) == ["Casual", "Indie", "Simulation", "Free to Play", "Sports"]
    # rarest last: frequency never increases along an item's list
    freq = Counter(c for cats in ds.items["categories"] for c in cats)
    for cats in ds.items["categories"]:
        assert [freq[c] for c in cats] == sorted((freq[c] for c in cats), reverse=True)
    assert any("without an 'id'" in n for n in ds.card["notes"])


def test_steam_bad_date(tmp_path):
    d = tmp_path / "steam"
    lines = (FIX / "steam" / "steam_reviews.json").read_text().splitlines()
    lines[3] = lines[3].replace("'2018-01-05'", "'Posted January 5.'")
    write(d / "steam_reviews.json", "\n".join(lines) + "\n")
    write(d / "steam_games.json.gz", (FIX / "steam" / "steam_games.json.gz").read_bytes())
    with pytest.raises(DataError, match=r"steam_reviews\.json:4: field 'date'"):
        load_raw("steam", d)


# ----------------------------------------------------------------------------- generic


def test_generic_csv(tmp_path):
    out, ds = prep(tmp_path, "generic", FIX / "generic")
    assert ds.users["user_id"].tolist() == ["alice", "bob", "carol"]     # dave has 2 items
    # alice: b3 and b6 both at 1609632000 -> file order; ISO dates and unix seconds mix
    assert seqs(ds) == [[1, 2, 3, 6], [4, 5, 1], [7, 2, 8]]
    inter = pd.read_parquet(out / "interactions.parquet")
    assert inter[inter.user_idx == 0]["timestamp"].tolist() == [day("2021-01-01"), day("2021-01-02"),
                                                                 1609632000, 1609632000]
    assert inter[inter.user_idx == 2]["timestamp"].tolist()[0] == day("2021-02-01")
    assert np.isnan(ds.ratings[1][1]) and ds.ratings[1][2] == pytest.approx(3.5)
    items = by_id(ds)
    assert items["b3"]["title"] == "Hamlet (1603) [b3]" and items["b4"]["title"] == "Hamlet (1603) [b4]"
    assert items["b5"]["title"] == "Salt, Fat, Acid, Heat"
    assert items["b6"]["title"] == "Pride & Prejudice"
    assert list(items["b1"]["categories"]) == ["Books", "Fiction", "Fantasy"]    # '|' path
    assert items["b1"]["category"] == "Fantasy"
    assert list(items["b5"]["categories"]) == ["Cooking", "Food"]                # JSON list in CSV
    assert set(items["b6"]["categories"]) == {"Books", "Fiction", "Romance", "Classics"}  # list of paths
    assert list(items["b8"]["categories"]) == []
    assert ds.card["categories"].startswith("every prefix")


def test_generic_jsonl_flat_tags(tmp_path):
    out, ds = prep(tmp_path, "generic", FIX / "generic" / "jsonl")
    assert ds.card["categories"].startswith("flat tags")
    items = by_id(ds)
    # Jazz is on 3 items, Hard Bop on 2, Bebop/Modal on 1: rarest last
    assert list(items["m3"]["categories"]) == ["Jazz", "Hard Bop", "Bebop"]
    assert list(items["m1"]["categories"]) == ["Jazz", "Modal"]
    assert items["m3"]["category"] == "Bebop"
    # u1: m1 and m3 tie (1700000300) -> file order; u2: ISO m3 == 1700000000 ties with m1 -> file order
    assert seqs(ds) == [[2, 1, 3], [3, 1, 4]]
    assert np.isnan(ds.ratings[1][0]) and np.isnan(ds.ratings[1][2])


def test_generic_tie_break_is_file_order(tmp_path):
    items = "item,title\nz,Zed\na,Ay\nm,Em\n"
    write(tmp_path / "one/items.csv", items)
    write(tmp_path / "one/interactions.csv", "user,item,timestamp\nu,m,5\nu,z,9\nu,a,9\n")
    write(tmp_path / "two/items.csv", items)
    write(tmp_path / "two/interactions.csv", "user,item,timestamp\nu,m,5\nu,a,9\nu,z,9\n")
    _, one = prep(tmp_path, "generic", tmp_path / "one", name="o1")
    _, two = prep(tmp_path, "generic", tmp_path / "two", name="o2")
    ids = one.items["item_id"].tolist()
    assert [ids[i - 1] for i in one.sequences[0]] == ["m", "z", "a"]
    assert [ids[i - 1] for i in two.sequences[0]] == ["m", "a", "z"]


def test_generic_gzip_and_tsv(tmp_path):
    d = tmp_path / "g"
    write(d / "interactions.tsv.gz", gzip.compress(b"user_id\titem_id\ttime\nu\ta\t1\nu\tb\t2\nu\tc\t3\n"))
    write(d / "items.jsonl", '{"item": "a", "title": "A"}\n{"item": "b", "title": "B"}\n'
                             '{"item": "c", "title": "C", "categories": "X|Y"}\n')
    _, ds = prep(tmp_path, "generic", d)
    assert seqs(ds) == [[1, 2, 3]]
    assert list(by_id(ds)["c"]["categories"]) == ["X", "Y"]


def test_k_core_is_iterative(tmp_path):
    d = tmp_path / "kc"
    rows = [("u1", "a"), ("u1", "b"), ("u1", "c"), ("u2", "a"), ("u2", "b"), ("u2", "c"),
            ("u3", "a"), ("u3", "d"), ("u3", "x"), ("u4", "d"), ("u4", "b"), ("u4", "c")]
    write(d / "interactions.csv", "user,item,timestamp\n" + "".join(f"{u},{i},{n}\n" for n, (u, i) in enumerate(rows)))
    write(d / "items.csv", "item,title\n" + "".join(f"{i},Title {i}\n" for i in "abcdx"))
    # x has 1 user -> gone; u3 drops to 2 -> gone; d then has 1 user -> gone; u4 drops to 2 -> gone
    _, ds = prep(tmp_path, "generic", d, user_core=3, item_core=2)
    assert ds.users["user_id"].tolist() == ["u1", "u2"]
    assert ds.items["item_id"].tolist() == ["a", "b", "c"]
    assert seqs(ds) == [[1, 2, 3], [1, 2, 3]]
    # without the item core everyone with 3 items stays
    _, ds = prep(tmp_path, "generic", d, name="no_core")
    assert ds.n_users == 4 and ds.n_items == 5


# ----------------------------------------------------------------------------- bad input


def generic_dir(tmp_path: Path, inter: str | bytes, items: str | bytes = "item,title\na,A\nb,B\nc,C\n",
                inter_name: str = "interactions.csv", items_name: str = "items.csv") -> Path:
    d = tmp_path / "in"
    write(d / inter_name, inter)
    write(d / items_name, items)
    return d


def test_wrong_delimiter_generic(tmp_path):
    d = generic_dir(tmp_path, "user;item;timestamp\nu;a;1\nu;b;2\nu;c;3\n")
    with pytest.raises(DataError) as e:
        load_raw("generic", d)
    msg = str(e.value)
    assert "interactions.csv:1" in msg and "semicolon" in msg


def test_wrong_delimiter_in_a_row(tmp_path):
    d = generic_dir(tmp_path, "user,item,timestamp\nu,a,1\nu\tb\t2\n")
    with pytest.raises(DataError, match=r"interactions\.csv:3: expected 3 comma-separated.*tab-separated"):
        load_raw("generic", d)


def test_wrong_delimiter_ml1m(tmp_path):
    d = tmp_path / "m"
    write(d / "ratings.dat", "1::1::5::978300760\n1,2,3,978300761\n")
    write(d / "movies.dat", (FIX / "ml1m" / "movies.dat").read_bytes())
    with pytest.raises(DataError, match=r"ratings\.dat:2: .*comma-separated"):
        load_raw("ml-1m", d)


def test_missing_column_csv(tmp_path):
    d = generic_dir(tmp_path, "user,item,rating\nu,a,1\n")
    with pytest.raises(DataError) as e:
        load_raw("generic", d)
    msg = str(e.value)
    assert "interactions.csv:1" in msg and "'timestamp'" in msg and "ts" in msg and "time" in msg


def test_missing_field_jsonl(tmp_path):
    d = generic_dir(tmp_path, '{"user": "u", "item": "a", "timestamp": 1}\n{"user": "u", "item": "b"}\n',
                    inter_name="interactions.jsonl")
    with pytest.raises(DataError, match=r"interactions\.jsonl:2: .*'timestamp'"):
        load_raw("generic", d)


def test_missing_column_atomic(tmp_path):
    d = tmp_path / "a"
    write(d / "ml-100k.inter", "user_id:token\titem_id:token\trating:float\n1\t1\t3\n")
    write(d / "ml-100k.item", (FIX / "ml100k_atomic" / "ml-100k.item").read_bytes())
    with pytest.raises(DataError, match=r"ml-100k\.inter:1: header lacks column\(s\) timestamp"):
        load_raw("ml-100k", d)


@pytest.mark.parametrize("value", ["yesterday", "1.5", ""])
def test_bad_timestamp_generic(tmp_path, value):
    d = generic_dir(tmp_path, f"user,item,timestamp\nu,a,1\nu,b,{value}\n")
    with pytest.raises(DataError, match=r"interactions\.csv:3: field 'timestamp' must be an integer"):
        load_raw("generic", d)


def test_bad_timestamp_ml1m(tmp_path):
    d = tmp_path / "m"
    write(d / "ratings.dat", "1::1::5::978300760\n1::2::3::soon\n")
    write(d / "movies.dat", (FIX / "ml1m" / "movies.dat").read_bytes())
    with pytest.raises(DataError, match=r"ratings\.dat:2: field 'Timestamp' must be an integer"):
        load_raw("ml-1m", d)


def test_bad_rating_generic(tmp_path):
    d = generic_dir(tmp_path, "user,item,timestamp,rating\nu,a,1,4\nu,b,2,five\n")
    with pytest.raises(DataError, match=r"interactions\.csv:3: field 'rating' must be a number, got 'five'"):
        load_raw("generic", d)


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "1e39"])
def test_non_finite_rating_generic(tmp_path, value):
    d = generic_dir(tmp_path, f"user,item,timestamp,rating\nu,a,1,4\nu,b,2,{value}\n")
    with pytest.raises(DataError, match=r"interactions\.csv:3: field 'rating' must be a finite number"):
        load_raw("generic", d)


def test_huge_timestamp_is_a_clear_error(tmp_path):
    d = generic_dir(tmp_path, "user,item,timestamp\nu,a,1\nu,b,1e23\n")
    with pytest.raises(DataError, match=r"interactions\.csv:3: field 'timestamp' must be an integer.*got '1e23'"):
        load_raw("generic", d)


def test_huge_timestamp_atomic_is_a_clear_error(tmp_path):
    d = tmp_path / "a"
    write(d / "ml-100k.inter", "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
                               "1\t1\t3\t881250949\n1\t2\t4\t1e23\n")
    write(d / "ml-100k.item", (FIX / "ml100k_atomic" / "ml-100k.item").read_bytes())
    with pytest.raises(DataError, match=r"ml-100k\.inter:3: field 'timestamp' = '1e23' is out of range"):
        load_raw("ml-100k", d)


def test_a_file_without_its_last_newline_is_reported(tmp_path, capsys):
    d = generic_dir(tmp_path, "user,item,timestamp\nu,a,1\nu,b,88")      # cut mid-line, still parses
    raw = load_raw("generic", d)
    assert len(raw.interactions) == 2
    err = capsys.readouterr().err
    assert "interactions.csv: no newline after the last line (3 lines read)" in err
    generic_dir(tmp_path, "user,item,timestamp\nu,a,1\nu,b,88\n")
    load_raw("generic", d)
    assert "no newline" not in capsys.readouterr().err


def test_a_cut_ml100k_is_reported_with_its_row_count(tmp_path, capsys):
    """The issue's case: ml-100k.inter cut at 1 MB still parses (its last timestamp is cut to a
    few digits), so the count is what gives it away."""
    src = Path(os.environ["RECALIGN_ASSETS"]) / "ml-100k"
    d = tmp_path / "cut"
    write(d / "ml-100k.inter", (src / "ml-100k.inter").read_bytes()[:1_000_000])
    write(d / "ml-100k.item", (src / "ml-100k.item").read_bytes())
    raw = load_raw("ml-100k", d)
    err = capsys.readouterr().err
    n = len(raw.interactions)
    assert 40_000 < n < 60_000
    assert f"{n:,} ratings where ml-100k has 100,000" in err and "no newline after the last line" in err
    load_raw("ml-100k", src)
    assert "ratings where" not in capsys.readouterr().err


def test_bad_rating_atomic(tmp_path):
    d = tmp_path / "a"
    write(d / "ml-100k.inter", "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
                               "1\t1\t3\t881250949\n1\t2\tgood\t881250950\n")
    write(d / "ml-100k.item", (FIX / "ml100k_atomic" / "ml-100k.item").read_bytes())
    with pytest.raises(DataError, match=r"ml-100k\.inter:3: field 'rating' must be a number"):
        load_raw("ml-100k", d)


def test_bad_categories_generic(tmp_path):
    d = generic_dir(tmp_path, "user,item,timestamp\nu,a,1\n",
                    'item,title,categories\na,A,"[""X"", "\n')
    with pytest.raises(DataError, match=r"items\.csv:2: field 'categories' looks like a JSON list"):
        load_raw("generic", d)


def test_unknown_item_generic(tmp_path):
    d = generic_dir(tmp_path, "user,item,timestamp\nu,a,1\nu,b,2\nu,c,3\nu,nope,4\n")
    with pytest.raises(DataError) as e:
        prep(tmp_path, "generic", d)
    msg = str(e.value)
    assert "interactions.csv:5" in msg and "'nope'" in msg and "items.csv" in msg
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("folder,data_file,line", [
    ("ml1m", "ratings.dat", "1::9999::5::978300761\n"),
    ("ml100k_grouplens", "u.data", "196\t9999\t5\t881250950\n"),
    ("ml100k_atomic", "ml-100k.inter", "1\t9999\t5\t881250950\n"),
])
def test_unknown_item_movielens(tmp_path, folder, data_file, line):
    d = tmp_path / folder
    for f in (FIX / folder).iterdir():
        write(d / f.name, f.read_bytes())
    text = (FIX / folder / data_file).read_bytes()
    write(d / data_file, text + line.encode())
    n = text.decode("latin-1").count("\n") + 1
    dataset = "ml-1m" if folder == "ml1m" else "ml-100k"
    with pytest.raises(DataError) as e:
        prep(tmp_path, dataset, d)
    assert f"{data_file}:{n}" in str(e.value) and "'9999'" in str(e.value)


@pytest.mark.parametrize("which", ["interactions", "items"])
def test_empty_file(tmp_path, which):
    d = generic_dir(tmp_path, "user,item,timestamp\nu,a,1\n")
    write(d / f"{which}.csv", b"")
    with pytest.raises(DataError, match=rf"{which}\.csv: file is empty"):
        load_raw("generic", d)


def test_header_only_file(tmp_path):
    d = generic_dir(tmp_path, "user,item,timestamp\n")
    with pytest.raises(DataError, match=r"interactions\.csv: no records found"):
        load_raw("generic", d)


def test_empty_ml1m_ratings(tmp_path):
    d = tmp_path / "m"
    write(d / "ratings.dat", b"")
    write(d / "movies.dat", (FIX / "ml1m" / "movies.dat").read_bytes())
    with pytest.raises(DataError, match=r"ratings\.dat: file is empty"):
        load_raw("ml-1m", d)


def test_bad_encoding_generic(tmp_path):
    d = generic_dir(tmp_path, "user,item,timestamp\nu,a,1\n", "item,title\na,A\nb,Caf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"items\.csv:3: not valid utf-8"):
        load_raw("generic", d)


def test_bad_encoding_reports_the_right_line_in_a_big_file(tmp_path):
    # TextIOWrapper decodes 8 KiB at a time; the error must still name the offending line
    body = "".join(f"u{n % 7},a,{n}\n" for n in range(2000)).encode()
    d = generic_dir(tmp_path, b"user,item,timestamp\n" + body + b"u1,\xff,5\n")
    with pytest.raises(DataError, match=r"interactions\.csv:2002: not valid utf-8"):
        load_raw("generic", d)


def test_bad_encoding_atomic(tmp_path):
    d = tmp_path / "a"
    write(d / "ml-100k.inter", (FIX / "ml100k_atomic" / "ml-100k.inter").read_bytes())
    items = (FIX / "ml100k_atomic" / "ml-100k.item").read_text().replace("Four Rooms", "Caf\xe9 Rooms")
    write(d / "ml-100k.item", items.encode("latin-1"))
    with pytest.raises(DataError, match=r"ml-100k\.item:4: not valid utf-8"):
        load_raw("ml-100k", d)


def test_unknown_file_type_generic(tmp_path):
    with pytest.raises(DataError, match=r"log\.txt: unknown file type"):
        load_raw("generic", None, interactions=write(tmp_path / "log.txt", "u,a,1\n"),
                 items=write(tmp_path / "items.csv", "item,title\na,A\n"))


@pytest.mark.parametrize("name,close", [("ml100k", "ml-100k"), ("stream", "steam"), ("amazn", "amazon")])
def test_unknown_dataset_suggests(name, close):
    with pytest.raises(DataError) as e:
        load_raw(name)
    assert f"did you mean '{close}'" in str(e.value)


def test_failed_prepare_leaves_nothing(tmp_path):
    parent = tmp_path / "runs"
    parent.mkdir()
    d = generic_dir(tmp_path, "user,item,timestamp\nu,a,1\nu,b,x\n")
    with pytest.raises(DataError):
        prepare_dataset(parent / "out", PrepareOptions(dataset="generic"), input_dir=d)
    assert leftovers(parent) == []


def test_failure_while_writing_leaves_nothing(tmp_path, monkeypatch):
    parent = tmp_path / "runs"
    parent.mkdir()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(prepare_mod, "write_json", boom)
    with pytest.raises(OSError, match="disk full"):
        prepare_dataset(parent / "out", PrepareOptions(dataset="generic"), input_dir=FIX / "generic")
    assert leftovers(parent) == []


# ----------------------------------------------------------------------------- column maps, MovieLens CSV

ML_CSV = FIX / "movielens_csv"
ML_COLS = "user=userId,item=movieId,time=timestamp,rating=rating"
ML_ITEM_COLS = "item=movieId,title=title,categories=genres"


def test_generic_with_a_column_map_reads_a_movielens_csv(tmp_path):
    out, ds = prep(tmp_path, "generic", interactions=ML_CSV / "ratings.csv", items=ML_CSV / "movies.csv",
                   columns=ML_COLS, item_columns=ML_ITEM_COLS)
    assert ds.n_users == 3 and ds.n_items == 7
    items = by_id(ds)
    assert items["50"]["title"] == "Usual Suspects, The (1995)"
    card = json.loads((out / "card.json").read_text())
    assert card["config"]["columns"] == ML_COLS                # the map is part of the provenance


def test_a_missing_column_names_the_flag_that_fixes_it(tmp_path):
    with pytest.raises(DataError) as e:
        load_raw("generic", None, interactions=ML_CSV / "ratings.csv", items=ML_CSV / "movies.csv")
    msg = str(e.value)
    assert "ratings.csv:1: no 'item' column" in msg and "found columns: userId, movieId, rating, timestamp" in msg
    assert "--columns item=COLUMN (e.g. --columns item=movieId)" in msg     # userId is read as the user
    with pytest.raises(DataError, match=r"ratings.csv:1: --columns item=movie_id: the file has no column "
                                        r"'movie_id' \(did you mean 'movieId'\?\); its columns: userId"):
        load_raw("generic", None, interactions=ML_CSV / "ratings.csv", items=ML_CSV / "movies.csv",
                 columns="user=userId,item=movie_id,time=timestamp")
    with pytest.raises(DataError, match=r"--columns: unknown field 'usr' \(did you mean 'user'\?\)"):
        load_raw("generic", None, interactions=ML_CSV / "ratings.csv", items=ML_CSV / "movies.csv", columns="usr=userId")
    with pytest.raises(DataError, match="--columns is for --dataset generic"):
        load_raw("ml-100k", None, columns="user=u")


def test_millisecond_timestamps_are_detected_and_mixed_units_refused(tmp_path):
    d = tmp_path / "ms"
    d.mkdir()
    (d / "items.csv").write_text("item,title,categories\na,A,x\nb,B,y\nc,C,x\n")
    (d / "interactions.csv").write_text("user,item,timestamp\nu,a,1600000000000\nu,b,1600000001000\n"
                                        "u,c,1600000002000\nv,a,1600000000500\nv,c,1600000003000\nv,b,1600000004000\n")
    raw = load_raw("generic", d)
    assert raw.interactions["timestamp"].tolist()[:2] == [1600000000, 1600000001]
    assert any("milliseconds" in n for n in raw.notes)
    (d / "interactions.csv").write_text("user,item,timestamp\nu,a,1600000000000\nu,b,1600000001000\nu,c,1600000002\n")
    with pytest.raises(DataError, match=r"interactions.csv:4: field 'timestamp' = 1600000002 is in seconds but "
                                        r"most of the file is in milliseconds"):
        load_raw("generic", d)
    (d / "interactions.csv").write_text("user,item,item\nu,a,1\n")
    with pytest.raises(DataError, match=r"interactions.csv:1: column 'item' appears twice"):
        load_raw("generic", d)


def test_category_separator_gives_tags(tmp_path):
    d = tmp_path / "sep"
    d.mkdir()
    (d / "items.csv").write_text('item,title,genres\na,A,"Drama, War"\nb,B,Comedy\n')
    (d / "interactions.csv").write_text("user,item,timestamp\nu,a,1\nu,b,2\n")
    raw = load_raw("generic", d, category_sep=",")
    assert raw.items["paths"].tolist() == [[["Drama"], ["War"]], [["Comedy"]]] and raw.flat_categories
    assert load_raw("generic", d).items["paths"].tolist()[0] == [["Drama, War"]]    # "|": one path


def test_movielens_csv_release(tmp_path):
    out, ds = prep(tmp_path, "movielens", input_dir=ML_CSV)
    items = by_id(ds)
    assert list(items["193609"]["categories"]) == []                 # "(no genres listed)": none
    assert set(items["1"]["categories"]) == {"Adventure", "Animation", "Children", "Comedy", "Fantasy"}
    assert items["318"]["title"] == "Shawshank Redemption, The (1994)"
    assert items["318"]["year"] in ("1994", 1994)
    assert [len(s) for s in seqs(ds)] == [5, 5, 5]
    with pytest.raises(DataError, match="no ratings file for --dataset movielens"):
        load_raw("movielens", tmp_path)


def test_amazon2023_release(tmp_path):
    out, ds = prep(tmp_path, "amazon2023", input_dir=FIX / "amazon2023")
    assert ds.n_users == 3 and ds.n_items == 5                     # B99 has no review: dropped
    items = {r["title"]: r for r in ds.items.to_dict("records")}
    assert list(items["Heat"]["categories"]) == ["Genre for Featured Categories", "Action & Adventure"]
    assert list(items["The Usual Suspects"]["categories"]) == ["Prime Video"]   # main_category when no path
    assert "Alien & Aliens" in items                                           # HTML entity unescaped
    inter = pd.read_parquet(out / "interactions.parquet")
    assert inter["timestamp"].min() == 1588615855                               # milliseconds -> seconds
    with pytest.raises(DataError, match="use --dataset amazon"):
        load_raw("amazon2023", None, interactions=FIX / "amazon2018" / "Movies_and_TV_5.json",
                 items=FIX / "amazon2023" / "meta_Movies_and_TV.jsonl.gz")


DAMAGED_SOURCES = [("generic", "generic", "interactions.csv"), ("generic", "generic", "items.csv"),
                   ("generic", "generic/jsonl", "interactions.jsonl"), ("ml-100k", "ml100k_atomic", "ml-100k.inter"),
                   ("ml-100k", "ml100k_atomic", "ml-100k.item")]


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(which=st.sampled_from(DAMAGED_SOURCES), cut=st.floats(0, 1),
       flips=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), max_size=4),
       junk=st.binary(max_size=40))
def test_damaged_files_load_or_fail_clearly(which, cut, flips, junk):
    """Truncated, bit-flipped and junk-appended copies of the fixtures: either they are
    prepared or they raise DataError (one line); never another exception."""
    import shutil
    import tempfile

    dataset, folder, name = which
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "in"
        shutil.copytree(FIX / folder, d)
        data = bytearray((d / name).read_bytes())
        data = data[:int(len(data) * cut)] if cut < 0.95 else data
        for pos, byte in flips:
            if data:
                data[int(pos * (len(data) - 1))] = byte
        (d / name).write_bytes(bytes(data) + junk)
        try:
            prepare_dataset(Path(tmp) / "out", PrepareOptions(dataset=dataset), input_dir=d)
        except DataError as e:
            assert str(e) and "\n" not in str(e).strip()


@pytest.mark.parametrize("ms", [False, True])
def test_columnar_reader_prepares_exactly_what_the_line_reader_does(tmp_path, monkeypatch, ms):
    """Large CSV logs are read by pyarrow into columns; the prepared dataset must be byte for
    byte the one the line-by-line reader makes (ties, duplicates, blank ratings, ms times)."""
    from recalign.data.loaders import generic as loaders

    rng = np.random.default_rng(0)
    n = 3000
    users = rng.choice([f"{u}" for u in range(40)] + ["alice", "bob"], size=n)
    items = rng.integers(1, 60, size=n)
    ts = rng.integers(1_000_000_000, 1_000_000_050, size=n) * (1000 if ms else 1)   # many ties
    ratings = [("" if rng.random() < 0.1 else f"{rng.integers(1, 6)}.0") for _ in range(n)]
    inter = "userId,movieId,when,stars\n" + "".join(f"{u},{i},{t},{r}\n" for u, i, t, r in zip(users, items, ts, ratings))
    item_rows = "id,name,genres\n" + "".join(f"{i},Film {i},G{i % 4}|G{i % 7}\n" for i in range(1, 60))
    d = generic_dir(tmp_path, inter, item_rows)
    opts = dict(columns="user=userId,item=movieId,time=when,rating=stars", item_columns="item=id,title=name,categories=genres",
                category_sep=",")
    used = []
    real = loaders._arrow_interactions
    monkeypatch.setattr(loaders, "_arrow_interactions", lambda *a, **k: used.append(real(*a, **k)) or used[-1])
    fast = prepare_mod.prepare_dataset(tmp_path / "fast", prepare_mod.PrepareOptions("generic", **opts), d)
    assert used and used[0] is not None
    monkeypatch.setattr(loaders, "_arrow_interactions", lambda *a, **k: None)
    slow = prepare_mod.prepare_dataset(tmp_path / "slow", prepare_mod.PrepareOptions("generic", **opts), d)
    for name in ("items", "users", "interactions", "sequences"):
        assert (fast / f"{name}.parquet").read_bytes() == (slow / f"{name}.parquet").read_bytes(), name
    a, b = (json.loads((p / "card.json").read_text())["counts"] for p in (fast, slow))
    assert a == b and a["duplicate_interactions_dropped"] > 0


@pytest.mark.parametrize("body,message", [
    ("u,a,1\n\nu,b,2\n", None),                                    # a blank line: still read, by lines
    ("u,a,1\nu,b,\n", "field 'timestamp' must be"),
    ("u,a,1\nu, b,2\n", None),                                     # an id with a space: stripped by lines
    ("u,a,1\nu,b,1e23\n", "field 'timestamp' must be"),
    ("u,a,1\nu,b,2,3\n", "interactions.csv:3: expected 3"),
    ("u,a,1\nu,b,1000000000000\n", "interactions.csv:3: field 'timestamp' = 1000000000000 is in milliseconds"),
])
def test_columnar_reader_leaves_odd_files_to_the_line_reader(tmp_path, body, message):
    d = generic_dir(tmp_path, "user,item,timestamp\n" + body)
    if message is None:
        raw = load_raw("generic", d)
        assert list(raw.interactions["item"].astype(str)) == ["a", "b"]
    else:
        with pytest.raises(DataError, match=message):
            load_raw("generic", d)
