"""Tests for arm_jax.experiment.pools: candidate pairs for one round."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from arm_jax.experiment.pools import (
    CandidatePairs,
    candidate_pairs,
    cross_prompt_pairs,
    in_prompt_pairs,
    labelled_mask,
    pool_items,
    pool_to_global,
)


def _valid_pairs(pairs: CandidatePairs):
    a, b, valid = (np.asarray(x) for x in pairs)
    return a[valid], b[valid]


def _check_common(pairs, n_candidates, n_items):
    a, b, valid = (np.asarray(x) for x in pairs)
    assert a.shape == b.shape == valid.shape == (n_candidates,)
    assert a.dtype == np.int32 and b.dtype == np.int32 and valid.dtype == bool
    assert np.all((a >= 0) & (a < n_items) & (b >= 0) & (b < n_items))
    va, vb = a[valid], b[valid]
    assert np.all(va < vb)
    assert len(set(zip(va.tolist(), vb.tolist()))) == va.size  # valid pairs distinct
    assert np.all(a[~valid] == b[~valid])  # padding has a zero feature difference


def test_in_prompt_pairs_subsample():
    P, R, n_prompts, C = 50, 6, 8, 100  # 8 * 15 = 120 pairs available
    pairs = in_prompt_pairs(jax.random.key(0), P, R, n_prompts, C)
    _check_common(pairs, C, P * R)
    a, b = _valid_pairs(pairs)
    assert a.size == C
    assert np.all(a // R == b // R)  # same prompt
    assert len(set((a // R).tolist())) <= n_prompts


def test_in_prompt_pairs_all_and_padding():
    P, R, n_prompts, C = 30, 5, 4, 50  # 4 * 10 = 40 pairs available
    pairs = in_prompt_pairs(jax.random.key(1), P, R, n_prompts, C)
    _check_common(pairs, C, P * R)
    a, b = _valid_pairs(pairs)
    assert a.size == 40 and int(np.sum(~np.asarray(pairs.valid))) == 10
    prompts = sorted(set((a // R).tolist()))
    assert len(prompts) == n_prompts
    expected = {(p * R + i, p * R + j) for p in prompts for i, j in itertools.combinations(range(R), 2)}
    assert set(zip(a.tolist(), b.tolist())) == expected


def test_in_prompt_pairs_cover_prompts_uniformly():
    # Over many rounds every prompt is drawn about equally often.
    P, R, n_prompts, C = 10, 3, 3, 9
    keys = jax.random.split(jax.random.key(2), 2000)
    a = np.asarray(jax.vmap(lambda k: in_prompt_pairs(k, P, R, n_prompts, C).a)(keys))
    counts = np.array([np.sum(np.any(a // R == p, axis=1)) for p in range(P)])
    assert scipy.stats.chisquare(counts).pvalue > 1e-4
    assert counts.sum() == 2000 * n_prompts


def test_labelled_mask_matches_a_set_lookup():
    """labelled_mask flags exactly the candidates labelled in either order (masked rows ignored)."""
    rng = np.random.default_rng(0)
    lab = rng.integers(0, 12, size=(30, 2))
    lab = lab[lab[:, 0] != lab[:, 1]]
    mask = rng.random(lab.shape[0]) < 0.7
    u, v = np.triu_indices(12, 1)
    flags = np.asarray(labelled_mask(jnp.asarray(v), jnp.asarray(u), jnp.asarray(lab), jnp.asarray(mask)))
    seen = {tuple(sorted(p)) for p in lab[mask].tolist()}
    assert flags.tolist() == [(a, b) in seen for a, b in zip(u.tolist(), v.tolist())]
    assert 0 < flags.sum() < flags.size


def test_cross_prompt_pairs_paper_scale():
    P, R, n_prompts, C = 40_000, 10, 500, 20_000  # K = 5000 items, 12.5M pairs
    pool = pool_items(jax.random.key(3), "cross-prompt", P, R, n_prompts, C)
    pairs = pool_to_global(pool)
    _check_common(pairs, C, P * R)
    items = np.asarray(pool.items)
    assert items.shape == (n_prompts * R,) and np.unique(items).size == items.size
    assert np.all(np.asarray(pairs.valid))  # 40 064 draws give 20 000 distinct pairs
    a, b = _valid_pairs(pairs)
    assert set(a.tolist()) | set(b.tolist()) <= set(items.tolist())
    # Only across prompts: the two items of a pair never share a prompt.
    assert not np.any(a // R == b // R)


@pytest.mark.parametrize("P, C", [(3, 40), (2, 40)])
def test_cross_prompt_pairs_are_uniform_over_pairs_of_different_prompts(P, C):
    # R = 10. P = 3: K = 30 items, 300 cross-prompt pairs > 4 C: the sampling path.
    # P = 2: 100 cross-prompt pairs <= 4 C: the enumerating path. Same-prompt pairs never occur.
    R, rounds = 10, 1000
    K = P * R
    keys = jax.random.split(jax.random.key(4), rounds)
    pairs = jax.vmap(lambda k: cross_prompt_pairs(k, P, R, P, C))(keys)
    a, b, valid = (np.asarray(x) for x in pairs)
    assert valid.all()
    for row in range(rounds):
        assert len(set(zip(a[row].tolist(), b[row].tolist()))) == C
    assert np.all(a < b)
    # the drawn prompts are a permutation of all P prompts, so prompt = item // R
    assert np.all(a // R != b // R)
    counts = np.zeros((K, K))
    np.add.at(counts, (a.ravel(), b.ravel()), 1)
    u, v = np.triu_indices(K, 1)
    cross = counts[u, v][u // R != v // R]
    assert cross.size == K * (K - R) // 2
    assert cross.sum() == rounds * C
    assert scipy.stats.chisquare(cross).pvalue > 1e-4


def test_cross_prompt_pairs_many_repeats_still_fill():
    # 3 x 10 items, 300 cross-prompt pairs, 74 candidates: just past the enumeration
    # threshold, many repeated draws.
    pairs = cross_prompt_pairs(jax.random.key(5), 3, 10, 3, 74)
    _check_common(pairs, 74, 30)
    assert np.all(np.asarray(pairs.valid))


def test_cross_prompt_pairs_all_and_padding():
    P, R, n_prompts, C = 7, 2, 3, 20  # K = 6 items, 15 pairs, 12 of them across prompts
    pairs = cross_prompt_pairs(jax.random.key(6), P, R, n_prompts, C)
    _check_common(pairs, C, P * R)
    a, b = _valid_pairs(pairs)
    assert a.size == 12
    items = sorted(set(a.tolist()) | set(b.tolist()))
    assert len(items) == 6
    expected = {(u, v) for u, v in itertools.combinations(items, 2) if u // R != v // R}
    assert set(zip(a.tolist(), b.tolist())) == expected


@pytest.mark.parametrize("mode", ["in-prompt", "cross-prompt"])
def test_pool_items_agree_with_global_pairs(mode):
    P, R, n_prompts, C = 20, 4, 5, 30
    key = jax.random.key(7)
    pool = pool_items(key, mode, P, R, n_prompts, C)
    items = np.asarray(pool.items)
    assert items.shape == (n_prompts * R,) and np.unique(items).size == items.size
    # Items come prompt by prompt: items[s*R + j] is response j of prompt s.
    grouped = items.reshape(n_prompts, R)
    np.testing.assert_array_equal(grouped % R, np.broadcast_to(np.arange(R), grouped.shape))
    assert np.all(grouped // R == grouped[:, :1] // R)
    local = pool.pairs
    assert np.all((np.asarray(local.a) >= 0) & (np.asarray(local.a) < n_prompts * R))
    expected = candidate_pairs(key, mode, P, R, n_prompts, C)
    for got, want in zip(pool_to_global(pool), expected):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    direct = (in_prompt_pairs if mode == "in-prompt" else cross_prompt_pairs)(key, P, R, n_prompts, C)
    for got, want in zip(direct, expected):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_candidate_pairs_under_jit():
    fn = jax.jit(lambda k: candidate_pairs(k, "in-prompt", 20, 4, 5, 30))
    first = fn(jax.random.key(8))
    second = candidate_pairs(jax.random.key(8), "in-prompt", 20, 4, 5, 30)
    np.testing.assert_array_equal(np.asarray(first.a), np.asarray(second.a))


def test_errors():
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="unknown candidate mode 'both'; expected one of in-prompt, cross-prompt"):
        candidate_pairs(key, "both", 10, 4, 2, 5)
    with pytest.raises(ValueError, match=r"n_prompts must be in \[1, n_train_prompts=10\], got 11"):
        in_prompt_pairs(key, 10, 4, 11, 5)
    with pytest.raises(ValueError, match="n_responses must be >= 2, got 1"):
        cross_prompt_pairs(key, 10, 1, 2, 5)
    with pytest.raises(ValueError, match="n_candidates must be >= 1, got 0"):
        cross_prompt_pairs(key, 10, 3, 2, 0)
