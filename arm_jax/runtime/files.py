"""Files in and out: checks of input and output paths, and output files that are never
half-written.

Every output is written to a hidden temporary file beside its target (``.NAME.XXXX.tmp``),
flushed to disk (``fsync``), renamed over the target (atomic on POSIX) and the directory is
flushed too, so after a crash or power cut the target holds either its old content or the
complete new one. New files get the permissions a plain ``open(path, "w")`` gives
(``0o666`` less the umask). While a file is being written and renamed, SIGINT is held back
and re-sent once it is in place (or removed), so Ctrl-C never leaves half of one.

Several files that belong together (``score``'s ``.npy`` and ``.csv``) are written with
:func:`atomic_paths`: all temporaries are complete before any target changes, then the
old companions are removed and the new files renamed into place one by one. Whenever every
one of them exists, they are from the same run; an interruption can only leave some missing.
"""
from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import math
import os
import secrets
import signal
import socket
import tempfile
import threading
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from arm_jax.errors import InputError

# ----------------------------------------------------------------------------- inputs


def one_line(err: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def require_file(path) -> Path:
    """``path`` as a Path; ``FileNotFoundError`` if it does not exist, InputError if it is a
    directory."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(errno.ENOENT, "no such file", str(path))
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected a file")
    return path


# ----------------------------------------------------------------------------- output checks


def same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file (the same real path, or the same inode)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _check_parent_writable(path: Path, shown, flag: str = "--out") -> None:
    """The nearest existing ancestor of ``path`` must be a directory where a file can be
    created (missing directories below it are created when the file is written). Tried, not
    guessed from permission bits: a probe file is created and removed, so a read-only file
    system, a full disk or a pseudo-filesystem like /proc is named as what it is."""
    parent = path.parent
    while not parent.exists():
        if parent == parent.parent:
            break
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f"{shown}: cannot write there ({flag}): {parent} is not a directory")
    _probe_directory(parent, shown, flag)


def _probe_directory(directory: Path, shown, flag: str) -> None:
    """Create and remove an empty file in ``directory``; InputError naming ``flag`` and the
    system's reason when that fails."""
    try:
        fd, probe = tempfile.mkstemp(dir=directory, prefix=".arm-jax-probe-")
    except OSError as err:
        reason = "no permission to write" if err.errno in (errno.EACCES, errno.EPERM) else (err.strerror or str(err))
        raise InputError(f"{shown}: cannot write there ({flag}): {reason.lower()} in {directory}") from None
    os.close(fd)
    os.unlink(probe)


def check_output_file(path, inputs: dict | None = None, flag: str = "--out") -> Path:
    """Before any work: ``path`` can be written as a file and is none of ``inputs``.

    inputs: ``{"--pool": path, ...}``; an output that resolves to one of them (the same path,
    a symlink or a hard link to it) is refused, so no input is ever overwritten.
    InputError names the path as the user gave it.
    """
    shown = os.fspath(path)
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{shown}: is a directory; {flag} needs a file name")
    for name, given in (inputs or {}).items():
        if given is not None and same_file(path, Path(given)):
            raise InputError(f"{shown}: {flag} is the input file {name} {os.fspath(given)}; choose another output")
    _check_parent_writable(path, shown, flag)
    return path


def check_output_dir(path, names: Sequence[str] = (), inputs: dict | None = None, flag: str = "--out") -> Path:
    """Before any work: ``path`` is (or can be created as) a writable directory, and none of
    the files ``names`` to be written in it is a directory or one of ``inputs``."""
    shown = os.fspath(path)
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"{shown}: exists and is not a directory; {flag} names the output directory")
    for given in (inputs or {}).values():
        if given is not None and same_file(path, Path(given)):
            raise InputError(f"{shown}: {flag} is an input file; choose another output directory")
    if path.is_dir():
        _probe_directory(path, shown, flag)
    else:
        _check_parent_writable(path, shown, flag)
    for name in names:
        check_output_file(path / name, inputs, flag=f"{flag}/{name}")
    return path


# ----------------------------------------------------------------------------- atomic writes


