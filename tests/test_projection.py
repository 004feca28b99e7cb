"""The package's one PCA (``fit_pca`` / ``pca_reduce``) and the 2-D layout for the embedding plot
(``layout_2d``), on small synthetic arrays."""

from __future__ import annotations

import tracemalloc

import faiss
import numpy as np
import pytest

from fiftyone_elfs.embeddings import projection
from fiftyone_elfs.embeddings.projection import PCAProjection, fit_pca, layout_2d, pca_reduce


def _blobs(n_per: int = 300, k: int = 4, dim: int = 20, seed: int = 0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, dim)) * 8.0
    y = np.repeat(np.arange(k), n_per)
    return (centers[y] + rng.normal(size=(y.size, dim))).astype(np.float32), y


def test_sampled_pca_fit_recovers_a_low_rank_subspace():
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.normal(size=(30, 3)))[0]  # orthonormal [30, 3]
    X = (rng.normal(size=(5000, 3)) * [5.0, 3.0, 2.0]) @ basis.T + 1.0
    pca = fit_pca(X, 3, seed=0, max_fit_rows=400)  # fitted on 400 of 5000 rows
    # The fitted axes span the data's subspace: projecting onto them loses nothing.
    overlap = np.linalg.svd(basis.T @ pca.components, compute_uv=False)
    np.testing.assert_allclose(overlap, 1.0, atol=1e-4)
    Z = pca.transform(X)
    assert Z.dtype == np.float32 and Z.shape == (5000, 3)
    assert Z.var(axis=0)[0] > Z.var(axis=0)[1] > Z.var(axis=0)[2]  # ordered by variance


def test_normalize_flag_equals_pca_of_normalised_rows_and_is_chunk_invariant(monkeypatch):
    X, _ = _blobs()
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    a = fit_pca(X, 5, normalize=True)
    np.testing.assert_array_equal(a.transform(X), fit_pca(Xn, 5).transform(Xn))
    monkeypatch.setattr(projection, "_CHUNK_ROWS", 7)  # many small chunks: same numbers
    np.testing.assert_array_equal(a.transform(X), fit_pca(X, 5, normalize=True).transform(X))
    ident = PCAProjection(None, None, normalize=True)  # no reduction, rows still normalised
    np.testing.assert_allclose(ident.transform(X), Xn, rtol=1e-6)


def test_transform_makes_no_full_size_temporary():
    X = np.random.default_rng(0).normal(size=(1_000_000, 16)).astype(np.float32)
    pca = fit_pca(X, 8, normalize=True, max_fit_rows=20_000)
    tracemalloc.start()
    Z = pca.transform(X)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    # Output (32 MB) plus a few temporaries of one 65,536-row chunk (4 MB each, ~13 MB
    # measured); a normalised copy of X would add 64 MB.
    assert peak < Z.nbytes + 5 * 65_536 * 16 * 4, peak


