"""Reranking metrics over lists (KAR's protocol, REFERENCE.md §2)."""
from __future__ import annotations

import numpy as np


def _rerank_order(scores: np.ndarray) -> np.ndarray:
    """Per row, positions sorted by descending score; ties keep list order (stable)."""
    return np.argsort(-scores, axis=1, kind="stable")


def rerank_metrics(scores, labels, ks=(1, 3, 5, 7), per_list: bool = False) -> dict:
    """Reranking metrics over lists (KAR's protocol, REFERENCE.md §2): NDCG@K and MAP@K.

    ``scores`` and ``labels`` are ``[n_lists, L]``; items are ranked by descending score,
    ties broken by list position (first wins). For list ``j`` with graded labels ``rel``:

    - NDCG@K = DCG@K / IDCG@K with DCG@K = sum_{i<K} (2^rel_i - 1) / log2(i + 2) and
      IDCG@K the DCG@K of the labels sorted in descending order;
    - AP@K = sum_{i<=K} P@i * [rel_i > 0] / min(K, #positives), P@i = positives in the top i / i.

    A list with no positive label gets NDCG@K = 0 and AP@K = 0 **and is still counted** in
    the mean, so the means are over all lists and ``per_list=True`` returns one value per
    list, aligned with the input (what the RLRF4Rec loop needs to score each user's text).

    >>> rerank_metrics([[0.9, 0.1, 0.5]], [[0, 1, 1]], ks=(1, 3))
    {'NDCG@1': 0.0, 'MAP@1': 0.0, 'NDCG@3': 0.6934264036172708, 'MAP@3': 0.5833333333333333}
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.float64)
    if scores.ndim != 2 or scores.shape != labels.shape:
        raise ValueError(f"scores and labels must both be [n_lists, L]; got {scores.shape} and {labels.shape}")
    n, length = scores.shape
    order = _rerank_order(scores)
    rel = np.take_along_axis(labels, order, axis=1)              # labels in ranked order
    gain = np.power(2.0, rel) - 1.0
    ideal = np.power(2.0, -np.sort(-labels, axis=1)) - 1.0
    disc = 1.0 / np.log2(np.arange(length) + 2.0)
    hit = (rel > 0).astype(np.float64)
    n_pos = (labels > 0).sum(1)
    prec = np.cumsum(hit, axis=1) / np.arange(1, length + 1)
    out: dict = {}
    for k in ks:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        kk = min(k, length)
        dcg = (gain[:, :kk] * disc[:kk]).sum(1)
        idcg = (ideal[:, :kk] * disc[:kk]).sum(1)
        ndcg = np.divide(dcg, idcg, out=np.zeros(n), where=idcg > 0)
        denom = np.minimum(k, n_pos).astype(np.float64)
        ap = np.divide((prec[:, :kk] * hit[:, :kk]).sum(1), denom, out=np.zeros(n), where=denom > 0)
        if per_list:
            out[f"NDCG@{k}"], out[f"MAP@{k}"] = ndcg, ap
        else:
            out[f"NDCG@{k}"] = float(ndcg.mean()) if n else 0.0
            out[f"MAP@{k}"] = float(ap.mean()) if n else 0.0
    return out
