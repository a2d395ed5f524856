"""Real processes with ``jax.distributed`` (a coordinator on localhost, gloo collectives on the
CPU): ``select`` and ``run`` on two processes give what one process gives, only process 0
writes, and a process killed mid-way leaves no output on any."""
import json
import os
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest

from arm_jax.cli.main import main

# a tiny study through the command line (the linear model: it compiles fastest); 3 seeds: 2 on
# process 0, 1 on process 1 (the seed axis padded to 4 and the copy dropped)
TINY_RUN = [
    "run", "--preset", "demo", "--train-prompts", "30", "--responses", "4", "--test-prompts", "5",
    "--test-responses", "6", "--dim", "8", "--strategies", "random,entropy", "--rounds", "2", "--k", "8",
    "--initial-labels", "8", "--prompts-per-round", "6", "--candidates", "30", "--best-of-n", "6",
    "--depth", "0", "--schedule", "fixed", "--steps", "10", "--batch-size", "8", "--seeds", "3",
    "--no-plot", "--quiet",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env():
    # one CPU device per process, compiled with XLA's default emitters (conftest: the suite's
    # faster-compiling ones round by batch shape, and two processes split the seeds)
    return dict(os.environ, JAX_PLATFORMS="cpu", ARM_JAX_NO_COMPILE_CACHE="1", ARM_JAX_PROGRESS="0",
                XLA_FLAGS=os.environ["ARM_JAX_TEST_XLA_FLAG"])


def _one_process(args):
    """The reference: ``arm-jax args`` in one process, compiled as the processes of :func:`_start`."""
    done = subprocess.run([sys.executable, "-m", "arm_jax.cli.main", *args], capture_output=True, text=True,
                          env=_env(), timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]


def _start(args, n=2, timeout=60):
    port = _free_port()
    return [
        subprocess.Popen(
            [sys.executable, "-m", "arm_jax.cli.main", *args, "--coordinator", f"127.0.0.1:{port}",
             "--num-processes", str(n), "--process-id", str(i), "--process-timeout", str(timeout)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
        )
        for i in range(n)
    ]


def _finish(procs, timeout=240):
    out = []
    for p in procs:
        try:
            stdout, stderr = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail("a process of the multi-process run hung")
        out.append((p.returncode, stdout, stderr))
    return out


@pytest.fixture(scope="module")
def pool_and_labels(tmp_path_factory):
    d = tmp_path_factory.mktemp("pool")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 16)).astype(np.float32)
    np.savez(d / "pool.npz", embeddings=x, prompt_ids=np.repeat(np.arange(100), 4))
    r = x @ rng.normal(size=16)
    with open(d / "labels.jsonl", "w") as f:
        for _ in range(120):
            a, b = rng.choice(400, 2, replace=False)
            a, b = (a, b) if r[a] > r[b] else (b, a)
            f.write(json.dumps({"winner": str(a), "loser": str(b)}) + "\n")
    return d / "pool.npz", d / "labels.jsonl"


def _select_args(pool, labels, out, pairs="cross-prompt"):
    # 3001 candidates: the candidate axis is padded to 3002 and split 1501/1500 rows;
    # all-cross: the 400 items' 79 800 pairs, the pair grid's blocks split
    return ["select", "--pool", str(pool), "--labels", str(labels), "--strategy", "dopt", "--k", "20",
            "--pairs", pairs, "--candidates", "3001", "--schedule", "fixed", "--steps", "60", "--out", str(out)]


# The slowest checks (every process compiles with XLA's default emitters, three processes a
# test) are marked `processes`: `make test` leaves them to `make test-processes`, which runs
# them all. `make test` keeps select across prompts, a killed process, an error on process 0
# and the flags, so the multi-process path is checked on every change.
SLOW = pytest.mark.processes


