"""Every selection rule against random, honestly: curves, paired differences, labels saved.

    python benchmarks/bench_rules.py --task llm-like [--depth 3] [--out DIR]
    python benchmarks/bench_rules.py --data data/afinn --depth 0 [--out DIR]   # real ratings

Runs ``arm-jax run`` once per pair mode (in-prompt and cross-prompt), every strategy in one
compiled program, the same seeds and data for every strategy, under the training default.
For each strategy it reports, from metrics.json:

- 1 − Spearman and Best-of-N after the last round, mean ± s.e. over seeds;
- the paired difference to random over seeds (strategy − random, seed by seed) with its
  s.e.; ``better``/``worse`` where it exceeds two standard errors, else ``level``;
- labels needed to reach random's final 1 − Spearman (its mean over seeds): per seed, linear
  interpolation between rounds, censored at the last round's count where a seed never gets
  there (how many do is shown); the saving is the paired difference to random's own per-seed
  count (random − strategy, seed by seed), mean ± s.e.;
- the selection kernel's time per round: ``strategies.select`` on a pool of the run's
  candidate count and feature dimension with the run's final number of labels as the past,
  median of 3 calls after a warm-up (``block_until_ready``).

Writes summary.json, summary.md and summary.png (learning curves, mean ± s.e.) to --out, and
prints the markdown. Default sizes: the LLM-like task at the ``cpu`` scale of
bench_experiment.py (D = 256, 2 000 × 10 training items, 250 + 10 × 250 labels); with
``--data`` the real-rating protocol (100 + 10 × 100 labels, all training prompts each round).
Pass any other ``arm-jax run`` flag after the options.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from arm_jax.experiment import informed
from arm_jax.experiment.results import mean_and_stderr
from arm_jax.runtime import files as io
from bench_experiment import SCALES, plot, run  # noqa: E402

RATINGS_PROTOCOL = ["--rounds", "10", "--k", "100", "--initial-labels", "100", "--candidates", "5000",
                    "--best-of-n", "10,100"]


def labels_to_reach(curve: np.ndarray, annotations: np.ndarray, target: float) -> float:
    """First annotation count where ``curve`` (lower is better) reaches ``target``, by linear
    interpolation between rounds; NaN if it never does."""
    below = np.flatnonzero(curve <= target)
    if below.size == 0:
        return float("nan")
    i = int(below[0])
    if i == 0:
        return float(annotations[0])
    c0, c1 = curve[i - 1], curve[i]
    frac = (c0 - target) / (c0 - c1) if c0 != c1 else 1.0
    return float(annotations[i - 1] + frac * (annotations[i] - annotations[i - 1]))


#: Label counts at which each rule's label efficiency is read (where the run reaches them).
EFFICIENCY_AT = (300, 600, 1000)


def efficiency_ratio(rule: np.ndarray, rand: np.ndarray, ann: np.ndarray, n0: float) -> float:
    """Labels random needs to reach the rule's mean error at ``n0`` labels, over ``n0``: the
    curves (seeds, rounds + 1) averaged over their seeds, the rule's read at ``n0`` and random's
    made monotone (its running minimum) and interpolated; inf where random never gets there
    within the run (then the ratio is above ann[-1] / n0), 0 where the rule is worse than
    random's first count (the ratio is below ann[0] / n0)."""
    target = float(np.interp(n0, ann, rule.mean(axis=0)))
    rand_curve = np.minimum.accumulate(rand.mean(axis=0))
    if target > rand_curve[0]:  # worse than random at its first count: below ann[0] / n0
        return 0.0
    reach = labels_to_reach(rand_curve, ann, target)
    return reach / n0 if reach == reach else float("inf")


def label_efficiency(rule: np.ndarray, rand: np.ndarray, ann: np.ndarray, n0: float, draws: int = 2000) -> dict:
    """:func:`efficiency_ratio` with a 95 % interval from a paired bootstrap over seeds (the same
    seeds resampled for the rule and for random)."""
    rng = np.random.default_rng(0)
    seeds = rule.shape[0]
    boot = np.array([efficiency_ratio(rule[i], rand[i], ann, n0)
                     for i in (rng.integers(0, seeds, seeds) for _ in range(draws))])
    low, high = np.quantile(boot, [0.025, 0.975])
    return dict(n=int(n0), ratio=efficiency_ratio(rule, rand, ann, n0), low=float(low), high=float(high),
                censored_above=float(ann[-1] / n0), censored_below=float(ann[0] / n0))


