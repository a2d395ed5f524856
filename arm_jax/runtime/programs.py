"""Traced programs on disk, so a later ``arm-jax`` process skips tracing them.

JAX's persistent compilation cache (:mod:`arm_jax.runtime.compile_cache`) saves XLA's
compile, but JAX must still trace a program from its Python function and lower it before it
can look it up there: for a small ``select`` that was most of the time. Here a program is
kept as ``jax.export`` gives it (the lowered StableHLO module with its argument and result
types), under a key computed without tracing; a later process with the same key loads it and
calls it (``Exported.call``), and XLA's compile of it is still found in the compilation cache.
Measured on a 5 000 × 384 pool with 1 000 labels: the timed part of ``select`` went from
1.85 s to 1.35 s (benchmarks/RESULTS.md).

The key is the SHA-256 of everything a program depends on:

- the program's name and its static arguments (``repr``; a caller passes only static values
  whose ``repr`` says all of them, e.g. the configuration dataclasses and a built-in
  strategy's name, never a user's function);
- the structure of the arguments and each leaf's type (shape, dtype, weak type) and sharding;
- the source of every module of ``arm_jax`` (so an edit or an upgrade changes every key);
- JAX's, jaxlib's and NumPy's versions, every ``jax.config`` value, ``XLA_FLAGS``, the platform and
  its devices, and Python's version.

A key that is not there, or a file that cannot be read, traces the program as usual (and
writes it, atomically); a store that cannot be written is skipped. The files are pickles, as
trusted as JAX's own cache in the same directory. It is used only by the command line
(``enable``, beside the compile cache) and only on one device of one process; everywhere
else :func:`call` is the jitted function's own call.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import pickle
import sys
from pathlib import Path
from typing import Any, Callable

#: the directory, or None (the default: every call is a plain jitted call)
_DIR: Path | None = None
#: programs loaded or traced in this process, by key
_LOADED: dict[str, Any] = {}
_FINGERPRINT: list[str] = []

FORMAT = "arm-jax-exported-1"


def enable(directory: str | os.PathLike | None) -> None:
    """Keep programs in ``directory`` from now on (None: off)."""
    global _DIR
    _DIR = None if directory is None else Path(directory)
    _LOADED.clear()


def _source_fingerprint() -> str:
    """SHA-256 of every ``.py`` file of the ``arm_jax`` package (path and bytes), once per process."""
    if not _FINGERPRINT:
        root = Path(__file__).resolve().parents[1]
        digest = hashlib.sha256()
        for path in sorted(root.rglob("*.py")):
            digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
        _FINGERPRINT.append(digest.hexdigest())
    return _FINGERPRINT[0]


def _leaf_type(x) -> str:
    import jax

    return f"{jax.typeof(x)}|{getattr(x, 'sharding', None)}"


def program_key(name: str, args: tuple, static: str) -> str:
    """The key of program ``name`` called on ``args`` with static arguments described by ``static``
    (see the module's docstring)."""
    import jax
    import jaxlib
    import numpy

    leaves, tree = jax.tree_util.tree_flatten(args)
    parts = [
        FORMAT, name, static, str(tree), *map(_leaf_type, leaves),
        _source_fingerprint(), jax.__version__, jaxlib.__version__, numpy.__version__,
        repr(sorted(jax.config.values.items())),
        os.environ.get("XLA_FLAGS", ""), jax.default_backend(), repr([d.device_kind for d in jax.devices()]),
        sys.version,
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _usable() -> bool:
    if _DIR is None:
        return False
    import jax

    return jax.process_count() == 1 and jax.device_count() == 1


def _load(path: Path):
    """``(exported, out_tree)`` stored at ``path``, or None when it is missing or unreadable."""
    try:
        with open(path, "rb") as f:
            fmt, exported, out_tree = pickle.load(f)
        return (exported, out_tree) if fmt == FORMAT else None
    except Exception:  # missing, truncated, from another version: trace it instead
        return None


def _export(jitted, args, kwargs, static):
    """``(exported, out_tree)``: the program on the flat list of its array arguments."""
    import jax
    from jax import export

    leaves, in_tree = jax.tree_util.tree_flatten((args, kwargs))
    out_tree = []

    def flat(*leaves):
        a, kw = jax.tree_util.tree_unflatten(in_tree, leaves)
        out, tree = jax.tree_util.tree_flatten(jitted(*a, **kw, **static))
        out_tree.append(tree)
        return out

    exported = export.export(jax.jit(flat))(*leaves)
    return exported, out_tree[0]


def _store(path: Path, exported, out_tree) -> None:
    from arm_jax.runtime.files import write_bytes

    # pickled whole (jax.export's own format needs the flatbuffers package), without its
    # derivative (a local function; these programs are never differentiated)
    with contextlib.suppress(Exception):  # a full disk, a read-only cache: no store
        write_bytes(path, pickle.dumps((FORMAT, dataclasses.replace(exported, _get_vjp=None), out_tree)))


def call(jitted: Callable, name: str, args: tuple = (), kwargs: dict | None = None, static: dict | None = None,
         static_key: str | None = None):
    """``jitted(*args, **kwargs, **static)``, by a stored program when :func:`enable` was called.

    ``name`` names the program (with its module, and any configuration the function closes
    over); ``kwargs`` are arrays by name, ``static`` the jitted function's static arguments.
    The key holds their ``repr``, or ``static_key`` instead when given (for static objects
    whose ``repr`` is not all of them, e.g. a built-in strategy: its name)."""
    import jax

    kwargs, static = dict(kwargs or {}), dict(static or {})
    if not _usable():
        return jitted(*args, **kwargs, **static)
    described = repr(sorted(static.items())) if static_key is None else static_key
    key = program_key(name, (args, kwargs), described)
    program = _LOADED.get(key)
    if program is None:
        path = _DIR / f"{key}.pickle"
        program = _load(path)
        if program is None:
            program = _export(jitted, args, kwargs, static)
            _store(path, *program)
        exported, out_tree = program
        program = _LOADED[key] = jax.jit(exported.call), out_tree  # jitted: later calls skip the wrapper's tracing
    run, out_tree = program
    return jax.tree_util.tree_unflatten(out_tree, run(*jax.tree_util.tree_leaves((args, kwargs))))
