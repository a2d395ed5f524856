"""Tests for arm_jax.experiment.datasets: file loading, the 2-D mixture task and the LLM-like task."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from arm_jax.experiment import datasets as data
from arm_jax.experiment.datasets import (
    Dataset,
    gaussian_mixture_2d,
    llm_like,
    load_paper_files,
    mixture_log_density,
)
from arm_jax.runtime.arrays import count_nonfinite

# --------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------


def _write(tmp_path, name, array):
    path = tmp_path / name
    np.save(path, array)
    return path


def _paper_files(tmp_path, train_shape=(6, 3, 4), test_shape=(2, 5, 4), reward_trailing_one=True):
    rng = np.random.default_rng(0)
    arrays = {
        "embd_train.npy": rng.normal(size=train_shape).astype(np.float32),
        "reward_train.npy": rng.normal(size=train_shape[:2] + ((1,) if reward_trailing_one else ())),
        "embd_test.npy": rng.normal(size=test_shape).astype(np.float32),
        "reward_test.npy": rng.normal(size=test_shape[:2] + (1,)),
    }
    paths = {name: _write(tmp_path, name, array) for name, array in arrays.items()}
    return arrays, [paths[n] for n in ("embd_train.npy", "reward_train.npy", "embd_test.npy", "reward_test.npy")]


@pytest.mark.parametrize("trailing_one", [True, False])
def test_load_paper_files_round_trip(tmp_path, trailing_one):
    arrays, paths = _paper_files(tmp_path, reward_trailing_one=trailing_one)
    ds = load_paper_files(*paths)
    assert isinstance(ds, Dataset)
    assert isinstance(ds.train_embeddings, np.memmap) and isinstance(ds.test_embeddings, np.memmap)
    assert ds.train_embeddings.shape == (6, 3, 4) and ds.test_embeddings.shape == (2, 5, 4)
    assert ds.train_rewards.shape == (6, 3) and ds.test_rewards.shape == (2, 5)
    assert ds.train_rewards.dtype == np.float32 and ds.test_rewards.dtype == np.float32
    np.testing.assert_array_equal(ds.train_embeddings, arrays["embd_train.npy"])
    np.testing.assert_allclose(ds.train_rewards, arrays["reward_train.npy"].reshape(6, 3), rtol=1e-6)
    np.testing.assert_allclose(ds.test_rewards, arrays["reward_test.npy"][..., 0], rtol=1e-6)


def test_missing_file_names_the_path(tmp_path):
    _, paths = _paper_files(tmp_path)
    missing = tmp_path / "embd_nope.npy"
    with pytest.raises(ValueError, match=re.escape(f"embeddings file not found: {missing}")) as info:
        load_paper_files(paths[0], paths[1], missing, paths[3])
    assert isinstance(info.value, FileNotFoundError)


def test_wrong_ndim(tmp_path):
    _, paths = _paper_files(tmp_path)
    flat = _write(tmp_path, "embd_flat.npy", np.zeros((6, 4), np.float32))
    with pytest.raises(ValueError, match=re.escape(f"embeddings file {flat}: expected a 3-d array (prompts, responses, D), got 2-d with shape (6, 4)")):
        load_paper_files(flat, *paths[1:])
    bad_rewards = _write(tmp_path, "reward_bad.npy", np.zeros((6, 3, 2)))
    with pytest.raises(ValueError, match=re.escape(f"rewards file {bad_rewards}: expected shape (prompts, responses, 1) or (prompts, responses), got shape (6, 3, 2)")):
        load_paper_files(paths[0], bad_rewards, *paths[2:])


def test_shape_mismatch_gives_both_shapes(tmp_path):
    _, paths = _paper_files(tmp_path)
    short = _write(tmp_path, "reward_short.npy", np.zeros((5, 3, 1)))
    message = f"rewards file {short}: shape (5, 3) does not match the (prompts, responses) of embeddings file {paths[0]} with shape (6, 3, 4)"
    with pytest.raises(ValueError, match=re.escape(message)):
        load_paper_files(paths[0], short, *paths[2:])


def test_non_float_dtype(tmp_path):
    _, paths = _paper_files(tmp_path)
    ints = _write(tmp_path, "embd_int.npy", np.zeros((2, 5, 4), np.int64))
    with pytest.raises(ValueError, match=re.escape(f"embeddings file {ints}: dtype int64 is not a floating-point type")):
        load_paper_files(paths[0], paths[1], ints, paths[3])


def test_train_test_dimension_mismatch(tmp_path):
    _, paths = _paper_files(tmp_path)
    wide = _write(tmp_path, "embd_wide.npy", np.zeros((2, 5, 7), np.float32))
    message = f"test embeddings file {wide}: embedding dimension D=7 differs from D=4 of train embeddings file {paths[0]}"
    with pytest.raises(ValueError, match=re.escape(message)):
        load_paper_files(paths[0], paths[1], wide, paths[3])


def test_non_finite_values_are_counted(tmp_path):
    arrays, paths = _paper_files(tmp_path)
    bad = arrays["embd_train.npy"].copy()
    bad[0, 0, 0] = np.nan
    bad[3, 1, 2] = np.inf
    bad[5, 2, 3] = -np.inf
    bad_path = _write(tmp_path, "embd_bad.npy", bad)
    with pytest.raises(ValueError, match=re.escape(f"embeddings file {bad_path}: 3 non-finite value(s) (NaN or inf) of 72")):
        load_paper_files(bad_path, *paths[1:])
    bad_rewards = arrays["reward_test.npy"].copy()
    bad_rewards[1, 4, 0] = np.nan
    bad_rewards_path = _write(tmp_path, "reward_bad.npy", bad_rewards)
    with pytest.raises(ValueError, match=re.escape(f"rewards file {bad_rewards_path}: 1 non-finite value(s)")):
        load_paper_files(*paths[:3], bad_rewards_path)
    # The check can be skipped.
    assert load_paper_files(bad_path, *paths[1:], check_finite=False).train_embeddings.shape == (6, 3, 4)


def test_unreadable_file(tmp_path):
    _, paths = _paper_files(tmp_path)
    junk = tmp_path / "embd_junk.npy"
    junk.write_bytes(b"not an npy file")
    with pytest.raises(ValueError, match=re.escape(f"embeddings file {junk}: cannot be read as .npy")):
        load_paper_files(junk, *paths[1:])


def test_count_nonfinite_in_chunks(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(37, 3, 5)).astype(np.float32)
    x[rng.random(x.shape) < 0.1] = np.nan
    x[0, 0, 0] = np.inf
    expected = int(np.sum(~np.isfinite(x)))
    path = _write(tmp_path, "x.npy", x)
    memmap = np.load(path, mmap_mode="r")
    for chunk_bytes in (1, 60, 200, 1 << 20):  # 1 prompt per chunk up to all at once
        assert count_nonfinite(memmap, chunk_bytes=chunk_bytes) == expected


# --------------------------------------------------------------------------------------
# Figure 1: two Gaussians in 2-D
# --------------------------------------------------------------------------------------


def test_gaussian_mixture_2d_matches_scipy():
    ds = gaussian_mixture_2d(jax.random.key(0), n_train_prompts=20, n_responses=5, n_test_prompts=3, n_test_responses=7)
    assert ds.train_embeddings.shape == (20, 5, 2) and ds.train_rewards.shape == (20, 5)
    assert ds.test_embeddings.shape == (3, 7, 2) and ds.test_rewards.shape == (3, 7)
    for x in (ds.train_embeddings, ds.train_rewards, ds.test_embeddings, ds.test_rewards):
        assert x.dtype == jnp.float32
    for emb, rew in ((ds.train_embeddings, ds.train_rewards), (ds.test_embeddings, ds.test_rewards)):
        pts = np.asarray(emb, np.float64).reshape(-1, 2)
        density = 0.5 * scipy.stats.multivariate_normal([-2.5, -2.5], 0.25 * np.eye(2)).pdf(pts)
        density += 0.5 * scipy.stats.multivariate_normal([2.5, 2.5], 0.25 * np.eye(2)).pdf(pts)
        np.testing.assert_allclose(np.asarray(rew).reshape(-1), np.log(density), rtol=1e-5, atol=1e-4)
    # Points are standard normal.
    pts = np.asarray(ds.train_embeddings).reshape(-1, 2)
    assert np.all(np.abs(pts.mean(0)) < 0.3) and np.all(np.abs(pts.std(0) - 1) < 0.2)


def test_mixture_log_density_is_finite_far_away_and_peaks_at_the_means():
    far = mixture_log_density(jnp.asarray([[100.0, -100.0], [-60.0, -60.0]]))
    assert np.all(np.isfinite(np.asarray(far)))
    log_norm = -np.log(2 * np.pi * 0.25)
    # (100, -100) is equally far from both means: both components count.
    assert float(far[0]) == pytest.approx(log_norm - 2 * (102.5**2 + 97.5**2), rel=1e-6)
    # (-60, -60): only the nearer Gaussian counts (the other is exp(-13 000) smaller).
    assert float(far[1]) == pytest.approx(np.log(0.5) + log_norm - 2 * (2 * 57.5**2), rel=1e-6)
    values = mixture_log_density(jnp.asarray([[-2.5, -2.5], [2.5, 2.5], [0.0, 0.0]]))
    assert float(values[0]) == pytest.approx(float(values[1]), abs=1e-5)
    assert float(values[0]) > float(values[2])


def test_gaussian_mixture_is_deterministic():
    first = gaussian_mixture_2d(jax.random.key(1), 4, 3, 2, 2)
    second = gaussian_mixture_2d(jax.random.key(1), 4, 3, 2, 2)
    third = gaussian_mixture_2d(jax.random.key(2), 4, 3, 2, 2)
    np.testing.assert_array_equal(np.asarray(first.train_embeddings), np.asarray(second.train_embeddings))
    assert not np.allclose(np.asarray(first.train_embeddings), np.asarray(third.train_embeddings))


# --------------------------------------------------------------------------------------
# LLM-like
# --------------------------------------------------------------------------------------

SMALL = dict(n_train_prompts=300, n_responses=8, n_test_prompts=40, n_test_responses=25, dim=64)


@pytest.fixture(scope="module")
def small_llm():
    return llm_like(jax.random.key(0), **SMALL)


def _ridge_r2(train_x, train_y, test_x, test_y, lam=1.0):
    """Test-set R² of a ridge regression fitted on the training set (float64, numpy)."""
    train_x = np.asarray(train_x, np.float64).reshape(-1, train_x.shape[-1])
    test_x = np.asarray(test_x, np.float64).reshape(-1, train_x.shape[-1])
    train_y = np.asarray(train_y, np.float64).reshape(-1)
    test_y = np.asarray(test_y, np.float64).reshape(-1)
    mx, my = train_x.mean(0), train_y.mean()
    xc = train_x - mx
    w = np.linalg.solve(xc.T @ xc + lam * np.eye(xc.shape[1]), xc.T @ (train_y - my))
    residual = test_y - ((test_x - mx) @ w + my)
    return 1.0 - np.mean(residual**2) / np.var(test_y)


def test_llm_like_shapes_and_dtypes(small_llm):
    ds = small_llm
    assert ds.train_embeddings.shape == (300, 8, 64) and ds.train_rewards.shape == (300, 8)
    assert ds.test_embeddings.shape == (40, 25, 64) and ds.test_rewards.shape == (40, 25)
    for x in (ds.train_embeddings, ds.train_rewards, ds.test_embeddings, ds.test_rewards):
        assert isinstance(x, jax.Array) and x.dtype == jnp.float32
        assert np.all(np.isfinite(np.asarray(x)))


def test_llm_like_is_deterministic(small_llm):
    again = llm_like(jax.random.key(0), **SMALL)
    for x, y in zip(small_llm, again):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    other = llm_like(jax.random.key(1), **SMALL)
    assert not np.allclose(np.asarray(small_llm.train_rewards), np.asarray(other.train_rewards))


def test_llm_like_scale(small_llm):
    # Noise-free coordinates have RMS 1 in expectation (set on the task's reference sample), plus noise of std 0.1.
    rms = float(np.sqrt(np.mean(np.asarray(small_llm.train_embeddings) ** 2)))
    assert rms == pytest.approx(np.sqrt(1 + 0.1**2), rel=0.1)
    test_rms = float(np.sqrt(np.mean(np.asarray(small_llm.test_embeddings) ** 2)))
    assert 0.8 < test_rms < 1.2
    assert 0.5 < float(np.std(np.asarray(small_llm.train_rewards))) < 3.0


def test_llm_like_reward_is_mostly_within_prompt(small_llm):
    rewards = np.asarray(small_llm.train_rewards)
    within = np.mean(np.var(rewards, axis=1))
    assert within / np.var(rewards) > 0.6  # ranking the responses of one prompt is meaningful
    prompt_means = rewards.mean(axis=1)
    # ... but the prompt matters too: prompt means vary more than averaging 8 iid rewards would.
    assert np.var(prompt_means) > 1.5 * within / rewards.shape[1]


def test_llm_like_responses_of_a_prompt_share_structure(small_llm):
    emb = np.asarray(small_llm.train_embeddings)
    same_prompt = np.mean(np.sum((emb[:, 0] - emb[:, 1]) ** 2, -1))
    other_prompt = np.mean(np.sum((emb[:-1, 0] - emb[1:, 1]) ** 2, -1))
    assert same_prompt < 0.9 * other_prompt


def test_llm_like_is_learnable_by_a_linear_probe(small_llm):
    ds = small_llm
    r2 = _ridge_r2(ds.train_embeddings, ds.train_rewards, ds.test_embeddings, ds.test_rewards)
    assert r2 > 0.5
    # A reward that is pure noise cannot be learned from the same embeddings.
    rng = np.random.default_rng(0)
    noise_r2 = _ridge_r2(
        ds.train_embeddings,
        rng.normal(size=ds.train_rewards.shape),
        ds.test_embeddings,
        rng.normal(size=ds.test_rewards.shape),
    )
    assert noise_r2 < 0.05


def test_llm_like_embeddings_lie_near_a_low_dimensional_manifold():
    ds = llm_like(jax.random.key(3), n_train_prompts=100, n_responses=4, n_test_prompts=2, n_test_responses=3, dim=48, hidden_dim=16, noise=0.0)
    x = np.asarray(ds.train_embeddings, np.float64).reshape(-1, 48)
    singular = np.linalg.svd(x - x.mean(0), compute_uv=False)
    # Without noise the embeddings span at most hidden_dim = 16 directions.
    assert singular[16] < 1e-4 * singular[0]
    assert singular[15] > 1e-3 * singular[0]


def test_llm_like_errors():
    key = jax.random.key(0)
    with pytest.raises(ValueError, match=r"llm_like: prompt_latent_fraction must be in \[0, 1\), got 1.0"):
        llm_like(key, prompt_latent_fraction=1.0)
    with pytest.raises(ValueError, match="prompt_latent_fraction=0.9 with latent_dim=2 leaves no response latent"):
        llm_like(key, latent_dim=2, prompt_latent_fraction=0.9)
    with pytest.raises(ValueError, match="llm_like: dim must be >= 1, got 0"):
        llm_like(key, dim=0)





@pytest.mark.parametrize("generator", ["llm_like", "gaussian_mixture_2d"])
def test_test_set_depends_only_on_its_own_sizes_and_key(generator):
    key = jax.random.PRNGKey(11)
    small = dict(n_test_prompts=3, n_test_responses=4)
    if generator == "llm_like":
        small.update(dim=8, latent_dim=4, hidden_dim=8)
    make = getattr(data, generator)
    a = make(key, n_train_prompts=5, n_responses=3, **small)
    b = make(key, n_train_prompts=9, n_responses=3, **small)
    np.testing.assert_array_equal(np.asarray(a.test_embeddings), np.asarray(b.test_embeddings))
    np.testing.assert_array_equal(np.asarray(a.test_rewards), np.asarray(b.test_rewards))
