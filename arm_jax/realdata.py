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
import json
import math
import os
import time
from pathlib import Path
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from arm_jax import distributed, parallel
from arm_jax import fitting as fitting_lib
from arm_jax import io as io_lib
from arm_jax import model as model_lib
from arm_jax import progress as progress_lib
from arm_jax import strategies as strategies_lib
from arm_jax import train as train_lib
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




class TrainingSet(NamedTuple):
    """What the model trains on: row i is the pair (first[i], second[i]); ``counts`` (n, 3)
    its votes (first, second, tie) and ``annotator`` (n,) its rater, or both None for decided
    labels only (first the winner; Bradley–Terry)."""

    first: np.ndarray
    second: np.ndarray
    counts: np.ndarray | None = None
    annotator: np.ndarray | None = None

    @property
    def n(self) -> int:
        return int(self.first.shape[0])

    def take(self, idx: np.ndarray) -> "TrainingSet":
        cut = lambda a: None if a is None else a[idx]
        return TrainingSet(self.first[idx], self.second[idx], cut(self.counts), cut(self.annotator))

    def majority(self) -> tuple[np.ndarray, np.ndarray]:
        """(winner, loser) of the rows with a majority (every row of decided labels)."""
        if self.counts is None:
            return self.first, self.second
        margin = self.counts[:, 0] - self.counts[:, 1]
        won = margin > 0
        keep = margin != 0
        return np.where(won, self.first, self.second)[keep], np.where(won, self.second, self.first)[keep]

    def rows(self) -> np.ndarray:
        return np.concatenate([self.first, self.second])


def training_set(
    labels: Labels, train_config: TrainConfig, fit_raters: bool = True
) -> tuple[TrainingSet, TrainConfig]:
    """The labels as a :class:`TrainingSet` and the train config that fits them: with two or
    more raters (and ``fit_raters``), one reliability each (``TrainConfig.annotators``)."""
    v = labels.votes
    if v is None:
        return TrainingSet(labels.winner, labels.loser), train_config
    n_raters = len(v.annotators) if len(v.annotators) > 1 and fit_raters else 0
    train_config = dataclasses.replace(train_config, annotators=n_raters)
    return TrainingSet(v.first, v.second, v.counts, v.annotator if n_raters else None), train_config


def fit_training_set(
    seed: int, pool: Pool, ts: TrainingSet, model_config: ModelConfig, train_config: TrainConfig, progress: bool = False
):
    """``fit_on_labels`` on a :class:`TrainingSet`, its parameters checked (:func:`check_fit`);
    ``progress``: a spinner at a terminal while it trains."""
    with progress_lib.spinner(f"training on {ts.n} labels", on=progress and ts.n > 0):
        params, fit = fit_on_labels(
            seed, pool.embeddings, ts.first, ts.second, model_config, train_config, ts.counts, ts.annotator
        )
    if distributed.process_count() > 1:  # every process trained alike; all go on with process 0's model
        numbers = np.array([fit.prior_precision, fit.tie, *fit.reliability], np.float64)
        params, numbers = distributed.from_process_0((params, numbers))
        fit = fit._replace(prior_precision=float(numbers[0]), tie=float(numbers[1]),
                           reliability=tuple(float(q) for q in numbers[2:]))
    check_fit(params, pool, ts.rows())
    return params, fit


def past_information_inputs(ts, fit, phi_first, phi_second, train_config: TrainConfig):
    """(past_phi_diff, past_weight, tie) of the labelled rows for the selection: the rows as
    the Fisher information sees them (:func:`arm_jax.train.information_rows`: x scaled by the
    rater's reliability, weighted by the votes), Davidson's ν when the fit has one
    (:class:`arm_jax.strategies.SelectionInputs`); weight and ν None for decided labels."""
    past = phi_first - phi_second
    if ts.counts is None:
        return past, None, None
    buffer = train_lib.buffer_from_pairs(
        ts.first, ts.second, counts=ts.counts,
        annotator=np.full(ts.n, -1, np.int32) if ts.annotator is None else ts.annotator,
    )
    reliability = jnp.asarray(fit.reliability, jnp.float32) if fit.reliability else None
    past, weight = train_lib.information_rows(jnp.asarray(past), train_lib.votes_of(buffer, train_config), reliability)
    tie = fit.tie if fit.tie > 0 else None
    return np.asarray(past, np.float32), np.asarray(weight, np.float32), tie


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
        raise InputError(
            f"{val.path}: no comparisons to evaluate on in --val-labels (only decided lines are scored: "
            "ties, soft labels and vote counts are not)"
        )
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
    n_soft: int = 0
    report: list = []
    total_cost: float | None = None


