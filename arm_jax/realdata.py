"""Active reward modelling on your own data: the select / train / score loop.

This module is the library behind ``arm-jax select``, ``arm-jax train`` and ``arm-jax score``
(:mod:`arm_jax.cli_data`). Its pieces live in modules named for what they hold:

- :mod:`arm_jax.pool_io` — the pool of embedded items (``.npy``/``.npz``), read and checked;
- :mod:`arm_jax.labels` — the JSON Lines labels, parsed and checked;
- :mod:`arm_jax.candidates` — which pairs may be proposed, and a uniform sample of them;
- :mod:`arm_jax.fitting` — fit the reward model on labels, features and rewards of items;
- :mod:`arm_jax.model_files` — saved models.

Every user-fixable problem raises :class:`~arm_jax.errors.InputError` (``DataError`` here,
for old callers) or ``FileNotFoundError`` with a one-line message that names the file, and
nothing is written before all inputs and the output path have been checked. Nothing here
prints: progress goes to the ``log`` callback each function takes.

Randomness comes from one integer seed (see :mod:`arm_jax.fitting`); the candidate subsample
is a numpy generator seeded by ``seed`` and a digest of the labelled pairs
(:func:`arm_jax.candidates.candidate_seed`), the fixed schedule's validation split
``default_rng([seed, 3])``.

Held-out numbers. With early stopping (:class:`~arm_jax.train.TrainConfig`) the model holds
out a seeded share of the labels inside the fit and reports their accuracy and log-loss
(:class:`~arm_jax.fitting.FitReport`); with the fixed schedule ``train`` holds out
``val_fraction`` of them itself. Either way they are a share of the labels the user
collected: when a strategy chose those pairs they are not a random sample, so the numbers do
not compare models trained by different strategies. ``val_labels_path`` (``--val-labels``)
names comparisons of randomly drawn pairs kept for evaluation only: never trained on, never
proposed by ``select``; they are scored by accuracy, log-loss and expected calibration error.
"""
from __future__ import annotations

import dataclasses
import math
import os
import time
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

from arm_jax import fitting as fitting_lib
from arm_jax import io as io_lib
from arm_jax import model as model_lib
from arm_jax import strategies as strategies_lib
from arm_jax.allpairs import ALLPAIRS_STRATEGIES as ALL_PAIRS_STRATEGIES
from arm_jax.candidates import DEFAULT_CANDIDATES, PAIR_MODES, CandidatePairs, candidate_pairs
from arm_jax.errors import InputError
from arm_jax.fitting import (
    FitReport,
    PairMetrics,
    check_features,
    check_fit,
    fit_on_labels,
    item_features,
    pair_metrics,
    select_key,
)
from arm_jax.labels import Labels, empty_labels, labelled_keys, load_labels, pair_keys, split_labels
from arm_jax.model import ModelConfig
from arm_jax.posterior import DEFAULT_PRIOR_PRECISION
from arm_jax.model_files import SavedModel, load_model, save_model
from arm_jax.pool_io import Pool, load_pool
from arm_jax.train import TrainConfig

#: The error every input check raises (an alias of :class:`arm_jax.errors.InputError`).
DataError = InputError
#: Without :mod:`arm_jax.allpairs`, ``all-cross`` falls back to explicit pairs up to this many.
EXPLICIT_ALL_PAIRS_LIMIT = 2_000_000

__all__ = [
    "DEFAULT_CANDIDATES", "PAIR_MODES", "CandidatePairs", "DataError", "Labels", "Pool", "SavedModel",
    "ScoreResult", "SelectResult", "TrainResult", "candidate_pairs", "fit_on_labels", "item_features",
    "HELD_OUT_CAVEAT", "fit_summary",
    "load_labels", "load_model", "load_pool", "save_model",
    "score_paths", "score_pool", "select_pairs", "train_model",
]

Log = Callable[[str], None]


def _quiet(_: str) -> None:
    pass




def _fmt(x: float) -> float | None:
    """A float32 value as the shortest JSON float that round-trips it (None if not finite)."""
    x = float(x)
    return float(f"{x:.9g}") if math.isfinite(x) else None


def _check_k(k) -> int:
    if isinstance(k, bool) or int(k) != k or k < 1:
        raise InputError(f"--k must be a positive integer, got {k}")
    return int(k)


