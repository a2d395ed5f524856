"""The informed selector: a reference arm of the experiment, not a rule a user can run.

A rule picks pairs with the current estimate β̂ of the reward model's head, which is poor while
there are few labels. The *informed* selector picks as the best rule would if it knew the truth:
:data:`RULE` (greedy I-optimal batches) with β̂ replaced by the best head in class β* for the
current features, the head that reproduces the annotator's own label model best. Its curve is
what a perfectly informed selector reaches with the same model and labels; it is a reference,
not a bound (benchmarks/RESULTS.md, issue 22).

β* is defined once, here, and used by the experiment and by benchmarks/bench_ceiling.py:

- the **true reward** of each training item on the logit scale of its labels
  (:func:`true_reward`): for the simulated annotator P(a ≻ b) = σ(β_a (r*_a − r*_b)/std r*),
  so t = β_a r*/std r* exactly (a panel: its members' mean quality); for real raters
  (:func:`~arm_jax.experiment.annotator.annotate_empirical`) t = c · (mean rating), c the
  Bradley–Terry scale that fits the raters' recorded outcomes best (:func:`empirical_scale`);
- β* = the least-squares head of t on the features (:func:`best_head`), i.e. the head whose
  predicted gaps xᵀβ* match the true logit gaps t_a − t_b over all pairs of items.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from arm_jax.model import network as model_lib

#: The experiment's name of the informed arm (``arm-jax run --strategies ...,informed``).
INFORMED = "informed"
#: The rule the informed arm runs, at β*.
RULE = "greedy_iopt"
#: Random pairs of training items (a fixed key) over which the empirical scale is fitted.
SCALE_PAIRS = 4096
#: Ridge of :func:`best_head`, relative to the mean diagonal of the centred features' Gram matrix.
RIDGE = 1e-6
#: Eigenvalues of the Gram matrix below this fraction of the largest count as zero in :func:`best_head`.
PSEUDO_INVERSE = 1e-5


def is_informed(strategy) -> bool:
    """Whether ``strategy`` (a name or a strategy object) is the informed arm."""
    return isinstance(strategy, str) and strategy == INFORMED


def outcome_rates(ratings: jax.Array, a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(P(a wins) (C,), P(tie) (C,)) when one recorded rating of each item is drawn uniformly,
    exactly (every pair of ratings counted): the empirical annotator's label model.
    ratings: (N, M) float32 NaN-padded; a, b: (C,) int32."""
    ra, rb = ratings[a][:, :, None], ratings[b][:, None, :]  # (C, M, 1), (C, 1, M)
    both = ~jnp.isnan(ra) & ~jnp.isnan(rb)
    n = jnp.maximum(jnp.sum(both, axis=(1, 2)), 1).astype(jnp.float32)
    wins = jnp.sum(both & (ra > rb), axis=(1, 2)) / n
    ties = jnp.sum(both & (ra == rb), axis=(1, 2)) / n
    return wins, ties


def empirical_scale(ratings: jax.Array, steps: int = 50) -> jax.Array:
    """() the c ≥ 0 that maximises Σ p log σ(cΔ) + (1 − p) log σ(−cΔ) over :data:`SCALE_PAIRS`
    random pairs of items (a fixed key), Δ the difference of their mean ratings and p = P(win) +
    P(tie)/2 (:func:`outcome_rates`): the raters' outcomes as a Bradley–Terry model in the mean
    rating. Newton steps on the concave one-dimensional objective; 0 where the means carry no
    information (all equal)."""
    n = ratings.shape[0]
    a, b = jax.random.randint(jax.random.PRNGKey(0), (2, SCALE_PAIRS), 0, n)
    wins, ties = outcome_rates(ratings, a, b)
    p = wins + 0.5 * ties
    mean = jnp.nanmean(ratings, axis=1)
    delta = mean[a] - mean[b]
    spread = jnp.sqrt(jnp.mean(delta * delta))

    def step(_, c):
        s = jax.nn.sigmoid(c * delta)
        grad = jnp.sum((p - s) * delta)
        curvature = jnp.sum(s * (1 - s) * delta * delta)
        return jnp.maximum(c + grad / jnp.maximum(curvature, 1e-30), 0.0)

    c = jax.lax.fori_loop(0, steps, step, jnp.where(spread > 0, 1.0 / jnp.maximum(spread, 1e-30), 0.0))
    return jnp.where(spread > 0, c, 0.0)


def true_reward(golden_rewards_flat, reward_std, qualities, ratings=None) -> jax.Array:
    """(N,) each training item's true reward on its labels' logit scale (see the module's
    docstring). ``qualities``: the simulated panel's qualities (a tuple; ±inf clipped to ±1e4,
    as :mod:`~arm_jax.experiment.annotator` does); ``ratings``: (N, M) the recorded ratings for
    the empirical annotator (then the qualities are ignored)."""
    if ratings is not None:
        return empirical_scale(ratings) * jnp.nanmean(ratings, axis=1)
    q = jnp.mean(jnp.clip(jnp.asarray(qualities, jnp.float32), -1e4, 1e4))
    scaled = jnp.where(reward_std > 0, golden_rewards_flat / jnp.where(reward_std > 0, reward_std, 1.0), 0.0)
    return q * scaled


def best_head(features: jax.Array, target: jax.Array) -> jax.Array:
    """(H,) β* = argmin Σ_{i,j} ((φ_i − φ_j)ᵀβ − (t_i − t_j))² (+ a tiny ridge, :data:`RIDGE`):
    least squares of the centred target (N,) on the centred features (N, H), solved by an
    eigendecomposition of the Gram matrix (the minimum-norm solution: directions of eigenvalue
    below :data:`PSEUDO_INVERSE` of the largest get no weight). Not finite where
    the inputs are not (the experiment then refuses the round's picks)."""
    with jax.default_matmul_precision("highest"):
        phi = features - jnp.mean(features, axis=0)
        t = target - jnp.mean(target)
        gram = phi.T @ phi
        values, vectors = jnp.linalg.eigh(gram)
        ridge = RIDGE * jnp.maximum(jnp.mean(values), 1e-30)
        # directions the features do not span (eigenvalues at float32 rounding) get no weight
        kept = values > PSEUDO_INVERSE * jnp.max(values)
        inverse = jnp.where(kept, 1.0 / (jnp.where(kept, values, 1.0) + ridge), 0.0)
        return vectors @ (inverse * (vectors.T @ (t @ phi)))


def informed_head(params, config, data, truth: jax.Array) -> jax.Array:
    """(H,) β* for the features of the model ``params`` over every training item; ``truth``
    (N,) from :func:`true_reward` (the run's, computed once)."""
    return best_head(model_lib.features(params, config.model, data.train_items), truth)
