"""What the selection tests share."""
import numpy as np
import pytest


def assert_same_picks(picks, reference_scores, k, rtol=1e-4):
    """picks are a top k of reference_scores: any difference from the reference top k is
    between pairs whose scores tie with the k-th best within rtol."""
    order = np.argsort(-reference_scores, kind="stable")
    kth = reference_scores[order[k - 1]]
    tol = rtol * max(abs(kth), np.max(np.abs(reference_scores)) * 1e-6)
    top = set(order[:k].tolist())
    for p in set(picks) ^ top:
        assert abs(reference_scores[p] - kth) <= tol, (p, reference_scores[p], kth)


@pytest.fixture
def same_picks():
    """:func:`assert_same_picks`."""
    return assert_same_picks
