import numpy as np
import pytest

from recalign.data import Catalog, DataError, normalize_title

TITLES = ["Toy Story", "Heat", "2001: A Space Odyssey", "9 (2009)", "Se7en", "Amélie", "Beauty &amp; the Beast"]
CATS = [["Comedy", "Animation"], ["Crime", "Thriller"], ["Sci-Fi"], ["Animation"], ["Crime"], ["Comedy"], []]


@pytest.fixture
def cat():
    return Catalog(TITLES, CATS)


@pytest.mark.parametrize("text,expected", [
    ("Toy Story", 1),
    ("  toy   story ", 1),
    ('"Heat"', 2),
    ("“Heat”", 2),
    ("**Heat**", 2),
    ("2001: a space odyssey", 3),
    ("9 (2009)", 4),
    ("AMÉLIE", 6),
    ("Beauty & the Beast", 7),     # the catalog's own HTML entity is unescaped too
    ("Toy Story 2", None),
    ("", None),
    ("Heat (1995)", None),        # exact means exact: no year stripping here
])
def test_exact_match(cat, text, expected):
    assert cat.match(text) == expected


@pytest.mark.parametrize("text,expected", [
    ("Toy Stroy", 1),             # transposition = 2 edits
    ("Se7en!", 5),                # 1 edit
    ("Hea", 2),                   # 1 deletion
    ("Toy Story 2", 1),           # 2 insertions
    ("Toy Story 234", None),      # 4 edits: beyond the Levenshtein-3 radius
    ("Completely different", None),
])
def test_fuzzy_match_within_three_edits(cat, text, expected):
    assert cat.match(text, fuzzy=True) == expected


def test_fuzzy_is_only_used_when_asked(cat):
    assert cat.match("Toy Stroy") is None
    assert cat.match("Toy Stroy", fuzzy=True) == 1


def test_normalize_title():
    assert normalize_title("  The   Matrix ") == "the matrix"
    assert normalize_title("'Heat'") == "heat"


def test_category_membership(cat):
    assert cat.n_items == 7 and len(cat) == 7
    assert cat.items_in("Animation").tolist() == [1, 4]
    assert cat.in_category([1, 2, 4], "Crime").tolist() == [False, True, False]
    mask = cat.category_mask("Comedy")
    assert mask.shape == (8,) and not mask[0]
    assert cat.category_sizes()["Crime"] == 2
    assert cat.membership.dtype == np.bool_


def test_unknown_category_suggests(cat):
    with pytest.raises(DataError, match="did you mean 'Comedy'"):
        cat.category_mask("Comedyy")


def test_from_frame_requires_order():
    import pandas as pd

    items = pd.DataFrame({"item_idx": [2, 1], "item_id": ["b", "a"], "title": ["B", "A"],
                          "categories": [[], []]})
    with pytest.raises(ValueError, match="ordered by item_idx"):
        Catalog.from_frame(items)
