"""The pair-score strategies with the candidates split over devices (:func:`sharded_select`,
:func:`sharded_select_all_pairs`, :func:`sharded_dopt_scores`): the same picks and scores as
one device, from the same :class:`~arm_jax.selection.scores.PairScore`. The kernels take the
PairScore itself as their static argument, so a score of your own runs sharded too."""
from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from arm_jax.errors import InputError
from arm_jax.model import likelihood
from arm_jax.runtime import precision
from arm_jax.runtime.mesh import (
    POOL_AXIS,
    Rows,
    _pad_rows,
    _put,
    _put_rows,
    _put_tree,
    _round_up,
    make_mesh,
    replicated_value,
)
from arm_jax.selection import allpairs, fisher, pool, registry
from arm_jax.selection import scores as strategies
from arm_jax.selection.registry import Strategy, StrategyLike
from arm_jax.selection.scores import PairScore, Selection

# ----------------------------------------------------------------------------- pools


def pool_setup(
    phi_diff, beta, valid, past_phi_diff, past_mask, devices, prior_precision=likelihood.DEFAULT_PRIOR_PRECISION,
    past_weight=None, tie=None, spread=None,
):
    """(mesh, n, x, valid, beta, I_past, (λ, ν, S)) placed on the devices: the rows split, the
    rest replicated. ν is None for Bradley–Terry labels, S None for the candidates' own
    (:func:`arm_jax.selection.scores.spread_of`). ``phi_diff``: an (N, H) array or :class:`Rows`."""
    mesh = make_mesh(POOL_AXIS, devices)
    n_dev = mesh.devices.size
    beta = jnp.asarray(beta, jnp.float32)
    n, h = np.shape(phi_diff)
    padded = _round_up(n, n_dev)
    valid = jnp.ones(n, bool) if valid is None else jnp.asarray(valid, bool)
    past = None
    if past_phi_diff is not None:
        past_mask = None if past_mask is None else jnp.asarray(past_mask, bool)
        past_weight = None if past_weight is None else jnp.asarray(past_weight, jnp.float32)
        tie_nu = None if tie is None else jnp.float32(tie)
        past = fisher.past_information(jnp.asarray(past_phi_diff, jnp.float32), beta, past_mask, past_weight, tie_nu)
    by_row = NamedSharding(mesh, P(POOL_AXIS))
    replicated = NamedSharding(mesh, P())
    if not isinstance(phi_diff, Rows):
        full = np.asarray(phi_diff, np.float32)
        phi_diff = Rows(n, h, lambda start, stop: full[start:stop])
    x = _put_rows(phi_diff, padded, by_row)  # zero rows: no information, score 0
    valid = _put(_pad_rows(valid, padded, False), by_row)
    past = jnp.zeros((h, h), jnp.float32) if past is None else past
    prior = (
        jnp.float32(prior_precision), None if tie is None else jnp.float32(tie),
        None if spread is None else jnp.asarray(spread, jnp.float32),
    )
    prior = _put_tree(prior, replicated)
    return mesh, n, x, valid, _put(beta, replicated), _put(past, replicated), prior


@precision.full_precision
def _local_scores(spec: PairScore, x, valid, beta, past, prior, ridge):
    """(rank scores, gaps) of this device's candidates under the pair score ``spec``, with the
    pool's parts of M and S all-reduced over the pool axis. ``prior``: (λ, ν or None, S or None)."""
    prior, tie, spread = prior
    spec = strategies.with_tie(spec, tie)
    gap = x @ beta
    psum = lambda a: jax.lax.psum(a, POOL_AXIS)
    return strategies.explicit_pair_scores(spec, x, gap, valid, past, prior, ridge, reduce=psum, spread=spread), gap


@functools.partial(jax.jit, static_argnames=("spec", "mesh", "ridge"))
def _sharded_scores(spec: PairScore, mesh, x, valid, beta, past, prior, ridge):
    body = lambda *args: _local_scores(spec, *args, ridge=ridge)[0]
    return jax.shard_map(
        body, mesh=mesh, in_specs=(P(POOL_AXIS), P(POOL_AXIS), P(), P(), P()), out_specs=P(POOL_AXIS)
    )(x, valid, beta, past, prior)


