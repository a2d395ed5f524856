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
import numpy as np

from arm_jax.model import likelihood

__all__ = [
    'preference_probability', 'annotate', 'annotate_votes', 'majority_vote', 'panel_tie_strength', 'pack_ratings',
    'annotate_empirical',
]


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


# ------------------------------------------------------- ties, panels and several raters


def _clipped_logit(quality, golden_rewards_flat, a, b, reward_std):
    """q·(r*_a − r*_b)/std with q = ±inf kept finite (±1e4: a sure label) and 0 gap kept 0."""
    diff = (golden_rewards_flat[a] - golden_rewards_flat[b]).astype(jnp.float32)
    scaled = jnp.where(diff == 0, 0.0, diff / reward_std)
    d = jnp.where(scaled == 0, 0.0, quality * scaled)
    return jnp.clip(jnp.nan_to_num(d, nan=0.0), -1e4, 1e4)


def panel_tie_strength(golden_rewards_flat, qualities, tie_rate: float, reward_std) -> jax.Array:
    """The Davidson ν at which the panel ties on ``tie_rate`` of uniformly random pairs of the
    training items (4 096 pairs, each with a random member; a fixed key). ``-> ()``."""

    if tie_rate <= 0:
        return jnp.float32(0.0)
    k_pairs, k_member = jax.random.split(jax.random.PRNGKey(0))
    n = golden_rewards_flat.shape[0]
    a, b = jax.random.randint(k_pairs, (2, 4096), 0, n)
    q = jnp.asarray(qualities, jnp.float32)[jax.random.randint(k_member, (4096,), 0, len(qualities))]
    return likelihood.tie_strength_for_rate(tie_rate, _clipped_logit(q, golden_rewards_flat, a, b, reward_std))


def annotate_votes(
    key: jax.Array,
    golden_rewards_flat: jax.Array,
    a: jax.Array,
    b: jax.Array,
    qualities,
    tie_strength,
    reward_std,
    raters: int = 1,
) -> tuple[jax.Array, jax.Array]:
    """Label pairs by a panel, with ties: ``raters`` members per pair (each drawn uniformly
    from the panel, independently), each answering from Davidson's likelihood with logit
    d = q_m (r*_a − r*_b)/std and tie strength ν (:mod:`arm_jax.model.likelihood`; ν = 0 is the
    annotator of :func:`annotate`).

    qualities: (M,) the members' qualities (a tuple; may hold ±inf). Returns ``(counts (C, 3)
    float32`` votes for a, b and ties, ``annotator (C,) int32``: the member of a single rater,
    −1 when ``raters`` > 1).
    """

    c = a.shape[0]
    k_member, k_draw = jax.random.split(key)
    qualities = jnp.asarray(qualities, jnp.float32)
    member = jax.random.randint(k_member, (raters, c), 0, qualities.shape[0])
    d = _clipped_logit(qualities[member], golden_rewards_flat, a[None, :], b[None, :], reward_std)  # (R, C)
    probs = likelihood.outcome_probabilities(d, tie_strength)  # (R, C, 3)
    outcome = jax.random.categorical(k_draw, jnp.log(jnp.maximum(probs, 1e-38)), axis=-1)
    outcome = jnp.where(probs[..., 2] > 0, outcome, jnp.minimum(outcome, 1))  # never a tie of probability 0
    counts = jnp.sum(jax.nn.one_hot(outcome, 3, dtype=jnp.float32), axis=0)
    return counts, (member[0] if raters == 1 else jnp.full((c,), -1, jnp.int32)).astype(jnp.int32)


def majority_vote(key: jax.Array, counts: jax.Array) -> jax.Array:
    """One decided vote per row: the majority of a and b (ties and equal counts: a fair coin).
    ``(C, 3) -> (C, 3)``."""
    margin = counts[:, 0] - counts[:, 1]
    coin = jax.random.bernoulli(key, 0.5, margin.shape)
    a_wins = jnp.where(margin == 0, coin, margin > 0)
    return jnp.stack([a_wins, ~a_wins, jnp.zeros_like(a_wins)], axis=-1).astype(jnp.float32)


# ------------------------------------------------------- real raters


def pack_ratings(ratings) -> np.ndarray:
    """Each item's recorded ratings first, NaN padding last: ``(N, M) -> (N, M)`` float32, the
    order of the ratings kept. The layout :func:`annotate_empirical` draws from."""
    ratings = np.asarray(ratings, np.float32)
    order = np.argsort(np.isnan(ratings), axis=1, kind="stable")
    return np.take_along_axis(ratings, order, axis=1)


def annotate_empirical(key: jax.Array, ratings: jax.Array, a: jax.Array, b: jax.Array, raters: int = 1) -> jax.Array:
    """Label pairs by real raters: for each of ``raters`` votes per pair, one recorded rating of
    each item is drawn (independently, uniformly among that item's raters); the higher rating
    wins and equal ratings are a tie. No parameter of ours enters: the noise, its unevenness
    across items and the ties are the raters' own.

    ratings: (N, M) float32, each row the item's recorded ratings then NaN padding
    (:func:`pack_ratings`; every item has at least one rating). a, b: (C,) int32.
    Returns counts (C, 3) float32: votes for a, for b, and ties.
    """
    n_rated = jnp.sum(~jnp.isnan(ratings), axis=1).astype(jnp.float32)  # (N,)
    k_a, k_b = jax.random.split(key)

    def draw(k, items):
        u = jax.random.uniform(k, (raters, items.shape[0]))
        column = jnp.minimum(jnp.floor(u * n_rated[items]), n_rated[items] - 1).astype(jnp.int32)
        return ratings[items[None, :], column]  # (R, C)

    ra, rb = draw(k_a, a), draw(k_b, b)
    outcome = jnp.stack([ra > rb, rb > ra, ra == rb], axis=-1).astype(jnp.float32)  # (R, C, 3)
    return jnp.sum(outcome, axis=0)
