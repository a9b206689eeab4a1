"""RLRF4Rec's knowledge prompts (REFERENCE.md §2): the LLM is asked for a user's preferences
from their rated history (``templates/knowledge_user.jinja``) and for an item's facts
(``templates/knowledge_item.jinja``); without an LLM, items are described by their metadata."""
from __future__ import annotations

from typing import Sequence

import numpy as np

FACTORS = ["genre", "director/actors", "time period/country", "character", "plot/theme", "mood/tone",
           "critical acclaim", "production quality", "soundtrack"]
SYSTEM = "You are an expert in movies and in people's tastes."


def user_prompts(ds, users: Sequence[int], cut: dict, history_len: int) -> list[list[dict]]:
    """The knowledge prompt per user: description (where the data has one) and the last
    ``history_len`` rated items before ``cut[u]`` (valid/test items never appear)."""
    from recalign.templates.render import Renderer

    r = Renderer()
    desc = {}
    if ds.users is not None:
        cols = [c for c in ("age", "gender", "occupation") if c in ds.users.columns]
        for row in ds.users[["user_idx", *cols]].itertuples(index=False):
            desc[int(row[0])] = {c: v for c, v in zip(cols, row[1:]) if v is not None and str(v) != "nan"}
    titles = ds.catalog.titles
    cats = ds.items.set_index("item_idx")["categories"].to_dict() if "categories" in ds.items.columns else {}
    top = float(np.nanmax(np.concatenate(ds.ratings))) if ds.ratings is not None else 5.0
    out = []
    for u in users:
        n = cut[u]
        seq = ds.sequences[u][:n][-history_len:]
        rat = ds.ratings[u][:n][-history_len:] if ds.ratings is not None else [top] * len(seq)
        hist = [{"title": titles[i], "rating": float(x), "categories": list(cats.get(int(i), ()))}
                for i, x in zip(seq, rat)]
        text = r.render("knowledge_user.jinja", user=desc.get(int(u), {}), history=hist,
                        max_rating=int(top), factors=FACTORS)
        out.append([{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}])
    return out


def item_prompts(ds) -> list[list[dict]]:
    from recalign.templates.render import Renderer

    r = Renderer()
    out = []
    for row in ds.items.itertuples(index=False):
        year = getattr(row, "year", None)
        cats = list(getattr(row, "categories", ()))
        text = r.render("knowledge_item.jinja", title=row.title, year=year if year and str(year) != "nan" else None,
                        categories=cats, factors=FACTORS)
        out.append([{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}])
    return out


def item_metadata_texts(ds) -> list[str]:
    """Item facts without an LLM: "Title (year): genre, genre" (index 0 = padding, empty)."""
    out = [""]
    for row in ds.items.itertuples(index=False):
        year = getattr(row, "year", None)
        cats = ", ".join(getattr(row, "categories", ()))
        out.append(f"{row.title}" + (f" ({year})" if year and str(year) != "nan" else "") + (f": {cats}" if cats else ""))
    return out
