"""Davidson's likelihood: its Fisher information against autodiff, its reductions to
Bradley–Terry, and what the fits recover (ties, reliabilities, vote counts)."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arm_jax.experiment import annotator
from arm_jax.model import buffer, likelihood
from arm_jax.model import config as config_lib
from arm_jax.model import fit as train
from arm_jax.model import likelihood as likelihood_lib
from arm_jax.model import network as model
from arm_jax.model.network import ModelConfig
from arm_jax.selection import fisher

enable_x64 = functools.partial(jax.enable_x64, True)


def test_fisher_weight_is_the_hessian_of_the_log_likelihood():
    """∂²ℓ/∂g² = n q² v(q g; ν) for every outcome (observed = expected information), against
    jax.hessian of the row's negative log-likelihood in float64 (one compile for all cases)."""
    gaps = np.array([-30.0, -4.0, -0.7, 0.0, 0.1, 1.5, 8.0, 40.0], np.float32)
    with enable_x64():  # the reference: autodiff in float64 (float32 loses the e^{-|d|} tails)
        hessian = jax.jit(jax.vmap(jax.hessian(likelihood.row_nll), in_axes=(0, None, None, None)))
        for nu in (0.0, 0.3, 2.0, 50.0):
            for scale in (1.0, 0.2, 3.0):
                for counts in ([1, 0, 0], [0, 1, 0], [0, 0, 1], [7, 3, 0], [0.7, 0.3, 0], [2, 1, 4]):
                    if counts[2] and nu == 0:
                        continue
                    hess = np.asarray(hessian(
                        jnp.asarray(gaps, jnp.float64), jnp.asarray(counts, jnp.float64), jnp.float64(scale),
                        jnp.float64(np.log(nu) if nu > 0 else -np.inf),
                    ))
                    with jax.enable_x64(False):
                        v = likelihood_lib.gap_variance(scale * jnp.asarray(gaps), jnp.float32(nu))
                    expected = sum(counts) * scale ** 2 * np.asarray(v, np.float64)
                    # atol: float64 autodiff of logaddexp is itself off by up to 2x below e^{-30}
                    # (the closed form matches the float64 definition: the next test)
                    np.testing.assert_allclose(expected, hess, rtol=1e-4, atol=1e-9)


def test_fisher_weight_closed_form_in_float64():
    """v(d; ν) = (1 + ν/2 cosh(d/2)) / (2 cosh(d/2) + ν)², the definition, in float64."""
    d = np.linspace(-20, 20, 41)
    for nu in (0.0, 0.5, 3.0):
        ref = (1 + nu / 2 * np.cosh(d / 2)) / (2 * np.cosh(d / 2) + nu) ** 2
        got = np.asarray(likelihood_lib.gap_variance(jnp.asarray(d, jnp.float32), jnp.float32(nu)), np.float64)
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-12)
        assert np.all(np.isfinite(got)) and np.all(got >= 0)
    # ν = 0 is Bradley–Terry's p(1 − p)
    np.testing.assert_allclose(
        np.asarray(likelihood_lib.gap_variance(jnp.asarray(d, jnp.float32), jnp.float32(0.0))),
        np.asarray(likelihood_lib.gap_variance(jnp.asarray(d, jnp.float32))), rtol=1e-6,
    )


