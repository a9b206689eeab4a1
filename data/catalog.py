"""The item catalog: item index <-> unique display title <-> categories.

``Catalog.match`` is the one place where text is normalised and matched to an item;
rewards, metrics and grounded decoding all go through it so they agree.

>>> cat = Catalog(["Toy Story", "Heat"], [["Comedy", "Animation"], ["Thriller"]])
>>> cat.match("  toy   STORY ")
1
>>> cat.match("Toy Stroy") is None, cat.match("Toy Stroy", fuzzy=True)
(True, 1)
>>> cat.in_category([1, 2], "Animation").tolist()
[True, False]
"""
from __future__ import annotations

import html
import re
from typing import Iterable, Sequence

import numpy as np

_WS = re.compile(r"\s+")
_QUOTES = "\"'“”‘’«»`*_"


def normalize_title(text: str) -> str:
    """Casefold, unescape HTML, collapse whitespace, strip wrapping quotes/markdown emphasis."""
    t = _WS.sub(" ", html.unescape(text)).strip().strip(_QUOTES).strip()
    return t.casefold()


class Catalog:
    """Items are 1-based (index 0 is padding, as in the teacher's embedding table)."""

    def __init__(self, titles: Sequence[str], categories: Sequence[Sequence[str]],
                 item_ids: Sequence[str] | None = None):
        if len(titles) != len(categories):
            raise ValueError("titles and categories must have the same length")
        self.titles: list[str] = [""] + list(titles)
        self.item_ids: list[str] = [""] + [str(i) for i in (item_ids or range(1, len(titles) + 1))]
        self.item_categories: list[list[str]] = [[]] + [list(c) for c in categories]
        names: dict[str, int] = {}
        for cats in self.item_categories:
            for c in cats:
                names.setdefault(c, len(names))
        self.categories: list[str] = list(names)
        self._cat_index = names
        n = len(self.titles)
        self.membership = np.zeros((len(names), n), dtype=bool)   # [C, N+1]
        for i, cats in enumerate(self.item_categories):
            for c in cats:
                self.membership[names[c], i] = True
        self._norm = [normalize_title(t) for t in self.titles]
        self._exact: dict[str, int] = {}
        for i, t in enumerate(self._norm[1:], 1):
            self._exact.setdefault(t, i)
        self._choices = None

    @classmethod
    def from_frame(cls, items) -> "Catalog":
        """From items.parquet's frame (rows ordered by item_idx 1..N)."""
        idx = items["item_idx"].to_numpy()
        if not np.array_equal(idx, np.arange(1, len(items) + 1)):
            raise ValueError("items frame must be ordered by item_idx 1..N")
        return cls(list(items["title"]), [list(c) for c in items["categories"]], list(items["item_id"]))

    def __len__(self) -> int:
        """Number of real items (excluding padding)."""
        return len(self.titles) - 1

    @property
    def n_items(self) -> int:
        return len(self.titles) - 1

    def title(self, item: int) -> str:
        return self.titles[item]

    def match(self, text: str, fuzzy: bool = False, max_distance: int = 3) -> int | None:
        """Item index for ``text``: exact after normalisation; nearest title within
        Levenshtein ``max_distance`` only when ``fuzzy``; otherwise None."""
        key = normalize_title(text)
        hit = self._exact.get(key)
        if hit is not None or not fuzzy or not key:
            return hit
        from rapidfuzz import process
        from rapidfuzz.distance import Levenshtein

        if self._choices is None:
            self._choices = {i: t for i, t in enumerate(self._norm) if i}
        res = process.extractOne(key, self._choices, scorer=Levenshtein.distance,
                                 score_cutoff=max_distance)
        return None if res is None else int(res[2])

    def category_index(self, name: str) -> int:
        try:
            return self._cat_index[name]
        except KeyError:
            from .util import DataError, suggest

            raise DataError(f"unknown category {name!r}{suggest(name, self._cat_index)}") from None

    def category_mask(self, name: str) -> np.ndarray:
        """Boolean mask over item indices 0..N (padding is never in a category)."""
        return self.membership[self.category_index(name)]

    def in_category(self, items: Iterable[int], name: str) -> np.ndarray:
        return self.category_mask(name)[np.asarray(list(items), dtype=np.int64)]

    def items_in(self, name: str) -> np.ndarray:
        return np.flatnonzero(self.category_mask(name))

    def category_sizes(self) -> dict[str, int]:
        return dict(zip(self.categories, self.membership.sum(axis=1).tolist()))
