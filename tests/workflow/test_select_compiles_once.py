"""A repeated ``select`` with more labels (in the same size bucket) compiles no program.

The fit pads the labelled rows to size buckets (``fitting.bucket``) and so does every
selection kernel (the labelled rows as ``past_phi_diff``/``past_mask``/``past_weight``, the
all-pairs exclusions), so the next round of the loop runs the programs of the last one.
Compilations are counted by ``jax.monitoring`` listeners on JAX's backend-compile event (one
per program built, eagerly run primitives included) and on its persistent-cache hits (a
program loaded from disk instead: the test session shares a cache between its processes)."""
from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from arm_jax.model.config import TrainConfig
from arm_jax.model.network import ModelConfig
from arm_jax.workflow.fitting import bucket
from arm_jax.workflow.select import select_pairs

COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
CACHE_HIT_EVENT = "/jax/compilation_cache/cache_hits"
N_ITEMS, DIM = 60, 8
FIRST, SECOND = 20, 28  # labels of the two rounds: one bucket
LABELLED_ITEMS = 30  # the labels compare items 0..29
MODEL = ModelConfig(depth=1, width=8)
TRAIN = TrainConfig(steps=20, batch_size=8)


def _write_labels(path, winner, loser, ties=False):
    lines = []
    for i, (w, l) in enumerate(zip(winner.tolist(), loser.tolist())):
        tie = ties and i % 4 == 0
        lines.append({"a": w, "b": l, "tie": True} if tie else {"winner": w, "loser": l})
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))


@pytest.fixture
def rounds(tmp_path):
    """A pool with costs and the comparisons of two rounds, the second's the first's and more.
    Both the label counts and the labelled items (at most 30: the fit pads those to a bucket
    too) share a bucket."""
    assert bucket(FIRST) == bucket(SECOND)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "pool.npz", embeddings=rng.normal(size=(N_ITEMS, DIM)).astype(np.float32),
             costs=rng.uniform(0.5, 2.0, N_ITEMS).astype(np.float32))
    a, b = np.triu_indices(LABELLED_ITEMS, 1)
    pick = rng.choice(a.size, SECOND, replace=False)
    winner, loser = a[pick], b[pick]
    items = lambda n: np.unique(np.concatenate([winner[:n], loser[:n]])).size
    assert bucket(items(FIRST)) == bucket(items(SECOND))
    return tmp_path, winner, loser


def _compiled_by(fn, *args, **kwargs) -> list[str]:
    names = []

    def listen(event, duration, **meta):
        if event == COMPILE_EVENT:
            names.append(meta.get("fun_name"))

    def loaded(event, **meta):
        if event == CACHE_HIT_EVENT:
            names.append("a program from the persistent cache")

    jax.monitoring.register_event_duration_secs_listener(listen)
    jax.monitoring.register_event_listener(loaded)
    try:
        fn(*args, **kwargs)
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
        jax.monitoring.unregister_event_listener(loaded)
    return names


@pytest.mark.parametrize(
    "strategy, options, ties",
    [
        ("pa_dopt", {}, False),
        ("greedy_dopt", {}, True),  # Davidson ties: the rows carry vote weights
        ("pa_dopt", {"pairs": "all-cross"}, False),
        ("entropy", {"budget": 3.0}, False),
    ],
)
def test_second_select_with_more_labels_compiles_nothing(rounds, strategy, options, ties):
    tmp, winner, loser = rounds
    for n, name in ((FIRST, "first.jsonl"), (SECOND, "second.jsonl")):
        _write_labels(tmp / name, winner[:n], loser[:n], ties)
    run = lambda name: select_pairs(
        tmp / "pool.npz", tmp / name, tmp / f"out_{name}", strategy, 4, model_config=MODEL, train_config=TRAIN,
        **options,
    )
    run("first.jsonl")
    assert _compiled_by(run, "second.jsonl") == []
