"""Add another run's arms (e.g. its random arm) to a run's metrics.json, after checking that the
two runs are one experiment: the same config but for the strategies and the flags that only
change a rule (``random_after``, ``explore``, ``target_pairs``), the same label counts and seeds,
and the same round-0 numbers (the same first random labels).

    python benchmarks/merge_arms.py RUN/metrics.json OTHER/metrics.json --arms random

Saves a rerun of an arm whose numbers cannot differ: random pairs read no posterior, so a run
of ``iopt --random-after 1000`` can take its random arm from an earlier run of the same seeds.
Then ``bench_rules.py --reuse`` (or ``rules_table.py``) reads the merged file. Writes in place,
atomically; exit 2 with one line when the runs differ.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

RULE_ONLY = ("random_after", "explore", "target_pairs", "files")


def _config(payload: dict) -> dict:
    return {k: v for k, v in payload["config"].items() if k not in RULE_ONLY}


def check_same_experiment(run: dict, other: dict, arms: list[str]) -> None:
    """ValueError naming the first difference between the runs' experiments."""
    if _config(run) != _config(other):
        diff = sorted(k for k in set(_config(run)) | set(_config(other)) if _config(run).get(k) != _config(other).get(k))
        raise ValueError(f"the runs' configs differ in {', '.join(diff)}")
    if run["annotations"] != other["annotations"]:
        raise ValueError("the runs' label counts differ")
    for arm in arms:
        if arm not in other["results"]:
            raise ValueError(f"the other run has no arm {arm!r} (it has {', '.join(other['results'])})")
    mine, theirs = next(iter(run["results"].values())), other["results"][arms[0]]
    if mine["seeds"] != theirs["seeds"]:
        raise ValueError("the runs' seeds differ")
    if [s[0] for s in mine["one_minus_spearman"]] != [s[0] for s in theirs["one_minus_spearman"]]:
        raise ValueError("the runs' round-0 numbers differ: not the same first labels")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path, help="the metrics.json to add the arms to (written in place)")
    p.add_argument("other", type=Path, help="the metrics.json to take them from")
    p.add_argument("--arms", default="random", help="comma-separated arm names (default: random)")
    args = p.parse_args(argv)
    arms = [a for a in args.arms.split(",") if a]
    try:
        run, other = (json.loads(path.read_text()) for path in (args.run, args.other))
        check_same_experiment(run, other, arms)
    except (OSError, ValueError, KeyError) as e:
        print(f"merge_arms: {args.run} + {args.other}: {e}", file=sys.stderr)
        return 2
    run["results"] = {**{a: other["results"][a] for a in arms}, **run["results"]}
    run.setdefault("merged_arms", {}).update({a: str(args.other) for a in arms})
    fd, tmp = tempfile.mkstemp(dir=args.run.parent, prefix=".metrics.")
    with os.fdopen(fd, "w") as f:
        json.dump(run, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o644)
    os.replace(tmp, args.run)
    print(f"merge_arms: {', '.join(arms)} from {args.other} -> {args.run}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
