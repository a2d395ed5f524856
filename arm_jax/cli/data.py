"""``arm-jax select | train | score``: the active-learning loop on your own data.

    select  train on the labels so far, write the next k pairs to annotate (JSON Lines)
    train   train on the labels, report held-out pairwise accuracy, save the model
    score   reward of every pool item under a saved model (.npy and .csv)

The work is done by :mod:`arm_jax.workflow.select`; this module only parses flags and prints.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys

from arm_jax.cli.commands import help_of
from arm_jax.cli.flags import (
    HelpFormatter,
    add_label_model_flags,
    add_model_flags,
    count_or_never,
    model_and_train_configs,
    positive_int,
    seed,
)
from arm_jax.errors import InputError
from arm_jax.model.config import TrainConfig
from arm_jax.selection import stopping
from arm_jax.selection.catalog import PAIR_MODES, TARGET_PAIRS
from arm_jax.selection.registry import STRATEGIES
from arm_jax.workflow import candidates, fitting, policy, score, train
from arm_jax.workflow import select as realdata

POOL_HELP = (
    "pool of items: a .npy of shape (prompts, responses, D) in the paper's layout (item ids "
    "'p:r', prompt id p), a .npy of shape (N, D) (ids: row numbers, no prompt ids) -- both read "
    "memory-mapped -- or a .npz with 'embeddings' (N, D) and optional 'prompt_ids' (N,) and "
    "'item_ids' (N,) (default ids: row numbers)"
)
OUT_NOTE = "missing directories are created; may not be an input file"
VAL_LABELS_HELP = (
    "labelled comparisons of randomly drawn pairs (the --labels format), kept for evaluation only: "
    "never trained on{}; the model's pairwise accuracy, log-loss and expected calibration error "
    "(ECE, 10 bins) on them are reported. Unlike the held-out share of --labels, whose pairs a "
    "strategy chose, they compare models trained by different strategies"
)
LABELS_HELP = (
    'labelled comparisons, JSON Lines (UTF-8): {"winner": ID, "loser": ID} per line; ids are '
    'strings or integers, compared as strings; blank lines skipped, extra fields ignored. Also: '
    'ties {"a": ID, "b": ID, "tie": true}, soft labels {"a": ID, "b": ID, "p_a": 0.7}, vote counts '
    '{"a": ID, "b": ID, "votes_a": 7, "votes_b": 3}, and "annotator": ID on any line (several raters: '
    'a reliability is fitted for each). Ties, soft labels and votes train with the Davidson likelihood. '
    "A Label Studio JSON export of tasks written by 'select --format label-studio' is read as well"
)


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1), got {value}")
    return value


_FROM_PRESET = object()  # --random-after not given: the --preset's (argparse converts only string defaults)


def _never(count: int | None) -> str:
    return "never" if count is None else str(count)


def _add_training_flags(p: argparse.ArgumentParser, depth_auto: bool = False) -> None:
    g = p.add_argument_group("reward model and training (the model is always trained from scratch)")
    g.add_argument("--seed", type=seed, default=0, help="random seed; same inputs and seed give byte-identical output (default: 0)")
    g.add_argument("--preset", choices=list(policy.POLICIES), default="default",
                   help="the reward model (and for select the strategy) when --depth (--strategy) is not given. "
                        + "; ".join(f"{name}: {pol.what}" for name, pol in policy.POLICIES.items()) + " (default: default)")
    default = policy.DEFAULT.model.depth
    add_model_flags(g, depth_help=f"default: {default}, from --preset; --preset paper: {policy.POLICIES['paper'].model.depth}",
                    depth_auto=depth_auto)
    add_label_model_flags(g)


def _configs(args):
    """(model config, train config) of the flags, the preset and the tie flag applied."""
    chosen = policy.policy(args.preset)
    if args.depth is None:
        args.depth = chosen.model.depth
    args.auto_depth = args.depth == "auto"
    if args.auto_depth:  # the MLP candidate; the linear one is the default policy's
        if args.schedule == "fixed":
            raise InputError("--depth auto compares held-out losses, which --schedule fixed does not compute; "
                             "use the early-stopping schedule or choose --depth")
        args.depth = policy.POLICIES["paper"].model.depth
    if getattr(args, "strategy", "") is None:
        args.strategy = chosen.strategy
    if getattr(args, "random_after", None) is _FROM_PRESET:
        args.random_after = chosen.random_after
    model_config, train_config = model_and_train_configs(args)
    return model_config, dataclasses.replace(train_config, ties=not args.no_tie_model)


def _log(message: str) -> None:
    print(f"arm-jax: {message}", file=sys.stderr)


def _rule_phrase(args, ran: str) -> str:
    """'greedy_iopt', 'greedy_iopt (+25% random)', 'iopt (variance over in-prompt pairs)' or
    'random (hand-off from iopt, --random-after 1000)': the rule select ran (``ran``)."""
    if ran != args.strategy:
        return f"{ran} (hand-off from {args.strategy}, --random-after {args.random_after})"
    notes = [f"+{args.explore:.0%} random"] if args.explore else []
    if args.target_pairs != "candidates":
        notes.append(f"variance over {args.target_pairs} pairs")
    return args.strategy + (f" ({'; '.join(notes)})" if notes else "")


def _model_phrase(model_config, fit) -> str:
    """Which reward model the picks came from: 'the linear model (prior 12.3, by
    cross-validation)' or 'the MLP (3 x 64, elu)'; 'the untrained MLP' on a cold start."""
    if model_config.depth == 0:
        if fit is None:
            return "the linear model (no labels: zero head)"
        if not fit.exact_linear:
            return "the linear model (trained by AdamW: --schedule fixed)"
        return f"the linear model (prior precision {fit.prior_precision:.4g}, {fit.prior_rule})"
    shape = f"{model_config.depth} x {model_config.width}, {model_config.activation}"
    return f"the {'untrained ' if fit is None else ''}MLP ({shape})"


