"""JAX's persistent compilation cache for the ``arm-jax`` command line.

Every ``arm-jax`` call is a fresh process, and most of a small ``select`` or ``train`` is
spent compiling the same programs again. :func:`enable` points JAX's persistent compilation
cache (``jax_compilation_cache_dir``) at a per-user directory, so a later call with the same
shapes and settings loads the compiled programs from disk instead:

- ``$XDG_CACHE_HOME/arm-jax/jax``, or ``~/.cache/arm-jax/jax`` when ``XDG_CACHE_HOME`` is unset
  or not an absolute path (the XDG rule);
- every program is written, however fast it compiled (:data:`MIN_COMPILE_TIME_SECS`; JAX's
  own default, 1 s, skips all but one of a small ``select``'s programs: measured on a
  1 000-item pool, a repeated ``select`` took 3.8 s with it, 3.1 s with 0 and 8.6 s without
  the cache).

It is off when ``ARM_JAX_NO_COMPILE_CACHE`` is set to anything but ``""``/``0``/``false``/``no``,
or with the ``--no-compile-cache`` flag. A cache directory chosen by the user
(``JAX_COMPILATION_CACHE_DIR``, or ``jax.config`` in Python) is left as it is. When the
directory cannot be created or written, the command runs without the cache and says so in
one line. The cache never changes a result, only the time to the first one; it grows with
each new program shape (about 0.4 MB for a small ``select``) and may be deleted at any time.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable, Mapping

#: The environment variable that turns the cache off.
ENV_OPT_OUT = "ARM_JAX_NO_COMPILE_CACHE"
#: Programs that compiled faster than this are not written to the cache (0: all are).
MIN_COMPILE_TIME_SECS = 0.0

_OFF_VALUES = ("", "0", "false", "no", "off")


def default_cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``$XDG_CACHE_HOME/arm-jax/jax``, else ``~/.cache/arm-jax/jax``."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):
        home = env.get("HOME") or os.path.expanduser("~")
        base = os.path.join(home, ".cache")
    return Path(base) / "arm-jax" / "jax"


def programs_dir(cache: str | None, environ: Mapping[str, str] | None = None) -> Path | None:
    """Where :mod:`arm_jax.runtime.programs` keeps traced programs: ``programs`` beside
    the default cache directory, when ``cache`` (what :func:`enable` returned) is that
    directory; None otherwise (the cache off, or a directory the user gave JAX)."""
    default = default_cache_dir(environ)
    return default.parent / "programs" if cache is not None and Path(cache) == default else None


def opted_out(environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``ARM_JAX_NO_COMPILE_CACHE`` asks for no cache."""
    env = os.environ if environ is None else environ
    return env.get(ENV_OPT_OUT, "").strip().lower() not in _OFF_VALUES


def _writable(path: Path) -> str | None:
    """None when ``path`` can be created and written, else why not (a few words)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".arm-jax-probe-"):
            pass
    except OSError as err:
        return err.strerror or type(err).__name__
    return None


def enable(
    disabled: bool = False,
    environ: Mapping[str, str] | None = None,
    log: Callable[[str], None] | None = None,
    update: Callable[[str, object], None] | None = None,
) -> str | None:
    """Turn on JAX's persistent compilation cache in the user cache directory.

    Returns the directory in use, or None when the cache stays off: ``disabled`` (the
    ``--no-compile-cache`` flag), the ``ARM_JAX_NO_COMPILE_CACHE`` opt-out, or a directory
    that cannot be written (then one line goes to ``log``). A directory the user already
    gave JAX is kept and returned. ``update`` defaults to ``jax.config.update``. Call it
    before the first compilation of the process; it never raises on file-system errors.
    """
    env = os.environ if environ is None else environ
    if disabled or opted_out(env):
        return None
    import jax

    chosen = jax.config.jax_compilation_cache_dir
    if chosen:
        return str(chosen)
    update = update or jax.config.update
    path = default_cache_dir(env)
    why = _writable(path)
    if why is not None:
        if log is not None:
            log(f"note: compilation cache off, cannot write {path} ({why}); set {ENV_OPT_OUT}=1 to silence this")
        return None
    update("jax_compilation_cache_dir", str(path))
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in env:
        update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_TIME_SECS)
    return str(path)
