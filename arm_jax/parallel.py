"""Data parallelism over devices with ``jax.sharding``: seeds, and candidate pools.

Two kinds of work split cleanly over devices:

- **Seeds.** An experiment is a pure function of a PRNG key, so S seeds are
  ``jax.vmap(run)(keys)``. :func:`shard_seeds` runs exactly that with the seed axis laid
  out over a 1-D :class:`~jax.sharding.Mesh` (``NamedSharding(mesh, P("seeds"))``): each
  device runs S / n_devices seeds, no communication. S is padded up to a multiple of the
  device count (with copies of the last key) and the padding is stripped from the result.
- **Candidate pools.** D-optimal scores need M = I_past + Σ_i v_i x_i x_iᵀ + εI, a sum over
  all candidates. :func:`sharded_dopt_scores` splits the candidate axis over devices
  (``shard_map``): each device forms its partial (H × H) sum, one ``psum`` all-reduces it,
  and each device scores its own candidates. :func:`sharded_select` adds a two-stage top k
  (local top k, ``all_gather`` of n_devices·k candidates, global top k).

Both give the numbers one device gives (up to float32 summation order). ``devices`` defaults
to ``jax.devices()``: the local accelerators on one host, every process's devices after
``jax.distributed.initialize()`` on several (:mod:`arm_jax.distributed`; inputs are then placed
with ``jax.make_array_from_callback``, and :func:`to_host` gathers results to every process).
A pool too large for one host is given as :class:`Rows`: a function that builds any block of
candidate rows, called by each process for its own devices' rows only (:func:`process_rows`).
On a CPU, ``XLA_FLAGS=--xla_force_host_platform_device_count=4`` gives four devices to test with.
"""
from __future__ import annotations

import functools
from typing import NamedTuple, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from arm_jax import fisher, posterior, strategies
from arm_jax.strategies import Selection
from arm_jax.errors import InputError

SEED_AXIS = "seeds"
POOL_AXIS = "pool"
#: Pair-score strategies (:class:`arm_jax.strategies.PairScore`): the registry's scores,
#: with M all-reduced over devices.
SHARDED_STRATEGIES = strategies.PAIR_SCORE_STRATEGIES


# ----------------------------------------------------------------------------- meshes