def efficiency_text(e: dict) -> str:
    """'1.45 (1.21–1.80)'; '>' where random's curve never reached the rule's error, '<' where
    the rule's error is above random's at its first count."""
    fmt = lambda r: (f">{e['censored_above']:.1f}" if not np.isfinite(r)
                     else f"<{e['censored_below']:.2f}" if r == 0 else f"{r:.2f}")
    return f"{fmt(e['ratio'])} ({fmt(e['low'])}–{fmt(e['high'])})"


def analyse(payload: dict) -> list[dict]:
    ann = np.asarray(payload["annotations"], float)
    n = str(payload["config"]["best_of_n"][-1])
    res = payload["results"]
    rand = np.asarray(res["random"]["one_minus_spearman"], float)  # (seeds, rounds + 1)
    rand_bon = np.asarray(res["random"]["best_of_n"][n], float)
    target = float(rand[:, -1].mean())
    censored = lambda curves: np.array([labels_to_reach(c, ann, target) for c in curves])
    rand_reach = censored(rand)
    rand_reach = np.where(np.isfinite(rand_reach), rand_reach, ann[-1])
    rows = []
    for name, rec in res.items():
        oms = np.asarray(rec["one_minus_spearman"], float)
        bon = np.asarray(rec["best_of_n"][n], float)
        m, s = mean_and_stderr(oms[:, -1])
        bm, bs = mean_and_stderr(bon[:, -1])
        d, ds = mean_and_stderr(oms[:, -1] - rand[:, -1])
        bd, bds = mean_and_stderr(bon[:, -1] - rand_bon[:, -1])
        reach = censored(oms)
        ok = np.isfinite(reach)
        reach = np.where(ok, reach, ann[-1])  # never reached: censored at the last count
        rm, rs = mean_and_stderr(reach)
        sv, svs = mean_and_stderr(rand_reach - reach)
        verdict = lambda diff, se, lower_better: (
            "level" if name == "random" or abs(diff) <= 2 * se or se != se
            else ("better" if (diff < 0) == lower_better else "worse")
        )
        rows.append(dict(
            strategy=name, one_minus_spearman=float(m), se=float(s), best_of_n=float(bm), bon_se=float(bs),
            diff_vs_random=float(d), diff_se=float(ds), verdict=verdict(d, ds, True),
            bon_diff_vs_random=float(bd), bon_diff_se=float(bds), bon_verdict=verdict(bd, bds, False),
            labels_to_random_final=float(rm), labels_se=float(rs), seeds_reaching=int(ok.sum()),
            seeds=int(oms.shape[0]), saving=float(sv), saving_se=float(svs),
            curve_mean=mean_and_stderr(oms)[0].tolist(), curve_se=mean_and_stderr(oms)[1].tolist(),
            efficiency=[label_efficiency(oms, rand, ann, n0) for n0 in EFFICIENCY_AT if ann[0] < n0 <= ann[-1]],
        ))
    return rows


