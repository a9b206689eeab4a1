"""Readers for the interaction-log formats recalign understands.

Each reader turns one dataset's files into a :class:`RawData` with plain string ids;
:mod:`recalign.data.prepare` does the filtering, indexing and splitting for all of them.
Every parse error is a :class:`DataError` naming the file, the line, the field and the fix.

Formats (``--dataset``):
  ml-100k   RecBole atomic files (ml-100k.inter/.item/.user, the default asset) or the
            original GroupLens release (u.data, u.item, u.genre, u.user)
  ml-1m     ratings.dat, movies.dat, users.dat ('::'-separated, latin-1)
  amazon    Amazon reviews 2014 or 2018: reviews + meta_*, JSON lines (gzip or not);
            the 2014 meta is one Python literal per line
  steam     McAuley-lab Steam: steam_reviews.json(.gz) + steam_games.json(.gz)
  generic   interactions CSV/JSONL (user, item, timestamp[, rating]) + items CSV/JSONL
            (item, title, categories as a list or a '|'-separated path)
"""
from __future__ import annotations

import ast
import calendar
import csv
import gzip
import io
import json
import math
import os
import re
import sys
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pandas as pd

from .util import DataError, suggest


@dataclass
class RawData:
    """One dataset as read from disk, before any filtering.

    interactions: columns user, item (str), timestamp (int64), rating (float, NaN if none),
        line (int, position in the source file: the tie-break for equal timestamps).
    items: columns item (str), title (str), paths (list of category paths, each a list of
        names, shallow to deep), year (str or None).
    users: column user (str) plus attribute columns, or None.
    flat_categories: True when categories are genre tags rather than a hierarchy
        (MovieLens, Steam): prepare then orders them rarest-last so that "deepest last"
        still means "most specific last".
    drop_top_level: drop the first element of every path (Amazon's "Movies & TV").
    unknown_items: "error" (the item table is complete, so an unknown id is a mistake)
        or "drop" (meta files are known to be incomplete).
    """

    interactions: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame | None
    files: list[Path]
    flat_categories: bool = False
    drop_top_level: bool = False
    unknown_items: str = "error"
    require_categories: bool = False
    notes: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- reading


def _open_binary(path: Path):
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")
    with open(path, "rb") as f:
        magic = f.read(2)
    return gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")


def open_text(path: Path, encoding: str = "utf-8") -> io.TextIOBase:
    """Open a text file, gzip or not, with errors reported as DataError."""
    return io.TextIOWrapper(_open_binary(path), encoding=encoding, newline="")


def iter_text(path: Path, encoding: str = "utf-8") -> Iterator[tuple[int, str]]:
    """(1-based line number, decoded line with its newline), gzip or not.

    Lines are decoded one at a time so a bad byte is reported on its own line (a
    TextIOWrapper decodes 8 KiB chunks and would blame an earlier line). A last line without
    its newline is read, with a warning on stderr: a file cut short in a copy or download
    usually ends mid-line, and a cut line may still parse.
    """
    path = Path(path)
    last = (0, b"\n")
    with _open_binary(path) as f:
        try:
            for lineno, raw in enumerate(f, 1):
                if raw.strip():
                    last = (lineno, raw)
                try:
                    line = raw.decode(encoding)
                except UnicodeDecodeError as e:
                    raise DataError(f"{path}:{lineno}: not valid {encoding} text ({e.reason} at byte "
                                    f"{e.start + 1} of the line); re-encode the file as {encoding}") from None
                if lineno == 1 and line.startswith("\ufeff"):
                    line = line[1:]
                yield lineno, line
        except (OSError, EOFError, gzip.BadGzipFile) as e:
            raise DataError(f"{path}: cannot read the file ({e}); is the gzip file truncated?") from None
    if not last[1].endswith(b"\n"):
        print(f"recalign: warning: {path}: no newline after the last line ({last[0]} lines read); if the "
              "file was cut short that line may be partial: compare the file's size with its source's",
              file=sys.stderr)


def iter_lines(path: Path, encoding: str = "utf-8") -> Iterator[tuple[int, str]]:
    """(1-based line number, line without newline); skips blank lines."""
    for lineno, line in iter_text(path, encoding):
        line = line.rstrip("\r\n")
        if line.strip():
            yield lineno, line


def iter_records(path: Path, literal: bool | None = None) -> Iterator[tuple[int, dict]]:
    """One dict per line from JSON lines or Python-literal lines (Amazon 2014 meta, Steam).

    ``literal=None`` tries JSON first and falls back to ``ast.literal_eval`` per line.
    """
    for lineno, line in iter_lines(path):
        rec = None
        if literal is not True:
            try:
                rec = json.loads(line)
            except RecursionError:
                raise DataError(f"{path}:{lineno}: JSON nested too deeply to read; "
                                "each line must be one flat record") from None
            except json.JSONDecodeError as e:
                if literal is False:
                    raise DataError(f"{path}:{lineno}: not valid JSON ({e.msg} at column {e.colno}); "
                                    "each line must be one JSON object") from None
        if rec is None:
            try:
                rec = ast.literal_eval(line)
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                raise DataError(f"{path}:{lineno}: neither a JSON object nor a Python literal; "
                                "each line must hold one record") from None
        if not isinstance(rec, dict):
            raise DataError(f"{path}:{lineno}: expected an object per line, got {type(rec).__name__}")
        yield lineno, rec


