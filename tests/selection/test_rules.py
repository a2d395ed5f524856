"""The posterior-based rules (iopt, greedy_iopt, delta_ucb, infomax) against float64 NumPy
written from their definitions (traces of S·M⁻¹, not Sherman–Morrison), on hard inputs."""
import itertools

import jax
import numpy as np
import pytest

from arm_jax.selection import allpairs, batch, registry
from arm_jax.selection import pool as pool_lib
from arm_jax.selection import scores as strategies

NEW = ("iopt", "greedy_iopt", "delta_ucb", "infomax", "uncertain_iopt")


def _sig(z):
    return 1.0 / (1.0 + np.exp(-z))


def _posterior64(past, beta, lam):
    p = np.asarray(past, np.float64)
    g = p @ np.asarray(beta, np.float64)
    v = _sig(g) * _sig(-g)
    return (p * v[:, None]).T @ p + lam * np.eye(p.shape[1])


def _iopt_gain_by_trace(x, beta, lam_matrix, spread):
    """tr(S Λ⁻¹) − tr(S (Λ + v x xᵀ)⁻¹) for each pair: the definition, by explicit inverses."""
    x = np.asarray(x, np.float64)
    g = x @ np.asarray(beta, np.float64)
    v = _sig(g) * _sig(-g)
    base = np.trace(spread @ np.linalg.inv(lam_matrix))
    return np.array([base - np.trace(spread @ np.linalg.inv(lam_matrix + v[i] * np.outer(x[i], x[i])))
                     for i in range(x.shape[0])])


def _case(kind, seed=0, n=120, h=6, m=25):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, h))
    past = rng.normal(size=(m, h))
    beta = 0.5 * rng.normal(size=h)
    lam = 0.7
    if kind == "rank-deficient":  # pool and past in a 2-d subspace of the 6-d features
        basis = rng.normal(size=(2, h))
        x = rng.normal(size=(n, 2)) @ basis
        past = rng.normal(size=(m, 2)) @ basis
    elif kind == "huge":  # features × 1e3: β / 1e3 keeps the gaps, λ × 1e6 keeps the posterior's shape
        x, past, beta, lam = x * 1e3, past * 1e3, beta / 1e3, lam * 1e6
    elif kind == "tiny":
        x, past, beta, lam = x * 1e-3, past * 1e-3, beta * 1e3, lam * 1e-6
    return x.astype(np.float32), beta.astype(np.float32), past.astype(np.float32), lam


@pytest.mark.parametrize("kind", ["healthy", "rank-deficient", "huge", "tiny"])
def test_iopt_scores_are_the_drop_of_the_mean_predictive_variance(kind):
    x, beta, past, lam = _case(kind)
    inputs = strategies.make_inputs(x, beta, None, past, None, lam)
    got = np.asarray(strategies.pair_scores(strategies.IOPT, inputs), np.float64)
    x64 = x.astype(np.float64)
    spread = x64.T @ x64 / (2 * x.shape[0])
    ref = _iopt_gain_by_trace(x, beta, _posterior64(past, beta, lam), spread)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, ref, rtol=2e-3, atol=2e-4 * np.abs(ref).max())
    top = np.argsort(-ref)[:5]
    assert set(np.asarray(pool_lib.select("iopt", None, x, beta, 5, None, past, None, lam).indices)) == set(top)


@pytest.mark.parametrize("kind", ["healthy", "rank-deficient"])
def test_greedy_iopt_is_the_explicit_greedy_batch(kind):
    x, beta, past, lam = _case(kind, seed=1, n=60)
    k = 6
    chosen = pool_lib.select("greedy_iopt", None, x, beta, k, None, past, None, lam)
    x64 = x.astype(np.float64)
    spread = x64.T @ x64 / (2 * x.shape[0])
    m = _posterior64(past, beta, lam)
    g = x64 @ beta.astype(np.float64)
    v = _sig(g) * _sig(-g)
    picks, gains = [], []
    for _ in range(k):
        gain = _iopt_gain_by_trace(x, beta, m, spread)
        gain[picks] = -np.inf
        j = int(np.argmax(gain))
        picks.append(j)
        gains.append(gain[j])
        m = m + v[j] * np.outer(x64[j], x64[j])
    assert np.asarray(chosen.indices).tolist() == picks
    np.testing.assert_allclose(np.asarray(chosen.scores), gains, rtol=2e-3, atol=1e-5 * max(gains))


