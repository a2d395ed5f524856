"""The linear reward model's exact fit (depth 0): MAP of BT logistic regression, prior chosen
on held-out labels. Checked against float64 SciPy and NumPy on the definition (the whole fit,
the prior's choice included), not against itself."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import minimize

from arm_jax.model import buffer, config, fit_linear, newton
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


# ------------------------------------------------ the whole fit against its float64 definition


def _map_newton_float64(d, lam, beta=None):
    """float64 MAP of Σ log(1 + e^{−dβ}) + λ|β|²/2: Newton steps with step halving, until a step
    moves β by at most 1e-13 of |β|."""
    beta = np.zeros(d.shape[1]) if beta is None else beta.copy()

    def objective(b):
        return np.sum(np.logaddexp(0.0, -(d @ b))) + 0.5 * lam * b @ b

    for _ in range(200):
        z = d @ beta
        p = 0.5 * (1.0 + np.tanh(z / 2))
        g = d.T @ (p - 1.0) + lam * beta
        h = (d * (p * (1 - p))[:, None]).T @ d + lam * np.eye(d.shape[1])
        step, t = np.linalg.solve(h, g), 1.0
        while objective(beta - t * step) > objective(beta) and t > 1e-8:
            t /= 2
        beta = beta - t * step
        if np.linalg.norm(t * step) <= 1e-13 * np.linalg.norm(beta):
            return beta
    raise AssertionError("the float64 reference did not converge")


def _one_standard_error_float64(sums, squares, n, ddof):
    """(best grid index, margin): the strongest prior within one standard error of the lowest
    held-out loss, and how far the closest grid point is from that threshold (relative)."""
    losses = sums / n
    se = np.sqrt(np.maximum(squares - n * losses ** 2, 0.0) / max(n - ddof, 1) / n)
    threshold = losses.min() + se[np.argmin(losses)]
    return int(np.argmax(losses <= threshold)), np.min(np.abs(losses - threshold)) / threshold


def _held_out_sums(d, fit, held, grid):
    """(G,) sums of the held-out rows' BT loss and of its square along the grid, fitted on ``fit``."""
    sums, squares, beta = [], [], None
    for lam in grid:
        beta = _map_newton_float64(d[fit], lam, beta)
        loss = np.logaddexp(0.0, -(d[held] @ beta))
        sums.append(loss.sum())
        squares.append((loss ** 2).sum())
    return np.asarray(sums), np.asarray(squares)


def _log_evidence_float64(d, grid):
    """(G,) the Laplace log evidence of all the labels at each λ of the grid."""
    out, beta = [], None
    for lam in grid:
        beta = _map_newton_float64(d, lam, beta)
        z = d @ beta
        p = 0.5 * (1.0 + np.tanh(z / 2))
        h = (d * (p * (1 - p))[:, None]).T @ d + lam * np.eye(d.shape[1])
        out.append(-np.sum(np.logaddexp(0.0, -z)) - 0.5 * lam * beta @ beta
                   + 0.5 * d.shape[1] * np.log(lam) - 0.5 * np.linalg.slogdet(h)[1])
    return np.asarray(out)


def _reference_fit(x, winner, loser, capacity, seed, cfg):
    """(λ, β̂, margin) of the linear fit's definition in float64 NumPy: the same grid, the same
    seeded folds / held-out split (the fit's own ``cv_folds`` / ``split_rows``), the same rules;
    margin: how clearly the rule chose (relative; inf for a fixed prior)."""
    d = np.asarray(x[winner], np.float64) - np.asarray(x[loser], np.float64)
    count, dim = len(winner), x.shape[1]
    split_key = fit_linear.linear_split_key(jax.random.PRNGKey(seed))
    fit, held = np.ones(count, bool), None
    if cfg.linear_prior is None and cfg.linear_prior_rule == "held-out":
        buf = buffer.buffer_from_pairs(winner, loser, capacity)
        order, n_fit, n_val = jax.device_get(buffer.split_rows(split_key, buf, cfg.val_fraction, cfg.min_val_labels))
        assert n_val > 0
        fit = np.isin(np.arange(count), order[:n_fit])
        held = ~fit
    s = np.mean(np.sum(d[fit] ** 2, axis=1)) / (4 * dim)
    grid = s * np.asarray(fit_linear.LINEAR_PRIOR_GRID[::-1])
    if cfg.linear_prior is not None:
        lam, margin = cfg.linear_prior * s, np.inf
    elif cfg.linear_prior_rule == "evidence":
        log_ev = _log_evidence_float64(d, grid)
        lam, margin = grid[np.argmax(log_ev)], np.max(log_ev) - np.sort(log_ev)[-2]
    elif cfg.linear_prior_rule == "held-out":
        best, margin = _one_standard_error_float64(*_held_out_sums(d, fit, held, grid), held.sum(), ddof=1)
        lam = grid[best]
    else:
        folds = np.asarray(fit_linear.cv_folds(split_key, capacity))[:count]
        sums = [_held_out_sums(d, folds != f, folds == f, grid) for f in range(fit_linear.LINEAR_CV_FOLDS)]
        best, margin = _one_standard_error_float64(*np.sum(sums, axis=0), count, ddof=0)
        lam = grid[best]
    return lam, _map_newton_float64(d, lam), margin


