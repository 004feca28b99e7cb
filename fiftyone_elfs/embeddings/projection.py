"""Linear projection (PCA) and 2-D layouts of embedding matrices, in O(N * dim) memory.

Arrays in, arrays out; no FiftyOne import. One PCA serves the whole package: the embedding plot
(``pca_reduce`` before UMAP, ``layout_2d``) and TEMI's input reduction (``fit_pca`` with
``normalize=True``) both use ``fit_pca``.
"""

from __future__ import annotations

from collections.abc import Callable

import faiss
import numpy as np

__all__ = [
    "LAYOUT_MAX_FIT_SAMPLES",
    "LAYOUT_METHODS",
    "PCA_MAX_FIT_ROWS",
    "PCAProjection",
    "fit_pca",
    "layout_2d",
    "pca_reduce",
]

ProgressFn = Callable[[float, str], None]

#: PCA fits its covariance on at most this many rows (sampled with ``seed``); beyond that the
#: estimate of the top components is already far below float32 noise and the cost only grows.
PCA_MAX_FIT_ROWS = 200_000
#: ``layout_2d`` fits UMAP on at most this many samples and places the others by their nearest
#: fitted neighbours. 50,000 samples fit in about a minute on 2 CPU cores (UMAP runs on one).
LAYOUT_MAX_FIT_SAMPLES = 50_000
#: Methods accepted by ``layout_2d``.
LAYOUT_METHODS = ("umap", "pca")

_CHUNK_ROWS = 65_536  # rows per chunk of a float32 temporary (at 512-d: 128 MB)
_COV_CHUNK = 16_384  # rows per float64 covariance update (at 512-d: 64 MB)
_PLACE_NEIGHBORS = 10  # fitted neighbours that place each sample UMAP did not see
#: From this many fitted rows on, the placement's neighbour search uses an IVF index (below,
#: the exact search is already fast): 4 * sqrt(n) lists, ``_PLACE_NPROBE`` visited per query.
_PLACE_IVF_MIN_FIT = 10_000
_PLACE_NPROBE = 16


def _as_matrix(X: np.ndarray, name: str = "X") -> np.ndarray:
    """Return X as a 2-D real array (no copy when it already is one), or raise a ValueError."""
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array [N, d]; got shape {X.shape}.")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {X.shape}); pass at least one row and column.")
    if not np.issubdtype(X.dtype, np.number) or np.iscomplexobj(X):
        raise ValueError(f"{name} must hold real numbers; got dtype {X.dtype}.")
    return X


def _check_finite(X: np.ndarray) -> None:
    """Raise a ValueError if X holds NaN or infinity (checked in chunks: no N x d mask)."""
    for start in range(0, X.shape[0], _CHUNK_ROWS):
        if not np.isfinite(X[start : start + _CHUNK_ROWS]).all():
            raise ValueError("X contains NaN or infinite values; recompute or drop those rows.")


def _rows_f32(X: np.ndarray, start: int, stop: int, normalize: bool) -> np.ndarray:
    """Rows start:stop of X as float32, L2-normalised when ``normalize`` (a fresh array)."""
    rows = np.array(X[start:stop], dtype=np.float32)
    if normalize:
        rows /= np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
    return rows


