"""``arm-jax train``: fit the reward model on the labels, measure it, save it (:func:`train_model`).

One call runs in phases: check the request (:class:`TrainRequest`) and the output path, load
the pool and the labels, fit (with early stopping, or on a seeded split and then again on all
labels), evaluate the fitted model on every label and on ``--val-labels``, and save it with a
record of all of this (:func:`_model_metadata`). Nothing is written before every input and the
output path are checked; progress goes to the ``log`` callback.
"""
from __future__ import annotations

import dataclasses
import os
import time
from typing import NamedTuple

import numpy as np

from arm_jax.errors import InputError
from arm_jax.model.config import TrainConfig
from arm_jax.model.evaluate import PairMetrics, finite_or_none, pair_metrics
from arm_jax.model.network import ModelConfig
from arm_jax.runtime import distributed
from arm_jax.runtime import files as io_lib
from arm_jax.workflow import policy
from arm_jax.workflow.checkpoint import save_model
from arm_jax.workflow.fitting import (
    FitReport,
    LabelledRequest,
    Log,
    TrainingSet,
    _describe_labels,
    _load_val_labels,
    _quiet,
    _schedule,
    check_features,
    fit_training_set,
    item_features,
    log_raters,
    timed,
    training_set,
)
from arm_jax.workflow.labels import (
    Labels,
    labelled_keys,
    load_labels,
    split_labels,
)
from arm_jax.workflow.pool import Pool, check_informative, load_pool

__all__ = ['TrainRequest', 'TrainResult', 'run_train', 'train_model']

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


@dataclasses.dataclass(frozen=True)
class TrainRequest(LabelledRequest):
    """The checked arguments of one ``train`` call (:func:`train_model`; :func:`_check_request`
    checks them): ``train_config`` carries the ``val_fraction`` and, with early stopping, ``refit``."""

    refit: bool

    @property
    def early(self) -> bool:
        """The early-stopping schedule (the fixed one otherwise)."""
        return bool(self.train_config.early_stopping)


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
    ``model_config=None``: the default policy's model (:data:`arm_jax.workflow.policy.DEFAULT`).
    ``val_labels_path``: comparisons kept for evaluation only (never trained on); the saved
    model's accuracy, log-loss and ECE on them are reported and stored in the model file.
    """
    request = TrainRequest(
        pool_path=pool_path, labels_path=labels_path, out_path=out_path, refit=refit, seed=seed,
        model_config=model_config or policy.DEFAULT.model, train_config=train_config or TrainConfig(), log=log,
        val_labels_path=val_labels_path, fit_raters=fit_raters,
    )
    return run_train(_check_request(request, val_fraction))


def run_train(request: TrainRequest) -> TrainResult:
    """One ``train`` call on a checked request (:func:`_check_request`), phase by phase: check the
    output path, load, fit (and refit), evaluate, save; each phase's wall time in ``timings``."""
    distributed.on_writer(lambda: io_lib.check_output_file(request.out_path, request.inputs))
    timings = {}
    t0 = time.perf_counter()
    data = timed(timings, "load", _load, request)
    if request.early:
        trained = timed(timings, "train", _fit_early_stopping, request, data)
    else:
        trained = timed(timings, "train", _fit_split, request, data)
        if trained.did_refit:
            trained = timed(timings, "refit", _refit_on_all, request, data, trained)
    n_trained_on = data.ts.n if trained.did_refit else trained.n_train
    log_raters(data.labels, trained.fit, request.log)
    train_acc, val_metrics = timed(timings, "evaluate", _evaluate, request, data, trained.params)
    metadata = _model_metadata(request, data, trained, n_trained_on, train_acc, val_metrics)
    timed(timings, "write", _save, request, data.pool, trained.params, metadata)
    timings["total"] = time.perf_counter() - t0
    pool, labels = data.pool, data.labels
    return TrainResult(
        pool.n, labels.n, labels.n_ties, trained.n_train, trained.n_val, train_acc, trained.val_accuracy,
        trained.did_refit, timings, trained.val_loss, trained.held_out, n_trained_on, trained.fit, val_metrics,
        data.n_overlap, labels.n_soft,
    )


def _check_request(request: TrainRequest, val_fraction: float | None) -> TrainRequest:
    """Phase 1: the request with ``val_fraction`` (default: the train config's) and, with early
    stopping, ``refit`` set in its train config; a ``val_fraction`` outside [0, 1) is refused by
    :class:`~arm_jax.model.config.TrainConfig` itself."""
    train_config = request.train_config
    if val_fraction is not None:
        train_config = dataclasses.replace(train_config, val_fraction=float(val_fraction))
    if train_config.early_stopping:
        train_config = dataclasses.replace(train_config, refit=bool(request.refit))
    return dataclasses.replace(request, train_config=train_config)


