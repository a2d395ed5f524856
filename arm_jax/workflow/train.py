"""TODO docstring."""
from __future__ import annotations

import dataclasses
import os
import time
from typing import NamedTuple

import numpy as np

from arm_jax.errors import InputError
from arm_jax.model.config import TrainConfig
from arm_jax.model.evaluate import PairMetrics, pair_metrics
from arm_jax.model.network import ModelConfig
from arm_jax.runtime import distributed
from arm_jax.runtime import files as io_lib
from arm_jax.workflow.checkpoint import save_model
from arm_jax.workflow.fitting import (
    FitReport,
    Log,
    _describe_labels,
    _json_float,
    _load_val_labels,
    _quiet,
    _schedule,
    _train_config_record,
    check_features,
    fit_training_set,
    item_features,
    log_raters,
    training_set,
)
from arm_jax.workflow.labels import (
    labelled_keys,
    load_labels,
    split_labels,
)
from arm_jax.workflow.pool import load_pool

# ----------------------------------------------------------------------------- train


class TrainResult(NamedTuple):
    """What ``train`` measured.

    n_train, n_val: labels fitted and held out (by early stopping inside the fit, or by the
    fixed schedule's ``val_fraction`` split); val_accuracy, val_loss: pairwise accuracy and
    Bradley–Terry log-loss on the held-out ones (NaN when none); held_out: where they come
    from, ``"early-stopping"``, ``"cross-validation"`` (the linear model's prior, every label
    held out once), ``"split"`` or None; train_accuracy: the saved model's
    accuracy on every label of the labels file (n_trained_on of which it was trained on);
    fit: the saved model's :class:`~arm_jax.workflow.fitting.FitReport`; val: accuracy, log-loss and
    ECE on ``--val-labels`` (None without), n_val_overlap of whose pairs are in the labels.
    """

    n_items: int
    n_labels: int
    n_ties: int
    n_train: int
    n_val: int
    train_accuracy: float
    val_accuracy: float
    refit: bool
    timings: dict
    val_loss: float = float("nan")
    held_out: str | None = None
    n_trained_on: int = 0
    fit: FitReport | None = None
    val: PairMetrics | None = None
    n_val_overlap: int = 0
    n_soft: int = 0


