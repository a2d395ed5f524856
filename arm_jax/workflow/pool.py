"""The pool: the embedded items one can ask annotators about, read and checked.

Formats (:func:`load_pool`):

- ``.npy`` in the paper's layout ``(prompts, responses, D)``: item ``p:r`` is response ``r``
  of prompt ``p`` and its prompt id is ``p``. Read memory-mapped, so a file larger than RAM
  is fine.
- ``.npy`` of shape ``(N, D)``: item ids are row numbers, no prompt ids. Memory-mapped too.
- ``.npz`` with ``embeddings`` ``(N, D)``, optional ``prompt_ids`` ``(N,)`` and optional
  ``item_ids`` ``(N,)`` (string or integer arrays, unique; default: the row number as a
  string), and optional texts ``prompts`` and ``responses`` ``(N,)`` (string arrays: what an
  annotator reads; ``select`` writes them next to each pair), and optional ``costs`` ``(N,)``
  (float > 0: what labelling an item costs, e.g. its reading time; a pair costs the sum of
  its two items'; ``select --budget``). ``.npz`` members are read into memory.

Embeddings must be float16/32/64 and finite (a streaming check reports how many rows hold
NaN/inf). Items are used as float32. Every problem raises :class:`~arm_jax.errors.InputError`
naming the file (``FileNotFoundError`` for a missing one). On several processes
(:mod:`arm_jax.runtime.distributed`) each checks only its own block of rows and the counts are
gathered: every process reads a memory-mapped pool's header and its block, and raises the
same error.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from arm_jax.errors import InputError
from arm_jax.runtime import distributed
from arm_jax.runtime.arrays import iter_row_chunks
from arm_jax.runtime.files import one_line, require_file

_FLOAT_DTYPES = (np.float16, np.float32, np.float64)
_CHUNK_BYTES = 64 << 20  # streaming NaN check: ~64 MiB per chunk


class Pool(NamedTuple):
    """The items one can ask annotators about.

    path: where it came from (for messages).
    embeddings: (N, D) float16/32/64, possibly a read-only memory map.
    item_ids: (N,) str, unique.
    prompt_ids: (N,) str, or None when the pool has none.
    prompts, responses: (N,) str texts of each item's prompt and response, or None.
    costs: (N,) float64 > 0, each item's labelling cost, or None.
    """

    path: str
    embeddings: np.ndarray
    item_ids: np.ndarray
    prompt_ids: np.ndarray | None
    prompts: np.ndarray | None = None
    responses: np.ndarray | None = None
    costs: np.ndarray | None = None

    def texts_of(self, row: int, side: str) -> dict:
        """``{"prompt_<side>": ..., "response_<side>": ...}`` for the texts the pool has."""
        out = {}
        if self.prompts is not None:
            out[f"prompt_{side}"] = str(self.prompts[row])
        if self.responses is not None:
            out[f"response_{side}"] = str(self.responses[row])
        return out

    @property
    def n(self) -> int:
        return int(self.embeddings.shape[0])

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    def index_of(self) -> dict[str, int]:
        """Item id -> row."""
        return {item_id: i for i, item_id in enumerate(self.item_ids.tolist())}

    def describe_rows(self, rows) -> str:
        """``"row 3 (item 'a'), row 7 (item 'b')"`` for up to five rows, then how many more."""
        rows = [int(r) for r in np.asarray(rows).reshape(-1)]
        shown = ", ".join(f"row {r} (item {str(self.item_ids[r])!r})" for r in rows[:5])
        return shown + (f" and {len(rows) - 5} more" if len(rows) > 5 else "")


def _check_float(path, name: str, array: np.ndarray) -> None:
    if array.dtype not in _FLOAT_DTYPES:
        raise InputError(
            f"{path}: {name} have dtype {array.dtype}, expected float16, float32 or float64"
        )


def nonfinite_rows(embeddings: np.ndarray, chunk_bytes: int = _CHUNK_BYTES) -> tuple[int, int]:
    """(number of rows holding a NaN/inf, first such row or -1), streaming over a memory map.
    A float64 value beyond float32's range counts as inf (items are used as float32)."""
    count, first = 0, -1
    f32_max = float(np.finfo(np.float32).max)
    for start, block in iter_row_chunks(embeddings, chunk_bytes):
        ok = np.isfinite(block)
        if block.dtype == np.float64:  # finite, but inf once used as float32
            ok &= np.abs(block) <= f32_max
        bad = ~ok.all(axis=1)
        nbad = int(np.count_nonzero(bad))
        if nbad:
            if first < 0:
                first = start + int(np.argmax(bad))
            count += nbad
    return count, first


def _nonfinite_rows_of_all_processes(embeddings: np.ndarray) -> tuple[int, int]:
    """:func:`nonfinite_rows` of the whole pool, each process scanning its own block."""

    start, stop = distributed.block(embeddings.shape[0])
    count, first = nonfinite_rows(embeddings[start:stop])
    found = distributed.gather(np.array([count, start + first if first >= 0 else -1], np.int64))
    hits = found[found[:, 1] >= 0, 1]
    return int(found[:, 0].sum()), int(hits.min()) if hits.size else -1


def _ids_array(path, name: str, raw: np.ndarray, n: int) -> np.ndarray:
    if raw.shape != (n,):
        raise InputError(f"{path}: {name} has shape {raw.shape}, expected ({n},) to match embeddings")
    if raw.dtype.kind in "US":
        ids = raw.astype(str)
    elif raw.dtype.kind in "iu":
        ids = raw.astype(np.int64).astype(str)
    else:
        raise InputError(
            f"{path}: {name} has dtype {raw.dtype}, expected strings or integers "
            "(e.g. np.array(ids, dtype=str))"
        )
    return ids


