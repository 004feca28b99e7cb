"""Pseudo-label trust (label-free diagnostic) and stratified typical coverage: properties on
small synthetic data (arrays only, no FiftyOne)."""

from __future__ import annotations

import numpy as np
import pytest

from fiftyone_elfs.pseudo_labels import (
    kmeans_pseudo_labels,
    partition_agreement,
    pseudo_label_trust,
)
from fiftyone_elfs.selection import proportional_quota, stratified_typical_select


def blobs(n_per: int, k: int, dim: int, spread: float, seed: int):
    """Gaussian clusters of std ``spread`` around random centres (coordinates of std 3)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, dim)) * 3.0
    X = np.concatenate([c + rng.normal(0.0, spread, (n_per, dim)) for c in centers])
    return X.astype(np.float32), np.repeat(np.arange(k), n_per)


# --------------------------------------------------------------------------- agreement


def test_partition_agreement_ignores_cluster_names_and_counts_disagreement():
    a = np.array([0, 0, 1, 1, 2, 2, 2, 2])
    renamed = np.array([5, 5, 9, 9, 7, 7, 7, 7])
    assert partition_agreement(a, renamed) == 1.0
    moved = renamed.copy()
    moved[[0, 4]] = [9, 5]  # two samples change cluster
    assert partition_agreement(a, moved) == pytest.approx(6 / 8)
    assert partition_agreement(a, moved) == partition_agreement(moved, a)
    with pytest.raises(ValueError, match="equal length"):
        partition_agreement(a, a[:-1])


# --------------------------------------------------------------------------- trust


def test_separated_clusters_are_trusted_and_a_structureless_cloud_is_not():
    X, _ = blobs(200, 6, 16, spread=0.3, seed=0)
    labels, _ = kmeans_pseudo_labels(X, 6, seed=0)
    strong = pseudo_label_trust(X, labels, seed=0)
    assert strong.level == "strong" and strong.stability > 0.97, strong
    assert strong.knn_consistency > 0.97

    # One isotropic Gaussian cut into 6 pieces: any cut is arbitrary, so other starts disagree.
    rng = np.random.default_rng(0)
    cloud = rng.normal(size=(1200, 16)).astype(np.float32)
    cut, _ = kmeans_pseudo_labels(cloud, 6, seed=0)
    weak = pseudo_label_trust(cloud, cut, seed=0)
    assert weak.level == "weak" and weak.stability < strong.stability - 0.1, weak
    assert "weak" in weak.explain() and f"{weak.stability:.0%}" in weak.explain()


def test_trust_is_deterministic_samples_at_most_max_samples_and_validates():
    X, _ = blobs(150, 4, 8, spread=1.0, seed=1)
    labels, _ = kmeans_pseudo_labels(X, 4, seed=0)
    a = pseudo_label_trust(X, labels, seed=3, max_samples=400)
    b = pseudo_label_trust(X, labels, seed=3, max_samples=400)
    assert a == b and a.n_samples == 400 and a.n_reference == 2
    assert a.as_dict()["stability"] == a.stability
    with pytest.raises(ValueError, match="labels has 3 entries"):
        pseudo_label_trust(X, labels[:3])
    with pytest.raises(ValueError, match="n_reference"):
        pseudo_label_trust(X, labels, n_reference=0)


def test_trust_that_cannot_be_measured_says_so_and_auto_then_draws_ccs():
    """Audit 'firsthour' #3: with as many clusters as samples no reference partition was run,
    yet 0% agreement was reported as measured, called weak and chose typical selection."""
    from fiftyone_elfs.selection import resolve_mode

    X = blobs(4, 3, 8, spread=1.0, seed=2)[0][:12]
    for labels in (np.arange(12), np.zeros(12, dtype=int)):
        trust = pseudo_label_trust(X, labels, seed=0)
        assert trust.level == "not measured" and trust.n_reference == 0
        assert "0%" not in trust.explain() and "not measured" in trust.explain()
    mode, why = resolve_mode("auto", {"level": "not measured"}, "aum")
    assert mode == "ccs" and "as many clusters as samples" in why
    mode, why = resolve_mode("auto", {"level": "not measured", "reason": "one cluster"}, "aum")
    assert mode == "ccs" and why.startswith("pseudo-label trust was not measured (one cluster)")


# --------------------------------------------------------------------------- coverage


@pytest.mark.parametrize("budget", [1, 7, 50, 99])
def test_proportional_quota_sums_to_budget_and_tracks_sizes(budget):
    sizes = np.array([50, 30, 15, 4, 1])
    quota = proportional_quota(sizes, budget)
    assert quota.sum() == budget and (quota <= sizes).all() and (quota >= 0).all()
    assert np.all(np.abs(quota - budget * sizes / sizes.sum()) < 1.0 + 1e-9)


def test_stratified_typical_select_keeps_group_shares_and_picks_typical_members():
    X, groups = blobs(100, 3, 8, spread=1.0, seed=2)
    keep = np.r_[np.arange(0, 100), np.arange(100, 150), np.arange(200, 225)]  # 100/50/25
    X, groups = X[keep], groups[keep]
    budget = 35
    chosen = stratified_typical_select(X, groups, budget, seed=0)
    assert chosen.size == budget and np.unique(chosen).size == budget
    assert np.bincount(groups[chosen], minlength=3).tolist() == [20, 10, 5]
    np.testing.assert_array_equal(chosen, stratified_typical_select(X, groups, budget, seed=0))

    # Typical: closer (cosine) to the centre of their group than the group's average member.
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    for g in range(3):
        members = np.flatnonzero(groups == g)
        centre = Xn[members].mean(0)
        centre /= np.linalg.norm(centre)
        picked = np.intersect1d(chosen, members)
        assert (Xn[picked] @ centre).mean() > (Xn[members] @ centre).mean()

    # Coverage: inside a group the picks are spread out, not the q most central members.
    members = np.flatnonzero(groups == 0)
    picked = np.intersect1d(chosen, members)
    central = members[np.argsort(-(Xn[members] @ Xn[members].mean(0)))[: picked.size]]

    def mean_pairwise(idx):
        d = np.linalg.norm(X[idx][:, None] - X[idx][None], axis=2)
        return d[np.triu_indices(idx.size, 1)].mean()

    assert mean_pairwise(picked) > mean_pairwise(central)


def test_stratified_typical_select_edge_cases():
    X, groups = blobs(10, 2, 4, spread=1.0, seed=0)
    np.testing.assert_array_equal(stratified_typical_select(X, groups, 50), np.arange(20))
    assert np.bincount(groups[stratified_typical_select(X, groups, 2)]).tolist() == [1, 1]
    with pytest.raises(ValueError, match="budget"):
        stratified_typical_select(X, groups, 0)
    with pytest.raises(ValueError, match="one group id per row"):
        stratified_typical_select(X, groups[:-1], 3)
    with pytest.raises(ValueError, match="whole number"):  # was truncated to 7 without a word
        stratified_typical_select(X, groups, 7.9)
    X[3, 1] = np.nan  # reached faiss: a raw C++ error
    with pytest.raises(ValueError, match="NaN or infinite"):
        stratified_typical_select(X, groups, 3)
