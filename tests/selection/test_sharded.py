"""Sharding over devices. The ``multidevice`` tests need four devices and run in their own
pytest invocation: ``XLA_FLAGS=--xla_force_host_platform_device_count=4 python -m pytest -q -m multidevice``
(see tests/conftest.py); the rest run on whatever devices there are."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arm_jax.model import buffer as buffer_lib
from arm_jax.model import config
from arm_jax.model import fit as train
from arm_jax.model import network as model
from arm_jax.runtime import mesh as parallel
from arm_jax.selection import fisher, pool, registry
from arm_jax.selection import sharded as sharded_lib

SMALL = model.ModelConfig(depth=2, width=16)
TRAIN = config.TrainConfig(steps=25, batch_size=32, early_stopping=False)
N_DEVICES = 4


def _fit(key, items, buffer):
    return train.fit(key, items, buffer, SMALL, TRAIN)


def _task(seed=0, n_items=120, n_pairs=200, dim=6):
    k_x, k_w, k_a, k_b = jax.random.split(jax.random.PRNGKey(seed), 4)
    items = jax.random.normal(k_x, (n_items, dim))
    r = items @ jax.random.normal(k_w, (dim,))
    a = jax.random.randint(k_a, (n_pairs,), 0, n_items)
    b = jax.random.randint(k_b, (n_pairs,), 0, n_items)
    return items, buffer_lib.buffer_from_pairs(jnp.where(r[a] > r[b], a, b), jnp.where(r[a] > r[b], b, a))


def _pool(seed=0, n=1003, h=8, m=30):
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
    return jax.random.normal(k1, (n, h)), 0.5 * jax.random.normal(k2, (h,)), jax.random.normal(k3, (m, h))


def _assert_same_fits(out, keys, items, buffer):
    """Sharded seeds equal separate one-device fits (tolerance as in test_train's vmap test)."""
    params, stats = out
    for i in range(keys.shape[0]):
        single, single_stats = train.fit_jit(keys[i], items, buffer, SMALL, TRAIN)
        np.testing.assert_allclose(stats.losses[i], single_stats.losses, rtol=1e-5, atol=1e-6)
        jax.tree_util.tree_map(
            lambda a, b: np.testing.assert_allclose(a[i], b, rtol=1e-4, atol=1e-5), params, single
        )


def _devices_of(array) -> int:
    return len(array.sharding.device_set)


@pytest.fixture
def four_devices():
    assert jax.device_count() == N_DEVICES, (
        f"multidevice tests need {N_DEVICES} devices, found {jax.device_count()}: "
        f"run with XLA_FLAGS=--xla_force_host_platform_device_count={N_DEVICES}"
    )
    return jax.devices()


# ----------------------------------------------------------------------------- any device count


def _noisy(key, offset):
    """A cheap pure function of a key (the bits must match exactly, the normals to rounding)."""
    return {"draw": jax.random.normal(key, (3,)) + offset, "bits": jax.random.bits(key, (2,))}


def _assert_same_draws(out, ref):
    np.testing.assert_array_equal(out["bits"], ref["bits"])
    np.testing.assert_allclose(out["draw"], ref["draw"], rtol=1e-6, atol=1e-6)


def test_shard_seeds_on_whatever_devices_equals_vmap():
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    out = parallel.shard_seeds(_noisy, keys, jnp.float32(2.0))
    ref = jax.vmap(_noisy, in_axes=(0, None))(keys, jnp.float32(2.0))
    _assert_same_draws(out, ref)


def test_sharded_select_rejects_what_it_cannot_do():
    x, beta, _ = _pool(n=40)
    with pytest.raises(ValueError, match="strategy 'batchbald' is not supported for sharded selection; supported: entropy, maxdiff, xtx, dopt, pa_dopt"):
        sharded_lib.sharded_select("batchbald", None, x, beta, 5)
    with pytest.raises(ValueError, match="unknown strategy 'best'"):
        sharded_lib.sharded_select("best", None, x, beta, 5)
    with pytest.raises(ValueError, match="k = 41 is larger than the pool of 40 candidate pairs"):
        sharded_lib.sharded_select("dopt", None, x, beta, 41)
    with pytest.raises(ValueError, match="keys must be a non-empty"):
        parallel.shard_seeds(_fit, jnp.zeros((0, 2), jnp.uint32), *_task(n_items=10, n_pairs=5))


# ----------------------------------------------------------------------------- four devices


@pytest.mark.multidevice
def test_shard_seeds_fit_over_four_devices(four_devices):
    items, buffer = _task()
    keys = jax.random.split(jax.random.PRNGKey(7), 8)
    out = parallel.shard_seeds(_fit, keys, items, buffer)
    losses = out[1].losses
    assert _devices_of(losses) == N_DEVICES  # the seed axis really is split over 4 devices
    assert losses.sharding.spec == jax.sharding.PartitionSpec(parallel.SEED_AXIS)
    assert losses.addressable_shards[0].data.shape == (2, TRAIN.steps)
    _assert_same_fits(out, keys, items, buffer)


@pytest.mark.multidevice
@pytest.mark.parametrize("n_seeds", [4, 6, 9])
@pytest.mark.parametrize("typed", [False, True])
def test_shard_seeds_pads_and_strips_and_takes_typed_keys(four_devices, n_seeds, typed):
    base = jax.random.key(3) if typed else jax.random.PRNGKey(3)
    keys = jax.random.split(base, n_seeds)  # 6 and 9 seeds on 4 devices: padded to 8 and 12
    out = parallel.shard_seeds(_noisy, keys, jnp.float32(-1.0))
    ref = jax.vmap(_noisy, in_axes=(0, None))(keys, jnp.float32(-1.0))
    assert out["draw"].shape == (n_seeds, 3) and out["bits"].shape == (n_seeds, 2)
    _assert_same_draws(out, ref)
    if n_seeds % N_DEVICES == 0:
        assert _devices_of(out["draw"]) == N_DEVICES


@pytest.mark.multidevice
@pytest.mark.parametrize("with_past", [False, True])
def test_sharded_dopt_scores_equal_one_device(four_devices, with_past):
    x, beta, past = _pool()  # 1003 rows: not a multiple of 4
    past = past if with_past else None
    sharded = sharded_lib.sharded_dopt_scores(x, beta, past)
    np.testing.assert_allclose(sharded, fisher.dopt_scores(x, beta, past), rtol=1e-5, atol=1e-7)
    even = sharded_lib.sharded_dopt_scores(x[:1000], beta, past)
    assert _devices_of(even) == N_DEVICES
    np.testing.assert_allclose(even, fisher.dopt_scores(x[:1000], beta, past), rtol=1e-5, atol=1e-7)
    unit = sharded_lib.sharded_dopt_scores(x, beta, weighted=False)
    np.testing.assert_allclose(unit, fisher.dopt_scores_from_weights(x, jnp.ones(x.shape[0])), rtol=1e-5, atol=1e-7)


@pytest.mark.multidevice
@pytest.mark.parametrize("name", registry.PAIR_SCORE_STRATEGIES)
def test_sharded_select_equals_one_device(four_devices, name):
    x, beta, past = _pool(1)
    valid = jnp.arange(x.shape[0]) % 7 != 3
    sharded = sharded_lib.sharded_select(name, None, x, beta, 40, valid=valid, past_phi_diff=past)
    single = pool.select(name, None, x, beta, 40, valid=valid, past_phi_diff=past)
    np.testing.assert_array_equal(sharded.indices, single.indices)
    np.testing.assert_allclose(sharded.scores, single.scores, rtol=1e-5, atol=1e-7)
    # k larger than one device's share of the pool still works
    big = sharded_lib.sharded_select(name, None, x[:40], beta, 30)
    np.testing.assert_array_equal(np.sort(big.indices), np.sort(pool.select(name, None, x[:40], beta, 30).indices))


@pytest.mark.multidevice
@pytest.mark.parametrize("name", ["dopt", "pa_dopt", "xtx", "entropy"])
def test_sharded_all_pairs_equal_one_device(four_devices, name):
    """The pair grid's blocks and M's row tiles split over 4 devices (K = 150 items in tiles of
    16: 10 row tiles, 55 blocks, both padded): the picks and scores of one device, with
    invalid items, excluded pairs and labelled pairs in M."""
    from arm_jax.selection import allpairs

    phi, beta, past = _pool(2, n=150, h=6)
    kw = dict(past_phi_diff=past, item_valid=np.arange(150) % 11 != 4, tile=16,
              exclude=(np.array([0, 5, 7, 30]), np.array([1, 9, 3, 2])))
    sharded = sharded_lib.sharded_select_all_pairs(name, None, phi, beta, 25, **kw)
    single = allpairs.select_all_pairs(name, None, phi, beta, 25, **kw)
    np.testing.assert_array_equal(sharded.u, single.u)
    np.testing.assert_array_equal(sharded.v, single.v)
    np.testing.assert_allclose(sharded.scores, single.scores, rtol=1e-5, atol=1e-7)
