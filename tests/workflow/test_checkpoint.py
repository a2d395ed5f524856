"""Saved reward models: the file round trip and its errors."""
from __future__ import annotations

import jax
import numpy as np
import pytest

from arm_jax.errors import InputError
from arm_jax.model import network as model_lib
from arm_jax.model.network import ModelConfig
from arm_jax.workflow import checkpoint as model_files

MODEL = ModelConfig(depth=2, width=8)


def test_model_file_round_trip_and_errors(tmp_path):
    params = model_lib.init_params(jax.random.PRNGKey(3), MODEL, 7)
    model_files.save_model(tmp_path / "m.msgpack", params, MODEL, 7, {"n_labels": 4})
    saved = model_files.load_model(tmp_path / "m.msgpack")
    assert saved.model_config == MODEL and saved.input_dim == 7 and saved.metadata == {"n_labels": 4}
    for p, q in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(saved.params)):
        np.testing.assert_array_equal(p, q)
    (tmp_path / "junk").write_bytes(b"\x00\x01garbage")
    with pytest.raises(InputError, match="junk: not an arm-jax model file"):
        model_files.load_model(tmp_path / "junk")
    with pytest.raises(FileNotFoundError):
        model_files.load_model(tmp_path / "missing.msgpack")
