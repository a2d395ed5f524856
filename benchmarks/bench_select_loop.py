"""The annotation loop itself, under real raters: ``select → annotate → select`` as a user runs it.

What ``bench_rules.py`` measures inside the compiled experiment, this measures through
:func:`arm_jax.workflow.select.select_pairs` (the ``select`` command's library call), so that a
policy only ``select`` has can be studied: ``--depth auto`` (fit the linear model and the MLP, keep
the one of lower held-out loss, every call). One warm process; every call trains from scratch on
all the labels so far, as ``select`` does.

Protocol (the real-rating protocol of ``bench_rules.py``): the corpus's training items are the
pool (prompt ids: the corpus's prompts); a cold-start ``random`` call picks the first k labels;
then each round ``select`` trains on the labels, picks k more among ``--candidates`` sampled
candidate pairs with the policy's rule, and the empirical annotator labels them (one recorded
rating of each item, drawn uniformly among its raters; the higher wins, equal ratings tie:
``arm_jax.experiment.annotator.annotate_empirical``, written as vote counts). The model each
call trained is scored on the test prompts (1 − Spearman and Best-of-N against the mean rating).

Usage::

    python benchmarks/bench_select_loop.py --data data/tweets --pairs cross-prompt --seeds 8 \\
        --policies linear:random,linear:iopt,auto:random,auto:iopt --out results/loop/tweets

Writes ``OUT/<pairs>/metrics.json`` in ``arm-jax run``'s layout (one entry per policy, named
``<model>:<rule>``) and prints each policy's label efficiency against random pairs on the linear
model and against random pairs on its own model (``bench_rules.analyse``).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from arm_jax.experiment import annotator, metrics  # noqa: E402
from arm_jax.model import network as model_lib  # noqa: E402
from arm_jax.workflow import policy  # noqa: E402
from arm_jax.workflow import select as realdata  # noqa: E402
from bench_rules import analyse, efficiency_text  # noqa: E402

MODELS = ("linear", "auto")


def load_corpus(directory: Path) -> dict:
    """The corpus's arrays: training embeddings (N, D) and prompt ids, packed ratings (N, M),
    test embeddings (P, R, D) and mean ratings (P, R)."""
    train = np.load(directory / "embd_train.npy")
    p, r, d = train.shape
    ratings = np.load(directory / "ratings_train.npy").reshape(p * r, -1)
    test = np.load(directory / "embd_test.npy")
    gold = np.load(directory / "reward_test.npy").reshape(test.shape[:2])
    return dict(items=train.reshape(p * r, d), prompts=np.repeat(np.arange(p), r), ratings=ratings,
                test=test, gold=gold)


def annotate(key, ratings: np.ndarray, rows: list) -> list[str]:
    """Label lines (vote counts) for the picked rows (``{"a": id, "b": id}``) by one real rater each."""
    a = np.array([int(r["a"]) for r in rows], np.int32)
    b = np.array([int(r["b"]) for r in rows], np.int32)
    counts = np.asarray(annotator.annotate_empirical(key, ratings, a, b))
    return [json.dumps({"a": str(x), "b": str(y), "votes_a": int(c[0]), "votes_b": int(c[1]), "votes_tie": int(c[2])})
            for x, y, c in zip(a.tolist(), b.tolist(), counts)]


def evaluate(result, corpus: dict, best_of: tuple[int, ...]) -> tuple[float, list[float]]:
    """1 − Spearman and Best-of-N of the model the call trained, on the test prompts."""
    test = corpus["test"]
    pred = model_lib.reward(result.params, result.model_config, test.reshape(-1, test.shape[-1]))
    pred = np.asarray(pred).reshape(test.shape[:2])
    oms = float(metrics.one_minus_spearman(pred, corpus["gold"]))
    return oms, [float(v) for v in np.asarray(metrics.best_of_n(pred, corpus["gold"], best_of))]


def run_policy(model: str, rule: str, seed: int, corpus: dict, args, work: Path) -> dict:
    """One seed of one policy: ``rounds + 1`` fits (100, 200, … labels), each scored."""
    labels = work / f"labels-{model}-{rule}-{seed}.jsonl"
    labels.write_text("")
    key = jax.random.fold_in(jax.random.key(args.seed), seed)
    common = dict(pairs=args.pairs, n_candidates=args.candidates, train_config=None, log=lambda _: None,
                  random_after=None if args.random_after == "never" else int(args.random_after))
    mlp = policy.POLICIES["paper"].model
    curve, bon, chosen, seconds = [], [], [], []
    for step in range(args.rounds + 2):  # the cold start, then a fit at each label count
        start = time.perf_counter()
        result = realdata.select_pairs(
            work / "pool.npz", labels if step else None, work / "next.jsonl", rule if step else "random", args.k,
            seed=1000 * seed + step, model_config=mlp if model == "auto" else None, auto_depth=model == "auto" and step > 0,
            **common,
        )
        seconds.append(time.perf_counter() - start)
        if step:
            oms, best = evaluate(result, corpus, args.best_of_n)
            curve.append(oms)
            bon.append(best)
            chosen.append(result.model_config.depth)
        if step <= args.rounds:
            key, sub = jax.random.split(key)
            with labels.open("a") as f:
                f.write("".join(line + "\n" for line in annotate(sub, corpus["ratings"], result.rows)))
    return dict(curve=curve, bon=bon, depth=chosen, seconds=seconds)


def payload(runs: dict, args, baseline: str) -> dict:
    """``arm-jax run``'s metrics.json layout, ``baseline`` the policy named "random" in it."""
    results = {}
    for name, seeds in runs.items():
        bon = np.asarray([s["bon"] for s in seeds])  # (seeds, rounds + 1, len(best_of_n))
        results["random" if name == baseline else name] = dict(
            one_minus_spearman=[s["curve"] for s in seeds],
            best_of_n={str(n): bon[:, :, i].tolist() for i, n in enumerate(args.best_of_n)},
            depth_chosen=[s["depth"] for s in seeds],
            seconds_per_call=float(np.mean([np.mean(s["seconds"][1:]) for s in seeds])),
        )
    annotations = [args.k * (i + 1) for i in range(args.rounds + 1)]
    return dict(annotations=annotations, config=dict(best_of_n=list(args.best_of_n), pairs=args.pairs,
                                                     k=args.k, candidates=args.candidates, data=str(args.data)),
                results=results)


