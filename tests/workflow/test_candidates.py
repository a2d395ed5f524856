"""Candidate pairs: which pairs select may propose, and a uniform sample."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from arm_jax.errors import InputError
from arm_jax.workflow import candidates
from arm_jax.workflow import labels as labels_lib
from arm_jax.workflow import pool as pool_io

# ----------------------------------------------------------------------------- labels



# ----------------------------------------------------------------------------- candidate pairs


def _brute_force(prompts, mode):
    n = len(prompts)
    out = set()
    for i, j in itertools.combinations(range(n), 2):
        same = prompts is not None and prompts[i] == prompts[j]
        if mode == "all-cross" or prompts is None or (mode == "in-prompt") == same:
            out.add((min(i, j), max(i, j)))
    return out


@pytest.mark.parametrize("mode", ["in-prompt", "cross-prompt", "all-cross"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pair_index_enumerates_exactly_the_mode(mode, seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 25))
    prompts = rng.integers(0, 5, size=n).astype(str)
    pool = pool_io.Pool("p", np.zeros((n, 1), np.float32), np.arange(n).astype(str), prompts)
    index = candidates.pair_index(pool, mode)
    a, b = index.decode(np.arange(index.total))
    got = [(min(x, y), max(x, y)) for x, y in zip(a.tolist(), b.tolist())]
    assert len(got) == len(set(got)) == index.total
    assert set(got) == _brute_force(prompts.tolist(), mode)


def test_cross_prompt_without_prompt_ids_is_any_two_items():
    pool = pool_io.Pool("p", np.zeros((5, 1), np.float32), np.arange(5).astype(str), None)
    assert candidates.pair_index(pool, "cross-prompt").total == 10
    with pytest.raises(InputError, match="no prompt_ids"):
        candidates.pair_index(pool, "in-prompt")


@pytest.mark.parametrize("total, m", [(10, 3), (10, 10), (10, 50), (5_000_000, 1000), (3_000_000, 1_000_000)])
def test_sample_distinct(total, m):
    got = candidates.sample_distinct(np.random.default_rng(0), total, m)
    assert got.size == min(total, m) and np.unique(got).size == got.size
    assert got.min() >= 0 and got.max() < total and np.all(np.diff(got) > 0)


def test_sample_distinct_is_uniform():
    counts = np.zeros(10)
    rng = np.random.default_rng(0)
    for _ in range(2000):
        counts[candidates.sample_distinct(rng, 10, 3)] += 1
    np.testing.assert_allclose(counts / 2000, 0.3, atol=0.04)
    # the large-range path (draws with replacement, first occurrences) is uniform too
    hits = candidates.sample_distinct(np.random.default_rng(1), 50_000_000, 200_000)
    frac_low = np.mean(hits < 25_000_000)
    assert abs(frac_low - 0.5) < 0.01


def test_candidate_pairs_mask_labelled_pairs_in_either_order(pool):
    labels = labels_lib.Labels("l", np.array([1, 4]), np.array([0, 3]), np.array([1, 2]), np.zeros(0, np.int64), np.zeros(0, np.int64))
    keys = labels_lib.labelled_keys(labels, pool.n)
    cand = candidates.candidate_pairs(pool, "in-prompt", 100, 0, keys)
    assert cand.universe == 6 and cand.a.size == 6
    masked = {(int(a), int(b)) for a, b, v in zip(cand.a, cand.b, cand.valid) if not v}
    assert {tuple(sorted(p)) for p in masked} == {(0, 1), (3, 4)}
    assert np.all(cand.a != cand.b)
    sub = candidates.candidate_pairs(pool, "cross-prompt", 4, 0, keys)
    assert sub.a.size == 4 and sub.universe == 9
    np.testing.assert_array_equal(sub.a, candidates.candidate_pairs(pool, "cross-prompt", 4, 0, keys).a)


def test_candidates_are_redrawn_when_the_labels_change():
    n = 200
    pool = pool_io.Pool("p", np.zeros((n, 1), np.float32), np.arange(n).astype(str), None)
    none = np.zeros(0, np.int64)
    first = candidates.candidate_pairs(pool, "cross-prompt", 500, 0, none)
    again = candidates.candidate_pairs(pool, "cross-prompt", 500, 0, none)
    np.testing.assert_array_equal(first.a, again.a)
    np.testing.assert_array_equal(first.b, again.b)
    labelled = np.sort(labels_lib.pair_keys(first.a[:50], first.b[:50], n))
    second = candidates.candidate_pairs(pool, "cross-prompt", 500, 0, labelled)
    overlap = np.intersect1d(labels_lib.pair_keys(first.a, first.b, n), labels_lib.pair_keys(second.a, second.b, n))
    assert overlap.size < 100  # a fresh draw (expected 500 * 500 / 19900 ≈ 13 in common), not the same one
    assert candidates.candidate_pairs(pool, "cross-prompt", 500, 1, none).a.tolist() != first.a.tolist()
