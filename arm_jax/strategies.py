"""Selection strategies: which k of N candidate pairs to send to annotators.

Every strategy has one signature::

    strategy(key, inputs: SelectionInputs, k: int) -> Selection

and sits in :data:`STRATEGIES` under its CLI name, so the CLI, the experiment and the
benchmarks all look strategies up by name. Everything here is jit-able with ``k`` static and
returns k *distinct* indices among the valid candidates (given at least k valid candidates;
:func:`select` checks that and the rest of the input at the boundary).
"""
from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import chex
import numpy as np

from arm_jax import fisher, posterior
from arm_jax.errors import InputError


class PairItems(NamedTuple):
    """The items behind the candidate pairs, for the rules defined over a prompt's responses
    (``dts``, ``drts``, ``maxmin_lcb``).

    phi: (K, H) float32 last-layer features of the items the candidates touch.
    a, b: (N,) int32 rows of ``phi`` of each candidate's two items (x_i = phi[a_i] − phi[b_i]).
    group: (N,) int32, the candidate's group: its prompt for in-prompt pools (the published
      rules run per prompt), one group (0) for cross-prompt and all-cross pools.
    """

    phi: jax.Array
    a: jax.Array
    b: jax.Array
    group: jax.Array


class SelectionInputs(NamedTuple):
    """What a strategy sees about the candidate pool.

    phi_diff: (N, H) float32, x_i = Φ(a_i) − Φ(b_i), last-layer feature differences.
    beta: (H,) float32, the current head β̂ (so x_i·β̂ = r̂(a_i) − r̂(b_i)).
    valid: (N,) bool, candidates that may be picked (padding and duplicates are False).
    past_phi_diff: (M, H) float32, feature differences of already labelled pairs.
    past_mask: (M,) bool, which rows of ``past_phi_diff`` are real.
    prior_precision: () λ of the Gaussian prior on β (the fit's ``FitStats.prior_precision``:
      chosen on held-out labels for the linear model, else
      :data:`arm_jax.posterior.DEFAULT_PRIOR_PRECISION`). The last-layer posterior the
      posterior-based strategies use has precision Λ = I_past + λI.
    items: :class:`PairItems` or None; the response-level rules need it.
    past_weight: None, or (M,) float32 votes of each labelled row (its weight in I_past);
      the rows' x are then already scaled by their rater's reliability (:mod:`arm_jax.likelihood`).
    tie: None (Bradley–Terry), or () Davidson's tie strength ν of the fit: every Fisher weight
      v (the pool's, I_past's, the posterior's) is then Davidson's (``fisher.gap_variance``).
    """

    phi_diff: jax.Array
    beta: jax.Array
    valid: jax.Array
    past_phi_diff: jax.Array
    past_mask: jax.Array
    prior_precision: jax.Array | float = posterior.DEFAULT_PRIOR_PRECISION
    items: PairItems | None = None
    past_weight: jax.Array | None = None
    tie: jax.Array | None = None


class Selection(NamedTuple):
    """indices: (k,) int32 distinct candidate indices, best first where the strategy ranks;
    scores: (k,) float32, each pick's score under the strategy (its gain, for greedy ones)."""

    indices: jax.Array
    scores: jax.Array


StrategyFn = Callable[[jax.Array, SelectionInputs, int], Selection]


class PairScore(NamedTuple):
    """How an additive strategy scores one candidate pair: the one definition every driver uses.

    A pair enters only through its reward gap ``gap = x·β̂`` and, for the design strategies,
    its leverage ``quad = xᵀ(M + ρI)⁻¹x``, where M = Σ_pool w(gap) x xᵀ (+ I_past) (+ λI), and
    for I-optimality its spread ``xᵀM⁻¹SM⁻¹x`` (S: :func:`spread_matrix` of the pool). The pool
    driver (:func:`select`, the experiment), the all-pairs driver (:mod:`arm_jax.allpairs`) and
    the sharded driver (:mod:`arm_jax.parallel`) compute ``gap``, M and ``quad`` each in their
    own way (explicit pairs, item tiles, a ``psum`` over devices) and then call these functions,
    so they rank by the same numbers.

    weight: ``None`` (no information matrix: ``quad`` is not computed) or ``w(gap) -> (...)``,
      each pair's weight in M (``fisher.gap_variance`` for the Fisher information, ones for
      the design matrix).
    uses_past: M also holds the labelled pairs' information I_past.
    rank: ``rank(gap, quad) -> score`` (``rank(gap, quad, spread)`` when ``spread``) that
      top k ranks (larger is better).
    report: ``report(gap, quad) -> score`` shown to the user for the picked pairs; ``None``:
      the rank score itself.
    pool: M holds the pool's information Σ_pool w(gap) x xᵀ. False for the posterior-based
      scores, whose M is the posterior precision Λ = I_past + λI of the labelled pairs alone.
    prior: M holds the prior's precision λI (``SelectionInputs.prior_precision``).
    spread: the score also reads xᵀM⁻¹SM⁻¹x (I-optimality).
    tie_aware: ``rank`` reads the Fisher weight and takes ``tie=`` (Davidson's ν; see
      :func:`with_tie`).
    """

    weight: Callable | None
    uses_past: bool
    rank: Callable
    report: Callable | None = None
    pool: bool = True
    prior: bool = False
    spread: bool = False
    tie_aware: bool = False


def with_tie(spec: PairScore, tie) -> PairScore:
    """``spec`` under Davidson's likelihood with tie strength ``tie`` (ν): its Fisher weight
    and, if it reads it, its rank use ``fisher.gap_variance(gap, tie)``. ``None``: ``spec``
    itself (Bradley–Terry). Every driver calls this once, so all of them score alike."""
    if tie is None:
        return spec
    if spec.weight is fisher.gap_variance:
        spec = spec._replace(weight=functools.partial(fisher.gap_variance, tie=tie))
    if spec.tie_aware:
        spec = spec._replace(rank=functools.partial(spec.rank, tie=tie))
    return spec


class Strategy(NamedTuple):
    """A registry entry.

    name: the CLI name. description: one line for ``arm-jax strategies``.
    fn: ``fn(key, inputs, k) -> Selection`` on an explicit candidate pool (every strategy has
      one; for pair-score strategies it is built from ``pair_score``).
    pair_score: :class:`PairScore` for additive strategies, ``None`` for batch procedures
      (random draws, greedy batches, clustering), which only the pool driver runs.
    uses_past: reads the labelled pairs (I_past or the posterior built on them).
    """

    name: str
    fn: StrategyFn
    description: str
    pair_score: PairScore | None = None
    uses_past: bool = False

    @property
    def drivers(self) -> tuple[str, ...]:
        """Where it runs: ``pool`` always; ``all-pairs`` and ``sharded`` for pair scores."""
        return ("pool", "all-pairs", "sharded") if self.pair_score is not None else ("pool",)


