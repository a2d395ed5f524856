"""TODO docstring."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from arm_jax.model import likelihood
from arm_jax.selection import fisher, posterior
from arm_jax.selection.scores import (
    INFOMAX,
    Selection,
    SelectionInputs,
    _binary_entropy,
    iopt_gain_from_variance,
    pair_scores,
    spread_of,
    top_k_valid,
    whitened_spread,
)

# ----------------------------------------------------------------------------- batch strategies


def random_strategy(key, inputs: SelectionInputs, k: int) -> Selection:
    """Uniform sample of k valid candidates without replacement."""
    u = jax.random.uniform(key, inputs.valid.shape)
    return top_k_valid(u, inputs.valid, k)


def explored_count(explore: float, k: int) -> int:
    """How many of a batch of ``k`` the hedge of :func:`explore_strategy` draws at random:
    round(explore · k) (at least 1 for explore > 0, at most k)."""
    return min(k, max(1 if explore > 0 else 0, int(round(explore * k))))


def explore_strategy(fn, explore: float):
    """The hedge of a rule ``fn`` (a ``StrategyFn``): of a batch of k, the rule picks the first
    k − m and m = :func:`explored_count` pairs are drawn uniformly among the valid candidates it
    did not pick. Random pairs' coverage protects against a misspecified model; a drawn pair's
    score is 0 (it was not scored). Returns a ``StrategyFn``."""

    def hedged(key, inputs: SelectionInputs, k: int) -> Selection:
        m = explored_count(explore, k)
        rule_key, draw_key = jax.random.split(key)
        if m == k:
            drawn = random_strategy(draw_key, inputs, k)
            return Selection(drawn.indices, jnp.zeros_like(drawn.scores))
        chosen = fn(rule_key, inputs, k - m)
        if m == 0:
            return chosen
        taken = jnp.zeros(inputs.valid.shape, bool).at[chosen.indices].set(True)
        drawn = random_strategy(draw_key, inputs._replace(valid=inputs.valid & ~taken), m)
        return Selection(jnp.concatenate([chosen.indices, drawn.indices]),
                         jnp.concatenate([chosen.scores, jnp.zeros_like(drawn.scores)]))

    return hedged


def handed_off(n_labelled, random_after) -> bool:
    """Whether the hand-off of :func:`handoff_strategy` draws this batch at random: once the
    labelled pairs number ``random_after`` or more (None: never). ``n_labelled``: an int on the
    host (``select``) or a traced count (the experiment); the one rule for both."""
    if random_after is None:
        return False
    return n_labelled >= random_after


def handoff_strategy(fn, random_after: int):
    """The hand-off of a rule ``fn`` (a ``StrategyFn``): ``fn``'s batch while fewer than
    ``random_after`` pairs are labelled (the rows of ``inputs.past_mask``), a uniform draw of k
    valid candidates from then on (:func:`handed_off`). The rules that read the posterior buy
    their labels early and fall behind random pairs' coverage later (benchmarks/RESULTS.md, "To
    3 000 labels"). A drawn pair's score is 0. Returns a ``StrategyFn``; both batches are
    computed and one kept, so it runs under ``jit``/``vmap`` with a traced count."""

    def handed(key, inputs: SelectionInputs, k: int) -> Selection:
        chosen = fn(key, inputs, k)
        drawn = random_strategy(jax.random.fold_in(key, 1), inputs, k)
        late = handed_off(jnp.sum(inputs.past_mask), random_after)
        return Selection(jnp.where(late, drawn.indices, chosen.indices), jnp.where(late, 0.0, chosen.scores))

    return handed


def _posterior(inputs: SelectionInputs) -> posterior.Posterior:
    """The last-layer posterior of the inputs: Λ = I_past + λI (:func:`arm_jax.selection.posterior.laplace`)."""
    return posterior.laplace(
        inputs.beta, inputs.past_phi_diff, inputs.past_mask, inputs.prior_precision, inputs.past_weight, inputs.tie
    )


def _posterior_whitened(inputs: SelectionInputs):
    """(v, whitening of Λ = I_past + λI, z = L⁻¹x, ‖z‖² = xᵀΛ⁻¹x) for the greedy batches."""
    x = inputs.phi_diff
    white = _posterior(inputs).white
    z = fisher.whiten(x, white)
    return likelihood.bernoulli_variance(x, inputs.beta, inputs.tie), white, z, jnp.sum(z * z, axis=1)


def _add_to_batch(p: jax.Array, quad: jax.Array, z: jax.Array, v_j: jax.Array, j: jax.Array):
    """The greedy D-optimal batch's Sherman–Morrison rank-one update when pair j (Bernoulli
    variance ``v_j``) joins it, in coordinates whitened by Λ: with u = P z_j and
    c = 1 + v_j z_j·u, P ← P − (v_j / c) u uᵀ (P: the batch's M⁻¹) and every candidate's
    quad_i = z_iᵀ P z_i ← quad_i − v_j (z_i·u)² / c. ``-> (P, quad)``."""
    u = p @ z[j]
    c = 1.0 + v_j * (z[j] @ u)
    proj = z @ u
    quad = quad - v_j * proj * proj / c
    p = p - (v_j / c) * jnp.outer(u, u)
    return p, quad


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
        p, quad = _add_to_batch(p, quad, z, v[j], j)
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
        p_new, quad_new = _add_to_batch(p, quad, z, v[j], j)
        quad = jnp.where(ok, quad_new, quad)
        p = jnp.where(ok, p_new, p)
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
    x_iᵀM⁻¹SM⁻¹x_i (S: :func:`spread_of`, the pool's unless the caller gives one). In coordinates whitened by Λ
    (z = L⁻¹x, S' = L⁻¹SL⁻ᵀ) M⁻¹ starts as P = I; adding j with u = P z_j, c = 1 + v_j z_j·u,
    α = v_j / c gives P ← P − α u uᵀ, so with Y = Z P (kept by the same rank-one update) quad_i ← quad_i − α (z_i·u)²
    and qS_i ← qS_i − 2α (z_i·u)(Y_i·S'u) + α² (z_i·u)² uᵀS'u. O(k·N·H) time, O(N·H) memory.
    ``candidates``: optional (N,) bool, the pairs it may pick (default: the valid ones); S is
    never narrowed by ``candidates``.
    """
    del key
    x = inputs.phi_diff
    v, white, z, quad = _posterior_whitened(inputs)
    s_white = whitened_spread(white, spread_of(inputs))
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


#: Multiplicative-algorithm iterations of ``fw_iopt``'s continuous design.
DESIGN_STEPS = 100


def iopt_design(inputs: SelectionInputs, k: int, steps: int = DESIGN_STEPS) -> tuple[jax.Array, jax.Array]:
    """The continuous I-optimal design of k labels over the valid candidates at the posterior:
    w ≥ 0, Σw = k, minimising tr(S·(Λ + Σ wᵢvᵢxᵢxᵢᵀ)⁻¹) (Λ = I_past + λI, S: :func:`spread_of`,
    vᵢ the Fisher weights at β̂), by ``steps`` iterations of the multiplicative algorithm
    wᵢ ← wᵢ·(gᵢ/ḡ)^½, gᵢ = vᵢxᵢᵀM⁻¹SM⁻¹xᵢ, ḡ = Σwᵢgᵢ/k (from the uniform design; in
    coordinates whitened by Λ). Returns (w (N,), relative duality gap (k·max gᵢ − Σwᵢgᵢ)/f ≥
    (f − f*)/f at the last iterate)."""
    x = inputs.phi_diff
    v, white, z, _ = _posterior_whitened(inputs)
    s_white = whitened_spread(white, spread_of(inputs))
    valid = inputs.valid.astype(x.dtype)
    eye = jnp.eye(x.shape[-1], dtype=x.dtype)

    def criterion(w):
        m = eye + (z * (w * v)[:, None]).T @ z
        a = jax.scipy.linalg.cho_solve((jnp.linalg.cholesky(m), True), eye)
        g = v * jnp.sum((z @ (a @ s_white @ a)) * z, axis=1)
        return g, jnp.trace(a @ s_white)

    def step(_, w):
        g, _ = criterion(w)
        mean = jnp.sum(w * g) / k
        w = w * jnp.sqrt(jnp.maximum(g, 0.0) / jnp.maximum(mean, jnp.finfo(x.dtype).tiny))
        return k * w / jnp.maximum(jnp.sum(w), jnp.finfo(x.dtype).tiny)

    w = jax.lax.fori_loop(0, steps, step, k * valid / jnp.maximum(jnp.sum(valid), 1.0))
    g, f = criterion(w)
    gap = (k * jnp.max(jnp.where(inputs.valid, g, -jnp.inf)) - jnp.sum(w * g)) / f
    ok = white.ok & jnp.all(jnp.isfinite(w)) & jnp.isfinite(gap)
    return jnp.where(ok, w, jnp.nan), jnp.where(ok, gap, jnp.nan)


def fw_iopt_strategy(key, inputs: SelectionInputs, k: int) -> Selection:
    """k distinct pairs from the continuous I-optimal design (:func:`iopt_design`), sampled
    ∝ w without replacement (Gumbel top-k). Sampling, not the k largest weights: the design
    spreads its weight over more than k pairs when D is large, and sampling keeps that spread
    in expectation where the k heaviest would drop its diffuse part. Each pick's score is its
    design weight (NaN where the posterior or the design is not finite)."""
    w, _ = iopt_design(inputs, k)
    gumbel = jax.random.gumbel(key, w.shape, w.dtype)
    logw = jnp.log(jnp.maximum(w, jnp.finfo(w.dtype).tiny))
    chosen = top_k_valid(jnp.where(jnp.isfinite(w), logw + gumbel, 0.0), inputs.valid, k)
    return Selection(chosen.indices, w[chosen.indices])


#: ``uncertain_iopt`` narrows the pool to this many times k candidates before its greedy batch.
HYBRID_POOL_FACTOR = 4


def uncertain_iopt_strategy(key, inputs: SelectionInputs, k: int) -> Selection:
    """A hybrid of the two views: the greedy I-optimal batch (:func:`greedy_iopt_strategy`)
    among the ``HYBRID_POOL_FACTOR · k`` candidates whose preference P(a ≻ b) is most
    uncertain under the posterior (the widest intervals, ``infomax``'s score). The design
    view spreads the batch over the pool's directions; the uncertainty view keeps it on pairs
    the model cannot yet call. S is not narrowed (:func:`spread_of`)."""
    width = pair_scores(INFOMAX, inputs)
    n = width.shape[0]
    top = top_k_valid(width, inputs.valid, min(HYBRID_POOL_FACTOR * k, n))
    narrowed = jnp.zeros(n, bool).at[top.indices].set(jnp.isfinite(top.scores))
    return greedy_iopt_strategy(key, inputs, k, candidates=narrowed)  # a pick outside them scores −inf


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

    β ~ N(β̂, (I_past + λI)⁻¹) (:func:`arm_jax.selection.posterior.laplace`), ``n_samples`` draws. Greedy: add the pair i maximising the
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
