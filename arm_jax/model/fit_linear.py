"""The linear reward model r = ψᵀβ (depth 0) fitted exactly: the MAP of Bradley–Terry
logistic regression with a Gaussian prior N(0, λ⁻¹I) on β, by damped Newton steps, each fit
run to convergence.

λ = c · s, with s = mean |x|² / (4 D) over the fitted pairs' differences x (one label's
Fisher information per direction at a zero gap), so c counts labels' worth of prior and
does not depend on the embeddings' scale. c is ``train_config.linear_prior`` when given.
Otherwise, by default (``linear_prior_rule="cross-validation"``), the labels are split into
:data:`LINEAR_CV_FOLDS` seeded folds; for each fold the head is fitted on the others along
the grid (strongest prior first, each warm-started from the last) and the fold's BT loss
recorded; the strongest prior whose mean held-out loss over all labels is within one
standard error of the lowest wins, and the head is refitted on all labels with it (fewer
than 2 · folds labels: :data:`LINEAR_DEFAULT_PRIOR`). With ``"evidence"``, the λ of the
largest Laplace log evidence −NLL(β̂) − λ|β̂|²/2 + (D/2) log λ − ½ log det(XᵀWX + λI) of all
labels wins (MacKay's evidence framework, on a grid). With ``"held-out"`` it is chosen on
held-out labels (the same seeded split as early stopping): the head is
fitted on the rest for every λ of :data:`LINEAR_PRIOR_GRID` (from the strongest prior
down, each warm-started from the last); the strongest prior whose held-out BT loss is within
one standard error of the smallest wins (the "one-standard-error rule" of cross-validated
penalties, as in glmnet's ``lambda.1se``: a few held-out labels cannot tell close priors
apart, and the stronger one ranked better in benchmarks/RESULTS.md), and the head is
refitted on all labels with it. With too few
labels to hold out, λ is :data:`LINEAR_DEFAULT_PRIOR`.

Each Newton direction solves (XᵀWX + λI) δ = −g by preconditioned conjugate gradients on
Hessian-vector products XᵀW(Xδ) + λδ (two products with X, C · D each, where forming XᵀWX
costs C · D²); the preconditioner is the inverse regularised Hessian at an earlier head, kept
while it works (along the grid it comes from the last grid point) and refreshed at the current
head after a direction that took more than :data:`CG_REFRESH` iterations. Each step keeps the
best of a few step sizes and no step (:func:`arm_jax.model.newton.damped_step`), so the
objective never rises, and a fit stops once the Newton direction is at most
:data:`NEWTON_TOL` of |β| (not after a fixed number of steps: near the optimum Newton
converges quadratically, so β is then within about 1e-6 of the MAP, relative). At 1 000
labels and D = 384 this takes ~5× less time than four Cholesky-solved Newton steps per grid
point (benchmarks/bench_linear_fit.py).

With votes (``LabelBuffer.counts``) the rows' loss is the votes' likelihood
(:mod:`arm_jax.model.likelihood`) and its nuisance (ν, the raters' reliabilities) is first
estimated at the default prior, held fixed while the prior is chosen, then alternated with
the final fit (:func:`arm_jax.model.raters.fit_nuisance`).

The pieces, in the order :func:`_fit_linear` calls them: :func:`_linear_problem` (the rows'
differences x, the split, the prior grid), :func:`_first_nuisance` (votes only),
:func:`_choose_prior` (:func:`_cross_validate`, :func:`_log_evidence` or
:func:`_held_out_path` with :func:`_one_standard_error`), :func:`_final_fit`; every fit is
:func:`_newton` (``lax.while_loop`` of :func:`_newton_step`, refreshing its
:func:`_preconditioner`).
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from arm_jax.model import likelihood as likelihood_lib
from arm_jax.model import network as model_lib
from arm_jax.model.buffer import split_rows
from arm_jax.model.config import FitStats
from arm_jax.model.likelihood import bt_loss
from arm_jax.model.newton import conjugate_gradient, damped_step, run_if
from arm_jax.model.raters import (
    Votes,
    fit_nuisance,
    initial_nuisance,
    log_tie,
    nuisance_stats,
    row_scale,
    typical_rater,
    vote_hits,
    vote_losses,
    votes_of,
)

#: The prior precisions the linear model's exact fit chooses from, in units of one label's
#: information per direction (λ = c · s, s = mean |x|² / (4 D) over the fitted pairs'
#: differences x): from a tenth of a label to a million labels, half a decade apart.
LINEAR_PRIOR_GRID = tuple(float(10.0 ** (e / 2)) for e in range(-2, 13))
#: The grid point used when too few labels are held out to choose (measured:
#: benchmarks/bench_training.py --depth 0, RESULTS.md).
LINEAR_DEFAULT_PRIOR = 10.0
#: Folds of the "cross-validation" rule.
LINEAR_CV_FOLDS = 5
#: Newton steps at most per grid point (warm-started along the grid from the strongest prior)
#: and for a fit from zero (the final fit on all labels): caps, a fit stops once a Newton
#: direction is at most :data:`NEWTON_TOL` of |β| (2-norms), after 2 to 6 steps along the grid.
NEWTON_STEPS = (20, 50)
NEWTON_TOL = 3e-4
#: Conjugate-gradient iterations at most per Newton direction, and their tolerance: the
#: residual's norm in the preconditioner's inverse, relative to the gradient's.
CG_STEPS = 50
CG_TOL = 1e-3
#: A Newton direction that took more conjugate-gradient iterations than this refreshes the
#: preconditioner (the Hessian's at the current head) for the next step: a refresh (XᵀWX and
#: its Cholesky factor) costs about as much as 100 iterations at C = 1 000, D = 384, and 20
#: was the fastest of 8, 12, 20 and 30 there.
CG_REFRESH = 20


class _Problem(NamedTuple):
    """The arrays every Newton fit of one linear fit reads (never a loop carry).

    x: (C, D) float32 winner − loser embeddings of each buffer row (0 for unfilled rows).
    votes: the rows' :class:`Votes`, None for a plain buffer (Bradley–Terry).
    filled: (C,) bool, the labelled rows. fit_rows, val_rows: (C,) bool, the held-out rule's
    fitted and held-out rows (fit_rows = filled, val_rows none for the other rules).
    scale: () float32 s = mean |x|² / (4 D) over the fitted rows (1 if 0). grid: (G,) float32
    the candidate λ = s · :data:`LINEAR_PRIOR_GRID`, strongest prior first.
    """

    x: jax.Array
    votes: Votes | None
    filled: jax.Array
    fit_rows: jax.Array
    val_rows: jax.Array
    scale: jax.Array
    grid: jax.Array


def _prior_rule(train_config):
    """(fixed, evidence, cv): static bools, how the prior is chosen (at most one is True;
    none: the held-out rule)."""
    fixed = train_config.linear_prior is not None
    evidence = train_config.linear_prior_rule == "evidence" and not fixed
    cv = train_config.linear_prior_rule == "cross-validation" and not fixed
    return fixed, evidence, cv


def _linear_problem(items, buffer, train_config, order, n_fit) -> _Problem:
    """The :class:`_Problem` of items (N, D) and a buffer of C rows; order (C,) int32 and
    n_fit () from ``split_rows``: the rows ``order[:n_fit]`` are fitted."""
    c = buffer.capacity
    d = items.shape[-1]
    position = jnp.zeros(c, jnp.int32).at[order].set(jnp.arange(c, dtype=jnp.int32))
    filled = buffer.mask
    fit_rows = filled & (position < n_fit)
    val_rows = filled & (position >= n_fit)
    x = (items[buffer.pairs[:, 0]] - items[buffer.pairs[:, 1]]).astype(jnp.float32)  # (C, D), winner − loser
    x = jnp.where(filled[:, None], x, 0.0)
    sq = jnp.sum(x * x, axis=-1)
    scale = jnp.sum(jnp.where(fit_rows, sq, 0.0)) / jnp.maximum(jnp.sum(fit_rows), 1) / (4.0 * d)
    scale = jnp.where(scale > 0, scale, 1.0)
    grid = scale * jnp.asarray(LINEAR_PRIOR_GRID[::-1], jnp.float32)  # strongest prior first
    votes = votes_of(buffer, train_config)
    return _Problem(x, votes, filled, fit_rows, val_rows, scale, grid)


def _row_loss(problem: _Problem, z, nuisance):
    """(C,) each row's negative log-likelihood at gaps z (C,)."""
    return bt_loss(z, 0.0) if problem.votes is None else vote_losses(z, problem.votes, nuisance)


