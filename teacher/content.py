"""Item content embeddings for the teacher (LEARN, REFERENCE.md §4).

Each item's text (rendered from its catalog row by a Jinja template: title, year,
categories and any ``description`` column) is encoded by a frozen language model as the
mean of its last hidden states. The matrix is cached once per (model identity, template,
encoder length, item texts) under ``$RECALIGN_CACHE/content/<key>/`` as
``embeddings.safetensors`` + ``card.json``; the key covers everything that changes a vector,
so a cache made with another model or template is never picked up, and a cache whose card
disagrees with its key is recomputed with a note rather than trusted.

>>> emb, info = item_content(RecDataset.load("runs/ml100k"), "smollm2-135m-instruct")  # doctest: +SKIP
>>> emb.shape, info["items_without_text"]                                           # doctest: +SKIP
((1683, 576), 0)
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from recalign.data.util import DataError, atomic_dir

from .config import DEFAULT_CONTENT_TEMPLATE as DEFAULT_TEMPLATE

# Fields a template may name although a dataset lacks them (they render empty).
OPTIONAL_FIELDS = {"description", "year", "categories", "category"}
CACHE_VERSION = 1


def item_texts(items, template: str = DEFAULT_TEMPLATE) -> list[str]:
    """One text per item (catalog order, items.parquet's frame), padding excluded.

    >>> import pandas as pd
    >>> item_texts(pd.DataFrame({"item_idx": [1], "title": ["Heat"], "year": ["1995"],
    ...                          "categories": [["Action", "Crime"]]}))
    ['Heat (1995). Categories: Action, Crime']
    """
    import jinja2
    from jinja2 import meta
    from jinja2.sandbox import SandboxedEnvironment

    env = SandboxedEnvironment(undefined=jinja2.ChainableUndefined, autoescape=False)
    try:
        names = meta.find_undeclared_variables(env.parse(template))
        tpl = env.from_string(template)
    except jinja2.TemplateSyntaxError as e:
        raise DataError(f"--content-template: {e.message} (line {e.lineno}); it is a Jinja template over "
                        f"item fields such as {{{{ title }}}}") from None
    columns = [c for c in items.columns if c != "item_idx"]
    unknown = sorted(names - set(columns) - OPTIONAL_FIELDS)
    if unknown:
        raise DataError(f"--content-template names {unknown[0]!r}, which is not an item field; "
                        f"fields: {', '.join(columns)}")
    out = []
    for row in items.to_dict("records"):
        row = {k: _plain(v) for k, v in row.items()}
        out.append(" ".join(tpl.render(**row).split()))
    return out


def _plain(v):
    """Parquet gives numpy arrays for list columns and NaN for missing values; Jinja wants
    lists and falsy blanks."""
    if isinstance(v, np.ndarray):
        return [str(x) for x in v.tolist()]
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return None
    return v


def model_identity(path: Path | str) -> str:
    """A cache key part that changes when the model's weights do: its config, and the name,
    size and first/last MiB of each weight file (cheap, and unlike the config's shape it
    tells two same-shaped models apart)."""
    p = Path(path)
    if not p.is_dir():
        return str(path)
    h = hashlib.sha256()
    if (p / "config.json").is_file():
        h.update((p / "config.json").read_bytes())
    for f in sorted(p.glob("*.safetensors")) + sorted(p.glob("*.bin")):
        size = f.stat().st_size
        h.update(f"{f.name}:{size}".encode())
        with open(f, "rb") as fh:
            h.update(fh.read(1 << 20))
            fh.seek(max(0, size - (1 << 20)))
            h.update(fh.read(1 << 20))
    return h.hexdigest()[:24]


def cache_key(model_id: str, template: str, max_length: int, texts: Sequence[str]) -> dict:
    texts_hash = hashlib.sha256("\x1e".join(texts).encode()).hexdigest()
    spec = {"version": CACHE_VERSION, "model": model_id, "template": template, "max_length": max_length,
            "texts_sha256": texts_hash, "n_items": len(texts)}
    spec["key"] = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:20]
    return spec


def item_content(ds, model: str = "smollm2-135m-instruct", template: str = DEFAULT_TEMPLATE,
                 max_length: int = 64, batch_size: int = 32, cache_root: str | Path | None = None,
                 encode: Callable[[list[str]], np.ndarray] | None = None, log=print) -> tuple[np.ndarray, dict]:
    """``[N+1, d]`` float32 content embeddings (row 0 and items without text are zero) and an
    info dict for the card. ``encode`` replaces the language model (tests)."""
    from recalign.data.assets import cache_dir

    texts = item_texts(ds.items, template)
    empty = [i + 1 for i, t in enumerate(texts) if not t.strip()]
    if encode is None:
        from recalign.models.resolve import resolve_model

        model_id = f"{model}|{model_identity(resolve_model(model))}"
    else:
        model_id = f"{model}|{getattr(encode, 'identity', 'custom')}"
    spec = cache_key(model_id, template, max_length, texts)
    where = Path(cache_root or cache_dir() / "content") / spec["key"]
    info = {k: spec[k] for k in ("key", "model", "template", "max_length", "texts_sha256", "n_items")}
    info.update(items_without_text=len(empty), items_without_text_examples=empty[:10], cache=str(where))
    emb = _load(where, spec, log)
    if emb is not None:
        info["cached"] = True
        return emb, info
    t0 = time.perf_counter()
    todo = [t for t in texts if t.strip()]
    vecs = encode(todo) if encode is not None else _encode_lm(todo, model, max_length, batch_size)
    dim = vecs.shape[1] if len(todo) else 1
    emb = np.zeros((len(texts) + 1, dim), dtype=np.float32)
    rows = np.array([i + 1 for i, t in enumerate(texts) if t.strip()], dtype=np.int64)
    if len(rows):
        emb[rows] = vecs
    info.update(cached=False, encode_seconds=round(time.perf_counter() - t0, 2),
                items_per_second=round(len(todo) / max(time.perf_counter() - t0, 1e-9), 1))
    _save(where, emb, spec, info)
    return emb, info


def _encode_lm(texts: list[str], model: str, max_length: int, batch_size: int) -> np.ndarray:
    from tqdm.auto import tqdm

    from recalign.models.encoder import KnowledgeEncoder

    enc = KnowledgeEncoder(model, batch_size=batch_size, max_length=max_length)
    # sorted by length so that a batch pads little; a tqdm step per batch
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = np.zeros((len(texts), enc.dim), dtype=np.float32)
    for s in tqdm(range(0, len(order), batch_size), desc="encoding items", unit="batch", mininterval=2.0):
        idx = order[s:s + batch_size]
        out[idx] = enc.encode([texts[i] for i in idx])
    return out


def _load(where: Path, spec: dict, log) -> np.ndarray | None:
    card, file = where / "card.json", where / "embeddings.safetensors"
    if not (card.is_file() and file.is_file()):
        return None
    try:
        saved = json.loads(card.read_text())
        from safetensors.numpy import load_file

        emb = load_file(str(file))["embeddings"]
    except Exception as e:  # a torn or foreign file: say so and rebuild, never trust it
        log(f"content cache {where}: unreadable ({type(e).__name__}); recomputing")
        return None
    diff = [k for k in ("version", "model", "template", "max_length", "texts_sha256", "n_items")
            if saved.get(k) != spec[k]]
    if diff or emb.shape[0] != spec["n_items"] + 1:
        log(f"content cache {where}: made with another {', '.join(diff) or 'item count'}; recomputing")
        return None
    return emb


def _save(where: Path, emb: np.ndarray, spec: dict, info: dict) -> None:
    from safetensors.numpy import save_file

    from recalign.data.util import write_json

    with atomic_dir(where, overwrite=True) as tmp:
        save_file({"embeddings": emb}, str(tmp / "embeddings.safetensors"))
        write_json(tmp / "card.json", {**spec, **{k: v for k, v in info.items() if k not in spec}})


def standardize(emb: np.ndarray) -> np.ndarray:
    """Centre and scale each dimension over the items that have text, then shrink by
    sqrt(d) so that an item's vector has about unit norm. Mean-pooled LM states share a large
    common direction (anisotropy) that would otherwise dominate every dot product, and unit
    rows make the projected content part start at the id embedding's scale instead of
    sqrt(d) times it; zero rows (padding, no text) stay zero."""
    emb = emb.astype(np.float32, copy=True)
    have = np.abs(emb).sum(1) > 0
    if have.sum() < 2:
        return emb
    mu, sd = emb[have].mean(0), emb[have].std(0) + 1e-6
    emb[have] = (emb[have] - mu) / sd / np.sqrt(emb.shape[1])
    return emb
