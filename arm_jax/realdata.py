"""Active reward modelling on your own data: pools, labels, candidate pairs, saved models.

This module is the library behind ``arm-jax select``, ``arm-jax train`` and ``arm-jax score``
(:mod:`arm_jax.cli_data`). Every user-fixable problem raises :class:`DataError` (a
``ValueError``) or ``FileNotFoundError`` with a one-line message that names the file, and
nothing here writes a file before all inputs have been checked.

Inputs
------
Pool of items (:func:`load_pool`):

- ``.npy`` in the paper's layout ``(prompts, responses, D)``: item ``p:r`` is response ``r``
  of prompt ``p`` and its prompt id is ``p``. Read memory-mapped, so a file larger than RAM
  is fine. A 2-D ``.npy`` ``(N, D)`` is also accepted: ids are row numbers, no prompt ids.
- ``.npz`` with ``embeddings`` ``(N, D)``, optional ``prompt_ids`` ``(N,)`` and optional
  ``item_ids`` ``(N,)`` (string or integer arrays, unique; default: the row number as a
  string). ``.npz`` members are read into memory.

Embeddings must be float16/32/64 and finite (a streaming check reports how many rows hold
NaN/inf). Items are used as float32.

Labels (:func:`load_labels`): JSON Lines, one comparison per line,
``{"winner": ID, "loser": ID}``. Ids may be JSON strings or integers and are compared as
strings (``3`` and ``"3"`` are the same item). Extra fields are ignored; blank lines are
skipped. A line with ``"tie": true`` is a comparison the annotator could not decide: the
Bradley–Terry model has no ties, so it is *not used for training*, but its pair counts as
already labelled, so ``select`` never proposes it again. The same pair may be labelled more
than once (repeated annotations are all used).

Randomness
----------
All of it comes from one integer seed: the model's initialisation and minibatches use
``fold_in(PRNGKey(seed), 0)``, the strategy's key ``fold_in(PRNGKey(seed), 1)``, the
candidate subsample a numpy generator seeded by ``seed`` and a digest of the labelled pairs
(so every round draws fresh candidates; :func:`candidate_seed`) and the validation split
``default_rng([seed, 3])``. So ``select --seed S`` and ``train --seed S`` (after its refit on
all labels) train the very same model on the same labels.
"""
from __future__ import annotations

import errno
import functools
import hashlib
import json
import math
import os
import time
from pathlib import Path
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from arm_jax import io as io_lib
from arm_jax import model as model_lib
from arm_jax import strategies as strategies_lib
from arm_jax import train as train_lib
from arm_jax.allpairs import ALLPAIRS_STRATEGIES as ALL_PAIRS_STRATEGIES
from arm_jax.data import iter_row_chunks
from arm_jax.model import ModelConfig
from arm_jax.train import TrainConfig

PAIR_MODES = ("in-prompt", "cross-prompt", "all-cross")
DEFAULT_CANDIDATES = 20_000
#: Without :mod:`arm_jax.allpairs`, ``all-cross`` falls back to explicit pairs up to this many.
EXPLICIT_ALL_PAIRS_LIMIT = 2_000_000
MODEL_FORMAT = "arm-jax-model"
MODEL_FORMAT_VERSION = 1

_FLOAT_DTYPES = (np.float16, np.float32, np.float64)
_CHUNK_BYTES = 64 << 20  # streaming NaN check: ~64 MiB per chunk
_FEATURE_CHUNK = 4096  # rows per jit-compiled forward pass


class DataError(ValueError):
    """A user-fixable problem with an input file or flag; the message is one line."""


def _missing(path) -> FileNotFoundError:
    return FileNotFoundError(errno.ENOENT, "no such file", str(path))


def _check_exists(path) -> Path:
    path = Path(path)
    if not path.exists():
        raise _missing(path)
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a file")
    return path


# ----------------------------------------------------------------------------- the pool


class Pool(NamedTuple):
    """The items one can ask annotators about.

    path: where it came from (for messages).
    embeddings: (N, D) float16/32/64, possibly a read-only memory map.
    item_ids: (N,) str, unique.
    prompt_ids: (N,) str, or None when the pool has none.
    """

    path: str
    embeddings: np.ndarray
    item_ids: np.ndarray
    prompt_ids: np.ndarray | None

    @property
    def n(self) -> int:
        return int(self.embeddings.shape[0])

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    def index_of(self) -> dict[str, int]:
        """Item id -> row."""
        return {item_id: i for i, item_id in enumerate(self.item_ids.tolist())}


def _check_float(path, name: str, array: np.ndarray) -> None:
    if array.dtype not in _FLOAT_DTYPES:
        raise DataError(
            f"{path}: {name} have dtype {array.dtype}, expected float16, float32 or float64"
        )