def _row_derivatives(problem: _Problem, z, nuisance):
    """(C,) first and (C,) second derivatives of each row's loss in its gap z (C,)."""
    votes = problem.votes
    if votes is None:
        # −σ(−z), not σ(z) − 1: that loses the gradient's relative precision where σ(z) → 1,
        # and with it β's last digits on well-separated labels
        q = jax.nn.sigmoid(-z)
        return -q, q * (1.0 - q)
    q = row_scale(votes, nuisance)
    first = jax.grad(lambda z: jnp.sum(vote_losses(z, votes, nuisance)))(z)
    nu = jnp.exp(log_tie(votes, nuisance))
    return first, jnp.sum(votes.counts, axis=-1) * q * q * likelihood_lib.gap_variance(q * z, nu)


def _curvature(problem: _Problem, rows, nuisance, beta):
    """(D, D) XᵀWX: the Hessian of the ``rows``' (C,) bool loss at head beta (D,), without the prior."""
    second = _row_derivatives(problem, problem.x @ beta, nuisance)[1]
    return (problem.x * jnp.where(rows, second, 0.0)[:, None]).T @ problem.x


def _preconditioner(problem: _Problem, rows, nuisance, beta, lam):
    """(D, D) (XᵀWX + λI)⁻¹, the inverse of the regularised Hessian of the ``rows`` (C,) bool at
    head beta (D,) and prior precision lam (), by its Cholesky factor L as L⁻ᵀL⁻¹ (applied as a
    product: two triangular solves per conjugate-gradient iteration cost ten times more on the
    CPU). Where the factorisation fails (not finite), the inverse of the diagonal."""
    h = _curvature(problem, rows, nuisance, beta) + lam * jnp.eye(problem.x.shape[-1], dtype=problem.x.dtype)
    lower_inv = jax.scipy.linalg.solve_triangular(jnp.linalg.cholesky(h), jnp.eye(h.shape[-1], dtype=h.dtype), lower=True)
    inverse = lower_inv.T @ lower_inv
    return jnp.where(jnp.all(jnp.isfinite(inverse)), inverse, jnp.diag(1.0 / jnp.diagonal(h)))


