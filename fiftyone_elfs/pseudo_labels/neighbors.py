"""Cosine nearest neighbours and PCA on embedding matrices, in O(N * dim) memory."""

from __future__ import annotations

import faiss
import numpy as np

__all__ = ["l2_normalize", "nearest_neighbors", "pca_reduce", "check_features"]

# Queries per faiss search call: bounds the [chunk, k] result buffers and keeps progress granular.
_SEARCH_CHUNK = 8192
# PCA fits its covariance on at most this many rows (sampled with ``seed``); beyond that the
# estimate is already exact to well below float32 noise and the cost would only grow.
_PCA_MAX_FIT_ROWS = 200_000


def check_features(X: np.ndarray, name: str = "X") -> np.ndarray:
    """Return X as a C-contiguous float32 2-D array, or raise a ValueError saying how to fix it."""
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D array of shape (n_samples, n_features); got shape {X.shape}. "
            "Stack one embedding vector per sample into a matrix (e.g. np.stack(vectors))."
        )
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(
            f"{name} is empty (shape {X.shape}); pass at least one sample and feature."
        )
    if not np.issubdtype(X.dtype, np.number) or np.iscomplexobj(X):
        raise ValueError(f"{name} must hold real numbers; got dtype {X.dtype}.")
    X = np.ascontiguousarray(X, dtype=np.float32)
    if not np.isfinite(X).all():
        bad = np.flatnonzero(~np.isfinite(X).all(axis=1))
        raise ValueError(
            f"{name} contains NaN or infinite values in {bad.size} row(s) "
            f"(first: {bad[:5].tolist()}). "
            "Recompute those embeddings or drop the affected samples before clustering."
        )
    return X


def l2_normalize(X: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Scale each row to unit L2 norm (float32) so inner products are cosine similarities."""
    X = np.asarray(X, dtype=np.float32)
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return np.ascontiguousarray(X / np.maximum(norms, eps), dtype=np.float32)


def nearest_neighbors(X: np.ndarray, k: int) -> np.ndarray:
    """Return [N, k] int64 indices of each row's k most cosine-similar other rows (exact search).

    Rows are L2-normalised and searched with a faiss ``IndexFlatIP`` in chunks of queries, so
    memory stays O(N * dim + N * k). Each row's own index is removed from its list even when
    exact duplicates tie with it; neighbours are ordered from most to least similar.
    """
    X = check_features(X)
    n = X.shape[0]
    k = int(k)
    if k < 1:
        raise ValueError(f"k must be >= 1; got {k}.")
    if k > n - 1:
        raise ValueError(
            f"k={k} neighbours requested but only {n - 1} other samples exist; use k <= {n - 1}."
        )
    Xn = l2_normalize(X)
    index = faiss.IndexFlatIP(Xn.shape[1])
    index.add(Xn)
    out = np.empty((n, k), dtype=np.int64)
    for start in range(0, n, _SEARCH_CHUNK):
        stop = min(start + _SEARCH_CHUNK, n)
        _, idx = index.search(Xn[start:stop], k + 1)
        rows = np.arange(start, stop)[:, None]
        drop = idx == rows
        # Self not returned (ties with duplicates): drop the least similar extra result instead.
        drop[~drop.any(axis=1), -1] = True
        # Stable sort moves the single dropped column to the end, keeping similarity order.
        order = np.argsort(drop, axis=1, kind="stable")[:, :k]
        out[start:stop] = np.take_along_axis(idx, order, axis=1)
    return out


def pca_reduce(X: np.ndarray, n_components: int, seed: int = 0) -> np.ndarray:
    """Project rows onto their top principal components (float32); a no-op when dim <= n_components.

    Exact eigendecomposition of the (float64) covariance, accumulated in row chunks so memory is
    O(N * dim + dim^2); fitted on at most 200,000 rows sampled with ``seed``. Component signs are
    fixed (largest loading positive) so the output is deterministic.
    """
    X = check_features(X)
    return _fit_pca(X, n_components, seed).transform(X)


class _PCA:
    """Fitted mean and components of a PCA, applied in float32 chunks."""

    def __init__(self, mean: np.ndarray | None, components: np.ndarray | None) -> None:
        self.mean = mean
        self.components = components

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Center and project X; identity when no reduction was needed."""
        X = np.asarray(X, dtype=np.float32)
        if self.components is None:
            return np.ascontiguousarray(X)
        out = np.empty((X.shape[0], self.components.shape[1]), dtype=np.float32)
        for start in range(0, X.shape[0], 65536):
            chunk = X[start : start + 65536] - self.mean
            out[start : start + 65536] = chunk @ self.components
        return out


def _fit_pca(X: np.ndarray, n_components: int, seed: int) -> _PCA:
    """Fit a PCA to X (float32, validated); components is None when dim <= n_components."""
    n_components = int(n_components)
    if n_components < 1:
        raise ValueError(f"n_components must be >= 1; got {n_components}.")
    n, d = X.shape
    if d <= n_components:
        return _PCA(None, None)
    rows = X
    if n > _PCA_MAX_FIT_ROWS:
        pick = np.sort(np.random.default_rng(seed).choice(n, _PCA_MAX_FIT_ROWS, replace=False))
        rows = X[pick]
    mean = rows.mean(axis=0, dtype=np.float64)
    cov = np.zeros((d, d), dtype=np.float64)
    for start in range(0, rows.shape[0], 16384):
        chunk = rows[start : start + 16384].astype(np.float64) - mean
        cov += chunk.T @ chunk
    cov /= max(rows.shape[0] - 1, 1)
    _, vecs = np.linalg.eigh(cov)
    comps = vecs[:, ::-1][:, :n_components]
    signs = np.sign(comps[np.abs(comps).argmax(axis=0), np.arange(n_components)])
    comps = comps * np.where(signs == 0, 1.0, signs)
    return _PCA(mean.astype(np.float32), np.ascontiguousarray(comps, dtype=np.float32))
