"""MovieLens: ml-100k (RecBole atomic files or the GroupLens release), ml-1m, and the CSV
releases (ratings.csv + movies.csv, e.g. ml-latest-small, ml-20m)."""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from ..util import DataError
from .generic import load_generic
from .io import RawData, _find, _frame, iter_lines, read_delimited, to_float, to_int

# ----------------------------------------------------------------------------- MovieLens


def _ml100k_atomic(inter: Path, item: Path, user: Path | None) -> RawData:
    def typed_header(path: Path, required: list[str]) -> tuple[list[tuple[int, list[str]]], dict[str, int]]:
        lines = list(iter_lines(path))
        names = [h.split(":")[0] for h in lines[0][1].split("\t")]
        missing = [c for c in required if c not in names]
        if missing:
            raise DataError(f"{path}:1: header lacks column(s) {', '.join(missing)} "
                            f"(found {', '.join(names)}); RecBole atomic files need a typed "
                            "tab-separated header like 'user_id:token'")
        rows = []
        for lineno, line in lines[1:]:
            parts = line.split("\t")
            if len(parts) != len(names):
                raise DataError(f"{path}:{lineno}: expected {len(names)} tab-separated fields "
                                f"({', '.join(names)}), found {len(parts)}")
            rows.append((lineno, parts))
        return rows, {n: i for i, n in enumerate(names)}

    rows, col = typed_header(inter, ["user_id", "item_id", "rating", "timestamp"])
    inter_rows = [
        {"user": p[col["user_id"]], "item": p[col["item_id"]],
         "timestamp": to_int(p[col["timestamp"]], inter, ln, "timestamp"),
         "rating": to_float(p[col["rating"]], inter, ln, "rating"), "line": ln}
        for ln, p in rows
    ]
    rows, col = typed_header(item, ["item_id", "movie_title"])
    item_rows = []
    for ln, p in rows:
        genres = p[col["class"]].split() if "class" in col else []
        item_rows.append({"item": p[col["item_id"]], "title": p[col["movie_title"]],
                          "paths": [[g] for g in genres if g != "unknown"],
                          "year": p[col["release_year"]] if "release_year" in col else None})
    users = None
    if user is not None and user.is_file():
        rows, col = typed_header(user, ["user_id"])
        users = pd.DataFrame([{n.split(":")[0]: p[i] for n, i in col.items()} for _, p in rows])
        users = users.rename(columns={"user_id": "user"})
    return RawData(_frame(inter_rows, ["user", "item", "timestamp", "rating", "line"], inter),
                   _frame(item_rows, ["item", "title", "paths", "year"], item), users,
                   [p for p in (inter, item, user) if p is not None and p.is_file()],
                   flat_categories=True)


def _ml_title_year(title: str) -> tuple[str, str | None]:
    """GroupLens titles end in '(1995)': keep it in the title (it disambiguates) and report it."""
    t = title.strip()
    if len(t) > 6 and t.endswith(")") and t[-6] == "(" and t[-5:-1].isdigit():
        return t, t[-5:-1]
    return t, None


def _ml100k_grouplens(data: Path, item: Path, genre: Path | None, user: Path | None) -> RawData:
    inter_rows = [
        {"user": p[0], "item": p[1], "rating": to_float(p[2], data, ln, "rating"),
         "timestamp": to_int(p[3], data, ln, "timestamp"), "line": ln}
        for ln, p in read_delimited(data, "\t", ["user_id", "item_id", "rating", "timestamp"])
    ]
    genres = []
    if genre is not None and genre.is_file():
        genres = [p[0] for _, p in sorted(read_delimited(genre, "|", ["genre", "index"], "latin-1"),
                                          key=lambda r: int(r[1][1]))]
    item_rows = []
    for ln, p in read_delimited(item, "|", ["movie id", "movie title", "release date",
                                            "video release date", "IMDb URL", "genre flags..."],
                                "latin-1"):
        flags = p[5:]
        names = genres or [f"genre{i}" for i in range(len(flags))]
        if len(flags) != len(names):
            raise DataError(f"{item}:{ln}: {len(flags)} genre flags but {genre} lists {len(names)} genres")
        title, year = _ml_title_year(p[1])
        if year is None and len(p[2]) >= 4 and p[2][-4:].isdigit():
            year = p[2][-4:]
        item_rows.append({"item": p[0], "title": title, "year": year,
                          "paths": [[g] for g, f in zip(names, flags) if f.strip() == "1" and g != "unknown"]})
    users = None
    if user is not None and user.is_file():
        users = pd.DataFrame([{"user": p[0], "age": p[1], "gender": p[2], "occupation": p[3], "zip_code": p[4]}
                              for _, p in read_delimited(user, "|", ["user id", "age", "gender", "occupation", "zip code"])])
    return RawData(_frame(inter_rows, ["user", "item", "timestamp", "rating", "line"], data),
                   _frame(item_rows, ["item", "title", "paths", "year"], item), users,
                   [p for p in (data, item, genre, user) if p is not None and p.is_file()],
                   flat_categories=True)