@functools.partial(jax.jit, static_argnames=("spec", "mesh", "k", "ridge"))
def top_k_program(spec: PairScore, mesh, x, valid, beta, past, prior, k, ridge):
    n_local = x.shape[0] // mesh.devices.size
    k_local = min(k, n_local)

    def body(x, valid, beta, past, prior):
        scores, gap = _local_scores(spec, x, valid, beta, past, prior, ridge)
        local = strategies.top_k_valid(scores, valid, k_local)
        shown = strategies.report_scores(spec, gap[local.indices], local.scores)
        offset = jax.lax.axis_index(POOL_AXIS) * n_local
        values = jax.lax.all_gather(local.scores, POOL_AXIS, tiled=True)
        shown = jax.lax.all_gather(shown, POOL_AXIS, tiled=True)
        indices = jax.lax.all_gather(local.indices + offset, POOL_AXIS, tiled=True)
        best, pos = jax.lax.top_k(values, k)  # device order = global index order: same ties
        return indices[pos].astype(jnp.int32), jnp.where(jnp.isfinite(best), shown[pos], jnp.nan)

    # after the all_gather every device holds the same candidates and takes the same top k,
    # so the outputs are replicated; the static replication check cannot see through top_k.
    indices, best = jax.shard_map(
        body, mesh=mesh, in_specs=(P(POOL_AXIS), P(POOL_AXIS), P(), P(), P()), out_specs=(P(), P()),
        check_vma=False,
    )(x, valid, beta, past, prior)
    return Selection(indices, best)


def sharded_dopt_scores(
    phi_diff: jax.Array,
    beta: jax.Array,
    past_phi_diff: jax.Array | None = None,
    ridge: float = fisher.DEFAULT_RIDGE,
    past_mask: jax.Array | None = None,
    valid: jax.Array | None = None,
    weighted: bool = True,
    devices: Sequence[jax.Device] | None = None,
) -> jax.Array:
    """:func:`arm_jax.selection.fisher.dopt_scores` with the candidate axis split over devices.

    phi_diff: (N, H); beta: (H,); past_phi_diff / past_mask: optional (M, H) / (M,) labelled
    pairs (I_past is added, as in ``pa_dopt``); valid: optional (N,) bool, invalid candidates
    take no part in M and score 0; weighted=False gives the ``xtx`` scores (v ≡ 1).
    Returns (N,) float32 scores, sharded over ``devices``; equal to the one-device result.
    """
    fisher.check_shapes(phi_diff, beta, past_phi_diff, past_mask)
    mesh, n, x, valid_s, beta_s, past, prior = pool_setup(phi_diff, beta, valid, past_phi_diff, past_mask, devices)
    name = ("pa_dopt" if past_phi_diff is not None else "dopt") if weighted else "xtx"
    scores = _sharded_scores(registry.STRATEGIES[name].pair_score, mesh, x, valid_s, beta_s, past, prior, float(ridge))
    return scores if scores.shape[0] == n else scores[:n]  # padded rows: strip


def _sharded_strategy(name: StrategyLike) -> Strategy:
    """The strategy of ``name`` (:func:`arm_jax.selection.registry.resolve`: the registry's
    message for an unknown name); InputError naming the supported ones unless it has a pair score."""
    strategy = registry.resolve(name)
    if strategy.pair_score is None:
        supported = ", ".join(registry.PAIR_SCORE_STRATEGIES)
        raise InputError(f"strategy {strategy.name!r} is not supported for sharded selection; supported: {supported}")
    return strategy


def sharded_select(
    name: StrategyLike,
    key: jax.Array | None,
    phi_diff,
    beta,
    k: int,
    valid=None,
    past_phi_diff=None,
    past_mask=None,
    devices: Sequence[jax.Device] | None = None,
    ridge: float = fisher.DEFAULT_RIDGE,
    prior_precision: float = likelihood.DEFAULT_PRIOR_PRECISION,
    past_weight=None,
    tie=None,
    spread=None,
) -> Selection:
    """:func:`arm_jax.selection.pool.select` for the pair-score strategies
    (:data:`arm_jax.selection.registry.PAIR_SCORE_STRATEGIES`, or a :class:`PairScore` of your
    own, or a :class:`~arm_jax.selection.registry.Strategy` with one) with the candidate axis
    split over devices: the same k picks (best first) and scores, from the same score functions.

    Validates on the host (one-line ValueError), then runs one jit-compiled ``shard_map``:
    per-device scores (M all-reduced), per-device top k, ``all_gather``, global top k.
    ``phi_diff``: an (N, H) array, or :class:`Rows` (each process builds only its own rows; on
    several processes every input but the rows is the same on each). Returns host arrays
    (the same on every process).
    """
    strategy = _sharded_strategy(name)
    del key
    pool.validate_selection(phi_diff, beta, k, valid, past_phi_diff, past_mask)
    fisher.check_spread(spread, np.shape(phi_diff)[1])
    mesh, n, x, valid_s, beta_s, past, prior = pool_setup(
        phi_diff, beta, valid, past_phi_diff, past_mask, devices, prior_precision, past_weight, tie, spread
    )
    chosen = top_k_program(strategy.pair_score, mesh, x, valid_s, beta_s, past, prior, int(k), float(ridge))
    chosen = Selection(replicated_value(chosen.indices), replicated_value(chosen.scores))
    pool.check_selection(strategy.name, chosen.scores)
    return chosen


