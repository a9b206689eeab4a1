"""The one parser for model answers, shared by rewards (training) and metrics (evaluation).

An answer is expected to be a numbered list, one title per line (``1. Title A\\n2. ...``),
but models write other shapes too. :func:`parse_items` reads, in this order of preference:

1. **numbered lines** (``1.``, ``1)``, ``1 -``, ``(1)``, ``[1]``, ``#1``, ``1.Title``): when
   the text has any, only they are items; every other line (prose before/after the list,
   bullets under an item) is ignored. A line holding several numbered items
   (``1. A 2. B 3. C``) is split at the *next* numbers in sequence.
2. **bullet lines** (``-``, ``*``, ``+``, ``•``, ``–``, ...) when there are no numbered ones.
3. **plain lines**: every non-empty line except prose (a line ending with ``:``, a line
   opening like ``Here are`` / ``Sure,`` / ``I hope``, or a sentence of 8+ words ending in
   ``.!?``). When a catalog is given, a line that matches a title is never prose.
   If exactly one line is left it is tried as an inline list: ``1. A 2. B`` numbering,
   else split on ``;`` or else ``,`` (with a catalog, neighbouring pieces are re-joined
   when together they are one title, e.g. ``Shawshank Redemption, The (1994)``).

Titles keep their trailing ``(1995)`` / ``(Comedy)`` / ``[246]``: whether to drop those is
decided by :meth:`Catalog.find`, which tries the full string first and the stripped
variants afterwards, so catalog titles that carry such a suffix (``Cape Fear (1991)``,
``9 (2009)``) keep matching. Quotes and markdown emphasis around a title are removed.

Every item carries character offsets into the original text, so trainers can put a
per-item reward on the tokens of that item's line.

>>> text = 'Sure! Here are 3 movies:\\n1. "Heat" (1995)\\n2) 2001: A Space Odyssey\\n3 - 9 (2009)\\nEnjoy!'
>>> parse_list(text)
['Heat (1995)', '2001: A Space Odyssey', '9 (2009)']
>>> it = parse_items(text)[0]
>>> text[it.start:it.end], text[it.line_end - 1]
('"Heat" (1995)', ')')
>>> parse_list("Toy Story; Heat; Casino")
['Toy Story', 'Heat', 'Casino']
"""
from __future__ import annotations

import math
import re
import weakref
from typing import Any, Mapping, NamedTuple

from recalign.data import Catalog
from recalign.data.catalog import LEAD_NUMBER

__all__ = ["ParsedItem", "parse_items", "parse_items_strict", "parse_answer", "lookup_item", "PARSERS",
           "parse_list", "CatalogIndex", "catalog_index", "as_text",
           "completion_text"]


class ParsedItem(NamedTuple):
    """One item of an answer.

    ``title``: the cleaned title (quotes / markdown emphasis removed, otherwise as
    written). ``text[start:end]``: the raw item text (numbering, bullet and surrounding
    whitespace removed; quotes kept). ``line_end``: offset where the item's line ends
    (the ``\\n`` after it, or ``len(text)``; for items of an inline list, the end of the
    item's piece): the item's reward goes on the token that holds ``text[line_end - 1]``
    (or the newline at ``line_end``).
    """
    title: str
    start: int
    end: int
    line_end: int


# numbering or a bullet at the start of a line (one marker only: "1. 2001: ..." keeps 2001)
_NUM = (r"\#[^\S\n]*\d{1,6}[.):]?(?=\s|$)"                     # #1  #1.
        r"|[(\[]\d{1,6}[)\]](?=\s|$)"                            # (1)  [1]
        r"|\d{1,6}(?:[.)](?=\s|$)|\.(?=[^\d\s.])|[^\S\n]*[-\u2013\u2014](?=\s))")  # 1. 1) 1.X 1 -
