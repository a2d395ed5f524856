"""When to stop labelling: what the stopping rule of ``select --report`` would have saved.

    python benchmarks/bench_stopping.py [--seeds 5] [--out DIR] [--reuse] [--rounds 20]

Runs ``arm-jax run`` on the LLM-like task (the ``cpu`` scale of bench_experiment.py, but 20
rounds of 250: 5 250 labels) with random, dopt and uncertain_iopt, and reads each round's
information gain per label of its batch (``batch_gain`` in metrics.json: log det of the head's
posterior precision with the batch minus without it, under the model trained on everything,
divided by the batch size). The rule (``arm_jax.selection.stopping``): stop after the first round r ≥ 2
at which this gain has been below τ × the first active round's for two rounds in a row.
For several τ it reports, over seeds (mean ± s.e.): the round and labels at which the rule
stops, the labels it saves against running every round, and the quality lost, 1 − Spearman
at the stop minus at the last round (paired, seed by seed). Writes summary.json and
summary.md to --out and prints the markdown.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from arm_jax.experiment.results import mean_and_stderr
from arm_jax.runtime import files as io
from arm_jax.selection import stopping
from bench_experiment import SCALES, run  # noqa: E402

FRACTIONS = (0.5, 0.3, 0.2, 0.1)


def analyse(payload: dict, fractions=FRACTIONS) -> list[dict]:
    ann = np.asarray(payload["annotations"], float)
    rows = []
    for name, rec in payload["results"].items():
        gain = np.asarray(rec["batch_gain"], float)  # (seeds, rounds + 1)
        oms = np.asarray(rec["one_minus_spearman"], float)
        for tau in fractions:
            stops = np.array([stopping.stop_round(g, tau) for g in gain])
            last = gain.shape[1] - 1
            at = np.where(stops >= 0, stops, last)
            labels = ann[at]
            lost = oms[np.arange(len(at)), at] - oms[:, last]
            r = dict(strategy=name, fraction=tau, stopped=int((stops >= 0).sum()), seeds=len(stops))
            for key, values in (("round", at.astype(float)), ("labels", labels), ("saved", ann[last] - labels),
                                ("quality_lost", lost)):
                m, s = mean_and_stderr(values)
                r[key], r[key + "_se"] = float(m), float(s)
            rows.append(r)
    return rows


def markdown(rows: list[dict], total: float) -> str:
    lines = [f"Stopping rule: stop when the batch's information gain per label has been below τ × the first "
             f"active round's for two rounds in a row ({int(total)} labels if never); mean ± s.e. over seeds.", "",
             "| strategy | τ | seeds stopped | stop round | labels | saved | 1 − Spearman lost |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['strategy']} | {r['fraction']:g} | {r['stopped']}/{r['seeds']} | "
                     f"{r['round']:.1f} ± {r['round_se']:.1f} | {r['labels']:.0f} ± {r['labels_se']:.0f} | "
                     f"{r['saved']:.0f} ± {r['saved_se']:.0f} | {r['quality_lost']:+.4f} ± {r['quality_lost_se']:.4f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--strategies", default="random,dopt,uncertain_iopt")
    p.add_argument("--out", type=Path, default=Path("results/bench/stopping"))
    p.add_argument("--reuse", action="store_true", help="analyse an existing metrics.json instead of running")
    args, passthrough = p.parse_known_args(argv)
    base = [a for a in SCALES["cpu"]]
    base[base.index("--rounds") + 1] = str(args.rounds)
    cmd = base + ["--task", "llm-like", "--pairs", "in-prompt", "--seeds", str(args.seeds),
                  "--strategies", args.strategies] + passthrough
    run_dir = args.out / "run"
    if args.reuse and (run_dir / "metrics.json").exists():
        payload = json.loads((run_dir / "metrics.json").read_text())
    else:
        payload = run("stopping", run_dir, cmd)
    rows = analyse(payload)
    text = markdown(rows, payload["annotations"][-1]) + "\n"
    io.write_json(args.out / "summary.json", {"command": sys.argv, "rows": rows, "config": payload["config"],
                                               "wall_time_s": payload["wall_time_s"], "backend": payload["backend"]})
    io.write_text(args.out / "summary.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