def _timings(timings: dict) -> str:
    parts = ", ".join(f"{name} {sec:.2f}" for name, sec in timings.items() if name != "total")
    return f"time {timings['total']:.2f} s ({parts})"


# ----------------------------------------------------------------------------- select


def _cmd_select(args) -> int:
    if args.k is None and args.budget is None:
        raise InputError("give --k (how many pairs) or --budget (how much they may cost)")
    model_config, train_config = _configs(args)
    result = realdata.select_pairs(
        args.pool,
        args.labels,
        args.out,
        strategy=args.strategy,
        k=args.k,
        pairs=args.pairs,
        n_candidates=args.candidates,
        seed=args.seed,
        model_config=model_config,
        train_config=train_config,
        log=_log,
        allow_relabel=args.allow_relabel,
        val_labels_path=args.val_labels,
        fit_raters=not args.no_reliability,
        output_format=args.output_format,
        report_path=args.report,
        budget=args.budget,
        explore=args.explore,
        target_pairs=args.target_pairs,
        random_after=args.random_after,
        allow_unannotated=args.allow_unannotated,
        auto_depth=args.auto_depth,
    )
    if args.report:
        print(report_table(result.report))
    if result.val is not None:
        _log(_val_labels_line(result.val, args.val_labels))
    ties = _extra_lines(result)
    _log(
        f"select: {result.n_items} items, {result.n_labels} labels{ties}, "
        f"{result.n_candidates} candidate pairs ({args.pairs}, {result.n_masked} already labelled"
        f"{' or in --val-labels' if args.val_labels else ''}), "
        f"{_rule_phrase(args, result.strategy)} picked {len(result.rows)} with {_model_phrase(result.model_config, result.fit)}"
        + ("" if result.total_cost is None else f" costing {result.total_cost:.6g}"
           + ("" if args.budget is None else f" of the budget {args.budget:g}"))
        + f" -> {args.out}"
        + (f" (Label Studio tasks; labelling config: {realdata.label_config_path(args.out)})"
           if args.output_format == "label-studio" else "")
    )
    if result.gain_ratio is not None and result.gain_ratio == result.gain_ratio:
        _log(f"next batch: expected information gain {result.gain_ratio:.2f}x that of {len(result.rows)} random "
             "candidate pairs, under the current posterior (the stopping report's criterion)")
    _log(_timings(result.timings))
    return 0


