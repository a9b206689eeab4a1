"""What every format reader shares: :class:`RawData`, line/record readers that name the file and
line of every error, and the field parsers (ids, times, ratings, years)."""
from __future__ import annotations

import ast
import gzip
import io
import json
import math
import re
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import pandas as pd

from ..util import DataError


MS_THRESHOLD = 10 ** 11      # unix seconds reach 1e11 in the year 5138: larger integers are ms


@dataclass
class RawData:
    """One dataset as read from disk, before any filtering.

    interactions: columns user, item (str), timestamp (int64), rating (float, NaN if none),
        line (int, position in the source file: the tie-break for equal timestamps).
    items: columns item (str), title (str), paths (list of category paths, each a list of
        names, shallow to deep), year (str or None).
    users: column user (str) plus attribute columns, or None.
    flat_categories: True when categories are genre tags rather than a hierarchy
        (MovieLens, Steam): prepare then orders them rarest-last so that "deepest last"
        still means "most specific last".
    drop_top_level: drop the first element of every path (Amazon's "Movies & TV").
    unknown_items: "error" (the item table is complete, so an unknown id is a mistake)
        or "drop" (meta files are known to be incomplete).
    """

    interactions: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame | None
    files: list[Path]
    flat_categories: bool = False
    drop_top_level: bool = False
    unknown_items: str = "error"
    require_categories: bool = False
    notes: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- reading


def _open_binary(path: Path):
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")
    with open(path, "rb") as f:
        magic = f.read(2)
    return gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")


def open_text(path: Path, encoding: str = "utf-8") -> io.TextIOBase:
    """Open a text file, gzip or not, with errors reported as DataError."""
    return io.TextIOWrapper(_open_binary(path), encoding=encoding, newline="")


def iter_text(path: Path, encoding: str = "utf-8") -> Iterator[tuple[int, str]]:
    """(1-based line number, decoded line with its newline), gzip or not.

    Lines are decoded one at a time so a bad byte is reported on its own line (a
    TextIOWrapper decodes 8 KiB chunks and would blame an earlier line). A last line without
    its newline is read, with a warning on stderr: a file cut short in a copy or download
    usually ends mid-line, and a cut line may still parse.
    """
    path = Path(path)
    last = (0, b"\n")
    with _open_binary(path) as f:
        try:
            for lineno, raw in enumerate(f, 1):
                if raw.strip():
                    last = (lineno, raw)
                try:
                    line = raw.decode(encoding)
                except UnicodeDecodeError as e:
                    raise DataError(f"{path}:{lineno}: not valid {encoding} text ({e.reason} at byte "
                                    f"{e.start + 1} of the line); re-encode the file as {encoding}") from None
                if lineno == 1 and line.startswith("\ufeff"):
                    line = line[1:]
                yield lineno, line
        except (OSError, EOFError, gzip.BadGzipFile) as e:
            raise DataError(f"{path}: cannot read the file ({e}); is the gzip file truncated?") from None
    if not last[1].endswith(b"\n"):
        print(f"recalign: warning: {path}: no newline after the last line ({last[0]} lines read); if the "
              "file was cut short that line may be partial: compare the file's size with its source's",
              file=sys.stderr)


def iter_lines(path: Path, encoding: str = "utf-8") -> Iterator[tuple[int, str]]:
    """(1-based line number, line without newline); skips blank lines."""
    for lineno, line in iter_text(path, encoding):
        line = line.rstrip("\r\n")
        if line.strip():
            yield lineno, line


def iter_records(path: Path, literal: bool | None = None) -> Iterator[tuple[int, dict]]:
    """One dict per line from JSON lines or Python-literal lines (Amazon 2014 meta, Steam).

    ``literal=None`` tries JSON first and falls back to ``ast.literal_eval`` per line.
    """
    for lineno, line in iter_lines(path):
        rec = None
        if literal is not True:
            try:
                rec = json.loads(line)
            except RecursionError:
                raise DataError(f"{path}:{lineno}: JSON nested too deeply to read; "
                                "each line must be one flat record") from None
            except json.JSONDecodeError as e:
                if literal is False:
                    raise DataError(f"{path}:{lineno}: not valid JSON ({e.msg} at column {e.colno}); "
                                    "each line must be one JSON object") from None
        if rec is None:
            try:
                rec = ast.literal_eval(line)
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                raise DataError(f"{path}:{lineno}: neither a JSON object nor a Python literal; "
                                "each line must hold one record") from None
        if not isinstance(rec, dict):
            raise DataError(f"{path}:{lineno}: expected an object per line, got {type(rec).__name__}")
        yield lineno, rec


def read_delimited(path: Path, sep: str, columns: list[str], encoding: str = "utf-8",
                   header: bool = False, min_fields: int | None = None) -> list[tuple[int, list[str]]]:
    """Split each line on ``sep`` and check the field count; returns (line, fields)."""
    need = min_fields or len(columns)
    rows = []
    for lineno, line in iter_lines(path, encoding):
        if header and not rows and lineno == 1:
            rows.append((0, []))  # marker: header consumed
            continue
        parts = line.split(sep)
        if len(parts) < need:
            seen = {"\t": "tab", ",": "comma", "|": "'|'", "::": "'::'"}
            other = [name for s, name in seen.items() if s != sep and s in line]
            hint = f"; the line looks {other[0]}-separated" if other else ""
            raise DataError(f"{path}:{lineno}: expected {need} {seen.get(sep, repr(sep))}-separated "
                            f"fields ({', '.join(columns)}), found {len(parts)}{hint}")
        rows.append((lineno, parts))
    return [r for r in rows if r[0] != 0]


