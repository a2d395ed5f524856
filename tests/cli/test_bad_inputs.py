"""Bad inputs a new user meets, as one table: each case asserts the exit status, the first line
of the message, and that no file in the working directory changed (checksums before and after).
Each case failed (silently or unclearly) on main 4ffe21e (issue 24)."""
from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import sys

import numpy as np
import pytest

from arm_jax.cli.main import main

N = 20


@pytest.fixture
def folder(tmp_path, monkeypatch):
    """A working directory with a pool (costs 1.015 each, no texts), an all-identical pool, a
    Label Studio tasks file with no annotations, and one decided label line."""
    rng = np.random.default_rng(0)
    ids = np.array([f"i{i}" for i in range(N)])
    np.savez(tmp_path / "pool.npz", embeddings=rng.normal(size=(N, 4)).astype(np.float32), item_ids=ids,
             costs=np.full(N, 1.015))
    np.savez(tmp_path / "same.npz", embeddings=np.ones((N, 4), np.float32), item_ids=ids)
    np.savez(tmp_path / "negcost.npz", embeddings=rng.normal(size=(N, 4)).astype(np.float32), item_ids=ids,
             costs=np.r_[np.ones(N - 1), -1.0])
    tasks = [{"data": {"a": "i0", "b": "i1", "text_a": "i0", "text_b": "i1"}},
             {"data": {"a": "i2", "b": "i3", "text_a": "i2", "text_b": "i3"}}]
    (tmp_path / "next.json").write_text(json.dumps(tasks, indent=1))
    (tmp_path / "wrapped.json").write_text(json.dumps({"tasks": tasks}))
    (tmp_path / "object.json").write_text('{"tasks": 5}\n')
    (tmp_path / "labels.jsonl").write_text('{"winner": "i0", "loser": "i1"}\n')
    (tmp_path / "huge.jsonl").write_text('{"a": "i0", "b": "i1", "votes_a": 1e39, "votes_b": 1}\n')
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _checksums(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


S = ["select", "--k", "3", "--out", "next.jsonl"]
CASES = {
    "identical embeddings (select)": (
        [*S, "--pool", "same.npz"], "same.npz: all 20 embeddings are identical"),
    "identical embeddings (train)": (
        ["train", "--pool", "same.npz", "--labels", "labels.jsonl", "--out", "m.msgpack"],
        "same.npz: all 20 embeddings are identical"),
    "the tasks file as labels": (
        [*S, "--pool", "pool.npz", "--labels", "next.json"],
        "next.json: 2 Label Studio tasks, none annotated — is this the tasks file select wrote rather than the export?"),
    "the tasks file, wrapped in an object": (
        [*S, "--pool", "pool.npz", "--labels", "wrapped.json"], "wrapped.json: 2 Label Studio tasks, none annotated"),
    "a label line with a 'tasks' field is a label line": (
        [*S, "--pool", "pool.npz", "--labels", "object.json"], "object.json:1: missing field 'winner'"),
    "the tasks file given to train": (
        ["train", "--pool", "pool.npz", "--labels", "next.json", "--out", "m.msgpack"],
        "next.json: 2 Label Studio tasks, none annotated — is this the tasks file select wrote rather than the "
        "export?"),
    "budget below the cheapest pair, before training": (
        [*S, "--pool", "pool.npz", "--labels", "labels.jsonl", "--budget", "0.5"],
        "--budget 0.5: no candidate pair fits (the cheapest costs 2.03)"),
    "an --out that cannot be created, before training": (
        ["select", "--k", "3", "--pool", "pool.npz", "--labels", "labels.jsonl", "--out", "/proc/arm-jax/next.jsonl"],
        "/proc/arm-jax/next.jsonl: cannot write there (--out): "),
    "an impossible process id without a coordinator": (
        [*S, "--pool", "pool.npz", "--num-processes", "2", "--process-id", "5"],
        "--process-id must be in 0 .. 1, got 5"),
    "a negative cost": (
        [*S, "--pool", "negcost.npz"], "negcost.npz: costs must be finite and > 0; row 19 has -1.0"),
    "votes beyond float32": (
        [*S, "--pool", "pool.npz", "--labels", "huge.jsonl"], "huge.jsonl:1: votes_a 1e+39 does not fit float32"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_exit_2_and_changes_nothing(folder, capsys, case):
    argv, first_line = CASES[case]
    before = _checksums(folder)
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2, (case, err)
    lines = err.splitlines()
    assert lines[-1].startswith("arm-jax: error: " + first_line), (case, err)
    assert "training" not in err and "Traceback" not in err and out == ""
    assert ("--allow-unannotated" in err) == (case == "the tasks file as labels" or "wrapped" in case)
    assert _checksums(folder) == before


def test_an_unannotated_export_starts_cold_only_when_allowed(folder, capsys):
    assert main([*S, "--pool", "pool.npz", "--labels", "wrapped.json", "--allow-unannotated"]) == 0
    err = capsys.readouterr().err
    assert "cold start" in err and len((folder / "next.jsonl").read_text().splitlines()) == 3


def test_a_wrapped_export_with_annotations_is_read(folder, capsys):
    task = {"data": {"a": "i0", "b": "i1"}, "annotations": [
        {"completed_by": 7, "result": [{"from_name": "preference", "value": {"choices": ["B"]}}]}]}
    (folder / "export.json").write_text(json.dumps({"tasks": [task]}, indent=2))
    assert main(["train", "--pool", "pool.npz", "--labels", "export.json", "--out", "m.msgpack", "--depth", "0"]) == 0
    assert "train: 20 items, 1 labels" in capsys.readouterr().err


def test_label_studio_tasks_of_a_pool_without_texts_show_the_ids(folder, capsys):
    assert main([*S[:3], "--pool", "pool.npz", "--out", "t.json", "--format", "label-studio"]) == 0
    err = capsys.readouterr().err
    assert "pool.npz has no texts" in err
    task = json.loads((folder / "t.json").read_text())[0]["data"]
    assert task["text_a"] == task["a"] and task["text_b"] == task["b"]


def test_tie_votes_and_unnamed_raters_are_logged(folder, capsys):
    lines = [{"a": f"i{i}", "b": f"i{i + 1}", "votes_tie": 1} for i in range(0, 10, 2)]
    lines += [{"winner": f"i{i}", "loser": f"i{i + 1}", "annotator": "ann" if i % 4 else "bob"} for i in range(10, 19)]
    (folder / "mixed.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert main(["train", "--pool", "pool.npz", "--labels", "mixed.jsonl", "--out", "m.msgpack", "--depth", "1",
                 "--width", "4", "--schedule", "fixed", "--steps", "20"]) == 0
    err = capsys.readouterr().err
    assert "ties: 5 tie votes, Davidson tie strength" in err
    assert "5 lines name no annotator: they count as the panel's typical rater (reliability 1)" in err


def test_too_few_labels_for_early_stopping_print_no_stopping_epoch(folder, capsys):
    assert main(["train", "--pool", "pool.npz", "--labels", "labels.jsonl", "--out", "m.msgpack",
                 "--depth", "1", "--width", "4", "--steps", "60"]) == 0
    out = capsys.readouterr().out
    assert "no stopping epoch: too few labels (1) for an early-stopping hold-out" in out
    assert "stopping epoch: " not in out.replace("no stopping epoch: ", "")


def test_a_missing_process_is_named_in_one_line_not_a_native_abort(folder):
    """Process 0 of 2, process 1 never started: a waiting line, then one error line, exit 2."""
    with socket.socket() as probe:  # a free port
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    where = f"127.0.0.1:{port}"
    argv = [sys.executable, "-m", "arm_jax.cli.main", *S, "--pool", "pool.npz", "--coordinator", where,
            "--num-processes", "2", "--process-id", "0", "--process-timeout", "2"]
    run = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=folder)
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2, run.stderr
    assert lines[0].startswith(f"arm-jax: process 0: waiting for the other 1 of 2 processes at {where}")
    assert lines[-1].startswith("arm-jax: error: process 0: process(es) 1 did not connect within 2 s")
    assert len(lines) == 2 and not (folder / "next.jsonl").exists()
