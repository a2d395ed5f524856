"""``arm-jax train`` / ``select``: held-out numbers from the fit's own early stopping, the
stopping epoch, and ``--val-labels`` (evaluation-only comparisons: accuracy, log-loss, ECE)."""
from __future__ import annotations

import dataclasses
import json

import jax
import numpy as np
import pytest

from arm_jax.cli.main import main
from arm_jax.model import evaluate
from arm_jax.model import network as model_lib
from arm_jax.model.config import TrainConfig
from arm_jax.model.network import ModelConfig
from arm_jax.workflow import checkpoint as model_files
from arm_jax.workflow import fitting
from arm_jax.workflow import labels as labels_lib
from arm_jax.workflow import pool as pool_io
from arm_jax.workflow import select as realdata

N_ITEMS, DIM = 60, 6
FAST = ["--steps", "60", "--batch-size", "16", "--depth", "1", "--width", "8"]
MODEL = ModelConfig(depth=1, width=8)
TRAIN = TrainConfig(steps=60, batch_size=16)


@pytest.fixture
def world(tmp_path):
    """pool.npz (ids it0..it59), labels.jsonl (80 noisy BT labels of random pairs) and
    val.jsonl (30 more random pairs, none of them in labels.jsonl)."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(N_ITEMS, DIM)).astype(np.float32)
    ids = [f"it{i}" for i in range(N_ITEMS)]
    np.savez(tmp_path / "pool.npz", embeddings=x, item_ids=np.array(ids))
    hidden = x @ rng.normal(size=DIM)
    seen, rows = set(), []
    while len(rows) < 110:
        a, b = (int(v) for v in rng.choice(N_ITEMS, 2, replace=False))
        if frozenset((a, b)) in seen:
            continue
        seen.add(frozenset((a, b)))
        a_wins = rng.random() < 1.0 / (1.0 + np.exp(-(hidden[a] - hidden[b])))
        rows.append({"winner": ids[a], "loser": ids[b]} if a_wins else {"winner": ids[b], "loser": ids[a]})
    _write(tmp_path / "labels.jsonl", rows[:80])
    _write(tmp_path / "val.jsonl", rows[80:])
    return tmp_path


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _line(out, prefix):
    [line] = [line for line in out.splitlines() if line.startswith(prefix)]
    return line


def _leaves_equal(p, q):
    return all(np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(p), jax.tree_util.tree_leaves(q)))


def test_train_reports_the_early_stopping_hold_out_from_the_fit(world, capsys):
    code, out, err = _run(capsys, "train", "--pool", world / "pool.npz", "--labels", world / "labels.jsonl",
                          "--out", world / "m.msgpack", "--seed", 2, *FAST)
    assert code == 0, err
    # the numbers are those of the fit's own early-stopping hold-out (FitStats), not a second split
    pool = pool_io.load_pool(world / "pool.npz")
    labels = labels_lib.load_labels(world / "labels.jsonl", pool)
    params, fit = fitting.fit_on_labels(2, pool.embeddings, labels.winner, labels.loser, MODEL, TRAIN)
    assert fit.early_stopping and fit.n_val > 0 and fit.refitted
    assert _line(out, "held-out pairwise accuracy: ") == (
        f"held-out pairwise accuracy: {fit.val_accuracy:.4f} ({fit.n_val} of 80 labels, held out by early stopping)"
    )
    assert _line(out, "held-out log-loss: ") == f"held-out log-loss: {fit.val_loss:.4f}"
    assert _line(out, "stopping epoch: ") == (
        f"stopping epoch: {fit.epochs:.1f} (step {fit.steps_taken}, the best held-out log-loss; training ran "
        f"{fit.steps_run} steps); refit on all 80 labels for as many epochs"
    )
    # the honest caveat, one line
    note = _line(out, "note: ")
    assert "not a random sample" in note and "--val-labels" in note
    saved = model_files.load_model(world / "m.msgpack")
    assert _leaves_equal(saved.params, params)
    meta = saved.metadata
    assert meta["schedule"] == "early-stopping" and meta["held_out"] == "early-stopping"
    assert meta["fit"] == fit.as_dict() and meta["fit"]["refitted"]
    assert meta["val_accuracy"] == fit.val_accuracy and meta["val_loss"] == fit.val_loss
    assert meta["stopping_epoch"] == fit.epochs and meta["n_val"] == fit.n_val and meta["n_train"] == fit.n_fit
    # the ties/raters fields are left out at their defaults (a plain model file is what it was)
    plain = {k: v for k, v in dataclasses.asdict(TRAIN).items() if k not in ("ties", "annotators")}
    assert meta["train_config"] == plain and meta["val_labels"] is None


def test_train_fixed_schedule_reports_its_split(world, capsys):
    code, out, err = _run(capsys, "train", "--pool", world / "pool.npz", "--labels", world / "labels.jsonl",
                          "--out", world / "m.msgpack", "--schedule", "fixed", "--val-fraction", 0.25, "--no-refit",
                          *FAST)
    assert code == 0, err
    pool = pool_io.load_pool(world / "pool.npz")
    labels = labels_lib.load_labels(world / "labels.jsonl", pool)
    tr, va = labels_lib.split_labels(80, 0.25, 0)
    params = model_files.load_model(world / "m.msgpack").params
    rewards = np.asarray(model_lib.reward(params, MODEL, np.asarray(pool.embeddings)))
    held = evaluate.pair_metrics(rewards[labels.winner[va]], rewards[labels.loser[va]])
    assert _line(out, "held-out pairwise accuracy: ") == (
        f"held-out pairwise accuracy: {held.accuracy:.4f} (20 of 80 labels, the --val-fraction split)"
    )
    assert _line(out, "held-out log-loss: ") == f"held-out log-loss: {held.log_loss:.4f}"
    assert _line(out, "stopping epoch: ") == f"stopping epoch: {60 * 16 / 60:.1f} (step 60, fixed schedule)"


def test_train_val_labels_are_reported_and_never_trained_on(world, capsys):
    """The model is the same whatever --val-labels holds, even comparisons that contradict it."""
    flipped = [{"winner": r["loser"], "loser": r["winner"]} for r in _read(world / "val.jsonl")]
    _write(world / "flipped.jsonl", flipped)
    runs = {}
    for name, val in (("none", None), ("val", "val.jsonl"), ("flipped", "flipped.jsonl")):
        extra = [] if val is None else ["--val-labels", world / val]
        code, out, err = _run(capsys, "train", "--pool", world / "pool.npz", "--labels", world / "labels.jsonl",
                              "--out", world / f"{name}.msgpack", *extra, *FAST)
        assert code == 0, err
        runs[name] = (out, model_files.load_model(world / f"{name}.msgpack"))
    assert _leaves_equal(runs["val"][1].params, runs["none"][1].params)
    assert _leaves_equal(runs["flipped"][1].params, runs["none"][1].params)
    assert "val-labels pairwise" not in runs["none"][0]

    # the reported numbers are the saved model's on the file, computed by hand
    pool = pool_io.load_pool(world / "pool.npz")
    rewards = np.asarray(model_lib.reward(runs["none"][1].params, MODEL, np.asarray(pool.embeddings)))
    for name in ("val", "flipped"):
        val = labels_lib.load_labels(world / f"{name}.jsonl", pool)
        gap = rewards[val.winner].astype(np.float64) - rewards[val.loser]
        accuracy = np.mean((gap > 0) + 0.5 * (gap == 0))
        log_loss = np.mean(np.log1p(np.exp(-gap)))
        ece = evaluate.expected_calibration_error(1.0 / (1.0 + np.exp(-gap)))
        out, saved = runs[name]
        assert _line(out, "val-labels pairwise accuracy: ") == (
            f"val-labels pairwise accuracy: {accuracy:.4f} (30 comparisons in {world / f'{name}.jsonl'}, "
            "never trained on)"
        )
        assert _line(out, "val-labels log-loss: ") == f"val-labels log-loss: {log_loss:.4f}"
        assert _line(out, "val-labels calibration error (ECE, 10 bins): ") == (
            f"val-labels calibration error (ECE, 10 bins): {ece:.4f}"
        )
        meta = saved.metadata["val_labels"]
        assert meta["file"] == f"{name}.jsonl" and meta["n"] == 30 and meta["n_also_in_labels"] == 0
        assert meta["accuracy"] == pytest.approx(accuracy) and meta["log_loss"] == pytest.approx(log_loss)
        assert meta["ece"] == pytest.approx(ece, abs=1e-6)
    acc = [runs[n][1].metadata["val_labels"]["accuracy"] for n in ("val", "flipped")]
    assert acc[0] + acc[1] == pytest.approx(1.0)


def test_val_labels_that_are_also_training_pairs_are_flagged(world, capsys):
    rows = _read(world / "val.jsonl")[:5] + _read(world / "labels.jsonl")[:2]
    _write(world / "mixed.jsonl", rows)
    code, out, err = _run(capsys, "train", "--pool", world / "pool.npz", "--labels", world / "labels.jsonl",
                          "--out", world / "m.msgpack", "--val-labels", world / "mixed.jsonl", *FAST)
    assert code == 0, err
    assert "warning: 2 of the 7 --val-labels comparisons are pairs that --labels holds too" in err
    assert model_files.load_model(world / "m.msgpack").metadata["val_labels"]["n_also_in_labels"] == 2


def _expect_error(capsys, argv, message, out):
    code, stdout, err = _run(capsys, *argv)
    assert code == 2, err
    assert err.startswith("arm-jax: error: ") and err.count("\n") == 1, err
    assert message in err and "Traceback" not in err and stdout == ""
    assert not out.exists()


BAD_VAL_LABELS = [
    ("missing", None, "missing.jsonl: no such file"),
    ("garbage", '{"winner": "it1", "loser": "it2"}\nnot json\n', "garbage.jsonl:2: not valid JSON"),
    ("unknown", '{"winner": "it1", "loser": "nope"}\n', "unknown.jsonl:1: id 'nope' is not in the pool"),
    ("ties", '{"winner": "it1", "loser": "it2", "tie": true}\n\n', "ties.jsonl: no comparisons to evaluate on"),
    ("labels", None, "labels.jsonl: --val-labels is the --labels file; evaluation pairs must never be trained on"),
]


@pytest.mark.parametrize("command", ["train", "select"])
@pytest.mark.parametrize("name, text, message", BAD_VAL_LABELS)
def test_bad_val_labels_are_one_line_exit_2(world, capsys, command, name, text, message):
    if text is not None:
        (world / f"{name}.jsonl").write_text(text)
    out = world / "out.x"
    argv = [command, "--pool", world / "pool.npz", "--labels", world / "labels.jsonl", "--out", out,
            "--val-labels", world / f"{name}.jsonl", *FAST]
    if command == "select":
        argv += ["--k", 3]
    _expect_error(capsys, argv, message, out)


def test_out_may_not_be_the_val_labels_file(world, capsys):
    before = (world / "val.jsonl").read_bytes()
    code, _, err = _run(capsys, "select", "--pool", world / "pool.npz", "--labels", world / "labels.jsonl", "--k", 3,
                        "--out", world / "val.jsonl", "--val-labels", world / "val.jsonl", *FAST)
    assert code == 2 and "is the input file --val-labels" in err
    assert (world / "val.jsonl").read_bytes() == before


@pytest.mark.parametrize("allow_relabel", [False, True])
def test_select_never_proposes_val_pairs_and_reports_them(world, capsys, allow_relabel):
    relabel = ["--allow-relabel"] if allow_relabel else []
    base = ["select", "--pool", world / "pool.npz", "--labels", world / "labels.jsonl", "--k", 10,
            "--strategy", "entropy", *relabel, *FAST]
    code, _, err = _run(capsys, *base, "--out", world / "plain.jsonl")
    assert code == 0, err
    plain = _read(world / "plain.jsonl")
    # evaluation pairs: the first five pairs select picked, labelled
    _write(world / "picked.jsonl", [{"winner": r["a"], "loser": r["b"]} for r in plain[:5]])
    code, _, err = _run(capsys, *base, "--out", world / "with_val.jsonl", "--val-labels", world / "picked.jsonl")
    assert code == 0, err
    chosen = _read(world / "with_val.jsonl")
    held = {frozenset((r["a"], r["b"])) for r in plain[:5]}
    assert not held & {frozenset((r["a"], r["b"])) for r in chosen}
    # the same model ranks the rest (entropy scores pairs one by one): the next pairs move up
    assert [(r["a"], r["b"]) for r in chosen[:5]] == [(r["a"], r["b"]) for r in plain[5:]]
    assert f"--val-labels {world / 'picked.jsonl'}: pairwise accuracy " in err
    assert "(5 comparisons, never trained on)" in err
    assert "stopping epoch: " in err


def test_select_val_labels_library_call_returns_the_metrics(world):
    result = realdata.select_pairs(world / "pool.npz", world / "labels.jsonl", world / "n.jsonl", "random", 4,
                                   model_config=MODEL, train_config=TRAIN, val_labels_path=world / "val.jsonl")
    assert result.val.n == 30 and 0.0 <= result.val.ece <= 1.0 and result.fit.n_val > 0
    assert result.n_val_overlap == 0