# ----------------------------------------------------------------------------- all pairs


@functools.partial(jax.jit, static_argnames=("spec", "mesh", "k", "tile", "ridge"))
def _sharded_all_pairs(spec: PairScore, mesh, k, tile, ridge, block_i, block_j, row_tiles, shared):

    def body(block_i, block_j, row_tiles, shared):
        best = allpairs.rank_blocks(
            spec, k=k, tile=tile, ridge=ridge, blocks=(block_i, block_j), row_tiles=row_tiles,
            reduce=lambda m: jax.lax.psum(m, POOL_AXIS), **shared,
        )
        gather = lambda a: jax.lax.all_gather(a, POOL_AXIS, tiled=True)
        rank, pos = jax.lax.top_k(gather(best.rank), k)  # device order = block order: the same ties
        shown = jnp.where(best.ok & jnp.isfinite(rank), gather(best.shown)[pos], jnp.nan)
        return gather(best.u)[pos].astype(jnp.int32), gather(best.v)[pos].astype(jnp.int32), shown

    # every device ends with the same k (after the all_gather), so the outputs are replicated
    return jax.shard_map(
        body, mesh=mesh, in_specs=(P(POOL_AXIS), P(POOL_AXIS), P(POOL_AXIS), P()), out_specs=(P(), P(), P()),
        check_vma=False,
    )(block_i, block_j, row_tiles, shared)


def sharded_select_all_pairs(
    name: StrategyLike,
    key: jax.Array | None,
    phi,
    beta,
    k: int,
    past_phi_diff=None,
    past_mask=None,
    item_valid=None,
    tile: int | None = None,
    exclude=None,
    prior_precision: float = likelihood.DEFAULT_PRIOR_PRECISION,
    past_weight=None,
    tie=None,
    devices: Sequence[jax.Device] | None = None,
    ridge: float = fisher.DEFAULT_RIDGE,
    spread=None,
):
    """:func:`arm_jax.selection.allpairs.select_all_pairs` with the work split over devices: each device
    scores its share of the (tile × tile) blocks of the pair grid and sums its share of the
    row tiles of M (one ``psum``), then a local top k, ``all_gather`` and global top k. The
    item features are replicated (K × H on every device). The same picks as one device;
    returns host arrays, the same on every process. ``name``: as for ``select_all_pairs`` (a
    registry name, a :class:`~arm_jax.selection.registry.Strategy` or a :class:`PairScore`)."""

    del key
    tile = allpairs.DEFAULT_TILE if tile is None else tile
    allpairs.validate_all_pairs(name, phi, beta, k, past_phi_diff, past_mask, item_valid, tile, exclude, spread)
    strategy = allpairs.supported_strategy(name)
    mesh = make_mesh(POOL_AXIS, devices)
    n_dev = mesh.devices.size
    k_items = np.shape(phi)[0]
    tile = allpairs.fit_tile(tile, k_items)
    n_tiles = -(-k_items // tile)
    # each device's share of the blocks and of M's row tiles; -1: a padding entry, no work
    block_i, block_j = (_pad_rows(b, _round_up(b.size, n_dev), -1) for b in allpairs._upper_blocks(n_tiles))
    row_tiles = _pad_rows(np.arange(n_tiles, dtype=np.int32), _round_up(n_tiles, n_dev), -1)
    ex_u = ex_v = None
    if exclude is not None and np.size(exclude[0]):
        ex_u, ex_v = (np.asarray(e, np.int64).astype(np.int32) for e in exclude)
    f32 = lambda a: None if a is None else np.asarray(a, np.float32)
    flags = lambda a: None if a is None else np.asarray(a, bool)
    shared = dict(
        phi=f32(phi), beta=f32(beta), past_phi_diff=f32(past_phi_diff), past_mask=flags(past_mask),
        item_valid=flags(item_valid), exclude_u=ex_u, exclude_v=ex_v, prior_precision=np.float32(prior_precision),
        past_weight=f32(past_weight), tie=None if tie is None else np.float32(tie), spread=f32(spread),
    )
    by_block = NamedSharding(mesh, P(POOL_AXIS))
    u, v, scores = _sharded_all_pairs(
        strategy.pair_score, mesh, int(k), int(tile), float(ridge), _put(block_i, by_block), _put(block_j, by_block),
        _put(row_tiles, by_block), _put_tree(shared, NamedSharding(mesh, P())),
    )
    chosen = allpairs.AllPairsSelection(replicated_value(u), replicated_value(v), replicated_value(scores))
    pool.check_selection(strategy.name, chosen.scores)
    return chosen
