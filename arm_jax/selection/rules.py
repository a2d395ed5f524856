"""The rules that need the candidates' items (:class:`~arm_jax.selection.scores.PairItems`):
the response-level rules over a prompt's responses (``dts``, ``drts``, ``maxmin_lcb``) and
``eubo``, whose score reads each response's own posterior mean reward."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from arm_jax.errors import InputError
from arm_jax.selection import posterior
from arm_jax.selection.batch import _posterior
from arm_jax.selection.scores import UCB_WIDTH, PairItems, Selection, SelectionInputs, top_k_valid

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
    β̃ ~ N(β̂, Λ⁻¹), Λ = I_past + λI (:func:`arm_jax.selection.posterior.sample_heads`), r̃ = Φβ̃,
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


def eubo_score(r_a, r_b, quad):
    """BoTorch's analytic EUBO of a pair (``AnalyticExpectedUtilityOfBestOption``; Lin et al.
    2022): E[max(f_a, f_b)] when the gap f_a − f_b ~ N(Δ, s²), Δ = r_a − r_b, s² = ``quad``:
    r_b + s·(φ(u) + u·Φ(u)), u = Δ/s; max(r_a, r_b) where s = 0. The utilities are the rewards
    themselves (Gaussian under the last-layer posterior), so the logistic link of the labels
    does not enter. NaN where ``quad`` is NaN (a posterior that could not be factorised)."""
    s = jnp.sqrt(jnp.maximum(quad, 0.0))
    spread = jnp.where(s > 0, s, 1.0)
    u = (r_a - r_b) / spread
    above = r_b + spread * (jax.scipy.stats.norm.pdf(u) + u * jax.scipy.special.ndtr(u))
    return jnp.where(jnp.isnan(quad), jnp.nan, jnp.where(s > 0, above, jnp.maximum(r_a, r_b)))


def eubo_strategy(key, inputs: SelectionInputs, k: int) -> Selection:
    """``eubo``: the k candidates of largest :func:`eubo_score` under the posterior, r = Φβ̂ of
    each item (``inputs.items``). A rule for finding the best response (BoTorch's default for
    preference exploration), not for learning every reward: it favours pairs with a likely
    good response. ``key`` is unused (deterministic)."""
    items = _need_items(inputs.items, "eubo")
    r = items.phi @ inputs.beta
    _, std = posterior.gap_mean_and_std(_posterior(inputs), inputs.phi_diff)  # as maxmin_lcb's s_ij
    return top_k_valid(eubo_score(r[items.a], r[items.b], std * std), inputs.valid, k)
