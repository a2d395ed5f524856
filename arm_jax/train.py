"""Fitting the Bradley–Terry reward model.

The labelled comparisons live in a fixed-capacity buffer of (winner, loser) item indices with
a count of filled rows, so a labelled set that grows round after round never changes a shape
and never recompiles. One fit is one ``lax.scan`` over optimiser steps from a fresh
initialisation; it is a pure function of a PRNG key, so ``jax.vmap(fit)`` trains many seeds
in one call.
"""
from __future__ import annotations

import dataclasses
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

from arm_jax import fisher as fisher_lib
from arm_jax import likelihood
from arm_jax import model as model_lib
from arm_jax import posterior
from arm_jax.model import ModelConfig
from arm_jax.errors import InputError


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimiser settings for one fit (AdamW on the Bradley–Terry loss).

    The default is early stopping on held-out labels, then a refit on all labels for the
    epochs it chose: on noisy labels it matched the best hand-tuned fixed schedule at 100,
    1 000 and 10 000 labels (benchmarks/bench_training.py, benchmarks/RESULTS.md). The paper's
    fixed schedule is ``TrainConfig(steps=1000, early_stopping=False)`` (``--schedule fixed``).

    steps: optimiser steps per fit (each a minibatch drawn from the filled buffer rows); with
      early stopping, the most it may take.
    batch_size: comparisons per minibatch (drawn with replacement).
    learning_rate, weight_decay: AdamW.
    max_epochs: optional cap on passes over the filled buffer: steps after the first
      ceil(max_epochs · count / batch_size) leave the parameters unchanged (the program still
      runs ``steps`` steps, so the shape is fixed). ``None`` (the paper's protocol) trains all
      ``steps``. A small labelled set trained for a fixed 1 000 steps is seen hundreds of
      times and its label noise is memorised; see benchmarks/RESULTS.md. With a cap, at
      least ``min_steps`` steps are taken (a tiny labelled set still gets optimised).
    early_stopping: hold out a seeded ``val_fraction`` of the labels (none when fewer than
      ``min_val_labels`` would be held out), evaluate their BT loss every ``eval_every`` steps
      (on at most ``max_val_labels`` of them), keep the best parameters and stop after
      ``patience`` evaluations without an improvement of ``min_delta`` (never before
      ``min_steps``). ``steps`` is then the largest number of steps, ``max_epochs`` a budget.
    refit: after early stopping, train again from the same initialisation on all the labels
      (held-out ones too) for the number of epochs the early stop chose.
    linear_prior: the linear model's (depth 0) prior precision in labels' worth of information
      (see ``_fit_linear``); ``None`` (the default) chooses it by ``linear_prior_rule``.
    linear_prior_rule: ``"cross-validation"`` (the default), ``"evidence"`` or ``"held-out"``;
      see :data:`LINEAR_PRIOR_RULES`.
    ties: when the labels carry votes (``LabelBuffer.counts``), train on their tie votes with
      Davidson's likelihood and fit its tie strength ν (:mod:`arm_jax.likelihood`); False
      drops the tie votes (ν = 0: Bradley–Terry on the decided votes).
    annotators: reliability slots: with A > 0, a label of rater j < A (``LabelBuffer.annotator``)
      has the logit scale q_j = exp(u_j) under the prior u_j ~ N(0, 1); the linear model
      alternates exact fits of the head and of the q's; the MLP is fitted with every rater
      alike, the q's are estimated at its rewards, and it is refitted with them held fixed
      (learning them jointly by Adam made it worse than ignoring them). 0 (the default)
      treats every rater alike (q = 1).

    The linear model (``ModelConfig(depth=0)``) with ``early_stopping`` is not trained by AdamW
    at all: it is fitted exactly (:data:`LINEAR_PRIOR_GRID`, ``_fit_linear``), its prior chosen
    by cross-validation (or the evidence, or the held-out split); ``steps``, ``batch_size``, ``learning_rate``,
    ``weight_decay`` and ``max_epochs`` are then unused.
    """

    steps: int = 2000
    batch_size: int = 256
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    max_epochs: float | None = None
    early_stopping: bool = True
    refit: bool = True
    val_fraction: float = 0.2
    min_val_labels: int = 8
    max_val_labels: int = 4096
    eval_every: int = 10
    patience: int = 10
    min_steps: int = 50
    min_delta: float = 1e-4
    linear_prior: float | None = None
    linear_prior_rule: str = "cross-validation"
    ties: bool = True
    annotators: int = 0

    def __post_init__(self):
        if self.steps < 1:
            raise InputError(f"training steps must be >= 1, got {self.steps}")
        if self.batch_size < 1:
            raise InputError(f"training batch size must be >= 1, got {self.batch_size}")
        if not self.learning_rate > 0:
            raise InputError(f"learning rate must be > 0, got {self.learning_rate}")
        if self.weight_decay < 0:
            raise InputError(f"weight decay must be >= 0, got {self.weight_decay}")
        if self.max_epochs is not None and not self.max_epochs > 0:
            raise InputError(f"max epochs must be > 0, got {self.max_epochs}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise InputError(f"validation fraction must be in [0, 1), got {self.val_fraction}")
        for name in ("eval_every", "patience", "max_val_labels"):
            if getattr(self, name) < 1:
                raise InputError(f"{name.replace('_', ' ')} must be >= 1, got {getattr(self, name)}")
        if self.linear_prior_rule not in LINEAR_PRIOR_RULES:
            raise InputError(f"linear prior rule must be one of {LINEAR_PRIOR_RULES}, got {self.linear_prior_rule!r}")
        if self.linear_prior is not None and not self.linear_prior > 0:
            raise InputError(f"linear prior must be > 0, got {self.linear_prior}")
        for name in ("min_steps", "min_val_labels", "annotators"):
            if getattr(self, name) < 0:
                raise InputError(f"{name.replace('_', ' ')} must be >= 0, got {getattr(self, name)}")


class LabelBuffer(NamedTuple):
    """Fixed-capacity store of labelled comparisons.

    pairs: (C, 2) int32, row = (winner item index, loser item index); rows >= count unused.
    count: () int32, number of filled rows.
    overflow: () bool, set (and kept) when an append did not fit: those labels were not
      written. Outside ``jit`` :func:`append` raises instead; the experiment checks the flag.
    counts: None (every row one decided label: ``pairs[:, 0]`` won), or (C, 3) float32 votes
      of each row for ``pairs[:, 0]``, for ``pairs[:, 1]`` and ties (a tie is (0, 0, 1),
      aggregated votes (7, 3, 0), a soft label p (p, 1 − p, 0); :mod:`arm_jax.likelihood`).
    annotator: None, or (C,) int32 rater of each row (−1: unknown; see ``TrainConfig.annotators``).
    """

    pairs: jax.Array
    count: jax.Array
    overflow: jax.Array | bool = False
    counts: jax.Array | None = None
    annotator: jax.Array | None = None

    @property
    def capacity(self) -> int:
        return self.pairs.shape[0]

    @property
    def mask(self) -> jax.Array:
        """(C,) bool: which rows are filled."""
        return jnp.arange(self.capacity) < self.count


def empty_buffer(capacity: int, votes: bool = False) -> LabelBuffer:
    """An empty buffer; ``votes``: with per-row vote counts and raters (``counts``, ``annotator``)."""
    if not votes:
        return LabelBuffer(jnp.zeros((capacity, 2), jnp.int32), jnp.zeros((), jnp.int32), jnp.zeros((), bool))
    return LabelBuffer(
        jnp.zeros((capacity, 2), jnp.int32), jnp.zeros((), jnp.int32), jnp.zeros((), bool),
        jnp.zeros((capacity, 3), jnp.float32), jnp.full((capacity,), -1, jnp.int32),
    )


def append(
    buffer: LabelBuffer, winner: jax.Array, loser: jax.Array, counts: jax.Array | None = None,
    annotator: jax.Array | None = None,
) -> LabelBuffer:
    """Write ``k`` new comparisons after the filled rows (jit-able; k is static).

    For a buffer with votes, ``counts`` (k, 3) (default: one decided vote, (1, 0, 0)) and
    ``annotator`` (k,) (default −1) go with them.

    Labels that do not fit are never dropped silently: with concrete values (outside ``jit``)
    an :class:`~arm_jax.errors.InputError` names the sizes; inside ``jit`` nothing is written,
    ``count`` stays and ``overflow`` is set, for the caller to check.
    """
    new = jnp.stack([winner, loser], axis=-1).astype(jnp.int32)
    k = new.shape[0]
    too_many = buffer.count + k > buffer.capacity
    if not isinstance(too_many, jax.core.Tracer) and bool(too_many):
        raise InputError(
            f"label buffer of capacity {buffer.capacity} holds {int(buffer.count)} comparisons; "
            f"{k} more do not fit"
        )
    written = jax.lax.dynamic_update_slice(buffer.pairs, new, (buffer.count, jnp.int32(0)))
    pairs = jnp.where(too_many, buffer.pairs, written)
    count = jnp.where(too_many, buffer.count, buffer.count + k)
    extra = {}
    if buffer.counts is not None:
        counts = jnp.tile(jnp.asarray([1.0, 0.0, 0.0], jnp.float32), (k, 1)) if counts is None else counts
        annotator = jnp.full((k,), -1, jnp.int32) if annotator is None else annotator
        new_counts = jax.lax.dynamic_update_slice(buffer.counts, counts.astype(jnp.float32), (buffer.count, jnp.int32(0)))
        new_ann = jax.lax.dynamic_update_slice(buffer.annotator, annotator.astype(jnp.int32), (buffer.count,))
        extra = dict(
            counts=jnp.where(too_many, buffer.counts, new_counts), annotator=jnp.where(too_many, buffer.annotator, new_ann)
        )
    elif counts is not None or annotator is not None:
        raise InputError("this label buffer has no votes or raters: make it with empty_buffer(capacity, votes=True)")
    return LabelBuffer(pairs, count, jnp.logical_or(buffer.overflow, too_many), **extra)


def buffer_from_pairs(winner, loser, capacity: int | None = None, counts=None, annotator=None) -> LabelBuffer:
    """A buffer holding the given comparisons (host-side convenience); with ``counts``
    (n, 3) and/or ``annotator`` (n,), a buffer with votes (:class:`LabelBuffer`)."""
    winner = jnp.asarray(winner, jnp.int32)
    loser = jnp.asarray(loser, jnp.int32)
    n = winner.shape[0]
    capacity = n if capacity is None else capacity
    if capacity < n:
        raise InputError(f"buffer capacity {capacity} is smaller than the {n} comparisons")
    votes = counts is not None or annotator is not None
    return append(
        empty_buffer(capacity, votes), winner, loser,
        None if counts is None else jnp.asarray(counts, jnp.float32),
        None if annotator is None else jnp.asarray(annotator, jnp.int32),
    )


def bt_loss(reward_winner: jax.Array, reward_loser: jax.Array) -> jax.Array:
    """Per-comparison Bradley–Terry negative log-likelihood −log σ(r_w − r_l), stable for any gap."""
    return -jax.nn.log_sigmoid(reward_winner - reward_loser)


def _optimizer(config: TrainConfig):
    return optax.adamw(config.learning_rate, weight_decay=config.weight_decay)


def fit(
    key: jax.Array,
    items: jax.Array,
    buffer: LabelBuffer,
    model_config: ModelConfig | None = None,
    train_config: TrainConfig | None = None,
):
    """Train a fresh reward model on the filled rows of ``buffer``.

    key: PRNG key (initialisation and minibatches are drawn from it).
    items: (N, D) float32 embeddings; the buffer holds indices into it.
    buffer: labelled comparisons. With ``count == 0`` the initial parameters are returned.
    Returns ``(params, stats)``: :class:`FitStats` (per-step losses, the steps and epochs the
    parameters were trained for, the held-out loss and accuracy when early stopping). Pure and
    jit/vmap-able; the configs are static (hashable frozen dataclasses).
    """
    model_config = model_config or model_lib.ModelConfig()
    train_config = train_config or TrainConfig()
    # the contract, asserted when traced: (N, D) float embeddings, (C, 2) int32 index pairs
    chex.assert_rank(items, 2)
    chex.assert_type(items, float)
    chex.assert_shape(buffer.pairs, (None, 2))
    chex.assert_type(buffer.pairs, jnp.int32)
    chex.assert_rank(buffer.count, 0)
    return _fit(key, items, buffer, model_config, train_config)



class FitStats(NamedTuple):
    """What one fit reports (every field a JAX value; under ``vmap`` each gains the batch axis).

    losses: (steps,) training BT loss of each step's minibatch (0 for steps not run).
    steps_run: () int32, optimiser steps run (where training stopped).
    steps_taken: () int32, optimiser steps the returned parameters were trained for (the best
      held-out evaluation when early stopping, else every active step).
    epochs: () float32, ``steps_taken · batch_size / n_fit``: passes over the fitted labels.
    n_fit, n_val: () int32, labels trained on and held out.
    val_loss, val_accuracy: () float32, held-out BT loss and pairwise accuracy of the returned
      parameters (NaN when nothing is held out).
    prior_precision: () float32, the precision λ of the Gaussian prior on the head β that the
      fit used: chosen on held-out labels by the linear model's exact fit
      (``_fit_linear``), else :data:`arm_jax.posterior.DEFAULT_PRIOR_PRECISION`. The
      last-layer posterior (:func:`arm_jax.posterior.laplace`) takes it.
    tie: () float32, Davidson's fitted tie strength ν (0 without tie votes or for a buffer
      without votes; :mod:`arm_jax.likelihood`).
    reliability: (A,) float32 fitted rater reliabilities q_j (``TrainConfig.annotators``).
    """

    losses: jax.Array
    steps_run: jax.Array
    steps_taken: jax.Array
    epochs: jax.Array
    n_fit: jax.Array
    n_val: jax.Array
    val_loss: jax.Array
    val_accuracy: jax.Array
    prior_precision: jax.Array
    tie: jax.Array
    reliability: jax.Array


def split_rows(key, buffer: LabelBuffer, val_fraction: float, min_val: int = 0):
    """A seeded split of the filled rows into fitted and held-out ones, with fixed shapes.

    Each filled row is held out independently with probability ``val_fraction`` (none when
    the expected count ``val_fraction · count`` is below ``min_val``). Returns ``(order,
    n_fit, n_val)``: ``order`` (C,) int32 puts the fitted rows first (in random order), then
    the held-out rows, then the unfilled ones.
    """
    c = buffer.capacity
    u = jax.random.uniform(key, (c,))
    filled = buffer.mask
    enough = val_fraction * buffer.count.astype(jnp.float32) >= max(min_val, 1)
    held = filled & (u < val_fraction) & enough
    # never hold out every label
    held = held & (jnp.sum(held) < buffer.count)
    group = jnp.where(held, 1.0, jnp.where(filled, 0.0, 2.0))
    order = jnp.argsort(group + u, stable=True).astype(jnp.int32)
    n_val = jnp.sum(held).astype(jnp.int32)
    return order, buffer.count - n_val, n_val


def _default_prior() -> jax.Array:
    return jnp.float32(posterior.DEFAULT_PRIOR_PRECISION)


# ------------------------------------------------------------- votes, ties and raters


class Votes(NamedTuple):
    """The likelihood's view of a buffer with votes (:mod:`arm_jax.likelihood`).

    counts: (C, 3) votes (first, second, tie) of the filled rows (zero elsewhere; tie votes
      zero when ``TrainConfig.ties`` is off). annotator: (C,) int32 rater slot, −1 none.
    has_ties: () bool, some row has a tie vote. n_annotators: A (static).
    """

    counts: jax.Array
    annotator: jax.Array
    has_ties: jax.Array
    n_annotators: int


def votes_of(buffer: LabelBuffer, train_config: TrainConfig) -> Votes | None:
    """The :class:`Votes` of a buffer with votes; None for a plain buffer (Bradley–Terry)."""
    if buffer.counts is None:
        return None
    counts = jnp.where(buffer.mask[:, None], buffer.counts, 0.0)
    if not train_config.ties:
        counts = counts.at[:, 2].set(0.0)
    a = train_config.annotators
    ann = jnp.where((buffer.annotator >= 0) & (buffer.annotator < a), buffer.annotator, -1)
    return Votes(counts, ann, jnp.sum(counts[:, 2]) > 0, a)


def initial_nuisance(votes: Votes) -> dict:
    """Starting values: ν from the share t of tie votes (P(tie) at gap 0 is ν/(2 + ν) = t),
    every rater typical (u = 0)."""
    n = jnp.maximum(jnp.sum(votes.counts), 1.0)
    t = jnp.clip(jnp.sum(votes.counts[:, 2]) / n, 1e-4, 0.9)
    return {"log_nu": jnp.log(2.0 * t / (1.0 - t)), "u": jnp.zeros(votes.n_annotators, jnp.float32)}


def rater_scale(votes: Votes, reliability: jax.Array) -> jax.Array:
    """(C,) each row's rater's reliability q from the raters' (A,) ``reliability`` (1 for rows
    without a rater slot)."""
    if votes.n_annotators == 0:
        return jnp.ones(votes.annotator.shape, jnp.float32)
    q = reliability[jnp.clip(votes.annotator, 0, votes.n_annotators - 1)]
    return jnp.where(votes.annotator >= 0, q, 1.0)


def row_scale(votes: Votes, nuisance: dict) -> jax.Array:
    """(C,) :func:`rater_scale` at the nuisance's reliabilities q = exp(u)."""
    return rater_scale(votes, jnp.exp(nuisance["u"]))