SELECT_EPILOG = """\
output: one JSON line per pair, best first:
  {"a": ID, "b": ID, "p_a_wins": 0.61, "score": 0.0123, "rank": 1}
p_a_wins is the current model's probability that a is preferred; score is the strategy's
score (for iopt the drop of the mean predictive variance). Send the pairs to annotators,
append their answers to LABELS as {"winner": ID, "loser": ID} lines, and run select again.

policy: by default the linear reward model (--depth 0, fitted exactly) with iopt, which
saved labels early on the real-rater corpora measured, and random pairs from 1000 labelled
pairs on (--random-after: later, iopt alone fell behind random pairs on two of them;
benchmarks/RESULTS.md); --preset paper is the paper's 3-layer MLP with dopt. From 100 labels on, select prints what the batch is
expected to buy: its information gain over that of as many random candidate pairs (not
once it hands off to random pairs).

pairs (the same meaning as in 'arm-jax run'):
  in-prompt     two responses to the same prompt (needs prompt ids)
  cross-prompt  two responses to different prompts, i.e. with different prompt ids (any two
                items if the pool has no prompt ids)
  all-cross     every pair of two items, scored without listing them (dopt, pa_dopt,
                xtx, entropy, maxdiff); no subsampling
The default here is cross-prompt, while 'arm-jax run' defaults to in-prompt (the paper's
main protocol): a pool of your own may have no prompt ids, and the paper finds cross-prompt
pairs more informative per annotation.

report (--report HISTORY.jsonl): each call appends a row (a rerun on the same labels replaces
it) and prints the history: the information gain per label of the batch added since the last
report (log det of the head's posterior precision with it minus without it), the expected
gain of the batch just picked, the held-out accuracy with its standard error, and the rule's
verdict: stop once the gain has been below TAU x the first report's for two rounds in a row
(benchmarks/RESULTS.md: on the built-in task it saved 7-15 % of the labels at no measurable
loss). With a pool that has texts (prompts, responses) each line carries them; with costs,
each line carries its cost.

Candidates are a uniform sample of --candidates pairs without duplicates (all pairs when
there are fewer), re-drawn every round (the draw depends on --seed and on the labelled
pairs). Labelled pairs (either order) are never proposed unless --allow-relabel is given.
Without --labels this is a cold start: D-optimal design on the untrained, seeded model's
random features.

Progress (one line per phase) and a summary with the time of each phase go to stderr.
Ctrl-C stops at once; the output is written only at the end, atomically.
"""
SELECT_EPILOG = SELECT_EPILOG.replace("TAU", f"{stopping.STOP_FRACTION:g}")


