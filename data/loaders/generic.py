"""Any interactions CSV/TSV/JSONL (user, item, timestamp[, rating]) + items CSV/JSONL (item,
title, categories as a list or a '|'-separated path), with a column mapping for other names."""
from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from ..util import DataError, suggest
from .io import (
    MS_THRESHOLD,
    RawData,
    _columns_frame,
    _id_value,
    _int_time,
    _rating,
    iter_records,
    iter_text,
)

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