#: What ``select`` writes: JSON Lines (one pair a line) or Label Studio tasks.
OUTPUT_FORMATS = ("jsonl", "label-studio")


def label_config_path(out_path) -> Path:
    """``next.json`` -> ``next.label_config.xml``: the labelling config beside Label Studio tasks."""
    out = Path(out_path)
    return out.with_name(out.stem + ".label_config.xml")


def _describe_labels(labels: Labels) -> str:
    """"120 labels" or "120 lines (100 decided, 12 ties, 8 soft; 3 raters)"."""
    if labels.votes is None:
        return f"{labels.n} labels"
    parts = [f"{labels.n} decided"] + [f"{n} {what}" for n, what in ((labels.n_ties, "ties"), (labels.n_soft, "soft")) if n]
    raters = len(labels.votes.annotators)
    tail = f"; {raters} raters" if raters > 1 else ""
    return f"{labels.votes.n} lines ({', '.join(parts)}{tail})"


def log_raters(labels: Labels, fit: FitReport, log: Log) -> None:
    """The fitted tie strength and each rater's reliability and label count, when there are any."""
    if labels.n_ties and fit.tie > 0:
        log(f"ties: {labels.n_ties} lines, Davidson tie strength ν = {fit.tie:.3g} "
            f"(P(tie) between equal items {fit.tie / (2 + fit.tie):.2f})")
    if labels.votes is not None and fit.reliability:
        counts = labels.votes.per_annotator()
        shown = ", ".join(
            f"{name} {q:.2f} ({n} lines)" for name, q, n in zip(labels.votes.annotators, fit.reliability, counts)
        )
        log(f"rater reliability (1 = the panel's typical rater): {shown}")