_BULLET = r"[-*+\u2022\u00b7\u25cf\u25cb\u25e6\u25aa\u25ab\u25a0\u25a1\u2023\u2043\u2013\u2014>](?=\s|$)"
_MARK = re.compile(rf"[^\S\n]*(?:(?P<num>{_NUM})|(?P<bul>{_BULLET}))?[^\S\n]*")
# a whole numbered line: group 1 = marker, group 2 = the rest of the line
_NUM_LINE = re.compile(rf"^[^\S\n]*({_NUM})[^\S\n]*([^\n]*)", re.M)
_DIGITS = re.compile(r"\d+")
# "N." / "N)" inside a line, preceded by whitespace or the start
_INLINE = re.compile(r"(?<!\S)(\d{1,6})[.)][^\S\n]+")
_PROSE_START = re.compile(
    r"(?:sure\b|certainly\b|of course\b|absolutely\b|okay\b|ok[,.!]|great[,.!]|"
    r"here(?:'s|\u2019s| is| are| you go| they are)\b|based on\b|according to\b|"
    r"i (?:think|hope|recommend|would|suggest|can|have|believe)\b|i['\u2019](?:d|m|ve)\b|"
    r"these (?:are|movies|items|films|titles|recommendations)\b|hope (?:you|this)\b|enjoy[!.]|"
    r"note[:,]|let me\b|below\b|as an\b|you (?:might|may|will|could|should|can)\b|"
    r"if you\b|happy (?:watching|viewing|reading|gaming)\b)", re.I)
_CLOSE = {'"': '"', "'": "'", "\u201c": "\u201d", "\u201d": "\u201d", "\u2018": "\u2019",
          "\u2019": "\u2019", "\u00ab": "\u00bb", "\u201e": "\u201c", "`": "`", "*": "*", "_": "_",
          "\u300c": "\u300d", "\u300e": "\u300f"}
_AFTER_CLOSE = set(" \t([{,;:-.!?\u2013\u2014")


def as_text(text) -> str:
    """Model output as ``str`` (bytes decoded leniently, ``None`` -> empty)."""
    if isinstance(text, str):
        return text
    if text is None:
        return ""
    if isinstance(text, (bytes, bytearray)):
        return bytes(text).decode("utf-8", errors="replace")
    return str(text)


def completion_text(completion: Any) -> str:
    """The answer text of a completion: a string, or a conversational list of messages
    (the last assistant message's content; content given as parts is joined).

    >>> completion_text([{"role": "assistant", "content": [{"type": "text", "text": "1. A"}]}])
    '1. A'
    """
    if isinstance(completion, (list, tuple)):
        msgs = [m for m in completion if isinstance(m, Mapping)]
        chosen = None
        for m in reversed(msgs):
            if m.get("role", "assistant") == "assistant":
                chosen = m
                break
        if chosen is None:
            return ""
        content = chosen.get("content")
        if isinstance(content, (list, tuple)):
            return "".join(as_text(p.get("text", "")) if isinstance(p, Mapping) else as_text(p) for p in content)
        return as_text(content)
    if isinstance(completion, Mapping):
        return as_text(completion.get("content"))
    return as_text(completion)


def _clean(raw: str) -> str:
    """Remove markdown bold and the quotes (or emphasis) around a title, keep its suffix:
    ``"Cape Fear" (1991)`` -> ``Cape Fear (1991)``."""
    t = raw
    if "**" in t:
        t = t.replace("**", "")
    if "__" in t:
        t = t.replace("__", "")
    for _ in range(3):                       # nested quotes/emphasis, a few levels at most
        if not t or t[0] not in _CLOSE:
            break
        close = _CLOSE[t[0]]
        j = t.find(close, 1)
        while j != -1 and j + 1 < len(t) and t[j + 1] not in _AFTER_CLOSE:
            j = t.find(close, j + 1)
        if j == -1:
            break
        t = (t[1:j] + t[j + 1:]).strip()
    return t.strip()


