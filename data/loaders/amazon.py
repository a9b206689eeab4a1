"""Amazon reviews: the 2014 and 2018 releases (reviews + meta_*, JSON lines, gzip or not; the
2014 meta is one Python literal per line) and the 2023 release."""
from __future__ import annotations

from pathlib import Path

from ..util import DataError
from .io import (
    MS_THRESHOLD,
    RawData,
    _columns_frame,
    _dedupe_items,
    _id_field,
    _int_time,
    _rating,
    _year_of,
    iter_records,
)

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
