"""How good is the reward model a training setting gives, at each label count?

    python benchmarks/bench_training.py [--counts 100,1000,10000] [--seeds 5] [--json out.json]
    python benchmarks/bench_training.py --data data/afinn --depth 0 --settings linear   # real ratings

With ``--data DIR`` the task is the paper's four .npy files in DIR (e.g. the real-rating
benchmark that ``make ratings-data`` builds) instead of the built-in one. ``--settings linear``
is the linear model's list: the exact fit at each fixed prior of the grid, AdamW schedules,
and the default (the prior chosen on held-out labels).

On the built-in LLM-like task (D = 64 by default), ``n`` labels of uniformly random pairs of
training items, labelled by the simulated annotator (quality 1, the run default), train a fresh
reward model under each setting; quality = 1 − Spearman within the test prompts (the
experiment's metric; lower is better) and the Spearman of all test items against the hidden
reward. Five seeds (the labels and the initialisation change; the task does not), vmapped.
Calibration: the expected calibration error (10 bins, both orientations of each pair) of the
plug-in P(a ≻ b) = σ(r̂_a − r̂_b) and of the Laplace posterior predictive
(:func:`arm_jax.selection.posterior.predictive_probability`) on 4 000 fresh random pairs labelled by the
same annotator and never trained on. Prints a markdown table (mean ± standard error) per label count and marks settings more than
two standard errors worse than the best; writes JSON with --json.
"""
from __future__ import annotations

import argparse
import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

from arm_jax.experiment import annotator, metrics
from arm_jax.experiment import datasets as data
from arm_jax.experiment.results import mean_and_stderr
from arm_jax.model import buffer as buffer_lib
from arm_jax.model import config, evaluate, fit_linear
from arm_jax.model import fit as train
from arm_jax.model import network as model
from arm_jax.selection import posterior

CALIBRATION_PAIRS = 4000
SETTINGS = {
    "steps 1000 (old default)": config.TrainConfig(steps=1000, early_stopping=False),
    "steps 200": config.TrainConfig(steps=200, early_stopping=False),
    "max-epochs 5": config.TrainConfig(steps=1000, max_epochs=5.0, early_stopping=False),
    "max-epochs 10": config.TrainConfig(steps=1000, max_epochs=10.0, early_stopping=False),
    "max-epochs 20": config.TrainConfig(steps=1000, max_epochs=20.0, early_stopping=False),
    "weight-decay 1e-2": config.TrainConfig(steps=1000, weight_decay=1e-2, early_stopping=False),
    "early stopping (no refit)": config.TrainConfig(refit=False),
    "default (early stopping + refit)": config.TrainConfig(),
}
LINEAR_SETTINGS = ["steps 1000 (old default)", "max-epochs 10", "weight-decay 1e-2"]
for _c in fit_linear.LINEAR_PRIOR_GRID:
    SETTINGS[f"exact (prior {_c:g})"] = config.TrainConfig(linear_prior=_c)
    LINEAR_SETTINGS.append(f"exact (prior {_c:g})")
SETTINGS["exact (prior by held-out 1-s.e. rule)"] = config.TrainConfig(linear_prior_rule="held-out")
SETTINGS["exact (prior by 5-fold 1-s.e. rule)"] = config.TrainConfig(linear_prior_rule="cross-validation")
SETTINGS["exact (prior by evidence)"] = config.TrainConfig(linear_prior_rule="evidence")
LINEAR_SETTINGS += ["exact (prior by held-out 1-s.e. rule)", "exact (prior by 5-fold 1-s.e. rule)",
                    "exact (prior by evidence)", "default (early stopping + refit)"]


def draw_labels(key, rewards, n_items, n, reward_std):
    k_a, k_b, k_y = jax.random.split(key, 3)
    a = jax.random.randint(k_a, (n,), 0, n_items, jnp.int32)
    b = jax.random.randint(k_b, (n,), 0, n_items - 1, jnp.int32)
    b = b + (b >= a)
    winner, loser = annotator.annotate(k_y, rewards, a, b, 1.0, reward_std)
    return buffer_lib.buffer_from_pairs(winner, loser)


def quality(params, model_config, ds):
    pred = model.reward(params, model_config, ds.test_embeddings)
    within = metrics.one_minus_spearman(pred, ds.test_rewards)
    overall = 1.0 - metrics.one_minus_spearman(pred.reshape(1, -1), ds.test_rewards.reshape(1, -1))
    return within, overall


