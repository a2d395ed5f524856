"""Time and memory of the selection kernels, beside the paper's way of scoring pairs.

Pool section (default): for each pool size N, feature width H and strategy, the median of
``--repeats`` calls after one warm-up call (compile time reported separately, measured as
``jit(...).lower(...).compile()``), with ``block_until_ready``; k = 500.
Baseline ("paper"): the D-opt scores as the paper's code computes them — the N × H × H
tensor of weighted outer products v_i x_i x_iᵀ is materialised, summed with weights w and
differentiated with autograd (``jax.grad`` of ``slogdet``); run only where N·H·H·4 bytes fits
under ``--baseline-max-gb``. ``dopt`` is checked against it (share of the same k picks).

All-pairs section (``--allpairs``): every unordered pair of K items (K(K−1)/2 pairs) scored
by :func:`arm_jax.selection.allpairs.top_k_all_pairs`, beside scoring the materialised pair list with
the ordinary strategy where that fits (``--explicit-max-gb``), with a check that both pick
the same pairs.

Memory: the "XLA plan" column is ``compiled.memory_analysis()`` — arguments + outputs +
temporaries of the compiled program, an analytic figure that is the same on every backend.
On a GPU the device's own high-water mark (``memory_stats()["peak_bytes_in_use"]``, process
wide and never reset) is reported too; on a CPU the growth of the process's peak RSS during
the compile and the calls (Linux: peak mark reset through ``/proc/self/clear_refs``).
Timings on a shared CPU are noisy: the minimum is printed beside the median, and the load
average is recorded.

    python benchmarks/bench_selection.py                     # CPU defaults, a few minutes
    python benchmarks/bench_selection.py --quick             # smoke test, < 1 minute
    python benchmarks/bench_selection.py --allpairs          # + all-pairs at K = 1000, 5000
    python benchmarks/bench_selection.py --full --allpairs --json results/bench_gpu.json   # GPU grid
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from arm_jax.model import likelihood
from arm_jax.runtime import precision
from arm_jax.selection import allpairs, registry, sharded
from arm_jax.selection import scores as strategies

POOL_STRATEGIES = ("dopt", "pa_dopt", "xtx", "greedy_dopt", "entropy", "maxdiff", "coreset", "batchbald")
BASELINE = "paper"
CPU_SIZES = (2_000, 20_000, 200_000)
FULL_SIZES = (2_000, 20_000, 200_000, 2_000_000)
CPU_ALLPAIRS = (1_000, 5_000)
FULL_ALLPAIRS = (1_000, 5_000, 50_000)
N_PAST = 2_000  # labelled pairs seen by pa_dopt / greedy_dopt / batchbald (4 rounds of 500)


# ----------------------------------------------------------------------------- the baseline


@precision.full_precision  # like our kernels: exact float32 products on every backend
def paper_dopt_scores(phi_diff: jax.Array, beta: jax.Array, jitter: float = 1e-6) -> jax.Array:
    """D-opt scores the way the paper's code gets them: autograd of log det over an
    explicitly materialised (N, H, H) tensor of weighted outer products. O(N·H²) memory."""
    v = likelihood.bernoulli_variance(phi_diff, beta)
    outer = v[:, None, None] * phi_diff[:, :, None] * phi_diff[:, None, :]  # (N, H, H)
    outer = jax.lax.optimization_barrier(outer)  # keep it materialised, as the paper's code does
    eye = jitter * jnp.eye(phi_diff.shape[1], dtype=phi_diff.dtype)

    def logdet(w):
        return jnp.linalg.slogdet(jnp.einsum("n,nij->ij", w, outer) + eye)[1]

    return jax.grad(logdet)(jnp.ones(phi_diff.shape[0], phi_diff.dtype))


def paper_select(key, inputs: strategies.SelectionInputs, k: int) -> strategies.Selection:
    del key
    return strategies.top_k_valid(paper_dopt_scores(inputs.phi_diff, inputs.beta), inputs.valid, k)


# ----------------------------------------------------------------------------- measuring


@dataclasses.dataclass
class Row:
    section: str
    strategy: str
    n: int  # pool size N, or items K for all-pairs
    h: int
    k: int
    pairs: int = 0
    median_ms: float | None = None
    min_ms: float | None = None
    runs: int = 0
    compile_s: float | None = None
    xla_plan_bytes: int | None = None
    device_peak_bytes: int | None = None
    host_peak_rss_delta_bytes: int | None = None
    speedup_vs_baseline: float | None = None
    agreement: float | None = None
    note: str = ""


def _backend() -> dict:
    dev = jax.devices()[0]
    return {
        "backend": jax.default_backend(),
        "device": getattr(dev, "device_kind", str(dev)),
        "device_count": jax.device_count(),
        "jax": jax.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "command": " ".join(["python", *sys.argv]),
        "load_average_at_start": os.getloadavg()[0],
    }


def _device_peak() -> int | None:
    stats = jax.devices()[0].memory_stats()
    return None if not stats else stats.get("peak_bytes_in_use")


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> int | None:
    """Reset the kernel's peak-RSS mark (Linux ``clear_refs`` 5); return the RSS now, in bytes."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return None
    rss = _status_kib("VmRSS")
    return None if rss is None else rss * 1024


