import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import spearmanr

from arm_jax import model, train

SMALL = model.ModelConfig(depth=2, width=32)


def _linear_task(key, n_items=1500, n_pairs=3000, dim=16):
    k_x, k_w, k_a, k_b, k_y = jax.random.split(key, 5)
    x = jax.random.normal(k_x, (n_items, dim))
    w = jax.random.normal(k_w, (dim,))
    r = x @ w
    a = jax.random.randint(k_a, (n_pairs,), 0, n_items)
    b = jax.random.randint(k_b, (n_pairs,), 0, n_items)
    y = jax.random.bernoulli(k_y, jax.nn.sigmoid(3.0 * (r[a] - r[b]) / r.std()))
    winner = jnp.where(y, a, b)
    loser = jnp.where(y, b, a)
    return x, w, winner, loser


def test_bt_loss_is_stable_for_large_gaps():
    gap = jnp.array([0.0, 50.0, -200.0, 1e4])
    loss = train.bt_loss(gap, jnp.zeros(4))
    assert np.all(np.isfinite(loss))
    np.testing.assert_allclose(loss, np.logaddexp(0.0, -np.asarray(gap)), rtol=1e-6)


def test_recovers_known_linear_reward():
    x, w, winner, loser = _linear_task(jax.random.PRNGKey(0))
    train_items = x[:1000]
    keep = (winner < 1000) & (loser < 1000)
    buf = train.buffer_from_pairs(np.asarray(winner)[np.asarray(keep)], np.asarray(loser)[np.asarray(keep)])
    params, losses = train.fit_jit(
        jax.random.PRNGKey(1), train_items, buf, SMALL, train.TrainConfig(steps=600, learning_rate=3e-3)
    )
    assert float(losses[-50:].mean()) < float(losses[:50].mean())
    held_out = x[1000:]
    rho = spearmanr(np.asarray(model.reward(params, SMALL, held_out)), np.asarray(held_out @ w)).statistic
    assert rho > 0.9


def test_buffer_grows_without_new_shapes_and_only_filled_rows_train():
    buf = train.empty_buffer(8)
    buf = train.append(buf, jnp.array([1, 2]), jnp.array([3, 4]))
    buf = train.append(buf, jnp.array([5]), jnp.array([6]))
    assert buf.pairs.shape == (8, 2) and int(buf.count) == 3
    np.testing.assert_array_equal(buf.pairs[:3], [[1, 3], [2, 4], [5, 6]])
    np.testing.assert_array_equal(buf.mask, [1, 1, 1, 0, 0, 0, 0, 0])
    # garbage in unfilled rows must not change the fit
    items = jax.random.normal(jax.random.PRNGKey(0), (10, 4))
    cfg = train.TrainConfig(steps=20, batch_size=8)
    garbage = train.LabelBuffer(buf.pairs.at[3:].set(9), buf.count)
    p1, _ = train.fit_jit(jax.random.PRNGKey(2), items, buf, SMALL, cfg)
    p2, _ = train.fit_jit(jax.random.PRNGKey(2), items, garbage, SMALL, cfg)
    jax.tree_util.tree_map(np.testing.assert_array_equal, p1, p2)


def test_empty_buffer_returns_initialisation():
    items = jax.random.normal(jax.random.PRNGKey(0), (10, 4))
    params, losses = train.fit_jit(
        jax.random.PRNGKey(5), items, train.empty_buffer(4), SMALL, train.TrainConfig(steps=5, batch_size=4)
    )
    init = model.init_params(jax.random.split(jax.random.PRNGKey(5))[0], SMALL, 4)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-7), params, init)
    np.testing.assert_array_equal(losses, 0.0)


def test_vmapped_seeds_equal_separate_runs():
    x, _, winner, loser = _linear_task(jax.random.PRNGKey(3), n_items=200, n_pairs=300)
    buf = train.buffer_from_pairs(winner, loser)
    cfg = train.TrainConfig(steps=30, batch_size=32)
    keys = jax.random.split(jax.random.PRNGKey(7), 4)
    fit = lambda k: train.fit(k, x, buf, SMALL, cfg)
    batched, batched_losses = jax.jit(jax.vmap(fit))(keys)
    for i in range(4):
        single, losses = train.fit_jit(keys[i], x, buf, SMALL, cfg)
        np.testing.assert_allclose(batched_losses[i], losses, rtol=1e-5, atol=1e-6)
        jax.tree_util.tree_map(
            lambda a, b: np.testing.assert_allclose(a[i], b, rtol=1e-4, atol=1e-5), batched, single
        )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(steps=0), "training steps must be >= 1"),
        (dict(batch_size=0), "training batch size must be >= 1"),
        (dict(learning_rate=0.0), "learning rate must be > 0"),
        (dict(weight_decay=-1.0), "weight decay must be >= 0"),
        (dict(max_epochs=0.0), "max epochs must be > 0"),
    ],
)
def test_bad_train_config(kwargs, message):
    with pytest.raises(ValueError, match=message):
        train.TrainConfig(**kwargs)


def test_max_epochs_stops_updates_after_the_cap():
    """16 labels, batch 8, one epoch: only the first 2 of 10 steps move the parameters."""
    x, _, winner, loser = _linear_task(jax.random.PRNGKey(4), n_items=50, n_pairs=16)
    buf = train.buffer_from_pairs(winner, loser, capacity=40)
    capped, _ = train.fit_jit(jax.random.PRNGKey(0), x, buf, SMALL, train.TrainConfig(steps=10, batch_size=8, max_epochs=1.0))
    short, _ = train.fit_jit(jax.random.PRNGKey(0), x, buf, SMALL, train.TrainConfig(steps=2, batch_size=8))
    longer, _ = train.fit_jit(jax.random.PRNGKey(0), x, buf, SMALL, train.TrainConfig(steps=3, batch_size=8))
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), capped, short)
    assert not np.allclose(longer["params"]["head"], short["params"]["head"])
