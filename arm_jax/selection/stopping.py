"""When more labels stop paying: the stopping rule, one definition for ``select --report`` and
the benchmark (benchmarks/bench_stopping.py).

The quantity: a batch's information gain per label, log det Λ(with the batch) − log det
Λ(without it) divided by its size, Λ the head's posterior precision under the model trained on
every label (:func:`arm_jax.selection.posterior.information_gain`; nats per label, the D-optimal
criterion). As the model learns, new labels tell it less and the gain falls.

The rule: stop after the first round r ≥ 2 at which the gain has been below
:data:`STOP_FRACTION` × the first active round's gain (round 1, or the first report of
``select --report``) for two rounds in a row. τ was chosen by measurement
(benchmarks/bench_stopping.py, benchmarks/RESULTS.md).
"""
from __future__ import annotations

import math

import numpy as np

#: τ of the rule (measured: benchmarks/RESULTS.md, "When to stop").
STOP_FRACTION = 0.1
#: Rounds in a row the gain must stay under τ × the first.
STOP_PATIENCE = 2


def stop_round(gains, fraction: float = STOP_FRACTION, patience: int = STOP_PATIENCE, first: int = 1) -> int:
    """The round at which the rule stops, or −1 if it never does.

    gains: per round (round ``first`` is the reference; earlier rounds, e.g. a random round 0
    of another size, are ignored). NaN gains never count as below.
    """
    g = np.asarray(gains, float)
    if g.size <= first or not (g[first] > 0 and math.isfinite(g[first])):
        return -1
    below = g < fraction * g[first]
    run = 0
    for r in range(first + 1, g.size):
        run = run + 1 if below[r] else 0
        if run >= patience:
            return r
    return -1
