"""``arm-jax select`` on one process and on several (``jax.distributed``): wall time and peak
memory per process on a memory-mapped pool far larger than the features.

Writes (once; reused when present) a pool ``pool.npy`` of ``--items`` × ``--dim`` float16
(default 1 000 000 × 512: 1 GiB on disk), written chunk by chunk through a memory map, and
``labels.jsonl``: ``--labels`` random pairs labelled by a hidden linear reward. Then for each
process count P in ``--processes`` it starts P ``arm-jax select --strategy dopt --k K`` processes
on this machine (a coordinator on 127.0.0.1, gloo collectives on the CPU), waits for all, and
reports the wall time from start to the last exit, each process's peak resident memory
(``wait4``'s ``ru_maxrss``), process 0's phase times, and whether the picks equal P = 1's.

What should hold: a process's peak memory does not grow with the pool beyond its block of
candidate rows and their features (a pool scan keeps one chunk resident: the map's pages are
released, ``arm_jax.runtime.arrays.release_pages``), so a pool 4x larger at the same ``--candidates`` costs
about the same memory; and at P = 2 each process holds half the candidate rows.

Usage::

    python benchmarks/bench_multiprocess.py                                  # 1M x 512, P = 1, 2
    python benchmarks/bench_multiprocess.py --items 250000 --processes 1     # the same at 1/4 of the pool
    python benchmarks/bench_multiprocess.py --json results/bench_multiprocess.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def write_pool(directory: Path, items: int, dim: int, labels: int, seed: int) -> float:
    """pool.npy (items, dim) float16 and labels.jsonl; returns seconds (0 when reused)."""
    pool = directory / f"pool_{items}x{dim}.npy"
    labels_path = directory / f"labels_{items}x{dim}_{labels}.jsonl"
    if pool.exists() and labels_path.exists():
        return 0.0
    t = time.perf_counter()
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    w = rng.normal(size=dim).astype(np.float32) / np.sqrt(dim)
    tmp = pool.with_suffix(".tmp.npy")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(items, dim))
    chunk = 50_000
    for start in range(0, items, chunk):
        stop = min(start + chunk, items)
        out[start:stop] = rng.standard_normal((stop - start, dim), dtype=np.float32).astype(np.float16)
    out.flush()
    del out
    os.replace(tmp, pool)
    x = np.load(pool, mmap_mode="r")
    pairs = rng.integers(0, items, size=(labels, 2))
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    with open(labels_path, "w") as f:
        for a, b in pairs.tolist():
            ra, rb = float(x[a].astype(np.float32) @ w), float(x[b].astype(np.float32) @ w)
            winner, loser = (a, b) if ra > rb else (b, a)
            f.write(json.dumps({"winner": str(winner), "loser": str(loser)}) + "\n")
    return time.perf_counter() - t


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_select(n_proc: int, pool: Path, labels: Path, out: Path, args) -> dict:
    """Start n_proc select processes; wall time, per-process peak RSS, process 0's stderr."""
    cmd = [sys.executable, "-m", "arm_jax.cli.main", "select", "--pool", str(pool), "--labels", str(labels),
           "--strategy", args.strategy, "--k", str(args.k), "--candidates", str(args.candidates),
           "--schedule", "fixed", "--steps", str(args.steps), "--out", str(out)]
    if out.exists():
        out.unlink()
    env = dict(os.environ, ARM_JAX_PROGRESS="0", ARM_JAX_NO_COMPILE_CACHE="1")  # every run compiles
    env.pop("XLA_FLAGS", None)
    port = _free_port()
    t0 = time.perf_counter()
    procs = []
    for i in range(n_proc):
        extra = [] if n_proc == 1 else ["--coordinator", f"127.0.0.1:{port}", "--num-processes", str(n_proc),
                                         "--process-id", str(i)]
        procs.append(subprocess.Popen(cmd + extra, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                      env=env))
    rss, codes, stderr = [], [], []
    for p in procs:
        err = p.stderr.read()
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        rss.append(usage.ru_maxrss / 1024)  # KiB -> MiB
        codes.append(p.returncode)
        stderr.append(err)
    wall = time.perf_counter() - t0
    if any(codes):
        raise SystemExit(f"select failed on {n_proc} process(es): exit codes {codes}\n{stderr[0][-3000:]}")
    phases = re.search(r"time ([\d.]+) s \((.*)\)", stderr[0])
    return {"processes": n_proc, "wall_s": round(wall, 2), "peak_rss_mib": [round(r, 1) for r in rss],
            "phases": phases.group(2) if phases else None,
            "picks": [(r["a"], r["b"]) for r in map(json.loads, out.read_text().splitlines())]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--labels", type=int, default=2_000, help="labelled pairs (default 2000)")
    parser.add_argument("--candidates", type=int, default=1_000_000, help="candidate pairs (default 1 000 000)")
    parser.add_argument("--k", type=int, default=1000)
    parser.add_argument("--strategy", default="dopt")
    parser.add_argument("--steps", type=int, default=300, help="training steps (fixed schedule; default 300)")
    parser.add_argument("--processes", default="1,2", help="process counts to run (default 1,2)")
    parser.add_argument("--data-dir", type=Path, default=Path("data/bench_multiprocess"),
                        help="where the pool is written and kept (default data/bench_multiprocess)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the numbers to this JSON file")
    args = parser.parse_args()

    made = write_pool(args.data_dir, args.items, args.dim, args.labels, args.seed)
    pool = args.data_dir / f"pool_{args.items}x{args.dim}.npy"
    labels = args.data_dir / f"labels_{args.items}x{args.dim}_{args.labels}.jsonl"
    size_gib = pool.stat().st_size / 2**30
    print(f"pool {pool}: {args.items} x {args.dim} float16, {size_gib:.2f} GiB on disk"
          + (f" (written in {made:.1f} s)" if made else " (reused)"))
    print(f"select --strategy {args.strategy} --k {args.k} --candidates {args.candidates}, {args.labels} labels, "
          f"{args.steps} training steps; {os.cpu_count()} CPU cores, {platform.platform()}")
    print(f"{'processes':>9} {'wall s':>8} {'peak RSS per process (MiB)':>28}  same picks as P=1  process 0's phases")
    rows, reference = [], None
    for n_proc in [int(p) for p in args.processes.split(",")]:
        r = run_select(n_proc, pool, labels, args.data_dir / f"next_{n_proc}.jsonl", args)
        reference = reference or r["picks"]
        r["same_picks_as_first"] = r["picks"] == reference
        print(f"{n_proc:>9} {r['wall_s']:>8.1f} {', '.join(f'{m:.0f}' for m in r['peak_rss_mib']):>28}  "
              f"{str(r['same_picks_as_first']):>17}  {r['phases']}")
        rows.append({k: v for k, v in r.items() if k != "picks"})
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({
            "items": args.items, "dim": args.dim, "pool_gib": round(size_gib, 3), "labels": args.labels,
            "candidates": args.candidates, "k": args.k, "strategy": args.strategy, "steps": args.steps,
            "cpu_count": os.cpu_count(), "platform": platform.platform(), "runs": rows,
        }, indent=1) + "\n")


if __name__ == "__main__":
    main()
