import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arm_jax.model import likelihood
from arm_jax.selection import batch, fisher, registry
from arm_jax.selection import scores as strategies
from arm_jax.selection.pool import select as _select
from arm_jax.selection.registry import STRATEGIES
from arm_jax.selection.scores import make_inputs

ALL = list(STRATEGIES)


def _items_of(x):
    """Items behind explicit pairs x_i: item 2i has features x_i, item 2i+1 zeros; groups of 8."""
    x = np.asarray(x, np.float32)
    n = x.shape[0]
    phi = np.zeros((2 * n, x.shape[1]), np.float32)
    phi[0::2] = x
    return strategies.PairItems(phi, np.arange(0, 2 * n, 2), np.arange(1, 2 * n, 2), np.arange(n) // 8)


def select(name, key, phi_diff, beta, k, *args, **kwargs):
    """strategies.select, with the candidates' items for the rules that need them."""
    if name in registry.RESPONSE_RULES and "items" not in kwargs:
        kwargs["items"] = _items_of(phi_diff)
    return _select(name, key, phi_diff, beta, k, *args, **kwargs)


def _pool(seed=0, n=120, h=6, m=15):
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
    return jax.random.normal(k1, (n, h)), 0.5 * jax.random.normal(k2, (h,)), jax.random.normal(k3, (m, h))


def test_registry_has_the_papers_eight_greedy_and_the_posterior_rules():
    new = {"greedy_dopt", "iopt", "greedy_iopt", "fw_iopt", "delta_ucb", "infomax", "bald", "uncertain_iopt", "eubo", "dts", "drts",
           "maxmin_lcb"}
    assert set(registry.PAPER_STRATEGIES) | new == set(STRATEGIES)
    assert len(registry.PAPER_STRATEGIES) == 8


@pytest.mark.parametrize("name", ALL)
def test_k_distinct_in_range_and_deterministic(name):
    x, beta, past = _pool()
    valid = jnp.arange(x.shape[0]) % 5 != 0  # every fifth candidate is padding
    a = select(name, jax.random.PRNGKey(1), x, beta, 40, valid=valid, past_phi_diff=past)
    b = select(name, jax.random.PRNGKey(1), x, beta, 40, valid=valid, past_phi_diff=past)
    idx = np.asarray(a.indices)
    assert idx.shape == (40,) and a.scores.shape == (40,)
    assert len(set(idx.tolist())) == 40
    assert idx.min() >= 0 and idx.max() < x.shape[0]
    assert np.all(np.asarray(valid)[idx])
    assert np.all(np.isfinite(np.asarray(a.scores)))
    np.testing.assert_array_equal(idx, b.indices)


@pytest.mark.parametrize("name", ALL)
def test_can_take_every_valid_candidate(name):
    x, beta, _ = _pool(n=30)
    idx = select(name, jax.random.PRNGKey(0), x, beta, 30).indices
    assert sorted(np.asarray(idx).tolist()) == list(range(30))


def test_random_depends_on_key():
    x, beta, _ = _pool()
    a = select("random", jax.random.PRNGKey(0), x, beta, 20).indices
    b = select("random", jax.random.PRNGKey(1), x, beta, 20).indices
    assert set(np.asarray(a).tolist()) != set(np.asarray(b).tolist())


def test_dopt_is_top_k_of_dopt_scores():
    x, beta, _ = _pool()
    sel = select("dopt", jax.random.PRNGKey(0), x, beta, 10)
    expected = np.argsort(-np.asarray(fisher.dopt_scores(x, beta)))[:10]
    np.testing.assert_array_equal(sel.indices, expected)


def test_pa_dopt_with_empty_past_equals_dopt():
    x, beta, past = _pool()
    dopt = select("dopt", jax.random.PRNGKey(0), x, beta, 25)
    empty = select("pa_dopt", jax.random.PRNGKey(0), x, beta, 25, past_phi_diff=past, past_mask=jnp.zeros(15, bool))
    np.testing.assert_array_equal(dopt.indices, empty.indices)
    np.testing.assert_allclose(dopt.scores, empty.scores, rtol=1e-6)
    with_past = select("pa_dopt", jax.random.PRNGKey(0), x, beta, 25, past_phi_diff=past)
    np.testing.assert_allclose(
        np.sort(with_past.scores), np.sort(np.asarray(fisher.dopt_scores(x, beta, past)))[-25:], rtol=1e-5
    )


def test_xtx_equals_dopt_with_unit_weights():
    x, beta, _ = _pool()
    xtx = select("xtx", jax.random.PRNGKey(0), x, beta, 30)
    unit = fisher.dopt_scores_from_weights(x, jnp.ones(x.shape[0]))
    np.testing.assert_array_equal(xtx.indices, np.argsort(-np.asarray(unit))[:30])
    # and with beta = 0 every v is 1/4, so dopt ranks exactly like xtx
    dopt0 = select("dopt", jax.random.PRNGKey(0), x, jnp.zeros_like(beta), 30)
    np.testing.assert_array_equal(dopt0.indices, xtx.indices)


def test_entropy_and_maxdiff_rank_by_the_reward_gap():
    x, beta, _ = _pool()
    gap = np.abs(np.asarray(x @ beta))
    np.testing.assert_array_equal(select("entropy", None, x, beta, 10).indices, np.argsort(gap)[:10])
    np.testing.assert_array_equal(select("maxdiff", None, x, beta, 10).indices, np.argsort(-gap)[:10])


def _near_duplicate_pool(seed=0, h=6, copies=12, distinct=400):
    """Many pairs spread over H − 1 directions, plus 12 near-copies of one pair along the last
    direction, which nothing else covers: each copy has a high leverage, so top-k takes them all."""
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
    base = jax.random.normal(k1, (distinct, h)).at[:, -1].mul(0.05)
    dup = 2.0 * jnp.eye(h)[-1] + 0.01 * jax.random.normal(k2, (copies, h))
    return jnp.concatenate([dup, base]), 0.3 * jax.random.normal(k3, (h,))


def test_greedy_dopt_beats_top_k_on_near_duplicates():
    x, beta = _near_duplicate_pool()
    k = 10
    v = likelihood.bernoulli_variance(x, beta)

    def logdet(idx):
        xs, vs = x[idx], v[idx]
        return float(fisher.logdet_spd(jnp.eye(x.shape[1]) + fisher.information_matrix(xs, vs)))

    top = select("dopt", jax.random.PRNGKey(0), x, beta, k).indices
    greedy = select("greedy_dopt", jax.random.PRNGKey(0), x, beta, k).indices
    n_dup_top = int(np.sum(np.asarray(top) < 12))
    n_dup_greedy = int(np.sum(np.asarray(greedy) < 12))
    assert n_dup_top > n_dup_greedy
    assert logdet(greedy) >= logdet(top)
    # greedy's reported gains are the exact log-det increments
    gains = select("greedy_dopt", jax.random.PRNGKey(0), x, beta, k).scores
    np.testing.assert_allclose(float(jnp.sum(gains)), logdet(greedy), rtol=1e-4)


def test_greedy_first_pick_is_the_best_single_pair():
    x, beta, _ = _pool()
    v = likelihood.bernoulli_variance(x, beta)
    first = int(select("greedy_dopt", None, x, beta, 1).indices[0])
    assert first == int(np.argmax(np.asarray(v * jnp.sum(x * x, axis=1))))


def test_batchbald_first_pick_is_bald_argmax_when_posterior_is_shared():
    """With one configuration step, the greedy criterion is BALD: H(E p) − E H(p)."""
    x, beta, _ = _pool()
    sel = batch.batchbald_strategy(jax.random.PRNGKey(3), make_inputs(x, beta), 1, n_samples=64)
    # recompute BALD with the same posterior draws
    key = jax.random.split(jax.random.PRNGKey(3), 3)[0]
    eps = jax.random.normal(key, (x.shape[1], 64))
    probs = jax.nn.sigmoid(x @ (beta[:, None] + eps))  # prior precision 1, no past: Σ = I
    h = lambda p: -(p * jnp.log(p) + (1 - p) * jnp.log1p(-p))
    probs = jnp.clip(probs, 1e-7, 1 - 1e-7)
    bald = h(probs.mean(1)) - h(probs).mean(1)
    assert int(sel.indices[0]) == int(jnp.argmax(bald))
    np.testing.assert_allclose(float(sel.scores[0]), float(bald.max()), rtol=1e-3)


def test_coreset_prefers_isolated_points():
    """Points in a tiny far-away cluster have higher sensitivity than points in a big one."""
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    big = 0.1 * jax.random.normal(k1, (190, 3))
    small = 6.0 + 0.1 * jax.random.normal(k2, (10, 3))
    x = jnp.concatenate([big, small])
    sel = select("coreset", jax.random.PRNGKey(1), x, jnp.zeros(3), 20)
    assert np.sum(np.asarray(sel.indices) >= 190) >= 5  # 5% of the data, ≥ 25% of the picks


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(name="best"), "unknown strategy 'best'; choose one of: random, entropy"),
        (dict(k=0), "k must be positive, got 0"),
        (dict(k=-3), "k must be positive, got -3"),
        (dict(k=121), "k = 121 is larger than the pool of 120 candidate pairs"),
        (dict(k=2.5), "k must be an integer, got 2.5"),
        (dict(beta=jnp.ones(5)), r"beta must have shape \(6,\) to match phi_diff \(120, 6\), got \(5,\)"),
        (dict(phi_diff=jnp.ones((120, 6)).at[3, 1].set(jnp.nan).at[7, 0].set(jnp.inf)), "phi_diff contains 2 NaN/inf values"),
        (dict(past_phi_diff=jnp.ones((4, 5))), r"past_phi_diff must be \(M, 6\)"),
        (dict(valid=jnp.ones(7, bool)), r"valid must have shape \(120,\)"),
    ],
)
def test_bad_input_raises_clear_value_error(kwargs, message):
    x, beta, _ = _pool()
    args = dict(name="dopt", key=jax.random.PRNGKey(0), phi_diff=x, beta=beta, k=5)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        select(**args)


