"""Pairwise metrics of a reward model against float64 definitions."""
from __future__ import annotations

import numpy as np
import pytest

from arm_jax.errors import InputError
from arm_jax.model import evaluate
from arm_jax.model.config import TrainConfig
from arm_jax.workflow import labels as labels_lib


def test_pairwise_accuracy_and_split():
    assert evaluate.pairwise_accuracy(np.array([1.0, 0.0, 2.0, 1.0]), np.array([0.0, 1.0, 2.0, 0.5])) == pytest.approx(0.625)
    tr, va = labels_lib.split_labels(10, 0.2, 0)
    assert va.size == 2 and tr.size == 8 and set(tr) | set(va) == set(range(10))
    tr, va = labels_lib.split_labels(3, 0.1, 0)
    assert va.size == 1 and tr.size == 2
    tr, va = labels_lib.split_labels(1, 0.1, 0)
    assert va.size == 0 and tr.tolist() == [0]
    with pytest.raises(InputError, match="validation fraction must be in"):  # checked once, by the config
        TrainConfig(val_fraction=1.0)


def test_pairwise_log_loss():
    # gaps 0, log 3 and -log 3: -log sigmoid = log 2, log(4/3), log 4
    got = evaluate.pairwise_log_loss(np.array([1.0, np.log(3.0), 0.0]), np.array([1.0, 0.0, np.log(3.0)]))
    assert got == pytest.approx((np.log(2.0) + np.log(4.0 / 3.0) + np.log(4.0)) / 3)
    assert evaluate.pairwise_log_loss(np.array([800.0]), np.array([0.0])) == pytest.approx(0.0)  # no overflow
    assert evaluate.pairwise_log_loss(np.array([0.0]), np.array([800.0])) == pytest.approx(800.0)
    assert np.isnan(evaluate.pairwise_log_loss(np.zeros(0), np.zeros(0)))


def test_expected_calibration_error_by_hand():
    # Each comparison enters as (p, 1) and (1 - p, 0); bins of width 0.1. Entries:
    # bin 9: (.95, 1) -> -.05 | bin 0: (.05, 0) -> +.05 | bin 6: (.62, 1), (.65, 0) -> +.27
    # bin 3: (.38, 0), (.35, 1) -> -.27 | bin 8: (.85, 1) -> -.15 | bin 1: (.15, 0) -> +.15
    # ECE = (.05 + .05 + .27 + .27 + .15 + .15) / 8 = .1175
    assert evaluate.expected_calibration_error(np.array([0.95, 0.62, 0.35, 0.85])) == pytest.approx(0.1175)
    # the top-label form: confidences .95 (right), .62 (right), .65 (wrong), .85 (right)
    # in bins [.9, 1), [.6, .7), [.8, .9): (.05 + 2 * |.635 - .5| + .15) / 4 = .1175
    # calibrated: three winners at .75 and one comparison the model gave the loser .75
    assert evaluate.expected_calibration_error(np.array([0.75, 0.75, 0.75, 0.25])) == pytest.approx(0.0)
    # always sure and always right: 0; always sure and always wrong: 1; p = 1 falls in the last bin
    assert evaluate.expected_calibration_error(np.ones(3)) == 0.0
    assert evaluate.expected_calibration_error(np.zeros(3)) == 1.0
    assert np.isnan(evaluate.expected_calibration_error(np.zeros(0)))


def test_expected_calibration_error_equals_top_label_ece():
    p = np.random.default_rng(0).uniform(size=500)
    conf = np.maximum(p, 1 - p)
    right = (p > 0.5).astype(float)
    bins = np.minimum(((conf - 0.5) * 10).astype(int), 4)  # five bins of [.5, 1]
    top_label = sum(abs(np.sum(conf[bins == b] - right[bins == b])) for b in range(5)) / p.size
    assert evaluate.expected_calibration_error(p) == pytest.approx(top_label)


def test_pair_metrics():
    m = evaluate.pair_metrics(np.array([2.0, 0.0]), np.array([0.0, 1.0]))
    assert m.n == 2 and m.accuracy == 0.5
    assert m.log_loss == pytest.approx(np.mean(np.log1p(np.exp([-2.0, 1.0]))))
    assert m.ece == pytest.approx(evaluate.expected_calibration_error(1 / (1 + np.exp([-2.0, 1.0]))))
    assert evaluate.PairMetrics(0, float("nan"), 1.0, 0.5).as_dict() == {"n": 0, "accuracy": None, "log_loss": 1.0,
                                                                       "ece": 0.5}
