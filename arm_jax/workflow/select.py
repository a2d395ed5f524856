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
from arm_jax.runtime import distributed
from arm_jax.runtime import files as io_lib
from arm_jax.runtime import mesh as parallel
from arm_jax.runtime import progress as progress_lib
from arm_jax.selection import pool as pool_lib
from arm_jax.selection import registry, sharded
from arm_jax.selection import scores as strategies_lib
from arm_jax.selection.allpairs import ALLPAIRS_STRATEGIES as ALL_PAIRS_STRATEGIES
from arm_jax.workflow.candidates import (
    DEFAULT_CANDIDATES,
    PAIR_MODES,
    CandidatePairs,
    candidate_pairs,
)
from arm_jax.workflow.fitting import (
    FitReport,
    Log,
    _add_rows,
    _check_k,
    _describe_labels,
    _fmt,
    _load_val_labels,
    _quiet,
    _schedule,
    all_item_features,
    check_features,
    fit_summary,
    fit_training_set,
    item_features,
    log_raters,
    past_information_inputs,
    select_key,
    training_set,
)
from arm_jax.workflow.labels import (
    empty_labels,
    labelled_keys,
    load_labels,
    pair_keys,
)
from arm_jax.workflow.pool import Pool, load_pool

#: Without :mod:`arm_jax.selection.allpairs`, ``all-cross`` falls back to explicit pairs up to this many.
EXPLICIT_ALL_PAIRS_LIMIT = 2_000_000

__all__ = ['SelectResult', 'select_pairs']


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
    early-stopping or cross-validation hold-out); see :mod:`arm_jax.selection.stopping`."""
    from arm_jax.selection import posterior

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
    :mod:`arm_jax.workflow.labelstudio`). ``report_path``: a JSON Lines history of stopping reports,
    one row appended per call (:func:`stopping_row`); the result's ``report`` holds them all.
    ``budget``: pick the batch of largest gain per unit cost whose pairs' costs (the sum of
    the two items' ``costs`` in the pool) add up to at most this
    (:func:`arm_jax.selection.pool.select_within_budget`); ``k`` is then the most pairs (None: no
    limit but the budget) and each line carries its ``cost``.
    Checks every input and the output path before training and writes nothing on error.

    On several processes (:mod:`arm_jax.runtime.distributed`) the pair-score strategies split the
    candidate rows over every process's devices: each process embeds and scores only its
    rows (:class:`arm_jax.runtime.mesh.Rows`), and the picks are those of one process; with
    ``--pairs all-cross`` each embeds a block of the items and scores a share of the pair
    grid's blocks (:func:`arm_jax.selection.sharded.sharded_select_all_pairs`). The other strategies and
    ``--budget`` run whole on every process. Only process 0 writes.
    """
    model_config = model_config or ModelConfig()
    train_config = train_config or TrainConfig()
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
        and strategy in registry.PAIR_SCORE_STRATEGIES
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
            if strategy in registry.RESPONSE_RULES:
                # the rules run per prompt on in-prompt candidates, over the whole pool otherwise
                group = np.zeros(candidates.a.size, np.int32)
                if pairs == "in-prompt":
                    group = np.unique(pool.prompt_ids[candidates.a], return_inverse=True)[1].astype(np.int32)
                items = strategies_lib.PairItems(phi, local(candidates.a), local(candidates.b), group)
            diff_rows = lambda start, stop: phi[local(candidates.a[start:stop])] - phi[local(candidates.b[start:stop])]
            diff = None if shard_rows else diff_rows(0, candidates.a.size)
            if shard_rows:  # each process builds only its own rows
                chosen = sharded.sharded_select(
                    strategy, None, parallel.Rows(candidates.a.size, phi.shape[1], diff_rows), beta, k,
                    valid=candidates.valid, past_phi_diff=past, prior_precision=prior, past_weight=past_weight, tie=tie,
                )
            elif budget is None:
                chosen = pool_lib.select(
                    strategy, select_key(seed), diff, beta, k, valid=candidates.valid, past_phi_diff=past,
                    prior_precision=prior, items=items, past_weight=past_weight, tie=tie,
                )
            else:
                pair_cost = pool.costs[candidates.a] + pool.costs[candidates.b]
                chosen = pool_lib.select_within_budget(
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
    p_a = evaluate.sigmoid(rew[local(a)] - rew[local(b)])
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


def _load_allpairs():
    """:mod:`arm_jax.selection.allpairs`, imported on first use; None where it is not installed."""
    try:
        from arm_jax.selection import allpairs
    except ModuleNotFoundError as err:
        if err.name != "arm_jax.selection.allpairs":
            raise
        return None
    return allpairs


def _select_all_pairs(
    strategy, seed, phi, beta, k, past, labelled, n_items, prior=DEFAULT_PRIOR_PRECISION, past_weight=None, tie=None,
):
    """Top k over every pair of items, skipping the ``labelled`` keys. Returns (a, b, scores).

    :mod:`arm_jax.selection.allpairs` has no pair mask, so it is asked for somewhat more than k pairs
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
                f"--pairs all-cross over {n_items} items needs arm_jax.selection.allpairs "
                f"(only up to {EXPLICIT_ALL_PAIRS_LIMIT} pairs are listed explicitly)"
            )
        a, b = np.triu_indices(n_items, k=1)
        valid = ~np.isin(pair_keys(a, b, n_items), labelled)
        chosen = pool_lib.select(
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
    select_all = sharded.sharded_select_all_pairs if distributed.process_count() > 1 else allpairs.select_all_pairs
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
