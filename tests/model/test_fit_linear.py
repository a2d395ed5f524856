"""The linear reward model's exact fit (depth 0): MAP of BT logistic regression, prior chosen
on held-out labels. Checked against float64 SciPy on the definition, not against itself."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import minimize

from arm_jax.model import buffer, config, fit_linear
from arm_jax.model import fit as train
from arm_jax.model import network as model
from arm_jax.selection import posterior

LINEAR = model.ModelConfig(depth=0)


def _labels(seed, n_items=120, n_pairs=300, dim=8, quality=1.0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_items, dim)).astype(np.float32)
    w = rng.normal(size=dim)
    r = x @ w
    a = rng.integers(0, n_items, n_pairs)
    b = (a + 1 + rng.integers(0, n_items - 1, n_pairs)) % n_items
    y = rng.random(n_pairs) < 1.0 / (1.0 + np.exp(-quality * (r[a] - r[b]) / r.std()))
    return x, w, np.where(y, a, b), np.where(y, b, a)


def _fit(x, winner, loser, capacity=None, seed=0, **cfg):
    buf = buffer.buffer_from_pairs(winner, loser, capacity)
    params, stats = train.fit_jit(jax.random.PRNGKey(seed), jnp.asarray(x), buf, LINEAR, config.TrainConfig(**cfg))
    return np.asarray(model.head(params), np.float64), jax.device_get(stats)


def _scale(x, winner, loser):
    d = np.asarray(x[winner] - x[loser], np.float64)
    return np.mean(np.sum(d * d, axis=1)) / (4 * x.shape[1])


def _map_float64(x, winner, loser, lam):
    d = np.asarray(x[winner] - x[loser], np.float64)

    def f(beta):
        z = d @ beta
        p = 1.0 / (1.0 + np.exp(-z))
        return np.sum(np.logaddexp(0.0, -z)) + 0.5 * lam * beta @ beta, d.T @ (p - 1.0) + lam * beta

    return minimize(f, np.zeros(x.shape[1]), jac=True, method="L-BFGS-B", options=dict(gtol=1e-10, maxiter=5000)).x


@pytest.mark.parametrize("c", [0.1, 10.0, 1e5])
def test_fixed_prior_fit_is_the_float64_map(c):
    x, _, winner, loser = _labels(0)
    head, stats = _fit(x, winner, loser, capacity=512, linear_prior=c)
    lam = c * _scale(x, winner, loser)
    np.testing.assert_allclose(stats.prior_precision, lam, rtol=1e-4)
    ref = _map_float64(x, winner, loser, lam)
    np.testing.assert_allclose(head, ref, rtol=2e-3, atol=2e-4 * np.abs(ref).max())


def test_fit_does_not_depend_on_the_embeddings_scale():
    """λ is in labels' worth of information, so scaling ψ by s scales β̂ by 1/s (huge and tiny)."""
    x, _, winner, loser = _labels(1)
    head, stats = _fit(x, winner, loser)
    for s in (1e-3, 1e3):
        head_s, stats_s = _fit(x * s, winner, loser)
        np.testing.assert_allclose(head_s * s, head, rtol=2e-3, atol=1e-4 * np.abs(head).max())
        np.testing.assert_allclose(stats_s.prior_precision / (s * s), stats.prior_precision, rtol=1e-3)


@pytest.mark.parametrize("rule", ["cross-validation", "evidence", "held-out"])
def test_noise_gets_a_prior_stronger_than_the_data_and_clean_labels_a_weak_one(rule):
    grid = np.asarray(fit_linear.LINEAR_PRIOR_GRID)
    x, _, winner, loser = _labels(2, quality=0.0)  # coin flips
    _, noisy = _fit(x, winner, loser, linear_prior_rule=rule)
    c_noisy = noisy.prior_precision / _scale(x, winner, loser)
    if rule == "held-out":
        # (the scale s is taken over the fitted rows only: within a few per cent of all rows)
        assert c_noisy == pytest.approx(grid[-1], rel=0.1)
    elif rule == "cross-validation":
        assert c_noisy == pytest.approx(grid[-1], rel=1e-3)
    else:
        assert c_noisy >= len(winner)  # the prior outweighs the 300 labels' information
    x, w, winner, loser = _labels(2, quality=50.0)  # nearly noiseless
    head, clean = _fit(x, winner, loser, linear_prior_rule=rule)
    assert clean.prior_precision / _scale(x, winner, loser) <= 10.0
    assert np.corrcoef(head, w)[0, 1] > 0.95
    if rule == "held-out":
        assert noisy.n_val > 0 and clean.n_val > 0 and 0.5 < clean.val_accuracy <= 1.0
    elif rule == "cross-validation":  # every label held out once
        assert noisy.n_val == len(winner) and clean.n_val == len(winner) and 0.5 < clean.val_accuracy <= 1.0
    else:
        assert noisy.n_val == 0 and clean.n_val == 0 and np.isnan(clean.val_loss)


