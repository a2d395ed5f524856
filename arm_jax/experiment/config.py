"""The configuration of one simulated active-learning experiment (:class:`ExperimentConfig`) and
the data it runs on."""
from __future__ import annotations

import dataclasses
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np

from arm_jax.errors import InputError
from arm_jax.experiment import annotator, informed, pools
from arm_jax.experiment.datasets import Dataset
from arm_jax.model.buffer import LabelBuffer
from arm_jax.model.config import TrainConfig
from arm_jax.model.network import ModelConfig
from arm_jax.selection import registry
from arm_jax.selection.catalog import PAIR_MODES, TARGET_PAIRS

#: Simulated item costs: none, or log-normal reading times (ExperimentConfig.item_costs).
ITEM_COSTS = ("none", "lognormal")
#: Who labels in the simulation: the parametric annotator of quality β_a (the paper's), or real
#: raters' recorded ratings (:func:`arm_jax.experiment.annotator.annotate_empirical`).
ANNOTATORS = ("simulated", "empirical")


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """One strategy's experiment. Defaults are the paper's (§5, appendix A).

    strategy: a name from ``arm_jax.selection.registry.STRATEGIES``.
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
      (Davidson's likelihood, :func:`arm_jax.experiment.annotator.panel_tie_strength`); 0: never.
    annotator_quality: a panel: each label comes from a uniformly random member of these
      qualities (the label's rater is recorded; ``train.annotators`` = len(panel) fits their
      reliabilities). Empty: the one annotator of ``annotation_quality``.
    raters_per_pair: each picked pair is labelled by this many raters (panel members drawn
      independently), stored as one row of vote counts.
    annotator: ``"simulated"`` (P(a ≻ b) = σ(β_a Δr*/std r*), with the ties, panels and raters
      above) or ``"empirical"``: each vote draws one recorded rating of each item from the
      data's ``train_ratings`` and the higher wins, equal ratings tie (real rater noise).
    aggregate: ``"votes"`` (train on the vote counts) or ``"majority"`` (one decided label
      per pair: the majority, an equal count by a fair coin).
    item_costs: ``"none"`` or ``"lognormal"``: each training item costs exp(N(0, ½²)) to
      read (fixed by the data, the same for every seed), a pair the sum of its two items';
      the rounds record the cost spent (``RoundMetrics.cost_spent``).
    cost_aware: each round picks the k pairs of largest gain per unit cost (pair scores:
      score / cost, entropy by its entropy; ``greedy_dopt``: its knapsack form,
      :func:`arm_jax.selection.batch.greedy_dopt_budget_strategy`) instead of the largest gain.
    explore: the hedge: this fraction (0 … 1) of each round's batch is drawn at random among
      the candidates the rule did not pick (:func:`arm_jax.selection.registry.hedged`; sampled
      candidates only, no costs).
    random_after: the hand-off: from this many labelled pairs on, every round's batch is drawn
      at random (:func:`arm_jax.selection.batch.handoff_strategy`; None: never; sampled
      candidates only, no costs).
    target_pairs: what the I-optimal rules average the predictive variance over
      (:data:`arm_jax.selection.catalog.TARGET_PAIRS`): ``"candidates"``, the round's candidate
      pairs; ``"in-prompt"``, two responses to one prompt among the round's items (what the test
      metrics rank; :func:`arm_jax.selection.scores.prompt_spread`). The other rules ignore it, so
      one setting serves a study of several rules.
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
    annotator: str = "simulated"
    item_costs: str = "none"
    cost_aware: bool = False
    explore: float = 0.0
    target_pairs: str = "candidates"
    random_after: int | None = None

    def __post_init__(self):
        strategy = registry.get_strategy(informed.RULE if informed.is_informed(self.strategy) else self.strategy)
        registry.hedged(strategy, self.explore, self.random_after)  # InputError for a bad fraction or count
        for flag, given in (("explore", self.explore > 0), ("random_after", self.random_after is not None)):
            if given and (self.pairs == "all-cross" or self.cost_aware):
                raise InputError(f"{flag} draws among sampled candidates without costs (pairs='all-cross' or cost_aware given)")
        if informed.is_informed(self.strategy) and (self.pairs == "all-cross" or self.cost_aware):
            raise InputError("the informed arm runs on sampled candidates without costs (pairs='all-cross' or cost_aware given)")
        if self.target_pairs not in TARGET_PAIRS:
            raise InputError(f"target pairs must be one of {TARGET_PAIRS}, got {self.target_pairs!r}")
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
            or not strategy.budget
            or self.pairs == "all-cross"
        ):
            raise InputError(
                "cost-aware selection needs simulated item costs, sampled candidates and a pair score, "
                f"random or greedy_dopt (got item_costs={self.item_costs!r}, pairs={self.pairs!r}, "
                f"strategy={self.strategy!r})"
            )
        if self.annotator not in ANNOTATORS:
            raise InputError(f"annotator must be one of {ANNOTATORS}, got {self.annotator!r}")
        if self.annotator == "empirical" and (self.annotator_quality or self.train.annotators):
            raise InputError("the empirical annotator draws recorded ratings: no simulated panel, no reliabilities to fit")
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
        if self.pairs == "all-cross" and strategy.pair_score is None:
            raise InputError(
                f"strategy {self.strategy!r} cannot score all pairs; with pairs='all-cross' use one of: "
                + ", ".join(registry.PAIR_SCORE_STRATEGIES)
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
        return (
            self.tie_rate > 0 or bool(self.annotator_quality) or self.raters_per_pair > 1 or self.annotator == "empirical"
        )

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
    train_ratings: (P·R, M) float32 each training item's recorded ratings, NaN padding last
      (what the empirical annotator draws from); None without recorded ratings.
    """

    train_embeddings: jax.Array
    train_rewards: jax.Array
    reward_std: jax.Array
    test_embeddings: jax.Array
    test_rewards: jax.Array
    train_ratings: jax.Array | None = None

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
    """Move a :class:`~arm_jax.experiment.datasets.Dataset` to the device as float32."""
    tr = jnp.asarray(dataset.train_embeddings, jnp.float32)
    rewards = jnp.asarray(dataset.train_rewards, jnp.float32).reshape(-1)
    return ExperimentData(
        train_embeddings=tr,
        train_rewards=rewards,
        reward_std=jnp.std(rewards),
        test_embeddings=jnp.asarray(dataset.test_embeddings, jnp.float32),
        test_rewards=jnp.asarray(dataset.test_rewards, jnp.float32),
        train_ratings=_ratings(dataset, rewards.shape[0]),
    )