def make_inputs(
    phi_diff, beta, valid=None, past_phi_diff=None, past_mask=None,
    prior_precision: float = posterior.DEFAULT_PRIOR_PRECISION, items: PairItems | None = None,
    past_weight=None, tie=None,
) -> SelectionInputs:
    """Fill in the optional parts: all candidates valid, an empty past, the default prior,
    no item view, Bradley–Terry labels."""
    phi_diff = jnp.asarray(phi_diff, jnp.float32)
    beta = jnp.asarray(beta, jnp.float32)
    n, h = phi_diff.shape
    valid = jnp.ones(n, bool) if valid is None else jnp.asarray(valid, bool)
    if past_phi_diff is None:
        past_phi_diff = jnp.zeros((1, h), jnp.float32)
        past_mask = jnp.zeros(1, bool)
    else:
        past_phi_diff = jnp.asarray(past_phi_diff, jnp.float32)
        past_mask = (
            jnp.ones(past_phi_diff.shape[0], bool) if past_mask is None else jnp.asarray(past_mask, bool)
        )
    if items is not None:
        items = PairItems(
            jnp.asarray(items.phi, jnp.float32), jnp.asarray(items.a, jnp.int32), jnp.asarray(items.b, jnp.int32),
            jnp.asarray(items.group, jnp.int32),
        )
    if past_weight is not None:
        past_weight = jnp.broadcast_to(jnp.asarray(past_weight, jnp.float32), past_mask.shape)
    tie = None if tie is None else jnp.float32(tie)
    return SelectionInputs(
        phi_diff, beta, valid, past_phi_diff, past_mask, jnp.float32(prior_precision), items, past_weight, tie
    )


# ----------------------------------------------------------------------------- helpers


def top_k_valid(scores: jax.Array, valid: jax.Array, k: int) -> Selection:
    """The k largest scores among valid entries (NaN counts as −inf)."""
    masked = jnp.where(valid & ~jnp.isnan(scores), scores, -jnp.inf)
    values, indices = jax.lax.top_k(masked, k)
    return Selection(indices.astype(jnp.int32), values)


def _past_information(inputs: SelectionInputs) -> jax.Array:
    return fisher.past_information(
        inputs.past_phi_diff, inputs.beta, inputs.past_mask, inputs.past_weight, inputs.tie
    )


def binary_entropy_of_gap(gap: jax.Array) -> jax.Array:
    """H(σ(gap)) in nats, computed stably from the gap: log(1 + e^{−|g|}) + |g|·σ(−|g|)."""
    a = jnp.abs(gap)
    return jax.nn.softplus(-a) + a * jax.nn.sigmoid(-a)


def _binary_entropy(p: jax.Array) -> jax.Array:
    p = jnp.clip(p, 1e-7, 1.0 - 1e-7)
    return -(p * jnp.log(p) + (1.0 - p) * jnp.log1p(-p))


def unit_weight(gap: jax.Array) -> jax.Array:
    return jnp.ones_like(gap)


# The pair scores. H(σ(g)) decreases in |g|: entropy ranks by −|g| (the float32 entropy is
# flat at ln 2 near g = 0 and would tie there) and reports the entropy.
ENTROPY = PairScore(None, False, lambda gap, quad: -jnp.abs(gap), lambda gap, quad: binary_entropy_of_gap(gap))
MAXDIFF = PairScore(None, False, lambda gap, quad: jnp.abs(gap))
XTX = PairScore(unit_weight, False, lambda gap, quad: quad)
DOPT = PairScore(fisher.gap_variance, False, lambda gap, quad, tie=None: fisher.gap_variance(gap, tie) * quad, tie_aware=True)
PA_DOPT = DOPT._replace(uses_past=True)

#: Width w of the confidence bounds μ ± w·s of a pair's reward gap (s² = xᵀΛ⁻¹x, the
#: last-layer posterior's predictive variance): ``delta_ucb`` and ``infomax``.
UCB_WIDTH = 1.0


def iopt_gain_from_variance(v, quad, spread):
    """The drop of tr(S·M⁻¹) when a pair of Bernoulli variance v joins M:
    v·xᵀM⁻¹SM⁻¹x / (1 + v·xᵀM⁻¹x) (Sherman–Morrison)."""
    return v * jnp.maximum(spread, 0.0) / (1.0 + v * jnp.maximum(quad, 0.0))


def iopt_gain(gap, quad, spread, tie=None):
    """:func:`iopt_gain_from_variance` with v = σ(gap)σ(−gap) (Davidson's v with ``tie``)."""
    return iopt_gain_from_variance(fisher.gap_variance(gap, tie), quad, spread)


def _gap_std(quad):
    return jnp.sqrt(jnp.maximum(quad, 0.0))


# The posterior-based scores: M is the last-layer posterior precision Λ = I_past + λI.
_POSTERIOR = dict(pool=False, prior=True)
IOPT = PairScore(fisher.gap_variance, True, iopt_gain, spread=True, tie_aware=True, **_POSTERIOR)
DELTA_UCB = PairScore(
    fisher.gap_variance, True, lambda gap, quad: jnp.abs(gap) + UCB_WIDTH * _gap_std(quad), **_POSTERIOR
)
INFOMAX = PairScore(
    fisher.gap_variance, True,
    lambda gap, quad: jax.nn.sigmoid(jnp.abs(gap) + UCB_WIDTH * _gap_std(quad))
    - jax.nn.sigmoid(jnp.abs(gap) - UCB_WIDTH * _gap_std(quad)),
    **_POSTERIOR,
)


def _same(x):
    return x


def spread_matrix(phi_diff: jax.Array, valid: jax.Array, reduce: Callable = _same) -> jax.Array:
    """S = ½ · mean of x xᵀ over the valid pairs of the pool: for random pairs of items, the
    covariance of the items' features, whose trace against Λ⁻¹ is the average predictive
    variance of a reward (I-optimality's criterion tr(S·Λ⁻¹)). One pass. ``-> (H, H)``.
    ``reduce`` sums a pool-wide quantity over the devices of a sharded pool (a ``psum``)."""
    w = valid.astype(phi_diff.dtype)
    return reduce(fisher.information_matrix(phi_diff, w)) / (2.0 * jnp.maximum(reduce(jnp.sum(w)), 1.0))


def score_matrix(
    spec: PairScore, phi_diff, gap, valid, past_information, prior_precision, reduce: Callable = _same
) -> jax.Array:
    """The M of ``spec`` on an explicit pool: its pool part (summed by ``reduce`` over the
    devices of a sharded pool), I_past, the prior. ``-> (H, H)``."""
    h = phi_diff.shape[-1]
    m = reduce(pair_information(spec, phi_diff, gap, valid)) if spec.pool else jnp.zeros((h, h), phi_diff.dtype)
    if spec.uses_past:
        m = m + past_information
    if spec.prior:
        m = m + prior_precision * jnp.eye(h, dtype=m.dtype)
    return m


