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

import os
from pathlib import Path
from typing import Callable

from ..util import DataError, suggest
from .amazon import load_amazon, load_amazon2023
from .generic import load_generic, parse_column_map
from .io import RawData
from .movielens import load_ml1m, load_ml100k, load_movielens
from .steam import load_steam

__all__ = ["RawData", "LOADERS", "load_raw", "parse_column_map", "load_ml100k", "load_ml1m", "load_movielens",
           "load_amazon", "load_amazon2023", "load_steam", "load_generic"]

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