def _along(problem: _Problem, rows, lam, nuisance, beta, z):
    """The objective, the ``rows``' (C,) bool penalised NLL Σ ℓ(xᵀβ) + λ|β|²/2, along a ray
    from beta (D,) (z = Xβ (C,)): (delta (D,), t (T,)) -> (T,) its values at β + t·delta, for
    :func:`damped_step` (one product X·delta for all the tries)."""

    def values(delta, tries):
        gaps = z[None, :] + tries[:, None] * (problem.x @ delta)[None, :]  # (T, C)
        nll = jnp.sum(jnp.where(rows, jax.vmap(lambda g: _row_loss(problem, g, nuisance))(gaps), 0.0), axis=-1)
        b = beta[None, :] + tries[:, None] * delta[None, :]
        return nll + 0.5 * lam * jnp.sum(b * b, axis=-1)

    return values


class _NewtonState(NamedTuple):
    """The ``lax.while_loop`` carry of :func:`_newton`: beta (D,), steps () int32 taken, done ()
    bool (the fit has converged), inverse (D, D) the :func:`_preconditioner`, fresh () bool (it
    is the Hessian's at beta), cg () int32 the conjugate-gradient iterations of the last step
    (:data:`CG_STEPS` after a step that could not lower the objective: refresh)."""

    beta: jax.Array
    steps: jax.Array
    done: jax.Array
    inverse: jax.Array
    fresh: jax.Array
    cg: jax.Array


