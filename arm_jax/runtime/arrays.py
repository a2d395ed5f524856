"""TODO docstring."""
from __future__ import annotations

import mmap
import os
from typing import Union

import jax
import numpy as np

ArrayLike = Union[np.ndarray, jax.Array]
PathLike = Union[str, "os.PathLike[str]"]


# About 64 MiB of float32 per chunk when scanning a memory-mapped file for NaN/inf.
_CHUNK_BYTES = 1 << 26


def release_pages(array: np.ndarray) -> None:
    """Drop a memory-mapped array's pages from this process's resident memory (``madvise
    MADV_DONTNEED`` on its map; they stay in the page cache, and a later read maps them
    again). Only read-only maps (``mmap_mode="r"``, how pools are read); a no-op for arrays in
    memory and for writable maps. So a scan over a file larger than RAM
    keeps the process's peak RSS at one chunk, not the file."""
    base, read_only = array, False
    while base is not None and not isinstance(base, mmap.mmap):
        if isinstance(base, np.memmap):
            read_only = base.mode == "r"  # a copy-on-write map ("c") would lose its changes
        base = getattr(base, "base", None)
    if base is not None and read_only and hasattr(base, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
        base.madvise(mmap.MADV_DONTNEED)


def iter_row_chunks(array: np.ndarray, chunk_bytes: int = _CHUNK_BYTES):
    """Yield ``(start, chunk)`` over the first axis, each chunk about ``chunk_bytes`` in memory
    (for scanning a memory-mapped file without reading it whole: the map's pages are released
    once the caller is done with a chunk, :func:`release_pages`)."""
    row_bytes = max(1, array[:1].nbytes)
    rows = max(1, chunk_bytes // row_bytes)
    for start in range(0, array.shape[0], rows):
        yield start, np.asarray(array[start : start + rows])
        release_pages(array)


def count_nonfinite(array: ArrayLike, chunk_bytes: int = _CHUNK_BYTES) -> int:
    """Number of NaN or +-inf entries, scanned in chunks over the first (prompt) axis.

    Args:
      array: ``(P, ...)`` float array, possibly a ``np.memmap``; at most about
        ``chunk_bytes`` of it is in memory at once.
      chunk_bytes: target size of one chunk.

    Returns:
      the count, a Python ``int``.
    """
    array = np.asarray(array) if not isinstance(array, np.ndarray) else array
    if array.ndim == 0:
        return int(not np.isfinite(array))
    return sum(int(chunk.size - np.count_nonzero(np.isfinite(chunk))) for _, chunk in iter_row_chunks(array, chunk_bytes))
