"""The ``arm-jax`` command line.

Each group of subcommands lives in its own module with a ``register(subparsers)`` function
that adds its parsers and sets ``func``. Errors a user can fix (bad files, bad flags) are
:class:`~arm_jax.errors.InputError` or a missing/unreadable file (``FileNotFoundError``,
``IsADirectoryError``, ``NotADirectoryError``, ``PermissionError``): they become one line on
stderr and exit code 2. Any other exception is a bug and surfaces as a traceback.

Compiled programs are kept in JAX's persistent compilation cache in a per-user directory
(:mod:`arm_jax.compile_cache`), so a repeated call skips most compiling; every subcommand
takes ``--no-compile-cache``, and ``ARM_JAX_NO_COMPILE_CACHE=1`` turns it off everywhere.

While a command runs, SIGINT (Ctrl-C) has its default action: the process ends at once, even
inside a long compiled computation (a Python handler would wait for it to finish). Output
files are written atomically and SIGINT is held back while one is renamed into place
(:mod:`arm_jax.io`), so an interrupt never leaves half a file.
"""
from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading

from arm_jax import __version__
from arm_jax.errors import InputError

#: Errors about files the user named: one line, exit code 2.
FILE_ERRORS = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)


class UsageError(InputError):
    """A problem with the user's input; printed as one line, exit code 2."""


def _cmd_strategies(args) -> int:
    from arm_jax.strategies import PAPER_STRATEGIES, STRATEGIES

    width = max(map(len, STRATEGIES))
    for name, strategy in STRATEGIES.items():
        tag = "" if name in PAPER_STRATEGIES else "  [beyond the paper]"
        print(f"{name:<{width}}  {strategy.description}{tag}")
    return 0


def build_parser() -> argparse.ArgumentParser:
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
    for module in _command_modules():
        module.register(sub)
    for command in sub.choices.values():
        _add_compile_cache_flag(command)
    return parser


def _add_compile_cache_flag(parser: argparse.ArgumentParser) -> None:
    from arm_jax.compile_cache import ENV_OPT_OUT, default_cache_dir

    parser.add_argument(
        "--no-compile-cache", action="store_true",
        help=(
            f"do not keep compiled programs in JAX's persistent compilation cache ({default_cache_dir()}, "
            f"i.e. $XDG_CACHE_HOME/arm-jax/jax or ~/.cache/arm-jax/jax), which makes a repeated call "
            f"start faster; {ENV_OPT_OUT}=1 in the environment does the same for every call"
        ),
    )


def _command_modules():
    import importlib

    modules = []
    for name in ("arm_jax.cli_experiment", "arm_jax.cli_data"):
        try:
            modules.append(importlib.import_module(name))
        except ModuleNotFoundError as err:
            if err.name != name:
                raise
    return modules


def _note(message: str) -> None:
    print(f"arm-jax: {message}", file=sys.stderr)


def fail(message: str) -> int:
    print(f"arm-jax: error: {message}", file=sys.stderr)
    return 2


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
    parser = build_parser()
    args = parser.parse_args(argv)
    from arm_jax import compile_cache, io

    compile_cache.enable(disabled=getattr(args, "no_compile_cache", False), log=_note)
    try:
        with sigint_ends_the_process():
            return int(args.func(args) or 0)
    except InputError as err:
        return fail(io.one_line(err))
    except FILE_ERRORS as err:
        message = io.one_line(err)
        if err.filename:
            message = f"{err.filename}: {err.strerror or message}"
        return fail(message)


if __name__ == "__main__":
    sys.exit(main())
