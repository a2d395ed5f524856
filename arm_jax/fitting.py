"""The reward model on a pool: fit on labelled rows, features and rewards of items.

Randomness comes from one integer seed: the model's initialisation and minibatches use
``fold_in(PRNGKey(seed), 0)`` (:func:`train_key`), a strategy's key ``fold_in(PRNGKey(seed),
1)`` (:func:`select_key`). So ``select --seed S`` and ``train --seed S`` (after its refit on
all labels) train the very same model on the same labels.

Features are checked: a row whose features or reward are not finite (float32 overflow from
embeddings of huge magnitude, e.g. ±3e38) raises :class:`~arm_jax.errors.InputError` naming
the rows, as does a fit that ends with non-finite parameters.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from arm_jax import model as model_lib
from arm_jax import train as train_lib
from arm_jax.errors import InputError
from arm_jax.model import ModelConfig
from arm_jax.pool_io import Pool
from arm_jax.train import TrainConfig

_FEATURE_CHUNK = 4096  # rows per jit-compiled forward pass


def train_key(seed: int) -> jax.Array:
    return jax.random.fold_in(jax.random.PRNGKey(seed), 0)


def select_key(seed: int) -> jax.Array:
    return jax.random.fold_in(jax.random.PRNGKey(seed), 1)


def initial_params(seed: int, model_config: ModelConfig, input_dim: int):
    """The parameters :func:`fit_on_labels` starts from (what ``fit`` returns with no labels)."""
    init_key, _ = jax.random.split(train_key(seed))
    return _init_jit(init_key, model_config, int(input_dim))


_init_jit = jax.jit(model_lib.init_params, static_argnums=(1, 2))


def _bucket(n: int) -> int:
    """Round a size up (powers of two up to 8192, then multiples of 8192) so that labelled
    sets growing round after round reuse one compiled fit; padding never changes a result
    (padded rows are never drawn)."""
    if n <= 8192:
        return max(16, 1 << max(0, int(n) - 1).bit_length())
    return -(-int(n) // 8192) * 8192


def fit_on_labels(
    seed: int,
    embeddings: np.ndarray,
    winner: np.ndarray,
    loser: np.ndarray,
    model_config: ModelConfig,
    train_config: TrainConfig,
):
    """Train a fresh model (``train.fit_jit``) on the comparisons winner[i] ≻ loser[i].

    Only the rows that appear in a label are read and sent to the device (the indices are
    remapped, the result is the same as fitting on the whole pool), so a memory-mapped pool
    far larger than the labelled set costs nothing.
    With no labels the seeded initial parameters are returned.
    """
    if winner.size == 0:
        return initial_params(seed, model_config, embeddings.shape[1])
    rows, inverse = np.unique(np.concatenate([winner, loser]), return_inverse=True)
    items = np.zeros((_bucket(rows.size), embeddings.shape[1]), np.float32)
    items[: rows.size] = embeddings[rows]
    n_labels = winner.shape[0]
    buffer = train_lib.buffer_from_pairs(inverse[:n_labels], inverse[n_labels:], capacity=_bucket(n_labels))
    items = jnp.asarray(items)
    params, _ = train_lib.fit_jit(train_key(seed), items, buffer, model_config=model_config, train_config=train_config)
    return jax.block_until_ready(params)


def check_fit(params, pool: Pool, rows: np.ndarray) -> None:
    """InputError when a fit on ``rows`` of the pool ended with non-finite parameters."""
    if all(bool(np.isfinite(np.asarray(leaf)).all()) for leaf in jax.tree_util.tree_leaves(params)):
        return
    rows = np.unique(np.asarray(rows, np.int64))
    biggest = np.array([float(np.max(np.abs(np.asarray(pool.embeddings[r], np.float64)))) for r in rows])
    top = rows[np.argsort(-biggest, kind="stable")[:3]]
    raise InputError(
        f"{pool.path}: training on the labels ended with non-finite parameters (embeddings too large for "
        f"float32, or --lr too high); the labelled items of largest magnitude: {pool.describe_rows(top)}, "
        f"max |x| = {biggest.max():.3g}"
    )


def check_features(pool: Pool, rows: np.ndarray | None, phi: np.ndarray, rew: np.ndarray) -> None:
    """InputError naming the pool rows whose features or reward are NaN/inf."""
    bad = ~(np.isfinite(phi).all(axis=1) & np.isfinite(rew))
    if not bad.any():
        return
    local = np.flatnonzero(bad)
    pool_rows = local if rows is None else np.asarray(rows)[local]
    raise InputError(
        f"{pool.path}: the reward model's features of {local.size} item(s) are not finite: "
        f"{pool.describe_rows(pool_rows)}; their embeddings are too large for float32 arithmetic "
        "(rescale the embeddings)"
    )


@functools.lru_cache(maxsize=8)
def _forward_fn(model_config: ModelConfig):
    return jax.jit(lambda params, x: model_lib.features_and_reward(params, model_config, x))


def item_features(params, model_config: ModelConfig, embeddings: np.ndarray, rows: np.ndarray | None = None):
    """Φ (n, H) float32 and r (n,) float32 of ``embeddings[rows]`` (all rows by default).

    Streams fixed-size chunks (one compilation), so a memory-mapped pool is never loaded whole.
    """
    n_rows = embeddings.shape[0] if rows is None else int(rows.shape[0])
    width = model_config.width
    phi = np.empty((n_rows, width), np.float32)
    rew = np.empty((n_rows,), np.float32)
    if n_rows == 0:
        return phi, rew
    chunk = min(_FEATURE_CHUNK, _bucket(n_rows))
    forward = _forward_fn(model_config)
    for start in range(0, n_rows, chunk):
        stop = min(start + chunk, n_rows)
        block = embeddings[start:stop] if rows is None else embeddings[rows[start:stop]]
        block = np.asarray(block, np.float32)
        if block.shape[0] < chunk:
            block = np.concatenate([block, np.zeros((chunk - block.shape[0], block.shape[1]), np.float32)])
        f, r = forward(params, jnp.asarray(block))
        phi[start:stop] = np.asarray(f)[: stop - start]
        rew[start:stop] = np.asarray(r)[: stop - start]
    return phi, rew


def item_rewards(params, model_config: ModelConfig, embeddings: np.ndarray) -> np.ndarray:
    """Reward of every item: (N,) float32."""
    return item_features(params, model_config, embeddings)[1]


def pairwise_accuracy(reward_winner: np.ndarray, reward_loser: np.ndarray) -> float:
    """Fraction of comparisons the rewards order correctly (an exact tie counts 1/2)."""
    if reward_winner.size == 0:
        return float("nan")
    return float(np.mean((reward_winner > reward_loser) + 0.5 * (reward_winner == reward_loser)))
