"""Candidate pairs: which pairs of pool items ``select`` may propose, and a uniform sample.

Modes (:data:`arm_jax.selection.catalog.PAIR_MODES`), the same meaning everywhere in arm-jax (the paper's):

- ``in-prompt``: two responses with the same prompt id (needs prompt ids).
- ``cross-prompt``: two responses with *different* prompt ids; when the pool has no prompt
  ids, any two items.
- ``all-cross``: any two items (``select`` scores them all without listing them).

Every pair of a mode is numbered without being listed (:class:`PairIndex`), so a uniform
subsample of a pool with billions of pairs costs O(sample).
"""
from __future__ import annotations

import hashlib
from typing import NamedTuple

import numpy as np

from arm_jax.errors import InputError
from arm_jax.selection.catalog import PAIR_MODES
from arm_jax.workflow.labels import pair_keys
from arm_jax.workflow.pool import Pool

DEFAULT_CANDIDATES = 20_000


class CandidatePairs(NamedTuple):
    """a, b: (M,) int64 pool rows (a != b, no pair twice); valid: (M,) bool, False where the
    pair is already labelled (and relabelling is not allowed); universe: how many pairs the
    mode allows in all."""

    a: np.ndarray
    b: np.ndarray
    valid: np.ndarray
    universe: int

    @property
    def n_valid(self) -> int:
        return int(np.count_nonzero(self.valid))


class PairIndex(NamedTuple):
    """Every pair of a mode, numbered 0..total-1 without being listed.

    Items are sorted by prompt (``order``); sorted item s pairs with sorted items
    ``lo[s] .. lo[s] + count[s] - 1``; ``cum`` is the running total of ``count``.
    """

    order: np.ndarray
    lo: np.ndarray
    count: np.ndarray
    cum: np.ndarray

    @property
    def total(self) -> int:
        return int(self.cum[-1]) if self.cum.size else 0

    def decode(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        t = np.asarray(t, np.int64)
        s = np.searchsorted(self.cum, t, side="right")
        partner = self.lo[s] + (t - (self.cum[s] - self.count[s]))
        return self.order[s], self.order[partner]


def pair_index(pool: Pool, mode: str) -> PairIndex:
    """The :class:`PairIndex` of a mode over the pool."""
    n = pool.n
    if mode not in PAIR_MODES:
        raise InputError(f"unknown --pairs {mode!r}; choose one of {', '.join(PAIR_MODES)}")
    if mode == "in-prompt" and pool.prompt_ids is None:
        raise InputError(
            f"{pool.path}: the pool has no prompt_ids, so there are no in-prompt pairs; "
            "add prompt_ids or use --pairs cross-prompt"
        )
    if pool.prompt_ids is None or mode == "all-cross":
        order = np.arange(n, dtype=np.int64)
        lo = order + 1
        return PairIndex(order, lo, n - lo, np.cumsum(n - lo))
    _, codes = np.unique(pool.prompt_ids, return_inverse=True)
    order = np.argsort(codes, kind="stable").astype(np.int64)
    sorted_codes = codes[order]
    end = np.searchsorted(sorted_codes, sorted_codes, side="right").astype(np.int64)
    s = np.arange(n, dtype=np.int64)
    if mode == "in-prompt":
        lo, count = s + 1, end - s - 1
    else:  # cross-prompt
        lo, count = end, n - end
    return PairIndex(order, lo, count, np.cumsum(count))


def sample_distinct(rng: np.random.Generator, total: int, m: int) -> np.ndarray:
    """A uniformly random m-subset of range(total), sorted (int64); all of it if m >= total.

    Never allocates more than O(m + 2^20): small ranges are permuted, large ones are drawn
    with replacement, keeping first occurrences (a uniform subset, since every element is
    equally likely to be among the first m distinct draws).
    """
    if m >= total:
        return np.arange(total, dtype=np.int64)
    if total <= max(4 * m, 1 << 20):
        return np.sort(rng.permutation(total)[:m].astype(np.int64))
    draws = np.empty(0, np.int64)
    need = m + m // 3 + 16
    while True:
        draws = np.concatenate([draws, rng.integers(0, total, size=need, dtype=np.int64)])
        _, first = np.unique(draws, return_index=True)
        if first.size >= m:
            return np.sort(draws[np.sort(first)[:m]])
        need = 2 * (m - first.size) + 16


def candidate_seed(seed: int, labelled: np.ndarray) -> list[int]:
    """Entropy for the candidate sample: the seed and a digest of the labelled pairs.

    So each round (a new labelled set) draws fresh candidates, as the paper does, instead of
    re-drawing the same subsample and exhausting it; the same inputs still give the same draw.
    """
    digest = hashlib.sha256(np.ascontiguousarray(labelled, dtype="<i8").tobytes()).digest()
    return [int(seed), 2, *np.frombuffer(digest[:16], dtype="<u4").tolist()]


def candidate_pairs(
    pool: Pool,
    mode: str,
    n_candidates: int,
    seed: int,
    labelled: np.ndarray,
    allow_relabel: bool = False,
    never: np.ndarray | None = None,
) -> CandidatePairs:
    """Uniform subsample (without duplicates) of ``n_candidates`` pairs of the mode.

    Every pair of the mode is kept when there are at most ``n_candidates``. ``labelled``:
    sorted keys (:func:`~arm_jax.workflow.labels.labelled_keys`) of the labelled pairs, which are
    marked not ``valid`` unless ``allow_relabel``; the sample is seeded by ``seed`` and these
    keys (:func:`candidate_seed`), so it changes from round to round. ``never``: keys of pairs
    that are never valid, even with ``allow_relabel`` (the evaluation pairs of
    ``--val-labels``); they do not change the draw.
    """
    if n_candidates < 1:
        raise InputError(f"--candidates must be >= 1, got {n_candidates}")
    index = pair_index(pool, mode)
    rng = np.random.default_rng(candidate_seed(seed, labelled))
    t = sample_distinct(rng, index.total, n_candidates)
    a, b = index.decode(t)
    keys = pair_keys(a, b, pool.n)
    if allow_relabel:
        valid = np.ones(a.shape, bool)
    else:
        valid = ~np.isin(keys, labelled, assume_unique=False)
    if never is not None and never.size:
        valid &= ~np.isin(keys, never)
    return CandidatePairs(a, b, valid, index.total)
