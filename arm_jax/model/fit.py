"""Fitting the Bradley–Terry reward model.

The labelled comparisons live in a fixed-capacity buffer of (winner, loser) item indices with
a count of filled rows, so a labelled set that grows round after round never changes a shape
and never recompiles. One fit is one ``lax.scan`` over optimiser steps from a fresh
initialisation; it is a pure function of a PRNG key, so ``jax.vmap(fit)`` trains many seeds
in one call.

The pieces, in the order :func:`_fit` calls them: the linear model's exact fit goes to
:func:`arm_jax.model.fit_linear._fit_linear`; raters' reliabilities are two fits
(:func:`_fit_with_reliabilities`); every other fit is :func:`_fit_adamw`: a fresh
initialisation (:func:`_initial_params`), the rows and steps to train (:func:`_schedule`), and
:func:`_adamw_step` (the minibatch loss :func:`_batch_loss`) either scanned over every step
(:func:`_fixed_fit`) or run in chunks with early stopping (:func:`_early_stopping`: a
``lax.while_loop`` over :func:`_early_stopping_chunk`, the held-out set :func:`_held_out_set`
scored by :func:`_held_out_metrics`), then :func:`_early_stopped_params` and the refit on
every label (:func:`_refit`).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import TYPE_CHECKING, NamedTuple

import chex
import jax
import jax.numpy as jnp

from arm_jax.model import likelihood
from arm_jax.model import network as model_lib
from arm_jax.model.buffer import LabelBuffer, split_rows
from arm_jax.model.config import FitStats, TrainConfig, _default_prior, _optimizer
from arm_jax.model.fit_linear import _fit_linear
from arm_jax.model.likelihood import bt_loss
from arm_jax.model.network import ModelConfig
from arm_jax.model.raters import (
    Votes,
    _finish_votes,
    _vote_optimizer,
    fit_nuisance,
    initial_nuisance,
    log_tie,
    row_scale,
    vote_hits,
    vote_losses,
    votes_of,
)

if TYPE_CHECKING:
    import optax


def fit(
    key: jax.Array,
    items: jax.Array,
    buffer: LabelBuffer,
    model_config: ModelConfig | None = None,
    train_config: TrainConfig | None = None,
):
    """Train a fresh reward model on the filled rows of ``buffer``.

    key: PRNG key (initialisation and minibatches are drawn from it).
    items: (N, D) float32 embeddings; the buffer holds indices into it.
    buffer: labelled comparisons. With ``count == 0`` the initial parameters are returned.
    Returns ``(params, stats)``: :class:`FitStats` (per-step losses, the steps and epochs the
    parameters were trained for, the held-out loss and accuracy when early stopping). Pure and
    jit/vmap-able; the configs are static (hashable frozen dataclasses).
    """
    model_config = model_config or model_lib.ModelConfig()
    train_config = train_config or TrainConfig()
    # the contract, asserted when traced: (N, D) float embeddings, (C, 2) int32 index pairs
    chex.assert_rank(items, 2)
    chex.assert_type(items, float)
    chex.assert_shape(buffer.pairs, (None, 2))
    chex.assert_type(buffer.pairs, jnp.int32)
    chex.assert_rank(buffer.count, 0)
    return _fit(key, items, buffer, model_config, train_config)


class _Setup(NamedTuple):
    """What every AdamW step of one fit reads; built once per fit, never a loop carry.

    items: (N, D) embeddings. buffer: the labelled rows (C of them). votes: their
    :class:`Votes`, or None for a plain buffer (Bradley–Terry). model_config, train_config:
    static. optimizer: AdamW (with votes, on (model, nuisance)). total_votes: () float32
    votes over the buffer (at least 1), None without votes.
    """

    items: jax.Array
    buffer: LabelBuffer
    votes: Votes | None
    model_config: ModelConfig
    train_config: TrainConfig
    optimizer: optax.GradientTransformation
    total_votes: jax.Array | None


class _HeldOut(NamedTuple):
    """The held-out labels of an early-stopped fit, padded to V = min(C, max_val_labels) rows.

    rows: (V,) int32 buffer rows. mask: (V,) bool, which of them are held out. items: (2V, D)
    embeddings: the V first items, then the V second ones.
    """

    rows: jax.Array
    mask: jax.Array
    items: jax.Array


class EarlyStopState(NamedTuple):
    """The ``lax.while_loop`` carry of early stopping: one iteration is one chunk of
    ``eval_every`` steps followed by a held-out evaluation.

    chunk: () int32 chunks run. params, opt_state: the last parameters and optimiser state.
    best: the parameters of the best evaluation so far. best_loss, best_acc: () float32 its
    held-out loss (+inf before any) and accuracy. best_step: () int32 the steps it was trained
    for. bad: () int32 evaluations since the last improvement. losses: (n_chunks · eval_every,)
    float32 every step's minibatch loss (0 for steps not run). done: () bool, stop now.
    """

    chunk: jax.Array
    params: object
    opt_state: object
    best: object
    best_loss: jax.Array
    best_acc: jax.Array
    best_step: jax.Array
    bad: jax.Array
    losses: jax.Array
    done: jax.Array


def _fit(key, items, buffer, model_config, train_config, reliability=None):
    """:func:`fit` without the contract checks; ``reliability`` (A,) holds the raters'
    reliabilities fixed (the second stage of :func:`_fit_with_reliabilities`)."""
    if model_config.depth == 0 and (train_config.early_stopping or train_config.linear_prior is not None):
        return _fit_linear(key, items, buffer, train_config)
    votes = votes_of(buffer, train_config)
    if votes is not None and votes.n_annotators and reliability is None:
        return _fit_with_reliabilities(key, items, buffer, model_config, train_config, votes)
    return _fit_adamw(key, items, buffer, model_config, train_config, votes, reliability)


def _fit_with_reliabilities(key, items, buffer, model_config, train_config, votes):
    """Raters' reliabilities in two stages: fit with every rater alike, estimate the
    reliabilities at those rewards (fit_nuisance), refit with them held fixed. Learning them
    jointly with the MLP made the model worse than ignoring them (benchmarks/bench_annotators.py,
    RESULTS.md). items (N, D), votes over the buffer's C rows; returns ``(params, FitStats)``."""
    first, stats = _fit(key, items, buffer, model_config, dataclasses.replace(train_config, annotators=0))
    r = model_lib.reward(first, model_config, items[buffer.pairs.reshape(-1)]).reshape(-1, 2)  # (C, 2)
    start = {**initial_nuisance(votes), "log_nu": jnp.log(jnp.maximum(stats.tie, 1e-6))}
    reliability = fit_nuisance(r[:, 0] - r[:, 1], votes, start)["u"]  # (A,)
    return _fit(key, items, buffer, model_config, train_config, reliability)


