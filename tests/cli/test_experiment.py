import csv
import json

import numpy as np
import pytest

from arm_jax.cli.main import main
from arm_jax.experiment import datasets as data

TINY = [
    "--preset", "demo", "--dim", "8", "--train-prompts", "30", "--test-prompts", "5", "--test-responses", "8",
    "--responses", "4", "--seeds", "2", "--rounds", "2", "--k", "10", "--initial-labels", "10",
    "--prompts-per-round", "6", "--candidates", "30", "--steps", "10", "--width", "8", "--depth", "2",
    "--best-of-n", "4,8", "--schedule", "fixed",  # fixed: these test the CLI, and it compiles faster
]


def test_run_writes_json_csv_png(tmp_path):
    """``arm-jax run`` in a process of its own writes the JSON, CSV and PNG and says what it did.

    Its two strategies are LAPACK ones (a regression): dopt and pa_dopt each make a batched
    LAPACK call (Cholesky, triangular solve) per round. Run side by side in one program they
    could take every thread of XLA's CPU pool and wait on each other forever (4 hangs in 6 runs
    on 2 cores). The strategies now acquire one after another; a hang fails the test at the timeout."""
    import os
    import subprocess
    import sys

    out = tmp_path / "res"
    try:  # the suite's XLA flags: the hang is about the thread pool and the LAPACK calls, not the emitters
        done = subprocess.run([sys.executable, "-m", "arm_jax", "run", *TINY, "--strategies", "dopt,pa_dopt", "--out",
                               str(out)], capture_output=True, text=True, timeout=300, env=dict(os.environ))
    except subprocess.TimeoutExpired:
        pytest.fail("arm-jax run hung (no result after 300 s)")
    assert done.returncode == 0, done.stderr[-3000:]
    payload = json.loads((out / "metrics.json").read_text())
    assert payload["version"] and payload["backend"] == "cpu" and payload["wall_time_s"] > 0
    assert payload["annotations"] == [10, 20, 30]
    assert payload["config"]["k"] == 10 and payload["config"]["task"] == "llm-like"
    assert set(payload["results"]) == {"dopt", "pa_dopt"}
    rec = payload["results"]["pa_dopt"]
    assert np.shape(rec["one_minus_spearman"]) == (2, 3)
    assert set(rec["best_of_n"]) == {"4", "8"} and np.shape(rec["best_of_n"]["8"]) == (2, 3)
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert len(rows) == 2 * 2 * 3
    assert list(rows[0]) == ["strategy", "seed", "round", "annotations", "one_minus_spearman", "best_of_4",
                             "best_of_8", "train_loss"]
    row = next(r for r in rows if r["strategy"] == "pa_dopt" and r["seed"] == "1" and r["round"] == "2")
    assert row["annotations"] == "30"
    assert float(row["one_minus_spearman"]) == rec["one_minus_spearman"][1][2]
    assert float(row["best_of_8"]) == rec["best_of_n"]["8"][1][2]
    assert (out / "learning_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    stdout, err = done.stdout, done.stderr
    assert "round   2/2" in err and "(mean of 2 seeds)" in err
    assert sorted(p.name for p in out.iterdir()) == ["learning_curves.png", "metrics.csv", "metrics.json"]
    # the final summary once, on stdout (it was on stderr too)
    assert stdout.count("after 30 annotations") == 1 and "after 30 annotations" not in err
    assert [line.split()[0] for line in stdout.splitlines()[2:]] == ["dopt", "pa_dopt"]
    assert "warning" not in err


def test_run_reads_the_papers_files(tmp_path, capsys):
    """The paper's four files; the training rewards here are constant, which `run` warns of
    (one line on stderr) since every simulated label is then a coin flip."""
    ds = data.llm_like(__import__("jax").random.PRNGKey(1), n_train_prompts=30, n_responses=4, n_test_prompts=5,
                       n_test_responses=8, dim=8)
    paths = {}
    for name, arr in zip(["embd_train", "reward_train", "embd_test", "reward_test"], ds):
        arr = np.asarray(arr)
        if name == "reward_train":
            arr = np.full_like(arr, 0.5)
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
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("arm-jax: warning: the training rewards are constant"), err


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
        "random", "entropy", "maxdiff", "xtx", "dopt", "pa_dopt", "coreset", "batchbald", "greedy_dopt",
        "iopt", "greedy_iopt", "fw_iopt", "delta_ucb", "infomax", "bald", "uncertain_iopt", "eubo", "dts", "drts", "maxmin_lcb",
    ]
    # every rule beyond the paper's eight says so, with a one-line definition
    assert all("[beyond the paper]" in line for line in lines[8:]) and len(lines) == len(set(lines))


