"""Typical selection (TypiClust): properties on small synthetic data (arrays only, no FiftyOne)."""

from __future__ import annotations

import numpy as np
import pytest

from fiftyone_elfs.selection import typical_select
from fiftyone_elfs.selection.typical import in_cell_density, neighbour_density


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


def test_one_pick_per_cluster_and_it_is_the_most_typical_member():
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
    some = np.array([130, 3, 77])  # a few rows' figures, still against every row
    np.testing.assert_allclose(neighbour_density(_unit(X), rows=some), density[some], rtol=1e-5)


def test_typicality_is_measured_inside_each_cell_not_across_the_pool():
    # TypiClust's rule: each cell's pick is its member with the most typical neighbourhood
    # among the cell's own members (a pair's tie broken by the density over the pool). A row
    # at a cell's edge next to a denser region is dense over the pool, not typical of its cell.
    from fiftyone_elfs.selection.typical import _nearest_centre, _spherical_kmeans

    rng = np.random.default_rng(7)
    X = rng.normal(size=(600, 8)).astype(np.float32)
    budget = 100  # cells of about 6 rows: many where the two figures disagree
    chosen = typical_select(X, budget, seed=0)
    Xn = _unit(X).astype(np.float32)
    cells = _nearest_centre(_spherical_kmeans(Xn, budget, 0, sample_all=True), Xn)  # the same
    in_cell, pool = in_cell_density(Xn, cells), neighbour_density(Xn)
    assert np.unique(cells[chosen]).size == budget  # one pick per cell
    disagree = pairs = 0
    for c in np.unique(cells):
        members = np.flatnonzero(cells == c)
        typical = members[np.lexsort((-pool[members], -in_cell[members]))[0]]
        assert chosen[cells[chosen] == c][0] == typical
        disagree += int(typical != members[np.argmax(pool[members])])
        pairs += int(members.size == 2)
    assert disagree >= 10  # the data tells the two rules apart
    assert pairs >= 3  # and has pairs, whose tie only the pool's density breaks


def test_in_cell_density_matches_a_search_inside_each_cell():
    rng = np.random.default_rng(3)
    Xn = _unit(rng.normal(size=(400, 8))).astype(np.float32)
    cells = rng.integers(0, 60, 400)  # cells of about 7 rows: the closed form
    cells[:50] = 60  # one cell of 50 rows: searched (20 of its 49 others are neighbours)
    cells[50] = 61  # a row alone
    cells[51:53] = 62  # a pair
    density = in_cell_density(Xn, cells)
    for c in np.unique(cells):
        members = np.flatnonzero(cells == c)
        np.testing.assert_allclose(density[members], neighbour_density(Xn[members]), atol=1e-5)
    assert density[50] == 0.0
    assert density[51] == density[52]  # a pair ties exactly (broken by the pool's density)
    np.testing.assert_allclose(density[51], Xn[51] @ Xn[52], atol=1e-6)


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


def test_only_the_rows_directions_count_in_the_grouped_path_too():
    """Cosine geometry: each row scaled by its own power of two (exact in float32) leaves the
    selection as it is, also where the pool is cut into groups, which are assigned on the rows
    as given (no normalised copy of the pool) and normalised one group at a time."""
    X, groups = separated_blobs(60, 8, 16, seed=7, outliers=6)
    scales = 2.0 ** np.random.default_rng(1).integers(-6, 7, size=(X.shape[0], 1))
    for group_rows in (100, 10_000):  # five coarse groups; one group
        for excluded in (None, np.isin(np.arange(X.shape[0]), [3, 70, 200])):
            kwargs = dict(seed=2, group_rows=group_rows, excluded=excluded)
            chosen = typical_select(X, 12, **kwargs)
            np.testing.assert_array_equal(
                typical_select(X * scales.astype(np.float32), 12, **kwargs), chosen
            )
            np.testing.assert_array_equal(
                typical_select(X.astype(np.float64), 12, **kwargs), chosen
            )
    assert set(groups[typical_select(X, 8, seed=0, group_rows=100)]) == set(range(8))


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
