"""A prepared dataset directory, loaded: catalog, per-user sequences, leave-one-out split.

>>> ds = RecDataset.load("runs/ml100k")                # doctest: +SKIP
>>> hist, target = ds.split_examples("test")          # doctest: +SKIP
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .catalog import Catalog
from .util import DataError, sha256_file

SPLITS = ("train", "valid", "test")


def _read_parquet(file: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(file)
    except Exception as e:  # pyarrow's errors on a damaged file are deep and many-typed
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise DataError(f"{file}: not a readable parquet file ({first}); prepare the dataset again "
                        "(`recalign data prepare --out DIR --overwrite`)") from None


@dataclass
class RecDataset:
    items: pd.DataFrame
    sequences: list[np.ndarray]          # per user_idx, item indices in time order
    users: pd.DataFrame | None = None
    ratings: list[np.ndarray] | None = None
    card: dict | None = None
    path: Path | None = None

    @classmethod
    def load(cls, path: str | Path) -> "RecDataset":
        path = Path(path)
        need = ["items.parquet", "sequences.parquet"]
        missing = [n for n in need if not (path / n).is_file()]
        if missing:
            raise DataError(f"{path}: not a prepared dataset directory (missing {', '.join(missing)}); "
                            "create it with `recalign data prepare --out DIR`")
        items = _read_parquet(path / "items.parquet")
        seqs = _read_parquet(path / "sequences.parquet").sort_values("user_idx")
        users = _read_parquet(path / "users.parquet") if (path / "users.parquet").is_file() else None
        card = None
        if (path / "card.json").is_file():
            try:
                card = json.loads((path / "card.json").read_text())
            except (ValueError, RecursionError):
                raise DataError(f"{path / 'card.json'}: not valid JSON; prepare the dataset again "
                                "(`recalign data prepare --out DIR --overwrite`)") from None
        return cls(items=items,
                   sequences=[np.asarray(s, dtype=np.int64) for s in seqs["items"]],
                   users=users,
                   ratings=[np.asarray(r, dtype=np.float32) for r in seqs["ratings"]],
                   card=card, path=path)

    @classmethod
    def from_sequences(cls, sequences: list, titles: list[str] | None = None,
                       categories: list[list[str]] | None = None, n_items: int | None = None) -> "RecDataset":
        """An in-memory dataset (tests, the RecBole benchmark's exact ordering)."""
        seqs = [np.asarray(s, dtype=np.int64) for s in sequences]
        n = n_items or int(max(int(s.max()) for s in seqs))
        titles = titles or [f"item {i}" for i in range(1, n + 1)]
        categories = categories or [[] for _ in range(n)]
        items = pd.DataFrame({"item_idx": np.arange(1, n + 1), "item_id": [str(i) for i in range(1, n + 1)],
                              "title": titles, "categories": categories,
                              "category": [c[-1] if c else None for c in categories]})
        return cls(items=items, sequences=seqs)

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def n_users(self) -> int:
        return len(self.sequences)

    @property
    def user_ids(self) -> list[str]:
        """Original user ids by user index (the index as a string when the data has none)."""
        return (list(self.users["user_id"].astype(str)) if self.users is not None
                else [str(u) for u in range(self.n_users)])

    @property
    def catalog(self) -> Catalog:
        if not hasattr(self, "_catalog"):
            self._catalog = Catalog.from_frame(self.items)
        return self._catalog

    def train_sequences(self) -> list[np.ndarray]:
        """Each user's training part, ``seq[:-2]`` (REFERENCE.md §1.1)."""
        return [s[:-2] for s in self.sequences]

    def split_examples(self, split: str) -> tuple[list[np.ndarray], np.ndarray]:
        """(full histories, targets) for the leave-one-out validation or test position.

        valid: history ``seq[:-2]`` -> ``seq[-2]``; test: ``seq[:-1]`` -> ``seq[-1]``.
        Windowing to the model's max length is the consumer's job.
        """
        if split == "valid":
            return [s[:-2] for s in self.sequences], np.array([s[-2] for s in self.sequences])
        if split == "test":
            return [s[:-1] for s in self.sequences], np.array([s[-1] for s in self.sequences])
        raise ValueError(f"split must be 'valid' or 'test', got {split!r}")

    def fingerprint(self) -> str:
        """Hash of the sequences file (provenance for downstream stages)."""
        if self.path is not None:
            return sha256_file(self.path / "sequences.parquet")
        import hashlib

        h = hashlib.sha256()
        for s in self.sequences:
            h.update(s.tobytes() + b"|")
        return h.hexdigest()