def _newton_step(problem: _Problem, rows, lam, nuisance, state: _NewtonState) -> _NewtonState:
    """One damped Newton step of the objective (:func:`_along`): the direction by conjugate
    gradients on Hessian-vector products XᵀW(Xv) + λv, preconditioned by the state's inverse
    (first refreshed to the Hessian's at β where the last direction took more than
    :data:`CG_REFRESH` iterations; the objective is convex: W ≥ 0), the damping by
    :func:`damped_step`. Done when the direction is at most :data:`NEWTON_TOL` of |β| (Newton
    converges quadratically: β is then within about NEWTON_TOL² + CG_TOL · NEWTON_TOL of the
    optimum, relative), or when no step lowers the objective even with a fresh preconditioner
    (float32 rounding)."""
    x, beta = problem.x, state.beta
    refresh = state.cg > CG_REFRESH
    inverse = run_if(refresh, lambda _, b: _preconditioner(problem, rows, nuisance, b, lam), state.inverse, beta)
    fresh = state.fresh | refresh
    z = x @ beta
    first, second = _row_derivatives(problem, z, nuisance)
    w = jnp.where(rows, second, 0.0)
    # u @ x, not x.T @ u: XLA on the CPU copies the transpose of x for every product
    g = jnp.where(rows, first, 0.0) @ x + lam * beta
    delta, cg = conjugate_gradient(lambda v: (w * (x @ v)) @ x + lam * v, lambda r: r @ inverse, -g, CG_TOL, CG_STEPS)
    new = damped_step(None, beta, delta, along=_along(problem, rows, lam, nuisance, beta, z))
    stuck = jnp.all(new == beta)
    done = ~(jnp.linalg.norm(delta) > NEWTON_TOL * jnp.linalg.norm(new)) | (stuck & fresh)
    return _NewtonState(new, state.steps + 1, done, inverse, jnp.zeros((), bool), jnp.where(stuck, CG_STEPS, cg))


def _newton(problem: _Problem, beta, rows, lam, max_steps, nuisance=None, inverse=None):
    """Damped Newton steps (:func:`_newton_step`) from beta (D,) on the ``rows`` (C,) bool at
    prior precision lam () until done, at most ``max_steps`` (static; a ``lax.while_loop``).
    ``inverse``: the preconditioner to start from (the last grid point's, along the grid), else
    the :func:`_preconditioner` at beta. Returns (beta (D,), steps () int32, the last
    preconditioner (D, D))."""
    fresh = jnp.asarray(inverse is None)
    if inverse is None:
        inverse = _preconditioner(problem, rows, nuisance, beta, lam)
    state = jax.lax.while_loop(
        lambda s: ~s.done & (s.steps < max_steps),
        functools.partial(_newton_step, problem, rows, lam, nuisance),
        _NewtonState(beta, jnp.int32(0), jnp.zeros((), bool), inverse, fresh, jnp.int32(0)),
    )
    return state.beta, state.steps, state.inverse


def _first_nuisance(problem: _Problem, train_config, nuisance):
    """With votes: the nuisance estimated at the default (or the given) prior, two rounds of a
    head fit on all labels and :func:`fit_nuisance`. Returns (nuisance dict, Newton steps ())."""
    d = problem.x.shape[-1]
    lam0 = problem.scale * jnp.float32(train_config.linear_prior or LINEAR_DEFAULT_PRIOR)
    beta0, steps = jnp.zeros(d, jnp.float32), jnp.int32(0)
    for _ in range(2):
        beta0, n, _ = _newton(problem, beta0, problem.filled, lam0, NEWTON_STEPS[1], nuisance)
        nuisance, steps = fit_nuisance(problem.x @ beta0, problem.votes, nuisance), steps + n
    return nuisance, steps


