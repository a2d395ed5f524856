"""End-to-end timing of ``arm-jax select`` on a paper-sized pool.

Generates, in a temporary directory, a pool of ``--items`` items (default 50 000 = 5 000
prompts x 10 responses) of dimension ``--dim`` (default 2048) as a ``.npy`` in the paper's
layout (so it is read memory-mapped, as a real pool would be), and ``--labels`` (default
10 000) cross-prompt comparisons labelled by a simulated annotator (a golden reward that is a
smooth nonlinear function of a low-dimensional latent, Bernoulli labels). Then it times:

1. ``arm-jax select ...`` as a fresh process (what a user waits for: Python and JAX start-up,
   loading, XLA compilation, training, scoring, writing), with the CLI's own phase breakdown;
2. the same selection in this process twice through :func:`arm_jax.workflow.select.select_pairs`:
   the first run compiles, the second shows the compiled (steady-state) cost.

Usage::

    python benchmarks/bench_select_cli.py                 # defaults: 50k x 2048, 10k labels, 1000 steps
    python benchmarks/bench_select_cli.py --items 5000 --dim 256 --labels 1000 --steps 200   # quick
    python benchmarks/bench_select_cli.py --json results/bench_select.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from arm_jax.selection.catalog import PAIR_MODES

PHASES = ("load", "train", "features", "select", "write")
TIME_LINE = re.compile(r"arm-jax: time ([0-9.]+) s \((.*)\)")


def make_data(directory: Path, n_items: int, dim: int, n_labels: int, responses: int, seed: int) -> dict:
    """Write pool.npy (prompts, responses, dim) float32 and labels.jsonl; return sizes/timing."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    prompts = n_items // responses
    n = prompts * responses
    latent_dim = 16
    shared = np.repeat(rng.normal(size=(prompts, latent_dim // 2)), responses, axis=0)
    own = rng.normal(size=(n, latent_dim // 2))
    z = np.concatenate([shared, own], axis=1).astype(np.float32)  # (n, 16)
    w1 = rng.normal(size=(latent_dim, 256)).astype(np.float32) / np.sqrt(latent_dim)
    w2 = rng.normal(size=(256, dim)).astype(np.float32) / np.sqrt(256)
    pool = np.lib.format.open_memmap(directory / "pool.npy", mode="w+", dtype=np.float32, shape=(prompts, responses, dim))
    flat = pool.reshape(n, dim)
    chunk = 8192
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        h = np.tanh(z[start:stop] @ w1) @ w2
        flat[start:stop] = h + 0.1 * rng.standard_normal(size=h.shape, dtype=np.float32)
    pool.flush()
    del pool, flat
    golden = np.sin(z[:, 0]) + 0.5 * z[:, 1] * z[:, 2] + z[:, 8] - 0.3 * z[:, 9] ** 2
    golden = golden / golden.std()
    # cross-prompt pairs, no pair twice
    a = rng.integers(0, n, size=3 * n_labels)
    b = rng.integers(0, n, size=3 * n_labels)
    keep = (a // responses) != (b // responses)
    a, b = a[keep], b[keep]
    key = np.minimum(a, b) * n + np.maximum(a, b)
    _, first = np.unique(key, return_index=True)
    first = np.sort(first)[:n_labels]
    a, b = a[first], b[first]
    a_wins = rng.random(a.size) < 1.0 / (1.0 + np.exp(-(golden[a] - golden[b]) * 3.0))
    winner, loser = np.where(a_wins, a, b), np.where(a_wins, b, a)

    def item_id(i):
        return f"{i // responses}:{i % responses}"

    with open(directory / "labels.jsonl", "w") as f:
        for w, l in zip(winner.tolist(), loser.tolist()):
            f.write(json.dumps({"winner": item_id(w), "loser": item_id(l)}) + "\n")
    return {"generate_s": time.perf_counter() - t0, "pool_bytes": os.path.getsize(directory / "pool.npy")}


def parse_time_line(stderr: str) -> dict:
    match = TIME_LINE.search(stderr)
    if not match:
        raise RuntimeError(f"no timing line in the CLI's stderr:\n{stderr}")
    phases = {"total": float(match.group(1))}
    for part in match.group(2).split(", "):
        name, value = part.rsplit(" ", 1)
        phases[name] = float(value)
    return phases


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--labels", type=int, default=10_000)
    parser.add_argument("--responses", type=int, default=10, help="responses per prompt (default 10)")
    parser.add_argument("--steps", type=int, default=1000, help="training steps (default 1000)")
    parser.add_argument("--k", type=int, default=500)
    parser.add_argument("--strategy", default="dopt")
    parser.add_argument("--pairs", default="cross-prompt", choices=PAIR_MODES)
    parser.add_argument("--candidates", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-in-process", action="store_true", help="only time the CLI process")
    parser.add_argument("--json", help="also write the numbers to this JSON file")
    args = parser.parse_args(argv)

    import jax

    info = {
        "device": f"{jax.devices()[0].platform} ({jax.devices()[0].device_kind})",
        "cpus": os.cpu_count(),
        "jax": jax.__version__,
        "python": platform.python_version(),
        "items": args.items,
        "dim": args.dim,
        "labels": args.labels,
        "steps": args.steps,
        "k": args.k,
        "strategy": args.strategy,
        "pairs": args.pairs,
        "candidates": args.candidates,
    }
    results = {"config": info, "runs": {}}
    with tempfile.TemporaryDirectory(prefix="arm-jax-bench-") as tmp:
        tmp = Path(tmp)
        results["data"] = make_data(tmp, args.items, args.dim, args.labels, args.responses, args.seed)
        print(f"generated pool {results['data']['pool_bytes'] / 2**20:.0f} MiB and {args.labels} labels "
              f"in {results['data']['generate_s']:.1f} s", file=sys.stderr)
        flags = ["--strategy", args.strategy, "--k", str(args.k), "--pairs", args.pairs,
                 "--candidates", str(args.candidates), "--steps", str(args.steps), "--seed", str(args.seed)]
        cmd = [sys.executable, "-m", "arm_jax", "select", "--pool", str(tmp / "pool.npy"),
               "--labels", str(tmp / "labels.jsonl"), "--out", str(tmp / "next.jsonl"), *flags]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            print(proc.stderr, file=sys.stderr)
            return proc.returncode
        phases = parse_time_line(proc.stderr)
        phases["process"] = wall
        results["runs"]["cli process"] = phases
        print(proc.stderr.strip(), file=sys.stderr)

        if not args.no_in_process:
            from arm_jax.model.config import TrainConfig
            from arm_jax.model.network import ModelConfig
            from arm_jax.workflow import select as realdata

            for name in ("in-process, 1st (compiles)", "in-process, 2nd (compiled)"):
                result = realdata.select_pairs(
                    tmp / "pool.npy", tmp / "labels.jsonl", tmp / "next2.jsonl", args.strategy, args.k,
                    pairs=args.pairs, n_candidates=args.candidates, seed=args.seed,
                    model_config=ModelConfig(), train_config=TrainConfig(steps=args.steps),
                )
                results["runs"][name] = dict(result.timings)
            same = (tmp / "next.jsonl").read_bytes() == (tmp / "next2.jsonl").read_bytes()
            results["in_process_output_identical_to_cli"] = same

    cols = [*PHASES, "total", "process"]
    print(f"\n`arm-jax select` on {args.items} items x D={args.dim}, {args.labels} labels, "
          f"{args.steps} steps, {args.strategy} {args.pairs}, {args.candidates} candidates, k={args.k}; "
          f"{info['device']}, {info['cpus']} CPUs, jax {info['jax']}\n")
    print("| run | " + " | ".join(f"{c} (s)" for c in cols) + " |")
    print("|---|" + "---:|" * len(cols))
    for name, row in results["runs"].items():
        print(f"| {name} | " + " | ".join(f"{row[c]:.2f}" if c in row else "–" for c in cols) + " |")
    if "in_process_output_identical_to_cli" in results:
        print(f"\nin-process output byte-identical to the CLI's: {results['in_process_output_identical_to_cli']}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
