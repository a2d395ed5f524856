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
``jax.distributed.initialize()`` on several (:mod:`arm_jax.runtime.distributed`; inputs are then placed
with ``jax.make_array_from_callback``, and :func:`to_host` gathers results to every process).
A pool too large for one host is given as :class:`Rows`: a function that builds any block of
candidate rows, called by each process for its own devices' rows only (:func:`process_rows`).
On a CPU, ``XLA_FLAGS=--xla_force_host_platform_device_count=4`` gives four devices to test with.
"""
from __future__ import annotations

import functools
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from arm_jax.errors import InputError

SEED_AXIS = "seeds"
POOL_AXIS = "pool"


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