class PCAProjection:
    """A fitted PCA: the mean and top principal axes of the fit rows, applied in float32 chunks.

    ``components`` is None when no reduction was needed (dim <= n_components): ``transform`` then
    returns the rows unchanged (as float32, normalised if asked). ``normalize`` records whether
    the rows were L2-normalised before fitting; ``transform`` does the same to new rows.
    """

    def __init__(
        self, mean: np.ndarray | None, components: np.ndarray | None, normalize: bool = False
    ) -> None:
        self.mean = mean
        self.components = components
        self.normalize = bool(normalize)

    @property
    def n_components(self) -> int | None:
        """Output width, or None for the identity."""
        return None if self.components is None else int(self.components.shape[1])

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Centre and project the rows of X (float32 [N, n_components]), one chunk at a time.

        Memory: the output plus one chunk; no full-size copy of X is made.
        """
        X = _as_matrix(X)
        n, d = X.shape
        width = d if self.components is None else self.components.shape[1]
        if self.components is None and not self.normalize:
            return np.ascontiguousarray(X, dtype=np.float32)
        out = np.empty((n, width), dtype=np.float32)
        for start in range(0, n, _CHUNK_ROWS):
            stop = min(start + _CHUNK_ROWS, n)
            rows = _rows_f32(X, start, stop, self.normalize)
            if self.components is None:
                out[start:stop] = rows
            else:
                rows -= self.mean
                out[start:stop] = rows @ self.components
        return out


def fit_pca(
    X: np.ndarray,
    n_components: int,
    seed: int = 0,
    *,
    normalize: bool = False,
    max_fit_rows: int | None = PCA_MAX_FIT_ROWS,
) -> PCAProjection:
    """Fit a PCA to the rows of X: exact eigendecomposition of their float64 covariance.

    What: the mean and the ``n_components`` leading eigenvectors of the covariance, with signs
    fixed (largest loading positive) so the result is deterministic. With ``normalize`` the rows
    are L2-normalised first (cosine geometry). When X has more than ``max_fit_rows`` rows the
    covariance is estimated on that many rows drawn with ``seed`` (sorted, without replacement).

    Why exact and sampled: the covariance costs O(rows * d^2) and O(d^2) memory, its estimate is
    already exact to far below float32 noise at 200,000 rows, and the result is deterministic
    (randomised SVD on all rows needed a centred float copy of X at 1.28M x 512). Memory:
    O(max_fit_rows * d + d^2); X itself is never copied in full.
    """
    X = _as_matrix(X)
    n_components = int(n_components)
    if n_components < 1:
        raise ValueError(f"n_components must be >= 1; got {n_components}.")
    n, d = X.shape
    if d <= n_components:
        return PCAProjection(None, None, normalize)
    if max_fit_rows is not None and n > int(max_fit_rows):
        pick = np.sort(np.random.default_rng(seed).choice(n, int(max_fit_rows), replace=False))
        rows = _rows_f32(X[pick], 0, pick.size, normalize)
    else:
        rows = _rows_f32(X, 0, n, normalize) if normalize else np.asarray(X, dtype=np.float32)
    mean = rows.mean(axis=0, dtype=np.float64)
    cov = np.zeros((d, d), dtype=np.float64)
    for start in range(0, rows.shape[0], _COV_CHUNK):
        chunk = rows[start : start + _COV_CHUNK].astype(np.float64) - mean
        cov += chunk.T @ chunk
    cov /= max(rows.shape[0] - 1, 1)
    _, vecs = np.linalg.eigh(cov)
    comps = vecs[:, ::-1][:, :n_components]
    signs = np.sign(comps[np.abs(comps).argmax(axis=0), np.arange(n_components)])
    comps = comps * np.where(signs == 0, 1.0, signs)
    return PCAProjection(
        mean.astype(np.float32), np.ascontiguousarray(comps, dtype=np.float32), normalize
    )


def pca_reduce(X: np.ndarray, n_components: int, seed: int = 0) -> np.ndarray:
    """Project the rows of X onto their top ``n_components`` principal axes (float32 [N, n_c]).

    ``fit_pca`` then ``transform``: exact covariance PCA fitted on at most ``PCA_MAX_FIT_ROWS``
    rows sampled with ``seed``, applied in chunks (O(N * dim) memory). Returns X as float32
    unchanged when it has at most ``n_components`` columns.
    """
    X = _as_matrix(X)
    _check_finite(X)
    return fit_pca(X, n_components, seed).transform(X)


def _check_layout_args(method: str, pca_dims: int, max_fit: int, n_neighbors: int) -> None:
    """Raise a ValueError naming the fix for a bad ``layout_2d`` argument."""
    if method not in LAYOUT_METHODS:
        raise ValueError(f"method must be one of {LAYOUT_METHODS}; got {method!r}.")
    for name, value, low in (
        ("pca_dims", pca_dims, 2),
        ("max_fit", max_fit, 4),
        ("n_neighbors", n_neighbors, 2),
    ):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}; got {value!r}.")


def _exact_knn_with_self(Z: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's k nearest rows of Z (itself first, at distance 0) and their L2 distances.

    Exact faiss search in chunks: O(N * k) memory, no N x N matrix. Duplicated rows could
    otherwise put a twin before the row itself, which UMAP's precomputed-kNN input does not
    expect.
    """
    Z = np.ascontiguousarray(Z, dtype=np.float32)
    n = Z.shape[0]
    index = faiss.IndexFlatL2(Z.shape[1])
    index.add(Z)
    indices = np.empty((n, k), dtype=np.int64)
    dists = np.empty((n, k), dtype=np.float32)
    chunk = 8_192
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        d2, idx = index.search(Z[start:stop], k)
        rows = np.arange(start, stop)[:, None]
        others = idx != rows
        others[others.all(axis=1), -1] = False  # self not among the k found: drop the k-th
        m = stop - start
        indices[start:stop, 0] = rows[:, 0]
        dists[start:stop, 0] = 0.0
        indices[start:stop, 1:] = idx[others].reshape(m, k - 1)
        dists[start:stop, 1:] = np.sqrt(np.maximum(d2[others].reshape(m, k - 1), 0.0))
    return indices, dists


