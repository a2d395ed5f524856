"""The reward model on a pool: the fit on labelled rows, and item features in chunks."""
from __future__ import annotations

import jax
import numpy as np
import pytest

from arm_jax.model import buffer as buffer_lib
from arm_jax.model import fit as train_lib
from arm_jax.model import network as model_lib
from arm_jax.model.config import TrainConfig
from arm_jax.model.network import ModelConfig
from arm_jax.workflow import fitting

MODEL = ModelConfig(depth=2, width=8)
TRAIN = TrainConfig(steps=30, batch_size=16)


# ----------------------------------------------------------------------------- the model


def test_fit_on_labels_equals_fit_on_the_whole_pool():
    x = np.random.default_rng(0).normal(size=(30, 5)).astype(np.float32)
    w = np.array([3, 7, 7, 20, 1]), np.array([4, 8, 29, 0, 2])
    params, report = fitting.fit_on_labels(5, x, w[0], w[1], MODEL, TRAIN)
    buffer = buffer_lib.buffer_from_pairs(w[0], w[1])
    ref, stats = train_lib.fit_jit(fitting.train_key(5), x, buffer, model_config=MODEL, train_config=TRAIN)
    for p, q in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(ref)):
        np.testing.assert_allclose(p, q, rtol=1e-5, atol=1e-6)
    assert report.as_dict() == fitting.fit_report(stats, TRAIN).as_dict()  # NaN -> None: comparable
    assert report.steps_taken == int(stats.steps_taken) and report.n_fit + report.n_val == 5


def test_select_and_the_experiment_fit_the_same_linear_model_on_the_same_votes():
    """The two training paths of a study (``select``'s, on the labelled rows in a bucket, and the
    experiment's, on its whole buffer of capacity rows with the unfilled ones masked) give one
    model for one set of vote counts with ties: the exact linear fit, its prior and tie strength."""
    import jax.numpy as jnp

    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 6)).astype(np.float32)
    a, b = rng.integers(0, 40, 60), rng.integers(0, 40, 60)
    a, b = a[a != b][:40], b[a != b][:40]
    counts = np.eye(3, dtype=np.float32)[rng.choice(3, size=a.size, p=[0.45, 0.35, 0.2])]  # a wins, b wins, tie
    linear = ModelConfig(depth=0)
    params, report = fitting.fit_on_labels(2, x, a, b, linear, TrainConfig(), counts, None)
    buffer = buffer_lib.append(buffer_lib.empty_buffer(100, votes=True), jnp.asarray(a, jnp.int32),
                               jnp.asarray(b, jnp.int32), jnp.asarray(counts), jnp.full(a.size, -1, jnp.int32))
    ref, stats = train_lib.fit_jit(fitting.train_key(2), jnp.asarray(x), buffer, linear, TrainConfig())
    head, ref_head = (np.asarray(model_lib.head(p)) for p in (params, ref))
    np.testing.assert_allclose(head, ref_head, rtol=1e-5, atol=1e-5 * np.abs(ref_head).max())
    assert report.prior_precision == pytest.approx(float(stats.prior_precision), rel=1e-5)
    assert report.tie == pytest.approx(float(stats.tie), rel=1e-5, abs=1e-6)


def test_no_labels_gives_the_seeded_initialisation():
    x = np.zeros((4, 3), np.float32)
    empty = np.zeros(0, np.int64)
    params, report = fitting.fit_on_labels(2, x, empty, empty, MODEL, TRAIN)
    assert report.steps_taken == 0 and report.n_fit == 0 and np.isnan(report.val_accuracy)
    ref, _ = train_lib.fit_jit(fitting.train_key(2), jax.numpy.asarray(x), buffer_lib.empty_buffer(1), MODEL, TrainConfig(steps=1))
    for p, q in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(ref)):
        np.testing.assert_array_equal(p, q)


def test_item_features_in_chunks_match_one_forward_pass(monkeypatch):
    monkeypatch.setattr(fitting, "FEATURE_CHUNK", 16)
    x = np.random.default_rng(1).normal(size=(37, 6))
    params = model_lib.init_params(jax.random.PRNGKey(0), MODEL, 6)
    phi, r = fitting.item_features(params, MODEL, x)
    ref_phi, ref_r = model_lib.features_and_reward(params, MODEL, x.astype(np.float32))
    np.testing.assert_allclose(phi, ref_phi, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(r, ref_r, rtol=1e-5, atol=1e-6)
    rows = np.array([36, 0, 5])
    phi_rows, _ = fitting.item_features(params, MODEL, x, rows)
    np.testing.assert_allclose(phi_rows, np.asarray(ref_phi)[rows], rtol=1e-5, atol=1e-6)
