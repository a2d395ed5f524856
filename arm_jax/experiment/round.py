"""TODO docstring."""
from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from arm_jax.errors import InputError
from arm_jax.experiment import annotator, informed, metrics, pools
from arm_jax.experiment.config import (
    ExperimentConfig,
    ExperimentData,
    item_costs,
)
from arm_jax.model import buffer as buffer_lib
from arm_jax.model import config as config_lib
from arm_jax.model import fit as train
from arm_jax.model import likelihood, raters
from arm_jax.model import network as model_lib
from arm_jax.model.buffer import LabelBuffer
from arm_jax.selection import allpairs, batch, posterior, registry
from arm_jax.selection import scores as strategies
from arm_jax.selection.registry import StrategyLike

# ------------------------------------------------------------------ the steps of a round


def draw_pool(key, config: ExperimentConfig, data: ExperimentData) -> pools.CandidatePool:
    """The round's candidate pairs (local indices into the round's items); for ``all-cross``
    a cross-prompt subsample (used by round 0's random draw)."""
    p, r, _ = data.train_embeddings.shape
    mode = "cross-prompt" if config.pairs == "all-cross" else config.pairs
    return pools.pool_items(key, mode, p, r, config.n_prompts, config.n_candidates)


def past_inputs(
    params, config: ExperimentConfig, data: ExperimentData, buffer: LabelBuffer, strategy: StrategyLike,
    reliability=None,
):
    """(past_phi_diff (C, H), past_mask (C,), past_weight (C,) or None) of the labelled pairs
    under ``params``; a single masked row for strategies that do not read the past
    (``strategy``: a name, a :class:`~arm_jax.selection.registry.Strategy` or a PairScore). With votes
    (``config.votes``) a row's x is scaled by its rater's fitted ``reliability`` and weighted
    by its votes (:func:`arm_jax.selection.fisher.past_information`)."""
    if not registry.resolve(strategy).uses_past:
        h = config.model.feature_dim(data.train_items.shape[-1])
        weight = jnp.zeros(1, jnp.float32) if config.votes else None
        return jnp.zeros((1, h), jnp.float32), jnp.zeros(1, bool), weight
    return labelled_differences(params, config, data, buffer, reliability)


class Simulation(NamedTuple):
    """What the simulated annotation needs that depends only on the configuration and the
    data, computed once per run (:func:`simulation`), not every round: the raters' Davidson
    tie strength ν (() float32, 0 without ties), the items' costs ((P·R,) or None) and, for a
    run with the informed arm, the items' true rewards on the labels' logit scale ((P·R,),
    :func:`arm_jax.experiment.informed.true_reward`; else None)."""

    tie_strength: jax.Array
    item_costs: jax.Array | None
    true_reward: jax.Array | None = None


def simulation(config: ExperimentConfig, data: ExperimentData, with_truth: bool = False) -> Simulation:
    """The run's :class:`Simulation`; ``with_truth``: also the true rewards (an informed arm)."""
    nu = jnp.float32(0.0)
    if config.votes:
        nu = annotator.panel_tie_strength(data.train_rewards, config.panel, config.tie_rate, data.reward_std)
    truth = None
    if with_truth:
        ratings = data.train_ratings if config.annotator == "empirical" else None
        truth = informed.true_reward(data.train_rewards, data.reward_std, config.panel, ratings)
    return Simulation(nu, None if config.item_costs == "none" else item_costs(config, data), truth)


def study_simulation(configs, data: ExperimentData) -> Simulation:
    """The :class:`Simulation` of a study of ``configs`` (they differ in their strategy alone):
    with the true rewards when one of them is the informed arm."""
    return simulation(configs[0], data, with_truth=any(informed.is_informed(c.strategy) for c in configs))


