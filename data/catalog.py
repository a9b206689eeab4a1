"""The item catalog: item index <-> unique display title <-> categories.

The catalog is the one place where text is normalised and matched to an item: ``match``
(one string, exact after normalisation, or fuzzy), ``find`` (a title as a model wrote it:
also without a trailing year or genre) and ``verbatim`` (the strict protocol's exact,
case-sensitive title). Rewards, metrics and grounded decoding all go through it so they
agree.

>>> cat = Catalog(["Toy Story", "Heat"], [["Comedy", "Animation"], ["Thriller"]])
>>> cat.match("  toy   STORY ")
1
>>> cat.match("Toy Stroy") is None, cat.match("Toy Stroy", fuzzy=True)
(True, 1)
>>> cat.find("Heat (1995)"), cat.verbatim("heat")
(2, None)
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


_OPEN_FOR = {")": "(", "]": "[", "}": "{"}
LEAD_NUMBER = re.compile(r"(\d{1,6})[.)][^\S\n]+")   # "1. " / "1) " before a title (the parser's too)


def _strip_trailing_group(t: str) -> str | None:
    """``Heat (1995)`` -> ``Heat``; None when ``t`` does not end with a (non-nested)
    bracketed group or nothing would be left. Linear time (no regex backtracking)."""
    s = t.rstrip(" \t.,;:")
    if not s or s[-1] not in _OPEN_FOR:
        return None
    o = s.rfind(_OPEN_FOR[s[-1]])
    if o <= 0:
        return None
    inner = s[o + 1:-1]
    if "(" in inner or ")" in inner or "[" in inner or "]" in inner or "{" in inner or "}" in inner:
        return None
    head = s[:o].rstrip(" \t,;:-\u2013\u2014")
    return head or None


def title_variants(title: str) -> list[str]:
    """What :meth:`Catalog.find` tries, in order: the full title, then with trailing
    ``(...)``/``[...]`` groups stripped one at a time (up to 3), then without trailing ``.,;:``,
    then (for duplicated numbering ``1. 1. Title``) the same without a leading ``N.``.

    >>> title_variants("Chasing Amy (1997) [246]")
    ['Chasing Amy (1997) [246]', 'Chasing Amy (1997)', 'Chasing Amy']
    >>> title_variants("1. Heat.")
    ['1. Heat.', '1. Heat', 'Heat.', 'Heat']
    """
    out = [title]
    for base in (title, None):
        if base is None:
            m = LEAD_NUMBER.match(title)
            if not m:
                break
            base = title[m.end():]
            out.append(base)
        t = base
        for _ in range(3):      # at most 3 trailing groups ("Title (1997) [246] (Comedy)")
            h = _strip_trailing_group(t)
            if h is None:
                break
            t = h
            out.append(t)
        s = t.rstrip(".,;:")
        if s and s != t:
            out.append(s)
    seen: set[str] = set()
    return [v for v in out if v and not (v in seen or seen.add(v))]


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
        self._verbatim: dict[str, int] = {}
        for i, (t, raw) in enumerate(zip(self._norm[1:], self.titles[1:]), 1):
            self._exact.setdefault(t, i)
            self._verbatim.setdefault(raw, i)
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
        if not fuzzy and "&" not in text:
            # a hit on the casefolded string is exactly what normalize_title would give:
            # normalised keys have no outer whitespace/quotes and no whitespace runs
            hit = self._exact.get(text.casefold())
            if hit is not None:
                return hit
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

    def find(self, title: str, fuzzy: bool = False) -> int | None:
        """Item index of a title as a model wrote it, or None: :meth:`match` of the full title
        first, then of each variant of :func:`title_variants` (trailing year/genre dropped, ...);
        with ``fuzzy``, when no variant matches exactly, the nearest title within Levenshtein 3
        of the first variant that has one.

        >>> cat = Catalog(["Cape Fear (1991)", "Heat"], [["Thriller"], ["Crime"]])
        >>> cat.find("Cape Fear (1991)"), cat.find("Heat (1995)")
        (1, 2)
        >>> cat.find("Haet") is None, cat.find("Haet", fuzzy=True)
        (True, 2)
        """
        if not isinstance(title, str) or not title:
            return None
        hit = self.match(title)
        if hit is not None:
            return hit
        variants = title_variants(title)
        for v in variants[1:]:
            hit = self.match(v)
            if hit is not None:
                return hit
        if fuzzy:
            for v in variants:
                hit = self.match(v, fuzzy=True)
                if hit is not None:
                    return hit
        return None

    def verbatim(self, title: str) -> int | None:
        """Item index of exactly this title (case and spacing included), or None: the strict
        protocol's lookup (REFERENCE.md §1.7)."""
        return self._verbatim.get(title)

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
