"""Score *every* unordered pair of K items without materialising the K(K−1)/2 pair features.

With item features Φ (K × H), item rewards r = Φβ and pair (u, v) with x_uv = Φ_u − Φ_v:

    x_uvᵀ β = r_u − r_v
    x_uvᵀ M⁻¹ x_uv = ‖z_u − z_v‖² = ‖z_u‖² + ‖z_v‖² − 2 z_u·z_v,   Z = Φ L⁻ᵀ, M = L Lᵀ

(the Gram matrix G = Φ M⁻¹ Φᵀ = Z Zᵀ, taken one (tile × tile) block at a time). The pool's
information over all pairs never needs the pairs either: with symmetric pair weights W
(zero diagonal) and d = W·1,

    Σ_{u<v} w_uv x_uv x_uvᵀ = Φᵀ diag(d) Φ − Φᵀ W Φ

which is summed one row tile of W at a time (``dopt``/``pa_dopt``: w_uv = σ(r_u−r_v)σ(r_v−r_u));
for unit weights (``xtx``) it is the closed form n·ΦᵀΦ − (Σφ)(Σφ)ᵀ over the n valid items.
Φ is centred first (x_uv does not see a common shift), which keeps both identities free of
the cancellation a large mean feature would cause in float32.

Scoring walks the upper-triangular blocks (i ≤ j) of the K × K pair grid in a ``lax.scan``:
each block is scored, masked (u < v, both items valid), reduced to its own top k, and merged
into a running top k. Memory is O(K·H + tile·K); no host round-trips; fixed tile size
(K is padded up to a multiple of it), so one compilation serves every round.

Public API: :func:`top_k_all_pairs` (pure, jit-able; the strategy, ``k``, ``tile`` static),
:func:`select_all_pairs` (host-side validation, then the jitted kernel),
:func:`all_pairs_information` (M over all pairs), :func:`explicit_pairs` (the materialised
pair list, for tests and small K).
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from arm_jax.errors import InputError
from arm_jax.model import likelihood
from arm_jax.runtime import precision
from arm_jax.selection import fisher, pool, registry
from arm_jax.selection import scores as strategies_lib
from arm_jax.selection.registry import STRATEGIES, Strategy, StrategyLike
from arm_jax.selection.scores import PairScore

DEFAULT_TILE = 512


class AllPairsSelection(NamedTuple):
    """The k best pairs among all K(K−1)/2, best first.

    u, v: (k,) int32 item indices with u < v; scores: (k,) float32, the strategy's score of
    pair (u, v) — the same number the strategy gives the explicit pair x = Φ_u − Φ_v.
    """

    u: jax.Array
    v: jax.Array
    scores: jax.Array


# ----------------------------------------------------------------------------- pieces


class _Padded(NamedTuple):
    phi: jax.Array  # (Kp, H) centred, zero rows for invalid/padding items
    reward: jax.Array  # (Kp,) r = Φβ of the centred features
    valid: jax.Array  # (Kp,) bool
    n_valid: jax.Array  # () float32


def _pad_and_centre(phi, beta, item_valid, tile: int) -> _Padded:
    k_items, h = phi.shape
    k_pad = -(-k_items // tile) * tile
    valid = jnp.ones(k_items, bool) if item_valid is None else jnp.asarray(item_valid, bool)
    valid_f = valid.astype(phi.dtype)
    n_valid = jnp.sum(valid_f)
    mean = jnp.sum(phi * valid_f[:, None], axis=0) / jnp.maximum(n_valid, 1.0)
    centred = (phi - mean) * valid_f[:, None]
    centred = jnp.pad(centred, ((0, k_pad - k_items), (0, 0)))
    valid = jnp.pad(valid, (0, k_pad - k_items))
    return _Padded(centred, centred @ beta, valid, n_valid)


def _tiles(x: jax.Array, tile: int) -> jax.Array:
    """(Kp, ...) -> (Kp / tile, tile, ...)."""
    return x.reshape((x.shape[0] // tile, tile) + x.shape[1:])


def _weighted_pair_information(
    items: _Padded, tile: int, weight=likelihood.gap_variance, row_tiles: jax.Array | None = None, reduce=None
) -> jax.Array:
    """Φᵀ diag(W1) Φ − Φᵀ W Φ for w_uv = weight(r_u − r_v) over valid u ≠ v, by row tiles.

    Each step builds one (tile × Kp) row block of W on the fly: O(tile·K) memory.
    ``row_tiles``: sum only these row tiles (−1: none), and ``reduce`` the partial sums
    (a device's share, all-reduced: :func:`arm_jax.selection.sharded.sharded_select_all_pairs`).
    """
    phi, r, valid = items.phi, items.reward, items.valid
    h = phi.shape[1]
    index = jnp.arange(phi.shape[0], dtype=jnp.int32)

    def row_tile(m, xs):
        phi_i, r_i, valid_i, index_i = xs
        w = weight(r_i[:, None] - r[None, :])
        keep = valid_i[:, None] & valid[None, :] & (index_i[:, None] != index[None, :])
        w = jnp.where(keep, w, 0.0)  # d = W·1 must not count invalid partners nor u itself
        d = jnp.sum(w, axis=1)
        m = m + (phi_i * d[:, None]).T @ phi_i - phi_i.T @ (w @ phi)
        return m, None

    xs = (_tiles(phi, tile), _tiles(r, tile), _tiles(valid, tile), _tiles(index, tile))
    if row_tiles is not None:
        phi_t, r_t, valid_t, index_t = (x[jnp.maximum(row_tiles, 0)] for x in xs)
        xs = (phi_t, r_t, valid_t & (row_tiles >= 0)[:, None], index_t)
    m, _ = jax.lax.scan(row_tile, jnp.zeros((h, h), phi.dtype), xs)
    if reduce is not None:
        m = reduce(m)
    return 0.5 * (m + m.T)


def _unit_pair_information(items: _Padded) -> jax.Array:
    """Σ_{u<v} x_uv x_uvᵀ = n ΦᵀΦ − s sᵀ over the n valid items, s = Σφ (closed form)."""
    s = jnp.sum(items.phi, axis=0)
    return items.n_valid * (items.phi.T @ items.phi) - jnp.outer(s, s)


@precision.full_precision
def all_pairs_information(
    phi: jax.Array, beta: jax.Array, weighted: bool = True, item_valid: jax.Array | None = None,
    tile: int = DEFAULT_TILE,
) -> jax.Array:
    """Σ_{u<v} w_uv x_uv x_uvᵀ over all pairs of valid items, without the pairs. ``-> (H, H)``.

    weighted: w_uv = σ(r_u − r_v)σ(r_v − r_u) (the Fisher information, ``dopt``); False: w ≡ 1
    (the design matrix XᵀX, ``xtx``). No jitter, no past information.
    """
    items = _pad_and_centre(jnp.asarray(phi, jnp.float32), jnp.asarray(beta, jnp.float32), item_valid, tile)
    return _weighted_pair_information(items, tile) if weighted else _unit_pair_information(items)


def _upper_blocks(n_tiles: int) -> tuple[np.ndarray, np.ndarray]:
    i, j = np.triu_indices(n_tiles)
    return i.astype(np.int32), j.astype(np.int32)


def fit_tile(tile: int, k_items: int) -> int:
    """The tile used for K items: never pad a small K up to a huge tile."""
    return int(min(tile, -(-k_items // 8) * 8))


class Ranked(NamedTuple):
    """The k best pairs of some blocks before they are shown: rank scores (−inf: none), the
    pairs, the scores shown (:func:`arm_jax.selection.scores.report_scores`), and whether M could
    be factorised."""

    rank: jax.Array
    u: jax.Array
    v: jax.Array
    shown: jax.Array
    ok: jax.Array


# ----------------------------------------------------------------------------- the kernel


@precision.full_precision
def top_k_all_pairs(
    name: StrategyLike,
    key: jax.Array | None,
    phi: jax.Array,
    beta: jax.Array,
    k: int,
    past_phi_diff: jax.Array | None = None,
    past_mask: jax.Array | None = None,
    item_valid: jax.Array | None = None,
    tile: int = DEFAULT_TILE,
    ridge: float = fisher.DEFAULT_RIDGE,
    exclude_u: jax.Array | None = None,
    exclude_v: jax.Array | None = None,
    prior_precision: jax.Array | float = likelihood.DEFAULT_PRIOR_PRECISION,
    past_weight: jax.Array | None = None,
    tie: jax.Array | None = None,
    spread: jax.Array | None = None,
) -> AllPairsSelection:
    """The k best of all K(K−1)/2 unordered pairs of items under strategy ``name``.

    name: the strategy (static): the name of one of the registry's pair scores
      (:data:`arm_jax.selection.registry.PAIR_SCORE_STRATEGIES`), a
      :class:`~arm_jax.selection.registry.Strategy` with a pair score, or a
      :class:`~arm_jax.selection.scores.PairScore` of your own.
    key: unused (the supported strategies are deterministic); kept for the common signature.
    phi: (K, H) float32 item features Φ; beta: (H,) head, so r = Φβ.
    k: number of pairs (static); must be ≤ the number of valid pairs (see :func:`select_all_pairs`).
    past_phi_diff, past_mask: (M, H), (M,) labelled pairs; the past-aware strategies use them.
    item_valid: optional (K,) bool; pairs with an invalid item are never picked nor counted in M.
    tile: block edge (static); K is padded to a multiple of it. Memory O(K·H + tile·K).
    ridge: relative ridge of M (:func:`arm_jax.selection.fisher.whitening`).
    exclude_u, exclude_v: optional (E,) int item indices of pairs never to pick (labelled
      ones; either order; −1 marks unused rows). Each block masks them by one scatter, O(E).
    prior_precision: λ of the head's prior, for the posterior-based scores (Λ = I_past + λI).
    past_weight, tie: the labelled rows' votes and Davidson's ν, when the labels have them
    (:class:`arm_jax.selection.scores.SelectionInputs`).
    spread: optional (H, H) S of the I-optimal scores (the target-aware one of
    :func:`arm_jax.selection.scores.prompt_spread`); by default S over all pairs, which is ½·(n ΦᵀΦ − s sᵀ)/(n(n−1)/2) (the closed form of
    ``xtx``), and x_uvᵀM⁻¹SM⁻¹x_uv = ‖y_u − y_v‖² with Y = Z G, G Gᵀ = L⁻¹SL⁻ᵀ (an eigen
    factor), the same tile form as the leverage.
    Returns :class:`AllPairsSelection` with u < v, best first. Pure and jit-able; no pair list.
    Equal scores are broken by block order (row-major over tiles), not by global pair order.
    """
    spec = supported_strategy(name).pair_score
    del key
    best = rank_blocks(
        spec, phi, beta, k, past_phi_diff, past_mask, item_valid, tile, ridge, exclude_u, exclude_v,
        prior_precision, past_weight, tie, spread=spread,
    )
    # never unranked picks: a failed factorisation (or fewer scorable pairs than k) shows as
    # non-finite scores, which select_all_pairs refuses
    scores = jnp.where(best.ok & jnp.isfinite(best.rank), best.shown, jnp.nan)
    return AllPairsSelection(best.u.astype(jnp.int32), best.v.astype(jnp.int32), scores)


def _pool_information(spec, items: _Padded, tile: int, row_tiles, reduce) -> jax.Array:
    """The pool's part of the M of ``spec`` over all pairs of valid items (zero for the
    posterior-based scores, whose M is Λ alone). ``-> (H, H)``."""
    h = items.phi.shape[1]
    if not spec.pool:
        return jnp.zeros((h, h), jnp.float32)
    if spec.weight is strategies_lib.unit_weight:
        return _unit_pair_information(items)
    return _weighted_pair_information(items, tile, spec.weight, row_tiles, reduce)


class _Whitened(NamedTuple):
    """Item coordinates in which a pair's leverage and spread are squared distances.

    z: (Kp, H) with x_uvᵀ(M + ρI)⁻¹x_uv = ‖z_u − z_v‖²; (Kp, 0) for the scores without M.
    y: (Kp, H) with x_uvᵀM⁻¹SM⁻¹x_uv = ‖y_u − y_v‖² (I-optimality); (Kp, 0) otherwise.
    ok: () bool, M (and S's eigen factor) could be factorised.
    """

    z: jax.Array
    y: jax.Array
    ok: jax.Array


def _whiten_items(spec, items: _Padded, m: jax.Array, ridge, spread=None) -> _Whitened:
    """:class:`_Whitened` of the items under the complete M of ``spec``. I-optimality's S is
    ``spread`` or, by default, over all pairs ½·(n ΦᵀΦ − s sᵀ)/(n(n−1)/2); Y = Z G with
    G Gᵀ = L⁻¹SL⁻ᵀ (an eigen factor)."""
    white = fisher.whitening(m, ridge)
    ok = white.ok
    z = fisher.whiten(items.phi, white)  # (Kp, H): x_uvᵀ(M + ρI)⁻¹x_uv = ‖z_u − z_v‖²
    y = jnp.zeros((items.phi.shape[0], 0), jnp.float32)
    if spec.spread:
        if spread is None:
            n_pairs = jnp.maximum(items.n_valid * (items.n_valid - 1.0) / 2.0, 1.0)
            spread = 0.5 * _unit_pair_information(items) / n_pairs
        evals, evecs = jnp.linalg.eigh(strategies_lib.whitened_spread(white, spread))
        y = z @ (evecs * jnp.sqrt(jnp.maximum(evals, 0.0))[None, :])  # ‖y_u − y_v‖² = x_uvᵀM⁻¹SM⁻¹x_uv
        ok = ok & jnp.all(jnp.isfinite(evals))
    return _Whitened(z, y, ok)


def _score_features(
    spec, items: _Padded, beta, tile, ridge, past_phi_diff, past_mask, prior_precision, past_weight, tie, row_tiles,
    reduce, spread=None,
) -> _Whitened:
    """M of ``spec`` over all pairs (its pool part, I_past, the prior:
    :func:`arm_jax.selection.scores.with_past_and_prior`), factorised: :class:`_Whitened`."""
    k_pad = items.phi.shape[0]
    if spec.weight is None:
        return _Whitened(jnp.zeros((k_pad, 0), jnp.float32), jnp.zeros((k_pad, 0), jnp.float32), jnp.bool_(True))
    m = _pool_information(spec, items, tile, row_tiles, reduce)
    past = None
    if spec.uses_past and past_phi_diff is not None:
        past = fisher.past_information(jnp.asarray(past_phi_diff, jnp.float32), beta, past_mask, past_weight, tie)
    m = strategies_lib.with_past_and_prior(spec, m, past, prior_precision)
    return _whiten_items(spec, items, m, ridge, spread)


class _Exclusions(NamedTuple):
    """Labelled pairs never picked, as (E,) int32 item pairs lo < hi; ``ok`` False: no pair."""

    lo: jax.Array
    hi: jax.Array
    ok: jax.Array


def _exclusions(exclude_u, exclude_v) -> _Exclusions:
    """:class:`_Exclusions` of the (E,) item pairs (either order; −1 marks unused rows)."""
    if exclude_u is None:
        exclude_u = exclude_v = jnp.full((1,), -1, jnp.int32)
    lo = jnp.minimum(exclude_u, exclude_v).astype(jnp.int32)
    hi = jnp.maximum(exclude_u, exclude_v).astype(jnp.int32)
    return _Exclusions(lo, hi, (lo >= 0) & (lo != hi))


def _excluded(ex: _Exclusions, tile: int, i, j) -> jax.Array:
    """(tile, tile) bool: pairs of block (i, j) that are in the exclude list (one scatter, O(E))."""
    row, col = ex.lo - i * tile, ex.hi - j * tile
    inside = ex.ok & (row >= 0) & (row < tile) & (col >= 0) & (col < tile)
    flat = jnp.where(inside, row * tile + col, tile * tile)  # out of range: dropped
    return jnp.zeros(tile * tile, bool).at[flat].set(True, mode="drop").reshape(tile, tile)


class _TiledItems(NamedTuple):
    """The items' per-pair ingredients, split into tiles: ``(Kp / tile, tile, ...)``."""

    z: jax.Array
    sq: jax.Array  # ‖z‖²
    reward: jax.Array
    valid: jax.Array
    y: jax.Array
    sq_y: jax.Array  # ‖y‖²


def _tiled_items(items: _Padded, feats: _Whitened, tile: int) -> _TiledItems:
    sq = jnp.sum(feats.z * feats.z, axis=1)
    sq_y = jnp.sum(feats.y * feats.y, axis=1)
    return _TiledItems(
        _tiles(feats.z, tile), _tiles(sq, tile), _tiles(items.reward, tile), _tiles(items.valid, tile),
        _tiles(feats.y, tile), _tiles(sq_y, tile),
    )


def _block_scores(spec, t: _TiledItems, i, j) -> jax.Array:
    """(tile, tile) rank scores of the pairs (row of tile i, column of tile j), from the reward
    gap, the leverage ‖z_u − z_v‖² and (I-optimality) the spread ‖y_u − y_v‖²."""
    gap = t.reward[i][:, None] - t.reward[j][None, :]
    quad = None
    if spec.weight is not None:
        quad = t.sq[i][:, None] + t.sq[j][None, :] - 2.0 * (t.z[i] @ t.z[j].T)
        quad = jnp.maximum(quad, 0.0)
    if spec.spread:
        q_s = jnp.maximum(t.sq_y[i][:, None] + t.sq_y[j][None, :] - 2.0 * (t.y[i] @ t.y[j].T), 0.0)
        return spec.rank(gap, quad, q_s)
    return spec.rank(gap, quad)


def _scan_blocks(spec, t: _TiledItems, ex: _Exclusions, tile: int, k: int, blocks):
    """The k best pairs (rank scores, u, v) of the (tile × tile) ``blocks`` (i, j) of the pair
    grid (i = −1: a padding block), merged into a running top k by a ``lax.scan``."""
    local = jnp.arange(tile, dtype=jnp.int32)
    k_block = min(k, tile * tile)

    def step(carry, ij):
        best, best_u, best_v = carry
        i, j = ij
        rows = i * tile + local
        cols = j * tile + local
        ok_pair = (rows[:, None] < cols[None, :]) & t.valid[i][:, None] & t.valid[j][None, :] & ~_excluded(ex, tile, i, j)
        ok_pair = ok_pair & (i >= 0)  # a padding block of a device's share
        s = _block_scores(spec, t, i, j)
        # Anything not above the running k-th best cannot enter the merged top k (ties go
        # to the carry, which comes first), so drop it before the block's top k: the
        # partial sort then rarely touches its heap, which is most of the block's cost.
        ok_pair = ok_pair & (s > best[-1]) & ~jnp.isnan(s)
        s = jnp.where(ok_pair, s, -jnp.inf).reshape(-1)
        vals, flat = jax.lax.top_k(s, k_block)
        u = i * tile + flat // tile
        v = j * tile + flat % tile
        merged, pos = jax.lax.top_k(jnp.concatenate([best, vals]), k)
        return (
            merged,
            jnp.concatenate([best_u, u])[pos],
            jnp.concatenate([best_v, v])[pos],
        ), None

    block_i, block_j = blocks
    init = (jnp.full(k, -jnp.inf, jnp.float32), jnp.zeros(k, jnp.int32), jnp.zeros(k, jnp.int32))
    (scores, u, v), _ = jax.lax.scan(step, init, (jnp.asarray(block_i), jnp.asarray(block_j)))
    return scores, u, v


@precision.full_precision
def rank_blocks(
    spec: PairScore, phi, beta, k, past_phi_diff=None, past_mask=None, item_valid=None, tile=DEFAULT_TILE,
    ridge=fisher.DEFAULT_RIDGE, exclude_u=None, exclude_v=None, prior_precision=likelihood.DEFAULT_PRIOR_PRECISION,
    past_weight=None, tie=None, blocks=None, row_tiles=None, reduce=None, spread=None,
) -> Ranked:
    """The body of :func:`top_k_all_pairs` (same arguments, but the strategy's
    :class:`~arm_jax.selection.scores.PairScore` ``spec`` itself) over a share of the work: the
    (tile × tile) ``blocks`` ``(i, j)`` of the pair grid to score (default: every upper block;
    −1: none) and the ``row_tiles`` of M to sum, all-reduced by ``reduce`` (default: all, no
    reduction). Returns the share's k best, :class:`Ranked`.

    The steps: centre and pad the items; M of the strategy's
    :class:`~arm_jax.selection.scores.PairScore` over all pairs, factorised into item
    coordinates (:func:`_score_features`); every block scored by the same ``rank`` the pool
    driver uses, and merged into a running top k (:func:`_scan_blocks`)."""
    spec = strategies_lib.with_tie(spec, tie)
    phi = jnp.asarray(phi, jnp.float32)
    beta = jnp.asarray(beta, jnp.float32)
    items = _pad_and_centre(phi, beta, item_valid, tile)
    feats = _score_features(
        spec, items, beta, tile, ridge, past_phi_diff, past_mask, prior_precision, past_weight, tie, row_tiles, reduce,
        spread,
    )
    ex = _exclusions(exclude_u, exclude_v)
    blocks = _upper_blocks(items.phi.shape[0] // tile) if blocks is None else blocks
    scores, u, v = _scan_blocks(spec, _tiled_items(items, feats, tile), ex, tile, k, blocks)
    shown = strategies_lib.report_scores(spec, items.reward[u] - items.reward[v], scores)
    return Ranked(scores, u, v, shown, feats.ok)


top_k_program = jax.jit(top_k_all_pairs, static_argnames=("name", "k", "tile", "ridge"))


# ----------------------------------------------------------------------------- boundary


def supported_strategy(name: StrategyLike) -> Strategy:
    """The :class:`~arm_jax.selection.registry.Strategy` that all pairs runs for ``name`` (a
    registry name, a Strategy, or a :class:`PairScore`: :func:`arm_jax.selection.registry.resolve`);
    InputError naming the supported strategies for an unknown name or one without a pair score."""
    if not isinstance(name, (Strategy, PairScore)) and name not in STRATEGIES:
        raise InputError(_unsupported_message(name, known=False))
    strategy = registry.resolve(name)
    if strategy.pair_score is None:
        raise InputError(_unsupported_message(strategy.name, known=True))
    return strategy


def _unsupported_message(name: str, known: bool) -> str:
    supported = ", ".join(registry.PAIR_SCORE_STRATEGIES)
    if known:
        return f"strategy {name!r} is not supported for all-pairs selection; supported: {supported}"
    return f"unknown strategy {name!r}; all-pairs selection supports: {supported}"


def validate_all_pairs(
    name, phi, beta, k, past_phi_diff=None, past_mask=None, item_valid=None, tile=DEFAULT_TILE, exclude=None,
    spread=None,
) -> None:
    """Host-side checks for :func:`top_k_all_pairs`; raises ValueError with a one-line message."""
    supported_strategy(name)
    fisher.check_shapes(phi, beta, past_phi_diff, past_mask, name="phi", layout="(K, H) item features")
    if past_phi_diff is None and past_mask is not None:
        raise InputError("past_mask given without past_phi_diff")
    shape = np.shape(phi)
    k_items = shape[0]
    if item_valid is not None and np.shape(item_valid) != (k_items,):
        raise InputError(f"item_valid must have shape ({k_items},) to match phi {shape}, got {np.shape(item_valid)}")
    fisher.check_finite(phi=phi, beta=beta, past_phi_diff=past_phi_diff)
    fisher.check_spread(spread, shape[1])
    if isinstance(tile, bool) or not isinstance(tile, (int, np.integer)) or tile <= 0:
        raise InputError(f"tile must be a positive integer, got {tile!r}")
    fisher.check_k(k)
    n_valid = k_items if item_valid is None else int(np.count_nonzero(np.asarray(item_valid)))
    n_pairs = n_valid * (n_valid - 1) // 2
    if k > n_pairs:
        raise InputError(f"k = {k} is larger than the {n_pairs} pairs of {n_valid} valid items")
    if exclude is not None and np.size(exclude[0]):
        eu, ev = (np.asarray(e, np.int64) for e in exclude)
        if eu.shape != ev.shape or eu.ndim != 1:
            raise InputError(f"exclude must be two (E,) arrays of item indices, got shapes {eu.shape} and {ev.shape}")
        ok = np.ones(k_items, bool) if item_valid is None else np.asarray(item_valid, bool)
        inside = (eu >= 0) & (ev >= 0) & (eu < k_items) & (ev < k_items) & (eu != ev)
        lo, hi = np.minimum(eu, ev)[inside], np.maximum(eu, ev)[inside]
        keep = ok[lo] & ok[hi]
        n_excluded = np.unique(lo[keep] * k_items + hi[keep]).size
        if k > n_pairs - n_excluded:
            raise InputError(
                f"k = {k} is larger than the {n_pairs - n_excluded} pairs of {n_valid} valid items "
                f"that are not excluded ({n_excluded} are)"
            )


def select_all_pairs(
    name: StrategyLike,
    key: jax.Array | None,
    phi,
    beta,
    k: int,
    past_phi_diff=None,
    past_mask=None,
    item_valid=None,
    tile: int = DEFAULT_TILE,
    exclude=None,
    prior_precision: float = likelihood.DEFAULT_PRIOR_PRECISION,
    past_weight=None,
    tie=None,
    spread=None,
) -> AllPairsSelection:
    """Validate on the host, then run the jit-compiled :func:`top_k_all_pairs`, whose static
    argument is the strategy object (``name``: a registry name, a
    :class:`~arm_jax.selection.registry.Strategy` or a :class:`PairScore`).

    exclude: optional ``(u, v)`` arrays of item pairs never to pick (labelled ones).
    prior_precision: λ of the head's prior (the fit's ``FitStats.prior_precision``).
    spread: the I-optimal scores' S (:func:`top_k_all_pairs`).

    Raises ValueError (one line) on a strategy all-pairs does not support (naming those it
    does), k ≤ 0, k > number of pairs, NaN/inf, or mismatched shapes.
    """
    validate_all_pairs(name, phi, beta, k, past_phi_diff, past_mask, item_valid, tile, exclude, spread)
    strategy = supported_strategy(name)
    phi = jnp.asarray(phi, jnp.float32)
    tile = fit_tile(tile, phi.shape[0])
    if past_phi_diff is not None:
        past_phi_diff = jnp.asarray(past_phi_diff, jnp.float32)
        past_mask = None if past_mask is None else jnp.asarray(past_mask, bool)
    item_valid = None if item_valid is None else jnp.asarray(item_valid, bool)
    ex_u = ex_v = None
    if exclude is not None and np.size(exclude[0]):
        ex_u, ex_v = (jnp.asarray(np.asarray(e, np.int64), jnp.int32) for e in exclude)
    chosen = top_k_program(
        strategy, key, phi, jnp.asarray(beta, jnp.float32), int(k), past_phi_diff, past_mask, item_valid, tile,
        exclude_u=ex_u, exclude_v=ex_v, prior_precision=jnp.float32(prior_precision),
        past_weight=None if past_weight is None else jnp.asarray(past_weight, jnp.float32),
        tie=None if tie is None else jnp.float32(tie), spread=None if spread is None else jnp.asarray(spread, jnp.float32),
    )
    pool.check_selection(strategy.name, chosen.scores)
    return chosen


def explicit_pairs(phi, item_valid=None):
    """The materialised pair list, for tests and small K: ``(u, v, phi_diff)``.

    u, v: (P,) int32 with u < v in row-major order over valid items; phi_diff: (P, H) = Φ_u − Φ_v.
    Memory O(K²·H): do not use for large K — that is what :func:`top_k_all_pairs` avoids.
    """
    k_items = np.shape(phi)[0]
    u, v = np.triu_indices(k_items, 1)
    if item_valid is not None:
        ok = np.asarray(item_valid, bool)
        keep = ok[u] & ok[v]
        u, v = u[keep], v[keep]
    phi = jnp.asarray(phi, jnp.float32)
    return jnp.asarray(u, jnp.int32), jnp.asarray(v, jnp.int32), phi[u] - phi[v]
