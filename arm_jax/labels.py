"""Labelled comparisons: the JSON Lines file annotators append to, parsed and checked.

Format (:func:`load_labels`): one comparison per line, ``{"winner": ID, "loser": ID}``,
UTF-8 (a byte-order mark at the start is accepted). Ids may be JSON strings or integers and
are compared as strings (``3`` and ``"3"`` are the same item). Extra fields are ignored;
blank lines are skipped. A line with ``"tie": true`` is a comparison the annotator could not
decide: the Bradley–Terry model has no ties, so it is *not used for training*, but its pair
counts as already labelled. The same pair may be labelled more than once (repeated
annotations are all used). Every problem raises :class:`~arm_jax.errors.InputError` naming
``file:line``.
"""
from __future__ import annotations

import json
from typing import NamedTuple

import numpy as np

from arm_jax.errors import InputError
from arm_jax.io import require_file
from arm_jax.pool_io import Pool


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
        raise InputError(
            f"{path}:{lineno}: {field} must be a string or an integer id, got {json.dumps(value)}"
        )
    return str(value)


def _parse_line(path, lineno: int, text: str, index: dict[str, int], pool: Pool):
    """(winner row, loser row, tie) of one non-blank line."""
    try:
        row = json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(f"{path}:{lineno}: not valid JSON ({err.msg})") from None
    if not isinstance(row, dict):
        raise InputError(f"{path}:{lineno}: expected a JSON object like {{\"winner\": ..., \"loser\": ...}}")
    for field in ("winner", "loser"):
        if field not in row:
            raise InputError(f"{path}:{lineno}: missing field '{field}'")
    ids = [_label_id(path, lineno, f, row[f]) for f in ("winner", "loser")]
    rows = []
    for item_id in ids:
        if item_id not in index:
            raise InputError(f"{path}:{lineno}: id {item_id!r} is not in the pool {pool.path}")
        rows.append(index[item_id])
    if rows[0] == rows[1]:
        raise InputError(f"{path}:{lineno}: winner and loser are the same item {ids[0]!r}")
    tie = row.get("tie", False)
    if not isinstance(tie, bool):
        raise InputError(f"{path}:{lineno}: field 'tie' must be true or false, got {json.dumps(tie)}")
    return rows[0], rows[1], tie


def load_labels(path, pool: Pool) -> Labels:
    """Read ``{"winner": ID, "loser": ID}`` lines and map the ids to pool rows."""
    path = require_file(path)
    index = pool.index_of()
    winner, loser, lines, tie_a, tie_b = [], [], [], [], []
    try:
        handle = open(path, encoding="utf-8-sig")
    except OSError as err:
        raise InputError(f"{path}: cannot read ({err.strerror or err})") from None
    with handle:
        try:
            for lineno, text in enumerate(handle, start=1):
                if not text.strip():
                    continue
                w, l, tie = _parse_line(path, lineno, text, index, pool)
                if tie:
                    tie_a.append(w)
                    tie_b.append(l)
                else:
                    winner.append(w)
                    loser.append(l)
                    lines.append(lineno)
        except UnicodeDecodeError:
            raise InputError(f"{path}: not a UTF-8 text file") from None

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


def split_labels(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, validation rows) of n labels: a seeded shuffle (``default_rng([seed, 3])``),
    round(fraction·n) held out, at least one on each side whenever n ≥ 2 and the fraction is
    positive."""
    if not 0.0 <= val_fraction < 1.0:
        raise InputError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    n_val = 0
    if val_fraction > 0 and n >= 2:
        n_val = min(n - 1, max(1, int(round(val_fraction * n))))
    perm = np.random.default_rng([seed, 3]).permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])
