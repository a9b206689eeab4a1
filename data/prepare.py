"""Turn a RawData into a dataset directory: filter, index, order, split, write.

Output (all written to a temporary folder, then renamed):
  items.parquet         item_idx (1..N; 0 is padding), item_id, title (unique), categories
                        (list, shallow/general first, deepest/most specific last), category
                        (the deepest), year
  users.parquet         user_idx (0..U-1), user_id, attributes the source has
  interactions.parquet  user_idx, item_idx, timestamp, rating, position (0-based, time order)
  sequences.parquet     user_idx, items, timestamps, ratings (lists in time order)
  card.json             options, counts, input hashes, versions, git commit

Order within a user: by timestamp, ties kept in source-file order (a stable sort on
the line number). This is RecBole's rule too, and it makes two runs on the same file
give the same split. Split (REFERENCE.md §1.1): leave-one-out by time, the last item is
test, the second-to-last validation, the rest training; users need >= 3 interactions.
"""
from __future__ import annotations

import html
import re
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .loaders import RawData, load_raw
from .util import DataError, atomic_dir, check_out, provenance, sha256_file, write_json

MIN_SEQUENCE = 3  # one training item, one validation item, one test item


@dataclass
class PrepareOptions:
    dataset: str = "ml-100k"
    min_rating: float | None = None       # keep interactions with rating >= this
    user_core: int = 0                    # iterative k-core: users with >= this many items
    item_core: int = 0                    # ... and items with >= this many users
    category_depth: int | None = None     # keep at most this many levels of each path
    require_categories: bool | None = None  # drop items without a category (default per format)
    dedupe: bool = True                   # keep a user's first interaction with an item only
    # --dataset generic: the file's own column names and category separator (data/loaders/generic.py)
    columns: str | dict | None = None     # "user=userId,item=movieId,time=timestamp,rating=rating"
    item_columns: str | dict | None = None  # "item=movieId,title=title,categories=genres"
    category_sep: str = "|"


_WS = re.compile(r"\s+")


def clean_title(title: str) -> str:
    """Unescape HTML entities and collapse whitespace: 'A &amp;  B ' -> 'A & B'."""
    return _WS.sub(" ", html.unescape(str(title))).strip()


def unique_titles(titles: list[str], years: list[str | None], ids: list[str]) -> list[str]:
    """Make display titles unique: duplicates get ' (year)', still-equal ones ' [id]'.

    >>> unique_titles(["Hamlet", "Hamlet", "Heat"], ["1996", "1948", None], ["1", "2", "3"])
    ['Hamlet (1996)', 'Hamlet (1948)', 'Heat']
    >>> unique_titles(["Deceiver", "Deceiver"], ["1997", "1997"], ["7", "9"])
    ['Deceiver (1997) [7]', 'Deceiver (1997) [9]']
    """
    from .catalog import normalize_title as key   # uniqueness as the catalog matcher sees it

    counts = Counter(key(t) for t in titles)
    out = []
    for t, y in zip(titles, years):
        if counts[key(t)] > 1 and y and not t.endswith(f"({y})"):
            t = f"{t} ({y})"
        out.append(t)
    counts = Counter(key(t) for t in out)
    out = [f"{t} [{i}]" if counts[key(t)] > 1 else t for t, i in zip(out, ids)]
    if len({key(t) for t in out}) != len(out):  # an id suffix collided with a real title
        out = [f"{t} [{i}]" if not t.endswith(f"[{i}]") else t for t, i in zip(out, ids)]
    return out


def _categories(items: pd.DataFrame, raw: RawData, opts_depth: int | None) -> list[list[str]]:
    """Every prefix of every path is a category; order shallow -> deep (deepest last)."""
    per_item = []
    for paths in items["paths"]:
        depth: dict[str, int] = {}           # category -> deepest level it occurs at
        for path in paths or []:
            path = [clean_title(c) for c in (path[1:] if raw.drop_top_level else path) if str(c).strip()]
            if opts_depth is not None:
                path = path[:opts_depth]
            for level, c in enumerate(path):
                depth[c] = max(depth.get(c, -1), level)
        # Stable sort by depth: with several paths the deepest level of any path comes last.
        per_item.append(sorted(depth, key=lambda c: depth[c]))
    if raw.flat_categories:
        # Genre tags have no depth: put the rarest (most specific) last, the way a
        # hierarchy puts its deepest level last. Ties broken by name for determinism.
        freq = Counter(c for cats in per_item for c in cats)
        per_item = [sorted(cats, key=lambda c: (-freq[c], c)) for cats in per_item]
    return per_item


