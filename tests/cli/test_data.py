"""End-to-end tests of ``arm-jax select | train | score`` through ``arm_jax.cli.main``."""
from __future__ import annotations

import dataclasses
import json
import os

import jax
import numpy as np
import pytest

from arm_jax.cli.main import main
from arm_jax.model import network as model_lib
from arm_jax.model.config import TrainConfig
from arm_jax.model.network import ModelConfig
from arm_jax.workflow import checkpoint as model_files
from arm_jax.workflow import fitting, policy, score
from arm_jax.workflow import labels as labels_lib
from arm_jax.workflow import pool as pool_io
from arm_jax.workflow import select as realdata
from arm_jax.workflow import train as train_lib

N_PROMPTS, N_RESPONSES, DIM = 10, 4, 6
FAST = ["--steps", "40", "--batch-size", "16", "--depth", "2", "--width", "8"]
MODEL = ModelConfig(depth=2, width=8)
TRAIN = TrainConfig(steps=40, batch_size=16)


@pytest.fixture
def world(tmp_path):
    """A pool .npz with string item ids and prompt ids, and a known linear golden reward."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N_PROMPTS * N_RESPONSES, DIM)).astype(np.float32)
    ids = np.array([f"item{i}" for i in range(x.shape[0])])
    prompts = np.repeat([f"q{p}" for p in range(N_PROMPTS)], N_RESPONSES)
    np.savez(tmp_path / "pool.npz", embeddings=x, item_ids=ids, prompt_ids=prompts)
    golden = dict(zip(ids.tolist(), (x @ rng.normal(size=DIM)).tolist()))
    return tmp_path, golden


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _annotate(rows, golden):
    """The simulated annotator: the item with the larger golden reward wins."""
    out = []
    for r in rows:
        a, b = r["a"], r["b"]
        out.append({"winner": a, "loser": b} if golden[a] > golden[b] else {"winner": b, "loser": a})
    return out


def _append(path, labels):
    with open(path, "a") as f:
        for row in labels:
            f.write(json.dumps(row) + "\n")


def _check_batch(rows, k, ids, prompts=None, mode="cross-prompt"):
    assert len(rows) == k
    assert [r["rank"] for r in rows] == list(range(1, k + 1))
    pairs = {frozenset((r["a"], r["b"])) for r in rows}
    assert len(pairs) == k  # no pair twice, in either order
    for r in rows:
        assert set(r) == {"a", "b", "p_a_wins", "score", "rank"}
        assert r["a"] in ids and r["b"] in ids and r["a"] != r["b"]
        assert 0.0 < r["p_a_wins"] < 1.0 and isinstance(r["score"], float)
        if prompts is not None:
            assert (prompts[r["a"]] == prompts[r["b"]]) == (mode == "in-prompt")
    return pairs


@pytest.mark.parametrize("mode", ["in-prompt", "cross-prompt"])
def test_select_loop_never_repeats_a_pair(world, capsys, mode):
    tmp, golden = world
    ids = set(golden)
    prompts = {f"item{i}": f"q{i // N_RESPONSES}" for i in range(len(golden))}
    code, _, err = _run(capsys, "select", "--pool", tmp / "pool.npz", "--k", 8, "--out", tmp / "r0.jsonl",
                        "--pairs", mode, *FAST)
    assert code == 0
    assert "cold start" in err and "40 items, 0 labels" in err and f"{policy.DEFAULT.strategy} picked 8 with the untrained MLP (2 x 8" in err
    seen = _check_batch(_read(tmp / "r0.jsonl"), 8, ids, prompts, mode)
    labels = tmp / "labels.jsonl"
    for round_ in (1, 2):
        _append(labels, _annotate(_read(tmp / f"r{round_ - 1}.jsonl"), golden))
        code, _, err = _run(capsys, "select", "--pool", tmp / "pool.npz", "--labels", labels, "--k", 8,
                            "--out", tmp / f"r{round_}.jsonl", "--pairs", mode, "--strategy", "pa_dopt", *FAST)
        assert code == 0 and "cold start" not in err and f"{8 * round_} labels" in err
        assert "pa_dopt picked 8 with the MLP (2 x 8, " in err
        new = _check_batch(_read(tmp / f"r{round_}.jsonl"), 8, ids, prompts, mode)
        assert not new & seen
        seen |= new


def test_labelled_pairs_are_excluded_in_either_order_and_ties_count(world, capsys):
    tmp, golden = world
    # label all but 3 in-prompt pairs of the pool, some reversed, some ties
    pairs = [(f"item{p * 4 + i}", f"item{p * 4 + j}") for p in range(N_PROMPTS) for i in range(4) for j in range(i + 1, 4)]
    keep = {frozenset(p) for p in pairs[:3]}
    rows = []
    for n, (a, b) in enumerate(pairs[3:]):
        rows.append({"winner": b, "loser": a, "tie": n % 5 == 0} if n % 2 else {"winner": a, "loser": b})
    _append(tmp / "labels.jsonl", rows)
    code, _, err = _run(capsys, "select", "--pool", tmp / "pool.npz", "--labels", tmp / "labels.jsonl", "--k", 3,
                        "--out", tmp / "next.jsonl", "--pairs", "in-prompt", "--strategy", "random", *FAST)
    assert code == 0, err
    assert {frozenset((r["a"], r["b"])) for r in _read(tmp / "next.jsonl")} == keep
    code, _, err = _run(capsys, "select", "--pool", tmp / "pool.npz", "--labels", tmp / "labels.jsonl", "--k", 4,
                        "--out", tmp / "next2.jsonl", "--pairs", "in-prompt", *FAST)
    assert code == 2 and "--k 4 is larger than the 3 unlabelled candidate pairs" in err
    assert not (tmp / "next2.jsonl").exists()


def test_all_cross_excludes_labelled_pairs(world, capsys):
    tmp, golden = world
    code, _, _ = _run(capsys, "select", "--pool", tmp / "pool.npz", "--k", 10, "--out", tmp / "r0.jsonl",
                      "--pairs", "all-cross", *FAST)
    assert code == 0
    first = _check_batch(_read(tmp / "r0.jsonl"), 10, set(golden))
    _append(tmp / "labels.jsonl", _annotate(_read(tmp / "r0.jsonl"), golden))
    code, _, err = _run(capsys, "select", "--pool", tmp / "pool.npz", "--labels", tmp / "labels.jsonl", "--k", 10,
                        "--out", tmp / "r1.jsonl", "--pairs", "all-cross", "--strategy", "pa_dopt", *FAST)
    assert code == 0, err
    assert not _check_batch(_read(tmp / "r1.jsonl"), 10, set(golden)) & first
    code, _, err = _run(capsys, "select", "--pool", tmp / "pool.npz", "--k", 10, "--out", tmp / "r2.jsonl",
                        "--pairs", "all-cross", "--strategy", "coreset", *FAST)
    assert code == 2 and "--pairs all-cross scores every pair with one of" in err


def test_same_seed_gives_byte_identical_outputs(world, capsys):
    tmp, golden = world
    _run(capsys, "select", "--pool", tmp / "pool.npz", "--k", 8, "--out", tmp / "r0.jsonl", *FAST)
    _append(tmp / "labels.jsonl", _annotate(_read(tmp / "r0.jsonl"), golden))
    outputs = []
    for name in ("a", "b"):
        for strategy in ("dopt", "random", "batchbald"):
            assert _run(capsys, "select", "--pool", tmp / "pool.npz", "--labels", tmp / "labels.jsonl", "--k", 5,
                        "--strategy", strategy, "--seed", 7, "--out", tmp / f"{name}_{strategy}.jsonl", *FAST)[0] == 0
        assert _run(capsys, "train", "--pool", tmp / "pool.npz", "--labels", tmp / "labels.jsonl", "--seed", 7,
                    "--out", tmp / f"{name}.msgpack", *FAST)[0] == 0
        assert _run(capsys, "score", "--model", tmp / f"{name}.msgpack", "--pool", tmp / "pool.npz",
                    "--out", tmp / f"{name}_scores")[0] == 0
        outputs.append([(tmp / f"{name}{suffix}").read_bytes() for suffix in
                        ("_dopt.jsonl", "_random.jsonl", "_batchbald.jsonl", ".msgpack", "_scores.npy", "_scores.csv")])
    assert outputs[0] == outputs[1]
    _run(capsys, "select", "--pool", tmp / "pool.npz", "--labels", tmp / "labels.jsonl", "--k", 5,
         "--strategy", "random", "--seed", 8, "--out", tmp / "c.jsonl", *FAST)
    assert (tmp / "c.jsonl").read_bytes() != outputs[0][1]


@pytest.mark.parametrize("schedule", ["early-stopping", "fixed"])
def test_train_save_load_score_matches_in_memory(world, capsys, schedule):
    tmp, golden = world
    pairs = [(f"item{i}", f"item{(7 * i + 3) % 40}") for i in range(40) if i != (7 * i + 3) % 40]
    _append(tmp / "labels.jsonl", _annotate([{"a": a, "b": b} for a, b in pairs], golden))
    code, out, err = _run(capsys, "train", "--pool", tmp / "pool.npz", "--labels", tmp / "labels.jsonl",
                          "--out", tmp / "model.msgpack", "--val-fraction", 0.25, "--seed", 3,
                          "--schedule", schedule, *FAST)
    assert code == 0, err
    if schedule == "fixed":
        assert "held-out pairwise accuracy: " in out and "(10 of 40 labels, the --val-fraction split)" in out
    else:
        assert "held-out pairwise accuracy: " in out and "of 40 labels, held out by early stopping)" in out
    assert "training pairwise accuracy: " in out and "(the saved model on all 40 labels, trained on 40)" in out
    assert "refit on all 40 labels" in err
    code, _, err = _run(capsys, "score", "--model", tmp / "model.msgpack", "--pool", tmp / "pool.npz",
                        "--out", tmp / "scores.csv")
    assert code == 0, err
    scores = np.load(tmp / "scores.npy")
    # in memory: the same seed, labels and training config, on everything (what select trains)
    pool = pool_io.load_pool(tmp / "pool.npz")
    labels = labels_lib.load_labels(tmp / "labels.jsonl", pool)
    config = dataclasses.replace(TRAIN, early_stopping=schedule == "early-stopping", val_fraction=0.25)
    params, _ = fitting.fit_on_labels(3, pool.embeddings, labels.winner, labels.loser, MODEL, config)
    expected = np.asarray(model_lib.reward(params, MODEL, np.asarray(pool.embeddings)))
    assert scores.shape == (40,) and scores.dtype == np.float32
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-5)
    lines = (tmp / "scores.csv").read_text().splitlines()
    assert lines[0] == "item_id,prompt_id,reward" and len(lines) == 41
    item, prompt, value = lines[5].split(",")
    assert (item, prompt) == ("item4", "q1") and float(value) == pytest.approx(float(scores[4]), rel=1e-6)


def test_train_without_refit_and_without_validation(world, capsys):
    tmp, golden = world
    pairs = [(f"item{i}", f"item{i + 1}") for i in range(0, 39)]
    _append(tmp / "labels.jsonl", _annotate([{"a": a, "b": b} for a, b in pairs], golden))
    code, out, err = _run(capsys, "train", "--pool", tmp / "pool.npz", "--labels", tmp / "labels.jsonl",
                          "--out", tmp / "m.msgpack", "--no-refit", "--schedule", "fixed", "--val-fraction", 0.1, *FAST)
    assert code == 0 and "trained on 35 labels" in err
    assert "(the saved model on all 39 labels, trained on 35)" in out
    code, out, err = _run(capsys, "train", "--pool", tmp / "pool.npz", "--labels", tmp / "labels.jsonl",
                          "--out", tmp / "m1.msgpack", "--no-refit", "--val-fraction", 0.3, *FAST)
    n_fit = model_files.load_model(tmp / "m1.msgpack").metadata["fit"]["n_fit"]
    assert code == 0 and f"trained on {n_fit} labels" in err and n_fit < 39
    assert f"the early-stopped model, trained on {n_fit} labels, is kept" in out
    for schedule in ("early-stopping", "fixed"):
        code, out, err = _run(capsys, "train", "--pool", tmp / "pool.npz", "--labels", tmp / "labels.jsonl",
                              "--out", tmp / "m0.msgpack", "--val-fraction", 0, "--schedule", schedule, *FAST)
        assert code == 0 and "held-out pairwise accuracy: n/a (--val-fraction 0)" in out
        assert "held-out log-loss: n/a" in out and "note: held-out labels" not in out
        assert "(the saved model on all 39 labels, trained on 39)" in out


# ----------------------------------------------------------------------------- bad inputs


def _bad_pool(tmp, kind):
    x = np.random.default_rng(1).normal(size=(12, DIM)).astype(np.float32)
    if kind == "shape":
        np.savez(tmp / "bad.npz", embeddings=x[None])
    elif kind == "dtype":
        np.savez(tmp / "bad.npz", embeddings=(x * 10).astype(np.int32))
    elif kind == "nan":
        x[3, 0] = np.nan
        x[5, 2] = np.inf
        np.savez(tmp / "bad.npz", embeddings=x)
    elif kind == "npy_shape":
        np.save(tmp / "bad.npy", x.ravel())
        return tmp / "bad.npy"
    return tmp / "bad.npz"


POOL_ERRORS = [
    ("shape", "embeddings have shape (1, 12, 6), expected (N, D)"),
    ("dtype", "embeddings have dtype int32, expected float16, float32 or float64"),
    ("nan", "2 row(s) of embeddings contain NaN or inf (first: row 3, item '3')"),
    ("npy_shape", "embeddings have shape (72,), expected (prompts, responses, D) or (N, D)"),
]


@pytest.mark.parametrize("command", ["select", "train", "score"])
@pytest.mark.parametrize("kind, message", POOL_ERRORS)
def test_bad_pool_is_one_line_exit_2_no_output(world, capsys, command, kind, message):
    tmp, _ = world
    pool = _bad_pool(tmp, kind)
    (tmp / "labels.jsonl").write_text('{"winner": "0", "loser": "1"}\n')
    model_files.save_model(tmp / "model.msgpack", model_lib.init_params(jax.random.PRNGKey(0), MODEL, DIM),
                        MODEL, DIM)
    out = tmp / "out" / "result"
    argv = {
        "select": ["select", "--pool", pool, "--labels", tmp / "labels.jsonl", "--k", 2, "--out", out, *FAST],
        "train": ["train", "--pool", pool, "--labels", tmp / "labels.jsonl", "--out", out, *FAST],
        "score": ["score", "--model", tmp / "model.msgpack", "--pool", pool, "--out", out],
    }[command]
    _expect_error(capsys, argv, f"{pool}: {message}", tmp / "out")


def _expect_error(capsys, argv, message, out_dir):
    code, stdout, err = _run(capsys, *argv)
    assert code == 2
    assert err.startswith("arm-jax: error: ") and err.count("\n") == 1, err  # one line
    assert message in err and "Traceback" not in err
    assert stdout == ""
    assert not out_dir.exists() or not any(out_dir.iterdir())


LABEL_ERRORS = [
    ('{"winner": "item1", "loser": "item2"}\n\nnot json\n', "labels.jsonl:3: not valid JSON"),
    ('{"winner": "item1"}\n', "labels.jsonl:1: missing field 'loser'"),
    ('{"winner": "item1", "loser": "item2"}\n{"winner": "item99", "loser": "item2"}\n',
     "labels.jsonl:2: id 'item99' is not in the pool"),
    ('{"winner": "item1", "loser": 1}\n', "labels.jsonl:1: id '1' is not in the pool"),
    ('{"winner": "item4", "loser": "item4"}\n', "labels.jsonl:1: winner and loser are the same item 'item4'"),
]


@pytest.mark.parametrize("command", ["select", "train"])
@pytest.mark.parametrize("text, message", LABEL_ERRORS)
def test_bad_labels_are_one_line_exit_2_no_output(world, capsys, command, text, message):
    tmp, _ = world
    (tmp / "labels.jsonl").write_text(text)
    out = tmp / "out" / "result"
    argv = [command, "--pool", tmp / "pool.npz", "--labels", tmp / "labels.jsonl", "--out", out, *FAST]
    if command == "select":
        argv += ["--k", 2]
    _expect_error(capsys, argv, f"{tmp}/{message}", tmp / "out")


def test_missing_files(world, capsys):
    tmp, _ = world
    out = tmp / "out" / "x"
    _expect_error(capsys, ["select", "--pool", tmp / "nope.npz", "--k", 2, "--out", out],
                  f"{tmp / 'nope.npz'}: no such file", tmp / "out")
    _expect_error(capsys, ["select", "--pool", tmp / "pool.npz", "--labels", tmp / "nope.jsonl", "--k", 2,
                           "--out", out], f"{tmp / 'nope.jsonl'}: no such file", tmp / "out")
    _expect_error(capsys, ["train", "--pool", tmp / "pool.npz", "--labels", tmp / "nope.jsonl", "--out", out],
                  f"{tmp / 'nope.jsonl'}: no such file", tmp / "out")
    _expect_error(capsys, ["score", "--model", tmp / "nope.msgpack", "--pool", tmp / "pool.npz", "--out", out],
                  f"{tmp / 'nope.msgpack'}: no such file", tmp / "out")


def test_k_larger_than_unlabelled_candidates(world, capsys):
    tmp, _ = world
    # 10 prompts x C(4, 2) = 60 in-prompt pairs, one of them labelled
    (tmp / "labels.jsonl").write_text('{"winner": "item1", "loser": "item0"}\n')
    _expect_error(
        capsys,
        ["select", "--pool", tmp / "pool.npz", "--labels", tmp / "labels.jsonl", "--k", 60, "--pairs", "in-prompt",
         "--out", tmp / "out" / "next.jsonl", *FAST],
        f"--k 60 is larger than the 59 unlabelled candidate pairs (in-prompt pairs of {tmp / 'pool.npz'}: "
        "60 candidates, 1 already labelled)",
        tmp / "out",
    )
    _expect_error(
        capsys,
        ["select", "--pool", tmp / "pool.npz", "--k", 30, "--candidates", 20, "--out", tmp / "out" / "next.jsonl"],
        "--k 30 is larger than the 20 unlabelled candidate pairs", tmp / "out",
    )


def test_in_prompt_without_prompt_ids(tmp_path, capsys):
    np.savez(tmp_path / "p.npz", embeddings=np.arange(10, dtype=np.float32).reshape(5, 2))
    _expect_error(capsys, ["select", "--pool", tmp_path / "p.npz", "--k", 2, "--pairs", "in-prompt",
                           "--out", tmp_path / "out" / "n.jsonl"],
                  f"{tmp_path / 'p.npz'}: the pool has no prompt_ids, so there are no in-prompt pairs", tmp_path / "out")


def test_model_dimension_mismatch(world, capsys):
    tmp, _ = world
    model_files.save_model(tmp / "m.msgpack", model_lib.init_params(jax.random.PRNGKey(0), MODEL, DIM + 1), MODEL, DIM + 1)
    _expect_error(capsys, ["score", "--model", tmp / "m.msgpack", "--pool", tmp / "pool.npz", "--out", tmp / "out" / "s"],
                  f"{tmp / 'm.msgpack'}: the model takes embeddings of dimension {DIM + 1}, but the pool "
                  f"{tmp / 'pool.npz'} has dimension {DIM}", tmp / "out")
    (tmp / "garbage.msgpack").write_bytes(b"hello")
    _expect_error(capsys, ["score", "--model", tmp / "garbage.msgpack", "--pool", tmp / "pool.npz",
                           "--out", tmp / "out" / "s"], f"{tmp / 'garbage.msgpack'}: not an arm-jax model file",
                  tmp / "out")


def test_npy_paper_layout_ids(tmp_path, capsys):
    x = np.random.default_rng(0).normal(size=(5, 3, 4)).astype(np.float32)
    np.save(tmp_path / "embd_train.npy", x)
    (tmp_path / "labels.jsonl").write_text('{"winner": "0:1", "loser": "0:2"}\n{"winner": "3:0", "loser": "1:2"}\n')
    code, _, err = _run(capsys, "select", "--pool", tmp_path / "embd_train.npy", "--labels", tmp_path / "labels.jsonl",
                        "--k", 4, "--pairs", "in-prompt", "--out", tmp_path / "n.jsonl", *FAST)
    assert code == 0, err
    rows = _read(tmp_path / "n.jsonl")
    assert all(r["a"].split(":")[0] == r["b"].split(":")[0] for r in rows)
    assert {"0:1", "0:2"} not in [{r["a"], r["b"]} for r in rows]


@pytest.mark.parametrize("command, text", [
    ("select", "Labelled pairs (either order) are never proposed"),
    ("select", "required unless --budget is given"),
    ("select", "--preset paper is the paper's 3-layer MLP with dopt"),
    ("train", "--val-fraction"),
    ("score", "SCORES.npy"),
])
def test_help(capsys, command, text):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    assert text in " ".join(capsys.readouterr().out.split())  # as wrapped to the terminal's width


def test_empty_labels_file(world, capsys):
    tmp, _ = world
    (tmp / "labels.jsonl").write_text("\n\n")
    code, _, err = _run(capsys, "select", "--pool", tmp / "pool.npz", "--labels", tmp / "labels.jsonl", "--k", 3,
                        "--out", tmp / "n.jsonl", *FAST)
    assert code == 0 and "cold start" in err
    _expect_error(capsys, ["train", "--pool", tmp / "pool.npz", "--labels", tmp / "labels.jsonl",
                           "--out", tmp / "out" / "m.msgpack", *FAST],
                  f"{tmp / 'labels.jsonl'}: no labels to train on", tmp / "out")


# ----------------------------------------------------------------------------- bugs are not bad input


def test_a_value_error_from_a_bug_is_not_reported_as_bad_input(world, monkeypatch):
    """Item 8: only InputError (and missing/unreadable files) become exit 2; a ValueError
    raised deep inside is a bug and surfaces as a traceback."""
    tmp, _ = world

    def broken(*args, **kwargs):
        raise ValueError("a bug deep inside")

    monkeypatch.setattr(realdata, "candidate_pairs", broken)
    with pytest.raises(ValueError, match="a bug deep inside"):
        main(["select", "--pool", str(tmp / "pool.npz"), "--k", "2", "--out", str(tmp / "o.jsonl"), *FAST])
    assert not (tmp / "o.jsonl").exists()


# ----------------------------------------------------------------------------- output paths


def _inputs(tmp):
    """labels.jsonl (one label), a 2-D pool.npy, and a model file named like a score output."""
    (tmp / "labels.jsonl").write_text('{"winner": "item0", "loser": "item1"}\n')
    np.save(tmp / "pool.npy", np.load(tmp / "pool.npz")["embeddings"])
    model_files.save_model(tmp / "scores.npy", model_lib.init_params(jax.random.PRNGKey(0), MODEL, DIM), MODEL, DIM)


@pytest.mark.parametrize("argv, victim", [
    (["select", "--pool", "pool.npz", "--labels", "labels.jsonl", "--k", 2, "--out", "labels.jsonl"], "labels.jsonl"),
    (["select", "--pool", "pool.npz", "--labels", "labels.jsonl", "--k", 2, "--out", "link.jsonl"], "labels.jsonl"),
    (["select", "--pool", "pool.npy", "--k", 2, "--out", "pool.npy"], "pool.npy"),
    (["train", "--pool", "pool.npz", "--labels", "labels.jsonl", "--out", "labels.jsonl"], "labels.jsonl"),
    (["train", "--pool", "pool.npz", "--labels", "labels.jsonl", "--out", "pool.npz"], "pool.npz"),
    (["score", "--model", "scores.npy", "--pool", "pool.npy", "--out", "pool"], "pool.npy"),
    (["score", "--model", "scores.npy", "--pool", "pool.npz", "--out", "scores"], "scores.npy"),
])
def test_an_output_that_is_an_input_is_refused(world, capsys, monkeypatch, argv, victim):
    """Item 11: --out resolving to an input file: exit 2, one line, nothing written."""
    tmp, _ = world
    _inputs(tmp)
    os.symlink(tmp / "labels.jsonl", tmp / "link.jsonl")
    before = {p.name: p.read_bytes() for p in tmp.iterdir()}
    monkeypatch.chdir(tmp)
    code, out, err = _run(capsys, *argv, *(FAST if argv[0] != "score" else []))
    assert code == 2 and err.startswith("arm-jax: error: ") and err.count("\n") == 1, err
    assert "is the input file --" in err and victim in err
    assert {p.name: p.read_bytes() for p in tmp.iterdir()} == before


def test_score_replaces_both_files_or_leaves_no_mixed_pair(world, monkeypatch, fail_second_replace):
    """Item 12: a fault between the two renames never leaves a new .npy beside an old .csv."""
    tmp, _ = world
    for seed in (0, 1):
        model_files.save_model(tmp / f"m{seed}.msgpack", model_lib.init_params(jax.random.PRNGKey(seed), MODEL, DIM),
                               MODEL, DIM)
    score.score_pool(tmp / "m0.msgpack", tmp / "pool.npz", tmp / "scores")
    old = np.load(tmp / "scores.npy")
    fail_second_replace()
    with pytest.raises(OSError, match="injected fault"):
        score.score_pool(tmp / "m1.msgpack", tmp / "pool.npz", tmp / "scores")
    monkeypatch.undo()
    new = np.load(tmp / "scores.npy")
    assert not np.array_equal(new, old)
    # the documented promise: whenever both files exist, they are from the same run
    if (tmp / "scores.csv").exists():
        csv_rewards = [float(line.split(",")[2]) for line in (tmp / "scores.csv").read_text().splitlines()[1:]]
        np.testing.assert_allclose(csv_rewards, new, rtol=1e-6)
    assert not [p.name for p in tmp.iterdir() if p.name.endswith(".tmp")]
    score.score_pool(tmp / "m1.msgpack", tmp / "pool.npz", tmp / "scores")  # a rerun completes the pair
    assert (tmp / "scores.csv").exists()


@pytest.mark.parametrize("command", ["select", "train", "score"])
@pytest.mark.parametrize("where", ["a directory", "below a file"])
def test_output_location_is_checked_before_any_work(world, capsys, monkeypatch, command, where):
    """Item 13: a bad --out stops at once (no pool is read) and names the path as given."""
    tmp, _ = world
    _inputs(tmp)
    (tmp / "adir").mkdir()
    (tmp / "adir.npy").mkdir()  # score --out adir writes adir.npy and adir.csv
    out = tmp / "adir" if where == "a directory" else tmp / "labels.jsonl" / "next"

    def no_work(*args, **kwargs):
        raise AssertionError("work started before the output path was checked")

    for module in (realdata, train_lib, score):
        monkeypatch.setattr(module, "load_pool", no_work)
    argv = {
        "select": ["select", "--pool", tmp / "pool.npz", "--k", 2, "--out", out, *FAST],
        "train": ["train", "--pool", tmp / "pool.npz", "--labels", tmp / "labels.jsonl", "--out", out, *FAST],
        "score": ["score", "--model", tmp / "scores.npy", "--pool", tmp / "pool.npz", "--out", out],
    }[command]
    code, _, err = _run(capsys, *argv)
    assert code == 2 and err.count("\n") == 1, err
    shown = str(out) if command != "score" else str(out) + ".npy"
    assert err.startswith(f"arm-jax: error: {shown}: ")
    assert ("is a directory" if where == "a directory" else "is not a directory") in err
    assert ".tmp" not in err


def test_select_stops_within_a_second_or_two_on_sigint(tmp_path):
    """Item 14: Ctrl-C during a long training ends `select` at once, with no output file."""
    import signal
    import subprocess
    import sys
    import time

    rng = np.random.default_rng(0)
    np.save(tmp_path / "pool.npy", rng.normal(size=(200, 8)).astype(np.float32))
    with open(tmp_path / "labels.jsonl", "w") as f:
        for i in range(100):
            f.write(json.dumps({"winner": str(2 * i), "loser": str(2 * i + 1)}) + "\n")
    out = tmp_path / "next.jsonl"
    cmd = [sys.executable, "-m", "arm_jax", "select", "--pool", str(tmp_path / "pool.npy"), "--labels",
           str(tmp_path / "labels.jsonl"), "--k", "5", "--out", str(out), "--steps", "20000000",
           "--batch-size", "8", "--width", "8", "--depth", "1"]
    log = tmp_path.parent / f"{tmp_path.name}.stderr"
    with open(log, "w") as err:
        proc = subprocess.Popen(cmd, stderr=err)
    try:
        started = time.monotonic()
        # the line is printed as training begins (the old code printed none: then wait 8 s)
        while "training the reward model" not in log.read_text() and time.monotonic() - started < 8:
            assert proc.poll() is None, log.read_text()
            time.sleep(0.05)
        time.sleep(1.0)  # well inside the training's compiled loop
        assert proc.poll() is None, "select ended before it could be interrupted"
        proc.send_signal(signal.SIGINT)
        sent = time.monotonic()
        try:
            proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            pytest.fail("select did not stop within 3 s of SIGINT")
        assert time.monotonic() - sent < 3
        assert proc.returncode != 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.jsonl", "pool.npy"]


# ----------------------------------------------------------------------------- small things


def test_labels_file_with_a_byte_order_mark(world, capsys):
    tmp, golden = world
    (tmp / "labels.jsonl").write_bytes(b"\xef\xbb\xbf" + b'{"winner": "item0", "loser": "item1"}\n')
    code, _, err = _run(capsys, "select", "--pool", tmp / "pool.npz", "--labels", tmp / "labels.jsonl", "--k", 3,
                        "--out", tmp / "n.jsonl", *FAST)
    assert code == 0, err
    assert "1 labels" in err


def test_huge_embeddings_are_refused_naming_the_rows(world, capsys):
    """Item 15: a float32 row of 3e38 is finite, but its features are not: one line that
    names the row, not "phi_diff contains NaN/inf values"."""
    tmp, golden = world
    x = np.load(tmp / "pool.npz")["embeddings"].copy()
    x[3] = 3e38
    np.save(tmp / "huge.npy", x)

    def error(*argv):
        code, out, err = _run(capsys, *argv)
        assert code == 2, err
        last = err.splitlines()[-1]
        assert last.startswith(f"arm-jax: error: {tmp / 'huge.npy'}: ") and "Traceback" not in err
        return last

    assert "features of 1 item(s) are not finite: row 3 (item '3')" in error(
        "select", "--pool", tmp / "huge.npy", "--k", 3, "--out", tmp / "n.jsonl", *FAST)
    (tmp / "labels.jsonl").write_text('{"winner": "3", "loser": "4"}\n{"winner": "0", "loser": "1"}\n')
    assert "row 3 (item '3')" in error(
        "train", "--pool", tmp / "huge.npy", "--labels", tmp / "labels.jsonl", "--out", tmp / "m.msgpack", *FAST)
    model_files.save_model(tmp / "m.msgpack", model_lib.init_params(jax.random.PRNGKey(0), MODEL, DIM), MODEL, DIM)
    assert "row 3 (item '3')" in error("score", "--model", tmp / "m.msgpack", "--pool", tmp / "huge.npy", "--out", tmp / "s")
    assert not (tmp / "n.jsonl").exists() and not (tmp / "s.npy").exists()


@pytest.mark.parametrize("command", ["select", "train", "score"])
def test_help_documents_2d_pools_and_created_directories(capsys, command):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "missing directories are created" in text and "a .npy of shape (N, D)" in text


def test_select_help_says_what_the_pair_modes_mean_and_why_the_default(capsys):
    with pytest.raises(SystemExit):
        main(["select", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "two responses to different prompts" in text and "defaults to in-prompt (the paper's main protocol)" in text
    assert "--allow-relabel" in text


def test_allow_relabel_proposes_labelled_pairs(world, capsys):
    """Item 6: labelled pairs are excluded by default; --allow-relabel lets them back in."""
    tmp, golden = world
    pairs = [(f"item{p * 4 + i}", f"item{p * 4 + j}") for p in range(N_PROMPTS) for i in range(4) for j in range(i + 1, 4)]
    _append(tmp / "labels.jsonl", _annotate([{"a": a, "b": b} for a, b in pairs], golden))  # every in-prompt pair
    argv = ["select", "--pool", tmp / "pool.npz", "--labels", tmp / "labels.jsonl", "--k", 5, "--pairs", "in-prompt",
            "--out", tmp / "n.jsonl", *FAST]
    code, _, err = _run(capsys, *argv)
    assert code == 2 and "--k 5 is larger than the 0 unlabelled candidate pairs" in err
    code, _, err = _run(capsys, *argv, "--allow-relabel")
    assert code == 0, err
    rows = _read(tmp / "n.jsonl")
    assert len(rows) == 5 and {frozenset((r["a"], r["b"])) for r in rows} <= {frozenset(p) for p in pairs}


# ----------------------------------------------------------------------------- item 10, via the CLI


@pytest.mark.parametrize("strategy", ["dopt", "pa_dopt", "xtx"])
def test_cli_small_pool_two_rounds(tmp_path, strategy):
    """A pool with fewer items than the feature width (40 × 16, width 64): the cold start and
    the next round both give scored pairs (was: (0,1),(0,2),… with "score": null, then
    "internal error: selection repeats or relabels a pair")."""
    import json

    from arm_jax.cli import main as cli

    rng = np.random.default_rng(0)
    pool = tmp_path / "pool.npy"
    np.save(pool, rng.standard_normal((40, 16)).astype(np.float32))
    first = tmp_path / "first.jsonl"
    common = ["--pool", str(pool), "--k", "5", "--strategy", strategy, "--steps", "20"]
    assert cli.main(["select", *common, "--out", str(first)]) == 0
    rows = [json.loads(line) for line in first.read_text().splitlines()]
    assert len(rows) == 5 and all(r["score"] is not None and np.isfinite(r["score"]) for r in rows)
    assert {(r["a"], r["b"]) for r in rows} != {("0", str(j)) for j in range(1, 6)}
    labels = tmp_path / "labels.jsonl"
    labels.write_text("".join(json.dumps({"winner": r["a"], "loser": r["b"]}) + "\n" for r in rows))
    second = tmp_path / "second.jsonl"
    assert cli.main(["select", *common, "--labels", str(labels), "--out", str(second)]) == 0
    again = [json.loads(line) for line in second.read_text().splitlines()]
    assert len(again) == 5 and all(np.isfinite(r["score"]) for r in again)
    labelled = {frozenset((r["a"], r["b"])) for r in rows}
    assert not labelled & {frozenset((r["a"], r["b"])) for r in again}


@pytest.mark.parametrize("argv, rule, model", [
    ([], "iopt", "the linear model"),
    (["--preset", "paper"], "dopt", "the MLP (3 x 64, relu)"),
    (["--preset", "paper", "--strategy", "random", "--depth", "0"], "random", "the linear model"),
])
def test_select_preset_gives_the_policy_unless_flags_say_otherwise(world, capsys, argv, rule, model):
    tmp, golden = world
    _run(capsys, "select", "--pool", tmp / "pool.npz", "--k", 8, "--out", tmp / "r0.jsonl", *FAST)
    _append(tmp / "labels.jsonl", _annotate(_read(tmp / "r0.jsonl"), golden))
    code, _, err = _run(capsys, "select", "--pool", tmp / "pool.npz", "--labels", tmp / "labels.jsonl", "--k", 4,
                        "--steps", "40", "--out", tmp / "r1.jsonl", *argv)
    assert code == 0 and f"{rule} picked 4 with {model}" in err
    assert policy.DEFAULT.strategy == "iopt" and policy.DEFAULT.model.depth == 0


def test_select_says_what_the_batch_buys_against_a_random_batch(world, capsys):
    tmp, golden = world
    _run(capsys, "select", "--pool", tmp / "pool.npz", "--k", 99, "--out", tmp / "r0.jsonl", "--strategy", "random")
    _append(tmp / "labels.jsonl", _annotate(_read(tmp / "r0.jsonl"), golden))
    code, _, err = _run(capsys, "select", "--pool", tmp / "pool.npz", "--labels", tmp / "labels.jsonl", "--k", 6,
                        "--out", tmp / "r1.jsonl", "--strategy", "random")
    assert code == 0 and "next batch" not in err  # 99 labels: too few to say
    _append(tmp / "labels.jsonl", _annotate(_read(tmp / "r1.jsonl")[:1], golden))
    ratios = {}
    for rule in ("random", "dopt"):
        code, _, err = _run(capsys, "select", "--pool", tmp / "pool.npz", "--labels", tmp / "labels.jsonl", "--k", 6,
                            "--out", tmp / "r1.jsonl", "--strategy", rule, "--seed", 1)
        line = next(l for l in err.splitlines() if "next batch: expected information gain" in l)
        ratios[rule] = float(line.split("gain ")[1].split("x that of 6 random")[0])
    assert 0.5 < ratios["random"] < 2 and ratios["dopt"] > 1 and ratios["dopt"] > ratios["random"]


def test_depth_auto_keeps_the_model_of_lower_held_out_loss(world, capsys):
    tmp, golden = world
    code, _, err = _run(capsys, "select", "--pool", tmp / "pool.npz", "--k", 60, "--out", tmp / "r0.jsonl",
                        "--depth", "auto", "--strategy", "random")
    assert code == 0 and "cold start" in err and "with the linear model" in err  # nothing to compare yet
    _append(tmp / "labels.jsonl", _annotate(_read(tmp / "r0.jsonl"), golden))
    code, _, err = _run(capsys, "select", "--pool", tmp / "pool.npz", "--labels", tmp / "labels.jsonl", "--k", 4,
                        "--out", tmp / "r1.jsonl", "--depth", "auto", "--width", "8", "--steps", "60")
    line = next(l for l in err.splitlines() if "--depth auto: " in l)
    chosen, rest = line.split("--depth auto: ")[1].split(", held-out log-loss ")
    kept, other = (float(x) for x in rest.split(" against ")[0:1] + [rest.split(" against ")[1].split(" for ")[0]])
    assert code == 0 and kept <= other
    assert f"iopt picked 4 with {'the linear model' if chosen == 'the linear model' else 'the MLP (3 x 8'}" in err


def test_choose_model_compares_held_out_losses_and_falls_back_to_linear():
    from arm_jax.workflow import select as sel

    def fitted(depth, loss):
        fit = fitting.FitReport(1, 1, 1.0, 10, 5, loss, 0.5, True, True)
        return sel._Fitted(None, None, None, fit, ModelConfig(depth=depth, width=8))

    logs = []
    assert sel._choose_model([fitted(0, 0.6), fitted(3, 0.5)], 1.0, logs.append).model_config.depth == 3
    assert sel._choose_model([fitted(0, 0.5), fitted(3, 0.6)], 1.0, logs.append).model_config.depth == 0
    assert sel._choose_model([fitted(0, 0.5), fitted(3, float("nan"))], 1.0, logs.append).model_config.depth == 0
    # five votes a line: the linear model's loss per line 2.5 is 0.5 per vote, below the MLP's 0.6
    assert sel._choose_model([fitted(0, 2.5), fitted(3, 0.6)], 5.0, logs.append).model_config.depth == 0
    assert "held-out log-loss 0.5000 against 0.6000 for the linear model" in logs[0]
    assert "too few labels to compare" in logs[2]


def test_select_says_over_which_pairs_iopt_averaged(world, capsys):
    tmp, _ = world
    code, _, err = _run(capsys, "select", "--pool", tmp / "pool.npz", "--out", tmp / "n.jsonl", "--k", "4",
                        "--strategy", "iopt", "--target-pairs", "in-prompt", "--explore", "0.5", *FAST)
    assert code == 0 and "iopt (+50% random; variance over in-prompt pairs) picked 4 with" in err
    code, _, err = _run(capsys, "select", "--pool", tmp / "pool.npz", "--out", tmp / "m.jsonl", "--k", "4",
                        "--strategy", "entropy", "--target-pairs", "in-prompt", *FAST)
    assert code == 2 and "not by entropy" in err and not (tmp / "m.jsonl").exists()


def test_select_says_when_it_handed_off_to_random(world, capsys):
    """--random-after 0 on a cold start: the batch is random's and the closing line says why;
    'never' keeps the strategy; a negative count is a usage error (exit 2), nothing written."""
    tmp, _ = world
    code, _, err = _run(capsys, "select", "--pool", tmp / "pool.npz", "--out", tmp / "h.jsonl", "--k", "4",
                        "--strategy", "iopt", "--random-after", "0", *FAST)
    assert code == 0 and "0 labelled pairs >= --random-after 0: this batch is drawn at random instead of by iopt" in err
    assert "random (hand-off from iopt, --random-after 0) picked 4 with" in err
    code, _, err = _run(capsys, "select", "--pool", tmp / "pool.npz", "--out", tmp / "i.jsonl", "--k", "4",
                        "--strategy", "iopt", "--random-after", "never", *FAST)
    assert code == 0 and "iopt picked 4 with" in err
    with pytest.raises(SystemExit) as exit_:
        _run(capsys, "select", "--pool", tmp / "pool.npz", "--out", tmp / "j.jsonl", "--k", "4", "--random-after", "-3")
    assert exit_.value.code == 2 and "expected a number of labelled pairs >= 0 or 'never', got '-3'" in capsys.readouterr().err
    assert not (tmp / "j.jsonl").exists()


def test_select_takes_the_hand_off_from_the_preset(world, capsys, monkeypatch):
    """Without --random-after, select hands off at the --preset's count (the default policy's;
    here set to 0 to see it on a cold start); --preset paper never hands off."""
    from arm_jax.workflow import policy

    assert policy.DEFAULT.random_after == 1000 and policy.POLICIES["paper"].random_after is None
    monkeypatch.setitem(policy.POLICIES, "default", policy.DEFAULT._replace(random_after=0))
    tmp, _ = world
    code, _, err = _run(capsys, "select", "--pool", tmp / "pool.npz", "--out", tmp / "p.jsonl", "--k", "4", *FAST)
    assert code == 0 and "random (hand-off from iopt, --random-after 0) picked 4" in err
    code, _, err = _run(capsys, "select", "--pool", tmp / "pool.npz", "--out", tmp / "q.jsonl", "--k", "4",
                        "--preset", "paper", *FAST)
    assert code == 0 and "dopt picked 4" in err
