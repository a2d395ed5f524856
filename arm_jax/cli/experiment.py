"""``arm-jax run`` (the paper's active-learning experiment) and ``arm-jax figure1``."""
from __future__ import annotations

import argparse
import dataclasses
import sys
import threading
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from arm_jax.cli.commands import help_of
from arm_jax.cli.flags import (
    HelpFormatter,
    add_label_model_flags,
    add_model_flags,
    count_or_never,
    model_and_train_configs,
)
from arm_jax.errors import InputError
from arm_jax.experiment import config as config_lib
from arm_jax.experiment import datasets as data
from arm_jax.experiment import informed, results
from arm_jax.experiment import program as experiment
from arm_jax.experiment import round as round_lib
from arm_jax.experiment.config import ANNOTATORS, ExperimentConfig, ExperimentData
from arm_jax.experiment.results import mean_and_stderr
from arm_jax.model.config import TrainConfig
from arm_jax.model.network import ModelConfig
from arm_jax.runtime import distributed
from arm_jax.runtime import files as io
from arm_jax.runtime import mesh as parallel
from arm_jax.selection.catalog import PAIR_MODES, TARGET_PAIRS
from arm_jax.selection.registry import PAPER_STRATEGIES, SPREAD_RULES, STRATEGIES, get_strategy
from arm_jax.workflow import policy

# Presets: data and experiment sizes. Flags given on the command line override them.
PRESETS = {
    "demo": dict(
        task="llm-like", dim=64, train_prompts=1000, responses=10, test_prompts=100, test_responses=50,
        strategies="random,entropy,maxdiff,dopt,pa_dopt", seeds=3, rounds=6, k=100, initial_labels=100,
        prompts_per_round=100, candidates=2000, steps=300, best_of_n="10,50", schedule="early-stopping",
    ),
    "default": dict(
        task="llm-like", dim=256, train_prompts=5000, responses=10, test_prompts=200, test_responses=100,
        strategies="all", seeds=5, rounds=20, k=500, initial_labels=500,
        prompts_per_round=500, candidates=20000, steps=1000, best_of_n="10,100", schedule="early-stopping",
    ),
    "paper": dict(
        task="llm-like", dim=2048, train_prompts=40000, responses=10, test_prompts=2000, test_responses=500,
        strategies="paper", seeds=5, rounds=20, k=500, initial_labels=500,
        prompts_per_round=500, candidates=20000, steps=1000, best_of_n="10,100,500", schedule="fixed",
    ),
}
TASKS = ("llm-like", "gaussian-2d")
RUN_DEPTH = (f"default: {policy.DEFAULT.model.depth} (the default policy's model, as select) on your own data "
             f"(--train-embeddings ...), {policy.POLICIES['paper'].model.depth} on a built-in task or with --preset paper")
OUTPUT_FILES = ("metrics.json", "metrics.csv", "learning_curves.png", "quality_vs_cost.png")


def _from_preset(key: str) -> str:
    """What a flag is when not given: the --preset's value."""
    values = {name: preset[key] for name, preset in PRESETS.items()}
    if len(set(map(str, values.values()))) == 1:
        return f"(default: {values['default']}, in every --preset)"
    others = ", ".join(f"{name}: {value}" for name, value in values.items() if name != "default")
    return f"(default: {values['default']}; --preset {others})"


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return values