def test_uncertain_iopt_is_greedy_iopt_among_the_most_uncertain_pairs():
    x, beta, past, lam = _case("healthy", seed=8, n=80)
    k = 5
    chosen = pool_lib.select("uncertain_iopt", None, x, beta, k, None, past, None, lam)
    x64 = x.astype(np.float64)
    lam_m = _posterior64(past, beta, lam)
    mu = x64 @ beta.astype(np.float64)
    s = np.sqrt(np.einsum("ij,jk,ik->i", x64, np.linalg.inv(lam_m), x64))
    width = _sig(np.abs(mu) + s) - _sig(np.abs(mu) - s)
    narrowed = np.argsort(-width)[: batch.HYBRID_POOL_FACTOR * k]
    spread = x64.T @ x64 / (2 * x.shape[0])  # the whole pool's S
    v = _sig(mu) * _sig(-mu)
    m, picks = lam_m, []
    for _ in range(k):
        gain = np.full(x.shape[0], -np.inf)
        gain[narrowed] = _iopt_gain_by_trace(x, beta, m, spread)[narrowed]
        gain[picks] = -np.inf
        j = int(np.argmax(gain))
        picks.append(j)
        m = m + v[j] * np.outer(x64[j], x64[j])
    assert np.asarray(chosen.indices).tolist() == picks


def test_confidence_rules_are_their_definitions():
    x, beta, past, lam = _case("healthy", seed=2)
    lam_m = _posterior64(past, beta, lam)
    x64 = x.astype(np.float64)
    mu = x64 @ beta.astype(np.float64)
    s = np.sqrt(np.einsum("ij,jk,ik->i", x64, np.linalg.inv(lam_m), x64))
    w = strategies.UCB_WIDTH
    refs = {"delta_ucb": np.abs(mu) + w * s, "infomax": _sig(np.abs(mu) + w * s) - _sig(np.abs(mu) - w * s)}
    for name, ref in refs.items():
        inputs = strategies.make_inputs(x, beta, None, past, None, lam)
        got = np.asarray(strategies.pair_scores(registry.STRATEGIES[name].pair_score, inputs), np.float64)
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-6)


def test_four_responses_hand_computed():
    """Responses a=(0,0), b=(1,0), c=(0,1), d=(4,0); β = (1, 0); no labels, λ = 1 (Λ = I).
    Pair gaps μ and stds s = |x|: (c,d): μ=4, s=√17 — the largest |μ|+s (8.12) and the widest
    interval of P (0.530); I-opt (S = ½ mean x xᵀ over the six pairs = [[43, −5], [−5, 3]] / 12)
    prefers (b,d): v·xᵀSx/(1+v|x|²) = 1.036 against (c,d)'s 0.828."""
    phi = {"a": (0, 0), "b": (1, 0), "c": (0, 1), "d": (4, 0)}
    pairs = list(itertools.combinations(phi, 2))
    x = np.array([np.subtract(phi[u], phi[v]) for u, v in pairs], np.float32)
    beta = np.array([1.0, 0.0], np.float32)
    expected = {"delta_ucb": ("c", "d"), "infomax": ("c", "d"), "iopt": ("b", "d"), "greedy_iopt": ("b", "d")}
    for name, pair in expected.items():
        chosen = pool_lib.select(name, None, x, beta, 1, prior_precision=1.0)
        assert pairs[int(chosen.indices[0])] == pair, name
    iopt = pool_lib.select("iopt", None, x, beta, 2, prior_precision=1.0)
    np.testing.assert_allclose(np.asarray(iopt.scores), [1.0358, 0.8275], atol=1e-4)


