"""The budget greedy of the additive strategies (``pool.fit_in_order``, a ``lax.scan``) takes
exactly the pairs the host loop it replaced took: float64 arithmetic, the same order."""
from __future__ import annotations

import numpy as np
import pytest

from arm_jax.selection import pool


def _host_loop(costs, valid, budget, k_max):
    """The loop ``select_within_budget`` ran before: each valid pair that still fits, in order."""
    picks, left = [], float(budget)
    for j in np.flatnonzero(valid):
        if costs[j] <= left:
            picks.append(int(j))
            left -= costs[j]
            if len(picks) == k_max:
                break
    return picks


@pytest.mark.parametrize("seed", range(6))
def test_scan_takes_what_the_host_loop_took(seed):
    rng = np.random.default_rng(seed)
    n = 300
    # tenths: the running remainder of a float64 budget rounds, so a float32 scan would differ
    costs = rng.integers(1, 30, n) / 10.0 if seed % 2 else rng.uniform(0.05, 3.0, n)
    valid = rng.random(n) < 0.9
    budget = float(rng.uniform(5.0, 60.0))
    for k_max in (1, 7, n):
        taken = pool.fit_in_order(costs, valid, budget, k_max)
        assert np.flatnonzero(taken).tolist() == _host_loop(costs, valid, budget, k_max)


def test_exact_fit_and_nothing_fits():
    costs = np.array([0.1, 0.2, 0.7, 5.0, 0.3])
    assert np.flatnonzero(pool.fit_in_order(costs, np.ones(5, bool), 1.0, 5)).tolist() == _host_loop(
        costs, np.ones(5, bool), 1.0, 5
    )
    assert not pool.fit_in_order(costs, np.ones(5, bool), 0.01, 5).any()
