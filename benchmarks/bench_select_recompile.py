"""Does a repeated ``select`` with more labels compile anything? Counted, in one process and across two.

The active-learning loop runs ``select`` once per round with ~100 more labels each time. The
fit pads the labelled rows to size buckets (:func:`arm_jax.workflow.fitting.bucket`: powers
of two up to 8192, then multiples of 8192) and so do the selection kernels' labelled rows, so
two rounds whose label counts share a bucket should run the programs of the first round
again, compiling none. This script measures that, on a generated ``--items`` x ``--dim`` pool
(default 5000 x 64) with ``--labels`` N labels, then N + ``--more`` (default 100), k = ``--k``:

1. in one process (a fresh one per strategy): :func:`arm_jax.workflow.select.select_pairs`
   twice; every XLA compilation is counted by a :mod:`jax.monitoring` listener on JAX's
   backend-compile event (one per program built, jitted functions and eagerly run primitives
   alike). Target for the second call: 0.
2. through the CLI, two processes sharing a fresh persistent compilation cache
   (:mod:`arm_jax.runtime.compile_cache`): ``arm-jax select`` with N labels, then with N + more.
   ``JAX_LOG_COMPILES=1`` makes JAX log every program it builds ("Finished XLA compilation",
   compiled or loaded from the cache) and ``JAX_EXPLAIN_CACHE_MISSES=1`` every persistent-cache
   miss ("PERSISTENT COMPILATION CACHE MISS", compiled from scratch); the script counts both
   in each process's stderr. Target for the second process: 0 misses.

N and N + more share a bucket unless a power of two lies between them: 1000 -> 1024 and
1100 -> 2048 do not (the fit and the selection then compile once more, by design), 1100 and
1200 (both 2048) do. The table says which buckets the two calls used.

Usage::

    python benchmarks/bench_select_recompile.py                       # 5000 x 64, 1100 then 1200 labels
    python benchmarks/bench_select_recompile.py --labels 1000         # crosses the 1024 bucket
    python benchmarks/bench_select_recompile.py --strategies dopt,pa_dopt,greedy_dopt --json out.json
    python benchmarks/bench_select_recompile.py --no-cli              # in-process only
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
COMPILED_LINE = re.compile(r"Finished XLA compilation of (.*) in [0-9.e-]+ sec")
MISS_LINE = re.compile(r"PERSISTENT COMPILATION CACHE MISS for '([^']*)'")


def make_data(directory: Path, n_items: int, dim: int, n_labels: int, more: int, seed: int) -> dict:
    """Write pool.npy (n_items, dim) and two label files: the first ``n_labels`` comparisons
    and the same plus ``more`` (a simulated annotator: Bernoulli on a golden linear reward).
    Returns their paths."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_items, dim)).astype(np.float32)
    np.save(directory / "pool.npy", x)
    golden = x @ rng.normal(size=dim) / np.sqrt(dim)
    total = n_labels + more
    a = rng.integers(0, n_items, 3 * total)
    b = rng.integers(0, n_items, 3 * total)
    a, b = a[a != b], b[a != b]
    key = np.minimum(a, b) * n_items + np.maximum(a, b)
    first = np.sort(np.unique(key, return_index=True)[1])[:total]
    a, b = a[first], b[first]
    a_wins = rng.random(total) < 1.0 / (1.0 + np.exp(-3.0 * (golden[a] - golden[b])))
    lines = [json.dumps({"winner": int(w), "loser": int(l)}) + "\n"
             for w, l in zip(np.where(a_wins, a, b), np.where(a_wins, b, a))]
    paths = {"pool": directory / "pool.npy", "first": directory / "labels_1.jsonl", "second": directory / "labels_2.jsonl"}
    paths["first"].write_text("".join(lines[:n_labels]))
    paths["second"].write_text("".join(lines))
    return paths


class CompileCounter:
    """Names of the XLA programs built while it is active (a :mod:`jax.monitoring` listener)."""

    def __init__(self):
        from jax._src import monitoring

        self.names: list[str] = []
        self.active = False
        monitoring.register_event_duration_secs_listener(self._on_event)

    def _on_event(self, event: str, duration: float, **kwargs) -> None:
        if self.active and event == BACKEND_COMPILE_EVENT:
            self.names.append(str(kwargs.get("fun_name", "?")))

    def run(self, fn, *args, **kwargs) -> list[str]:
        """The programs ``fn(*args, **kwargs)`` compiled."""
        self.names, self.active = [], True
        try:
            fn(*args, **kwargs)
        finally:
            self.active = False
        return self.names


def in_process(args, paths: dict, strategy: str, out_dir: Path) -> dict:
    """``select_pairs`` with the first labels, then with the second, in this process: the
    programs each call compiled."""
    from arm_jax.model.config import TrainConfig
    from arm_jax.workflow.select import select_pairs

    counter = CompileCounter()
    train = TrainConfig(steps=args.steps)
    run = lambda labels: counter.run(
        select_pairs, paths["pool"], paths[labels], out_dir / f"{strategy}_{labels}.jsonl", strategy, args.k,
        pairs=args.pairs, seed=args.seed, train_config=train,
    )
    first, second = run("first"), run("second")
    return {"strategy": strategy, "where": "in-process", "first": len(first), "second": len(second),
            "second_programs": dict(collections.Counter(second))}