def pair_information(spec: PairScore, phi_diff: jax.Array, gap: jax.Array, valid: jax.Array) -> jax.Array:
    """Σ_i w(gap_i) x_i x_iᵀ over the valid explicit pairs (the pool's part of M). ``-> (H, H)``."""
    w = jnp.where(valid, spec.weight(gap), 0.0)
    return fisher.information_matrix(phi_diff, w)


def pair_scores_from_information(
    spec: PairScore, phi_diff: jax.Array, gap: jax.Array, m: jax.Array, ridge: float = fisher.DEFAULT_RIDGE,
    spread: jax.Array | None = None,
) -> jax.Array:
    """Rank scores of explicit pairs given the complete M (pool part + I_past + prior) and,
    for ``spec.spread``, S. ``-> (N,)``.

    NaN everywhere when M could not be factorised (the drivers check and raise).
    """
    if not spec.spread:
        return spec.rank(gap, fisher.leverages(phi_diff, m, ridge))  # NaN stays NaN
    white = fisher.whitening(m, ridge)
    z = fisher.whiten(phi_diff, white)
    s_white = _whitened_spread(white, spread)
    quad = jnp.sum(z * z, axis=-1)
    q_s = jnp.sum(z * (z @ s_white), axis=-1)
    return jnp.where(white.ok, spec.rank(gap, quad, q_s), jnp.nan)


def explicit_pair_scores(
    spec: PairScore, phi_diff, gap, valid, past_information, prior_precision,
    ridge: float = fisher.DEFAULT_RIDGE, reduce: Callable = _same,
) -> jax.Array:
    """Rank scores of explicit pairs (the pool driver, and each device of the sharded one,
    whose ``reduce`` is a ``psum`` over the pool axis). ``-> (N,)``."""
    if spec.weight is None:
        return spec.rank(gap, None)
    m = score_matrix(spec, phi_diff, gap, valid, past_information, prior_precision, reduce)
    spread = spread_matrix(phi_diff, valid, reduce) if spec.spread else None
    return pair_scores_from_information(spec, phi_diff, gap, m, ridge, spread)


@fisher.full_precision
def pair_scores(spec: PairScore, inputs: SelectionInputs, ridge: float = fisher.DEFAULT_RIDGE) -> jax.Array:
    """Every candidate's rank score under ``spec`` on an explicit pool. ``-> (N,)``."""
    spec = with_tie(spec, inputs.tie)
    gap = inputs.phi_diff @ inputs.beta
    past = _past_information(inputs) if spec.uses_past and spec.weight is not None else None
    return explicit_pair_scores(spec, inputs.phi_diff, gap, inputs.valid, past, inputs.prior_precision, ridge)


def report_scores(spec: PairScore, gap: jax.Array, rank_scores: jax.Array) -> jax.Array:
    """What the user sees for the picked pairs: ``spec.report`` or the rank score itself."""
    return rank_scores if spec.report is None else spec.report(gap, None)


@fisher.full_precision
def pair_gains(spec: PairScore, inputs: SelectionInputs) -> jax.Array:
    """Every candidate's gain under ``spec``, what a cost divides (budgets, cost-aware picks):
    its reported score (entropy: the entropy itself, ≥ 0, not the rank −|gap|). ``-> (N,)``."""
    return report_scores(spec, inputs.phi_diff @ inputs.beta, pair_scores(spec, inputs))


def pair_score_strategy(spec: PairScore) -> StrategyFn:
    """The pool driver of a pair-score strategy: score every candidate, take the top k."""

    def fn(key, inputs: SelectionInputs, k: int, ridge: float = fisher.DEFAULT_RIDGE) -> Selection:
        del key
        chosen = top_k_valid(pair_scores(spec, inputs, ridge), inputs.valid, k)
        if spec.report is None:
            return chosen
        gap = inputs.phi_diff[chosen.indices] @ inputs.beta
        return Selection(chosen.indices, report_scores(spec, gap, chosen.scores))

    return fn


# ----------------------------------------------------------------------------- batch strategies


def random_strategy(key, inputs: SelectionInputs, k: int) -> Selection:
    """Uniform sample of k valid candidates without replacement."""
    u = jax.random.uniform(key, inputs.valid.shape)
    return top_k_valid(u, inputs.valid, k)


def _posterior(inputs: SelectionInputs) -> posterior.Posterior:
    """The last-layer posterior of the inputs: Λ = I_past + λI (:func:`arm_jax.posterior.laplace`)."""
    return posterior.laplace(
        inputs.beta, inputs.past_phi_diff, inputs.past_mask, inputs.prior_precision, inputs.past_weight, inputs.tie
    )


def _whitened_spread(white: fisher.Whitening, spread: jax.Array) -> jax.Array:
    """S' = L⁻¹ S L⁻ᵀ, so that xᵀM⁻¹SM⁻¹x = zᵀS'z with z = L⁻¹x."""
    return white.w @ spread @ white.w.T


def _posterior_whitened(inputs: SelectionInputs):
    """(v, whitening of Λ = I_past + λI, z = L⁻¹x, ‖z‖² = xᵀΛ⁻¹x) for the greedy batches."""
    x = inputs.phi_diff
    white = _posterior(inputs).white
    z = fisher.whiten(x, white)
    return fisher.bernoulli_variance(x, inputs.beta, inputs.tie), white, z, jnp.sum(z * z, axis=1)


def greedy_dopt_strategy(key, inputs: SelectionInputs, k: int) -> Selection:
    """Exact greedy D-optimal batch: one pair at a time, kept by Sherman–Morrison.

    Maximises log det(ridge·I + I_past + Σ_{j∈batch} v_j x_j x_jᵀ) greedily. The gain of
    adding pair i is log(1 + v_i x_iᵀ M⁻¹ x_i). The updates run in the coordinates whitened by
    M₀ = ridge·I + I_past (factorised by :func:`fisher.whitening`, with its relative ridge and
    retries): there M₀ = I and the batch's M⁻¹ starts as I, so the rank-one updates stay well
    conditioned whatever the scale of the features. After adding j, with u = P z_j,
    quad_i ← quad_i − v_j (z_i·u)² / (1 + v_j z_j·u). O(k·N·H) time, O(N·H) memory.
    ``ridge`` is the prior precision λ (``inputs.prior_precision``; 1 is the paper's Bayesian
    D-optimality |I + I/σ²|): M₀ is the last-layer posterior precision Λ.
    """
    del key
    x = inputs.phi_diff
    v, white, z, quad = _posterior_whitened(inputs)
    h = x.shape[1]
    available = inputs.valid

    def pick(i, carry):
        p, quad, available, indices, gains = carry
        gain = jnp.where(available, jnp.log1p(v * jnp.maximum(quad, 0.0)), -jnp.inf)
        j = jnp.argmax(gain)
        u = p @ z[j]
        c = 1.0 + v[j] * (z[j] @ u)
        proj = z @ u
        quad = quad - v[j] * proj * proj / c
        p = p - (v[j] / c) * jnp.outer(u, u)
        available = available.at[j].set(False)
        return p, quad, available, indices.at[i].set(j), gains.at[i].set(gain[j])

    init = (jnp.eye(h, dtype=x.dtype), quad, available, jnp.zeros(k, jnp.int32), jnp.zeros(k, x.dtype))
    _, _, _, indices, gains = jax.lax.fori_loop(0, k, pick, init)
    return Selection(indices, jnp.where(white.ok, gains, jnp.nan))


