"""Progress on long work, for a person at a terminal: rich's progress bar and spinner (rich
comes with flax). Off when stderr is not a terminal (CI, pipes, log files) or when
``ARM_JAX_PROGRESS=0``; the one-line log messages are unchanged either way."""
from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterable, Iterator


def enabled() -> bool:
    """A terminal on stderr, and not switched off with ``ARM_JAX_PROGRESS=0``."""
    return os.environ.get("ARM_JAX_PROGRESS", "1") != "0" and sys.stderr.isatty()


@contextlib.contextmanager
def spinner(text: str, on: bool = True):
    """A spinner with the elapsed time while a block runs (one compiled call: no steps to count)."""
    if not (on and enabled()):
        yield
        return
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        bar.add_task(text, total=None)
        yield


def track(items: Iterable, total: int, text: str, on: bool = True) -> Iterator:
    """``items`` with a progress bar (``total`` steps) when on at a terminal."""
    if not (on and enabled()):
        yield from items
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(text, total=total)
        for item in items:
            yield item
            bar.advance(task)