def report(pay: dict, against: str) -> None:
    print(f"\nagainst {against} (efficiency at 300 / 600 / 1 000 labels; final 1 − Spearman difference):")
    for row in analyse(pay):
        eff = " / ".join(efficiency_text(e) for e in row["efficiency"])
        print(f"  {row['strategy']:<14} {eff}; {row['diff_vs_random']:+.4f} ± {row['diff_se']:.4f} ({row['verdict']})")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="a corpus directory of make ratings-data")
    p.add_argument("--pairs", default="cross-prompt", choices=("cross-prompt", "in-prompt"))
    p.add_argument("--policies", default="linear:random,linear:iopt,auto:random,auto:iopt",
                   help="comma-separated MODEL:RULE, MODEL one of linear, auto (--depth auto)")
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--candidates", type=int, default=5000)
    p.add_argument("--best-of-n", type=lambda s: tuple(int(x) for x in s.split(",")), default=(10, 100))
    p.add_argument("--random-after", default="never", metavar="N|never",
                   help="select's hand-off to random pairs from N labelled pairs on (default: never, so each "
                        "policy is its rule alone)")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    policies = [tuple(x.split(":")) for x in args.policies.split(",")]
    if any(m not in MODELS for m, _ in policies) or ("linear", "random") not in policies:
        p.error("--policies: MODEL:RULE with MODEL in linear, auto, and linear:random among them")
    corpus = load_corpus(args.data)
    out = args.out / args.pairs
    out.mkdir(parents=True, exist_ok=True)
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        np.savez(work / "pool.npz", embeddings=corpus["items"], prompt_ids=corpus["prompts"])
        for model, rule in policies:
            name = f"{model}:{rule}"
            runs[name] = []
            for seed in range(args.seeds):
                runs[name].append(run_policy(model, rule, seed, corpus, args, work))
                last = runs[name][-1]
                print(f"{name} seed {seed}: 1 − Spearman {last['curve'][0]:.3f} → {last['curve'][-1]:.3f}, "
                      f"{np.mean(last['seconds'][1:]):.2f} s/call, depths {last['depth']}", flush=True)
    full = payload(runs, args, "linear:random")
    (out / "metrics.json").write_text(json.dumps(full))
    report(full, "linear:random")
    for model in MODELS:
        if model != "linear" and (model, "random") in policies:
            own = payload({k: v for k, v in runs.items() if k.startswith(model + ":")}, args, f"{model}:random")
            report(own, f"{model}:random")
    return 0


if __name__ == "__main__":
    sys.exit(main())