def _load_npy(path):
    try:
        raw = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as err:  # noqa: BLE001 - any reader failure is a bad file
        raise InputError(f"{path}: not a readable .npy file ({one_line(err)})") from None
    if raw.ndim == 3:
        n_prompts, n_responses, dim = raw.shape
        _check_float(path, "embeddings", raw)
        embeddings = raw.reshape(n_prompts * n_responses, dim)
        p = np.repeat(np.arange(n_prompts), n_responses).astype(str)
        r = np.tile(np.arange(n_responses), n_prompts).astype(str)
        item_ids = np.char.add(np.char.add(p, ":"), r).astype(str)
        return embeddings, item_ids, p, {}
    if raw.ndim == 2:
        _check_float(path, "embeddings", raw)
        return raw, None, None, {}
    raise InputError(
        f"{path}: embeddings have shape {raw.shape}, expected (prompts, responses, D) or (N, D)"
    )


def _load_npz(path):
    try:
        archive = np.load(path, allow_pickle=False)
    except Exception as err:  # noqa: BLE001
        raise InputError(f"{path}: not a readable .npz file ({one_line(err)})") from None
    with archive:
        if "embeddings" not in archive.files:
            raise InputError(
                f"{path}: no 'embeddings' array (found: {', '.join(archive.files) or 'nothing'})"
            )
        members = {}
        for name in ("embeddings", "prompt_ids", "item_ids", "prompts", "responses", "costs"):
            if name in archive.files:
                try:
                    members[name] = archive[name]
                except ValueError as err:
                    raise InputError(
                        f"{path}: {name} cannot be read without pickle ({one_line(err)}); "
                        "save it as a string or integer array"
                    ) from None
    embeddings = members["embeddings"]
    if embeddings.ndim != 2:
        raise InputError(f"{path}: embeddings have shape {embeddings.shape}, expected (N, D)")
    _check_float(path, "embeddings", embeddings)
    n = embeddings.shape[0]
    prompt_ids = item_ids = None
    if "prompt_ids" in members:
        prompt_ids = _ids_array(path, "prompt_ids", members["prompt_ids"], n)
    if "item_ids" in members:
        item_ids = _ids_array(path, "item_ids", members["item_ids"], n)
    texts = {}
    for name in ("prompts", "responses"):
        if name in members:
            raw = members[name]
            if raw.shape != (n,) or raw.dtype.kind not in "US":
                raise InputError(
                    f"{path}: {name} has shape {raw.shape} and dtype {raw.dtype}, expected ({n},) strings "
                    "(e.g. np.array(texts, dtype=str))"
                )
            texts[name] = raw.astype(str)
    if "costs" in members:
        raw = members["costs"]
        if raw.shape != (n,) or raw.dtype.kind not in "fiu":
            raise InputError(f"{path}: costs has shape {raw.shape} and dtype {raw.dtype}, expected ({n},) numbers")
        costs = raw.astype(np.float64)
        bad = np.flatnonzero(~(np.isfinite(costs) & (costs > 0)))
        if bad.size:
            raise InputError(f"{path}: costs must be finite and > 0; row {bad[0]} has {float(costs[bad[0]])!r}")
        texts["costs"] = costs
    return embeddings, item_ids, prompt_ids, texts


def check_informative(pool: Pool) -> None:
    """InputError when every item has the same embedding: no pair can be told from another, so
    any rule's picks would be arbitrary (every score equal). Compares the first two rows, and
    only when they are equal streams over the rest (a memory map, block by block)."""
    first = np.asarray(pool.embeddings[0])
    if not np.array_equal(first, np.asarray(pool.embeddings[1])):
        return  # any real pool: two rows read, not a block
    for _, block in iter_row_chunks(pool.embeddings, _CHUNK_BYTES):
        if not np.array_equal(block, np.broadcast_to(first, block.shape)):
            return
    raise InputError(
        f"{pool.path}: all {pool.n} embeddings are identical, so no pair carries any information and every "
        "rule's picks would be arbitrary; check how the embeddings were computed"
    )


def load_pool(path) -> Pool:
    """Read and validate a pool (see the module docstring for the formats)."""
    path = require_file(path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        embeddings, item_ids, prompt_ids, texts = _load_npy(path)
    elif suffix == ".npz":
        embeddings, item_ids, prompt_ids, texts = _load_npz(path)
    else:
        raise InputError(f"{path}: unknown pool format {suffix or '(no extension)'!r}; expected .npy or .npz")

    n, dim = embeddings.shape
    if n < 2:
        raise InputError(f"{path}: the pool has {n} item(s); at least 2 are needed to form a pair")
    if dim < 1:
        raise InputError(f"{path}: embeddings have dimension 0")
    if item_ids is None:
        item_ids = np.arange(n).astype(str)
    else:
        unique, counts = np.unique(item_ids, return_counts=True)
        if unique.size != n:
            dup = str(unique[np.argmax(counts > 1)])
            rows = np.flatnonzero(item_ids == dup)[:2].tolist()
            raise InputError(f"{path}: item_ids are not unique ({dup!r} at rows {rows[0]} and {rows[1]})")
    bad, first_bad = _nonfinite_rows_of_all_processes(embeddings)
    if bad:
        raise InputError(
            f"{path}: {bad} row(s) of embeddings contain NaN or inf"
            + (" (or values beyond float32's range)" if embeddings.dtype == np.float64 else "")
            + f" (first: row {first_bad}, item {str(item_ids[first_bad])!r})"
        )
    return Pool(
        str(path), embeddings, item_ids, prompt_ids, texts.get("prompts"), texts.get("responses"), texts.get("costs")
    )
