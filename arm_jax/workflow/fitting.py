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

import dataclasses
import functools
import time
from pathlib import Path
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from arm_jax.errors import InputError
from arm_jax.model import buffer as buffer_lib
from arm_jax.model import fit as train_lib
from arm_jax.model import network as model_lib
from arm_jax.model import raters as raters_lib
from arm_jax.model.config import TrainConfig
from arm_jax.model.evaluate import finite_or_none
from arm_jax.model.network import ModelConfig
from arm_jax.runtime import distributed, programs
from arm_jax.runtime import files as io_lib
from arm_jax.runtime import progress as progress_lib
from arm_jax.runtime.arrays import release_pages
from arm_jax.workflow.labels import (
    Labels,
    load_labels,
    pair_keys,
)
from arm_jax.workflow.pool import Pool

FEATURE_CHUNK = 4096  # rows per jit-compiled forward pass


def train_key(seed: int) -> jax.Array:
    return jax.random.fold_in(jax.random.PRNGKey(seed), 0)


def select_key(seed: int) -> jax.Array:
    return jax.random.fold_in(jax.random.PRNGKey(seed), 1)


def initial_params(seed: int, model_config: ModelConfig, input_dim: int):
    """The parameters :func:`fit_on_labels` starts from (what ``fit`` returns with no labels)."""
    init_key, _ = jax.random.split(train_key(seed))
    return _init_jit(init_key, model_config, int(input_dim))


_init_jit = jax.jit(model_lib.init_params, static_argnums=(1, 2))