def _is_prose(body: str) -> bool:
    if body.endswith(":") or _PROSE_START.match(body):
        return True
    return body.count(" ") >= 7 and body.rstrip("'\"\u201d\u2019)")[-1:] in (".", "!", "?")


# --------------------------------------------------------------------------- catalog side

class CatalogIndex:
    """What rewards precompute over one catalog (built once, cached per catalog object):
    per-category membership as a byte mask (``mask[item]`` is 1 or 0) and size, and the
    rank-score table. Titles are matched by the catalog itself (:meth:`Catalog.find`)."""

    __slots__ = ("n_items", "_cats", "_rank_table", "__weakref__")

    def __init__(self, catalog: Catalog):
        self.n_items = len(catalog.titles) - 1
        self._cats: dict[str, tuple[bytes, int]] = {}
        self._rank_table: list[float] | None = None

    def category(self, catalog: Catalog, name: str) -> tuple[bytes, int]:
        """(byte mask over items 0..N, category size); unknown name -> DataError (a ValueError)."""
        got = self._cats.get(name)
        if got is None:
            mask = catalog.category_mask(name)
            got = self._cats[name] = (mask.tobytes(), int(mask.sum()))
        return got

    def rank_table(self) -> list[float]:
        """``1/log2(r + 3)`` for ranks r = 0..N (REFERENCE.md §1.3 rank score)."""
        if self._rank_table is None:
            self._rank_table = [1.0 / math.log2(r + 3) for r in range(self.n_items + 1)]
        return self._rank_table


_INDEXES: dict[int, tuple[weakref.ref, CatalogIndex]] = {}


def catalog_index(catalog: Catalog) -> CatalogIndex:
    """The cached :class:`CatalogIndex` of ``catalog`` (dropped when the catalog is)."""
    entry = _INDEXES.get(id(catalog))
    if entry is not None and entry[0]() is catalog:
        return entry[1]
    key = id(catalog)
    idx = CatalogIndex(catalog)
    _INDEXES[key] = (weakref.ref(catalog, lambda _r, k=key: _INDEXES.pop(k, None)), idx)
    return idx


# --------------------------------------------------------------------------- parsing

def _inline_segments(text: str, s: int, e: int, expect: int, need: int) -> list[tuple[int, int]] | None:
    """Split ``text[s:e]`` at markers numbered ``expect, expect+1, ...``. The text before
    the first marker is the first segment when ``need == 1`` (the line's own item), or is
    dropped (prose) when ``need == 2``. None unless at least ``need`` markers are found."""
    cuts: list[tuple[int, int]] = []
    for m in _INLINE.finditer(text, s, e):
        if int(m.group(1)) == expect:
            cuts.append((m.start(), m.end()))
            expect += 1
    if len(cuts) < need:
        return None
    segs = []
    prev = s if need == 1 else None
    for a, b in cuts:
        if prev is not None:
            segs.append((prev, a))
        prev = b
    segs.append((prev, e))
    return segs


def _trim(text: str, a: int, b: int, strip: str | None = None) -> tuple[int, int]:
    piece = text[a:b]
    lead = len(piece) - len(piece.lstrip(strip))
    body = piece.strip(strip)
    return a + lead, a + lead + len(body)


def _split_separated(text: str, s: int, e: int, catalog: Catalog | None) -> list[tuple[int, int]]:
    line = text[s:e]
    sep = ";" if ";" in line else ","
    pieces: list[tuple[int, int]] = []
    a = s
    while a <= e:
        b = text.find(sep, a, e)
        if b == -1:
            b = e
        ps, pe = _trim(text, a, b)
        if pe > ps:
            pieces.append((ps, pe))
        a = b + 1
    if catalog is None or len(pieces) < 2:
        return pieces
    out = []
    i = 0
    while i < len(pieces):
        took = 1
        for j in range(min(i + 4, len(pieces)), i + 1, -1):   # greedy: longest re-joined title
            if catalog.find(_clean(text[pieces[i][0]:pieces[j - 1][1]])) is not None:
                took = j - i
                break
        out.append((pieces[i][0], pieces[i + took - 1][1]))
        i += took
    return out