def _log_evidence(problem: _Problem, nuisance, carry, lam):
    """Laplace log evidence of all the labels at λ: −NLL − λ|β̂|²/2 + D/2 log λ − ½ log det(H).
    The ``lax.scan`` body along the grid: carry (beta (D,), inverse (D, D)) the last grid
    point's fit and preconditioner, lam (); returns ((β̂, inverse), (log evidence (), Newton
    steps ()))."""
    x = problem.x
    d = x.shape[-1]
    beta, steps, inverse = _newton(problem, carry[0], problem.filled, lam, NEWTON_STEPS[0], nuisance, carry[1])
    z = x @ beta
    h = _curvature(problem, problem.filled, nuisance, beta) + lam * jnp.eye(d, dtype=x.dtype)
    logdet = 2.0 * jnp.sum(jnp.log(jnp.diagonal(jnp.linalg.cholesky(h))))
    nll = jnp.sum(jnp.where(problem.filled, _row_loss(problem, z, nuisance), 0.0))
    return (beta, inverse), (-nll - 0.5 * lam * jnp.sum(beta * beta) + 0.5 * d * jnp.log(lam) - 0.5 * logdet, steps)


def _path_point(problem: _Problem, rows, held, nuisance, carry, lam):
    """Fit on ``rows`` (C,) bool at lam () from carry (beta (D,), inverse (D, D)), the last grid
    point's fit and preconditioner; the ``held`` (C,) bool labels' sum of BT loss, of loss² and
    of pairwise hits, and the Newton steps (each ()). The ``lax.scan`` body along the grid."""
    beta, steps, inverse = _newton(problem, carry[0], rows, lam, NEWTON_STEPS[0], nuisance, carry[1])
    gap = problem.x @ beta
    loss = jnp.where(held, _row_loss(problem, gap, nuisance), 0.0)
    if problem.votes is None:
        acc = jnp.sum(jnp.where(held, (gap > 0) + 0.5 * (gap == 0), 0.0))
    else:  # over the rows with a majority, scaled to all held-out rows
        hits, decided = vote_hits(gap, problem.votes, held)
        acc = jnp.where(decided > 0, hits / jnp.maximum(decided, 1) * jnp.sum(held), jnp.nan)
    return (beta, inverse), (jnp.sum(loss), jnp.sum(loss * loss), acc, steps)


def _held_out_path(problem: _Problem, nuisance, rows, held):
    """Fit on ``rows`` (C,) bool along the grid (warm-started, strongest prior first); the
    ``held`` (C,) bool labels' BT losses: (G,) sums of loss, of loss² and of pairwise hits, and
    (G,) Newton steps."""
    step = functools.partial(_path_point, problem, rows, held, nuisance)
    return jax.lax.scan(step, _path_start(problem), problem.grid)[1]


def _path_start(problem: _Problem):
    """The carry that starts a path along the grid: β = 0 and the preconditioner I/λ of the
    strongest prior, whose Hessian is nearly λI (computing the Hessian's costs more than the
    few conjugate-gradient iterations it saves; :func:`_newton` refreshes it where needed)."""
    d = problem.x.shape[-1]
    return jnp.zeros(d, jnp.float32), jnp.eye(d, dtype=problem.x.dtype) / problem.grid[0]


