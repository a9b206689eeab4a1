"""The shared answer parser and title matcher (rewards/parser.py)."""
from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recalign.data import Catalog, normalize_title
from recalign.data.catalog import title_variants
from recalign.rewards import parse_items, parse_list

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def cat() -> Catalog:
    titles = ["Cape Fear (1991)", "Cape Fear (1962)", "Chasing Amy (1997)", "9 (2009)", "9",
              "2001: A Space Odyssey (1968)", "Heat", "Casino", "Toy Story", "12 Monkeys",
              "Shawshank Redemption, The (1994)", "Here Comes Mr. Jordan", "Airplane!", "Fish & Chips"]
    return Catalog(titles, [["Film"]] * len(titles))


@pytest.mark.parametrize("text, expected", [
    # numbering styles
    ("1. Heat\n2. Casino", ["Heat", "Casino"]),
    ("1) Heat\n2) Casino", ["Heat", "Casino"]),
    ("1 - Heat\n2 - Casino", ["Heat", "Casino"]),
    ("1- Heat\n2 \u2013 Casino", ["Heat", "Casino"]),
    ("(1) Heat\n[2] Casino\n#3 Toy Story\n#4. 12 Monkeys", ["Heat", "Casino", "Toy Story", "12 Monkeys"]),
    ("1.Heat\n2.Casino", ["Heat", "Casino"]),
    ("   1.   Heat   \n\t2.\tCasino\t", ["Heat", "Casino"]),
    # bullets
    ("- Heat\n* Casino\n\u2022 Toy Story\n+ 9", ["Heat", "Casino", "Toy Story", "9"]),
    # quotes, emphasis, trailing (year)/(genre) kept for the matcher
    ('1. "Heat" (1995)\n2. \u201cCasino\u201d\n3. **Toy Story**\n4. *Airplane!* (Comedy)',
     ["Heat (1995)", "Casino", "Toy Story", "Airplane! (Comedy)"]),
    ("1. 'Schindler's List'\n2. 'Til There Was You", ["Schindler's List", "'Til There Was You"]),
    # blank lines, prose before and after a numbered list
    ("Sure! Here are 3 movies you may like:\n\n1. Heat\n\n2. Casino\n3. Toy Story\n\nI hope you enjoy them!",
     ["Heat", "Casino", "Toy Story"]),
    ("Based on your history:\n1. Heat\n   - a tense crime film\n2. Casino", ["Heat", "Casino"]),
    # titles with numbers survive
    ("1. 2001: A Space Odyssey\n2. 9 (2009)\n3. 12 Monkeys\n4. 3.10 to Yuma\n5. 1984",
     ["2001: A Space Odyssey", "9 (2009)", "12 Monkeys", "3.10 to Yuma", "1984"]),
    ("2001: A Space Odyssey\n9 (2009)\n12 Monkeys", ["2001: A Space Odyssey", "9 (2009)", "12 Monkeys"]),
    # duplicated numbering
    ("1. 1. Heat\n2. 2. Casino", ["Heat", "Casino"]),
    ("1. Heat\n1. Casino\n2. Toy Story", ["Heat", "Casino", "Toy Story"]),
    # a list on one line
    ("1. Heat 2. Casino 3. Toy Story", ["Heat", "Casino", "Toy Story"]),
    ("Here you go: 1. Heat 2. Casino", ["Heat", "Casino"]),
    ("Heat, Casino, Toy Story", ["Heat", "Casino", "Toy Story"]),
    ("Heat; Casino, The; Toy Story", ["Heat", "Casino, The", "Toy Story"]),
    ("Here are some movies: Heat, Casino", ["Heat", "Casino"]),
    # plain lines with prose around them
    ("Here are my picks:\nHeat\nCasino\nEnjoy!", ["Heat", "Casino"]),
    ("Heat\r\nCasino\r\n", ["Heat", "Casino"]),
    # nothing to parse
    ("", []), ("\n\n \n", []), ("1.\n2. ", []), ("Sure, here you go.", []),
])
def test_parse_list_table(text, expected):
    assert parse_list(text) == expected


def test_spans_index_the_original_text():
    text = 'Intro line:\n1. "Heat" (1995)\n2) 9 (2009)\r\n3 - Casino'
    items = parse_items(text)
    assert [text[i.start:i.end] for i in items] == ['"Heat" (1995)', "9 (2009)", "Casino"]
    assert [i.title for i in items] == ["Heat (1995)", "9 (2009)", "Casino"]
    # line_end: the newline ending the item's line (or the end of the text)
    assert text[items[0].line_end] == "\n" and text[items[0].line_end - 1] == ")"
    assert text[items[1].line_end] == "\n" and text[items[1].line_end - 1] == "\r"
    assert items[2].line_end == len(text)