def _peak_rss_since(rss_before: int | None) -> int | None:
    """Peak RSS since :func:`_reset_peak_rss`, minus the RSS then: what compiling and running
    the program added to the process at its peak (host memory; the CPU backend's device)."""
    peak = _status_kib("VmHWM")
    if rss_before is None or peak is None:
        return None
    return max(peak * 1024 - rss_before, 0)


def _plan_bytes(compiled) -> int | None:
    try:
        m = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 - not every backend reports it
        return None
    if m is None:
        return None
    return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes)


def _is_oom(err: Exception) -> bool:
    text = str(err)
    return "RESOURCE_EXHAUSTED" in text or "Out of memory" in text or "out of memory" in text


def measure(row: Row, fn, args, repeats: int, budget_s: float):
    """Compile ``fn`` (jitted) for ``args``, one warm-up call, then the median of up to
    ``repeats`` calls (fewer when one call is long: the total stays near ``budget_s``).
    Returns the last output (host copy), or None if it ran out of memory."""
    rss_before = _reset_peak_rss()
    try:
        t0 = time.perf_counter()
        if hasattr(fn, "lower"):
            compiled = fn.lower(*args).compile()
            row.xla_plan_bytes = _plan_bytes(compiled)
        else:  # a host-level call that compiles on its first use: the warm-up call includes compiling
            compiled = fn
            jax.block_until_ready(fn(*args))
        row.compile_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        out = jax.block_until_ready(compiled(*args))
        first = time.perf_counter() - t0
        times = []
        n = 0 if first > budget_s else max(1, min(repeats, int(budget_s / max(first, 1e-9))))
        for _ in range(n):
            t0 = time.perf_counter()
            out = jax.block_until_ready(compiled(*args))
            times.append(time.perf_counter() - t0)
    except Exception as err:  # noqa: BLE001
        if _is_oom(err):
            row.note = "out of memory"
            return None
        raise
    if not times:
        times = [first]
        row.note = (row.note + "; " if row.note else "") + f"1 run (warm-up call {first:.1f} s > budget)"
    row.median_ms = 1e3 * float(np.median(times))
    row.min_ms = 1e3 * float(np.min(times))
    row.runs = len(times)
    row.device_peak_bytes = _device_peak()
    row.host_peak_rss_delta_bytes = _peak_rss_since(rss_before)
    return jax.device_get(out)


# ----------------------------------------------------------------------------- problems


