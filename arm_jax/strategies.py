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
import numpy as np
from jax.scipy.linalg import solve_triangular

from arm_jax import fisher


class SelectionInputs(NamedTuple):
    """What a strategy sees about the candidate pool.

    phi_diff: (N, H) float32, x_i = Φ(a_i) − Φ(b_i), last-layer feature differences.
    beta: (H,) float32, the current head β̂ (so x_i·β̂ = r̂(a_i) − r̂(b_i)).
    valid: (N,) bool, candidates that may be picked (padding and duplicates are False).
    past_phi_diff: (M, H) float32, feature differences of already labelled pairs.
    past_mask: (M,) bool, which rows of ``past_phi_diff`` are real.
    """

    phi_diff: jax.Array
    beta: jax.Array
    valid: jax.Array
    past_phi_diff: jax.Array
    past_mask: jax.Array


class Selection(NamedTuple):
    """indices: (k,) int32 distinct candidate indices, best first where the strategy ranks;
    scores: (k,) float32, each pick's score under the strategy (its gain, for greedy ones)."""

    indices: jax.Array
    scores: jax.Array


StrategyFn = Callable[[jax.Array, SelectionInputs, int], Selection]


class Strategy(NamedTuple):
    name: str
    fn: StrategyFn
    description: str


def make_inputs(phi_diff, beta, valid=None, past_phi_diff=None, past_mask=None) -> SelectionInputs:
    """Fill in the optional parts: all candidates valid, an empty past."""
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
    return SelectionInputs(phi_diff, beta, valid, past_phi_diff, past_mask)


# ----------------------------------------------------------------------------- helpers


def top_k_valid(scores: jax.Array, valid: jax.Array, k: int) -> Selection:
    """The k largest scores among valid entries (NaN counts as −inf)."""
    masked = jnp.where(valid & ~jnp.isnan(scores), scores, -jnp.inf)
    values, indices = jax.lax.top_k(masked, k)
    return Selection(indices.astype(jnp.int32), values)


def _past_information(inputs: SelectionInputs) -> jax.Array:
    return fisher.past_information(inputs.past_phi_diff, inputs.beta, inputs.past_mask)


def _pool_weights(inputs: SelectionInputs, v: jax.Array) -> jax.Array:
    """Invalid candidates take no part in the pool's information matrix."""
    return jnp.where(inputs.valid, v, 0.0)


def _binary_entropy(p: jax.Array) -> jax.Array:
    p = jnp.clip(p, 1e-7, 1.0 - 1e-7)
    return -(p * jnp.log(p) + (1.0 - p) * jnp.log1p(-p))


# ----------------------------------------------------------------------------- strategies


def random_strategy(key, inputs: SelectionInputs, k: int) -> Selection:
    """Uniform sample of k valid candidates without replacement."""
    u = jax.random.uniform(key, inputs.valid.shape)
    return top_k_valid(u, inputs.valid, k)


def entropy_strategy(key, inputs: SelectionInputs, k: int) -> Selection:
    """Largest predictive entropy H(p_i): p_i closest to 1/2."""
    del key
    # H(σ(g)) decreases in |g|: rank by −|g| (float32 entropy is flat near 1/2 and would tie
    # there), report the entropy.
    gap = inputs.phi_diff @ inputs.beta
    chosen = top_k_valid(-jnp.abs(gap), inputs.valid, k)
    return Selection(chosen.indices, _binary_entropy(jax.nn.sigmoid(gap[chosen.indices])))


def maxdiff_strategy(key, inputs: SelectionInputs, k: int) -> Selection:
    """Largest predicted reward gap |r̂_a − r̂_b|."""
    del key
    return top_k_valid(jnp.abs(inputs.phi_diff @ inputs.beta), inputs.valid, k)


def xtx_strategy(key, inputs: SelectionInputs, k: int, jitter: float = fisher.DEFAULT_JITTER) -> Selection:
    """Design-matrix D-optimality: leverage x_iᵀ(XᵀX + εI)⁻¹x_i (v ≡ 1)."""
    del key
    w = _pool_weights(inputs, jnp.ones(inputs.valid.shape, inputs.phi_diff.dtype))
    scores = fisher.dopt_scores_from_weights(inputs.phi_diff, w, None, jitter)
    return top_k_valid(scores, inputs.valid, k)


def dopt_strategy(key, inputs: SelectionInputs, k: int, jitter: float = fisher.DEFAULT_JITTER) -> Selection:
    """D-optimality on the Fisher information: v_i x_iᵀ M⁻¹ x_i, M = Σ v x xᵀ + εI."""
    del key
    v = _pool_weights(inputs, fisher.bernoulli_variance(inputs.phi_diff, inputs.beta))
    scores = fisher.dopt_scores_from_weights(inputs.phi_diff, v, None, jitter)
    return top_k_valid(scores, inputs.valid, k)