def load_ml100k(input_dir: Path | None = None, interactions: Path | None = None,
                items: Path | None = None, users: Path | None = None) -> RawData:
    if input_dir is None and interactions is None:
        from ..assets import asset_path

        input_dir = asset_path("ml-100k")
    if interactions is None:
        folder = Path(input_dir)
        if (folder / "u.data").is_file():
            raw = _ml100k_grouplens(folder / "u.data", _find(folder, ["u.item"], "items", "ml-100k"),
                                    folder / "u.genre", folder / "u.user")
            _check_ml100k_count(raw, folder / "u.data")
            return raw
        interactions = _find(folder, ["ml-100k.inter"], "interactions (ml-100k.inter or u.data)", "ml-100k")
        items = items or _find(folder, ["ml-100k.item"], "items", "ml-100k")
        users = users or folder / "ml-100k.user"
    if items is None:
        raise DataError("--dataset ml-100k with --interactions also needs --items")
    if Path(interactions).name.startswith("u.") or Path(interactions).suffix == ".data":
        raw = _ml100k_grouplens(Path(interactions), Path(items), Path(items).with_name("u.genre"),
                                Path(users) if users else None)
        _check_ml100k_count(raw, Path(interactions))
        return raw
    raw = _ml100k_atomic(Path(interactions), Path(items), Path(users) if users else None)
    _check_ml100k_count(raw, Path(interactions))
    return raw


def _check_ml100k_count(raw: RawData, path: Path) -> None:
    """ml-100k is exactly 100,000 ratings: any other count is a cut or edited copy, whose
    last line may still parse (a cut timestamp silently reorders a user's sequence)."""
    n = len(raw.interactions)
    if n != 100_000:
        print(f"recalign: warning: {path}: {n:,} ratings where ml-100k has 100,000; if this copy was cut "
              "short, fetch it again (or use --dataset generic for an edited subset)", file=sys.stderr)


def load_ml1m(input_dir: Path | None = None, interactions: Path | None = None,
              items: Path | None = None, users: Path | None = None) -> RawData:
    if input_dir is None and (interactions is None or items is None):
        raise DataError("--dataset ml-1m needs --input DIR (with ratings.dat, movies.dat) "
                        "or --interactions and --items")
    folder = Path(input_dir) if input_dir else None
    interactions = Path(interactions) if interactions else _find(folder, ["ratings.dat"], "ratings", "ml-1m")
    items = Path(items) if items else _find(folder, ["movies.dat"], "movies", "ml-1m")
    users = Path(users) if users else (folder / "users.dat" if folder else None)
    inter_rows = [
        {"user": p[0], "item": p[1], "rating": to_float(p[2], interactions, ln, "Rating"),
         "timestamp": to_int(p[3], interactions, ln, "Timestamp"), "line": ln}
        for ln, p in read_delimited(interactions, "::", ["UserID", "MovieID", "Rating", "Timestamp"], "latin-1")
    ]
    item_rows = []
    for ln, p in read_delimited(items, "::", ["MovieID", "Title", "Genres"], "latin-1"):
        title, year = _ml_title_year(p[1])
        item_rows.append({"item": p[0], "title": title, "year": year,
                          "paths": [[g] for g in p[2].split("|") if g and g != "(no genres listed)"]})
    user_df = None
    if users is not None and users.is_file():
        user_df = pd.DataFrame([{"user": p[0], "gender": p[1], "age": p[2], "occupation": p[3], "zip_code": p[4]}
                                for _, p in read_delimited(users, "::", ["UserID", "Gender", "Age", "Occupation", "Zip-code"], "latin-1")])
    return RawData(_frame(inter_rows, ["user", "item", "timestamp", "rating", "line"], interactions),
                   _frame(item_rows, ["item", "title", "paths", "year"], items), user_df,
                   [p for p in (interactions, items, users) if p is not None and p.is_file()],
                   flat_categories=True)




# ----------------------------------------------------------------------------- MovieLens CSV

ML_NO_GENRE = "(no genres listed)"


def load_movielens(input_dir: Path | None = None, interactions: Path | None = None,
                   items: Path | None = None, users: Path | None = None) -> RawData:
    """MovieLens CSV releases (ml-latest(-small), ml-20m, ml-25m, ml-32m): ``ratings.csv``
    (userId, movieId, rating, timestamp) and ``movies.csv`` (movieId, title, genres with
    ``|``-separated tags; "(no genres listed)" is no category). Titles keep their "(1995)",
    which is also the item's year. ``tags.csv`` and ``links.csv`` are not read."""
    folder = Path(input_dir) if input_dir else None
    if folder is None and (interactions is None or items is None):
        raise DataError("--dataset movielens needs --input DIR (with ratings.csv and movies.csv) or "
                        "--interactions ratings.csv --items movies.csv")
    interactions = Path(interactions) if interactions else _find(folder, ["ratings.csv"], "ratings", "movielens")
    items = Path(items) if items else _find(folder, ["movies.csv"], "movies", "movielens")
    raw = load_generic(None, interactions, items, None,
                       columns={"user": "userId", "item": "movieId", "timestamp": "timestamp", "rating": "rating"},
                       item_columns={"item": "movieId", "title": "title", "categories": "genres"},
                       category_sep="\x00")       # no split here: genres are tags, split below
    paths, years = [], []
    for title, cats in zip(raw.items["title"], raw.items["paths"]):
        tags = [t.strip() for c in cats for part in c for t in part.split("|")]
        paths.append([[t] for t in tags if t and t != ML_NO_GENRE])
        years.append(_ml_title_year(title)[1])
    raw.items["paths"] = paths
    raw.items["year"] = [y if y else None for y in years]
    raw.flat_categories = True
    return raw
