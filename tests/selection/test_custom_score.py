"""A PairScore of your own runs through every driver: the pool, all pairs, within a budget and
sharded (the drivers pass the score object itself to their compiled kernels, not a name), and
they all pick the pairs a float64 NumPy computation of that score picks."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arm_jax.selection import allpairs, fisher, registry
from arm_jax.selection import pool as pool_lib
from arm_jax.selection import sharded as sharded_lib
from arm_jax.selection.scores import PairScore

K_ITEMS, H, K = 16, 5, 6


def tempered_weight(gap):
    """A re-weighted Fisher weight: sqrt(σ(g)σ(−g)), which leans less on near-ties than D-opt."""
    return jnp.sqrt(jax.nn.sigmoid(gap) * jax.nn.sigmoid(-gap))


#: Tempered D-optimality: M = Σ_pool w(gap) x xᵀ + I_past, a pair ranked by w(gap)·xᵀ(M + ρI)⁻¹x.
TEMPERED_DOPT = PairScore(tempered_weight, True, lambda gap, quad: tempered_weight(gap) * quad)


def _sigmoid(t):
    return 1.0 / (1.0 + np.exp(-t))


def reference_scores(diff, beta, past) -> np.ndarray:
    """TEMPERED_DOPT's score of every pair, in float64 NumPy (the drivers' relative ridge)."""
    x, beta, past = (np.asarray(a, np.float64) for a in (diff, beta, past))
    gap, past_gap = x @ beta, past @ beta
    w = np.sqrt(_sigmoid(gap) * _sigmoid(-gap))
    m = (x * w[:, None]).T @ x + (past * (_sigmoid(past_gap) * _sigmoid(-past_gap))[:, None]).T @ past
    m += (fisher.DEFAULT_RIDGE * np.trace(m) / H + fisher.RIDGE_FLOOR) * np.eye(H)
    quad = np.einsum("ij,jk,ik->i", x, np.linalg.inv(m), x)
    return w * quad


@pytest.fixture(scope="module")
def problem():
    """Items, head, labelled pairs, every pair of items (u < v, row-major) and the float64 top k."""
    rng = np.random.default_rng(11)
    phi = rng.standard_normal((K_ITEMS, H)).astype(np.float32)
    beta = rng.standard_normal(H).astype(np.float32)
    past = rng.standard_normal((4, H)).astype(np.float32)
    u, v, diff = allpairs.explicit_pairs(phi)
    reference = reference_scores(diff, beta, past)
    order = np.argsort(-reference)
    # the k-th and (k+1)-th scores are well apart, so float32 cannot reorder the top k
    assert reference[order[K - 1]] > reference[order[K]] * (1 + 1e-3)
    pair_index = {(a, b): i for i, (a, b) in enumerate(zip(np.asarray(u).tolist(), np.asarray(v).tolist()))}
    return dict(phi=phi, beta=beta, past=past, diff=np.asarray(diff), reference=reference,
                top=order[:K].tolist(), pair_index=pair_index)


def _as_pair_indices(chosen, pair_index) -> list[int]:
    return [pair_index[(a, b)] for a, b in zip(np.asarray(chosen.u).tolist(), np.asarray(chosen.v).tolist())]


def _check(picks, scores, problem):
    """The float64 top k, best first, with its scores."""
    assert list(picks) == problem["top"]
    np.testing.assert_allclose(np.asarray(scores, np.float64), problem["reference"][problem["top"]], rtol=1e-4)


def test_the_pool_driver_runs_a_score_of_your_own(problem):
    chosen = pool_lib.select(TEMPERED_DOPT, None, problem["diff"], problem["beta"], K, past_phi_diff=problem["past"])
    _check(np.asarray(chosen.indices).tolist(), chosen.scores, problem)


def test_the_all_pairs_driver_runs_a_score_of_your_own(problem):
    chosen = allpairs.select_all_pairs(
        TEMPERED_DOPT, None, problem["phi"], problem["beta"], K, past_phi_diff=problem["past"], tile=8
    )
    _check(_as_pair_indices(chosen, problem["pair_index"]), chosen.scores, problem)


def test_the_budget_driver_runs_a_score_of_your_own(problem):
    """Unit costs and a budget of k: the k pairs of largest score."""
    n = problem["diff"].shape[0]
    chosen = pool_lib.select_within_budget(
        TEMPERED_DOPT, None, problem["diff"], problem["beta"], np.ones(n), float(K), K, past_phi_diff=problem["past"]
    )
    _check(np.asarray(chosen.indices).tolist(), chosen.scores, problem)


def test_a_named_strategy_of_your_own_is_one_object():
    """The same score gives the same strategy object (its kernels compile once); it says what it can do."""
    strategy = registry.custom_strategy(TEMPERED_DOPT, "tempered_dopt")
    assert registry.custom_strategy(TEMPERED_DOPT, "tempered_dopt") is strategy
    assert registry.resolve(strategy) is strategy and registry.resolve(TEMPERED_DOPT) is registry.resolve(TEMPERED_DOPT)
    assert strategy.drivers == ("pool", "all-pairs", "sharded")
    assert strategy.uses_past and strategy.budget and not strategy.paper and not strategy.response_rule
    hash(strategy)  # a static argument of the compiled kernels


@pytest.mark.multidevice
def test_the_sharded_drivers_run_a_score_of_your_own_over_four_devices(problem):
    if jax.device_count() < 4:
        pytest.skip("needs 4 devices: XLA_FLAGS=--xla_force_host_platform_device_count=4")
    devices = jax.devices()[:4]
    chosen = sharded_lib.sharded_select(
        TEMPERED_DOPT, None, problem["diff"], problem["beta"], K, past_phi_diff=problem["past"], devices=devices
    )
    _check(np.asarray(chosen.indices).tolist(), chosen.scores, problem)
    every = sharded_lib.sharded_select_all_pairs(
        TEMPERED_DOPT, None, problem["phi"], problem["beta"], K, past_phi_diff=problem["past"], tile=8, devices=devices
    )
    _check(_as_pair_indices(every, problem["pair_index"]), every.scores, problem)