def parse_items(text, catalog: Catalog | None = None) -> list[ParsedItem]:
    """Parse an answer into items with character spans (see the module docstring).

    Never raises on model output; returns [] when nothing looks like an item. ``catalog``
    (optional) only helps with unnumbered answers: it keeps lines that are titles from
    being taken for prose and re-joins titles that contain the separator.

    >>> [(i.title, i.start, i.end, i.line_end) for i in parse_items("1. Heat\\n2. Casino")]
    [('Heat', 3, 7, 7), ('Casino', 11, 17, 17)]
    >>> parse_list("Here you go: 1. Heat 2. Casino 3. Toy Story")
    ['Heat', 'Casino', 'Toy Story']
    """
    text = as_text(text)
    out: list[ParsedItem] = []
    close = _CLOSE
    new = tuple.__new__
    # numbered lines: when there are any, they are the items (one regex pass)
    for m in _NUM_LINE.finditer(text):
        b, le = m.span(2)
        body = m.group(2).rstrip()
        if body:
            e = b + len(body)
            if body[0].isdigit() or ". " in body or ") " in body:
                _numbered_slow(text, m.group(1), b, e, le, out)
            else:
                title = body if (body[0] not in close and "**" not in body and "__" not in body) \
                    else _clean(body)
                if title:
                    out.append(new(ParsedItem, (title, b, e, le)))
    if out:
        return out

    bul: list[tuple[int, int, int]] = []          # (start, end, line_end)
    plain: list[tuple[int, int, int]] = []
    mark = _MARK.match
    pos = 0
    for line in text.split("\n"):
        le = pos + len(line)
        if line:
            m = mark(line)
            b = m.end()
            body = line[b:].rstrip()
            if body:
                kind = m.lastgroup
                if kind == "bul":
                    bul.append((pos + b, pos + b + len(body), le))
                elif kind is None:
                    plain.append((pos + b, pos + b + len(body), le))
        pos = le + 1

    spans: list[tuple[int, int, int]] = []
    if bul:
        spans = bul
    elif plain:
        if len(plain) == 1:
            cands = plain
        else:
            cands = [p for p in plain
                     if not _is_prose(text[p[0]:p[1]])
                     or (catalog is not None and catalog.find(_clean(text[p[0]:p[1]])) is not None)]
        if len(cands) == 1:
            b, e, le = cands[0]
            segs = _inline_segments(text, b, e, 1, 2)
            if segs is None:
                body = text[b:e]
                if catalog is not None and catalog.find(_clean(body)) is not None:
                    segs = [(b, e)]
                elif ";" in body or "," in body:
                    c = body.find(": ")
                    if _PROSE_START.match(body):
                        # drop a prose lead-in ("Here are some: A, B, C"); a sentence
                        # without one ("Sure, here you go.") holds no items
                        segs = _split_separated(text, b + c + 2, e, catalog) if c > 0 else []
                    else:
                        segs = _split_separated(text, b, e, catalog)
                elif not _is_prose(body):
                    segs = [(b, e)]
                else:
                    segs = []
            for a, z in segs:
                a, z = _trim(text, a, z, " \t,;")
                if z > a:
                    spans.append((a, z, z if z != e else le))
        else:
            spans = cands
    for a, z, le in spans:
        title = _clean(text[a:z])
        if title:
            out.append(new(ParsedItem, (title, a, z, le)))
    return out