def train_model(
    pool_path,
    labels_path,
    out_path,
    val_fraction: float | None = None,
    refit: bool = True,
    seed: int = 0,
    model_config: ModelConfig | None = None,
    train_config: TrainConfig | None = None,
    log: Log = _quiet,
    val_labels_path=None,
    fit_raters: bool = True,
) -> TrainResult:
    """Fit on the labels, measure held-out accuracy and log-loss, save the model (``train``).

    ``val_fraction`` (default: ``train_config.val_fraction``) of the labels is held out.
    With early stopping (``train_config.early_stopping``) the fit holds them out itself, stops
    at the best held-out log-loss and, with ``refit``, trains again from the same
    initialisation on all labels for as many epochs; the held-out numbers are the
    early-stopped model's. With the fixed schedule a seeded split (``default_rng([seed, 3])``)
    is held out here, the model trained on the rest and measured, then (``refit``) trained
    again on all labels with the same seed, exactly the model ``select --seed`` trains.
    Without ``refit`` the model the held-out numbers describe is saved.
    ``val_labels_path``: comparisons kept for evaluation only (never trained on); the saved
    model's accuracy, log-loss and ECE on them are reported and stored in the model file.
    """
    model_config = model_config or ModelConfig()
    train_config = train_config or TrainConfig()
    if val_fraction is not None:
        if not 0.0 <= val_fraction < 1.0:
            raise InputError(f"--val-fraction must be in [0, 1), got {val_fraction}")
        train_config = dataclasses.replace(train_config, val_fraction=float(val_fraction))
    early = bool(train_config.early_stopping)
    if early:
        train_config = dataclasses.replace(train_config, refit=bool(refit))
    distributed.on_writer(lambda: io_lib.check_output_file(
        out_path, {"--pool": pool_path, "--labels": labels_path, "--val-labels": val_labels_path}
    ))
    timings = {}
    t0 = time.perf_counter()
    pool = load_pool(pool_path)
    labels = load_labels(labels_path, pool)
    ts, train_config = training_set(labels, train_config, fit_raters)
    if ts.n == 0 or (ts.counts is not None and not train_config.ties and not ts.counts[:, :2].sum()):
        raise InputError(f"{labels.path}: no labels to train on")
    val, n_overlap = _load_val_labels(val_labels_path, labels_path, labelled_keys(labels, pool.n), pool, log)
    timings["load"] = time.perf_counter() - t0

    t = time.perf_counter()
    nan = float("nan")
    if early:
        log(f"training the reward model on {_describe_labels(labels)} ({_schedule(train_config, model_config)})")
        params, fit = fit_training_set(seed, pool, ts, model_config, train_config, progress=log is not _quiet)
        n_train, n_val = fit.n_fit, fit.n_val
        val_acc, val_loss = (fit.val_accuracy, fit.val_loss) if n_val else (nan, nan)
        did_refit = fit.refitted
        held_out = None
        if n_val:
            held_out = "cross-validation" if fit.exact_linear and fit.prior_rule == "cross-validation" else "early-stopping"
        timings["train"] = time.perf_counter() - t
    else:
        tr, va = split_labels(ts.n, train_config.val_fraction, seed)
        log(f"training the reward model on {tr.size} labels ({_schedule(train_config, model_config)})")
        params, fit = fit_training_set(seed, pool, ts.take(tr), model_config, train_config, progress=log is not _quiet)
        n_train, n_val = int(tr.size), int(va.size)
        val_acc = val_loss = nan
        held_w, held_l = ts.take(va).majority()
        if held_w.size:
            rows = np.unique(np.concatenate([held_w, held_l]))
            phi, rew = item_features(params, model_config, pool.embeddings, rows)
            check_features(pool, rows, phi, rew)
            held = pair_metrics(rew[np.searchsorted(rows, held_w)], rew[np.searchsorted(rows, held_l)])
            val_acc, val_loss = held.accuracy, held.log_loss
        held_out = "split" if va.size else None
        timings["train"] = time.perf_counter() - t
        did_refit = bool(refit and va.size > 0)
        if did_refit:
            t = time.perf_counter()
            log(f"refitting on all {ts.n} labels")
            params, fit = fit_training_set(seed, pool, ts, model_config, train_config, progress=log is not _quiet)
            timings["refit"] = time.perf_counter() - t
    n_trained_on = ts.n if did_refit else n_train
    log_raters(labels, fit, log)

    # the saved model on every label, and on the evaluation labels
    t = time.perf_counter()
    won, lost = ts.majority()
    touched = [won, lost] + ([] if val is None else [val.winner, val.loser])
    rows = np.unique(np.concatenate(touched))
    phi, rew = item_features(params, model_config, pool.embeddings, rows)
    check_features(pool, rows, phi, rew)

    def rewards_of(items):
        return rew[np.searchsorted(rows, items)]

    train_acc = pair_metrics(rewards_of(won), rewards_of(lost)).accuracy
    val_metrics = None if val is None else pair_metrics(rewards_of(val.winner), rewards_of(val.loser))
    timings["evaluate"] = time.perf_counter() - t

    metadata = {
        "pool": os.path.basename(pool.path),
        "labels": os.path.basename(labels.path),
        "n_labels": labels.n,
        "n_train": n_train,
        "n_val": n_val,
        "seed": seed,
        "schedule": "early-stopping" if early else "fixed",
        "val_fraction": train_config.val_fraction,
        "held_out": held_out,
        "refit_on_all_labels": did_refit,
        "n_trained_on": n_trained_on,
        "train_accuracy": _json_float(train_acc),
        "val_accuracy": _json_float(val_acc),
        "val_loss": _json_float(val_loss),
        "stopping_epoch": _json_float(fit.epochs),
        "fit": fit.as_dict(),
        "val_labels": None if val is None else {
            "file": os.path.basename(val.path), "n_also_in_labels": n_overlap, **val_metrics.as_dict(),
        },
        "train_config": _train_config_record(train_config),
    }
    if labels.votes is not None:  # ties, soft labels or several raters: what the fit found
        metadata["n_lines"] = labels.votes.n
        metadata["n_ties"] = labels.n_ties
        metadata["n_soft"] = labels.n_soft
        metadata["tie_strength"] = _json_float(fit.tie)
        metadata["raters"] = [
            {"annotator": name, "lines": int(n), "reliability": _json_float(q) if fit.reliability else None}
            for name, n, q in zip(
                labels.votes.annotators, labels.votes.per_annotator(),
                fit.reliability or (None,) * len(labels.votes.annotators),
            )
        ]
    t = time.perf_counter()
    distributed.barrier("train: every process done")
    if distributed.is_writer():  # several processes fit the same model; one writes it
        save_model(out_path, params, model_config, pool.dim, metadata)
    timings["write"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    return TrainResult(
        pool.n, labels.n, labels.n_ties, n_train, n_val, train_acc, val_acc, did_refit, timings,
        val_loss, held_out, n_trained_on, fit, val_metrics, n_overlap, labels.n_soft,
    )
