"""Every setting of a rules study side by side, and the default's selection rule.

    python benchmarks/rules_table.py results/study22 [results/study23 ...] [--json table.json]

Reads ``ROOT/<corpus>-depth<d>/<pair mode>/metrics.json`` (what ``benchmarks/bench_rules.py
--out ROOT/<corpus>-depth<d>`` writes) and prints, per rule and setting (corpus, pair mode,
model), the label efficiency at 300 / 600 / 1 000 labels (:func:`bench_rules.label_efficiency`)
and the final paired difference to random; then, per policy (model + rule), the mean
efficiency over its settings and read points, the settings where it was worse than random by
more than one standard error (the paired difference over seeds of 1 − Spearman, averaged over
the read points 300, 600, 1 000 labels and the run's last count: one test per setting; a run to
3 000 labels is tested over 1 500 – 3 000 labels too, :data:`LATE_AT`), and the
single read points worse by more than one s.e. (for reference: a rule exactly as good as random
fails a single point one time in six). The default policy is the one never worse in any
setting with the highest mean efficiency.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_rules import EFFICIENCY_AT, analyse, efficiency_text, label_efficiency  # noqa: E402


def read_points(ann: np.ndarray) -> list[int]:
    """The rounds read: 300, 600 and 1 000 labels where the run has them, and its last."""
    return sorted({i for i, n in enumerate(ann) if n in EFFICIENCY_AT} | {len(ann) - 1})


def worse_than_random(payload: dict, name: str) -> list[int]:
    """Label counts (300, 600, 1 000 and the last) where ``name``'s 1 − Spearman is above
    random's by more than one standard error of the paired difference over seeds."""
    ann = np.asarray(payload["annotations"], float)
    rule = np.asarray(payload["results"][name]["one_minus_spearman"], float)
    rand = np.asarray(payload["results"]["random"]["one_minus_spearman"], float)
    out = []
    for i in read_points(ann):
        d = rule[:, i] - rand[:, i]
        if name != "random" and d.mean() > d.std(ddof=1) / np.sqrt(len(d)):
            out.append(int(ann[i]))
    return out


#: The late read points: a run to 3 000 labels is tested there too, on its own (a rule that buys
#: its labels early can fall behind random pairs later, and an average over the whole curve hides it).
LATE_AT = (1500, 2000, 2500, 3000)


def late_points(ann: np.ndarray) -> list[int]:
    """The rounds of :data:`LATE_AT` the run has (none for a run that stops before 1 500 labels)."""
    return [i for i, n in enumerate(ann) if n in LATE_AT]


def mean_difference(payload: dict, name: str, late: bool = False) -> tuple[float, float]:
    """(mean, s.e.) over seeds of the rule's 1 − Spearman minus random's, each seed's averaged
    over the read points (``late``: over :func:`late_points`; (0, 0) where there are none): one
    paired test per setting and segment (not one per point: with a 1 s.e. bar a rule exactly as
    good as random fails each point one time in six)."""
    ann = np.asarray(payload["annotations"], float)
    idx = late_points(ann) if late else read_points(ann)
    if not idx:
        return 0.0, 0.0
    rule = np.asarray(payload["results"][name]["one_minus_spearman"], float)[:, idx]
    rand = np.asarray(payload["results"]["random"]["one_minus_spearman"], float)[:, idx]
    d = (rule - rand).mean(axis=1)
    return float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(d)))


def curves(roots: list[Path]) -> dict:
    """``{(corpus, mode, model): (annotations, {rule: (seeds, rounds + 1) 1 − Spearman})}`` of
    the runs without a hedge (a later root's replaces an earlier one's)."""
    out = {}
    for path in _runs(roots):
        corpus, depth = path.parent.parent.name.rsplit("-depth", 1)
        if "-" in depth:
            continue
        payload = json.loads(path.read_text())
        key = (corpus, path.parent.name, "linear" if depth == "0" else "MLP")
        ann = np.asarray(payload["annotations"], float)
        if key in out and not np.array_equal(out[key][0], ann):
            del out[key]  # a later run on other label counts replaces the earlier one whole
        out.setdefault(key, (ann, {}))[1].update(
            {name: np.asarray(r["one_minus_spearman"], float) for name, r in payload["results"].items()})
    return out


