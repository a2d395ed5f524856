"""Fitting the Bradley–Terry reward model.

The labelled comparisons live in a fixed-capacity buffer of (winner, loser) item indices with
a count of filled rows, so a labelled set that grows round after round never changes a shape
and never recompiles. One fit is one ``lax.scan`` over optimiser steps from a fresh
initialisation; it is a pure function of a PRNG key, so ``jax.vmap(fit)`` trains many seeds
in one call.
"""
from __future__ import annotations

import dataclasses
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

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


def _fit(key, items, buffer, model_config, train_config, reliability=None):
    if model_config.depth == 0 and (train_config.early_stopping or train_config.linear_prior is not None):
        return _fit_linear(key, items, buffer, train_config)
    votes = votes_of(buffer, train_config)
    if votes is not None and votes.n_annotators and reliability is None:
        # Raters' reliabilities in two stages: fit with every rater alike, estimate the
        # reliabilities at those rewards (fit_nuisance), refit with them held fixed. Learning
        # them jointly with the MLP made the model worse than ignoring them
        # (benchmarks/bench_annotators.py, RESULTS.md).
        first, stats = _fit(key, items, buffer, model_config, dataclasses.replace(train_config, annotators=0))
        r = model_lib.reward(first, model_config, items[buffer.pairs.reshape(-1)]).reshape(-1, 2)
        start = {**initial_nuisance(votes), "log_nu": jnp.log(jnp.maximum(stats.tie, 1e-6))}
        reliability = fit_nuisance(r[:, 0] - r[:, 1], votes, start)["u"]
        return _fit(key, items, buffer, model_config, train_config, reliability)
    init_key, batch_key = jax.random.split(key)
    split_key = jax.random.fold_in(key, 7)

    def initial(params):
        # with votes the parameters are (model, nuisance: ν and the reliabilities)
        if votes is None:
            return params
        nuisance = initial_nuisance(votes)
        return params, (nuisance if reliability is None else {**nuisance, "u": reliability})

    params = initial(model_lib.init_params(init_key, model_config, items.shape[-1]))
    optimizer = _optimizer(train_config) if votes is None else _vote_optimizer(train_config, reliability is not None)
    opt_state = optimizer.init(params)
    b = train_config.batch_size
    steps = train_config.steps
    early = train_config.early_stopping
    if early:
        order, n_fit, n_val = split_rows(split_key, buffer, train_config.val_fraction, train_config.min_val_labels)
    else:
        order, n_fit, n_val = jnp.arange(buffer.capacity, dtype=jnp.int32), buffer.count, jnp.int32(0)
    n_rows = jnp.maximum(n_fit, 1)
    if train_config.max_epochs is None:
        active_steps = jnp.int32(steps)
    else:
        active_steps = jnp.ceil(train_config.max_epochs * n_rows / b).astype(jnp.int32)
        active_steps = jnp.clip(active_steps, min(train_config.min_steps, steps), steps)

    total_votes = None if votes is None else jnp.maximum(jnp.sum(votes.counts), 1.0)

    def loss_fn(p, batch_items, rows):
        if votes is None:
            r = model_lib.reward(p, model_config, batch_items)
            return jnp.mean(bt_loss(r[:b], r[b:]))
        model_p, nuisance = p
        r = model_lib.reward(model_p, model_config, batch_items)
        nll = likelihood.row_nll(
            r[:b] - r[b:], votes.counts[rows], row_scale(votes, nuisance)[rows], log_tie(votes, nuisance)
        )
        # the prior on the reliabilities, at the scale of one vote's loss
        return jnp.mean(nll) + likelihood.prior_nll(nuisance["u"]) / total_votes

    def make_step(order, n_rows, active_steps):
        """One AdamW step on a minibatch drawn (with replacement) from ``order[:n_rows]``;
        a no-op (weight decay included) at or past ``active_steps`` or with no rows."""

        def step(carry, xs):
            p, state = carry
            step_index, step_key = xs
            active = ((n_rows > 0) & (step_index < active_steps)).astype(jnp.float32)
            rows = order[jax.random.randint(step_key, (b,), 0, jnp.maximum(n_rows, 1))]
            pair = buffer.pairs[rows]
            batch_items = items[jnp.concatenate([pair[:, 0], pair[:, 1]])]
            loss, grads = jax.value_and_grad(loss_fn)(p, batch_items, rows)
            updates, state = optimizer.update(grads, state, p)
            updates = jax.tree_util.tree_map(lambda u: active * u, updates)
            return (optax.apply_updates(p, updates), state), loss * active

        return step

    step = make_step(order, n_fit, active_steps)

    step_keys = jax.random.split(batch_key, steps)
    taken = jnp.minimum(active_steps, steps) * (n_fit > 0)
    if not early:
        xs = (jnp.arange(steps, dtype=jnp.int32), step_keys)
        (params, _), losses = jax.lax.scan(step, (params, opt_state), xs)
        nan = jnp.float32(jnp.nan)
        epochs = taken.astype(jnp.float32) * b / n_rows
        taken = taken.astype(jnp.int32)
        params, tie, reliability = _finish_votes(params, votes, items, buffer, model_config, train_config)
        return params, FitStats(
            losses, taken, taken, epochs, n_fit, n_val, nan, nan, _default_prior(), tie, reliability
        )

    # Early stopping: chunks of ``eval_every`` steps, then the held-out BT loss; the best
    # parameters are kept (jnp.where) and training stops after ``patience`` evaluations
    # without improvement (after ``min_steps``) or at the step budget. A while_loop: under
    # vmap it runs until the last model stops, the stopped ones unchanged.
    every = train_config.eval_every
    n_chunks = -(-steps // every)
    val_cap = min(buffer.capacity, train_config.max_val_labels)
    val_pos = jnp.arange(val_cap, dtype=jnp.int32)
    val_rows = order[jnp.clip(n_fit + val_pos, 0, buffer.capacity - 1)]
    val_mask = val_pos < n_val
    val_pairs = buffer.pairs[val_rows]
    val_items = items[jnp.concatenate([val_pairs[:, 0], val_pairs[:, 1]])]

    def held_out(p):
        if votes is not None:
            model_p, nuisance = p
            r = model_lib.reward(model_p, model_config, val_items)
            gap = r[:val_cap] - r[val_cap:]
            sub = Votes(votes.counts[val_rows], votes.annotator[val_rows], votes.has_ties, votes.n_annotators)
            nll = vote_losses(gap, sub, nuisance)
            n_votes = jnp.sum(jnp.where(val_mask, jnp.sum(sub.counts, axis=-1), 0.0))
            loss = jnp.sum(jnp.where(val_mask, nll, 0.0)) / jnp.maximum(n_votes, 1e-6)
            hits, decided = vote_hits(gap, sub, val_mask)
            return loss, jnp.where(decided > 0, hits / jnp.maximum(decided, 1), jnp.nan)
        r = model_lib.reward(p, model_config, val_items)
        gap = r[:val_cap] - r[val_cap:]
        denom = jnp.maximum(jnp.sum(val_mask), 1)
        loss = jnp.sum(jnp.where(val_mask, bt_loss(gap, 0.0), 0.0)) / denom
        acc = jnp.sum(jnp.where(val_mask, (gap > 0) + 0.5 * (gap == 0), 0.0)) / denom
        return loss, acc

    pad = n_chunks * every - steps
    keys_padded = jnp.concatenate([step_keys, jnp.repeat(step_keys[-1:], pad, axis=0)]) if pad else step_keys

    class State(NamedTuple):
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

    def body(st: State) -> State:
        start = st.chunk * every
        idx = start + jnp.arange(every, dtype=jnp.int32)
        chunk_keys = jax.lax.dynamic_slice_in_dim(keys_padded, start, every)
        (p, state), losses = jax.lax.scan(step, (st.params, st.opt_state), (idx, chunk_keys))
        losses = jax.lax.dynamic_update_slice_in_dim(st.losses, losses, start, 0)  # (n_chunks · every,)
        end = jnp.minimum(start + every, active_steps)
        loss, acc = held_out(p)
        improved = (n_val > 0) & (loss < st.best_loss - train_config.min_delta)
        best = jax.tree_util.tree_map(lambda new, old: jnp.where(improved, new, old), p, st.best)
        bad = jnp.where(improved, 0, st.bad + 1)
        stop = (n_val > 0) & (bad >= train_config.patience) & (end >= train_config.min_steps)
        done = stop | (end >= active_steps)
        return State(
            st.chunk + 1, p, state, best,
            jnp.where(improved, loss, st.best_loss), jnp.where(improved, acc, st.best_acc),
            jnp.where(improved, end, st.best_step), bad, losses, done,
        )

    init = State(
        jnp.int32(0), params, opt_state, params, jnp.float32(jnp.inf), jnp.float32(jnp.nan),
        jnp.int32(0), jnp.int32(0), jnp.zeros(n_chunks * every, jnp.float32), n_fit <= 0,
    )
    st = jax.lax.while_loop(lambda st: ~st.done & (st.chunk < n_chunks), body, init)
    use_best = n_val > 0
    params = jax.tree_util.tree_map(lambda best, last: jnp.where(use_best, best, last), st.best, st.params)
    last_step = jnp.minimum(st.chunk * every, active_steps)
    steps_taken = jnp.where(use_best, st.best_step, last_step) * (n_fit > 0)
    val_loss = jnp.where(use_best, st.best_loss, jnp.nan)
    epochs = steps_taken.astype(jnp.float32) * b / n_rows
    steps_run = (last_step * (n_fit > 0)).astype(jnp.int32)
    if train_config.refit:
        # Refit from the same initialisation on every label (held-out ones included) for the
        # epochs the early stop chose; chunks in a while_loop, so only those steps run.
        all_rows = jnp.arange(buffer.capacity, dtype=jnp.int32)
        refit_steps = jnp.ceil(epochs * jnp.maximum(buffer.count, 1) / b).astype(jnp.int32)
        refit_steps = jnp.clip(refit_steps, min(train_config.min_steps, steps), steps)
        refit_step = make_step(all_rows, buffer.count, refit_steps)

        def refit_body(carry):
            chunk, p, state = carry
            idx = chunk * every + jnp.arange(every, dtype=jnp.int32)
            chunk_keys = jax.lax.dynamic_slice_in_dim(keys_padded, chunk * every, every)
            (p, state), _ = jax.lax.scan(refit_step, (p, state), (idx, chunk_keys))
            return chunk + 1, p, state

        p0 = initial(model_lib.init_params(init_key, model_config, items.shape[-1]))
        _, refitted, _ = jax.lax.while_loop(
            lambda c: (c[0] * every < refit_steps) & (n_val > 0), refit_body, (jnp.int32(0), p0, optimizer.init(p0))
        )
        params = jax.tree_util.tree_map(lambda r, e: jnp.where(n_val > 0, r, e), refitted, params)
    params, tie, reliability = _finish_votes(params, votes, items, buffer, model_config, train_config)
    return params, FitStats(
        st.losses[:steps], steps_run, steps_taken.astype(jnp.int32), epochs, n_fit, n_val, val_loss, st.best_acc,
        _default_prior(), tie, reliability,
    )


fit_jit = jax.jit(fit, static_argnames=("model_config", "train_config"))
