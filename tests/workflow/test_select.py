"""select as a library call, and its all-pairs path."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from arm_jax.model.config import TrainConfig
from arm_jax.model.network import ModelConfig
from arm_jax.workflow import labels as labels_lib
from arm_jax.workflow import score
from arm_jax.workflow import select as realdata

MODEL = ModelConfig(depth=2, width=8)
TRAIN = TrainConfig(steps=30, batch_size=16)


def _npz(path, n=20, d=4, prompts=None, item_ids=None, seed=0, **extra):
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    arrays = {"embeddings": x, **extra}
    if prompts is not None:
        arrays["prompt_ids"] = prompts
    if item_ids is not None:
        arrays["item_ids"] = item_ids
    np.savez(path, **arrays)
    return x


def test_score_paths():
    assert score.score_paths("out/scores") == (Path("out/scores.npy"), Path("out/scores.csv"))
    assert score.score_paths("s.csv") == score.score_paths("s.npy") == score.score_paths("s")
    assert score.score_paths("run.v2")[1].name == "run.v2.csv"


def test_select_pairs_library_call(tmp_path):
    x = _npz(tmp_path / "pool.npz", n=24, d=5, prompts=np.repeat(np.arange(6), 4))
    golden = x @ np.arange(5.0)
    result = realdata.select_pairs(tmp_path / "pool.npz", None, tmp_path / "a.jsonl", "dopt", 6,
                                   model_config=MODEL, train_config=TRAIN)
    lines = [json.loads(s) for s in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert [r["rank"] for r in lines] == list(range(1, 7)) == [r["rank"] for r in result.rows]
    labels = tmp_path / "l.jsonl"
    labels.write_text("".join(
        json.dumps({"winner": r["a"], "loser": r["b"]} if golden[int(r["a"])] > golden[int(r["b"])]
                   else {"winner": r["b"], "loser": r["a"]}) + "\n" for r in lines))
    result = realdata.select_pairs(tmp_path / "pool.npz", labels, tmp_path / "b.jsonl", "pa_dopt", 6,
                                   model_config=MODEL, train_config=TRAIN)
    old = {frozenset((r["a"], r["b"])) for r in lines}
    new = {frozenset((r["a"], r["b"])) for r in result.rows}
    assert len(new) == 6 and not old & new
    assert result.n_labels == 6 and set(result.timings) >= {"load", "train", "features", "select", "write", "total"}


def test_all_cross_skips_labelled_pairs_that_crowd_the_top():
    """The 100 best pairs are labelled: the kernel's exclusion picks the next 5."""
    rng = np.random.default_rng(0)
    n = 40
    phi = rng.normal(size=(n, 4)).astype(np.float32)
    beta = rng.normal(size=4).astype(np.float32)
    r = phi @ beta
    a, b = np.triu_indices(n, 1)
    order = np.argsort(-np.abs(r[a] - r[b]), kind="stable")
    labelled = np.sort(labels_lib.pair_keys(a[order[:100]], b[order[:100]], n))  # the 100 largest gaps
    got_a, got_b, scores = realdata._select_all_pairs("maxdiff", 0, phi, beta, 5, None, labelled, n)
    assert set(zip(got_a.tolist(), got_b.tolist())) == set(zip(a[order[100:105]].tolist(), b[order[100:105]].tolist()))
    np.testing.assert_allclose(scores, np.abs(r[a] - r[b])[order[100:105]], rtol=1e-4)