def to_int(value: str, path: Path, lineno: int, field_name: str) -> int:
    try:
        v = int(float(value)) if "." in value or "e" in value.lower() else int(value)
    except (ValueError, OverflowError):
        raise DataError(f"{path}:{lineno}: field {field_name!r} must be an integer, "
                        f"got {value!r}") from None
    if not -(2 ** 63) < v < 2 ** 63:
        raise DataError(f"{path}:{lineno}: field {field_name!r} = {value!r} is out of range "
                        "(a 64-bit integer; timestamps are seconds or milliseconds)")
    return v


def to_float(value: str, path: Path, lineno: int, field_name: str) -> float:
    try:
        v = float(value)
    except ValueError:
        raise DataError(f"{path}:{lineno}: field {field_name!r} must be a number, got {value!r}") from None
    if not math.isfinite(v) or abs(v) > 3.4e38:      # stored as float32
        raise DataError(f"{path}:{lineno}: field {field_name!r} must be a finite number, got {value!r}")
    return v


def _frame(rows: list[dict], columns: list[str], path: Path) -> pd.DataFrame:
    if not rows:
        raise DataError(f"{path}: no records found")
    return pd.DataFrame(rows, columns=columns)


def _find(folder: Path, names: list[str], what: str, dataset: str) -> Path:
    for n in names:
        for cand in (folder / n, folder / (n + ".gz")):
            if cand.is_file():
                return cand
    raise DataError(f"{folder}: no {what} file for --dataset {dataset} (looked for "
                    f"{', '.join(names)}); pass it with the matching --interactions/--items option")




# ----------------------------------------------------------------------------- shared field parsing

_YEAR = re.compile(r"(?<!\d)(1[89]\d\d|20\d\d)(?!\d)")


def _year_of(value) -> str | None:
    """The first plausible 4-digit year in a date-ish value ('Nov 2017', '2018-01-04'), or None."""
    if value is None:
        return None
    m = _YEAR.search(str(value))
    return m.group(1) if m else None


def _id_field(rec: dict, key: str, path: Path, lineno: int) -> str:
    return _id_value(rec.get(key), key, path, lineno)


def _id_value(value, key: str, path: Path, lineno: int) -> str:
    if isinstance(value, bool) or value is None or (isinstance(value, str) and not value.strip()):
        raise DataError(f"{path}:{lineno}: field {key!r} is missing or empty; every record needs one")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, (str, int)):
        raise DataError(f"{path}:{lineno}: field {key!r} must be a string or an integer id, "
                        f"got {value!r}")
    return str(value).strip()


def _int_time(value, path: Path, lineno: int, key: str, iso: bool = False) -> int:
    """Unix seconds from an int (or an integral float / digit string); with ``iso`` also
    an ISO date or date-time string (naive ones are read as UTC)."""
    if isinstance(value, bool) or value is None:
        pass
    elif isinstance(value, int):
        return value
    elif isinstance(value, float) and value.is_integer():
        return int(value)
    elif isinstance(value, str):
        s = value.strip()
        if re.fullmatch(r"[+-]?\d+(\.0*)?", s):
            return int(s.split(".")[0])
        if iso and s:
            try:
                dt = datetime.fromisoformat(s)
            except ValueError:
                pass
            else:
                if dt.tzinfo is None:
                    dt = dt.replace(tzinfo=timezone.utc)
                return int(dt.timestamp())
    want = "an integer (unix seconds) or an ISO date like 2020-01-31" if iso else "an integer (unix seconds)"
    what = "missing" if value is None else f"got {value!r}"
    raise DataError(f"{path}:{lineno}: field {key!r} must be {want}, {what}")


def _rating(value, path: Path, lineno: int, key: str) -> float:
    """A numeric rating; missing/empty/null is NaN (no rating), anything else must be a number."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return float("nan")
    if isinstance(value, bool):
        raise DataError(f"{path}:{lineno}: field {key!r} must be a number, got {value!r}")
    try:
        v = float(value) if isinstance(value, (int, float)) else float(str(value).strip())
    except (ValueError, OverflowError):
        raise DataError(f"{path}:{lineno}: field {key!r} must be a number, got {value!r}") from None
    if not math.isfinite(v) or abs(v) > 3.4e38:      # inf would pass any --min-rating
        raise DataError(f"{path}:{lineno}: field {key!r} must be a finite number, got {value!r}")
    return v


def _dedupe_items(rows: dict[str, list], what: str, notes: list[str]) -> None:
    """Keep the first record of every item id (Amazon 2018 meta and Steam games repeat some)."""
    seen: set[str] = set()
    keep = []
    for i, item in enumerate(rows["item"]):
        if item not in seen:
            seen.add(item)
            keep.append(i)
    dropped = len(rows["item"]) - len(keep)
    if dropped:
        for k in rows:
            rows[k] = [rows[k][i] for i in keep]
        notes.append(f"{what}: {dropped} repeated item record(s) ignored (first one kept)")


def _columns_frame(cols: dict[str, list], path: Path) -> pd.DataFrame:
    if not next(iter(cols.values())):
        raise DataError(f"{path}: no records found")
    return pd.DataFrame(cols)
