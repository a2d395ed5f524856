"""select as a library call, and its all-pairs path."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from arm_jax.errors import InputError
from arm_jax.model.config import TrainConfig
from arm_jax.model.network import ModelConfig
from arm_jax.workflow import score
from arm_jax.workflow import select as realdata

MODEL = ModelConfig(depth=2, width=8)
TRAIN = TrainConfig(steps=30, batch_size=16)



def test_score_paths():
    assert score.score_paths("out/scores") == (Path("out/scores.npy"), Path("out/scores.csv"))
    assert score.score_paths("s.csv") == score.score_paths("s.npy") == score.score_paths("s")
    assert score.score_paths("run.v2")[1].name == "run.v2.csv"


def test_select_pairs_library_call(npz, tmp_path):
    x = npz(tmp_path / "pool.npz", n=24, d=5, prompts=np.repeat(np.arange(6), 4))
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
    # the result carries the model the picks came from: its rewards give each pick's p_a_wins
    from arm_jax.model import network as model_lib

    r = np.asarray(model_lib.reward(result.params, result.model_config, x), np.float64)
    p_a = [1 / (1 + np.exp(r[int(row["b"])] - r[int(row["a"])])) for row in result.rows]
    np.testing.assert_allclose([row["p_a_wins"] for row in result.rows], p_a, rtol=1e-4)


def test_explore_keeps_the_strategys_best_and_draws_the_rest(npz, tmp_path):
    """--explore 0.5 with k = 8: the first 4 pairs are the strategy's 4 best, the other 4 are
    drawn among the candidates it did not pick; a fraction outside [0, 1] is refused."""
    npz(tmp_path / "pool.npz", n=40, d=5, prompts=np.repeat(np.arange(10), 4))
    pairs = lambda rows: [(r["a"], r["b"]) for r in rows]
    plain = realdata.select_pairs(tmp_path / "pool.npz", None, tmp_path / "a.jsonl", "dopt", 8,
                                  model_config=MODEL, train_config=TRAIN)
    hedged = realdata.select_pairs(tmp_path / "pool.npz", None, tmp_path / "b.jsonl", "dopt", 8,
                                   model_config=MODEL, train_config=TRAIN, explore=0.5)
    assert pairs(hedged.rows)[:4] == pairs(plain.rows)[:4]
    assert len(set(pairs(hedged.rows))) == 8 and pairs(hedged.rows)[4:] != pairs(plain.rows)[4:]
    with pytest.raises(InputError, match=r"--explore must be a fraction in \[0, 1\], got 1.5"):
        realdata.select_pairs(tmp_path / "pool.npz", None, tmp_path / "c.jsonl", "dopt", 8, explore=1.5)
    assert not (tmp_path / "c.jsonl").exists()


def test_the_hand_off_draws_what_random_draws_once_the_count_is_reached(npz, tmp_path):
    """--random-after N: with N labelled pairs or more the k pairs are strategy random's, and
    the result says so; below N, the strategy's own; a negative count is refused."""
    npz(tmp_path / "pool.npz", n=30, d=4, prompts=np.repeat(np.arange(10), 3))
    call = lambda out, strategy, **kw: realdata.select_pairs(
        tmp_path / "pool.npz", None, tmp_path / out, strategy, 5, model_config=MODEL, train_config=TRAIN, **kw)
    pairs = lambda rows: [(r["a"], r["b"]) for r in rows]
    handed, drawn = call("a.jsonl", "dopt", random_after=0), call("b.jsonl", "random")
    assert handed.strategy == "random" and pairs(handed.rows) == pairs(drawn.rows)
    kept, plain = call("c.jsonl", "dopt", random_after=1), call("d.jsonl", "dopt", random_after=None)
    assert kept.strategy == "dopt" and pairs(kept.rows) == pairs(plain.rows) != pairs(drawn.rows)
    with pytest.raises(InputError, match="--random-after must be a whole number of labelled pairs >= 0"):
        call("e.jsonl", "dopt", random_after=-1)
    assert not (tmp_path / "e.jsonl").exists()
    # --pairs all-cross has no random draw: the rule picks, and the log says why
    logs = []
    kept = call("f.jsonl", "iopt", random_after=0, pairs="all-cross", log=logs.append)
    assert kept.strategy == "iopt" and len(kept.rows) == 5
    assert any("--pairs all-cross scores every pair and has no random draw: iopt picks" in m for m in logs)