#: One line on what a held-out share of the user's own labels can and cannot measure.
HELD_OUT_CAVEAT = (
    "held-out labels are a share of the pairs you had labelled; pairs a strategy chose are not a "
    "random sample, so these numbers do not compare strategies (randomly drawn pairs in --val-labels do)"
)


def _schedule(train_config: TrainConfig, model_config: ModelConfig) -> str:
    """The training schedule in a few words (for the progress line)."""
    if model_config.depth == 0 and (train_config.early_stopping or train_config.linear_prior is not None):
        rule = ("a fixed prior" if train_config.linear_prior is not None
                else {"cross-validation": "its prior chosen by 5-fold cross-validation",
                      "evidence": "its prior chosen by the evidence",
                      "held-out": "its prior chosen on a hold-out"}[train_config.linear_prior_rule])
        return f"the linear model fitted exactly, {rule}"
    cap = f", at most {train_config.max_epochs:g} epochs" if train_config.max_epochs is not None else ""
    if train_config.early_stopping:
        return f"early stopping on a {train_config.val_fraction:g} hold-out, at most {train_config.steps} steps{cap}"
    return f"{train_config.steps} steps{cap}"


def fit_summary(fit: FitReport, n_labels: int) -> str:
    """Where training stopped, in one line: ``stopping epoch: E (...)``."""
    if fit.exact_linear:
        if fit.prior_rule == "fixed":
            how = "fixed (TrainConfig.linear_prior)"
        elif fit.prior_rule == "evidence":
            how = f"chosen by the Laplace evidence of all {n_labels} labels"
        elif not fit.n_val:
            how = "the default: too few labels to choose it"
        elif fit.prior_rule == "cross-validation":
            how = (f"chosen by 5-fold cross-validation over all {n_labels} labels (one-standard-error rule), "
                   f"then refit on all {n_labels}")
        else:
            how = f"chosen on {fit.n_val} held-out labels (one-standard-error rule), then refit on all {n_labels}"
        return f"linear model fitted exactly ({fit.steps_run} Newton steps); prior precision {fit.prior_precision:.4g}, {how}"
    head = f"stopping epoch: {fit.epochs:.1f} (step {fit.steps_taken}"
    if not fit.early_stopping:
        return f"{head}, fixed schedule)"
    if fit.n_val == 0:
        return f"{head}; too few labels for an early-stopping hold-out, so the whole step budget)"
    tail = (
        f"; refit on all {n_labels} labels for as many epochs" if fit.refitted
        else f"; the early-stopped model, trained on {fit.n_fit} labels, is kept"
    )
    return f"{head}, the best held-out log-loss; training ran {fit.steps_run} steps){tail}"


def _load_val_labels(val_labels_path, labels_path, labelled: np.ndarray, pool: Pool, log: Log):
    """(evaluation labels or None, how many of their pairs are labelled too); ``labelled``:
    the keys of the training labels (:func:`labelled_keys`)."""
    if val_labels_path is None:
        return None, 0
    if labels_path is not None and io_lib.same_file(Path(val_labels_path), Path(labels_path)):
        raise InputError(
            f"{val_labels_path}: --val-labels is the --labels file; evaluation pairs must never be trained on"
        )
    val = load_labels(val_labels_path, pool)
    if val.n == 0:
        raise InputError(f"{val.path}: no comparisons to evaluate on in --val-labels (ties are not scored)")
    also = np.isin(pair_keys(val.winner, val.loser, pool.n), labelled)
    n_overlap = int(also.sum())
    if n_overlap:
        log(
            f"warning: {n_overlap} of the {val.n} --val-labels comparisons are pairs that --labels holds too "
            "(trained on), so the --val-labels numbers are optimistic"
        )
    return val, n_overlap


# ----------------------------------------------------------------------------- select


class SelectResult(NamedTuple):
    rows: list
    n_items: int
    n_labels: int
    n_ties: int
    n_candidates: int
    n_masked: int
    timings: dict
    fit: FitReport | None = None
    val: PairMetrics | None = None
    n_val_overlap: int = 0


