"""Labelling costs: quality against cost spent, with and without cost-aware selection.

    python benchmarks/bench_costs.py [--seeds 5] [--out DIR] [--reuse]

The LLM-like task at the ``cpu`` scale of bench_experiment.py (in-prompt pairs), each item
costing a log-normal reading time (``--item-costs lognormal``; a pair the sum of its two), the
rules random, dopt and greedy_dopt, once picking the pairs of largest gain (``plain``) and once
of largest gain per unit cost (``--cost-aware``; random stays random). Each seed's curve of
1 − Spearman against the cost spent is interpolated at a common cost (the least any run spent
by its last round); reported: mean ± s.e. over seeds, and paired differences (seed by seed) to
random and between the two variants of a rule. Writes summary.json, summary.md and summary.png
(quality against cost) to --out and prints the markdown.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from arm_jax.experiment.results import mean_and_stderr, plot_learning_curves
from arm_jax.runtime import files as io
from bench_experiment import SCALES, run  # noqa: E402

RULES = "random,dopt,greedy_dopt"
VARIANTS = {"plain": [], "cost-aware": ["--cost-aware"]}


def at_cost(rec: dict, cost: float) -> np.ndarray:
    """Each seed's 1 − Spearman interpolated at ``cost`` spent."""
    oms = np.asarray(rec["one_minus_spearman"], float)
    spent = np.asarray(rec["cost_spent"], float)
    return np.array([np.interp(cost, s, o) for s, o in zip(spent, oms)])


def _verdict(d, s):
    return "level" if not s == s or abs(d) <= 2 * s else ("better" if d < 0 else "worse")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--out", type=Path, default=Path("results/bench/costs"))
    p.add_argument("--reuse", action="store_true")
    args, passthrough = p.parse_known_args(argv)
    base = SCALES["cpu"] + ["--task", "llm-like", "--pairs", "in-prompt", "--seeds", str(args.seeds),
                            "--item-costs", "lognormal", "--strategies", RULES] + passthrough
    payloads = {}
    for variant, more in VARIANTS.items():
        run_dir = args.out / variant
        if args.reuse and (run_dir / "metrics.json").exists():
            payloads[variant] = json.loads((run_dir / "metrics.json").read_text())
        else:
            payloads[variant] = run(f"costs/{variant}", run_dir, base + more)
    cost = min(float(np.min(np.asarray(rec["cost_spent"], float)[:, -1]))
               for payload in payloads.values() for rec in payload["results"].values())
    values = {(v, name): at_cost(rec, cost) for v, payload in payloads.items()
              for name, rec in payload["results"].items()}
    rows = []
    for (variant, name), val in values.items():
        m, s = mean_and_stderr(val)
        d, ds = mean_and_stderr(val - values[(variant, "random")])
        row = dict(variant=variant, strategy=name, one_minus_spearman=float(m), se=float(s),
                   vs_random=float(d), vs_random_se=float(ds), verdict=_verdict(d, ds) if name != "random" else "level")
        if variant == "cost-aware" and name != "random":
            c, cs = mean_and_stderr(val - values[("plain", name)])
            row.update(vs_plain=float(c), vs_plain_se=float(cs), plain_verdict=_verdict(c, cs))
        final = np.asarray(payloads[variant]["results"][name]["cost_spent"], float)[:, -1]
        row["cost_per_label"] = float(final.mean() / payloads[variant]["annotations"][-1])
        rows.append(row)
    lines = [f"1 − Spearman at the cost of {cost:.0f} spent (mean ± s.e. over {args.seeds} seeds; paired differences; "
             "better/worse: beyond two standard errors)", "",
             "| variant | rule | cost per label | 1 − Spearman | vs random | cost-aware − plain |",
             "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        cmp = (f"{r['vs_plain']:+.4f} ± {r['vs_plain_se']:.4f} {r['plain_verdict']}" if "vs_plain" in r else "")
        lines.append(f"| {r['variant']} | {r['strategy']} | {r['cost_per_label']:.2f} | {r['one_minus_spearman']:.4f} ± "
                     f"{r['se']:.4f} | {r['vs_random']:+.4f} ± {r['vs_random_se']:.4f} {r['verdict']} | {cmp} |")
    text = "\n".join(lines) + "\n"
    merged = {"config": payloads["plain"]["config"], "annotations": payloads["plain"]["annotations"],
              "results": {f"{name} ({v})": rec for v, payload in payloads.items() for name, rec in payload["results"].items()
                          if not (v == "cost-aware" and name == "random")}}
    plot_learning_curves(merged, args.out / "summary.png", title="quality against cost spent", x_key="cost_spent")
    io.write_json(args.out / "summary.json", {"command": sys.argv, "cost": cost, "rows": rows})
    io.write_text(args.out / "summary.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