class _Loaded(NamedTuple):
    """What ``train`` read: the pool, the labels as a training set and the train config that fits
    them (:func:`arm_jax.workflow.fitting.training_set`), the evaluation labels (None without)
    and how many of their pairs the labels hold too."""

    pool: Pool
    labels: Labels
    ts: TrainingSet
    train_config: TrainConfig
    val: Labels | None
    n_overlap: int


def _load(request: TrainRequest) -> _Loaded:
    """Phase 2: read the pool, the labels (InputError when there is nothing to train on) and the
    evaluation labels."""
    pool = load_pool(request.pool_path)
    check_informative(pool)
    labels = load_labels(request.labels_path, pool)
    ts, train_config = training_set(labels, request.train_config, request.fit_raters)
    if ts.n == 0 or (ts.counts is not None and not train_config.ties and not ts.counts[:, :2].sum()):
        raise InputError(f"{labels.path}: no labels to train on")
    val, n_overlap = _load_val_labels(
        request.val_labels_path, request.labels_path, labelled_keys(labels, pool.n), pool, request.log
    )
    return _Loaded(pool, labels, ts, train_config, val, n_overlap)


class _Trained(NamedTuple):
    """The fitted model and what its fit measured: labels fitted and held out, the held-out
    accuracy and log-loss (NaN when none), where they come from (:class:`TrainResult`'s
    ``held_out``), and whether the parameters were (or, after :func:`_fit_split`, are to be)
    trained again on all labels."""

    params: object
    fit: FitReport
    n_train: int
    n_val: int
    val_accuracy: float
    val_loss: float
    held_out: str | None
    did_refit: bool


def _fit_early_stopping(request: TrainRequest, data: _Loaded) -> _Trained:
    """Phase 3, early stopping: the fit holds out its share of the labels itself, stops at the
    best held-out log-loss and (``refit``) trains again on all labels for as many epochs."""
    train_config, nan = data.train_config, float("nan")
    request.log(
        f"training the reward model on {_describe_labels(data.labels)} ({_schedule(train_config, request.model_config)})"
    )
    params, fit = fit_training_set(
        request.seed, data.pool, data.ts, request.model_config, train_config, progress=request.progress
    )
    n_train, n_val = fit.n_fit, fit.n_val
    val_acc, val_loss = (fit.val_accuracy, fit.val_loss) if n_val else (nan, nan)
    did_refit = fit.refitted
    held_out = None
    if n_val:
        held_out = "cross-validation" if fit.exact_linear and fit.prior_rule == "cross-validation" else "early-stopping"
    return _Trained(params, fit, n_train, n_val, val_acc, val_loss, held_out, did_refit)


def _fit_split(request: TrainRequest, data: _Loaded) -> _Trained:
    """Phase 3, fixed schedule: a seeded split (``default_rng([seed, 3])``) of ``val_fraction``
    of the labels is held out, the model trained on the rest and measured on it; ``did_refit``
    says whether :func:`_refit_on_all` is to follow."""
    ts, train_config = data.ts, data.train_config
    tr, va = split_labels(ts.n, train_config.val_fraction, request.seed)
    request.log(f"training the reward model on {tr.size} labels ({_schedule(train_config, request.model_config)})")
    params, fit = fit_training_set(
        request.seed, data.pool, ts.take(tr), request.model_config, train_config, progress=request.progress
    )
    n_train, n_val = int(tr.size), int(va.size)
    val_acc, val_loss = _held_out_metrics(request, data.pool, params, ts.take(va))
    held_out = "split" if va.size else None
    return _Trained(params, fit, n_train, n_val, val_acc, val_loss, held_out, bool(request.refit and va.size > 0))


def _held_out_metrics(request: TrainRequest, pool: Pool, params, held: TrainingSet) -> tuple[float, float]:
    """(pairwise accuracy, log-loss) of the model on the held-out rows with a majority; NaN, NaN
    when there are none."""
    val_acc = val_loss = float("nan")
    held_w, held_l = held.majority()
    if held_w.size:
        rows = np.unique(np.concatenate([held_w, held_l]))
        phi, rew = item_features(params, request.model_config, pool.embeddings, rows)
        check_features(pool, rows, phi, rew)
        metrics = pair_metrics(rew[np.searchsorted(rows, held_w)], rew[np.searchsorted(rows, held_l)])
        val_acc, val_loss = metrics.accuracy, metrics.log_loss
    return val_acc, val_loss


