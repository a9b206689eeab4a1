"""McAuley-lab Steam: steam_reviews.json(.gz) + steam_games.json(.gz)."""
from __future__ import annotations

import calendar
from datetime import date
from pathlib import Path

from ..util import DataError
from .io import (
    RawData,
    _columns_frame,
    _dedupe_items,
    _find,
    _id_field,
    _year_of,
    iter_records,
)

# ----------------------------------------------------------------------------- Steam


def load_steam(input_dir: Path | None = None, interactions: Path | None = None,
               items: Path | None = None, users: Path | None = None) -> RawData:
    """McAuley-lab Steam (v2): steam_reviews.json(.gz) + steam_games.json(.gz), Python literals."""
    if input_dir is None and (interactions is None or items is None):
        raise DataError("--dataset steam needs --input DIR (with steam_reviews.json.gz, "
                        "steam_games.json.gz) or --interactions and --items")
    folder = Path(input_dir) if input_dir else None
    interactions = Path(interactions) if interactions else _find(
        folder, ["steam_reviews.json", "steam_new.json"], "reviews", "steam")
    items = Path(items) if items else _find(folder, ["steam_games.json"], "games", "steam")

    dates: dict[str, int] = {}
    cols: dict[str, list] = {"user": [], "item": [], "timestamp": [], "rating": [], "line": []}
    for ln, rec in iter_records(interactions):
        user_key = "user_id" if rec.get("user_id") not in (None, "") else "username"
        cols["user"].append(_id_field(rec, user_key, interactions, ln))
        cols["item"].append(_id_field(rec, "product_id", interactions, ln))
        day = rec.get("date")
        ts = dates.get(day) if isinstance(day, str) else None
        if ts is None:
            try:
                d = date.fromisoformat(day.strip())
            except (AttributeError, ValueError):
                what = "missing" if day is None else f"got {day!r}"
                raise DataError(f"{interactions}:{ln}: field 'date' must be a date like 2017-12-17, "
                                f"{what}") from None
            ts = dates[day] = calendar.timegm(d.timetuple())
        cols["timestamp"].append(ts)
        cols["rating"].append(float("nan"))
        cols["line"].append(ln)
    inter_df = _columns_frame(cols, interactions)

    games: dict[str, list] = {"item": [], "title": [], "paths": [], "year": []}
    no_id = 0
    for ln, rec in iter_records(items):
        if rec.get("id") in (None, ""):
            no_id += 1
            continue
        games["item"].append(_id_field(rec, "id", items, ln))
        title = rec.get("app_name") or rec.get("title")
        games["title"].append(title if isinstance(title, str) else "")
        tags = rec.get("genres") or rec.get("tags") or []
        if isinstance(tags, str):
            tags = [tags]
        games["paths"].append([[str(t)] for t in tags if str(t).strip()])
        games["year"].append(_year_of(rec.get("release_date")))
    notes = [f"{items.name}: {no_id} game record(s) without an 'id' skipped"] if no_id else []
    _dedupe_items(games, items.name, notes)
    return RawData(inter_df, _columns_frame(games, items), None, [interactions, items],
                   flat_categories=True, unknown_items="drop", require_categories=True, notes=notes)
