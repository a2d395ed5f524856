"""Timing of the linear model's exact fit (``ModelConfig(depth=0)``), the current code against a
baseline revision, in the same process.

The baseline is the fit as it was at ``--old-rev`` (default bd6dd2f: four Cholesky-solved
Newton steps per grid point and fold, eight for the final fit, i.e. 308 formations of XᵀWX):
its ``arm_jax/model/fit_linear.py`` and ``arm_jax/model/newton.py`` are read with ``git show``
into a temporary directory and imported under other names, so the package itself holds one
implementation. For each size (C labels, dimension D) it builds a synthetic Bradley–Terry
problem (Gaussian items, labels drawn from a linear golden reward), compiles each fit
separately (``jit(...).lower(...).compile()``, timed), runs it once to warm up and then
``--repeats`` times (``block_until_ready``), old and new interleaved, and reports the medians,
the chosen prior of each and the largest difference of their heads (relative to the largest
coefficient). Where the baseline would take longer than ``--old-max-seconds`` (its cost is
308 Newton steps of the same price), it is not run: its time is estimated from one of its
Newton steps on all the labels (marked ``~``).

With ``--cli`` it also times the whole ``arm-jax select --depth 0`` as a fresh process on a
pool written by benchmarks/bench_select_cli.py's generator (default 5 000 items x D = 384,
1 000 labels), alternating the current package and a copy of it whose two files are the
baseline's (``PYTHONPATH``); each version gets its own compilation cache, so its first run
compiles (cold) and the next ones read the cache (warm).

On a shared machine, ``--wait-idle 0.8`` waits (up to a minute) before each timed run until
the CPUs were 80 % idle for half a second.

Usage::

    python benchmarks/bench_linear_fit.py                                 # 1000x384, 300x384, 10000x4096
    python benchmarks/bench_linear_fit.py --sizes 1000x384 --repeats 7 --cli --json out.json
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BASELINE = "bd6dd2f"
#: Newton steps of the baseline: 5 folds x 15 grid points x 4, then 8 on all labels.
OLD_STEPS = 5 * 15 * 4 + 8


def wait_idle(fraction: float, timeout: float = 60.0) -> None:
    """Wait until the CPUs were ``fraction`` idle over half a second (Linux; else return)."""
    if fraction <= 0 or not os.path.exists("/proc/stat"):
        return

    def read():
        with open("/proc/stat") as f:
            v = [int(a) for a in f.readline().split()[1:]]
        return v[3] + v[4], sum(v)

    start = time.time()
    while time.time() - start < timeout:
        i0, t0 = read()
        time.sleep(0.5)
        i1, t1 = read()
        if (i1 - i0) / max(t1 - t0, 1) >= fraction:
            return


def baseline_sources(rev: str, directory: Path) -> tuple[Path, Path]:
    """Write the baseline's fit_linear.py (importing the baseline's newton) and newton.py."""
    show = {name: subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:arm_jax/model/{name}.py"],
                                 check=True, capture_output=True, text=True).stdout
            for name in ("fit_linear", "newton")}
    newton = directory / "baseline_newton.py"
    newton.write_text(show["newton"])
    fit = directory / "baseline_fit_linear.py"
    fit.write_text(show["fit_linear"].replace("from arm_jax.model.newton import", "from baseline_newton import"))
    return fit, newton


def load_baseline(rev: str, directory: Path):
    """The baseline's fit_linear module."""
    fit, _ = baseline_sources(rev, directory)
    sys.path.insert(0, str(directory))
    spec = importlib.util.spec_from_file_location("baseline_fit_linear", fit)
    module = importlib.util.module_from_spec(spec)
    sys.modules["baseline_fit_linear"] = module
    spec.loader.exec_module(module)
    return module


def make_problem(n_labels: int, dim: int, seed: int = 0, n_items: int = 5000):
    """Items (N, D) float32 and a buffer of ``n_labels`` Bradley–Terry labels of a linear reward."""
    from arm_jax.model import buffer

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_items, dim)).astype(np.float32)
    r = x @ rng.normal(size=dim)
    a = rng.integers(0, n_items, n_labels)
    b = (a + 1 + rng.integers(0, n_items - 1, n_labels)) % n_items
    first_wins = rng.random(n_labels) < 1.0 / (1.0 + np.exp(-(r[a] - r[b]) / r.std()))
    return x, buffer.buffer_from_pairs(np.where(first_wins, a, b), np.where(first_wins, b, a))


def compiled(fit_linear, items, buf, train_config):
    """(compiled fit, compile seconds) of ``fit_linear._fit_linear``, the configuration static."""
    import jax

    t0 = time.perf_counter()
    fn = jax.jit(lambda k, x, b: fit_linear._fit_linear(k, x, b, train_config))
    return fn.lower(jax.random.PRNGKey(0), items, buf).compile(), time.perf_counter() - t0


