"""Data sets for active reward modelling: the paper's files and two generators.

Every data set has the paper's layout: items are (prompt, response) pairs, each with an
embedding of dimension ``D`` and a scalar golden reward.

- ``train_embeddings``: ``(P, R, D)``: ``P`` training prompts with ``R`` responses each
  (the paper: 40 000 x 10).
- ``test_embeddings``: ``(Pt, Rt, D)``: ``Pt`` test prompts with ``Rt`` generations each
  (the paper: 2 000 x 500).

Training items are numbered ``item = prompt * R + response``, which is the order of
``train_embeddings.reshape(P * R, D)``.

Three sources:

- :func:`load_paper_files` reads the paper's ``embd_*.npy`` / ``reward_*.npy`` files
  (memory-mapped, so a 10 GB file is not read whole) and validates them.
- :func:`gaussian_mixture_2d`: the 2-D task of the paper's Figure 1.
- :func:`llm_like`: a high-dimensional synthetic task whose embeddings lie near a
  low-dimensional nonlinear manifold, like real LLM embeddings.
"""
from __future__ import annotations

import functools
import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from arm_jax.errors import DataFileError, InputError, MissingDataFileError
from arm_jax.runtime.arrays import ArrayLike, PathLike, count_nonfinite

__all__ = ['Dataset', 'load_paper_files', 'load_npy_embeddings', 'load_npy_rewards', 'gaussian_mixture_2d', 'mixture_log_density', 'llm_like']


class Dataset(NamedTuple):
    """Train and test items with their embeddings and golden rewards.

    Attributes:
      train_embeddings: ``(P, R, D)`` float (float32 for the generators; whatever the file
        holds for :func:`load_paper_files`, where it may be a read-only ``np.memmap``).
      train_rewards: ``(P, R)`` float32 golden rewards.
      test_embeddings: ``(Pt, Rt, D)`` float, same ``D`` as the training set.
      test_rewards: ``(Pt, Rt)`` float32 golden rewards.
      train_ratings: ``(P, R, M)`` float, every rater's rating of each training item, NaN
        where an item has fewer than M raters (``ratings_train.npy`` of ``make ratings-data``);
        what the empirical annotator draws from. None: no recorded ratings.
    """

    train_embeddings: ArrayLike
    train_rewards: ArrayLike
    test_embeddings: ArrayLike
    test_rewards: ArrayLike
    train_ratings: ArrayLike | None = None