def nonfinite_rows(embeddings: np.ndarray, chunk_bytes: int = _CHUNK_BYTES) -> tuple[int, int]:
    """(number of rows holding a NaN/inf, first such row or -1), streaming over a memory map."""
    count, first = 0, -1
    for start, block in iter_row_chunks(embeddings, chunk_bytes):
        bad = ~np.isfinite(block).all(axis=1)
        nbad = int(np.count_nonzero(bad))
        if nbad:
            if first < 0:
                first = start + int(np.argmax(bad))
            count += nbad
    return count, first


def _ids_array(path, name: str, raw: np.ndarray, n: int) -> np.ndarray:
    if raw.shape != (n,):
        raise DataError(f"{path}: {name} has shape {raw.shape}, expected ({n},) to match embeddings")
    if raw.dtype.kind in "US":
        ids = raw.astype(str)
    elif raw.dtype.kind in "iu":
        ids = raw.astype(np.int64).astype(str)
    else:
        raise DataError(
            f"{path}: {name} has dtype {raw.dtype}, expected strings or integers "
            "(e.g. np.array(ids, dtype=str))"
        )
    return ids


def load_pool(path) -> Pool:
    """Read and validate a pool (see the module docstring for the formats)."""
    path = _check_exists(path)
    suffix = path.suffix.lower()
    prompt_ids = None
    item_ids = None
    if suffix == ".npy":
        try:
            raw = np.load(path, mmap_mode="r", allow_pickle=False)
        except Exception as err:  # noqa: BLE001 - any reader failure is a bad file
            raise DataError(f"{path}: not a readable .npy file ({_one_line(err)})") from None
        if raw.ndim == 3:
            n_prompts, n_responses, dim = raw.shape
            _check_float(path, "embeddings", raw)
            embeddings = raw.reshape(n_prompts * n_responses, dim)
            p = np.repeat(np.arange(n_prompts), n_responses).astype(str)
            r = np.tile(np.arange(n_responses), n_prompts).astype(str)
            item_ids = np.char.add(np.char.add(p, ":"), r).astype(str)
            prompt_ids = p
        elif raw.ndim == 2:
            _check_float(path, "embeddings", raw)
            embeddings = raw
        else:
            raise DataError(
                f"{path}: embeddings have shape {raw.shape}, expected (prompts, responses, D) "
                "or (N, D)"
            )
    elif suffix == ".npz":
        try:
            archive = np.load(path, allow_pickle=False)
        except Exception as err:  # noqa: BLE001
            raise DataError(f"{path}: not a readable .npz file ({_one_line(err)})") from None
        with archive:
            if "embeddings" not in archive.files:
                raise DataError(
                    f"{path}: no 'embeddings' array (found: {', '.join(archive.files) or 'nothing'})"
                )
            members = {}
            for name in ("embeddings", "prompt_ids", "item_ids"):
                if name in archive.files:
                    try:
                        members[name] = archive[name]
                    except ValueError as err:
                        raise DataError(
                            f"{path}: {name} cannot be read without pickle ({_one_line(err)}); "
                            "save it as a string or integer array"
                        ) from None
        embeddings = members["embeddings"]
        if embeddings.ndim != 2:
            raise DataError(f"{path}: embeddings have shape {embeddings.shape}, expected (N, D)")
        _check_float(path, "embeddings", embeddings)
        n = embeddings.shape[0]
        if "prompt_ids" in members:
            prompt_ids = _ids_array(path, "prompt_ids", members["prompt_ids"], n)
        if "item_ids" in members:
            item_ids = _ids_array(path, "item_ids", members["item_ids"], n)
    else:
        raise DataError(f"{path}: unknown pool format {suffix or '(no extension)'!r}; expected .npy or .npz")

    n, dim = embeddings.shape
    if n < 2:
        raise DataError(f"{path}: the pool has {n} item(s); at least 2 are needed to form a pair")
    if dim < 1:
        raise DataError(f"{path}: embeddings have dimension 0")
    if item_ids is None:
        item_ids = np.arange(n).astype(str)
    else:
        unique, first, counts = np.unique(item_ids, return_index=True, return_counts=True)
        if unique.size != n:
            dup = str(unique[np.argmax(counts > 1)])
            rows = np.flatnonzero(item_ids == dup)[:2].tolist()
            raise DataError(f"{path}: item_ids are not unique ({dup!r} at rows {rows[0]} and {rows[1]})")
    bad, first_bad = nonfinite_rows(embeddings)
    if bad:
        raise DataError(
            f"{path}: {bad} row(s) of embeddings contain NaN or inf "
            f"(first: row {first_bad}, item {str(item_ids[first_bad])!r})"
        )
    return Pool(str(path), embeddings, item_ids, prompt_ids)


def _one_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


# ----------------------------------------------------------------------------- labels