def _ratings(dataset: Dataset, n_items: int):
    """The dataset's per-rater ratings as (P·R, M) float32, padding last; None without."""
    ratings = getattr(dataset, "train_ratings", None)
    if ratings is None:
        return None
    ratings = np.asarray(ratings, np.float32).reshape(n_items, -1)
    return jnp.asarray(annotator.pack_ratings(ratings))


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
    if config.annotator == "empirical":
        _check_ratings(getattr(dataset, "train_ratings", None), p * r)
    possible = pools.possible_pairs(config.pairs, r, config.n_prompts)
    if max(config.k, config.initial_labels) > possible:
        raise InputError(
            f"a round has only {possible} possible {config.pairs} pairs, fewer than k = {config.k}"
            f" or initial_labels = {config.initial_labels}"
        )


def item_costs(config: ExperimentConfig, data: ExperimentData) -> jax.Array:
    """(P·R,) float32 cost of labelling each training item: exp(N(0, ½²)) from a fixed key for
    ``item_costs="lognormal"`` (ones otherwise). A pair costs the sum of its two items'."""
    n = data.train_rewards.shape[0]
    if config.item_costs == "none":
        return jnp.ones(n, jnp.float32)
    return jnp.exp(0.5 * jax.random.normal(jax.random.fold_in(jax.random.PRNGKey(0), 17), (n,)))


def _check_ratings(ratings, n_items: int) -> None:
    """InputError unless every one of the ``n_items`` training items has a recorded rating."""
    if ratings is None:
        raise InputError("the empirical annotator needs the training items' ratings (train_ratings, e.g. ratings_train.npy)")
    ratings = np.asarray(ratings, np.float32)
    rows = int(np.prod(ratings.shape[:-1])) if ratings.ndim >= 2 else -1
    if rows != n_items or ratings.shape[-1] < 1:
        raise InputError(f"ratings of shape {ratings.shape} do not match the {n_items} training items (prompts, responses, raters)")
    unrated = int(np.sum(np.all(np.isnan(ratings.reshape(n_items, -1)), axis=1)))
    if unrated:
        raise InputError(f"{unrated} training item(s) have no recorded rating (every row of the ratings is NaN)")
    finite = ratings[~np.isnan(ratings)]
    if not np.all(np.isfinite(finite)):
        raise InputError("ratings hold an infinite value")