def greedy_dopt_budget_strategy(key, inputs: SelectionInputs, k: int, costs: jax.Array, budget) -> Selection:
    """:func:`greedy_dopt_strategy` under a budget (a knapsack): each step takes the pair of
    largest gain per unit cost, log(1 + v xᵀM⁻¹x) / cost, among those that still fit the
    remaining budget; at most ``k`` picks. Picks past the last one that fit are index −1 with
    score −inf. ``costs``: (N,) > 0."""
    del key
    x = inputs.phi_diff
    v, white, z, quad = _posterior_whitened(inputs)
    h = x.shape[1]

    def pick(i, carry):
        p, quad, available, left, indices, gains = carry
        fits = available & (costs <= left)
        gain = jnp.log1p(v * jnp.maximum(quad, 0.0))
        j = jnp.argmax(jnp.where(fits, gain / costs, -jnp.inf))
        ok = fits[j]
        u = p @ z[j]
        c = 1.0 + v[j] * (z[j] @ u)
        proj = z @ u
        quad = jnp.where(ok, quad - v[j] * proj * proj / c, quad)
        p = jnp.where(ok, p - (v[j] / c) * jnp.outer(u, u), p)
        return (
            p, quad, available.at[j].set(available[j] & ~ok), left - jnp.where(ok, costs[j], 0.0),
            indices.at[i].set(jnp.where(ok, j, -1)), gains.at[i].set(jnp.where(ok, gain[j], -jnp.inf)),
        )

    init = (jnp.eye(h, dtype=x.dtype), quad, inputs.valid, jnp.float32(budget), jnp.zeros(k, jnp.int32),
            jnp.zeros(k, x.dtype))
    _, _, _, _, indices, gains = jax.lax.fori_loop(0, k, pick, init)
    return Selection(indices, jnp.where(white.ok, gains, jnp.nan))


def greedy_iopt_strategy(key, inputs: SelectionInputs, k: int, candidates: jax.Array | None = None) -> Selection:
    """Greedy I-optimal batch: one pair at a time, each the largest drop of tr(S·M⁻¹), M the
    posterior precision Λ = I_past + λI plus the batch's information so far.

    The gain of pair i is v_i qS_i / (1 + v_i quad_i), quad_i = x_iᵀM⁻¹x_i, qS_i =
    x_iᵀM⁻¹SM⁻¹x_i (S: :func:`spread_matrix` of the pool). In coordinates whitened by Λ
    (z = L⁻¹x, S' = L⁻¹SL⁻ᵀ) M⁻¹ starts as P = I; adding j with u = P z_j, c = 1 + v_j z_j·u,
    α = v_j / c gives P ← P − α u uᵀ, so with Y = Z P (kept by the same rank-one update) quad_i ← quad_i − α (z_i·u)²
    and qS_i ← qS_i − 2α (z_i·u)(Y_i·S'u) + α² (z_i·u)² uᵀS'u. O(k·N·H) time, O(N·H) memory.
    ``candidates``: optional (N,) bool, the pairs it may pick (default: the valid ones); S is
    always the whole valid pool's.
    """
    del key
    x = inputs.phi_diff
    v, white, z, quad = _posterior_whitened(inputs)
    s_white = _whitened_spread(white, spread_matrix(x, inputs.valid))
    q_s = jnp.sum(z * (z @ s_white), axis=1)

    def pick(i, carry):
        y, quad, q_s, available, indices, gains = carry
        gain = jnp.where(available, iopt_gain_from_variance(v, quad, q_s), -jnp.inf)
        j = jnp.argmax(gain)
        u = y[j]  # P z_j (P symmetric)
        c = 1.0 + v[j] * (z[j] @ u)
        alpha = v[j] / c
        proj = z @ u
        su = s_white @ u
        q_s = q_s - 2.0 * alpha * proj * (y @ su) + alpha * alpha * proj * proj * (u @ su)
        quad = quad - alpha * proj * proj
        y = y - alpha * proj[:, None] * u[None, :]
        available = available.at[j].set(False)
        return y, quad, q_s, available, indices.at[i].set(j), gains.at[i].set(gain[j])

    available = inputs.valid if candidates is None else inputs.valid & candidates
    init = (z, quad, q_s, available, jnp.zeros(k, jnp.int32), jnp.zeros(k, x.dtype))
    _, _, _, _, indices, gains = jax.lax.fori_loop(0, k, pick, init)
    return Selection(indices, jnp.where(white.ok, gains, jnp.nan))


#: ``uncertain_iopt`` narrows the pool to this many times k candidates before its greedy batch.
HYBRID_POOL_FACTOR = 4


def uncertain_iopt_strategy(key, inputs: SelectionInputs, k: int) -> Selection:
    """A hybrid of the two views: the greedy I-optimal batch (:func:`greedy_iopt_strategy`)
    among the ``HYBRID_POOL_FACTOR · k`` candidates whose preference P(a ≻ b) is most
    uncertain under the posterior (the widest intervals, ``infomax``'s score). The design
    view spreads the batch over the pool's directions; the uncertainty view keeps it on pairs
    the model cannot yet call. S is the whole pool's."""
    width = pair_scores(INFOMAX, inputs)
    n = width.shape[0]
    top = top_k_valid(width, inputs.valid, min(HYBRID_POOL_FACTOR * k, n))
    narrowed = jnp.zeros(n, bool).at[top.indices].set(jnp.isfinite(top.scores))
    return greedy_iopt_strategy(key, inputs, k, candidates=narrowed)  # a pick outside them scores −inf


#: Thompson draws per pick of the second response in ``dts``/``drts`` before falling back
#: to a uniform partner (ActiveUltraFeedback's ``max_iterations``; its class default).
THOMPSON_TRIES = 10
#: Absolute tolerance within which ``maxmin_lcb`` breaks ties at random (ActiveUltraFeedback).
MAXMIN_TOL = 1e-4


