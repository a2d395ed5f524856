"""The label buffer: fixed capacity, and it never drops labels silently."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arm_jax.errors import InputError
from arm_jax.model import buffer


def test_label_buffer_refuses_to_drop_labels():
    buf = buffer.buffer_from_pairs([0, 1], [2, 3], capacity=3)
    with pytest.raises(InputError, match="label buffer of capacity 3 holds 2 comparisons; 2 more do not fit"):
        buffer.append(buf, jnp.array([4, 5]), jnp.array([6, 7]))
    # inside jit: nothing written, count kept, the flag set (and kept)
    out = jax.jit(buffer.append)(buf, jnp.array([4, 5]), jnp.array([6, 7]))
    assert bool(out.overflow) and int(out.count) == 2
    np.testing.assert_array_equal(np.asarray(out.pairs), np.asarray(buf.pairs))
    ok = jax.jit(buffer.append)(buf, jnp.array([4]), jnp.array([6]))
    assert not bool(ok.overflow) and int(ok.count) == 3
    assert bool(jax.jit(buffer.append)(out, jnp.array([4]), jnp.array([6])).overflow)