def make_pool(key, n: int, h: int):
    """x = Φ_a − Φ_b with ReLU-like features (one-sided, like an MLP's last layer), β with
    reward gaps of order 1, and N_PAST labelled pairs."""
    k_a, k_b, k_beta, k_past = jax.random.split(key, 4)
    phi_a = jax.nn.relu(jax.random.normal(k_a, (n, h), jnp.float32))
    phi_b = jax.nn.relu(jax.random.normal(k_b, (n, h), jnp.float32))
    beta = 1.5 * jax.random.normal(k_beta, (h,), jnp.float32) / math.sqrt(h)
    past = jax.random.normal(k_past, (N_PAST, h), jnp.float32) * 0.8
    return phi_a - phi_b, beta, past


def make_items(key, n_items: int, h: int):
    k_phi, k_beta, k_past = jax.random.split(key, 3)
    phi = jax.nn.relu(jax.random.normal(k_phi, (n_items, h), jnp.float32))
    beta = 1.5 * jax.random.normal(k_beta, (h,), jnp.float32) / math.sqrt(h)
    past = jax.random.normal(k_past, (N_PAST, h), jnp.float32) * 0.8
    return phi, beta, past


# ----------------------------------------------------------------------------- sections


def run_pool(args, rows: list[Row]):
    key = jax.random.PRNGKey(0)
    budget = args.budget_s
    skip_after: dict[tuple[str, int], str] = {}
    last_time: dict[tuple[str, int], tuple[int, float]] = {}
    names = list(args.strategies) + ([BASELINE] if args.baseline else [])
    for h in args.hidden:
        for n in args.sizes:
            phi_diff, beta, past = make_pool(jax.random.fold_in(key, n * 1000 + h), n, h)
            inputs = strategies.make_inputs(phi_diff, beta, None, past, None)
            picks: dict[str, np.ndarray] = {}
            size_rows = []
            for name in names:
                row = Row("pool", name, n, h, args.k, pairs=n)
                size_rows.append(row)
                rows.append(row)
                if (name, h) in skip_after:
                    row.note = skip_after[(name, h)]
                    print(f"  skip {name:12s} N={n:>9,} H={h}: {row.note}", flush=True)
                    continue
                if name == BASELINE and n * h * h * 4 > args.baseline_max_gb * 2**30:
                    row.note = (
                        f"skipped: the N x H x H tensor needs {n * h * h * 4 / 2**30:.1f} GiB "
                        f"> --baseline-max-gb {args.baseline_max_gb:g}"
                    )
                    print(f"  skip {name:12s} N={n:>9,} H={h}: {row.note}", flush=True)
                    continue
                prev = last_time.get((name, h))
                if prev is not None and prev[1] * n / prev[0] > 3 * budget:
                    row.note = (
                        f"skipped: predicted {prev[1] * n / prev[0]:.0f} s per call "
                        f"(linear in N from N={prev[0]:,}) > 3 x budget {budget:g} s"
                    )
                    skip_after[(name, h)] = "skipped: too slow at a smaller N"
                    print(f"  skip {name:12s} N={n:>9,} H={h}: {row.note}", flush=True)
                    continue
                fn = paper_select if name == BASELINE else registry.STRATEGIES[name].fn
                jitted = jax.jit(functools.partial(fn, k=args.k))
                out = measure(row, jitted, (jax.random.PRNGKey(1), inputs), args.repeats, budget)
                if out is None:
                    skip_after[(name, h)] = "skipped: out of memory at a smaller N"
                else:
                    picks[name] = np.asarray(out.indices)
                    last_time[(name, h)] = (n, row.median_ms / 1e3)
                _print_progress(row)
            if args.sharded:
                for name in ("dopt", "pa_dopt", "xtx"):
                    row = Row("pool", f"{name} (sharded x{jax.device_count()})", n, h, args.k, pairs=n)
                    rows.append(row)
                    size_rows.append(row)
                    # the public call: host checks, then one shard_map program (compiled on the warm-up)
                    def call(phi_diff, beta, past, name=name):
                        return sharded.sharded_select(name, None, phi_diff, beta, args.k, past_phi_diff=past)

                    out = measure(row, call, (phi_diff, beta, past), args.repeats, budget)
                    if out is not None and name in picks:
                        row.agreement = _overlap(np.asarray(out.indices), picks[name])
                    _print_progress(row)
            _compare_to(size_rows, BASELINE, picks, "dopt")
            del phi_diff, inputs


