"""The Laplace posterior of the last layer, against float64 NumPy from its definition."""
import jax
import jax.numpy as jnp
import numpy as np

from arm_jax.model import likelihood
from arm_jax.selection import fisher, posterior


def _problem(seed=0, m=60, h=4):
    rng = np.random.default_rng(seed)
    past = rng.standard_normal((m, h)).astype(np.float32)
    beta = rng.standard_normal(h).astype(np.float32)
    mask = np.arange(m) < m - 5  # the last 5 rows are padding
    return past, beta, mask


def _ref_precision(past, beta, mask, prior):
    x = np.asarray(past, np.float64)[mask]
    p = 1 / (1 + np.exp(-x @ np.asarray(beta, np.float64)))
    lam = prior * np.eye(x.shape[1])
    for xi, vi in zip(x, p * (1 - p)):
        lam += vi * np.outer(xi, xi)
    return lam


def test_mean_is_the_head_and_precision_is_fisher_plus_prior():
    past, beta, mask = _problem()
    post = posterior.laplace(jnp.asarray(beta), jnp.asarray(past), jnp.asarray(mask), prior_precision=0.5)
    np.testing.assert_array_equal(np.asarray(post.mean), beta)
    ref = _ref_precision(past, beta, mask, 0.5)
    np.testing.assert_allclose(np.asarray(post.precision), ref, rtol=1e-5, atol=1e-5)
    # the same I_past the past-aware D-optimal strategies use
    np.testing.assert_allclose(
        np.asarray(post.precision) - 0.5 * np.eye(4),
        np.asarray(fisher.past_information(jnp.asarray(past), jnp.asarray(beta), jnp.asarray(mask))),
        rtol=1e-6, atol=1e-6,
    )


def test_gap_std_and_bounds_match_the_definition():
    past, beta, mask = _problem(1)
    post = posterior.laplace(jnp.asarray(beta), jnp.asarray(past), jnp.asarray(mask))
    x = np.random.default_rng(2).standard_normal((7, 4)).astype(np.float32)
    mean, std = posterior.gap_mean_and_std(post, jnp.asarray(x))
    cov = np.linalg.inv(_ref_precision(past, beta, mask, likelihood.DEFAULT_PRIOR_PRECISION))
    np.testing.assert_allclose(np.asarray(mean), x.astype(np.float64) @ beta, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(std), np.sqrt(np.einsum("ij,jk,ik->i", x, cov, x)), rtol=1e-4)
    lo, hi = posterior.preference_bounds(post, jnp.asarray(x), width=2.0)
    p = jax.nn.sigmoid(mean)
    assert np.all(np.asarray(lo) < np.asarray(p)) and np.all(np.asarray(p) < np.asarray(hi))


def test_draws_have_the_posterior_covariance():
    past, beta, mask = _problem(3)
    post = posterior.laplace(jnp.asarray(beta), jnp.asarray(past), jnp.asarray(mask))
    draws = np.asarray(posterior.sample_heads(post, jax.random.PRNGKey(0), 40_000), np.float64)
    cov = np.linalg.inv(_ref_precision(past, beta, mask, likelihood.DEFAULT_PRIOR_PRECISION))
    np.testing.assert_allclose(draws.mean(axis=1), beta, atol=4 * np.sqrt(np.diag(cov).max() / 40_000))
    np.testing.assert_allclose(np.cov(draws), cov, rtol=0.05, atol=0.02 * np.abs(cov).max())


def test_predictive_probability_is_the_posterior_average_and_is_calibrated():
    """A well-specified logistic model: features x, true head w, labels y ~ σ(xᵀw). The MAP
    head (Newton in float64) and its Laplace posterior give held-out predictive probabilities
    whose expected calibration error is small, and the probit approximation matches the
    Monte Carlo average of σ(xᵀβ) over posterior draws."""
    rng = np.random.default_rng(4)
    h, n = 5, 400
    w = rng.standard_normal(h) * 1.5
    x = rng.standard_normal((n + 4000, h))
    y = rng.random(n + 4000) < 1 / (1 + np.exp(-x @ w))
    # pairs are oriented winner − loser: a label y = 0 flips the sign of x
    signed = np.where(y[:, None], x, -x)
    beta = np.zeros(h)
    for _ in range(30):  # Newton on the penalised log-likelihood (prior precision 1)
        p = 1 / (1 + np.exp(-signed[:n] @ beta))
        grad = signed[:n].T @ (1 - p) - beta
        hess = (signed[:n] * (p * (1 - p))[:, None]).T @ signed[:n] + np.eye(h)
        beta = beta + np.linalg.solve(hess, grad)
    post = posterior.laplace(jnp.asarray(beta, jnp.float32), jnp.asarray(signed[:n], jnp.float32))
    test = jnp.asarray(x[n:], jnp.float32)
    prob = np.asarray(posterior.predictive_probability(post, test), np.float64)
    outcome = y[n:].astype(float)
    bins = np.minimum((prob * 10).astype(int), 9)
    ece = sum(abs(prob[bins == b].mean() - outcome[bins == b].mean()) * np.mean(bins == b)
              for b in range(10) if np.any(bins == b))
    assert ece < 0.04, ece
    mc = np.asarray(jax.nn.sigmoid(test @ posterior.sample_heads(post, jax.random.PRNGKey(1), 4000))).mean(axis=1)
    np.testing.assert_allclose(prob, mc, atol=0.02)
