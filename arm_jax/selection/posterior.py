"""A Laplace posterior over the reward model's last layer: one definition for every strategy.

With the features Φ of the trained network held fixed, the reward is r(x) = Φ(x)ᵀβ and the
Bradley–Terry log-likelihood of the labelled pairs is concave in β. Its Laplace approximation
around the fitted head β̂ is Gaussian:

    β ~ N(β̂, Λ⁻¹),   Λ = Σ_j v_j x_j x_jᵀ + λ I,   v_j = σ(x_jᵀβ̂)σ(−x_jᵀβ̂)

(x_j = Φ(winner) − Φ(loser) of labelled pair j; λ the prior precision of β). Λ is the Fisher
information of the labelled pairs plus the prior's: the same I_past the past-aware D-optimal
strategies use (:func:`arm_jax.selection.fisher.past_information`), factorised by the same guarded
Cholesky (:func:`arm_jax.selection.fisher.whitening`). From it:

- the reward gap of a pair x is N(xᵀβ̂, xᵀΛ⁻¹x): :func:`gap_mean_and_std`;
- confidence bounds of the gap and of P(a ≻ b): :func:`gap_bounds`, :func:`preference_bounds`;
- the posterior predictive P(a ≻ b) ≈ σ(μ / √(1 + πs²/8)) (MacKay's probit approximation):
  :func:`predictive_probability`;
- posterior draws of β: :func:`sample_heads` (``batchbald`` uses them).

Everything is jit- and vmap-able; shapes are fixed (masked past rows).
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from arm_jax.model.likelihood import DEFAULT_PRIOR_PRECISION
from arm_jax.runtime import precision as precision_lib
from arm_jax.selection import fisher


class Posterior(NamedTuple):
    """mean: (H,) β̂; precision: (H, H) Λ; white: the factor of Λ (``white.w`` = L⁻¹ with
    Λ + ρI = L Lᵀ, ρ the tiny relative ridge of :func:`arm_jax.selection.fisher.whitening`)."""

    mean: jax.Array
    precision: jax.Array
    white: fisher.Whitening


def precision_matrix(information: jax.Array, prior_precision) -> jax.Array:
    """Λ = I + λI: the head's posterior precision given the labelled pairs' Fisher information
    I = I_past (:func:`arm_jax.selection.fisher.past_information`) and the prior precision λ.
    The one place the prior's λI is added: every driver and strategy builds Λ with it.
    ``(..., H, H) -> (..., H, H)``."""
    h = information.shape[-1]
    return information + prior_precision * jnp.eye(h, dtype=information.dtype)


@precision_lib.full_precision
def laplace(
    beta: jax.Array,
    past_phi_diff: jax.Array,
    past_mask: jax.Array | None = None,
    prior_precision: float = DEFAULT_PRIOR_PRECISION,
    past_weight: jax.Array | None = None,
    tie=None,
) -> Posterior:
    """The Laplace posterior of the head given the labelled pairs' feature differences.

    beta: (H,) fitted head β̂; past_phi_diff: (M, H) x_j of the labelled pairs (the sign does
    not matter: v and x xᵀ are even in x); past_mask: (M,) bool, the real rows; past_weight,
    tie: each row's votes and Davidson's ν when the labels have them
    (:func:`arm_jax.selection.fisher.past_information`).
    """
    information = fisher.past_information(past_phi_diff, beta, past_mask, past_weight, tie)
    precision = precision_matrix(information, prior_precision)
    return Posterior(beta, precision, fisher.whitening(precision))


@precision_lib.full_precision
def gap_mean_and_std(post: Posterior, phi_diff: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(xᵀβ̂, √(xᵀΛ⁻¹x)) for each pair. ``phi_diff: (N, H) -> (N,), (N,)``."""
    z = fisher.whiten(phi_diff, post.white)
    return phi_diff @ post.mean, jnp.sqrt(jnp.sum(z * z, axis=-1))


def gap_bounds(post: Posterior, phi_diff: jax.Array, width: float = 1.96) -> tuple[jax.Array, jax.Array]:
    """(lower, upper) = μ ∓ width·s of each pair's reward gap (1.96: a 95 % interval)."""
    mean, std = gap_mean_and_std(post, phi_diff)
    return mean - width * std, mean + width * std


def preference_bounds(post: Posterior, phi_diff: jax.Array, width: float = 1.96) -> tuple[jax.Array, jax.Array]:
    """(lower, upper) bounds of P(a ≻ b) = σ(gap): σ of the gap's bounds (σ is monotone)."""
    lo, hi = gap_bounds(post, phi_diff, width)
    return jax.nn.sigmoid(lo), jax.nn.sigmoid(hi)


def predictive_probability(post: Posterior, phi_diff: jax.Array) -> jax.Array:
    """Posterior predictive P(a ≻ b) ≈ σ(μ / √(1 + π s²/8)), the probit approximation of
    E_β σ(xᵀβ). Shrinks towards 1/2 where the head is uncertain. ``(N, H) -> (N,)``."""
    mean, std = gap_mean_and_std(post, phi_diff)
    return jax.nn.sigmoid(mean / jnp.sqrt(1.0 + jnp.pi * std * std / 8.0))


@precision_lib.full_precision
def sample_heads(post: Posterior, key: jax.Array, n_samples: int) -> jax.Array:
    """``n_samples`` draws β̂ + L⁻ᵀε, ε ~ N(0, I), of the posterior. ``-> (H, n_samples)``."""
    eps = jax.random.normal(key, (post.mean.shape[-1], n_samples), post.mean.dtype)
    return post.mean[:, None] + post.white.w.T @ eps


@precision_lib.full_precision
def information_gain(
    beta: jax.Array,
    phi_diff: jax.Array,
    before: jax.Array,
    after: jax.Array,
    prior_precision: float = DEFAULT_PRIOR_PRECISION,
    weight: jax.Array | None = None,
    tie=None,
) -> jax.Array:
    """log det Λ_after − log det Λ_before: what the rows in ``after`` but not in ``before``
    added to the head's posterior precision Λ = Σ_rows n v x xᵀ + λI (nats; the D-optimal
    criterion). ``phi_diff: (M, H)``; ``before``, ``after``: (M,) bool row masks; ``weight``,
    ``tie``: as :func:`arm_jax.selection.fisher.past_information`. Both are factorised like every Λ, by
    the guarded Cholesky of :func:`arm_jax.selection.fisher.whitening` (its relative ridge; a larger
    one when the factor is not finite): :func:`arm_jax.selection.fisher.guarded_logdet`. NaN only if
    one still fails. ``-> ()``."""

    def precision(mask):
        return precision_matrix(fisher.past_information(phi_diff, beta, mask, weight, tie), prior_precision)

    # one batched factorisation of both: two independent LAPACK calls side by side can hang
    # XLA's CPU thread pool (experiment.study_round_step)
    logdet, ok = jax.vmap(fisher.guarded_logdet)(jnp.stack([precision(after), precision(before)]))
    return jnp.where(ok[0] & ok[1], logdet[0] - logdet[1], jnp.nan)