def test_inline_list_spans():
    text = "1. Heat 2. Casino 3. Toy Story"
    items = parse_items(text)
    assert [text[i.start:i.end] for i in items] == ["Heat", "Casino", "Toy Story"]
    assert items[-1].line_end == len(text) and items[0].line_end == items[0].end


def test_catalog_helps_unnumbered_answers(cat):
    # a comma inside a catalog title is re-joined; without the catalog it is split
    assert parse_list("Shawshank Redemption, The (1994), Heat", cat) == ["Shawshank Redemption, The (1994)", "Heat"]
    assert parse_list("Shawshank Redemption, The (1994), Heat") == ["Shawshank Redemption", "The (1994)", "Heat"]
    # a single title with a comma stays whole
    assert parse_list("Shawshank Redemption, The (1994)", cat) == ["Shawshank Redemption, The (1994)"]
    # a line that is a catalog title is never taken for prose
    assert parse_list("Sure:\nHere Comes Mr. Jordan\nHeat", cat) == ["Here Comes Mr. Jordan", "Heat"]


@pytest.mark.parametrize("query, expected", [
    ("Cape Fear (1991)", "Cape Fear (1991)"),      # the suffix is part of the catalog title
    ("cape  FEAR (1962)", "Cape Fear (1962)"),
    ("Cape Fear", None),                            # ambiguous base title is not in the catalog
    ("Chasing Amy (1997) [246]", "Chasing Amy (1997)"),
    ("Chasing Amy (1997) (Comedy)", "Chasing Amy (1997)"),
    ("9 (2009)", "9 (2009)"),                       # full string first, not "9"
    ("9 (Animation)", "9"),
    ("2001: A Space Odyssey (1968)", "2001: A Space Odyssey (1968)"),
    ("Heat (1995)", "Heat"),
    ("Heat (Crime) [1995]", "Heat"),
    ("Heat.", "Heat"),
    ("1. Heat", "Heat"),                            # duplicated numbering left in a title
    ("Airplane!", "Airplane!"),
    ("Fish &amp; Chips", "Fish & Chips"),
    ('"Toy Story"', "Toy Story"),
    ("Toy Storyy", None),
    ("", None),
])
def test_find_title_exact(cat, query, expected):
    got = cat.find(query)
    assert (None if got is None else cat.titles[got]) == expected


def test_find_title_fuzzy(cat):
    assert cat.find("Toy Storyy") is None
    assert cat.titles[cat.find("Toy Storyy", fuzzy=True)] == "Toy Story"
    assert cat.titles[cat.find("Casnio (1995)", fuzzy=True)] == "Casino"
    assert cat.find("Completely Different", fuzzy=True) is None


def test_title_variants_order():
    assert title_variants("Chasing Amy (1997) [246]") == ["Chasing Amy (1997) [246]", "Chasing Amy (1997)", "Chasing Amy"]
    assert title_variants("(1995)") == ["(1995)"]


@FAST
@given(st.text(alphabet=st.sampled_from(list("HeatCsinoTy SrX&;\"'*_ \t.!?()[]")), max_size=30))
def test_fast_path_agrees_with_normalised_match(cat, s):
    # Catalog.match tries the casefolded string before normalize_title: never a different item
    keys = [normalize_title(t) for t in cat.titles]
    want = next((i for i in range(1, len(keys)) if keys[i] == normalize_title(s)), None)
    assert cat.match(s) == want


@FAST
@given(st.one_of(st.text(max_size=400), st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
                 st.lists(st.sampled_from(["1. Heat", "2) 9 (2009)", "- Casino", "Sure:", "", "  ", "1.",
                                           "3. 3. Toy", "a, b; c", "\u2022 \u201cX\u201d", "\x00\xff",
                                           "1. A 2. B"]), max_size=30).map("\n".join)))
def test_parse_never_raises_and_spans_are_valid(text):
    items = parse_items(text)
    for it in items:
        assert it.title and it.title == it.title.strip()
        assert 0 <= it.start < it.end <= it.line_end <= len(text)
        assert "\n" not in text[it.start:it.end]
    assert parse_list(text) == [it.title for it in items]


def test_bad_input_types_and_sizes():
    assert parse_list(None) == [] and parse_list(b"1. Heat\n2. Cas\xffino") == ["Heat", "Cas\ufffdino"]
    big = "\n".join(f"{i}. Title {i}" for i in range(1, 5001))
    t0 = time.perf_counter()
    assert len(parse_items(big)) == 5000
    # pathological whitespace / brackets must stay linear
    assert parse_list("a" + " " * 200_000 + "b") == ["a" + " " * 200_000 + "b"]
    assert Catalog(["x"], [["c"]]).find("x" + " (a)" * 50_000) is None
    assert time.perf_counter() - t0 < 5
