import csv
import json

import numpy as np
import pytest

from arm_jax import data
from arm_jax.cli import main

TINY = [
    "--preset", "demo", "--dim", "8", "--train-prompts", "30", "--test-prompts", "5", "--test-responses", "8",
    "--responses", "4", "--seeds", "2", "--rounds", "2", "--k", "10", "--initial-labels", "10",
    "--prompts-per-round", "6", "--candidates", "30", "--steps", "10", "--width", "8", "--depth", "2",
    "--best-of-n", "4,8",
]


def test_run_writes_json_csv_png(tmp_path, capsys):
    out = tmp_path / "res"
    assert main(["run", *TINY, "--strategies", "random,dopt", "--out", str(out)]) == 0
    payload = json.loads((out / "metrics.json").read_text())
    assert payload["version"] and payload["backend"] == "cpu" and payload["wall_time_s"] > 0
    assert payload["annotations"] == [10, 20, 30]
    assert payload["config"]["k"] == 10 and payload["config"]["task"] == "llm-like"
    assert set(payload["results"]) == {"random", "dopt"}
    rec = payload["results"]["dopt"]
    assert np.shape(rec["one_minus_spearman"]) == (2, 3)
    assert set(rec["best_of_n"]) == {"4", "8"} and np.shape(rec["best_of_n"]["8"]) == (2, 3)
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert len(rows) == 2 * 2 * 3
    assert list(rows[0]) == ["strategy", "seed", "round", "annotations", "one_minus_spearman", "best_of_4",
                             "best_of_8", "train_loss"]
    row = next(r for r in rows if r["strategy"] == "dopt" and r["seed"] == "1" and r["round"] == "2")
    assert row["annotations"] == "30"
    assert float(row["one_minus_spearman"]) == rec["one_minus_spearman"][1][2]
    assert float(row["best_of_8"]) == rec["best_of_n"]["8"][1][2]
    assert (out / "learning_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    err = capsys.readouterr().err
    assert "round   2/2" in err and "(mean of 2 seeds)" in err
    assert sorted(p.name for p in out.iterdir()) == ["learning_curves.png", "metrics.csv", "metrics.json"]


def test_run_reads_the_papers_files(tmp_path):
    ds = data.llm_like(__import__("jax").random.PRNGKey(1), n_train_prompts=30, n_responses=4, n_test_prompts=5,
                       n_test_responses=8, dim=8)
    paths = {}
    for name, arr in zip(["embd_train", "reward_train", "embd_test", "reward_test"], ds):
        arr = np.asarray(arr)
        if name.startswith("reward"):
            arr = arr[..., None]  # the paper's (P, R, 1)
        np.save(tmp_path / f"{name}.npy", arr)
        paths[name] = str(tmp_path / f"{name}.npy")
    out = tmp_path / "files"
    code = main(["run", *TINY, "--strategies", "entropy", "--no-plot", "--quiet", "--out", str(out),
                 "--train-embeddings", paths["embd_train"], "--train-rewards", paths["reward_train"],
                 "--test-embeddings", paths["embd_test"], "--test-rewards", paths["reward_test"]])
    assert code == 0
    payload = json.loads((out / "metrics.json").read_text())
    assert payload["config"]["task"] == "files" and list(payload["results"]) == ["entropy"]
    assert not (out / "learning_curves.png").exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--strategies", "dopt,best"], "unknown strategy 'best'"),
        (["--strategies", "dopt,dopt"], "--strategies names a strategy twice"),
        (["--k", "0"], "k must be >= 1, got 0"),
        (["--seeds", "0"], "--seeds must be >= 1, got 0"),
        (["--best-of-n", "50"], "best_of_n N = 50 is more than the 8 responses per test prompt"),
        (["--prompts-per-round", "31"], "n_prompts = 31 is more than the 30 training prompts"),
        (["--train-embeddings", "nope.npy"], "give all four of --train-embeddings"),
        (["--train-embeddings", "a.npy", "--train-rewards", "b.npy", "--test-embeddings", "c.npy",
          "--test-rewards", "d.npy"], "a.npy"),
    ],
)
def test_run_bad_input_is_one_line_exit_2_and_no_output(tmp_path, capsys, extra, message):
    out = tmp_path / "bad"
    assert main(["run", *TINY, "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("arm-jax: error: ") and message in err[0]
    assert not out.exists()


def test_strategies_command_lists_the_registry(capsys):
    assert main(["strategies"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [l.split()[0] for l in lines] == [
        "random", "entropy", "maxdiff", "xtx", "dopt", "pa_dopt", "coreset", "batchbald", "greedy_dopt"
    ]


def test_figure1_draws_a_png(tmp_path):
    out = tmp_path / "fig.png"
    assert main(["figure1", "--strategies", "dopt,maxdiff", "--rounds", "1", "--k", "20", "--steps", "10",
                 "--out", str(out)]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("preset", ["default", "paper"])  # demo: run end to end above
def test_every_preset_traces_for_every_strategy(preset):
    """The presets CI never runs (paper: 11 GB of data) still trace, with the shapes they
    would have, from abstract data: nothing is generated or compiled."""
    import jax

    from arm_jax.cli import build_parser
    from arm_jax.cli_experiment import abstract_data, build_config, resolve_presets
    from arm_jax.experiment import make_experiment
    from arm_jax.strategies import STRATEGIES

    args = resolve_presets(build_parser().parse_args(["run", "--preset", preset]))
    data_shapes = abstract_data(args)
    keys = jax.ShapeDtypeStruct((args.seeds, 2), np.uint32)
    for name in STRATEGIES:
        lowered = make_experiment(build_config(args, name), data_shapes, devices=jax.devices()[:1]).lower_seeds(keys)
        out = lowered.out_info.metrics.one_minus_spearman
        assert out.shape == (args.seeds, args.rounds + 1), (preset, name, out.shape)


def test_a_study_of_two_lapack_strategies_finishes_on_a_small_cpu(tmp_path):
    """Regression: dopt and pa_dopt each make a batched LAPACK call (Cholesky, triangular
    solve) per round. Run side by side in one program they could take every thread of XLA's
    CPU pool and wait on each other forever (4 hangs in 6 runs of this command on 2 cores).
    The strategies now acquire one after another. A subprocess, so a hang fails the test."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "arm_jax.cli", "run", "--preset", "demo", "--strategies", "dopt,pa_dopt",
           "--rounds", "3", "--quiet", "--no-plot", "--out", str(tmp_path / "out")]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        pytest.fail("arm-jax run hung (no result after 300 s)")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "metrics.json").exists()
