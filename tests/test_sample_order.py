"""The same samples and seed give the same pseudo-labels and coreset whatever order a view lists
them in (clustering starts, training batches and seeded draws follow the arrays' order: a sorted
or shuffled view drew another coreset from the same stored scores). A view that orders its
samples is read in sample-id order; the dataset itself in its stored order."""

from __future__ import annotations

import fiftyone_elfs as elfs

KEY = "k"


def _reordered(ds):
    return [ds.shuffle(seed=3), ds.sort_by("filepath", reverse=True), ds.take(len(ds), seed=5)]


def test_a_reordered_view_of_the_same_samples_draws_the_same_coreset(ds):
    for mode in ("ccs", "typical"):
        first = elfs.select_coreset(ds.sort_by("id"), key=KEY, budget_count=8, mode=mode, seed=1)
        for view in _reordered(ds):
            again = elfs.select_coreset(view, key=KEY, budget_count=8, mode=mode, seed=1)
            assert set(again.selected_ids) == set(first.selected_ids), (mode, view)


def test_a_reordered_view_of_the_same_samples_gets_the_same_pseudo_labels(ds):
    common = dict(n_clusters=3, clustering="kmeans", embeddings_field="elfs_embedding")
    elfs.compute_pseudo_labels(ds.sort_by("id"), key="p", **common)
    expected = dict(zip(*ds.values(["id", "p_pseudo_label.label"]), strict=True))
    for number, view in enumerate(_reordered(ds)):
        elfs.compute_pseudo_labels(view, key=f"q{number}", **common)
        got = dict(zip(*ds.values(["id", f"q{number}_pseudo_label.label"]), strict=True))
        assert got == expected