def select_pairs(
    pool_path,
    labels_path,
    out_path,
    strategy: str,
    k: int,
    pairs: str = "cross-prompt",
    n_candidates: int = DEFAULT_CANDIDATES,
    seed: int = 0,
    model_config: ModelConfig | None = None,
    train_config: TrainConfig | None = None,
    log: Log = _quiet,
    allow_relabel: bool = False,
    val_labels_path=None,
) -> SelectResult:
    """Train on the labels, pick the next k pairs, write them as JSON Lines (``select``).

    Each output line: ``{"a": ID, "b": ID, "p_a_wins": float, "score": float, "rank": int}``,
    best first (rank 1). No item is paired with itself and no pair comes twice; no pair is
    already labelled (either order) unless ``allow_relabel``. ``labels_path=None`` is the
    cold start: the untrained, seeded model's features are used. ``val_labels_path``:
    comparisons kept for evaluation only (not trained on, never proposed, even with
    ``allow_relabel``); the trained model's accuracy, log-loss and ECE on them are returned.
    Checks every input and the output path before training and writes nothing on error.
    """
    model_config = model_config or ModelConfig()
    train_config = train_config or TrainConfig()
    strategies_lib.get_strategy(strategy)  # InputError naming the choices
    if pairs not in PAIR_MODES:
        raise InputError(f"unknown --pairs {pairs!r}; choose one of {', '.join(PAIR_MODES)}")
    k = _check_k(k)
    io_lib.check_output_file(out_path, {"--pool": pool_path, "--labels": labels_path, "--val-labels": val_labels_path})
    timings = {}
    t0 = time.perf_counter()

    # 1. read the pool and the labels, choose the candidates
    pool = load_pool(pool_path)
    labels = empty_labels() if labels_path is None else load_labels(labels_path, pool)
    labelled = labelled_keys(labels, pool.n)
    val, n_overlap = _load_val_labels(val_labels_path, labels_path, labelled, pool, log)
    val_keys = np.zeros(0, np.int64) if val is None else labelled_keys(val, pool.n)
    excluded = np.zeros(0, np.int64) if allow_relabel else labelled
    if pairs == "all-cross":
        candidates = None
        excluded = np.union1d(excluded, val_keys)
        _check_all_cross(strategy, k, pool, excluded)
    else:
        candidates = candidate_pairs(
            pool, pairs, n_candidates, seed, labelled, allow_relabel=allow_relabel, never=val_keys
        )
        _check_enough_candidates(k, candidates, pairs, pool, evaluation=val is not None)
    timings["load"] = time.perf_counter() - t0

    # 2. train the reward model on the labels (from scratch, seeded)
    t = time.perf_counter()
    if labels.n == 0:
        log(
            "cold start: no labels, so the pairs are chosen on the untrained (seeded) model's "
            "random features (D-optimal design on the random-init features)"
        )
    else:
        log(f"training the reward model on {labels.n} labels ({_schedule(train_config, model_config)})")
    params, fit = fit_on_labels(seed, pool.embeddings, labels.winner, labels.loser, model_config, train_config)
    check_fit(params, pool, np.concatenate([labels.winner, labels.loser]))
    if labels.n:
        log(fit_summary(fit, labels.n))
    timings["train"] = time.perf_counter() - t

    # 3. features of every item a candidate or a label touches
    t = time.perf_counter()
    beta = np.asarray(model_lib.head(params), np.float32)
    if candidates is None:
        row_of = None
    else:
        touched = [candidates.a, candidates.b, labels.winner, labels.loser]
        if val is not None:
            touched += [val.winner, val.loser]
        row_of = np.unique(np.concatenate(touched))
    phi, rew = item_features(params, model_config, pool.embeddings, row_of)
    check_features(pool, row_of, phi, rew)
    timings["features"] = time.perf_counter() - t

    def local(rows):
        return rows if row_of is None else np.searchsorted(row_of, rows)

    past = phi[local(labels.winner)] - phi[local(labels.loser)] if labels.n else None
    # the head's prior precision, for the posterior-based strategies (chosen on held-out
    # labels by the linear model's exact fit)
    prior = fit.prior_precision if labels.n and np.isfinite(fit.prior_precision) else DEFAULT_PRIOR_PRECISION
    val_metrics = None if val is None else pair_metrics(rew[local(val.winner)], rew[local(val.loser)])

    # 4. score the candidates, keep the best k
    t = time.perf_counter()
    if candidates is None:
        a, b, scores = _select_all_pairs(strategy, seed, phi, beta, k, past, excluded, pool.n, prior)
        n_cand, n_masked = pool.n * (pool.n - 1) // 2, excluded.size
    else:
        items = None
        if strategy in strategies_lib.RESPONSE_RULES:
            # the rules run per prompt on in-prompt candidates, over the whole pool otherwise
            group = np.zeros(candidates.a.size, np.int32)
            if pairs == "in-prompt":
                group = np.unique(pool.prompt_ids[candidates.a], return_inverse=True)[1].astype(np.int32)
            items = strategies_lib.PairItems(phi, local(candidates.a), local(candidates.b), group)
        chosen = strategies_lib.select(
            strategy, select_key(seed), phi[local(candidates.a)] - phi[local(candidates.b)], beta, k,
            valid=candidates.valid, past_phi_diff=past, prior_precision=prior, items=items,
        )
        idx = np.asarray(chosen.indices)
        a, b, scores = candidates.a[idx], candidates.b[idx], np.asarray(chosen.scores)
        n_cand, n_masked = candidates.a.size, candidates.a.size - candidates.n_valid
    timings["select"] = time.perf_counter() - t

    # 5. write them, best first
    t = time.perf_counter()
    chosen_keys = pair_keys(a, b, pool.n)
    if (
        np.any(a == b) or np.unique(chosen_keys).size != a.size or np.isin(chosen_keys, excluded).any()
        or np.isin(chosen_keys, val_keys).any()
    ):
        raise RuntimeError("internal error: selection repeats or relabels a pair")  # never expected
    p_a = fitting_lib.sigmoid(rew[local(a)] - rew[local(b)])
    ids = pool.item_ids
    rows = [
        {"a": str(ids[i]), "b": str(ids[j]), "p_a_wins": _fmt(p), "score": _fmt(s), "rank": rank}
        for rank, (i, j, p, s) in enumerate(zip(a.tolist(), b.tolist(), p_a.tolist(), scores.tolist()), start=1)
    ]
    io_lib.write_jsonl(out_path, rows)
    timings["write"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    return SelectResult(
        rows, pool.n, labels.n, labels.n_ties, n_cand, n_masked, timings,
        fit if labels.n else None, val_metrics, n_overlap,
    )


def _check_all_cross(strategy: str, k: int, pool: Pool, excluded: np.ndarray) -> None:
    if strategy not in ALL_PAIRS_STRATEGIES:
        raise InputError(
            f"--pairs all-cross scores every pair with one of: {', '.join(ALL_PAIRS_STRATEGIES)} "
            f"(not {strategy}); use --pairs cross-prompt for {strategy}"
        )
    n_free = pool.n * (pool.n - 1) // 2 - excluded.size
    if k > n_free:
        raise InputError(f"--k {k} is larger than the {n_free} unlabelled pairs of the {pool.n} items in {pool.path}")


def _check_enough_candidates(
    k: int, candidates: CandidatePairs, pairs: str, pool: Pool, evaluation: bool = False
) -> None:
    if k > candidates.n_valid:
        n_masked = candidates.a.size - candidates.n_valid
        masked = "already labelled or in --val-labels" if evaluation else "already labelled"
        raise InputError(
            f"--k {k} is larger than the {candidates.n_valid} unlabelled candidate pairs "
            f"({pairs} pairs of {pool.path}: {candidates.a.size} candidates, {n_masked} {masked})"
        )


def _load_allpairs():
    """:mod:`arm_jax.allpairs`, imported on first use; None where it is not installed."""
    try:
        from arm_jax import allpairs
    except ModuleNotFoundError as err:
        if err.name != "arm_jax.allpairs":
            raise
        return None
    return allpairs


def _select_all_pairs(strategy, seed, phi, beta, k, past, labelled, n_items, prior=DEFAULT_PRIOR_PRECISION):
    """Top k over every pair of items, skipping the ``labelled`` keys. Returns (a, b, scores).

    :mod:`arm_jax.allpairs` has no pair mask, so it is asked for somewhat more than k pairs
    and the labelled ones are dropped afterwards (asking again for more, up to k + number of
    labelled pairs, when they crowd the top). Its pool information M counts every pair,
    labelled ones included.
    """
    allpairs = _load_allpairs()
    universe = n_items * (n_items - 1) // 2
    # at most len(labelled) of the best pairs can be labelled ones: ask for that many more
    k_req = int(min(universe, k + labelled.size))
    if allpairs is None:
        if universe > EXPLICIT_ALL_PAIRS_LIMIT:
            raise InputError(
                f"--pairs all-cross over {n_items} items needs arm_jax.allpairs "
                f"(only up to {EXPLICIT_ALL_PAIRS_LIMIT} pairs are listed explicitly)"
            )
        a, b = np.triu_indices(n_items, k=1)
        valid = ~np.isin(pair_keys(a, b, n_items), labelled)
        chosen = strategies_lib.select(
            strategy, select_key(seed), phi[a] - phi[b], beta, k, valid=valid, past_phi_diff=past,
            prior_precision=prior,
        )
        idx = np.asarray(chosen.indices)
        return a[idx].astype(np.int64), b[idx].astype(np.int64), np.asarray(chosen.scores)
    # Ask for a few more than k; if labelled pairs crowd the top, ask again for more (up to
    # k + #labelled, which always suffices). The first k unlabelled of the best k_try are the
    # best k unlabelled as soon as there are k of them.
    k_try = int(min(k_req, k + min(labelled.size, max(k, 64))))
    while True:
        result = allpairs.select_all_pairs(
            strategy, select_key(seed), phi, beta, k_try, past_phi_diff=past, prior_precision=prior
        )
        u = np.asarray(result.u, np.int64)
        v = np.asarray(result.v, np.int64)
        keep = np.flatnonzero(~np.isin(pair_keys(u, v, n_items), labelled))
        if keep.size >= k or k_try >= k_req:
            keep = keep[:k]
            return u[keep], v[keep], np.asarray(result.scores)[keep]
        k_try = int(min(k_req, 2 * k_try))


# ----------------------------------------------------------------------------- train


class TrainResult(NamedTuple):
    """What ``train`` measured.

    n_train, n_val: labels fitted and held out (by early stopping inside the fit, or by the
    fixed schedule's ``val_fraction`` split); val_accuracy, val_loss: pairwise accuracy and
    Bradley–Terry log-loss on the held-out ones (NaN when none); held_out: where they come
    from, ``"early-stopping"``, ``"cross-validation"`` (the linear model's prior, every label
    held out once), ``"split"`` or None; train_accuracy: the saved model's
    accuracy on every label of the labels file (n_trained_on of which it was trained on);
    fit: the saved model's :class:`~arm_jax.fitting.FitReport`; val: accuracy, log-loss and
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


def _json_float(x: float) -> float | None:
    return None if x is None else fitting_lib.finite_or_none(float(x))


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
    io_lib.check_output_file(out_path, {"--pool": pool_path, "--labels": labels_path, "--val-labels": val_labels_path})
    timings = {}
    t0 = time.perf_counter()
    pool = load_pool(pool_path)
    labels = load_labels(labels_path, pool)
    if labels.n == 0:
        raise InputError(f"{labels.path}: no labels to train on (ties are not used for training)")
    val, n_overlap = _load_val_labels(val_labels_path, labels_path, labelled_keys(labels, pool.n), pool, log)
    timings["load"] = time.perf_counter() - t0

    t = time.perf_counter()
    nan = float("nan")
    if early:
        log(f"training the reward model on {labels.n} labels ({_schedule(train_config, model_config)})")
        params, fit = fit_on_labels(seed, pool.embeddings, labels.winner, labels.loser, model_config, train_config)
        check_fit(params, pool, np.concatenate([labels.winner, labels.loser]))
        n_train, n_val = fit.n_fit, fit.n_val
        val_acc, val_loss = (fit.val_accuracy, fit.val_loss) if n_val else (nan, nan)
        did_refit = fit.refitted
        held_out = None
        if n_val:
            held_out = "cross-validation" if fit.exact_linear and fit.prior_rule == "cross-validation" else "early-stopping"
        timings["train"] = time.perf_counter() - t
    else:
        tr, va = split_labels(labels.n, train_config.val_fraction, seed)
        log(f"training the reward model on {tr.size} labels ({_schedule(train_config, model_config)})")
        params, fit = fit_on_labels(seed, pool.embeddings, labels.winner[tr], labels.loser[tr], model_config, train_config)
        check_fit(params, pool, np.concatenate([labels.winner[tr], labels.loser[tr]]))
        n_train, n_val = int(tr.size), int(va.size)
        val_acc = val_loss = nan
        if va.size:
            rows = np.unique(np.concatenate([labels.winner[va], labels.loser[va]]))
            phi, rew = item_features(params, model_config, pool.embeddings, rows)
            check_features(pool, rows, phi, rew)
            held = pair_metrics(
                rew[np.searchsorted(rows, labels.winner[va])], rew[np.searchsorted(rows, labels.loser[va])]
            )
            val_acc, val_loss = held.accuracy, held.log_loss
        held_out = "split" if va.size else None
        timings["train"] = time.perf_counter() - t
        did_refit = bool(refit and va.size > 0)
        if did_refit:
            t = time.perf_counter()
            log(f"refitting on all {labels.n} labels")
            params, fit = fit_on_labels(seed, pool.embeddings, labels.winner, labels.loser, model_config, train_config)
            check_fit(params, pool, np.concatenate([labels.winner, labels.loser]))
            timings["refit"] = time.perf_counter() - t
    n_trained_on = labels.n if did_refit else n_train

    # the saved model on every label, and on the evaluation labels
    t = time.perf_counter()
    touched = [labels.winner, labels.loser] + ([] if val is None else [val.winner, val.loser])
    rows = np.unique(np.concatenate(touched))
    phi, rew = item_features(params, model_config, pool.embeddings, rows)
    check_features(pool, rows, phi, rew)

    def rewards_of(items):
        return rew[np.searchsorted(rows, items)]

    train_acc = pair_metrics(rewards_of(labels.winner), rewards_of(labels.loser)).accuracy
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
        "train_config": dataclasses.asdict(train_config),
    }
    t = time.perf_counter()
    save_model(out_path, params, model_config, pool.dim, metadata)
    timings["write"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    return TrainResult(
        pool.n, labels.n, labels.n_ties, n_train, n_val, train_acc, val_acc, did_refit, timings,
        val_loss, held_out, n_trained_on, fit, val_metrics, n_overlap,
    )


# ----------------------------------------------------------------------------- score


def score_paths(out) -> tuple[Path, Path]:
    """``--out X`` -> (X.npy, X.csv); a trailing .npy or .csv on X is dropped first."""
    out = Path(out)
    if out.suffix.lower() in (".npy", ".csv"):
        out = out.with_suffix("")
    return out.with_name(out.name + ".npy"), out.with_name(out.name + ".csv")



class ScoreResult(NamedTuple):
    rewards: np.ndarray
    npy_path: Path
    csv_path: Path
    timings: dict


def score_pool(model_path, pool_path, out, log: Log = _quiet) -> ScoreResult:
    """Reward of every pool item under a saved model -> ``OUT.npy`` (N,) float32 and ``OUT.csv``
    (columns item_id,prompt_id,reward in pool order; prompt_id empty when the pool has none).

    The two files are written together (:func:`arm_jax.io.atomic_paths`): whenever both exist
    they are from the same run; an interrupted run can leave ``OUT.csv`` missing, never an
    old ``OUT.csv`` beside a new ``OUT.npy``.
    """
    npy_path, csv_path = score_paths(out)
    inputs = {"--model": model_path, "--pool": pool_path}
    for path in (npy_path, csv_path):
        io_lib.check_output_file(path, inputs)
    timings = {}
    t0 = time.perf_counter()
    saved = load_model(model_path)
    pool = load_pool(pool_path)
    if saved.input_dim != pool.dim:
        raise InputError(
            f"{model_path}: the model takes embeddings of dimension {saved.input_dim}, "
            f"but the pool {pool.path} has dimension {pool.dim}"
        )
    timings["load"] = time.perf_counter() - t0
    t = time.perf_counter()
    phi, rewards = item_features(saved.params, saved.model_config, pool.embeddings)
    check_features(pool, None, phi, rewards)
    timings["score"] = time.perf_counter() - t
    t = time.perf_counter()
    prompts = pool.prompt_ids.tolist() if pool.prompt_ids is not None else [""] * pool.n
    csv_text = io_lib.csv_text(
        ["item_id", "prompt_id", "reward"],
        ((i, p, f"{r:.9g}") for i, p, r in zip(pool.item_ids.tolist(), prompts, rewards.tolist())),
    )
    with io_lib.atomic_paths([npy_path, csv_path]) as (npy_tmp, csv_tmp):
        npy_tmp.write_bytes(io_lib.npy_bytes(rewards))
        csv_tmp.write_text(csv_text, encoding="utf-8")
    timings["write"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    return ScoreResult(rewards, npy_path, csv_path, timings)