def labelled_differences(params, config: ExperimentConfig, data: ExperimentData, buffer: LabelBuffer, reliability=None):
    """(x (C, H), mask (C,), weight (C,) or None) of every buffer row under ``params``: see
    :func:`past_inputs`."""
    past = model_lib.features(params, config.model, data.train_items[buffer.pairs.reshape(-1)])
    past = past.reshape(buffer.capacity, 2, -1)
    diff, weight = raters.information_rows(past[:, 0] - past[:, 1], raters.votes_of(buffer, config.train), reliability)
    return diff, buffer.mask, weight


def _tie_of(config: ExperimentConfig, tie):
    """Davidson's ν for the selection: the fit's when the labels have ties it trains on (the
    simulated raters' ``tie_rate``, or the empirical annotator's equal ratings), else None
    (Bradley–Terry), as ``select`` does with the fit's ν
    (:func:`arm_jax.workflow.fitting.past_information_inputs`)."""
    ties = config.tie_rate > 0 or config.annotator == "empirical"
    return tie if (ties and config.train.ties and tie is not None) else None


def selection_inputs(
    params, config: ExperimentConfig, data: ExperimentData, pool, buffer, strategy=None,
    prior_precision=likelihood.DEFAULT_PRIOR_PRECISION, tie=None, reliability=None,
) -> strategies.SelectionInputs:
    """Features of the round's items under the previous model, gathered into pair differences;
    ``prior_precision``, ``tie``, ``reliability``: the previous fit's λ, ν and rater
    reliabilities (:class:`Fitted`)."""
    phi_items = model_lib.features(params, config.model, data.train_items[pool.items])  # (K, H)
    phi_diff = phi_items[pool.pairs.a] - phi_items[pool.pairs.b]
    strategy = registry.resolve(strategy or config.strategy)
    past_diff, past_mask, past_weight = past_inputs(params, config, data, buffer, strategy, reliability)
    items = None
    if strategy.response_rule:
        # in-prompt candidates are grouped by prompt (item index = prompt · R + response)
        r = data.train_embeddings.shape[1]
        group = pool.items[pool.pairs.a] // r if config.pairs == "in-prompt" else jnp.zeros_like(pool.pairs.a)
        items = strategies.PairItems(phi_items, pool.pairs.a, pool.pairs.b, group.astype(jnp.int32))
    return strategies.SelectionInputs(
        phi_diff, model_lib.head(params), pool.pairs.valid, past_diff, past_mask, jnp.float32(prior_precision), items,
        past_weight, _tie_of(config, tie), target_spread(config, data, phi_items),
    )


def target_spread(config: ExperimentConfig, data: ExperimentData, phi_items):
    """The S of the I-optimal rules under ``config.target_pairs``: None (the candidates') or,
    ``in-prompt``, over the in-prompt pairs of the round's items ``phi_items`` (K, H), which are
    whole prompts (``items[s·R + j]``: response j of the round's prompt s)."""
    if config.target_pairs == "candidates":
        return None
    k = phi_items.shape[0]
    group = jnp.arange(k, dtype=jnp.int32) // data.train_embeddings.shape[1]
    return strategies.prompt_spread(phi_items, group, jnp.ones(k, bool))


