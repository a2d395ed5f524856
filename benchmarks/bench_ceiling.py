"""How many labels could any rule save? The design ratio of the optimal I-optimal design.

    python benchmarks/bench_ceiling.py --data data/tweets --pairs cross-prompt [--json out.json]

For the linear reward model on a data set's embeddings, at the best head in class β*
(:func:`arm_jax.experiment.informed.best_head` of the true rewards,
:func:`~arm_jax.experiment.informed.true_reward`: the simulated annotator's logit scale, or the
real raters' when the data has ``ratings_train.npy``), over one round's candidate pairs
(the experiment's own pool, :func:`arm_jax.experiment.pools.pool_items`):

- x_i the candidates' embedding differences, v_i = σ'(x_iᵀβ*) their Fisher weights at β*,
  S the pool's spread (:func:`arm_jax.selection.scores.spread_matrix`, I-optimality's S),
  λ = ``--prior`` labels' worth of prior (λ = c · mean|x|²/(4D), the linear fit's scale);
- the optimal continuous design of n labels: w ≥ 0, Σw = n minimising
  f(w) = tr(S (Σ wᵢvᵢxᵢxᵢᵀ + λI)⁻¹), by the multiplicative algorithm
  wᵢ ← wᵢ (gᵢ / ḡ)^½ with gᵢ = vᵢ xᵢᵀM⁻¹SM⁻¹xᵢ and ḡ = Σwᵢgᵢ/n, in float64, until the
  duality gap n·max gᵢ − Σwᵢgᵢ ≥ f(w) − f* is below ``--tol`` of f(w) (or ``--max-iter``);
- random labels: n' pairs drawn uniformly from the pool give f = tr(S (n'F̄ + λI)⁻¹) in
  expectation of the information, F̄ = mean vᵢxᵢxᵢᵀ; the **design ratio** is the n' (bisection)
  at which random matches the optimal design's f, over n. Reported as an interval: n' for
  f(w) (what the design found: a lower bound on the ratio) and for f(w) − gap (an upper one).

This is the asymptotic variance ratio at the truth: a reference for what a rule could save,
not a bound on measured label efficiency (n ≈ D is far from asymptotic, and the prior adds
bias). Prints a table; ``--json`` writes the numbers. Repeat over ``--pools`` candidate pools
(seeds) for mean ± s.e.
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np


def load(directory: Path, quality: float):
    """(items (N, D) float64, truth (N,) float64, P, R, annotator) of a data set directory."""
    import jax.numpy as jnp

    from arm_jax.experiment import informed

    emb = np.load(directory / "embd_train.npy")
    rewards = np.load(directory / "reward_train.npy").reshape(-1).astype(np.float32)
    p, r, d = emb.shape
    ratings_file = directory / "ratings_train.npy"
    ratings = None
    if ratings_file.exists():
        from arm_jax.experiment.annotator import pack_ratings

        ratings = jnp.asarray(pack_ratings(np.load(ratings_file).reshape(p * r, -1)))
    truth = informed.true_reward(jnp.asarray(rewards), jnp.std(jnp.asarray(rewards)), (quality,), ratings)
    annotator = "empirical" if ratings is not None else f"simulated (quality {quality:g})"
    return emb.reshape(p * r, d).astype(np.float64), np.asarray(truth, np.float64), p, r, annotator


def candidates(seed: int, mode: str, p: int, r: int, n_candidates: int, items, beta):
    """(x (C, D), v (C,), S (D, D)) of one candidate pool, float64."""
    import jax
    import jax.numpy as jnp

    from arm_jax.experiment import pools
    from arm_jax.model.likelihood import gap_variance
    from arm_jax.selection.scores import spread_matrix

    pool = pools.pool_to_global(pools.pool_items(jax.random.PRNGKey(seed), mode, p, r, p, n_candidates))
    valid = np.asarray(pool.valid)
    a, b = np.asarray(pool.a)[valid], np.asarray(pool.b)[valid]
    x = items[a] - items[b]
    v = np.asarray(gap_variance(jnp.asarray(x @ beta)), np.float64)
    with jax.default_matmul_precision("highest"):
        s = np.asarray(spread_matrix(jnp.asarray(x, jnp.float32), jnp.ones(len(x), bool)), np.float64)
    return x, v, s


def i_criterion(m: np.ndarray, s: np.ndarray) -> float:
    """tr(S M⁻¹) for M positive definite."""
    return float(np.trace(np.linalg.solve(m, s)))


def optimal_design(x, v, s, lam, n, tol, max_iter, w0=None):
    """The multiplicative algorithm for min tr(S (Σ wᵢvᵢxᵢxᵢᵀ + λI)⁻¹) over w ≥ 0, Σw = n.
    Returns (w, f(w), duality gap, iterations)."""
    c, d = x.shape
    w = np.full(c, n / c) if w0 is None else w0 * (n / w0.sum())
    eye = lam * np.eye(d)
    for it in range(1, max_iter + 1):
        m = (x * (w * v)[:, None]).T @ x + eye
        inv = np.linalg.inv(m)
        b = inv @ s @ inv
        g = v * np.einsum("ij,jk,ik->i", x, b, x, optimize=True)
        f = float(np.trace(inv @ s))
        mean_g = float(w @ g) / n
        gap = n * float(g.max()) - float(w @ g)
        if gap <= tol * f:
            break
        w = w * np.sqrt(g / mean_g)
        w *= n / w.sum()
    return w, f, gap, it


def random_labels_for(target: float, f_bar, s, lam, hi: float) -> float:
    """The n' at which tr(S (n'F̄ + λI)⁻¹) = target (decreasing in n'), by bisection on a log
    scale; ``hi`` if even ``hi`` labels do not get there (reported as '>')."""
    values, vectors = np.linalg.eigh(f_bar)
    values = np.maximum(values, 0.0)
    s_rot = np.diagonal(vectors.T @ s @ vectors)
    crit = lambda n: float(np.sum(s_rot / (n * values + lam)))
    if crit(hi) > target:
        return float("inf")
    lo = 1e-3
    for _ in range(200):
        mid = np.sqrt(lo * hi)
        lo, hi = (mid, hi) if crit(mid) > target else (lo, mid)
    return float(hi)


def study(args) -> dict:
    from arm_jax.experiment import informed
    from arm_jax.model.fit_linear import LINEAR_DEFAULT_PRIOR

    items, truth, p, r, annotator = load(args.data, args.quality)
    beta = np.asarray(informed.best_head(items.astype(np.float32), truth.astype(np.float32)), np.float64)
    rows = []
    for seed in range(args.pools):
        x, v, s = candidates(seed, args.pairs, p, r, args.candidates, items, beta)
        lam = (args.prior or LINEAR_DEFAULT_PRIOR) * np.mean(np.sum(x * x, axis=1)) / (4 * x.shape[1])
        f_bar = (x * v[:, None]).T @ x / len(x)
        w = None
        for n in args.n:
            t = time.perf_counter()
            w, f, gap, iters = optimal_design(x, v, s, lam, n, args.tol, args.max_iter, w)
            found = random_labels_for(f, f_bar, s, lam, hi=1e3 * n)
            best = random_labels_for(max(f - gap, 1e-300), f_bar, s, lam, hi=1e3 * n)
            rows.append(dict(pool=seed, n=n, candidates=len(x), f_design=f, gap=gap, rel_gap=gap / f, iterations=iters,
                             f_random=float(np.sum(np.diagonal(np.linalg.solve(n * f_bar + lam * np.eye(len(s)), s)))),
                             ratio=found / n, ratio_upper=best / n, support=int(np.sum(w > 1e-3 * n / len(w))),
                             seconds=time.perf_counter() - t))
            print(f"  pool {seed} n {n}: ratio {found / n:.2f} (≤ {best / n:.2f}), gap {gap / f:.1e} after "
                  f"{iters} iterations, {rows[-1]['seconds']:.0f} s", file=sys.stderr)
    return dict(data=str(args.data), pairs=args.pairs, annotator=annotator, dim=int(items.shape[1]),
                rows=rows, summary=summarise(rows, args.n))


def summarise(rows, ns) -> list[dict]:
    out = []
    for n in ns:
        ratio = np.array([r["ratio"] for r in rows if r["n"] == n])
        upper = np.array([r["ratio_upper"] for r in rows if r["n"] == n])
        se = lambda a: float(a.std(ddof=1) / np.sqrt(len(a))) if len(a) > 1 else float("nan")
        out.append(dict(n=n, ratio=float(ratio.mean()), ratio_se=se(ratio), ratio_upper=float(upper.mean()),
                        max_rel_gap=max(r["rel_gap"] for r in rows if r["n"] == n)))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="directory with embd_train.npy, reward_train.npy "
                                                              "(and ratings_train.npy for real raters)")
    p.add_argument("--pairs", default="cross-prompt", choices=("in-prompt", "cross-prompt"))
    p.add_argument("--candidates", type=int, default=5000, help="candidate pairs per pool (default 5000)")
    p.add_argument("--n", type=lambda t: [int(v) for v in t.split(",")], default=[300, 1000, 3000],
                   help="design sizes in labels (default 300,1000,3000)")
    p.add_argument("--pools", type=int, default=3, help="candidate pools (seeds) to average over (default 3)")
    p.add_argument("--prior", type=float, default=None, help="labels' worth of prior c (default: the linear "
                                                              "model's default prior)")
    p.add_argument("--quality", type=float, default=1.0, help="simulated annotator's quality without ratings")
    p.add_argument("--tol", type=float, default=1e-3, help="relative duality gap to stop at (default 1e-3)")
    p.add_argument("--max-iter", type=int, default=3000)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    t = time.perf_counter()
    result = study(args)
    result.update(seconds=time.perf_counter() - t, machine=f"{platform.machine()}, {platform.node()}", argv=sys.argv)
    print(f"\n{args.data.name}, {args.pairs}, {result['annotator']}, D = {result['dim']}: labels random pairs need "
          f"for the optimal I-optimal design's value, per label of the design ({args.pools} pools)\n")
    print("| n | design ratio | upper (gap) | max relative gap |\n|---:|---:|---:|---:|")
    for s in result["summary"]:
        print(f"| {s['n']} | {s['ratio']:.2f} ± {s['ratio_se']:.2f} | {s['ratio_upper']:.2f} | {s['max_rel_gap']:.1e} |")
    if args.json:
        from arm_jax.runtime import files as io

        io.write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
