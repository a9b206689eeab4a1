"""Ranking metrics from 0-based ranks (full-catalog ranking, one target per user).

>>> import numpy as np
>>> rank_metrics(np.array([0, 1, 10]), ks=(10,))
{'HR@10': 0.6666666666666666, 'NDCG@10': 0.5436432511904858, 'MRR@10': 0.5}
"""
from __future__ import annotations

import math

import numpy as np


def position_scores(pos: int) -> dict[str, float]:
    """HR, NDCG and MRR of one list whose target sits at 0-based ``pos`` (-1: not in it).

    The one definition of these metrics in recalign: the teacher's full ranking
    (:func:`rank_metrics`), the LLM's lists (``eval/metrics.py``) and the reference rows of
    a report all use it.

    >>> position_scores(0), position_scores(-1)
    ({'HR': 1, 'NDCG': 1.0, 'MRR': 1.0}, {'HR': 0, 'NDCG': 0.0, 'MRR': 0.0})
    """
    if pos < 0:
        return {"HR": 0, "NDCG": 0.0, "MRR": 0.0}
    return {"HR": 1, "NDCG": 1.0 / math.log2(pos + 2), "MRR": 1.0 / (pos + 1)}


def rank_metrics(ranks: np.ndarray, ks=(5, 10, 20)) -> dict[str, float]:
    """HR@K = P(rank < K); NDCG@K = mean 1/log2(rank+2) over hits; MRR@K = mean 1/(rank+1)
    over hits: :func:`position_scores` of each rank cut at K, vectorised."""
    ranks = np.asarray(ranks, dtype=np.float64)
    out: dict[str, float] = {}
    for k in ks:
        hit = ranks < k
        out[f"HR@{k}"] = float(hit.mean()) if len(ranks) else 0.0
        out[f"NDCG@{k}"] = float(np.where(hit, 1.0 / np.log2(ranks + 2), 0.0).mean()) if len(ranks) else 0.0
        out[f"MRR@{k}"] = float(np.where(hit, 1.0 / (ranks + 1), 0.0).mean()) if len(ranks) else 0.0
    return out
