"""The paper's studies on the built-in LLM-like task, through `arm-jax run`.

    python benchmarks/bench_experiment.py strategies  [--scale cpu|paper] [--out DIR]
    python benchmarks/bench_experiment.py batch-size  [--scale cpu|paper]
    python benchmarks/bench_experiment.py pairs       [--scale cpu|paper]
    python benchmarks/bench_experiment.py speed       [--scale cpu|paper]

Any other flag is passed on to `arm-jax run` (e.g. `--max-epochs 10`, `--annotation-quality 5`).

Each study runs `arm-jax run` once per setting (so every number here can be reproduced with
the CLI), then prints a markdown table of the final metrics (mean ± s.e. over seeds) and the
times, and writes `summary.json` (and, with matplotlib, `summary.png`) into --out.
`--scale paper` is the paper's size (D = 2048, 40 000 × 10 training items, 2 000 × 500 test
items, 20 rounds of k = 500, 1 000 steps): meant for a GPU. `--scale cpu` is a reduced size
that finishes in minutes on a 2-core CPU.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from arm_jax.cli.main import main as arm_jax
from arm_jax.experiment.results import mean_and_stderr
from arm_jax.runtime import files as io
from arm_jax.selection.catalog import SAMPLED_PAIR_MODES

SCALES = {
    # reduced: D = 256, 2 000 × 10 training items, 200 × 100 test items
    "cpu": ["--preset", "default", "--dim", "256", "--train-prompts", "2000", "--test-prompts", "200",
            "--test-responses", "100", "--rounds", "10", "--k", "250", "--initial-labels", "250",
            "--prompts-per-round", "250", "--candidates", "5000", "--steps", "500", "--best-of-n", "10,100"],
    "paper": ["--preset", "paper"],
}
BATCH_SIZES = (125, 250, 500, 1000)


def run(label: str, out: Path, args: list[str]) -> dict:
    print(f"== {label}: arm-jax run {' '.join(args)}", file=sys.stderr, flush=True)
    code = arm_jax(["run", *args, "--out", str(out), "--quiet"])
    if code:
        raise SystemExit(f"arm-jax run failed for {label} (exit {code})")
    return json.loads((out / "metrics.json").read_text())


def final_rows(label: str, payload: dict) -> list[dict]:
    n = str(payload["config"]["best_of_n"][-1])
    rows = []
    for name, rec in payload["results"].items():
        m, s = mean_and_stderr(rec["one_minus_spearman"])
        b, bs = mean_and_stderr(rec["best_of_n"][n])
        rows.append(dict(setting=label, strategy=name, annotations=payload["annotations"][-1],
                         one_minus_spearman=m[-1], se=s[-1], best_of_n=b[-1], bon_se=bs[-1], n=n))
    return rows


def markdown(rows: list[dict]) -> str:
    n = rows[0]["n"]
    lines = [f"| setting | strategy | annotations | 1 − Spearman | Best-of-{n} |",
             "|---|---|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r['setting']} | {r['strategy']} | {r['annotations']} | {r['one_minus_spearman']:.4f} ± {r['se']:.4f}"
            f" | {r['best_of_n']:.3f} ± {r['bon_se']:.3f} |"
        )
    return "\n".join(lines)


def plot(payloads: dict[str, dict], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, axes = plt.subplots(2, len(payloads), figsize=(4.2 * len(payloads), 7), squeeze=False)
    for col, (label, payload) in enumerate(payloads.items()):
        x = np.asarray(payload["annotations"])
        n = str(payload["config"]["best_of_n"][-1])
        for name, rec in payload["results"].items():
            for row, values in enumerate([rec["one_minus_spearman"], rec["best_of_n"][n]]):
                mean, se = mean_and_stderr(values)
                ax = axes[row, col]
                style = "-" if "dopt" in name else "--"
                (line,) = ax.plot(x, mean, style, label=name, lw=1.6)
                ax.fill_between(x, mean - se, mean + se, color=line.get_color(), alpha=0.15, lw=0)
        axes[0, col].set_title(label)
        axes[0, col].set_ylabel("1 − Spearman (lower is better)")
        axes[1, col].set_ylabel(f"Best-of-{n} (higher is better)")
        axes[1, col].set_xlabel("number of annotations")
        for ax in axes[:, col]:
            ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    with io.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", choices=("strategies", "batch-size", "pairs", "speed"))
    parser.add_argument("--scale", choices=sorted(SCALES), default="cpu")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None, help="default: results/bench/STUDY-SCALE")
    parser.add_argument("--strategies", default=None, help="override the study's strategies")
    args, passthrough = parser.parse_known_args(argv)
    out = args.out or Path("results/bench") / f"{args.study}-{args.scale}"
    base = SCALES[args.scale] + ["--seeds", str(args.seeds)] + passthrough
    payloads: dict[str, dict] = {}
    if args.study in ("strategies", "speed"):
        strategies = args.strategies or ("all" if args.study == "strategies" else "paper")
        extra = ["--no-plot"] if args.study == "speed" else []
        payloads[args.study] = run(args.study, out / args.study, base + ["--strategies", strategies] + extra)
    elif args.study == "batch-size":
        strategies = args.strategies or "random,entropy,maxdiff,dopt,pa_dopt"
        k0 = int(base[base.index("--k") + 1]) if "--k" in base else 500
        rounds0 = int(base[base.index("--rounds") + 1]) if "--rounds" in base else 20
        budget = k0 * rounds0
        for k in BATCH_SIZES:
            payloads[f"k={k}"] = run(f"k={k}", out / f"k{k}", base + [
                "--strategies", strategies, "--k", str(k), "--rounds", str(max(1, budget // k))])
    else:
        strategies = args.strategies or "random,entropy,maxdiff,dopt,pa_dopt"
        for mode in SAMPLED_PAIR_MODES:
            payloads[mode] = run(mode, out / mode, base + ["--strategies", strategies, "--pairs", mode])
    rows = [row for label, p in payloads.items() for row in final_rows(label, p)]
    table = markdown(rows)
    first = next(iter(payloads.values()))
    summary = {
        "study": args.study, "scale": args.scale, "backend": first["backend"], "devices": first["devices"],
        "wall_time_s": {label: p["wall_time_s"] for label, p in payloads.items()},
        "compile_time_s": {label: p["compile_time_s"] for label, p in payloads.items()},
        "run_time_s": {label: p["run_time_s"] for label, p in payloads.items()},
        "rows": [{k: (float(v) if isinstance(v, (np.floating, float)) else v) for k, v in r.items()} for r in rows],
    }
    io.write_json(out / "summary.json", summary)
    if args.study != "speed":
        plot(payloads, out / "summary.png")
    print(f"\n{args.study} ({args.scale} scale, backend {first['backend']}, {first['devices'][0]}):\n")
    print(table)
    for label, p in payloads.items():
        print(f"\n{label}: wall time {p['wall_time_s']:.1f} s = compile {p['compile_time_s']:.1f} s (one program"
              f" for all strategies) + run {p['run_time_s']:.1f} s + data and start-up")
    return 0


if __name__ == "__main__":
    sys.exit(main())
