"""Fisher information of the last linear layer and the D-optimal scores built on it.

For a candidate pair i with feature difference x_i = Φ_i1 − Φ_i2 and head β:

    p_i = σ(x_iᵀ β),   v_i = p_i (1 − p_i),   I(C) = Σ_{i∈C} v_i x_i x_iᵀ

The D-optimal score of pair i is the gradient of the weighted log-det at w = 1:

    ∂/∂w_i log det(I_past + Σ_j w_j v_j x_j x_jᵀ + εI) = v_i x_iᵀ M⁻¹ x_i

(a weighted leverage score). Both forms are here: :func:`dopt_scores_autodiff` (``jax.grad``
of the log-det written as a matrix product) and :func:`leverage_scores` (one Cholesky, one
triangular solve). Neither ever builds an N × H × H array: memory is O(N·H).

Every factorisation of M goes through :func:`whitening`: a ridge relative to M's scale
(:data:`DEFAULT_RIDGE`), a finiteness check of the factor, and retries with a larger ridge;
it never hands back NaN scores silently.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import solve_triangular

from arm_jax.errors import InputError
from arm_jax.model.likelihood import bernoulli_variance
from arm_jax.runtime.precision import full_precision

#: Relative ridge ε: M is regularised as M + (ε·tr(M)/H + floor)·I before it is factorised.
#: An absolute jitter (1e-6·I) is below float32 resolution once M's entries are ~1e2 or more
#: (ReLU features of a trained MLP with activations ~1e2, dead units, fewer pairs than
#: features): the Cholesky then fails and every score is NaN. A ridge relative to the mean
#: eigenvalue tr(M)/H is the same fraction of M at every scale. It changes no score of a
#: well-conditioned M measurably (relative effect ≤ ε·cond(M)/H).
DEFAULT_RIDGE = 1e-6
#: Absolute floor added to the relative ridge, so M = 0 (no information yet) is invertible.
RIDGE_FLOOR = 1e-30
#: When the Cholesky of M + ridge·I still fails (rounding in float32 can leave M indefinite
#: by ~1e-7·‖M‖), the ridge grows by this factor and the factorisation is retried, at most
#: :data:`RIDGE_TRIES` times (ε = 1e-6 → 1e-5 → … → 10). Never an unranked answer: a result
#: that is still not finite is reported (``ok`` False) and the drivers raise.
RIDGE_GROWTH = 10.0
RIDGE_TRIES = 8


@full_precision
def information_matrix(phi_diff: jax.Array, weights: jax.Array) -> jax.Array:
    """Σ_i w_i x_i x_iᵀ as one matrix product. ``(N, H), (N,) -> (H, H)``."""
    return (phi_diff * weights[:, None]).T @ phi_diff


def ridge_for(m: jax.Array, ridge: float = DEFAULT_RIDGE) -> jax.Array:
    """The ridge added to M: ε·tr(M)/H + :data:`RIDGE_FLOOR` (ε = ``ridge``). ``-> ()``."""
    h = m.shape[-1]
    return ridge * jnp.maximum(jnp.trace(m) / h, 0.0) + RIDGE_FLOOR


class Whitening(NamedTuple):
    """``w``: (H, H) lower-triangular L⁻¹ with M + ridge·I = L Lᵀ, so xᵀ(M + ridge·I)⁻¹x = ‖w x‖².
    ``ridge``: () the ridge actually added; ``ok``: () bool, the factor is finite."""

    w: jax.Array
    ridge: jax.Array
    ok: jax.Array


def _guarded_factor(m: jax.Array, ridge: float) -> tuple[jax.Array, Whitening]:
    """(L, :class:`Whitening`) of the regularised M: the factorisation of :func:`whitening`,
    which also hands back the Cholesky factor L itself (M + ρI = L Lᵀ)."""
    h = m.shape[-1]
    m = 0.5 * (m + jnp.swapaxes(m, -1, -2))
    eye = jnp.eye(h, dtype=m.dtype)

    def factor(rho):
        chol = jnp.linalg.cholesky(m + rho * eye)
        w = solve_triangular(chol, eye, lower=True)
        return chol, w, jnp.all(jnp.isfinite(w))

    rho0 = ridge_for(m, ridge)
    chol0, w0, ok0 = factor(rho0)

    def retry(state):
        _, _, rho, _, tries = state
        rho = rho * RIDGE_GROWTH
        chol, w, ok = factor(rho)
        return chol, w, rho, ok, tries + 1

    def failing(state):
        return (~state[3]) & (state[4] < RIDGE_TRIES)

    chol, w, rho, ok, _ = jax.lax.while_loop(failing, retry, (chol0, w0, rho0, ok0, jnp.int32(0)))
    return chol, Whitening(w, rho, ok)


@full_precision
def whitening(m: jax.Array, ridge: float = DEFAULT_RIDGE) -> Whitening:
    """Factorise the regularised M with a finiteness check; retry with a larger ridge.

    M + ρ·I with ρ = ε·tr(M)/H + floor (:func:`ridge_for`), one Cholesky and one (H × H)
    triangular solve. If the factor is not finite (float32 rounding left M indefinite), ρ
    grows by :data:`RIDGE_GROWTH` and it is tried again, up to :data:`RIDGE_TRIES` times
    (a ``lax.while_loop``: jit-able, vmap-able; the usual case runs once). ``ok`` is False
    only when M itself is not finite. ``m: (H, H) symmetric PSD -> Whitening``.
    """
    return _guarded_factor(m, ridge)[1]


@full_precision
def guarded_logdet(m: jax.Array, ridge: float = DEFAULT_RIDGE) -> tuple[jax.Array, jax.Array]:
    """(log det(M + ρI), ok) from the factorisation of :func:`whitening` (its relative ridge ρ,
    its finiteness check and retries): 2 Σ log diag L. ``m: (H, H) -> (), () bool``; vmap it
    to factorise a stack of matrices in one batched call."""
    chol, white = _guarded_factor(m, ridge)
    return 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), axis=-1), white.ok


def logdet_spd(m: jax.Array) -> jax.Array:
    """log det of a symmetric positive-definite matrix via Cholesky."""
    chol = jnp.linalg.cholesky(m)
    return 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol)))


def weighted_logdet(
    w: jax.Array,
    phi_diff: jax.Array,
    v: jax.Array,
    past_information: jax.Array | None = None,
    ridge: float = DEFAULT_RIDGE,
) -> jax.Array:
    """S(w) = log det(I_past + Σ_i w_i v_i x_i x_iᵀ + ρI), ρ held fixed at its value for w = 1."""
    m = information_matrix(phi_diff, w * v)
    if past_information is not None:
        m = m + past_information
    rho = jax.lax.stop_gradient(ridge_for(m, ridge))
    return logdet_spd(m + rho * jnp.eye(m.shape[-1], dtype=m.dtype))


def dopt_scores_autodiff(
    phi_diff: jax.Array,
    v: jax.Array,
    past_information: jax.Array | None = None,
    ridge: float = DEFAULT_RIDGE,
) -> jax.Array:
    """∇_w S(w) at w = 1 by ``jax.grad`` (reference implementation). ``-> (N,)``."""
    ones = jnp.ones(phi_diff.shape[0], phi_diff.dtype)
    return jax.grad(weighted_logdet)(ones, phi_diff, v, past_information, ridge)


@full_precision
def whiten(phi: jax.Array, w: Whitening) -> jax.Array:
    """Z = Φ Wᵀ: rows with zᵢ·zⱼ = φᵢᵀ(M + ρI)⁻¹φⱼ. ``(N, H) -> (N, H)``."""
    return phi @ w.w.T


@full_precision
def leverages(phi_diff: jax.Array, m: jax.Array, ridge: float = DEFAULT_RIDGE) -> jax.Array:
    """x_iᵀ (M + ρI)⁻¹ x_i for all i, with one Cholesky and one triangular solve. ``-> (N,)``.

    With M + ρI = L Lᵀ, x_iᵀ (M + ρI)⁻¹ x_i = ‖L⁻¹ x_i‖². The triangular solve is against the
    (H × H) identity, not against Xᵀ: a solve with N right-hand sides measured ≈ 4× slower than
    a matrix product on the CPU (N = 20 000, H = 64), whereas Z = X L⁻ᵀ is one (N × H)·(H × H)
    matrix product, and the squared row norms fuse into it. Memory stays O(N·H). NaN
    everywhere where :func:`whitening` could not factorise M (``ok`` False).
    """
    w = whitening(m, ridge)
    z = whiten(phi_diff, w)
    return jnp.where(w.ok, jnp.sum(z * z, axis=-1), jnp.nan)


def leverage_scores(phi_diff: jax.Array, v: jax.Array, m: jax.Array, ridge: float = DEFAULT_RIDGE) -> jax.Array:
    """Weighted leverage scores v_i x_iᵀ (M + ρI)⁻¹ x_i (:func:`leverages`). ``-> (N,)``."""
    return v * leverages(phi_diff, m, ridge)


def past_information(
    past_phi_diff: jax.Array, beta: jax.Array, past_mask: jax.Array | None = None,
    past_weight: jax.Array | None = None, tie=None,
) -> jax.Array:
    """I_past = Σ_j n_j v_j x_j x_jᵀ over the labelled pairs (rows with ``past_mask`` False ignored).

    ``past_phi_diff: (M, H), beta: (H,), past_mask: (M,) bool -> (H, H)``. ``past_weight``:
    optional (M,) n_j, each row's votes (a decided label or a tie 1, aggregated votes their
    count); a rater's reliability q enters as x_j scaled by q (:mod:`arm_jax.model.likelihood`).
    ``tie``: Davidson's ν (:func:`gap_variance`).
    """
    v = bernoulli_variance(past_phi_diff, beta, tie)
    if past_weight is not None:
        v = v * past_weight
    if past_mask is not None:
        v = jnp.where(past_mask, v, 0.0)
    return information_matrix(past_phi_diff, v)


def dopt_scores_from_weights(
    phi_diff: jax.Array,
    v: jax.Array,
    past_info: jax.Array | None = None,
    ridge: float = DEFAULT_RIDGE,
) -> jax.Array:
    """Closed-form D-opt scores for given per-pair weights ``v: (N,)`` (v ≡ 1 gives xtx)."""
    m = information_matrix(phi_diff, v)
    if past_info is not None:
        m = m + past_info
    return leverage_scores(phi_diff, v, m, ridge)


def check_shapes(phi_diff, beta, past_phi_diff=None, past_mask=None, name="phi_diff", layout="(N, H)") -> None:
    """InputError, naming the shapes, unless phi_diff (N, H), beta (H,), past (M, H), mask (M,).

    ``name``/``layout`` say what the first array is called in the message (e.g. item
    features ``phi`` (K, H) for all-pairs selection).
    """
    shape = np.shape(phi_diff)
    if len(shape) != 2:
        raise InputError(f"{name} must be {layout}, got shape {shape}")
    h = shape[1]
    if np.shape(beta) != (h,):
        raise InputError(f"beta must have shape ({h},) to match {name} {shape}, got {np.shape(beta)}")
    if past_phi_diff is not None:
        pshape = np.shape(past_phi_diff)
        if len(pshape) != 2 or pshape[1] != h:
            raise InputError(f"past_phi_diff must be (M, {h}) to match {name} {shape}, got {pshape}")
        if past_mask is not None and np.shape(past_mask) != (pshape[0],):
            raise InputError(f"past_mask must have shape ({pshape[0]},), got {np.shape(past_mask)}")


def check_finite(**arrays) -> None:
    """InputError "NAME contains N NaN/inf values" for the first array (None skipped) that has any."""
    for label, arr in arrays.items():
        if arr is not None:
            bad = int(np.size(arr) - np.count_nonzero(np.isfinite(np.asarray(arr))))
            if bad:
                raise InputError(f"{label} contains {bad} NaN/inf values")


def check_spread(spread, h: int) -> None:
    """InputError unless ``spread`` (the caller's S of the I-optimal rules) is None or a finite
    (h, h) matrix."""
    if spread is None:
        return
    if np.shape(spread) != (h, h):
        raise InputError(f"spread must have shape ({h}, {h}) to match the features, got {np.shape(spread)}")
    check_finite(spread=spread)


def check_k(k) -> None:
    """InputError unless k is a positive integer (the upper bound is the caller's)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise InputError(f"k must be an integer, got {k!r}")
    if k <= 0:
        raise InputError(f"k must be positive, got {k}")


def dopt_scores(
    phi_diff: jax.Array,
    beta: jax.Array,
    past_phi_diff: jax.Array | None = None,
    ridge: float = DEFAULT_RIDGE,
    past_mask: jax.Array | None = None,
) -> jax.Array:
    """D-optimal scores ∂/∂w_i log det(I_past + Σ_j w_j v_j x_j x_jᵀ + ρI) at w = 1.

    phi_diff: (N, H) feature differences x_i of the candidate pairs.
    beta: (H,) current head; v_i = p_i(1 − p_i) with p_i = σ(x_iᵀβ).
    past_phi_diff: optional (M, H) feature differences of labelled pairs; adds I_past
      (with its own v from the same β) — the past-aware variant ``pa_dopt``.
    ridge: relative ridge ε (ρ = ε·tr(M)/H + floor, grown on failure; see :func:`whitening`).
    past_mask: optional (M,) bool, which past rows are real (fixed-capacity buffers).
    Returns (N,) float scores; larger is more informative.
    """
    check_shapes(phi_diff, beta, past_phi_diff, past_mask)
    v = bernoulli_variance(phi_diff, beta)
    past = None
    if past_phi_diff is not None:
        past = past_information(past_phi_diff, beta, past_mask)
    return dopt_scores_from_weights(phi_diff, v, past, ridge)