def _register_select(sub) -> None:

    p = sub.add_parser(
        "select",
        help=help_of("select"),
        description=(
            "Train the Bradley-Terry reward model on LABELS (from scratch, seeded), score "
            "candidate pairs of POOL with a selection strategy, and write the best k "
            "unlabelled pairs to OUT as JSON Lines."
        ),
        epilog=SELECT_EPILOG,
        formatter_class=HelpFormatter,
    )
    p.add_argument("--pool", required=True, metavar="POOL", help=POOL_HELP)
    p.add_argument("--labels", metavar="LABELS", help=LABELS_HELP + " (omit for a cold start)")
    p.add_argument("--out", required=True, metavar="NEXT.jsonl",
                   help=f"where to write the selected pairs (JSON Lines; {OUT_NOTE})")
    p.add_argument("--strategy", choices=list(STRATEGIES), metavar="NAME",
                   help=f"selection strategy, one of: {', '.join(STRATEGIES)} (default: {policy.DEFAULT.strategy}, "
                        f"from --preset; --preset paper: {policy.POLICIES['paper'].strategy}; see 'arm-jax strategies')")
    p.add_argument("--k", type=positive_int,
                   help="number of pairs to select; required unless --budget is given (with --budget: the most)")
    p.add_argument("--budget", type=float, metavar="B",
                   help="pick the pairs of largest gain per unit cost that fit this budget (the pool needs 'costs': "
                        "each item's cost, e.g. its reading time; a pair costs the sum of its two). Pair scores: "
                        "greedily by score/cost; greedy_dopt: its knapsack form; random: a random order")
    p.add_argument("--explore", type=float, default=0.0, metavar="EPS",
                   help="hedge: draw this fraction of the k pairs at random among the candidates the strategy did "
                        "not pick (random pairs' coverage protects against a misspecified model; default 0)")
    p.add_argument("--random-after", type=count_or_never, default=_FROM_PRESET, metavar="N|never",
                   help="hand-off: once N distinct pairs are labelled, draw the k pairs at random instead of by the "
                        "strategy (sampled candidates; not --pairs all-cross) "
                        "(the posterior rules buy their labels early; past ~1 000 labels random pairs did as well or "
                        f"better, benchmarks/RESULTS.md) (default: {_never(policy.DEFAULT.random_after)}, from --preset; "
                        f"--preset paper: {_never(policy.POLICIES['paper'].random_after)})")
    p.add_argument("--target-pairs", choices=TARGET_PAIRS, default="candidates",
                   help="the I-optimal rules (iopt, greedy_iopt, fw_iopt, uncertain_iopt) lower the predicted reward "
                        "gaps' variance averaged over these pairs: the candidates, or in-prompt (two responses to "
                        "one prompt of the pool, what a reward model ranks; every pair without prompt ids) "
                        "(default: candidates; see benchmarks/RESULTS.md)")
    p.add_argument("--pairs", choices=PAIR_MODES, default="cross-prompt",
                   help="which pairs are candidates: in-prompt (same prompt id), cross-prompt (different "
                        "prompt ids) or all-cross (every pair) (default: cross-prompt; see below)")
    p.add_argument("--allow-relabel", action="store_true",
                   help="propose pairs that are already labelled too, e.g. for another rater (by default they "
                        "never are; see the README on when a second opinion is worth it)")
    p.add_argument("--val-labels", metavar="FILE", help=VAL_LABELS_HELP.format(", never proposed"))
    p.add_argument("--allow-unannotated", action="store_true",
                   help="accept a Label Studio file in which no task is annotated as a cold start (without it that "
                        "is an error: it is most likely the tasks file select wrote, not the export)")
    p.add_argument("--format", choices=realdata.OUTPUT_FORMATS, default="jsonl", dest="output_format",
                   help="jsonl (one pair a line; the default) or label-studio: tasks Label Studio imports as "
                        "they are, plus the labelling config beside them (NEXT.label_config.xml); its JSON export "
                        "goes back in as --labels")
    p.add_argument("--report", metavar="HISTORY.jsonl",
                   help="print the stopping report: what the last batch bought (information gain per label), "
                        "what the next is expected to buy, the held-out accuracy, and whether the stopping rule "
                        "says stop; one row is appended to this file each round (see below)")
    p.add_argument("--candidates", type=positive_int, default=candidates.DEFAULT_CANDIDATES, metavar="N",
                   help=f"candidate pairs sampled for in-prompt/cross-prompt (default: {candidates.DEFAULT_CANDIDATES})")
    _add_training_flags(p, depth_auto=True)
    p.set_defaults(func=_cmd_select)


# ----------------------------------------------------------------------------- train


def _metric(x: float) -> str:
    return "n/a" if x != x else f"{x:.4f}"


def _val_labels_line(val, path) -> str:
    return (
        f"--val-labels {path}: pairwise accuracy {_metric(val.accuracy)}, log-loss {_metric(val.log_loss)}, "
        f"ECE {_metric(val.ece)} ({val.n} comparisons, never trained on)"
    )