def old_step_seconds(old, items, buf, train_config, idle: float) -> float:
    """Seconds of one baseline Newton step on all the labels (median of 3, compiled, warm)."""
    import jax
    import jax.numpy as jnp

    def one(x, b):
        order = jnp.arange(b.capacity, dtype=jnp.int32)
        problem = old._linear_problem(x, b, train_config, order, b.count)
        with jax.default_matmul_precision("highest"):
            return old._newton(problem, jnp.zeros(x.shape[-1]), problem.filled, problem.grid[7], 1)

    fn = jax.jit(one).lower(items, buf).compile()
    jax.block_until_ready(fn(items, buf))
    times = []
    for _ in range(3):
        wait_idle(idle)
        t0 = time.perf_counter()
        jax.block_until_ready(fn(items, buf))
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def time_size(old, n_labels, dim, args) -> dict:
    """Old and new fit at one size: compile and run times, steps, priors, head difference."""
    import jax
    import jax.numpy as jnp

    from arm_jax.model import fit_linear
    from arm_jax.model.config import TrainConfig

    train_config = TrainConfig(linear_prior_rule=args.rule)
    x, buf = make_problem(n_labels, dim)
    items = jnp.asarray(x)
    row = {"labels": n_labels, "dim": dim, "rule": args.rule}
    step = old_step_seconds(old, items, buf, train_config, args.wait_idle)
    row["old_step_s"] = step
    run_old = OLD_STEPS * step <= args.old_max_seconds
    versions = {"new": fit_linear, **({"old": old} if run_old else {})}
    fns, outputs, times = {}, {}, {name: [] for name in versions}
    for name, module in versions.items():
        fns[name], row[f"{name}_compile_s"] = compiled(module, items, buf, train_config)
        outputs[name] = jax.block_until_ready(fns[name](jax.random.PRNGKey(0), items, buf))  # warm-up
    repeats = args.repeats if n_labels * dim * dim <= 1e10 else args.big_repeats
    for _ in range(repeats):
        for name, fn in fns.items():
            wait_idle(args.wait_idle)
            t0 = time.perf_counter()
            outputs[name] = jax.block_until_ready(fn(jax.random.PRNGKey(0), items, buf))
            times[name].append(time.perf_counter() - t0)
    for name in versions:
        row[f"{name}_s"] = float(np.median(times[name]))
        row[f"{name}_runs_s"] = times[name]
        row[f"{name}_prior"] = float(outputs[name][1].prior_precision)
        row[f"{name}_newton_steps"] = int(outputs[name][1].steps_run)
    if not run_old:
        row["old_s"], row["old_estimated"] = OLD_STEPS * step, True
    else:
        row["old_estimated"] = False
        heads = [np.asarray(outputs[k][0]["params"]["head"][:, 0], np.float64) for k in ("old", "new")]
        row["head_max_rel_diff"] = float(np.abs(heads[0] - heads[1]).max() / np.abs(heads[0]).max())
        row["same_prior"] = bool(np.isclose(row["old_prior"], row["new_prior"], rtol=1e-6))
    row["speedup"] = row["old_s"] / row["new_s"]
    return row