def bucket(n: int) -> int:
    """Round a size up (powers of two up to 8192, then multiples of 8192) so that labelled
    sets growing round after round reuse one compiled fit; padding never changes a result
    (padded rows are never drawn)."""
    if n <= 8192:
        return max(16, 1 << max(0, int(n) - 1).bit_length())
    return -(-int(n) // 8192) * 8192


class FitReport(NamedTuple):
    """What one fit did, as host values (:class:`arm_jax.model.config.FitStats` without the losses).

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
    """The host-side :class:`FitReport` of one (unbatched) :class:`arm_jax.model.config.FitStats`."""
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
    with those votes and that rater (:class:`arm_jax.model.buffer.LabelBuffer`), fitted with
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
    items = np.zeros((bucket(rows.size), embeddings.shape[1]), np.float32)
    items[: rows.size] = embeddings[rows]
    n_labels = winner.shape[0]
    buffer = label_buffer(inverse[:n_labels], inverse[n_labels:], bucket(n_labels), counts, annotator)
    items = jax.device_put(items)  # a copy, not a program (jnp.asarray compiles one)
    params, stats = programs.call(train_lib.fit_jit, "arm_jax.model.fit.fit", (train_key(seed), items, buffer),
                                     static=dict(model_config=model_config, train_config=train_config))
    return jax.block_until_ready(params), fit_report(stats, train_config)


def label_buffer(first, second, capacity: int, counts=None, annotator=None) -> buffer_lib.LabelBuffer:
    """The comparisons first[i] vs second[i] as a :class:`~arm_jax.model.buffer.LabelBuffer` of
    ``capacity`` rows: what :func:`arm_jax.model.buffer.buffer_from_pairs` holds, built on the
    host and copied to the device, so no program is compiled for the number of rows (only the
    capacity, a :func:`bucket`, reaches the device). With ``counts`` (n, 3) or ``annotator``
    (n,), a buffer with votes (default votes: one decided label; default rater: −1)."""
    n = int(np.shape(first)[0])
    if capacity < n:
        raise InputError(f"buffer capacity {capacity} is smaller than the {n} comparisons")
    pairs = np.zeros((capacity, 2), np.int32)
    pairs[:n, 0], pairs[:n, 1] = first, second
    head = (jax.device_put(pairs), jax.device_put(np.int32(n)), jax.device_put(np.bool_(False)))
    if counts is None and annotator is None:
        return buffer_lib.LabelBuffer(*head)
    votes = np.zeros((capacity, 3), np.float32)
    votes[:n] = np.float32([1, 0, 0]) if counts is None else counts
    rater = np.full(capacity, -1, np.int32)
    rater[:n] = -1 if annotator is None else annotator
    return buffer_lib.LabelBuffer(*head, jax.device_put(votes), jax.device_put(rater))


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
    ``progress``: a progress bar over the chunks at a terminal (:mod:`arm_jax.runtime.progress`).
    """
    n_rows = embeddings.shape[0] if rows is None else int(rows.shape[0])
    width = model_config.feature_dim(embeddings.shape[1])
    phi = np.empty((n_rows, width), np.float32)
    rew = np.empty((n_rows,), np.float32)
    if n_rows == 0:
        return phi, rew
    chunk = min(FEATURE_CHUNK, bucket(n_rows))
    forward = _forward_fn(model_config)
    starts = range(0, n_rows, chunk)
    for start in progress_lib.track(starts, len(starts), f"features of {n_rows} items", on=progress and len(starts) > 4):
        stop = min(start + chunk, n_rows)
        block = embeddings[start:stop] if rows is None else embeddings[rows[start:stop]]
        block = np.asarray(block, np.float32)
        if block.shape[0] < chunk:
            block = np.concatenate([block, np.zeros((chunk - block.shape[0], block.shape[1]), np.float32)])
        f, r = programs.call(forward, f"arm_jax.workflow.fitting.features[{model_config!r}]", (params, jax.device_put(block)))
        release_pages(embeddings)  # a memory-mapped pool: keep only this chunk resident
        phi[start:stop] = np.asarray(f)[: stop - start]
        rew[start:stop] = np.asarray(r)[: stop - start]
    return phi, rew

#: The error every input check raises (an alias of :class:`arm_jax.errors.InputError`).
DataError = InputError

Log = Callable[[str], None]


def _quiet(_: str) -> None:
    pass

@dataclasses.dataclass(frozen=True)
class LabelledRequest:
    """What every command that trains on a pool's labels is given (``select`` and ``train`` add
    their own fields): the input and output paths, the seed, the model and training configs,
    whether to fit rater reliabilities, and where log lines go."""

    pool_path: object
    labels_path: object
    out_path: object
    val_labels_path: object
    seed: int
    model_config: ModelConfig
    train_config: TrainConfig
    fit_raters: bool
    log: Log

    @property
    def progress(self) -> bool:
        """Show progress bars and spinners (only when someone reads the log)."""
        return self.log is not _quiet

    @property
    def inputs(self) -> dict:
        """The input files by flag, which no output may be (:func:`arm_jax.runtime.files.check_output_file`)."""
        return {"--pool": self.pool_path, "--labels": self.labels_path, "--val-labels": self.val_labels_path}





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


class PastRows(NamedTuple):
    """The labelled rows as the selection kernels see them (:class:`arm_jax.selection.scores.SelectionInputs`),
    padded to :func:`bucket` rows so that a later round with more labels in the same bucket
    runs the kernels compiled for this one: ``x`` (C, H) float32 (rows ≥ n zero), ``mask``
    (C,) bool (the first n rows), ``weight`` (C,) float32 votes (0 on padding) or None for
    decided labels, ``tie`` Davidson's ν or None; ``n`` the real rows."""

    x: np.ndarray
    mask: np.ndarray
    weight: np.ndarray | None
    tie: float | None
    n: int


def past_information_inputs(ts, fit, phi_first, phi_second, train_config: TrainConfig) -> PastRows:
    """:class:`PastRows` of the labelled rows for the selection: the rows as the Fisher
    information sees them (:func:`arm_jax.model.raters.information_rows`: x scaled by the
    rater's reliability, weighted by the votes), Davidson's ν when the fit has one
    (:class:`arm_jax.selection.scores.SelectionInputs`); weight and ν None for decided labels.
    Everything that reaches the device has the padded shape (nothing compiles per label count)."""
    n = ts.n
    capacity = bucket(n)
    x = np.zeros((capacity, np.shape(phi_first)[1]), np.float32)
    x[:n] = phi_first - phi_second
    mask = np.arange(capacity) < n
    if ts.counts is None:
        return PastRows(x, mask, None, None, n)
    buffer = label_buffer(ts.first, ts.second, capacity, ts.counts, ts.annotator)
    reliability = jnp.asarray(fit.reliability, jnp.float32) if fit.reliability else None
    x, weight = raters_lib.information_rows(jnp.asarray(x), raters_lib.votes_of(buffer, train_config), reliability)
    tie = fit.tie if fit.tie > 0 else None
    return PastRows(np.asarray(x, np.float32), mask, np.asarray(weight, np.float32), tie, n)


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
        return (f"no stopping epoch: too few labels ({n_labels}) for an early-stopping hold-out, so the whole step "
                f"budget ran ({fit.steps_taken} steps, {fit.epochs:.4g} passes over the labels)")
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
    votes = labels.votes
    tie_votes = float(votes.counts[:, 2].sum()) if votes is not None else float(labels.n_ties)
    if tie_votes and fit.tie > 0:
        log(f"ties: {tie_votes:g} tie votes, Davidson tie strength ν = {fit.tie:.3g} "
            f"(P(tie) between equal items {fit.tie / (2 + fit.tie):.2f})")
    if votes is not None and fit.reliability:
        counts = votes.per_annotator()
        shown = ", ".join(f"{name} {q:.2f} ({n} lines)" for name, q, n in zip(votes.annotators, fit.reliability, counts))
        log(f"rater reliability (1 = the panel's typical rater): {shown}")
        unnamed = int(np.count_nonzero(votes.annotator < 0))
        if unnamed:
            log(f"{unnamed} lines name no annotator: they count as the panel's typical rater (reliability 1)")


def all_item_features(params, model_config: ModelConfig, pool: Pool, with_phi: bool = True, progress: bool = False):
    """(Φ, r) of every pool item, checked finite. On several processes each embeds its block of
    the items (:func:`arm_jax.runtime.distributed.block`) and the blocks are gathered; ``with_phi=False``
    gathers only the rewards (Φ is then this process's block)."""
    start, stop = distributed.block(pool.n)
    mine = None if stop - start == pool.n else np.arange(start, stop)
    phi, rew = item_features(params, model_config, pool.embeddings, mine, progress=progress)
    distributed.check_together(lambda: check_features(pool, mine, phi, rew))
    if with_phi:
        phi = distributed.gather_blocks(phi, pool.n)
    return phi, distributed.gather_blocks(rew, pool.n)


def timed(timings: dict, name: str, phase: Callable, *args):
    """``phase(*args)``, its wall time in seconds stored as ``timings[name]``."""
    t = time.perf_counter()
    out = phase(*args)
    timings[name] = time.perf_counter() - t
    return out