def run_allpairs(args, rows: list[Row]):
    key = jax.random.PRNGKey(1)
    tiles = args.tile or ((512,) if jax.default_backend() == "cpu" else (2048,))
    for h in args.hidden:
        for n_items, tile in ((n, t) for n in args.allpairs_items for t in tiles):
            phi, beta, past = make_items(jax.random.fold_in(key, n_items * 1000 + h), n_items, h)
            n_pairs = n_items * (n_items - 1) // 2
            fits = n_pairs * h * 4 * 3 <= args.explicit_max_gb * 2**30  # Φ_u − Φ_v and the two gathers
            explicit_ok = fits and tile == tiles[0]  # the reference once per K
            for name in args.allpairs_strategies:
                row = Row("allpairs", name, n_items, h, args.k, pairs=n_pairs, note=f"tile {tile}")
                rows.append(row)

                def kernel(phi, beta, past, name=name):
                    return allpairs.top_k_all_pairs(name, None, phi, beta, args.k, past_phi_diff=past, tile=tile)

                jitted = jax.jit(kernel)
                out = measure(row, jitted, (phi, beta, past), args.repeats, args.budget_s)
                _print_progress(row)
                if out is None or not explicit_ok:
                    continue
                ref = Row("allpairs", f"{name} (explicit pairs)", n_items, h, args.k, pairs=n_pairs)
                rows.append(ref)
                u, v = np.triu_indices(n_items, 1)
                u, v = jnp.asarray(u, jnp.int32), jnp.asarray(v, jnp.int32)

                def explicit(phi, beta, past, u, v, name=name):
                    inputs = strategies.make_inputs(phi[u] - phi[v], beta, None, past, None)
                    return registry.STRATEGIES[name].fn(None, inputs, args.k)

                ref_out = measure(ref, jax.jit(explicit), (phi, beta, past, u, v), args.repeats, args.budget_s)
                if ref_out is not None:
                    got = set(zip(np.asarray(out.u).tolist(), np.asarray(out.v).tolist()))
                    idx = np.asarray(ref_out.indices)
                    want = set(zip(np.asarray(u)[idx].tolist(), np.asarray(v)[idx].tolist()))
                    row.agreement = len(got & want) / args.k
                    if row.agreement < 1.0 and np.allclose(np.sort(out.scores), np.sort(ref_out.scores), rtol=1e-5, atol=1e-7):
                        row.note += "; the other picks tie in float32 score (same k scores)"
                    ref.speedup_vs_baseline = None
                    row.speedup_vs_baseline = ref.median_ms / row.median_ms
                    ref.note = "materialised pair list, ordinary strategy"
                _print_progress(ref)
                del u, v
            if not fits:
                print(f"  (explicit pair list for K={n_items:,}, H={h} skipped: over --explicit-max-gb)", flush=True)


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    return len(set(a.tolist()) & set(b.tolist())) / len(a)


def _compare_to(size_rows: list[Row], baseline: str, picks: dict, checked: str):
    base = next((r for r in size_rows if r.strategy == baseline and r.median_ms is not None), None)
    if base is None:
        return
    for r in size_rows:
        if r.median_ms is not None and r is not base:
            r.speedup_vs_baseline = base.median_ms / r.median_ms
    if checked in picks and baseline in picks:
        agreement = _overlap(picks[checked], picks[baseline])
        for r in size_rows:
            if r.strategy in (checked, baseline):
                r.agreement = agreement
        print(f"  agreement {checked} vs {baseline} picks (N={base.n:,}, H={base.h}): {agreement:.3f}", flush=True)


# ----------------------------------------------------------------------------- reporting


def _fmt_bytes(b: int | None) -> str:
    if b is None:
        return "—"
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if b >= size:
            return f"{b / size:.1f} {unit}"
    return f"{b} B"


def _fmt_ms(ms: float | None) -> str:
    if ms is None:
        return "—"
    return f"{ms:.2f}" if ms < 100 else f"{ms:.0f}"