@contextlib.contextmanager
def _sigint_held():
    """Hold SIGINT back (main thread only) and re-send it on exit, so the previous handler
    (Python's KeyboardInterrupt, or the default: end the process) acts after the block."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = []
    try:
        previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    except (ValueError, OSError):  # not allowed here (e.g. an embedded interpreter)
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if caught:
            signal.raise_signal(signal.SIGINT)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def _host_tag() -> str:
    """This machine's name as it may appear in a file name (letters, digits, ``_``), short."""
    return "".join(c if c.isalnum() else "_" for c in socket.gethostname())[:32] or "host"


def _remove_stale_temps(path: Path) -> None:
    """Remove the temporaries of ``path`` (``.NAME.HOST.PID-HEX.tmp``, :func:`_new_temp`) that
    a process of this host which no longer runs left behind (killed between creating and
    renaming them). Another host's are left alone: whether its process runs cannot be told."""
    prefix = f".{path.name}.{_host_tag()}."
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return
    for entry in entries:
        name = entry.name
        if not (name.startswith(prefix) and name.endswith(".tmp")):
            continue
        pid, _, token = name[len(prefix):-len(".tmp")].partition("-")
        if not (pid.isdigit() and len(pid) < 10 and len(token) == 8) or int(pid) == os.getpid():
            continue
        if not _pid_alive(int(pid)):
            with contextlib.suppress(OSError):
                os.unlink(entry.path)


def _new_temp(path: Path) -> Path:
    """Create an empty hidden file beside ``path`` with mode 0o666 less the umask, named
    ``.NAME.HOST.PID-HEX.tmp`` so that a later write on this host can tell it is stale once PID
    has ended."""
    _remove_stale_temps(path)
    while True:
        tmp = path.with_name(f".{path.name}.{_host_tag()}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        except OSError as err:  # name the file the user asked for, not the temporary
            raise type(err)(err.errno, err.strerror, str(path)) from None
        os.close(fd)
        return tmp


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDWR)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. a platform that cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_paths(paths: Sequence[str | os.PathLike]):
    """Yield temporary paths (one per target, beside it); when the block succeeds, put them
    all in place so that the targets, whenever all exist, are from the same write.

    Order: every temporary is fsynced; the existing targets after the first are removed;
    then each temporary is renamed over its target, in order; the directories are fsynced.
    On an exception before that the temporaries are removed and the targets are untouched.
    Missing parent directories are created. SIGINT is held back until the end.
    """
    targets = [Path(p) for p in paths]
    temps: list[Path] = []
    with _sigint_held():
        try:
            for target in targets:
                target.parent.mkdir(parents=True, exist_ok=True)
                temps.append(_new_temp(target))
            yield list(temps)
            for tmp in temps:
                _fsync_file(tmp)
            for target in targets[1:]:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(target)
            for tmp, target in zip(temps, targets):
                os.replace(tmp, target)
        except BaseException:
            _remove(temps)
            raise
        for directory in dict.fromkeys(t.parent for t in targets):
            _fsync_dir(directory)


def _remove(paths) -> None:
    for p in paths:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(p)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path in the target's directory; on success it replaces ``path``
    (fsynced, renamed, directory fsynced). On an exception (or interrupt) the temporary
    file is removed and ``path`` is untouched."""
    with atomic_paths([path]) as (tmp,):
        yield tmp


def write_text(path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes(path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def json_ready(obj):
    """``obj`` with every NaN or infinite float replaced by None (strict JSON has no NaN), in
    nested dicts, lists and tuples."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    return obj


def write_json(path, obj, indent: int | None = 2) -> None:
    """Strict JSON (NaN and infinities written as null), atomically."""
    write_text(path, json.dumps(json_ready(obj), indent=indent, sort_keys=False, allow_nan=False) + "\n")


def jsonl_text(rows: Iterable[dict]) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


def write_jsonl(path, rows: Iterable[dict]) -> None:
    write_text(path, jsonl_text(rows))


def csv_text(header: Sequence[str], rows: Iterable[Sequence]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def write_csv(path, header: Sequence[str], rows: Iterable[Sequence]) -> None:
    write_text(path, csv_text(header, rows))


def npy_bytes(array) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(array))
    return buf.getvalue()


def save_npy(path, array) -> None:
    write_bytes(path, npy_bytes(array))
