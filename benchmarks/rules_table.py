"""Every setting of a rules study side by side, and the default's selection rule.

    python benchmarks/rules_table.py results/study22 [--json table.json]

Reads ``ROOT/<corpus>-depth<d>/<pair mode>/metrics.json`` (what ``benchmarks/bench_rules.py
--out ROOT/<corpus>-depth<d>`` writes) and prints, per rule and setting (corpus, pair mode,
model), the label efficiency at 300 / 600 / 1 000 labels (:func:`bench_rules.label_efficiency`)
and the final paired difference to random; then, per rule, the mean efficiency over every
setting and read point, and where it was worse than random by more than one standard error
(paired over seeds, 1 − Spearman) at 300, 600, 1 000 labels or the run's last count. The
default policy is the rule that is never worse and has the highest mean efficiency.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_rules import EFFICIENCY_AT, analyse, efficiency_text  # noqa: E402


def worse_than_random(payload: dict, name: str) -> list[int]:
    """Label counts (300, 600, 1 000 and the last) where ``name``'s 1 − Spearman is above
    random's by more than one standard error of the paired difference over seeds."""
    ann = np.asarray(payload["annotations"], float)
    rule = np.asarray(payload["results"][name]["one_minus_spearman"], float)
    rand = np.asarray(payload["results"]["random"]["one_minus_spearman"], float)
    out = []
    for i, n in enumerate(ann):
        if name != "random" and (n in EFFICIENCY_AT or i == len(ann) - 1):
            d = rule[:, i] - rand[:, i]
            if d.mean() > d.std(ddof=1) / np.sqrt(len(d)):
                out.append(int(n))
    return out


def collect(root: Path) -> tuple[list[str], dict]:
    settings, rows = [], {}
    for path in sorted(root.glob("*-depth*/*/metrics.json")):
        corpus, depth = path.parent.parent.name.rsplit("-depth", 1)
        setting = f"{corpus} {path.parent.name} {'linear' if depth == '0' else 'MLP'}"
        payload = json.loads(path.read_text())
        settings.append(setting)
        for r in analyse(payload):
            rows.setdefault(r["strategy"], {})[setting] = dict(
                efficiency=r["efficiency"], diff=r["diff_vs_random"], se=r["diff_se"],
                labels=int(payload["annotations"][-1]), worse_at=worse_than_random(payload, r["strategy"]),
            )
    return settings, rows


def summary(rows: dict) -> list[dict]:
    out = []
    for rule, per in rows.items():
        ratios = [min(e["ratio"], e["censored_above"]) for c in per.values() for e in c["efficiency"]]
        worse = {s: c["worse_at"] for s, c in per.items() if c["worse_at"]}
        out.append(dict(rule=rule, mean_efficiency=float(np.mean(ratios)), settings=len(per), worse=worse))
    return out


def markdown(settings: list[str], rows: dict, table: list[dict]) -> str:
    lines = ["| rule | " + " | ".join(settings) + " |", "|---|" + "---:|" * len(settings)]
    for rule, per in rows.items():
        cells = []
        for s in settings:
            c = per.get(s)
            cells.append("–" if c is None else "/".join(efficiency_text(e).split(" ")[0] for e in c["efficiency"])
                         + f"; {c['diff']:+.3f} ± {c['se']:.3f}")
        lines.append(f"| {rule} | " + " | ".join(cells) + " |")
    lines += ["", "| rule | mean efficiency | worse than random by > 1 s.e. at |", "|---|---:|---|"]
    for t in sorted(table, key=lambda t: -t["mean_efficiency"]):
        worse = "; ".join(f"{s} ({', '.join(map(str, n))})" for s, n in t["worse"].items()) or "never"
        lines.append(f"| {t['rule']} | {t['mean_efficiency']:.2f} | {worse} |")
    never = [t for t in table if not t["worse"] and t["rule"] != "random"]
    best = max(never, key=lambda t: t["mean_efficiency"], default=None)
    lines += ["", f"Never worse than random by more than one s.e., highest mean efficiency: "
                  f"**{best['rule'] if best else 'none'}**"]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", type=Path, help="the --out root of the bench_rules.py runs (ROOT/<corpus>-depth<d>/<mode>)")
    p.add_argument("--json", type=Path, default=None, help="also write the table as JSON")
    args = p.parse_args(argv)
    settings, rows = collect(args.root)
    if not settings:
        print(f"{args.root}: no <corpus>-depth<d>/<mode>/metrics.json below", file=sys.stderr)
        return 2
    table = summary(rows)
    print(markdown(settings, rows, table))
    if args.json:
        from arm_jax.runtime import files as io

        io.write_json(args.json, {"settings": settings, "rows": rows, "summary": table})
    return 0


if __name__ == "__main__":
    sys.exit(main())