def _need_items(items: PairItems | None, name: str) -> PairItems:
    if items is None:
        raise InputError(
            f"strategy {name!r} chooses among a prompt's responses and needs the candidates' items "
            "(SelectionInputs.items: arm-jax run and select provide them)"
        )
    return items


def _random_argmax(key, scores, mask, tol=0.0):
    """Index of the largest masked score; ties within ``tol`` broken uniformly at random."""
    s = jnp.where(mask, scores, -jnp.inf)
    top = jnp.max(s)
    near = mask & (s >= top - tol)
    return jnp.argmax(jnp.where(near, jax.random.uniform(key, s.shape), -1.0))


def response_rule_strategy(kind: str):
    """The response-level rules, on a pool of candidate pairs grouped by prompt.

    Each of the k picks: a group is drawn (that of a uniformly random available candidate,
    among groups not yet used in the batch while any is left: a random prompt for in-prompt
    pools, one pair per prompt as in the published rules; the whole pool otherwise), then, among the group's
    available candidates (valid, not yet picked), the published rule chooses two responses
    (a first one i* among the items that still have an available partner, then its partner
    j* among those), and the candidate (i*, j*) is picked. Posterior draws are
    β̃ ~ N(β̂, Λ⁻¹), Λ = I_past + λI (:func:`arm_jax.posterior.sample_heads`), r̃ = Φβ̃,
    fresh for every pick, so a batch never repeats a pair.

    - ``dts`` (double Thompson sampling; Wu & Liu 2016, ActiveUltraFeedback): i* = argmax r̃¹;
      j* = argmax r̃² of a fresh draw, redrawn up to :data:`THOMPSON_TRIES` times until it is
      not i*, restricted to i*'s available partners; then a uniform partner.
    - ``drts`` (double reversed Thompson sampling, ActiveUltraFeedback): i* as in dts, j* =
      argmin r̃² (a Thompson draw of the worst response), redrawn until it is not i*.
    - ``maxmin_lcb`` (Pásztor et al. 2024, ActiveUltraFeedback): with LCB(i, j) = μ_ij − w·s_ij
      (μ_ij = r̂_i − r̂_j, s_ij the posterior std of the pair's gap, w = :data:`UCB_WIDTH`),
      i* = argmax_i min_j LCB(i, j) over available partners, j* = argmin_j LCB(i*, j); ties
      within :data:`MAXMIN_TOL` broken at random. Without the candidate-set filter (as in
      ActiveUltraFeedback's experiments).

    Differences from ActiveUltraFeedback's code (an ensemble's per-response widths): its draws
    are r_i + β·z_i·s_i with independent z_i ~ U(−1, 1) and its pair width is s_i + s_j; here
    the draws and the pair std come from the one last-layer posterior, which correlates
    responses. The score shown is the pick's posterior std of the gap (``maxmin_lcb``: its
    LCB).
    """

    def fn(key, inputs: SelectionInputs, k: int) -> Selection:
        it = _need_items(inputs.items, kind)
        x = inputs.phi_diff
        n, h = x.shape
        n_items = it.phi.shape[0]
        post = _posterior(inputs)
        gap, std = posterior.gap_mean_and_std(post, x)
        item_ids = jnp.arange(n_items)

        def pick(t, carry):
            available, fresh, indices, scores = carry
            k_group, k_first, k_second, k_tie = jax.random.split(jax.random.fold_in(key, t), 4)
            # a group not used yet in this batch while there is one (one pair per prompt first)
            pool_g = jnp.where(jnp.any(available & fresh), available & fresh, available)
            g = it.group[_random_argmax(k_group, jnp.zeros(n), pool_g)]
            cand = available & (it.group == g)
            has_partner = jnp.zeros(n_items, bool).at[it.a].max(cand).at[it.b].max(cand)
            if kind == "maxmin_lcb":
                lcb_ab = gap - UCB_WIDTH * std  # LCB(a, b)
                lcb_ba = -gap - UCB_WIDTH * std  # LCB(b, a)
                big = jnp.float32(jnp.inf)
                row_min = jnp.full(n_items, big).at[it.a].min(jnp.where(cand, lcb_ab, big))
                row_min = row_min.at[it.b].min(jnp.where(cand, lcb_ba, big))
                k1, k2 = jax.random.split(k_tie)
                first = _random_argmax(k1, row_min, has_partner, MAXMIN_TOL)
                mine = cand & ((it.a == first) | (it.b == first))
                lcb_first = jnp.where(it.a == first, lcb_ab, lcb_ba)
                p = _random_argmax(k2, -lcb_first, mine, MAXMIN_TOL)
                score = lcb_first[p]
            else:
                draw1 = it.phi @ posterior.sample_heads(post, k_first, 1)[:, 0]
                first = _random_argmax(k_tie, draw1, has_partner)
                mine = cand & ((it.a == first) | (it.b == first))
                partner = jnp.where(it.a == first, it.b, it.a)  # (N,)
                is_partner = jnp.zeros(n_items, bool).at[partner].max(mine)
                draws = it.phi @ posterior.sample_heads(post, k_second, THOMPSON_TRIES)  # (K, T)
                sign = 1.0 if kind == "dts" else -1.0
                allowed = is_partner | (item_ids == first)
                best = jnp.argmax(jnp.where(allowed[:, None], sign * draws, -jnp.inf), axis=0)  # (T,)
                hit = best != first
                second = jnp.where(jnp.any(hit), best[jnp.argmax(hit)], -1)
                # no try without i* on top: a uniform available partner
                fallback = partner[_random_argmax(jax.random.fold_in(k_second, 1), jnp.zeros(n), mine)]
                second = jnp.where(second >= 0, second, fallback)
                p = jnp.argmax(mine & (partner == second))
                score = std[p]
            ok = jnp.any(cand)
            return (
                available.at[p].set(False),
                fresh & (it.group != g),
                indices.at[t].set(p.astype(jnp.int32)),
                scores.at[t].set(jnp.where(ok & available[p], score, jnp.nan)),
            )

        init = (inputs.valid, jnp.ones(n, bool), jnp.zeros(k, jnp.int32), jnp.zeros(k, x.dtype))
        _, _, indices, scores = jax.lax.fori_loop(0, k, pick, init)
        return Selection(indices, jnp.where(post.white.ok, scores, jnp.nan))

    fn.__name__ = f"{kind}_strategy"
    return fn