def _float_list(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values or any(v != v for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers (or inf), got {text!r}")
    return values


def _panel(args) -> tuple[float, ...]:
    """The panel's qualities from --annotators / --annotator-quality (empty: one annotator)."""
    qualities, n = args.annotator_quality, args.annotators
    if n is not None and n < 1:
        raise InputError(f"--annotators must be >= 1, got {n}")
    if qualities is None:
        return (args.annotation_quality,) * n if n and n > 1 else ()
    if n is not None and n != len(qualities):
        raise InputError(f"--annotators {n} but --annotator-quality lists {len(qualities)} qualities")
    return qualities


def _quality(text: str) -> float:
    value = float(text)
    if value != value:
        raise argparse.ArgumentTypeError("annotation quality must be a number or inf")
    return value


def register(sub) -> None:
    """Add ``run`` and ``figure1`` to the ``arm-jax`` subparsers."""
    _register_run(sub)
    _register_figure1(sub)


def _add_data_flags(p) -> None:
    """``run``'s data flags: a built-in task, or the paper's four .npy files (and the ratings)."""
    data = p.add_argument_group("data (a built-in task, or the paper's four .npy files)")
    data.add_argument("--task", choices=TASKS, help="built-in task when no files are given " + _from_preset("task"))
    data.add_argument("--train-embeddings", type=Path, help="embd_train.npy, (prompts, responses, D)")
    data.add_argument("--train-rewards", type=Path, help="reward_train.npy, (prompts, responses[, 1])")
    data.add_argument("--test-embeddings", type=Path, help="embd_test.npy, (prompts, responses, D)")
    data.add_argument("--test-rewards", type=Path, help="reward_test.npy, (prompts, responses[, 1])")
    data.add_argument("--train-ratings", type=Path,
                      help="ratings_train.npy, (prompts, responses, raters): every rater's rating, NaN-padded "
                           "(make ratings-data); what --annotator empirical draws from")
    data.add_argument("--dim", type=int, help="embedding dimension D of the llm-like task " + _from_preset("dim"))
    data.add_argument("--train-prompts", type=int, help="training prompts of a built-in task " + _from_preset("train_prompts"))
    data.add_argument("--responses", type=int, help="responses per training prompt of a built-in task " + _from_preset("responses"))
    data.add_argument("--test-prompts", type=int, help="test prompts of a built-in task " + _from_preset("test_prompts"))
    data.add_argument("--test-responses", type=int, help="responses per test prompt of a built-in task " + _from_preset("test_responses"))
    data.add_argument("--data-seed", type=int, default=0, help="seed of the built-in task's data")


def _add_experiment_flags(p) -> None:
    """``run``'s experiment flags: the strategies, seeds, rounds, candidates and the hedge."""
    exp = p.add_argument_group("experiment")
    exp.add_argument("--strategies", help="comma-separated names, 'paper' (the paper's eight) or 'all' (every "
                                           "rule of 'arm-jax strategies'); also 'informed', a reference arm: greedy_iopt at the best head "
                                           "given the true rewards, what a perfectly informed selector reaches "
                                           + _from_preset("strategies"))
    exp.add_argument("--seeds", type=int, help="number of seeds (run together with vmap) " + _from_preset("seeds"))
    exp.add_argument("--seed", type=int, default=0, help="base PRNG seed; seed i uses split(PRNGKey(seed))[i]")
    exp.add_argument("--rounds", type=int, help="active rounds after the random round 0 " + _from_preset("rounds"))
    exp.add_argument("--k", type=int, help="annotation batch size: pairs labelled per round " + _from_preset("k"))
    exp.add_argument("--initial-labels", type=int,
                     help="random pairs labelled in round 0 " + _from_preset("initial_labels"))
    exp.add_argument("--pairs", choices=PAIR_MODES, default="in-prompt",
                     help="candidate pairs: in-prompt (two responses to the same prompt; the default, the paper's "
                          "main protocol), cross-prompt (two responses to different prompts, subsampled), or "
                          "all-cross (every pair among the round's items, no subsample: entropy, maxdiff, xtx, "
                          "dopt, pa_dopt). 'arm-jax select' defaults to cross-prompt instead: a pool of your "
                          "own may have no prompt ids, and the paper finds cross-prompt pairs more informative")
    exp.add_argument("--allow-relabel", action="store_true",
                     help="candidates may include pairs labelled in earlier rounds (by default they never do)")
    exp.add_argument("--prompts-per-round", type=int,
                     help="training prompts drawn per round " + _from_preset("prompts_per_round"))
    exp.add_argument("--candidates", type=int, help="candidate pairs per round " + _from_preset("candidates"))
    exp.add_argument("--annotation-quality", type=_quality, default=1.0,
                     help="annotator's beta: P(a wins) = sigmoid(beta (r_a - r_b) / std r); inf = noiseless")
    exp.add_argument("--explore", type=float, default=0.0, metavar="EPS",
                     help="hedge: draw this fraction of each round's batch at random among the candidates the rule "
                          "did not pick (random's coverage protects against a misspecified model; default 0)")
    exp.add_argument("--random-after", type=count_or_never, default=None, metavar="N|never",
                     help="hand-off: from N labelled pairs on, draw every round's batch at random (the rules that "
                          "read the posterior buy their labels early; see benchmarks/RESULTS.md; default: never, "
                          "so that a study compares the rules alone; select's default policy hands off at 1000)")
    exp.add_argument("--target-pairs", choices=TARGET_PAIRS, default="candidates",
                     help="the I-optimal rules (iopt, greedy_iopt, fw_iopt, uncertain_iopt) lower the predicted "
                          "reward gaps' variance averaged over these pairs: the round's candidates, or in-prompt "
                          "(two responses to one of the round's prompts, what the test metrics rank) (default: "
                          "candidates)")
    exp.add_argument("--best-of-n", type=_int_list, help="comma-separated N for Best-of-N " + _from_preset("best_of_n"))


def _register_run(sub) -> None:
    p = sub.add_parser(
        "run",
        help=help_of("run"),
        description=(
            "Run Algorithm 1 of the paper: each round draw candidate pairs, pick k with each strategy "
            "using the previous model, label them with a simulated annotator, retrain from scratch and "
            "evaluate 1 - Spearman and Best-of-N on the test prompts. All strategies, rounds and seeds are one "
            "jit-compiled program, compiled once. Writes metrics.json, metrics.csv and learning_curves.png to --out."
        ),
        formatter_class=HelpFormatter,
    )
    p.add_argument("--preset", choices=sorted(PRESETS), default="default",
                   help="sizes to start from; every flag given overrides its value: demo (40-50 s on a "
                        "2-core CPU, compiling included), default, paper (paper-sized, for a GPU)")
    p.add_argument("--out", type=Path, default=Path("results/run"),
                   help="output directory (created if missing; must not be an existing file); gets "
                        + ", ".join(OUTPUT_FILES))
    _add_data_flags(p)
    _add_experiment_flags(p)
    ann = p.add_argument_group(
        "annotators as they really are",
        "ties, a panel of raters of unequal quality, several raters per pair. Any of these makes the "
        "labels vote counts trained with the Davidson likelihood (see README, 'Ties, raters and soft labels')",
    )
    ann.add_argument("--annotator", choices=ANNOTATORS, default="simulated",
                     help="simulated: the paper's annotator, P(a beats b) = sigmoid(quality x reward gap / std), with "
                          "the ties, panel and raters below; empirical: real raters' noise, each vote draws one "
                          "recorded rating of each item (--train-ratings) and the higher wins, equal ratings tie "
                          "(default: simulated)")
    ann.add_argument("--tie-rate", type=float, default=0.0, metavar="F",
                     help="the raters answer 'tie' on this share of uniformly random pairs (Davidson's model; "
                          "default 0: never)")
    ann.add_argument("--annotators", type=int, default=None, metavar="N",
                     help="a panel of N raters; each label comes from a random member (its id is recorded)")
    ann.add_argument("--annotator-quality", type=_float_list, default=None, metavar="Q1,Q2,...",
                     help="the panel members' qualities (beta each; 0 = labels at random, inf = noiseless); "
                          "default: --annotation-quality for every member")
    ann.add_argument("--raters-per-pair", type=int, default=1, metavar="R",
                     help="each picked pair is labelled by R random members, stored as vote counts (default 1)")
    ann.add_argument("--aggregate", choices=("votes", "majority"), default="votes",
                     help="with --raters-per-pair > 1: train on the vote counts (soft labels; the default) or on "
                          "one majority label per pair")
    add_label_model_flags(ann)
    cost = p.add_argument_group("labelling costs")
    cost.add_argument("--item-costs", choices=("none", "lognormal"), default="none",
                      help="simulate what labelling costs: lognormal gives each item a reading time exp(N(0, 0.5^2)) "
                           "(a pair costs the sum of its two); metrics.json then records the cost spent each round "
                           "and quality_vs_cost.png plots quality against it")
    cost.add_argument("--cost-aware", action="store_true",
                      help="pick the k pairs of largest gain per unit cost (pair scores, greedy_dopt) instead of the "
                           "largest gain")
    add_model_flags(p.add_argument_group("reward model and training"), steps_default=None, preset_schedule=True, depth_help=RUN_DEPTH)
    out = p.add_argument_group("output")
    out.add_argument("--no-plot", action="store_true", help="do not draw learning_curves.png")
    out.add_argument("--quiet", action="store_true",
                     help="no progress on stderr (by default: one line per strategy and round, the mean over seeds)")
    p.set_defaults(func=cmd_run)


def _register_figure1(sub) -> None:
    f = sub.add_parser(
        "figure1",
        help=help_of("figure1"),
        description=(
            "The paper's Figure 1: a reward that is the log density of two Gaussians in 2-D; each "
            "strategy picks comparisons among 1000 standard-normal points per round for a few rounds; "
            "the pairs it picked are drawn as segments over the reward's contours."
        ),
        formatter_class=HelpFormatter,
    )
    f.add_argument("--out", type=Path, default=Path("results/figure1.png"), help="PNG to write")
    f.add_argument("--strategies", default="paper", help="comma-separated names, 'paper' or 'all'")
    f.add_argument("--rounds", type=int, default=4, help="rounds (after a random round 0)")
    f.add_argument("--k", type=int, default=200, help="comparisons picked per round")
    f.add_argument("--steps", type=int, default=500, help="training steps per round")
    f.add_argument("--seed", type=int, default=0)
    f.set_defaults(func=cmd_figure1)


def parse_strategies(text: str, informed_arm: bool = False) -> list[str]:
    """The names of ``--strategies``; ``informed_arm``: the experiment's informed reference arm
    (:data:`arm_jax.experiment.informed.INFORMED`) may be one of them."""
    if text == "all":
        return list(STRATEGIES)
    if text == "paper":
        return list(PAPER_STRATEGIES)
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise InputError("--strategies is empty")
    for name in names:
        if not (informed_arm and name == informed.INFORMED):
            get_strategy(name)  # InputError naming the choices
    if len(set(names)) != len(names):
        raise InputError(f"--strategies names a strategy twice: {text}")
    return names


def resolve_presets(args) -> argparse.Namespace:
    """Preset values for every flag the user did not give; --depth: the default policy's model
    on the user's own data (what ``select`` uses) unless --preset paper, else the paper's MLP."""
    merged = dict(vars(args))
    for key, value in PRESETS[args.preset].items():
        if merged.get(key) is None:
            merged[key] = value
    if merged.get("depth") is None:
        own_data = merged.get("train_embeddings") is not None and args.preset != "paper"
        merged["depth"] = (policy.DEFAULT if own_data else policy.POLICIES["paper"]).model.depth
    if isinstance(merged["best_of_n"], str):
        merged["best_of_n"] = _int_list(merged["best_of_n"])
    return argparse.Namespace(**merged)


def _positive(name, value, minimum=1):
    if value < minimum:
        raise InputError(f"--{name.replace('_', '-')} must be >= {minimum}, got {value}")


def load_dataset(args):
    """The paper's files if given, else the built-in task."""


    files = [args.train_embeddings, args.train_rewards, args.test_embeddings, args.test_rewards]
    if any(f is not None for f in files):
        if not all(f is not None for f in files):
            raise InputError(
                "give all four of --train-embeddings, --train-rewards, --test-embeddings, --test-rewards"
            )
        dataset = data.load_paper_files(*files)
        if args.train_ratings is not None:
            dataset = dataset._replace(train_ratings=data.load_ratings(args.train_ratings, dataset.train_rewards.shape))
            files.append(args.train_ratings)
        return dataset, {"task": "files", "files": [str(f) for f in files]}
    if args.train_ratings is not None:
        raise InputError("--train-ratings goes with the data files (--train-embeddings ...), not a built-in task")
    for name in ("dim", "train_prompts", "responses", "test_prompts", "test_responses"):
        _positive(name, getattr(args, name), 2 if name in ("responses", "test_responses") else 1)
    key = jax.random.PRNGKey(args.data_seed)
    sizes = dict(
        n_train_prompts=args.train_prompts, n_responses=args.responses,
        n_test_prompts=args.test_prompts, n_test_responses=args.test_responses,
    )
    if args.task == "gaussian-2d":
        ds = data.gaussian_mixture_2d(key, **sizes)
    else:
        ds = data.llm_like(key, dim=args.dim, **sizes)
    return ds, {"task": args.task, "data_seed": args.data_seed, **sizes, "dim": int(ds.train_embeddings.shape[-1])}


def abstract_data(args):
    """Shapes and dtypes (``jax.ShapeDtypeStruct``) of the built-in task's data for these
    flags, as :class:`~arm_jax.experiment.config.ExperimentData`: enough to trace and compile the
    experiment's programs at any size without generating the data."""


    f32 = jnp.float32
    p, r, d, pt, rt = args.train_prompts, args.responses, args.dim, args.test_prompts, args.test_responses
    if args.task == "gaussian-2d":
        d = 2
    return ExperimentData(
        train_embeddings=jax.ShapeDtypeStruct((p, r, d), f32),
        train_rewards=jax.ShapeDtypeStruct((p * r,), f32),
        reward_std=jax.ShapeDtypeStruct((), f32),
        test_embeddings=jax.ShapeDtypeStruct((pt, rt, d), f32),
        test_rewards=jax.ShapeDtypeStruct((pt, rt), f32),
    )


def build_config(args, strategy: str):

    model_config, train_config = model_and_train_configs(args)
    panel = _panel(args)
    fit_raters = len(panel) if len(panel) > 1 and args.raters_per_pair == 1 and not args.no_reliability else 0
    train_config = dataclasses.replace(train_config, ties=not args.no_tie_model, annotators=fit_raters)
    return ExperimentConfig(
        strategy=strategy,
        rounds=args.rounds,
        k=args.k,
        initial_labels=args.initial_labels,
        n_prompts=args.prompts_per_round,
        n_candidates=args.candidates,
        pairs=args.pairs,
        annotation_quality=args.annotation_quality,
        best_of_n=tuple(args.best_of_n),
        model=model_config,
        train=train_config,
        progress=not args.quiet,
        allow_relabel=args.allow_relabel,
        tie_rate=args.tie_rate,
        annotator_quality=panel,
        raters_per_pair=args.raters_per_pair,
        aggregate=args.aggregate,
        annotator=args.annotator,
        item_costs=args.item_costs,
        cost_aware=args.cost_aware,
        explore=args.explore,
        target_pairs=args.target_pairs,
        random_after=args.random_after,
    )


class SeedAverager:
    """Collects the per-seed progress reports of a round and prints one line with their mean.

    Reports are told apart by their ``seed`` (the round's key): when the seeds are padded to
    a multiple of the device count, the padding seeds repeat the last seed's key and numbers,
    and are counted once. A round's line is printed when ``n_seeds`` distinct seeds have
    reported; later copies are ignored.
    """

    def __init__(self, n_seeds: int, rounds: int, stream=None, where: str = ""):
        self.n_seeds, self.rounds, self.stream, self.where = n_seeds, rounds, stream, where
        self.pending: dict = {}
        self.done: set = set()
        self.lock = threading.Lock()  # devices report from their own threads

    def __call__(self, report) -> None:
        round_key = (report.strategy, report.round_index)
        with self.lock:
            if round_key in self.done:
                return
            got = self.pending.setdefault(round_key, {})
            got[report.seed] = report
            if len(got) < self.n_seeds:
                return
            del self.pending[round_key]
            self.done.add(round_key)
            oms = sum(r.one_minus_spearman for r in got.values()) / len(got)
            bon = sum(r.best_of_n for r in got.values()) / len(got)
            print(
                f"  {report.strategy:<11} round {report.round_index:>3}/{self.rounds}"
                f"  annotations {report.annotations:>7}  1-spearman {oms:.4f}  best-of-N {bon:+.4f}"
                f"  (mean of {len(got)} seeds{self.where})",
                file=self.stream or sys.stderr, flush=True,
            )


def _run_inputs(args) -> dict:
    return {
        "--train-embeddings": args.train_embeddings, "--train-rewards": args.train_rewards,
        "--test-embeddings": args.test_embeddings, "--test-rewards": args.test_rewards,
        "--train-ratings": args.train_ratings,
    }


def _check_target_pairs(target_pairs: str, names: list[str]) -> None:
    """InputError when ``--target-pairs`` is set but no strategy of the run reads it."""
    readers = [n for n in names if informed.is_informed(n) or n in SPREAD_RULES]
    if target_pairs != "candidates" and not readers:
        raise InputError(
            f"--target-pairs is read by the I-optimal rules ({', '.join(SPREAD_RULES)}, the informed arm); "
            f"none of {', '.join(names)} is one"
        )


def cmd_run(args) -> int:

    args = resolve_presets(args)
    names = parse_strategies(args.strategies, informed_arm=True)
    _positive("seeds", args.seeds)
    configs = [build_config(args, name) for name in names]  # validates every knob before any work
    _check_target_pairs(args.target_pairs, names)
    outputs = OUTPUT_FILES[:2] if args.no_plot else OUTPUT_FILES

    # process 0 writes (several processes: the others may not see its file system)
    distributed.on_writer(lambda: io.check_output_dir(args.out, outputs, inputs=_run_inputs(args)))



    t_start = time.perf_counter()
    dataset, data_info = load_dataset(args)
    # one progress line per strategy and round, the mean over seeds (the program reports per
    # seed; on several processes, over the seeds process 0 runs: the others print nothing)
    start, stop = parallel.process_rows(args.seeds)  # the seeds of process 0's devices
    where = " on process 0" if jax.process_count() > 1 else ""
    study = experiment.make_study(configs, dataset, progress=SeedAverager(max(1, stop - start), args.rounds, where=where))
    reward_std = float(study.data.reward_std)
    if not (np.isfinite(reward_std) and reward_std > 0):
        print(
            f"arm-jax: warning: the training rewards are constant (std {reward_std:g}): every simulated "
            "label is a coin flip, so no strategy can learn anything",
            file=sys.stderr, flush=True,
        )
    keys = jax.random.split(jax.random.PRNGKey(args.seed), args.seeds)
    env = results.environment()
    log = (lambda *a: None) if args.quiet else (lambda *a: print(*a, file=sys.stderr, flush=True))
    log(
        f"arm-jax run: {data_info['task']} data, train {tuple(dataset.train_embeddings.shape)}, "
        f"test {tuple(dataset.test_embeddings.shape)}; {len(names)} strategies x {args.seeds} seeds x "
        f"{args.rounds} rounds of k={args.k} ({args.pairs}); backend {env['backend']}"
        + (f", {jax.process_count()} processes, {jax.device_count()} devices" if jax.process_count() > 1 else "")
    )
    base = dataclasses.replace(configs[0], strategy="dopt", progress=False)
    payload = {
        **env,
        "wall_time_s": None,
        "compile_time_s": None,
        "run_time_s": None,
        "config": {**results.config_dict(base), **data_info, "seeds": args.seeds, "seed": args.seed},
        "annotations": base.annotations().tolist(),
        "results": {},
    }
    del payload["config"]["strategy"], payload["config"]["progress"]
    if base.tie_rate > 0:  # the simulated raters' Davidson tie strength, beside the fits' (results)
        payload["simulated_tie_strength"] = round(float(round_lib.simulation(base, study.data).tie_strength), 6)
    # One program for every strategy: compiled once, all strategies' models trained at once.
    t0 = time.perf_counter()
    lowered = study.lower_seeds(keys)
    trace_s = time.perf_counter() - t0
    log(f"compiling one program for {len(configs)} strategies x {args.seeds} seeds (traced in {trace_s:.1f}s)")
    t0 = time.perf_counter()
    compiled = lowered.compile()
    compile_s = trace_s + time.perf_counter() - t0
    log(f"compiled in {compile_s:.1f}s; running")
    t1 = time.perf_counter()
    # waits for the run; refuses a run whose picks were not sound (experiment.RunFailed)
    metrics = parallel.to_host(experiment.check_result(compiled(keys, study.data)).metrics)
    run_s = time.perf_counter() - t1
    payload["compile_time_s"], payload["run_time_s"] = round(compile_s, 3), round(run_s, 3)
    log(f"ran in {run_s:.1f}s")
    for s, config in enumerate(configs):
        m = jax.tree_util.tree_map(lambda x: x[:, s], metrics)
        payload["results"][config.strategy] = results.strategy_record(m, config.best_of_n, list(range(args.seeds)))
    payload["wall_time_s"] = round(time.perf_counter() - t_start, 3)
    if not distributed.is_writer():  # several processes: process 0 writes and reports
        return 0
    json_path, csv_path = results.write_results(args.out, payload)
    written = [json_path, csv_path]
    if not args.no_plot:
        png = results.plot_learning_curves(payload, Path(args.out) / "learning_curves.png")
        if png is None:
            log("matplotlib is not installed: no plot (pip install 'arm-jax[plot]')")
        else:
            written.append(png)
            if base.item_costs != "none":
                written.append(results.plot_learning_curves(
                    payload, Path(args.out) / "quality_vs_cost.png", x_key="cost_spent"
                ))
    log(f"done in {payload['wall_time_s']:.1f}s; wrote " + ", ".join(str(w) for w in written))
    _print_summary(payload)
    return 0


def _print_summary(payload) -> None:

    n = str(payload["config"]["best_of_n"][-1])
    print(f"after {payload['annotations'][-1]} annotations (mean ± s.e. over seeds):")
    print(f"  {'strategy':<12} {'1 - spearman':>18} {'best-of-' + n:>18}")
    for name, rec in payload["results"].items():
        m, s = mean_and_stderr(rec["one_minus_spearman"])
        b, bs = mean_and_stderr(rec["best_of_n"][n])
        print(f"  {name:<12} {m[-1]:>10.4f} ± {s[-1]:.4f} {b[-1]:>+10.4f} ± {bs[-1]:.4f}")


def cmd_figure1(args) -> int:

    names = parse_strategies(args.strategies)
    _positive("rounds", args.rounds)
    _positive("k", args.k)
    _positive("steps", args.steps)
    io.check_output_file(args.out)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise InputError("figure1 needs matplotlib: pip install 'arm-jax[plot]'") from None


    # the paper: 1000 standard-normal points per round, 200 comparisons, a 3-layer MLP of 16 units
    ds = data.gaussian_mixture_2d(jax.random.PRNGKey(args.seed), n_train_prompts=2000, n_responses=10,
                                  n_test_prompts=50, n_test_responses=100)
    prepared = config_lib.prepare_data(ds)
    items = np.asarray(prepared.train_items)
    grid = np.linspace(-3.5, 3.5, 200)
    gx, gy = np.meshgrid(grid, grid)
    density = np.asarray(data.mixture_log_density(np.stack([gx, gy], -1).astype(np.float32)))
    fig, axes = plt.subplots(len(names), args.rounds, figsize=(2.3 * args.rounds, 2.3 * len(names)), squeeze=False)
    for row, name in enumerate(names):
        config = config_lib.ExperimentConfig(
            strategy=name, rounds=args.rounds, k=args.k, initial_labels=args.k, n_prompts=100,
            n_candidates=5000, pairs="cross-prompt", best_of_n=(100,), annotation_quality=5.0,
            # the paper's protocol: a fixed number of steps
            model=ModelConfig(depth=3, width=16), train=TrainConfig(steps=args.steps, early_stopping=False),
        )
        result = experiment.make_experiment(config, prepared).run(jax.random.PRNGKey(args.seed + 1))
        pairs = np.asarray(result.labelled.pairs)
        oms = np.asarray(result.metrics.one_minus_spearman)
        for r in range(1, args.rounds + 1):
            ax = axes[row, r - 1]
            picked = pairs[config.initial_labels + (r - 1) * args.k: config.initial_labels + r * args.k]
            segs = items[picked]  # (k, 2 ends, 2 coordinates)
            ax.contour(gx, gy, density, levels=10, colors="0.75", linewidths=0.5)
            ax.plot(segs[:, :, 0].T, segs[:, :, 1].T, color="tab:blue", lw=0.4, alpha=0.5)
            ax.scatter(segs[:, :, 0].ravel(), segs[:, :, 1].ravel(), s=2, color="tab:red", zorder=3)
            ax.set_xlim(-3.5, 3.5)
            ax.set_ylim(-3.5, 3.5)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(f"round {r}", fontsize=9)
            ax.text(0.02, 0.02, f"1-ρ {oms[r]:.3f}", transform=ax.transAxes, fontsize=7)
        axes[row, 0].set_ylabel(name, fontsize=10)
        print(f"  {name:<12} 1-spearman after {config.annotations()[-1]} comparisons: {oms[-1]:.3f}", file=sys.stderr)
    fig.suptitle(f"{args.k} comparisons per round\n(segments; grey: reward contours)", fontsize=10)
    fig.tight_layout()
    with io.atomic_path(args.out) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0