def in_fresh_process(args, argv: list[str], directory: Path, strategy: str) -> dict:
    """:func:`in_process` for one strategy in a fresh Python process (this script again, with
    the hidden ``--worker`` flag), so no program compiled for another strategy is reused."""
    cmd = [sys.executable, __file__, *argv, "--strategies", strategy, "--worker", str(directory)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"the in-process run failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def cli_process(args, paths: dict, labels: str, strategy: str, out_dir: Path, cache_home: Path) -> dict:
    """One ``arm-jax select`` process with the persistent cache under ``cache_home``: the
    programs it built and the persistent-cache misses, counted in JAX's log lines."""
    env = dict(os.environ, XDG_CACHE_HOME=str(cache_home), JAX_LOG_COMPILES="1", JAX_EXPLAIN_CACHE_MISSES="1")
    for name in ("ARM_JAX_NO_COMPILE_CACHE", "JAX_COMPILATION_CACHE_DIR"):
        env.pop(name, None)
    cmd = [
        sys.executable, "-m", "arm_jax", "select", "--pool", str(paths["pool"]), "--labels", str(paths[labels]),
        "--out", str(out_dir / f"cli_{strategy}_{labels}.jsonl"), "--strategy", strategy, "--k", str(args.k),
        "--pairs", args.pairs, "--seed", str(args.seed), "--steps", str(args.steps),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode:
        raise SystemExit(f"arm-jax select failed ({done.returncode}):\n{done.stderr[-4000:]}")
    misses = MISS_LINE.findall(done.stderr)
    return {"built": len(COMPILED_LINE.findall(done.stderr)), "misses": len(misses),
            "missed_programs": dict(collections.Counter(misses))}


def across_processes(args, paths: dict, strategy: str, out_dir: Path) -> dict:
    """Two CLI processes (first labels, then second) sharing a fresh persistent cache."""
    with tempfile.TemporaryDirectory(prefix="arm-jax-cache-") as cache_home:
        first = cli_process(args, paths, "first", strategy, out_dir, Path(cache_home))
        second = cli_process(args, paths, "second", strategy, out_dir, Path(cache_home))
    return {"strategy": strategy, "where": "CLI, 2 processes", "first": first["misses"], "second": second["misses"],
            "second_built": second["built"], "second_programs": second["missed_programs"]}


def print_table(rows: list[dict], buckets: tuple[int, int]) -> None:
    """The rows as a Markdown table (what the second call compiled: the target is 0)."""
    print(f"\nlabel buckets: {buckets[0]} then {buckets[1]}" + ("" if buckets[0] == buckets[1] else
          " (different: the fit and the selection compile again, by design)"))
    print("| strategy | where | compiled by call 1 | compiled by call 2 | loaded from the cache by call 2 "
          "| programs compiled by call 2 |")
    print("|---|---|---:|---:|---:|---|")
    for r in rows:
        progs = ", ".join(f"{name} x{n}" if n > 1 else name for name, n in r["second_programs"].items()) or "-"
        loaded = r["second_built"] - r["second"] if "second_built" in r else "-"
        print(f"| {r['strategy']} | {r['where']} | {r['first']} | {r['second']} | {loaded} | {progs} |")
    if any(r["where"].startswith("CLI") for r in rows):
        print("(CLI rows count persistent-cache misses, programs compiled from scratch; a fresh process "
              "builds every program it runs, the second loading them from the cache)")


def _without(argv: list[str], flags: tuple[str, ...]) -> list[str]:
    """``argv`` without the given flags and their values (``--flag value`` or ``--flag=value``)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in flags:
            skip = True
        elif not a.startswith(tuple(f + "=" for f in flags)):
            out.append(a)
    return out


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--items", type=int, default=5000)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--labels", type=int, default=1100, help="labels of the first call (default 1100)")
    p.add_argument("--more", type=int, default=100, help="labels the second call adds (default 100)")
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--strategies", default="dopt,pa_dopt", help="comma-separated (default dopt,pa_dopt)")
    p.add_argument("--pairs", default="cross-prompt", choices=("cross-prompt", "in-prompt", "all-cross"))
    p.add_argument("--steps", type=int, default=200, help="training steps (the count does not depend on it)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-cli", action="store_true", help="skip the two-process CLI measurement")
    p.add_argument("--json", default=None, help="also write the rows as JSON to this path")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # in_fresh_process: the data directory
    return p.parse_args(argv)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.worker:
        work = Path(args.worker)
        paths = {"pool": work / "pool.npy", "first": work / "labels_1.jsonl", "second": work / "labels_2.jsonl"}
        print(json.dumps(in_process(args, paths, args.strategies, work)))
        return 0
    import jax

    from arm_jax.workflow.fitting import bucket

    strategies = [s for s in args.strategies.split(",") if s]
    buckets = (bucket(args.labels), bucket(args.labels + args.more))
    rows = []
    with tempfile.TemporaryDirectory(prefix="arm-jax-recompile-") as tmp:
        tmp = Path(tmp)
        paths = make_data(tmp, args.items, args.dim, args.labels, args.more, args.seed)
        for strategy in strategies:
            rows.append(in_fresh_process(args, _without(argv, ("--json", "--strategies")), tmp, strategy))
            print(f"{strategy}, in-process: second call compiled {rows[-1]['second']}", file=sys.stderr, flush=True)
            if not args.no_cli:
                rows.append(across_processes(args, paths, strategy, tmp))
                print(f"{strategy}, CLI: second process missed {rows[-1]['second']}", file=sys.stderr, flush=True)
    print_table(rows, buckets)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({
            "jax": jax.__version__, "backend": jax.default_backend(), "machine": platform.machine(),
            "items": args.items, "dim": args.dim, "labels": [args.labels, args.labels + args.more],
            "buckets": list(buckets), "k": args.k, "pairs": args.pairs, "rows": rows,
        }, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