def kmeans_plus_plus(key, x: jax.Array, valid: jax.Array, n_clusters: int) -> jax.Array:
    """k-means++ seeding (Arthur & Vassilvitskii 2007) among the valid rows. ``-> (C, H)``.

    The first centre is uniform over the valid rows, each next one drawn with probability
    ∝ its squared distance to the nearest centre so far (uniform again if all are zero).
    """
    valid_f = valid.astype(x.dtype)
    sq_norm = jnp.sum(x * x, axis=1)
    keys = jax.random.split(key, n_clusters)

    def draw(k, weights):
        total = jnp.sum(weights)
        weights = jnp.where(total > 0, weights, valid_f)
        return jax.random.categorical(k, jnp.where(weights > 0, jnp.log(weights), -jnp.inf))

    def dist_to(c):
        return jnp.maximum(sq_norm - 2.0 * x @ c + c @ c, 0.0) * valid_f

    first = x[draw(keys[0], valid_f)]
    centres = jnp.zeros((n_clusters, x.shape[1]), x.dtype).at[0].set(first)

    def body(c, carry):
        centres, d2 = carry
        new = x[draw(keys[c], d2)]
        return centres.at[c].set(new), jnp.minimum(d2, dist_to(new))

    centres, _ = jax.lax.fori_loop(1, n_clusters, body, (centres, dist_to(first)))
    return centres


def kmeans(key, x: jax.Array, valid: jax.Array, n_clusters: int, max_iters: int = 100) -> jax.Array:
    """k-means on the valid rows: k-means++ seeds, then Lloyd steps until no assignment
    changes (at most ``max_iters``, a ``lax.while_loop``). ``-> (C, H)`` centres."""
    valid_f = valid.astype(x.dtype)
    sq_norm = jnp.sum(x * x, axis=1)

    def assign(c):
        d2 = sq_norm[:, None] - 2.0 * x @ c.T + jnp.sum(c * c, axis=1)[None, :]
        return jnp.argmin(d2, axis=1).astype(jnp.int32)

    def lloyd(state):
        c, labels, _, it = state
        one_hot = jax.nn.one_hot(labels, n_clusters, dtype=x.dtype) * valid_f[:, None]
        size = jnp.sum(one_hot, axis=0)
        c = jnp.where(size[:, None] > 0, (one_hot.T @ x) / jnp.maximum(size, 1.0)[:, None], c)
        new = assign(c)
        return c, new, jnp.any((new != labels) & valid), it + 1

    def going(state):
        return state[2] & (state[3] < max_iters)

    c0 = kmeans_plus_plus(key, x, valid, n_clusters)
    c, _, _, _ = jax.lax.while_loop(going, lloyd, (c0, assign(c0), jnp.bool_(True), jnp.int32(0)))
    return c


def coreset_strategy(
    key, inputs: SelectionInputs, k: int, n_clusters: int = 10, max_iters: int = 100, radius: float = 1.0
) -> Selection:
    """Huggins et al. (2016) logistic-regression coreset on x, sampled by sensitivity.

    k-means (``n_clusters``; k-means++ seeding as Huggins et al. and the paper's code do,
    then Lloyd to convergence, at most ``max_iters`` steps) on the valid x_i; the sensitivity
    bound m_i = N / (1 + Σ_c |G_c⁻ⁱ| exp(−R ‖Ḡ_c⁻ⁱ − x_i‖)) (cluster sizes and means leave
    point i out); k distinct points drawn with probability ∝ m_i (Gumbel top-k).
    """
    x = inputs.phi_diff
    valid_f = inputs.valid.astype(x.dtype)
    n_valid = jnp.sum(valid_f)
    init_key, sample_key = jax.random.split(key)
    centres = kmeans(init_key, x, inputs.valid, n_clusters, max_iters)
    sq_norm = jnp.sum(x * x, axis=1)
    d2 = jnp.maximum(sq_norm[:, None] - 2.0 * x @ centres.T + jnp.sum(centres * centres, axis=1)[None, :], 0.0)
    own = jax.nn.one_hot(jnp.argmin(d2, axis=1), n_clusters, dtype=x.dtype)
    size = jnp.sum(own * valid_f[:, None], axis=0)[None, :]
    mine = own * valid_f[:, None]
    size_wo = size - mine  # |G_c^{-i}|
    # the mean of i's own cluster without i is farther by the factor |G| / (|G| − 1)
    scale = jnp.where(mine > 0, size / jnp.maximum(size - 1.0, 1.0), 1.0)
    dist = scale * jnp.sqrt(d2)
    sensitivity = n_valid / (1.0 + jnp.sum(size_wo * jnp.exp(-radius * dist), axis=1))
    gumbel = jax.random.gumbel(sample_key, sensitivity.shape)
    chosen = top_k_valid(jnp.log(sensitivity) + gumbel, inputs.valid, k)
    return Selection(chosen.indices, sensitivity[chosen.indices])


def batchbald_strategy(
    key,
    inputs: SelectionInputs,
    k: int,
    n_samples: int = 32,
    n_configs: int = 64,
) -> Selection:
    """BatchBALD (Kirsch et al. 2019) with a Laplace posterior on the last layer.

    β ~ N(β̂, (I_past + λI)⁻¹) (:func:`arm_jax.posterior.laplace`), ``n_samples`` draws. Greedy: add the pair i maximising the
    conditional mutual information I(y_i; β | y_batch) = E_ŷ H(y_i | ŷ) − E_β H(y_i | β),
    where the batch's labels ŷ are ``n_configs`` joint samples drawn ancestrally from the
    posterior predictive (the sampled estimator of BatchBALD's joint entropy; the term for
    the batch already chosen is the same for every i and drops out).
    """
    x = inputs.phi_diff
    beta_key, model_key, label_key = jax.random.split(key, 3)
    post = _posterior(inputs)
    white = post.white
    betas = posterior.sample_heads(post, beta_key, n_samples)  # (H, S) ~ N(β̂, Λ⁻¹)
    logits = x @ betas  # (N, S)
    probs = jax.nn.sigmoid(logits).T  # (S, N)
    expected_entropy = jnp.mean(_binary_entropy(probs), axis=0)  # (N,)
    config_model = jax.random.randint(model_key, (n_configs,), 0, n_samples)
    label_keys = jax.random.split(label_key, k)

    def pick(i, carry):
        log_w, available, indices, gains = carry
        weights = jax.nn.softmax(log_w, axis=1)  # (C, S)
        predictive = weights @ probs  # (C, N)
        mi = jnp.mean(_binary_entropy(predictive), axis=0) - expected_entropy
        mi = jnp.where(available, mi, -jnp.inf)
        j = jnp.argmax(mi)
        p_j = probs[:, j]  # (S,)
        y = jax.random.bernoulli(label_keys[i], p_j[config_model])  # (C,)
        log_p = jnp.where(
            y[:, None], jax.nn.log_sigmoid(logits[j])[None, :], jax.nn.log_sigmoid(-logits[j])[None, :]
        )
        return log_w + log_p, available.at[j].set(False), indices.at[i].set(j), gains.at[i].set(mi[j])

    init = (
        jnp.zeros((n_configs, n_samples), x.dtype),
        inputs.valid,
        jnp.zeros(k, jnp.int32),
        jnp.zeros(k, x.dtype),
    )
    _, _, indices, gains = jax.lax.fori_loop(0, k, pick, init)
    return Selection(indices, jnp.where(white.ok, gains, jnp.nan))