def pa_dopt_strategy(key, inputs: SelectionInputs, k: int, jitter: float = fisher.DEFAULT_JITTER) -> Selection:
    """Past-aware D-optimality: M also holds the labelled pairs' Fisher information."""
    del key
    v = _pool_weights(inputs, fisher.bernoulli_variance(inputs.phi_diff, inputs.beta))
    scores = fisher.dopt_scores_from_weights(inputs.phi_diff, v, _past_information(inputs), jitter)
    return top_k_valid(scores, inputs.valid, k)


def greedy_dopt_strategy(key, inputs: SelectionInputs, k: int, ridge: float = 1.0) -> Selection:
    """Exact greedy D-optimal batch: one pair at a time, M⁻¹ kept by Sherman–Morrison.

    Maximises log det(ridge·I + I_past + Σ_{j∈batch} v_j x_j x_jᵀ) greedily. The gain of
    adding pair i is log(1 + v_i x_iᵀ M⁻¹ x_i); after adding j, with u = M⁻¹ x_j,
    x_iᵀ M⁻¹ x_i ← x_iᵀ M⁻¹ x_i − v_j (x_iᵀ u)² / (1 + v_j x_jᵀ u). O(k·N·H) time, O(N·H) memory.
    ``ridge`` is the prior precision (the paper's Bayesian D-optimality |I + I/σ²|).
    """
    del key
    x = inputs.phi_diff
    h = x.shape[1]
    v = fisher.bernoulli_variance(x, inputs.beta)
    m = _past_information(inputs) + ridge * jnp.eye(h, dtype=x.dtype)
    m_inv = jnp.linalg.inv(m)
    m_inv = 0.5 * (m_inv + m_inv.T)
    quad = jnp.sum((x @ m_inv) * x, axis=1)
    available = inputs.valid

    def pick(i, carry):
        m_inv, quad, available, indices, gains = carry
        gain = jnp.where(available, jnp.log1p(v * jnp.maximum(quad, 0.0)), -jnp.inf)
        j = jnp.argmax(gain)
        u = m_inv @ x[j]
        c = 1.0 + v[j] * (x[j] @ u)
        proj = x @ u
        quad = quad - v[j] * proj * proj / c
        m_inv = m_inv - (v[j] / c) * jnp.outer(u, u)
        available = available.at[j].set(False)
        return m_inv, quad, available, indices.at[i].set(j), gains.at[i].set(gain[j])

    init = (m_inv, quad, available, jnp.zeros(k, jnp.int32), jnp.zeros(k, x.dtype))
    _, _, _, indices, gains = jax.lax.fori_loop(0, k, pick, init)
    return Selection(indices, gains)


def coreset_strategy(
    key, inputs: SelectionInputs, k: int, n_clusters: int = 10, n_iters: int = 10, radius: float = 1.0
) -> Selection:
    """Huggins et al. (2016) logistic-regression coreset on x, sampled by sensitivity.

    k-means (``n_clusters``, ``n_iters`` Lloyd steps) on the valid x_i; the sensitivity bound
    m_i = N / (1 + Σ_c |G_c⁻ⁱ| exp(−R ‖Ḡ_c⁻ⁱ − x_i‖)) (cluster sizes and means leave point i
    out); k distinct points drawn with probability ∝ m_i (Gumbel top-k).
    """
    x = inputs.phi_diff
    valid_f = inputs.valid.astype(x.dtype)
    n_valid = jnp.sum(valid_f)
    init_key, sample_key = jax.random.split(key)
    seed_idx = top_k_valid(jax.random.uniform(init_key, inputs.valid.shape), inputs.valid, n_clusters).indices
    centres = x[seed_idx]
    sq_norm = jnp.sum(x * x, axis=1)

    def sq_dist(c):
        return jnp.maximum(sq_norm[:, None] - 2.0 * x @ c.T + jnp.sum(c * c, axis=1)[None, :], 0.0)

    def lloyd(_, c):
        assign = jax.nn.one_hot(jnp.argmin(sq_dist(c), axis=1), n_clusters, dtype=x.dtype) * valid_f[:, None]
        size = jnp.sum(assign, axis=0)
        new = (assign.T @ x) / jnp.maximum(size, 1.0)[:, None]
        return jnp.where(size[:, None] > 0, new, c)

    centres = jax.lax.fori_loop(0, n_iters, lloyd, centres)
    d2 = sq_dist(centres)
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
    prior_precision: float = 1.0,
) -> Selection:
    """BatchBALD (Kirsch et al. 2019) with a Laplace posterior on the last layer.

    β ~ N(β̂, (I_past + λI)⁻¹), ``n_samples`` draws. Greedy: add the pair i maximising the
    conditional mutual information I(y_i; β | y_batch) = E_ŷ H(y_i | ŷ) − E_β H(y_i | β),
    where the batch's labels ŷ are ``n_configs`` joint samples drawn ancestrally from the
    posterior predictive (the sampled estimator of BatchBALD's joint entropy; the term for
    the batch already chosen is the same for every i and drops out).
    """
    x = inputs.phi_diff
    h = x.shape[1]
    beta_key, model_key, label_key = jax.random.split(key, 3)
    precision = _past_information(inputs) + prior_precision * jnp.eye(h, dtype=x.dtype)
    chol = jnp.linalg.cholesky(precision)
    eps = jax.random.normal(beta_key, (h, n_samples), x.dtype)
    betas = inputs.beta[:, None] + solve_triangular(chol.T, eps, lower=False)  # (H, S)
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
    return Selection(indices, gains)


