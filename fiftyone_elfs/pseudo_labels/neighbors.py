"""Cosine nearest neighbours on embedding matrices, exact or approximate, in O(N * dim) memory.

``pca_reduce`` is re-exported from ``fiftyone_elfs.embeddings.projection`` (the package's one
PCA) for the callers that import it from here.
"""

from __future__ import annotations

import faiss
import numpy as np

from fiftyone_elfs.embeddings.projection import pca_reduce

__all__ = [
    "EXACT_KNN_MAX_SAMPLES",
    "IVF_NPROBE",
    "check_features",
    "l2_normalize",
    "nearest_neighbors",
    "pca_reduce",
]

#: ``nearest_neighbors`` searches exactly up to this many samples and with an IVF index above.
#: Exact search costs O(N^2 * dim): 100,000 x 128 takes about 20 s on 2 cores, 1.28M x 128 about
#: an hour; the IVF index searches about 1/200 of the data per query at 1.28M.
EXACT_KNN_MAX_SAMPLES = 100_000
#: Inverted lists an IVF query visits (of about 4 * sqrt(N)); sets the recall/speed trade-off.
#: Measured recall@50 against exact search (PCA-128 inputs, as TEMI's): 0.96 with 32 (0.90 with
#: 16) on 9,000 real CIFAR-10 EfficientNet-Lite0 embeddings; 0.96 (0.94) on 50,000 synthetic
#: Gaussian-cluster ones. At 1.28M, 32 of ~4,500 lists is ~9,000 rows scanned per query.
IVF_NPROBE = 32

# Queries per faiss search call: bounds the [chunk, k] result buffers and keeps progress granular.
_SEARCH_CHUNK = 8192
_ADD_CHUNK = 65_536  # rows normalised and added to an index at a time
_IVF_LISTS_PER_SQRT_N = 4  # nlist = 4 * sqrt(N): the usual faiss guideline
_IVF_TRAIN_PER_LIST = 64  # coarse k-means training rows per list (faiss: >= 39 to be reliable)
_IVF_TRAIN_ITERS = 10


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
    for start in range(0, X.shape[0], _ADD_CHUNK):  # in chunks: no N x d boolean mask
        if not np.isfinite(X[start : start + _ADD_CHUNK]).all():
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


def _check_k(k: int, n: int) -> int:
    """Return k as an int in [1, n - 1], or raise a ValueError naming the valid range."""
    k = int(k)
    if k < 1:
        raise ValueError(f"k must be >= 1; got {k}.")
    if k > n - 1:
        raise ValueError(
            f"k={k} neighbours requested but only {n - 1} other samples exist; use k <= {n - 1}."
        )
    return k


