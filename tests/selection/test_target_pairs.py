"""The target-aware S of the I-optimal rules (``--target-pairs in-prompt``): its definition
against a float64 enumeration of the pairs, a hand-computed case where it changes the pick, and
every driver ranking by the same S."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arm_jax.errors import InputError
from arm_jax.selection import allpairs, batch, registry
from arm_jax.selection import pool as pool_lib
from arm_jax.selection import scores as strategies
from arm_jax.selection import sharded as sharded_lib
from arm_jax.selection.catalog import CATALOG

SPREAD_RULES = [info.name for info in CATALOG if info.spread]


def _enumerated(phi, group, valid):
    """½ · mean of x xᵀ over unordered same-group pairs of valid items, in float64, pair by pair."""
    phi = np.asarray(phi, np.float64)
    acc, n = np.zeros((phi.shape[1],) * 2), 0
    for u, v in itertools.combinations(range(phi.shape[0]), 2):
        if valid[u] and valid[v] and group[u] == group[v]:
            x = phi[u] - phi[v]
            acc += np.outer(x, x)
            n += 1
    return 0.5 * acc / max(n, 1)


def _spread(phi, group, valid):
    return np.asarray(strategies.prompt_spread(jnp.asarray(phi, jnp.float32), jnp.asarray(group), jnp.asarray(valid)))


@pytest.mark.parametrize("kind", ["healthy", "offset 1e3", "tiny 1e-4", "rank-deficient"])
def test_prompt_spread_is_the_mean_over_in_prompt_pairs(kind):
    rng = np.random.default_rng(3)
    phi = rng.standard_normal((13, 5))
    if kind == "offset 1e3":  # a large common offset: naive n·ΣφφT − s sT cancels badly in float32
        phi = phi + 1e3
    elif kind == "tiny 1e-4":
        phi = phi * 1e-4
    elif kind == "rank-deficient":
        phi = rng.standard_normal((13, 2)) @ rng.standard_normal((2, 5))
    group = np.array([0, 0, 0, 1, 1, 2, 3, 3, 3, 3, 12, 12, 12], np.int32)  # a singleton, an unused id
    valid = np.ones(13, bool)
    valid[4] = False  # leaves group 1 a singleton
    ref = _enumerated(phi.astype(np.float32), group, valid)
    np.testing.assert_allclose(_spread(phi, group, valid), ref, rtol=2e-4, atol=1e-6 * np.abs(ref).max())


def test_one_group_is_every_pair_and_no_pair_is_zero():
    rng = np.random.default_rng(4)
    phi = rng.standard_normal((9, 3)).astype(np.float32)
    ones = np.ones(9, bool)
    np.testing.assert_allclose(_spread(phi, np.zeros(9, np.int32), ones), _enumerated(phi, np.zeros(9), ones),
                               rtol=1e-5, atol=1e-7)
    assert np.all(_spread(phi, np.arange(9, dtype=np.int32), ones) == 0.0)  # every prompt has one item


def test_equals_the_candidates_spread_when_the_candidates_are_every_in_prompt_pair():
    """The two S agree where they should: on candidates that are exactly the in-prompt pairs,
    and then every I-optimal rule picks the same with either."""
    rng = np.random.default_rng(5)
    phi = rng.standard_normal((12, 4)).astype(np.float32)
    group = np.repeat(np.arange(3, dtype=np.int32), 4)
    pairs = [(u, v) for u, v in itertools.combinations(range(12), 2) if group[u] == group[v]]
    a, b = (np.array(p) for p in zip(*pairs))
    diff = phi[a] - phi[b]
    target = _spread(phi, group, np.ones(12, bool))
    own = np.asarray(strategies.spread_matrix(jnp.asarray(diff), jnp.ones(len(pairs), bool)))
    np.testing.assert_allclose(target, own, rtol=1e-5, atol=1e-7)
    beta = rng.standard_normal(4).astype(np.float32)
    for name in SPREAD_RULES:
        key = jax.random.key(1)
        plain = pool_lib.select(name, key, diff, beta, 5)
        given = pool_lib.select(name, key, diff, beta, 5, spread=target)
        assert np.asarray(plain.indices).tolist() == np.asarray(given.indices).tolist(), name


def test_hand_computed_pick_changes_with_the_target():
    """Two prompts ten apart along e1, their responses apart along e2; candidates x1 = (10, 0)
    (across prompts) and x2 = (0, 1) (within one). β = 0 (v = ¼), λ = 1, no labels: the iopt
    gain is v·xᵀSx / (1 + v·xᵀx). Over the candidates S = diag(25, ¼): x1 gains 625/26 ≈ 24.04.
    Over in-prompt pairs S = diag(0, ½): x1 gains 0 and x2 gains (¼·½)/(1 + ¼) = 0.1."""
    x = np.array([[10.0, 0.0], [0.0, 1.0]], np.float32)
    zero = np.zeros(2, np.float32)
    phi = np.array([[0, 0], [0, 1], [10, 0], [10, 1]], np.float32)
    target = _spread(phi, np.array([0, 0, 1, 1], np.int32), np.ones(4, bool))
    np.testing.assert_allclose(target, np.diag([0.0, 0.5]), atol=1e-7)
    plain = pool_lib.select("iopt", None, x, zero, 1, prior_precision=1.0)
    aware = pool_lib.select("iopt", None, x, zero, 1, prior_precision=1.0, spread=target)
    assert int(plain.indices[0]) == 0 and float(plain.scores[0]) == pytest.approx(625 / 26, rel=1e-5)
    assert int(aware.indices[0]) == 1 and float(aware.scores[0]) == pytest.approx(0.1, rel=1e-5)
    for name in ("greedy_iopt", "fw_iopt", "uncertain_iopt"):
        assert int(pool_lib.select(name, jax.random.key(0), x, zero, 1, prior_precision=1.0, spread=target).indices[0]) == 1


def test_every_driver_ranks_by_the_given_spread(same_picks):
    rng = np.random.default_rng(6)
    phi = rng.standard_normal((20, 6)).astype(np.float32)
    phi[:10, 0] += 5.0  # two prompts far apart along e1
    beta = rng.standard_normal(6).astype(np.float32)
    target = _spread(phi, np.repeat(np.arange(2, dtype=np.int32), 10), np.ones(20, bool))
    u, v, diff = allpairs.explicit_pairs(phi)
    past = (phi[:3] - phi[10:13]).astype(np.float32)
    inputs = strategies.make_inputs(diff, beta, None, past, spread=target)
    reference = np.asarray(strategies.pair_scores(registry.STRATEGIES["iopt"].pair_score, inputs), np.float64)
    plain = np.asarray(strategies.pair_scores(registry.STRATEGIES["iopt"].pair_score, inputs._replace(spread=None)))
    k = 6
    assert set(np.argsort(-reference)[:k]) != set(np.argsort(-plain)[:k])  # the target matters here
    pool = pool_lib.select("iopt", None, diff, beta, k, past_phi_diff=past, spread=target)
    same_picks(np.asarray(pool.indices).tolist(), reference, k)
    every = allpairs.select_all_pairs("iopt", None, phi, beta, k, past_phi_diff=past, tile=8, spread=target)
    index = {(a, b): i for i, (a, b) in enumerate(zip(np.asarray(u).tolist(), np.asarray(v).tolist()))}
    same_picks([index[(a, b)] for a, b in zip(np.asarray(every.u).tolist(), np.asarray(every.v).tolist())], reference, k)
    sharded = sharded_lib.sharded_select("iopt", None, diff, beta, k, past_phi_diff=past, spread=target)
    same_picks(np.asarray(sharded.indices).tolist(), reference, k)
    grid = sharded_lib.sharded_select_all_pairs("iopt", None, phi, beta, k, past_phi_diff=past, tile=8, spread=target)
    np.testing.assert_array_equal(np.asarray(grid.u), np.asarray(every.u))
    budget = pool_lib.select_within_budget("iopt", None, diff, beta, np.ones(diff.shape[0]), float(k), k,
                                           past_phi_diff=past, spread=target)
    same_picks(np.asarray(budget.indices).tolist(), reference, k)


def test_fw_iopt_design_reads_the_given_spread():
    """The continuous design minimises tr(S·M⁻¹) with the caller's S: with S = diag(0, ½) the
    candidates along e1 lower nothing and get no weight; over the candidates' own S they do."""
    rng = np.random.default_rng(8)
    along_e1 = np.c_[10 + rng.random(10), np.zeros(10)]
    along_e2 = np.c_[np.zeros(10), 1 + rng.random(10)]
    diff = np.r_[along_e1, along_e2].astype(np.float32)
    zero = np.zeros(2, np.float32)
    aware, gap = batch.iopt_design(strategies.make_inputs(diff, zero, spread=np.diag([0.0, 0.5])), 4)
    plain, _ = batch.iopt_design(strategies.make_inputs(diff, zero), 4)
    assert float(gap) < 1e-2
    assert float(np.sum(np.asarray(aware)[:10])) < 1e-3 * 4
    assert float(np.sum(np.asarray(plain)[:10])) > 0.5


