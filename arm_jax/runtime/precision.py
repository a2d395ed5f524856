"""TODO docstring."""
from __future__ import annotations

import functools

import jax

#: Precision of the float32 matrix products in the design math (M, leverage scores, gaps).
#: JAX's default lets recent NVIDIA GPUs compute them in TF32 (a 10-bit mantissa), which moves
#: M and the scores by about 1e-3 relative: enough to reorder near-tied pairs and to make the
#: GPU pick other pairs than the CPU. These products are a small share of the work (the
#: selection is memory-bound), so they always run at full float32. The reward model's own
#: products keep JAX's default (set ``JAX_DEFAULT_MATMUL_PRECISION=highest`` to change that).
MATMUL_PRECISION = "highest"


def full_precision(fn):
    """Trace ``fn`` with its matrix products at :data:`MATMUL_PRECISION`, whatever the caller's
    ``jax.default_matmul_precision``. No effect on the CPU, where float32 products are exact."""

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with jax.default_matmul_precision(MATMUL_PRECISION):
            return fn(*args, **kwargs)

    return wrapped
