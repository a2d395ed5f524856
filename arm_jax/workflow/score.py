"""TODO docstring."""
from __future__ import annotations

import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

from arm_jax.errors import InputError
from arm_jax.runtime import distributed
from arm_jax.runtime import files as io_lib
from arm_jax.workflow.checkpoint import load_model
from arm_jax.workflow.fitting import (
    Log,
    _quiet,
    all_item_features,
)
from arm_jax.workflow.pool import load_pool

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

    The two files are written together (:func:`arm_jax.runtime.files.atomic_paths`): whenever both exist
    they are from the same run; an interrupted run can leave ``OUT.csv`` missing, never an
    old ``OUT.csv`` beside a new ``OUT.npy``. On several processes (:mod:`arm_jax.runtime.distributed`)
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