def test_k_larger_than_valid_candidates():
    x, beta, _ = _pool()
    valid = jnp.arange(120) < 10
    with pytest.raises(ValueError, match="k = 11 is larger than the pool of 10 candidate pairs"):
        select("random", jax.random.PRNGKey(0), x, beta, 11, valid=valid)


# ------------------------------------------------------------------ pairwise BALD


def _bald_float64(gap, quad, exact=False):
    """BALD in bits on the probit scale: the definition, the expectation either by Houlsby's
    approximation or (exact) by Gauss–Hermite quadrature of E_z h(Φ(z)), z ~ N(μ, s²)."""
    from scipy.stats import norm

    def h(p):
        p = np.clip(p, 1e-300, 1 - 1e-16)
        return -(p * np.log2(p) + (1 - p) * np.log2(1 - p))

    kappa, c = np.sqrt(np.pi / 8), np.sqrt(np.pi * np.log(2) / 2)
    mu, s2 = kappa * gap, kappa ** 2 * quad
    first = h(norm.cdf(mu / np.sqrt(1 + s2)))
    if exact:
        nodes, weights = np.polynomial.hermite_e.hermegauss(80)
        second = np.sum(weights * h(norm.cdf(mu + np.sqrt(s2) * nodes))) / np.sqrt(2 * np.pi)
    else:
        second = c / np.sqrt(s2 + c * c) * np.exp(-mu * mu / (2 * (s2 + c * c)))
    return first - second


@pytest.mark.parametrize("gap", [0.0, 0.3, -2.0, 8.0, 1e-6])
@pytest.mark.parametrize("quad", [0.0, 1e-4, 0.5, 4.0, 100.0])
def test_bald_is_its_definition_and_close_to_the_exact_information(gap, quad):
    got = float(strategies.bald_score(jnp.float32(gap), jnp.float32(quad)))
    np.testing.assert_allclose(got, max(_bald_float64(gap, quad), 0.0), atol=2e-6)
    # Houlsby's approximation of the expected entropy is within 0.02 bits of the integral
    assert abs(got - max(_bald_float64(gap, quad, exact=True), 0.0)) < 0.02
    assert got >= 0.0


def test_bald_grows_with_the_posterior_variance_and_shrinks_with_the_gap():
    quads = jnp.asarray([0.1, 1.0, 10.0])
    assert np.all(np.diff(np.asarray(strategies.bald_score(jnp.zeros(3), quads))) > 0)
    gaps = jnp.asarray([0.0, 1.0, 3.0])
    assert np.all(np.diff(np.asarray(strategies.bald_score(gaps, jnp.full(3, 2.0)))) < 0)