def _open_npy(path: PathLike, what: str) -> np.ndarray:
    """Memory-map one ``.npy`` file; one-line errors that name the path."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise MissingDataFileError(f"{what} file not found: {path}")
    if os.path.isdir(path):
        raise DataFileError(f"{what} file {path}: is a directory, expected a .npy file")
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as err:  # noqa: BLE001 - rewrap into a one-line message
        first_line = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataFileError(f"{what} file {path}: cannot be read as .npy ({first_line})") from err
    if not isinstance(array, np.ndarray):  # np.load returns NpzFile for .npz archives
        raise DataFileError(f"{what} file {path}: expected a single .npy array, got {type(array).__name__}")
    if not np.issubdtype(array.dtype, np.floating):
        raise DataFileError(f"{what} file {path}: dtype {array.dtype} is not a floating-point type")
    return array


def _check_finite(array: np.ndarray, path: str, what: str) -> None:
    bad = count_nonfinite(array)
    if bad:
        raise DataFileError(f"{what} file {path}: {bad} non-finite value(s) (NaN or inf) of {array.size}")


def load_npy_embeddings(path: PathLike, check_finite: bool = True) -> np.ndarray:
    """Memory-map an embeddings file ``embd_*.npy`` and validate it.

    Args:
      path: a ``.npy`` file holding a ``(prompts, responses, D)`` floating-point array.
      check_finite: scan the file (in chunks) for NaN/inf.

    Returns:
      ``(P, R, D)`` read-only ``np.memmap`` of the file's dtype (not converted, so the
      file is not read whole; cast slices to float32 when you use them).

    Raises:
      MissingDataFileError: (a ``ValueError``) the file does not exist.
      DataFileError: (a ``ValueError``) not 3-D, not floating point, or NaN/inf inside.
    """
    path = os.fspath(path)
    array = _open_npy(path, "embeddings")
    if array.ndim != 3:
        raise DataFileError(
            f"embeddings file {path}: expected a 3-d array (prompts, responses, D), "
            f"got {array.ndim}-d with shape {array.shape}"
        )
    if check_finite:
        _check_finite(array, path, "embeddings")
    return array


def load_npy_rewards(path: PathLike, check_finite: bool = True) -> np.ndarray:
    """Load a golden-reward file ``reward_*.npy`` and validate it.

    Args:
      path: a ``.npy`` file holding ``(prompts, responses, 1)`` or ``(prompts, responses)``
        floating-point rewards.
      check_finite: reject NaN/inf.

    Returns:
      ``(P, R)`` float32 ``np.ndarray`` (rewards are small, so they are read into memory).

    Raises:
      MissingDataFileError, DataFileError: both ``ValueError``; see
      :func:`load_npy_embeddings`.
    """
    path = os.fspath(path)
    array = _open_npy(path, "rewards")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    elif array.ndim != 2:
        raise DataFileError(
            f"rewards file {path}: expected shape (prompts, responses, 1) or (prompts, responses), "
            f"got shape {array.shape}"
        )
    if check_finite:
        _check_finite(array, path, "rewards")
    return np.asarray(array, dtype=np.float32)


def load_paper_files(
    train_embeddings: PathLike,
    train_rewards: PathLike,
    test_embeddings: PathLike,
    test_rewards: PathLike,
    check_finite: bool = True,
) -> Dataset:
    """Read the paper's embedding and reward files into a :class:`Dataset`.

    Args:
      train_embeddings: path of ``embd_*.npy``, ``(P, R, D)`` (the paper: 40 000 x 10 x D).
      train_rewards: path of ``reward_*.npy``, ``(P, R, 1)`` or ``(P, R)``.
      test_embeddings: path, ``(Pt, Rt, D)`` (the paper: 2 000 x 500 x D).
      test_rewards: path, ``(Pt, Rt, 1)`` or ``(Pt, Rt)``.
      check_finite: scan every file for NaN/inf (embeddings chunk by chunk over prompts).

    Returns:
      :class:`Dataset` whose embeddings are read-only ``np.memmap`` views of the files (in
      the files' dtype) and whose rewards are ``float32`` arrays with the trailing 1 squeezed.

    Raises:
      ValueError: a one-line message naming the file and the problem: missing file
        (:class:`MissingDataFileError`, also a ``FileNotFoundError``), wrong number of
        dimensions, non-float dtype, NaN/inf (with the count), embeddings and rewards of
        different (prompts, responses) shapes (both shapes given), train and test
        embeddings of different ``D``.
    """
    paths = [os.fspath(p) for p in (train_embeddings, train_rewards, test_embeddings, test_rewards)]
    train_e = load_npy_embeddings(paths[0], check_finite=check_finite)
    train_r = load_npy_rewards(paths[1], check_finite=check_finite)
    test_e = load_npy_embeddings(paths[2], check_finite=check_finite)
    test_r = load_npy_rewards(paths[3], check_finite=check_finite)
    for emb, emb_path, rew, rew_path in ((train_e, paths[0], train_r, paths[1]), (test_e, paths[2], test_r, paths[3])):
        if emb.shape[:2] != rew.shape:
            raise DataFileError(
                f"rewards file {rew_path}: shape {rew.shape} does not match the (prompts, responses) "
                f"of embeddings file {emb_path} with shape {emb.shape}"
            )
    if train_e.shape[2] != test_e.shape[2]:
        raise DataFileError(
            f"test embeddings file {paths[2]}: embedding dimension D={test_e.shape[2]} differs from "
            f"D={train_e.shape[2]} of train embeddings file {paths[0]}"
        )
    return Dataset(train_e, train_r, test_e, test_r)


# --------------------------------------------------------------------------------------
# Figure 1: two Gaussians in 2-D
# --------------------------------------------------------------------------------------

MIXTURE_MEANS = ((-2.5, -2.5), (2.5, 2.5))
MIXTURE_VARIANCE = 0.25


def mixture_log_density(x: jax.Array) -> jax.Array:
    """Log density of ``0.5 N((-2.5,-2.5), 0.25 I) + 0.5 N((2.5,2.5), 0.25 I)``.

    Args:
      x: ``(..., 2)`` float32 points.

    Returns:
      ``(...,)`` float32 log densities (computed with logsumexp, finite far from the means).
    """
    means = jnp.asarray(MIXTURE_MEANS, dtype=jnp.float32)  # (2 components, 2)
    sq_dist = jnp.sum((x[..., None, :] - means) ** 2, axis=-1)  # (..., 2)
    log_norm = -jnp.log(2.0 * jnp.pi * MIXTURE_VARIANCE)  # 2-D isotropic Gaussian
    log_components = jnp.log(0.5) + log_norm - 0.5 * sq_dist / MIXTURE_VARIANCE
    return jax.nn.logsumexp(log_components, axis=-1)


@functools.partial(
    jax.jit, static_argnames=("n_train_prompts", "n_responses", "n_test_prompts", "n_test_responses")
)
def gaussian_mixture_2d(
    key: jax.Array,
    n_train_prompts: int = 1000,
    n_responses: int = 10,
    n_test_prompts: int = 100,
    n_test_responses: int = 100,
) -> Dataset:
    """The paper's Figure-1 task: ``x ~ N(0, I_2)``, reward = log mixture density.

    The golden reward is :func:`mixture_log_density`: the log density of an equal mixture
    of two isotropic Gaussians with means ``(-2.5, -2.5)`` and ``(2.5, 2.5)`` and variance
    0.25. The grouping into "prompts" carries no meaning here; it only gives the data the
    common layout (with the defaults, 100 prompts per round = 1 000 points, as in the paper).

    Args:
      key: PRNG key; the data are a deterministic function of it.
      n_train_prompts, n_responses: training layout ``(P, R)``.
      n_test_prompts, n_test_responses: test layout ``(Pt, Rt)``.

    Returns:
      :class:`Dataset` of jax float32 arrays: embeddings ``(P, R, 2)`` and ``(Pt, Rt, 2)``,
      rewards ``(P, R)`` and ``(Pt, Rt)``.
    """
    # train and test from their own keys: the test set depends only on its sizes and the key
    train_key, test_key = jax.random.split(key)
    train_x = jax.random.normal(train_key, (n_train_prompts, n_responses, 2), jnp.float32)
    test_x = jax.random.normal(test_key, (n_test_prompts, n_test_responses, 2), jnp.float32)
    return Dataset(train_x, mixture_log_density(train_x), test_x, mixture_log_density(test_x))


# --------------------------------------------------------------------------------------
# LLM-like: a low-dimensional latent, mapped nonlinearly into D dimensions
# --------------------------------------------------------------------------------------


#: Latent draws of the task's reference sample that fixes the embedding scale.
_SCALE_SAMPLE = 4096


def _take(flat: jax.Array, offset: int, shape: tuple[int, ...]) -> tuple[jax.Array, int]:
    """Slice ``prod(shape)`` numbers from ``flat`` at ``offset``; return them and the new offset."""
    size = int(np.prod(shape, dtype=np.int64))
    return flat[offset : offset + size].reshape(shape), offset + size


def _unit_rows(v: jax.Array) -> jax.Array:
    """Rows of ``v`` scaled to unit norm (Gaussian rows become uniform on the sphere)."""
    return v / jnp.maximum(jnp.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def _split_draw(key: jax.Array, shapes: dict[str, tuple[int, ...]]) -> dict[str, jax.Array]:
    """Standard normal arrays of the given shapes (name -> shape), as one flat draw, sliced.

    XLA compiles each ``jax.random`` call separately (about 0.25 s each on CPU), so each part
    of the task is one draw."""
    total = sum(int(np.prod(shape, dtype=np.int64)) for shape in shapes.values())
    flat = jax.random.normal(key, (total,), jnp.float32)
    out, offset = {}, 0
    for name, shape in shapes.items():
        out[name], offset = _take(flat, offset, shape)
    return out


def _world_shapes(dim: int, latent_dim: int, prompt_dim: int, hidden_dim: int, n_reward_terms: int) -> dict:
    """The task's random numbers ("world"): the map, the reward, a fixed reference sample
    that sets the embedding scale."""
    response_dim = latent_dim - prompt_dim
    return {
        "w1": (latent_dim, hidden_dim),
        "b1": (hidden_dim,),
        "w2": (hidden_dim, dim),
        "w_response": (1, response_dim),
        "w_prompt": (1, prompt_dim),
        "quad_dir": (1, response_dim),
        "sine_dirs": (n_reward_terms, latent_dim),
        "sine_phase": (n_reward_terms, 2),  # a normalised 2-D normal is a uniform angle
        "reference": (_SCALE_SAMPLE, latent_dim),
    }


def _set_shapes(n_prompts: int, n_responses: int, dim: int, latent_dim: int, prompt_dim: int) -> dict:
    """One data set's random numbers: the prompts' and the responses' latents, the noise."""
    return {
        "prompt": (n_prompts, 1, prompt_dim),
        "response": (n_prompts, n_responses, latent_dim - prompt_dim),
        "noise": (n_prompts, n_responses, dim),
    }


def _latents(prompt_part: jax.Array, response_part: jax.Array) -> jax.Array:
    """Each item's latent ``(z_prompt, z_response)``: ``(P, 1, L_p), (P, R, L_r) -> (P, R, L)``."""
    shape = response_part.shape[:2] + (prompt_part.shape[-1],)
    return jnp.concatenate([jnp.broadcast_to(prompt_part, shape), response_part], axis=-1)


class _Manifold(NamedTuple):
    """The fixed random 2-layer map: latent (L) -> tanh(hidden) -> dim."""

    w1: jax.Array  # (L, hidden)
    b1: jax.Array  # (hidden,)
    w2: jax.Array  # (hidden, dim)


def _manifold(world: dict, latent_dim: int, hidden_dim: int, map_gain: jax.Array) -> _Manifold:
    """The map from the world's standard normal draws: ``W1`` scaled by
    ``map_gain / sqrt(latent_dim)``, ``b1 ~ N(0, 0.25)``, ``W2`` by ``1 / sqrt(hidden_dim)``."""
    w1 = world["w1"] * (map_gain / np.sqrt(latent_dim))
    b1 = world["b1"] * 0.5
    w2 = world["w2"] / np.sqrt(hidden_dim)
    return _Manifold(w1, b1, w2)


def _embed_signal(z: jax.Array, m: _Manifold) -> jax.Array:
    """``(..., L) -> (..., dim)``: the map, before scaling and noise."""
    return jnp.tanh(z @ m.w1 + m.b1) @ m.w2


class _GoldenReward(NamedTuple):
    """The golden reward's random unit directions, uniform phases and weights."""

    w_response: jax.Array  # (L_r,)
    w_prompt: jax.Array  # (L_p,)
    quad_dir: jax.Array  # (L_r,)
    sine_dirs: jax.Array  # (T, L)
    phase: jax.Array  # (T, 2) = (cos phase, sin phase)
    nonlinear_weight: jax.Array
    prompt_weight: jax.Array
    frequency: jax.Array


def _golden_reward_of(world: dict, nonlinear_weight, prompt_weight, frequency) -> _GoldenReward:
    """The reward's directions and phases from the world's standard normal draws."""
    w_response = _unit_rows(world["w_response"])[0]
    w_prompt = _unit_rows(world["w_prompt"])[0]
    quad_dir = _unit_rows(world["quad_dir"])[0]
    sine_dirs = _unit_rows(world["sine_dirs"])
    phase = _unit_rows(world["sine_phase"])
    return _GoldenReward(w_response, w_prompt, quad_dir, sine_dirs, phase, nonlinear_weight, prompt_weight, frequency)


def _golden_reward(z: jax.Array, g: _GoldenReward) -> jax.Array:
    """``r*(z)`` of :func:`llm_like`: ``(..., L) -> (...,)``."""
    prompt_dim = g.w_prompt.shape[0]
    n_reward_terms = g.sine_dirs.shape[0]
    z_prompt, z_response = z[..., :prompt_dim], z[..., prompt_dim:]
    linear = z_response @ g.w_response
    quadratic = ((z_response @ g.quad_dir) ** 2 - 1.0) / np.sqrt(2.0)
    if n_reward_terms:
        angle = g.frequency * (z @ g.sine_dirs.T)  # (..., T)
        # sin(angle + phase) = sin(angle) cos(phase) + cos(angle) sin(phase)
        sines = np.sqrt(2.0) * (jnp.sin(angle) * g.phase[:, 0] + jnp.cos(angle) * g.phase[:, 1])
        sines = jnp.sum(sines, axis=-1) / np.sqrt(n_reward_terms)
    else:
        sines = 0.0
    nonlinear = (quadratic + sines) / np.sqrt(2.0)
    prompt_term = z_prompt @ g.w_prompt  # zero when prompt_dim == 0
    return linear + g.nonlinear_weight * nonlinear + g.prompt_weight * prompt_term


@functools.partial(
    jax.jit,
    static_argnames=(
        "n_train_prompts",
        "n_responses",
        "n_test_prompts",
        "n_test_responses",
        "dim",
        "latent_dim",
        "prompt_dim",
        "hidden_dim",
        "n_reward_terms",
    ),
)
def _llm_like(
    key,
    n_train_prompts,
    n_responses,
    n_test_prompts,
    n_test_responses,
    dim,
    latent_dim,
    prompt_dim,
    hidden_dim,
    n_reward_terms,
    noise,
    map_gain,
    nonlinear_reward_weight,
    prompt_reward_weight,
    reward_frequency,
):
    # Three independent draws, so that each part depends only on its own sizes and key: the
    # task ("world": the map, the reward, a fixed reference sample that sets the embedding
    # scale), the training set, the test set. Changing n_train_prompts leaves the test set
    # (and the world) unchanged, and vice versa.
    world_key, train_key, test_key = jax.random.split(key, 3)
    world = _split_draw(world_key, _world_shapes(dim, latent_dim, prompt_dim, hidden_dim, n_reward_terms))
    train = _split_draw(train_key, _set_shapes(n_train_prompts, n_responses, dim, latent_dim, prompt_dim))
    test = _split_draw(test_key, _set_shapes(n_test_prompts, n_test_responses, dim, latent_dim, prompt_dim))

    manifold = _manifold(world, latent_dim, hidden_dim, map_gain)
    golden = _golden_reward_of(world, nonlinear_reward_weight, prompt_reward_weight, reward_frequency)
    z_train = _latents(train["prompt"], train["response"])
    z_test = _latents(test["prompt"], test["response"])
    # One scale for train and test, from the task's reference sample: coordinates have RMS 1
    # before noise (in expectation over latents), whatever the sizes of the two sets.
    scale = jax.lax.rsqrt(jnp.mean(_embed_signal(world["reference"], manifold) ** 2) + 1e-12)
    train_e = _embed_signal(z_train, manifold) * scale + noise * train["noise"]
    test_e = _embed_signal(z_test, manifold) * scale + noise * test["noise"]
    return Dataset(train_e, _golden_reward(z_train, golden), test_e, _golden_reward(z_test, golden))


def _llm_like_arguments(
    n_train_prompts, n_responses, n_test_prompts, n_test_responses, dim, latent_dim, prompt_latent_fraction,
    noise, hidden_dim, map_gain, n_reward_terms, nonlinear_reward_weight, prompt_reward_weight, reward_frequency,
) -> dict:
    """:func:`llm_like`'s arguments checked (:class:`InputError`, one line) and converted into
    :func:`_llm_like`'s: Python ints for the static sizes (with ``prompt_dim``), float32 knobs."""
    for name, value in (
        ("n_train_prompts", n_train_prompts),
        ("n_responses", n_responses),
        ("n_test_prompts", n_test_prompts),
        ("n_test_responses", n_test_responses),
        ("dim", dim),
        ("latent_dim", latent_dim),
        ("hidden_dim", hidden_dim),
    ):
        if int(value) < 1:
            raise InputError(f"llm_like: {name} must be >= 1, got {value}")
    if n_reward_terms < 0:
        raise InputError(f"llm_like: n_reward_terms must be >= 0, got {n_reward_terms}")
    if not 0.0 <= prompt_latent_fraction < 1.0:
        raise InputError(f"llm_like: prompt_latent_fraction must be in [0, 1), got {prompt_latent_fraction}")
    prompt_dim = int(round(latent_dim * prompt_latent_fraction))
    if latent_dim - prompt_dim < 1:
        raise InputError(
            f"llm_like: prompt_latent_fraction={prompt_latent_fraction} with latent_dim={latent_dim} "
            f"leaves no response latent"
        )
    return dict(
        n_train_prompts=int(n_train_prompts),
        n_responses=int(n_responses),
        n_test_prompts=int(n_test_prompts),
        n_test_responses=int(n_test_responses),
        dim=int(dim),
        latent_dim=int(latent_dim),
        prompt_dim=prompt_dim,
        hidden_dim=int(hidden_dim),
        n_reward_terms=int(n_reward_terms),
        noise=jnp.float32(noise),
        map_gain=jnp.float32(map_gain),
        nonlinear_reward_weight=jnp.float32(nonlinear_reward_weight),
        prompt_reward_weight=jnp.float32(prompt_reward_weight),
        reward_frequency=jnp.float32(reward_frequency),
    )


def llm_like(
    key: jax.Array,
    n_train_prompts: int = 2000,
    n_responses: int = 10,
    n_test_prompts: int = 200,
    n_test_responses: int = 100,
    dim: int = 256,
    latent_dim: int = 16,
    prompt_latent_fraction: float = 0.5,
    noise: float = 0.1,
    hidden_dim: int = 64,
    map_gain: float = 1.5,
    n_reward_terms: int = 4,
    nonlinear_reward_weight: float = 0.7,
    prompt_reward_weight: float = 0.3,
    reward_frequency: float = 1.0,
) -> Dataset:
    """Synthetic data that behaves like LLM embeddings of (prompt, response) items.

    Generative model, per item (prompt ``p``, response ``j``):

    1. Latent ``z = (z_prompt, z_response)`` of ``latent_dim`` numbers, all ``N(0, 1)``:
       ``z_prompt`` (``L_p = round(latent_dim * prompt_latent_fraction)`` numbers) is shared
       by all responses of prompt ``p``; ``z_response`` (``L_r = latent_dim - L_p``) is the
       response's own.
    2. Embedding ``Psi = c * W2 tanh(map_gain * W1 z / sqrt(latent_dim) + b1) + noise * eps``:
       a fixed random 2-layer network (``W1`` ``(latent_dim, hidden_dim)``, ``W2``
       ``(hidden_dim, dim)``, standard normal, ``W2`` scaled by ``1/sqrt(hidden_dim)``,
       ``b1 ~ N(0, 0.25)``), so the embeddings lie near a ``latent_dim``-dimensional curved
       manifold inside a ``hidden_dim``-dimensional subspace of ``R^dim``. The constant
       ``c`` makes the noise-free coordinates have root-mean-square 1 over a fixed reference
       sample of 4 096 latents of the task (the same ``c`` for train and test);
       ``eps ~ N(0, I_dim)``.
    3. Golden reward, a smooth function of the latent (each bracketed term has variance
       about 1)::

         r*(z) = [w_r . z_response]
                 + nonlinear_reward_weight * ( [((q . z_response)^2 - 1) / sqrt 2]
                     + [sum_t sqrt 2 sin(reward_frequency * u_t . z + phase_t) / sqrt T] ) / sqrt 2
                 + prompt_reward_weight * [w_p . z_prompt]

       with random unit directions ``w_r, q`` (response space), ``w_p`` (prompt space) and
       ``u_1..u_T`` (``T = n_reward_terms``, the whole latent, so the sine terms make the
       best response depend on the prompt), and uniform phases. The response part
       dominates, so ranking the responses of one prompt is meaningful.

    Every random object (the map, the reward function, the latents, the noise) is drawn
    from ``key``: the result is a deterministic function of ``key`` and the knobs. Train
    and test share the map and the reward function, and are drawn from independent keys:
    the test set depends only on ``key``, the task's knobs and its own sizes (changing
    ``n_train_prompts`` leaves it unchanged). Generation runs on device under
    ``jax.jit`` (the integer knobs are static).

    Args:
      key: PRNG key.
      n_train_prompts, n_responses: training layout ``(P, R)``.
      n_test_prompts, n_test_responses: test layout ``(Pt, Rt)``.
      dim: embedding dimension ``D`` (the paper's LLMs: 2048-4096).
      latent_dim: total latent dimension ``L``.
      prompt_latent_fraction: fraction of the latent shared within a prompt, in ``[0, 1)``.
      noise: standard deviation of the isotropic embedding noise, relative to the unit RMS
        of the noise-free coordinates.
      hidden_dim: width of the random map's tanh layer.
      map_gain: standard deviation of the tanh pre-activations (from ``W1 z``); larger is
        more nonlinear (more saturated).
      n_reward_terms: number ``T`` of sine terms in the reward (0 for none).
      nonlinear_reward_weight: weight of the quadratic + sine part of the reward.
      prompt_reward_weight: weight of the prompt-only linear term (a prompt-level offset,
        irrelevant to within-prompt ranking but present in cross-prompt comparisons).
      reward_frequency: frequency of the sine terms (higher is less smooth).

    Returns:
      :class:`Dataset` of jax float32 arrays: embeddings ``(P, R, dim)`` and
      ``(Pt, Rt, dim)``, rewards ``(P, R)`` and ``(Pt, Rt)``.

    Raises:
      ValueError: a size is not positive or ``prompt_latent_fraction`` leaves no response
        latent.
    """
    arguments = _llm_like_arguments(
        n_train_prompts, n_responses, n_test_prompts, n_test_responses, dim, latent_dim, prompt_latent_fraction,
        noise, hidden_dim, map_gain, n_reward_terms, nonlinear_reward_weight, prompt_reward_weight, reward_frequency,
    )
    return _llm_like(key, **arguments)


def load_ratings(path: PathLike, shape) -> np.ndarray:
    """Every rater's rating of each training item, ``(P, R, M)`` float (NaN where an item has
    fewer raters), memory-mapped; ``shape``: the items' (P, R). One-line errors name the path."""
    array = _open_npy(path, "ratings")
    if array.ndim != 3 or tuple(array.shape[:2]) != tuple(shape[:2]):
        raise DataFileError(
            f"ratings file {path}: expected shape (prompts, responses, raters) = ({shape[0]}, {shape[1]}, M), "
            f"got {tuple(array.shape)}"
        )
    return array
