"""Tests for arm_jax.experiment.annotator: the simulated Bradley-Terry annotator."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arm_jax.experiment import annotator
from arm_jax.experiment.annotator import annotate, preference_probability


def _random_pairs(rng, n_items, n_pairs):
    a = rng.integers(0, n_items, n_pairs)
    b = (a + rng.integers(1, n_items, n_pairs)) % n_items  # b != a
    return jnp.asarray(a, jnp.int32), jnp.asarray(b, jnp.int32)


def test_winner_loser_is_the_pair():
    rng = np.random.default_rng(0)
    rewards = jnp.asarray(rng.normal(size=50), jnp.float32)
    a, b = _random_pairs(rng, 50, 300)
    winner, loser = annotate(jax.random.key(0), rewards, a, b, 1.0, 1.0)
    assert winner.shape == (300,) and winner.dtype == jnp.int32 and loser.dtype == jnp.int32
    w, l, a, b = map(np.asarray, (winner, loser, a, b))
    assert np.all(((w == a) & (l == b)) | ((w == b) & (l == a)))
    # Deterministic for a fixed key.
    w2, _ = annotate(jax.random.key(0), rewards, jnp.asarray(a), jnp.asarray(b), 1.0, 1.0)
    np.testing.assert_array_equal(w, np.asarray(w2))


@pytest.mark.parametrize("quality", [1e30, jnp.inf, np.inf])
def test_huge_quality_labels_by_golden_reward(quality):
    rng = np.random.default_rng(1)
    rewards = jnp.asarray(rng.normal(size=200), jnp.float32)  # distinct values
    a, b = _random_pairs(rng, 200, 2000)
    winner, loser = annotate(jax.random.key(1), rewards, a, b, quality, 0.5)
    r = np.asarray(rewards)
    assert np.all(r[np.asarray(winner)] > r[np.asarray(loser)])


def test_infinite_quality_ties_are_a_fair_coin_without_nan():
    rewards = jnp.zeros((10,), jnp.float32)
    a = jnp.zeros((4000,), jnp.int32)
    b = jnp.ones((4000,), jnp.int32)
    p = preference_probability(rewards, a, b, jnp.inf, 1.0)
    assert not np.any(np.isnan(np.asarray(p)))
    np.testing.assert_array_equal(np.asarray(p), 0.5)
    winner, _ = annotate(jax.random.key(2), rewards, a, b, jnp.inf, 1.0)
    a_rate = float(np.mean(np.asarray(winner) == 0))
    assert abs(a_rate - 0.5) < 5 * np.sqrt(0.25 / 4000)


def test_negative_infinite_quality_prefers_the_worse_item():
    rewards = jnp.asarray([0.0, 1.0, 2.0], jnp.float32)
    p = preference_probability(rewards, jnp.asarray([0, 2, 1]), jnp.asarray([1, 0, 1]), -jnp.inf, 1.0)
    np.testing.assert_array_equal(np.asarray(p), [1.0, 0.0, 0.5])


def test_zero_quality_is_a_coin_flip():
    rng = np.random.default_rng(3)
    rewards = jnp.asarray(rng.normal(size=100) * 10, jnp.float32)
    a, b = _random_pairs(rng, 100, 20_000)
    np.testing.assert_array_equal(np.asarray(preference_probability(rewards, a, b, 0.0, 1.0)), 0.5)
    winner, _ = annotate(jax.random.key(3), rewards, a, b, 0.0, 1.0)
    r = np.asarray(rewards)
    better_wins = np.mean(r[np.asarray(winner)] == np.maximum(r[np.asarray(a)], r[np.asarray(b)]))
    assert abs(better_wins - 0.5) < 5 * np.sqrt(0.25 / 20_000)


def test_empirical_win_rate_matches_sigmoid_on_a_grid():
    # Items: item 0 has reward 0, item k has reward diffs[k-1]; pair (k, 0) repeated.
    diffs = np.linspace(-3.0, 3.0, 9)
    rewards = jnp.asarray(np.concatenate([[0.0], diffs]), jnp.float32)
    repeats, quality, reward_std = 4000, 1.5, 2.0
    a = jnp.asarray(np.repeat(np.arange(1, 10), repeats), jnp.int32)
    b = jnp.zeros_like(a)
    winner, _ = annotate(jax.random.key(4), rewards, a, b, quality, reward_std)
    a_won = (np.asarray(winner) == np.asarray(a)).reshape(9, repeats)
    expected = 1.0 / (1.0 + np.exp(-quality * diffs / reward_std))
    np.testing.assert_allclose(np.asarray(preference_probability(rewards, a[::repeats], b[::repeats], quality, reward_std)), expected, rtol=1e-5)
    tolerance = 5 * np.sqrt(expected * (1 - expected) / repeats)  # 5 binomial standard errors
    assert np.all(np.abs(a_won.mean(axis=1) - expected) < tolerance)


def test_default_reward_std_is_std_of_rewards():
    rng = np.random.default_rng(5)
    rewards = jnp.asarray(rng.normal(size=40) * 3.0, jnp.float32)
    a, b = _random_pairs(rng, 40, 64)
    np.testing.assert_allclose(
        np.asarray(preference_probability(rewards, a, b, 2.0)),
        np.asarray(preference_probability(rewards, a, b, 2.0, float(np.std(np.asarray(rewards))))),
        rtol=1e-5,
    )


def test_annotate_under_jit_and_vmap_over_quality():
    rewards = jnp.asarray([0.0, 1.0], jnp.float32)
    a = jnp.zeros((1000,), jnp.int32)
    b = jnp.ones((1000,), jnp.int32)

    def b_win_rate(quality):
        winner, _ = annotate(jax.random.key(6), rewards, a, b, quality, 1.0)
        return jnp.mean(winner == 1)

    rates = np.asarray(jax.jit(jax.vmap(b_win_rate))(jnp.asarray([0.0, jnp.inf])))
    assert rates[1] == 1.0 and abs(rates[0] - 0.5) < 0.1


# ----------------------------------------------------------------- real raters (empirical)


def _hand_made_ratings():
    """Item 0 rated (1, 2); item 1 rated (2, 3) with a NaN between; item 2 rated 2 by one rater."""
    return annotator.pack_ratings(np.array([[1, 2, np.nan], [2, np.nan, 3], [np.nan, 2, np.nan]], np.float32))


def test_pack_ratings_moves_padding_last_and_keeps_order():
    packed = _hand_made_ratings()
    np.testing.assert_array_equal(packed[:, :1], [[1], [2], [2]])
    np.testing.assert_array_equal(packed[1, :2], [2, 3])
    assert np.isnan(packed[2, 1:]).all() and np.isnan(packed[0, 2])


@pytest.mark.parametrize("pair, expected", [
    # P(a wins), P(b wins), P(tie), from the ratings by hand
    ((0, 1), (0.0, 3 / 4, 1 / 4)),   # 1 or 2 against 2 or 3: a never wins; a tie only for 2-2
    ((1, 0), (3 / 4, 0.0, 1 / 4)),
    ((0, 2), (0.0, 1 / 2, 1 / 2)),   # 1 or 2 against a sure 2
    ((2, 2), (0.0, 0.0, 1.0)),       # one rater: always a tie with itself
])
def test_empirical_outcome_rates_are_the_ratings_rates(pair, expected):
    n = 40_000
    a, b = jnp.full((n,), pair[0], jnp.int32), jnp.full((n,), pair[1], jnp.int32)
    counts = np.asarray(annotator.annotate_empirical(jax.random.PRNGKey(3), jnp.asarray(_hand_made_ratings()), a, b))
    rates = counts.mean(axis=0)
    np.testing.assert_allclose(rates, expected, atol=4 * 0.5 / np.sqrt(n))


def test_empirical_draws_are_seeded_and_several_raters_vote():
    ratings = jnp.asarray(_hand_made_ratings())
    a, b = jnp.array([0, 1, 0, 2], jnp.int32), jnp.array([1, 0, 2, 0], jnp.int32)
    key = jax.random.PRNGKey(7)
    first = annotator.annotate_empirical(key, ratings, a, b, raters=5)
    np.testing.assert_array_equal(first, annotator.annotate_empirical(key, ratings, a, b, raters=5))
    assert np.asarray(first).sum(axis=1).tolist() == [5.0] * 4
    other = [np.asarray(annotator.annotate_empirical(jax.random.PRNGKey(s), ratings, a, b, raters=5)) for s in range(5)]
    assert any(not np.array_equal(o, np.asarray(first)) for o in other)
