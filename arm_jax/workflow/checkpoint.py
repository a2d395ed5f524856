"""Saved reward models: one msgpack file per model (what ``arm-jax train`` writes and
``arm-jax score`` reads).

The file is one msgpack document: format tag, format version, model config, input
dimension, metadata (JSON text) and ``flax.serialization.to_bytes(params)``. It is written
atomically (:mod:`arm_jax.runtime.files`).
"""
from __future__ import annotations

import dataclasses
import json
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from arm_jax.errors import InputError
from arm_jax.model import network as model_lib
from arm_jax.model.network import ModelConfig
from arm_jax.runtime import files as io_lib
from arm_jax.runtime.files import one_line, require_file

MODEL_FORMAT = "arm-jax-model"
MODEL_FORMAT_VERSION = 1


class SavedModel(NamedTuple):
    params: object
    model_config: ModelConfig
    input_dim: int
    metadata: dict


def model_bytes(params, model_config: ModelConfig, input_dim: int, metadata: dict | None = None) -> bytes:
    """The model file's bytes (see the module docstring)."""
    from flax import serialization  # here: commands that write no model start without Flax

    doc = {
        "format": MODEL_FORMAT,
        "version": MODEL_FORMAT_VERSION,
        "model_config": dataclasses.asdict(model_config),
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
    from flax import serialization  # here: commands that read no model start without Flax

    path = require_file(path)
    try:
        doc = serialization.msgpack_restore(path.read_bytes())
    except Exception as err:  # noqa: BLE001
        raise InputError(f"{path}: not an arm-jax model file ({one_line(err)})") from None
    if not isinstance(doc, dict) or doc.get("format") != MODEL_FORMAT:
        raise InputError(f"{path}: not an arm-jax model file (written by 'arm-jax train')")
    if doc.get("version") != MODEL_FORMAT_VERSION:
        raise InputError(
            f"{path}: model file version {doc.get('version')} is not supported (expected {MODEL_FORMAT_VERSION})"
        )
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
    except Exception as err:  # noqa: BLE001 - anything wrong inside the file is a corrupt file
        raise InputError(f"{path}: corrupt arm-jax model file ({one_line(err)})") from None
    return SavedModel(params, config, input_dim, metadata)
