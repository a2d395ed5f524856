"""select --budget: the batch of largest gain per unit cost within a budget."""
from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from arm_jax.cli.main import main
from arm_jax.errors import InputError
from arm_jax.selection import pool as pool_lib
from arm_jax.selection import registry
from arm_jax.selection import scores as strategies


@pytest.fixture(scope="module")
def pool():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 6)).astype(np.float32)
    beta = rng.normal(size=6).astype(np.float32)
    costs = rng.uniform(1.0, 4.0, 120)
    return x, beta, costs


@pytest.mark.parametrize("name", ["dopt", "entropy", "random"])
def test_additive_scores_fill_the_budget_by_gain_per_cost(pool, name):
    x, beta, costs = pool
    budget = 20.0
    got = pool_lib.select_within_budget(name, jax.random.PRNGKey(0), x, beta, costs, budget, 1000)
    idx = np.asarray(got.indices)
    assert costs[idx].sum() <= budget + 1e-9 and len(set(idx.tolist())) == idx.size
    # nothing left out would still fit
    left = budget - costs[idx].sum()
    rest = np.setdiff1d(np.arange(120), idx)
    if name != "random":
        inputs = strategies.make_inputs(x, beta)
        spec = registry.STRATEGIES[name].pair_score
        gain = np.asarray(strategies.pair_scores(spec, inputs), np.float64)
        if spec.report is not None:
            gain = np.asarray(spec.report(np.asarray(x @ beta), None), np.float64)
        # the reference greedy in float64
        order = np.argsort(-(gain / costs), kind="stable")
        ref, spent = [], 0.0
        for j in order:
            if spent + costs[j] <= budget:
                ref.append(j)
                spent += costs[j]
        assert idx.tolist() == ref
    assert np.all(costs[rest] > left - 1e-9) or name == "random"


def test_greedy_dopt_knapsack_with_equal_costs_is_greedy_dopt(pool):
    x, beta, _ = pool
    ones = np.ones(120)
    got = pool_lib.select_within_budget("greedy_dopt", None, x, beta, ones, 7.0, 1000)
    plain = pool_lib.select("greedy_dopt", None, x, beta, 7)
    assert np.asarray(got.indices).tolist() == np.asarray(plain.indices).tolist()
    np.testing.assert_allclose(np.asarray(got.scores), np.asarray(plain.scores), rtol=1e-5)


def test_greedy_dopt_knapsack_respects_budget_and_k(pool):
    x, beta, costs = pool
    got = pool_lib.select_within_budget("greedy_dopt", None, x, beta, costs, 15.0, 1000)
    assert costs[np.asarray(got.indices)].sum() <= 15.0 + 1e-6
    few = pool_lib.select_within_budget("greedy_dopt", None, x, beta, costs, 1e6, 3)
    assert np.asarray(few.indices).size == 3


def test_budget_refuses_what_it_cannot_do(pool):
    x, beta, costs = pool
    with pytest.raises(InputError, match="cannot pick within a budget"):
        pool_lib.select_within_budget("batchbald", None, x, beta, costs, 10.0, 5)
    with pytest.raises(InputError, match="finite and > 0"):
        pool_lib.select_within_budget("dopt", None, x, beta, -costs, 10.0, 5)


def test_cli_budget(tmp_path, capsys):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(30, 4)).astype(np.float32)
    np.savez(tmp_path / "plain.npz", embeddings=x)
    np.savez(tmp_path / "costs.npz", embeddings=x, costs=rng.uniform(1, 3, 30))
    fast = ["--depth", "1", "--width", "8", "--steps", "30"]
    code = main(["select", "--pool", str(tmp_path / "plain.npz"), "--budget", "10", "--out", str(tmp_path / "a.jsonl"), *fast])
    assert code == 2 and "--budget needs the items' costs" in capsys.readouterr().err
    code = main(["select", "--pool", str(tmp_path / "costs.npz"), "--budget", "10", "--out", str(tmp_path / "a.jsonl"),
                 "--strategy", "greedy_dopt", *fast])
    assert code == 0
    rows = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert rows and sum(r["cost"] for r in rows) <= 10 + 1e-6
    assert "of the budget 10" in capsys.readouterr().err