def _codes(col: pd.Series) -> pd.Categorical:
    """Ids as a categorical of strings (the fast CSV reader already gives one)."""
    if isinstance(col.dtype, pd.CategoricalDtype):
        cat = col.array
        if all(isinstance(c, str) for c in cat.categories[:1]):
            return cat
        return cat.rename_categories([str(c) for c in cat.categories])
    return pd.Categorical(col.astype(str))


def _k_core(sel: np.ndarray, u: np.ndarray, it: np.ndarray, user_core: int, item_core: int) -> np.ndarray:
    """Rows (indices into u/it, order kept) left when every item has >= item_core rows and every
    user >= user_core, items filtered first, repeated until nothing changes."""
    while True:
        before = len(sel)
        if item_core > 1:
            n = np.bincount(it[sel])
            sel = sel[n[it[sel]] >= item_core]
        if user_core > 1:
            n = np.bincount(u[sel])
            sel = sel[n[u[sel]] >= user_core]
        if len(sel) == before:
            return sel


def _sort_ids(ids) -> list[str]:
    ids = list(ids)
    try:
        return sorted(ids, key=lambda s: (int(s), s))
    except ValueError:
        return sorted(ids)


def prepare(raw: RawData, opts: PrepareOptions) -> dict[str, pd.DataFrame | dict]:
    """Filter, index and order ``raw``; returns the frames and the counts for card.json."""
    stats: dict[str, int] = {"raw_interactions": len(raw.interactions), "raw_items": len(raw.items)}
    items = raw.items.copy()
    items["item"] = items["item"].astype(str)
    dup = items["item"].duplicated()
    if dup.any():
        raise DataError(f"item table: item id {items['item'][dup].iloc[0]!r} appears more than once; "
                        "item ids must be unique")
    items["title"] = items["title"].fillna("").map(clean_title)
    stats["items_without_title"] = int((items["title"] == "").sum())
    items = items[items["title"] != ""]
    items["categories"] = _categories(items, raw, opts.category_depth)
    require = raw.require_categories if opts.require_categories is None else opts.require_categories
    if require:
        has = items["categories"].map(bool)
        stats["items_without_category"] = int((~has).sum())
        items = items[has]

    # Interactions are filtered and ordered on integer codes (one int32 per id, not a Python
    # string per row): a 10M-row log stays at a few hundred MB here.
    inter = raw.interactions
    user, item = _codes(inter["user"]), _codes(inter["item"])
    u, it = user.codes.astype(np.int64), item.codes.astype(np.int64)
    ts = inter["timestamp"].to_numpy(dtype=np.int64)
    line = inter["line"].to_numpy(dtype=np.int64)
    rating = inter["rating"].to_numpy(dtype=np.float64)
    item_names = pd.Index(item.categories, dtype=object)
    if raw.unknown_items == "error":
        unknown = ~item_names.isin(set(raw.items["item"].astype(str)))
        if unknown.any():
            first = int(np.flatnonzero(unknown[it])[0])
            src = raw.files[0] if raw.files else "interactions"
            raise DataError(f"{src}:{int(line[first])}: item id {item_names[it[first]]!r} is not in the item "
                            f"table ({raw.files[1] if len(raw.files) > 1 else 'items'}); fix the id or "
                            "add the item")
    keep = item_names.isin(set(items["item"]))[it]
    if not keep.all():
        stats["interactions_unknown_or_dropped_item"] = int((~keep).sum())
    if opts.min_rating is not None:
        if np.isnan(rating).all():
            raise DataError(f"--min-rating {opts.min_rating}: dataset {opts.dataset!r} has no ratings")
        keep &= rating >= opts.min_rating
    sel = np.flatnonzero(keep)
    sel = sel[np.lexsort((line[sel], ts[sel], u[sel]))]       # by user, time, then file order
    if opts.dedupe:
        pair = u[sel] * len(item_names) + it[sel]
        _, first = np.unique(pair, return_index=True)
        stats["duplicate_interactions_dropped"] = len(sel) - len(first)
        sel = sel[np.sort(first)]
    sel = _k_core(sel, u, it, max(opts.user_core, MIN_SEQUENCE), opts.item_core)
    if len(sel) == 0:
        raise DataError("no interactions left after filtering (rating threshold / k-core / "
                        f"users with >= {MIN_SEQUENCE} items); loosen --min-rating, --user-core, --item-core")

    used_items = item_names[np.unique(it[sel])]
    items = items[items["item"].isin(set(used_items))]
    item_ids = _sort_ids(items["item"])
    items = items.set_index("item").loc[item_ids].reset_index()
    years = [None if (y is None or (isinstance(y, float) and np.isnan(y))) else str(y) for y in items["year"]]
    titles = unique_titles(list(items["title"]), years, item_ids)
    items_out = pd.DataFrame({
        "item_idx": np.arange(1, len(item_ids) + 1, dtype=np.int64),
        "item_id": item_ids,
        "title": titles,
        "categories": list(items["categories"]),
        "category": [c[-1] if c else None for c in items["categories"]],
        "year": years,
    })

    user_names = pd.Index(user.categories, dtype=object)
    used_users = np.unique(u[sel])
    user_ids = _sort_ids(user_names[used_users])
    user_of = np.full(len(user_names), -1, dtype=np.int64)       # code -> user_idx
    user_of[pd.Index(user_names).get_indexer(user_ids)] = np.arange(len(user_ids))
    item_of = np.full(len(item_names), -1, dtype=np.int64)       # code -> item_idx
    item_of[item_names.get_indexer(item_ids)] = np.arange(1, len(item_ids) + 1)
    uidx = user_of[u[sel]]
    sel = sel[np.lexsort((line[sel], ts[sel], uidx))]
    uidx = user_of[u[sel]]
    starts = np.flatnonzero(np.r_[True, uidx[1:] != uidx[:-1]])
    lengths = np.diff(np.r_[starts, len(sel)])
    position = np.arange(len(sel)) - np.repeat(starts, lengths)
    inter_out = pd.DataFrame({"user_idx": uidx, "item_idx": item_of[it[sel]], "timestamp": ts[sel],
                              "rating": rating[sel].astype(np.float32), "position": position.astype(np.int64)})

    def per_user(values: np.ndarray) -> list[np.ndarray]:
        return np.split(values, starts[1:])

    seqs = pd.DataFrame({
        "user_idx": np.arange(len(user_ids), dtype=np.int64),
        "items": per_user(inter_out["item_idx"].to_numpy()),
        "timestamps": per_user(inter_out["timestamp"].to_numpy()),
        "ratings": per_user(inter_out["rating"].to_numpy().astype(np.float64)),
    })
    users_out = pd.DataFrame({"user_idx": np.arange(len(user_ids), dtype=np.int64), "user_id": user_ids})
    if raw.users is not None:
        attrs = raw.users.copy()
        attrs["user"] = attrs["user"].astype(str)
        attrs = attrs.drop_duplicates("user").set_index("user")
        for col in attrs.columns:
            users_out[col] = [attrs[col].get(u) for u in user_ids]

    lengths = seqs["items"].map(len)
    stats.update(users=len(user_ids), items=len(item_ids), interactions=len(inter_out),
                 categories=len({c for cats in items_out["categories"] for c in cats}),
                 min_sequence=int(lengths.min()), max_sequence=int(lengths.max()),
                 mean_sequence=round(float(lengths.mean()), 2),
                 density=round(len(inter_out) / (len(user_ids) * len(item_ids)), 6))
    return {"items": items_out, "users": users_out, "interactions": inter_out,
            "sequences": seqs, "stats": stats}


