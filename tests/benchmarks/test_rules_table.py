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


LONG = list(range(100, 3001, 100))


def _long_run(root: Path, name: str, curves: dict, seed: int = 0):
    """A run to 3 000 labels: each rule's curve is random's plus ``delta(labels)`` and noise."""
    rng = np.random.default_rng(seed)
    ann = np.asarray(LONG, float)
    base = ann ** -0.3 + 0.01 * rng.normal(size=(8, len(LONG)))
    results = {rule: {"one_minus_spearman": (base + delta(ann) + 0.001 * rng.normal(size=base.shape)).tolist(),
                      "seeds": 8, "best_of_n": {"8": np.ones((8, len(LONG))).tolist()}}
               for rule, delta in curves.items()}
    path = root / name / "cross-prompt" / "metrics.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"annotations": LONG, "config": {"best_of_n": [8], "k": 100}, "results": results}))
    return path


def test_a_rule_that_falls_behind_late_fails_the_late_test_and_curve_table_shows_where(tmp_path):
    """Ahead by 0.02 to 1 000 labels, behind by 0.01 from 1 500: level on average over the read
    points (300, 600, 1 000, 3 000) but worse over 1 500-3 000; the hand-off variant, level late, passes."""
    import curve_table

    early = lambda ann: np.where(ann <= 1000, -0.02, 0.0)
    _long_run(tmp_path, "toy-depth0", {"random": lambda a: 0 * a, "late": lambda a: early(a) + np.where(a >= 1500, 0.01, 0)})
    _long_run(tmp_path, "toy-depth0-after1000", {"random": lambda a: 0 * a, "late": early})
    settings, rows = rules_table.collect([tmp_path])
    assert set(rows) == {"random", "late", "late (random from 1000)"}
    table = {t["policy"]: t for t in rules_table.summary(rows)}
    c = rows["late"]["toy cross-prompt linear"]
    assert abs(c["late_diff"] - 0.01) < 0.002 and c["mean_diff"] < 0
    assert table["linear + late"]["worse"] == {"toy cross-prompt": rules_table._worse_text(c)}
    assert rules_table._worse_text(c).startswith("late +0.01")
    assert rules_table.choose(list(table.values()))["policy"] == "linear + late (random from 1000)"
    long = curve_table.collect([tmp_path])["toy cross-prompt linear"]
    assert abs(long["late"][2000][0] - 0.01) < 0.002 and abs(long["late (random from 1000)"][2000][0]) < 0.002
    assert "**+0.010" in curve_table.markdown({"toy": long})


def test_merge_arms_adds_an_arm_only_from_the_same_experiment(tmp_path):
    import merge_arms

    a = _long_run(tmp_path, "a-depth0", {"random": lambda x: 0 * x, "iopt": lambda x: 0 * x})
    b = _long_run(tmp_path, "b-depth0", {"iopt": lambda x: 0 * x})
    c = _long_run(tmp_path, "c-depth0", {"iopt": lambda x: 0 * x}, seed=1)  # other first labels
    assert merge_arms.main([str(c), str(a)]) == 2 and "random" not in json.loads(c.read_text())["results"]
    assert merge_arms.main([str(b), str(a)]) == 0
    merged = json.loads(b.read_text())
    assert list(merged["results"]) == ["random", "iopt"]
    assert merged["results"]["random"] == json.loads(a.read_text())["results"]["random"]