def _one_standard_error(sums, squares, hits, n, ddof):
    """(mean held-out loss (G,), accuracy (G,), best grid index ()): the strongest prior whose
    loss is within one standard error of the lowest (grid[0] is the strongest). sums, squares,
    hits: (G,) from :func:`_held_out_path`; n: () held-out labels."""
    n = jnp.maximum(n, 1).astype(jnp.float32)
    losses = sums / n
    variance = jnp.maximum(squares - n * losses ** 2, 0.0) / jnp.maximum(n - ddof, 1.0)
    se = jnp.sqrt(variance / n)
    losses = jnp.where(jnp.isfinite(losses), losses, jnp.inf)
    lowest = jnp.argmin(losses)
    return losses, hits / n, jnp.argmax(losses <= losses[lowest] + se[lowest])


def linear_split_key(key):
    """The key of a fit's seeded splits (the fit's ``key`` folded with 7): the held-out rule's
    (``split_rows``) and :func:`cv_folds`."""
    return jax.random.fold_in(key, 7)


def cv_folds(split_key, capacity: int):
    """(C,) int32 the fold (0 … :data:`LINEAR_CV_FOLDS` − 1) of each of a buffer's ``capacity``
    rows under the cross-validation rule; ``split_key`` from :func:`linear_split_key`."""
    return jnp.floor(jax.random.uniform(split_key, (capacity,)) * LINEAR_CV_FOLDS).astype(jnp.int32)


def _cross_validate(problem: _Problem, split_key, buffer, nuisance):
    """The cross-validation rule: :data:`LINEAR_CV_FOLDS` seeded folds (:func:`cv_folds`), the
    grid path on the other folds for each (one after the other, a ``lax.map``: under ``vmap``
    each fold's loops would run as long as the slowest fold's), the one-standard-error rule on the held-out BT loss of every
    label. Returns (val_losses (G,), val_accs (G,), best (), n_fit (), n_val (), Newton steps
    ()): every label is held out once, so n_val counts the cross-validated labels (0 below
    2 · folds)."""
    fold = cv_folds(split_key, buffer.capacity)
    folds = jnp.arange(LINEAR_CV_FOLDS)
    held = problem.filled[None, :] & (fold[None, :] == folds[:, None])  # (F, C)
    path = functools.partial(_held_out_path, problem, nuisance)
    *per_fold, steps = jax.lax.map(lambda a: path(*a), (problem.filled[None, :] & ~held, held))  # (F, G) each
    val_losses, val_accs, best = _one_standard_error(
        *(jnp.sum(a, axis=0) for a in per_fold), buffer.count, ddof=0
    )
    n_val = jnp.where(buffer.count >= 2 * LINEAR_CV_FOLDS, buffer.count, 0).astype(jnp.int32)
    return val_losses, val_accs, best, buffer.count, n_val, jnp.sum(steps)


def _choose_prior(problem: _Problem, split_key, buffer, train_config, nuisance, n_fit, n_val):
    """The grid index of the chosen prior by the rule of :func:`_prior_rule`: (val_losses,
    val_accs, best, n_fit, n_val, steps); val_losses, val_accs (G,) the rule's held-out figures
    ((1,) NaN for a fixed prior, (G,) NaN for the evidence), best () (0 for a fixed prior),
    n_fit and n_val () as reported (changed by cross-validation), steps () the Newton steps."""
    fixed, evidence, cv = _prior_rule(train_config)
    if fixed:
        val_losses = val_accs = jnp.full(1, jnp.nan)
        return val_losses, val_accs, 0, n_fit, n_val, jnp.int32(0)
    if cv:
        return _cross_validate(problem, split_key, buffer, nuisance)
    if evidence:
        along = functools.partial(_log_evidence, problem, nuisance)
        _, (log_ev, steps) = jax.lax.scan(along, _path_start(problem), problem.grid)
        best = jnp.argmax(jnp.where(jnp.isfinite(log_ev), log_ev, -jnp.inf))
        val_losses = val_accs = jnp.full(problem.grid.shape[0], jnp.nan)
        return val_losses, val_accs, best, n_fit, n_val, jnp.sum(steps)
    *path, steps = _held_out_path(problem, nuisance, problem.fit_rows, problem.val_rows)
    val_losses, val_accs, best = _one_standard_error(*path, n_val, ddof=1)
    return val_losses, val_accs, best, n_fit, n_val, jnp.sum(steps)


