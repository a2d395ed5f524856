"""The simulated annotator of the paper's embedding infrastructure.

For a pair of items ``(a, b)`` with golden rewards ``r*_a, r*_b``, the annotator prefers
``a`` with probability

    P(a ≻ b) = σ(quality · (r*_a − r*_b) / reward_std)

and draws its label ``h ~ Bernoulli(P(a ≻ b))``. ``quality`` (the paper's β_a) sets how
consistent the annotator is: 0 is a coin flip, ``+inf`` always prefers the item with the
larger golden reward (ties broken by a fair coin), a negative value is adversarial.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

__all__ = ["preference_probability", "annotate"]


def _resolve_std(golden_rewards_flat: jax.Array, reward_std) -> jax.Array:
    if reward_std is None:
        return jnp.std(golden_rewards_flat)
    return jnp.asarray(reward_std, jnp.float32)


@jax.jit
def _probability(golden_rewards_flat, a, b, quality, reward_std):
    quality = jnp.asarray(quality, jnp.float32)
    diff = (golden_rewards_flat[a] - golden_rewards_flat[b]).astype(jnp.float32)
    scaled_diff = jnp.where(diff == 0, 0.0, diff / reward_std)  # a tie stays a tie even if std = 0
    # quality = ±inf: σ(±inf · d) is the step function; inf · 0 would be NaN, so a tie is 1/2.
    step = 0.5 * (1.0 + jnp.sign(quality) * jnp.sign(scaled_diff))
    finite_quality = jnp.where(jnp.isinf(quality), 0.0, quality)
    return jnp.where(jnp.isinf(quality), step, jax.nn.sigmoid(finite_quality * scaled_diff))


def preference_probability(
    golden_rewards_flat: jax.Array,
    a: jax.Array,
    b: jax.Array,
    quality: float,
    reward_std: Optional[float] = None,
) -> jax.Array:
    """``P(a ≻ b) = σ(quality · (r*_a − r*_b) / reward_std)`` for each pair.

    Args:
      golden_rewards_flat: ``(N,)`` float32 golden rewards of the training items
        (``train_rewards.reshape(-1)``).
      a, b: ``(C,)`` int32 item indices.
      quality: annotation quality β_a (scalar, may be ``jnp.inf``; may be traced).
      reward_std: scale of the reward differences, typically ``std(r*)`` over the training
        items; ``None`` computes ``std(golden_rewards_flat)``.

    Returns:
      ``(C,)`` float32 probabilities in ``[0, 1]``; with ``quality = ±inf`` exactly 0, 1, or
      0.5 for a tie (never NaN).
    """
    return _probability(golden_rewards_flat, a, b, quality, _resolve_std(golden_rewards_flat, reward_std))


@jax.jit
def _annotate(key, golden_rewards_flat, a, b, quality, reward_std):
    p_a_wins = _probability(golden_rewards_flat, a, b, quality, reward_std)
    a_wins = jax.random.uniform(key, a.shape, jnp.float32) < p_a_wins  # Bernoulli(p); p = 1 always wins
    a = jnp.asarray(a, jnp.int32)
    b = jnp.asarray(b, jnp.int32)
    return jnp.where(a_wins, a, b), jnp.where(a_wins, b, a)


def annotate(
    key: jax.Array,
    golden_rewards_flat: jax.Array,
    a: jax.Array,
    b: jax.Array,
    quality: float,
    reward_std: Optional[float] = None,
) -> tuple[jax.Array, jax.Array]:
    """Label pairs with the simulated annotator.

    Args:
      key: PRNG key.
      golden_rewards_flat: ``(N,)`` float32 golden rewards of the training items.
      a, b: ``(C,)`` int32 item indices of the pairs.
      quality: annotation quality β_a (scalar; 0 is a coin flip, ``jnp.inf`` labels by the
        golden reward with ties broken by a fair coin; may be traced).
      reward_std: reward scale, typically ``std(r*)`` of the training items; ``None``
        computes ``std(golden_rewards_flat)``.

    Returns:
      ``(winner, loser)``, each ``(C,)`` int32: for every pair, ``{winner, loser} = {a, b}``
      with ``winner = a`` with probability :func:`preference_probability`.
    """
    return _annotate(key, golden_rewards_flat, a, b, quality, _resolve_std(golden_rewards_flat, reward_std))