def _cmd_train(args) -> int:
    model_config, train_config = _configs(args)
    result = train.train_model(
        args.pool,
        args.labels,
        args.out,
        val_fraction=args.val_fraction,
        refit=not args.no_refit,
        seed=args.seed,
        model_config=model_config,
        train_config=train_config,
        log=_log,
        val_labels_path=args.val_labels,
        fit_raters=not args.no_reliability,
    )
    if result.n_val:
        source = {
            "early-stopping": "held out by early stopping", "split": "the --val-fraction split",
            "cross-validation": "5-fold cross-validation of the linear model's prior: each label held out once",
        }[result.held_out]
        print(f"held-out pairwise accuracy: {result.val_accuracy:.4f} ({result.n_val} of {result.n_labels} labels, {source})")
        print(f"held-out log-loss: {result.val_loss:.4f}")
    else:
        why = "--val-fraction 0"
        exact = model_config.depth == 0 and train_config.early_stopping and train_config.linear_prior is None
        if exact and train_config.linear_prior_rule == "cross-validation":
            from arm_jax.model.fit_linear import LINEAR_CV_FOLDS

            why = f"too few labels: the linear model's cross-validation needs at least {2 * LINEAR_CV_FOLDS}"
        elif exact and train_config.linear_prior_rule == "evidence":
            why = "the linear model's prior is chosen by the evidence of all labels; none are held out"
        elif args.val_fraction and train_config.early_stopping:
            why = (f"too few labels: early stopping holds out none when {args.val_fraction:g} of them "
                   f"is under {train_config.min_val_labels}")
        elif args.val_fraction:
            why = "too few labels to hold any out"
        print(f"held-out pairwise accuracy: n/a ({why})")
        print("held-out log-loss: n/a")
    print(fitting.fit_summary(result.fit, result.n_labels))
    print(
        f"training pairwise accuracy: {result.train_accuracy:.4f} "
        f"(the saved model on all {result.n_labels} labels, trained on {result.n_trained_on})"
    )
    if result.val is not None:
        print(f"val-labels pairwise accuracy: {result.val.accuracy:.4f} ({result.val.n} comparisons in "
              f"{args.val_labels}, never trained on)")
        print(f"val-labels log-loss: {result.val.log_loss:.4f}")
        print(f"val-labels calibration error (ECE, 10 bins): {result.val.ece:.4f}")
    if result.n_val:
        print(f"note: {fitting.HELD_OUT_CAVEAT}")
    what = (
        f"refit on all {result.n_labels} labels" if result.refit else f"trained on {result.n_trained_on} labels"
    )
    ties = _extra_lines(result)
    _log(f"train: {result.n_items} items, {result.n_labels} labels{ties}; saved model ({what}) -> {args.out}")
    _log(_timings(result.timings))
    return 0


def report_table(history: list[dict]) -> str:
    """The stopping report as a short table and the rule's verdict (:mod:`arm_jax.selection.stopping`)."""

    def num(x, fmt):
        return "-" if x is None else format(x, fmt)

    lines = ["round  labels  gain/label last batch  expected next  held-out accuracy"]
    for i, r in enumerate(history, start=1):
        acc = "-" if r.get("val_accuracy") is None else f"{r['val_accuracy']:.3f} ± {r.get('val_se') or 0:.3f}"
        lines.append(f"{i:>5}  {r['labels']:>6}  {num(r['gain_last'], '>22.4g')}  {num(r.get('gain_next'), '>13.4g')}  {acc}")
    # the reference is the first batch measured on top of earlier labels (not against the
    # prior alone: that is a round 0, which the rule's measurement leaves out), with a gain > 0
    gains = [float("nan") if r["gain_last"] is None or r.get("from_prior") else r["gain_last"] for r in history]
    first = next((i for i, g in enumerate(gains) if g > 0), None)
    tau, patience = stopping.STOP_FRACTION, stopping.STOP_PATIENCE
    rule = f"the gain per label of the last batch below {tau:g} x the first report's for {patience} rounds in a row"
    if first is None or stopping.stop_round(gains, first=first) < 0:
        lines.append(f"stopping rule ({rule}): keep labelling")
    else:
        lines.append(f"stopping rule ({rule}): STOP: more labels now buy little")
    return "\n".join(lines)


def _extra_lines(result) -> str:
    """" (+12 ties, +8 soft)" for the lines besides decided labels (all trained on)."""
    extra = [f"+{n} {what}" for n, what in ((result.n_ties, "ties"), (result.n_soft, "soft")) if n]
    return f" ({', '.join(extra)})" if extra else ""


