"""Confidence intervals and paired tests for evaluation metrics (per-row values in, numbers out).

Every metric in a report is a mean over test rows, so its uncertainty is the rows': a 95%
percentile bootstrap over rows (fixed seed, so a report is reproducible). Two models on the
same rows are compared by the paired difference: a paired bootstrap of the per-row
differences (its interval and a two-sided p-value), and for 0/1 metrics (HR, CPA,
CorrectCount) McNemar's exact test on the discordant rows.

>>> lo_hi = bootstrap_ci([0, 1, 1, 0, 1, 1, 0, 1])
>>> round(lo_hi["mean"], 3), lo_hi["n"]
(0.625, 8)
>>> paired([1, 0, 1], [1, 0, 1])["p"]
1.0
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

N_BOOT = 2000
SEED = 0


def _clean(values: Sequence) -> np.ndarray:
    return np.asarray([float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))],
                      dtype=np.float64)


def bootstrap_ci(values: Sequence, n_boot: int = N_BOOT, seed: int = SEED, level: float = 0.95) -> dict:
    """Mean of ``values`` (None skipped) with a percentile bootstrap interval over rows.

    Returns ``{"mean", "lo", "hi", "n"}``; an empty input gives ``n`` 0 and None elsewhere.
    """
    x = _clean(values)
    if x.size == 0:
        return {"mean": None, "lo": None, "hi": None, "n": 0}
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(1)
    a = (1 - level) / 2
    return {"mean": float(x.mean()), "lo": float(np.quantile(means, a)), "hi": float(np.quantile(means, 1 - a)),
            "n": int(x.size)}


def mcnemar_exact(a: Sequence, b: Sequence) -> float:
    """Two-sided exact McNemar p-value for paired 0/1 outcomes (binomial on discordant pairs).

    >>> mcnemar_exact([1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0])
    0.03125
    """
    x, y = np.asarray(a, dtype=int), np.asarray(b, dtype=int)
    n10, n01 = int(((x == 1) & (y == 0)).sum()), int(((x == 0) & (y == 1)).sum())
    n = n10 + n01
    if n == 0:
        return 1.0
    k = min(n10, n01)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return float(min(1.0, 2 * tail))


def paired(a: Sequence, b: Sequence, n_boot: int = N_BOOT, seed: int = SEED, level: float = 0.95,
           binary: bool | None = None) -> dict:
    """Paired comparison of ``b`` against ``a`` on the same rows (``b - a``).

    Returns ``{"diff", "lo", "hi", "p", "n", "test"}``: the mean difference, its percentile
    bootstrap interval, and a two-sided p-value (McNemar exact for 0/1 data unless
    ``binary=False``, else the paired bootstrap's: the share of resampled mean differences,
    centred on the observed one, at least as far from 0 as the observed one). Rows where
    either side is None are dropped. Identical inputs give diff 0 and p 1.
    """
    if len(a) != len(b):
        raise ValueError(f"paired: {len(a)} and {len(b)} values; compare the same rows")
    pairs = [(float(x), float(y)) for x, y in zip(a, b) if x is not None and y is not None]
    if not pairs:
        return {"diff": None, "lo": None, "hi": None, "p": None, "n": 0, "test": None}
    x, y = np.asarray(pairs).T
    d = y - x
    rng = np.random.default_rng(seed)
    boots = d[rng.integers(0, d.size, size=(n_boot, d.size))].mean(1)
    alpha = (1 - level) / 2
    obs = float(d.mean())
    if binary is None:
        binary = bool(np.isin(x, (0.0, 1.0)).all() and np.isin(y, (0.0, 1.0)).all())
    if binary:
        p, test = mcnemar_exact(x, y), "McNemar exact"
    else:
        centred = boots - obs
        p = 1.0 if obs == 0 else float(max((np.abs(centred) >= abs(obs)).mean(), 1 / n_boot))
        test = "paired bootstrap"
    return {"diff": obs, "lo": float(np.quantile(boots, alpha)), "hi": float(np.quantile(boots, 1 - alpha)),
            "p": p, "n": int(d.size), "test": test}


def verdict(c: dict) -> str:
    """How a comparison reads: a change only when its interval excludes 0."""
    if c.get("diff") is None:
        return "–"
    if c["lo"] <= 0 <= c["hi"]:
        return "no difference"
    return "higher" if c["diff"] > 0 else "lower"