@pytest.mark.parametrize("name", NEW)
def test_batches_are_distinct_valid_picks(name):
    x, beta, past, lam = _case("healthy", seed=3)
    valid = np.ones(x.shape[0], bool)
    valid[::3] = False
    chosen = pool_lib.select(name, jax.random.PRNGKey(0), x, beta, 20, valid, past, None, lam)
    idx = np.asarray(chosen.indices)
    assert len(set(idx.tolist())) == 20 and valid[idx].all()
    assert np.all(np.isfinite(np.asarray(chosen.scores)))


def test_the_prior_reaches_the_all_pairs_driver():
    rng = np.random.default_rng(4)
    phi = rng.normal(size=(30, 4)).astype(np.float32)
    beta = rng.normal(size=4).astype(np.float32)
    u, v, diff = allpairs.explicit_pairs(phi)
    for lam in (0.01, 100.0):
        every = allpairs.select_all_pairs("iopt", None, phi, beta, 5, tile=8, prior_precision=lam)
        pool = pool_lib.select("iopt", None, np.asarray(diff), beta, 5, prior_precision=lam)
        assert list(zip(np.asarray(every.u), np.asarray(every.v))) == [
            (int(u[i]), int(v[i])) for i in np.asarray(pool.indices)
        ]
        np.testing.assert_allclose(np.asarray(every.scores), np.asarray(pool.scores), rtol=1e-3)


def test_bad_prior_is_a_one_line_error():
    x, beta, _, _ = _case("healthy")
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(Exception, match="prior precision"):
            pool_lib.select("iopt", None, x, beta, 3, prior_precision=bad)


# ----------------------------------------------------------------------------- response-level rules


def _one_prompt(rewards, lam):
    """Items with features e_i·r_i along one axis (H = 2: the second feature is 0), β = (1, 0):
    r̂_i = rewards[i]; all pairs of one prompt."""
    phi = np.array([[r, 0.0] for r in rewards], np.float32)
    pairs = list(itertools.combinations(range(len(rewards)), 2))
    a = np.array([p[0] for p in pairs]); b = np.array([p[1] for p in pairs])
    items = strategies.PairItems(phi, a, b, np.zeros(len(pairs), np.int32))
    return phi[a] - phi[b], np.array([1.0, 0.0], np.float32), items, pairs, lam


def test_thompson_rules_with_a_certain_posterior_pick_best_against_second_or_worst():
    """λ = 1e8: every posterior draw is β̂, so dts compares the best with the second best and
    drts the best with the worst (rewards 0, 1, 2, 3)."""
    x, beta, items, pairs, lam = _one_prompt([0.0, 1.0, 3.0, 2.0], 1e8)
    for name, expected in (("dts", {2, 3}), ("drts", {2, 0})):
        chosen = pool_lib.select(name, jax.random.PRNGKey(0), x, beta, 1, prior_precision=lam, items=items)
        assert set(pairs[int(chosen.indices[0])]) == expected, name


def test_maxmin_lcb_hand_computed():
    """Rewards 0, 1, 3 and λ = 1 (Λ = I, no labels), x_ij = (r_i − r_j, 0): s_ij = |r_i − r_j|,
    LCB(i, j) = (r_i − r_j) − |r_i − r_j|: 0 when i is the better, 2(r_i − r_j) otherwise. Row
    minima: item 0: min(−2, −6) = −6; item 1: min(0, −4) = −4; item 2: min(0, 0) = 0 → i* = 2,
    and its worst opponent: LCB(2, ·) = 0 for both, a tie broken at random — either pair of item 2."""
    x, beta, items, pairs, lam = _one_prompt([0.0, 1.0, 3.0], 1.0)
    seen = set()
    for seed in range(6):
        chosen = pool_lib.select("maxmin_lcb", jax.random.PRNGKey(seed), x, beta, 1, prior_precision=lam, items=items)
        pair = pairs[int(chosen.indices[0])]
        assert 2 in pair
        np.testing.assert_allclose(float(chosen.scores[0]), 0.0, atol=1e-5)
        seen.add(pair)
    assert len(seen) == 2  # the tie is broken at random, not always the same way


