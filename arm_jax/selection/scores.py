"""Selection strategies: which k of N candidate pairs to send to annotators.

Every strategy has one signature::

    strategy(key, inputs: SelectionInputs, k: int) -> Selection

and sits in the registry (:data:`arm_jax.selection.registry.STRATEGIES`) under its CLI name; the
drivers take the strategy object (or its name), so a :class:`PairScore` of your own runs in
every one of them. Everything here is jit-able with ``k`` static and
returns k *distinct* indices among the valid candidates (given at least k valid candidates;
:func:`select` checks that and the rest of the input at the boundary).
"""
from __future__ import annotations

import functools
import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from arm_jax.model import likelihood
from arm_jax.runtime import precision
from arm_jax.selection import fisher, posterior


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
      :data:`arm_jax.model.likelihood.DEFAULT_PRIOR_PRECISION`). The last-layer posterior the
      posterior-based strategies use has precision Λ = I_past + λI.
    items: :class:`PairItems` or None; the response-level rules need it.
    past_weight: None, or (M,) float32 votes of each labelled row (its weight in I_past);
      the rows' x are then already scaled by their rater's reliability (:mod:`arm_jax.model.likelihood`).
    tie: None (Bradley–Terry), or () Davidson's tie strength ν of the fit: every Fisher weight
      v (the pool's, I_past's, the posterior's) is then Davidson's (``fisher.gap_variance``).
    spread: None, or (H, H) the S of the I-optimal rules given by the caller (the target-aware
      S of :func:`prompt_spread`: the comparisons the model will be used for); None: S over the
      valid candidates (:func:`spread_matrix`).
    """

    phi_diff: jax.Array
    beta: jax.Array
    valid: jax.Array
    past_phi_diff: jax.Array
    past_mask: jax.Array
    prior_precision: jax.Array | float = likelihood.DEFAULT_PRIOR_PRECISION
    items: PairItems | None = None
    past_weight: jax.Array | None = None
    tie: jax.Array | None = None
    spread: jax.Array | None = None


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
    driver (:func:`select`, the experiment), the all-pairs driver (:mod:`arm_jax.selection.allpairs`) and
    the sharded driver (:mod:`arm_jax.runtime.mesh`) compute ``gap``, M and ``quad`` each in their
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
    if spec.weight is likelihood.gap_variance:
        spec = spec._replace(weight=functools.partial(likelihood.gap_variance, tie=tie))
    if spec.tie_aware:
        spec = spec._replace(rank=functools.partial(spec.rank, tie=tie))
    return spec


def make_inputs(
    phi_diff, beta, valid=None, past_phi_diff=None, past_mask=None,
    prior_precision: float = likelihood.DEFAULT_PRIOR_PRECISION, items: PairItems | None = None,
    past_weight=None, tie=None, spread=None,
) -> SelectionInputs:
    """Fill in the optional parts: all candidates valid, an empty past, the default prior,
    no item view, Bradley–Terry labels, S over the candidates."""
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
    spread = None if spread is None else jnp.asarray(spread, jnp.float32)
    return SelectionInputs(
        phi_diff, beta, valid, past_phi_diff, past_mask, jnp.float32(prior_precision), items, past_weight, tie, spread
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
DOPT = PairScore(likelihood.gap_variance, False, lambda gap, quad, tie=None: likelihood.gap_variance(gap, tie) * quad, tie_aware=True)
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
    return iopt_gain_from_variance(likelihood.gap_variance(gap, tie), quad, spread)


def _gap_std(quad):
    return jnp.sqrt(jnp.maximum(quad, 0.0))


# The posterior-based scores: M is the last-layer posterior precision Λ = I_past + λI.
_POSTERIOR = dict(pool=False, prior=True)
IOPT = PairScore(likelihood.gap_variance, True, iopt_gain, spread=True, tie_aware=True, **_POSTERIOR)
DELTA_UCB = PairScore(
    likelihood.gap_variance, True, lambda gap, quad: jnp.abs(gap) + UCB_WIDTH * _gap_std(quad), **_POSTERIOR
)
INFOMAX = PairScore(
    likelihood.gap_variance, True,
    lambda gap, quad: jax.nn.sigmoid(jnp.abs(gap) + UCB_WIDTH * _gap_std(quad))
    - jax.nn.sigmoid(jnp.abs(gap) - UCB_WIDTH * _gap_std(quad)),
    **_POSTERIOR,
)

#: κ = √(π/8): σ(z) ≈ Φ(κz), the probit approximation of the logistic link (BALD's scale).
PROBIT_SCALE = math.sqrt(math.pi / 8.0)
#: Houlsby et al.'s C = √(π ln 2 / 2): h(Φ(z)) ≈ exp(−z² / (2C²)), h in bits.
BALD_C = math.sqrt(math.pi * math.log(2.0) / 2.0)


def bald_score(gap, quad):
    """Pairwise BALD in bits (Houlsby et al. 2011, as BoTorch's pairwise BALD): the mutual
    information between the pair's label and the head, H[Bern(Φ(μ/√(1+s²)))] − E_z H[Bern(Φ(z))]
    with z ~ N(μ, s²) on the probit scale, μ = κ·gap and s² = κ²·quad (κ = :data:`PROBIT_SCALE`;
    quad = xᵀΛ⁻¹x), the expectation by Houlsby's approximation C/√(s² + C²)·exp(−μ²/(2(s² + C²))).
    Floored at 0 (the approximation can dip below 0 by ~1e-2 bits where s² ≈ 0; the
    information cannot)."""
    mu = PROBIT_SCALE * gap
    s2 = PROBIT_SCALE ** 2 * jnp.maximum(quad, 0.0)
    first = _binary_entropy(jax.scipy.special.ndtr(mu / jnp.sqrt(1.0 + s2))) / math.log(2.0)
    c2 = BALD_C ** 2
    second = BALD_C / jnp.sqrt(s2 + c2) * jnp.exp(-(mu * mu) / (2.0 * (s2 + c2)))
    return jnp.maximum(first - second, 0.0)


BALD = PairScore(likelihood.gap_variance, True, bald_score, **_POSTERIOR)


def _same(x):
    return x


def spread_matrix(phi_diff: jax.Array, valid: jax.Array, reduce: Callable = _same) -> jax.Array:
    """S = ½ · mean of x xᵀ over the valid pairs of the pool: for random pairs of items, the
    covariance of the items' features, whose trace against Λ⁻¹ is the average predictive
    variance of a reward (I-optimality's criterion tr(S·Λ⁻¹)). One pass. ``-> (H, H)``.
    ``reduce`` sums a pool-wide quantity over the devices of a sharded pool (a ``psum``)."""
    w = valid.astype(phi_diff.dtype)
    return reduce(fisher.information_matrix(phi_diff, w)) / (2.0 * jnp.maximum(reduce(jnp.sum(w)), 1.0))


def prompt_spread(phi: jax.Array, group: jax.Array, valid: jax.Array) -> jax.Array:
    """The target-aware S: ½ · mean of x xᵀ over the unordered pairs of two distinct valid
    items of the same group (x = φ_u − φ_v), the covariance of a response's features within a
    prompt. I-optimality with it minimises the mean predictive variance of the reward gaps the
    model will rank (two responses to one prompt) rather than of the candidates' gaps (which
    cross-prompt also spread over what tells prompts apart). One group: every pair of items.
    ``phi``: (K, H); ``group``: (K,) int in [0, K); ``valid``: (K,) bool. In one pass, centred
    per group (Σ_{u<v in g} x xᵀ = n_g Σ_u (φ_u − φ̄_g)(φ_u − φ̄_g)ᵀ). ``-> (H, H)``; zero when no
    group has two valid items."""
    k = phi.shape[0]
    w = valid.astype(phi.dtype)
    count = jax.ops.segment_sum(w, group, num_segments=k)  # (K,) items per group
    total = jax.ops.segment_sum(phi * w[:, None], group, num_segments=k)
    centred = (phi - (total / jnp.maximum(count, 1.0)[:, None])[group]) * w[:, None]
    scaled = centred * jnp.sqrt(count[group])[:, None]
    n_pairs = jnp.sum(count * (count - 1.0)) / 2.0
    return (scaled.T @ scaled) / (2.0 * jnp.maximum(n_pairs, 1.0))


def spread_of(inputs: SelectionInputs, reduce: Callable = _same) -> jax.Array:
    """The S of the I-optimal rules: the caller's (``inputs.spread``) or the valid candidates'."""
    if inputs.spread is not None:
        return inputs.spread
    return spread_matrix(inputs.phi_diff, inputs.valid, reduce)


def score_matrix(
    spec: PairScore, phi_diff, gap, valid, past_information, prior_precision, reduce: Callable = _same
) -> jax.Array:
    """The M of ``spec`` on an explicit pool: its pool part (summed by ``reduce`` over the
    devices of a sharded pool), I_past, the prior. ``-> (H, H)``."""
    h = phi_diff.shape[-1]
    m = reduce(pair_information(spec, phi_diff, gap, valid)) if spec.pool else jnp.zeros((h, h), phi_diff.dtype)
    return with_past_and_prior(spec, m, past_information, prior_precision)


def with_past_and_prior(spec: PairScore, m: jax.Array, past_information, prior_precision) -> jax.Array:
    """The rest of the M of ``spec`` after its pool part ``m`` (however a driver sums it):
    + I_past (``spec.uses_past``; ``past_information`` None: no labelled pairs), then the
    prior's λI (``spec.prior``; :func:`arm_jax.selection.posterior.precision_matrix`, so the
    posterior-based scores' M is the posterior precision Λ = I_past + λI). ``-> (H, H)``."""
    if spec.uses_past and past_information is not None:
        m = m + past_information
    if spec.prior:
        m = posterior.precision_matrix(m, prior_precision)
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
    s_white = whitened_spread(white, spread)
    quad = jnp.sum(z * z, axis=-1)
    q_s = jnp.sum(z * (z @ s_white), axis=-1)
    return jnp.where(white.ok, spec.rank(gap, quad, q_s), jnp.nan)


def explicit_pair_scores(
    spec: PairScore, phi_diff, gap, valid, past_information, prior_precision,
    ridge: float = fisher.DEFAULT_RIDGE, reduce: Callable = _same, spread: jax.Array | None = None,
) -> jax.Array:
    """Rank scores of explicit pairs (the pool driver, and each device of the sharded one,
    whose ``reduce`` is a ``psum`` over the pool axis). ``spread``: the caller's S (None: the
    valid candidates'). ``-> (N,)``."""
    if spec.weight is None:
        return spec.rank(gap, None)
    m = score_matrix(spec, phi_diff, gap, valid, past_information, prior_precision, reduce)
    if spec.spread and spread is None:
        spread = spread_matrix(phi_diff, valid, reduce)
    return pair_scores_from_information(spec, phi_diff, gap, m, ridge, spread)


@precision.full_precision
def pair_scores(spec: PairScore, inputs: SelectionInputs, ridge: float = fisher.DEFAULT_RIDGE) -> jax.Array:
    """Every candidate's rank score under ``spec`` on an explicit pool. ``-> (N,)``."""
    spec = with_tie(spec, inputs.tie)
    gap = inputs.phi_diff @ inputs.beta
    past = _past_information(inputs) if spec.uses_past and spec.weight is not None else None
    return explicit_pair_scores(
        spec, inputs.phi_diff, gap, inputs.valid, past, inputs.prior_precision, ridge, spread=inputs.spread
    )


def report_scores(spec: PairScore, gap: jax.Array, rank_scores: jax.Array) -> jax.Array:
    """What the user sees for the picked pairs: ``spec.report`` or the rank score itself."""
    return rank_scores if spec.report is None else spec.report(gap, None)


@precision.full_precision
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


def whitened_spread(white: fisher.Whitening, spread: jax.Array) -> jax.Array:
    """S' = L⁻¹ S L⁻ᵀ, so that xᵀM⁻¹SM⁻¹x = zᵀS'z with z = L⁻¹x."""
    return white.w @ spread @ white.w.T
