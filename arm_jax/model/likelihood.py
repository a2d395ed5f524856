"""One likelihood for every kind of label: decided pairs, ties, several raters, vote counts.

Davidson's (1970) extension of Bradley–Terry. For a pair (a, b) with reward gap
g = r(a) − r(b) and a rater of reliability q > 0 (d = q·g):

    P(a ≻ b) = e^{d/2} / Z,   P(b ≻ a) = e^{−d/2} / Z,   P(a ~ b) = ν / Z,
    Z(d) = e^{d/2} + e^{−d/2} + ν                      (ν ≥ 0: the tie strength)

Why Davidson rather than Rao–Kupper: the odds of a win against a loss stay e^{d}, exactly
Bradley–Terry's, so a reward gap means the same with or without ties; ties are likeliest
between equal items (P(tie) = ν / (2 cosh(d/2) + ν)); and ν = 0 *is* Bradley–Terry (Rao–
Kupper's threshold shifts every win probability instead).

A labelled row carries counts (c_a, c_b, c_t): votes for a, for b, and ties. A decided label
is (1, 0, 0) (a the winner), a tie (0, 0, 1), aggregated votes (7, 3, 0), a soft label
p_a = 0.7 the soft target (0.7, 0.3, 0). Its negative log-likelihood is

    ℓ(d) = n log Z(d) − (c_a − c_b) d/2 − c_t log ν,     n = c_a + c_b + c_t

(the multinomial likelihood up to a constant; for soft targets the cross-entropy). Only
log Z is curved, so the observed and the expected information agree and do not depend on the
outcome: with respect to the gap,

    ∂²ℓ/∂g² = n q² v(q g; ν),   v(d; ν) = (log Z)'' = (1 + (ν/2) cosh(d/2)) / Z(d)²,

which for ν = 0 is σ(d)σ(−d), the Bradley–Terry weight. A row's Fisher information about the
head β is n q² v(q xᵀβ; ν) x xᵀ: it counts with its weight n and its rater's reliability.
:func:`arm_jax.model.likelihood.gap_variance` computes v; tests/test_likelihood.py checks it against
``jax.hessian`` of :func:`row_nll`.

Reliabilities (the paper's annotation quality β_a as a positive scale on the logit) are
q_j = exp(u_j) with the prior u_j ~ N(0, :data:`RELIABILITY_PRIOR_STD`²): a rater with few
labels stays near the panel's typical one, whose scale the reward absorbs.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from arm_jax.runtime.precision import full_precision


def gap_variance(gap: jax.Array, tie=None) -> jax.Array:
    """v = σ(z)σ(−z) = p(1 − p) for the reward gap z = r̂_a − r̂_b. ``(...) -> (...)``.

    Written as e^{−|z|} / (1 + e^{−|z|})², one exp, never losing precision to 1 − p. The one
    definition of the Bradley–Terry Fisher weight: every driver (pool, all pairs, sharded,
    experiment) calls it, so they agree to the last bit.

    ``tie``: the tie strength ν of Davidson's likelihood (:mod:`arm_jax.model.likelihood`) when the
    labels have ties; then v = (1 + (ν/2) cosh(z/2)) / (e^{z/2} + e^{−z/2} + ν)², written with
    e = e^{−|z|}, h = e^{−|z|/2} as (e + (ν/4)(h + h·e)) / (1 + e + ν·h)². ``None``: Bradley–Terry.
    """
    e = jnp.exp(-jnp.abs(gap))
    if tie is None:
        return e / jnp.square(1.0 + e)
    h = jnp.exp(-0.5 * jnp.abs(gap))
    return (e + 0.25 * tie * (h + h * e)) / jnp.square(1.0 + e + tie * h)


@full_precision
def bernoulli_variance(phi_diff: jax.Array, beta: jax.Array, tie=None) -> jax.Array:
    """v = p(1 − p) with p = σ(x·β) (Davidson's v with ``tie`` = ν). ``(N, H), (H,) -> (N,)``."""
    return gap_variance(phi_diff @ beta, tie)

#: Standard deviation of the prior on a rater's log reliability: a rater is a priori within a
#: factor e of the panel's typical one (one standard deviation).
RELIABILITY_PRIOR_STD = 1.0


def log_partition(d: jax.Array, log_nu: jax.Array) -> jax.Array:
    """log Z(d) = log(e^{d/2} + e^{−d/2} + ν), stable for any d (ν = 0: log_nu = −inf)."""
    return jnp.logaddexp(jnp.logaddexp(0.5 * d, -0.5 * d), log_nu)


def row_nll(gap: jax.Array, counts: jax.Array, scale: jax.Array, log_nu: jax.Array) -> jax.Array:
    """ℓ of each row: ``gap (...), counts (..., 3), scale (...), log_nu () -> (...)``.

    A row without tie votes never reads log ν (so ν = 0 is allowed there)."""
    d = scale * gap
    n = jnp.sum(counts, axis=-1)
    tie = counts[..., 2]
    tie_term = jnp.where(tie > 0, tie * jnp.where(tie > 0, log_nu, 0.0), 0.0)
    return n * log_partition(d, log_nu) - 0.5 * (counts[..., 0] - counts[..., 1]) * d - tie_term


def outcome_probabilities(gap: jax.Array, nu) -> jax.Array:
    """(P(a ≻ b), P(b ≻ a), P(tie)) of each gap under tie strength ν. ``(...) -> (..., 3)``."""
    gap = jnp.asarray(gap, jnp.float32)
    log_nu = jnp.log(jnp.asarray(nu, jnp.float32))
    logz = log_partition(gap, log_nu)
    return jnp.stack([jnp.exp(0.5 * gap - logz), jnp.exp(-0.5 * gap - logz), jnp.exp(log_nu - logz)], axis=-1)


def tie_strength_for_rate(rate: float, gaps: jax.Array) -> jax.Array:
    """The ν whose mean tie probability over ``gaps`` is ``rate`` (bisection on log ν; the
    mean tie probability rises with ν). ``rate`` 0 gives ν = 0. ``-> ()``."""
    gaps = jnp.asarray(gaps, jnp.float32)

    def mean_rate(log_nu):
        return jnp.mean(outcome_probabilities(gaps, jnp.exp(log_nu))[..., 2])

    def step(bounds, _):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        high = mean_rate(mid) > rate
        return (jnp.where(high, lo, mid), jnp.where(high, mid, hi)), None

    (lo, hi), _ = jax.lax.scan(step, (jnp.float32(-30.0), jnp.float32(30.0)), None, length=60)
    return jnp.where(rate > 0, jnp.exp(0.5 * (lo + hi)), 0.0)


def prior_nll(u: jax.Array) -> jax.Array:
    """−log prior of the log reliabilities u (up to a constant). ``(A,) -> ()``."""
    return 0.5 * jnp.sum(jnp.square(u)) / RELIABILITY_PRIOR_STD ** 2

#: Prior precision λ of the head β (a standard normal prior, the paper's Bayesian
#: D-optimality |I + I/σ²| with σ = 1; ``greedy_dopt``'s ridge and ``batchbald``'s prior).
DEFAULT_PRIOR_PRECISION = 1.0


def bt_loss(reward_winner: jax.Array, reward_loser: jax.Array) -> jax.Array:
    """Per-comparison Bradley–Terry negative log-likelihood −log σ(r_w − r_l), stable for any gap."""
    return -jax.nn.log_sigmoid(reward_winner - reward_loser)
