import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import spearmanr

from arm_jax.model import buffer, config, likelihood
from arm_jax.model import fit as train
from arm_jax.model import network as model

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
    loss = likelihood.bt_loss(gap, jnp.zeros(4))
    assert np.all(np.isfinite(loss))
    np.testing.assert_allclose(loss, np.logaddexp(0.0, -np.asarray(gap)), rtol=1e-6)


def test_recovers_known_linear_reward():
    x, w, winner, loser = _linear_task(jax.random.PRNGKey(0))
    train_items = x[:1000]
    keep = (winner < 1000) & (loser < 1000)
    buf = buffer.buffer_from_pairs(np.asarray(winner)[np.asarray(keep)], np.asarray(loser)[np.asarray(keep)])
    params, stats = train.fit_jit(
        jax.random.PRNGKey(1), train_items, buf, SMALL, config.TrainConfig(steps=600, learning_rate=3e-3)
    )
    losses = stats.losses
    assert float(losses[-50:].mean()) < float(losses[:50].mean())
    held_out = x[1000:]
    rho = spearmanr(np.asarray(model.reward(params, SMALL, held_out)), np.asarray(held_out @ w)).statistic
    assert rho > 0.9


def test_buffer_grows_without_new_shapes_and_only_filled_rows_train():
    buf = buffer.empty_buffer(8)
    buf = buffer.append(buf, jnp.array([1, 2]), jnp.array([3, 4]))
    buf = buffer.append(buf, jnp.array([5]), jnp.array([6]))
    assert buf.pairs.shape == (8, 2) and int(buf.count) == 3
    np.testing.assert_array_equal(buf.pairs[:3], [[1, 3], [2, 4], [5, 6]])
    np.testing.assert_array_equal(buf.mask, [1, 1, 1, 0, 0, 0, 0, 0])
    # garbage in unfilled rows must not change the fit
    items = jax.random.normal(jax.random.PRNGKey(0), (10, 4))
    cfg = config.TrainConfig(steps=20, batch_size=8)
    garbage = buffer.LabelBuffer(buf.pairs.at[3:].set(9), buf.count)
    p1, _ = train.fit_jit(jax.random.PRNGKey(2), items, buf, SMALL, cfg)
    p2, _ = train.fit_jit(jax.random.PRNGKey(2), items, garbage, SMALL, cfg)
    jax.tree_util.tree_map(np.testing.assert_array_equal, p1, p2)


def test_empty_buffer_returns_initialisation():
    items = jax.random.normal(jax.random.PRNGKey(0), (10, 4))
    params, losses = train.fit_jit(
        jax.random.PRNGKey(5), items, buffer.empty_buffer(4), SMALL, config.TrainConfig(steps=5, batch_size=4)
    )
    init = model.init_params(jax.random.split(jax.random.PRNGKey(5))[0], SMALL, 4)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-7), params, init)
    np.testing.assert_array_equal(losses.losses, 0.0)
    assert int(losses.steps_run) == 0 and int(losses.n_fit) == 0


def test_vmapped_seeds_equal_separate_runs():
    x, _, winner, loser = _linear_task(jax.random.PRNGKey(3), n_items=200, n_pairs=300)
    buf = buffer.buffer_from_pairs(winner, loser)
    cfg = config.TrainConfig(steps=30, batch_size=32)
    keys = jax.random.split(jax.random.PRNGKey(7), 4)
    fit = lambda k: train.fit(k, x, buf, SMALL, cfg)
    batched, batched_losses = jax.jit(jax.vmap(fit))(keys)
    for i in range(4):
        single, losses = train.fit_jit(keys[i], x, buf, SMALL, cfg)
        np.testing.assert_allclose(batched_losses.losses[i], losses.losses, rtol=1e-5, atol=1e-6)
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
        config.TrainConfig(**kwargs)


def test_max_epochs_stops_updates_after_the_cap():
    """16 labels, batch 8, one epoch: only the first 2 of 10 steps move the parameters."""
    x, _, winner, loser = _linear_task(jax.random.PRNGKey(4), n_items=50, n_pairs=16)
    buf = buffer.buffer_from_pairs(winner, loser, capacity=40)
    capped, _ = train.fit_jit(
        jax.random.PRNGKey(0), x, buf, SMALL, config.TrainConfig(steps=10, batch_size=8, max_epochs=1.0, min_steps=0)
    )
    short, _ = train.fit_jit(jax.random.PRNGKey(0), x, buf, SMALL, config.TrainConfig(steps=2, batch_size=8))
    longer, _ = train.fit_jit(jax.random.PRNGKey(0), x, buf, SMALL, config.TrainConfig(steps=3, batch_size=8))
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), capped, short)
    assert not np.allclose(longer["params"]["head"], short["params"]["head"])


def test_epoch_cap_still_takes_min_steps():
    """100 labels with --max-epochs 10 and batch 256 would allow 4 steps: min_steps keeps a
    tiny labelled set from staying untrained."""
    x, _, winner, loser = _linear_task(jax.random.PRNGKey(4), n_items=50, n_pairs=100)
    buf = buffer.buffer_from_pairs(winner, loser)
    _, stats = train.fit_jit(jax.random.PRNGKey(0), x, buf, SMALL, config.TrainConfig(steps=200, max_epochs=10.0, min_steps=60))
    assert int(stats.steps_run) == 60


EARLY = config.TrainConfig(steps=400, batch_size=32, learning_rate=3e-3, early_stopping=True, refit=False, eval_every=10, patience=10,
                          min_steps=20)


