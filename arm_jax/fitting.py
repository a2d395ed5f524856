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
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from arm_jax import model as model_lib
from arm_jax import progress as progress_lib
from arm_jax import train as train_lib
from arm_jax.data import release_pages
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


class FitReport(NamedTuple):
    """What one fit did, as host values (:class:`arm_jax.train.FitStats` without the losses).

    steps_run: optimiser steps run; steps_taken: steps the returned parameters were trained
    for (the best held-out evaluation when early stopping); epochs: steps_taken · batch size /
    n_fit, passes over the fitted labels; n_fit, n_val: labels fitted and held out by early
    stopping (n_val 0 with the fixed schedule or too few labels); val_loss, val_accuracy:
    held-out Bradley–Terry log-loss and pairwise accuracy of the early-stopped parameters
    (NaN when nothing was held out); early_stopping, refit: the schedule; refitted: the
    returned parameters were refit on all labels (held-out ones too) after early stopping;
    prior_precision: λ of the head's Gaussian prior (chosen by the linear model's exact fit,
    whose steps count Newton steps and whose epochs are NaN); prior_rule: how the exact fit
    chose it ("cross-validation", "evidence", "held-out" or "fixed"; meaningless otherwise).
    """

    steps_run: int
    steps_taken: int
    epochs: float
    n_fit: int
    n_val: int
    val_loss: float
    val_accuracy: float
    early_stopping: bool
    refit: bool
    prior_precision: float = float("nan")
    prior_rule: str = ""
    tie: float = 0.0
    reliability: tuple = ()

    @property
    def exact_linear(self) -> bool:
        """The linear model's exact fit (epochs NaN: no passes over the data; see train._fit_linear)."""
        return self.epochs != self.epochs

    @property
    def refitted(self) -> bool:
        return bool(self.early_stopping and self.refit and self.n_val > 0)

    def as_dict(self) -> dict:
        """JSON-ready (NaN becomes None), ``refitted`` included; ``tie`` and ``reliability`` only
        when the fit had ties or raters (so a plain fit's record is what it always was)."""
        out = {k: finite_or_none(v) for k, v in self._asdict().items()}
        out["reliability"] = list(self.reliability)
        if not self.tie and not self.reliability:  # Bradley–Terry labels: the fields of before
            del out["tie"], out["reliability"]
        out["refitted"] = self.refitted
        return out


def fit_report(stats, train_config: TrainConfig) -> FitReport:
    """The host-side :class:`FitReport` of one (unbatched) :class:`arm_jax.train.FitStats`."""
    s = jax.device_get(stats)
    return FitReport(
        int(s.steps_run), int(s.steps_taken), float(s.epochs), int(s.n_fit), int(s.n_val),
        float(s.val_loss), float(s.val_accuracy), bool(train_config.early_stopping), bool(train_config.refit),
        float(s.prior_precision),
        "fixed" if train_config.linear_prior is not None else train_config.linear_prior_rule,
        float(s.tie), tuple(float(q) for q in np.asarray(s.reliability).ravel()),
    )


def fit_on_labels(
    seed: int,
    embeddings: np.ndarray,
    winner: np.ndarray,
    loser: np.ndarray,
    model_config: ModelConfig,
    train_config: TrainConfig,
    counts: np.ndarray | None = None,
    annotator: np.ndarray | None = None,
):
    """Train a fresh model (``train.fit_jit``) on the comparisons winner[i] ≻ loser[i].

    With ``counts`` (n, 3) (and ``annotator`` (n,)), row i is the pair (winner[i], loser[i])
    with those votes and that rater (:class:`arm_jax.train.LabelBuffer`), fitted with
    Davidson's likelihood and ``train_config.annotators`` reliabilities.

    Returns ``(params, report)``: the trained parameters and a :class:`FitReport` (the epoch
    training stopped at, the early-stopping hold-out's accuracy and log-loss).
    Only the rows that appear in a label are read and sent to the device (the indices are
    remapped, the result is the same as fitting on the whole pool), so a memory-mapped pool
    far larger than the labelled set costs nothing.
    With no labels the seeded initial parameters are returned (a report of zero steps).
    """
    if winner.size == 0:
        nan = float("nan")
        report = FitReport(0, 0, 0.0, 0, 0, nan, nan, bool(train_config.early_stopping), bool(train_config.refit))
        return initial_params(seed, model_config, embeddings.shape[1]), report
    rows, inverse = np.unique(np.concatenate([winner, loser]), return_inverse=True)
    items = np.zeros((_bucket(rows.size), embeddings.shape[1]), np.float32)
    items[: rows.size] = embeddings[rows]
    n_labels = winner.shape[0]
    if counts is None and annotator is None:
        buffer = train_lib.buffer_from_pairs(inverse[:n_labels], inverse[n_labels:], capacity=_bucket(n_labels))
    else:
        counts = np.tile(np.float32([1, 0, 0]), (n_labels, 1)) if counts is None else counts
        annotator = np.full(n_labels, -1, np.int32) if annotator is None else annotator
        buffer = train_lib.buffer_from_pairs(
            inverse[:n_labels], inverse[n_labels:], capacity=_bucket(n_labels), counts=counts, annotator=annotator
        )
    items = jnp.asarray(items)
    params, stats = train_lib.fit_jit(train_key(seed), items, buffer, model_config=model_config, train_config=train_config)
    return jax.block_until_ready(params), fit_report(stats, train_config)


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