def run_setting(cfg, model_config, ds, n, keys):
    """Fit 1 fresh model per key on n random labels; the data enter the program as arguments."""

    def one(key, train_x, train_r, test_x, test_r):
        label_key, fit_key, check_key = jax.random.split(key, 3)
        buffer = draw_labels(label_key, train_r, train_x.shape[0], n, jnp.std(train_r))
        params, stats = train.fit(fit_key, train_x, buffer, model_config, cfg)
        within, overall = quality(params, model_config, data.Dataset(None, None, test_x, test_r))
        # calibration: fresh random pairs labelled by the same annotator, never trained on
        fresh = draw_labels(check_key, train_r, train_x.shape[0], CALIBRATION_PAIRS, jnp.std(train_r))
        phi = model.features(params, model_config, train_x)
        x_fresh = phi[fresh.pairs[:, 0]] - phi[fresh.pairs[:, 1]]
        x_past = phi[buffer.pairs[:, 0]] - phi[buffer.pairs[:, 1]]
        post = posterior.laplace(model.head(params), x_past, buffer.mask, stats.prior_precision)
        plug_in = jax.nn.sigmoid(x_fresh @ model.head(params))
        return within, overall, stats.epochs, plug_in, posterior.predictive_probability(post, x_fresh)

    fn = jax.jit(jax.vmap(one, in_axes=(0, None, None, None, None)))
    args = (ds.train_embeddings.reshape(-1, ds.train_embeddings.shape[-1]), ds.train_rewards.reshape(-1),
            ds.test_embeddings, ds.test_rewards)
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(keys, *args))
    within, overall, epochs, plug_in, predictive = (np.asarray(x, np.float64) for x in out)
    ece = lambda p: np.array([evaluate.expected_calibration_error(row) for row in p])
    return [within, overall, epochs, ece(plug_in), ece(predictive)], time.perf_counter() - t0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--counts", default="100,1000,10000")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--settings", default=None,
                   help="comma-separated names from the list above, or 'linear' (the linear model's list); "
                        "default: every setting but the fixed linear priors")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--depth", type=int, default=3, help="hidden layers; 0: the linear reward model")
    p.add_argument("--train-prompts", type=int, default=1000)
    p.add_argument("--data", default=None, help="directory with embd_{train,test}.npy and reward_{train,test}.npy")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    counts = [int(c) for c in args.counts.split(",")]
    if args.settings is None:
        names = [n for n in SETTINGS if not n.startswith("exact (prior")]
    elif args.settings == "linear":
        names = LINEAR_SETTINGS
    else:
        names = [s.strip() for s in args.settings.split(",")]
    if args.data:
        d = args.data.rstrip("/")
        ds = data.load_paper_files(f"{d}/embd_train.npy", f"{d}/reward_train.npy", f"{d}/embd_test.npy",
                                   f"{d}/reward_test.npy")
        ds = jax.tree_util.tree_map(jnp.asarray, ds)
        what = f"data {d}"
    else:
        ds = data.llm_like(jax.random.PRNGKey(0), n_train_prompts=args.train_prompts, n_responses=10,
                           n_test_prompts=100, n_test_responses=50, dim=args.dim)
        what = f"LLM-like task, D = {args.dim}"
    model_config = model.ModelConfig(depth=args.depth)
    keys = jax.random.split(jax.random.PRNGKey(1), args.seeds)
    print(f"{what}: train {ds.train_embeddings.shape[:-1]}, test {ds.test_embeddings.shape[:-1]}, "
          f"D = {ds.train_embeddings.shape[-1]}; {args.seeds} seeds; model {model_config}; backend {jax.default_backend()}")
    results = []
    for n in counts:
        rows = []
        for name in names:
            cfg = SETTINGS[name]
            (within, overall, epochs, ece, ece_post), secs = run_setting(cfg, model_config, ds, n, keys)
            m, s = mean_and_stderr(within)
            om, os_ = mean_and_stderr(overall)
            rows.append(dict(labels=n, setting=name, one_minus_spearman=float(m), se=float(s),
                             spearman_all=float(om), spearman_all_se=float(os_),
                             epochs=float(np.mean(epochs)), seconds=round(secs, 2),
                             ece=float(np.mean(ece)), ece_se=float(mean_and_stderr(ece)[1]),
                             ece_posterior=float(np.mean(ece_post)), ece_posterior_se=float(mean_and_stderr(ece_post)[1]),
                             config=dataclasses.asdict(cfg)))
        best = min(rows, key=lambda r: r["one_minus_spearman"])
        print(f"\n**{n} labels** (1 − Spearman within prompts, lower is better; * = more than 2 s.e. worse than the best)\n")
        print("| setting | 1 − Spearman | Spearman, all items | epochs | ECE σ(gap) | ECE posterior | s |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            gap = r["one_minus_spearman"] - best["one_minus_spearman"]
            worse = gap > 2 * np.hypot(r["se"], best["se"])
            print(f"| {r['setting']} | {r['one_minus_spearman']:.3f} ± {r['se']:.3f}{' *' if worse else ''} | "
                  f"{r['spearman_all']:.3f} ± {r['spearman_all_se']:.3f} | {r['epochs']:.1f} | "
                  f"{r['ece']:.3f} ± {r['ece_se']:.3f} | {r['ece_posterior']:.3f} ± {r['ece_posterior_se']:.3f} | "
                  f"{r['seconds']:.1f} |")
        results.extend(rows)
    if args.json:
        from arm_jax.runtime import files as io

        io.write_json(args.json, {"results": results, "seeds": args.seeds, "data": args.data or "llm-like",
                                  "dim": int(ds.train_embeddings.shape[-1]), "depth": args.depth})


if __name__ == "__main__":
    main()