def prepare_dataset(out: str | Path, opts: PrepareOptions, input_dir=None, overwrite: bool = False,
                    **files) -> Path:
    """``recalign data prepare``: read, prepare and write a dataset directory atomically.

    >>> prepare_dataset("runs/ml100k", PrepareOptions("ml-100k"))   # doctest: +SKIP
    PosixPath('runs/ml100k')
    """
    inputs = [input_dir, *files.values()]
    check_out(out, overwrite, inputs)            # before any reading: --overwrite never eats an input
    raw = load_raw(opts.dataset, input_dir, columns=opts.columns, item_columns=opts.item_columns,
                   category_sep=opts.category_sep, **files)
    res = prepare(raw, opts)
    with atomic_dir(out, overwrite=overwrite, inputs=inputs) as tmp:
        for name in ("items", "users", "interactions", "sequences"):
            res[name].to_parquet(tmp / f"{name}.parquet", index=False)
        card = provenance(
            "data.prepare", asdict(opts),
            inputs={str(p): sha256_file(p) for p in raw.files},
            counts=res["stats"],
            split="leave-one-out by time: test = last, valid = second-to-last, train = the rest",
            tie_break="equal timestamps keep source-file order (stable sort on line number)",
            titles="HTML entities unescaped, whitespace collapsed; duplicates get ' (year)', "
                   "then ' [item_id]'",
            categories=("flat tags ordered by frequency, rarest (most specific) last"
                        if raw.flat_categories else "every prefix of each path, deepest last"),
            notes=raw.notes,
        )
        write_json(tmp / "card.json", card)
    return Path(out)