def _drop_self(idx: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """From [B, k + 1] search results, remove each query's own row (or, if absent, the last)."""
    drop = idx == rows[:, None]
    # Self not returned (ties with duplicates): drop the least similar extra result instead.
    drop[~drop.any(axis=1), -1] = True
    # Stable sort moves the single dropped column to the end, keeping similarity order.
    order = np.argsort(drop, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(idx, order, axis=1)


def _add_normalized(index: faiss.Index, X: np.ndarray) -> None:
    """Add the L2-normalised rows of X to ``index`` chunk by chunk (no normalised copy of X)."""
    for start in range(0, X.shape[0], _ADD_CHUNK):
        index.add(l2_normalize(X[start : start + _ADD_CHUNK]))


def _coarse_cells(X: np.ndarray, seed: int) -> faiss.IndexFlatIP:
    """Centroids of about 4 * sqrt(N) cells of a spherical k-means of the rows of X, as an index.

    Trained for 10 iterations on 64 normalised rows per cell drawn with ``seed``
    (deterministic).
    """
    n, d = X.shape
    nlist = int(np.clip(round(_IVF_LISTS_PER_SQRT_N * np.sqrt(n)), 1, max(1, n // 39)))
    n_train = min(n, _IVF_TRAIN_PER_LIST * nlist)
    pick = np.sort(np.random.default_rng(seed).choice(n, n_train, replace=False))
    km = faiss.Kmeans(
        d,
        nlist,
        niter=_IVF_TRAIN_ITERS,
        seed=int(seed),
        spherical=True,
        max_points_per_centroid=n_train,
        min_points_per_centroid=1,
    )
    km.train(l2_normalize(X[pick]))
    quantizer = faiss.IndexFlatIP(d)
    quantizer.add(l2_normalize(km.centroids))
    return quantizer


def _blocked_ivf_search(
    X: np.ndarray, rows: np.ndarray, k: int, nprobe: int, seed: int
) -> np.ndarray:
    """Approximate [Q, k] cosine neighbours (self included) of ``rows``, one cell at a time.

    Inverted-file search with the scan done per cell instead of per query. Each row belongs
    to its nearest cell (``_coarse_cells``); each query has its ``nprobe`` nearest cells, as an
    ``IndexIVFFlat`` query would visit. The queries of one cell are searched together, exactly,
    among the rows of the union of their visited cells: one matrix product per cell
    (``faiss.knn``), so candidates are read once per cell rather than once per query, and each
    query sees at least the rows an IVF query would (so at least its recall). Rows are
    normalised as they are read: no copy of X.
    """
    n = X.shape[0]
    quantizer = _coarse_cells(X, seed)
    nlist = quantizer.ntotal
    p = min(int(nprobe), nlist)
    cell = np.empty(n, dtype=np.int64)
    for start in range(0, n, _ADD_CHUNK):
        cell[start : start + _ADD_CHUNK] = quantizer.search(
            l2_normalize(X[start : start + _ADD_CHUNK]), 1
        )[1][:, 0]
    visited = np.empty((rows.size, p), dtype=np.int64)  # each query's nprobe nearest cells
    for start in range(0, rows.size, _ADD_CHUNK):
        visited[start : start + _ADD_CHUNK] = quantizer.search(
            l2_normalize(X[rows[start : start + _ADD_CHUNK]]), p
        )[1]
    order = np.argsort(cell, kind="stable")  # rows grouped by cell, in index order
    bounds = np.searchsorted(cell[order], np.arange(nlist + 1))
    home = visited[:, 0]  # a query's own cell: its nearest centroid
    q_order = np.argsort(home, kind="stable")
    q_bounds = np.searchsorted(home[q_order], np.arange(nlist + 1))
    out = np.empty((rows.size, k), dtype=np.int64)
    for c in range(nlist):
        qpos = q_order[q_bounds[c] : q_bounds[c + 1]]
        if qpos.size == 0:
            continue
        cells = np.unique(visited[qpos])
        cand = np.concatenate([order[bounds[v] : bounds[v + 1]] for v in cells])
        if cand.size < k:
            cand = np.arange(n)
        _, idx = faiss.knn(
            l2_normalize(X[rows[qpos]]),
            l2_normalize(X[cand]),
            k,
            metric=faiss.METRIC_INNER_PRODUCT,
        )
        out[qpos] = cand[idx]
    return out


def nearest_neighbors(
    X: np.ndarray,
    k: int,
    *,
    query_rows: np.ndarray | None = None,
    exact_max_samples: int = EXACT_KNN_MAX_SAMPLES,
    nprobe: int = IVF_NPROBE,
    seed: int = 0,
) -> np.ndarray:
    """Return int64 indices [Q, k] of each query row's k most cosine-similar other rows of X.

    Queries are all rows (Q = N) or the rows listed in ``query_rows``. Each query's own row is
    removed from its list even when exact duplicates tie with it; neighbours are ordered from
    most to least similar.

    Up to ``exact_max_samples`` rows the search is exact (faiss ``IndexFlatIP``). Above, it is
    approximate, inverted-file style (``_blocked_ivf_search``): rows are partitioned into
    about 4 * sqrt(N) cells of a spherical k-means trained with ``seed``; each query visits
    its ``nprobe`` nearest cells, and the queries of one cell are searched together among the
    union of the cells they visit, one matrix product per cell. Recall@50 against exact
    search: see ``IVF_NPROBE`` and ``benchmarks/results/scale/README.md``. Why: exact search
    costs O(N^2 * dim), about an hour at 1.28M x 128 on 2 cores; this reads a few times
    nprobe / nlist of it, and as matrix products
    (a per-query scan of an ``IndexIVFFlat`` was memory-bound: 37 minutes for all 1.28M).

    Memory: O(N * dim + Q * k): the exact index holds one normalised copy of X; the
    approximate search normalises each cell's candidates as it reads them (no copy of X).
    Deterministic for a fixed ``seed``.
    """
    X = check_features(X)
    n = X.shape[0]
    k = _check_k(k, n)
    if query_rows is None:
        rows = np.arange(n, dtype=np.int64)
    else:
        rows = np.asarray(query_rows)
        if rows.ndim != 1 or not np.issubdtype(rows.dtype, np.integer):
            raise ValueError(f"query_rows must be a 1-D integer array; got shape {rows.shape}.")
        if rows.size and (rows.min() < 0 or rows.max() >= n):
            raise ValueError(f"query_rows holds indices outside [0, {n}).")
        rows = rows.astype(np.int64, copy=False)
    if int(nprobe) < 1:
        raise ValueError(f"nprobe must be >= 1; got {nprobe}.")
    if n > int(exact_max_samples):
        return _drop_self(_blocked_ivf_search(X, rows, k + 1, int(nprobe), seed), rows, k)
    index = faiss.IndexFlatIP(X.shape[1])
    _add_normalized(index, X)
    out = np.empty((rows.size, k), dtype=np.int64)
    for start in range(0, rows.size, _SEARCH_CHUNK):
        stop = min(start + _SEARCH_CHUNK, rows.size)
        q_rows = rows[start:stop]
        queries = l2_normalize(X[q_rows] if query_rows is not None else X[start:stop])
        _, idx = index.search(queries, k + 1)
        out[start:stop] = _drop_self(idx, q_rows, k)
    return out