#: (labels, dimension, label quality): more labels than dimensions, fewer, and nearly separable
REFERENCE_PROBLEMS = {"C>D": (300, 20, 1.0), "C<D": (60, 100, 1.0), "near-separable": (300, 20, 30.0)}
REFERENCE_CONFIGS = {
    "cross-validation": {}, "evidence": {"linear_prior_rule": "evidence"},
    "held-out": {"linear_prior_rule": "held-out"}, "fixed": {"linear_prior": 3.0},
}


@pytest.mark.parametrize("problem, rule", [
    # every rule on one problem, the default rule (cross-validation) on every problem
    *(("C>D", rule) for rule in REFERENCE_CONFIGS),
    *((problem, "cross-validation") for problem in REFERENCE_PROBLEMS if problem != "C>D"),
])
def test_fit_is_its_float64_definition(problem, rule):
    """The chosen prior and the head equal (to 1e-5) a float64 NumPy fit of the same definition:
    each MAP by Newton to convergence, the same grid, folds, split and rule."""
    n_pairs, dim, quality = REFERENCE_PROBLEMS[problem]
    x, _, winner, loser = _labels(10, n_pairs=n_pairs, dim=dim, quality=quality)
    cfg = config.TrainConfig(**REFERENCE_CONFIGS[rule])
    head, stats = _fit(x, winner, loser, capacity=512, **REFERENCE_CONFIGS[rule])
    lam, beta, margin = _reference_fit(x, winner, loser, 512, 0, cfg)
    assert margin > 1e-4  # the rule chose clearly: float32 must choose the same
    np.testing.assert_allclose(stats.prior_precision, lam, rtol=1e-5)
    assert np.abs(head - beta).max() <= 1e-5 * np.abs(beta).max()


def test_conjugate_gradient_solves_to_its_tolerance_and_in_one_step_with_the_exact_preconditioner():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(40, 30))
    a = jnp.asarray(a.T @ a + 0.1 * np.eye(30), jnp.float32)
    b = jnp.asarray(rng.normal(size=30), jnp.float32)
    ref = np.linalg.solve(np.asarray(a, np.float64), np.asarray(b, np.float64))
    u, k = newton.conjugate_gradient(lambda v: a @ v, lambda r: r, b, 1e-6, 500)
    np.testing.assert_allclose(u, ref, rtol=1e-3, atol=1e-3 * np.abs(ref).max())
    assert 1 < k < 500
    inverse = jnp.linalg.inv(a)
    u, k = newton.conjugate_gradient(lambda v: a @ v, lambda r: inverse @ r, b, 1e-3, 500)
    assert k == 1
    np.testing.assert_allclose(u, ref, rtol=1e-3, atol=1e-3 * np.abs(ref).max())
    u, k = newton.conjugate_gradient(lambda v: a @ v, lambda r: r, b.at[0].set(jnp.nan), 1e-3, 500)
    assert k == 0 and np.all(np.asarray(u) == 0)  # a right side that is not finite: no direction


def test_run_if_runs_only_where_asked_also_under_vmap():
    def f(x, y):
        return x + y

    one = jax.jit(lambda p, x, y: newton.run_if(p, f, x, y))
    assert float(one(True, 1.0, 2.0)) == 3.0 and float(one(False, 1.0, 2.0)) == 1.0
    batch = jax.jit(jax.vmap(lambda p, x, y: newton.run_if(p, f, x, y)))
    out = batch(jnp.array([True, False, True]), jnp.ones(3), jnp.full(3, 2.0))
    np.testing.assert_array_equal(out, [3.0, 1.0, 3.0])