def selection_times(payload: dict, names: list[str], feature_dim: int) -> dict[str, float]:
    """Median seconds of one round's selection per strategy (kernel only, after a warm-up)."""
    import jax

    from arm_jax.selection import pool, registry
    from arm_jax.selection import scores as strategies

    cfg = payload["config"]
    n, k, past = cfg["n_candidates"], cfg["k"], payload["annotations"][-1]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, feature_dim)).astype(np.float32)
    beta = (rng.normal(size=feature_dim) / np.sqrt(feature_dim)).astype(np.float32)
    past_x = rng.normal(size=(past, feature_dim)).astype(np.float32)
    # the items behind the pairs, for the response-level rules: item 2i has features x_i and
    # item 2i+1 zeros, in groups of 45 pairs (a prompt of 10 responses)
    phi = np.zeros((2 * n, feature_dim), np.float32)
    phi[0::2] = x
    items = strategies.PairItems(phi, np.arange(0, 2 * n, 2), np.arange(1, 2 * n, 2), np.arange(n) // 45)
    out = {}
    for name in names:
        if name == informed.INFORMED:  # a reference arm of the experiment, not a rule to time
            continue
        extra = {"items": items} if name in registry.RESPONSE_RULES else {}
        call = lambda: jax.block_until_ready(
            pool.select(name, jax.random.PRNGKey(0), x, beta, k, None, past_x, **extra)
        )
        call()
        times = []
        for _ in range(3):
            t = time.perf_counter()
            call()
            times.append(time.perf_counter() - t)
        out[name] = float(np.median(times))
    return out


def markdown(label: str, payload: dict, rows: list[dict], times: dict[str, float]) -> str:
    n = payload["config"]["best_of_n"][-1]
    last = payload["annotations"][-1]
    lines = [f"**{label}** ({last} labels; paired differences to random over {rows[0]['seeds']} seeds; "
             f"better/worse: beyond two standard errors)", "",
             f"| strategy | 1 − Spearman | vs random | Best-of-{n} | vs random | labels to random's final | "
             f"saved vs random | select s/round |" + "".join(f" efficiency at {e['n']} |" for e in rows[0]["efficiency"]),
             "|---|---:|---:|---:|---:|---:|---:|---:|" + "---:|" * len(rows[0]["efficiency"])]
    for r in rows:
        reach = (f"{r['labels_to_random_final']:.0f} ± {r['labels_se']:.0f}"
                 + ("" if r["seeds_reaching"] == r["seeds"] else f" ({r['seeds_reaching']}/{r['seeds']} reach)"))
        saving = f"{r['saving']:+.0f} ± {r['saving_se']:.0f}"
        lines.append(
            f"| {r['strategy']} | {r['one_minus_spearman']:.4f} ± {r['se']:.4f} | "
            f"{r['diff_vs_random']:+.4f} ± {r['diff_se']:.4f} {r['verdict']} | "
            f"{r['best_of_n']:.3f} ± {r['bon_se']:.3f} | {r['bon_diff_vs_random']:+.3f} ± {r['bon_diff_se']:.3f} "
            f"{r['bon_verdict']} | {reach} | {saving} | {times.get(r['strategy'], float('nan')):.3f} |"
            + "".join(f" {efficiency_text(e)} |" for e in r["efficiency"])
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)  # --seed goes to arm-jax run, not to --seeds
    p.add_argument("--task", default="llm-like", help="built-in task (ignored with --data)")
    p.add_argument("--data", default=None, help="directory with the paper's four .npy files")
    p.add_argument("--depth", type=int, default=3, help="hidden layers; 0: the linear reward model")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--strategies", default="all")
    p.add_argument("--modes", default="in-prompt,cross-prompt")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--reuse", action="store_true", help="analyse existing metrics.json files instead of running")
    args, passthrough = p.parse_known_args(argv)
    name = Path(args.data).name if args.data else args.task
    out = args.out or Path("results/bench") / f"rules-{name}-depth{args.depth}"
    if args.data:
        d = args.data.rstrip("/")
        base = [f"--train-embeddings={d}/embd_train.npy", f"--train-rewards={d}/reward_train.npy",
                f"--test-embeddings={d}/embd_test.npy", f"--test-rewards={d}/reward_test.npy"]
        n_prompts = int(np.load(f"{d}/embd_train.npy", mmap_mode="r").shape[0])
        base += RATINGS_PROTOCOL + ["--prompts-per-round", str(n_prompts)]
    else:
        base = SCALES["cpu"] + ["--task", args.task]
    base += ["--seeds", str(args.seeds), "--depth", str(args.depth), "--strategies", args.strategies] + passthrough
    payloads, sections, summary = {}, [], {"command": sys.argv, "runs": {}}
    for mode in args.modes.split(","):
        run_dir = out / mode
        if args.reuse and (run_dir / "metrics.json").exists():
            payload = json.loads((run_dir / "metrics.json").read_text())
        else:
            payload = run(mode, run_dir, base + ["--pairs", mode])
        payloads[mode] = payload
        rows = analyse(payload)
        if args.depth:
            h = payload["config"]["model"]["width"]
        elif args.data:
            h = int(np.load(f"{args.data.rstrip('/')}/embd_train.npy", mmap_mode="r").shape[-1])
        else:
            h = payload["config"]["dim"]
        times = selection_times(payload, [r["strategy"] for r in rows], h)
        sections.append(markdown(f"{name}, depth {args.depth}, {mode}", payload, rows, times))
        summary["runs"][mode] = {"rows": rows, "select_seconds": times, "wall_time_s": payload["wall_time_s"],
                                 "backend": payload["backend"], "config": payload["config"]}
    text = "\n\n".join(sections) + "\n"
    io.write_json(out / "summary.json", summary)
    io.write_text(out / "summary.md", text)
    plot(payloads, out / "summary.png")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