class Labels(NamedTuple):
    """Comparisons read from a JSON Lines file.

    winner, loser: (L,) int64 pool rows of the decided comparisons (used for training).
    line: (L,) int64 1-based line number of each.
    tie_a, tie_b: (T,) int64 rows of the tied comparisons (not trained on; still "labelled").
    """

    path: str
    winner: np.ndarray
    loser: np.ndarray
    line: np.ndarray
    tie_a: np.ndarray
    tie_b: np.ndarray

    @property
    def n(self) -> int:
        return int(self.winner.shape[0])

    @property
    def n_ties(self) -> int:
        return int(self.tie_a.shape[0])


def empty_labels(path: str = "") -> Labels:
    z = np.zeros(0, np.int64)
    return Labels(path, z, z, z, z, z)


def _label_id(path, lineno: int, field: str, value) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise DataError(
            f"{path}:{lineno}: {field} must be a string or an integer id, got {json.dumps(value)}"
        )
    return str(value)


def load_labels(path, pool: Pool) -> Labels:
    """Read ``{"winner": ID, "loser": ID}`` lines and map the ids to pool rows."""
    path = _check_exists(path)
    index = pool.index_of()
    winner, loser, lines, tie_a, tie_b = [], [], [], [], []
    try:
        handle = open(path, encoding="utf-8")
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror or _one_line(err)})") from None
    with handle:
        try:
            for lineno, text in enumerate(handle, start=1):
                if not text.strip():
                    continue
                try:
                    row = json.loads(text)
                except json.JSONDecodeError as err:
                    raise DataError(f"{path}:{lineno}: not valid JSON ({err.msg})") from None
                if not isinstance(row, dict):
                    raise DataError(f"{path}:{lineno}: expected a JSON object like {{\"winner\": ..., \"loser\": ...}}")
                for field in ("winner", "loser"):
                    if field not in row:
                        raise DataError(f"{path}:{lineno}: missing field '{field}'")
                ids = [_label_id(path, lineno, f, row[f]) for f in ("winner", "loser")]
                rows = []
                for item_id in ids:
                    if item_id not in index:
                        raise DataError(f"{path}:{lineno}: id {item_id!r} is not in the pool {pool.path}")
                    rows.append(index[item_id])
                if rows[0] == rows[1]:
                    raise DataError(f"{path}:{lineno}: winner and loser are the same item {ids[0]!r}")
                tie = row.get("tie", False)
                if not isinstance(tie, bool):
                    raise DataError(f"{path}:{lineno}: field 'tie' must be true or false, got {json.dumps(tie)}")
                if tie:
                    tie_a.append(rows[0])
                    tie_b.append(rows[1])
                else:
                    winner.append(rows[0])
                    loser.append(rows[1])
                    lines.append(lineno)
        except UnicodeDecodeError:
            raise DataError(f"{path}: not a UTF-8 text file") from None

    def arr(xs):
        return np.asarray(xs, np.int64).reshape(-1)

    return Labels(str(path), arr(winner), arr(loser), arr(lines), arr(tie_a), arr(tie_b))


def pair_keys(a: np.ndarray, b: np.ndarray, n: int) -> np.ndarray:
    """Order-free key min·n + max of each pair (int64)."""
    a = np.asarray(a, np.int64)
    b = np.asarray(b, np.int64)
    return np.minimum(a, b) * n + np.maximum(a, b)


def labelled_keys(labels: Labels, n: int) -> np.ndarray:
    """Sorted unique keys of every labelled pair, ties included, either order."""
    return np.unique(
        np.concatenate([pair_keys(labels.winner, labels.loser, n), pair_keys(labels.tie_a, labels.tie_b, n)])
    )


# ----------------------------------------------------------------------------- candidate pairs


class CandidatePairs(NamedTuple):
    """a, b: (M,) int64 pool rows (a != b, no pair twice); valid: (M,) bool, False where the
    pair is already labelled; universe: how many pairs the mode allows in all."""

    a: np.ndarray
    b: np.ndarray
    valid: np.ndarray
    universe: int

    @property
    def n_valid(self) -> int:
        return int(np.count_nonzero(self.valid))


