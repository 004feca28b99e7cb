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
    "direction_spread",
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
#: Gaussian-cluster ones (0.96, 0.99 and 0.999 at 50,000, 200,000 and 1.28M with the per-cell
#: search of ``_ivf_search``). At 1.28M, 32 of ~4,500 lists is ~9,000 rows scanned per query.
IVF_NPROBE = 32

# Queries per faiss search call: bounds the [chunk, k] result buffers and keeps progress granular.
_SEARCH_CHUNK = 8192
_ADD_CHUNK = 65_536  # rows normalised and added to an index at a time
_IVF_LISTS_PER_SQRT_N = 4  # nlist = 4 * sqrt(N): the usual faiss guideline
_IVF_TRAIN_PER_LIST = 64  # coarse k-means training rows per list (faiss: >= 39 to be reliable)
_IVF_TRAIN_ITERS = 10
_SHORT_QUERY_CHUNK = 256  # queries searched among all rows at a time: [256, 65,536] similarities
# Queries searched against one cell at a time: bounds the gathered [chunk, dim] query rows.
_CELL_QUERY_CHUNK = 8192


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


_SPREAD_CHUNK = 8192  # rows normalised and hashed at a time by `direction_spread`


def direction_spread(X: np.ndarray) -> tuple[int, int, float]:
    """How far the rows of X point in different directions, as the cosine methods see them:
    ``(n_distinct, n_zero, spread)``.

    ``n_distinct``: the number of distinct L2-normalised rows (an all-zero row is one more
    direction); ``n_zero``: the all-zero rows; ``spread``: the mean squared distance of the unit
    rows to their mean, ``1 - |mean|^2`` (0: every row points the same way; about 1 for
    unrelated directions; 0.33 for EfficientNet-Lite0 embeddings of 60 digit scans). Why:
    identical or all-zero vectors (a broken encoder, a constant field) leave k-means one
    non-empty cluster, whatever n_clusters.

    O(N x dim) time and O(N) memory beyond one chunk (no N x N; 0.4 s for 200,000 x 512 here):
    each normalised row is hashed (its float32 bits times fixed random odd 32-bit weights,
    modulo 2^32, summed: equal rows hash equal; two distinct ones collide with probability
    about 2^-32, which can only lower a count in the millions by a few, never make thousands
    of distinct directions look like fewer), and the distinct hashes are counted.
    """
    X = np.asarray(X)
    n, d = X.shape
    weights = np.random.default_rng(0).integers(0, 2**31, size=d, dtype=np.uint32) * 2 + 1
    hashes = np.empty(n, dtype=np.uint64)
    total = np.zeros(d, dtype=np.float64)
    squares = 0.0  # the rows' own squared norms (1 up to float32 rounding), for 1 - |mean|^2
    n_zero = 0
    for start in range(0, n, _SPREAD_CHUNK):
        unit = l2_normalize(X[start : start + _SPREAD_CHUNK]) + np.float32(0.0)  # -0.0 -> 0.0
        products = unit.view(np.uint32) * weights  # modulo 2^32
        hashes[start : start + unit.shape[0]] = products.sum(axis=1, dtype=np.uint64)
        total += unit.sum(axis=0, dtype=np.float64)
        squares += float(np.einsum("ij,ij->", unit, unit, dtype=np.float64))
        n_zero += int(np.count_nonzero(~unit.any(axis=1)))
    mean = total / max(n, 1)
    spread = float(max(0.0, squares / max(n, 1) - mean @ mean))
    return int(np.unique(hashes).size), n_zero, spread


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
    sample = X[pick]  # a copy: normalised in place, no second one
    sample /= np.maximum(np.linalg.norm(sample, axis=1, keepdims=True), 1e-12)
    km.train(sample)
    quantizer = faiss.IndexFlatIP(d)
    quantizer.add(l2_normalize(km.centroids))
    return quantizer


def _cells_of_rows(X: np.ndarray, quantizer: faiss.IndexFlatIP) -> tuple[np.ndarray, np.ndarray]:
    """The rows of X grouped by their nearest cell: (row order, [nlist + 1] group bounds)."""
    n = X.shape[0]
    cell = np.empty(n, dtype=np.int64)
    for start in range(0, n, _ADD_CHUNK):
        cell[start : start + _ADD_CHUNK] = quantizer.search(
            l2_normalize(X[start : start + _ADD_CHUNK]), 1
        )[1][:, 0]
    order = np.argsort(cell, kind="stable")  # rows grouped by cell, in index order
    return order, np.searchsorted(cell[order], np.arange(quantizer.ntotal + 1))


def _visited_cells(X: np.ndarray, rows: np.ndarray, quantizer: faiss.Index, p: int) -> np.ndarray:
    """[Q, p]: each query row's p nearest cells, nearest first (an IVF query's visit list)."""
    visited = np.empty((rows.size, p), dtype=np.int64)
    for start in range(0, rows.size, _ADD_CHUNK):
        visited[start : start + _ADD_CHUNK] = quantizer.search(
            l2_normalize(X[rows[start : start + _ADD_CHUNK]]), p
        )[1]
    return visited