def test_the_hand_off_counts_distinct_pairs_as_the_experiments_buffer_does():
    """Two raters' lines on one pair (either order) are one labelled pair, as in the experiment's
    buffer, where one row holds a pair's votes."""
    from arm_jax.workflow.fitting import TrainingSet

    ts = TrainingSet(np.array([0, 1, 2, 0]), np.array([1, 0, 3, 1]))
    assert realdata.labelled_pairs(ts) == 2
    assert realdata.labelled_pairs(TrainingSet(np.zeros(0, int), np.zeros(0, int))) == 0


def test_gain_ratio_to_random_is_the_float64_log_det_ratio():
    """log det(Λ_n+k) − log det(Λ_n) of the picked rows over that of the random rows, with
    Λ = λI + Σ v x xᵀ and v = σ(βᵀx)σ(−βᵀx), computed in float64 from the definition."""
    from arm_jax.workflow.select import gain_ratio_to_random

    rng = np.random.default_rng(3)
    n, k, h, prior = 40, 6, 5, 2.0
    beta = rng.normal(size=h).astype(np.float32)
    past = rng.normal(size=(n, h)).astype(np.float32)
    picked = 3 * rng.normal(size=(k, h)).astype(np.float32)
    random = 0.3 * rng.normal(size=(k, h)).astype(np.float32)

    def logdet(x):
        x = x.astype(np.float64)
        p = 1 / (1 + np.exp(-x @ beta))
        return np.linalg.slogdet(prior * np.eye(h) + (x * (p * (1 - p))[:, None]).T @ x)[1]

    want = (logdet(np.r_[past, picked]) - logdet(past)) / (logdet(np.r_[past, random]) - logdet(past))
    got = gain_ratio_to_random(beta, past, None, n, None, prior, picked, random)
    assert got == pytest.approx(want, rel=2e-3)
    assert gain_ratio_to_random(beta, past, None, n, None, prior, random, random) == pytest.approx(1.0)


def test_target_pairs_in_prompt_changes_what_iopt_averages_over(npz, tmp_path):
    """--target-pairs in-prompt: prompts far apart along one direction, so S over the
    cross-prompt candidates is that direction and S over the pool's in-prompt pairs is not; the
    picks differ, on sampled candidates and on all pairs. A rule that reads no S refuses it."""
    prompts = np.repeat(np.arange(10), 4)
    x = np.random.default_rng(2).normal(size=(40, 5)).astype(np.float32)
    x[:, 0] += 20.0 * prompts
    np.savez(tmp_path / "pool.npz", embeddings=x, prompt_ids=prompts)
    call = lambda out, **kw: realdata.select_pairs(tmp_path / "pool.npz", None, tmp_path / out, "iopt", 6, **kw)
    pairs = lambda result: sorted((r["a"], r["b"]) for r in result.rows)
    assert pairs(call("a.jsonl")) != pairs(call("b.jsonl", target_pairs="in-prompt"))
    assert pairs(call("c.jsonl", pairs="all-cross")) != pairs(call("d.jsonl", pairs="all-cross", target_pairs="in-prompt"))
    with pytest.raises(InputError, match=r"--target-pairs is read by the I-optimal rules \(iopt, greedy_iopt, "
                                         r"fw_iopt, uncertain_iopt\), not by dopt"):
        realdata.select_pairs(tmp_path / "pool.npz", None, tmp_path / "e.jsonl", "dopt", 6, target_pairs="in-prompt")
    with pytest.raises(InputError, match="unknown --target-pairs 'all'"):
        call("e.jsonl", target_pairs="all")
    assert not (tmp_path / "e.jsonl").exists()
