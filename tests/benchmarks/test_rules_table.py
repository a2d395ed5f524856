"""benchmarks/rules_table.py on synthetic runs: the hedge's runs are named as such, its random
arm is left out, the selection rule picks the policy never worse than random with the highest
mean efficiency, and the cross-model table compares the same label counts."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import rules_table  # noqa: E402

ANN = [100, 200, 300, 400, 500, 600, 700, 800, 900, 1000, 1100]


def _run(root: Path, name: str, curves: dict):
    rng = np.random.default_rng(len(name))
    results = {}
    for rule, level in curves.items():
        oms = level * np.asarray(ANN, float) ** -0.3 + 0.002 * rng.normal(size=(8, len(ANN)))
        results[rule] = {"one_minus_spearman": oms.tolist(), "best_of_n": {"8": np.ones((8, len(ANN))).tolist()}}
    path = root / name / "cross-prompt" / "metrics.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"annotations": ANN, "config": {"best_of_n": [8]}, "results": results}))


def test_the_table_names_the_hedge_and_picks_the_policy_by_the_rule(tmp_path):
    _run(tmp_path, "toy-depth0", {"random": 1.0, "good": 0.8, "bad": 1.2})
    _run(tmp_path, "toy-depth0-eps25", {"random": 1.0, "good": 0.9})
    _run(tmp_path, "toy-depth0-target", {"random": 1.0, "good": 0.6})  # better, but measured in one setting
    _run(tmp_path, "more-depth0", {"random": 1.0, "good": 0.8, "bad": 1.2})
    _run(tmp_path, "toy-depth3", {"random": 0.95, "dopt": 1.3})
    settings, rows = rules_table.collect([tmp_path])
    assert settings == ["more cross-prompt linear", "toy cross-prompt linear", "toy cross-prompt MLP"]
    assert set(rows) == {"random", "good", "bad", "good (+25% random)", "good (in-prompt S)", "dopt"}
    table = {t["policy"]: t for t in rules_table.summary(rows)}
    assert table["linear + bad"]["worse"] and not table["linear + good"]["worse"]
    assert table["linear + good"]["mean_efficiency"] > table["linear + good (+25% random)"]["mean_efficiency"] > 1
    assert table["linear + good (in-prompt S)"]["mean_efficiency"] > table["linear + good"]["mean_efficiency"]
    assert rules_table.choose(list(table.values()))["policy"] == "linear + good"
    assert "**linear + good**" in rules_table.markdown(settings, rows, list(table.values()))
    cross = rules_table.against_mlp([tmp_path], "dopt").splitlines()
    assert cross[0] == "| linear + rule | toy cross-prompt |"
    assert next(line for line in cross if line.startswith("| good |")).count("/") == 2  # 300, 600, 1000
