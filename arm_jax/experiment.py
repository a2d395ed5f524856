"""The paper's active-learning experiment (Algorithm 1) as one jit-compiled program.

Each round: draw a candidate pool, score it with the previous round's model, select ``k``
pairs, label them with the simulated annotator, append them to the fixed-capacity labelled
buffer, retrain the reward model from scratch, evaluate on the test set. Round 0 labels a
small random set. All rounds are one ``lax.scan`` inside ``jax.jit``; seeds are
``jax.vmap``. Data always enters the compiled program as an argument, never as a closure
constant, so compile time does not grow with the data.

    exp = make_experiment(ExperimentConfig(strategy="dopt"), dataset)
    result = exp.run_seeds(jax.random.split(key, 5))   # every array has a leading (seeds,) axis
    result.metrics.one_minus_spearman                   # (5, rounds + 1)

Several strategies compared on the same seeds are one program too (:func:`make_study`): each
round every strategy picks its own pairs, then all the strategies' models are retrained at
once (``jax.vmap`` over strategies) and evaluated one after another (``lax.map``). The
numbers are those of the strategies run apart; the program compiles once for all of them
(most of its code, training and evaluation, is shared) and keeps an accelerator busier.

    study = make_study([config.replace(strategy=s) for s in ("random", "dopt")], dataset)
    study.run_seeds(keys).metrics.one_minus_spearman    # (seeds, 2 strategies, rounds + 1)
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Callable, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np

from arm_jax import allpairs, annotator, metrics, model as model_lib, pools, posterior, strategies, train
from arm_jax.data import Dataset
from arm_jax.model import ModelConfig
from arm_jax.train import LabelBuffer, TrainConfig
from arm_jax.errors import InputError

#: Simulated item costs: none, or log-normal reading times (ExperimentConfig.item_costs).
ITEM_COSTS = ("none", "lognormal")
# "all-cross": every pair among the round's n_prompts · R items, scored without listing them
PAIR_MODES = pools.MODES + ("all-cross",)
# strategies that read the labelled set (I_past or the posterior built on it)
PAST_AWARE = strategies.PAST_AWARE


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """One strategy's experiment. Defaults are the paper's (§5, appendix A).

    strategy: a name from ``arm_jax.strategies.STRATEGIES``.
    rounds: active rounds after round 0.
    k: annotation batch size (pairs labelled per round).
    initial_labels: random pairs labelled in round 0.
    n_prompts: training prompts drawn per round to build candidates.
    n_candidates: candidate pairs per round (subsampled from the round's possible pairs).
    pairs: "in-prompt" (two responses of one prompt), "cross-prompt" (two responses to
      different prompts, as in ``arm-jax select``), or "all-cross" (every pair among the
      round's items, no subsample; the pair-score strategies; round 0 then draws its random
      pairs cross-prompt).
    allow_relabel: False (default, as ``arm-jax select``): a pair labelled in an earlier round
      is never a candidate again. True: it may be proposed (and labelled) again.
    annotation_quality: β_a of the simulated annotator, P(a ≻ b) = σ(β_a (r*_a − r*_b)/std r*).
    tie_rate: the simulated raters answer "tie" on this share of uniformly random pairs
      (Davidson's likelihood, :func:`arm_jax.annotator.panel_tie_strength`); 0: never.
    annotator_quality: a panel: each label comes from a uniformly random member of these
      qualities (the label's rater is recorded; ``train.annotators`` = len(panel) fits their
      reliabilities). Empty: the one annotator of ``annotation_quality``.
    raters_per_pair: each picked pair is labelled by this many raters (panel members drawn
      independently), stored as one row of vote counts.
    aggregate: ``"votes"`` (train on the vote counts) or ``"majority"`` (one decided label
      per pair: the majority, an equal count by a fair coin).
    item_costs: ``"none"`` or ``"lognormal"``: each training item costs exp(N(0, ½²)) to
      read (fixed by the data, the same for every seed), a pair the sum of its two items';
      the rounds record the cost spent (``RoundMetrics.cost_spent``).
    cost_aware: each round picks the k pairs of largest gain per unit cost (pair scores:
      score / cost, entropy by its entropy; ``greedy_dopt``: its knapsack form,
      :func:`arm_jax.strategies.greedy_dopt_budget_strategy`) instead of the largest gain.
    best_of_n: the N of the Best-of-N metric (each ≤ responses per test prompt).
    model, train: reward model and optimiser.
    progress: print one line per round from inside the compiled program (host callback).
    """

    strategy: str = "dopt"
    rounds: int = 20
    k: int = 500
    initial_labels: int = 500
    n_prompts: int = 500
    n_candidates: int = 20_000
    pairs: str = "in-prompt"
    annotation_quality: float = 1.0
    best_of_n: tuple[int, ...] = (500,)
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    progress: bool = False
    allow_relabel: bool = False
    tie_rate: float = 0.0
    annotator_quality: tuple[float, ...] = ()
    raters_per_pair: int = 1
    aggregate: str = "votes"
    item_costs: str = "none"
    cost_aware: bool = False

    def __post_init__(self):
        strategies.get_strategy(self.strategy)
        if not 0.0 <= self.tie_rate < 1.0:
            raise InputError(f"tie rate must be in [0, 1), got {self.tie_rate}")
        if any(q != q for q in self.annotator_quality):
            raise InputError(f"annotator qualities must be numbers, got {self.annotator_quality}")
        if self.raters_per_pair < 1:
            raise InputError(f"raters per pair must be >= 1, got {self.raters_per_pair}")
        if self.item_costs not in ITEM_COSTS:
            raise InputError(f"item costs must be one of {ITEM_COSTS}, got {self.item_costs!r}")
        if self.cost_aware and (
            self.item_costs == "none"
            or self.strategy not in ("random", "greedy_dopt") + strategies.PAIR_SCORE_STRATEGIES
            or self.pairs == "all-cross"
        ):
            raise InputError(
                "cost-aware selection needs simulated item costs, sampled candidates and a pair score, "
                f"random or greedy_dopt (got item_costs={self.item_costs!r}, pairs={self.pairs!r}, "
                f"strategy={self.strategy!r})"
            )
        if self.aggregate not in ("votes", "majority"):
            raise InputError(f"aggregate must be 'votes' or 'majority', got {self.aggregate!r}")
        if self.train.annotators > max(len(self.annotator_quality), 1) or (
            self.train.annotators and self.raters_per_pair > 1
        ):
            raise InputError(
                f"{self.train.annotators} reliabilities to fit, but the panel has {len(self.annotator_quality)} "
                "members (and a pair labelled by several raters has no single rater)"
            )
        if self.pairs not in PAIR_MODES:
            raise InputError(f"unknown pair mode {self.pairs!r}; choose one of: {', '.join(PAIR_MODES)}")
        if self.pairs == "all-cross" and self.strategy not in allpairs.ALLPAIRS_STRATEGIES:
            raise InputError(
                f"strategy {self.strategy!r} cannot score all pairs; with pairs='all-cross' use one of: "
                + ", ".join(allpairs.ALLPAIRS_STRATEGIES)
            )
        for name in ("rounds", "initial_labels"):
            if getattr(self, name) < 0:
                raise InputError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("k", "n_prompts", "n_candidates"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.k > self.n_candidates:
            raise InputError(f"k = {self.k} is larger than the {self.n_candidates} candidates per round")
        if self.initial_labels > self.n_candidates:
            raise InputError(
                f"initial_labels = {self.initial_labels} is larger than the {self.n_candidates} candidates per round"
            )
        if not self.best_of_n or min(self.best_of_n) < 1:
            raise InputError(f"best_of_n must be positive integers, got {self.best_of_n}")
        if self.initial_labels + self.rounds * self.k < 1:
            raise InputError("the experiment labels no pair: raise rounds or initial_labels")

    @property
    def votes(self) -> bool:
        """The labels are vote counts with raters (ties, a panel or several raters per pair)."""
        return self.tie_rate > 0 or bool(self.annotator_quality) or self.raters_per_pair > 1

    @property
    def panel(self) -> tuple[float, ...]:
        """The raters' qualities (one member: ``annotation_quality``)."""
        return tuple(self.annotator_quality) or (self.annotation_quality,)

    @property
    def capacity(self) -> int:
        """Rows of the labelled buffer: everything the experiment will ever label."""
        return self.initial_labels + self.rounds * self.k

    def annotations(self) -> np.ndarray:
        """(rounds + 1,) labelled pairs after each round: the x axis of the learning curves."""
        return self.initial_labels + self.k * np.arange(self.rounds + 1)

    def replace(self, **changes) -> "ExperimentConfig":
        return dataclasses.replace(self, **changes)


class ExperimentData(NamedTuple):
    """The arrays the compiled program reads (always passed as arguments).

    train_embeddings: (P, R, D) float32; item index = prompt·R + response.
    train_rewards: (P·R,) float32 golden rewards of the training items (flattened).
    reward_std: () float32, std of the training golden rewards (the annotator's scale).
    test_embeddings: (Pt, Rt, D) float32; test_rewards: (Pt, Rt) float32.
    """

    train_embeddings: jax.Array
    train_rewards: jax.Array
    reward_std: jax.Array
    test_embeddings: jax.Array
    test_rewards: jax.Array

    @property
    def train_items(self) -> jax.Array:
        """(P·R, D) flattened training embeddings."""
        p, r, d = self.train_embeddings.shape
        return self.train_embeddings.reshape(p * r, d)


class ExperimentResult(NamedTuple):
    """metrics: per-round :class:`RoundMetrics`; labelled: the final labelled buffer
    (row j was labelled in round ``max(0, (j − initial_labels) // k + 1)``)."""

    metrics: "RoundMetrics"
    labelled: LabelBuffer


class RoundMetrics(NamedTuple):
    """Per-round results; under ``run_seeds`` each gains a leading seeds axis.

    one_minus_spearman: (rounds + 1,) mean over test prompts of 1 − Spearman (lower is better).
    best_of_n: (rounds + 1, len(config.best_of_n)) golden reward of the best-of-N pick.
    train_loss: (rounds + 1,) mean BT loss over the last 10% of training steps.
    picks_ok: (rounds + 1,) bool, the round's picks were all valid, scored candidates and fit
      the buffer (:func:`choose_pairs`). The runners raise :class:`RunFailed` if any is False.
    train_epochs: (rounds + 1,) passes over the fitted labels the round's model was trained
      for (where early stopping stopped, or the budget).
    tie_strength: (rounds + 1,) the fit's Davidson ν (0 without ties).
    reliability: (rounds + 1, A) the fit's rater reliabilities (A = ``train.annotators``).
    batch_gain: (rounds + 1,) the information gain per label of the round's batch
      (:func:`last_batch_gain`): what the stopping rule reads.
    cost_spent: (rounds + 1,) the labelled pairs' total cost after the round (0 without
      ``item_costs``).
    """

    one_minus_spearman: jax.Array
    best_of_n: jax.Array
    train_loss: jax.Array
    picks_ok: jax.Array
    train_epochs: jax.Array
    tie_strength: jax.Array
    reliability: jax.Array
    batch_gain: jax.Array
    cost_spent: jax.Array


def prepare_data(dataset: Dataset) -> ExperimentData:
    """Move a :class:`~arm_jax.data.Dataset` to the device as float32."""
    tr = jnp.asarray(dataset.train_embeddings, jnp.float32)
    rewards = jnp.asarray(dataset.train_rewards, jnp.float32).reshape(-1)
    return ExperimentData(
        train_embeddings=tr,
        train_rewards=rewards,
        reward_std=jnp.std(rewards),
        test_embeddings=jnp.asarray(dataset.test_embeddings, jnp.float32),
        test_rewards=jnp.asarray(dataset.test_rewards, jnp.float32),
    )


def check_data(data: ExperimentData) -> None:
    """The program's contract on its data, asserted when traced (chex): (P, R, D) and
    (Pt, Rt, D) float32 embeddings, (P·R,) and (Pt, Rt) rewards, a scalar reward scale."""
    chex.assert_rank([data.train_embeddings, data.test_embeddings], 3)
    p, r, d = data.train_embeddings.shape
    chex.assert_axis_dimension(data.test_embeddings, 2, d)
    chex.assert_shape(data.train_rewards, (p * r,))
    chex.assert_shape(data.test_rewards, data.test_embeddings.shape[:2])
    chex.assert_rank(data.reward_std, 0)
    chex.assert_type([data.train_embeddings, data.test_embeddings, data.train_rewards, data.test_rewards], jnp.float32)


def check_config_against_data(config: ExperimentConfig, dataset) -> None:
    """InputError when the data cannot support the configuration."""
    p, r, d = np.shape(dataset.train_embeddings)
    pt, rt, dt = np.shape(dataset.test_embeddings)
    if d != dt:
        raise InputError(f"train embeddings have D = {d} but test embeddings have D = {dt}")
    if config.n_prompts > p:
        raise InputError(f"n_prompts = {config.n_prompts} is more than the {p} training prompts")
    if max(config.best_of_n) > rt:
        raise InputError(f"best_of_n N = {max(config.best_of_n)} is more than the {rt} responses per test prompt")
    possible = pools.possible_pairs(config.pairs, r, config.n_prompts)
    if max(config.k, config.initial_labels) > possible:
        raise InputError(
            f"a round has only {possible} possible {config.pairs} pairs, fewer than k = {config.k}"
            f" or initial_labels = {config.initial_labels}"
        )


# ------------------------------------------------------------------ the steps of a round


def draw_pool(key, config: ExperimentConfig, data: ExperimentData) -> pools.CandidatePool:
    """The round's candidate pairs (local indices into the round's items); for ``all-cross``
    a cross-prompt subsample (used by round 0's random draw)."""
    p, r, _ = data.train_embeddings.shape
    mode = "cross-prompt" if config.pairs == "all-cross" else config.pairs
    return pools.pool_items(key, mode, p, r, config.n_prompts, config.n_candidates)


def past_inputs(
    params, config: ExperimentConfig, data: ExperimentData, buffer: LabelBuffer, strategy: str, reliability=None
):
    """(past_phi_diff (C, H), past_mask (C,), past_weight (C,) or None) of the labelled pairs
    under ``params``; a single masked row for strategies that do not read the past. With votes
    (``config.votes``) a row's x is scaled by its rater's fitted ``reliability`` and weighted
    by its votes (:func:`arm_jax.fisher.past_information`)."""
    if strategy not in PAST_AWARE:
        h = config.model.feature_dim(data.train_items.shape[-1])
        weight = jnp.zeros(1, jnp.float32) if config.votes else None
        return jnp.zeros((1, h), jnp.float32), jnp.zeros(1, bool), weight
    return labelled_differences(params, config, data, buffer, reliability)


class Simulation(NamedTuple):
    """What the simulated annotation needs that depends only on the configuration and the
    data, computed once per run (:func:`simulation`), not every round: the raters' Davidson
    tie strength ν (() float32, 0 without ties) and the items' costs ((P·R,) or None)."""

    tie_strength: jax.Array
    item_costs: jax.Array | None


def simulation(config: ExperimentConfig, data: ExperimentData) -> Simulation:
    nu = jnp.float32(0.0)
    if config.votes:
        nu = annotator.panel_tie_strength(data.train_rewards, config.panel, config.tie_rate, data.reward_std)
    return Simulation(nu, None if config.item_costs == "none" else item_costs(config, data))


def item_costs(config: ExperimentConfig, data: ExperimentData) -> jax.Array:
    """(P·R,) float32 cost of labelling each training item: exp(N(0, ½²)) from a fixed key for
    ``item_costs="lognormal"`` (ones otherwise). A pair costs the sum of its two items'."""
    n = data.train_rewards.shape[0]
    if config.item_costs == "none":
        return jnp.ones(n, jnp.float32)
    return jnp.exp(0.5 * jax.random.normal(jax.random.fold_in(jax.random.PRNGKey(0), 17), (n,)))


def labelled_differences(params, config: ExperimentConfig, data: ExperimentData, buffer: LabelBuffer, reliability=None):
    """(x (C, H), mask (C,), weight (C,) or None) of every buffer row under ``params``: see
    :func:`past_inputs`."""
    past = model_lib.features(params, config.model, data.train_items[buffer.pairs.reshape(-1)])
    past = past.reshape(buffer.capacity, 2, -1)
    diff, weight = train.information_rows(past[:, 0] - past[:, 1], train.votes_of(buffer, config.train), reliability)
    return diff, buffer.mask, weight


def _tie_of(config: ExperimentConfig, tie):
    """Davidson's ν for the selection: the fit's when the labels have ties it trains on, else
    None (Bradley–Terry)."""
    return tie if (config.tie_rate > 0 and config.train.ties and tie is not None) else None


def selection_inputs(
    params, config: ExperimentConfig, data: ExperimentData, pool, buffer, strategy=None,
    prior_precision=posterior.DEFAULT_PRIOR_PRECISION, tie=None, reliability=None,
) -> strategies.SelectionInputs:
    """Features of the round's items under the previous model, gathered into pair differences;
    ``prior_precision``, ``tie``, ``reliability``: the previous fit's λ, ν and rater
    reliabilities (:class:`Fitted`)."""
    phi_items = model_lib.features(params, config.model, data.train_items[pool.items])  # (K, H)
    phi_diff = phi_items[pool.pairs.a] - phi_items[pool.pairs.b]
    past_diff, past_mask, past_weight = past_inputs(params, config, data, buffer, strategy or config.strategy, reliability)
    items = None
    if (strategy or config.strategy) in strategies.RESPONSE_RULES:
        # in-prompt candidates are grouped by prompt (item index = prompt · R + response)
        r = data.train_embeddings.shape[1]
        group = pool.items[pool.pairs.a] // r if config.pairs == "in-prompt" else jnp.zeros_like(pool.pairs.a)
        items = strategies.PairItems(phi_items, pool.pairs.a, pool.pairs.b, group.astype(jnp.int32))
    return strategies.SelectionInputs(
        phi_diff, model_lib.head(params), pool.pairs.valid, past_diff, past_mask, jnp.float32(prior_precision), items,
        past_weight, _tie_of(config, tie),
    )


def choose_pairs(
    key, params, buffer: LabelBuffer, config: ExperimentConfig, data: ExperimentData, strategy: str, k: int,
    prior_precision=posterior.DEFAULT_PRIOR_PRECISION, tie=None, reliability=None, sim: Simulation | None = None,
):
    """The ``k`` pairs ``strategy`` picks this round: ``(a, b, ok)``, global item indices (k,)
    each, and ``ok`` () bool: every pick was a valid, scored candidate (False when a kernel
    failed or fewer than k unlabelled candidates were left; the run then refuses its result).
    ``prior_precision``: the previous fit's λ, for the posterior-based strategies."""
    pool_key, select_key = jax.random.split(key)
    if config.pairs == "all-cross" and strategy != "random":
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
            past_weight=past_weight, tie=_tie_of(config, tie),
        )
        return items[chosen.u], items[chosen.v], jnp.all(jnp.isfinite(chosen.scores))
    pool = draw_pool(pool_key, config, data)
    if not config.allow_relabel:
        seen = pools.labelled_mask(pool.items[pool.pairs.a], pool.items[pool.pairs.b], buffer.pairs, buffer.mask)
        pool = pool._replace(pairs=pool.pairs._replace(valid=pool.pairs.valid & ~seen))
    inputs = selection_inputs(params, config, data, pool, buffer, strategy, prior_precision, tie, reliability)
    if config.cost_aware and strategy != "random":  # random stays random
        costs = (sim or simulation(config, data)).item_costs
        pair_cost = costs[pool.items[pool.pairs.a]] + costs[pool.items[pool.pairs.b]]
        chosen = cost_aware_pick(select_key, inputs, k, strategy, pair_cost)
    else:
        chosen = strategies.STRATEGIES[strategy].fn(select_key, inputs, k)
    ok = jnp.all(jnp.isfinite(chosen.scores) & inputs.valid[chosen.indices])
    return pool.items[pool.pairs.a[chosen.indices]], pool.items[pool.pairs.b[chosen.indices]], ok


def cost_aware_pick(key, inputs: strategies.SelectionInputs, k: int, strategy: str, pair_cost: jax.Array):
    """The k candidates of largest gain per unit cost (jit-able; :class:`ExperimentConfig`
    ``cost_aware``): a pair score's gain (its report score for entropy) over the pair's cost, or
    greedy_dopt's knapsack form with no budget limit."""
    if strategy == "greedy_dopt":
        return strategies.greedy_dopt_budget_strategy(key, inputs, k, pair_cost, jnp.inf)
    gain = strategies.pair_gains(strategies.STRATEGIES[strategy].pair_score, inputs)
    chosen = strategies.top_k_valid(gain / pair_cost, inputs.valid, k)
    return strategies.Selection(chosen.indices, gain[chosen.indices])


def acquire(
    key, params, buffer: LabelBuffer, config: ExperimentConfig, data: ExperimentData, strategy: str, k: int,
    prior_precision=posterior.DEFAULT_PRIOR_PRECISION, tie=None, reliability=None, sim: Simulation | None = None,
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
    if config.votes:
        counts, rater = annotator.annotate_votes(
            label_key, data.train_rewards, a, b, config.panel, sim.tie_strength, data.reward_std,
            config.raters_per_pair,
        )
        if config.aggregate == "majority":
            counts = annotator.majority_vote(jax.random.fold_in(label_key, 1), counts)
        buffer = train.append(buffer, a, b, counts, rater)
    else:
        winner, loser = annotator.annotate(
            label_key, data.train_rewards, a, b, config.annotation_quality, data.reward_std
        )
        buffer = train.append(buffer, winner, loser)
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
        params, jnp.float32(posterior.DEFAULT_PRIOR_PRECISION), jnp.float32(0.0),
        jnp.ones(config.train.annotators, jnp.float32),
    )


def retrain(key, buffer: LabelBuffer, config: ExperimentConfig, data: ExperimentData):
    """Train from scratch on the buffer; returns (:class:`Fitted`, training loss, epochs trained).

    The training loss is the mean minibatch loss over the last 10 % of the steps taken."""
    params, stats = train.fit(key, data.train_items, buffer, config.model, config.train)
    fitted = Fitted(params, stats.prior_precision, stats.tie, stats.reliability)
    return fitted, train.final_loss(stats), stats.epochs


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
    sink = print_report if sink is None else sink

    def send(i, oms, b, key_data):
        i = int(i)
        oms, b = np.asarray(oms), np.asarray(b)
        seed = tuple(np.asarray(key_data).ravel().tolist())
        annotations = int(configs[0].annotations()[i])
        for s, config in enumerate(configs):
            sink(RoundReport(config.strategy, i, annotations, float(oms[s]), float(b[s, -1]), seed))

    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    jax.debug.callback(send, round_index, one_minus_spearman, bon, key)


def last_batch_gain(fitted: Fitted, buffer: LabelBuffer, round_index, config: ExperimentConfig, data: ExperimentData):
    """What the round's batch bought, per label: log det Λ(all labels) − log det Λ(without the
    batch), Λ the head's posterior precision under the freshly trained model
    (:func:`arm_jax.posterior.information_gain`), divided by the batch's size (round 0: the
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
    buffer = train.empty_buffer(config.capacity, votes=config.votes)
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
    sim = sim or simulation(base, data)

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


def run_study_single(key, configs: tuple[ExperimentConfig, ...], data: ExperimentData, sink=None) -> ExperimentResult:
    """The whole experiment of one seed for S strategies, rounds 0..``rounds`` as one
    ``lax.scan``. Every leaf of the result has a leading (S,) strategies axis. ``sink``:
    where progress reports go (see :func:`make_study`)."""
    base = configs[0]
    check_data(data)
    init_key, round_key = jax.random.split(key)
    sim = simulation(base, data)  # once per run, not every round
    buffer, ok = initial_buffer(init_key, base, data, sim)  # round 0 is random: the same for every strategy
    xs = (jnp.arange(base.rounds + 1, dtype=jnp.int32), jax.random.split(round_key, base.rounds + 1))
    step = functools.partial(study_round_step, configs=configs, data=data, sink=sink, sim=sim)
    carry = _stack([(buffer, initial_model(base, data), ok)] * len(configs))
    (buffers, _, _), outs = jax.lax.scan(step, carry, xs)
    by_strategy = lambda x: jnp.moveaxis(x, 0, 1)  # (rounds + 1, S, ...) -> (S, rounds + 1, ...)
    metrics = RoundMetrics(*(by_strategy(x) for x in outs))
    return ExperimentResult(metrics, buffers)


def run_single(key, config: ExperimentConfig, data: ExperimentData) -> ExperimentResult:
    """The whole experiment for one seed: rounds 0..``config.rounds`` as one ``lax.scan``."""
    return _index(run_study_single(key, (config,), data), 0)


class _Program(NamedTuple):
    """What one compiled program runs (a static, hashable jit argument): the configurations,
    whether it is one strategy (results without the strategies axis), the progress sink."""

    configs: tuple
    single: bool
    sink: Callable | None = None


@functools.partial(jax.jit, static_argnames=("what",))
def _run_jit(key, what, data):
    return _run_one(key, what, data)


def _run_one(key, what: _Program, data):
    out = run_study_single(key, what.configs, data, what.sink)
    return _index(out, 0) if what.single else out


@functools.partial(jax.jit, static_argnames=("what",))
def _run_seeds_jit(keys, what, data):
    return jax.vmap(_run_one, in_axes=(0, None, None))(keys, what, data)


@functools.lru_cache(maxsize=None)
def _seed_fn(what):
    """``run(key, data)`` for one configuration or study: one stable function object per
    configuration, so the sharded program is compiled once."""

    def run(key, data):
        return _run_one(key, what, data)

    return run


class RunFailed(RuntimeError):
    """A round picked a pair that was not a valid, scored candidate (a kernel failed, fewer
    unlabelled candidates than k were left, or the label buffer overflowed): the run's
    numbers would be wrong, so they are not returned."""


def check_result(result: ExperimentResult) -> ExperimentResult:
    """Raise :class:`RunFailed` unless every round's picks were sound (``picks_ok``).
    Reduces on the device, so it is safe on arrays sharded over processes."""
    if not bool(jnp.all(result.metrics.picks_ok)):
        from arm_jax import parallel

        ok = parallel.to_host(result.metrics.picks_ok)  # gathered when the seeds span processes
        rounds = ", ".join(str(r) for r in np.flatnonzero(~ok.reshape(-1, ok.shape[-1]).all(0))[:5].tolist())
        raise RunFailed(
            f"round(s) {rounds}: a strategy picked a pair that was not a valid, scored candidate "
            "(fewer unlabelled candidates than k left, or the information matrix could not be "
            "factorised); raise --candidates or lower --k, or pass --allow-relabel"
        )
    return result


def _seed_runners(what, data: ExperimentData, devices) -> tuple[Callable, Callable]:
    """(run_seeds, lower_seeds) for a configuration or study: vmapped over the seeds, which
    are split over ``devices`` when there are several. ``run_seeds`` checks the result
    (:func:`check_result`)."""
    devices = tuple(jax.devices() if devices is None else devices)
    if len(devices) > 1:
        from arm_jax import parallel

        sharded = parallel.sharded_vmap(_seed_fn(what), devices)
        return (lambda keys: check_result(sharded(keys, data))), (lambda keys: sharded.lower(keys, data))
    return (
        (lambda keys: check_result(_run_seeds_jit(keys, what, data))),
        (lambda keys: _run_seeds_jit.lower(keys, what, data)),
    )


class Experiment(NamedTuple):
    """What :func:`make_experiment` returns.

    run: ``run(key) -> ExperimentResult`` for one seed (jit-compiled; the data is an argument).
    run_seeds: ``run_seeds(keys: (S, 2)) -> ExperimentResult`` with a leading seeds axis (vmap).
    lower_seeds: ``lower_seeds(keys).compile()`` → a compiled ``run(keys, data)``: tracing apart
      from compiling (to time them apart).
    config, data: what it runs on.
    """

    run: Callable
    run_seeds: Callable
    lower_seeds: Callable
    config: ExperimentConfig
    data: ExperimentData

    def __call__(self, key):
        return self.run(key)


def make_experiment(config: ExperimentConfig, dataset, devices=None, progress: Callable | None = None) -> Experiment:
    """Bind a configuration to a dataset (``Dataset`` or ``ExperimentData``).

    The returned ``run``/``run_seeds`` compile once per configuration and pass the data into
    the compiled program as arguments. ``devices``: with more than one (default: all local
    devices), ``run_seeds`` splits the seeds over them (``arm_jax.parallel``, a ``Mesh`` over
    the seed axis); the numbers are those of one device. ``progress``: see :func:`make_study`.
    """
    check_config_against_data(config, dataset)
    data = dataset if isinstance(dataset, ExperimentData) else prepare_data(dataset)
    program = _Program((config,), True, progress)
    run_seeds, lower_seeds = _seed_runners(program, data, devices)
    return Experiment(lambda key: check_result(_run_jit(key, program, data)), run_seeds, lower_seeds, config, data)


class Study(NamedTuple):
    """What :func:`make_study` returns.

    run_seeds: ``run_seeds(keys: (n, 2)) -> ExperimentResult``; every leaf has leading
      (seeds, strategies) axes, strategies in the order of ``configs``.
    lower_seeds: ``lower_seeds(keys).compile()`` → a compiled ``run(keys, data)``.
    configs, data: what it runs on.
    """

    run_seeds: Callable
    lower_seeds: Callable
    configs: tuple[ExperimentConfig, ...]
    data: ExperimentData


def make_study(configs, dataset, devices=None, progress: Callable | None = None) -> Study:
    """Several strategies on the same seeds as one compiled program (what ``arm-jax run`` runs).

    configs: :class:`ExperimentConfig` s that differ only in ``strategy`` (ValueError otherwise).
    Strategy s of seed i gives the numbers ``make_experiment(configs[s], ...)`` gives for seed
    i; the program compiles once for all strategies, trains all their models at once, and its
    seeds are split over ``devices`` as in :func:`make_experiment`.

    progress: with ``config.progress`` on, ``progress(report)`` is called from inside the
    running program once per strategy, seed and round with a :class:`RoundReport` (host
    values); default :func:`print_report`. It is part of what is compiled: pass the same
    object to reuse a compiled program.
    """
    configs = check_study(configs)
    check_config_against_data(configs[0], dataset)  # the data sees no difference between them
    data = dataset if isinstance(dataset, ExperimentData) else prepare_data(dataset)
    run_seeds, lower_seeds = _seed_runners(_Program(configs, False, progress), data, devices)
    return Study(run_seeds, lower_seeds, configs, data)