def read_delimited(path: Path, sep: str, columns: list[str], encoding: str = "utf-8",
                   header: bool = False, min_fields: int | None = None) -> list[tuple[int, list[str]]]:
    """Split each line on ``sep`` and check the field count; returns (line, fields)."""
    need = min_fields or len(columns)
    rows = []
    for lineno, line in iter_lines(path, encoding):
        if header and not rows and lineno == 1:
            rows.append((0, []))  # marker: header consumed
            continue
        parts = line.split(sep)
        if len(parts) < need:
            seen = {"\t": "tab", ",": "comma", "|": "'|'", "::": "'::'"}
            other = [name for s, name in seen.items() if s != sep and s in line]
            hint = f"; the line looks {other[0]}-separated" if other else ""
            raise DataError(f"{path}:{lineno}: expected {need} {seen.get(sep, repr(sep))}-separated "
                            f"fields ({', '.join(columns)}), found {len(parts)}{hint}")
        rows.append((lineno, parts))
    return [r for r in rows if r[0] != 0]


def to_int(value: str, path: Path, lineno: int, field_name: str) -> int:
    try:
        v = int(float(value)) if "." in value or "e" in value.lower() else int(value)
    except (ValueError, OverflowError):
        raise DataError(f"{path}:{lineno}: field {field_name!r} must be an integer, "
                        f"got {value!r}") from None
    if not -(2 ** 63) < v < 2 ** 63:
        raise DataError(f"{path}:{lineno}: field {field_name!r} = {value!r} is out of range "
                        "(a 64-bit integer; timestamps are seconds or milliseconds)")
    return v


def to_float(value: str, path: Path, lineno: int, field_name: str) -> float:
    try:
        v = float(value)
    except ValueError:
        raise DataError(f"{path}:{lineno}: field {field_name!r} must be a number, got {value!r}") from None
    if not math.isfinite(v) or abs(v) > 3.4e38:      # stored as float32
        raise DataError(f"{path}:{lineno}: field {field_name!r} must be a finite number, got {value!r}")
    return v


def _frame(rows: list[dict], columns: list[str], path: Path) -> pd.DataFrame:
    if not rows:
        raise DataError(f"{path}: no records found")
    return pd.DataFrame(rows, columns=columns)


def _find(folder: Path, names: list[str], what: str, dataset: str) -> Path:
    for n in names:
        for cand in (folder / n, folder / (n + ".gz")):
            if cand.is_file():
                return cand
    raise DataError(f"{folder}: no {what} file for --dataset {dataset} (looked for "
                    f"{', '.join(names)}); pass it with the matching --interactions/--items option")


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
        from .assets import asset_path

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


# ----------------------------------------------------------------------------- shared field parsing

_YEAR = re.compile(r"(?<!\d)(1[89]\d\d|20\d\d)(?!\d)")


def _year_of(value) -> str | None:
    """The first plausible 4-digit year in a date-ish value ('Nov 2017', '2018-01-04'), or None."""
    if value is None:
        return None
    m = _YEAR.search(str(value))
    return m.group(1) if m else None


def _id_field(rec: dict, key: str, path: Path, lineno: int) -> str:
    return _id_value(rec.get(key), key, path, lineno)


def _id_value(value, key: str, path: Path, lineno: int) -> str:
    if isinstance(value, bool) or value is None or (isinstance(value, str) and not value.strip()):
        raise DataError(f"{path}:{lineno}: field {key!r} is missing or empty; every record needs one")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, (str, int)):
        raise DataError(f"{path}:{lineno}: field {key!r} must be a string or an integer id, "
                        f"got {value!r}")
    return str(value).strip()


def _int_time(value, path: Path, lineno: int, key: str, iso: bool = False) -> int:
    """Unix seconds from an int (or an integral float / digit string); with ``iso`` also
    an ISO date or date-time string (naive ones are read as UTC)."""
    if isinstance(value, bool) or value is None:
        pass
    elif isinstance(value, int):
        return value
    elif isinstance(value, float) and value.is_integer():
        return int(value)
    elif isinstance(value, str):
        s = value.strip()
        if re.fullmatch(r"[+-]?\d+(\.0*)?", s):
            return int(s.split(".")[0])
        if iso and s:
            try:
                dt = datetime.fromisoformat(s)
            except ValueError:
                pass
            else:
                if dt.tzinfo is None:
                    dt = dt.replace(tzinfo=timezone.utc)
                return int(dt.timestamp())
    want = "an integer (unix seconds) or an ISO date like 2020-01-31" if iso else "an integer (unix seconds)"
    what = "missing" if value is None else f"got {value!r}"
    raise DataError(f"{path}:{lineno}: field {key!r} must be {want}, {what}")