def test_pca_reduce_is_a_no_op_when_narrow_and_rejects_nan():
    X, _ = _blobs()
    np.testing.assert_array_equal(pca_reduce(X, 50), X)
    X[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        pca_reduce(X, 5)


def test_layout_2d_pca_and_argument_checks():
    X, y = _blobs()
    pts = layout_2d(X, method="pca")
    assert pts.shape == (len(X), 2) and pts.dtype == np.float32
    with pytest.raises(ValueError, match="method"):
        layout_2d(X, method="tsne")
    with pytest.raises(ValueError, match="max_fit"):
        layout_2d(X, max_fit=1)
    with pytest.raises(ValueError, match="at least 4"):
        layout_2d(X[:3])


def test_layout_2d_umap_on_a_sample_places_the_rest_with_their_cluster():
    X, y = _blobs(n_per=300, k=4)
    pts = layout_2d(X, max_fit=300, seed=0)  # UMAP on 300 of 1,200 samples
    assert pts.shape == (len(X), 2) and np.isfinite(pts).all()
    np.testing.assert_array_equal(pts, layout_2d(X, max_fit=300, seed=0))  # seeded
    fitted = np.sort(np.random.default_rng(0).choice(len(X), 300, replace=False))
    rest = np.setdiff1d(np.arange(len(X)), fitted)
    # Every placed sample lands nearest the centre of its own cluster's fitted points.
    centres = np.stack([pts[fitted][y[fitted] == c].mean(axis=0) for c in range(4)])
    nearest = np.argmin(((pts[rest, None, :] - centres[None]) ** 2).sum(-1), axis=1)
    assert np.mean(nearest == y[rest]) > 0.99
    # Up to max_fit, UMAP sees every sample.
    small = layout_2d(X[:400], max_fit=400, seed=0)
    assert small.shape == (400, 2) and np.isfinite(small).all()


def test_layout_points_are_accepted_by_fiftyone_brain_compute_visualization():
    import fiftyone as fo
    import fiftyone.brain as fob

    X, _ = _blobs(n_per=15, k=4)
    dataset = fo.Dataset()
    try:
        dataset.add_samples([fo.Sample(filepath=f"/nonexistent/{i}.jpg") for i in range(len(X))])
        pts = layout_2d(X, method="pca")
        results = fob.compute_visualization(dataset, points=pts, brain_key="layout_test")
        np.testing.assert_allclose(np.asarray(results.points), pts)
        assert "layout_test" in dataset.list_brain_runs()
    finally:
        dataset.delete()


def test_exact_knn_with_self_puts_each_row_first_even_among_duplicates():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(60, 5)).astype(np.float32)
    X[10] = X[11] = X[12]  # three identical rows: any of them may come back first
    indices, dists = projection._exact_knn_with_self(X, 6)
    assert indices.shape == dists.shape == (60, 6)
    np.testing.assert_array_equal(indices[:, 0], np.arange(60))
    assert (dists[:, 0] == 0).all() and (np.diff(dists, axis=1) >= -1e-6).all()
    assert all(len(set(row)) == 6 for row in indices)  # no row listed twice
    # Against brute force: the same neighbour distances (ties may order differently).
    full = np.sqrt(((X[:, None, :] - X[None, :, :]) ** 2).sum(-1))
    np.fill_diagonal(full, -1.0)
    np.testing.assert_allclose(dists[:, 1:], np.sort(full, axis=1)[:, 1:6], atol=1e-4)
    assert set(indices[10, 1:3]) == {11, 12}


def test_layout_2d_umap_keeps_clusters_apart():
    X, y = _blobs(n_per=150, k=4)
    pts = layout_2d(X, seed=0)
    centres = np.stack([pts[y == c].mean(axis=0) for c in range(4)])
    nearest = np.argmin(((pts[:, None, :] - centres[None]) ** 2).sum(-1), axis=1)
    assert np.mean(nearest == y) > 0.99


def test_placement_with_the_ivf_index_agrees_with_exact_search(monkeypatch):
    """From `_PLACE_IVF_MIN_FIT` fitted rows on, the placement searches an IVF index: its
    neighbours are nearly the exact ones and the placed points barely move; seeded."""
    rng = np.random.default_rng(5)
    centres = rng.normal(scale=2.0, size=(60, 16))
    Z = (centres[rng.integers(0, 60, 16_000)] + rng.normal(size=(16_000, 16))).astype(np.float32)
    Z_fit, Z_rest = Z[:12_000], Z[12_000:]
    points_fit = Z_fit[:, :2] * 3.0  # any 2-D layout of the fitted rows will do
    assert Z_fit.shape[0] >= projection._PLACE_IVF_MIN_FIT
    ivf = projection._fitted_index(Z_fit, seed=0)
    assert ivf.__class__.__name__ == "IndexIVFFlat"
    _, found = ivf.search(Z_rest, 10)
    flat = faiss.IndexFlatL2(16)
    flat.add(Z_fit)
    _, truth = flat.search(Z_rest, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, truth, strict=True)])
    assert recall > 0.9, recall

    def silent(fraction, message):
        return None

    placed = projection._place_by_neighbors(Z_fit, points_fit, Z_rest, silent, seed=0)
    np.testing.assert_array_equal(
        placed, projection._place_by_neighbors(Z_fit, points_fit, Z_rest, silent, seed=0)
    )
    monkeypatch.setattr(projection, "_PLACE_IVF_MIN_FIT", 10**9)  # the exact search
    placed_exact = projection._place_by_neighbors(Z_fit, points_fit, Z_rest, silent, seed=0)
    spread = np.ptp(points_fit, axis=0).max()
    moved = np.linalg.norm(placed - placed_exact, axis=1)
    assert np.median(moved) < 0.01 * spread
    assert np.quantile(moved, 0.99) < 0.1 * spread
