"""What the workflow tests share: a pool file of random embeddings and a small loaded pool."""
import numpy as np
import pytest

from arm_jax.workflow import pool as pool_io


def write_npz(path, n=20, d=4, prompts=None, item_ids=None, seed=0, **extra):
    """A pool .npz of n random (d,) embeddings (and prompt ids, item ids, extra arrays); returns
    the embeddings."""
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    arrays = {"embeddings": x, **extra}
    if prompts is not None:
        arrays["prompt_ids"] = prompts
    if item_ids is not None:
        arrays["item_ids"] = item_ids
    np.savez(path, **arrays)
    return x


@pytest.fixture
def npz():
    """:func:`write_npz`, for tests that write their own pools."""
    return write_npz


@pytest.fixture
def pool(tmp_path):
    """Six items in two prompts, ids a b c 3 4 5."""
    write_npz(tmp_path / "pool.npz", n=6, prompts=np.array([0, 0, 0, 1, 1, 1]),
              item_ids=np.array(["a", "b", "c", "3", "4", "5"]))
    return pool_io.load_pool(tmp_path / "pool.npz")
