import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arm_jax.model import likelihood
from arm_jax.selection import fisher


def _problem(seed=0, n=40, h=5, m=7):
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
    return (
        jax.random.normal(k1, (n, h)),
        jax.random.normal(k2, (h,)),
        jax.random.normal(k3, (m, h)),
    )


def _numpy_dopt(x, beta, past=None, ridge=1e-6):
    """Independent reference in float64: explicit outer products, the relative ridge as
    documented (ρ = ε·tr(M)/H + floor), an explicit inverse."""
    x = np.asarray(x, np.float64)
    beta = np.asarray(beta, np.float64)
    v = lambda z: 1.0 / (1.0 + np.exp(-z @ beta)) * (1.0 - 1.0 / (1.0 + np.exp(-z @ beta)))
    m = np.zeros((x.shape[1], x.shape[1]))
    for xi, vi in zip(x, v(x)):
        m += vi * np.outer(xi, xi)
    if past is not None:
        past = np.asarray(past, np.float64)
        for xi, vi in zip(past, v(past)):
            m += vi * np.outer(xi, xi)
    m += (ridge * np.trace(m) / x.shape[1] + fisher.RIDGE_FLOOR) * np.eye(x.shape[1])
    m_inv = np.linalg.inv(m)
    return np.array([vi * xi @ m_inv @ xi for xi, vi in zip(x, v(x))]), m


def test_bernoulli_variance_matches_p_one_minus_p():
    x, beta, _ = _problem()
    p = jax.nn.sigmoid(x @ beta)
    np.testing.assert_allclose(likelihood.bernoulli_variance(x, beta), p * (1 - p), rtol=1e-5)


def test_closed_form_equals_autodiff_and_numpy():
    x, beta, _ = _problem()
    closed = fisher.dopt_scores(x, beta)
    auto = fisher.dopt_scores_autodiff(x, likelihood.bernoulli_variance(x, beta))
    reference, _ = _numpy_dopt(x, beta)
    np.testing.assert_allclose(closed, auto, rtol=1e-4)
    np.testing.assert_allclose(closed, reference, rtol=1e-4)


def test_past_aware_matches_numpy_and_mask():
    x, beta, past = _problem(1)
    reference, _ = _numpy_dopt(x, beta, past)
    np.testing.assert_allclose(fisher.dopt_scores(x, beta, past), reference, rtol=1e-4)
    # padding rows masked out change nothing
    padded = jnp.concatenate([past, 100.0 * jnp.ones((3, past.shape[1]))])
    mask = jnp.arange(padded.shape[0]) < past.shape[0]
    np.testing.assert_allclose(fisher.dopt_scores(x, beta, padded, past_mask=mask), reference, rtol=1e-4)
    # autodiff with I_past agrees too
    auto = fisher.dopt_scores_autodiff(
        x, likelihood.bernoulli_variance(x, beta), fisher.past_information(past, beta)
    )
    np.testing.assert_allclose(auto, reference, rtol=1e-4)


def test_scores_sum_to_trace_identity():
    """Σ_i v_i x_iᵀ (M + ρI)⁻¹ x_i = H − ρ tr((M + ρI)⁻¹): a property of leverage scores."""
    x, beta, _ = _problem(2, n=200, h=6)
    ridge = 1e-2
    scores = fisher.dopt_scores(x, beta, ridge=ridge)
    _, m = _numpy_dopt(x, beta, ridge=ridge)
    h = 6
    rho = ridge * (np.trace(m) / h) / (1 + ridge)  # m = M + ε·tr(M)/H·I, so tr(m) = tr(M)(1 + ε)
    expected = 6 - rho * np.trace(np.linalg.inv(m))
    np.testing.assert_allclose(float(jnp.sum(scores)), expected, rtol=1e-4)


def test_weighted_logdet_matches_slogdet():
    x, beta, _ = _problem(3)
    w = jax.random.uniform(jax.random.PRNGKey(4), (x.shape[0],))
    v = likelihood.bernoulli_variance(x, beta)
    m = (np.asarray(x).T * np.asarray(w * v)) @ np.asarray(x)
    m += (1e-6 * np.trace(m) / x.shape[1] + fisher.RIDGE_FLOOR) * np.eye(x.shape[1])
    np.testing.assert_allclose(fisher.weighted_logdet(w, x, v), np.linalg.slogdet(m)[1], rtol=1e-4)


def test_ranking_by_det_gradient_equals_log_det_gradient():
    """∂det/∂w = det · ∂logdet/∂w: same order."""
    x, beta, _ = _problem(5, n=30, h=3)
    v = likelihood.bernoulli_variance(x, beta)
    det_grad = jax.grad(lambda w: jnp.exp(fisher.weighted_logdet(w, x, v)))(jnp.ones(30))
    np.testing.assert_array_equal(np.argsort(-det_grad), np.argsort(-fisher.dopt_scores(x, beta)))


def test_no_n_by_h_by_h_intermediate():
    """The compiled closed form keeps memory O(N·H): no buffer of N·H·H elements."""
    n, h = 4096, 32
    hlo = jax.jit(fisher.dopt_scores).lower(jnp.ones((n, h)), jnp.ones(h)).compile().as_text()
    assert f"{n},{h},{h}" not in hlo.replace(" ", "") and f"{n},{h * h}" not in hlo.replace(" ", "")


@pytest.mark.parametrize(
    "args, message",
    [
        ((jnp.ones((4, 3)), jnp.ones(2)), r"beta must have shape \(3,\) to match phi_diff \(4, 3\), got \(2,\)"),
        ((jnp.ones(4), jnp.ones(4)), r"phi_diff must be \(N, H\), got shape \(4,\)"),
        ((jnp.ones((4, 3)), jnp.ones(3), jnp.ones((2, 5))), r"past_phi_diff must be \(M, 3\)"),
    ],
)
def test_shape_mismatch_raises(args, message):
    with pytest.raises(ValueError, match=message):
        fisher.dopt_scores(*args)
