"""The batch procedures: the coreset's k-means against a reference clustering."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arm_jax.selection import batch
from arm_jax.selection import pool as pool_lib


def _blobs(seed, n_blobs=10, per=60, h=8):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_blobs, h)) * 20
    x = np.repeat(centres, per, axis=0) + rng.standard_normal((n_blobs * per, h))
    return x.astype(np.float32), centres


def _inertia(x, centres):
    d2 = ((x[:, None, :] - centres[None, :, :]) ** 2).sum(-1)
    return float(d2.min(1).sum())


def test_coreset_kmeans_finds_well_separated_blobs():
    """k-means++ seeding and Lloyd to convergence reach the blobs' own inertia on (nearly)
    every key; uniform seeds with 10 Lloyd steps were ~6× worse on almost every key."""
    x, centres = _blobs(0)
    truth = _inertia(x, centres)
    found = jax.jit(lambda k: batch.kmeans(k, jnp.asarray(x), jnp.ones(len(x), bool), 10))
    ratios = [_inertia(x, np.asarray(found(jax.random.PRNGKey(s)))) / truth for s in range(10)]
    assert np.median(ratios) < 1.05
    assert sum(r < 1.5 for r in ratios) >= 8, ratios


def test_coreset_sensitivity_on_blobs_matches_the_reference_clustering():
    """With the right clusters the largest sensitivity is that of the true blobs (the
    paper's code: ~310 on its example), not ~1 900 as from a bad local optimum."""
    x, centres = _blobs(1)
    n = len(x)
    assign = ((x[:, None, :] - centres[None]) ** 2).sum(-1).argmin(1)
    size = np.bincount(assign, minlength=10).astype(float)
    means = np.stack([x[assign == c].mean(0) for c in range(10)])
    d = np.sqrt(((x[:, None, :] - means[None]) ** 2).sum(-1))
    own = np.eye(10)[assign]
    scale = np.where(own > 0, size / np.maximum(size - 1, 1), 1.0)
    sens = n / (1 + ((size - own) * np.exp(-scale * d)).sum(1))
    chosen = pool_lib.select("coreset", jax.random.PRNGKey(0), x, np.zeros(8, np.float32), 20)
    got = np.asarray(chosen.scores)
    assert got.max() <= sens.max() * 1.05


# ------------------------------------------------------------------ the hedge (--explore)


@pytest.mark.parametrize("explore, k, m", [(0.0, 10, 0), (0.25, 10, 2), (0.5, 7, 4), (0.01, 10, 1), (1.0, 10, 10)])
def test_explored_count(explore, k, m):
    assert batch.explored_count(explore, k) == m


@pytest.mark.parametrize("explore", [0.3, 1.0])
def test_the_hedge_keeps_the_rules_first_picks_and_draws_the_rest_among_the_others(explore):
    from arm_jax.selection import registry, scores

    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.normal(size=(60, 5)), jnp.float32)
    valid = jnp.asarray(rng.random(60) > 0.2)
    inputs = scores.make_inputs(x, jnp.asarray(rng.normal(size=5), jnp.float32), valid)
    rule = registry.get_strategy("greedy_iopt")
    k = 10
    m = batch.explored_count(explore, k)
    hedged = registry.hedged(rule, explore)
    assert hedged is registry.hedged(rule, explore) and hedged.name == f"greedy_iopt+explore{explore:g}"
    fn = jax.jit(hedged.fn, static_argnums=2)
    picks = np.asarray(fn(jax.random.PRNGKey(0), inputs, k).indices)
    assert len(set(picks.tolist())) == k and np.asarray(valid)[picks].all()
    rule_key, _ = jax.random.split(jax.random.PRNGKey(0))
    if m < k:  # greedy picks are best first: the first k - m are the rule's batch of k - m
        rule_picks = jax.jit(rule.fn, static_argnums=2)(rule_key, inputs, k - m).indices
        np.testing.assert_array_equal(picks[: k - m], np.asarray(rule_picks))
    # the drawn ones vary with the key (they are random), the rule's do not
    others = [np.asarray(fn(jax.random.PRNGKey(s), inputs, k).indices) for s in range(1, 6)]
    assert any(not np.array_equal(np.sort(o[k - m:]), np.sort(picks[k - m:])) for o in others)


def test_no_hedge_is_the_rule_itself_and_a_bad_fraction_is_refused():
    from arm_jax.errors import InputError
    from arm_jax.selection import registry

    rule = registry.get_strategy("dopt")
    assert registry.hedged(rule, 0.0) is rule and registry.hedged(registry.get_strategy("random"), 0.5).name == "random"
    with pytest.raises(InputError, match="explore must be a fraction"):
        registry.hedged(rule, 1.5)


# ------------------------------------------------------------------ the hand-off (--random-after)


def test_the_hand_off_keeps_the_rule_below_the_count_and_draws_at_random_from_it_on():
    """Under one jit + vmap over a traced labelled count: below ``random_after`` the picks are
    the rule's own, from it on a uniform draw (random_strategy on the key folded with 1), valid
    and distinct; the same key gives the same draw."""
    from arm_jax.selection import registry, scores

    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.normal(size=(50, 4)), jnp.float32)
    valid = jnp.asarray(rng.random(50) > 0.3)
    past = jnp.asarray(rng.normal(size=(12, 4)), jnp.float32)
    rule = registry.get_strategy("iopt")
    handed = registry.hedged(rule, 0.0, 7)
    assert handed.uses_past and handed.name == "iopt+random_after7" and handed is registry.hedged(rule, 0.0, 7)
    key, k = jax.random.PRNGKey(2), 6

    def picks(fn, n):
        inputs = scores.make_inputs(x, jnp.ones(4, jnp.float32), valid, past, jnp.arange(12) < n)
        return fn(key, inputs, k).indices

    counts = jnp.array([0, 6, 7, 12])
    got = np.asarray(jax.jit(jax.vmap(lambda n: picks(handed.fn, n)))(counts))
    drawn = np.asarray(batch.random_strategy(jax.random.fold_in(key, 1), scores.make_inputs(x, x[0], valid), k).indices)
    for row, n in zip(got, counts.tolist()):
        want = np.asarray(picks(rule.fn, n)) if n < 7 else drawn
        np.testing.assert_array_equal(row, want)
        assert len(set(row.tolist())) == k and np.asarray(valid)[row].all()
    assert not np.array_equal(got[1], got[2])  # the rule's batch is not the draw