def _merge_top_k(
    best_sim: np.ndarray, best_idx: np.ndarray, sims: np.ndarray, idx: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The running top-k [q, k] (similarities, row indices) with candidates [q, c] folded in.

    ``sims`` and ``idx`` [q, c] are each query's candidate similarities and row indices
    (padding: -inf and -1). Returns new arrays; the inputs are not modified.
    """
    k = best_sim.shape[1]
    all_sim = np.concatenate([best_sim, sims], axis=1)
    all_idx = np.concatenate([best_idx, idx], axis=1)
    keep = np.argpartition(-all_sim, k - 1, axis=1)[:, :k]
    return np.take_along_axis(all_sim, keep, axis=1), np.take_along_axis(all_idx, keep, axis=1)


def _top_k_among(
    queries: np.ndarray, cand_rows: np.ndarray, cand: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Each normalised query's top min(k, c) cosine similarities among the candidates.

    ``cand_rows`` [c, d] are the normalised rows whose indices are ``cand`` [c]. faiss's exact
    search (a matrix product and a heap per query); returns ([q, min(k, c)] similarities, row
    indices).
    """
    sims, pos = faiss.knn(queries, cand_rows, min(k, cand.size), metric=faiss.METRIC_INNER_PRODUCT)
    return sims, cand[pos]


def _ivf_search(X: np.ndarray, rows: np.ndarray, k: int, nprobe: int, seed: int) -> np.ndarray:
    """Approximate [Q, k] cosine neighbours (self included) of query ``rows``, cell by cell.

    The candidates of an ``IndexIVFFlat`` query exactly (the rows of its ``nprobe`` nearest
    cells of ``_coarse_cells``), scanned by cell instead of by query: each cell's rows are
    normalised once and searched by every query that visits the cell in one call
    (``_top_k_among``), and each query's results are folded into its running top k. Why:
    a per-query scan of an ``IndexIVFFlat`` is memory bound (37 minutes for 1.28M x 128), and
    grouping queries by their own cell and searching the union of the cells they visit (the
    earlier scheme) reads a large share of all rows per cell on clustered data (D2's graph of
    1.28M x 512: 97 of 4,525 cells in 12 minutes). Here each row is read once and each query
    compared with exactly nprobe cells. Queries whose cells hold fewer than k rows are searched
    among all rows. Memory: O(Q * (k + nprobe)) besides X: query rows are gathered and
    normalised per cell, at most ``_CELL_QUERY_CHUNK`` at a time, never copied whole.
    """
    n = X.shape[0]
    quantizer = _coarse_cells(X, seed)
    p = min(int(nprobe), quantizer.ntotal)
    order, bounds = _cells_of_rows(X, quantizer)
    visited = _visited_cells(X, rows, quantizer, p)
    # which queries visit each cell: (query, cell) pairs grouped by cell; pair j is query j // p
    pair_order = np.argsort(visited.ravel(), kind="stable")
    pair_bounds = np.searchsorted(visited.ravel()[pair_order], np.arange(quantizer.ntotal + 1))
    del visited
    best_sim = np.full((rows.size, k), -np.inf, dtype=np.float32)
    best_idx = np.full((rows.size, k), -1, dtype=np.int64)
    for c in range(quantizer.ntotal):
        cand = order[bounds[c] : bounds[c + 1]]
        if cand.size == 0:
            continue
        cand_rows = l2_normalize(X[cand])
        # a popular cell can be visited by a large share of the queries: take them in chunks
        for q_start in range(pair_bounds[c], pair_bounds[c + 1], _CELL_QUERY_CHUNK):
            q_stop = min(q_start + _CELL_QUERY_CHUNK, pair_bounds[c + 1])
            qs = pair_order[q_start:q_stop] // p
            sims, idx = _top_k_among(l2_normalize(X[rows[qs]]), cand_rows, cand, k)
            best_sim[qs], best_idx[qs] = _merge_top_k(best_sim[qs], best_idx[qs], sims, idx)
    short = np.flatnonzero((best_idx < 0).any(axis=1))
    for q_start in range(0, short.size, _SHORT_QUERY_CHUNK):
        # too few rows in the visited cells: every row is a candidate
        qs = short[q_start : q_start + _SHORT_QUERY_CHUNK]
        queries = l2_normalize(X[rows[qs]])
        sub_sim = np.full((qs.size, k), -np.inf, dtype=np.float32)
        sub_idx = np.full((qs.size, k), -1, dtype=np.int64)
        for start in range(0, n, _ADD_CHUNK):
            cand = np.arange(start, min(start + _ADD_CHUNK, n))
            found = _top_k_among(queries, l2_normalize(X[cand]), cand, k)
            sub_sim, sub_idx = _merge_top_k(sub_sim, sub_idx, *found)
        best_sim[qs], best_idx[qs] = sub_sim, sub_idx
    # most similar first; equal similarities by row index (deterministic)
    rank = np.lexsort((best_idx, -best_sim), axis=1)
    return np.take_along_axis(best_idx, rank, axis=1)


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
    approximate, inverted-file style: rows are partitioned into about 4 * sqrt(N) cells of a
    spherical k-means trained with ``seed``; each query visits its ``nprobe`` nearest cells,
    and each cell is searched once by every query visiting it (``_ivf_search``). Recall@50
    against exact search: see ``IVF_NPROBE`` and
    ``benchmarks/results/scale/README.md``. Why: exact search costs O(N^2 * dim), about an
    hour at 1.28M x 128 on 2 cores; this reads a few times nprobe / nlist of it, and as matrix
    products (a per-query scan of an ``IndexIVFFlat`` was memory-bound: 37 minutes for all
    1.28M).

    Memory: O(N * dim + Q * (k + nprobe)): the exact index holds one normalised copy of X;
    the approximate search normalises each cell's rows and queries as it reads them (no copy
    of X).
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
        return _drop_self(_ivf_search(X, rows, k + 1, int(nprobe), seed), rows, k)
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
