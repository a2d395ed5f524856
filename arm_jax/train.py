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

from arm_jax import model as model_lib
from arm_jax.model import ModelConfig
from arm_jax.errors import InputError


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimiser settings for one fit (AdamW on the Bradley–Terry loss).

    steps: optimiser steps per fit (each a minibatch drawn from the filled buffer rows).
    batch_size: comparisons per minibatch (drawn with replacement).
    learning_rate, weight_decay: AdamW.
    max_epochs: optional cap on passes over the filled buffer: steps after the first
      ceil(max_epochs · count / batch_size) leave the parameters unchanged (the program still
      runs ``steps`` steps, so the shape is fixed). ``None`` (the paper's protocol) trains all
      ``steps``. A small labelled set trained for a fixed 1 000 steps is seen hundreds of
      times and its label noise is memorised; see benchmarks/RESULTS.md.
    """

    steps: int = 1000
    batch_size: int = 256
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    max_epochs: float | None = None

    def __post_init__(self):
        if self.steps < 1:
            raise InputError(f"training steps must be >= 1, got {self.steps}")
        if self.batch_size < 1:
            raise InputError(f"training batch size must be >= 1, got {self.batch_size}")
        if not self.learning_rate > 0:
            raise InputError(f"learning rate must be > 0, got {self.learning_rate}")
        if self.weight_decay < 0:
            raise InputError(f"weight decay must be >= 0, got {self.weight_decay}")
        if self.max_epochs is not None and not self.max_epochs > 0:
            raise InputError(f"max epochs must be > 0, got {self.max_epochs}")


class LabelBuffer(NamedTuple):
    """Fixed-capacity store of labelled comparisons.

    pairs: (C, 2) int32, row = (winner item index, loser item index); rows >= count unused.
    count: () int32, number of filled rows.
    overflow: () bool, set (and kept) when an append did not fit: those labels were not
      written. Outside ``jit`` :func:`append` raises instead; the experiment checks the flag.
    """

    pairs: jax.Array
    count: jax.Array
    overflow: jax.Array | bool = False

    @property
    def capacity(self) -> int:
        return self.pairs.shape[0]

    @property
    def mask(self) -> jax.Array:
        """(C,) bool: which rows are filled."""
        return jnp.arange(self.capacity) < self.count


def empty_buffer(capacity: int) -> LabelBuffer:
    return LabelBuffer(jnp.zeros((capacity, 2), jnp.int32), jnp.zeros((), jnp.int32), jnp.zeros((), bool))


def append(buffer: LabelBuffer, winner: jax.Array, loser: jax.Array) -> LabelBuffer:
    """Write ``k`` new comparisons after the filled rows (jit-able; k is static).

    Labels that do not fit are never dropped silently: with concrete values (outside ``jit``)
    an :class:`~arm_jax.errors.InputError` names the sizes; inside ``jit`` nothing is written,
    ``count`` stays and ``overflow`` is set, for the caller to check.
    """
    new = jnp.stack([winner, loser], axis=-1).astype(jnp.int32)
    k = new.shape[0]
    too_many = buffer.count + k > buffer.capacity
    if not isinstance(too_many, jax.core.Tracer) and bool(too_many):
        raise InputError(
            f"label buffer of capacity {buffer.capacity} holds {int(buffer.count)} comparisons; "
            f"{k} more do not fit"
        )
    written = jax.lax.dynamic_update_slice(buffer.pairs, new, (buffer.count, jnp.int32(0)))
    pairs = jnp.where(too_many, buffer.pairs, written)
    count = jnp.where(too_many, buffer.count, buffer.count + k)
    return LabelBuffer(pairs, count, jnp.logical_or(buffer.overflow, too_many))


def buffer_from_pairs(winner, loser, capacity: int | None = None) -> LabelBuffer:
    """A buffer holding the given comparisons (host-side convenience)."""
    winner = jnp.asarray(winner, jnp.int32)
    loser = jnp.asarray(loser, jnp.int32)
    n = winner.shape[0]
    capacity = n if capacity is None else capacity
    if capacity < n:
        raise InputError(f"buffer capacity {capacity} is smaller than the {n} comparisons")
    return append(empty_buffer(capacity), winner, loser)


def bt_loss(reward_winner: jax.Array, reward_loser: jax.Array) -> jax.Array:
    """Per-comparison Bradley–Terry negative log-likelihood −log σ(r_w − r_l), stable for any gap."""
    return -jax.nn.log_sigmoid(reward_winner - reward_loser)


def _optimizer(config: TrainConfig):
    return optax.adamw(config.learning_rate, weight_decay=config.weight_decay)


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
    Returns ``(params, losses: (steps,) float32)``. Pure and jit/vmap-able; the configs are
    static (hashable frozen dataclasses).
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



def _fit(key, items, buffer, model_config, train_config):
    init_key, batch_key = jax.random.split(key)
    params = model_lib.init_params(init_key, model_config, items.shape[-1])
    optimizer = _optimizer(train_config)
    opt_state = optimizer.init(params)
    has_data = (buffer.count > 0).astype(jnp.float32)
    n_filled = jnp.maximum(buffer.count, 1)
    b = train_config.batch_size
    if train_config.max_epochs is None:
        active_steps = jnp.int32(train_config.steps)
    else:
        active_steps = jnp.ceil(train_config.max_epochs * n_filled / b).astype(jnp.int32)

    def loss_fn(p, batch_items):
        r = model_lib.reward(p, model_config, batch_items)
        return has_data * jnp.mean(bt_loss(r[:b], r[b:]))

    def step(carry, xs):
        p, state = carry
        step_index, step_key = xs
        active = has_data * (step_index < active_steps).astype(jnp.float32)
        rows = jax.random.randint(step_key, (b,), 0, n_filled)
        pair = buffer.pairs[rows]
        batch_items = items[jnp.concatenate([pair[:, 0], pair[:, 1]])]
        loss, grads = jax.value_and_grad(loss_fn)(p, batch_items)
        updates, state = optimizer.update(grads, state, p)
        # no labels (or past the epoch cap): parameters stay, weight decay included
        updates = jax.tree_util.tree_map(lambda u: active * u, updates)
        return (optax.apply_updates(p, updates), state), loss

    xs = (jnp.arange(train_config.steps, dtype=jnp.int32), jax.random.split(batch_key, train_config.steps))
    (params, _), losses = jax.lax.scan(step, (params, opt_state), xs)
    return params, losses


fit_jit = jax.jit(fit, static_argnames=("model_config", "train_config"))
