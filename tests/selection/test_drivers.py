"""Every driver (pool, all pairs, sharded) picks what the pool driver picks, for every pair score."""
import jax
import numpy as np
import pytest

from arm_jax.selection import allpairs, registry
from arm_jax.selection import pool as pool_lib
from arm_jax.selection import scores as strategies
from arm_jax.selection import sharded as sharded_lib

K = 50


# ----------------------------------------------------------------------------- one scoring core


def _inputs(kind, seed=0, n_items=24, h=8):
    rng = np.random.default_rng(seed)
    phi = rng.standard_normal((n_items, h))
    beta = rng.standard_normal(h)
    if kind == "rank-deficient":  # dead units and large activations, rank 3
        phi = 100 * rng.standard_normal((n_items, 3)) @ rng.standard_normal((3, h))
        phi[:, :2] = 0.0
        beta = beta / 400
    elif kind == "tiny-head":
        beta = beta * 1e-5
    past = rng.standard_normal((6, h)) * (100 if kind == "rank-deficient" else 1)
    return phi.astype(np.float32), beta.astype(np.float32), past.astype(np.float32)



@pytest.mark.parametrize("kind", ["healthy", "rank-deficient", "tiny-head"])
@pytest.mark.parametrize("name", registry.PAIR_SCORE_STRATEGIES)
def test_every_driver_picks_what_the_pool_driver_picks(same_picks, name, kind):
    """pool (explicit pairs), all pairs, and sharded (every local device) rank by one score."""
    phi, beta, past_items = _inputs(kind)
    u, v, diff = allpairs.explicit_pairs(phi)
    past = np.asarray(past_items[:3] - past_items[3:])
    k = 7
    pool = pool_lib.select(name, None, diff, beta, k, past_phi_diff=past)
    spec = registry.STRATEGIES[name].pair_score
    inputs = strategies.make_inputs(diff, beta, None, past)
    reference = np.asarray(strategies.pair_scores(spec, inputs), np.float64)
    assert np.all(np.isfinite(reference))
    same_picks(np.asarray(pool.indices).tolist(), reference, k)

    every = allpairs.select_all_pairs(name, None, phi, beta, k, past_phi_diff=past, tile=8)
    index = {(a, b): i for i, (a, b) in enumerate(zip(np.asarray(u).tolist(), np.asarray(v).tolist()))}
    picks = [index[(a, b)] for a, b in zip(np.asarray(every.u).tolist(), np.asarray(every.v).tolist())]
    same_picks(picks, reference, k)
    np.testing.assert_allclose(np.asarray(every.scores), np.asarray(pool.scores), rtol=2e-3, atol=1e-6)

    sharded = sharded_lib.sharded_select(name, None, diff, beta, k, past_phi_diff=past)
    same_picks(np.asarray(sharded.indices).tolist(), reference, k)
    np.testing.assert_allclose(np.asarray(sharded.scores), np.asarray(pool.scores), rtol=1e-4, atol=1e-7)


def test_entropy_ranks_by_the_gap_in_every_driver_with_a_tiny_head():
    """Issue item 2: with β·1e-5 the float32 entropy is flat at ln 2; every driver must still
    rank by −|gap| (the sharded one ranked by the flat entropy: 2 of 50 shared picks)."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2000, 16)).astype(np.float32)
    beta = (rng.standard_normal(16) * 1e-5).astype(np.float32)
    expected = set(np.argsort(np.abs(x.astype(np.float64) @ beta))[:K].tolist())
    pool = pool_lib.select("entropy", None, x, beta, K)
    sharded = sharded_lib.sharded_select("entropy", None, x, beta, K)
    assert set(np.asarray(pool.indices).tolist()) == expected
    assert set(np.asarray(sharded.indices).tolist()) == expected
    np.testing.assert_allclose(np.asarray(sharded.scores), np.asarray(pool.scores), rtol=1e-6)


@pytest.mark.multidevice
@pytest.mark.parametrize("name", registry.PAIR_SCORE_STRATEGIES)
def test_sharded_over_four_devices_picks_what_the_pool_driver_picks(same_picks, name):
    if jax.device_count() < 4:
        pytest.skip("needs 4 devices: XLA_FLAGS=--xla_force_host_platform_device_count=4")
    for kind in ("healthy", "rank-deficient", "tiny-head"):
        phi, beta, past_items = _inputs(kind, seed=1, n_items=23)
        _, _, diff = allpairs.explicit_pairs(phi)  # 253 pairs: not a multiple of 4
        past = np.asarray(past_items[:3] - past_items[3:])
        spec = registry.STRATEGIES[name].pair_score
        reference = np.asarray(strategies.pair_scores(spec, strategies.make_inputs(diff, beta, None, past)))
        sharded = sharded_lib.sharded_select(name, None, diff, beta, 9, past_phi_diff=past)
        same_picks(np.asarray(sharded.indices).tolist(), reference, 9)
