"""The damping shared by the model's two Newton fits, and the linear head's Newton solve.

Both exact fits, the linear head (:mod:`arm_jax.model.fit_linear`) and the likelihood's
nuisance (:func:`arm_jax.model.raters.fit_nuisance`), take a Newton direction and then the best
of a few fractions of it or no step at all: the objective never rises, and a direction that is
not finite leaves the point where it was. Only the direction differs between them (preconditioned
conjugate gradients on Hessian-vector products for the head, :func:`conjugate_gradient`;
eigenvalues made positive for the nuisance, whose objective is not convex), so only this damping
is shared. :func:`run_if` is the head's conditional refresh of its preconditioner.
"""
from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp

#: The fractions of the Newton direction tried by :func:`damped_step` (besides no step).
STEP_SIZES = (1.0, 0.5, 0.25, 0.1)


def damped_step(
    objective: Callable[[jax.Array], jax.Array], x: jax.Array, delta: jax.Array, max_step: float | None = None,
    along: Callable[[jax.Array, jax.Array], jax.Array] | None = None,
) -> jax.Array:
    """``x + t · delta`` for the t in {0} ∪ :data:`STEP_SIZES` of the lowest ``objective``; among
    tries within float32 rounding of the lowest (4 ulp of it), the longest. Comparing values alone
    stalls a fit about 1e-4 (relative) short of its optimum, where a full Newton step's decrease
    is below the objective's rounding.

    x, delta: (K,) the point and the Newton direction; objective: (K,) -> () (vmapped over the
    tries; a value that is not finite counts as +inf). A ``delta`` with any entry not finite is
    no step; ``max_step`` clips each entry of a finite one to [−max_step, max_step] first.
    ``along``: (delta (K,), t (T,)) -> (T,) the objective at x + t · delta for every try t, the
    same values computed more cheaply (used instead of ``objective``). Returns (K,). Traceable
    (jit, vmap, inside lax.scan).
    """
    ok = jnp.all(jnp.isfinite(delta))
    delta = jnp.where(ok, delta if max_step is None else jnp.clip(delta, -max_step, max_step), 0.0)
    tries = jnp.concatenate([jnp.zeros(1), jnp.asarray(STEP_SIZES)])
    if along is None:
        values = jax.vmap(lambda t: objective(x + t * delta))(tries)
    else:
        values = along(delta, tries.astype(delta.dtype))
    values = jnp.where(jnp.isfinite(values), values, jnp.inf)
    # near the optimum the decrease is below float32 rounding of the objective: among the tries
    # within that rounding of the best, take the longest step (the Newton direction is exact there)
    best = jnp.min(values)
    noise = 4 * jnp.finfo(values.dtype).eps * jnp.where(jnp.isfinite(best), jnp.abs(best), 0.0)
    near_best = jnp.isfinite(values) & (values <= best + noise)
    longest = jnp.max(jnp.where(near_best, tries, 0.0))
    return x + longest * delta


def conjugate_gradient(
    matvec: Callable[[jax.Array], jax.Array], precondition: Callable[[jax.Array], jax.Array],
    b: jax.Array, rtol: float, max_iter: int,
) -> tuple[jax.Array, jax.Array]:
    """Preconditioned conjugate gradients for A u = b, A symmetric positive definite given by
    ``matvec``, P⁻¹ by ``precondition`` (both (K,) -> (K,)); from u = 0 until the residual's
    P⁻¹-norm √(rᵀP⁻¹r) is at most ``rtol`` times b's, or ``max_iter`` iterations (a
    ``lax.while_loop``). A curvature pᵀAp that is not positive, or any value that is not
    finite, stops it at the last iterate (u = 0 for a b that is not finite).

    Returns (u (K,), iterations () int32). Traceable (jit, vmap, inside lax.scan).
    """
    z = precondition(b)
    rz = jnp.vdot(b, z)
    stop = rtol * rtol * rz

    def running(state):
        _, _, _, rz, k, ok = state
        return ok & (k < max_iter) & (rz > stop)

    def one(state):
        u, r, p, rz, k, _ = state
        ap = matvec(p)
        curvature = jnp.vdot(p, ap)
        alpha = rz / curvature
        u_next, r_next = u + alpha * p, r - alpha * ap
        z_next = precondition(r_next)
        rz_next = jnp.vdot(r_next, z_next)
        ok = (curvature > 0) & jnp.isfinite(rz_next) & jnp.all(jnp.isfinite(u_next))
        p_next = z_next + (rz_next / rz) * p
        keep = functools.partial(jnp.where, ok)
        return keep(u_next, u), keep(r_next, r), keep(p_next, p), keep(rz_next, rz), k + 1, ok

    u0 = jnp.zeros_like(b)
    ok0 = jnp.isfinite(rz)
    u, _, _, _, k, _ = jax.lax.while_loop(running, one, (u0, b, z, rz, jnp.int32(0), ok0))
    return u, k



def run_if(pred: jax.Array, f: Callable, x, *args):
    """``f(x, *args)`` where ``pred`` () bool holds, else ``x``: a ``lax.while_loop`` that runs at
    most once. Under ``vmap`` ``f`` runs once for the whole batch when any member's ``pred``
    holds (and not at all when none does), where ``lax.cond`` would run it for every call.
    ``x`` and ``args`` travel through the loop behind an optimisation barrier: otherwise XLA may
    hoist ``f``'s work on them out of the loop, and run it every time (it did under ``vmap``)."""

    def body(state):
        _, x, args = state
        x, args = jax.lax.optimization_barrier((x, args))
        return jnp.zeros_like(state[0]), f(x, *args), args

    return jax.lax.while_loop(lambda s: s[0], body, (pred, x, args))[1]
