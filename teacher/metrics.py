"""Ranking metrics from 0-based ranks (full-catalog ranking, one target per user).

>>> import numpy as np
>>> rank_metrics(np.array([0, 1, 10]), ks=(10,))
{'HR@10': 0.6666666666666666, 'NDCG@10': 0.5436432511904858, 'MRR@10': 0.5}
"""
from __future__ import annotations

import numpy as np


def rank_metrics(ranks: np.ndarray, ks=(5, 10, 20)) -> dict[str, float]:
    """HR@K = P(rank < K); NDCG@K = mean 1/log2(rank+2) over hits; MRR@K = mean 1/(rank+1) over hits."""
    ranks = np.asarray(ranks, dtype=np.float64)
    out: dict[str, float] = {}
    for k in ks:
        hit = ranks < k
        out[f"HR@{k}"] = float(hit.mean()) if len(ranks) else 0.0
        out[f"NDCG@{k}"] = float(np.where(hit, 1.0 / np.log2(ranks + 2), 0.0).mean()) if len(ranks) else 0.0
        out[f"MRR@{k}"] = float(np.where(hit, 1.0 / (ranks + 1), 0.0).mean()) if len(ranks) else 0.0
    return out