def test_head_information_is_the_hessian_in_beta():
    """I_past with votes, reliabilities (x scaled by q) and ties equals jax.hessian in β of
    Σ rows ℓ(q xᵀβ) — the Fisher information dopt/pa_dopt/the posterior use."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 5)).astype(np.float32)
    beta = rng.normal(size=5).astype(np.float32)
    counts = rng.integers(0, 4, size=(30, 3)).astype(np.float32)
    counts[counts.sum(1) == 0, 0] = 1
    q = np.exp(rng.normal(size=30)).astype(np.float32)
    nu = 0.8

    def nll(b):
        return jnp.sum(likelihood.row_nll(jnp.asarray(x) @ b, jnp.asarray(counts), jnp.asarray(q), jnp.log(nu)))

    hess = np.asarray(jax.hessian(nll)(jnp.asarray(beta)))
    info = fisher.past_information(
        jnp.asarray(x * q[:, None]), jnp.asarray(beta), past_weight=jnp.asarray(counts.sum(1)), tie=jnp.float32(nu)
    )
    np.testing.assert_allclose(np.asarray(info), hess, rtol=1e-4, atol=1e-5)


def test_probabilities_and_bradley_terry_reduction():
    g = jnp.linspace(-50, 50, 101)
    probs = likelihood.outcome_probabilities(g, 1.3)
    np.testing.assert_allclose(np.asarray(probs.sum(-1)), 1.0, rtol=1e-6)
    # win/loss odds stay e^g (Davidson keeps Bradley–Terry's meaning of a gap)
    mid = np.abs(np.asarray(g)) < 20
    np.testing.assert_allclose(np.log(probs[mid, 0] / probs[mid, 1]), np.asarray(g)[mid], atol=1e-3)
    # ν = 0 with a decided vote is the Bradley–Terry loss
    nll = likelihood.row_nll(g, jnp.asarray([1.0, 0.0, 0.0]), 1.0, -jnp.inf)
    np.testing.assert_allclose(np.asarray(nll), np.asarray(likelihood_lib.bt_loss(g, 0.0)), rtol=1e-5, atol=1e-6)


def test_tie_strength_for_rate():
    gaps = jax.random.normal(jax.random.PRNGKey(0), (2000,)) * 2.0
    for rate in (0.05, 0.2, 0.5):
        nu = likelihood.tie_strength_for_rate(rate, gaps)
        got = float(jnp.mean(likelihood.outcome_probabilities(gaps, nu)[:, 2]))
        assert abs(got - rate) < 1e-4
    assert float(likelihood.tie_strength_for_rate(0.0, gaps)) == 0.0


# ------------------------------------------------------------------------------ fits


def _linear_problem(n=400, d=6, seed=0):
    rng = np.random.default_rng(seed)
    items = rng.normal(size=(80, d)).astype(np.float32)
    w = rng.normal(size=d)
    a = rng.integers(0, 80, n)
    b = (a + 1 + rng.integers(0, 79, n)) % 80
    return rng, items, items @ w, a, b


def _fit(items, a, b, counts=None, annotator_ids=None, **config):
    buf = buffer.buffer_from_pairs(a, b, capacity=len(a), counts=counts, annotator=annotator_ids)
    return train.fit_jit(
        jax.random.PRNGKey(0), jnp.asarray(items), buf, model_config=ModelConfig(depth=0),
        train_config=config_lib.TrainConfig(**config),
    )


def test_hard_votes_without_ties_are_bradley_terry():
    """A buffer with votes holding only decided votes (no ties, no raters) fits the same
    head as the plain buffer (the general likelihood reduces to Bradley–Terry)."""
    rng, items, r, a, b = _linear_problem(200)
    first_wins = rng.random(200) < 1 / (1 + np.exp(-(r[a] - r[b])))
    w, l = np.where(first_wins, a, b), np.where(first_wins, b, a)
    p_plain, s_plain = _fit(items, w, l, linear_prior=10.0)
    p_votes, s_votes = _fit(items, w, l, counts=np.tile(np.float32([1, 0, 0]), (200, 1)), linear_prior=10.0)
    np.testing.assert_allclose(model.head(p_votes), model.head(p_plain), rtol=1e-4, atol=1e-6)
    assert float(s_votes.tie) == 0.0


def test_vote_counts_equal_repeated_rows():
    """A row of votes (7, 3) is the same likelihood as 7 + 3 decided rows."""
    rng, items, r, a, b = _linear_problem(60)
    votes = rng.integers(0, 6, size=(60, 2)).astype(np.float32)
    votes[votes.sum(1) == 0, 0] = 1
    counts = np.concatenate([votes, np.zeros((60, 1), np.float32)], axis=1)
    p_votes, _ = _fit(items, a, b, counts=counts, linear_prior=10.0)
    w = np.concatenate([np.repeat(a, votes[:, 0].astype(int)), np.repeat(b, votes[:, 1].astype(int))])
    l = np.concatenate([np.repeat(b, votes[:, 0].astype(int)), np.repeat(a, votes[:, 1].astype(int))])
    p_rows, _ = _fit(items, w, l, linear_prior=10.0)
    # the prior is λ = c · mean|x|²/(4D) over rows; the same pairs with the same weights
    # give the same λ only up to the weighting, so compare at a fixed λ on the same scale
    head_v, head_r = np.asarray(model.head(p_votes)), np.asarray(model.head(p_rows))
    assert np.corrcoef(head_v, head_r)[0, 1] > 0.999


def test_tie_strength_and_reliabilities_are_recovered():
    """Simulated Davidson labels from a panel (qualities 0.25, 1, 4): the linear fit recovers
    ν and orders the raters by their quality."""
    rng, items, r, a, b = _linear_problem(3000, d=4, seed=1)
    r = r / r.std()
    qualities = np.array([0.25, 1.0, 4.0])
    rater = rng.integers(0, 3, 3000).astype(np.int32)
    nu = 0.6
    probs = np.asarray(likelihood.outcome_probabilities(jnp.asarray(qualities[rater] * (r[a] - r[b]), jnp.float32), nu))
    outcome = np.array([rng.choice(3, p=p / p.sum()) for p in probs])
    counts = np.eye(3, dtype=np.float32)[outcome]
    _, stats = _fit(items, a, b, counts=counts, annotator_ids=rater, annotators=3)
    q = np.asarray(stats.reliability)
    assert q[0] < q[1] < q[2], q
    assert 0.4 < float(stats.tie) < 0.8, float(stats.tie)
    # the MLP's fit orders them too
    buf = buffer.buffer_from_pairs(a, b, capacity=3072, counts=counts, annotator=rater)
    _, mlp = train.fit_jit(
        jax.random.PRNGKey(0), jnp.asarray(items), buf, model_config=ModelConfig(depth=1, width=8),
        train_config=config_lib.TrainConfig(steps=300, annotators=3),
    )
    q = np.asarray(mlp.reliability)
    assert q[0] < q[1] < q[2], q


def test_simulated_panel_and_ties():
    """annotate_votes: the tie rate asked for, a quality-0 rater flips coins, several raters
    sum to their number of votes."""
    key = jax.random.PRNGKey(0)
    rewards = jax.random.normal(key, (500,))
    a = jax.random.randint(jax.random.PRNGKey(1), (4000,), 0, 500)
    b = (a + 1 + jax.random.randint(jax.random.PRNGKey(2), (4000,), 0, 499)) % 500
    std = jnp.std(rewards)
    nu = jax.jit(annotator.panel_tie_strength, static_argnums=(1, 2))(rewards, (1.0,), 0.2, std)
    annotate_votes = jax.jit(annotator.annotate_votes, static_argnames=("qualities", "raters"))
    counts, rater = annotate_votes(jax.random.PRNGKey(3), rewards, a, b, (1.0,), nu, std)
    assert abs(float(jnp.mean(counts[:, 2])) - 0.2) < 0.03
    assert np.all(np.asarray(rater) == 0)
    counts, _ = annotate_votes(jax.random.PRNGKey(4), rewards, a, b, (0.0,), 0.0, std)
    better = np.asarray(rewards[a] > rewards[b])
    agree = np.mean(np.where(better, counts[:, 0], counts[:, 1]))
    assert abs(agree - 0.5) < 0.05  # a coin flip
    counts, rater = annotate_votes(jax.random.PRNGKey(5), rewards, a, b, (1.0, 2.0), 0.0, std, raters=5)
    assert np.all(np.asarray(counts.sum(1)) == 5) and np.all(np.asarray(rater) == -1)
    maj = annotator.majority_vote(jax.random.PRNGKey(6), counts)
    assert np.all(np.asarray(maj.sum(1)) == 1)
    np.testing.assert_array_equal(np.asarray(maj[:, 0] == 1), np.asarray(counts[:, 0] > counts[:, 1]))


def _davidson_v64(z, nu):
    return (1 + nu / 2 * np.cosh(z / 2)) / (2 * np.cosh(z / 2) + nu) ** 2


@pytest.mark.parametrize("name", ["dopt", "pa_dopt", "iopt"])
def test_every_driver_scores_ties_alike_and_as_float64(name):
    """Under Davidson's ν with weighted past rows: the pool driver's scores equal a float64
    NumPy reference built from the definition, and all-pairs and sharded pick the same."""
    from arm_jax.selection import allpairs, registry
    from arm_jax.selection import pool as pool_lib
    from arm_jax.selection import scores as strategies
    from arm_jax.selection import sharded as sharded_lib

    rng = np.random.default_rng(3)
    phi = rng.normal(size=(14, 5)).astype(np.float32)
    beta = rng.normal(size=5).astype(np.float32)
    past = rng.normal(size=(6, 5)).astype(np.float32)
    weight = np.float32([1, 5, 1, 2, 0.5, 3])
    nu = 0.7
    u, v, diff = allpairs.explicit_pairs(phi)
    x = np.asarray(diff, np.float64)
    vx = _davidson_v64(x @ beta, nu)
    past64 = past.astype(np.float64)
    info_past = (past64 * (weight * _davidson_v64(past64 @ beta, nu))[:, None]).T @ past64
    if name == "iopt":  # M = Λ = I_past + λI; gain v·xᵀΛ⁻¹SΛ⁻¹x / (1 + v·xᵀΛ⁻¹x)
        m = info_past + np.eye(5)
        minv = np.linalg.inv(m)
        s = x.T @ x / (2 * x.shape[0])
        quad = np.einsum("ij,jk,ik->i", x, minv, x)
        spread = np.einsum("ij,jk,ik->i", x, minv @ s @ minv, x)
        ref = vx * spread / (1 + vx * quad)
    else:
        m = (x * vx[:, None]).T @ x + (info_past if name == "pa_dopt" else 0)
        ref = vx * np.einsum("ij,jk,ik->i", x, np.linalg.inv(m), x)
    kw = dict(past_phi_diff=past, past_weight=weight, tie=nu)
    inputs = strategies.make_inputs(diff, beta, None, past, past_weight=weight, tie=nu)
    got = np.asarray(strategies.pair_scores(registry.STRATEGIES[name].pair_score, inputs), np.float64)
    np.testing.assert_allclose(got, ref, rtol=2e-3)
    k = 6
    top = set(np.argsort(-ref)[:k].tolist())
    pool = pool_lib.select(name, None, diff, beta, k, **kw)
    assert set(np.asarray(pool.indices).tolist()) == top
    every = allpairs.select_all_pairs(name, None, phi, beta, k, tile=8, **kw)
    index = {(a, b): i for i, (a, b) in enumerate(zip(np.asarray(u).tolist(), np.asarray(v).tolist()))}
    assert {index[(a, b)] for a, b in zip(np.asarray(every.u).tolist(), np.asarray(every.v).tolist())} == top
    sharded = sharded_lib.sharded_select(name, None, diff, beta, k, **kw)
    assert set(np.asarray(sharded.indices).tolist()) == top
    # and ν changes the picks' scores: the Bradley–Terry weight is not what was used
    bt = strategies.pair_scores(registry.STRATEGIES[name].pair_score, strategies.make_inputs(diff, beta, None, past))
    assert not np.allclose(np.asarray(bt), got, rtol=1e-3)


def _map_float64(items, w, l, linear_prior):
    """The MAP head of BT logistic regression with the fit's prior λ = c·mean|x|²/(4D), by
    Newton's method in float64 (an independent reference)."""
    x = np.asarray(items, np.float64)[w] - np.asarray(items, np.float64)[l]
    lam = linear_prior * np.mean(np.sum(x * x, axis=1)) / (4 * x.shape[1])
    beta = np.zeros(x.shape[1])
    for _ in range(50):
        p = 1 / (1 + np.exp(-(x @ beta)))
        hessian = (x * (p * (1 - p))[:, None]).T @ x + lam * np.eye(x.shape[1])
        beta -= np.linalg.solve(hessian, x.T @ (p - 1) + lam * beta)
    return beta


def test_linear_fit_reaches_the_float64_optimum_with_and_without_votes():
    """The exact fit is exact: plain labels and the same labels as votes both reach the float64
    MAP to float32 precision (a damping that compared objective values alone stalled the vote
    likelihood ~1e-4 short, where a Newton step's decrease is below the objective's rounding)."""
    rng, items, r, a, b = _linear_problem(200)
    first_wins = rng.random(200) < 1 / (1 + np.exp(-(r[a] - r[b])))
    w, l = np.where(first_wins, a, b), np.where(first_wins, b, a)
    reference = _map_float64(items, w, l, 10.0)
    for counts in (None, np.tile(np.float32([1, 0, 0]), (200, 1))):
        params, _ = _fit(items, w, l, counts=counts, linear_prior=10.0)
        np.testing.assert_allclose(model.head(params), reference, rtol=2e-6, atol=1e-7)