def choose_pairs(
    key, params, buffer: LabelBuffer, config: ExperimentConfig, data: ExperimentData, strategy: StrategyLike, k: int,
    prior_precision=likelihood.DEFAULT_PRIOR_PRECISION, tie=None, reliability=None, sim: Simulation | None = None,
):
    """The ``k`` pairs ``strategy`` picks this round: ``(a, b, ok)``, global item indices (k,)
    each, and ``ok`` () bool: every pick was a valid, scored candidate (False when a kernel
    failed or fewer than k unlabelled candidates were left; the run then refuses its result).
    ``prior_precision``: the previous fit's λ, for the posterior-based strategies. ``strategy``:
    a name, a :class:`~arm_jax.selection.registry.Strategy` or a PairScore; the drivers get the
    object itself; or :data:`~arm_jax.experiment.informed.INFORMED`, the informed arm: its
    rule at the best head β* (``sim`` holds the true rewards)."""
    truth = None
    if informed.is_informed(strategy):
        strategy, truth = informed.RULE, (sim or simulation(config, data, with_truth=True)).true_reward
    strategy = registry.resolve(strategy)
    pool_key, select_key = jax.random.split(key)
    if config.pairs == "all-cross" and strategy.name != "random":
        p, r, _ = data.train_embeddings.shape
        items = pools.round_items(pool_key, p, r, config.n_prompts)
        phi_items = model_lib.features(params, config.model, data.train_items[items])
        past_diff, past_mask, past_weight = past_inputs(params, config, data, buffer, strategy, reliability)
        tile = min(allpairs.DEFAULT_TILE, -(-items.shape[0] // 8) * 8)
        ex_u = ex_v = None
        if not config.allow_relabel:  # labelled pairs as local indices of this round's items
            local = jnp.full(data.train_items.shape[0], -1, jnp.int32).at[items].set(
                jnp.arange(items.shape[0], dtype=jnp.int32)
            )
            ex_u = jnp.where(buffer.mask, local[buffer.pairs[:, 0]], -1)
            ex_v = jnp.where(buffer.mask, local[buffer.pairs[:, 1]], -1)
            both = (ex_u >= 0) & (ex_v >= 0)
            ex_u, ex_v = jnp.where(both, ex_u, -1), jnp.where(both, ex_v, -1)
        chosen = allpairs.top_k_all_pairs(
            strategy, select_key, phi_items, model_lib.head(params), k, past_diff, past_mask, tile=tile,
            exclude_u=ex_u, exclude_v=ex_v, prior_precision=prior_precision,
            past_weight=past_weight, tie=_tie_of(config, tie), spread=target_spread(config, data, phi_items),
        )
        return items[chosen.u], items[chosen.v], jnp.all(jnp.isfinite(chosen.scores))
    pool = draw_pool(pool_key, config, data)
    if not config.allow_relabel:
        seen = pools.labelled_mask(pool.items[pool.pairs.a], pool.items[pool.pairs.b], buffer.pairs, buffer.mask)
        pool = pool._replace(pairs=pool.pairs._replace(valid=pool.pairs.valid & ~seen))
    strategy = registry.hedged(strategy, config.explore, config.random_after)
    inputs = selection_inputs(params, config, data, pool, buffer, strategy, prior_precision, tie, reliability)
    if truth is not None:
        inputs = inputs._replace(beta=informed.informed_head(params, config, data, truth))
    if config.cost_aware and strategy.name != "random":  # random stays random
        costs = (sim or simulation(config, data)).item_costs
        pair_cost = costs[pool.items[pool.pairs.a]] + costs[pool.items[pool.pairs.b]]
        chosen = cost_aware_pick(select_key, inputs, k, strategy, pair_cost)
    else:
        chosen = strategy.fn(select_key, inputs, k)
    ok = jnp.all(jnp.isfinite(chosen.scores) & inputs.valid[chosen.indices])
    return pool.items[pool.pairs.a[chosen.indices]], pool.items[pool.pairs.b[chosen.indices]], ok


def cost_aware_pick(key, inputs: strategies.SelectionInputs, k: int, strategy: StrategyLike, pair_cost: jax.Array):
    """The k candidates of largest gain per unit cost (jit-able; :class:`ExperimentConfig`
    ``cost_aware``): a pair score's gain (its report score for entropy) over the pair's cost, or
    greedy_dopt's knapsack form with no budget limit."""
    strategy = registry.resolve(strategy)
    if strategy.name == "greedy_dopt":
        return batch.greedy_dopt_budget_strategy(key, inputs, k, pair_cost, jnp.inf)
    gain = strategies.pair_gains(strategy.pair_score, inputs)
    chosen = strategies.top_k_valid(gain / pair_cost, inputs.valid, k)
    return strategies.Selection(chosen.indices, gain[chosen.indices])


def acquire(
    key, params, buffer: LabelBuffer, config: ExperimentConfig, data: ExperimentData, strategy: str, k: int,
    prior_precision=likelihood.DEFAULT_PRIOR_PRECISION, tie=None, reliability=None, sim: Simulation | None = None,
):
    """Choose ``k`` pairs with ``strategy`` under ``params`` (and the fit's prior precision,
    tie strength and rater reliabilities), annotate, append. ``sim``: the run's
    :class:`Simulation` (computed here when not given).

    Returns ``(buffer, ok)``: the new buffer and whether the picks were sound (see
    :func:`choose_pairs`; also False if the buffer overflowed)."""
    choose_key, label_key = jax.random.split(key)
    sim = sim or simulation(config, data)
    a, b, ok = choose_pairs(
        choose_key, params, buffer, config, data, strategy, k, prior_precision, tie, reliability, sim
    )
    if config.annotator == "empirical":
        counts = annotator.annotate_empirical(label_key, data.train_ratings, a, b, config.raters_per_pair)
        if config.aggregate == "majority":
            counts = annotator.majority_vote(jax.random.fold_in(label_key, 1), counts)
        buffer = buffer_lib.append(buffer, a, b, counts, jnp.full(a.shape, -1, jnp.int32))
    elif config.votes:
        counts, rater = annotator.annotate_votes(
            label_key, data.train_rewards, a, b, config.panel, sim.tie_strength, data.reward_std,
            config.raters_per_pair,
        )
        if config.aggregate == "majority":
            counts = annotator.majority_vote(jax.random.fold_in(label_key, 1), counts)
        buffer = buffer_lib.append(buffer, a, b, counts, rater)
    else:
        winner, loser = annotator.annotate(
            label_key, data.train_rewards, a, b, config.annotation_quality, data.reward_std
        )
        buffer = buffer_lib.append(buffer, winner, loser)
    return buffer, ok & ~buffer.overflow


class Fitted(NamedTuple):
    """The model a round hands to the next: its parameters, the prior precision λ of its
    head (``FitStats.prior_precision``), which the posterior-based strategies use, and the
    fit's tie strength ν and rater reliabilities (A,)."""

    params: object
    prior_precision: jax.Array
    tie: jax.Array
    reliability: jax.Array


def initial_model(config: ExperimentConfig, data: ExperimentData) -> Fitted:
    """The untrained model round 0 starts from (a fixed key: the same for every seed)."""
    params = model_lib.init_params(jax.random.PRNGKey(0), config.model, data.train_items.shape[-1])
    return Fitted(
        params, jnp.float32(likelihood.DEFAULT_PRIOR_PRECISION), jnp.float32(0.0),
        jnp.ones(config.train.annotators, jnp.float32),
    )


def retrain(key, buffer: LabelBuffer, config: ExperimentConfig, data: ExperimentData):
    """Train from scratch on the buffer; returns (:class:`Fitted`, training loss, epochs trained).

    The training loss is the mean minibatch loss over the last 10 % of the steps taken."""
    params, stats = train.fit(key, data.train_items, buffer, config.model, config.train)
    fitted = Fitted(params, stats.prior_precision, stats.tie, stats.reliability)
    return fitted, config_lib.final_loss(stats), stats.epochs


def evaluate(params, config: ExperimentConfig, data: ExperimentData):
    """(1 − Spearman, Best-of-N (len(ns),)) on the test set."""
    pred = model_lib.reward(params, config.model, data.test_embeddings)
    return (
        metrics.one_minus_spearman(pred, data.test_rewards),
        metrics.best_of_n(pred, data.test_rewards, config.best_of_n),
    )


class RoundReport(NamedTuple):
    """What the progress callback receives once per seed and round (host values).

    seed: the round's PRNG key data, which tells the seeds apart. When the seeds are split
    over devices and padded to a multiple of the device count, a padding seed is a copy of
    the last seed (same key, same numbers) and reports the same ``seed``: count each once.
    """

    strategy: str
    round_index: int
    annotations: int
    one_minus_spearman: float
    best_of_n: float  # for the largest N
    seed: tuple = ()


def print_report(report: RoundReport) -> None:
    print(
        f"  {report.strategy:<11} round {report.round_index:>3}  annotations {report.annotations:>7}"
        f"  1-spearman {report.one_minus_spearman:.4f}  best-of-N {report.best_of_n:+.4f}",
        flush=True,
    )


def _report(configs: tuple[ExperimentConfig, ...], round_index, one_minus_spearman, bon, key, sink=None):
    """A host callback per round when ``progress`` is on: one report per strategy and seed,
    to ``sink`` (the ``progress`` argument of :func:`make_study`; :func:`print_report` when
    none was given). one_minus_spearman: (S,), bon: (S, len(best_of_n)) for the S
    strategies; key: the round's PRNG key (identifies the seed)."""
    if not configs[0].progress:
        return
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    jax.debug.callback(functools.partial(send_reports, configs, sink), round_index, one_minus_spearman, bon, key)


def send_reports(configs: tuple[ExperimentConfig, ...], sink, i, oms, b, key_data) -> None:
    """One :class:`RoundReport` per strategy of one seed's round ``i`` to ``sink``
    (:func:`print_report` when None), from host values: oms (S,), b (S, len(best_of_n)),
    key_data the round's key (which tells the seeds apart)."""
    sink = print_report if sink is None else sink
    i = int(i)
    oms, b = np.asarray(oms), np.asarray(b)
    seed = tuple(np.asarray(key_data).ravel().tolist())
    annotations = int(configs[0].annotations()[i])
    for s, config in enumerate(configs):
        sink(RoundReport(config.strategy, i, annotations, float(oms[s]), float(b[s, -1]), seed))


def last_batch_gain(fitted: Fitted, buffer: LabelBuffer, round_index, config: ExperimentConfig, data: ExperimentData):
    """What the round's batch bought, per label: log det Λ(all labels) − log det Λ(without the
    batch), Λ the head's posterior precision under the freshly trained model
    (:func:`arm_jax.selection.posterior.information_gain`), divided by the batch's size (round 0: the
    initial labels). The quantity the stopping report (``select --report``) tracks. ``-> ()``."""
    x, mask, weight = labelled_differences(fitted.params, config, data, buffer, fitted.reliability)
    n_last = jnp.where(round_index == 0, config.initial_labels, config.k)
    rows = jnp.arange(buffer.capacity)
    before = mask & (rows < buffer.count - n_last)
    gain = posterior.information_gain(
        model_lib.head(fitted.params), x, before, mask, fitted.prior_precision, weight, _tie_of(config, fitted.tie)
    )
    return gain / jnp.maximum(n_last, 1)


def initial_buffer(key, config: ExperimentConfig, data: ExperimentData, sim: Simulation | None = None):
    """Round 0's labelled set: ``initial_labels`` random pairs from one pool. ``-> (buffer, ok)``."""
    buffer = buffer_lib.empty_buffer(config.capacity, votes=config.votes)
    if not config.initial_labels:
        return buffer, jnp.bool_(True)
    return acquire(
        key, initial_model(config, data).params, buffer, config, data, "random", config.initial_labels, sim=sim
    )


def _index(tree, i):
    return jax.tree_util.tree_map(lambda x: x[i], tree)


def _stack(trees):
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *trees)


def check_study(configs) -> tuple[ExperimentConfig, ...]:
    """The configurations as a tuple; ValueError unless they differ in their strategy alone."""
    configs = tuple(configs)
    if not configs:
        raise InputError("a study needs at least one strategy")
    names = [c.strategy for c in configs]
    if len(set(names)) != len(names):
        raise InputError(f"a study names a strategy twice: {', '.join(names)}")
    base = configs[0]
    for config in configs[1:]:
        for field in dataclasses.fields(ExperimentConfig):
            if field.name != "strategy" and getattr(config, field.name) != getattr(base, field.name):
                raise InputError(
                    f"the configurations of a study may differ only in strategy; {field.name!r} differs "
                    f"({config.strategy}: {getattr(config, field.name)!r}, {base.strategy}: {getattr(base, field.name)!r})"
                )
    return configs


def study_round_step(
    carry, xs, configs: tuple[ExperimentConfig, ...], data: ExperimentData, sink=None, sim: Simulation | None = None
):
    """One round for S strategies: each acquires with its own model (except in round 0), then
    all S models are retrained from scratch at once and evaluated.

    carry: (buffers, :class:`Fitted` models of the previous round, picks_ok), each with a
    leading (S,) axis;
    xs: (round index, key). Every strategy uses the same keys, as when run alone.
    Returns the new carry and (1 − Spearman (S,), Best-of-N (S, len(N)), training loss (S,),
    picks_ok (S,), epochs trained (S,), tie strength (S,), reliabilities (S, A), the round's
    batch's information gain per label (S,), cost spent (S,)).
    """
    buffers, fitted, picks_ok = carry
    round_index, key = xs
    k_acquire, k_train = jax.random.split(key)
    base = configs[0]
    sim = sim or study_simulation(configs, data)

    def acquire_all(buffers):
        # One strategy after another (a scan over a switch), never side by side: two batched
        # LAPACK calls (Cholesky, triangular solve) of different strategies run at once can
        # take every thread of XLA's CPU pool while each waits for work queued behind the
        # other, which hung a 2-core machine. In order, nothing is lost on a GPU either.
        branches = [
            functools.partial(
                lambda f, b, c: acquire(
                    k_acquire, f.params, b, c, data, c.strategy, c.k, f.prior_precision, f.tie, f.reliability, sim
                ),
                c=config,
            )
            for config in configs
        ]

        def one(_, s):
            return None, jax.lax.switch(s, branches, _index(fitted, s), _index(buffers, s))

        return jax.lax.scan(one, None, jnp.arange(len(configs)))[1]

    # round 0's picks (the random initial set) are judged by the carry's initial flags
    buffers, picks_ok = jax.lax.cond(round_index > 0, acquire_all, lambda b: (b, picks_ok), buffers)
    fitted, loss, epochs = jax.vmap(lambda b: retrain(k_train, b, base, data))(buffers)
    # one strategy at a time (lax.map, not vmap): batched Cholesky factorisations of several
    # strategies side by side can hang XLA's CPU thread pool (see acquire_all)
    gain = jax.lax.map(lambda fb: last_batch_gain(fb[0], fb[1], round_index, base, data), (fitted, buffers))
    costs = sim.item_costs
    if costs is None:
        spent = jnp.zeros(len(configs), jnp.float32)
    else:
        pair_cost = jax.vmap(lambda b: jnp.where(b.mask, costs[b.pairs[:, 0]] + costs[b.pairs[:, 1]], 0.0))(buffers)
        spent = jnp.sum(pair_cost, axis=-1) * base.raters_per_pair
    # one strategy at a time: the test-set activations of one model at once, not of S
    oms, bon = jax.lax.map(lambda p: evaluate(p, base, data), fitted.params)
    _report(configs, round_index, oms, bon, key, sink)
    return (buffers, fitted, picks_ok), (oms, bon, loss, picks_ok, epochs, fitted.tie, fitted.reliability, gain, spent)


def round_step(carry, xs, config: ExperimentConfig, data: ExperimentData):
    """One round of one strategy's scan: acquire (except in round 0), retrain, evaluate.

    carry: (buffer, :class:`Fitted` model of the previous round, picks_ok); xs: (round index, key).
    Returns the new carry and the round's outputs of :func:`study_round_step` for this strategy.
    """
    carry, out = study_round_step(_stack([carry]), xs, (config,), data)
    return _index(carry, 0), _index(out, 0)
