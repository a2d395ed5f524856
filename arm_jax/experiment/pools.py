"""Candidate comparison pairs for one active-learning round (fixed shapes, jit-able).

Each round draws ``n_prompts`` distinct training prompts and builds candidate pairs among
their items (paper §5.1):

- **in-prompt**: two of the ``R`` responses of one prompt
  (``n_prompts * R(R-1)/2`` pairs; the paper: 500 x 45 = 22 500);
- **cross-prompt**: two responses to *different* prompts among the ``K = n_prompts * R``
  items (``K(K-R)/2`` pairs; the paper's 12.5 million for K = 5 000 counts all
  ``K(K-1)/2`` pairs, the 22 500 same-prompt ones among them; either reading reproduces
  its numbers). ``arm-jax select --pairs cross-prompt`` means the same: different prompt ids;

then keeps a uniform random subset of ``n_candidates`` of them (the paper: 20 000). The
experiment then masks the candidates that are already labelled (:func:`labelled_mask`), as
``arm-jax select`` does, unless re-labelling is allowed.

Training items are numbered ``item = prompt * R + response`` (the order of
``train_embeddings.reshape(P * R, D)``). Shapes are static: when fewer than
``n_candidates`` distinct pairs exist, the tail is padding with ``valid = False`` and
``a = b`` (a zero feature difference, so padding scores nothing in the design criteria).
Every valid pair is distinct from every other valid pair and has ``a < b``.

All sizes and the mode are static Python values (``jax.jit`` ``static_argnames``).
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from arm_jax.errors import InputError
from arm_jax.selection.catalog import SAMPLED_PAIR_MODES

__all__ = ['CandidatePairs', 'CandidatePool', 'in_prompt_pairs', 'cross_prompt_pairs', 'candidate_pairs', 'pool_items', 'pool_to_global', 'possible_pairs', 'labelled_mask']

_STATIC = ("n_train_prompts", "n_responses", "n_prompts", "n_candidates")


class CandidatePairs(NamedTuple):
    """Candidate pairs ``(a[i], b[i])`` of item indices.

    Attributes:
      a: ``(C,)`` int32 index of the first item.
      b: ``(C,)`` int32 index of the second item; ``a < b`` where ``valid``.
      valid: ``(C,)`` bool, ``False`` for padding (there ``a == b``).
    """

    a: jax.Array
    b: jax.Array
    valid: jax.Array


class CandidatePool(NamedTuple):
    """The items of one round and the candidate pairs as local indices into them.

    Compute per-item quantities (features Φ, rewards r̂) once on ``items`` (``K`` of them)
    and gather pairs with ``pairs.a`` / ``pairs.b`` (local indices into ``items``).

    Attributes:
      items: ``(K,)`` int32 distinct global item indices, ``K = n_prompts * R``; the
        responses of the round's prompts, prompt by prompt (``items[s*R + j]`` is response
        ``j`` of the ``s``-th drawn prompt).
      pairs: :class:`CandidatePairs` of local indices in ``[0, K)``; where valid,
        ``items[pairs.a] < items[pairs.b]``.
    """

    items: jax.Array
    pairs: CandidatePairs


def _check_sizes(n_train_prompts: int, n_responses: int, n_prompts: int, n_candidates: int) -> None:
    if n_responses < 2:
        raise InputError(f"candidate pairs: n_responses must be >= 2, got {n_responses}")
    if not 1 <= n_prompts <= n_train_prompts:
        raise InputError(
            f"candidate pairs: n_prompts must be in [1, n_train_prompts={n_train_prompts}], got {n_prompts}"
        )
    if n_candidates < 1:
        raise InputError(f"candidate pairs: n_candidates must be >= 1, got {n_candidates}")


def _draw_prompts(key: jax.Array, n_train_prompts: int, n_prompts: int) -> jax.Array:
    """``(n_prompts,)`` int32 distinct prompt indices, uniformly at random."""
    return jax.random.choice(key, n_train_prompts, (n_prompts,), replace=False).astype(jnp.int32)


def round_items(key: jax.Array, n_train_prompts: int, n_responses: int, n_prompts: int) -> jax.Array:
    """``(n_prompts · R,)`` int32: every response of ``n_prompts`` random distinct prompts.

    The same draw as the ``items`` of :func:`pool_items` with the same key; used when all
    pairs among the round's items are scored (``all-cross``) instead of a subsample.
    """
    prompt_key, _ = jax.random.split(key)
    prompts = _draw_prompts(prompt_key, n_train_prompts, n_prompts)
    return (prompts[:, None] * n_responses + jnp.arange(n_responses, dtype=jnp.int32)).reshape(-1)


def _pad_or_choose(key: jax.Array, lo_table: np.ndarray, hi_table: np.ndarray, n_candidates: int):
    """A uniform subset of the enumerated pairs ``(lo_table[t], hi_table[t])``.

    Returns ``(lo, hi, valid)``, each ``(n_candidates,)``: a subset without replacement in
    random order when there are enough pairs, else all of them followed by padding.
    """
    n_total = lo_table.shape[0]
    lo_table = jnp.asarray(lo_table, jnp.int32)
    hi_table = jnp.asarray(hi_table, jnp.int32)
    if n_candidates <= n_total:
        chosen = jax.random.choice(key, n_total, (n_candidates,), replace=False)
        return lo_table[chosen], hi_table[chosen], jnp.ones((n_candidates,), bool)
    n_pad = n_candidates - n_total
    zeros = jnp.zeros((n_pad,), jnp.int32)
    lo = jnp.concatenate([lo_table, zeros])
    hi = jnp.concatenate([hi_table, zeros])
    valid = jnp.concatenate([jnp.ones((n_total,), bool), jnp.zeros((n_pad,), bool)])
    return lo, hi, valid


def _in_prompt_local(key, n_responses, n_prompts, n_candidates):
    """In-prompt pairs as local item indices ``s * R + j`` (``s`` the drawn-prompt slot)."""
    i, j = np.triu_indices(n_responses, k=1)  # the R(R-1)/2 response pairs, i < j
    slots = np.repeat(np.arange(n_prompts), i.size)
    lo_table = slots * n_responses + np.tile(i, n_prompts)
    hi_table = slots * n_responses + np.tile(j, n_prompts)
    return _pad_or_choose(key, lo_table, hi_table, n_candidates)


def _first_unique(lo: jax.Array, hi: jax.Array):
    """Mark repeats of ``(lo[i], hi[i])``: ``(m,)`` bool, True at each pair's first draw."""
    m = lo.shape[0]
    order = jnp.arange(m, dtype=jnp.int32)
    # Stable sort by (lo, hi); among equal pairs the earliest draw comes first.
    s_lo, s_hi, s_order = jax.lax.sort((lo, hi, order), num_keys=2, is_stable=True)
    repeat = jnp.concatenate([jnp.zeros((1,), bool), (s_lo[1:] == s_lo[:-1]) & (s_hi[1:] == s_hi[:-1])])
    return jnp.zeros((m,), bool).at[s_order].set(~repeat)