@pytest.mark.parametrize("pairs", ["cross-prompt", pytest.param("all-cross", marks=SLOW)])
def test_select_on_two_processes_picks_what_one_process_picks(tmp_path, pool_and_labels, pairs):
    pool, labels = pool_and_labels
    _one_process(_select_args(pool, labels, tmp_path / "one.jsonl", pairs))
    done = _finish(_start(_select_args(pool, labels, tmp_path / "two.jsonl", pairs)))
    assert [code for code, _, _ in done] == [0, 0], done[0][2][-3000:] + done[1][2][-3000:]
    one = [json.loads(line) for line in open(tmp_path / "one.jsonl")]
    two = [json.loads(line) for line in open(tmp_path / "two.jsonl")]
    assert [(r["a"], r["b"]) for r in two] == [(r["a"], r["b"]) for r in one]
    assert [r["p_a_wins"] for r in two] == [r["p_a_wins"] for r in one]  # the same model on both
    # the scores: the same sums in another order (the information matrix all-reduced)
    np.testing.assert_allclose([r["score"] for r in two], [r["score"] for r in one], rtol=1e-5)
    # only process 0 speaks and writes
    assert "dopt picked 20" in done[0][2] and done[1][1] == "" and "picked" not in done[1][2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.jsonl", "two.jsonl"]


@SLOW
def test_run_on_two_processes_equals_one_process(tmp_path):
    _one_process([*TINY_RUN, "--out", str(tmp_path / "one")])
    done = _finish(_start([*TINY_RUN, "--out", str(tmp_path / "two")]))
    assert [code for code, _, _ in done] == [0, 0], done[0][2][-3000:] + done[1][2][-3000:]
    one = json.loads((tmp_path / "one" / "metrics.json").read_text())
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert (one["processes"], two["processes"]) == (1, 2)
    assert two["results"] == one["results"]  # every strategy, seed and round, as written
    assert (tmp_path / "two" / "metrics.csv").read_text() == (tmp_path / "one" / "metrics.csv").read_text()


def test_a_process_killed_mid_way_leaves_no_output(tmp_path, pool_and_labels):
    """Process 1 is killed while process 0 trains (before the collective selection step, so
    process 0 cannot have finished): process 0 stops with an error, and nothing is written."""
    pool, labels = pool_and_labels
    out = tmp_path / "next.jsonl"
    procs = _start(_select_args(pool, labels, out), timeout=20)
    lines = []
    for line in procs[0].stderr:  # process 0's progress
        lines.append(line)
        if "training the reward model" in line:
            break
    assert lines and "training the reward model" in lines[-1], "".join(lines)
    procs[1].send_signal(signal.SIGKILL)
    (code0, _, err0), (code1, _, _) = _finish(procs, timeout=120)
    assert code1 == -signal.SIGKILL
    assert code0 != 0 and "arm-jax: failed (another process may have stopped)" in err0, err0[-3000:]
    assert list(tmp_path.iterdir()) == []  # no output, no temporary file


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--num-processes", "2"], "several processes need --coordinator, --num-processes and --process-id "
                                   "(missing: --coordinator, --process-id), or --distributed"),
        (["--process-timeout", "5"], "several processes need --coordinator, --num-processes and --process-id"),
        (["--coordinator", "host0", "--num-processes", "2", "--process-id", "0"],
         "--coordinator must be HOST:PORT, got 'host0'"),
        (["--coordinator", "h:1", "--num-processes", "2", "--process-id", "2"], "--process-id must be in 0 .. 1, got 2"),
        (["--distributed", "--num-processes", "2"], "--distributed reads the coordinator, process count and id"),
        (["--distributed", "--process-timeout", "0"], "--process-timeout must be >= 1 second, got 0"),
    ],
)
def test_multi_process_flags_are_checked_before_anything_starts(tmp_path, capsys, flags, message):
    assert main(["select", "--pool", "nowhere.npz", "--strategy", "dopt", "--k", "3",
                 "--out", str(tmp_path / "x.jsonl"), *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"arm-jax: error: {message}") and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_distributed_outside_a_cluster_is_one_line(tmp_path):
    """A fresh process (JAX must not have started): no SLURM, Open MPI, TPU or Kubernetes."""
    env = {k: v for k, v in _env().items() if not k.startswith(("SLURM_", "OMPI_", "TPU_", "KUBERNETES_", "JAX_COORD"))}
    done = subprocess.run(
        [sys.executable, "-m", "arm_jax.cli.main", "select", "--pool", "nowhere.npz", "--strategy", "dopt", "--k", "3",
         "--out", str(tmp_path / "x.jsonl"), "--distributed"], capture_output=True, text=True, env=env, timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("arm-jax: error: --distributed: JAX could not read the run from the cluster")
    assert done.stderr.count("\n") == 1 and list(tmp_path.iterdir()) == []


def test_an_error_on_process_0_stops_every_process_with_one_line(tmp_path, pool_and_labels):
    """--out is a directory: process 0 checks it (the output is its to write), every process
    says why and exits 2, nobody waits for the others."""
    pool, labels = pool_and_labels
    (tmp_path / "out").mkdir()
    done = _finish(_start(_select_args(pool, labels, tmp_path / "out")))
    assert [code for code, _, _ in done] == [2, 2]
    last = done[0][2].splitlines()[-1]  # after the collectives library's own "[Gloo] ... connected" line
    assert last.startswith("arm-jax: error: ") and "is a directory" in last
    assert done[1][2].splitlines()[-1] == last.replace("arm-jax: ", "arm-jax: process 1: ")


@SLOW
def test_train_and_score_on_two_processes_write_what_one_process_writes(tmp_path, pool_and_labels):
    """train: both processes fit, process 0's model is written (byte for byte one process's);
    score: each process scores a block of the 400 items (200 each), process 0 writes them all."""
    pool, labels = pool_and_labels
    train = ["train", "--pool", str(pool), "--labels", str(labels), "--schedule", "fixed", "--steps", "60"]
    _one_process([*train, "--out", str(tmp_path / "one.msgpack")])
    done = _finish(_start([*train, "--out", str(tmp_path / "two.msgpack")]))
    assert [code for code, _, _ in done] == [0, 0], done[0][2][-3000:] + done[1][2][-3000:]
    assert (tmp_path / "two.msgpack").read_bytes() == (tmp_path / "one.msgpack").read_bytes()
    score = ["score", "--model", str(tmp_path / "one.msgpack"), "--pool", str(pool)]
    _one_process([*score, "--out", str(tmp_path / "one")])
    done = _finish(_start([*score, "--out", str(tmp_path / "two")]))
    assert [code for code, _, _ in done] == [0, 0], done[0][2][-3000:] + done[1][2][-3000:]
    assert (tmp_path / "two.csv").read_text() == (tmp_path / "one.csv").read_text()
    assert (tmp_path / "two.npy").read_bytes() == (tmp_path / "one.npy").read_bytes()