def _initial_params(init_key, items, model_config, votes, reliability):
    """A fresh initialisation for items (N, D): the model's parameters, with votes the pair
    (model, nuisance: {"log_nu": (), "u": (A,)}), u the fixed ``reliability`` when given."""
    params = model_lib.init_params(init_key, model_config, items.shape[-1])
    if votes is None:
        return params
    nuisance = initial_nuisance(votes)
    return params, (nuisance if reliability is None else {**nuisance, "u": reliability})


def _schedule(split_key, buffer, train_config):
    """Which rows are fitted and for how many steps: ``(order, n_fit, n_val, n_rows,
    active_steps)``. order: (C,) int32 buffer rows, the n_fit fitted ones first, then the n_val
    held out (early stopping; else none); n_rows = max(n_fit, 1); active_steps: () int32 steps
    that update the parameters (``max_epochs`` passes over the fitted rows, at least
    ``min_steps``, at most ``steps``)."""
    steps = train_config.steps
    if train_config.early_stopping:
        order, n_fit, n_val = split_rows(split_key, buffer, train_config.val_fraction, train_config.min_val_labels)
    else:
        order, n_fit, n_val = jnp.arange(buffer.capacity, dtype=jnp.int32), buffer.count, jnp.int32(0)
    n_rows = jnp.maximum(n_fit, 1)
    if train_config.max_epochs is None:
        active_steps = jnp.int32(steps)
    else:
        active_steps = jnp.ceil(train_config.max_epochs * n_rows / train_config.batch_size).astype(jnp.int32)
        active_steps = jnp.clip(active_steps, min(train_config.min_steps, steps), steps)
    return order, n_fit, n_val, n_rows, active_steps


def _batch_loss(setup: _Setup, p, batch_items, rows):
    """The mean loss of a minibatch of B pairs: batch_items (2B, D), the B first items then the
    B second ones; rows (B,) their buffer rows. With votes, p is (model, nuisance) and the loss
    is the votes' negative log-likelihood plus the reliabilities' prior per vote. ``-> ()``."""
    b = setup.train_config.batch_size
    votes = setup.votes
    if votes is None:
        r = model_lib.reward(p, setup.model_config, batch_items)
        return jnp.mean(bt_loss(r[:b], r[b:]))
    model_p, nuisance = p
    r = model_lib.reward(model_p, setup.model_config, batch_items)
    nll = likelihood.row_nll(
        r[:b] - r[b:], votes.counts[rows], row_scale(votes, nuisance)[rows], log_tie(votes, nuisance)
    )
    # the prior on the reliabilities, at the scale of one vote's loss
    return jnp.mean(nll) + likelihood.prior_nll(nuisance["u"]) / setup.total_votes


