"""Several processes, one computation: JAX's multi-controller runtime for ``run``, ``select``,
``score`` and ``train``.

Launch the same command once per host (or per accelerator group). :func:`initialize` calls
``jax.distributed.initialize`` before anything touches a device; from then on
``jax.devices()`` lists every process's devices, and arm-jax's meshes span them
(:mod:`arm_jax.runtime.mesh`):

- ``run``: the seeds are split over every device of every process; each process runs its own
  seeds, and the per-seed results are gathered once at the end.
- ``select``: the candidate rows are split over every device; each process reads, embeds and
  scores only its rows, the (H × H) information matrix is all-reduced, and the exact top k
  is taken over every process's local top k (:func:`arm_jax.selection.sharded.sharded_select`).
- ``score``: each process scores one contiguous block of the pool's items.
- Loading a pool: each process checks only its block of rows for NaN/inf; the counts are
  gathered, so every process raises the same error.

Training on the labels is replicated: every process fits the same model from the same seed
(the labels are small; the pool is not). Only process 0 (:func:`is_writer`) writes output
files and prints progress. Nothing is written before the last collective step, so a process
that dies leaves no output on any: the others fail in their next collective (or when the
coordinator misses its heartbeat) and exit with an error.

Where to find the coordinator, how many processes and which one this is: explicit flags
(``--coordinator HOST:PORT --num-processes N --process-id I``) or ``--distributed``, which lets
JAX read them from the cluster (SLURM's ``SLURM_*`` variables under ``srun``, Open MPI's
``OMPI_*`` under ``mpirun``, a Cloud TPU pod slice's metadata, Kubernetes;
``JAX_COORDINATOR_ADDRESS`` overrides the address). On CPUs the collectives use gloo.
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable

import numpy as np

from arm_jax.errors import InputError

#: JAX's own defaults (``jax.distributed.initialize``): how long to wait for every process to
#: connect, and for a silent process before the others give up.
DEFAULT_TIMEOUT_S = 300


def add_flags(parser: argparse.ArgumentParser) -> None:
    """The flags of a command that can run as several processes."""
    g = parser.add_argument_group(
        "several processes (jax.distributed)",
        "Run the same command once per host: the work is split over every process's devices and "
        "only process 0 writes. See the README's 'Past one machine'.",
    )
    g.add_argument("--distributed", action="store_true",
                   help="join a multi-process run set up by the cluster: JAX reads the coordinator, the "
                        "process count and this process's id from SLURM (srun), Open MPI (mpirun), a "
                        "Cloud TPU pod slice or Kubernetes")
    g.add_argument("--coordinator", metavar="HOST:PORT",
                   help="process 0's address and a free port; with --num-processes and --process-id")
    g.add_argument("--num-processes", type=int, metavar="N", help="how many processes take part")
    g.add_argument("--process-id", type=int, metavar="I", help="this process's id, 0 .. N-1")
    g.add_argument("--process-timeout", type=int, default=None, metavar="S",
                   help=f"seconds to wait for every process to connect, and for a silent process before "
                        f"the others stop with an error (default: {DEFAULT_TIMEOUT_S} to connect, 100 silent)")


def requested(args) -> bool:
    """Whether the parsed flags ask for a multi-process run (any of its flags given)."""
    return bool(getattr(args, "distributed", False)) or any(
        getattr(args, name, None) is not None for name in ("coordinator", "num_processes", "process_id", "process_timeout")
    )


def check_flags(args) -> None:
    """One-line errors for incomplete or contradictory flags (before anything starts)."""
    explicit = (args.coordinator, args.num_processes, args.process_id)
    if args.process_timeout is not None and args.process_timeout < 1:
        raise InputError(f"--process-timeout must be >= 1 second, got {args.process_timeout}")
    if args.distributed:
        if any(v is not None for v in explicit):
            raise InputError("--distributed reads the coordinator, process count and id from the cluster: "
                             "give either --distributed or --coordinator, --num-processes and --process-id")
        return
    if args.num_processes is not None and args.num_processes < 1:
        raise InputError(f"--num-processes must be >= 1, got {args.num_processes}")
    if args.process_id is not None and args.num_processes is not None and not 0 <= args.process_id < args.num_processes:
        raise InputError(f"--process-id must be in 0 .. {args.num_processes - 1}, got {args.process_id}")
    if None in explicit:
        missing = [f for f, v in zip(("--coordinator", "--num-processes", "--process-id"), explicit) if v is None]
        raise InputError(
            f"several processes need --coordinator, --num-processes and --process-id (missing: {', '.join(missing)}), "
            "or --distributed to read them from the cluster"
        )
    if ":" not in args.coordinator or not args.coordinator.rsplit(":", 1)[1].isdigit():
        raise InputError(f"--coordinator must be HOST:PORT, got {args.coordinator!r}")


def initialize(args) -> None:
    """``jax.distributed.initialize`` from the parsed flags (see :func:`add_flags`); gloo
    collectives for CPU devices. Must run before anything uses a JAX device."""
    import jax

    check_flags(args)
    wait_s = args.process_timeout or DEFAULT_TIMEOUT_S
    # JAX aborts the whole process (a C++ stack trace, exit 134) when the others do not connect
    # in time; give it longer than our own watchdog, which reports it in one line instead.
    timeouts = dict(initialization_timeout=wait_s + _NATIVE_GRACE_S)
    if args.process_timeout is not None:
        timeouts["heartbeat_timeout_seconds"] = args.process_timeout
    if not args.distributed and args.num_processes > 1:
        print(f"arm-jax: process {args.process_id}: waiting for the other {args.num_processes - 1} of "
              f"{args.num_processes} processes at {args.coordinator} (up to {wait_s} s)", file=sys.stderr, flush=True)
    joined = _watchdog(wait_s, _missing_message(args, wait_s))
    try:
        jax.distributed.initialize(
            coordinator_address=args.coordinator, num_processes=args.num_processes, process_id=args.process_id,
            **timeouts,
        )
    except (ValueError, RuntimeError, TypeError) as err:
        from arm_jax.runtime.files import one_line

        where = ("--distributed: JAX could not read the run from the cluster (it reads SLURM under srun, Open MPI "
                 "under mpirun, a Cloud TPU pod slice, Kubernetes); elsewhere give --coordinator, --num-processes "
                 "and --process-id" if args.distributed else "could not join the other processes")
        raise InputError(f"{where} ({one_line(err)})") from None
    finally:
        joined.set()
    # read when the CPU backend starts, after this: collectives between processes' CPU devices
    jax.config.update("jax_cpu_collectives_implementation", "gloo")


_NATIVE_GRACE_S = 30


def _missing_message(args, wait_s: int) -> str:
    """What the watchdog says when the processes did not all connect in ``wait_s`` seconds."""
    if args.distributed:
        return f"--distributed: not every process of the run connected within {wait_s} s"
    others = [i for i in range(args.num_processes) if i != args.process_id]
    ids = ", ".join(map(str, others[:8])) + (" ..." if len(others) > 8 else "")
    who = ("process(es) " + ids + " did not connect" if args.process_id == 0
           else "the coordinator (process 0) or another of processes " + ids + " did not answer")
    return (f"process {args.process_id}: {who} within {wait_s} s at {args.coordinator}; start every process "
            f"with the same --coordinator and --num-processes and its own --process-id (or raise --process-timeout)")


def _watchdog(wait_s: float, message: str):
    """A daemon thread that, unless the returned event is set within ``wait_s`` seconds, prints
    ``message`` as a one-line error and ends the process with exit status 2 (``os._exit``: the
    main thread is blocked in JAX's native connect, which cannot be interrupted)."""
    import os
    import threading

    done = threading.Event()

    def watch():
        if not done.wait(wait_s):
            print(f"arm-jax: error: {message}", file=sys.stderr, flush=True)
            os._exit(2)

    threading.Thread(target=watch, name="arm-jax-join-watchdog", daemon=True).start()
    return done


def _joined() -> bool:
    """Whether ``jax.distributed.initialize`` has run in this process (without starting JAX)."""
    jax = sys.modules.get("jax")
    return jax is not None and jax.distributed.is_initialized()


def process_count() -> int:
    """How many processes take part: 1 unless ``jax.distributed`` was initialised (this never
    starts a JAX backend by itself)."""
    if not _joined():
        return 1
    import jax

    return jax.process_count()


def process_index() -> int:
    if not _joined():
        return 0
    import jax

    return jax.process_index()


def is_writer() -> bool:
    """Whether this process writes output files and prints progress (process 0)."""
    return process_index() == 0


def block(n: int, index: int | None = None, count: int | None = None) -> tuple[int, int]:
    """``(start, stop)``: process ``index``'s contiguous block of ``n`` rows (default: this
    process's); the blocks of all processes tile ``range(n)`` in process order."""
    index = process_index() if index is None else index
    count = process_count() if count is None else count
    size = -(-n // count)
    return min(index * size, n), min((index + 1) * size, n)


def gather(values) -> np.ndarray:
    """``(P, ...)``: every process's ``values`` (the same shape and dtype on each), stacked in
    process order; ``values[None]`` on one process."""
    values = np.asarray(values)
    if process_count() == 1:
        return values[None]
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(values, tiled=False))


def gather_blocks(local: np.ndarray, n: int) -> np.ndarray:
    """The rows of ``range(n)`` from every process's :func:`block` of them, in order."""
    if process_count() == 1:
        return local
    size = -(-n // process_count())
    pad = np.zeros((size - local.shape[0],) + local.shape[1:], local.dtype)
    stacked = gather(np.concatenate([local, pad]))
    return stacked.reshape((-1,) + local.shape[1:])[:n]


def _encode(message: str, size: int = 1024) -> np.ndarray:
    raw = message.encode("utf-8", errors="replace")[:size]
    out = np.zeros(size, np.uint8)
    out[: len(raw)] = np.frombuffer(raw, np.uint8)
    return out


def check_together(check: Callable[[], None]) -> None:
    """Run a check that may raise :class:`~arm_jax.errors.InputError` on some processes only (a
    process's own block of rows, process 0's output path): every process raises the error of
    the first process that has one, so none waits for the others in a later collective."""
    try:
        check()
        message = ""
    except InputError as err:
        if process_count() == 1:
            raise
        message = str(err) or "input error"
    if process_count() == 1:
        return
    for row in gather(_encode(message)):
        if row.any():
            raise InputError(bytes(row).rstrip(b"\0").decode("utf-8", errors="replace"))


def on_writer(check: Callable[[], None]) -> None:
    """Run an output check on process 0 only (the file system the output goes to, which the
    others may not see); every process raises its error (:func:`check_together`)."""
    check_together(check if is_writer() else (lambda: None))


def barrier(name: str) -> None:
    """Wait until every process gets here (before process 0 writes: if another process died,
    this fails instead of writing results the run did not finish)."""
    if process_count() == 1:
        return
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices(f"arm-jax: {name}")


def from_process_0(tree):
    """Process 0's values of a pytree of host arrays, on every process, bit for bit (sent as
    bytes). For what every process computes alike but may not compute identically (training
    on a GPU is not bitwise deterministic): they all go on with process 0's copy."""
    if process_count() == 1:
        return tree
    import jax
    from jax.experimental import multihost_utils

    leaves, treedef = jax.tree_util.tree_flatten(tree)
    host = [np.asarray(leaf) for leaf in leaves]
    sent = multihost_utils.broadcast_one_to_all([np.ascontiguousarray(h).reshape(-1).view(np.uint8) for h in host])
    return jax.tree_util.tree_unflatten(
        treedef, [np.asarray(b, np.uint8).view(h.dtype).reshape(h.shape) for b, h in zip(sent, host)]
    )