# Every strategy traces its matrix products at full float32 (see fisher.MATMUL_PRECISION).
STRATEGIES: dict[str, Strategy] = {
    s.name: s._replace(fn=fisher.full_precision(s.fn))
    for s in [
        Strategy("random", random_strategy, "uniform random pairs (the baseline)"),
        Strategy("entropy", entropy_strategy, "pairs whose predicted win probability is closest to 1/2"),
        Strategy("maxdiff", maxdiff_strategy, "pairs with the largest predicted reward gap |r_a - r_b|"),
        Strategy("xtx", xtx_strategy, "D-optimal design matrix X^T X (feature diversity, ignores p(1-p))"),
        Strategy("dopt", dopt_strategy, "D-optimal Fisher information: gradient of log det sum v x x^T (the paper's method)"),
        Strategy("pa_dopt", pa_dopt_strategy, "past-aware D-opt: log det(I_past + pool information)"),
        Strategy("coreset", coreset_strategy, "Huggins et al. 2016 logistic-regression coreset, sampled by sensitivity"),
        Strategy("batchbald", batchbald_strategy, "BatchBALD greedy mutual information, Laplace posterior on the last layer"),
        Strategy("greedy_dopt", greedy_dopt_strategy, "exact greedy D-optimal batch via Sherman-Morrison"),
    ]
}

PAPER_STRATEGIES = ("random", "entropy", "maxdiff", "xtx", "dopt", "pa_dopt", "coreset", "batchbald")


def get_strategy(name: str) -> Strategy:
    """Look a strategy up by its CLI name; a clear ValueError for an unknown one."""
    try:
        return STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}; choose one of: {', '.join(STRATEGIES)}") from None


def validate_selection(phi_diff, beta, k, valid=None, past_phi_diff=None, past_mask=None) -> None:
    """Host-side boundary checks; raises ValueError with a one-line message."""
    fisher.check_shapes(phi_diff, beta, past_phi_diff, past_mask)
    shape = np.shape(phi_diff)
    n = shape[0]
    if valid is not None and np.shape(valid) != (n,):
        raise ValueError(f"valid must have shape ({n},) to match phi_diff {shape}, got {np.shape(valid)}")
    fisher.check_finite(phi_diff=phi_diff, beta=beta, past_phi_diff=past_phi_diff)
    fisher.check_k(k)
    n_valid = n if valid is None else int(np.count_nonzero(np.asarray(valid)))
    if k > n_valid:
        raise ValueError(f"k = {k} is larger than the pool of {n_valid} candidate pairs")


@functools.partial(jax.jit, static_argnames=("name", "k"))
def _select_jit(name, key, inputs, k):
    return STRATEGIES[name].fn(key, inputs, k)


def select(
    name: str,
    key: jax.Array,
    phi_diff,
    beta,
    k: int,
    valid=None,
    past_phi_diff=None,
    past_mask=None,
) -> Selection:
    """Validate the inputs, then run strategy ``name`` (jit-compiled) and return k picks.

    phi_diff: (N, H) feature differences; beta: (H,); valid: optional (N,) bool;
    past_phi_diff / past_mask: optional labelled pairs (used by pa_dopt, greedy_dopt and
    batchbald). Raises ValueError on an unknown name, k ≤ 0, k > number of valid candidates,
    NaN/inf, or mismatched shapes.
    """
    get_strategy(name)
    validate_selection(phi_diff, beta, k, valid, past_phi_diff, past_mask)
    inputs = make_inputs(phi_diff, beta, valid, past_phi_diff, past_mask)
    return _select_jit(name, key, inputs, int(k))