def _adamw_step(setup: _Setup, order, n_rows, active_steps, carry, xs):
    """One AdamW step on a minibatch of B rows drawn (with replacement) from ``order[:n_rows]``
    (order (C,) int32); a no-op (weight decay included) at or past ``active_steps`` or with no
    rows. carry: (params, optimiser state); xs: (step index () int32, PRNG key). The
    ``lax.scan`` body: returns (carry, () minibatch loss, 0 when inactive)."""
    import optax  # here, not at the top: commands that train no MLP start without importing it

    p, state = carry
    step_index, step_key = xs
    b = setup.train_config.batch_size
    active = ((n_rows > 0) & (step_index < active_steps)).astype(jnp.float32)
    rows = order[jax.random.randint(step_key, (b,), 0, jnp.maximum(n_rows, 1))]
    pair = setup.buffer.pairs[rows]
    batch_items = setup.items[jnp.concatenate([pair[:, 0], pair[:, 1]])]
    loss, grads = jax.value_and_grad(functools.partial(_batch_loss, setup))(p, batch_items, rows)
    updates, state = setup.optimizer.update(grads, state, p)
    updates = jax.tree_util.tree_map(lambda u: active * u, updates)
    return (optax.apply_updates(p, updates), state), loss * active


def _run_chunk(step, keys, start, every, carry):
    """Steps start … start + every − 1 of ``step`` (a ``lax.scan``): keys (S, 2) one PRNG key
    per step (S ≥ start + every). carry: (params, optimiser state). Returns (carry, (every,)
    losses)."""
    idx = start + jnp.arange(every, dtype=jnp.int32)
    chunk_keys = jax.lax.dynamic_slice_in_dim(keys, start, every)
    return jax.lax.scan(step, carry, (idx, chunk_keys))


def _fit_adamw(key, items, buffer, model_config, train_config, votes, reliability):
    """A fresh model (N, D items) trained by AdamW on the buffer's rows, for a fixed schedule or
    with early stopping (and a refit); with votes, the nuisance alongside (reliabilities fixed
    to ``reliability`` (A,) when given). Returns ``(params, FitStats)``."""
    init_key, batch_key = jax.random.split(key)
    split_key = jax.random.fold_in(key, 7)
    params = _initial_params(init_key, items, model_config, votes, reliability)
    optimizer = _optimizer(train_config) if votes is None else _vote_optimizer(train_config, reliability is not None)
    opt_state = optimizer.init(params)
    order, n_fit, n_val, n_rows, active_steps = _schedule(split_key, buffer, train_config)
    total_votes = None if votes is None else jnp.maximum(jnp.sum(votes.counts), 1.0)
    setup = _Setup(items, buffer, votes, model_config, train_config, optimizer, total_votes)
    step = functools.partial(_adamw_step, setup, order, n_fit, active_steps)
    step_keys = jax.random.split(batch_key, train_config.steps)  # (steps, 2)
    if not train_config.early_stopping:
        return _fixed_fit(setup, step, (params, opt_state), step_keys, active_steps, n_fit, n_val, n_rows)
    held = _held_out_set(setup, order, n_fit, n_val)
    keys = _padded_keys(step_keys, train_config.eval_every)  # (n_chunks · eval_every, 2)
    st = _early_stopping(setup, step, held, keys, (params, opt_state), active_steps, n_fit, n_val)
    params, steps_run, steps_taken, epochs, val_loss = _early_stopped_params(setup, st, active_steps, n_fit, n_val, n_rows)
    if train_config.refit:
        refitted = _refit(setup, init_key, reliability, keys, epochs, n_val)
        params = jax.tree_util.tree_map(lambda r, e: jnp.where(n_val > 0, r, e), refitted, params)
    params, tie, reliability = _finish_votes(params, votes, items, buffer, model_config, train_config)
    return params, FitStats(
        st.losses[:train_config.steps], steps_run, steps_taken.astype(jnp.int32), epochs, n_fit, n_val, val_loss,
        st.best_acc, _default_prior(), tie, reliability,
    )