@pytest.mark.parametrize("name", [n for n in registry.RESPONSE_RULES if n != "eubo"])  # eubo: not per prompt
def test_response_rules_take_one_pair_per_prompt_first_and_never_repeat(name):
    rng = np.random.default_rng(5)
    n_prompts, r, h = 7, 5, 4
    phi = rng.normal(size=(n_prompts * r, h)).astype(np.float32)
    pairs = [(p * r + i, p * r + j) for p in range(n_prompts) for i, j in itertools.combinations(range(r), 2)]
    a = np.array([p[0] for p in pairs]); b = np.array([p[1] for p in pairs])
    group = a // r
    valid = rng.random(len(pairs)) > 0.2
    items = strategies.PairItems(phi, a, b, group.astype(np.int32))
    past = rng.normal(size=(6, h)).astype(np.float32)
    chosen = pool_lib.select(name, jax.random.PRNGKey(1), phi[a] - phi[b], rng.normal(size=h).astype(np.float32),
                               12, valid, past, None, 0.5, items)
    idx = np.asarray(chosen.indices)
    assert len(set(idx.tolist())) == 12 and valid[idx].all()
    assert sorted(set(group[idx[:n_prompts]].tolist())) == list(range(n_prompts))
    assert np.all(np.isfinite(np.asarray(chosen.scores)))


def test_response_rules_need_the_items():
    x, beta, _, _ = _case("healthy")
    with pytest.raises(Exception, match="needs the candidates' items"):
        pool_lib.select("dts", None, x, beta, 3)


def _expected_best_by_quadrature(delta, s):
    """E[max(0, g)], g ~ N(delta, s²), by the trapezoid rule on a fine grid (float64), not by
    the closed form."""
    z = np.linspace(-12.0, 12.0, 48001)
    density = np.exp(-0.5 * z * z) / np.sqrt(2.0 * np.pi)
    return np.array([np.trapezoid(np.maximum(0.0, d + sd * z) * density, z) for d, sd in zip(delta, s)])


@pytest.mark.parametrize("kind", ["healthy", "rank-deficient", "huge", "tiny"])
def test_eubo_is_the_expected_best_of_the_pair(kind):
    """eubo's picks and scores are the k largest E[max(r_a, r_b)] under the float64 posterior
    Λ = I_past + λI, the expectation by quadrature."""
    x_all, beta, past, lam = _case(kind, n=40)
    phi = x_all[:12]  # the items; the candidates are all their pairs
    a, b = (np.array(t) for t in zip(*itertools.combinations(range(12), 2)))
    items = strategies.PairItems(phi, a.astype(np.int32), b.astype(np.int32), np.zeros(a.size, np.int32))
    x = phi[a] - phi[b]
    lam64 = _posterior64(past, beta, lam)
    x64 = x.astype(np.float64)
    s = np.sqrt(np.einsum("ij,ij->i", x64 @ np.linalg.inv(lam64), x64))
    r = phi.astype(np.float64) @ beta.astype(np.float64)
    want = r[b] + _expected_best_by_quadrature(r[a] - r[b], s)
    k = 6
    chosen = pool_lib.select("eubo", jax.random.PRNGKey(0), x, beta, k, past_phi_diff=past, prior_precision=lam,
                             items=items)
    idx = np.asarray(chosen.indices)
    scale = np.abs(want).max()
    np.testing.assert_allclose(np.asarray(chosen.scores, np.float64), want[idx], rtol=1e-4, atol=1e-5 * scale)
    assert want[idx].min() >= np.sort(want)[-k] - 1e-4 * scale  # the k largest, up to float32 ties


def test_eubo_score_limits():
    from arm_jax.selection.rules import eubo_score

    r_a, r_b = np.float32([1.0, -2.0, 0.5, 3.0]), np.float32([0.0, 5.0, 0.5, -40.0])
    quad = np.float32([0.0, 0.0, 4.0, 1e-6])
    got = np.asarray(eubo_score(r_a, r_b, quad))
    # s = 0: the better of the two; equal means: r + s·φ(0); a sure gap: the better one
    np.testing.assert_allclose(got, [1.0, 5.0, 0.5 + 2.0 / np.sqrt(2 * np.pi), 3.0], rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(eubo_score(r_b, r_a, quad)), got)  # symmetric
    assert np.isnan(np.asarray(eubo_score(r_a, r_b, np.float32([np.nan, 1.0, 1.0, 1.0])))[0])
