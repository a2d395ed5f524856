"""The damping shared by the model's two Newton fits.

Both exact fits, the linear head (:mod:`arm_jax.model.fit_linear`) and the likelihood's
nuisance (:func:`arm_jax.model.raters.fit_nuisance`), take a Newton direction and then the best
of a few fractions of it or no step at all: the objective never rises, and a direction that is
not finite leaves the point where it was. Only the direction differs between them (a Cholesky
solve of a positive definite Hessian for the head; eigenvalues made positive for the nuisance,
whose objective is not convex), so only this damping is shared.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

#: The fractions of the Newton direction tried by :func:`damped_step` (besides no step).
STEP_SIZES = (1.0, 0.5, 0.25, 0.1)


def damped_step(
    objective: Callable[[jax.Array], jax.Array], x: jax.Array, delta: jax.Array, max_step: float | None = None
) -> jax.Array:
    """``x + t · delta`` for the t in {0} ∪ :data:`STEP_SIZES` of the lowest ``objective``; among
    tries within float32 rounding of the lowest (4 ulp of it), the longest. Comparing values alone
    stalls a fit about 1e-4 (relative) short of its optimum, where a full Newton step's decrease
    is below the objective's rounding.

    x, delta: (K,) the point and the Newton direction; objective: (K,) -> () (vmapped over the
    tries; a value that is not finite counts as +inf). A ``delta`` with any entry not finite is
    no step; ``max_step`` clips each entry of a finite one to [−max_step, max_step] first.
    Returns (K,). Traceable (jit, vmap, inside lax.scan).
    """
    ok = jnp.all(jnp.isfinite(delta))
    delta = jnp.where(ok, delta if max_step is None else jnp.clip(delta, -max_step, max_step), 0.0)
    tries = jnp.concatenate([jnp.zeros(1), jnp.asarray(STEP_SIZES)])
    values = jax.vmap(lambda t: objective(x + t * delta))(tries)
    values = jnp.where(jnp.isfinite(values), values, jnp.inf)
    # near the optimum the decrease is below float32 rounding of the objective: among the tries
    # within that rounding of the best, take the longest step (the Newton direction is exact there)
    best = jnp.min(values)
    noise = 4 * jnp.finfo(values.dtype).eps * jnp.where(jnp.isfinite(best), jnp.abs(best), 0.0)
    near_best = jnp.isfinite(values) & (values <= best + noise)
    longest = jnp.max(jnp.where(near_best, tries, 0.0))
    return x + longest * delta