def _print_progress(row: Row):
    if row.median_ms is None:
        print(f"  {row.strategy:28s} N={row.n:>9,} H={row.h:<4d} {row.note}", flush=True)
    else:
        print(
            f"  {row.strategy:28s} N={row.n:>9,} H={row.h:<4d} {row.median_ms:10.2f} ms "
            f"(compile {row.compile_s:.2f} s, {row.runs} runs, plan {_fmt_bytes(row.xla_plan_bytes)})",
            flush=True,
        )


def table(rows: list[Row], env: dict) -> str:
    gpu = env["backend"] != "cpu"
    peak_head = "device peak (high-water)" if gpu else "peak RSS Δ"
    lines = []
    for section, title, size in (("pool", "Candidate pools", "N"), ("allpairs", "All pairs of K items", "K (pairs)")):
        sec = [r for r in rows if r.section == section]
        if not sec:
            continue
        lines += [
            f"**{title}** — backend `{env['backend']}`, device `{env['device']}` × {env['device_count']}, "
            f"jax {env['jax']}, k = {sec[0].k}, load average {env['load_average_at_start']:.1f}"
            f" → {env.get('load_average_at_end', float('nan')):.1f} on {env['cpu_count']} cores",
            "",
            f"| strategy | {size} | H | median ms | min ms | compile s | peak memory (XLA plan) | {peak_head} | × faster than baseline | same picks | note |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for r in sec:
            n = f"{r.n:,}" if section == "pool" else f"{r.n:,} ({r.pairs:,})"
            ms = _fmt_ms(r.median_ms)
            comp = "—" if r.compile_s is None else f"{r.compile_s:.2f}"
            peak = r.device_peak_bytes if gpu else r.host_peak_rss_delta_bytes
            speed = "—" if r.speedup_vs_baseline is None else f"{r.speedup_vs_baseline:.1f}×"
            agree = "—" if r.agreement is None else f"{r.agreement:.3f}"
            lines.append(
                f"| {r.strategy} | {n} | {r.h} | {ms} | {_fmt_ms(r.min_ms)} | {comp} | {_fmt_bytes(r.xla_plan_bytes)} | "
                f"{_fmt_bytes(peak) if r.median_ms is not None else '—'} | {speed} | {agree} | {r.note} |"
            )
        lines.append("")
    lines.append(
        "Median of repeated calls after a warm-up call (`block_until_ready`); compile = "
        "`jit(...).lower(...).compile()`. XLA plan = arguments + outputs + temporaries from "
        "`compiled.memory_analysis()`; peak RSS Δ = growth of the process's peak resident memory "
        "during compile + calls (CPU). Baseline = the paper's scoring: autograd of log det over a "
        "materialised N × H × H tensor (pool rows), or the ordinary strategy on the materialised "
        "pair list (all-pairs rows). Same picks = share of the k picks shared with the baseline."
    )
    return "\n".join(lines)


# ----------------------------------------------------------------------------- CLI


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(float(t)) for t in text.split(",") if t)