# Every strategy traces its matrix products at full float32 (see fisher.MATMUL_PRECISION).
_ENTRIES = [
    Strategy("random", random_strategy, "uniform random pairs (the baseline)"),
    Strategy("entropy", None, "pairs whose predicted win probability is closest to 1/2", ENTROPY),
    Strategy("maxdiff", None, "pairs with the largest predicted reward gap |r_a - r_b|", MAXDIFF),
    Strategy("xtx", None, "D-optimal design matrix X^T X (feature diversity, ignores p(1-p))", XTX),
    Strategy("dopt", None, "D-optimal Fisher information: gradient of log det sum v x x^T (the paper's method)", DOPT),
    Strategy("pa_dopt", None, "past-aware D-opt: log det(I_past + pool information)", PA_DOPT, uses_past=True),
    Strategy("coreset", coreset_strategy, "Huggins et al. 2016 logistic-regression coreset, sampled by sensitivity"),
    Strategy("batchbald", batchbald_strategy, "BatchBALD greedy mutual information, Laplace posterior on the last layer", uses_past=True),
    Strategy("greedy_dopt", greedy_dopt_strategy, "exact greedy D-optimal batch via Sherman-Morrison", uses_past=True),
    Strategy("iopt", None, "I-optimal: largest drop of the mean predictive reward variance tr(S Lambda^-1) over the pool "
             "(Lambda: last-layer posterior precision)", IOPT, uses_past=True),
    Strategy("greedy_iopt", greedy_iopt_strategy, "greedy I-optimal batch via Sherman-Morrison (each pick updates "
             "the posterior)", uses_past=True),
    Strategy("delta_ucb", None, "DeltaUCB (ActiveUltraFeedback): largest upper confidence bound |mu| + w s of the reward "
             "gap under the posterior", DELTA_UCB, uses_past=True),
    Strategy("infomax", None, "InfoMax (ActiveUltraFeedback): widest confidence interval of P(a beats b) under the "
             "posterior", INFOMAX, uses_past=True),
    Strategy("uncertain_iopt", uncertain_iopt_strategy, "hybrid: the greedy I-optimal batch among the 4k pairs whose "
             "preference is most uncertain under the posterior", uses_past=True),
    Strategy("dts", response_rule_strategy("dts"), "double Thompson sampling: per prompt, the argmaxes of two "
             "posterior draws that differ", uses_past=True),
    Strategy("drts", response_rule_strategy("drts"), "double reversed Thompson sampling: per prompt, the argmax of "
             "one posterior draw against the argmin of another", uses_past=True),
    Strategy("maxmin_lcb", response_rule_strategy("maxmin_lcb"), "MaxMinLCB (Pasztor et al. 2024): per prompt, the "
             "response whose worst lower confidence bound is largest, against its worst opponent", uses_past=True),
]
STRATEGIES: dict[str, Strategy] = {
    s.name: s._replace(fn=fisher.full_precision(s.fn if s.pair_score is None else pair_score_strategy(s.pair_score)))
    for s in _ENTRIES
}
#: Strategies defined by a per-pair score: every driver runs them (pool, all pairs, sharded).
PAIR_SCORE_STRATEGIES = tuple(name for name, s in STRATEGIES.items() if s.pair_score is not None)
#: Strategies that choose among a prompt's responses: they need ``SelectionInputs.items``.
RESPONSE_RULES = ("dts", "drts", "maxmin_lcb")
#: Strategies that read the labelled pairs.
PAST_AWARE = frozenset(name for name, s in STRATEGIES.items() if s.uses_past)

PAPER_STRATEGIES = ("random", "entropy", "maxdiff", "xtx", "dopt", "pa_dopt", "coreset", "batchbald")


def get_strategy(name: str) -> Strategy:
    """Look a strategy up by its CLI name; a clear InputError for an unknown one."""
    try:
        return STRATEGIES[name]
    except KeyError:
        raise InputError(f"unknown strategy {name!r}; choose one of: {', '.join(STRATEGIES)}") from None


def validate_selection(phi_diff, beta, k, valid=None, past_phi_diff=None, past_mask=None) -> None:
    """Host-side boundary checks; raises InputError with a one-line message."""
    fisher.check_shapes(phi_diff, beta, past_phi_diff, past_mask)
    shape = np.shape(phi_diff)
    n = shape[0]
    if valid is not None and np.shape(valid) != (n,):
        raise InputError(f"valid must have shape ({n},) to match phi_diff {shape}, got {np.shape(valid)}")
    # rows given by a function (arm_jax.parallel.Rows) are checked by whoever builds them
    rows = None if hasattr(phi_diff, "rows") else phi_diff
    fisher.check_finite(phi_diff=rows, beta=beta, past_phi_diff=past_phi_diff)
    fisher.check_k(k)
    n_valid = n if valid is None else int(np.count_nonzero(np.asarray(valid)))
    if k > n_valid:
        raise InputError(f"k = {k} is larger than the pool of {n_valid} candidate pairs")


def _check_items(items: PairItems, diff_shape) -> None:
    n, h = diff_shape
    k_items = np.shape(items.phi)[0]
    if np.shape(items.phi)[1:] != (h,):
        raise InputError(f"items.phi must have shape (K, {h}), got {np.shape(items.phi)}")
    for field in ("a", "b", "group"):
        if np.shape(getattr(items, field)) != (n,):
            raise InputError(f"items.{field} must have shape ({n},) to match phi_diff {diff_shape}, "
                             f"got {np.shape(getattr(items, field))}")
    a, b = np.asarray(items.a), np.asarray(items.b)
    if n and (a.min() < 0 or b.min() < 0 or a.max() >= k_items or b.max() >= k_items or np.any(a == b)):
        raise InputError(f"items.a and items.b must be distinct rows of items.phi (0..{k_items - 1})")


def check_inputs(inputs: SelectionInputs) -> None:
    """The kernels' contract, asserted when traced (chex): float32 (N, H) pairs, (H,) head,
    (N,) bool mask, (M, H) past with an (M,) bool mask."""
    chex.assert_rank(inputs.phi_diff, 2)
    n, h = inputs.phi_diff.shape
    chex.assert_shape(inputs.beta, (h,))
    chex.assert_shape(inputs.valid, (n,))
    chex.assert_shape(inputs.past_phi_diff, (None, h))
    chex.assert_shape(inputs.past_mask, inputs.past_phi_diff.shape[:1])
    chex.assert_type([inputs.phi_diff, inputs.beta, inputs.past_phi_diff], jnp.float32)
    chex.assert_type([inputs.valid, inputs.past_mask], bool)
    if inputs.past_weight is not None:
        chex.assert_shape(inputs.past_weight, inputs.past_mask.shape)
        chex.assert_type(inputs.past_weight, jnp.float32)