def _rating(value, path: Path, lineno: int, key: str) -> float:
    """A numeric rating; missing/empty/null is NaN (no rating), anything else must be a number."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return float("nan")
    if isinstance(value, bool):
        raise DataError(f"{path}:{lineno}: field {key!r} must be a number, got {value!r}")
    try:
        v = float(value) if isinstance(value, (int, float)) else float(str(value).strip())
    except (ValueError, OverflowError):
        raise DataError(f"{path}:{lineno}: field {key!r} must be a number, got {value!r}") from None
    if not math.isfinite(v) or abs(v) > 3.4e38:      # inf would pass any --min-rating
        raise DataError(f"{path}:{lineno}: field {key!r} must be a finite number, got {value!r}")
    return v


def _dedupe_items(rows: dict[str, list], what: str, notes: list[str]) -> None:
    """Keep the first record of every item id (Amazon 2018 meta and Steam games repeat some)."""
    seen: set[str] = set()
    keep = []
    for i, item in enumerate(rows["item"]):
        if item not in seen:
            seen.add(item)
            keep.append(i)
    dropped = len(rows["item"]) - len(keep)
    if dropped:
        for k in rows:
            rows[k] = [rows[k][i] for i in keep]
        notes.append(f"{what}: {dropped} repeated item record(s) ignored (first one kept)")


def _columns_frame(cols: dict[str, list], path: Path) -> pd.DataFrame:
    if not next(iter(cols.values())):
        raise DataError(f"{path}: no records found")
    return pd.DataFrame(cols)


# ----------------------------------------------------------------------------- Amazon

_JSON_SUFFIXES = (".json", ".json.gz", ".jsonl", ".jsonl.gz")


def _amazon_files(folder: Path, reviews: Path | None, meta: Path | None) -> tuple[Path, Path]:
    """Fill in whichever of (reviews, meta) is None from ``folder``."""
    if not folder.is_dir():
        raise DataError(f"--input {folder}: not a directory; for --dataset amazon pass a folder with "
                        "the reviews and meta_* files, or --interactions REVIEWS --items META")
    files = sorted(p for p in folder.iterdir()
                   if p.is_file() and p.name.lower().endswith(_JSON_SUFFIXES))
    found = {"reviews": [p for p in files if not p.name.startswith("meta_")],
             "meta (meta_*)": [p for p in files if p.name.startswith("meta_")]}
    fix = "pass the files with --interactions REVIEWS.json(.gz) --items meta_*.json(.gz)"
    out = []
    for (what, cands), given in zip(found.items(), (reviews, meta)):
        if given is not None:
            out.append(Path(given))
        elif not cands:
            raise DataError(f"{folder}: no Amazon {what} file (.json/.jsonl, gzip or not); {fix}")
        elif len(cands) > 1:
            raise DataError(f"{folder}: several candidate Amazon {what} files "
                            f"({', '.join(p.name for p in cands)}); {fix}")
        else:
            out.append(cands[0])
    return out[0], out[1]


def _amazon_paths(rec: dict) -> list[list[str]]:
    """2014: ``categories`` = list of paths; 2018: ``category`` = one path."""
    cats = rec.get("categories")
    if isinstance(cats, list) and cats:
        if all(isinstance(p, list) for p in cats):
            return [[str(c) for c in p] for p in cats if p]
        if all(isinstance(c, str) for c in cats):
            return [list(cats)]
    cat = rec.get("category")
    if isinstance(cat, list) and cat and all(isinstance(c, str) for c in cat):
        return [list(cat)]
    if isinstance(cat, str) and cat.strip():
        return [[cat]]
    return []


def load_amazon(input_dir: Path | None = None, interactions: Path | None = None,
                items: Path | None = None, users: Path | None = None) -> RawData:
    """Amazon reviews 2014 (reviews_*.json.gz + Python-literal meta) or 2018 (JSON lines)."""
    if interactions is None or items is None:
        given = interactions or items
        folder = Path(input_dir) if input_dir else (Path(given).parent if given else None)
        if folder is None:
            raise DataError("--dataset amazon needs --input DIR (reviews + meta_* files) "
                            "or --interactions REVIEWS --items META")
        interactions, items = _amazon_files(folder, interactions, items)
    interactions, items = Path(interactions), Path(items)

    cols: dict[str, list] = {"user": [], "item": [], "timestamp": [], "rating": [], "line": []}
    for ln, rec in iter_records(interactions):
        cols["user"].append(_id_field(rec, "reviewerID", interactions, ln))
        cols["item"].append(_id_field(rec, "asin", interactions, ln))
        cols["timestamp"].append(_int_time(rec.get("unixReviewTime"), interactions, ln, "unixReviewTime"))
        cols["rating"].append(_rating(rec.get("overall"), interactions, ln, "overall"))
        cols["line"].append(ln)
    inter_df = _columns_frame(cols, interactions)

    meta: dict[str, list] = {"item": [], "title": [], "paths": [], "year": []}
    for ln, rec in iter_records(items):
        meta["item"].append(_id_field(rec, "asin", items, ln))
        title = rec.get("title")
        meta["title"].append(title if isinstance(title, str) else "")
        meta["paths"].append(_amazon_paths(rec))
        meta["year"].append(_year_of(rec.get("date")) if isinstance(rec.get("date"), str) else None)
    notes: list[str] = []
    _dedupe_items(meta, items.name, notes)
    return RawData(inter_df, _columns_frame(meta, items), None, [interactions, items],
                   drop_top_level=True, unknown_items="drop", require_categories=True, notes=notes)


# ----------------------------------------------------------------------------- Amazon 2023

def _amazon2023_files(folder: Path) -> tuple[Path, Path]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name.split(".")[0] and
                   any(p.name.endswith(e) for e in (".jsonl", ".jsonl.gz", ".json", ".json.gz")))
    meta = [p for p in files if p.name.startswith("meta_")]
    reviews = [p for p in files if not p.name.startswith("meta_")]
    if len(meta) != 1 or len(reviews) != 1:
        raise DataError(f"{folder}: --dataset amazon2023 wants one reviews file (e.g. Movies_and_TV.jsonl) and one "
                        f"meta file (meta_Movies_and_TV.jsonl); found {', '.join(p.name for p in files) or 'none'}; "
                        "pass them with --interactions and --items")
    return reviews[0], meta[0]


def _amazon2023_path(rec: dict, path: Path, ln: int) -> list[list[str]]:
    cats = rec.get("categories")
    if cats not in (None, []) and not (isinstance(cats, list) and all(isinstance(c, str) for c in cats)):
        raise DataError(f"{path}:{ln}: field 'categories' must be a list of names (a path), got {cats!r:.80}")
    cats = [c.strip() for c in cats or [] if c.strip()]
    if len(cats) > 1:
        return [cats[1:]]                  # the first name repeats the file's main category
    main = rec.get("main_category")
    if cats:
        return [cats]
    return [[main.strip()]] if isinstance(main, str) and main.strip() else []


def load_amazon2023(input_dir: Path | None = None, interactions: Path | None = None,
                    items: Path | None = None, users: Path | None = None) -> RawData:
    """Amazon Reviews 2023 (McAuley lab): reviews JSONL (``user_id``, ``parent_asin``,
    ``rating``, ``timestamp`` in milliseconds) and meta JSONL (``parent_asin``, ``title``,
    ``categories`` as one path, ``main_category``, ``details``), gzipped or not. Items are
    ``parent_asin`` (variants of a product are one item, as in the release's benchmarks)."""
    if interactions is None or items is None:
        folder = Path(input_dir) if input_dir else None
        if folder is None:
            raise DataError("--dataset amazon2023 needs --input DIR (reviews + meta_* JSONL) or "
                            "--interactions REVIEWS.jsonl --items META.jsonl")
        found = _amazon2023_files(folder)
        interactions, items = interactions or found[0], items or found[1]
    interactions, items = Path(interactions), Path(items)
    cols: dict[str, list] = {"user": [], "item": [], "timestamp": [], "rating": [], "line": []}
    for ln, rec in iter_records(interactions, literal=False):
        if "parent_asin" not in rec and "reviewerID" in rec:
            raise DataError(f"{interactions}:{ln}: this is an Amazon 2014/2018 review (reviewerID, asin); "
                            "use --dataset amazon")
        cols["user"].append(_id_field(rec, "user_id", interactions, ln))
        cols["item"].append(_id_field(rec, "parent_asin", interactions, ln))
        ts = _int_time(rec.get("timestamp"), interactions, ln, "timestamp")
        if ts < MS_THRESHOLD:
            raise DataError(f"{interactions}:{ln}: field 'timestamp' = {ts} looks like seconds; Amazon 2023 "
                            "reviews give milliseconds (is this another release? try --dataset amazon or generic)")
        cols["timestamp"].append(ts // 1000)
        cols["rating"].append(_rating(rec.get("rating"), interactions, ln, "rating"))
        cols["line"].append(ln)
    inter_df = _columns_frame(cols, interactions)
    meta: dict[str, list] = {"item": [], "title": [], "paths": [], "year": []}
    for ln, rec in iter_records(items, literal=False):
        meta["item"].append(_id_field(rec, "parent_asin", items, ln))
        title = rec.get("title")
        meta["title"].append(title if isinstance(title, str) else "")
        meta["paths"].append(_amazon2023_path(rec, items, ln))
        details = rec.get("details") if isinstance(rec.get("details"), dict) else {}
        when = next((v for k, v in details.items() if "date" in k.lower() or "year" in k.lower()), None)
        meta["year"].append(_year_of(when) if isinstance(when, (str, int)) else None)
    notes: list[str] = []
    _dedupe_items(meta, items.name, notes)
    return RawData(inter_df, _columns_frame(meta, items), None, [interactions, items],
                   unknown_items="drop", require_categories=True, notes=notes)


# ----------------------------------------------------------------------------- Steam


def load_steam(input_dir: Path | None = None, interactions: Path | None = None,
               items: Path | None = None, users: Path | None = None) -> RawData:
    """McAuley-lab Steam (v2): steam_reviews.json(.gz) + steam_games.json(.gz), Python literals."""
    if input_dir is None and (interactions is None or items is None):
        raise DataError("--dataset steam needs --input DIR (with steam_reviews.json.gz, "
                        "steam_games.json.gz) or --interactions and --items")
    folder = Path(input_dir) if input_dir else None
    interactions = Path(interactions) if interactions else _find(
        folder, ["steam_reviews.json", "steam_new.json"], "reviews", "steam")
    items = Path(items) if items else _find(folder, ["steam_games.json"], "games", "steam")

    dates: dict[str, int] = {}
    cols: dict[str, list] = {"user": [], "item": [], "timestamp": [], "rating": [], "line": []}
    for ln, rec in iter_records(interactions):
        user_key = "user_id" if rec.get("user_id") not in (None, "") else "username"
        cols["user"].append(_id_field(rec, user_key, interactions, ln))
        cols["item"].append(_id_field(rec, "product_id", interactions, ln))
        day = rec.get("date")
        ts = dates.get(day) if isinstance(day, str) else None
        if ts is None:
            try:
                d = date.fromisoformat(day.strip())
            except (AttributeError, ValueError):
                what = "missing" if day is None else f"got {day!r}"
                raise DataError(f"{interactions}:{ln}: field 'date' must be a date like 2017-12-17, "
                                f"{what}") from None
            ts = dates[day] = calendar.timegm(d.timetuple())
        cols["timestamp"].append(ts)
        cols["rating"].append(float("nan"))
        cols["line"].append(ln)
    inter_df = _columns_frame(cols, interactions)

    games: dict[str, list] = {"item": [], "title": [], "paths": [], "year": []}
    no_id = 0
    for ln, rec in iter_records(items):
        if rec.get("id") in (None, ""):
            no_id += 1
            continue
        games["item"].append(_id_field(rec, "id", items, ln))
        title = rec.get("app_name") or rec.get("title")
        games["title"].append(title if isinstance(title, str) else "")
        tags = rec.get("genres") or rec.get("tags") or []
        if isinstance(tags, str):
            tags = [tags]
        games["paths"].append([[str(t)] for t in tags if str(t).strip()])
        games["year"].append(_year_of(rec.get("release_date")))
    notes = [f"{items.name}: {no_id} game record(s) without an 'id' skipped"] if no_id else []
    _dedupe_items(games, items.name, notes)
    return RawData(inter_df, _columns_frame(games, items), None, [interactions, items],
                   flat_categories=True, unknown_items="drop", require_categories=True, notes=notes)


# ----------------------------------------------------------------------------- generic

_ALIASES = {
    "user": ["user", "user_id", "userid", "uid", "user id"],
    "item": ["item", "item_id", "itemid", "iid", "item id"],
    "timestamp": ["timestamp", "time", "ts", "datetime", "date"],
    "rating": ["rating", "score"],
    "title": ["title", "name", "item_title"],
    "categories": ["categories", "category", "genres", "tags"],
    "year": ["year", "release_year"],
}
_DELIMS = {",": "comma", ";": "semicolon (';')", "\t": "tab", "|": "'|'"}


def _table_kind(path: Path) -> str:
    name = path.name.lower()
    name = name[:-3] if name.endswith(".gz") else name
    for ext, kind in ((".csv", ","), (".tsv", "\t"), (".jsonl", "json"), (".json", "json")):
        if name.endswith(ext):
            return kind
    raise DataError(f"{path}: unknown file type; --dataset generic reads .csv, .tsv, .jsonl or .json "
                    "(JSON lines), optionally gzipped")


def _read_table(path: Path) -> tuple[list[str], int, Iterator[tuple[int, dict]]]:
    """(column names, line of the header/first record, rows as (line, dict)) of a CSV/TSV/JSONL."""
    kind = _table_kind(path)
    if kind == "json":
        records = iter_records(path, literal=False)
        try:
            first_ln, first = next(records)
        except StopIteration:
            raise DataError(f"{path}: no records found") from None

        def rows():
            yield first_ln, first
            yield from records
        return list(first), first_ln, rows()

    text = iter_text(path)
    reader = csv.reader((line for _, line in text), delimiter=kind)

    def next_row():
        try:
            for row in reader:
                if row and any(c.strip() for c in row):
                    return reader.line_num, row
        except csv.Error as e:
            raise DataError(f"{path}:{reader.line_num}: not valid CSV ({e})") from None
        return None, None

    header_ln, header = next_row()
    if header is None:
        raise DataError(f"{path}: no header line found")
    header = [h.strip() for h in header]
    if len(header) == 1:
        other = [name for d, name in _DELIMS.items() if d != kind and d in header[0]]
        if other:
            raise DataError(f"{path}:{header_ln}: the header has a single column ({header[0]!r}); the file "
                            f"seems {other[0]}-separated, but {'.tsv' if kind == chr(9) else '.csv'} files are read as "
                            f"{_DELIMS[kind]}-separated: convert it to commas (.csv) or tabs (.tsv)")

    def rows():
        while True:
            ln, row = next_row()
            if row is None:
                return
            if len(row) != len(header):
                joined = kind.join(row)
                other = [name for d, name in _DELIMS.items() if d != kind and d in joined]
                hint = f"; the line seems {other[0]}-separated" if other and len(row) < len(header) else ""
                raise DataError(f"{path}:{ln}: expected {len(header)} {_DELIMS[kind]}-separated fields "
                                f"({', '.join(header)}), found {len(row)}{hint}")
            yield ln, dict(zip(header, row))
    return header, header_ln, rows()


# the flag that names a file's columns, per canonical field
_MAP_FLAG = {"user": "--columns", "item": "--columns", "timestamp": "--columns", "rating": "--columns",
             "title": "--item-columns", "categories": "--item-columns", "year": "--item-columns"}


def _resolve(path: Path, columns: list[str], line: int, name: str, required: bool,
             mapping: dict[str, str] | None = None, flag: str | None = None) -> str | None:
    """The actual column for ``name``: the one ``mapping`` names (``--columns``), else a
    case-insensitive alias (RecBole's 'user_id:token' suffixes accepted)."""
    flag = flag or _MAP_FLAG[name]
    if mapping and name in mapping:
        col = mapping[name]
        if col not in columns:
            raise DataError(f"{path}:{line}: {flag} {name}={col}: the file has no column {col!r}"
                            f"{suggest(col, columns)}; its columns: {', '.join(columns)}")
        return col
    norm = {}
    for c in columns:
        norm.setdefault(c.split(":")[0].strip().lower(), c)
    for alias in _ALIASES[name]:
        if alias in norm:
            return norm[alias]
    if required:
        hints = {"item": ("id",), "user": ("user", "id"), "timestamp": ("time", "date"), "title": ("title", "name"),
                 "categories": ("genre", "categ", "tag")}.get(name, (name,))
        guess = next((c for h in hints for c in columns if h in c.lower() and not
                      (name == "item" and "user" in c.lower())), columns[0] if columns else "COLUMN")
        raise DataError(f"{path}:{line}: no {name!r} column (accepted names: "
                        f"{', '.join(_ALIASES[name])}); found columns: {', '.join(columns)}; name yours "
                        f"with {flag} {name}=COLUMN (e.g. {flag} {name}={guess})")
    return None


def parse_column_map(text: str | dict | None, allowed: tuple[str, ...], flag: str) -> dict[str, str]:
    """``"user=userId,item=movieId,time=timestamp"`` (or a dict) -> {canonical: column}.

    >>> parse_column_map("user=userId, time=ts", ("user", "item", "timestamp", "rating"), "--columns")
    {'user': 'userId', 'timestamp': 'ts'}
    """
    if not text:
        return {}
    pairs = list(text.items()) if isinstance(text, dict) else []
    if not pairs:
        for part in str(text).split(","):
            if not part.strip():
                continue
            if "=" not in part:
                raise DataError(f"{flag} {text!r}: each entry is FIELD=COLUMN, e.g. {flag} "
                                f"{allowed[0]}={allowed[0]}_id (fields: {', '.join(allowed)})")
            k, v = part.split("=", 1)
            pairs.append((k, v))
    out = {}
    for k, v in pairs:
        k, v = str(k).strip(), str(v).strip()
        k = {"time": "timestamp", "genres": "categories", "category": "categories"}.get(k, k)
        if k not in allowed:
            raise DataError(f"{flag}: unknown field {k!r}{suggest(k, allowed)}; fields: {', '.join(allowed)}")
        if not v:
            raise DataError(f"{flag}: field {k!r} names no column")
        out[k] = v
    if len(set(out.values())) != len(out):
        raise DataError(f"{flag}: one column is given for two fields ({out})")
    return out


class _Fields:
    """Column names for canonical fields. Required ones are fixed by the header (CSV) or the
    first record (JSON lines); optional ones, in JSON lines, per record (keys may vary)."""

    def __init__(self, path: Path, columns: list[str], line: int, required: tuple[str, ...],
                 optional: tuple[str, ...], mapping: dict[str, str] | None = None, flag: str | None = None):
        self.path, self.optional, self.mapping, self.flag = path, optional, mapping or {}, flag
        if len(set(columns)) != len(columns):
            dup = next(c for c in columns if columns.count(c) > 1)
            raise DataError(f"{path}:{line}: column {dup!r} appears twice in the header; rename one")
        self.key = {n: _resolve(path, columns, line, n, True, self.mapping, flag) for n in required}
        self.fixed = _table_kind(path) != "json"
        self._opt = {tuple(columns): {n: _resolve(path, columns, line, n, False, self.mapping, flag)
                                      for n in optional}}

    def column(self, name: str) -> str | None:
        """The header's column for an optional field (CSV/TSV only), or None."""
        return next(iter(self._opt.values()))[name]

    def opt(self, rec: dict, name: str):
        """The optional field's value, or None when the record has no such column."""
        cols = next(iter(self._opt.values())) if self.fixed else self._opt.get(tuple(rec))
        if cols is None:
            cols = self._opt[tuple(rec)] = {n: (self.mapping[n] if n in self.mapping else
                                                _resolve(self.path, list(rec), 0, n, False))
                                            for n in self.optional}
        key = cols[name]
        return None if key is None else rec.get(key)


def _get(rec: dict, key: str, path: Path, lineno: int, name: str):
    if key not in rec:
        raise DataError(f"{path}:{lineno}: record has no {key!r} field ({name}); every record needs it")
    return rec[key]


def _generic_categories(value, path: Path, lineno: int, sep: str = "|") -> tuple[list[list[str]], str]:
    """(paths, kind): kind is 'flat' for a list of tags, 'paths' otherwise, 'none' if empty."""
    if value is None or (isinstance(value, float) and value != value):
        return [], "none"
    if isinstance(value, str):
        s = value.strip()
        if not s:
            return [], "none"
        if s.startswith("["):
            try:
                value = json.loads(s)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: field 'categories' looks like a JSON list but is not "
                                f"valid JSON ({e.msg}): {s!r}") from None
        else:
            parts = [p.strip() for p in s.split(sep) if p.strip()]
            if sep != "|":              # "A,B,C" with --category-sep ,: tags, not one path
                return [[p] for p in parts], ("flat" if parts else "none")
            return ([parts] if parts else []), "paths"
    if isinstance(value, list):
        if not value:
            return [], "none"
        if all(isinstance(c, str) for c in value):
            return [[c] for c in value if c.strip()], "flat"
        if all(isinstance(p, list) and all(isinstance(c, str) for c in p) for p in value):
            return [list(p) for p in value if p], "paths"
    raise DataError(f"{path}:{lineno}: field 'categories' must be a list of tags, a list of paths "
                    f"(lists of names) or an 'A|B|C' path string, got {value!r}")


def _generic_file(folder: Path | None, stem: str, required: bool) -> Path | None:
    if folder is None:
        return None
    found = [folder / (stem + ext + gz) for ext in (".csv", ".tsv", ".jsonl", ".json") for gz in ("", ".gz")]
    found = [p for p in found if p.is_file()]
    if len(found) > 1:
        raise DataError(f"{folder}: several {stem} files ({', '.join(p.name for p in found)}); "
                        f"keep one or pass it with --{stem}")
    if not found and required:
        raise DataError(f"{folder}: no {stem}.csv or {stem}.jsonl for --dataset generic; "
                        f"pass it with --{stem}")
    return found[0] if found else None


MS_THRESHOLD = 10 ** 11      # unix seconds reach 1e11 in the year 5138: larger integers are ms


def _seconds(times: list[int], lines: list[int], path: Path, key: str, notes: list[str]) -> list[int]:
    """Integer timestamps in seconds or milliseconds, detected per file (mixed units refused)."""
    ms = [t >= MS_THRESHOLD for t in times]
    if not any(ms):
        return times
    if not all(ms):
        minority = min(True, False, key=lambda u: sum(1 for m in ms if m == u))
        i = ms.index(minority)
        raise DataError(f"{path}:{lines[i]}: field {key!r} = {times[i]} is in "
                        f"{'milliseconds' if minority else 'seconds'} but most of the file is in "
                        f"{'seconds' if minority else 'milliseconds'}; convert the file to one unit")
    notes.append(f"{path.name}: timestamps read as milliseconds (all >= {MS_THRESHOLD:.0e})")
    return [t // 1000 for t in times]


def _line_interactions(path: Path, rows, fields: "_Fields", notes: list[str]) -> pd.DataFrame:
    """The line-by-line reader: every field checked, every error names its line."""
    key, interactions = fields.key, path
    cols: dict[str, list] = {"user": [], "item": [], "timestamp": [], "rating": [], "line": []}
    for ln, rec in rows:
        cols["user"].append(_id_value(_get(rec, key["user"], interactions, ln, "user"),
                                      key["user"], interactions, ln))
        cols["item"].append(_id_value(_get(rec, key["item"], interactions, ln, "item"),
                                      key["item"], interactions, ln))
        cols["timestamp"].append(_int_time(_get(rec, key["timestamp"], interactions, ln, "timestamp"),
                                           interactions, ln, key["timestamp"], iso=True))
        cols["rating"].append(_rating(fields.opt(rec, "rating"), interactions, ln, "rating"))
        cols["line"].append(ln)
    cols["timestamp"] = _seconds(cols["timestamp"], cols["line"], interactions, key["timestamp"], notes)
    return _columns_frame(cols, interactions)


def _arrow_interactions(path: Path, header: list[str], header_ln: int, key: dict[str, str],
                        rating: str | None, notes: list[str]) -> pd.DataFrame | None:
    """A plain CSV/TSV log read by pyarrow's block reader straight into columns, with user and
    item ids dictionary-encoded (pandas categoricals).

    Why pyarrow: it is already installed (``datasets`` needs it), reads in parallel blocks
    into compact buffers (a 10M-row log is ~0.3 GB of columns instead of ~3 GB of Python
    strings and ints) and needs no second engine (DuckDB) beside pandas. It is also far less
    careful than the line reader, so anything that reader would treat differently or reject
    (blank or short lines, quoted newlines, ids with spaces, non-integer or out-of-range
    times, non-finite ratings, bad UTF-8, gzip) returns None and the line reader reads the
    file again: it names the exact line and field.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    if path.name.lower().endswith(".gz") or header_ln != 1:
        return None
    wanted = [key["user"], key["item"], key["timestamp"]] + ([rating] if rating else [])
    types = {key["user"]: pa.string(), key["item"]: pa.string(), key["timestamp"]: pa.int64()}
    if rating:
        types[rating] = pa.float64()
    try:
        t = pacsv.read_csv(path, read_options=pacsv.ReadOptions(column_names=header, skip_rows=1,
                                                                 block_size=1 << 24),
                           parse_options=pacsv.ParseOptions(delimiter=_table_kind(path), ignore_empty_lines=False),
                           convert_options=pacsv.ConvertOptions(column_types=types, include_columns=wanted,
                                                                null_values=[""]))
    except (pa.ArrowException, OSError, ValueError):
        return None
    if t.num_rows == 0:
        return None
    for name in (key["user"], key["item"]):
        col = t[name]
        if col.null_count or pc.any(pc.match_substring_regex(col, r"^\s|\s$|^$|[\r\n]")).as_py():
            return None
    ts = t[key["timestamp"]]
    if ts.null_count:
        return None
    ts = ts.to_numpy()
    ms = ts >= MS_THRESHOLD
    if ms.any():
        if not ms.all():
            return None                   # mixed units: the line reader names the odd line
        notes.append(f"{path.name}: timestamps read as milliseconds (all >= {MS_THRESHOLD:.0e})")
        ts = ts // 1000
    if rating:
        col = t[rating].combine_chunks()
        r = col.to_numpy(zero_copy_only=False)     # nulls (empty fields: no rating) become NaN
        v = r[col.is_valid().to_numpy(zero_copy_only=False)] if col.null_count else r
        if not np.isfinite(v).all() or (np.abs(v) > 3.4e38).any():    # "nan", "inf" written out
            return None
    else:
        r = np.full(t.num_rows, np.nan)
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) != b"\n":
            print(f"recalign: warning: {path}: no newline after the last line ({t.num_rows + 1} lines read); "
                  "if the file was cut short that line may be partial: compare the file's size with its "
                  "source's", file=sys.stderr)

    def ids(col) -> pd.Categorical:
        enc = pc.dictionary_encode(col.combine_chunks())
        return pd.Categorical.from_codes(enc.indices.to_numpy(), pd.Index(enc.dictionary.to_pylist(), dtype=object))

    return pd.DataFrame({"user": ids(t[key["user"]]), "item": ids(t[key["item"]]), "timestamp": ts.astype(np.int64),
                         "rating": r.astype(np.float64),
                         "line": np.arange(header_ln + 1, header_ln + 1 + t.num_rows, dtype=np.int64)})


def load_generic(input_dir: Path | None = None, interactions: Path | None = None,
                 items: Path | None = None, users: Path | None = None, columns: str | dict | None = None,
                 item_columns: str | dict | None = None, category_sep: str = "|") -> RawData:
    """Any log: interactions (user, item, timestamp[, rating]) + items (item, title[, categories, year]).

    ``columns`` / ``item_columns`` name the file's columns when they are not the usual names
    (``"user=userId,item=movieId,time=timestamp,rating=rating"``, ``"item=movieId,title=title,
    categories=genres"``); ``category_sep`` splits a category string (``|``: one path
    ``A|B|C``; any other separator: a list of tags). Integer timestamps may be seconds or
    milliseconds (detected; the card notes it) or ISO dates."""
    cmap = parse_column_map(columns, ("user", "item", "timestamp", "rating"), "--columns")
    imap = parse_column_map(item_columns, ("item", "title", "categories", "year"), "--item-columns")
    folder = Path(input_dir) if input_dir else None
    if folder is not None and not folder.is_dir():
        raise DataError(f"--input {folder}: not a directory; pass --interactions and --items instead")
    if folder is None and (interactions is None or items is None):
        raise DataError("--dataset generic needs --input DIR (with interactions.csv|jsonl, "
                        "items.csv|jsonl) or --interactions FILE --items FILE")
    interactions = Path(interactions) if interactions else _generic_file(folder, "interactions", True)
    items = Path(items) if items else _generic_file(folder, "items", True)
    users = Path(users) if users else _generic_file(folder, "users", False)

    header, line, rows = _read_table(interactions)
    fields = _Fields(interactions, header, line, ("user", "item", "timestamp"), ("rating",), cmap, "--columns")
    key = fields.key
    notes: list[str] = []
    inter_df = None
    if fields.fixed:
        inter_df = _arrow_interactions(interactions, header, line, key, fields.column("rating"), notes)
    if inter_df is None:
        inter_df = _line_interactions(interactions, rows, fields, notes)
    del rows

    header, line, rows = _read_table(items)
    fields = _Fields(items, header, line, ("item", "title"), ("categories", "year"), imap, "--item-columns")
    key = fields.key
    meta: dict[str, list] = {"item": [], "title": [], "paths": [], "year": []}
    kinds = set()
    for ln, rec in rows:
        meta["item"].append(_id_value(_get(rec, key["item"], items, ln, "item"), key["item"], items, ln))
        title = rec.get(key["title"])
        meta["title"].append("" if title is None else str(title))
        paths, kind = _generic_categories(fields.opt(rec, "categories"), items, ln, category_sep)
        meta["paths"].append(paths)
        kinds.add(kind)
        year = fields.opt(rec, "year")
        if isinstance(year, float) and year.is_integer():
            year = int(year)
        meta["year"].append(None if year is None or str(year).strip() == "" else str(year).strip())
    items_df = _columns_frame(meta, items)

    user_df = None
    if users is not None:
        header, line, rows = _read_table(users)
        ukey = _resolve(users, header, line, "user", True, cmap, "--columns")
        user_df = pd.DataFrame([{("user" if k == ukey else k): v for k, v in rec.items()} for _, rec in rows])
        if user_df.empty:
            raise DataError(f"{users}: no records found")
        user_df["user"] = user_df["user"].astype(str).str.strip()
    return RawData(inter_df, items_df, user_df,
                   [p for p in (interactions, items, users) if p is not None],
                   flat_categories="flat" in kinds and "paths" not in kinds,
                   unknown_items="error", require_categories=False, notes=notes)


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


# ----------------------------------------------------------------------------- registry

LOADERS: dict[str, Callable[..., RawData]] = {
    "ml-100k": load_ml100k,
    "ml-1m": load_ml1m,
    "amazon": load_amazon,
    "steam": load_steam,
    "generic": load_generic,
    "movielens": load_movielens,
    "amazon2023": load_amazon2023,
}


def load_raw(dataset: str, input_dir: str | os.PathLike | None = None, **files) -> RawData:
    """Read a dataset's files. ``files``: interactions=, items=, users= override discovery."""
    if dataset not in LOADERS:
        raise DataError(f"unknown dataset {dataset!r}{suggest(dataset, LOADERS)}; "
                        f"choose one of {', '.join(LOADERS)}")
    if input_dir is not None and not Path(input_dir).exists():
        raise DataError(f"--input {input_dir}: no such file or directory")
    mapping = {k: files.pop(k) for k in ("columns", "item_columns", "category_sep") if k in files}
    mapping = {k: v for k, v in mapping.items() if v not in (None, "", {}) and not (k == "category_sep" and v == "|")}
    if mapping and dataset != "generic":
        raise DataError(f"--{next(iter(mapping)).replace('_', '-')} is for --dataset generic; {dataset} has a "
                        "fixed layout")
    files = {k: (Path(v) if v is not None else None) for k, v in files.items()}
    return LOADERS[dataset](Path(input_dir) if input_dir is not None else None, **files, **mapping)