def _names(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def parse_args(argv=None):
    on_cpu = jax.default_backend() == "cpu"
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=_ints, default=None, help="pool sizes N (default CPU: 2000,20000,200000; --full adds 2000000)")
    p.add_argument("--hidden", type=_ints, default=(64, 128), help="feature widths H (default 64,128)")
    p.add_argument("--strategies", type=_names, default=POOL_STRATEGIES, help="comma-separated strategy names")
    p.add_argument("--k", type=int, default=500, help="picks per call (default 500)")
    p.add_argument("--repeats", type=int, default=None, help="timed calls after the warm-up (default 5; GPU 20)")
    p.add_argument("--budget-s", type=float, default=None, help="per-measurement time budget in s (default CPU 8, GPU 30)")
    p.add_argument("--no-baseline", dest="baseline", action="store_false", help="skip the paper baseline")
    p.add_argument("--baseline-max-gb", type=float, default=None,
                   help="largest N x H x H tensor the baseline may build (default CPU 1.5; GPU 15%% of device memory)")
    p.add_argument("--no-pool", dest="pool", action="store_false", help="skip the candidate-pool section")
    p.add_argument("--allpairs", action="store_true", help="add the all-pairs section")
    p.add_argument("--allpairs-items", type=_ints, default=None, help="item counts K (default 1000,5000; --full adds 50000)")
    p.add_argument("--allpairs-strategies", type=_names, default=registry.PAIR_SCORE_STRATEGIES)
    p.add_argument("--allpairs-hidden", type=_ints, default=(64,), help="H for the all-pairs section (default 64)")
    p.add_argument("--explicit-max-gb", type=float, default=None,
                   help="largest materialised pair list for the all-pairs check (default CPU 1; GPU 8)")
    p.add_argument("--tile", type=_ints, default=None, help="all-pairs tile edge(s), e.g. 1024,2048 to sweep (default CPU 512, GPU 2048)")
    p.add_argument("--sharded", action="store_true", help="add dopt/pa_dopt/xtx sharded over all devices")
    p.add_argument("--full", action="store_true", help="the full grid (N up to 2M, K up to 50000): for GPUs")
    p.add_argument("--quick", action="store_true", help="a small smoke run (N up to 20000, H=64)")
    p.add_argument("--json", type=str, default=None, help="write every row and the environment here")
    args = p.parse_args(argv)
    if args.quick:
        args.sizes = args.sizes or (2_000, 20_000)
        args.hidden = (64,) if args.hidden == (64, 128) else args.hidden
        args.allpairs_items = args.allpairs_items or (1_000,)
        args.repeats = args.repeats or 3
    args.sizes = args.sizes or (FULL_SIZES if args.full else CPU_SIZES)
    args.allpairs_items = args.allpairs_items or (FULL_ALLPAIRS if args.full else CPU_ALLPAIRS)
    args.repeats = args.repeats or (5 if on_cpu else 20)
    args.budget_s = args.budget_s or (8.0 if on_cpu else 30.0)
    if args.baseline_max_gb is None:
        stats = jax.devices()[0].memory_stats() or {}
        limit = stats.get("bytes_limit")
        args.baseline_max_gb = 1.5 if (on_cpu or not limit) else 0.15 * limit / 2**30
    if args.explicit_max_gb is None:
        args.explicit_max_gb = 1.0 if on_cpu else 8.0
    unknown = [s for s in args.strategies if s not in registry.STRATEGIES]
    if unknown:
        p.error(f"unknown strategies {unknown}; choose from {', '.join(registry.STRATEGIES)}")
    bad = [s for s in args.allpairs_strategies if s not in registry.PAIR_SCORE_STRATEGIES]
    if bad:
        p.error(f"all-pairs supports {', '.join(registry.PAIR_SCORE_STRATEGIES)}, not {bad}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    env = _backend()
    print(f"backend {env['backend']}, device {env['device']} x {env['device_count']}, jax {env['jax']}, "
          f"{env['cpu_count']} CPU cores, load average {env['load_average_at_start']:.1f}", flush=True)
    rows: list[Row] = []
    started = time.perf_counter()
    if args.pool:
        print(f"pool sizes {args.sizes}, H {args.hidden}, k {args.k}", flush=True)
        run_pool(args, rows)
    if args.allpairs:
        hidden, args.hidden = args.hidden, args.allpairs_hidden
        print(f"all pairs of K items, K {args.allpairs_items}, H {args.hidden}, k {args.k}", flush=True)
        run_allpairs(args, rows)
        args.hidden = hidden
    env["wall_s"] = time.perf_counter() - started
    env["load_average_at_end"] = os.getloadavg()[0]
    print()
    print(table(rows, env))
    print(f"\n(total {env['wall_s']:.0f} s)")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        tmp = args.json + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"environment": env, "args": {k: v for k, v in vars(args).items()},
                       "rows": [dataclasses.asdict(r) for r in rows]}, f, indent=2, default=list)
        os.replace(tmp, args.json)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
