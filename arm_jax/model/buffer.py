"""TODO docstring."""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from arm_jax.errors import InputError


class LabelBuffer(NamedTuple):
    """Fixed-capacity store of labelled comparisons.

    pairs: (C, 2) int32, row = (winner item index, loser item index); rows >= count unused.
    count: () int32, number of filled rows.
    overflow: () bool, set (and kept) when an append did not fit: those labels were not
      written. Outside ``jit`` :func:`append` raises instead; the experiment checks the flag.
    counts: None (every row one decided label: ``pairs[:, 0]`` won), or (C, 3) float32 votes
      of each row for ``pairs[:, 0]``, for ``pairs[:, 1]`` and ties (a tie is (0, 0, 1),
      aggregated votes (7, 3, 0), a soft label p (p, 1 − p, 0); :mod:`arm_jax.model.likelihood`).
    annotator: None, or (C,) int32 rater of each row (−1: unknown; see ``TrainConfig.annotators``).
    """

    pairs: jax.Array
    count: jax.Array
    overflow: jax.Array | bool = False
    counts: jax.Array | None = None
    annotator: jax.Array | None = None

    @property
    def capacity(self) -> int:
        return self.pairs.shape[0]

    @property
    def mask(self) -> jax.Array:
        """(C,) bool: which rows are filled."""
        return jnp.arange(self.capacity) < self.count


def empty_buffer(capacity: int, votes: bool = False) -> LabelBuffer:
    """An empty buffer; ``votes``: with per-row vote counts and raters (``counts``, ``annotator``)."""
    if not votes:
        return LabelBuffer(jnp.zeros((capacity, 2), jnp.int32), jnp.zeros((), jnp.int32), jnp.zeros((), bool))
    return LabelBuffer(
        jnp.zeros((capacity, 2), jnp.int32), jnp.zeros((), jnp.int32), jnp.zeros((), bool),
        jnp.zeros((capacity, 3), jnp.float32), jnp.full((capacity,), -1, jnp.int32),
    )


def append(
    buffer: LabelBuffer, winner: jax.Array, loser: jax.Array, counts: jax.Array | None = None,
    annotator: jax.Array | None = None,
) -> LabelBuffer:
    """Write ``k`` new comparisons after the filled rows (jit-able; k is static).

    For a buffer with votes, ``counts`` (k, 3) (default: one decided vote, (1, 0, 0)) and
    ``annotator`` (k,) (default −1) go with them.

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
    extra = {}
    if buffer.counts is not None:
        counts = jnp.tile(jnp.asarray([1.0, 0.0, 0.0], jnp.float32), (k, 1)) if counts is None else counts
        annotator = jnp.full((k,), -1, jnp.int32) if annotator is None else annotator
        new_counts = jax.lax.dynamic_update_slice(buffer.counts, counts.astype(jnp.float32), (buffer.count, jnp.int32(0)))
        new_ann = jax.lax.dynamic_update_slice(buffer.annotator, annotator.astype(jnp.int32), (buffer.count,))
        extra = dict(
            counts=jnp.where(too_many, buffer.counts, new_counts), annotator=jnp.where(too_many, buffer.annotator, new_ann)
        )
    elif counts is not None or annotator is not None:
        raise InputError("this label buffer has no votes or raters: make it with empty_buffer(capacity, votes=True)")
    return LabelBuffer(pairs, count, jnp.logical_or(buffer.overflow, too_many), **extra)


def buffer_from_pairs(winner, loser, capacity: int | None = None, counts=None, annotator=None) -> LabelBuffer:
    """A buffer holding the given comparisons (host-side convenience); with ``counts``
    (n, 3) and/or ``annotator`` (n,), a buffer with votes (:class:`LabelBuffer`)."""
    winner = jnp.asarray(winner, jnp.int32)
    loser = jnp.asarray(loser, jnp.int32)
    n = winner.shape[0]
    capacity = n if capacity is None else capacity
    if capacity < n:
        raise InputError(f"buffer capacity {capacity} is smaller than the {n} comparisons")
    votes = counts is not None or annotator is not None
    return append(
        empty_buffer(capacity, votes), winner, loser,
        None if counts is None else jnp.asarray(counts, jnp.float32),
        None if annotator is None else jnp.asarray(annotator, jnp.int32),
    )


def split_rows(key, buffer: LabelBuffer, val_fraction: float, min_val: int = 0):
    """A seeded split of the filled rows into fitted and held-out ones, with fixed shapes.

    Each filled row is held out independently with probability ``val_fraction`` (none when
    the expected count ``val_fraction · count`` is below ``min_val``). Returns ``(order,
    n_fit, n_val)``: ``order`` (C,) int32 puts the fitted rows first (in random order), then
    the held-out rows, then the unfilled ones.
    """
    c = buffer.capacity
    u = jax.random.uniform(key, (c,))
    filled = buffer.mask
    enough = val_fraction * buffer.count.astype(jnp.float32) >= max(min_val, 1)
    held = filled & (u < val_fraction) & enough
    # never hold out every label
    held = held & (jnp.sum(held) < buffer.count)
    group = jnp.where(held, 1.0, jnp.where(filled, 0.0, 2.0))
    order = jnp.argsort(group + u, stable=True).astype(jnp.int32)
    n_val = jnp.sum(held).astype(jnp.int32)
    return order, buffer.count - n_val, n_val
