"""Tests for arm_jax.experiment.metrics against scipy and hand-computed examples."""

import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from arm_jax.experiment.metrics import (
    best_of_n,
    one_minus_spearman,
    rank_average,
    spearman_per_prompt,
)


def test_rank_average_hand_example():
    np.testing.assert_array_equal(np.asarray(rank_average(np.array([10.0, 20.0, 20.0, 5.0]))), [2.0, 3.5, 3.5, 1.0])
    np.testing.assert_array_equal(np.asarray(rank_average(np.array([3, 3, 3]))), [2.0, 2.0, 2.0])


def test_rank_average_matches_rankdata_with_many_ties():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 4, size=(5, 3, 17)).astype(np.float32)  # many ties
    ranks = np.asarray(rank_average(x))
    assert ranks.shape == x.shape and ranks.dtype == np.float32
    np.testing.assert_array_equal(ranks, scipy.stats.rankdata(x, axis=-1))


@settings(max_examples=40, deadline=None)
@given(hnp.arrays(np.int32, (4, 9), elements=st.integers(-3, 3)))
def test_rank_average_matches_rankdata_property(x):
    ranks = np.asarray(rank_average(x))
    np.testing.assert_array_equal(ranks, scipy.stats.rankdata(x, axis=-1))
    # Ranks of each row sum to R(R+1)/2 whatever the ties.
    np.testing.assert_allclose(ranks.sum(-1), 9 * 10 / 2)


def test_rank_average_is_sort_based_not_quadratic():
    # A long row: an R x R comparison matrix would be 10^10 entries.
    x = np.arange(100_000, dtype=np.float32)[::-1].copy()
    ranks = np.asarray(rank_average(x))
    np.testing.assert_array_equal(ranks, np.arange(100_000, 0, -1, dtype=np.float32))


def test_spearman_matches_scipy_with_ties():
    rng = np.random.default_rng(1)
    pred = rng.integers(0, 5, size=(20, 12)).astype(np.float32)
    gold = (pred + rng.integers(-3, 4, size=pred.shape)).astype(np.float32)
    gold[0] = rng.normal(size=12)  # one row without ties
    ours = np.asarray(spearman_per_prompt(pred, gold))
    expected = np.array([scipy.stats.spearmanr(p, g).statistic for p, g in zip(pred, gold)])
    assert ours.shape == (20,)
    np.testing.assert_allclose(ours, expected, atol=1e-5)
    np.testing.assert_allclose(float(one_minus_spearman(pred, gold)), np.mean(1 - expected), atol=1e-5)


def test_spearman_invariants():
    rng = np.random.default_rng(2)
    gold = rng.normal(size=(6, 10)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(spearman_per_prompt(gold, gold)), 1.0, atol=1e-6)
    np.testing.assert_allclose(np.asarray(spearman_per_prompt(-gold, gold)), -1.0, atol=1e-6)
    # Monotone transforms of pred change nothing.
    pred = rng.normal(size=(6, 10)).astype(np.float32)
    np.testing.assert_allclose(
        np.asarray(spearman_per_prompt(np.exp(pred) * 3.0 + 1.0, gold)),
        np.asarray(spearman_per_prompt(pred, gold)),
        atol=1e-6,
    )
    assert float(one_minus_spearman(gold, gold)) == pytest.approx(0.0, abs=1e-6)


def test_spearman_constant_row_is_zero():
    pred = np.array([[1.0, 1.0, 1.0, 1.0], [1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0]], np.float32)
    gold = np.array([[1.0, 2.0, 3.0, 4.0], [5.0, 5.0, 5.0, 5.0], [1.0, 2.0, 3.0, 4.0]], np.float32)
    rho = np.asarray(spearman_per_prompt(pred, gold))
    np.testing.assert_allclose(rho, [0.0, 0.0, -1.0], atol=1e-6)
    assert np.all(np.isfinite(rho))
    assert float(one_minus_spearman(pred, gold)) == pytest.approx((1 + 1 + 2) / 3, abs=1e-6)


def test_best_of_n_hand_example_with_ties():
    pred = np.array(
        [
            [0.1, 0.9, 0.9, 0.5, 2.0],  # N=1: r0; N=3: tie of r1, r2; N=5: r4
            [3.0, 1.0, 4.0, 4.0, 4.0],  # N=1: r0; N=3: r2;          N=5: tie of r2, r3, r4
        ],
        np.float32,
    )
    gold = np.array([[1.0, 2.0, 4.0, 8.0, 16.0], [10.0, 20.0, 30.0, 40.0, 60.0]], np.float32)
    result = np.asarray(best_of_n(pred, gold, (1, 3, 5)))
    expected = [
        (1.0 + 10.0) / 2,
        ((2.0 + 4.0) / 2 + 30.0) / 2,
        (16.0 + (30.0 + 40.0 + 60.0) / 3) / 2,
    ]
    assert result.shape == (3,) and result.dtype == np.float32
    np.testing.assert_allclose(result, expected, rtol=1e-6)
    # Order follows ns; a list works too.
    np.testing.assert_allclose(np.asarray(best_of_n(pred, gold, [5, 1])), [expected[2], expected[0]], rtol=1e-6)


def test_best_of_n_matches_brute_force_and_oracle():
    rng = np.random.default_rng(3)
    gold = rng.normal(size=(30, 8)).astype(np.float32)
    pred = rng.integers(0, 3, size=(30, 8)).astype(np.float32)  # many ties
    ns = (1, 2, 8)
    ours = np.asarray(best_of_n(pred, gold, ns))
    for value, n in zip(ours, ns):
        per_prompt = []
        for p, g in zip(pred[:, :n], gold[:, :n]):
            winners = [i for i in range(n) if p[i] == p.max()]
            per_prompt.append(np.mean(g[winners]))
        assert value == pytest.approx(np.mean(per_prompt), abs=1e-6)
    # A perfect predictor attains the oracle: the mean of the row maxima.
    assert float(best_of_n(gold, gold, (8,))[0]) == pytest.approx(gold.max(1).mean(), abs=1e-6)


def test_best_of_n_errors():
    pred = np.zeros((2, 4), np.float32)
    with pytest.raises(ValueError, match=r"best_of_n: N=5 must be in \[1, R=4\]"):
        best_of_n(pred, pred, (1, 5))
    with pytest.raises(ValueError, match=r"best_of_n: N=0 must be in \[1, R=4\]"):
        best_of_n(pred, pred, (0,))
    with pytest.raises(ValueError, match="best_of_n: ns is empty"):
        best_of_n(pred, pred, ())
    with pytest.raises(ValueError, match=r"must both be \(P, R\), got \(2, 4\) and \(2, 3\)"):
        best_of_n(pred, pred[:, :3], (1,))
