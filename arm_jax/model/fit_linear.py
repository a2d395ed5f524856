"""TODO docstring."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from arm_jax.model import likelihood as likelihood_lib
from arm_jax.model import network as model_lib
from arm_jax.model.buffer import split_rows
from arm_jax.model.config import FitStats
from arm_jax.model.likelihood import bt_loss
from arm_jax.model.raters import (
    _STEP_SIZES,
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
#: Newton steps per grid point (warm-started along the grid from the strongest prior) and for
#: the final fit on all labels.
NEWTON_STEPS = (4, 8)


def _fit_linear(key, items, buffer, train_config):
    """The linear reward model r = ψᵀβ (depth 0) fitted exactly: the MAP of Bradley–Terry
    logistic regression with a Gaussian prior N(0, λ⁻¹I) on β, by damped Newton steps.

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
    labels to hold out, λ is :data:`LINEAR_DEFAULT_PRIOR`. Each Newton step solves with a
    Cholesky factor of the (positive definite) regularised Hessian and keeps the best of a few
    step sizes and no step, so the objective never rises and a failed factorisation (not finite)
    leaves β where it was. FitStats: steps count Newton steps; losses hold the final training
    BT loss; epochs are NaN (no passes over the data); prior_precision is λ; val_loss and
    val_accuracy are the held-out figures of the chosen λ (cross-validation: over every label,
    each held out once, and n_val is the label count; evidence: none).
    """
    init_key, _ = jax.random.split(key)
    split_key = jax.random.fold_in(key, 7)
    params = model_lib.init_params(init_key, model_lib.ModelConfig(depth=0), items.shape[-1])
    c = buffer.capacity
    d = items.shape[-1]
    fixed = train_config.linear_prior is not None
    evidence = train_config.linear_prior_rule == "evidence" and not fixed
    cv = train_config.linear_prior_rule == "cross-validation" and not fixed
    val_fraction = 0.0 if fixed or evidence or cv else train_config.val_fraction
    order, n_fit, n_val = split_rows(split_key, buffer, val_fraction, train_config.min_val_labels)
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
    # the nuisance (ν, reliabilities) of a buffer with votes: first estimated at the default
    # prior, held fixed while the prior is chosen, then alternated with the final fit
    nuisance = None if votes is None else initial_nuisance(votes)

    def row_loss(z, nuisance):
        """(C,) each row's negative log-likelihood at gaps z."""
        return bt_loss(z, 0.0) if votes is None else vote_losses(z, votes, nuisance)

    def row_derivatives(z, nuisance):
        """(C,) first and second derivatives of each row's loss in its gap z."""
        if votes is None:
            p = jax.nn.sigmoid(z)
            return p - 1.0, p * (1 - p)
        q = row_scale(votes, nuisance)
        first = jax.grad(lambda z: jnp.sum(vote_losses(z, votes, nuisance)))(z)
        nu = jnp.exp(log_tie(votes, nuisance))
        return first, jnp.sum(votes.counts, axis=-1) * q * q * likelihood_lib.gap_variance(q * z, nu)

    def objective(beta, rows, lam, nuisance):
        nll = jnp.sum(jnp.where(rows, row_loss(x @ beta, nuisance), 0.0))
        return nll + 0.5 * lam * jnp.sum(beta * beta)

    def newton(beta, rows, lam, n_steps, nuisance=None):
        def one(beta, _):
            z = x @ beta
            first, second = row_derivatives(z, nuisance)
            w = jnp.where(rows, second, 0.0)
            g = x.T @ jnp.where(rows, first, 0.0) + lam * beta
            h = (x * w[:, None]).T @ x + lam * jnp.eye(d, dtype=x.dtype)
            chol = jnp.linalg.cholesky(h)
            delta = -jax.scipy.linalg.cho_solve((chol, True), g)
            delta = jnp.where(jnp.all(jnp.isfinite(delta)), delta, 0.0)
            tries = jnp.concatenate([jnp.zeros(1), jnp.asarray(_STEP_SIZES)])
            values = jax.vmap(lambda t: objective(beta + t * delta, rows, lam, nuisance))(tries)
            values = jnp.where(jnp.isfinite(values), values, jnp.inf)
            return beta + tries[jnp.argmin(values)] * delta, None

        beta, _ = jax.lax.scan(one, beta, None, length=n_steps)
        return beta

    with jax.default_matmul_precision("highest"):
        if votes is not None:
            lam0 = scale * jnp.float32(train_config.linear_prior or LINEAR_DEFAULT_PRIOR)
            beta0 = jnp.zeros(d, jnp.float32)
            for _ in range(2):
                beta0 = newton(beta0, filled, lam0, NEWTON_STEPS[1], nuisance)
                nuisance = fit_nuisance(x @ beta0, votes, nuisance)

        def log_evidence_along(beta, lam):
            """Laplace log evidence of all the labels at λ: −NLL − λ|β̂|²/2 + D/2 log λ − ½ log det(H)."""
            beta = newton(beta, filled, lam, NEWTON_STEPS[0], nuisance)
            z = x @ beta
            w = jnp.where(filled, row_derivatives(z, nuisance)[1], 0.0)
            h = (x * w[:, None]).T @ x + lam * jnp.eye(d, dtype=x.dtype)
            logdet = 2.0 * jnp.sum(jnp.log(jnp.diagonal(jnp.linalg.cholesky(h))))
            nll = jnp.sum(jnp.where(filled, row_loss(z, nuisance), 0.0))
            return beta, -nll - 0.5 * lam * jnp.sum(beta * beta) + 0.5 * d * jnp.log(lam) - 0.5 * logdet

        def held_out_path(rows, held):
            """Fit on ``rows`` along the grid (warm-started); the ``held`` labels' BT losses:
            (G,) sums of loss, of loss² and of pairwise hits."""
            def step(beta, lam):
                beta = newton(beta, rows, lam, NEWTON_STEPS[0], nuisance)
                gap = x @ beta
                loss = jnp.where(held, row_loss(gap, nuisance), 0.0)
                if votes is None:
                    acc = jnp.sum(jnp.where(held, (gap > 0) + 0.5 * (gap == 0), 0.0))
                else:  # over the rows with a majority, scaled to all held-out rows
                    hits, decided = vote_hits(gap, votes, held)
                    acc = jnp.where(decided > 0, hits / jnp.maximum(decided, 1) * jnp.sum(held), jnp.nan)
                return beta, (jnp.sum(loss), jnp.sum(loss * loss), acc)

            return jax.lax.scan(step, jnp.zeros(d, jnp.float32), grid)[1]

        def one_standard_error(sums, squares, hits, n, ddof):
            """(mean held-out loss, accuracy, best grid index): the strongest prior whose loss is
            within one standard error of the lowest (grid[0] is the strongest)."""
            n = jnp.maximum(n, 1).astype(jnp.float32)
            losses = sums / n
            variance = jnp.maximum(squares - n * losses ** 2, 0.0) / jnp.maximum(n - ddof, 1.0)
            se = jnp.sqrt(variance / n)
            losses = jnp.where(jnp.isfinite(losses), losses, jnp.inf)
            lowest = jnp.argmin(losses)
            return losses, hits / n, jnp.argmax(losses <= losses[lowest] + se[lowest])

        if fixed:
            val_losses = val_accs = jnp.full(1, jnp.nan)
            best = 0
        elif cv:
            fold = jnp.floor(jax.random.uniform(split_key, (c,)) * LINEAR_CV_FOLDS).astype(jnp.int32)
            folds = jnp.arange(LINEAR_CV_FOLDS)
            held = filled[None, :] & (fold[None, :] == folds[:, None])  # (F, C)
            per_fold = jax.vmap(held_out_path)(filled[None, :] & ~held, held)  # (F, G) each
            val_losses, val_accs, best = one_standard_error(
                *(jnp.sum(a, axis=0) for a in per_fold), buffer.count, ddof=0
            )
            # every label is held out once: n_val reports the cross-validated labels
            n_val = jnp.where(buffer.count >= 2 * LINEAR_CV_FOLDS, buffer.count, 0).astype(jnp.int32)
            n_fit = buffer.count
        elif evidence:
            _, log_ev = jax.lax.scan(log_evidence_along, jnp.zeros(d, jnp.float32), grid)
            best = jnp.argmax(jnp.where(jnp.isfinite(log_ev), log_ev, -jnp.inf))
            val_losses = val_accs = jnp.full(grid.shape[0], jnp.nan)
        else:
            val_losses, val_accs, best = one_standard_error(*held_out_path(fit_rows, val_rows), n_val, ddof=1)
        c_default = train_config.linear_prior if fixed else LINEAR_DEFAULT_PRIOR
        lam = jnp.where((n_val > 0) | evidence, grid[best], scale * jnp.float32(c_default))
        beta = newton(jnp.zeros(d, jnp.float32), filled, lam, NEWTON_STEPS[1], nuisance)
        if votes is not None:
            for _ in range(2):
                nuisance = fit_nuisance(x @ beta, votes, nuisance)
                beta = newton(beta, filled, lam, NEWTON_STEPS[1], nuisance)
            g, nuisance = typical_rater(votes, nuisance)
            beta = beta * g
    params = {"params": {"head": beta[:, None].astype(params["params"]["head"].dtype)}}
    nan = jnp.float32(jnp.nan)
    path_fits = 0 if fixed else (LINEAR_CV_FOLDS if cv else 1)
    n_newton = jnp.int32(path_fits * len(LINEAR_PRIOR_GRID) * NEWTON_STEPS[0] + NEWTON_STEPS[1])
    n_newton = n_newton * (buffer.count > 0)
    # "losses": the final mean BT loss on all labels at every Newton step's place, so that
    # final_loss reports the training loss as for the other fits
    train_loss = jnp.sum(jnp.where(filled, row_loss(x @ beta, nuisance), 0.0)) / jnp.maximum(buffer.count, 1)
    tie, reliability = nuisance_stats(votes, nuisance, train_config.annotators)
    losses = jnp.where(jnp.arange(train_config.steps) < n_newton, train_loss, 0.0).astype(jnp.float32)
    return params, FitStats(
        losses, n_newton, n_newton, nan, n_fit, n_val,
        jnp.where(n_val > 0, val_losses[best], nan), jnp.where(n_val > 0, val_accs[best], nan), lam,
        tie, reliability,
    )
