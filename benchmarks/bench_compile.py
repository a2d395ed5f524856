"""Compile the experiment's program at any size without the data: compile time and memory plan.

    python benchmarks/bench_compile.py                       # the paper-sized study (--preset paper)
    python benchmarks/bench_compile.py --separate            # also one program per strategy, to compare
    python benchmarks/bench_compile.py --preset default --strategies all --json results/bench/compile.json

Every flag of `arm-jax run` is accepted (`--preset`, `--strategies`, `--seeds`, `--dim`,
`--steps`, `--pairs` ...; the built-in task's sizes, not data files). The script traces and
compiles exactly the program that `arm-jax run` runs (every strategy, all rounds, vmapped
over the seeds: `experiment.make_study`), but with abstract arrays in place of the data, so
nothing is generated or allocated: the paper's 11 GB study compiles on a laptop. With
`--separate` it also compiles each strategy as a program of its own (`make_experiment`), the
way to run them one after another. It prints the trace and compile times and XLA's memory
plan (arguments, output, and the temporaries live at once), which answers two questions
before any GPU time is spent: how much of a wall-time budget is compilation, and whether the
program fits in the device's memory. Compile times are this machine's backend's (a GPU
compiler is slower than the CPU one); the memory plan is the backend's own.
"""
from __future__ import annotations

import argparse
import sys
import time

import jax
import jax.numpy as jnp

from arm_jax.cli.experiment import (
    abstract_data,
    build_config,
    parse_strategies,
    resolve_presets,
)
from arm_jax.cli.main import build_parser
from arm_jax.experiment.program import make_experiment, make_study
from arm_jax.runtime import files as io

GiB = 2.0**30


def memory_plan(compiled) -> dict:
    """XLA's buffer plan in bytes (None where the backend does not report one)."""
    try:
        m = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 (some backends raise instead of returning None)
        m = None
    if m is None:
        return {}
    fields = ("argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes", "generated_code_size_in_bytes")
    return {f.replace("_in_bytes", ""): int(getattr(m, f, 0) or 0) for f in fields}


def measure(label: str, make, keys) -> dict:
    t0 = time.perf_counter()
    lowered = make().lower_seeds(keys)
    t1 = time.perf_counter()
    compiled = lowered.compile()
    t2 = time.perf_counter()
    return {"program": label, "trace_s": t1 - t0, "compile_s": t2 - t1, **memory_plan(compiled)}


def print_row(row: dict) -> None:
    temp = row.get("temp_size")
    plan = (f"{temp / GiB:.2f} | {row['argument_size'] / GiB:.2f} | {row['output_size'] / 2**20:.2f} |"
            if temp is not None else "n/a | n/a | n/a |")
    print(f"| {row['program']} | {row['trace_s']:.2f} | {row['compile_s']:.2f} | {plan}", flush=True)


def main(argv=None) -> int:
    own = argparse.ArgumentParser(prog="bench_compile.py", add_help=False, usage="%(prog)s [--json PATH] [--separate] [arm-jax run flags ...]")
    own.add_argument("--json", default=None, help="also write the rows as JSON to this path")
    own.add_argument("--separate", action="store_true", help="also compile one program per strategy")
    ours, rest = own.parse_known_args(argv)
    if any(a in ("-h", "--help") for a in rest):
        print(__doc__)
        own.print_help()  # its own flags; the rest are `arm-jax run`'s
        return 0
    args = build_parser().parse_args(["run", *(rest or ["--preset", "paper"]), "--quiet"])
    args = resolve_presets(args)
    if args.train_embeddings or args.test_embeddings:
        raise SystemExit("bench_compile.py: the built-in task's sizes only (--dim, --train-prompts, ...), not data files")
    names = parse_strategies(args.strategies)
    data = abstract_data(args)
    keys = jax.ShapeDtypeStruct((args.seeds, 2), jnp.uint32)
    backend = jax.default_backend()
    device = str(jax.devices()[0].device_kind)
    data_gib = sum(x.size * x.dtype.itemsize for x in data) / GiB
    print(
        f"{len(names)} strategies: train {data.train_embeddings.shape}, test {data.test_embeddings.shape}, "
        f"{args.seeds} seeds x {args.rounds} rounds x {args.steps} steps; data {data_gib:.1f} GiB; "
        f"backend {backend} ({device})",
        file=sys.stderr, flush=True,
    )
    one = jax.devices()[:1]
    configs = [build_config(args, name) for name in names]
    print("| program | trace s | compile s | temporaries GiB | arguments GiB | output MiB |")
    print("|---|---:|---:|---:|---:|---:|")
    rows = [measure(f"all {len(names)} strategies (arm-jax run)", lambda: make_study(configs, data, devices=one), keys)]
    print_row(rows[0])
    if ours.separate:
        for config in configs:
            rows.append(measure(config.strategy, lambda: make_experiment(config, data, devices=one), keys))
            print_row(rows[-1])
        apart = sum(r["trace_s"] + r["compile_s"] for r in rows[1:])
        print(f"\none program: {rows[0]['trace_s'] + rows[0]['compile_s']:.1f} s; one per strategy: {apart:.1f} s in all")
    if ours.json:
        io.write_json(ours.json, {
            "backend": backend, "device": device, "argv": rest, "data_gib": data_gib,
            "seeds": args.seeds, "rounds": args.rounds, "steps": args.steps, "rows": rows,
        })
    return 0


if __name__ == "__main__":
    sys.exit(main())
