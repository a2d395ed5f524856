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
(:func:`arm_jax.candidates.candidate_seed`), the validation split ``default_rng([seed, 3])``.
"""
from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

from arm_jax import io as io_lib
from arm_jax import model as model_lib
from arm_jax import strategies as strategies_lib
from arm_jax.allpairs import ALLPAIRS_STRATEGIES as ALL_PAIRS_STRATEGIES
from arm_jax.candidates import DEFAULT_CANDIDATES, PAIR_MODES, CandidatePairs, candidate_pairs
from arm_jax.errors import InputError
from arm_jax.fitting import (
    check_features,
    check_fit,
    fit_on_labels,
    item_features,
    item_rewards,
    pairwise_accuracy,
    select_key,
)
from arm_jax.labels import Labels, empty_labels, labelled_keys, load_labels, pair_keys, split_labels
from arm_jax.model import ModelConfig
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
    "item_rewards", "load_labels", "load_model", "load_pool", "save_model",
    "score_paths", "score_pool", "select_pairs", "train_model",
]

Log = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def _sigmoid(z: np.ndarray) -> np.ndarray:
    """σ(z) in float32, stable for any z."""
    z = np.asarray(z, np.float32)
    return (0.5 * (1.0 + np.tanh(0.5 * z))).astype(np.float32)


def _fmt(x: float) -> float | None:
    """A float32 value as the shortest JSON float that round-trips it (None if not finite)."""
    x = float(x)
    return float(f"{x:.9g}") if math.isfinite(x) else None


def _check_k(k) -> int:
    if isinstance(k, bool) or int(k) != k or k < 1:
        raise InputError(f"--k must be a positive integer, got {k}")
    return int(k)


# ----------------------------------------------------------------------------- select


class SelectResult(NamedTuple):
    rows: list
    n_items: int
    n_labels: int
    n_ties: int
    n_candidates: int
    n_masked: int
    timings: dict


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
) -> SelectResult:
    """Train on the labels, pick the next k pairs, write them as JSON Lines (``select``).

    Each output line: ``{"a": ID, "b": ID, "p_a_wins": float, "score": float, "rank": int}``,
    best first (rank 1). No item is paired with itself and no pair comes twice; no pair is
    already labelled (either order) unless ``allow_relabel``. ``labels_path=None`` is the
    cold start: the untrained, seeded model's features are used. Checks every input and the
    output path before training and writes nothing on error.
    """
    model_config = model_config or ModelConfig()
    train_config = train_config or TrainConfig()
    if strategy not in strategies_lib.STRATEGIES:
        raise InputError(f"unknown strategy {strategy!r}; choose one of: {', '.join(strategies_lib.STRATEGIES)}")
    if pairs not in PAIR_MODES:
        raise InputError(f"unknown --pairs {pairs!r}; choose one of {', '.join(PAIR_MODES)}")
    k = _check_k(k)
    io_lib.check_output_file(out_path, {"--pool": pool_path, "--labels": labels_path})
    timings = {}
    t0 = time.perf_counter()

    # 1. read the pool and the labels, choose the candidates
    pool = load_pool(pool_path)
    labels = empty_labels() if labels_path is None else load_labels(labels_path, pool)
    labelled = labelled_keys(labels, pool.n)
    excluded = np.zeros(0, np.int64) if allow_relabel else labelled
    if pairs == "all-cross":
        candidates = None
        _check_all_cross(strategy, k, pool, excluded)
    else:
        candidates = candidate_pairs(pool, pairs, n_candidates, seed, labelled, allow_relabel=allow_relabel)
        _check_enough_candidates(k, candidates, pairs, pool)
    timings["load"] = time.perf_counter() - t0

    # 2. train the reward model on the labels (from scratch, seeded)
    t = time.perf_counter()
    if labels.n == 0:
        log(
            "cold start: no labels, so the pairs are chosen on the untrained (seeded) model's "
            "random features (D-optimal design on the random-init features)"
        )
    else:
        log(f"training the reward model on {labels.n} labels ({train_config.steps} steps)")
    params = fit_on_labels(seed, pool.embeddings, labels.winner, labels.loser, model_config, train_config)
    check_fit(params, pool, np.concatenate([labels.winner, labels.loser]))
    timings["train"] = time.perf_counter() - t

    # 3. features of every item a candidate or a label touches
    t = time.perf_counter()
    beta = np.asarray(model_lib.head(params), np.float32)
    if candidates is None:
        row_of = None
    else:
        row_of = np.unique(np.concatenate([candidates.a, candidates.b, labels.winner, labels.loser]))
    phi, rew = item_features(params, model_config, pool.embeddings, row_of)
    check_features(pool, row_of, phi, rew)
    timings["features"] = time.perf_counter() - t

    def local(rows):
        return rows if row_of is None else np.searchsorted(row_of, rows)

    past = phi[local(labels.winner)] - phi[local(labels.loser)] if labels.n else None

    # 4. score the candidates, keep the best k
    t = time.perf_counter()
    if candidates is None:
        a, b, scores = _select_all_pairs(strategy, seed, phi, beta, k, past, excluded, pool.n)
        n_cand, n_masked = pool.n * (pool.n - 1) // 2, excluded.size
    else:
        chosen = strategies_lib.select(
            strategy, select_key(seed), phi[local(candidates.a)] - phi[local(candidates.b)], beta, k,
            valid=candidates.valid, past_phi_diff=past,
        )
        idx = np.asarray(chosen.indices)
        a, b, scores = candidates.a[idx], candidates.b[idx], np.asarray(chosen.scores)
        n_cand, n_masked = candidates.a.size, candidates.a.size - candidates.n_valid
    timings["select"] = time.perf_counter() - t

    # 5. write them, best first
    t = time.perf_counter()
    chosen_keys = pair_keys(a, b, pool.n)
    if np.any(a == b) or np.unique(chosen_keys).size != a.size or np.isin(chosen_keys, excluded).any():
        raise RuntimeError("internal error: selection repeats or relabels a pair")  # never expected
    p_a = _sigmoid(rew[local(a)] - rew[local(b)])
    ids = pool.item_ids
    rows = [
        {"a": str(ids[i]), "b": str(ids[j]), "p_a_wins": _fmt(p), "score": _fmt(s), "rank": rank}
        for rank, (i, j, p, s) in enumerate(zip(a.tolist(), b.tolist(), p_a.tolist(), scores.tolist()), start=1)
    ]
    io_lib.write_jsonl(out_path, rows)
    timings["write"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    return SelectResult(rows, pool.n, labels.n, labels.n_ties, n_cand, n_masked, timings)


def _check_all_cross(strategy: str, k: int, pool: Pool, excluded: np.ndarray) -> None:
    if strategy not in ALL_PAIRS_STRATEGIES:
        raise InputError(
            f"--pairs all-cross scores every pair with one of: {', '.join(ALL_PAIRS_STRATEGIES)} "
            f"(not {strategy}); use --pairs cross-prompt for {strategy}"
        )
    n_free = pool.n * (pool.n - 1) // 2 - excluded.size
    if k > n_free:
        raise InputError(f"--k {k} is larger than the {n_free} unlabelled pairs of the {pool.n} items in {pool.path}")


def _check_enough_candidates(k: int, candidates: CandidatePairs, pairs: str, pool: Pool) -> None:
    if k > candidates.n_valid:
        n_masked = candidates.a.size - candidates.n_valid
        raise InputError(
            f"--k {k} is larger than the {candidates.n_valid} unlabelled candidate pairs "
            f"({pairs} pairs of {pool.path}: {candidates.a.size} candidates, {n_masked} already labelled)"
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


def _select_all_pairs(strategy, seed, phi, beta, k, past, labelled, n_items):
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
            strategy, select_key(seed), phi[a] - phi[b], beta, k, valid=valid, past_phi_diff=past
        )
        idx = np.asarray(chosen.indices)
        return a[idx].astype(np.int64), b[idx].astype(np.int64), np.asarray(chosen.scores)
    # Ask for a few more than k; if labelled pairs crowd the top, ask again for more (up to
    # k + #labelled, which always suffices). The first k unlabelled of the best k_try are the
    # best k unlabelled as soon as there are k of them.
    k_try = int(min(k_req, k + min(labelled.size, max(k, 64))))
    while True:
        result = allpairs.select_all_pairs(strategy, select_key(seed), phi, beta, k_try, past_phi_diff=past)
        u = np.asarray(result.u, np.int64)
        v = np.asarray(result.v, np.int64)
        keep = np.flatnonzero(~np.isin(pair_keys(u, v, n_items), labelled))
        if keep.size >= k or k_try >= k_req:
            keep = keep[:k]
            return u[keep], v[keep], np.asarray(result.scores)[keep]
        k_try = int(min(k_req, 2 * k_try))


# ----------------------------------------------------------------------------- train


class TrainResult(NamedTuple):
    n_items: int
    n_labels: int
    n_ties: int
    n_train: int
    n_val: int
    train_accuracy: float
    val_accuracy: float
    refit: bool
    timings: dict


def train_model(
    pool_path,
    labels_path,
    out_path,
    val_fraction: float = 0.1,
    refit: bool = True,
    seed: int = 0,
    model_config: ModelConfig | None = None,
    train_config: TrainConfig | None = None,
    log: Log = _quiet,
) -> TrainResult:
    """Fit on a training split, report held-out and training pairwise accuracy, save (``train``).

    With ``refit`` (the default) the saved model is then trained again on *all* labels with
    the same seed (so it is exactly the model ``select --seed`` trains on these labels); the
    held-out accuracy is the estimate of its quality. Without ``refit`` the train-split model
    that the accuracies were measured on is saved.
    """
    model_config = model_config or ModelConfig()
    train_config = train_config or TrainConfig()
    if not 0.0 <= val_fraction < 1.0:
        raise InputError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    io_lib.check_output_file(out_path, {"--pool": pool_path, "--labels": labels_path})
    timings = {}
    t0 = time.perf_counter()
    pool = load_pool(pool_path)
    labels = load_labels(labels_path, pool)
    if labels.n == 0:
        raise InputError(f"{labels.path}: no labels to train on (ties are not used for training)")
    tr, va = split_labels(labels.n, val_fraction, seed)
    timings["load"] = time.perf_counter() - t0

    t = time.perf_counter()
    log(f"training the reward model on {tr.size} labels ({train_config.steps} steps)")
    params = fit_on_labels(seed, pool.embeddings, labels.winner[tr], labels.loser[tr], model_config, train_config)
    check_fit(params, pool, np.concatenate([labels.winner[tr], labels.loser[tr]]))
    timings["train"] = time.perf_counter() - t

    t = time.perf_counter()
    rows = np.unique(np.concatenate([labels.winner, labels.loser]))
    phi, rew = item_features(params, model_config, pool.embeddings, rows)
    check_features(pool, rows, phi, rew)
    rw = rew[np.searchsorted(rows, labels.winner)]
    rl = rew[np.searchsorted(rows, labels.loser)]
    train_acc = pairwise_accuracy(rw[tr], rl[tr])
    val_acc = pairwise_accuracy(rw[va], rl[va])
    timings["evaluate"] = time.perf_counter() - t

    did_refit = bool(refit and va.size > 0)
    if did_refit:
        t = time.perf_counter()
        log(f"refitting on all {labels.n} labels")
        params = fit_on_labels(seed, pool.embeddings, labels.winner, labels.loser, model_config, train_config)
        check_fit(params, pool, rows)
        timings["refit"] = time.perf_counter() - t

    metadata = {
        "pool": os.path.basename(pool.path),
        "labels": os.path.basename(labels.path),
        "n_labels": labels.n,
        "n_train": int(tr.size),
        "n_val": int(va.size),
        "seed": seed,
        "val_fraction": val_fraction,
        "refit_on_all_labels": did_refit,
        "train_accuracy": None if math.isnan(train_acc) else train_acc,
        "val_accuracy": None if math.isnan(val_acc) else val_acc,
        "train_config": {
            "steps": train_config.steps,
            "batch_size": train_config.batch_size,
            "learning_rate": train_config.learning_rate,
            "weight_decay": train_config.weight_decay,
        },
    }
    t = time.perf_counter()
    save_model(out_path, params, model_config, pool.dim, metadata)
    timings["write"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    return TrainResult(pool.n, labels.n, labels.n_ties, int(tr.size), int(va.size), train_acc, val_acc, did_refit, timings)


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
