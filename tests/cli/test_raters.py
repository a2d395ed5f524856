"""``train``/``select`` with ties, several raters and soft labels; and the plain case unchanged."""
from __future__ import annotations

import json

import numpy as np
import pytest

from arm_jax.cli.main import main
from arm_jax.model import likelihood
from arm_jax.workflow import checkpoint as model_files

N_ITEMS, DIM = 40, 5
FAST = ["--steps", "40", "--batch-size", "16", "--depth", "1", "--width", "8"]


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def world(tmp_path):
    """pool.npz and 90 labels of a 3-rater panel (qualities 0.2, 1, 3) with Davidson ties."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=(N_ITEMS, DIM)).astype(np.float32)
    ids = [f"it{i}" for i in range(N_ITEMS)]
    np.savez(tmp_path / "pool.npz", embeddings=x, item_ids=np.array(ids))
    hidden = x @ rng.normal(size=DIM)
    hidden = hidden / hidden.std()
    rows, plain = [], []
    for n in range(90):
        a, b = (int(v) for v in rng.choice(N_ITEMS, 2, replace=False))
        rater = n % 3
        p = np.asarray(likelihood.outcome_probabilities((0.2, 1.0, 3.0)[rater] * (hidden[a] - hidden[b]), 0.5))
        outcome = rng.choice(3, p=p / p.sum())
        if outcome == 2:
            rows.append({"a": ids[a], "b": ids[b], "tie": True, "annotator": f"r{rater}"})
        else:
            w, l = (a, b) if outcome == 0 else (b, a)
            rows.append({"winner": ids[w], "loser": ids[l], "annotator": f"r{rater}"})
            plain.append({"winner": ids[w], "loser": ids[l]})
    rows.append({"a": ids[0], "b": ids[1], "p_a": 0.8})
    rows.append({"a": ids[2], "b": ids[3], "votes_a": 1, "votes_b": 4})
    _write(tmp_path / "raters.jsonl", rows)
    _write(tmp_path / "plain.jsonl", plain)
    _write(tmp_path / "one_rater.jsonl", [{**r, "annotator": "solo"} for r in plain])
    return tmp_path


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_one_rater_and_decided_labels_give_the_same_bytes(world, capsys):
    """Decided labels that name one rater: the very picks and model of the plain file."""
    outs = []
    for name in ("plain", "one_rater"):
        code, _, err = _run(capsys, "select", "--pool", world / "pool.npz", "--labels", world / f"{name}.jsonl",
                            "--out", world / f"{name}_next.jsonl", "--k", "5", "--strategy", "pa_dopt", *FAST)
        assert code == 0, err
        outs.append((world / f"{name}_next.jsonl").read_bytes())
        code, _, err = _run(capsys, "train", "--pool", world / "pool.npz", "--labels", world / f"{name}.jsonl",
                            "--out", world / f"{name}.msgpack", *FAST)
        assert code == 0, err
    assert outs[0] == outs[1]
    a, b = (model_files.load_model(world / f"{n}.msgpack").params for n in ("plain", "one_rater"))
    for x, y in zip(*(jax_leaves(p) for p in (a, b))):
        np.testing.assert_array_equal(x, y)


def jax_leaves(tree):
    import jax

    return [np.asarray(v) for v in jax.tree_util.tree_leaves(tree)]


def test_train_reports_ties_and_reliabilities(world, capsys):
    code, out, err = _run(capsys, "train", "--pool", world / "pool.npz", "--labels", world / "raters.jsonl",
                          "--out", world / "m.msgpack", "--depth", "0")
    assert code == 0, err
    assert "Davidson tie strength" in err and "rater reliability" in err
    assert "r0" in err and "r2" in err
    meta = model_files.load_model(world / "m.msgpack").metadata
    raters = {r["annotator"]: r for r in meta["raters"]}
    assert set(raters) == {"r0", "r1", "r2"} and sum(r["lines"] for r in raters.values()) == 90
    assert raters["r0"]["reliability"] < raters["r2"]["reliability"]  # quality 0.2 < 3
    assert meta["tie_strength"] > 0 and meta["n_soft"] == 2


@pytest.mark.parametrize("strategy", ["greedy_dopt"])  # pa_dopt under ties: test_likelihood's drivers test
def test_select_on_ties_and_raters(world, capsys, strategy):
    code, _, err = _run(capsys, "select", "--pool", world / "pool.npz", "--labels", world / "raters.jsonl",
                        "--out", world / "next.jsonl", "--k", "4", "--strategy", strategy, *FAST)
    assert code == 0, err
    picked = [json.loads(line) for line in (world / "next.jsonl").read_text().splitlines()]
    assert len(picked) == 4
    assert "+" in err and "ties" in err


def test_bad_rater_line_is_a_one_line_error(world, capsys):
    bad = world / "bad.jsonl"
    bad.write_text('{"winner": "it1", "loser": "it2"}\n{"a": "it1", "b": "it2", "p_a": 2}\n')
    code, _, err = _run(capsys, "train", "--pool", world / "pool.npz", "--labels", bad, "--out", world / "m.msgpack")
    assert code == 2
    assert "bad.jsonl:2: p_a must be in [0, 1], got 2" in err and err.count("\n") == 1
    assert not (world / "m.msgpack").exists()


def test_train_can_switch_ties_and_reliabilities_off(world, capsys):
    code, _, err = _run(capsys, "train", "--pool", world / "pool.npz", "--labels", world / "raters.jsonl",
                        "--out", world / "m.msgpack", "--depth", "0", "--no-tie-model", "--no-reliability")
    assert code == 0, err
    assert "rater reliability" not in err and "tie strength" not in err
    meta = model_files.load_model(world / "m.msgpack").metadata
    assert meta["tie_strength"] == 0 and all(r["reliability"] is None for r in meta["raters"])
    assert meta["train_config"]["ties"] is False


# ---------------------------------------------------------------------- Label Studio round trip

EXPORT = __import__("pathlib").Path(__file__).parent / "data" / "label_studio_export.json"


def test_label_studio_export_becomes_labels_and_trains(world, capsys):
    """A stored export of Label Studio 1.23.2 (benchmarks/label_studio_roundtrip.py, item ids
    renamed to this pool's; a fifth task not yet annotated added): two raters, one tie, one
    skipped task. Every completed annotation is a label with its rater; train runs on it."""
    from arm_jax.workflow import labels as labels_lib
    from arm_jax.workflow import pool as pool_io

    pool = pool_io.load_pool(world / "pool.npz")
    labels = labels_lib.load_labels(EXPORT, pool)
    v = labels.votes
    ids = pool.item_ids
    pairs = [(str(ids[a]), str(ids[b])) for a, b in zip(v.first, v.second)]
    assert pairs == [("it3", "it7"), ("it3", "it7"), ("it5", "it9"), ("it4", "it8")]
    np.testing.assert_array_equal(v.counts, [[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 1, 0]])
    assert v.annotators == ("label-studio:1", "label-studio:2")
    assert v.annotator.tolist() == [0, 1, 1, 0]
    assert labels.n_ties == 1 and labels.n == 3
    keys = labels_lib.labelled_keys(labels, pool.n)
    assert keys.size == 3  # the skipped and the unannotated pairs are not labelled
    code, _, err = _run(capsys, "train", "--pool", world / "pool.npz", "--labels", EXPORT,
                        "--out", world / "m.msgpack", "--depth", "0")
    assert code == 0, err
    assert "4 lines (3 decided, 1 ties; 2 raters)" in err


def test_select_writes_label_studio_tasks_and_config(world, capsys):
    import xml.etree.ElementTree as ET

    from arm_jax.workflow import labelstudio

    texts = np.load(world / "pool.npz")
    np.savez(world / "texts.npz", **texts, prompts=np.array([f"prompt {i // 4}" for i in range(N_ITEMS)]),
             responses=np.array([f"response {i}" for i in range(N_ITEMS)]))
    code, _, err = _run(capsys, "select", "--pool", world / "texts.npz", "--labels", world / "plain.jsonl",
                        "--out", world / "next.json", "--k", "3", "--format", "label-studio", *FAST)
    assert code == 0, err
    tasks = json.loads((world / "next.json").read_text())
    assert len(tasks) == 3 and all(set(t) == {"data"} for t in tasks)
    d = tasks[0]["data"]
    i = int(d["a"][2:])
    assert d["text_a"] == f"prompt {i // 4}\n\nresponse {i}" and d["rank"] == 1
    config = ET.fromstring((world / "next.label_config.xml").read_text())
    choices = [c.get("value") for c in config.iter("Choice")]
    assert choices == list(labelstudio.CHOICES)
    names = {e.get("name") for e in config.iter() if e.get("name")}
    assert {"text_a", "text_b", labelstudio.CONTROL} <= names
    # texts next to each pair in the JSON Lines output too
    code, _, err = _run(capsys, "select", "--pool", world / "texts.npz", "--labels", world / "plain.jsonl",
                        "--out", world / "next.jsonl", "--k", "3", *FAST)
    line = json.loads((world / "next.jsonl").read_text().splitlines()[0])
    assert line["response_a"] == f"response {int(line['a'][2:])}" and "prompt_b" in line


@pytest.mark.parametrize("mutate, message", [
    (lambda e: e[0]["annotations"][0]["result"][0]["value"].update(choices=["Both bad"]),
     'task 1 (id 1), annotation 1: choice "Both bad" is not in the labelling config (A, B, Tie)'),
    (lambda e: e[1]["data"].pop("b"), "task 2 (id 2): data has no 'b'"),
    (lambda e: e[3]["data"].update(a="nope"), "task 4 (id 4), annotation 1: id 'nope' is not in the pool"),
    (lambda e: e[0]["annotations"][1].update(result=[]), "task 1 (id 1), annotation 2: no 'preference' choice"),
    (lambda e: e[2].pop("data"), "task 3 (id 3): no 'data' object"),
    (lambda e: e[0]["annotations"][0].update(result=None), "task 1 (id 1), annotation 1: 'result' is not a list"),
])
def test_bad_label_studio_exports_are_one_line_errors(world, capsys, mutate, message):
    export = json.loads(EXPORT.read_text())
    mutate(export)
    bad = world / "bad_export.json"
    bad.write_text(json.dumps(export))
    code, _, err = _run(capsys, "train", "--pool", world / "pool.npz", "--labels", bad, "--out", world / "m.msgpack")
    assert code == 2 and message in err and err.count("\n") == 1, err