def _noisy_and_clean(n_pairs=400):
    x, w, winner, loser = _linear_task(jax.random.PRNGKey(8), n_items=300, n_pairs=n_pairs)
    # clean: the hidden linear reward decides every label (no annotation noise)
    r = x @ w
    right = r[winner] > r[loser]
    clean = buffer.buffer_from_pairs(jnp.where(right, winner, loser), jnp.where(right, loser, winner))
    # noise only: labels independent of the items (a fair coin for each pair)
    flip = jax.random.bernoulli(jax.random.PRNGKey(9), 0.5, (n_pairs,))
    noise = buffer.buffer_from_pairs(jnp.where(flip, winner, loser), jnp.where(flip, loser, winner))
    return x, clean, noise


def test_early_stopping_triggers_on_noise_and_not_on_clean_labels():
    """Noise-only labels: the held-out loss never improves for long, so training stops near
    the start and keeps a near-initial model. Labels decided by the hidden reward: the
    held-out loss keeps falling for many epochs before it stops, to a model that generalises.
    Four seeds at once (vmap); medians, as SGD noise moves single stops by an evaluation."""
    x, clean, noise = _noisy_and_clean()
    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    fit = jax.jit(jax.vmap(lambda k, b: train.fit(k, x, b, SMALL, EARLY), in_axes=(0, None)))
    _, on_noise = fit(keys, noise)
    _, on_clean = fit(keys, clean)
    assert np.all(np.asarray(on_noise.n_val) > 40)
    assert np.all(np.asarray(on_noise.n_fit) + np.asarray(on_noise.n_val) == 400)
    assert np.all(np.asarray(on_noise.steps_run) < EARLY.steps // 2)
    assert np.all(np.asarray(on_noise.val_loss) > 0.65)  # chance: ln 2 = 0.693
    noise_taken = np.median(np.asarray(on_noise.steps_taken))
    clean_taken = np.median(np.asarray(on_clean.steps_taken))
    assert noise_taken <= 40 and clean_taken >= 4 * noise_taken, (noise_taken, clean_taken)
    assert np.all(np.asarray(on_clean.val_accuracy) > 0.9)
    assert np.all(np.asarray(on_clean.val_loss) < 0.3)


def test_early_stopping_keeps_the_best_parameters_and_reports_them():
    """The returned parameters are those of the best evaluation: their held-out loss is the
    reported one (recomputed here from the split)."""
    x, clean, _ = _noisy_and_clean()
    params, stats = train.fit_jit(jax.random.PRNGKey(3), x, clean, SMALL, EARLY)
    order, n_fit, n_val = buffer.split_rows(jax.random.fold_in(jax.random.PRNGKey(3), 7), clean, EARLY.val_fraction,
                                           EARLY.min_val_labels)
    rows = np.asarray(order)[int(n_fit): int(n_fit) + int(n_val)]
    pairs = np.asarray(clean.pairs)[rows]
    r = model.reward(params, SMALL, x)
    loss = float(jnp.mean(likelihood.bt_loss(r[pairs[:, 0]], r[pairs[:, 1]])))
    assert int(n_val) == int(stats.n_val)
    np.testing.assert_allclose(loss, float(stats.val_loss), rtol=1e-4)


def test_early_stopping_vmaps_and_compiles_once_as_labels_grow():
    x, clean, _ = _noisy_and_clean()
    cfg = EARLY
    fit = jax.jit(jax.vmap(lambda k, b: train.fit(k, x, b, SMALL, cfg), in_axes=(0, None)))
    keys = jax.random.split(jax.random.PRNGKey(1), 3)
    batched, stats = fit(keys, clean)
    for i in range(3):
        single, one = train.fit_jit(keys[i], x, clean, SMALL, cfg)
        assert int(one.steps_taken) == int(stats.steps_taken[i])
        # float reduction order differs between a batch of 3 and one model: ~1e-3 after 400 steps
        jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a[i], b, rtol=1e-2, atol=1e-3), batched, single)
    # a growing labelled set in a fixed-capacity buffer: no new compilation
    small = buffer.LabelBuffer(clean.pairs, jnp.int32(100), clean.overflow)
    fit(keys, small)
    assert fit._cache_size() == 1


def test_refit_trains_on_every_label_for_the_chosen_epochs():
    """refit: a second fit from the same initialisation on all the labels; with nothing held
    out there is nothing to choose, and the early-stopped model is returned unchanged."""
    x, clean, _ = _noisy_and_clean()
    cfg = dataclasses.replace(EARLY, refit=True)
    early, stats = train.fit_jit(jax.random.PRNGKey(3), x, clean, SMALL, EARLY)
    refit, stats_refit = train.fit_jit(jax.random.PRNGKey(3), x, clean, SMALL, cfg)
    assert int(stats_refit.steps_taken) == int(stats.steps_taken) and int(stats.n_val) > 0
    assert not np.allclose(refit["params"]["head"], early["params"]["head"])
    # the refitted model has seen the held-out labels too: it fits all labels at least as well
    r_early, r_refit = (model.reward(p, SMALL, x) for p in (early, refit))
    w, l = clean.pairs[:, 0], clean.pairs[:, 1]
    assert float(jnp.mean(r_refit[w] > r_refit[l])) >= float(jnp.mean(r_early[w] > r_early[l])) - 0.01
    none_held = dataclasses.replace(cfg, val_fraction=0.0)
    a, _ = train.fit_jit(jax.random.PRNGKey(3), x, clean, SMALL, none_held)
    b, _ = train.fit_jit(jax.random.PRNGKey(3), x, clean, SMALL, dataclasses.replace(none_held, refit=False))
    jax.tree_util.tree_map(np.testing.assert_array_equal, a, b)
