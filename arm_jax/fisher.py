"""Fisher information of the last linear layer and the D-optimal scores built on it.

For a candidate pair i with feature difference x_i = Φ_i1 − Φ_i2 and head β:

    p_i = σ(x_iᵀ β),   v_i = p_i (1 − p_i),   I(C) = Σ_{i∈C} v_i x_i x_iᵀ

The D-optimal score of pair i is the gradient of the weighted log-det at w = 1:

    ∂/∂w_i log det(I_past + Σ_j w_j v_j x_j x_jᵀ + εI) = v_i x_iᵀ M⁻¹ x_i

(a weighted leverage score). Both forms are here: :func:`dopt_scores_autodiff` (``jax.grad``
of the log-det written as a matrix product) and :func:`leverage_scores` (one Cholesky, one
triangular solve). Neither ever builds an N × H × H array: memory is O(N·H).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import solve_triangular

DEFAULT_JITTER = 1e-6

#: Precision of the float32 matrix products in the design math (M, leverage scores, gaps).
#: JAX's default lets recent NVIDIA GPUs compute them in TF32 (a 10-bit mantissa), which moves
#: M and the scores by about 1e-3 relative: enough to reorder near-tied pairs and to make the
#: GPU pick other pairs than the CPU. These products are a small share of the work (the
#: selection is memory-bound), so they always run at full float32. The reward model's own
#: products keep JAX's default (set ``JAX_DEFAULT_MATMUL_PRECISION=highest`` to change that).
MATMUL_PRECISION = "highest"


def full_precision(fn):
    """Trace ``fn`` with its matrix products at :data:`MATMUL_PRECISION`, whatever the caller's
    ``jax.default_matmul_precision``. No effect on the CPU, where float32 products are exact."""

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with jax.default_matmul_precision(MATMUL_PRECISION):
            return fn(*args, **kwargs)

    return wrapped


@full_precision
def bernoulli_variance(phi_diff: jax.Array, beta: jax.Array) -> jax.Array:
    """v = p(1 − p) with p = σ(x·β). ``phi_diff: (N, H), beta: (H,) -> (N,)``.

    Written as σ(z)σ(−z), which never loses precision to 1 − p.
    """
    z = phi_diff @ beta
    return jax.nn.sigmoid(z) * jax.nn.sigmoid(-z)


@full_precision
def information_matrix(phi_diff: jax.Array, weights: jax.Array) -> jax.Array:
    """Σ_i w_i x_i x_iᵀ as one matrix product. ``(N, H), (N,) -> (H, H)``."""
    return (phi_diff * weights[:, None]).T @ phi_diff


def regularised_information(
    phi_diff: jax.Array,
    weights: jax.Array,
    past_information: jax.Array | None = None,
    jitter: float = DEFAULT_JITTER,
) -> jax.Array:
    """M = I_past + Σ_i w_i x_i x_iᵀ + εI. ``-> (H, H)``."""
    h = phi_diff.shape[-1]
    m = information_matrix(phi_diff, weights) + jitter * jnp.eye(h, dtype=phi_diff.dtype)
    if past_information is not None:
        m = m + past_information
    return m


def logdet_spd(m: jax.Array) -> jax.Array:
    """log det of a symmetric positive-definite matrix via Cholesky."""
    chol = jnp.linalg.cholesky(m)
    return 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol)))


def weighted_logdet(
    w: jax.Array,
    phi_diff: jax.Array,
    v: jax.Array,
    past_information: jax.Array | None = None,
    jitter: float = DEFAULT_JITTER,
) -> jax.Array:
    """S(w) = log det(I_past + Σ_i w_i v_i x_i x_iᵀ + εI). ``w, v: (N,), phi_diff: (N, H)``."""
    return logdet_spd(regularised_information(phi_diff, w * v, past_information, jitter))


def dopt_scores_autodiff(
    phi_diff: jax.Array,
    v: jax.Array,
    past_information: jax.Array | None = None,
    jitter: float = DEFAULT_JITTER,
) -> jax.Array:
    """∇_w S(w) at w = 1 by ``jax.grad`` (reference implementation). ``-> (N,)``."""
    ones = jnp.ones(phi_diff.shape[0], phi_diff.dtype)
    return jax.grad(weighted_logdet)(ones, phi_diff, v, past_information, jitter)


def whitening_matrix(m: jax.Array) -> jax.Array:
    """L⁻¹ for the Cholesky factor M = L Lᵀ: one Cholesky and one (H × H) triangular solve.

    ``m: (H, H) SPD -> (H, H)`` lower triangular, with xᵀM⁻¹x = ‖L⁻¹x‖².
    """
    chol = jnp.linalg.cholesky(m)
    return solve_triangular(chol, jnp.eye(m.shape[-1], dtype=m.dtype), lower=True)


@full_precision
def leverage_scores(phi_diff: jax.Array, v: jax.Array, m: jax.Array) -> jax.Array:
    """v_i x_iᵀ M⁻¹ x_i for all i, with one Cholesky and one triangular solve. ``-> (N,)``.

    With M = L Lᵀ, x_iᵀ M⁻¹ x_i = ‖L⁻¹ x_i‖². The triangular solve is against the (H × H)
    identity, not against Xᵀ: a solve with N right-hand sides measured ≈ 4× slower than a
    matrix product on the CPU (N = 20 000, H = 64), whereas Z = X L⁻ᵀ is one (N × H)·(H × H)
    matrix product, and the squared row norms fuse into it. Memory stays O(N·H).
    """
    z = phi_diff @ whitening_matrix(m).T
    return v * jnp.sum(z * z, axis=-1)


def past_information(
    past_phi_diff: jax.Array, beta: jax.Array, past_mask: jax.Array | None = None
) -> jax.Array:
    """I_past = Σ_j v_j x_j x_jᵀ over the labelled pairs (rows with ``past_mask`` False ignored).

    ``past_phi_diff: (M, H), beta: (H,), past_mask: (M,) bool -> (H, H)``.
    """
    v = bernoulli_variance(past_phi_diff, beta)
    if past_mask is not None:
        v = jnp.where(past_mask, v, 0.0)
    return information_matrix(past_phi_diff, v)


def dopt_scores_from_weights(
    phi_diff: jax.Array,
    v: jax.Array,
    past_info: jax.Array | None = None,
    jitter: float = DEFAULT_JITTER,
) -> jax.Array:
    """Closed-form D-opt scores for given per-pair weights ``v: (N,)`` (v ≡ 1 gives xtx)."""
    m = regularised_information(phi_diff, v, past_info, jitter)
    return leverage_scores(phi_diff, v, m)


def check_shapes(phi_diff, beta, past_phi_diff=None, past_mask=None, name="phi_diff", layout="(N, H)") -> None:
    """ValueError, naming the shapes, unless phi_diff (N, H), beta (H,), past (M, H), mask (M,).

    ``name``/``layout`` say what the first array is called in the message (e.g. item
    features ``phi`` (K, H) for all-pairs selection).
    """
    shape = np.shape(phi_diff)
    if len(shape) != 2:
        raise ValueError(f"{name} must be {layout}, got shape {shape}")
    h = shape[1]
    if np.shape(beta) != (h,):
        raise ValueError(f"beta must have shape ({h},) to match {name} {shape}, got {np.shape(beta)}")
    if past_phi_diff is not None:
        pshape = np.shape(past_phi_diff)
        if len(pshape) != 2 or pshape[1] != h:
            raise ValueError(f"past_phi_diff must be (M, {h}) to match {name} {shape}, got {pshape}")
        if past_mask is not None and np.shape(past_mask) != (pshape[0],):
            raise ValueError(f"past_mask must have shape ({pshape[0]},), got {np.shape(past_mask)}")


def check_finite(**arrays) -> None:
    """ValueError "NAME contains N NaN/inf values" for the first array (None skipped) that has any."""
    for label, arr in arrays.items():
        if arr is not None:
            bad = int(np.size(arr) - np.count_nonzero(np.isfinite(np.asarray(arr))))
            if bad:
                raise ValueError(f"{label} contains {bad} NaN/inf values")


def check_k(k) -> None:
    """ValueError unless k is a positive integer (the upper bound is the caller's)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise ValueError(f"k must be an integer, got {k!r}")
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")


def dopt_scores(
    phi_diff: jax.Array,
    beta: jax.Array,
    past_phi_diff: jax.Array | None = None,
    jitter: float = DEFAULT_JITTER,
    past_mask: jax.Array | None = None,
) -> jax.Array:
    """D-optimal scores ∂/∂w_i log det(I_past + Σ_j w_j v_j x_j x_jᵀ + εI) at w = 1.

    phi_diff: (N, H) feature differences x_i of the candidate pairs.
    beta: (H,) current head; v_i = p_i(1 − p_i) with p_i = σ(x_iᵀβ).
    past_phi_diff: optional (M, H) feature differences of labelled pairs; adds I_past
      (with its own v from the same β) — the past-aware variant ``pa_dopt``.
    jitter: ε.
    past_mask: optional (M,) bool, which past rows are real (fixed-capacity buffers).
    Returns (N,) float scores; larger is more informative.
    """
    check_shapes(phi_diff, beta, past_phi_diff, past_mask)
    v = bernoulli_variance(phi_diff, beta)
    past = None
    if past_phi_diff is not None:
        past = past_information(past_phi_diff, beta, past_mask)
    return dopt_scores_from_weights(phi_diff, v, past, jitter)