class _PairIndex(NamedTuple):
    """Every pair of a mode, numbered 0..total-1 without being listed.

    Items are sorted by prompt (``order``); sorted item s pairs with sorted items
    ``lo[s] .. lo[s] + count[s] - 1``; ``cum`` is the running total of ``count``.
    """

    order: np.ndarray
    lo: np.ndarray
    count: np.ndarray
    cum: np.ndarray

    @property
    def total(self) -> int:
        return int(self.cum[-1]) if self.cum.size else 0

    def decode(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        t = np.asarray(t, np.int64)
        s = np.searchsorted(self.cum, t, side="right")
        partner = self.lo[s] + (t - (self.cum[s] - self.count[s]))
        return self.order[s], self.order[partner]


def _pair_index(pool: Pool, mode: str) -> _PairIndex:
    n = pool.n
    if mode == "in-prompt" and pool.prompt_ids is None:
        raise DataError(
            f"{pool.path}: the pool has no prompt_ids, so there are no in-prompt pairs; "
            "add prompt_ids or use --pairs cross-prompt"
        )
    if pool.prompt_ids is None or mode == "all-cross":
        order = np.arange(n, dtype=np.int64)
        lo = order + 1
        return _PairIndex(order, lo, n - lo, np.cumsum(n - lo))
    _, codes = np.unique(pool.prompt_ids, return_inverse=True)
    order = np.argsort(codes, kind="stable").astype(np.int64)
    sorted_codes = codes[order]
    end = np.searchsorted(sorted_codes, sorted_codes, side="right").astype(np.int64)
    s = np.arange(n, dtype=np.int64)
    if mode == "in-prompt":
        lo, count = s + 1, end - s - 1
    elif mode == "cross-prompt":
        lo, count = end, n - end
    else:
        raise DataError(f"unknown pair mode {mode!r}; choose one of {', '.join(PAIR_MODES)}")
    return _PairIndex(order, lo, count, np.cumsum(count))


def sample_distinct(rng: np.random.Generator, total: int, m: int) -> np.ndarray:
    """A uniformly random m-subset of range(total), sorted (int64); all of it if m >= total.

    Never allocates more than O(m + 2^20): small ranges are permuted, large ones are drawn
    with replacement, keeping first occurrences (a uniform subset, since every element is
    equally likely to be among the first m distinct draws).
    """
    if m >= total:
        return np.arange(total, dtype=np.int64)
    if total <= max(4 * m, 1 << 20):
        return np.sort(rng.permutation(total)[:m].astype(np.int64))
    draws = np.empty(0, np.int64)
    need = m + m // 3 + 16
    while True:
        draws = np.concatenate([draws, rng.integers(0, total, size=need, dtype=np.int64)])
        _, first = np.unique(draws, return_index=True)
        if first.size >= m:
            return np.sort(draws[np.sort(first)[:m]])
        need = 2 * (m - first.size) + 16


def candidate_seed(seed: int, labelled: np.ndarray) -> list[int]:
    """Entropy for the candidate sample: the seed and a digest of the labelled pairs.

    So each round (a new labelled set) draws fresh candidates, as the paper does, instead of
    re-drawing the same subsample and exhausting it; the same inputs still give the same draw.
    """
    digest = hashlib.sha256(np.ascontiguousarray(labelled, dtype="<i8").tobytes()).digest()
    return [int(seed), 2, *np.frombuffer(digest[:16], dtype="<u4").tolist()]


def candidate_pairs(pool: Pool, mode: str, n_candidates: int, seed: int, labelled: np.ndarray) -> CandidatePairs:
    """Uniform subsample (without duplicates) of ``n_candidates`` pairs of the mode.

    in-prompt: two items sharing a prompt id; cross-prompt: two items with different prompt
    ids (any two items when the pool has no prompt ids); all-cross: any two items. Every
    pair of the mode is kept when there are at most ``n_candidates``. ``labelled``: sorted
    keys (:func:`labelled_keys`) of pairs that must not be proposed (``valid`` False); the
    sample is seeded by ``seed`` and these keys (:func:`candidate_seed`), so it changes from
    round to round.
    """
    if n_candidates < 1:
        raise DataError(f"--candidates must be >= 1, got {n_candidates}")
    index = _pair_index(pool, mode)
    rng = np.random.default_rng(candidate_seed(seed, labelled))
    t = sample_distinct(rng, index.total, n_candidates)
    a, b = index.decode(t)
    valid = ~np.isin(pair_keys(a, b, pool.n), labelled, assume_unique=False)
    return CandidatePairs(a, b, valid, index.total)


# ----------------------------------------------------------------------------- the model


def train_key(seed: int) -> jax.Array:
    return jax.random.fold_in(jax.random.PRNGKey(seed), 0)


def select_key(seed: int) -> jax.Array:
    return jax.random.fold_in(jax.random.PRNGKey(seed), 1)


def initial_params(seed: int, model_config: ModelConfig, input_dim: int):
    """The parameters :func:`fit_on_labels` starts from (what ``fit`` returns with no labels)."""
    init_key, _ = jax.random.split(train_key(seed))
    return _init_jit(init_key, model_config, int(input_dim))


_init_jit = jax.jit(model_lib.init_params, static_argnums=(1, 2))


def _bucket(n: int) -> int:
    """Round a size up (powers of two up to 8192, then multiples of 8192) so that labelled
    sets growing round after round reuse one compiled fit; padding never changes a result
    (padded rows are never drawn)."""
    if n <= 8192:
        return max(16, 1 << max(0, int(n) - 1).bit_length())
    return -(-int(n) // 8192) * 8192


def fit_on_labels(
    seed: int,
    embeddings: np.ndarray,
    winner: np.ndarray,
    loser: np.ndarray,
    model_config: ModelConfig,
    train_config: TrainConfig,
):
    """Train a fresh model (``train.fit_jit``) on the comparisons winner[i] ≻ loser[i].

    Only the rows that appear in a label are read and sent to the device (the indices are
    remapped, the result is the same as fitting on the whole pool), so a memory-mapped pool
    far larger than the labelled set costs nothing.
    With no labels the seeded initial parameters are returned.
    """
    if winner.size == 0:
        return initial_params(seed, model_config, embeddings.shape[1])
    rows, inverse = np.unique(np.concatenate([winner, loser]), return_inverse=True)
    items = np.zeros((_bucket(rows.size), embeddings.shape[1]), np.float32)
    items[: rows.size] = embeddings[rows]
    n_labels = winner.shape[0]
    buffer = train_lib.buffer_from_pairs(inverse[:n_labels], inverse[n_labels:], capacity=_bucket(n_labels))
    items = jnp.asarray(items)
    params, _ = train_lib.fit_jit(train_key(seed), items, buffer, model_config=model_config, train_config=train_config)
    return jax.block_until_ready(params)


@functools.lru_cache(maxsize=8)
def _forward_fn(model_config: ModelConfig):
    return jax.jit(lambda params, x: model_lib.features_and_reward(params, model_config, x))


def item_features(params, model_config: ModelConfig, embeddings: np.ndarray, rows: np.ndarray | None = None):
    """Φ (n, H) float32 and r (n,) float32 of ``embeddings[rows]`` (all rows by default).

    Streams fixed-size chunks (one compilation), so a memory-mapped pool is never loaded whole.
    """
    n_rows = embeddings.shape[0] if rows is None else int(rows.shape[0])
    width = model_config.width
    phi = np.empty((n_rows, width), np.float32)
    rew = np.empty((n_rows,), np.float32)
    if n_rows == 0:
        return phi, rew
    chunk = min(_FEATURE_CHUNK, _bucket(n_rows))
    forward = _forward_fn(model_config)
    for start in range(0, n_rows, chunk):
        stop = min(start + chunk, n_rows)
        block = embeddings[start:stop] if rows is None else embeddings[rows[start:stop]]
        block = np.asarray(block, np.float32)
        if block.shape[0] < chunk:
            block = np.concatenate([block, np.zeros((chunk - block.shape[0], block.shape[1]), np.float32)])
        f, r = forward(params, jnp.asarray(block))
        phi[start:stop] = np.asarray(f)[: stop - start]
        rew[start:stop] = np.asarray(r)[: stop - start]
    return phi, rew


def item_rewards(params, model_config: ModelConfig, embeddings: np.ndarray) -> np.ndarray:
    """Reward of every item: (N,) float32."""
    return item_features(params, model_config, embeddings)[1]


def pairwise_accuracy(reward_winner: np.ndarray, reward_loser: np.ndarray) -> float:
    """Fraction of comparisons the rewards order correctly (an exact tie counts 1/2)."""
    if reward_winner.size == 0:
        return float("nan")
    return float(np.mean((reward_winner > reward_loser) + 0.5 * (reward_winner == reward_loser)))


class SavedModel(NamedTuple):
    params: object
    model_config: ModelConfig
    input_dim: int
    metadata: dict


def model_bytes(params, model_config: ModelConfig, input_dim: int, metadata: dict | None = None) -> bytes:
    """One msgpack document: format tag, version, model config, input dim, metadata and
    ``flax.serialization.to_bytes(params)``."""
    from flax import serialization

    doc = {
        "format": MODEL_FORMAT,
        "version": MODEL_FORMAT_VERSION,
        "model_config": {
            "depth": model_config.depth,
            "width": model_config.width,
            "activation": model_config.activation,
        },
        "input_dim": int(input_dim),
        "metadata": json.dumps(metadata or {}, sort_keys=True),
        "params": serialization.to_bytes(params),
    }
    return serialization.msgpack_serialize(doc)


def save_model(path, params, model_config: ModelConfig, input_dim: int, metadata: dict | None = None) -> None:
    """Write the model file atomically (see :func:`model_bytes`)."""
    io_lib.write_bytes(path, model_bytes(params, model_config, input_dim, metadata))


def load_model(path) -> SavedModel:
    """Read a file written by :func:`save_model`."""
    from flax import serialization

    path = _check_exists(path)
    try:
        doc = serialization.msgpack_restore(path.read_bytes())
    except Exception as err:  # noqa: BLE001
        raise DataError(f"{path}: not an arm-jax model file ({_one_line(err)})") from None
    if not isinstance(doc, dict) or doc.get("format") != MODEL_FORMAT:
        raise DataError(f"{path}: not an arm-jax model file (written by 'arm-jax train')")
    if doc.get("version") != MODEL_FORMAT_VERSION:
        raise DataError(f"{path}: model file version {doc.get('version')} is not supported (expected {MODEL_FORMAT_VERSION})")
    try:
        config = ModelConfig(**doc["model_config"])
        input_dim = int(doc["input_dim"])
        template = jax.eval_shape(lambda key: model_lib.init_params(key, config, input_dim), jax.random.PRNGKey(0))
        params = serialization.from_bytes(template, doc["params"])
        got = jax.tree_util.tree_map(lambda x: (tuple(np.shape(x)), str(np.asarray(x).dtype)), params)
        want = jax.tree_util.tree_map(lambda x: (tuple(x.shape), str(x.dtype)), template)
        if got != want:
            raise ValueError("parameter shapes do not match the model config")
        params = jax.tree_util.tree_map(jnp.asarray, params)
        metadata = json.loads(doc.get("metadata") or "{}")
    except Exception as err:  # noqa: BLE001
        raise DataError(f"{path}: corrupt arm-jax model file ({_one_line(err)})") from None
    return SavedModel(params, config, input_dim, metadata)


# ----------------------------------------------------------------------------- commands


Log = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def _sigmoid(z: np.ndarray) -> np.ndarray:
    """σ(z) in float32, stable for any z."""
    z = np.asarray(z, np.float32)
    return (0.5 * (1.0 + np.tanh(0.5 * z))).astype(np.float32)


def _fmt(x: float) -> float | None:
    """A float32 value as the shortest JSON float that round-trips it (None if not finite)."""
    x = float(x)
    return float(f"{x:.9g}") if math.isfinite(x) else None


class SelectResult(NamedTuple):
    rows: list
    n_items: int
    n_labels: int
    n_ties: int
    n_candidates: int
    n_masked: int
    timings: dict


def select_pairs(
    pool_path,
    labels_path,
    out_path,
    strategy: str,
    k: int,
    pairs: str = "cross-prompt",
    n_candidates: int = DEFAULT_CANDIDATES,
    seed: int = 0,
    model_config: ModelConfig | None = None,
    train_config: TrainConfig | None = None,
    log: Log = _quiet,
) -> SelectResult:
    """Train on the labels, pick the next k pairs, write them as JSON Lines (``select``).

    Each output line: ``{"a": ID, "b": ID, "p_a_wins": float, "score": float, "rank": int}``,
    best first (rank 1). No pair is already labelled (either order) and no item is paired
    with itself. ``labels_path=None`` is the cold start: the untrained, seeded model's
    features are used. Checks every input before training and writes nothing on error.
    """
    model_config = model_config or ModelConfig()
    train_config = train_config or TrainConfig()
    strategies_lib.get_strategy(strategy)
    if pairs not in PAIR_MODES:
        raise DataError(f"unknown --pairs {pairs!r}; choose one of {', '.join(PAIR_MODES)}")
    if isinstance(k, bool) or int(k) != k or k < 1:
        raise DataError(f"--k must be a positive integer, got {k}")
    k = int(k)
    timings = {}
    t0 = time.perf_counter()

    pool = load_pool(pool_path)
    labels = empty_labels() if labels_path is None else load_labels(labels_path, pool)
    labelled = labelled_keys(labels, pool.n)
    if pairs == "all-cross":
        if strategy not in ALL_PAIRS_STRATEGIES:
            raise DataError(
                f"--pairs all-cross scores every pair with one of: {', '.join(ALL_PAIRS_STRATEGIES)} "
                f"(not {strategy}); use --pairs cross-prompt for {strategy}"
            )
        universe = pool.n * (pool.n - 1) // 2
        n_free = universe - labelled.size
        if k > n_free:
            raise DataError(
                f"--k {k} is larger than the {n_free} unlabelled pairs of the {pool.n} items in {pool.path}"
            )
        candidates = None
    else:
        candidates = candidate_pairs(pool, pairs, n_candidates, seed, labelled)
        if k > candidates.n_valid:
            n_masked = candidates.a.size - candidates.n_valid
            raise DataError(
                f"--k {k} is larger than the {candidates.n_valid} unlabelled candidate pairs "
                f"({pairs} pairs of {pool.path}: {candidates.a.size} candidates, {n_masked} already labelled)"
            )
    timings["load"] = time.perf_counter() - t0

    t = time.perf_counter()
    if labels.n == 0:
        log(
            "cold start: no labels, so the pairs are chosen on the untrained (seeded) model's "
            "random features (D-optimal design on the random-init features)"
        )
    params = fit_on_labels(seed, pool.embeddings, labels.winner, labels.loser, model_config, train_config)
    timings["train"] = time.perf_counter() - t

    t = time.perf_counter()
    beta = np.asarray(model_lib.head(params), np.float32)
    if candidates is None:
        phi, rew = item_features(params, model_config, pool.embeddings)
        row_of = None
    else:
        needed = np.unique(np.concatenate([candidates.a, candidates.b, labels.winner, labels.loser]))
        phi, rew = item_features(params, model_config, pool.embeddings, needed)
        row_of = needed
    timings["features"] = time.perf_counter() - t

    def local(rows):
        return rows if row_of is None else np.searchsorted(row_of, rows)

    past = None
    if labels.n:
        past = phi[local(labels.winner)] - phi[local(labels.loser)]

    t = time.perf_counter()
    if candidates is None:
        a, b, scores = _select_all_pairs(strategy, seed, phi, beta, k, past, labelled, pool.n)
        n_cand, n_masked = pool.n * (pool.n - 1) // 2, labelled.size
    else:
        la, lb = local(candidates.a), local(candidates.b)
        phi_diff = phi[la] - phi[lb]
        chosen = strategies_lib.select(
            strategy, select_key(seed), phi_diff, beta, k, valid=candidates.valid, past_phi_diff=past
        )
        idx = np.asarray(chosen.indices)
        a, b, scores = candidates.a[idx], candidates.b[idx], np.asarray(chosen.scores)
        n_cand, n_masked = candidates.a.size, candidates.a.size - candidates.n_valid
    timings["select"] = time.perf_counter() - t

    t = time.perf_counter()
    chosen_keys = pair_keys(a, b, pool.n)
    if np.any(a == b) or np.unique(chosen_keys).size != a.size or np.isin(chosen_keys, labelled).any():
        raise RuntimeError("internal error: selection repeats or relabels a pair")  # never expected
    r_a, r_b = rew[local(a)], rew[local(b)]
    p_a = _sigmoid(r_a - r_b)
    ids = pool.item_ids
    rows = [
        {"a": str(ids[i]), "b": str(ids[j]), "p_a_wins": _fmt(p), "score": _fmt(s), "rank": rank}
        for rank, (i, j, p, s) in enumerate(zip(a.tolist(), b.tolist(), p_a.tolist(), scores.tolist()), start=1)
    ]
    io_lib.write_jsonl(out_path, rows)
    timings["write"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    return SelectResult(rows, pool.n, labels.n, labels.n_ties, n_cand, n_masked, timings)


def _load_allpairs():
    """:mod:`arm_jax.allpairs`, imported on first use; None where it is not installed."""
    try:
        from arm_jax import allpairs
    except ModuleNotFoundError as err:
        if err.name != "arm_jax.allpairs":
            raise
        return None
    return allpairs


def _select_all_pairs(strategy, seed, phi, beta, k, past, labelled, n_items):
    """Top k over every pair of items, skipping labelled ones. Returns (a, b, scores).

    :mod:`arm_jax.allpairs` has no pair mask, so it is asked for somewhat more than k pairs
    and the labelled ones are dropped afterwards (asking again for more, up to k + number of
    labelled pairs, when they crowd the top). Its pool information M counts every pair,
    labelled ones included.
    """
    allpairs = _load_allpairs()
    universe = n_items * (n_items - 1) // 2
    # at most len(labelled) of the best pairs can be labelled ones: ask for that many more
    k_req = int(min(universe, k + labelled.size))
    if allpairs is None:
        if universe > EXPLICIT_ALL_PAIRS_LIMIT:
            raise DataError(
                f"--pairs all-cross over {n_items} items needs arm_jax.allpairs "
                f"(only up to {EXPLICIT_ALL_PAIRS_LIMIT} pairs are listed explicitly)"
            )
        a, b = np.triu_indices(n_items, k=1)
        valid = ~np.isin(pair_keys(a, b, n_items), labelled)
        chosen = strategies_lib.select(
            strategy, select_key(seed), phi[a] - phi[b], beta, k, valid=valid, past_phi_diff=past
        )
        idx = np.asarray(chosen.indices)
        return a[idx].astype(np.int64), b[idx].astype(np.int64), np.asarray(chosen.scores)
    # Ask for a few more than k; if labelled pairs crowd the top, ask again for more (up to
    # k + #labelled, which always suffices). The first k unlabelled of the best k_try are the
    # best k unlabelled as soon as there are k of them.
    k_try = int(min(k_req, k + min(labelled.size, max(k, 64))))
    while True:
        result = allpairs.select_all_pairs(strategy, select_key(seed), phi, beta, k_try, past_phi_diff=past)
        u = np.asarray(result.u, np.int64)
        v = np.asarray(result.v, np.int64)
        keep = np.flatnonzero(~np.isin(pair_keys(u, v, n_items), labelled))
        if keep.size >= k or k_try >= k_req:
            keep = keep[:k]
            return u[keep], v[keep], np.asarray(result.scores)[keep]
        k_try = int(min(k_req, 2 * k_try))


class TrainResult(NamedTuple):
    n_items: int
    n_labels: int
    n_ties: int
    n_train: int
    n_val: int
    train_accuracy: float
    val_accuracy: float
    refit: bool
    timings: dict


def split_labels(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, validation rows) of n labels: a seeded shuffle, round(fraction·n)
    held out, at least one on each side whenever n ≥ 2 and the fraction is positive."""
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    n_val = 0
    if val_fraction > 0 and n >= 2:
        n_val = min(n - 1, max(1, int(round(val_fraction * n))))
    perm = np.random.default_rng([seed, 3]).permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def train_model(
    pool_path,
    labels_path,
    out_path,
    val_fraction: float = 0.1,
    refit: bool = True,
    seed: int = 0,
    model_config: ModelConfig | None = None,
    train_config: TrainConfig | None = None,
    log: Log = _quiet,
) -> TrainResult:
    """Fit on a training split, report held-out and training pairwise accuracy, save (``train``).

    With ``refit`` (the default) the saved model is then trained again on *all* labels with
    the same seed (so it is exactly the model ``select --seed`` trains on these labels); the
    held-out accuracy is the estimate of its quality. Without ``refit`` the train-split model
    that the accuracies were measured on is saved.
    """
    model_config = model_config or ModelConfig()
    train_config = train_config or TrainConfig()
    timings = {}
    t0 = time.perf_counter()
    pool = load_pool(pool_path)
    labels = load_labels(labels_path, pool)
    if labels.n == 0:
        raise DataError(f"{labels.path}: no labels to train on (ties are not used for training)")
    tr, va = split_labels(labels.n, val_fraction, seed)
    timings["load"] = time.perf_counter() - t0

    t = time.perf_counter()
    params = fit_on_labels(seed, pool.embeddings, labels.winner[tr], labels.loser[tr], model_config, train_config)
    timings["train"] = time.perf_counter() - t

    t = time.perf_counter()
    rows = np.unique(np.concatenate([labels.winner, labels.loser]))
    _, rew = item_features(params, model_config, pool.embeddings, rows)
    rw = rew[np.searchsorted(rows, labels.winner)]
    rl = rew[np.searchsorted(rows, labels.loser)]
    train_acc = pairwise_accuracy(rw[tr], rl[tr])
    val_acc = pairwise_accuracy(rw[va], rl[va])
    timings["evaluate"] = time.perf_counter() - t

    did_refit = bool(refit and va.size > 0)
    if did_refit:
        t = time.perf_counter()
        params = fit_on_labels(seed, pool.embeddings, labels.winner, labels.loser, model_config, train_config)
        timings["refit"] = time.perf_counter() - t

    metadata = {
        "pool": os.path.basename(pool.path),
        "labels": os.path.basename(labels.path),
        "n_labels": labels.n,
        "n_train": int(tr.size),
        "n_val": int(va.size),
        "seed": seed,
        "val_fraction": val_fraction,
        "refit_on_all_labels": did_refit,
        "train_accuracy": None if math.isnan(train_acc) else train_acc,
        "val_accuracy": None if math.isnan(val_acc) else val_acc,
        "train_config": {
            "steps": train_config.steps,
            "batch_size": train_config.batch_size,
            "learning_rate": train_config.learning_rate,
            "weight_decay": train_config.weight_decay,
        },
    }
    t = time.perf_counter()
    save_model(out_path, params, model_config, pool.dim, metadata)
    timings["write"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    return TrainResult(pool.n, labels.n, labels.n_ties, int(tr.size), int(va.size), train_acc, val_acc, did_refit, timings)


def score_paths(out) -> tuple[Path, Path]:
    """``--out X`` -> (X.npy, X.csv); a trailing .npy or .csv on X is dropped first."""
    out = Path(out)
    if out.suffix.lower() in (".npy", ".csv"):
        out = out.with_suffix("")
    return out.with_name(out.name + ".npy"), out.with_name(out.name + ".csv")


class ScoreResult(NamedTuple):
    rewards: np.ndarray
    npy_path: Path
    csv_path: Path
    timings: dict


def score_pool(model_path, pool_path, out, log: Log = _quiet) -> ScoreResult:
    """Reward of every pool item under a saved model -> ``OUT.npy`` (N,) float32 and ``OUT.csv``
    (columns item_id,prompt_id,reward in pool order; prompt_id empty when the pool has none)."""
    timings = {}
    t0 = time.perf_counter()
    saved = load_model(model_path)
    pool = load_pool(pool_path)
    if saved.input_dim != pool.dim:
        raise DataError(
            f"{model_path}: the model takes embeddings of dimension {saved.input_dim}, "
            f"but the pool {pool.path} has dimension {pool.dim}"
        )
    timings["load"] = time.perf_counter() - t0
    t = time.perf_counter()
    rewards = item_rewards(saved.params, saved.model_config, pool.embeddings)
    timings["score"] = time.perf_counter() - t
    t = time.perf_counter()
    npy_path, csv_path = score_paths(out)
    prompts = pool.prompt_ids.tolist() if pool.prompt_ids is not None else [""] * pool.n
    io_lib.save_npy(npy_path, rewards)
    io_lib.write_csv(
        csv_path,
        ["item_id", "prompt_id", "reward"],
        ((i, p, f"{r:.9g}") for i, p, r in zip(pool.item_ids.tolist(), prompts, rewards.tolist())),
    )
    timings["write"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    return ScoreResult(rewards, npy_path, csv_path, timings)
