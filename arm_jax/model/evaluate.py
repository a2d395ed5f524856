"""TODO docstring."""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np


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
