"""TODO docstring."""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from arm_jax.model import likelihood
from arm_jax.model import network as model_lib
from arm_jax.model.buffer import LabelBuffer
from arm_jax.model.config import TrainConfig, _optimizer
from arm_jax.model.newton import damped_step

# ------------------------------------------------------------- votes, ties and raters


class Votes(NamedTuple):
    """The likelihood's view of a buffer with votes (:mod:`arm_jax.model.likelihood`).

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
    n (``arm_jax.selection.fisher.past_information``). Plain labels (``votes`` None): (x, None)."""
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
    positive; the damping of :func:`arm_jax.model.newton.damped_step`, each entry of a step at
    most 5); a step that is not finite or does not lower the objective is not taken. log ν stays
    put without tie votes. gap: (C,) reward gaps; nuisance: {"log_nu": (), "u": (A,)}; returns
    the same structure."""
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
        return jnp.clip(damped_step(objective, eta, delta, max_step=5.0), -20.0, 20.0), None

    eta0 = jnp.concatenate([nuisance["log_nu"][None], nuisance["u"]])
    eta, _ = jax.lax.scan(one, eta0, None, length=steps)
    return unpack(eta)


def typical_rater(votes: Votes, nuisance: dict) -> tuple[jax.Array, dict]:
    """(g, nuisance'): the reward's scale and the reliabilities re-expressed for the typical
    rater. Only the products q_j·r are identified; with g the vote-weighted geometric mean of
    the raters' q, a head scaled by g and reliabilities divided by g give the same likelihood,
    and then a reward gap means what it means to the typical rater (q = 1), which is the rater
    :mod:`arm_jax.selection.scores` assume for the next label."""
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


def _vote_optimizer(config: TrainConfig, fixed_reliability: bool = False):
    """AdamW on the model, Adam (:data:`NUISANCE_LR`, no decay: they have their own prior) on
    ν and the reliabilities (held fixed with ``fixed_reliability``)."""
    import optax  # here, not at the top: commands that train no MLP start without importing it

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