@functools.partial(jax.jit, static_argnames=("name", "k"))
def _select_jit(name, key, inputs, k):
    check_inputs(inputs)
    return STRATEGIES[name].fn(key, inputs, k)


class SelectionFailed(RuntimeError):
    """A kernel could not produce finite scores from finite inputs (a bug or an extreme
    input the ridge retries could not rescue); raised instead of returning unranked picks."""


def check_selection(name: str, scores) -> None:
    """Raise :class:`SelectionFailed` unless every picked score is finite."""
    bad = int(np.size(scores) - np.count_nonzero(np.isfinite(np.asarray(scores))))
    if bad:
        raise SelectionFailed(
            f"strategy {name!r}: {bad} of {np.size(scores)} picked scores are not finite; "
            "the information matrix could not be factorised even with a larger ridge"
        )


#: The strategies ``select --budget`` runs: every pair score (greedy by score per unit cost),
#: ``random`` (a random order, each pair that still fits) and ``greedy_dopt`` (its knapsack form).
BUDGET_STRATEGIES = ("random", "greedy_dopt")  # besides every strategy of PAIR_SCORE_STRATEGIES


def select_within_budget(
    name: str, key: jax.Array, phi_diff, beta, costs, budget: float, k_max: int, valid=None,
    past_phi_diff=None, past_mask=None, prior_precision: float = posterior.DEFAULT_PRIOR_PRECISION,
    past_weight=None, tie=None,
) -> Selection:
    """The batch of largest gain per unit cost whose total cost is at most ``budget`` (and at
    most ``k_max`` pairs). ``costs``: (N,) > 0, each candidate's cost (e.g. the two items'
    reading times). Additive scores: greedily by score / cost (entropy by its entropy), each pair
    that still fits; ``random``: in a random order; ``greedy_dopt``: the knapsack greedy
    D-optimal batch (:func:`greedy_dopt_budget_strategy`). Returns the picks in order (fewer
    than ``k_max`` when the budget runs out). InputError for other strategies or bad costs."""
    get_strategy(name)
    if tie is not None and not (np.isfinite(tie) and tie >= 0):
        raise InputError(f"tie strength must be a number >= 0, got {tie}")
    if name not in BUDGET_STRATEGIES + PAIR_SCORE_STRATEGIES:
        raise InputError(
            f"strategy {name!r} cannot pick within a budget; use one of: "
            + ", ".join(BUDGET_STRATEGIES + PAIR_SCORE_STRATEGIES)
        )
    costs = np.asarray(costs, np.float64)
    if costs.shape != (np.shape(phi_diff)[0],) or not np.all(np.isfinite(costs)) or np.any(costs <= 0):
        raise InputError("pair costs must be finite and > 0, one per candidate")
    if not (np.isfinite(budget) and budget > 0):
        raise InputError(f"--budget must be a positive number, got {budget}")
    validate_selection(phi_diff, beta, 1, valid, past_phi_diff, past_mask)
    inputs = make_inputs(phi_diff, beta, valid, past_phi_diff, past_mask, prior_precision, None, past_weight, tie)
    ok = np.asarray(inputs.valid)
    k_max = int(max(1, min(k_max, ok.sum())))
    if name == "greedy_dopt":
        chosen = _budget_dopt_jit(key, inputs, k_max, jnp.asarray(costs, jnp.float32), jnp.float32(budget))
        idx, sc = np.asarray(chosen.indices), np.asarray(chosen.scores)
        keep = idx >= 0
        idx, sc = idx[keep], sc[keep]
        # the knapsack ran in float32: hold the total to the budget in float64
        within = np.cumsum(costs[idx]) <= budget
        idx, sc = idx[within], sc[within]
        check_selection(name, sc)
        return Selection(idx.astype(np.int32), sc)
    if name == "random":
        gain = np.asarray(jax.random.uniform(key, ok.shape))
        ratio = gain  # a random order, whatever the cost
    else:
        gain = np.asarray(_pair_gains_jit(name, inputs), np.float64)
        check_selection(name, gain[ok])
        ratio = gain / costs
    order = np.argsort(-np.where(ok, ratio, -np.inf), kind="stable")
    picks, left = [], float(budget)
    for j in order[: ok.sum()]:
        if costs[j] <= left:
            picks.append(int(j))
            left -= costs[j]
            if len(picks) == k_max:
                break
    idx = np.asarray(picks, np.int32)
    return Selection(idx, np.asarray(gain, np.float32)[idx])


@functools.partial(jax.jit, static_argnames=("k",))
def _budget_dopt_jit(key, inputs, k, costs, budget):
    return greedy_dopt_budget_strategy(key, inputs, k, costs, budget)


@functools.partial(jax.jit, static_argnames=("name",))
def _pair_gains_jit(name, inputs):
    return pair_gains(STRATEGIES[name].pair_score, inputs)


def select(
    name: str,
    key: jax.Array,
    phi_diff,
    beta,
    k: int,
    valid=None,
    past_phi_diff=None,
    past_mask=None,
    prior_precision: float = posterior.DEFAULT_PRIOR_PRECISION,
    items: PairItems | None = None,
    past_weight=None,
    tie=None,
) -> Selection:
    """Validate the inputs, then run strategy ``name`` (jit-compiled) and return k picks.

    phi_diff: (N, H) feature differences; beta: (H,); valid: optional (N,) bool;
    past_phi_diff / past_mask: optional labelled pairs (used by the past-aware strategies);
    prior_precision: λ of the head's prior (the fit's ``FitStats.prior_precision``);
    items: the candidates' items (:class:`PairItems`; required by :data:`RESPONSE_RULES`);
    past_weight, tie: the labelled rows' votes and Davidson's ν (:class:`SelectionInputs`). Raises :class:`~arm_jax.errors.InputError` on an unknown name, k ≤ 0, k > number
    of valid candidates, NaN/inf, or mismatched shapes; :class:`SelectionFailed` rather than
    returning picks whose scores are not finite.
    """
    get_strategy(name)
    validate_selection(phi_diff, beta, k, valid, past_phi_diff, past_mask)
    if not (np.isfinite(prior_precision) and prior_precision > 0):
        raise InputError(f"prior precision must be a positive number, got {prior_precision}")
    if items is not None:
        _check_items(items, np.shape(phi_diff))
    elif name in RESPONSE_RULES:
        _need_items(None, name)
    if tie is not None and not (np.isfinite(tie) and tie >= 0):
        raise InputError(f"tie strength must be a number >= 0, got {tie}")
    inputs = make_inputs(phi_diff, beta, valid, past_phi_diff, past_mask, prior_precision, items, past_weight, tie)
    chosen = _select_jit(name, key, inputs, int(k))
    check_selection(name, chosen.scores)
    return chosen