def test_figure1_draws_a_png(tmp_path):
    out = tmp_path / "fig.png"
    assert main(["figure1", "--strategies", "maxdiff", "--rounds", "1", "--k", "20", "--steps", "10",
                 "--out", str(out)]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("preset", ["default", "paper"])  # demo: run end to end above
def test_every_preset_traces_for_every_strategy(preset):
    """The presets CI never runs (paper: 11 GB of data) still trace, with the shapes they
    would have, from abstract data: nothing is generated or compiled. Each with the strategies
    it runs: every rule (default), the paper's eight (paper)."""
    import jax

    from arm_jax.cli.experiment import abstract_data, build_config, parse_strategies, resolve_presets
    from arm_jax.cli.main import build_parser
    from arm_jax.experiment.program import make_study
    from arm_jax.selection.registry import STRATEGIES

    args = resolve_presets(build_parser().parse_args(["run", "--preset", preset, "--quiet"]))  # the one program
    data_shapes = abstract_data(args)
    keys = jax.ShapeDtypeStruct((args.seeds, 2), np.uint32)
    # one program with the preset's strategies, as `arm-jax run --preset <preset>` builds it
    names = parse_strategies(args.strategies)
    assert len(names) == {"default": len(STRATEGIES), "paper": 8}[preset]
    configs = [build_config(args, name) for name in names]
    lowered = make_study(configs, data_shapes, devices=jax.devices()[:1]).lower_seeds(keys)
    out = lowered.out_info.metrics.one_minus_spearman
    assert out.shape == (args.seeds, len(names), args.rounds + 1), (preset, out.shape)


# ----------------------------------------------------------------------------- output, help, messages


@pytest.mark.parametrize("what", ["an existing file", "an input file", "below a file"])
def test_run_out_problems_stop_before_any_work(tmp_path, capsys, monkeypatch, what):
    """Item 13: `run --out <existing file>` is one line, exit 2, before the experiment (it
    was a FileExistsError traceback after it)."""
    from arm_jax.cli import experiment as cli_experiment

    (tmp_path / "results").write_text("not a directory")
    np.save(tmp_path / "embd.npy", np.zeros((2, 2, 2), np.float32))
    out = {"an existing file": tmp_path / "results", "an input file": tmp_path / "embd.npy",
           "below a file": tmp_path / "results" / "run"}[what]

    def no_work(*args, **kwargs):
        raise AssertionError("work started before the output directory was checked")

    monkeypatch.setattr(cli_experiment, "load_dataset", no_work)
    extra = []
    if what == "an input file":
        extra = ["--train-embeddings", str(out), "--train-rewards", "r.npy", "--test-embeddings", "t.npy",
                 "--test-rewards", "tr.npy"]
    assert main(["run", *TINY, "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"arm-jax: error: {out if what != 'below a file' else out}")
    assert "not a directory" in err


def _help_entries(text: str) -> dict:
    """--flag -> its help text (one line), from argparse's --help output."""
    entries, flag = {}, None
    for line in text.splitlines():
        if line.startswith("  -"):
            flag = line.split()[0]
            entries[flag] = line
        elif flag and line.startswith("    "):
            entries[flag] += " " + line.strip()
        else:
            flag = None
    return {f: " ".join(t.split()) for f, t in entries.items()}


def test_run_help_shows_what_the_presets_give(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    raw = capsys.readouterr().out
    entries = _help_entries(raw)
    for flag, shown in [("--seeds", "(default: 5; --preset demo: 3, paper: 5)"),
                        ("--rounds", "(default: 20; --preset demo: 6, paper: 20)"),
                        ("--k", "(default: 500; --preset demo: 100, paper: 500)"),
                        ("--candidates", "(default: 20000; --preset demo: 2000, paper: 20000)"),
                        ("--initial-labels", "(default: 500; --preset demo: 100, paper: 500)"),
                        ("--task", "(default: llm-like, in every --preset)")]:
        assert shown in entries[flag], (flag, entries[flag])
    pairs = entries["--pairs"]
    assert "two responses to different prompts" in pairs and "the paper's main protocol" in pairs
    assert "defaults to cross-prompt instead" in pairs and "--allow-relabel" in entries


def test_preset_help_matches_what_the_preset_resolves_to():
    from arm_jax.cli.experiment import resolve_presets
    from arm_jax.cli.main import build_parser

    args = resolve_presets(build_parser().parse_args(["run"]))
    assert (args.seeds, args.rounds, args.k, args.candidates, args.initial_labels, args.task) == (
        5, 20, 500, 20000, 500, "llm-like")


def test_allow_relabel_reaches_the_experiment_config():
    from arm_jax.cli.experiment import build_config, resolve_presets
    from arm_jax.cli.main import build_parser

    args = resolve_presets(build_parser().parse_args(["run", "--allow-relabel"]))
    assert build_config(args, "dopt").allow_relabel is True
    assert build_config(resolve_presets(build_parser().parse_args(["run"])), "dopt").allow_relabel is False


def test_a_value_error_from_a_bug_is_not_reported_as_bad_input(tmp_path, monkeypatch):
    from arm_jax.cli import experiment as cli_experiment

    def broken(*args, **kwargs):
        raise ValueError("a bug deep inside")

    monkeypatch.setattr(cli_experiment, "load_dataset", broken)
    with pytest.raises(ValueError, match="a bug deep inside"):
        main(["run", *TINY, "--out", str(tmp_path / "o")])


# ----------------------------------------------------------------------------- progress averaging


def test_seed_averager_counts_each_seed_once_whatever_the_order(capsys):
    """Item 7: 3 seeds padded to 4 devices report 4 times per round, the padding seed with the
    last seed's key and numbers; the mean is over the 3 real seeds."""
    from arm_jax.cli.experiment import SeedAverager
    from arm_jax.experiment.round import RoundReport

    avg = SeedAverager(n_seeds=3, rounds=1)
    seeds = [(0, 1), (0, 2), (0, 3)]
    values = [0.1, 0.2, 0.6]
    order = [2, 2, 0, 1]  # the padding copy of seed 2 arrives before seeds 0 and 1
    for i in order:
        avg(RoundReport("dopt", 1, 20, values[i], 10 * values[i], seeds[i]))
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert "1-spearman 0.3000" in lines[0] and "best-of-N +3.0000" in lines[0] and "(mean of 3 seeds)" in lines[0]


@pytest.mark.multidevice
def test_progress_means_equal_metrics_with_padded_seeds(tmp_path, capsys):
    """Item 7 end to end: 2 seeds on 4 devices (padded with 2 copies of seed 1): one line per
    strategy and round, with the metrics.json means."""
    import jax

    assert len(jax.devices()) == 4
    out = tmp_path / "res"
    assert TINY[TINY.index("--seeds") + 1] == "2"
    assert main(["run", *TINY, "--strategies", "random,dopt", "--no-plot", "--out", str(out)]) == 0
    payload = json.loads((out / "metrics.json").read_text())
    lines = [l for l in capsys.readouterr().err.splitlines() if "(mean of" in l]
    assert len(lines) == 2 * 3, lines
    n = str(payload["config"]["best_of_n"][-1])
    for line in lines:
        name, _, round_ = line.split()[:3]
        r = int(round_.split("/")[0])
        rec = payload["results"][name]
        oms = float(line.split("1-spearman ")[1].split()[0])
        bon = float(line.split("best-of-N ")[1].split()[0])
        assert "(mean of 2 seeds)" in line
        assert oms == pytest.approx(np.mean([s[r] for s in rec["one_minus_spearman"]]), abs=1e-4)
        assert bon == pytest.approx(np.mean([s[r] for s in rec["best_of_n"][n]]), abs=1e-4)


# ----------------------------------------------------------------------------- library hygiene


def test_config_dict_is_dataclasses_asdict_made_json_safe():
    import dataclasses

    from arm_jax.experiment.results import config_dict

    @dataclasses.dataclass(frozen=True)
    class Inner:
        cap: float = float("inf")
        low: float = float("-inf")

    @dataclasses.dataclass(frozen=True)
    class Outer:
        sizes: tuple = (1, 2)
        inner: Inner = Inner()

    assert config_dict(Outer()) == {"sizes": [1, 2], "inner": {"cap": "inf", "low": "-inf"}}
    json.dumps(config_dict(Outer()), allow_nan=False)


def test_version_comes_from_the_installed_metadata():
    from importlib import metadata

    import arm_jax

    assert arm_jax.__version__ == metadata.version("arm-jax")


def test_model_flags_come_from_the_config_dataclasses():
    import argparse

    from arm_jax.cli.flags import add_model_flags, model_and_train_configs
    from arm_jax.model.config import TrainConfig
    from arm_jax.model.network import ModelConfig

    parser = argparse.ArgumentParser()
    add_model_flags(parser)
    assert model_and_train_configs(parser.parse_args([])) == (ModelConfig(), TrainConfig())
    model, train = model_and_train_configs(parser.parse_args(["--width", "16", "--lr", "0.5", "--max-epochs", "3"]))
    assert model.width == 16 and train.learning_rate == 0.5 and train.max_epochs == 3.0


def _rated_files(tmp_path, max_raters=5):
    """The paper's four files plus ratings_train.npy: each item rated by 1..max_raters raters on a
    -4..4 scale around a hidden score (NaN-padded), the reward being the mean rating."""
    rng = np.random.default_rng(0)
    p, r, d = 30, 4, 8
    paths = {}
    ratings = np.full((p, r, max_raters), np.nan, np.float32)
    score = rng.normal(size=(p, r)) * 2
    for i in range(p):
        for j in range(r):
            n = rng.integers(1, max_raters + 1)
            ratings[i, j, :n] = np.clip(np.round(score[i, j] + rng.normal(size=n)), -4, 4)
    arrays = {
        "embd_train": rng.normal(size=(p, r, d)).astype(np.float32) + score[..., None] * 0.3,
        "reward_train": np.nanmean(ratings, axis=-1)[..., None],
        "embd_test": rng.normal(size=(5, 8, d)).astype(np.float32),
        "reward_test": rng.normal(size=(5, 8, 1)).astype(np.float32),
        "ratings_train": ratings,
    }
    for name, arr in arrays.items():
        np.save(tmp_path / f"{name}.npy", arr)
        paths[name] = str(tmp_path / f"{name}.npy")
    return paths


def test_run_with_the_empirical_annotator_trains_on_ties(tmp_path, capsys):
    """--annotator empirical labels from the recorded ratings: equal ratings are ties, so the
    labelled buffer holds tie votes (the draws' seeding: tests/experiment/test_annotator.py)."""
    paths = _rated_files(tmp_path)
    files = ["--train-embeddings", paths["embd_train"], "--train-rewards", paths["reward_train"],
             "--test-embeddings", paths["embd_test"], "--test-rewards", paths["reward_test"],
             "--train-ratings", paths["ratings_train"]]
    out = tmp_path / "emp"
    code = main(["run", *TINY, "--strategies", "random,dopt", "--no-plot", "--quiet", "--out", str(out),
                 "--annotator", "empirical", "--raters-per-pair", "3", *files])
    assert code == 0, capsys.readouterr().err
    outs = [json.loads((out / "metrics.json").read_text())]
    assert outs[0]["config"]["annotator"] == "empirical"
    ties = np.asarray(outs[0]["results"]["random"]["tie_strength"])
    assert ties.shape == (2, 3) and (ties > 0).all()  # equal ratings arrived as ties and were fitted


@pytest.mark.parametrize("change, message", [
    ({"ratings": None}, "the empirical annotator needs the training items' ratings"),
    ({"shape": (30, 3, 5)}, "expected shape (prompts, responses, raters) = (30, 4, M)"),
    ({"unrated": True}, "1 training item(s) have no recorded rating"),
])
def test_empirical_annotator_refuses_bad_ratings(tmp_path, capsys, change, message):
    paths = _rated_files(tmp_path)
    ratings = np.load(paths["ratings_train"])
    if "shape" in change:
        np.save(paths["ratings_train"], ratings[:, :3])
    if change.get("unrated"):
        ratings[2, 1] = np.nan
        np.save(paths["ratings_train"], ratings)
    files = ["--train-embeddings", paths["embd_train"], "--train-rewards", paths["reward_train"],
             "--test-embeddings", paths["embd_test"], "--test-rewards", paths["reward_test"]]
    if change.get("ratings", True) is not None:
        files += ["--train-ratings", paths["ratings_train"]]
    code = main(["run", *TINY, "--strategies", "random", "--no-plot", "--quiet", "--out", str(tmp_path / "o"),
                 "--annotator", "empirical", *files])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("argv, depth", [
    ([], 3),                                              # built-in task: the paper's MLP
    (["--train-embeddings", "e.npy"], 0),                 # the user's data: the default policy's model
    (["--train-embeddings", "e.npy", "--preset", "paper"], 3),
    (["--train-embeddings", "e.npy", "--depth", "2"], 2),
])
def test_run_depth_default_is_the_default_policys_model_on_own_data(argv, depth):
    from arm_jax.cli.experiment import build_config, resolve_presets
    from arm_jax.cli.main import build_parser

    args = resolve_presets(build_parser().parse_args(["run", *argv]))
    assert build_config(args, "random").model.depth == depth


def test_target_pairs_for_rules_that_do_not_read_them_is_refused(tmp_path, capsys):
    code = main(["run", *TINY, "--strategies", "random,dopt", "--target-pairs", "in-prompt", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and "--target-pairs is read by the I-optimal rules" in err and "none of random, dopt" in err
    assert not (tmp_path / "r").exists()
