"""The ``arm-jax`` command line.

Each group of subcommands lives in its own module with a ``register(subparsers)`` function
that adds its parsers and sets ``func``. Errors a user can fix (bad files, bad flags) are
:class:`~arm_jax.errors.InputError` or a missing/unreadable file (``FileNotFoundError``,
``IsADirectoryError``, ``NotADirectoryError``, ``PermissionError``): they become one line on
stderr and exit code 2. Any other exception is a bug and surfaces as a traceback.

Compiled programs are kept in JAX's persistent compilation cache in a per-user directory
(:mod:`arm_jax.runtime.compile_cache`), so a repeated call skips most compiling; every subcommand
takes ``--no-compile-cache``, and ``ARM_JAX_NO_COMPILE_CACHE=1`` turns it off everywhere.

While a command runs, SIGINT (Ctrl-C) has its default action: the process ends at once, even
inside a long compiled computation (a Python handler would wait for it to finish). Output
files are written atomically and SIGINT is held back while one is renamed into place
(:mod:`arm_jax.runtime.files`), so an interrupt never leaves half a file.

``run``, ``select``, ``score`` and ``train`` can run as several processes
(:mod:`arm_jax.runtime.distributed`: ``--distributed`` or ``--coordinator/--num-processes/--process-id``).
Then only process 0 prints progress and results and writes files; every process prints its
own errors (prefixed with its id); a failed process ends at once with exit code 1 (2 for a
user error) instead of waiting for the others at shutdown.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import signal
import sys
import threading

from arm_jax._version import __version__
from arm_jax.cli.commands import COMMANDS, help_of
from arm_jax.errors import InputError
from arm_jax.runtime import compile_cache, distributed, programs
from arm_jax.runtime import files as io
from arm_jax.runtime.compile_cache import ENV_OPT_OUT, default_cache_dir

#: Errors about files the user named: one line, exit code 2.
FILE_ERRORS = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)
#: The commands that can run as several processes (:mod:`arm_jax.runtime.distributed`).
MULTI_PROCESS_COMMANDS = ("run", "select", "score", "train")
#: The commands that never import JAX (so they need no compilation cache).
JAX_FREE_COMMANDS = ("strategies",)
#: Where errors go on a process whose other output is silenced (None: sys.stderr).
_errors = None
_prefix = ""


def _cmd_strategies(args) -> int:
    """``arm-jax strategies``: one line per strategy, from the catalog (without JAX)."""
    from arm_jax.selection import catalog

    for line in catalog.listing():
        print(line)
    return 0


def build_parser(commands=None) -> argparse.ArgumentParser:
    """The ``arm-jax`` parser. ``commands``: the subcommands whose flags to register (their modules
    are imported, and with them JAX); the others get only their name and one-line help, which is
    all ``arm-jax --help`` shows. None: every subcommand."""
    parser = argparse.ArgumentParser(
        prog="arm-jax",
        description=(
            "Active reward modeling in JAX: choose which preference pairs to label "
            "(D-optimal design on the reward model's last layer and the paper's baselines), "
            "and run the paper's active-learning experiment."
        ),
        epilog=(
            "Compiled programs are kept in JAX's persistent compilation cache, $XDG_CACHE_HOME/arm-jax/jax "
            "or ~/.cache/arm-jax/jax, so a repeated call starts faster; turn it off with --no-compile-cache "
            "or ARM_JAX_NO_COMPILE_CACHE=1 (a JAX_COMPILATION_CACHE_DIR you set is used instead)."
        ),
    )
    parser.add_argument("--version", action="version", version=f"arm-jax {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    p = sub.add_parser("strategies", help="list the selection strategies with one line each")
    p.set_defaults(func=_cmd_strategies)
    wanted = COMMANDS if commands is None else [c for c in commands if c in COMMANDS]
    for module in dict.fromkeys(COMMANDS[c][0] for c in wanted):
        importlib.import_module(module).register(sub)
    for name in COMMANDS:
        if name not in sub.choices:
            sub.add_parser(name, help=help_of(name))
    for name, command in sub.choices.items():
        _add_compile_cache_flag(command)
        if name in MULTI_PROCESS_COMMANDS:
            distributed.add_flags(command)
    return parser


def command_of(argv) -> list[str]:
    """The subcommand named on the command line (its first word that is one), if any."""
    return [word for word in argv if word in COMMANDS][:1]


def _add_compile_cache_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-compile-cache", action="store_true",
        help=(
            f"do not keep compiled programs in JAX's persistent compilation cache ({default_cache_dir()}, "
            f"i.e. $XDG_CACHE_HOME/arm-jax/jax or ~/.cache/arm-jax/jax), which makes a repeated call "
            f"start faster; {ENV_OPT_OUT}=1 in the environment does the same for every call"
        ),
    )


def _note(message: str) -> None:
    print(f"arm-jax: {message}", file=sys.stderr)


def fail(message: str) -> int:
    print(f"arm-jax: {_prefix}error: {message}", file=_errors or sys.stderr, flush=True)
    return 2


def _join_processes(args) -> bool:
    """Start the multi-process runtime when the flags ask for it; silence every process but
    process 0 (its errors still reach stderr). Returns whether several processes run."""
    global _errors, _prefix
    if not distributed.requested(args):
        return False
    distributed.initialize(args)
    if distributed.process_count() == 1:
        return True
    # the collectives' library prints to file descriptor 1: keep it off the results' stdout
    sys.stdout.flush()
    results = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = os.fdopen(results, "w", buffering=1)
    if not distributed.is_writer():
        _errors = sys.stderr
        _prefix = f"process {distributed.process_index()}: "
        quiet = open(os.devnull, "w")
        os.dup2(quiet.fileno(), 1)
        sys.stdout = sys.stderr = quiet
    return True


def _end_now(code: int) -> None:
    """End a failed process of a multi-process run at once: waiting for the others at JAX's
    shutdown barrier would end in an abort with a page of logs."""
    sys.stdout.flush()
    (_errors or sys.stderr).flush()
    os._exit(code)


@contextlib.contextmanager
def sigint_ends_the_process():
    """SIGINT's default action (end the process) inside the block, in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    parser = build_parser(command_of(argv))
    args = parser.parse_args(argv)

    try:
        multi = _join_processes(args)
    except InputError as err:
        return fail(io.one_line(err))
    if args.command not in JAX_FREE_COMMANDS:
        cache = compile_cache.enable(disabled=getattr(args, "no_compile_cache", False), log=_note)
        programs.enable(compile_cache.programs_dir(cache) if not multi else None)
    try:
        with sigint_ends_the_process():
            return int(args.func(args) or 0)
    except InputError as err:
        code = fail(io.one_line(err))
    except FILE_ERRORS as err:
        message = io.one_line(err)
        if err.filename:
            message = f"{err.filename}: {err.strerror or message}"
        code = fail(message)
    except Exception:
        if not multi:
            raise
        import traceback

        print(f"arm-jax: {_prefix}failed (another process may have stopped):", file=_errors or sys.stderr, flush=True)
        traceback.print_exc(file=_errors or sys.stderr)
        code = 1
    finally:
        programs.enable(None)  # main may be called again in this process (tests, scripts)
    if multi:
        _end_now(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