def _umap_fit(Z: np.ndarray, n_neighbors: int, seed: int) -> np.ndarray:
    """UMAP's 2-D embedding of the rows of Z (seeded, hence single-threaded and reproducible).

    The neighbour graph is handed to UMAP from an exact faiss search (``precomputed_knn``):
    UMAP's own search JIT-compiles for about 15 s in every new process, longer than the whole
    layout of a few thousand samples takes.
    """
    import warnings

    import umap

    k = min(int(n_neighbors), Z.shape[0] - 1)
    reducer = umap.UMAP(
        n_components=2,
        n_neighbors=k,
        random_state=int(seed),
        precomputed_knn=(*_exact_knn_with_self(Z, k), None),
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*n_jobs value.*")  # seeded: one thread
        warnings.filterwarnings("ignore", message=".*knn_search_index.*")  # no transform used
        return np.asarray(reducer.fit_transform(Z), dtype=np.float32)


def _fitted_index(Z_fit: np.ndarray, seed: int) -> faiss.Index:
    """The L2 index ``_place_by_neighbors`` searches: exact up to ``_PLACE_IVF_MIN_FIT`` rows,
    an ``IndexIVFFlat`` above (coarse k-means seeded with ``seed``; deterministic).

    Why: the exact search of 1.23M rows among 50,000 fitted ones is 3e12 multiply-adds, 50 to
    170 s on 2 cores; with 894 lists and 16 visited the same search takes seconds, and the
    neighbours it misses are near-ties that move a point by a fraction of its cluster's spread
    (``test_projection``: recall@10 against exact search and the displacement).
    """
    Z_fit = np.ascontiguousarray(Z_fit, dtype=np.float32)
    n, dim = Z_fit.shape
    if n < _PLACE_IVF_MIN_FIT:
        index = faiss.IndexFlatL2(dim)
    else:
        n_lists = min(int(4 * np.sqrt(n)), n // 39)  # faiss wants >= 39 training rows a list
        index = faiss.IndexIVFFlat(faiss.IndexFlatL2(dim), dim, n_lists)
        index.cp.seed = int(seed)
        index.train(Z_fit)
        index.nprobe = _PLACE_NPROBE
    index.add(Z_fit)
    return index


def _place_by_neighbors(
    Z_fit: np.ndarray,
    points_fit: np.ndarray,
    Z_rest: np.ndarray,
    progress: ProgressFn,
    seed: int = 0,
) -> np.ndarray:
    """2-D positions for rows UMAP did not see: the weighted mean of their fitted neighbours'.

    Each row takes its ``_PLACE_NEIGHBORS`` nearest fitted rows (L2 in the PCA space,
    ``_fitted_index``) with weights exp(-(d_j - d_1) / (mean d - d_1)) over their distances
    d_j: the nearest neighbour weighs most, the scale adapts to the local density (as UMAP's
    own ``transform`` initialises new points, before its optimisation, which this skips).
    """
    index = _fitted_index(Z_fit, seed)
    k = min(_PLACE_NEIGHBORS, Z_fit.shape[0])
    out = np.empty((Z_rest.shape[0], 2), dtype=np.float32)
    chunk = 16_384
    for start in range(0, Z_rest.shape[0], chunk):
        stop = min(start + chunk, Z_rest.shape[0])
        d2, idx = index.search(np.ascontiguousarray(Z_rest[start:stop]), k)
        found = idx >= 0  # an IVF search may find fewer than k: those weigh nothing
        idx = np.where(found, idx, idx[:, :1])
        dist = np.sqrt(np.maximum(d2, 0.0, dtype=np.float32)).astype(np.float64)
        dist = np.where(found, dist, dist[:, :1])
        near = dist[:, :1]
        scale = np.maximum(dist.mean(axis=1, keepdims=True) - near, 1e-12)
        w = np.exp(-(dist - near) / scale) * found
        w /= w.sum(axis=1, keepdims=True)
        out[start:stop] = np.einsum("ik,ikc->ic", w, points_fit[idx].astype(np.float64))
        progress(0.5 + 0.5 * stop / Z_rest.shape[0], f"placed {stop} of {Z_rest.shape[0]}")
    return out


def layout_2d(
    X: np.ndarray,
    method: str = "umap",
    *,
    pca_dims: int = 50,
    max_fit: int = LAYOUT_MAX_FIT_SAMPLES,
    n_neighbors: int = 15,
    seed: int = 0,
    progress: ProgressFn | None = None,
) -> np.ndarray:
    """2-D coordinates [N, 2] (float32) for plotting N embeddings, in bounded time at any N.

    - ``method="umap"``: PCA to ``pca_dims`` (``fit_pca``), then UMAP (``n_neighbors``,
      ``random_state=seed``). Up to ``max_fit`` samples, UMAP sees them all. Above, UMAP is fit
      on ``max_fit`` samples drawn with ``seed`` and every other sample is placed at the
      weighted mean of its 10 nearest fitted samples' positions (in the PCA space, by an IVF
      index from 10,000 fitted samples on; see ``_place_by_neighbors``). UMAP's own
      ``transform`` would optimise each new point further but costs about as much as a fit
      per point batch; this placement is linear in N and keeps the fitted layout unchanged.
    - ``method="pca"``: the first two principal components (fast, linear, no sampling).

    Why: UMAP on all of 1.28M samples takes about 30 minutes on one thread, and the plot at that
    size is a density picture for which a 50,000-sample fit is as informative. Memory is
    O(N * pca_dims); X is never copied in full. Deterministic for a fixed ``seed``. The result
    can be handed to ``fiftyone.brain.compute_visualization(samples, points=...)``.
    ``progress(fraction, message)`` is called as stages finish.
    """
    X = _as_matrix(X)
    _check_layout_args(method, pca_dims, max_fit, n_neighbors)
    n = X.shape[0]
    if n < 4:
        raise ValueError(f"A 2-D layout needs at least 4 samples; got {n}.")
    _check_finite(X)
    report = progress or (lambda frac, msg: None)
    if method == "pca":
        report(0.0, f"PCA layout of {n} samples")
        points = fit_pca(X, 2, seed).transform(X)
        if points.shape[1] < 2:  # one-column input: pad with zeros
            points = np.c_[points, np.zeros((n, 2 - points.shape[1]), dtype=np.float32)]
        report(1.0, "done")
        return points
    report(0.0, f"PCA of {n} samples to {pca_dims} dimensions")
    Z = pca_reduce(X, pca_dims, seed)
    if n <= max_fit:
        report(0.1, f"UMAP on all {n} samples")
        points = _umap_fit(Z, n_neighbors, seed)
        report(1.0, "done")
        return points
    fit_rows = np.sort(np.random.default_rng(seed).choice(n, int(max_fit), replace=False))
    report(0.1, f"UMAP on {fit_rows.size} of {n} samples")
    points_fit = _umap_fit(Z[fit_rows], n_neighbors, seed)
    rest = np.ones(n, dtype=bool)
    rest[fit_rows] = False
    points = np.empty((n, 2), dtype=np.float32)
    points[fit_rows] = points_fit
    points[rest] = _place_by_neighbors(Z[fit_rows], points_fit, Z[rest], report, seed)
    report(1.0, "done")
    return points