def information_rows(diff: jax.Array, votes: Votes | None, reliability: jax.Array | None = None):
    """The labelled rows as the Fisher information sees them: (x, weight). A row of n votes by
    a rater of reliability q adds n·v(q·xᵀβ)·(q x)(q x)ᵀ, so x is scaled by q and weighted by
    n (``arm_jax.fisher.past_information``). Plain labels (``votes`` None): (x, None)."""
    if votes is None:
        return diff, None
    if reliability is not None and votes.n_annotators:
        diff = diff * rater_scale(votes, reliability)[:, None]
    return diff, jnp.sum(votes.counts, axis=-1)


def log_tie(votes: Votes, nuisance: dict) -> jax.Array:
    """log ν, −inf (Bradley–Terry) when no row has a tie vote."""
    return jnp.where(votes.has_ties, nuisance["log_nu"], -jnp.inf)


def vote_losses(gap: jax.Array, votes: Votes, nuisance: dict) -> jax.Array:
    """(C,) each row's negative log-likelihood at reward gaps ``gap`` (first − second)."""
    return likelihood.row_nll(gap, votes.counts, row_scale(votes, nuisance), log_tie(votes, nuisance))


def vote_hits(gap: jax.Array, votes: Votes, rows: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(hits, decided rows) for pairwise accuracy: rows whose votes have a majority, scored 1
    when the gap agrees with it (½ for a zero gap)."""
    margin = votes.counts[:, 0] - votes.counts[:, 1]
    decided = rows & (margin != 0)
    agree = jnp.where(margin > 0, gap > 0, gap < 0) + 0.5 * (gap == 0)
    return jnp.sum(jnp.where(decided, agree, 0.0)), jnp.sum(decided)


#: Newton steps of the nuisance fit (ν and the reliabilities with the rewards held fixed).
NUISANCE_NEWTON_STEPS = 20
#: Adam's learning rate for ν and the reliabilities while the MLP trains (their values are
#: then polished by :func:`fit_nuisance`).
NUISANCE_LR = 0.05


def fit_nuisance(gap: jax.Array, votes: Votes, nuisance: dict, steps: int = NUISANCE_NEWTON_STEPS) -> dict:
    """The MAP of (log ν, u) with the reward gaps held fixed: Σ rows ℓ + the reliabilities'
    prior, by damped Newton steps on A + 1 numbers (jax.hessian, its eigenvalues made
    positive); a step that is not finite or does not lower the objective is not taken. log ν stays put without tie votes."""
    a = votes.n_annotators

    def unpack(eta):
        return {"log_nu": eta[0], "u": eta[1:]}

    def objective(eta):
        return jnp.sum(vote_losses(gap, votes, unpack(eta))) + likelihood.prior_nll(eta[1:])

    free = jnp.concatenate([votes.has_ties[None], jnp.ones(a, bool)])

    def one(eta, _):
        g = jnp.where(free, jax.grad(objective)(eta), 0.0)
        h = jax.hessian(objective)(eta)
        h = jnp.where(free[:, None] & free[None, :], h, jnp.eye(a + 1))
        # the objective is not convex in u (a sharp rater's curvature can be negative): Newton
        # on |H| (eigenvalues made positive, as in saddle-free Newton), so every step descends
        evals, evecs = jnp.linalg.eigh(h)
        evals = jnp.maximum(jnp.abs(evals), 1e-3 * jnp.max(jnp.abs(evals)) + 1e-6)
        delta = jnp.where(free, -(evecs @ ((evecs.T @ g) / evals)), 0.0)
        delta = jnp.where(jnp.all(jnp.isfinite(delta)), jnp.clip(delta, -5.0, 5.0), 0.0)
        tries = jnp.concatenate([jnp.zeros(1), jnp.asarray(_STEP_SIZES)])
        values = jax.vmap(lambda t: objective(eta + t * delta))(tries)
        values = jnp.where(jnp.isfinite(values), values, jnp.inf)
        return jnp.clip(eta + tries[jnp.argmin(values)] * delta, -20.0, 20.0), None

    eta0 = jnp.concatenate([nuisance["log_nu"][None], nuisance["u"]])
    eta, _ = jax.lax.scan(one, eta0, None, length=steps)
    return unpack(eta)


def typical_rater(votes: Votes, nuisance: dict) -> tuple[jax.Array, dict]:
    """(g, nuisance'): the reward's scale and the reliabilities re-expressed for the typical
    rater. Only the products q_j·r are identified; with g the vote-weighted geometric mean of
    the raters' q, a head scaled by g and reliabilities divided by g give the same likelihood,
    and then a reward gap means what it means to the typical rater (q = 1), which is the rater
    :mod:`arm_jax.strategies` assume for the next label."""
    if votes.n_annotators == 0:
        return jnp.float32(1.0), nuisance
    n = jnp.where(votes.annotator >= 0, jnp.sum(votes.counts, axis=-1), 0.0)
    per_rater = jnp.zeros(votes.n_annotators, jnp.float32).at[jnp.clip(votes.annotator, 0)].add(n)
    mean_u = jnp.sum(per_rater * nuisance["u"]) / jnp.maximum(jnp.sum(per_rater), 1e-6)
    return jnp.exp(mean_u), {**nuisance, "u": nuisance["u"] - mean_u}


def nuisance_stats(votes: Votes | None, nuisance: dict | None, n_annotators: int) -> tuple[jax.Array, jax.Array]:
    """(ν, reliabilities (A,)) for :class:`FitStats`: 0 and ones without votes."""
    if votes is None:
        return jnp.float32(0.0), jnp.ones(n_annotators, jnp.float32)
    return jnp.exp(log_tie(votes, nuisance)).astype(jnp.float32), jnp.exp(nuisance["u"]).astype(jnp.float32)


def _fit(key, items, buffer, model_config, train_config, reliability=None):
    if model_config.depth == 0 and (train_config.early_stopping or train_config.linear_prior is not None):
        return _fit_linear(key, items, buffer, train_config)
    votes = votes_of(buffer, train_config)
    if votes is not None and votes.n_annotators and reliability is None:
        # Raters' reliabilities in two stages: fit with every rater alike, estimate the
        # reliabilities at those rewards (fit_nuisance), refit with them held fixed. Learning
        # them jointly with the MLP made the model worse than ignoring them
        # (benchmarks/bench_annotators.py, RESULTS.md).
        first, stats = _fit(key, items, buffer, model_config, dataclasses.replace(train_config, annotators=0))
        r = model_lib.reward(first, model_config, items[buffer.pairs.reshape(-1)]).reshape(-1, 2)
        start = {**initial_nuisance(votes), "log_nu": jnp.log(jnp.maximum(stats.tie, 1e-6))}
        reliability = fit_nuisance(r[:, 0] - r[:, 1], votes, start)["u"]
        return _fit(key, items, buffer, model_config, train_config, reliability)
    init_key, batch_key = jax.random.split(key)
    split_key = jax.random.fold_in(key, 7)

    def initial(params):
        # with votes the parameters are (model, nuisance: ν and the reliabilities)
        if votes is None:
            return params
        nuisance = initial_nuisance(votes)
        return params, (nuisance if reliability is None else {**nuisance, "u": reliability})

    params = initial(model_lib.init_params(init_key, model_config, items.shape[-1]))
    optimizer = _optimizer(train_config) if votes is None else _vote_optimizer(train_config, reliability is not None)
    opt_state = optimizer.init(params)
    b = train_config.batch_size
    steps = train_config.steps
    early = train_config.early_stopping
    if early:
        order, n_fit, n_val = split_rows(split_key, buffer, train_config.val_fraction, train_config.min_val_labels)
    else:
        order, n_fit, n_val = jnp.arange(buffer.capacity, dtype=jnp.int32), buffer.count, jnp.int32(0)
    n_rows = jnp.maximum(n_fit, 1)
    if train_config.max_epochs is None:
        active_steps = jnp.int32(steps)
    else:
        active_steps = jnp.ceil(train_config.max_epochs * n_rows / b).astype(jnp.int32)
        active_steps = jnp.clip(active_steps, min(train_config.min_steps, steps), steps)

    total_votes = None if votes is None else jnp.maximum(jnp.sum(votes.counts), 1.0)

    def loss_fn(p, batch_items, rows):
        if votes is None:
            r = model_lib.reward(p, model_config, batch_items)
            return jnp.mean(bt_loss(r[:b], r[b:]))
        model_p, nuisance = p
        r = model_lib.reward(model_p, model_config, batch_items)
        nll = likelihood.row_nll(
            r[:b] - r[b:], votes.counts[rows], row_scale(votes, nuisance)[rows], log_tie(votes, nuisance)
        )
        # the prior on the reliabilities, at the scale of one vote's loss
        return jnp.mean(nll) + likelihood.prior_nll(nuisance["u"]) / total_votes

    def make_step(order, n_rows, active_steps):
        """One AdamW step on a minibatch drawn (with replacement) from ``order[:n_rows]``;
        a no-op (weight decay included) at or past ``active_steps`` or with no rows."""

        def step(carry, xs):
            p, state = carry
            step_index, step_key = xs
            active = ((n_rows > 0) & (step_index < active_steps)).astype(jnp.float32)
            rows = order[jax.random.randint(step_key, (b,), 0, jnp.maximum(n_rows, 1))]
            pair = buffer.pairs[rows]
            batch_items = items[jnp.concatenate([pair[:, 0], pair[:, 1]])]
            loss, grads = jax.value_and_grad(loss_fn)(p, batch_items, rows)
            updates, state = optimizer.update(grads, state, p)
            updates = jax.tree_util.tree_map(lambda u: active * u, updates)
            return (optax.apply_updates(p, updates), state), loss * active

        return step

    step = make_step(order, n_fit, active_steps)

    step_keys = jax.random.split(batch_key, steps)
    taken = jnp.minimum(active_steps, steps) * (n_fit > 0)
    if not early:
        xs = (jnp.arange(steps, dtype=jnp.int32), step_keys)
        (params, _), losses = jax.lax.scan(step, (params, opt_state), xs)
        nan = jnp.float32(jnp.nan)
        epochs = taken.astype(jnp.float32) * b / n_rows
        taken = taken.astype(jnp.int32)
        params, tie, reliability = _finish_votes(params, votes, items, buffer, model_config, train_config)
        return params, FitStats(
            losses, taken, taken, epochs, n_fit, n_val, nan, nan, _default_prior(), tie, reliability
        )

    # Early stopping: chunks of ``eval_every`` steps, then the held-out BT loss; the best
    # parameters are kept (jnp.where) and training stops after ``patience`` evaluations
    # without improvement (after ``min_steps``) or at the step budget. A while_loop: under
    # vmap it runs until the last model stops, the stopped ones unchanged.
    every = train_config.eval_every
    n_chunks = -(-steps // every)
    val_cap = min(buffer.capacity, train_config.max_val_labels)
    val_pos = jnp.arange(val_cap, dtype=jnp.int32)
    val_rows = order[jnp.clip(n_fit + val_pos, 0, buffer.capacity - 1)]
    val_mask = val_pos < n_val
    val_pairs = buffer.pairs[val_rows]
    val_items = items[jnp.concatenate([val_pairs[:, 0], val_pairs[:, 1]])]

    def held_out(p):
        if votes is not None:
            model_p, nuisance = p
            r = model_lib.reward(model_p, model_config, val_items)
            gap = r[:val_cap] - r[val_cap:]
            sub = Votes(votes.counts[val_rows], votes.annotator[val_rows], votes.has_ties, votes.n_annotators)
            nll = vote_losses(gap, sub, nuisance)
            n_votes = jnp.sum(jnp.where(val_mask, jnp.sum(sub.counts, axis=-1), 0.0))
            loss = jnp.sum(jnp.where(val_mask, nll, 0.0)) / jnp.maximum(n_votes, 1e-6)
            hits, decided = vote_hits(gap, sub, val_mask)
            return loss, jnp.where(decided > 0, hits / jnp.maximum(decided, 1), jnp.nan)
        r = model_lib.reward(p, model_config, val_items)
        gap = r[:val_cap] - r[val_cap:]
        denom = jnp.maximum(jnp.sum(val_mask), 1)
        loss = jnp.sum(jnp.where(val_mask, bt_loss(gap, 0.0), 0.0)) / denom
        acc = jnp.sum(jnp.where(val_mask, (gap > 0) + 0.5 * (gap == 0), 0.0)) / denom
        return loss, acc

    pad = n_chunks * every - steps
    keys_padded = jnp.concatenate([step_keys, jnp.repeat(step_keys[-1:], pad, axis=0)]) if pad else step_keys

    class State(NamedTuple):
        chunk: jax.Array
        params: object
        opt_state: object
        best: object
        best_loss: jax.Array
        best_acc: jax.Array
        best_step: jax.Array
        bad: jax.Array
        losses: jax.Array
        done: jax.Array

    def body(st: State) -> State:
        start = st.chunk * every
        idx = start + jnp.arange(every, dtype=jnp.int32)
        chunk_keys = jax.lax.dynamic_slice_in_dim(keys_padded, start, every)
        (p, state), losses = jax.lax.scan(step, (st.params, st.opt_state), (idx, chunk_keys))
        losses = jax.lax.dynamic_update_slice_in_dim(st.losses, losses, start, 0)  # (n_chunks · every,)
        end = jnp.minimum(start + every, active_steps)
        loss, acc = held_out(p)
        improved = (n_val > 0) & (loss < st.best_loss - train_config.min_delta)
        best = jax.tree_util.tree_map(lambda new, old: jnp.where(improved, new, old), p, st.best)
        bad = jnp.where(improved, 0, st.bad + 1)
        stop = (n_val > 0) & (bad >= train_config.patience) & (end >= train_config.min_steps)
        done = stop | (end >= active_steps)
        return State(
            st.chunk + 1, p, state, best,
            jnp.where(improved, loss, st.best_loss), jnp.where(improved, acc, st.best_acc),
            jnp.where(improved, end, st.best_step), bad, losses, done,
        )

    init = State(
        jnp.int32(0), params, opt_state, params, jnp.float32(jnp.inf), jnp.float32(jnp.nan),
        jnp.int32(0), jnp.int32(0), jnp.zeros(n_chunks * every, jnp.float32), n_fit <= 0,
    )
    st = jax.lax.while_loop(lambda st: ~st.done & (st.chunk < n_chunks), body, init)
    use_best = n_val > 0
    params = jax.tree_util.tree_map(lambda best, last: jnp.where(use_best, best, last), st.best, st.params)
    last_step = jnp.minimum(st.chunk * every, active_steps)
    steps_taken = jnp.where(use_best, st.best_step, last_step) * (n_fit > 0)
    val_loss = jnp.where(use_best, st.best_loss, jnp.nan)
    epochs = steps_taken.astype(jnp.float32) * b / n_rows
    steps_run = (last_step * (n_fit > 0)).astype(jnp.int32)
    if train_config.refit:
        # Refit from the same initialisation on every label (held-out ones included) for the
        # epochs the early stop chose; chunks in a while_loop, so only those steps run.
        all_rows = jnp.arange(buffer.capacity, dtype=jnp.int32)
        refit_steps = jnp.ceil(epochs * jnp.maximum(buffer.count, 1) / b).astype(jnp.int32)
        refit_steps = jnp.clip(refit_steps, min(train_config.min_steps, steps), steps)
        refit_step = make_step(all_rows, buffer.count, refit_steps)

        def refit_body(carry):
            chunk, p, state = carry
            idx = chunk * every + jnp.arange(every, dtype=jnp.int32)
            chunk_keys = jax.lax.dynamic_slice_in_dim(keys_padded, chunk * every, every)
            (p, state), _ = jax.lax.scan(refit_step, (p, state), (idx, chunk_keys))
            return chunk + 1, p, state

        p0 = initial(model_lib.init_params(init_key, model_config, items.shape[-1]))
        _, refitted, _ = jax.lax.while_loop(
            lambda c: (c[0] * every < refit_steps) & (n_val > 0), refit_body, (jnp.int32(0), p0, optimizer.init(p0))
        )
        params = jax.tree_util.tree_map(lambda r, e: jnp.where(n_val > 0, r, e), refitted, params)
    params, tie, reliability = _finish_votes(params, votes, items, buffer, model_config, train_config)
    return params, FitStats(
        st.losses[:steps], steps_run, steps_taken.astype(jnp.int32), epochs, n_fit, n_val, val_loss, st.best_acc,
        _default_prior(), tie, reliability,
    )


def _vote_optimizer(config: TrainConfig, fixed_reliability: bool = False):
    """AdamW on the model, Adam (:data:`NUISANCE_LR`, no decay: they have their own prior) on
    ν and the reliabilities (held fixed with ``fixed_reliability``)."""
    return optax.multi_transform(
        {"model": _optimizer(config), "nuisance": optax.adam(NUISANCE_LR), "fixed": optax.set_to_zero()},
        lambda p: (
            jax.tree_util.tree_map(lambda _: "model", p[0]),
            {"log_nu": "nuisance", "u": "fixed" if fixed_reliability else "nuisance"},
        ),
    )


def _finish_votes(params, votes, items, buffer, model_config, train_config):
    """(model parameters, ν, reliabilities): for a buffer with votes, the nuisance is polished
    by :func:`fit_nuisance` at the fitted rewards of every labelled row."""
    if votes is None:
        return (params,) + nuisance_stats(None, None, train_config.annotators)
    model_p, nuisance = params
    r = model_lib.reward(model_p, model_config, items[buffer.pairs.reshape(-1)]).reshape(-1, 2)
    nuisance = fit_nuisance(r[:, 0] - r[:, 1], votes, nuisance)
    g, nuisance = typical_rater(votes, nuisance)
    model_p = {**model_p, "params": {**model_p["params"], "head": model_p["params"]["head"] * g}}
    return (model_p,) + nuisance_stats(votes, nuisance, train_config.annotators)


#: The prior precisions the linear model's exact fit chooses from, in units of one label's
#: information per direction (λ = c · s, s = mean |x|² / (4 D) over the fitted pairs'
#: differences x): from a tenth of a label to a million labels, half a decade apart.
LINEAR_PRIOR_GRID = tuple(float(10.0 ** (e / 2)) for e in range(-2, 13))
#: The grid point used when too few labels are held out to choose (measured:
#: benchmarks/bench_training.py --depth 0, RESULTS.md).
LINEAR_DEFAULT_PRIOR = 10.0
#: How the linear model's prior is chosen along the grid: "cross-validation" (the default:
#: 5-fold, the one-standard-error rule on the held-out BT loss of every label), "evidence"
#: (the Laplace approximation of the marginal likelihood of all the labels) or "held-out"
#: (the one-standard-error rule on the early-stopping split alone). Measured
#: (benchmarks/bench_training.py, benchmarks/RESULTS.md): on real ratings cross-validation is
#: within 0.015 of the best fixed prior from 100 to 1 000 labels where the evidence lags by
#: up to 0.047; on the built-in task the evidence is within 0.022 while cross-validation lags
#: by 0.078 at 100 labels (0.029 at 300, none at 1 000).
LINEAR_PRIOR_RULES = ("cross-validation", "evidence", "held-out")
#: Folds of the "cross-validation" rule.
LINEAR_CV_FOLDS = 5
#: Newton steps per grid point (warm-started along the grid from the strongest prior) and for
#: the final fit on all labels.
NEWTON_STEPS = (4, 8)
_STEP_SIZES = (1.0, 0.5, 0.25, 0.1)


def _fit_linear(key, items, buffer, train_config):
    """The linear reward model r = ψᵀβ (depth 0) fitted exactly: the MAP of Bradley–Terry
    logistic regression with a Gaussian prior N(0, λ⁻¹I) on β, by damped Newton steps.

    λ = c · s, with s = mean |x|² / (4 D) over the fitted pairs' differences x (one label's
    Fisher information per direction at a zero gap), so c counts labels' worth of prior and
    does not depend on the embeddings' scale. c is ``train_config.linear_prior`` when given.
    Otherwise, by default (``linear_prior_rule="cross-validation"``), the labels are split into
    :data:`LINEAR_CV_FOLDS` seeded folds; for each fold the head is fitted on the others along
    the grid (strongest prior first, each warm-started from the last) and the fold's BT loss
    recorded; the strongest prior whose mean held-out loss over all labels is within one
    standard error of the lowest wins, and the head is refitted on all labels with it (fewer
    than 2 · folds labels: :data:`LINEAR_DEFAULT_PRIOR`). With ``"evidence"``, the λ of the
    largest Laplace log evidence −NLL(β̂) − λ|β̂|²/2 + (D/2) log λ − ½ log det(XᵀWX + λI) of all
    labels wins (MacKay's evidence framework, on a grid). With ``"held-out"`` it is chosen on
    held-out labels (the same seeded split as early stopping): the head is
    fitted on the rest for every λ of :data:`LINEAR_PRIOR_GRID` (from the strongest prior
    down, each warm-started from the last); the strongest prior whose held-out BT loss is within
    one standard error of the smallest wins (the "one-standard-error rule" of cross-validated
    penalties, as in glmnet's ``lambda.1se``: a few held-out labels cannot tell close priors
    apart, and the stronger one ranked better in benchmarks/RESULTS.md), and the head is
    refitted on all labels with it. With too few
    labels to hold out, λ is :data:`LINEAR_DEFAULT_PRIOR`. Each Newton step solves with a
    Cholesky factor of the (positive definite) regularised Hessian and keeps the best of a few
    step sizes and no step, so the objective never rises and a failed factorisation (not finite)
    leaves β where it was. FitStats: steps count Newton steps; losses hold the final training
    BT loss; epochs are NaN (no passes over the data); prior_precision is λ; val_loss and
    val_accuracy are the held-out figures of the chosen λ (cross-validation: over every label,
    each held out once, and n_val is the label count; evidence: none).
    """
    init_key, _ = jax.random.split(key)
    split_key = jax.random.fold_in(key, 7)
    params = model_lib.init_params(init_key, model_lib.ModelConfig(depth=0), items.shape[-1])
    c = buffer.capacity
    d = items.shape[-1]
    fixed = train_config.linear_prior is not None
    evidence = train_config.linear_prior_rule == "evidence" and not fixed
    cv = train_config.linear_prior_rule == "cross-validation" and not fixed
    val_fraction = 0.0 if fixed or evidence or cv else train_config.val_fraction
    order, n_fit, n_val = split_rows(split_key, buffer, val_fraction, train_config.min_val_labels)
    position = jnp.zeros(c, jnp.int32).at[order].set(jnp.arange(c, dtype=jnp.int32))
    filled = buffer.mask
    fit_rows = filled & (position < n_fit)
    val_rows = filled & (position >= n_fit)
    x = (items[buffer.pairs[:, 0]] - items[buffer.pairs[:, 1]]).astype(jnp.float32)  # (C, D), winner − loser
    x = jnp.where(filled[:, None], x, 0.0)
    sq = jnp.sum(x * x, axis=-1)
    scale = jnp.sum(jnp.where(fit_rows, sq, 0.0)) / jnp.maximum(jnp.sum(fit_rows), 1) / (4.0 * d)
    scale = jnp.where(scale > 0, scale, 1.0)
    grid = scale * jnp.asarray(LINEAR_PRIOR_GRID[::-1], jnp.float32)  # strongest prior first
    votes = votes_of(buffer, train_config)
    # the nuisance (ν, reliabilities) of a buffer with votes: first estimated at the default
    # prior, held fixed while the prior is chosen, then alternated with the final fit
    nuisance = None if votes is None else initial_nuisance(votes)

    def row_loss(z, nuisance):
        """(C,) each row's negative log-likelihood at gaps z."""
        return bt_loss(z, 0.0) if votes is None else vote_losses(z, votes, nuisance)

    def row_derivatives(z, nuisance):
        """(C,) first and second derivatives of each row's loss in its gap z."""
        if votes is None:
            p = jax.nn.sigmoid(z)
            return p - 1.0, p * (1 - p)
        q = row_scale(votes, nuisance)
        first = jax.grad(lambda z: jnp.sum(vote_losses(z, votes, nuisance)))(z)
        nu = jnp.exp(log_tie(votes, nuisance))
        return first, jnp.sum(votes.counts, axis=-1) * q * q * fisher_lib.gap_variance(q * z, nu)

    def objective(beta, rows, lam, nuisance):
        nll = jnp.sum(jnp.where(rows, row_loss(x @ beta, nuisance), 0.0))
        return nll + 0.5 * lam * jnp.sum(beta * beta)

    def newton(beta, rows, lam, n_steps, nuisance=None):
        def one(beta, _):
            z = x @ beta
            first, second = row_derivatives(z, nuisance)
            w = jnp.where(rows, second, 0.0)
            g = x.T @ jnp.where(rows, first, 0.0) + lam * beta
            h = (x * w[:, None]).T @ x + lam * jnp.eye(d, dtype=x.dtype)
            chol = jnp.linalg.cholesky(h)
            delta = -jax.scipy.linalg.cho_solve((chol, True), g)
            delta = jnp.where(jnp.all(jnp.isfinite(delta)), delta, 0.0)
            tries = jnp.concatenate([jnp.zeros(1), jnp.asarray(_STEP_SIZES)])
            values = jax.vmap(lambda t: objective(beta + t * delta, rows, lam, nuisance))(tries)
            values = jnp.where(jnp.isfinite(values), values, jnp.inf)
            return beta + tries[jnp.argmin(values)] * delta, None

        beta, _ = jax.lax.scan(one, beta, None, length=n_steps)
        return beta

    with jax.default_matmul_precision("highest"):
        if votes is not None:
            lam0 = scale * jnp.float32(train_config.linear_prior or LINEAR_DEFAULT_PRIOR)
            beta0 = jnp.zeros(d, jnp.float32)
            for _ in range(2):
                beta0 = newton(beta0, filled, lam0, NEWTON_STEPS[1], nuisance)
                nuisance = fit_nuisance(x @ beta0, votes, nuisance)

        def log_evidence_along(beta, lam):
            """Laplace log evidence of all the labels at λ: −NLL − λ|β̂|²/2 + D/2 log λ − ½ log det(H)."""
            beta = newton(beta, filled, lam, NEWTON_STEPS[0], nuisance)
            z = x @ beta
            w = jnp.where(filled, row_derivatives(z, nuisance)[1], 0.0)
            h = (x * w[:, None]).T @ x + lam * jnp.eye(d, dtype=x.dtype)
            logdet = 2.0 * jnp.sum(jnp.log(jnp.diagonal(jnp.linalg.cholesky(h))))
            nll = jnp.sum(jnp.where(filled, row_loss(z, nuisance), 0.0))
            return beta, -nll - 0.5 * lam * jnp.sum(beta * beta) + 0.5 * d * jnp.log(lam) - 0.5 * logdet

        def held_out_path(rows, held):
            """Fit on ``rows`` along the grid (warm-started); the ``held`` labels' BT losses:
            (G,) sums of loss, of loss² and of pairwise hits."""
            def step(beta, lam):
                beta = newton(beta, rows, lam, NEWTON_STEPS[0], nuisance)
                gap = x @ beta
                loss = jnp.where(held, row_loss(gap, nuisance), 0.0)
                if votes is None:
                    acc = jnp.sum(jnp.where(held, (gap > 0) + 0.5 * (gap == 0), 0.0))
                else:  # over the rows with a majority, scaled to all held-out rows
                    hits, decided = vote_hits(gap, votes, held)
                    acc = jnp.where(decided > 0, hits / jnp.maximum(decided, 1) * jnp.sum(held), jnp.nan)
                return beta, (jnp.sum(loss), jnp.sum(loss * loss), acc)

            return jax.lax.scan(step, jnp.zeros(d, jnp.float32), grid)[1]

        def one_standard_error(sums, squares, hits, n, ddof):
            """(mean held-out loss, accuracy, best grid index): the strongest prior whose loss is
            within one standard error of the lowest (grid[0] is the strongest)."""
            n = jnp.maximum(n, 1).astype(jnp.float32)
            losses = sums / n
            variance = jnp.maximum(squares - n * losses ** 2, 0.0) / jnp.maximum(n - ddof, 1.0)
            se = jnp.sqrt(variance / n)
            losses = jnp.where(jnp.isfinite(losses), losses, jnp.inf)
            lowest = jnp.argmin(losses)
            return losses, hits / n, jnp.argmax(losses <= losses[lowest] + se[lowest])

        if fixed:
            val_losses = val_accs = jnp.full(1, jnp.nan)
            best = 0
        elif cv:
            fold = jnp.floor(jax.random.uniform(split_key, (c,)) * LINEAR_CV_FOLDS).astype(jnp.int32)
            folds = jnp.arange(LINEAR_CV_FOLDS)
            held = filled[None, :] & (fold[None, :] == folds[:, None])  # (F, C)
            per_fold = jax.vmap(held_out_path)(filled[None, :] & ~held, held)  # (F, G) each
            val_losses, val_accs, best = one_standard_error(
                *(jnp.sum(a, axis=0) for a in per_fold), buffer.count, ddof=0
            )
            # every label is held out once: n_val reports the cross-validated labels
            n_val = jnp.where(buffer.count >= 2 * LINEAR_CV_FOLDS, buffer.count, 0).astype(jnp.int32)
            n_fit = buffer.count
        elif evidence:
            _, log_ev = jax.lax.scan(log_evidence_along, jnp.zeros(d, jnp.float32), grid)
            best = jnp.argmax(jnp.where(jnp.isfinite(log_ev), log_ev, -jnp.inf))
            val_losses = val_accs = jnp.full(grid.shape[0], jnp.nan)
        else:
            val_losses, val_accs, best = one_standard_error(*held_out_path(fit_rows, val_rows), n_val, ddof=1)
        c_default = train_config.linear_prior if fixed else LINEAR_DEFAULT_PRIOR
        lam = jnp.where((n_val > 0) | evidence, grid[best], scale * jnp.float32(c_default))
        beta = newton(jnp.zeros(d, jnp.float32), filled, lam, NEWTON_STEPS[1], nuisance)
        if votes is not None:
            for _ in range(2):
                nuisance = fit_nuisance(x @ beta, votes, nuisance)
                beta = newton(beta, filled, lam, NEWTON_STEPS[1], nuisance)
            g, nuisance = typical_rater(votes, nuisance)
            beta = beta * g
    params = {"params": {"head": beta[:, None].astype(params["params"]["head"].dtype)}}
    nan = jnp.float32(jnp.nan)
    path_fits = 0 if fixed else (LINEAR_CV_FOLDS if cv else 1)
    n_newton = jnp.int32(path_fits * len(LINEAR_PRIOR_GRID) * NEWTON_STEPS[0] + NEWTON_STEPS[1])
    n_newton = n_newton * (buffer.count > 0)
    # "losses": the final mean BT loss on all labels at every Newton step's place, so that
    # final_loss reports the training loss as for the other fits
    train_loss = jnp.sum(jnp.where(filled, row_loss(x @ beta, nuisance), 0.0)) / jnp.maximum(buffer.count, 1)
    tie, reliability = nuisance_stats(votes, nuisance, train_config.annotators)
    losses = jnp.where(jnp.arange(train_config.steps) < n_newton, train_loss, 0.0).astype(jnp.float32)
    return params, FitStats(
        losses, n_newton, n_newton, nan, n_fit, n_val,
        jnp.where(n_val > 0, val_losses[best], nan), jnp.where(n_val > 0, val_accs[best], nan), lam,
        tie, reliability,
    )


def final_loss(stats: FitStats) -> jax.Array:
    """Mean minibatch loss over the last 10 % of the steps run (at least one). ``-> ()``."""
    idx = jnp.arange(stats.losses.shape[-1])
    last = stats.steps_run
    window = (idx < last) & (idx >= last - jnp.maximum(last // 10, 1))
    return jnp.sum(jnp.where(window, stats.losses, 0.0)) / jnp.maximum(jnp.sum(window), 1)


fit_jit = jax.jit(fit, static_argnames=("model_config", "train_config"))