def make_mesh(axis_name: str, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh named ``axis_name`` over ``devices`` (default: ``jax.devices()``)."""
    devices = jax.devices() if devices is None else list(devices)
    if not devices:
        raise InputError("no devices to build a mesh on")
    return Mesh(np.asarray(devices), (axis_name,))


def _put(x, sharding: NamedSharding):
    """Place a host (or single-device) array on ``sharding``; multi-process safe."""
    if jax.process_count() == 1:
        return jax.device_put(x, sharding)
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


class Rows(NamedTuple):
    """(n, h) float32 candidate rows given by a function instead of an array: ``rows(start,
    stop)`` returns rows ``start .. stop-1`` (a host array). Each process calls it only for the
    rows of its own devices (:func:`process_rows`), so no process holds the whole pool. The
    caller checks that the rows are finite (as :func:`sharded_select` does for an array)."""

    n: int
    h: int
    rows: Callable[[int, int], np.ndarray]

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n, self.h)


def process_rows(n_rows: int, devices: Sequence[jax.Device] | None = None) -> tuple[int, int]:
    """``(start, stop)``: the rows of an (n_rows, ...) candidate axis that this process's devices
    hold in the pool mesh (the axis padded to a multiple of the device count, then split
    evenly; every process's devices are contiguous in ``jax.devices()`` order)."""
    mesh = make_mesh(POOL_AXIS, devices)
    flat = list(mesh.devices.flat)
    n_local = -(-n_rows // len(flat))
    mine = [i for i, d in enumerate(flat) if d.process_index == jax.process_index()]
    if not mine:
        return 0, 0
    if mine != list(range(mine[0], mine[-1] + 1)):
        raise InputError(f"process {jax.process_index()}'s devices are not contiguous in the mesh: {mine}")
    return min(mine[0] * n_local, n_rows), min((mine[-1] + 1) * n_local, n_rows)


def _put_rows(source: Rows, padded: int, sharding: NamedSharding):
    """The rows of ``source`` zero-padded to ``padded``, laid out on ``sharding``: each device's
    block built by ``source.rows`` on the process that owns the device."""

    def block(index):
        start, stop = index[0].indices(padded)[:2]
        out = np.zeros((stop - start, source.h), np.float32)
        end = min(stop, source.n)
        if end > start:
            out[: end - start] = source.rows(start, end)
        return out

    return jax.make_array_from_callback((padded, source.h), sharding, block)


def replicated_value(x) -> np.ndarray:
    """A fully replicated (possibly multi-process) array as NumPy, from this process's copy."""
    return np.asarray(x.addressable_data(0))


def _round_up(n: int, multiple: int) -> int:
    """The smallest multiple of ``multiple`` that is >= n."""
    return -(-n // multiple) * multiple


def _pad_rows(x, n_rows: int, fill=0):
    pad = n_rows - x.shape[0]
    if pad == 0:
        return x
    widths = [(0, pad)] + [(0, 0)] * (x.ndim - 1)
    return jnp.pad(x, widths, constant_values=fill)


def to_host(tree):
    """Fetch a pytree of (possibly sharded, possibly multi-process) arrays as NumPy arrays."""
    if jax.process_count() == 1:
        return jax.tree_util.tree_map(np.asarray, tree)
    from jax.experimental import multihost_utils

    return multihost_utils.process_allgather(tree, tiled=True)


# ----------------------------------------------------------------------------- seeds


@functools.lru_cache(maxsize=64)
def _seed_program(fn: Callable, devices: tuple, n_args: int, key_impl):
    mesh = make_mesh(SEED_AXIS, devices)
    by_seed = NamedSharding(mesh, P(SEED_AXIS))
    replicated = NamedSharding(mesh, P())

    def one(key_data, *args):
        key = key_data if key_impl is None else jax.random.wrap_key_data(key_data, impl=key_impl)
        return fn(key, *args)

    program = jax.jit(
        jax.vmap(one, in_axes=(0,) + (None,) * n_args),
        in_shardings=(by_seed,) + (replicated,) * n_args,
        out_shardings=by_seed,
    )
    return program, by_seed, replicated


class SeedSharded:
    """``jax.vmap(fn)`` over a batch of keys, the batch split over ``devices``.

    Call it as ``run(keys, *args)``; ``run.compile(keys, *args)`` compiles ahead of time
    (for timing compilation apart) and returns a callable with the same signature.
    """

    def __init__(self, fn: Callable, devices: Sequence[jax.Device] | None = None):
        self.fn = fn
        self.devices = tuple(jax.devices() if devices is None else devices)

    def _prepare(self, keys, args):
        typed = jax.dtypes.issubdtype(keys.dtype, jax.dtypes.prng_key)
        impl = jax.random.key_impl(keys) if typed else None
        key_data = jax.random.key_data(keys) if typed else jnp.asarray(keys)
        if key_data.ndim < 1 or key_data.shape[0] == 0:
            raise InputError(f"keys must be a non-empty (S, ...) batch of PRNG keys, got shape {keys.shape}")
        n_seeds = key_data.shape[0]
        n_dev = len(self.devices)
        padded = _round_up(n_seeds, n_dev)
        # pad with copies of the last key: the extra seeds are computed, then dropped
        key_data = jnp.concatenate([key_data, jnp.repeat(key_data[-1:], padded - n_seeds, axis=0)])
        program, by_seed, replicated = _seed_program(self.fn, self.devices, len(args), impl)
        inputs = (_put(key_data, by_seed),) + tuple(_put_tree(a, replicated) for a in args)
        return program, inputs, n_seeds, padded

    @staticmethod
    def _unpad(out, n_seeds, padded):
        if padded == n_seeds:
            return out
        return jax.tree_util.tree_map(lambda leaf: leaf[:n_seeds], out)

    def __call__(self, keys, *args):
        program, inputs, n_seeds, padded = self._prepare(keys, args)
        return self._unpad(program(*inputs), n_seeds, padded)

    def lower(self, keys, *args) -> "_LoweredSeeds":
        """Trace and lower now; ``.compile()`` later (it may run in another thread)."""
        program, inputs, _, _ = self._prepare(keys, args)
        return _LoweredSeeds(self, program.lower(*inputs))

    def compile(self, keys, *args) -> Callable:
        return self.lower(keys, *args).compile()


class _LoweredSeeds(NamedTuple):
    sharded: SeedSharded
    lowered: object

    def compile(self) -> Callable:
        """A compiled ``run(keys, *args)`` (same padding and unpadding as the SeedSharded)."""
        compiled = self.lowered.compile()
        sharded = self.sharded

        def run(keys, *args):
            _, inputs, n_seeds, padded = sharded._prepare(keys, args)
            return sharded._unpad(compiled(*inputs), n_seeds, padded)

        return run


def sharded_vmap(fn: Callable, devices: Sequence[jax.Device] | None = None) -> SeedSharded:
    """``jax.vmap(fn)`` over a batch of keys, the batch split over ``devices``.

    fn: ``fn(key, *args) -> pytree``, a pure function of one PRNG key (and of ``args``,
    which every seed shares and every device gets a replica of; put static settings such
    as configs in a closure or ``functools.partial`` made once, so the compiled program is
    reused).
    Returns ``run(keys, *args)`` → the pytree of ``jax.vmap(fn)(keys, *args)``, every leaf
    with a leading (S,) axis sharded over the devices. Compiled once per (fn, devices, S).
    """
    return SeedSharded(fn, devices)


def _put_tree(tree, sharding):
    return jax.tree_util.tree_map(lambda leaf: _put(leaf, sharding), tree)


def shard_seeds(fn: Callable, keys: jax.Array, *args, devices: Sequence[jax.Device] | None = None):
    """Run ``jax.vmap(fn)(keys, *args)`` with the (S,) seed axis split over all devices.

    keys: (S,) typed keys (``jax.random.key``) or (S, 2) raw ``PRNGKey`` data.
    Same numbers as one device (each seed is independent); S need not divide the device
    count. Example: ``shard_seeds(lambda k, x, b: train.fit(k, x, b, cfg, tcfg), keys, items, buf)``.
    """
    return sharded_vmap(fn, devices)(keys, *args)


# ----------------------------------------------------------------------------- pools


def _pool_setup(
    phi_diff, beta, valid, past_phi_diff, past_mask, devices, prior_precision=posterior.DEFAULT_PRIOR_PRECISION,
    past_weight=None, tie=None,
):
    """(mesh, n, x, valid, beta, I_past, (λ, ν)) placed on the devices: the rows split, the
    rest replicated. ν is None for Bradley–Terry labels. ``phi_diff``: an (N, H) array or
    :class:`Rows`."""
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
    prior = _put_tree((jnp.float32(prior_precision), None if tie is None else jnp.float32(tie)), replicated)
    return mesh, n, x, valid, _put(beta, replicated), _put(past, replicated), prior


@fisher.full_precision
def _local_scores(name, x, valid, beta, past, prior, ridge):
    """(rank scores, gaps) of this device's candidates: the registry's pair score, with the
    pool's parts of M and S all-reduced over the pool axis. ``prior``: (λ, ν or None)."""
    prior, tie = prior
    spec = strategies.with_tie(strategies.STRATEGIES[name].pair_score, tie)
    gap = x @ beta
    psum = lambda a: jax.lax.psum(a, POOL_AXIS)
    return strategies.explicit_pair_scores(spec, x, gap, valid, past, prior, ridge, reduce=psum), gap


@functools.partial(jax.jit, static_argnames=("name", "mesh", "ridge"))
def _sharded_scores(name, mesh, x, valid, beta, past, prior, ridge):
    body = lambda *args: _local_scores(name, *args, ridge=ridge)[0]
    return jax.shard_map(
        body, mesh=mesh, in_specs=(P(POOL_AXIS), P(POOL_AXIS), P(), P(), P()), out_specs=P(POOL_AXIS)
    )(x, valid, beta, past, prior)


@functools.partial(jax.jit, static_argnames=("name", "mesh", "k", "ridge"))
def _sharded_top_k(name, mesh, x, valid, beta, past, prior, k, ridge):
    n_local = x.shape[0] // mesh.devices.size
    k_local = min(k, n_local)
    spec = strategies.STRATEGIES[name].pair_score

    def body(x, valid, beta, past, prior):
        scores, gap = _local_scores(name, x, valid, beta, past, prior, ridge)
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
    """:func:`arm_jax.fisher.dopt_scores` with the candidate axis split over devices.

    phi_diff: (N, H); beta: (H,); past_phi_diff / past_mask: optional (M, H) / (M,) labelled
    pairs (I_past is added, as in ``pa_dopt``); valid: optional (N,) bool, invalid candidates
    take no part in M and score 0; weighted=False gives the ``xtx`` scores (v ≡ 1).
    Returns (N,) float32 scores, sharded over ``devices``; equal to the one-device result.
    """
    fisher.check_shapes(phi_diff, beta, past_phi_diff, past_mask)
    mesh, n, x, valid_s, beta_s, past, prior = _pool_setup(phi_diff, beta, valid, past_phi_diff, past_mask, devices)
    name = ("pa_dopt" if past_phi_diff is not None else "dopt") if weighted else "xtx"
    scores = _sharded_scores(name, mesh, x, valid_s, beta_s, past, prior, float(ridge))
    return scores if scores.shape[0] == n else scores[:n]  # padded rows: strip


def sharded_select(
    name: str,
    key: jax.Array | None,
    phi_diff,
    beta,
    k: int,
    valid=None,
    past_phi_diff=None,
    past_mask=None,
    devices: Sequence[jax.Device] | None = None,
    ridge: float = fisher.DEFAULT_RIDGE,
    prior_precision: float = posterior.DEFAULT_PRIOR_PRECISION,
    past_weight=None,
    tie=None,
) -> Selection:
    """:func:`arm_jax.strategies.select` for the pair-score strategies (:data:`SHARDED_STRATEGIES`)
    with the candidate axis split over devices: the same k picks (best first) and scores,
    from the same score functions (the registry's :class:`~arm_jax.strategies.PairScore`).

    Validates on the host (one-line ValueError), then runs one jit-compiled ``shard_map``:
    per-device scores (M all-reduced), per-device top k, ``all_gather``, global top k.
    ``phi_diff``: an (N, H) array, or :class:`Rows` (each process builds only its own rows; on
    several processes every input but the rows is the same on each). Returns host arrays
    (the same on every process).
    """
    if name not in SHARDED_STRATEGIES:
        strategies.get_strategy(name)  # unknown names: the registry's message
        raise InputError(
            f"strategy {name!r} is not supported for sharded selection; supported: {', '.join(SHARDED_STRATEGIES)}"
        )
    del key
    strategies.validate_selection(phi_diff, beta, k, valid, past_phi_diff, past_mask)
    mesh, n, x, valid_s, beta_s, past, prior = _pool_setup(
        phi_diff, beta, valid, past_phi_diff, past_mask, devices, prior_precision, past_weight, tie
    )
    chosen = _sharded_top_k(name, mesh, x, valid_s, beta_s, past, prior, int(k), float(ridge))
    chosen = Selection(replicated_value(chosen.indices), replicated_value(chosen.scores))
    strategies.check_selection(name, chosen.scores)
    return chosen


# ----------------------------------------------------------------------------- all pairs


@functools.partial(jax.jit, static_argnames=("name", "mesh", "k", "tile", "ridge"))
def _sharded_all_pairs(name, mesh, k, tile, ridge, block_i, block_j, row_tiles, shared):
    from arm_jax import allpairs

    def body(block_i, block_j, row_tiles, shared):
        best = allpairs.rank_blocks(
            name, k=k, tile=tile, ridge=ridge, blocks=(block_i, block_j), row_tiles=row_tiles,
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
    name: str,
    key: jax.Array | None,
    phi,
    beta,
    k: int,
    past_phi_diff=None,
    past_mask=None,
    item_valid=None,
    tile: int | None = None,
    exclude=None,
    prior_precision: float = posterior.DEFAULT_PRIOR_PRECISION,
    past_weight=None,
    tie=None,
    devices: Sequence[jax.Device] | None = None,
    ridge: float = fisher.DEFAULT_RIDGE,
):
    """:func:`arm_jax.allpairs.select_all_pairs` with the work split over devices: each device
    scores its share of the (tile × tile) blocks of the pair grid and sums its share of the
    row tiles of M (one ``psum``), then a local top k, ``all_gather`` and global top k. The
    item features are replicated (K × H on every device). The same picks as one device;
    returns host arrays, the same on every process."""
    from arm_jax import allpairs

    del key
    tile = allpairs.DEFAULT_TILE if tile is None else tile
    allpairs.validate_all_pairs(name, phi, beta, k, past_phi_diff, past_mask, item_valid, tile, exclude)
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
        past_weight=f32(past_weight), tie=None if tie is None else np.float32(tie),
    )
    by_block = NamedSharding(mesh, P(POOL_AXIS))
    u, v, scores = _sharded_all_pairs(
        name, mesh, int(k), int(tile), float(ridge), _put(block_i, by_block), _put(block_j, by_block),
        _put(row_tiles, by_block), _put_tree(shared, NamedSharding(mesh, P())),
    )
    chosen = allpairs.AllPairsSelection(replicated_value(u), replicated_value(v), replicated_value(scores))
    strategies.check_selection(name, chosen.scores)
    return chosen