def _refit_on_all(request: TrainRequest, data: _Loaded, trained: _Trained) -> _Trained:
    """Phase 3, fixed schedule after the split: train again on all labels with the same seed,
    exactly the model ``select --seed`` trains; the held-out numbers stay the split's."""
    request.log(f"refitting on all {data.ts.n} labels")
    params, fit = fit_training_set(
        request.seed, data.pool, data.ts, request.model_config, data.train_config, progress=request.progress
    )
    return trained._replace(params=params, fit=fit)


def _evaluate(request: TrainRequest, data: _Loaded, params) -> tuple[float, PairMetrics | None]:
    """Phase 4: the saved model's pairwise accuracy on every label with a majority, and its
    metrics on the evaluation labels (None without)."""
    pool, val = data.pool, data.val
    won, lost = data.ts.majority()
    touched = [won, lost] + ([] if val is None else [val.winner, val.loser])
    rows = np.unique(np.concatenate(touched))
    phi, rew = item_features(params, request.model_config, pool.embeddings, rows)
    check_features(pool, rows, phi, rew)

    def rewards_of(items):
        return rew[np.searchsorted(rows, items)]

    train_acc = pair_metrics(rewards_of(won), rewards_of(lost)).accuracy
    val_metrics = None if val is None else pair_metrics(rewards_of(val.winner), rewards_of(val.loser))
    return train_acc, val_metrics


def _model_metadata(
    request: TrainRequest, data: _Loaded, trained: _Trained, n_trained_on: int, train_acc: float,
    val_metrics: PairMetrics | None,
) -> dict:
    """Phase 5: the record saved with the model: inputs, schedule, what the fit and the
    evaluation measured, the train config; with ties, soft labels or raters, what the fit found."""
    labels, val, fit, train_config = data.labels, data.val, trained.fit, data.train_config
    metadata = {
        "pool": os.path.basename(data.pool.path),
        "labels": os.path.basename(labels.path),
        "n_labels": labels.n,
        "n_train": trained.n_train,
        "n_val": trained.n_val,
        "seed": request.seed,
        "schedule": "early-stopping" if request.early else "fixed",
        "val_fraction": train_config.val_fraction,
        "held_out": trained.held_out,
        "refit_on_all_labels": trained.did_refit,
        "n_trained_on": n_trained_on,
        "train_accuracy": _json_float(train_acc),
        "val_accuracy": _json_float(trained.val_accuracy),
        "val_loss": _json_float(trained.val_loss),
        "stopping_epoch": _json_float(fit.epochs),
        "fit": fit.as_dict(),
        "val_labels": None if val is None else {
            "file": os.path.basename(val.path), "n_also_in_labels": data.n_overlap, **val_metrics.as_dict(),
        },
        "train_config": _train_config_record(train_config),
    }
    if labels.votes is not None:  # ties, soft labels or several raters: what the fit found
        metadata.update(_votes_metadata(labels, fit))
    return metadata


def _votes_metadata(labels: Labels, fit: FitReport) -> dict:
    """The record's fields for labels with votes: line, tie and soft counts, the fitted tie
    strength and each rater's line count and reliability (None when not fitted)."""
    return {
        "n_lines": labels.votes.n,
        "n_ties": labels.n_ties,
        "n_soft": labels.n_soft,
        "tie_strength": _json_float(fit.tie),
        "raters": [
            {"annotator": name, "lines": int(n), "reliability": _json_float(q) if fit.reliability else None}
            for name, n, q in zip(
                labels.votes.annotators, labels.votes.per_annotator(),
                fit.reliability or (None,) * len(labels.votes.annotators),
            )
        ],
    }


def _save(request: TrainRequest, pool: Pool, params, metadata: dict) -> None:
    """Phase 6: save the model once every process is done (several processes fit the same
    model; process 0 writes it)."""
    distributed.barrier("train: every process done")
    if distributed.is_writer():
        save_model(request.out_path, params, request.model_config, pool.dim, metadata)


def _train_config_record(train_config: TrainConfig) -> dict:
    """The train config for the model file; the ties/raters fields only when they are not the
    defaults, so that a model of plain labels is byte for byte what it always was."""
    out = dataclasses.asdict(train_config)
    for name in ("ties", "annotators"):
        if out[name] == getattr(TrainConfig, name):
            del out[name]
    return out


def _json_float(x: float) -> float | None:
    return None if x is None else finite_or_none(float(x))