def _numbered_slow(text: str, marker: str, b: int, e: int, le: int, out: list) -> None:
    """A numbered line whose body may repeat its number (``3. 3. Title``) or hold more
    numbered items (``1. A 2. B``)."""
    body = text[b:e]
    dm = _DIGITS.search(marker)
    k = int(dm.group()) if dm else None
    if k is not None and body[0].isdigit():
        lm = LEAD_NUMBER.match(body)
        if lm and int(lm.group(1)) == k and lm.end() < len(body):
            b += lm.end()
            body = body[lm.end():]
    segs = None
    if k is not None and (". " in body or ") " in body) and _INLINE.search(body):
        segs = _inline_segments(text, b, e, k + 1, 1)
    if not segs:
        segs = [(b, e)]
    for a, z in segs:
        a, z = _trim(text, a, z)
        if z > a:
            title = _clean(text[a:z])
            if title:
                out.append(tuple.__new__(ParsedItem, (title, a, z, le if z == e else z)))


def parse_list(text, catalog: Catalog | None = None) -> list[str]:
    """Titles of :func:`parse_items`, in order.

    >>> parse_list("1. Toy Story (1995)\\n2. **Heat**\\n3. 'Casino' (Drama)")
    ['Toy Story (1995)', 'Heat', 'Casino (Drama)']
    """
    return [it.title for it in parse_items(text, catalog)]


# --------------------------------------------------------------------------- strict (reclm-gen)

PARSERS = ("lenient", "strict")
_STRICT_IDX = re.compile(r"^(\d+)\. *")


def parse_items_strict(text) -> list[ParsedItem]:
    """The official RecLM-gen parser (REFERENCE.md §1.7): ``text.strip().split("\\n")``, each
    line stripped, one leading ``N. `` removed; every line is an item, prose and blank
    lines included. Titles are then matched exactly and case-sensitively
    (:func:`lookup_item` with ``parser="strict"``).

    >>> [i.title for i in parse_items_strict("Here are 2 movies:\\n1. Heat\\n\\n2. Casino ")]
    ['Here are 2 movies:', 'Heat', '', 'Casino']
    >>> it = parse_items_strict("  1. Heat\\n2. Casino")[1]
    >>> (it.title, it.start, it.end, it.line_end)
    ('Casino', 13, 19, 19)
    """
    text = as_text(text)
    pos = len(text) - len(text.lstrip())
    out: list[ParsedItem] = []
    for line in text.strip().split("\n"):
        le = pos + len(line)
        body = line.strip()
        a = pos + len(line) - len(line.lstrip())
        m = _STRICT_IDX.match(body)
        if m:
            a += m.end()
            body = body[m.end():]
        out.append(ParsedItem(body, a, a + len(body), le))
        pos = le + 1
    return out


def parse_answer(text, catalog: Catalog | None = None, parser: str = "lenient") -> list[ParsedItem]:
    """Items of an answer under a protocol's parser (``lenient``: :func:`parse_items`;
    ``strict``: :func:`parse_items_strict`)."""
    if parser == "strict":
        return parse_items_strict(text)
    if parser != "lenient":
        raise ValueError(f"parser {parser!r}: choose one of {', '.join(PARSERS)}")
    return parse_items(text, catalog)


def lookup_item(catalog: Catalog, title: str, parser: str = "lenient", fuzzy: bool = False) -> int | None:
    """Item index of a parsed title. ``lenient``: :meth:`Catalog.find` (normalised, suffix
    variants); ``strict``: the exact, case-sensitive catalog title. ``fuzzy`` then maps an
    unknown title to the nearest title within Levenshtein 3 (an eval number, never a reward
    under the strict protocol).

    >>> cat = Catalog(["Heat", "Casino"], [["Crime"], ["Crime"]])
    >>> lookup_item(cat, "heat"), lookup_item(cat, "heat", "strict"), lookup_item(cat, "heat", "strict", fuzzy=True)
    (1, None, 1)
    """
    if parser != "strict":
        return catalog.find(title, fuzzy)
    hit = catalog.verbatim(title)
    if hit is None and fuzzy and title:
        hit = catalog.match(title, fuzzy=True)
    return hit