def cli_versions(old_rev: str, directory: Path) -> dict:
    """{"old": PYTHONPATH of a package copy with the baseline's two files, "new": the checkout}."""
    copy = directory / "baseline_package"
    shutil.copytree(ROOT / "arm_jax", copy / "arm_jax", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("fit_linear", "newton"):
        source = subprocess.run(["git", "-C", str(ROOT), "show", f"{old_rev}:arm_jax/model/{name}.py"],
                                check=True, capture_output=True, text=True).stdout
        (copy / "arm_jax" / "model" / f"{name}.py").write_text(source)
    return {"old": str(copy), "new": str(ROOT)}


def time_cli(args, directory: Path) -> dict:
    """Wall seconds of ``arm-jax select --depth 0`` as a fresh process, old and new alternating."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_select_cli import make_data, parse_time_line

    data = directory / "data"
    data.mkdir()
    make_data(data, args.cli_items, args.cli_dim, args.cli_labels, 10, 0)
    paths = cli_versions(args.old_rev, directory)
    runs = {name: [] for name in paths}
    for i in range(args.cli_repeats + 1):
        for name, path in paths.items():
            env = {**os.environ, "PYTHONPATH": path, "XDG_CACHE_HOME": str(directory / f"cache-{name}")}
            cmd = [sys.executable, "-c", "import arm_jax, sys; from arm_jax.cli.main import main; "
                   f"assert arm_jax.__file__.startswith({path!r}), arm_jax.__file__; sys.exit(main())",
                   "select", "--pool", str(data / "pool.npy"), "--labels", str(data / "labels.jsonl"),
                   "--out", str(directory / f"next-{name}.jsonl"), "--depth", "0", "--k", "100", "--seed", "0"]
            wait_idle(args.wait_idle)
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=directory)
            wall = time.perf_counter() - t0
            if proc.returncode != 0:
                raise RuntimeError(proc.stderr)
            runs[name].append({"process": wall, **parse_time_line(proc.stderr)})
    out = {"items": args.cli_items, "dim": args.cli_dim, "labels": args.cli_labels, "runs": runs}
    for name in paths:
        out[f"{name}_cold"] = runs[name][0]
        out[f"{name}_warm"] = {k: float(np.median([r[k] for r in runs[name][1:]])) for k in runs[name][0]}
    picked = {name: [json.loads(line) for line in open(directory / f"next-{name}.jsonl")] for name in paths}
    out["same_selection"] = [(r["a"], r["b"]) for r in picked["old"]] == [(r["a"], r["b"]) for r in picked["new"]]
    out["score_max_rel_diff"] = max(abs(o["score"] - n["score"]) / abs(o["score"])
                                    for o, n in zip(picked["old"], picked["new"]))
    return out


def print_tables(results: dict) -> None:
    cfg = results["config"]
    print(f"\nlinear fit (depth 0, {cfg['rule']}), {cfg['device']}, {cfg['cpus']} CPUs, jax {cfg['jax']}; "
          f"median of {cfg['repeats']} runs ({cfg['big_repeats']} where C·D² > 1e10; ~: estimated from one baseline "
          f"Newton step x {OLD_STEPS})\n")
    print("| C | D | old (s) | new (s) | speed-up | compile old / new (s) | new Newton steps | same prior | "
          "max head diff |")
    print("|---:|---:|---:|---:|---:|---:|---:|---|---:|")
    for r in results["sizes"]:
        est = "~" if r["old_estimated"] else ""
        compile_old = f"{r['old_compile_s']:.1f}" if "old_compile_s" in r else "–"
        print(f"| {r['labels']} | {r['dim']} | {est}{r['old_s']:.3f} | {r['new_s']:.3f} | {est}{r['speedup']:.1f}x | "
              f"{compile_old} / {r['new_compile_s']:.1f} | {r['new_newton_steps']} | {r.get('same_prior', '–')} | "
              f"{r.get('head_max_rel_diff', float('nan')):.1e} |")
    if "cli" in results:
        c = results["cli"]
        print(f"\n`arm-jax select --depth 0` on {c['items']} items x D={c['dim']}, {c['labels']} labels, fresh "
              f"process (cold: compiles; warm: median of {cfg['cli_repeats']} with the compilation cache)\n")
        print("| version | cold process (s) | cold train (s) | warm process (s) | warm train (s) |")
        print("|---|---:|---:|---:|---:|")
        for name in ("old", "new"):
            cold, warm = c[f"{name}_cold"], c[f"{name}_warm"]
            print(f"| {name} | {cold['process']:.2f} | {cold['train']:.2f} | {warm['process']:.2f} | {warm['train']:.2f} |")
        print(f"\nsame selected pairs in the same order: {c['same_selection']}; their scores differ by at most "
              f"{c['score_max_rel_diff']:.1e} (relative)")


def parse_sizes(text: str) -> list[tuple[int, int]]:
    return [tuple(int(v) for v in part.split("x")) for part in text.split(",") if part]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=parse_sizes, default=parse_sizes("1000x384,300x384,10000x4096"),
                        help="CxD,... labels x dimension (default 1000x384,300x384,10000x4096)")
    parser.add_argument("--rule", default="cross-validation", choices=("cross-validation", "evidence", "held-out"))
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per fit after the warm-up (default 5)")
    parser.add_argument("--big-repeats", type=int, default=1, help="timed runs where C·D² > 1e10 (default 1)")
    parser.add_argument("--old-max-seconds", type=float, default=120.0,
                        help="estimate the baseline instead of running it where it would take longer (default 120)")
    parser.add_argument("--old-rev", default=BASELINE, help=f"the baseline's git revision (default {BASELINE})")
    parser.add_argument("--cli", action="store_true", help="also time `arm-jax select --depth 0`, old and new")
    parser.add_argument("--cli-items", type=int, default=5000)
    parser.add_argument("--cli-dim", type=int, default=384)
    parser.add_argument("--cli-labels", type=int, default=1000)
    parser.add_argument("--cli-repeats", type=int, default=3, help="warm runs per version after the cold one")
    parser.add_argument("--wait-idle", type=float, default=0.0, metavar="FRACTION",
                        help="before each timed run wait until the CPUs are this idle (default 0: do not wait)")
    parser.add_argument("--json", help="also write the numbers to this JSON file")
    args = parser.parse_args(argv)

    import jax

    results = {"config": {
        "device": f"{jax.devices()[0].platform} ({jax.devices()[0].device_kind})", "cpus": os.cpu_count(),
        "jax": jax.__version__, "python": platform.python_version(), "rule": args.rule, "repeats": args.repeats,
        "big_repeats": args.big_repeats, "old_rev": args.old_rev, "cli_repeats": args.cli_repeats,
        "wait_idle": args.wait_idle,
    }, "sizes": []}
    with tempfile.TemporaryDirectory(prefix="arm-jax-bench-linear-") as tmp:
        old = load_baseline(args.old_rev, Path(tmp))
        for n_labels, dim in args.sizes:
            row = time_size(old, n_labels, dim, args)
            results["sizes"].append(row)
            print(json.dumps({k: v for k, v in row.items() if not k.endswith("runs_s")}), file=sys.stderr)
        if args.cli:
            results["cli"] = time_cli(args, Path(tmp))
    print_tables(results)
    if args.json:
        from arm_jax.runtime import files as io

        io.write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
