"""Active reward modelling on your own data: the select / train / score loop.

This module is the library behind ``arm-jax select``, ``arm-jax train`` and ``arm-jax score``
(:mod:`arm_jax.cli.data`). Its pieces live in modules named for what they hold:

- :mod:`arm_jax.workflow.pool` — the pool of embedded items (``.npy``/``.npz``), read and checked;
- :mod:`arm_jax.workflow.labels` — the JSON Lines labels, parsed and checked;
- :mod:`arm_jax.workflow.candidates` — which pairs may be proposed, and a uniform sample of them;
- :mod:`arm_jax.workflow.fitting` — fit the reward model on labels, features and rewards of items;
- :mod:`arm_jax.workflow.checkpoint` — saved models.

Every user-fixable problem raises :class:`~arm_jax.errors.InputError` (``DataError`` here,
for old callers) or ``FileNotFoundError`` with a one-line message that names the file, and
nothing is written before all inputs and the output path have been checked. Nothing here
prints: progress goes to the ``log`` callback each function takes.

Randomness comes from one integer seed (see :mod:`arm_jax.workflow.fitting`); the candidate subsample
is a numpy generator seeded by ``seed`` and a digest of the labelled pairs
(:func:`arm_jax.workflow.candidates.candidate_seed`), the fixed schedule's validation split
``default_rng([seed, 3])``.

Held-out numbers. With early stopping (:class:`~arm_jax.model.config.TrainConfig`) the model holds
out a seeded share of the labels inside the fit and reports their accuracy and log-loss
(:class:`~arm_jax.workflow.fitting.FitReport`); with the fixed schedule ``train`` holds out
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
import time
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np

from arm_jax.errors import InputError
from arm_jax.model import evaluate
from arm_jax.model import network as model_lib
from arm_jax.model.config import TrainConfig
from arm_jax.model.evaluate import PairMetrics, pair_metrics
from arm_jax.model.likelihood import DEFAULT_PRIOR_PRECISION
from arm_jax.model.network import ModelConfig
from arm_jax.runtime import distributed, programs
from arm_jax.runtime import files as io_lib
from arm_jax.runtime import mesh as parallel
from arm_jax.runtime import progress as progress_lib
from arm_jax.selection import allpairs, posterior, registry, sharded
from arm_jax.selection import pool as pool_lib
from arm_jax.selection import scores as strategies_lib
from arm_jax.selection.batch import handed_off
from arm_jax.selection.catalog import TARGET_PAIRS
from arm_jax.selection.registry import PAIR_SCORE_STRATEGIES as ALL_PAIRS_STRATEGIES
from arm_jax.workflow import policy
from arm_jax.workflow.candidates import (
    DEFAULT_CANDIDATES,
    PAIR_MODES,
    CandidatePairs,
    candidate_pairs,
)
from arm_jax.workflow.fitting import (
    FitReport,
    LabelledRequest,
    Log,
    PastRows,
    TrainingSet,
    _describe_labels,
    _load_val_labels,
    _quiet,
    _schedule,
    all_item_features,
    bucket,
    check_features,
    fit_summary,
    fit_training_set,
    item_features,
    log_raters,
    past_information_inputs,
    select_key,
    timed,
    training_set,
)
from arm_jax.workflow.labels import (
    Labels,
    empty_labels,
    labelled_keys,
    load_labels,
    pair_keys,
)
from arm_jax.workflow.pool import Pool, check_informative, load_pool

__all__ = ['SelectRequest', 'SelectResult', 'run_select', 'select_pairs']


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
    gain_ratio: float | None = None
    model_config: ModelConfig | None = None  # the model the picks came from (--depth auto: the chosen one)
    params: object = None  # its fitted parameters (the seeded initial ones on a cold start): rewards of
    # items x are arm_jax.model.network.reward(params, model_config, x)
    strategy: str = ""  # the rule that picked: the request's, or "random" after the hand-off (--random-after)


#: What ``select`` writes: JSON Lines (one pair a line) or Label Studio tasks.
OUTPUT_FORMATS = ("jsonl", "label-studio")


def label_config_path(out_path) -> Path:
    """``next.json`` -> ``next.label_config.xml``: the labelling config beside Label Studio tasks."""
    out = Path(out_path)
    return out.with_name(out.stem + ".label_config.xml")


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


def _fmt(x: float) -> float | None:
    """A float32 value as the shortest JSON float that round-trips it (None if not finite)."""
    x = float(x)
    return float(f"{x:.9g}") if math.isfinite(x) else None


def stopping_row(ts, fit, beta, past, past_weight, tie, prior, picked_x, strategy: str, history=()) -> dict:
    """One stopping report (``select --report``): labels so far; ``gain_last``: the information
    gain per label of the last batch, the label lines added since the previous report with
    fewer labels (without one: the last min(k, labels) lines), under the model trained on all
    of them; ``from_prior``: that batch is every label (its gain is against the prior alone,
    like a random round 0, and is no reference for the rule); ``gain_next``: the expected gain
    per label of the picked batch; the held-out accuracy and its standard error (the fit's
    early-stopping or cross-validation hold-out); see :mod:`arm_jax.selection.stopping`."""

    k = int(picked_x.shape[0])
    n = ts.n
    gain = _gain_per_label(beta, past, past_weight, n, tie, prior, picked_x)
    rows = np.arange(n + k)
    earlier = [r["labels"] for r in history if r["labels"] < n]
    m = n - earlier[-1] if earlier else min(k, n)
    gain_last = gain(rows < n - m, rows < n, m) if n else None
    gain_next = gain(rows < n, rows < n + k, k)
    acc = fit.val_accuracy if fit is not None and fit.n_val else float("nan")
    se = math.sqrt(acc * (1 - acc) / fit.n_val) if acc == acc else float("nan")
    return {"labels": n, "k": k, "strategy": strategy, "last_batch": m,
            "gain_last": None if gain_last is None else _fmt(gain_last), "from_prior": bool(n and m == n),
            "gain_next": _fmt(gain_next), "val_accuracy": _fmt(acc), "val_se": _fmt(se)}


#: labels before select reports the gain ratio: with fewer the posterior is mostly the prior,
#: and the ratio says little about the rule
GAIN_RATIO_MIN_LABELS = 100

# one compiled program per shape (the persistent cache keeps it), not op-by-op dispatch
_information_gain = jax.jit(posterior.information_gain)


def _gain_per_label(beta, past, past_weight, n: int, tie, prior, batch_x):
    """``gain(before, after, m)``: the information gain (nats, :func:`arm_jax.selection.posterior.information_gain`)
    of the rows in ``after`` but not ``before`` over the n labelled rows ``past`` followed by
    ``batch_x``, per label (divided by ``m``), at the head ``beta``."""
    h, k = beta.shape[0], batch_x.shape[0]
    x_past = np.zeros((0, h), np.float32) if past is None else np.asarray(past, np.float32)
    w_past = np.ones(n, np.float32) if past_weight is None else np.asarray(past_weight, np.float32)
    # both parts padded to their size buckets (zero rows of weight 0 add nothing), so that the
    # program compiles once per bucket, not once per label count
    pad_n, pad_k = bucket(n) - n, bucket(k) - k
    zeros = lambda m: np.zeros((m, h), np.float32)
    x = np.concatenate([x_past, zeros(pad_n), np.asarray(batch_x, np.float32), zeros(pad_k)])
    w = np.concatenate([w_past, np.zeros(pad_n, np.float32), np.ones(k, np.float32), np.zeros(pad_k, np.float32)])
    nu = None if tie is None else np.float32(tie)

    def padded(mask):
        mask = np.asarray(mask, bool)
        return np.concatenate([mask[:n], np.zeros(pad_n, bool), mask[n:], np.zeros(pad_k, bool)])

    def gain(before, after, m):
        args = (beta, x, padded(before), padded(after), prior, w, nu)
        return float(programs.call(_information_gain, "arm_jax.selection.posterior.information_gain", args)) / m

    return gain


def gain_ratio_to_random(beta, past, past_weight, n: int, tie, prior, picked_x, random_x) -> float:
    """The expected information gain of the picked batch over that of a random batch of as
    many candidates, under the same posterior (the D-optimal criterion of the stopping report;
    > 1: the picks are expected to teach the head more than random pairs would)."""
    k = int(picked_x.shape[0])
    after = np.arange(n + k) < n + k
    before = np.arange(n + k) < n
    picked = _gain_per_label(beta, past, past_weight, n, tie, prior, picked_x)(before, after, k)
    random = _gain_per_label(beta, past, past_weight, n, tie, prior, random_x)(before, after, k)
    return picked / random if random > 0 else float("nan")


@dataclasses.dataclass(frozen=True)
class SelectRequest(LabelledRequest):
    """The checked arguments of one ``select`` call (:func:`select_pairs`; :func:`_check_request`
    checks them): ``model_config`` and ``train_config`` are set, ``k`` is a positive int or None
    (with a ``budget``), and the strategy, pair mode, output format and budget are known ones."""

    strategy: str
    k: int | None
    pairs: str
    n_candidates: int
    allow_relabel: bool
    output_format: str
    report_path: object
    budget: float | None
    explore: float = 0.0
    allow_unannotated: bool = False
    auto_depth: bool = False
    target_pairs: str = "candidates"
    random_after: int | None = None


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
    explore: float = 0.0,
    allow_unannotated: bool = False,
    auto_depth: bool = False,
    target_pairs: str = "candidates",
    random_after: int | None = policy.DEFAULT.random_after,
) -> SelectResult:
    """Train on the labels, pick the next k pairs, write them as JSON Lines (``select``).

    Each output line: ``{"a": ID, "b": ID, "p_a_wins": float, "score": float, "rank": int}``,
    best first (rank 1). No item is paired with itself and no pair comes twice; no pair is
    already labelled (either order) unless ``allow_relabel``. ``labels_path=None`` is the
    cold start: the untrained, seeded model's features are used. ``val_labels_path``:
    comparisons kept for evaluation only (not trained on, never proposed, even with
    ``allow_relabel``); the trained model's accuracy, log-loss and ECE on them are returned.
    ``model_config=None``: the default policy's model (:data:`arm_jax.workflow.policy.DEFAULT`,
    the linear model). ``fit_raters``: fit a reliability per rater when the labels name two or more. When the
    pool has texts, each line also carries ``prompt_a``, ``response_a``, ``prompt_b``,
    ``response_b``. ``output_format="label-studio"``: the same rows as Label Studio tasks (a
    JSON list) and its labelling config beside them (:func:`label_config_path`; see
    :mod:`arm_jax.workflow.labelstudio`). ``report_path``: a JSON Lines history of stopping reports,
    one row appended per call (:func:`stopping_row`); the result's ``report`` holds them all.
    ``budget``: pick the batch of largest gain per unit cost whose pairs' costs (the sum of
    the two items' ``costs`` in the pool) add up to at most this
    (:func:`arm_jax.selection.pool.select_within_budget`); ``k`` is then the most pairs (None: no
    limit but the budget) and each line carries its ``cost``. ``explore``: the hedge, this
    fraction of the k pairs drawn at random among the candidates the strategy did not pick
    (:func:`arm_jax.selection.registry.hedged`; sampled candidates, no budget).
    ``allow_unannotated``: a Label Studio export with no annotated task is a cold start instead
    of an error (it is most likely the tasks file ``select`` wrote). ``auto_depth``: fit the
    linear model and the MLP of ``model_config`` and keep the one of lower held-out log-loss.
    ``target_pairs``: what the I-optimal rules average the predictive variance over
    (:data:`arm_jax.selection.catalog.TARGET_PAIRS`): the candidates, or ``in-prompt``, the pool's
    own in-prompt pairs (every pair when it has no prompt ids; :func:`_target_spread`).
    ``random_after``: the hand-off, from this many labelled pairs on the k pairs are drawn at
    random instead (:func:`_hand_off`; the default policy's, None: never).
    Checks every input and the output path before training and writes nothing on error.

    On several processes (:mod:`arm_jax.runtime.distributed`) the pair-score strategies split the
    candidate rows over every process's devices: each process embeds and scores only its
    rows (:class:`arm_jax.runtime.mesh.Rows`), and the picks are those of one process; with
    ``--pairs all-cross`` each embeds a block of the items and scores a share of the pair
    grid's blocks (:func:`arm_jax.selection.sharded.sharded_select_all_pairs`). The other strategies and
    ``--budget`` run whole on every process. Only process 0 writes.
    """
    request = SelectRequest(
        pool_path=pool_path, labels_path=labels_path, out_path=out_path, strategy=strategy, k=k, pairs=pairs,
        n_candidates=n_candidates, seed=seed, model_config=model_config or policy.DEFAULT.model,
        train_config=train_config or TrainConfig(), log=log, allow_relabel=allow_relabel,
        val_labels_path=val_labels_path, fit_raters=fit_raters, output_format=output_format,
        report_path=report_path, budget=budget, explore=explore, allow_unannotated=allow_unannotated,
        auto_depth=auto_depth, target_pairs=target_pairs, random_after=random_after,
    )
    return run_select(_check_request(request))


def run_select(request: SelectRequest) -> SelectResult:
    """One ``select`` call on a checked request (:func:`_check_request`), phase by phase: check
    the outputs, load, fit, embed, choose, report, write; each phase's wall time in ``timings``."""
    history = _check_outputs(request)
    timings = {}
    t0 = time.perf_counter()
    data = timed(timings, "load", _load, request)
    fitted = timed(timings, "train", _fit, request, data)
    request = dataclasses.replace(request, model_config=fitted.model_config)  # --depth auto: the chosen model
    asked = request.strategy
    request, data = _hand_off(request, data, labelled_pairs(fitted.ts))
    features = timed(timings, "features", _embed, request, data, fitted)
    past = _past_information(fitted, features)._replace(spread=_target_spread(request, data, fitted, features))
    val = data.val
    val_metrics = None if val is None else pair_metrics(features.rewards_of(val.winner), features.rewards_of(val.loser))
    picks = timed(timings, "select", _choose, request, data, fitted, features, past)
    # after the hand-off the batch is random: a ratio of one random batch to another says nothing
    ratio = timed(timings, "gain", _gain_ratio, request, data, fitted, past, picks) if request.strategy == asked else None
    report = (lambda *a: timed(timings, "report", _report, *a)) if request.report_path is not None else _report
    history = report(request, history, fitted, past, picks)
    rows = timed(timings, "write", _write, request, data, picks, history)
    timings["total"] = time.perf_counter() - t0
    pool, labels = data.pool, data.labels
    return SelectResult(
        rows, pool.n, labels.n, labels.n_ties, picks.n_candidates, picks.n_masked, timings,
        fitted.fit if fitted.ts.n else None, val_metrics, data.n_overlap, labels.n_soft, history,
        None if pool.costs is None else float(np.sum(pool.costs[picks.a] + pool.costs[picks.b])), ratio,
        request.model_config, fitted.params, request.strategy,
    )


def labelled_pairs(ts: TrainingSet) -> int:
    """How many distinct pairs (either order) the labels hold: the count the hand-off reads, as
    the experiment's label buffer holds one row per pair (several raters' votes in one row)."""
    if not ts.n:
        return 0
    n = int(max(ts.first.max(), ts.second.max())) + 1
    return int(np.unique(pair_keys(ts.first, ts.second, n)).size)


def _hand_off(request: SelectRequest, data: "_Loaded", n_labelled: int) -> tuple[SelectRequest, "_Loaded"]:
    """``--random-after``: the request and data with the strategy ``random`` once ``n_labelled``
    distinct pairs reach it (:func:`arm_jax.selection.batch.handed_off`, the rule the experiment's
    hand-off reads), logged; unchanged before, and with ``--pairs all-cross`` (every pair scored by
    the rule; no random draw there), logged too. Random runs whole on every process (same seed,
    same picks), so the candidate rows are no longer split."""
    if request.strategy == "random" or not handed_off(n_labelled, request.random_after):
        return request, data
    if request.pairs == "all-cross":
        request.log(f"{n_labelled} labelled pairs >= --random-after {request.random_after}, but --pairs all-cross "
                    f"scores every pair and has no random draw: {request.strategy} picks (sampled candidates, "
                    "--pairs cross-prompt or in-prompt, hand off; --random-after never silences this)")
        return request, data
    request.log(f"{n_labelled} labelled pairs >= --random-after {request.random_after}: this batch is drawn at "
                f"random instead of by {request.strategy} (past this count random pairs did as well or better; "
                "--random-after never keeps the rule)")
    request = dataclasses.replace(request, strategy="random", explore=0.0, target_pairs="candidates")
    return request, data._replace(shard_rows=False)


# ----------------------------------------------------------------------------- select: check the request


def _check_request(request: SelectRequest) -> SelectRequest:
    """Phase 1: the request with ``k`` checked (:func:`_check_k`); InputError on an unknown
    strategy, pair mode or output format, or a budget that is not positive or does not go with
    the pair mode or the strategy."""
    strategy, pairs, budget, k = request.strategy, request.pairs, request.budget, request.k
    registry.get_strategy(strategy)  # InputError naming the choices
    if pairs not in PAIR_MODES:
        raise InputError(f"unknown --pairs {pairs!r}; choose one of {', '.join(PAIR_MODES)}")
    if budget is not None:
        if not (math.isfinite(budget) and budget > 0):
            raise InputError(f"--budget must be a positive number, got {budget}")
        if pairs == "all-cross":
            raise InputError("--budget needs sampled candidates: use --pairs cross-prompt or in-prompt")
        if strategy not in registry.BUDGET_STRATEGIES + registry.PAIR_SCORE_STRATEGIES:
            raise InputError(
                f"--budget works with: {', '.join(registry.BUDGET_STRATEGIES + registry.PAIR_SCORE_STRATEGIES)}"
                f" (not {strategy})"
            )
    if k is None and budget is None:
        raise InputError("give --k (how many pairs) or --budget (how much they may cost)")
    if not (math.isfinite(request.explore) and 0.0 <= request.explore <= 1.0):
        raise InputError(f"--explore must be a fraction in [0, 1], got {request.explore}")
    if request.explore > 0 and (budget is not None or pairs == "all-cross"):
        raise InputError("--explore draws among sampled candidates: not with --budget or --pairs all-cross")
    _check_target_pairs(request.target_pairs, strategy)
    registry.check_random_after(request.random_after, "--random-after")
    k = _check_k(k) if k is not None else None
    if request.output_format not in OUTPUT_FORMATS:
        raise InputError(f"unknown --format {request.output_format!r}; choose one of {', '.join(OUTPUT_FORMATS)}")
    return dataclasses.replace(request, k=k)


def _check_target_pairs(target_pairs: str, strategy: str) -> None:
    """InputError for an unknown ``--target-pairs`` or one given to a rule that does not read it."""
    if target_pairs not in TARGET_PAIRS:
        raise InputError(f"unknown --target-pairs {target_pairs!r}; choose one of {', '.join(TARGET_PAIRS)}")
    if target_pairs != "candidates" and strategy not in registry.SPREAD_RULES:
        raise InputError(
            f"--target-pairs is read by the I-optimal rules ({', '.join(registry.SPREAD_RULES)}), not by {strategy}"
        )


def _check_k(k) -> int:
    if isinstance(k, bool) or int(k) != k or k < 1:
        raise InputError(f"--k must be a positive integer, got {k}")
    return int(k)


def _check_outputs(request: SelectRequest) -> list[dict]:
    """The output paths checked on process 0, which writes them (:func:`arm_jax.runtime.distributed.on_writer`),
    before any work; returns the stopping-report history read from ``--report`` (empty
    without one, and on the other processes)."""
    out_path, report_path, inputs = request.out_path, request.report_path, request.inputs
    history = []

    def check_outputs():
        io_lib.check_output_file(out_path, inputs)
        if request.output_format == "label-studio":
            io_lib.check_output_file(label_config_path(out_path), inputs)
        if report_path is not None:
            io_lib.check_output_file(report_path, {**inputs, "--out": out_path}, flag="--report")
            history.extend(read_report(report_path))

    distributed.on_writer(check_outputs)
    return history


# ----------------------------------------------------------------------------- select: load


class _Loaded(NamedTuple):
    """What ``select`` read: the pool, the labels, the evaluation labels (None without) and how
    many of their pairs the labels hold too; ``val_keys``: their pair keys; ``excluded``: the
    pair keys never proposed; ``candidates``: the sampled candidate pairs (None with
    ``--pairs all-cross``: every pair); ``shard_rows``: each process scores only its block."""

    pool: Pool
    labels: Labels
    val: Labels | None
    n_overlap: int
    val_keys: np.ndarray
    excluded: np.ndarray
    candidates: CandidatePairs | None
    shard_rows: bool


def _load(request: SelectRequest) -> _Loaded:
    """Phase 2: read the pool, the labels and the evaluation labels, and choose the candidates
    (checking that there are enough of them for ``k``)."""
    pool = load_pool(request.pool_path)
    if request.budget is not None and pool.costs is None:
        raise InputError(f"{pool.path}: --budget needs the items' costs: add a 'costs' array (N,) to the pool .npz")
    check_informative(pool)
    labels = (empty_labels() if request.labels_path is None
              else load_labels(request.labels_path, pool, request.allow_unannotated))
    labelled = labelled_keys(labels, pool.n)
    val, n_overlap = _load_val_labels(request.val_labels_path, request.labels_path, labelled, pool, request.log)
    val_keys = np.zeros(0, np.int64) if val is None else labelled_keys(val, pool.n)
    excluded = np.zeros(0, np.int64) if request.allow_relabel else labelled
    if request.pairs == "all-cross":
        candidates = None
        excluded = np.union1d(excluded, val_keys)
        _check_all_cross(request.strategy, request.k, pool, excluded)
    else:
        candidates = candidate_pairs(
            pool, request.pairs, request.n_candidates, request.seed, labelled,
            allow_relabel=request.allow_relabel, never=val_keys,
        )
        _check_enough_candidates(
            1 if request.budget is not None else request.k, candidates, request.pairs, pool, evaluation=val is not None
        )
        if request.budget is not None:
            _check_budget(request.budget, _pair_costs(pool, candidates)[candidates.valid])
    shard_rows = _split_over_processes(request, candidates)
    return _Loaded(pool, labels, val, n_overlap, val_keys, excluded, candidates, shard_rows)


def _split_over_processes(request: SelectRequest, candidates: CandidatePairs | None) -> bool:
    """Whether each process embeds and scores only its own block of the candidate rows (several
    processes, a pair-score strategy, no budget); on several processes, logs how the work is split."""
    shard_rows = (
        candidates is not None and request.budget is None and distributed.process_count() > 1
        and request.strategy in registry.PAIR_SCORE_STRATEGIES and request.explore == 0
    )
    if distributed.process_count() > 1:
        split = (
            "the pair grid's blocks split over them" if candidates is None
            else "the candidate rows split over them" if shard_rows
            else f"{'--budget' if request.budget is not None else request.strategy} runs whole on every process"
        )
        request.log(f"{distributed.process_count()} processes, {jax.device_count()} devices: {split}")
    return shard_rows


# ----------------------------------------------------------------------------- select: fit


class _Fitted(NamedTuple):
    """The trained reward model: its training set, the train config that fitted it (raters
    set, :func:`arm_jax.workflow.fitting.training_set`), its parameters and its report."""

    ts: TrainingSet
    train_config: TrainConfig
    params: object
    fit: FitReport
    model_config: ModelConfig


def _fit(request: SelectRequest, data: _Loaded) -> _Fitted:
    """Phase 3: train the reward model on the labels (from scratch, seeded); with no labels, the
    seeded initial model (the cold start). With ``auto_depth`` the linear model and the MLP of
    ``model_config`` are both fitted and the one of lower held-out log-loss is kept
    (:func:`_choose_model`)."""
    labels, log = data.labels, request.log
    ts, train_config = training_set(labels, request.train_config, request.fit_raters)
    configs = [request.model_config]
    if request.auto_depth:
        configs = [policy.DEFAULT.model] + ([request.model_config] if ts.n else [])
    if labels.n_train == 0:
        basis = ("the embeddings themselves (the linear model's features) under its prior"
                 if configs[0].depth == 0 else "the untrained (seeded) model's random features")
        log(f"cold start: no labels, so {request.strategy} chooses the pairs on {basis}")
    fits = []
    for config in configs:
        if ts.n:
            log(f"training the reward model on {_describe_labels(labels)} ({_schedule(train_config, config)})")
        params, fit = fit_training_set(request.seed, data.pool, ts, config, train_config, progress=request.progress)
        if ts.n:
            log(fit_summary(fit, ts.n))
        fits.append(_Fitted(ts, train_config, params, fit, config))
    fitted = fits[0] if len(fits) == 1 else _choose_model(fits, _votes_per_line(ts), log)
    if ts.n:
        log_raters(labels, fitted.fit, log)
    return fitted


def _votes_per_line(ts: TrainingSet) -> float:
    """The mean number of votes a label line carries (1 for decided labels)."""
    return 1.0 if ts.counts is None or not ts.n else float(np.sum(ts.counts)) / ts.n


def _choose_model(fits: list, votes_per_line: float, log: Log) -> _Fitted:
    """``--depth auto``: of the linear model (first) and the MLP, the one whose held-out
    log-loss per vote is lower (the linear model's from its 5-fold cross-validation, a loss per
    line divided by ``votes_per_line``; the MLP's from its early-stopping hold-out, per vote);
    the linear model when either has none. Process 0's choice on every process (the losses of
    a fit are not bitwise equal across processes)."""
    linear, mlp = fits
    a, b = (float(x) for x in distributed.from_process_0(
        np.array([linear.fit.val_loss / votes_per_line, mlp.fit.val_loss], np.float64)))
    shape = f"the MLP ({mlp.model_config.depth} x {mlp.model_config.width})"
    if not (math.isfinite(a) and math.isfinite(b)):
        log(f"--depth auto: the linear model (too few labels to compare it with {shape} on held-out labels)")
        return linear
    chosen = mlp if b < a else linear
    log(f"--depth auto: {'the linear model' if chosen is linear else shape}, held-out log-loss "
        f"{min(a, b):.4f} against {max(a, b):.4f} for {shape if chosen is linear else 'the linear model'} "
        f"(the linear model's by 5-fold cross-validation, the MLP's on its early-stopping hold-out)")
    return chosen


# ----------------------------------------------------------------------------- select: embed


class _Features(NamedTuple):
    """The model's head ``beta`` and the features ``phi`` and rewards ``rew`` of the pool rows
    ``row_of`` (sorted; None: every item, in pool order)."""

    beta: np.ndarray
    row_of: np.ndarray | None
    phi: np.ndarray
    rew: np.ndarray

    def local(self, rows: np.ndarray) -> np.ndarray:
        """Pool rows -> rows of ``phi`` and ``rew``."""
        return rows if self.row_of is None else np.searchsorted(self.row_of, rows)

    def diff(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """φ(a) − φ(b) of the pairs (a[i], b[i])."""
        return self.phi[self.local(a)] - self.phi[self.local(b)]

    def rewards_of(self, rows: np.ndarray) -> np.ndarray:
        return self.rew[self.local(rows)]


def _embed(request: SelectRequest, data: _Loaded, fitted: _Fitted) -> _Features:
    """Phase 4: the features of every item a candidate or a label touches (of every item with
    ``--pairs all-cross``), checked finite."""
    params, model_config, pool = fitted.params, request.model_config, data.pool
    beta = np.asarray(model_lib.head(jax.device_get(params)), np.float32)  # on the host: no program for the slice
    if data.candidates is None:  # every item (all pairs): on several processes each embeds a block
        phi, rew = all_item_features(params, model_config, pool, progress=request.progress)
        return _Features(beta, None, phi, rew)
    row_of = _touched_rows(data, fitted.ts)
    phi, rew = item_features(params, model_config, pool.embeddings, row_of, progress=request.progress)
    # on several processes each holds its own rows: all stop on the first's bad row
    distributed.check_together(lambda: check_features(pool, row_of, phi, rew))
    return _Features(beta, row_of, phi, rew)


def _touched_rows(data: _Loaded, ts: TrainingSet) -> np.ndarray:
    """The pool rows (sorted) of the candidates (this process's block of them when
    ``shard_rows``), the labels and the evaluation labels."""
    candidates = data.candidates
    mine = slice(*parallel.process_rows(candidates.a.size)) if data.shard_rows else slice(None)
    touched = [candidates.a[mine], candidates.b[mine], ts.first, ts.second]
    if data.val is not None:
        touched += [data.val.winner, data.val.loser]
    return np.unique(np.concatenate(touched))


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


class _Past(NamedTuple):
    """What the strategies know of the labelled rows, padded to a size bucket
    (:func:`arm_jax.workflow.fitting.past_information_inputs`; None with no labels), the head's
    prior precision, and the I-optimal rules' target S (:func:`_target_spread`; None: the
    candidates')."""

    rows: PastRows | None
    prior: float
    spread: np.ndarray | None = None

    def kernel_args(self) -> dict:
        """The keyword arguments of every selection driver (pool, budget, all pairs, sharded)
        that carry the labelled rows, the prior and S; the rows padded, with their mask."""
        rows = self.rows
        if rows is None:
            return dict(past_phi_diff=None, past_mask=None, past_weight=None, tie=None, prior_precision=self.prior,
                        spread=self.spread)
        return dict(past_phi_diff=rows.x, past_mask=rows.mask, past_weight=rows.weight, tie=rows.tie,
                    prior_precision=self.prior, spread=self.spread)

    def unpadded(self) -> tuple:
        """(past, past_weight, tie) of the real rows alone (None each with no labels), for :func:`stopping_row`."""
        rows = self.rows
        if rows is None:
            return None, None, None
        return rows.x[: rows.n], None if rows.weight is None else rows.weight[: rows.n], rows.tie


def _target_spread(request: SelectRequest, data: _Loaded, fitted: _Fitted, features: _Features):
    """``--target-pairs in-prompt``: the I-optimal rules' S over the pool's own in-prompt pairs
    (every pair of items when the pool has no prompt ids), from every item's features
    (:func:`arm_jax.selection.scores.prompt_spread`); None for ``candidates``."""
    if request.target_pairs == "candidates":
        return None
    pool = data.pool
    phi = features.phi if features.row_of is None else all_item_features(fitted.params, request.model_config, pool)[0]
    group = np.zeros(pool.n, np.int32)
    if pool.prompt_ids is not None:
        group = np.unique(pool.prompt_ids, return_inverse=True)[1].astype(np.int32)
    return np.asarray(_prompt_spread(jax.device_put(phi), jax.device_put(group), np.ones(pool.n, bool)))


_prompt_spread = jax.jit(strategies_lib.prompt_spread)


def _past_information(fitted: _Fitted, features: _Features) -> _Past:
    """The labelled rows as the posterior-based strategies see them, and the head's prior
    precision (chosen on held-out labels by the linear model's exact fit; the default otherwise)."""
    ts, fit = fitted.ts, fitted.fit
    rows = None
    if ts.n:
        rows = past_information_inputs(
            ts, fit, features.phi[features.local(ts.first)], features.phi[features.local(ts.second)], fitted.train_config
        )
    prior = fit.prior_precision if ts.n and np.isfinite(fit.prior_precision) else DEFAULT_PRIOR_PRECISION
    return _Past(rows, prior)


# ----------------------------------------------------------------------------- select: choose


class _Picks(NamedTuple):
    """The picked pairs (a[i], b[i]) best first and their scores; how many candidates there
    were and how many of them were masked; the features, the picked items' included."""

    a: np.ndarray
    b: np.ndarray
    scores: np.ndarray
    n_candidates: int
    n_masked: int
    features: _Features


def _choose(request: SelectRequest, data: _Loaded, fitted: _Fitted, features: _Features, past: _Past) -> _Picks:
    """Phase 5: score the candidates with the strategy and keep the best k. The driver: every
    pair (:func:`_select_all_pairs`: :mod:`arm_jax.selection.allpairs` or its sharded form), or
    of the sampled candidates the rows split over the processes
    (:func:`_select_sharded`), all on this one (:func:`_select_pool`) or within the budget
    (:func:`_select_budget`)."""
    strategy, candidates = request.strategy, data.candidates
    with progress_lib.spinner(f"{strategy}: scoring the candidates", on=request.progress):
        if candidates is None:
            a, b, scores = _select_all_pairs(
                strategy, request.seed, features.phi, features.beta, request.k, past, data.excluded, data.pool.n
            )
            return _Picks(a, b, scores, data.pool.n * (data.pool.n - 1) // 2, data.excluded.size, features)
        items = _pair_items(request, data, features)
        diff_rows = lambda start, stop: features.diff(candidates.a[start:stop], candidates.b[start:stop])
        diff = None if data.shard_rows else diff_rows(0, candidates.a.size)
        if data.shard_rows:  # each process builds only its own rows
            chosen = _select_sharded(request, candidates, features, past, diff_rows)
        elif request.budget is None:
            chosen = _select_pool(request, candidates, features, past, diff, items)
        else:
            chosen = _select_budget(request, data, features, past, diff)
        return _picked(request, data, fitted.params, features, chosen)


def _pair_items(request: SelectRequest, data: _Loaded, features: _Features):
    """The candidates as items for the response rules (:data:`arm_jax.selection.registry.RESPONSE_RULES`):
    they run per prompt on in-prompt candidates, over the whole pool otherwise; None for the other strategies."""
    if request.strategy not in registry.RESPONSE_RULES:
        return None
    candidates = data.candidates
    group = np.zeros(candidates.a.size, np.int32)
    if request.pairs == "in-prompt":
        group = np.unique(data.pool.prompt_ids[candidates.a], return_inverse=True)[1].astype(np.int32)
    return strategies_lib.PairItems(features.phi, features.local(candidates.a), features.local(candidates.b), group)


def _select_sharded(request: SelectRequest, candidates: CandidatePairs, features: _Features, past: _Past, diff_rows):
    """The best k candidates, their rows split over every process's devices (each builds only its own)."""
    return sharded.sharded_select(
        request.strategy, None, parallel.Rows(candidates.a.size, features.phi.shape[1], diff_rows), features.beta,
        request.k, valid=candidates.valid, **past.kernel_args(),
    )


def _select_pool(request: SelectRequest, candidates: CandidatePairs, features: _Features, past: _Past, diff, items):
    """The best k candidates, scored here (:func:`arm_jax.selection.pool.select`)."""
    strategy = registry.hedged(registry.get_strategy(request.strategy), request.explore)
    return pool_lib.select(
        strategy, select_key(request.seed), diff, features.beta, request.k, valid=candidates.valid,
        items=items, **past.kernel_args(),
    )


def _select_budget(request: SelectRequest, data: _Loaded, features: _Features, past: _Past, diff):
    """The candidates of largest gain per unit cost within the budget
    (:func:`arm_jax.selection.pool.select_within_budget`); InputError when not one pair fits."""
    candidates, budget = data.candidates, request.budget
    pair_cost = _pair_costs(data.pool, candidates)
    chosen = pool_lib.select_within_budget(
        request.strategy, select_key(request.seed), diff, features.beta, pair_cost, budget,
        request.k or candidates.a.size, valid=candidates.valid, **past.kernel_args(),
    )
    if not np.size(chosen.indices):
        _check_budget(budget, pair_cost[candidates.valid])
        raise RuntimeError("internal error: a candidate pair fits the budget but none was chosen")
    return chosen


def _pair_costs(pool: Pool, candidates: CandidatePairs) -> np.ndarray:
    """What each candidate pair costs: the sum of its two items' costs."""
    return pool.costs[candidates.a] + pool.costs[candidates.b]


def _check_budget(budget: float, pair_costs: np.ndarray) -> None:
    """InputError when not one of the pairs fits the budget (checked before any training)."""
    cheapest = float(pair_costs.min())
    if cheapest > budget:
        raise InputError(f"--budget {budget:g}: no candidate pair fits (the cheapest costs {cheapest:.4g})")


def _picked(request: SelectRequest, data: _Loaded, params, features: _Features, chosen) -> _Picks:
    """The chosen candidates as pairs of pool rows; with ``shard_rows`` the picked items that
    another process held are embedded here."""
    candidates = data.candidates
    idx = np.asarray(chosen.indices)
    a, b, scores = candidates.a[idx], candidates.b[idx], np.asarray(chosen.scores)
    n_cand, n_masked = candidates.a.size, candidates.a.size - candidates.n_valid
    if data.shard_rows:  # the picked items, embedded here when another process held them
        row_of, phi, rew = _add_rows(
            params, request.model_config, data.pool, features.row_of, features.phi, features.rew, np.concatenate([a, b])
        )
        features = features._replace(row_of=row_of, phi=phi, rew=rew)
    return _Picks(a, b, scores, n_cand, n_masked, features)


# ----------------------------------------------------------------------------- select: report and write


def _gain_ratio(request: SelectRequest, data: _Loaded, fitted: _Fitted, past: _Past, picks: _Picks) -> float | None:
    """:func:`gain_ratio_to_random` of the picks against as many seeded random candidates, once
    there are :data:`GAIN_RATIO_MIN_LABELS` labels (None before, with --pairs all-cross, and with
    the candidate rows split over processes)."""
    candidates, k = data.candidates, picks.a.size
    if fitted.ts.n < GAIN_RATIO_MIN_LABELS or candidates is None or data.shard_rows or not k or candidates.n_valid < k:
        return None
    rows = np.random.default_rng([request.seed, 11]).choice(np.flatnonzero(candidates.valid), k, replace=False)
    features = picks.features
    past_x, past_weight, tie = past.unpadded()
    return gain_ratio_to_random(
        features.beta, past_x, past_weight, fitted.ts.n, tie, past.prior,
        features.diff(picks.a, picks.b), features.diff(candidates.a[rows], candidates.b[rows]),
    )


def _report(request: SelectRequest, history: list, fitted: _Fitted, past: _Past, picks: _Picks) -> list:
    """Phase 6 (``--report``): the stopping-report history with this round's row
    (:func:`stopping_row`) appended; a rerun on the same number of labels replaces its round's row."""
    if request.report_path is None:
        return history
    if history and history[-1]["labels"] == fitted.ts.n:
        history = history[:-1]
    features = picks.features
    row = stopping_row(
        fitted.ts, fitted.fit, features.beta, *past.unpadded(), past.prior,
        features.diff(picks.a, picks.b), request.strategy, history,
    )
    return history + [row]


def _write(request: SelectRequest, data: _Loaded, picks: _Picks, history: list) -> list[dict]:
    """Phase 7: the picks as output rows, best first, written by process 0 once every process
    is done (:func:`_write_selection`); returns the rows."""
    a, b, pool = picks.a, picks.b, data.pool
    chosen_keys = pair_keys(a, b, pool.n)
    if (
        np.any(a == b) or np.unique(chosen_keys).size != a.size or np.isin(chosen_keys, data.excluded).any()
        or np.isin(chosen_keys, data.val_keys).any()
    ):
        raise RuntimeError("internal error: selection repeats or relabels a pair")  # never expected
    p_a = evaluate.sigmoid(picks.features.rewards_of(a) - picks.features.rewards_of(b))
    ids = pool.item_ids
    rows = [
        {"a": str(ids[i]), "b": str(ids[j]), "p_a_wins": _fmt(p), "score": _fmt(s), "rank": rank,
         **pool.texts_of(i, "a"), **pool.texts_of(j, "b"),
         **({} if pool.costs is None else {"cost": _fmt(pool.costs[i] + pool.costs[j])})}
        for rank, (i, j, p, s) in enumerate(zip(a.tolist(), b.tolist(), p_a.tolist(), picks.scores.tolist()), start=1)
    ]
    distributed.barrier("select: every process done")
    if request.output_format == "label-studio" and pool.prompts is None and pool.responses is None:
        request.log(f"{pool.path} has no texts ('prompts', 'responses'): the Label Studio tasks show item ids")
    if distributed.is_writer():
        _write_selection(rows, request.out_path, request.output_format, request.report_path, history)
    return rows


def _write_selection(rows, out_path, output_format: str, report_path, history) -> None:
    """``select``'s output files: the picks (JSON Lines, or Label Studio tasks and their
    config), and the stopping report when asked for."""
    if output_format == "label-studio":
        from arm_jax.workflow import labelstudio

        with io_lib.atomic_paths([out_path, label_config_path(out_path)]) as (tasks_tmp, config_tmp):
            tasks_tmp.write_text(json.dumps(labelstudio.tasks(rows), indent=1) + "\n", encoding="utf-8")
            config_tmp.write_text(labelstudio.LABEL_CONFIG, encoding="utf-8")
    else:
        io_lib.write_jsonl(out_path, rows)
    if report_path is not None:
        io_lib.write_jsonl(report_path, history)


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


def _select_all_pairs(strategy, seed, phi, beta, k, past: _Past | None, labelled, n_items):
    """Top k over every pair of items but the ``labelled`` keys (:func:`pair_keys`), which the
    kernel never picks (its ``exclude=``): :func:`arm_jax.selection.allpairs.select_all_pairs`,
    or its sharded form on several processes. Returns (a, b, scores), a < b, best first. The
    pool information M counts every pair, labelled ones included; ``past``: the labelled rows
    and the prior (None: none and the default prior)."""
    past = _Past(None, DEFAULT_PRIOR_PRECISION) if past is None else past
    # several processes: the blocks of the pair grid split over every process's devices
    select_all = sharded.sharded_select_all_pairs if distributed.process_count() > 1 else allpairs.select_all_pairs
    result = select_all(
        strategy, select_key(seed), phi, beta, k, exclude=_exclude_pairs(labelled, n_items), **past.kernel_args()
    )
    return np.asarray(result.u, np.int64), np.asarray(result.v, np.int64), np.asarray(result.scores)


def _exclude_pairs(keys: np.ndarray, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """The pairs of ``keys`` (min·n + max) as item arrays (u, v), padded with −1 (no pair) to a
    size bucket (:func:`arm_jax.workflow.fitting.bucket`), so a later round with more labelled
    pairs in the same bucket runs the all-pairs kernel compiled for this one."""
    keys = np.asarray(keys, np.int64)
    u = np.full(bucket(keys.size), -1, np.int64)
    v = u.copy()
    u[: keys.size], v[: keys.size] = keys // n_items, keys % n_items
    return u, v
