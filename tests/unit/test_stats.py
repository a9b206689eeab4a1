"""Intervals and paired tests against hand-computed cases and known distributions."""
import math

import numpy as np
import pytest

from recalign.data.stats import bootstrap_ci, mcnemar_exact, paired, verdict


def test_identical_inputs_give_p_1_and_an_interval_holding_0():
    rng = np.random.default_rng(1)
    for a in (rng.integers(0, 2, 50).tolist(), rng.random(50).tolist()):
        c = paired(a, a)
        assert c["diff"] == 0 and c["p"] == 1.0 and c["lo"] <= 0 <= c["hi"]
        assert verdict(c) == "no difference"


def test_a_shifted_copy_gives_the_shift():
    a = np.random.default_rng(2).random(80)
    c = paired(a.tolist(), (a + 0.3).tolist())
    assert c["diff"] == pytest.approx(0.3) and c["lo"] == pytest.approx(0.3) and c["hi"] == pytest.approx(0.3)
    assert c["p"] <= 1e-3 and c["test"] == "paired bootstrap" and verdict(c) == "higher"
    assert verdict(paired((a + 0.3).tolist(), a.tolist())) == "lower"


def test_mcnemar_by_hand():
    assert mcnemar_exact([1] * 6, [0] * 6) == pytest.approx(2 / 64)
    # n10 = 3, n01 = 1: 2 * P(X <= 1), X ~ Bin(4, 1/2) = 2 * 5/16
    assert mcnemar_exact([1, 1, 1, 0, 1], [0, 0, 0, 1, 1]) == pytest.approx(10 / 16)
    assert mcnemar_exact([0, 1], [0, 1]) == 1.0
    c = paired([0] * 30, [1] * 6 + [0] * 24)
    assert c["test"] == "McNemar exact" and c["p"] == pytest.approx(2 / 64) and c["diff"] == pytest.approx(0.2)


def test_bootstrap_interval_matches_the_normal_approximation():
    p, n = 0.3, 2000
    x = (np.random.default_rng(3).random(n) < p).astype(int)
    ci = bootstrap_ci(x.tolist())
    half = 1.96 * math.sqrt(x.mean() * (1 - x.mean()) / n)
    assert ci["n"] == n and ci["lo"] < ci["mean"] < ci["hi"]
    assert ci["hi"] - ci["mean"] == pytest.approx(half, abs=0.004)
    assert ci["mean"] - ci["lo"] == pytest.approx(half, abs=0.004)
    assert bootstrap_ci([None, None]) == {"mean": None, "lo": None, "hi": None, "n": 0}


def test_paired_bootstrap_separates_a_real_shift_from_noise():
    rng = np.random.default_rng(4)
    a = rng.normal(size=200)
    assert paired(a.tolist(), (a + rng.normal(0.4, 1.0, 200)).tolist())["p"] < 0.01
    null = [paired(a.tolist(), (a + rng.normal(0.0, 1.0, 200)).tolist(), n_boot=300, seed=s)["p"] for s in range(200)]
    assert 0.02 <= np.mean(np.asarray(null) < 0.05) <= 0.10          # ~5% false positives under the null
    with pytest.raises(ValueError, match="same rows"):
        paired([1, 2], [1])