def test_evidence_picks_the_grid_point_of_the_float64_laplace_evidence():
    x, _, winner, loser = _labels(6, quality=2.0, n_pairs=200)
    _, stats = _fit(x, winner, loser, linear_prior_rule="evidence")
    s = _scale(x, winner, loser)
    d = np.asarray(x[winner] - x[loser], np.float64)
    log_ev = []
    for c in fit_linear.LINEAR_PRIOR_GRID:
        lam = c * s
        beta = _map_float64(x, winner, loser, lam)
        z = d @ beta
        p = 1.0 / (1.0 + np.exp(-z))
        h = (d * (p * (1 - p))[:, None]).T @ d + lam * np.eye(d.shape[1])
        log_ev.append(-np.sum(np.logaddexp(0.0, -z)) - 0.5 * lam * beta @ beta
                      + 0.5 * d.shape[1] * np.log(lam) - 0.5 * np.linalg.slogdet(h)[1])
    best = int(np.argmax(log_ev))
    assert np.max(log_ev) - sorted(log_ev)[-2] > 1e-3  # a clear winner, so float32 must agree
    np.testing.assert_allclose(stats.prior_precision, fit_linear.LINEAR_PRIOR_GRID[best] * s, rtol=1e-4)


@pytest.mark.parametrize("rule, n", [("held-out", 20), ("cross-validation", 9)])
def test_too_few_labels_to_hold_out_use_the_default_prior(rule, n):
    x, _, winner, loser = _labels(3, n_pairs=n)
    head, stats = _fit(x, winner, loser, capacity=64, linear_prior_rule=rule)
    assert stats.n_val == 0 and np.isnan(stats.val_loss)
    np.testing.assert_allclose(stats.prior_precision, fit_linear.LINEAR_DEFAULT_PRIOR * _scale(x, winner, loser), rtol=1e-4)
    np.testing.assert_allclose(head, _map_float64(x, winner, loser, stats.prior_precision), rtol=2e-3, atol=1e-5)


def test_posterior_of_the_fit_is_centred_on_the_head_with_the_chosen_prior():
    x, _, winner, loser = _labels(4)
    buf = buffer.buffer_from_pairs(winner, loser, 512)
    params, stats = train.fit_jit(jax.random.PRNGKey(0), jnp.asarray(x), buf, LINEAR, config.TrainConfig())
    beta = model.head(params)
    d = jnp.asarray(x)[buf.pairs[:, 0]] - jnp.asarray(x)[buf.pairs[:, 1]]
    post = posterior.laplace(beta, d, buf.mask, stats.prior_precision)
    dd = np.asarray(x[winner] - x[loser], np.float64)
    p = 1.0 / (1.0 + np.exp(-dd @ np.asarray(beta, np.float64)))
    ref = (dd * (p * (1 - p))[:, None]).T @ dd + float(stats.prior_precision) * np.eye(x.shape[1])
    np.testing.assert_allclose(post.precision, ref, rtol=1e-4, atol=1e-6 * np.abs(ref).max())
    # the MAP's gradient is zero: the posterior mean is the head
    grad = dd.T @ (p - 1.0) + float(stats.prior_precision) * np.asarray(beta, np.float64)
    assert np.abs(grad).max() < 1e-3 * np.abs(dd).sum(0).max()


def test_vmapped_seeds_compile_once_and_equal_separate_fits():
    x, _, winner, loser = _labels(5)
    fit = jax.jit(jax.vmap(lambda k, buf: train.fit(k, jnp.asarray(x), buf, LINEAR, config.TrainConfig())[0],
                           in_axes=(0, None)))
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    for n in (100, 200, 300):
        buf = buffer.buffer_from_pairs(winner[:n], loser[:n], 512)
        heads = fit(keys, buf)
        for i in range(3):
            one, _ = train.fit_jit(keys[i], jnp.asarray(x), buf, LINEAR, config.TrainConfig())
            np.testing.assert_allclose(heads["params"]["head"][i], one["params"]["head"], rtol=1e-4, atol=1e-5)
    assert fit._cache_size() == 1