TRAIN_EPILOG = """\
Held-out numbers. A --val-fraction of the labels is held out (a seeded draw). With early
stopping (the default schedule) the training itself holds them out: it evaluates their
Bradley-Terry log-loss as it goes, keeps the best model and stops when it no longer improves;
then, by default, the model is trained again from scratch on all labels for the same number
of epochs and saved. With the fixed schedule the model is trained on the rest for --steps,
measured, then trained again on all labels with the same seed (the very model 'select --seed'
trains). --no-refit saves the model the held-out numbers were measured on.

Printed on stdout: held-out pairwise accuracy (fraction of comparisons whose winner gets the
higher reward) and log-loss (mean -log sigmoid(r_winner - r_loser)), the stopping epoch
(passes over the fitted labels), the saved model's accuracy on all labels, and with
--val-labels its accuracy, log-loss and expected calibration error on that file.

The held-out labels are a share of the pairs you had labelled. When a strategy chose those
pairs they are not a random sample (D-optimal design picks hard, informative pairs), so the
held-out accuracy of a dopt-trained model reads lower than a random-trained one's even when
the model is better: it does not compare strategies. For that, label a few hundred randomly
drawn pairs once (e.g. 'arm-jax select --strategy random'), keep them in their own file and
pass it as --val-labels: they are never trained on, and 'select --val-labels' never proposes them.

MODEL is one msgpack file (any name, e.g. model.msgpack): the model config, the input
dimension, training metadata (the held-out and --val-labels numbers, the stopping epoch, the
training config) and flax.serialization.to_bytes(params).
"""


def _register_train(sub) -> None:
    p = sub.add_parser(
        "train",
        help=help_of("train"),
        description="Train the Bradley-Terry reward model on LABELS and save it to MODEL.",
        epilog=TRAIN_EPILOG,
        formatter_class=HelpFormatter,
    )
    p.add_argument("--pool", required=True, metavar="POOL", help=POOL_HELP)
    p.add_argument("--labels", required=True, metavar="LABELS", help=LABELS_HELP)
    p.add_argument("--out", required=True, metavar="MODEL", help=f"model file to write, e.g. model.msgpack ({OUT_NOTE})")
    p.add_argument("--val-fraction", type=_fraction, default=TrainConfig.val_fraction,
                   help="fraction of the labels held out (by early stopping, or by the fixed schedule's split), "
                        f"in [0, 1) (default: {TrainConfig.val_fraction:g})")
    p.add_argument("--no-refit", action="store_true",
                   help="save the model the held-out numbers were measured on instead of refitting on all labels")
    p.add_argument("--val-labels", metavar="FILE", help=VAL_LABELS_HELP.format(""))
    _add_training_flags(p)
    p.set_defaults(func=_cmd_train)


# ----------------------------------------------------------------------------- score


def _cmd_score(args) -> int:
    result = score.score_pool(args.model, args.pool, args.out, log=_log)
    _log(f"score: {result.rewards.shape[0]} items -> {result.npy_path}, {result.csv_path}")
    _log(_timings(result.timings))
    return 0


SCORE_EPILOG = """\
--out scores writes scores.npy (N,) float32 rewards in pool order and scores.csv with
columns item_id,prompt_id,reward (prompt_id empty when the pool has no prompt ids).
A trailing .npy or .csv is dropped first: --out scores.csv writes the same two files.
Rewards are identified only up to a shift (Bradley-Terry sees differences).

The two files are replaced together: both are written in full to hidden temporary files
first, then the old SCORES.csv is removed and the new .npy and .csv are renamed into place.
So whenever both files exist they come from the same run; an interrupted run can leave
SCORES.csv missing (run score again), never an old .csv beside a new .npy.
"""


def _register_score(sub) -> None:
    p = sub.add_parser(
        "score",
        help=help_of("score"),
        description="Reward of every item of POOL under MODEL (from 'arm-jax train').",
        epilog=SCORE_EPILOG,
        formatter_class=HelpFormatter,
    )
    p.add_argument("--model", required=True, metavar="MODEL", help="model file written by 'arm-jax train'")
    p.add_argument("--pool", required=True, metavar="POOL", help=POOL_HELP)
    p.add_argument("--out", required=True, metavar="SCORES",
                   help=f"output name: writes SCORES.npy and SCORES.csv ({OUT_NOTE})")
    p.set_defaults(func=_cmd_score)


def register(subparsers) -> None:
    """Add ``select``, ``train`` and ``score`` to the ``arm-jax`` command line."""
    _register_select(subparsers)
    _register_train(subparsers)
    _register_score(subparsers)
