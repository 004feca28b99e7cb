"""Typical selection (TypiClust): properties on small synthetic data (arrays only, no FiftyOne)."""

from __future__ import annotations

import numpy as np
import pytest

from fiftyone_elfs.selection import typical_select
from fiftyone_elfs.selection.typical import neighbour_density


def separated_blobs(n_per: int, k: int, dim: int, seed: int, outliers: int = 0):
    """k tight clusters on orthogonal directions (cosine-separated), plus far scattered points."""
    rng = np.random.default_rng(seed)
    centres = np.eye(dim)[:k] * 10.0
    X = np.concatenate([c + rng.normal(0.0, 1.0, (n_per, dim)) for c in centres])
    groups = np.repeat(np.arange(k), n_per)
    if outliers:
        X = np.concatenate([X, rng.normal(0.0, 10.0, (outliers, dim))])
        groups = np.concatenate([groups, np.full(outliers, -1)])
    return X.astype(np.float32), groups


def _unit(X):
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def test_one_pick_per_cluster_and_it_is_the_densest_member():
    X, groups = separated_blobs(60, 5, 16, seed=0, outliers=10)
    chosen = typical_select(X, 5, seed=0)
    assert chosen.tolist() == sorted(chosen.tolist()) and chosen.size == 5
    assert sorted(groups[chosen].tolist()) == [0, 1, 2, 3, 4]  # one per cluster, no outlier
    density = neighbour_density(_unit(X))
    for g in range(5):
        members = np.flatnonzero(groups == g)
        assert chosen[groups[chosen] == g][0] == members[np.argmax(density[members])]
    np.testing.assert_array_equal(chosen, typical_select(X, 5, seed=0))  # deterministic


def test_density_is_higher_inside_a_cluster_than_for_scattered_points():
    X, groups = separated_blobs(40, 3, 16, seed=1, outliers=12)
    density = neighbour_density(_unit(X))
    assert density[groups >= 0].min() > density[groups < 0].max()
    assert neighbour_density(_unit(X[:1])).tolist() == [0.0]  # one row: no neighbours


def test_larger_budgets_spread_over_the_clusters_by_their_size():
    X, groups = separated_blobs(100, 3, 16, seed=2)
    keep = np.r_[np.arange(0, 100), np.arange(100, 150), np.arange(200, 225)]  # 100/50/25
    X, groups = X[keep], groups[keep]
    chosen = typical_select(X, 35, seed=3)
    assert chosen.size == np.unique(chosen).size == 35
    counts = np.bincount(groups[chosen], minlength=3)
    assert counts.min() >= 1 and counts[0] > counts[1] > counts[2]


def test_next_rounds_skip_selected_samples_and_the_cells_they_cover():
    X, groups = separated_blobs(80, 4, 16, seed=4)
    keep = np.r_[np.arange(0, 160), np.arange(160, 200), np.arange(240, 280)]  # 80/80/40/40
    X, groups = X[keep], groups[keep]
    excluded = np.zeros(len(X), dtype=bool)
    excluded[[0, 80]] = True  # the two largest clusters already have a labeled sample
    chosen = typical_select(X, 2, excluded=excluded, seed=0)
    assert not excluded[chosen].any()
    assert sorted(groups[chosen].tolist()) == [2, 3]  # the uncovered clusters
    # Asking for every free sample (or more) returns exactly the free ones.
    np.testing.assert_array_equal(
        typical_select(X, 500, excluded=excluded), np.flatnonzero(~excluded)
    )


def test_large_pools_are_cut_into_groups_and_still_cover_every_cluster():
    X, groups = separated_blobs(60, 8, 16, seed=5, outliers=6)
    chosen = typical_select(X, 8, seed=0, group_rows=100)  # 486 rows: five coarse groups
    assert chosen.size == 8
    assert sorted(groups[chosen].tolist()) == list(range(8))
    np.testing.assert_array_equal(chosen, typical_select(X, 8, seed=0, group_rows=100))


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"budget": 0}, "budget must be a whole number"),
        ({"budget": 2.5}, "budget must be a whole number"),
        ({"budget": True}, "budget must be a whole number"),
        ({"budget": 3, "excluded": np.zeros(3, dtype=bool)}, "excluded must be a boolean mask"),
        ({"budget": 3, "group_rows": 1}, "group_rows must be >= 2"),
    ],
)
def test_bad_arguments_are_refused_with_the_problem_named(kwargs, words):
    X, _ = separated_blobs(5, 2, 4, seed=0)
    with pytest.raises(ValueError, match=words):
        typical_select(X, **kwargs)
    with pytest.raises(ValueError, match=r"\[N, dim\]"):
        typical_select(np.zeros(4), 1)
    X[1, 2] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        typical_select(X, 2)
