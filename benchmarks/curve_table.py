"""Rules against random pairs along the whole curve, for runs to 3 000 labels.

    python benchmarks/curve_table.py results/study25/long results/study26 [--png F] [--json F]

Reads the same ``ROOT/<corpus>-depth<d>[-<variant>]/<mode>/metrics.json`` runs as
``rules_table.py`` (a variant's rule is named as there, e.g. ``iopt (random from 1000)``), keeps
those that reach 1 500 labels or more, and prints per setting the paired difference in
1 − Spearman of each rule to its own run's random arm (rule − random, seed by seed; mean ± s.e.)
at 300, 600, 1 000, 1 500, 2 000, 2 500 and 3 000 labels: **bold** beyond two standard errors,
*italic* beyond one. Negative is better than random. ``--png``: one panel per setting, each
rule's mean difference with its ±1 s.e. band.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rules_table import _runs, rule_name, run_setting  # noqa: E402

AT = (300, 600, 1000, 1500, 2000, 2500, 3000)


def differences(payload: dict, name: str) -> dict[int, tuple[float, float]]:
    """``{labels: (mean, s.e.)}`` of ``name``'s 1 − Spearman minus random's over seeds, at :data:`AT`."""
    ann = list(payload["annotations"])
    rule = np.asarray(payload["results"][name]["one_minus_spearman"], float)
    rand = np.asarray(payload["results"]["random"]["one_minus_spearman"], float)
    out = {}
    for n in AT:
        if n in ann:
            d = rule[:, ann.index(n)] - rand[:, ann.index(n)]
            out[n] = (float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(d))))
    return out


def collect(roots: list[Path]) -> dict:
    """``{setting: {rule: {labels: (mean, s.e.)}, "random": {labels: mean}}}`` of the long runs
    (a later root's run of a rule and setting replaces an earlier one's)."""
    out = {}
    for path in _runs(roots):
        payload = json.loads(path.read_text())
        if payload["annotations"][-1] < 1500:
            continue
        corpus, depth, variant = run_setting(path)
        setting = f"{corpus} {path.parent.name} {'linear' if depth == '0' else 'MLP'}"
        per = out.setdefault(setting, {})
        rand = np.asarray(payload["results"]["random"]["one_minus_spearman"], float).mean(axis=0)
        per.setdefault("random", {}).update({n: float(rand[payload["annotations"].index(n)])
                                             for n in AT if n in payload["annotations"]})
        for name in payload["results"]:
            if name != "random":
                per[rule_name(name, variant)] = differences(payload, name)
    return out


def _cell(mean: float, se: float) -> str:
    text = f"{mean:+.3f} ± {se:.3f}"
    return f"**{text}**" if abs(mean) > 2 * se else f"*{text}*" if abs(mean) > se else text


def markdown(table: dict) -> str:
    lines = []
    for setting, per in table.items():
        lines += [f"\n**{setting}** (1 − Spearman; rules: paired difference to random, negative is better)\n",
                  "| | " + " | ".join(str(n) for n in AT) + " |", "|---|" + "---:|" * len(AT)]
        lines.append("| random | " + " | ".join(f"{per['random'][n]:.3f}" if n in per["random"] else "–"
                                               for n in AT) + " |")
        for rule, d in per.items():
            if rule != "random":
                lines.append(f"| {rule} | " + " | ".join(_cell(*d[n]) if n in d else "–" for n in AT) + " |")
    return "\n".join(lines)


def plot(table: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rules = list(dict.fromkeys(r for per in table.values() for r in per if r != "random"))  # one colour each
    ncols = min(3, len(table))
    nrows = -(-len(table) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.8 * ncols, 3.0 * nrows + 0.6), sharey=True, squeeze=False)
    for ax, (setting, per) in zip(axes.flat, table.items()):
        for rule, d in ((r, d) for r, d in per.items() if r != "random"):
            xs = np.array(sorted(d))
            mean, se = (np.array([d[n][i] for n in xs]) for i in (0, 1))
            colour = plt.get_cmap("tab10")(rules.index(rule) % 10)
            ax.plot(xs, mean, "o-", ms=3, color=colour, label=rule)
            ax.fill_between(xs, mean - se, mean + se, color=colour, alpha=0.2)
        ax.axhline(0.0, color="k", lw=0.8)
        ax.set_title(setting, fontsize=9)
        ax.set_xlabel("labels")
    for ax in axes.flat[len(table):]:
        ax.set_visible(False)
    for row in axes:
        row[0].set_ylabel("1 − Spearman, rule − random\n(± 1 s.e.; below 0: better)")
    handles = [plt.Line2D([], [], color=plt.get_cmap("tab10")(i % 10), marker="o", ms=3) for i in range(len(rules))]
    fig.legend(handles, rules, fontsize=8, loc="upper center", ncol=min(len(rules), 4))
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / (3.0 * nrows + 0.6)))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", type=Path, nargs="+", help="the --out roots of the bench_rules.py runs")
    p.add_argument("--png", type=Path, default=None, help="also draw the differences (needs matplotlib)")
    p.add_argument("--json", type=Path, default=None, help="also write the table as JSON")
    args = p.parse_args(argv)
    table = collect(args.root)
    if not table:
        print(f"{' '.join(map(str, args.root))}: no run below reaches 1 500 labels", file=sys.stderr)
        return 2
    print(markdown(table))
    if args.png:
        plot(table, args.png)
    if args.json:
        from arm_jax.runtime import files as io

        io.write_json(args.json, {s: {r: {str(n): v for n, v in d.items()} for r, d in per.items()}
                                  for s, per in table.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