def _final_fit(problem: _Problem, lam, nuisance):
    """The head on all labels at the chosen lam (); with votes, alternated twice with
    :func:`fit_nuisance` and re-expressed for the typical rater. Returns (beta (D,), nuisance,
    Newton steps ())."""
    zero = jnp.zeros(problem.x.shape[-1], jnp.float32)
    beta, steps, _ = _newton(problem, zero, problem.filled, lam, NEWTON_STEPS[1], nuisance)
    if problem.votes is not None:
        for _ in range(2):
            nuisance = fit_nuisance(problem.x @ beta, problem.votes, nuisance)
            beta, n, _ = _newton(problem, beta, problem.filled, lam, NEWTON_STEPS[1], nuisance)
            steps = steps + n
        g, nuisance = typical_rater(problem.votes, nuisance)
        beta = beta * g
    return beta, nuisance, steps


def _fit_linear(key, items, buffer, train_config):
    """The exact fit of the linear model (module docstring) on items (N, D) and a buffer of C
    rows; returns ``(params, FitStats)``, params the head β (D, 1). FitStats: steps count Newton
    steps; losses hold the final training BT loss; epochs are NaN (no passes over the data);
    prior_precision is λ; val_loss and val_accuracy are the held-out figures of the chosen λ
    (cross-validation: over every label, each held out once, and n_val is the label count;
    evidence: none).
    """
    init_key, _ = jax.random.split(key)
    split_key = linear_split_key(key)
    params = model_lib.init_params(init_key, model_lib.ModelConfig(depth=0), items.shape[-1])
    fixed, evidence, cv = _prior_rule(train_config)
    val_fraction = 0.0 if fixed or evidence or cv else train_config.val_fraction
    order, n_fit, n_val = split_rows(split_key, buffer, val_fraction, train_config.min_val_labels)
    problem = _linear_problem(items, buffer, train_config, order, n_fit)
    nuisance = None if problem.votes is None else initial_nuisance(problem.votes)
    n_newton = jnp.int32(0)
    with jax.default_matmul_precision("highest"):
        if problem.votes is not None:
            nuisance, n_newton = _first_nuisance(problem, train_config, nuisance)
        val_losses, val_accs, best, n_fit, n_val, n_path = _choose_prior(
            problem, split_key, buffer, train_config, nuisance, n_fit, n_val
        )
        c_default = train_config.linear_prior if fixed else LINEAR_DEFAULT_PRIOR
        lam = jnp.where((n_val > 0) | evidence, problem.grid[best], problem.scale * jnp.float32(c_default))
        beta, nuisance, n_final = _final_fit(problem, lam, nuisance)
    params = {"params": {"head": beta[:, None].astype(params["params"]["head"].dtype)}}
    nan = jnp.float32(jnp.nan)
    n_newton = (n_newton + n_path + n_final) * (buffer.count > 0)
    # "losses": the final mean BT loss on all labels at every Newton step's place, so that
    # final_loss reports the training loss as for the other fits (outside the "highest" precision)
    train_loss = jnp.sum(jnp.where(problem.filled, _row_loss(problem, problem.x @ beta, nuisance), 0.0))
    train_loss = train_loss / jnp.maximum(buffer.count, 1)
    tie, reliability = nuisance_stats(problem.votes, nuisance, train_config.annotators)
    losses = jnp.where(jnp.arange(train_config.steps) < n_newton, train_loss, 0.0).astype(jnp.float32)
    return params, FitStats(
        losses, n_newton, n_newton, nan, n_fit, n_val,
        jnp.where(n_val > 0, val_losses[best], nan), jnp.where(n_val > 0, val_accs[best], nan), lam,
        tie, reliability,
    )
