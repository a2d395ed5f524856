"""Annotators as they really are: ties, an unreliable rater in a panel, several raters per pair.

    python benchmarks/bench_annotators.py [--seeds 5] [--out DIR] [--reuse]

Three studies on the LLM-like task (the ``cpu`` scale of bench_experiment.py: D = 256,
2 000 × 10 training items, 250 + 10 × 250 labels, in-prompt pairs, the MLP under the training
default), each a pair of ``arm-jax run`` variants on the same seeds, with the rules random,
entropy, dopt and uncertain_iopt (the rule that led on real ratings in bench_rules.py):

- ties: the raters tie on 20 % of random pairs (``--tie-rate 0.2``); Davidson's likelihood
  with a fitted tie strength (tie-aware) vs dropping the tie votes (``--no-tie-model``);
- panel: five raters, one labelling at random (``--annotator-quality 0,1,1,1,1``); with a
  fitted reliability per rater vs without (``--no-reliability``);
- soft: every pair labelled by five raters (``--raters-per-pair 5``); trained on the vote
  counts vs on the majority label (``--aggregate majority``);
- graded panel: qualities 0.3, 1, 1, 2, 4, rules random and dopt, with vs without reliabilities.

For each variant and rule: the final 1 − Spearman and Best-of-N, mean ± s.e. over seeds, the
paired difference to random (bench_rules.py's analysis), and the paired difference between
the two variants of a study (seed by seed); *better*/*worse* beyond two standard errors. For
the panels: the correlation (Pearson, per seed, then mean ± s.e.) of the final fit's
reliabilities with the true qualities, and for the ties the fitted tie strength against the
simulator's. Writes summary.json, summary.md and summary.png to --out and prints the markdown.
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
from bench_experiment import SCALES, plot, run  # noqa: E402
from bench_rules import analyse  # noqa: E402

RULES = "random,entropy,dopt,uncertain_iopt"
PANEL = (0.0, 1.0, 1.0, 1.0, 1.0)
GRADED = (0.3, 1.0, 1.0, 2.0, 4.0)
STUDIES = {
    "ties": (["--tie-rate", "0.2"], {"tie-aware": [], "drop-ties": ["--no-tie-model"]}),
    "panel": (["--annotator-quality", ",".join(map(str, PANEL))],
              {"reliability": [], "no-reliability": ["--no-reliability"]}),
    "soft": (["--raters-per-pair", "5"], {"votes": [], "majority": ["--aggregate", "majority"]}),
    "graded": (["--annotator-quality", ",".join(map(str, GRADED)), "--strategies", "random,dopt"],
               {"reliability": [], "no-reliability": ["--no-reliability"]}),
}


def _verdict(diff: float, se: float) -> str:
    """Lower 1 − Spearman is better: the first variant is better when diff < −2 s.e."""
    return "level" if not se == se or abs(diff) <= 2 * se else ("better" if diff < 0 else "worse")


def compare(first: dict, second: dict) -> dict:
    """Per rule: paired final 1 − Spearman difference first − second over seeds."""
    out = {}
    for name, rec in first["results"].items():
        a = np.asarray(rec["one_minus_spearman"], float)[:, -1]
        b = np.asarray(second["results"][name]["one_minus_spearman"], float)[:, -1]
        d, s = mean_and_stderr(a - b)
        out[name] = {"diff": float(d), "se": float(s), "verdict": _verdict(float(d), float(s))}
    return out


def reliability_recovery(payload: dict, qualities) -> dict:
    """Correlation of each seed's final reliabilities with the true qualities, per rule."""
    out = {}
    for name, rec in payload["results"].items():
        if "reliability" not in rec:
            continue
        final = np.asarray(rec["reliability"], float)[:, -1, :]  # (seeds, raters)
        corr = [float(np.corrcoef(q, qualities)[0, 1]) for q in final]
        m, s = mean_and_stderr(np.asarray(corr))
        out[name] = {"pearson": float(m), "se": float(s), "final_mean": final.mean(0).round(3).tolist()}
    return out