@pytest.mark.parametrize("spread, message", [
    (np.zeros((3, 3), np.float32), r"spread must have shape \(2, 2\)"),
    (np.array([[1.0, np.nan], [0.0, 1.0]], np.float32), "spread contains 1 NaN/inf"),
])
def test_bad_spread_is_a_one_line_error(spread, message):
    x = np.eye(2, dtype=np.float32)
    with pytest.raises(InputError, match=message):
        pool_lib.select("iopt", None, x, np.zeros(2, np.float32), 1, spread=spread)
    with pytest.raises(InputError, match=message):
        allpairs.select_all_pairs("iopt", None, x, np.zeros(2, np.float32), 1, spread=spread)


def test_catalog_spread_flag_is_what_the_rules_read():
    for strategy in registry.STRATEGIES.values():
        if strategy.pair_score is not None:
            assert strategy.spread == strategy.pair_score.spread, strategy.name
    assert set(SPREAD_RULES) == {"iopt", "greedy_iopt", "fw_iopt", "uncertain_iopt"}


@pytest.mark.multidevice
def test_sharded_over_four_devices_ranks_by_the_given_spread(same_picks):
    if jax.device_count() < 4:
        pytest.skip("needs 4 devices: XLA_FLAGS=--xla_force_host_platform_device_count=4")
    rng = np.random.default_rng(9)
    phi = rng.standard_normal((23, 6)).astype(np.float32)
    phi[:11, 0] += 5.0
    beta = rng.standard_normal(6).astype(np.float32)
    target = _spread(phi, (np.arange(23) >= 11).astype(np.int32), np.ones(23, bool))
    _, _, diff = allpairs.explicit_pairs(phi)  # 253 pairs: not a multiple of 4
    inputs = strategies.make_inputs(diff, beta, spread=target)
    reference = np.asarray(strategies.pair_scores(registry.STRATEGIES["iopt"].pair_score, inputs), np.float64)
    sharded = sharded_lib.sharded_select("iopt", None, diff, beta, 9, spread=target)
    same_picks(np.asarray(sharded.indices).tolist(), reference, 9)
    grid = sharded_lib.sharded_select_all_pairs("iopt", None, phi, beta, 9, tile=8, spread=target)
    single = allpairs.select_all_pairs("iopt", None, phi, beta, 9, tile=8, spread=target)
    np.testing.assert_array_equal(np.asarray(grid.u), np.asarray(single.u))
    np.testing.assert_array_equal(np.asarray(grid.v), np.asarray(single.v))