def test_handed_off_is_one_rule_for_host_counts_and_traced_ones():
    from arm_jax.errors import InputError
    from arm_jax.selection import registry

    assert batch.handed_off(5, None) is False and batch.handed_off(999, 1000) is False and batch.handed_off(1000, 1000)
    assert bool(jax.jit(lambda n: batch.handed_off(n, 1000))(jnp.int32(1000)))
    rule = registry.get_strategy("iopt")
    assert registry.hedged(rule, 0.0, None) is rule and registry.hedged(registry.get_strategy("random"), 0.0, 5).name == "random"
    assert registry.hedged(rule, 0.25, 5).name == "iopt+explore0.25+random_after5"
    for bad in (-1, 2.5, True):
        with pytest.raises(InputError, match="random-after must be a whole number"):
            registry.hedged(rule, 0.0, bad)


# ------------------------------------------------------------------ fw_iopt: the continuous I-optimal design


def _design_problem(seed=0, n=80, h=6, m=15):
    from arm_jax.selection import scores

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, h))
    past = rng.normal(size=(m, h))
    beta = rng.normal(size=h)
    valid = rng.random(n) > 0.1
    inputs = scores.make_inputs(jnp.asarray(x, jnp.float32), jnp.asarray(beta, jnp.float32), jnp.asarray(valid),
                                jnp.asarray(past, jnp.float32), jnp.ones(m, bool), prior_precision=0.5)
    return inputs, x, past, beta, valid


def _design_float64(x, past, beta, valid, lam, k, steps):
    """The multiplicative algorithm of the definition, float64, unwhitened."""
    var = lambda d: 1.0 / (4.0 * np.cosh(d @ beta / 2.0) ** 2)
    v = var(x)
    lam_m = (past * var(past)[:, None]).T @ past + lam * np.eye(x.shape[1])
    s = 0.5 * (x[valid].T @ x[valid]) / valid.sum()
    w = np.where(valid, k / valid.sum(), 0.0)

    def crit(w):
        a = np.linalg.inv(lam_m + (x * (w * v)[:, None]).T @ x)
        return v * np.einsum("ij,jk,ik->i", x, a @ s @ a, x), np.trace(a @ s)

    for _ in range(steps):
        g, _ = crit(w)
        w = w * np.sqrt(g / (w @ g / k))
        w = k * w / w.sum()
    return w, crit


def test_the_design_is_the_multiplicative_algorithm_of_its_definition():
    inputs, x, past, beta, valid = _design_problem()
    w, gap = batch.iopt_design(inputs, 10, steps=30)
    ref, _ = _design_float64(x, past, beta, valid, 0.5, 10, 30)
    np.testing.assert_allclose(np.asarray(w), ref, rtol=2e-3, atol=1e-5 * ref.max())
    assert np.all(np.asarray(w)[~valid] == 0) and abs(float(np.sum(w)) - 10) < 1e-3


def test_the_converged_design_beats_every_batch_of_distinct_pairs():
    inputs, x, past, beta, valid = _design_problem(1)
    k = 10
    w, gap = jax.jit(batch.iopt_design, static_argnums=(1, 2))(inputs, k, 3000)
    _, crit = _design_float64(x, past, beta, valid, 0.5, k, 0)
    f = lambda weights: crit(np.asarray(weights, np.float64))[1]
    assert float(gap) < 1e-2  # converged: within 1% of the optimum
    greedy = np.zeros(len(x))
    greedy[np.asarray(jax.jit(batch.greedy_iopt_strategy, static_argnums=2)(jax.random.PRNGKey(0), inputs, k).indices)] = 1
    assert f(w) <= f(greedy) * (1 + 1e-4) and f(w) < f(np.where(valid, k / valid.sum(), 0.0))


def test_fw_iopt_samples_k_distinct_valid_pairs_by_the_design():
    from arm_jax.selection import registry

    inputs, *_ = _design_problem(2)
    fn = jax.jit(registry.get_strategy("fw_iopt").fn, static_argnums=2)
    picks = [np.asarray(fn(jax.random.PRNGKey(s), inputs, 10).indices) for s in range(3)]
    valid = np.asarray(inputs.valid)
    assert all(len(set(p.tolist())) == 10 and valid[p].all() for p in picks)
    assert not all(np.array_equal(np.sort(picks[0]), np.sort(p)) for p in picks[1:])  # sampled, seeded
    np.testing.assert_array_equal(picks[0], np.asarray(fn(jax.random.PRNGKey(0), inputs, 10).indices))
    # the design's heaviest pairs are drawn far more often than chance (10 of 72: 0.14)
    w, _ = batch.iopt_design(inputs, 10)
    heavy = np.argsort(-np.asarray(w))[:10]
    assert np.mean([np.isin(p, heavy).mean() for p in picks]) > 0.3