def _fixed_fit(setup: _Setup, step, carry, step_keys, active_steps, n_fit, n_val, n_rows):
    """Every one of the ``steps`` steps in one ``lax.scan`` (those past ``active_steps`` change
    nothing). carry: initial (params, optimiser state); step_keys (steps, 2). Returns
    ``(params, FitStats)``, losses (steps,)."""
    train_config = setup.train_config
    steps = train_config.steps
    taken = jnp.minimum(active_steps, steps) * (n_fit > 0)
    xs = (jnp.arange(steps, dtype=jnp.int32), step_keys)
    (params, _), losses = jax.lax.scan(step, carry, xs)
    nan = jnp.float32(jnp.nan)
    epochs = taken.astype(jnp.float32) * train_config.batch_size / n_rows
    taken = taken.astype(jnp.int32)
    params, tie, reliability = _finish_votes(
        params, setup.votes, setup.items, setup.buffer, setup.model_config, train_config
    )
    return params, FitStats(
        losses, taken, taken, epochs, n_fit, n_val, nan, nan, _default_prior(), tie, reliability
    )


def _held_out_set(setup: _Setup, order, n_fit, n_val) -> _HeldOut:
    """The rows ``order[n_fit : n_fit + n_val]`` (order (C,) int32), padded to V rows."""
    buffer = setup.buffer
    val_cap = min(buffer.capacity, setup.train_config.max_val_labels)
    val_pos = jnp.arange(val_cap, dtype=jnp.int32)
    val_rows = order[jnp.clip(n_fit + val_pos, 0, buffer.capacity - 1)]
    val_mask = val_pos < n_val
    val_pairs = buffer.pairs[val_rows]
    val_items = setup.items[jnp.concatenate([val_pairs[:, 0], val_pairs[:, 1]])]
    return _HeldOut(val_rows, val_mask, val_items)


def _held_out_metrics(setup: _Setup, held: _HeldOut, p):
    """(loss, accuracy), both () float32, of parameters p on the held-out labels: the mean BT
    loss and pairwise accuracy; with votes, the loss per vote and the accuracy over the rows
    with a majority (NaN when none has)."""
    votes = setup.votes
    val_cap = held.rows.shape[0]
    if votes is not None:
        model_p, nuisance = p
        r = model_lib.reward(model_p, setup.model_config, held.items)
        gap = r[:val_cap] - r[val_cap:]
        sub = Votes(votes.counts[held.rows], votes.annotator[held.rows], votes.has_ties, votes.n_annotators)
        nll = vote_losses(gap, sub, nuisance)
        n_votes = jnp.sum(jnp.where(held.mask, jnp.sum(sub.counts, axis=-1), 0.0))
        loss = jnp.sum(jnp.where(held.mask, nll, 0.0)) / jnp.maximum(n_votes, 1e-6)
        hits, decided = vote_hits(gap, sub, held.mask)
        return loss, jnp.where(decided > 0, hits / jnp.maximum(decided, 1), jnp.nan)
    r = model_lib.reward(p, setup.model_config, held.items)
    gap = r[:val_cap] - r[val_cap:]
    denom = jnp.maximum(jnp.sum(held.mask), 1)
    loss = jnp.sum(jnp.where(held.mask, bt_loss(gap, 0.0), 0.0)) / denom
    acc = jnp.sum(jnp.where(held.mask, (gap > 0) + 0.5 * (gap == 0), 0.0)) / denom
    return loss, acc