def tie_recovery(payload: dict) -> dict:
    """Each rule's final fitted tie strength ν, mean ± s.e. over seeds."""
    out = {}
    for name, rec in payload["results"].items():
        if "tie_strength" in rec:
            m, s = mean_and_stderr(np.asarray(rec["tie_strength"], float)[:, -1])
            out[name] = {"nu": float(m), "se": float(s)}
    return out


def markdown(study: str, names: list[str], rows: dict, cmp: dict, extra: str) -> str:
    pair = len(names) == 2
    lines = [f"**{study}** ({', '.join(names)}; 1 − Spearman after the last round, mean ± s.e.; in brackets "
             "the paired difference to random)", "",
             "| rule | " + " | ".join(names) + (f" | {names[0]} − {names[1]} (paired)" if pair else "") + " |",
             "|---|" + "---:|" * (len(names) + pair)]
    for rule in rows[names[0]]:
        cells = []
        for v in names:
            r = rows[v][rule]
            cells.append(f"{r['one_minus_spearman']:.4f} ± {r['se']:.4f} "
                         f"({r['diff_vs_random']:+.4f} ± {r['diff_se']:.4f} {r['verdict']})")
        if pair:
            c = cmp[rule]
            cells.append(f"{c['diff']:+.4f} ± {c['se']:.4f} {c['verdict']}")
        lines.append(f"| {rule} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + (f"\n\n{extra}" if extra else "")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--studies", default=",".join(STUDIES))
    p.add_argument("--out", type=Path, default=Path("results/bench/annotators"))
    p.add_argument("--reuse", action="store_true", help="analyse existing metrics.json files instead of running")
    args, passthrough = p.parse_known_args(argv)
    base = SCALES["cpu"] + ["--task", "llm-like", "--pairs", "in-prompt", "--seeds", str(args.seeds)] + passthrough
    summary, sections, curves = {"command": sys.argv, "studies": {}}, [], {}
    for study in args.studies.split(","):
        flags, variants = STUDIES[study]
        payloads, rows = {}, {}
        for variant, more in variants.items():
            run_dir = args.out / study / variant
            cmd = base + flags + more
            if "--strategies" not in cmd:
                cmd += ["--strategies", RULES]
            if args.reuse and (run_dir / "metrics.json").exists():
                payloads[variant] = json.loads((run_dir / "metrics.json").read_text())
            else:
                payloads[variant] = run(f"{study}/{variant}", run_dir, cmd)
            rows[variant] = {r["strategy"]: r for r in analyse(payloads[variant])}
            curves[f"{study}: {variant}"] = payloads[variant]
        record = {"variants": {v: list(r.values()) for v, r in rows.items()}}
        extra = []
        names = list(variants)
        cmp = compare(payloads[names[0]], payloads[names[1]]) if len(names) == 2 else {}
        record["compare"] = cmp
        if study in ("panel", "graded"):
            truth = PANEL if study == "panel" else GRADED
            rec = record["reliability_recovery"] = reliability_recovery(payloads[names[0]], truth)
            extra.append(f"reliability vs true quality {truth}: " + "; ".join(
                f"{k} r = {v['pearson']:.3f} ± {v['se']:.3f} (mean final q {v['final_mean']})" for k, v in rec.items()))
        if study == "ties":
            rec = record["tie_recovery"] = tie_recovery(payloads[names[0]])
            truth_nu = record["simulated_tie_strength"] = payloads[names[0]].get("simulated_tie_strength")
            extra.append(f"simulated ν = {truth_nu}; fitted at the last round: " + "; ".join(
                f"{k} {v['nu']:.3f} ± {v['se']:.3f}" for k, v in rec.items()))
        summary["studies"][study] = record
        sections.append(markdown(study, names, rows, cmp, "\n".join(extra)))
    text = "\n\n".join(sections) + "\n"
    io.write_json(args.out / "summary.json", summary)
    io.write_text(args.out / "summary.md", text)
    plot(curves, args.out / "summary.png")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
