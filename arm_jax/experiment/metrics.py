"""Test-set metrics of a reward model (paper §5.1): 1 − Spearman and Best-of-N.

Both are computed within test prompts: ``pred`` and ``gold`` are ``(P, R)`` arrays of the
predicted and golden rewards of the ``R`` generations of each of ``P`` test prompts.
All functions are jit-compiled and sort-based (O(R log R) per prompt).
"""
from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import jax.scipy.stats

from arm_jax.errors import InputError

__all__ = ['rank_average', 'spearman_per_prompt', 'one_minus_spearman', 'best_of_n']


@jax.jit
def rank_average(x: jax.Array) -> jax.Array:
    """Average ranks along the last axis, like ``scipy.stats.rankdata(x, axis=-1)``.

    Ranks are 1-based; tied values all get the mean of the ranks they span (for example
    ``[10, 20, 20, 5] -> [2, 3.5, 3.5, 1]``). JAX's own ``jax.scipy.stats.rankdata``: sorts,
    O(R log R) per row, no R x R comparison matrix. NaN values give unspecified ranks.

    Args:
      x: ``(..., R)`` array (float or int).

    Returns:
      ``(..., R)`` float32 ranks.
    """
    return jax.scipy.stats.rankdata(jnp.asarray(x), method="average", axis=-1).astype(jnp.float32)


@jax.jit
def spearman_per_prompt(pred: jax.Array, gold: jax.Array) -> jax.Array:
    """Spearman rank correlation between ``pred`` and ``gold`` within each prompt.

    The Pearson correlation of the average ranks (:func:`rank_average`) of each row, which
    is ``scipy.stats.spearmanr`` for rows with ties too. A row in which ``pred`` or
    ``gold`` is constant has no defined correlation; it is given 0.0 here (a model that
    cannot rank the responses of a prompt scores as a random ranking does on average).

    Args:
      pred: ``(P, R)`` predicted rewards.
      gold: ``(P, R)`` golden rewards.

    Returns:
      ``(P,)`` float32 correlations in ``[-1, 1]``.
    """
    pred_ranks = rank_average(pred)
    gold_ranks = rank_average(gold)
    pred_c = pred_ranks - jnp.mean(pred_ranks, axis=-1, keepdims=True)
    gold_c = gold_ranks - jnp.mean(gold_ranks, axis=-1, keepdims=True)
    covariance = jnp.sum(pred_c * gold_c, axis=-1)
    variance_product = jnp.sum(pred_c**2, axis=-1) * jnp.sum(gold_c**2, axis=-1)
    # Centred average ranks are multiples of 0.5, so a constant row gives exactly 0.
    is_defined = variance_product > 0
    rho = covariance / jnp.sqrt(jnp.where(is_defined, variance_product, 1.0))
    return jnp.where(is_defined, jnp.clip(rho, -1.0, 1.0), 0.0)


@jax.jit
def one_minus_spearman(pred: jax.Array, gold: jax.Array) -> jax.Array:
    """Mean over prompts of ``1 − Spearman`` (lower is better; 0 is a perfect ranking).

    Args:
      pred: ``(P, R)`` predicted rewards.
      gold: ``(P, R)`` golden rewards.

    Returns:
      scalar float32 in ``[0, 2]``; constant rows count as Spearman 0 (see
      :func:`spearman_per_prompt`).
    """
    return jnp.mean(1.0 - spearman_per_prompt(pred, gold))


@functools.partial(jax.jit, static_argnames=("ns",))
def _best_of_n(pred, gold, ns):
    values = []
    for n in ns:
        pred_n, gold_n = pred[:, :n], gold[:, :n]
        is_best = pred_n == jnp.max(pred_n, axis=-1, keepdims=True)  # (P, n); ties: several
        best_gold = jnp.sum(jnp.where(is_best, gold_n, 0.0), axis=-1) / jnp.sum(is_best, axis=-1)
        values.append(jnp.mean(best_gold))
    return jnp.stack(values).astype(jnp.float32)


def best_of_n(pred: jax.Array, gold: jax.Array, ns: Sequence[int]) -> jax.Array:
    """Best-of-N golden reward (higher is better), for several N.

    For each ``N`` and each prompt, among the first ``N`` responses take the one with the
    highest predicted reward and report its golden reward; average over prompts. If
    several of the first ``N`` responses tie for the highest prediction, the prompt scores
    the mean golden reward of the tied responses (the expected value of picking one of
    them at random).

    Args:
      pred: ``(P, R)`` predicted rewards.
      gold: ``(P, R)`` golden rewards.
      ns: the N values, each in ``[1, R]`` (static: one compile per distinct tuple).

    Returns:
      ``(len(ns),)`` float32, in the order of ``ns``.

    Raises:
      ValueError: ``ns`` is empty, an N is not in ``[1, R]``, or the shapes differ.
    """
    pred = jnp.asarray(pred)
    gold = jnp.asarray(gold)
    if pred.ndim != 2 or pred.shape != gold.shape:
        raise InputError(f"best_of_n: pred and gold must both be (P, R), got {pred.shape} and {gold.shape}")
    ns = tuple(int(n) for n in ns)
    if not ns:
        raise InputError("best_of_n: ns is empty")
    n_responses = pred.shape[1]
    for n in ns:
        if not 1 <= n <= n_responses:
            raise InputError(f"best_of_n: N={n} must be in [1, R={n_responses}]")
    return _best_of_n(pred, gold, ns)