def _runs(roots: list[Path]) -> list[Path]:
    """The metrics.json files below each root, root by root in the order given."""
    return [p for root in roots for p in sorted(root.glob("*-depth*/*/metrics.json"))]


def against_mlp(roots: list[Path], baseline: str = "random") -> str:
    """Label efficiency of each linear-model rule against the *MLP* with ``baseline`` (the labels
    MLP + baseline needs for the rule's error, over the rule's labels), per setting with both
    models on the same label counts: what a user who would otherwise label random pairs for
    the MLP (or follow the paper: ``dopt``) saves."""
    runs = curves(roots)
    lines = ["| linear + rule | " + " | ".join(f"{c} {m}" for c, m, model in runs if model == "linear"
                                               and (c, m, "MLP") in runs) + " |"]
    settings = [(c, m) for c, m, model in runs if model == "linear" and (c, m, "MLP") in runs]
    lines.append("|---|" + "---:|" * len(settings))
    rules = sorted({r for c, m in settings for r in runs[(c, m, "linear")][1]})
    for rule in rules:
        cells = []
        for c, m in settings:
            ann, lin = runs[(c, m, "linear")]
            ann_mlp, mlp = runs[(c, m, "MLP")]
            if rule not in lin or baseline not in mlp or not np.array_equal(ann, ann_mlp):
                cells.append("–")
                continue
            cells.append(" / ".join(efficiency_text(label_efficiency(lin[rule], mlp[baseline], ann, n))
                                    for n in EFFICIENCY_AT if n in ann))
        lines.append(f"| {rule} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_setting(path: Path) -> tuple[str, str, str]:
    """(corpus, depth, variant) of a run's ``ROOT/<corpus>-depth<d>[-<variant>]/<mode>/metrics.json``."""
    corpus, depth = path.parent.parent.name.rsplit("-depth", 1)
    depth, _, variant = depth.partition("-")
    return corpus, depth, variant


def rule_name(rule: str, variant: str) -> str:
    """A rule's name with its run's variant: ``rule (+NN% random)`` (``eps<NN>``), ``rule
    (in-prompt S)`` (``target``), ``rule (random from N)`` (``after<N>``)."""
    if variant.startswith("eps"):
        return f"{rule} (+{int(variant[3:])}% random)"
    if variant == "target":
        return f"{rule} (in-prompt S)"
    if variant.startswith("after"):
        return f"{rule} (random from {int(variant[5:])})"
    return rule


def collect(roots: list[Path]) -> tuple[list[str], dict]:
    """Every run below the roots (a later root's run of the same rule and setting replaces an
    earlier one's). A run directory ``<corpus>-depth<d>-eps<NN>`` is the hedge: its rules are
    listed as ``rule (+NN% random)``; ``<corpus>-depth<d>-target`` ran with ``--target-pairs
    in-prompt``: ``rule (in-prompt S)``; ``<corpus>-depth<d>-after<N>`` with ``--random-after N``:
    ``rule (random from N)``. Their random arm (the same as the plain run's) is left out."""
    settings, rows = [], {}
    for path in _runs(roots):
        corpus, depth, variant = run_setting(path)
        setting = f"{corpus} {path.parent.name} {'linear' if depth == '0' else 'MLP'}"
        payload = json.loads(path.read_text())
        if setting not in settings:
            settings.append(setting)
        for r in analyse(payload):
            rule = r["strategy"]
            if variant and rule == "random":
                continue
            rule = rule_name(rule, variant)
            mean, se = mean_difference(payload, r["strategy"])
            late, late_se = mean_difference(payload, r["strategy"], late=True)
            rows.setdefault(rule, {})[setting] = dict(
                efficiency=r["efficiency"], diff=r["diff_vs_random"], se=r["diff_se"],
                labels=int(payload["annotations"][-1]), worse_at=worse_than_random(payload, r["strategy"]),
                mean_diff=mean, mean_diff_se=se, late_diff=late, late_diff_se=late_se,
                to_3000=bool(late_points(np.asarray(payload["annotations"], float))),
            )
    return settings, rows


def summary(rows: dict) -> list[dict]:
    """One row per policy (model + rule) over its settings (corpus, pair mode): the mean
    efficiency, the settings whose mean paired difference (:func:`mean_difference`) is worse
    than random by more than one s.e., and the read points worse by more than one s.e."""
    policies = {}
    for rule, per in rows.items():
        for setting, c in per.items():
            corpus, mode, model = setting.split(" ")
            policies.setdefault(f"{model} + {rule}", {})[f"{corpus} {mode}"] = c
    out = []
    for policy, per in policies.items():
        ratios = [min(e["ratio"], e["censored_above"]) for c in per.values() for e in c["efficiency"]]
        worse = {s: _worse_text(c) for s, c in per.items() if _worse_text(c) and not policy.endswith("+ random")}
        points = {s: c["worse_at"] for s, c in per.items() if c["worse_at"]}
        # in s.e. beyond the one-s.e. line, over the segments measured (a setting not run to
        # 1 500 labels has no late segment: (0, 0) from mean_difference, not a difference of 0)
        excess = max(((c[k] - c[k + "_se"]) / c[k + "_se"] for c in per.values()
                      for k in ("mean_diff", "late_diff") if c[k + "_se"] > 0), default=float("inf"))
        out.append(dict(policy=policy, mean_efficiency=float(np.mean(ratios)), settings=len(per), worse=worse,
                        worse_points=points, late_settings=sum(bool(c.get("to_3000")) for c in per.values()),
                        worst_excess=float(excess)))
    return out


def _worse_text(c: dict) -> str:
    """'+0.0123 ± 0.0045' (over the read points) and/or 'late +0.0050 ± 0.0020' (over
    :data:`LATE_AT`) where the setting's mean paired difference is worse than random by more
    than one s.e.; '' where neither is."""
    parts = []
    if c["mean_diff"] > c["mean_diff_se"]:
        parts.append(f"{c['mean_diff']:+.4f} ± {c['mean_diff_se']:.4f}")
    if c.get("late_diff", 0.0) > c.get("late_diff_se", 0.0):
        parts.append(f"late {c['late_diff']:+.4f} ± {c['late_diff_se']:.4f}")
    return ", ".join(parts)


def measured_most(table: list[dict]) -> list[dict]:
    """The policies (not random) measured in the most settings and, among them, to 3 000 labels in
    the most: a default must be measured everywhere and along the whole curve (a policy never run
    late cannot fail the late test, and a mean over fewer settings is not comparable)."""
    table = [t for t in table if not t["policy"].endswith("+ random")]
    most = max((t["settings"] for t in table), default=0)
    table = [t for t in table if t["settings"] == most]
    longest = max((t.get("late_settings", 0) for t in table), default=0)
    return [t for t in table if t.get("late_settings", 0) == longest]


def choose(table: list[dict]) -> dict | None:
    """The default by the selection rule: among the policies :func:`measured_most`, those never
    worse than random by more than one s.e. in any setting (over the read points, and over
    1 500 – 3 000 labels), the one of highest mean efficiency; None when none is."""
    never = [t for t in measured_most(table) if not t["worse"]]
    return max(never, key=lambda t: t["mean_efficiency"], default=None)


def markdown(settings: list[str], rows: dict, table: list[dict]) -> str:
    lines = ["| rule | " + " | ".join(settings) + " |", "|---|" + "---:|" * len(settings)]
    for rule, per in rows.items():
        cells = []
        for s in settings:
            c = per.get(s)
            cells.append("–" if c is None else "/".join(efficiency_text(e).split(" ")[0] for e in c["efficiency"])
                         + f"; {c['diff']:+.3f} ± {c['se']:.3f}")
        lines.append(f"| {rule} | " + " | ".join(cells) + " |")
    lines += ["", "| policy | settings | mean efficiency | settings worse than random by > 1 s.e. (mean paired "
                  "difference over the read points) | read points worse by > 1 s.e. |", "|---|---:|---:|---|---|"]
    for t in sorted(table, key=lambda t: -t["mean_efficiency"]):
        worse = "; ".join(f"{s} {d}" for s, d in t["worse"].items()) or "never"
        points = "; ".join(f"{s} ({', '.join(map(str, n))})" for s, n in t["worse_points"].items()) or "none"
        lines.append(f"| {t['policy']} | {t['settings']} | {t['mean_efficiency']:.2f} | {worse} | {points} |")
    best, measured = choose(table), measured_most(table)
    lines += ["", "Measured in every setting and along the whole curve, never worse than random by more than one "
                  f"s.e. in any, highest mean efficiency: **{best['policy'] if best else 'none'}**"]
    if best is None and measured:
        close = min(measured, key=lambda t: t["worst_excess"])
        lines.append(f"(none passes; closest: {close['policy']}, worse than random by "
                     f"{1 + close['worst_excess']:.2f} s.e. where it is worst)")
    return "\n".join(lines)


def plot(settings: list[str], rows: dict, path: Path, rules: tuple = ()) -> None:
    """One panel per setting: each rule's label efficiency at 300 / 600 / 1 000 labels with its
    95 % interval (a censored end drawn at the run's bound, marked with an arrow), random's 1 as
    a line; ``rules``: which to draw (default: all)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rules = [r for r in (rules or rows) if r in rows]
    columns = list(dict.fromkeys(s.rsplit(" ", 1)[0] for s in settings))   # corpus and pair mode
    models = list(dict.fromkeys(s.rsplit(" ", 1)[1] for s in settings))    # one row per model
    fig, axes = plt.subplots(len(models), len(columns), figsize=(3.4 * len(columns), 3.2 * len(models)),
                             sharey=True, squeeze=False)
    handles = {}
    for (i, model), (k, column) in ((m, c) for m in enumerate(models) for c in enumerate(columns)):
        ax, setting = axes[i][k], f"{column} {model}"
        for j, rule in enumerate(rules):
            c = rows[rule].get(setting)
            if c is None:
                continue
            xs = np.arange(len(c["efficiency"])) + (j - len(rules) / 2) * 0.8 / len(rules)
            bound = lambda v, e: min(v, e["censored_above"]) if np.isfinite(v) else e["censored_above"]
            mid = np.array([bound(e["ratio"], e) for e in c["efficiency"]])
            low = np.array([bound(e["low"], e) for e in c["efficiency"]])
            high = np.array([bound(e["high"], e) for e in c["efficiency"]])
            handles[rule] = ax.errorbar(xs, mid, yerr=[mid - low, high - mid], fmt="osD^v<>"[j // 10 % 7], ms=4,
                                        capsize=2, color=plt.get_cmap("tab10")(j % 10), label=rule)
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_xticks(range(len(EFFICIENCY_AT)), [str(n) for n in EFFICIENCY_AT])
        ax.set_title(setting, fontsize=9)
        ax.set_xlabel("labels")
    for i, model in enumerate(models):
        axes[i][0].set_ylabel(f"{model}: label efficiency\nvs random (same model)")
    ncol = min(len(handles), 7)  # every rule a colour and marker of its own, the legend in rows
    fig.legend(list(handles.values()), list(handles), fontsize=8, loc="upper center", ncol=ncol)
    top = 1 - 0.08 * -(-len(handles) // ncol) / len(models)
    fig.tight_layout(rect=(0, 0, 1, top))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", type=Path, nargs="+",
                   help="the --out roots of the bench_rules.py runs (ROOT/<corpus>-depth<d>[-eps<NN>]/<mode>); a later "
                        "root's run of a rule and setting replaces an earlier one's")
    p.add_argument("--json", type=Path, default=None, help="also write the table as JSON")
    p.add_argument("--png", type=Path, default=None,
                   help="also draw each rule's label efficiency per setting with its interval (needs matplotlib)")
    p.add_argument("--rules", default="", help="comma-separated rules to draw in --png (default: all)")
    args = p.parse_args(argv)
    settings, rows = collect(args.root)
    if not settings:
        print(f"{' '.join(map(str, args.root))}: no <corpus>-depth<d>/<mode>/metrics.json below", file=sys.stderr)
        return 2
    table = summary(rows)
    print(markdown(settings, rows, table))
    if args.png:
        plot(settings, rows, args.png, tuple(r for r in args.rules.split(",") if r))
    for baseline, what in (("random", "random pairs on the MLP"), ("dopt", "the paper's policy, the MLP with dopt")):
        print(f"\nAgainst {what} (efficiency at 300 / 600 / 1 000 labels, 95 % paired bootstrap):\n")
        print(against_mlp(args.root, baseline))
    if args.json:
        from arm_jax.runtime import files as io

        io.write_json(args.json, {"settings": settings, "rows": rows, "summary": table})
    return 0


if __name__ == "__main__":
    sys.exit(main())
