"""The trained teacher, queried in-process and batched.

>>> t = Teacher.load("runs/teacher")                          # doctest: +SKIP
>>> t.topk([[1, 50, 172]], k=10, include="Sci-Fi")            # doctest: +SKIP
[array([ 181,  258, ...])]
>>> t.rank([[1, 50, 172]], [[181, 7]])                        # doctest: +SKIP
[array([  0, 311])]
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from recalign.data import Catalog, DataError, RecDataset

from .sasrec import SASRec, SASRecConfig, left_pad

CategoryArg = str | Sequence[str | None] | None


class Teacher:
    def __init__(self, model: SASRec, catalog: Catalog | None = None, batch_size: int = 512):
        self.model = model.eval()
        self.catalog = catalog
        self.batch_size = batch_size
        if catalog is not None and catalog.n_items != model.cfg.n_items:
            raise DataError(f"teacher was trained on {model.cfg.n_items} items but the catalog has "
                            f"{catalog.n_items}; use the dataset directory the teacher was trained on")

    @classmethod
    def load(cls, path: str | Path, data: str | Path | RecDataset | None = None) -> "Teacher":
        """Load ``model.safetensors`` + ``config.json``; the catalog comes from ``data`` or
        from the dataset directory recorded at training time."""
        from safetensors.torch import load_file

        path = Path(path)
        if not (path / "model.safetensors").is_file() or not (path / "config.json").is_file():
            raise DataError(f"{path}: not a teacher directory (needs model.safetensors and config.json); "
                            "create it with `recalign teacher train --data DIR --out DIR`")
        redo = "train it again with `recalign teacher train --data DIR --out DIR --overwrite`"
        try:
            conf = json.loads((path / "config.json").read_text())
            model = SASRec(SASRecConfig(**conf["model"]))
        except (ValueError, TypeError, KeyError, RecursionError) as e:
            raise DataError(f"{path / 'config.json'}: not a teacher config ({type(e).__name__}: "
                            f"{str(e)[:120]}); {redo}") from None
        try:
            model.load_state_dict(load_file(str(path / "model.safetensors")))
        except Exception as e:  # safetensors' and torch's errors on a damaged or foreign file
            raise DataError(f"{path / 'model.safetensors'}: cannot load the teacher's weights "
                            f"({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}); {redo}") from None
        catalog = None
        if data is not None:
            ds = data if isinstance(data, RecDataset) else RecDataset.load(data)
            _check_same_data(path, ds)
            catalog = ds.catalog
        else:
            from recalign.data.util import card_path

            where = card_path(conf.get("data"), path)
            if where is not None and where.is_dir():
                ds = RecDataset.load(where)
                _check_same_data(path, ds)          # prepared again in place since?
                catalog = ds.catalog
        return cls(model, catalog)

    @property
    def n_items(self) -> int:
        return self.model.cfg.n_items

    @torch.no_grad()
    def item_scores(self, batch: Sequence[Sequence[int]]) -> torch.Tensor:
        """[B, N+1] next-item scores for one batch of histories (padding = -inf)."""
        return self.model.item_logits(self.model(left_pad(batch, self.model.cfg.max_len, trim=True))[:, -1])

    def scores(self, histories: Sequence[Sequence[int]]) -> torch.Tensor:
        """[B, N+1] scores for all histories (memory grows with B x items: prefer topk/rank)."""
        out = [self.item_scores(histories[i:i + self.batch_size]) for i in range(0, len(histories), self.batch_size)]
        return torch.cat(out) if out else torch.zeros(0, self.n_items + 1)

    def _cat_masks(self, cats: Sequence[str | None], none_means: bool = True) -> torch.Tensor:
        """[B, N+1] membership masks; a None category is all-True (``none_means``) or all-False.
        Built by gathering rows of a small stack of the batch's distinct categories (a batch
        names a few dozen at most), not by stacking one numpy mask per row."""
        if self.catalog is None:
            raise DataError("category filters need the catalog: Teacher.load(path, data=DATASET_DIR)")
        slot = {c: i for i, c in enumerate(dict.fromkeys(cats))}
        fill = np.full(self.n_items + 1, none_means, dtype=bool)
        stack = torch.from_numpy(np.stack([self.catalog.category_mask(c) if c is not None else fill
                                           for c in slot]))
        return stack[torch.tensor([slot[c] for c in cats], dtype=torch.long)]

    def topk(self, histories: Sequence[Sequence[int]], k: int, exclude_history: bool = True,
             exclude: Sequence[Sequence[int]] | None = None, include: CategoryArg = None,
             exclude_category: CategoryArg = None) -> list[np.ndarray]:
        """Top-``k`` items per history, best first.

        exclude_history: drop the history's own items; exclude: extra items per row;
        include: keep only items of category C (one name, or one per row, None = no filter);
        exclude_category: drop items of category C. A row with fewer than ``k`` allowed
        items returns fewer.
        """
        return self.topk_many(histories, k, [dict(exclude_history=exclude_history, exclude=exclude,
                                                  include=include, exclude_category=exclude_category)])[0]

    @torch.no_grad()
    def topk_many(self, histories: Sequence[Sequence[int]], k: int, queries: Sequence[dict]) -> list[list[np.ndarray]]:
        """Several :meth:`topk` queries (dicts of its keyword arguments) on the same histories
        with one forward pass; work and memory stay per batch (``batch_size`` x items)."""
        n = len(histories)
        per_row = []
        for q in queries:
            q = {"exclude_history": True, "exclude": None, "include": None, "exclude_category": None, **q}
            for key in ("include", "exclude_category"):
                if isinstance(q[key], str):
                    q[key] = [q[key]] * n
                elif q[key] is not None and len(q[key]) != n:
                    raise ValueError(f"got {len(q[key])} categories for {n} histories")
            per_row.append(q)
        out: list[list[np.ndarray]] = [[] for _ in queries]
        # Two [batch, N+1] buffers reused across batches: a fresh 40 MB tensor per batch costs
        # as much in page faults as the matmul that fills it (measured at 20k items).
        rows = min(n, self.batch_size)
        base_buf = torch.empty(rows, self.n_items + 1)
        work_buf = torch.empty(rows, self.n_items + 1) if len(per_row) > 1 else None
        items = self.model.output_vectors()
        for i in range(0, n, self.batch_size):
            hb = histories[i:i + self.batch_size]
            h = self.model.user_vectors(self.model(left_pad(hb, self.model.cfg.max_len, trim=True))[:, -1])
            base = torch.mm(h, items.T, out=base_buf[:len(hb)])
            base[:, 0] = float("-inf")                                  # padding, as item_logits does
            for qi, q in enumerate(per_row):
                # every query but the last works on a copy; the last may spoil the base
                s = work_buf[:len(hb)].copy_(base) if qi < len(per_row) - 1 else base
                if q["exclude_history"]:
                    _mask_items(s, hb)
                if q["exclude"] is not None:
                    _mask_items(s, q["exclude"][i:i + self.batch_size])
                # masked_fill_ is one pass; s[mask] = -inf first lists the mask's true cells
                if q["include"] is not None:
                    s.masked_fill_(self._cat_masks(q["include"][i:i + self.batch_size]).logical_not_(),
                                   float("-inf"))
                if q["exclude_category"] is not None:
                    s.masked_fill_(self._cat_masks(q["exclude_category"][i:i + self.batch_size], none_means=False),
                                   float("-inf"))
                vals, idx = s.topk(min(k, s.shape[1]), dim=1)
                finite, idx = torch.isfinite(vals).numpy(), idx.numpy()
                out[qi].extend(row[ok] for row, ok in zip(idx, finite))
        return out

    def rank_all(self, histories: Sequence[Sequence[int]], mask_history: bool = True) -> np.ndarray:
        """[B, N+1] int32: every item's 0-based full-catalog rank for each history (column 0,
        the padding index, and history items when masked get rank N). One call per reward
        batch turns into O(1) lookups per generated item.

        >>> t.rank_all([[1, 2]])[0, 1]                       # doctest: +SKIP
        1682
        """
        s = self.scores(histories)
        n = s.shape[1] - 1
        s[:, 0] = float("-inf")
        if mask_history:
            for r, h in enumerate(histories):
                if len(h):
                    s[r, torch.as_tensor(np.asarray(h, dtype=np.int64))] = float("-inf")
        order = torch.argsort(s, dim=1, descending=True, stable=True)
        ranks = torch.empty_like(order)
        ranks.scatter_(1, order, torch.arange(s.shape[1]).expand_as(order))
        out = ranks.numpy().astype(np.int32)
        out[~torch.isfinite(s).numpy()] = n
        return out

    def rank(self, histories: Sequence[Sequence[int]], items: Sequence[Sequence[int]],
             mask_history: bool = True) -> list[np.ndarray]:
        """0-based full-catalog rank of each given item for its history.

        With ``mask_history`` the history's items are removed from the ranking (an item that
        is itself in the history gets rank = number of catalog items, i.e. worst).
        """
        s = self.scores(histories)
        n = s.shape[1] - 1
        out = []
        for r, (h, its) in enumerate(zip(histories, items)):
            row = s[r].clone()
            if mask_history and len(h):
                row[torch.tensor(np.asarray(h, dtype=np.int64))] = float("-inf")
            its = torch.tensor(np.asarray(its, dtype=np.int64))
            if len(its) == 0:
                out.append(np.zeros(0, dtype=np.int64))
                continue
            if int(its.min()) < 1 or int(its.max()) > n:
                raise ValueError(f"item indices must be in 1..{n}")
            v = row[its]
            sorted_row, _ = torch.sort(row, descending=True)
            # rank = number of items scoring strictly higher (searchsorted on the negated row)
            ranks = torch.searchsorted(-sorted_row, -v, right=False)
            ranks[~torch.isfinite(v)] = n
            out.append(ranks.numpy())
        return out


def _check_same_data(teacher_dir: Path, ds: RecDataset) -> None:
    """A teacher scores item indices of the dataset it was trained on; another dataset with
    the same item count would be accepted by shape alone and give silently wrong labels."""
    card = teacher_dir / "card.json"
    if not card.is_file():
        return
    try:
        want = (json.loads(card.read_text()).get("inputs") or {}).get("sequences")
    except ValueError:
        raise DataError(f"{card}: not valid JSON; retrain the teacher with `recalign teacher train`") from None
    if want and want != ds.fingerprint():
        raise DataError(f"{teacher_dir}: this teacher was trained on other data than {ds.path or 'the given dataset'} "
                        "(the sequences' hash in its card.json differs); use the dataset it was trained on, "
                        "or train a teacher on this one with `recalign teacher train --data DIR`")


def _mask_items(scores: torch.Tensor, items_per_row) -> None:
    """Set ``scores[r, i] = -inf`` for every item i of row r, in one indexing call."""
    lens = [len(x) for x in items_per_row]
    if not sum(lens):
        return
    rows = np.repeat(np.arange(len(lens)), lens)
    cols = np.concatenate([np.asarray(x, dtype=np.int64) for x in items_per_row if len(x)])
    scores[torch.from_numpy(rows), torch.from_numpy(cols)] = float("-inf")
