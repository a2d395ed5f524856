"""Compile the experiment's programs at any size without the data: compile time and memory plan.

    python benchmarks/bench_compile.py                       # the paper-sized study (--preset paper)
    python benchmarks/bench_compile.py --preset default --strategies all
    python benchmarks/bench_compile.py --json results/bench/compile-paper.json

Every flag of `arm-jax run` is accepted (`--preset`, `--strategies`, `--seeds`, `--dim`,
`--steps`, `--pairs` ...). For each strategy the script traces and compiles exactly the program
that `arm-jax run` would run (all rounds, vmapped over the seeds), but with abstract arrays in
place of the data, so nothing is generated or allocated: the paper's 11 GB study compiles on
a laptop. It prints, per strategy, the trace and compile times and XLA's memory plan (the
arguments, the output and the largest temporary buffers live at once), which answers two
questions before any GPU time is spent: how much of a wall-time budget is compilation, and
whether the program fits in the device's memory. Compile times are for this machine's
backend (the GPU compiler is slower than the CPU one); the memory plan is the backend's own.
"""
from __future__ import annotations

import argparse
import sys
import time

import jax
import jax.numpy as jnp

from arm_jax import io
from arm_jax.cli import build_parser
from arm_jax.cli_experiment import abstract_data, build_config, parse_strategies, resolve_presets
from arm_jax.experiment import make_experiment

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


def measure(config, data, keys) -> dict:
    t0 = time.perf_counter()
    lowered = make_experiment(config, data, devices=jax.devices()[:1]).lower_seeds(keys)
    t1 = time.perf_counter()
    compiled = lowered.compile()
    t2 = time.perf_counter()
    return {"strategy": config.strategy, "trace_s": t1 - t0, "compile_s": t2 - t1, **memory_plan(compiled)}


def main(argv=None) -> int:
    own = argparse.ArgumentParser(add_help=False)
    own.add_argument("--json", default=None, help="also write the rows as JSON to this path")
    ours, rest = own.parse_known_args(argv)
    if any(a in ("-h", "--help") for a in rest):
        print(__doc__)
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
        f"compiling {len(names)} programs: train {data.train_embeddings.shape}, test {data.test_embeddings.shape}, "
        f"{args.seeds} seeds x {args.rounds} rounds x {args.steps} steps; data {data_gib:.1f} GiB; "
        f"backend {backend} ({device})",
        file=sys.stderr, flush=True,
    )
    rows = []
    print(f"| strategy | trace s | compile s | temporaries GiB | arguments GiB | output MiB |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in names:
        row = measure(build_config(args, name), data, keys)
        rows.append(row)
        temp = row.get("temp_size")
        print(
            f"| {name} | {row['trace_s']:.2f} | {row['compile_s']:.2f} | "
            + (f"{temp / GiB:.2f} | {row['argument_size'] / GiB:.2f} | {row['output_size'] / 2**20:.2f} |"
               if temp is not None else "n/a | n/a | n/a |"),
            flush=True,
        )
    total = sum(r["trace_s"] + r["compile_s"] for r in rows)
    print(f"\ntotal trace + compile: {total:.1f} s sequentially on {backend} ({device})")
    if ours.json:
        io.write_json(ours.json, {
            "backend": backend, "device": device, "argv": rest, "data_gib": data_gib,
            "seeds": args.seeds, "rounds": args.rounds, "steps": args.steps, "rows": rows,
        })
    return 0


if __name__ == "__main__":
    sys.exit(main())
