"""Every selection kernel on hard inputs (rank-deficient, huge features, fewer items than
features) against float64 references: finite, and the same picks."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arm_jax import errors
from arm_jax.model import likelihood
from arm_jax.selection import allpairs, fisher, registry
from arm_jax.selection import pool as pool_lib
from arm_jax.selection import scores as strategies

K = 50


# ----------------------------------------------------------------------------- inputs


def _low_rank_large(n=4000, h=64, seed=0):
    """The issue's example: x = U·W, U (n×3) ~ 100·N(0,1), W (3×h) ~ N(0,1), + 1e-3 noise;
    β ~ N(0,1)/400. M has 3 eigenvalues ~1e9 and 61 at float32 rounding level."""
    rng = np.random.default_rng(seed)
    u = 100 * rng.standard_normal((n, 3))
    x = u @ rng.standard_normal((3, h)) + 1e-3 * rng.standard_normal((n, h))
    beta = rng.standard_normal(h) / 400
    return x.astype(np.float32), beta.astype(np.float32)


def _ref_leverage(x, beta, weighted=True, past=None, ridge=fisher.DEFAULT_RIDGE):
    """float64 NumPy, from the definition: v_i x_iᵀ (M + ρI)⁻¹ x_i, ρ = ε tr(M)/H + floor."""
    x = np.asarray(x, np.float64)
    beta = np.asarray(beta, np.float64)

    def v_of(z):
        p = 1.0 / (1.0 + np.exp(-z @ beta))
        return p * (1.0 - p)

    v = v_of(x) if weighted else np.ones(len(x))
    m = (x * v[:, None]).T @ x
    if past is not None:
        past = np.asarray(past, np.float64)
        m += (past * v_of(past)[:, None]).T @ past
    m += (ridge * np.trace(m) / x.shape[1] + fisher.RIDGE_FLOOR) * np.eye(x.shape[1])
    return v * np.einsum("ij,ij->i", x @ np.linalg.inv(m), x)


def _ref_greedy(x, beta, k, past=None, ridge=1.0):
    """float64 greedy D-optimal batch with explicit inverses (no Sherman–Morrison)."""
    x = np.asarray(x, np.float64)
    beta = np.asarray(beta, np.float64)
    p = 1.0 / (1.0 + np.exp(-x @ beta))
    v = p * (1 - p)
    m = ridge * np.eye(x.shape[1])
    if past is not None:
        past = np.asarray(past, np.float64)
        pp = 1.0 / (1.0 + np.exp(-past @ beta))
        m += (past * (pp * (1 - pp))[:, None]).T @ past
    picked = []
    for _ in range(k):
        gain = np.log1p(v * np.einsum("ij,ij->i", x @ np.linalg.inv(m), x))
        gain[picked] = -np.inf
        j = int(np.argmax(gain))
        picked.append(j)
        m += v[j] * np.outer(x[j], x[j])
    return picked


@pytest.fixture(scope="module")
def low_rank():
    return _low_rank_large()




@pytest.mark.parametrize("name", ["dopt", "xtx", "pa_dopt"])
def test_design_scores_on_rank_deficient_large_features_match_float64(low_rank, name):
    x, beta = low_rank
    past = x[:200] * 0.5 if name == "pa_dopt" else None
    chosen = pool_lib.select(name, jax.random.PRNGKey(0), x, beta, K, past_phi_diff=past)
    picks = np.asarray(chosen.indices)
    assert np.all(np.isfinite(np.asarray(chosen.scores)))
    assert set(picks.tolist()) != set(range(K)), "unranked candidates 0..k-1 (the old failure)"
    ref = _ref_leverage(x, beta, weighted=name != "xtx", past=past)
    best = set(np.argsort(-ref)[:K].tolist())
    assert len(best & set(picks.tolist())) >= K - 2
    np.testing.assert_allclose(np.asarray(chosen.scores), ref[picks], rtol=2e-2)


def test_greedy_dopt_on_rank_deficient_large_features_matches_float64(low_rank):
    x, beta = low_rank
    x, past = x[:1000], x[1000:1100]
    chosen = pool_lib.select("greedy_dopt", None, x, beta, 20, past_phi_diff=past)
    assert np.all(np.isfinite(np.asarray(chosen.scores)))
    assert np.asarray(chosen.indices).tolist() == _ref_greedy(x, beta, 20, past)


def test_batchbald_on_rank_deficient_large_features_is_finite(low_rank):
    x, beta = low_rank
    chosen = pool_lib.select("batchbald", jax.random.PRNGKey(1), x[:500], beta, 5, past_phi_diff=x[500:700])
    assert np.all(np.isfinite(np.asarray(chosen.scores)))


def test_whitening_grows_the_ridge_until_the_factor_is_finite(low_rank):
    x, beta = low_rank
    m = fisher.information_matrix(jnp.asarray(x), likelihood.bernoulli_variance(jnp.asarray(x), jnp.asarray(beta)))
    w = fisher.whitening(m)
    assert bool(w.ok) and np.all(np.isfinite(np.asarray(w.w)))
    assert float(w.ridge) >= float(fisher.ridge_for(m))
    # a zero matrix (no information yet) is regularised by the floor alone
    zero = fisher.whitening(jnp.zeros((4, 4)))
    assert bool(zero.ok)
    # a matrix that is not finite cannot be rescued: ok is False and the scores are NaN,
    # never an arbitrary ranking
    bad = fisher.whitening(jnp.full((4, 4), jnp.nan))
    assert not bool(bad.ok)
    spec = registry.STRATEGIES["dopt"].pair_score
    scores = strategies.pair_scores_from_information(spec, jnp.ones((3, 4)), jnp.zeros(3), jnp.full((4, 4), jnp.nan))
    assert np.all(np.isnan(np.asarray(scores)))
    with pytest.raises(errors.SelectionFailed, match="strategy 'dopt': 3 of 3 picked scores are not finite"):
        pool_lib.check_selection("dopt", scores)


def test_fewer_items_than_features_scores_every_pair(same_picks):
    """Issue item 10: 40 items in 64-d features (M singular): real scores, not (0,1),(0,2),…"""
    rng = np.random.default_rng(3)
    phi = rng.standard_normal((40, 64)).astype(np.float32) * 30
    beta = rng.standard_normal(64).astype(np.float32) / 30
    u, v, diff = allpairs.explicit_pairs(phi)
    for name in ("dopt", "pa_dopt", "xtx"):
        chosen = pool_lib.select(name, None, diff, beta, 5, past_phi_diff=np.asarray(diff[:3]))
        assert np.all(np.isfinite(np.asarray(chosen.scores)))
        ref = _ref_leverage(diff, beta, weighted=name != "xtx", past=np.asarray(diff[:3]) if name == "pa_dopt" else None)
        # (xtx over all pairs of K items gives every pair leverage 2/K: ties, any 5 are right)
        same_picks(np.asarray(chosen.indices).tolist(), ref, 5)
        np.testing.assert_allclose(np.asarray(chosen.scores), ref[np.asarray(chosen.indices)], rtol=1e-3)