def _padded_keys(step_keys, every):
    """step_keys (steps, 2) padded to a whole number of chunks (n_chunks · every, 2) by
    repeating the last key (the padded steps are never active)."""
    steps = step_keys.shape[0]
    pad = -(-steps // every) * every - steps
    return jnp.concatenate([step_keys, jnp.repeat(step_keys[-1:], pad, axis=0)]) if pad else step_keys


def _early_stopping_chunk(setup: _Setup, step, held: _HeldOut, keys, active_steps, n_val, st: EarlyStopState):
    """One chunk of ``eval_every`` steps, then the held-out evaluation: the best parameters are
    kept (jnp.where) and the loop is done after ``patience`` evaluations without an
    improvement of ``min_delta`` (after ``min_steps``) or at ``active_steps``. keys
    (n_chunks · every, 2). The ``lax.while_loop`` body."""
    train_config = setup.train_config
    every = train_config.eval_every
    start = st.chunk * every
    (p, state), losses = _run_chunk(step, keys, start, every, (st.params, st.opt_state))
    losses = jax.lax.dynamic_update_slice_in_dim(st.losses, losses, start, 0)  # (n_chunks · every,)
    end = jnp.minimum(start + every, active_steps)
    loss, acc = _held_out_metrics(setup, held, p)
    improved = (n_val > 0) & (loss < st.best_loss - train_config.min_delta)
    best = jax.tree_util.tree_map(lambda new, old: jnp.where(improved, new, old), p, st.best)
    bad = jnp.where(improved, 0, st.bad + 1)
    stop = (n_val > 0) & (bad >= train_config.patience) & (end >= train_config.min_steps)
    done = stop | (end >= active_steps)
    return EarlyStopState(
        st.chunk + 1, p, state, best,
        jnp.where(improved, loss, st.best_loss), jnp.where(improved, acc, st.best_acc),
        jnp.where(improved, end, st.best_step), bad, losses, done,
    )


def _early_stopping(setup: _Setup, step, held: _HeldOut, keys, carry, active_steps, n_fit, n_val):
    """Early stopping: chunks of ``eval_every`` steps (:func:`_early_stopping_chunk`) in a
    ``lax.while_loop``; under vmap it runs until the last model stops, the stopped ones
    unchanged. keys (n_chunks · every, 2): :func:`_padded_keys`; carry: initial (params,
    optimiser state). Returns the final :class:`EarlyStopState`."""
    every = setup.train_config.eval_every
    n_chunks = -(-setup.train_config.steps // every)
    params, opt_state = carry
    init = EarlyStopState(
        jnp.int32(0), params, opt_state, params, jnp.float32(jnp.inf), jnp.float32(jnp.nan),
        jnp.int32(0), jnp.int32(0), jnp.zeros(n_chunks * every, jnp.float32), n_fit <= 0,
    )
    body = functools.partial(_early_stopping_chunk, setup, step, held, keys, active_steps, n_val)
    return jax.lax.while_loop(lambda st: ~st.done & (st.chunk < n_chunks), body, init)


def _refit(setup: _Setup, init_key, reliability, keys, epochs, n_val):
    """Refit from the same initialisation on every label (held-out ones included) for the
    () ``epochs`` the early stop chose; chunks of ``eval_every`` steps in a while_loop, so only
    those steps run (none when nothing was held out). keys (n_chunks · every, 2): the early
    stop's padded step keys. Returns the refitted parameters."""
    train_config, buffer = setup.train_config, setup.buffer
    steps, every = train_config.steps, train_config.eval_every
    all_rows = jnp.arange(buffer.capacity, dtype=jnp.int32)
    refit_steps = jnp.ceil(epochs * jnp.maximum(buffer.count, 1) / train_config.batch_size).astype(jnp.int32)
    refit_steps = jnp.clip(refit_steps, min(train_config.min_steps, steps), steps)
    refit_step = functools.partial(_adamw_step, setup, all_rows, buffer.count, refit_steps)

    def refit_body(carry):
        chunk, p, state = carry
        (p, state), _ = _run_chunk(refit_step, keys, chunk * every, every, (p, state))
        return chunk + 1, p, state

    p0 = _initial_params(init_key, setup.items, setup.model_config, setup.votes, reliability)
    _, refitted, _ = jax.lax.while_loop(
        lambda c: (c[0] * every < refit_steps) & (n_val > 0), refit_body, (jnp.int32(0), p0, setup.optimizer.init(p0))
    )
    return refitted


def _early_stopped_params(setup: _Setup, st: EarlyStopState, active_steps, n_fit, n_val, n_rows):
    """What early stopping returns: ``(params, steps_run, steps_taken, epochs, val_loss)``, the
    best parameters (the last ones when nothing was held out), the () steps run and those the
    parameters were trained for, their () epochs and () held-out loss (NaN: none held out)."""
    train_config = setup.train_config
    use_best = n_val > 0
    params = jax.tree_util.tree_map(lambda best, last: jnp.where(use_best, best, last), st.best, st.params)
    last_step = jnp.minimum(st.chunk * train_config.eval_every, active_steps)
    steps_taken = jnp.where(use_best, st.best_step, last_step) * (n_fit > 0)
    val_loss = jnp.where(use_best, st.best_loss, jnp.nan)
    epochs = steps_taken.astype(jnp.float32) * train_config.batch_size / n_rows
    steps_run = (last_step * (n_fit > 0)).astype(jnp.int32)
    return params, steps_run, steps_taken, epochs, val_loss


fit_jit = jax.jit(fit, static_argnames=("model_config", "train_config"))