def item_features(
    params, model_config: ModelConfig, embeddings: np.ndarray, rows: np.ndarray | None = None, progress: bool = False
):
    """Φ (n, H) float32 and r (n,) float32 of ``embeddings[rows]`` (all rows by default).

    Streams fixed-size chunks (one compilation), so a memory-mapped pool is never loaded whole.
    ``progress``: a progress bar over the chunks at a terminal (:mod:`arm_jax.progress`).
    """
    n_rows = embeddings.shape[0] if rows is None else int(rows.shape[0])
    width = model_config.feature_dim(embeddings.shape[1])
    phi = np.empty((n_rows, width), np.float32)
    rew = np.empty((n_rows,), np.float32)
    if n_rows == 0:
        return phi, rew
    chunk = min(_FEATURE_CHUNK, _bucket(n_rows))
    forward = _forward_fn(model_config)
    starts = range(0, n_rows, chunk)
    for start in progress_lib.track(starts, len(starts), f"features of {n_rows} items", on=progress and len(starts) > 4):
        stop = min(start + chunk, n_rows)
        block = embeddings[start:stop] if rows is None else embeddings[rows[start:stop]]
        block = np.asarray(block, np.float32)
        if block.shape[0] < chunk:
            block = np.concatenate([block, np.zeros((chunk - block.shape[0], block.shape[1]), np.float32)])
        f, r = forward(params, jnp.asarray(block))
        release_pages(embeddings)  # a memory-mapped pool: keep only this chunk resident
        phi[start:stop] = np.asarray(f)[: stop - start]
        rew[start:stop] = np.asarray(r)[: stop - start]
    return phi, rew


def finite_or_none(value):
    """A float that is NaN or infinite becomes None (JSON has neither); other values pass."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def sigmoid(z, dtype=np.float32) -> np.ndarray:
    """σ(z) on the host in ``dtype``, stable for any z (via tanh)."""
    z = np.asarray(z, dtype)
    return (0.5 * (1.0 + np.tanh(0.5 * z))).astype(dtype)


def pairwise_accuracy(reward_winner: np.ndarray, reward_loser: np.ndarray) -> float:
    """Fraction of comparisons the rewards order correctly (an exact tie counts 1/2)."""
    if reward_winner.size == 0:
        return float("nan")
    return float(np.mean((reward_winner > reward_loser) + 0.5 * (reward_winner == reward_loser)))


def pairwise_log_loss(reward_winner: np.ndarray, reward_loser: np.ndarray) -> float:
    """Mean Bradley–Terry log-loss −log σ(r_w − r_l) of the comparisons (float64, stable)."""
    if reward_winner.size == 0:
        return float("nan")
    gap = np.asarray(reward_winner, np.float64) - np.asarray(reward_loser, np.float64)
    return float(np.mean(np.logaddexp(0.0, -gap)))


def expected_calibration_error(p_winner: np.ndarray, n_bins: int = 10) -> float:
    """Expected calibration error of predicted probabilities P(winner ≻ loser).

    A comparison has no natural orientation, so each one enters twice: as the prediction
    ``p`` of an event that happened (outcome 1) and as ``1 − p`` of one that did not
    (outcome 0). The predictions are put in ``n_bins`` equal-width bins of [0, 1] (a value
    of exactly 1 in the last bin) and ECE = Σ_bins (n_bin / n) · |mean prediction − mean
    outcome|. For an even ``n_bins`` this equals the usual top-label ECE with confidence
    max(p, 1 − p) over ``n_bins / 2`` bins of [0.5, 1] (but for values on a bin edge).
    NaN for no comparisons.
    """
    p = np.asarray(p_winner, np.float64).reshape(-1)
    if p.size == 0:
        return float("nan")
    pred = np.concatenate([p, 1.0 - p])
    outcome = np.concatenate([np.ones_like(p), np.zeros_like(p)])
    bins = np.clip(np.floor(pred * n_bins).astype(np.int64), 0, n_bins - 1)
    gap = np.bincount(bins, weights=pred - outcome, minlength=n_bins)
    return float(np.sum(np.abs(gap)) / pred.size)


class PairMetrics(NamedTuple):
    """How well rewards predict a set of comparisons."""

    n: int
    accuracy: float
    log_loss: float
    ece: float

    def as_dict(self) -> dict:
        return {k: finite_or_none(v) for k, v in self._asdict().items()}


def pair_metrics(reward_winner: np.ndarray, reward_loser: np.ndarray) -> PairMetrics:
    """Pairwise accuracy, log-loss and ECE (:func:`expected_calibration_error`) of comparisons."""
    rw = np.asarray(reward_winner, np.float64)
    rl = np.asarray(reward_loser, np.float64)
    p_winner = sigmoid(rw - rl, np.float64)  # σ(r_w − r_l)
    return PairMetrics(
        int(rw.size), pairwise_accuracy(rw, rl), pairwise_log_loss(rw, rl), expected_calibration_error(p_winner)
    )