def _cross_prompt_local(key, n_responses, n_prompts, n_candidates):
    """Cross-prompt pairs (two items of different prompts) as local item indices in
    ``[0, K)``, ``lo < hi``; item ``s*R + j`` belongs to prompt slot ``s``."""
    n_items = n_prompts * n_responses
    n_total = n_items * (n_items - n_responses) // 2
    if n_total <= 4 * n_candidates:
        # Few pairs: enumerate them all (at most 4 * n_candidates) and subsample exactly.
        lo_table, hi_table = np.triu_indices(n_items, k=1)
        other = lo_table // n_responses != hi_table // n_responses
        return _pad_or_choose(key, lo_table[other], hi_table[other], n_candidates)
    # Many pairs: draw uniform pairs of items of different prompts with replacement and keep
    # the first n_candidates distinct ones in draw order. Sequential draws that skip repeats
    # are a uniform sample without replacement. With n_total > 4 * n_candidates,
    # 2 n_candidates + 64 draws hold fewer than n_candidates distinct pairs with negligible
    # probability; if it happens, the shortfall is padding (valid = False).
    n_draws = 2 * n_candidates + 64
    first_key, second_key = jax.random.split(key)
    u = jax.random.randint(first_key, (n_draws,), 0, n_items, jnp.int32)
    v = jax.random.randint(second_key, (n_draws,), 0, n_items - n_responses, jnp.int32)
    own_start = (u // n_responses) * n_responses
    v = v + n_responses * (v >= own_start)  # uniform over the items of the other prompts
    lo, hi = jnp.minimum(u, v), jnp.maximum(u, v)
    keep = _first_unique(lo, hi)
    # Move kept draws to the front, preserving draw order, and cut to n_candidates.
    position = jnp.argsort(~keep, stable=True)[:n_candidates]
    valid = keep[position]
    lo = jnp.where(valid, lo[position], 0)
    hi = jnp.where(valid, hi[position], 0)
    return lo, hi, valid


def possible_pairs(mode: str, n_responses: int, n_prompts: int) -> int:
    """How many distinct pairs a round of ``n_prompts`` prompts offers in ``mode``."""
    n_items = n_prompts * n_responses
    if mode == "in-prompt":
        return n_prompts * n_responses * (n_responses - 1) // 2
    if mode == "cross-prompt":
        return n_items * (n_items - n_responses) // 2
    return n_items * (n_items - 1) // 2  # any two items (all-cross)


def labelled_mask(a: jax.Array, b: jax.Array, labelled: jax.Array, labelled_mask: jax.Array) -> jax.Array:
    """(C,) bool: which candidate pairs (a, b) (global item indices, distinct pairs) are
    already labelled in either order, given ``labelled: (L, 2)`` pairs with ``labelled_mask:
    (L,)`` marking the real rows. One stable sort of L + C rows, no L × C comparison."""
    c = a.shape[0]
    lab_lo = jnp.where(labelled_mask, jnp.minimum(labelled[:, 0], labelled[:, 1]), -1)
    lab_hi = jnp.where(labelled_mask, jnp.maximum(labelled[:, 0], labelled[:, 1]), -1)
    lo = jnp.concatenate([lab_lo, jnp.minimum(a, b)]).astype(jnp.int32)
    hi = jnp.concatenate([lab_hi, jnp.maximum(a, b)]).astype(jnp.int32)
    tag = jnp.concatenate([jnp.zeros(lab_lo.shape, jnp.int32), jnp.ones((c,), jnp.int32)])
    order = jnp.arange(lo.shape[0], dtype=jnp.int32)
    s_lo, s_hi, s_tag, s_order = jax.lax.sort((lo, hi, tag, order), num_keys=3, is_stable=True)
    # a candidate (tag 1) sorts after the labelled rows (tag 0) with the same pair; the
    # candidates are distinct, so the row just before it has its pair only if it is labelled
    same = jnp.concatenate([jnp.zeros((1,), bool), (s_lo[1:] == s_lo[:-1]) & (s_hi[1:] == s_hi[:-1])])
    prev_labelled = jnp.concatenate([jnp.zeros((1,), bool), s_tag[:-1] == 0])
    hit = same & prev_labelled & (s_tag == 1)
    flags = jnp.zeros(lo.shape, bool).at[s_order].set(hit)
    return flags[lab_lo.shape[0]:]


@functools.partial(jax.jit, static_argnames=("mode",) + _STATIC)
def _pool(key, mode, n_train_prompts, n_responses, n_prompts, n_candidates):
    _, pair_key = jax.random.split(key)
    items = round_items(key, n_train_prompts, n_responses, n_prompts)
    if mode == "in-prompt":
        lo, hi, valid = _in_prompt_local(pair_key, n_responses, n_prompts, n_candidates)
    else:
        lo, hi, valid = _cross_prompt_local(pair_key, n_responses, n_prompts, n_candidates)
    # Order each pair so that the global indices increase.
    swap = items[lo] > items[hi]
    lo, hi = jnp.where(swap, hi, lo), jnp.where(swap, lo, hi)
    return CandidatePool(items, CandidatePairs(lo, hi, valid))


def _check_mode(mode: str) -> None:
    if mode not in SAMPLED_PAIR_MODES:
        raise InputError(f"unknown candidate mode {mode!r}; expected one of {', '.join(SAMPLED_PAIR_MODES)}")


def pool_items(
    key: jax.Array, mode: str, n_train_prompts: int, n_responses: int, n_prompts: int, n_candidates: int
) -> CandidatePool:
    """The round's items and candidate pairs as local indices (see :class:`CandidatePool`).

    Args:
      key: PRNG key.
      mode: ``"in-prompt"`` or ``"cross-prompt"``.
      n_train_prompts: ``P``, number of training prompts.
      n_responses: ``R``, responses per training prompt (>= 2).
      n_prompts: prompts drawn this round (distinct, ``<= P``).
      n_candidates: ``C``, number of candidate pairs (padded when fewer exist).

    Returns:
      :class:`CandidatePool` with ``items (K,)``, ``K = n_prompts * R``, and pairs ``(C,)``.
      ``pool_to_global(pool_items(key, mode, ...))`` equals
      ``candidate_pairs(key, mode, ...)``.
    """
    _check_mode(mode)
    _check_sizes(n_train_prompts, n_responses, n_prompts, n_candidates)
    return _pool(key, mode, n_train_prompts, n_responses, n_prompts, n_candidates)


def pool_to_global(pool: CandidatePool) -> CandidatePairs:
    """Local pairs of a :class:`CandidatePool` as global item indices: ``(C,)`` each."""
    return CandidatePairs(pool.items[pool.pairs.a], pool.items[pool.pairs.b], pool.pairs.valid)


def candidate_pairs(
    key: jax.Array, mode: str, n_train_prompts: int, n_responses: int, n_prompts: int, n_candidates: int
) -> CandidatePairs:
    """Candidate pairs of global training-item indices for one round.

    Args:
      key: PRNG key.
      mode: ``"in-prompt"`` or ``"cross-prompt"``.
      n_train_prompts, n_responses, n_prompts, n_candidates: see :func:`pool_items`.

    Returns:
      :class:`CandidatePairs`, each field ``(n_candidates,)``; indices in ``[0, P * R)``.

    Raises:
      ValueError: unknown mode or impossible sizes.
    """
    return pool_to_global(pool_items(key, mode, n_train_prompts, n_responses, n_prompts, n_candidates))


def in_prompt_pairs(
    key: jax.Array, n_train_prompts: int, n_responses: int, n_prompts: int, n_candidates: int
) -> CandidatePairs:
    """In-prompt candidates: two responses of the same prompt.

    Draws ``n_prompts`` distinct training prompts, forms all ``R(R-1)/2`` response pairs
    of each and keeps a uniform subset of ``n_candidates`` of the ``n_prompts * R(R-1)/2``
    pairs without replacement, in random order; if there are not that many, all of them
    followed by padding (``valid = False``).

    Args:
      key: PRNG key.
      n_train_prompts: ``P``; n_responses: ``R``; n_prompts: prompts this round;
      n_candidates: ``C``.

    Returns:
      :class:`CandidatePairs` of global item indices, each ``(C,)``.
    """
    return candidate_pairs(key, "in-prompt", n_train_prompts, n_responses, n_prompts, n_candidates)


def cross_prompt_pairs(
    key: jax.Array, n_train_prompts: int, n_responses: int, n_prompts: int, n_candidates: int
) -> CandidatePairs:
    """Cross-prompt candidates: two responses to different prompts among the round's items.

    The items are all responses of ``n_prompts`` distinct random prompts
    (``K = n_prompts * R``); the pairs are a uniform sample without replacement of
    ``n_candidates`` of the ``K(K-R)/2`` unordered pairs of items of different prompts,
    drawn without enumerating the pairs when there are many (O(C log C) for any ``K``).
    Padding (``valid = False``) fills the tail if fewer pairs exist.

    Args:
      key: PRNG key.
      n_train_prompts: ``P``; n_responses: ``R``; n_prompts: prompts this round;
      n_candidates: ``C``.

    Returns:
      :class:`CandidatePairs` of global item indices, each ``(C,)``, ``a < b`` where valid.
    """
    return candidate_pairs(key, "cross-prompt", n_train_prompts, n_responses, n_prompts, n_candidates)