def read_report(path) -> list[dict]:
    """The rows of a stopping-report history (JSON Lines written by ``select --report``); a
    missing file is an empty history. One-line errors name the line."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise InputError(f"{path}:{n}: not valid JSON ({err.msg}); is --report a report history?") from None
        if not isinstance(row, dict) or "labels" not in row or "gain_last" not in row:
            raise InputError(f"{path}:{n}: not a stopping-report row (no 'labels'/'gain_last'); is --report a report history?")
        rows.append(row)
    return rows


def stopping_row(ts, fit, beta, past, past_weight, tie, prior, picked_x, strategy: str, history=()) -> dict:
    """One stopping report (``select --report``): labels so far; ``gain_last``: the information
    gain per label of the last batch, the label lines added since the previous report with
    fewer labels (without one: the last min(k, labels) lines), under the model trained on all
    of them; ``from_prior``: that batch is every label (its gain is against the prior alone,
    like a random round 0, and is no reference for the rule); ``gain_next``: the expected gain
    per label of the picked batch; the held-out accuracy and its standard error (the fit's
    early-stopping or cross-validation hold-out); see :mod:`arm_jax.stopping`."""
    from arm_jax import posterior

    k = int(picked_x.shape[0])
    n = ts.n
    h = beta.shape[0]
    x_past = np.zeros((0, h), np.float32) if past is None else np.asarray(past, np.float32)
    w_past = np.ones(n, np.float32) if past_weight is None else np.asarray(past_weight, np.float32)
    x = np.concatenate([x_past, np.asarray(picked_x, np.float32)])
    w = np.concatenate([w_past, np.ones(k, np.float32)])
    rows = np.arange(n + k)

    def gain(before, after, m):
        nu = None if tie is None else np.float32(tie)
        return float(posterior.information_gain(beta, x, before, after, prior, w, nu)) / m

    earlier = [r["labels"] for r in history if r["labels"] < n]
    m = n - earlier[-1] if earlier else min(k, n)
    gain_last = gain(rows < n - m, rows < n, m) if n else None
    gain_next = gain(rows < n, rows < n + k, k)
    acc = fit.val_accuracy if fit is not None and fit.n_val else float("nan")
    se = math.sqrt(acc * (1 - acc) / fit.n_val) if acc == acc else float("nan")
    return {"labels": n, "k": k, "strategy": strategy, "last_batch": m,
            "gain_last": None if gain_last is None else _fmt(gain_last), "from_prior": bool(n and m == n),
            "gain_next": _fmt(gain_next), "val_accuracy": _fmt(acc), "val_se": _fmt(se)}


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
    fit_raters: bool = True,
    output_format: str = "jsonl",
    report_path=None,
    budget: float | None = None,
) -> SelectResult:
    """Train on the labels, pick the next k pairs, write them as JSON Lines (``select``).

    Each output line: ``{"a": ID, "b": ID, "p_a_wins": float, "score": float, "rank": int}``,
    best first (rank 1). No item is paired with itself and no pair comes twice; no pair is
    already labelled (either order) unless ``allow_relabel``. ``labels_path=None`` is the
    cold start: the untrained, seeded model's features are used. ``val_labels_path``:
    comparisons kept for evaluation only (not trained on, never proposed, even with
    ``allow_relabel``); the trained model's accuracy, log-loss and ECE on them are returned.
    ``fit_raters``: fit a reliability per rater when the labels name two or more. When the
    pool has texts, each line also carries ``prompt_a``, ``response_a``, ``prompt_b``,
    ``response_b``. ``output_format="label-studio"``: the same rows as Label Studio tasks (a
    JSON list) and its labelling config beside them (:func:`label_config_path`; see
    :mod:`arm_jax.labelstudio`). ``report_path``: a JSON Lines history of stopping reports,
    one row appended per call (:func:`stopping_row`); the result's ``report`` holds them all.
    ``budget``: pick the batch of largest gain per unit cost whose pairs' costs (the sum of
    the two items' ``costs`` in the pool) add up to at most this
    (:func:`arm_jax.strategies.select_within_budget`); ``k`` is then the most pairs (None: no
    limit but the budget) and each line carries its ``cost``.
    Checks every input and the output path before training and writes nothing on error.

    On several processes (:mod:`arm_jax.distributed`) the pair-score strategies split the
    candidate rows over every process's devices: each process embeds and scores only its
    rows (:class:`arm_jax.parallel.Rows`), and the picks are those of one process; with
    ``--pairs all-cross`` each embeds a block of the items and scores a share of the pair
    grid's blocks (:func:`arm_jax.parallel.sharded_select_all_pairs`). The other strategies and
    ``--budget`` run whole on every process. Only process 0 writes.
    """
    model_config = model_config or ModelConfig()
    train_config = train_config or TrainConfig()
    strategies_lib.get_strategy(strategy)  # InputError naming the choices
    if pairs not in PAIR_MODES:
        raise InputError(f"unknown --pairs {pairs!r}; choose one of {', '.join(PAIR_MODES)}")
    if budget is not None:
        if not (math.isfinite(budget) and budget > 0):
            raise InputError(f"--budget must be a positive number, got {budget}")
        if pairs == "all-cross":
            raise InputError("--budget needs sampled candidates: use --pairs cross-prompt or in-prompt")
        if strategy not in strategies_lib.BUDGET_STRATEGIES + strategies_lib.PAIR_SCORE_STRATEGIES:
            raise InputError(
                f"--budget works with: {', '.join(strategies_lib.BUDGET_STRATEGIES + strategies_lib.PAIR_SCORE_STRATEGIES)}"
                f" (not {strategy})"
            )
    if k is None and budget is None:
        raise InputError("give --k (how many pairs) or --budget (how much they may cost)")
    k = _check_k(k) if k is not None else None
    if output_format not in OUTPUT_FORMATS:
        raise InputError(f"unknown --format {output_format!r}; choose one of {', '.join(OUTPUT_FORMATS)}")
    inputs = {"--pool": pool_path, "--labels": labels_path, "--val-labels": val_labels_path}
    history = []

    def check_outputs():  # on process 0, which writes them (distributed.on_writer)
        nonlocal history
        io_lib.check_output_file(out_path, inputs)
        if output_format == "label-studio":
            io_lib.check_output_file(label_config_path(out_path), inputs)
        if report_path is not None:
            io_lib.check_output_file(report_path, {**inputs, "--out": out_path}, flag="--report")
            history = read_report(report_path)

    distributed.on_writer(check_outputs)
    timings = {}
    t0 = time.perf_counter()

    # 1. read the pool and the labels, choose the candidates
    pool = load_pool(pool_path)
    if budget is not None and pool.costs is None:
        raise InputError(f"{pool.path}: --budget needs the items' costs: add a 'costs' array (N,) to the pool .npz")
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
        _check_enough_candidates(1 if budget is not None else k, candidates, pairs, pool, evaluation=val is not None)
    # several processes: each embeds and scores its own block of the candidate rows
    shard_rows = (
        candidates is not None and budget is None and distributed.process_count() > 1
        and strategy in strategies_lib.PAIR_SCORE_STRATEGIES
    )
    if distributed.process_count() > 1:
        split = (
            "the pair grid's blocks split over them" if candidates is None
            else "the candidate rows split over them" if shard_rows
            else f"{'--budget' if budget is not None else strategy} runs whole on every process"
        )
        log(f"{distributed.process_count()} processes, {jax.device_count()} devices: {split}")
    timings["load"] = time.perf_counter() - t0

    # 2. train the reward model on the labels (from scratch, seeded)
    t = time.perf_counter()
    if labels.n_train == 0:
        log(
            "cold start: no labels, so the pairs are chosen on the untrained (seeded) model's "
            "random features (D-optimal design on the random-init features)"
        )
    ts, train_config = training_set(labels, train_config, fit_raters)
    if ts.n:
        log(f"training the reward model on {_describe_labels(labels)} ({_schedule(train_config, model_config)})")
    params, fit = fit_training_set(seed, pool, ts, model_config, train_config, progress=log is not _quiet)
    if ts.n:
        log(fit_summary(fit, ts.n))
        log_raters(labels, fit, log)
    timings["train"] = time.perf_counter() - t

    # 3. features of every item a candidate or a label touches
    t = time.perf_counter()
    beta = np.asarray(model_lib.head(params), np.float32)
    if candidates is None:
        row_of = None
    else:
        mine = slice(*parallel.process_rows(candidates.a.size)) if shard_rows else slice(None)
        touched = [candidates.a[mine], candidates.b[mine], ts.first, ts.second]
        if val is not None:
            touched += [val.winner, val.loser]
        row_of = np.unique(np.concatenate(touched))
    if row_of is None:  # every item (all pairs): on several processes each embeds a block
        phi, rew = all_item_features(params, model_config, pool, progress=log is not _quiet)
    else:
        phi, rew = item_features(params, model_config, pool.embeddings, row_of, progress=log is not _quiet)
        # on several processes each holds its own rows: all stop on the first's bad row
        distributed.check_together(lambda: check_features(pool, row_of, phi, rew))
    timings["features"] = time.perf_counter() - t

    def local(rows):
        return rows if row_of is None else np.searchsorted(row_of, rows)

    past = past_weight = tie = None
    if ts.n:
        past, past_weight, tie = past_information_inputs(
            ts, fit, phi[local(ts.first)], phi[local(ts.second)], train_config
        )
    # the head's prior precision, for the posterior-based strategies (chosen on held-out
    # labels by the linear model's exact fit)
    prior = fit.prior_precision if ts.n and np.isfinite(fit.prior_precision) else DEFAULT_PRIOR_PRECISION
    val_metrics = None if val is None else pair_metrics(rew[local(val.winner)], rew[local(val.loser)])

    # 4. score the candidates, keep the best k
    t = time.perf_counter()
    with progress_lib.spinner(f"{strategy}: scoring the candidates", on=log is not _quiet):
        if candidates is None:
            a, b, scores = _select_all_pairs(
                strategy, seed, phi, beta, k, past, excluded, pool.n, prior, past_weight, tie
            )
            n_cand, n_masked = pool.n * (pool.n - 1) // 2, excluded.size
        else:
            items = None
            if strategy in strategies_lib.RESPONSE_RULES:
                # the rules run per prompt on in-prompt candidates, over the whole pool otherwise
                group = np.zeros(candidates.a.size, np.int32)
                if pairs == "in-prompt":
                    group = np.unique(pool.prompt_ids[candidates.a], return_inverse=True)[1].astype(np.int32)
                items = strategies_lib.PairItems(phi, local(candidates.a), local(candidates.b), group)
            diff_rows = lambda start, stop: phi[local(candidates.a[start:stop])] - phi[local(candidates.b[start:stop])]
            diff = None if shard_rows else diff_rows(0, candidates.a.size)
            if shard_rows:  # each process builds only its own rows
                chosen = parallel.sharded_select(
                    strategy, None, parallel.Rows(candidates.a.size, phi.shape[1], diff_rows), beta, k,
                    valid=candidates.valid, past_phi_diff=past, prior_precision=prior, past_weight=past_weight, tie=tie,
                )
            elif budget is None:
                chosen = strategies_lib.select(
                    strategy, select_key(seed), diff, beta, k, valid=candidates.valid, past_phi_diff=past,
                    prior_precision=prior, items=items, past_weight=past_weight, tie=tie,
                )
            else:
                pair_cost = pool.costs[candidates.a] + pool.costs[candidates.b]
                chosen = strategies_lib.select_within_budget(
                    strategy, select_key(seed), diff, beta, pair_cost, budget, k or candidates.a.size,
                    valid=candidates.valid, past_phi_diff=past, prior_precision=prior, past_weight=past_weight,
                    tie=tie,
                )
                if not np.size(chosen.indices):
                    cheapest = float(pair_cost[candidates.valid].min())
                    raise InputError(f"--budget {budget:g}: no candidate pair fits (the cheapest costs {cheapest:.4g})")
            idx = np.asarray(chosen.indices)
            a, b, scores = candidates.a[idx], candidates.b[idx], np.asarray(chosen.scores)
            n_cand, n_masked = candidates.a.size, candidates.a.size - candidates.n_valid
            if shard_rows:  # the picked items, embedded here when another process held them
                row_of, phi, rew = _add_rows(params, model_config, pool, row_of, phi, rew, np.concatenate([a, b]))
    timings["select"] = time.perf_counter() - t
    if report_path is not None:
        # a rerun on the same number of labels replaces its round's row
        if history and history[-1]["labels"] == ts.n:
            history = history[:-1]
        row = stopping_row(
            ts, fit, beta, past, past_weight, tie, prior, phi[local(a)] - phi[local(b)], strategy, history
        )
        history = history + [row]

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
        {"a": str(ids[i]), "b": str(ids[j]), "p_a_wins": _fmt(p), "score": _fmt(s), "rank": rank,
         **pool.texts_of(i, "a"), **pool.texts_of(j, "b"),
         **({} if pool.costs is None else {"cost": _fmt(pool.costs[i] + pool.costs[j])})}
        for rank, (i, j, p, s) in enumerate(zip(a.tolist(), b.tolist(), p_a.tolist(), scores.tolist()), start=1)
    ]
    distributed.barrier("select: every process done")
    if distributed.is_writer():
        _write_selection(rows, out_path, output_format, report_path, history)
    timings["write"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    return SelectResult(
        rows, pool.n, labels.n, labels.n_ties, n_cand, n_masked, timings,
        fit if ts.n else None, val_metrics, n_overlap, labels.n_soft, history,
        None if pool.costs is None else float(np.sum(pool.costs[a] + pool.costs[b])),
    )


def _write_selection(rows, out_path, output_format: str, report_path, history) -> None:
    """``select``'s output files: the picks (JSON Lines, or Label Studio tasks and their
    config), and the stopping report when asked for."""
    if output_format == "label-studio":
        from arm_jax import labelstudio

        with io_lib.atomic_paths([out_path, label_config_path(out_path)]) as (tasks_tmp, config_tmp):
            tasks_tmp.write_text(json.dumps(labelstudio.tasks(rows), indent=1) + "\n", encoding="utf-8")
            config_tmp.write_text(labelstudio.LABEL_CONFIG, encoding="utf-8")
    else:
        io_lib.write_jsonl(out_path, rows)
    if report_path is not None:
        io_lib.write_jsonl(report_path, history)


def all_item_features(params, model_config: ModelConfig, pool: Pool, with_phi: bool = True, progress: bool = False):
    """(Φ, r) of every pool item, checked finite. On several processes each embeds its block of
    the items (:func:`arm_jax.distributed.block`) and the blocks are gathered; ``with_phi=False``
    gathers only the rewards (Φ is then this process's block)."""
    start, stop = distributed.block(pool.n)
    mine = None if stop - start == pool.n else np.arange(start, stop)
    phi, rew = item_features(params, model_config, pool.embeddings, mine, progress=progress)
    distributed.check_together(lambda: check_features(pool, mine, phi, rew))
    if with_phi:
        phi = distributed.gather_blocks(phi, pool.n)
    return phi, distributed.gather_blocks(rew, pool.n)


def _add_rows(params, model_config, pool: Pool, row_of, phi, rew, rows):
    """(row_of, phi, rew) with the features of ``rows`` added where missing, rows sorted."""
    extra = np.setdiff1d(rows, row_of)
    if not extra.size:
        return row_of, phi, rew
    phi_x, rew_x = item_features(params, model_config, pool.embeddings, extra)
    check_features(pool, extra, phi_x, rew_x)
    order = np.argsort(np.concatenate([row_of, extra]), kind="stable")
    return (np.concatenate([row_of, extra])[order], np.concatenate([phi, phi_x])[order],
            np.concatenate([rew, rew_x])[order])


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


def _select_all_pairs(
    strategy, seed, phi, beta, k, past, labelled, n_items, prior=DEFAULT_PRIOR_PRECISION, past_weight=None, tie=None,
):
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
            prior_precision=prior, past_weight=past_weight, tie=tie,
        )
        idx = np.asarray(chosen.indices)
        return a[idx].astype(np.int64), b[idx].astype(np.int64), np.asarray(chosen.scores)
    # Ask for a few more than k; if labelled pairs crowd the top, ask again for more (up to
    # k + #labelled, which always suffices). The first k unlabelled of the best k_try are the
    # best k unlabelled as soon as there are k of them.
    k_try = int(min(k_req, k + min(labelled.size, max(k, 64))))
    # several processes: the blocks of the pair grid split over every process's devices
    select_all = parallel.sharded_select_all_pairs if distributed.process_count() > 1 else allpairs.select_all_pairs
    while True:
        result = select_all(
            strategy, select_key(seed), phi, beta, k_try, past_phi_diff=past, prior_precision=prior,
            past_weight=past_weight, tie=tie,
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
    n_soft: int = 0


def _train_config_record(train_config: TrainConfig) -> dict:
    """The train config for the model file; the ties/raters fields only when they are not the
    defaults, so that a model of plain labels is byte for byte what it always was."""
    out = dataclasses.asdict(train_config)
    for name in ("ties", "annotators"):
        if out[name] == getattr(TrainConfig, name):
            del out[name]
    return out


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
    old ``OUT.csv`` beside a new ``OUT.npy``. On several processes (:mod:`arm_jax.distributed`)
    each scores one block of the items, the rewards are gathered, and process 0 writes.
    """
    npy_path, csv_path = score_paths(out)
    inputs = {"--model": model_path, "--pool": pool_path}
    distributed.on_writer(lambda: [io_lib.check_output_file(path, inputs) for path in (npy_path, csv_path)])
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
    _, rewards = all_item_features(saved.params, saved.model_config, pool, with_phi=False, progress=log is not _quiet)
    timings["score"] = time.perf_counter() - t
    t = time.perf_counter()
    prompts = pool.prompt_ids.tolist() if pool.prompt_ids is not None else [""] * pool.n
    csv_text = io_lib.csv_text(
        ["item_id", "prompt_id", "reward"],
        ((i, p, f"{r:.9g}") for i, p, r in zip(pool.item_ids.tolist(), prompts, rewards.tolist())),
    )
    if distributed.is_writer():
        with io_lib.atomic_paths([npy_path, csv_path]) as (npy_tmp, csv_tmp):
            npy_tmp.write_bytes(io_lib.npy_bytes(rewards))
            csv_tmp.write_text(csv_text, encoding="utf-8")
    timings["write"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    return ScoreResult(rewards, npy_path, csv_path, timings)
