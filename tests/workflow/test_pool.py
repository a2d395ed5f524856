"""Reading a pool: .npy and .npz layouts, ids, and the checks of bad pools."""
from __future__ import annotations

import numpy as np
import pytest

from arm_jax.errors import InputError
from arm_jax.workflow import pool as pool_io

# ----------------------------------------------------------------------------- pools


def test_npy_paper_layout_is_memory_mapped_with_prompt_ids(tmp_path):
    x = np.arange(3 * 4 * 5, dtype=np.float32).reshape(3, 4, 5)
    np.save(tmp_path / "pool.npy", x)
    pool = pool_io.load_pool(tmp_path / "pool.npy")
    assert isinstance(pool.embeddings, np.memmap)
    assert (pool.n, pool.dim) == (12, 5)
    assert pool.item_ids.tolist()[:5] == ["0:0", "0:1", "0:2", "0:3", "1:0"]
    assert pool.prompt_ids.tolist() == ["0"] * 4 + ["1"] * 4 + ["2"] * 4
    np.testing.assert_array_equal(pool.embeddings[pool.index_of()["2:1"]], x[2, 1])


def test_npy_two_dimensional_has_row_ids_and_no_prompts(tmp_path):
    np.save(tmp_path / "pool.npy", np.ones((3, 2), np.float64))
    pool = pool_io.load_pool(tmp_path / "pool.npy")
    assert pool.item_ids.tolist() == ["0", "1", "2"] and pool.prompt_ids is None


def test_npz_ids_integers_become_strings(npz, tmp_path):
    npz(tmp_path / "p.npz", n=4, prompts=np.array([7, 7, 8, 8]), item_ids=np.array([10, 11, 12, 13]))
    pool = pool_io.load_pool(tmp_path / "p.npz")
    assert pool.item_ids.tolist() == ["10", "11", "12", "13"]
    assert pool.prompt_ids.tolist() == ["7", "7", "8", "8"]


def test_npz_default_ids_are_row_numbers(npz, tmp_path):
    npz(tmp_path / "p.npz", n=3)
    pool = pool_io.load_pool(tmp_path / "p.npz")
    assert pool.item_ids.tolist() == ["0", "1", "2"] and pool.prompt_ids is None


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"embeddings": np.zeros((2, 3, 4, 5), np.float32)}, "expected (N, D)"),
        ({"embeddings": np.zeros((5, 3), np.int64)}, "dtype int64, expected float16, float32 or float64"),
        ({"vectors": np.zeros((5, 3), np.float32)}, "no 'embeddings' array (found: vectors)"),
        ({"embeddings": np.zeros((1, 3), np.float32)}, "at least 2 are needed"),
        ({"embeddings": np.zeros((3, 2), np.float32), "item_ids": np.array(["a", "b", "a"])},
         "item_ids are not unique ('a' at rows 0 and 2)"),
        ({"embeddings": np.zeros((3, 2), np.float32), "prompt_ids": np.array([1, 2])},
         "prompt_ids has shape (2,), expected (3,)"),
        ({"embeddings": np.zeros((3, 2), np.float32), "item_ids": np.array([0.5, 1.5, 2.5])},
         "item_ids has dtype float64, expected strings or integers"),
        ({"embeddings": np.zeros((2, 2), np.float32), "item_ids": np.array(["a", None], dtype=object)},
         "item_ids cannot be read without pickle"),
    ],
)
def test_bad_npz_pools(tmp_path, arrays, message):
    np.savez(tmp_path / "p.npz", **arrays)
    with pytest.raises(InputError, match=None) as err:
        pool_io.load_pool(tmp_path / "p.npz")
    assert message in str(err.value)
    assert str(tmp_path / "p.npz") in str(err.value)


def test_nonfinite_rows_are_counted(tmp_path):
    x = np.zeros((50, 3), np.float32)
    x[7, 1] = np.nan
    x[9] = np.inf
    x[40, 0] = -np.inf
    np.save(tmp_path / "p.npy", x)
    assert pool_io.nonfinite_rows(np.load(tmp_path / "p.npy", mmap_mode="r"), chunk_bytes=24) == (3, 7)
    with pytest.raises(InputError, match=r"3 row\(s\) of embeddings contain NaN or inf \(first: row 7, item '7'\)"):
        pool_io.load_pool(tmp_path / "p.npy")


def test_missing_unknown_and_garbage_pools(tmp_path):
    with pytest.raises(FileNotFoundError):
        pool_io.load_pool(tmp_path / "nope.npz")
    (tmp_path / "p.txt").write_text("1 2 3")
    with pytest.raises(InputError, match="unknown pool format '.txt'"):
        pool_io.load_pool(tmp_path / "p.txt")
    (tmp_path / "p.npy").write_text("not numpy")
    with pytest.raises(InputError, match="not a readable .npy file"):
        pool_io.load_pool(tmp_path / "p.npy")


# ----------------------------------------------------------------------------- labels



def test_float64_beyond_float32_range_counts_as_not_finite(tmp_path):
    x = np.zeros((5, 2))
    x[2, 1] = 1e300  # finite in float64, inf as float32
    np.save(tmp_path / "p.npy", x)
    with pytest.raises(InputError, match=r"1 row\(s\) of embeddings contain NaN or inf \(or values beyond float32's "
                                         r"range\) \(first: row 2, item '2'\)"):
        pool_io.load_pool(tmp_path / "p.npy")
