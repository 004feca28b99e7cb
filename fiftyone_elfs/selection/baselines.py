"""Geometry-only, label-free coreset baselines: random, prototypicality, k-center, D2, ZCore.

Arrays in, arrays out; no FiftyOne import. Memory is O(N * dim + N * k): no N x N matrix is
ever built. Every selector returns the selected sample indices as a sorted 1-D int64 array of
length ``min(budget, N)`` and is deterministic for a fixed ``seed``.

Scale (measured on 2 CPU cores; ``benchmarks/results/scale/README.md``): prototypicality and D2
run at 1.28M x 512 with a 10% budget in about 2 and 13 minutes (k-means trained on a sample,
approximate kNN above ``EXACT_KNN_MAX_SAMPLES``). k-center greedy (budget x N x dim work) and
ZCore (n_draws x N work) have no such shortcut; they raise a ``ValueError`` naming the limit
and the alternatives when the work exceeds ``KCENTER_MAX_WORK`` / ``ZCORE_MAX_WORK`` (about
30 minutes each here).
"""

from __future__ import annotations

import numbers

import faiss
import numpy as np

from ..pseudo_labels.kmeans import kmeans_pseudo_labels
from ..pseudo_labels.neighbors import check_features, l2_normalize, nearest_neighbors

__all__ = [
    "KCENTER_MAX_WORK",
    "ZCORE_MAX_WORK",
    "d2_prune",
    "k_center_greedy",
    "prototypicality_scores",
    "prototypicality_select",
    "random_select",
    "zcore_scores",
    "zcore_select",
]

#: k-center greedy refuses when budget x N x dim (its multiply-adds, one pass over X per pick)
#: exceeds this: about 30 minutes on 2 CPU cores (measured 0.5-1 ns per multiply-add, memory
#: bound). 10% of 200,000 x 512 (2.0e12) fits; 10% of 1.28M x 512 (8.4e16, ~days) does not.
KCENTER_MAX_WORK = 2.5e12
#: ZCore refuses when n_draws x N (each draw scans every sample in 2 coordinates) exceeds this:
#: about 30 minutes on 2 CPU cores (20-45 ns per sample and draw). The default 1M draws fit up
#: to 50,000 samples; at 1.28M at most 39,000 draws would.
ZCORE_MAX_WORK = 5e10

# Rows per chunk when a [chunk, dim] temporary is needed: bounds memory at ~16 MB of float32.
_ROW_BUDGET = 1 << 22
# D2's reverse pass keeps the maximum of each block of this many scores, so a pick costs
# O(N / block + block * touched blocks) instead of a full argmax over N.
_ARGMAX_BLOCK = 1024
# ZCore: at most this many draws per batch; a batch holds a few [batch, N] float32 arrays.
_ZCORE_MAX_BATCH = 256
# ZCore: columns sampled once to estimate each draw's neighbour-distance threshold. The probe
# holds about _ZCORE_PROBE_HITS expected neighbours (within [_ZCORE_PROBE_MIN, _ZCORE_PROBE_MAX]
# columns), enough for a tight quantile estimate at a fraction of a full selection's cost.
_ZCORE_PROBE_HITS = 64
_ZCORE_PROBE_MIN = 256
_ZCORE_PROBE_MAX = 8192


# ----------------------------------------------------------------------------- validation


def _is_int(value: object) -> bool:
    """True for Python/NumPy integers, False for bools and everything else."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _check_budget(budget: int) -> int:
    """Return budget as an int >= 1 or raise a ValueError saying how to fix it."""
    if not _is_int(budget) or budget < 1:
        raise ValueError(
            f"budget must be a whole number of samples >= 1; got {budget!r}. "
            "Pass the number of samples to keep (a budget >= N keeps every sample)."
        )
    return int(budget)


def _check_seed(seed: int) -> int:
    """Return seed as a non-negative int or raise a ValueError."""
    if not _is_int(seed) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer; got {seed!r}.")
    return int(seed)


def _check_positive_int(value: int, name: str, minimum: int = 1) -> int:
    """Return value as an int >= minimum or raise a ValueError naming the parameter."""
    if not _is_int(value) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}.")
    return int(value)


def _check_gamma(value: float, name: str) -> float:
    """Return value as a finite float >= 0 or raise a ValueError naming the parameter."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value >= 0:
        raise ValueError(f"{name} must be a finite number >= 0; got {value!r}.")
    if not np.isfinite(value):
        raise ValueError(f"{name} must be a finite number >= 0; got {value!r}.")
    return float(value)


def _all_indices(n: int) -> np.ndarray:
    """Every index 0..n-1 as int64 (the answer whenever the budget covers the pool)."""
    return np.arange(n, dtype=np.int64)


def _top_indices(scores: np.ndarray, budget: int, largest: bool) -> np.ndarray:
    """Sorted indices of the ``budget`` largest (or smallest) scores; ties go to lower indices."""
    order = np.argsort(-scores if largest else scores, kind="stable")
    return np.sort(order[:budget]).astype(np.int64)


# ----------------------------------------------------------------------------- random


def random_select(n: int, budget: int, seed: int = 0) -> np.ndarray:
    """Uniformly random subset of ``budget`` of ``n`` samples, without replacement.

    The reference every other selector must beat; returns sorted int64 indices.
    """
    if not _is_int(n) or n < 1:
        raise ValueError(
            f"n must be the number of samples in the pool (an integer >= 1); got {n!r}."
        )
    n = int(n)
    budget = _check_budget(budget)
    seed = _check_seed(seed)
    if budget >= n:
        return _all_indices(n)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=budget, replace=False)).astype(np.int64)


# ----------------------------------------------------------------------------- prototypicality


def prototypicality_scores(
    X: np.ndarray, n_clusters: int = 10, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Distance of each sample to its own spherical k-means centroid, and its cluster label.

    Returns ``(distances, labels)``: float64 Euclidean distances between the L2-normalised sample
    and its L2-normalised cluster mean (in [0, 2]; monotone in cosine distance), and int64 labels.
    The clustering is the repo's ``kmeans_pseudo_labels`` (same seed, same clusters as ELFS's
    k-means pseudo-labels); the centroid is the normalised mean of the cluster's members.
    """
    X = check_features(X)
    seed = _check_seed(seed)
    labels, _ = kmeans_pseudo_labels(X, n_clusters, seed=seed)
    n, d = X.shape
    centroids = np.zeros((int(n_clusters), d), dtype=np.float64)
    # Members of each cluster in index order (stable sort), normalised one cluster at a time:
    # no normalised copy of X.
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(int(n_clusters) + 1))
    for c in range(int(n_clusters)):
        members = order[bounds[c] : bounds[c + 1]]
        if members.size:
            centroids[c] = l2_normalize(X[members]).sum(axis=0, dtype=np.float64)
    centroids = l2_normalize(centroids)
    dist = np.empty(n, dtype=np.float64)
    step = max(1, _ROW_BUDGET // d)
    for start in range(0, n, step):
        stop = min(start + step, n)
        cos = np.einsum("ij,ij->i", l2_normalize(X[start:stop]), centroids[labels[start:stop]])
        dist[start:stop] = np.sqrt(np.maximum(0.0, 2.0 - 2.0 * cos.astype(np.float64)))
    return dist, labels.astype(np.int64)


def prototypicality_select(
    X: np.ndarray,
    budget: int,
    n_clusters: int = 10,
    keep: str = "easy",
    seed: int = 0,
) -> np.ndarray:
    """Self-supervised prototypicality (Sorscher et al., 2022): rank by distance to the centroid.

    ``keep="easy"`` keeps the ``budget`` samples closest to their k-means centroid (most
    prototypical), ``keep="hard"`` the farthest; ties go to lower indices. Sorted int64 indices.
    """
    if keep not in ("easy", "hard"):
        raise ValueError(
            f"keep must be 'easy' (closest to the centroid) or 'hard' (farthest); got {keep!r}."
        )
    X = check_features(X)
    budget = _check_budget(budget)
    if budget >= X.shape[0]:
        return _all_indices(X.shape[0])
    dist, _ = prototypicality_scores(X, n_clusters=n_clusters, seed=seed)
    return _top_indices(dist, budget, largest=(keep == "hard"))


# ----------------------------------------------------------------------------- k-center greedy


def _check_initial(initial: np.ndarray | list[int] | None, n: int) -> np.ndarray:
    """Return the already-selected indices as a unique sorted int64 array, validated against n."""
    if initial is None:
        return np.empty(0, dtype=np.int64)
    arr = np.asarray(initial)
    if arr.size == 0:
        return np.empty(0, dtype=np.int64)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(
            f"initial must be a 1-D array of integer sample indices; got shape {arr.shape} and "
            f"dtype {arr.dtype}."
        )
    if arr.min() < 0 or arr.max() >= n:
        raise ValueError(
            f"initial holds indices outside [0, {n}) (min {arr.min()}, max {arr.max()}); "
            "pass positions of rows of X."
        )
    return np.unique(arr).astype(np.int64)


def k_center_greedy(
    X: np.ndarray,
    budget: int,
    seed: int = 0,
    initial: np.ndarray | list[int] | None = None,
    *,
    normalize: bool = True,
) -> np.ndarray:
    """Greedy k-center (Sener & Savarese, 2018): repeatedly add the sample farthest from the set.

    A 2-approximation of the minimax cover. Keeps one O(N) vector of squared Euclidean distances
    to the nearest selected point, updated with one matrix-vector pass over X per pick. Starts
    from a seeded random sample, or from ``initial`` (already selected; never returned again).
    Distances are on L2-normalised rows unless ``normalize=False``. Returns the ``budget`` new
    picks, sorted; a budget >= the number of non-initial samples returns all of them.

    Cost: budget x N x dim multiply-adds; above ``KCENTER_MAX_WORK`` it raises a ValueError
    that names the limit and the alternatives (about 30 minutes on 2 CPU cores).
    """
    X = check_features(X)
    budget = _check_budget(budget)
    seed = _check_seed(seed)
    n = X.shape[0]
    init = _check_initial(initial, n)
    if budget >= n - init.size:
        return np.setdiff1d(_all_indices(n), init).astype(np.int64)
    work = float(budget) * n * X.shape[1]
    if work > KCENTER_MAX_WORK:
        largest = int(KCENTER_MAX_WORK // (n * X.shape[1]))
        raise ValueError(
            f"k-center greedy would need budget x N x dim = {budget} x {n} x {X.shape[1]} = "
            f"{work:.2g} multiply-adds, above its limit KCENTER_MAX_WORK = "
            f"{KCENTER_MAX_WORK:.2g} (about 30 minutes on 2 CPU cores). Use a budget of at "
            f"most {largest} here, run it on a random subset of the pool, or use a method "
            "that scales to this size: ELFS, d2_prune or prototypicality_select."
        )
    Xf = l2_normalize(X) if normalize else X
    sq_norms = np.einsum("ij,ij->i", Xf, Xf).astype(np.float64)

    def sq_dist_to(i: int) -> np.ndarray:
        dots = (Xf @ Xf[i]).astype(np.float64)
        return np.maximum(sq_norms + sq_norms[i] - 2.0 * dots, 0.0)

    picks = np.empty(budget, dtype=np.int64)
    if init.size:
        index = faiss.IndexFlatL2(Xf.shape[1])
        index.add(np.ascontiguousarray(Xf[init]))
        min_dist = np.empty(n, dtype=np.float64)
        step = max(1, _ROW_BUDGET // max(init.size, 1))
        for start in range(0, n, step):
            dists, _ = index.search(Xf[start : start + step], 1)
            min_dist[start : start + step] = np.maximum(dists[:, 0], 0.0)
        min_dist[init] = -1.0  # selected: never the farthest
        n_done = 0
    else:
        first = int(np.random.default_rng(seed).integers(n))
        picks[0] = first
        min_dist = sq_dist_to(first)
        min_dist[first] = -1.0
        n_done = 1
    for t in range(n_done, budget):
        i = int(np.argmax(min_dist))  # ties (e.g. all remaining are duplicates): lowest index
        picks[t] = i
        np.minimum(min_dist, sq_dist_to(i), out=min_dist)
        min_dist[i] = -1.0
    return np.sort(picks)


# ----------------------------------------------------------------------------- D2 pruning


def _check_difficulty(difficulty: np.ndarray, n: int) -> np.ndarray:
    """Return difficulty as finite float64 of length n, or raise a ValueError saying why."""
    d = np.asarray(difficulty)
    if d.ndim != 1 or d.shape[0] != n:
        raise ValueError(
            f"difficulty must be a 1-D array with one score per row of X ({n}); got shape "
            f"{d.shape}."
        )
    if d.dtype == bool or not np.issubdtype(d.dtype, np.number) or np.iscomplexobj(d):
        raise ValueError(f"difficulty must hold real numbers; got dtype {d.dtype}.")
    d = d.astype(np.float64)
    if not np.isfinite(d).all():
        raise ValueError(
            f"difficulty contains NaN or infinite values for {int((~np.isfinite(d)).sum())} "
            "sample(s); recompute those scores or drop the samples."
        )
    return d


def _edge_sq_dists(X: np.ndarray, nbrs: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances [N, k] between the L2-normalised rows of X and their listed
    neighbours' (rows normalised chunk by chunk: no normalised copy of X)."""
    n, k = nbrs.shape
    d = X.shape[1]
    out = np.empty((n, k), dtype=np.float64)
    step = max(1, _ROW_BUDGET // (k * d))
    for start in range(0, n, step):
        stop = min(start + step, n)
        rows = l2_normalize(X[start:stop])
        partners = l2_normalize(X[nbrs[start:stop].ravel()]).reshape(stop - start, k, d)
        cos = np.einsum("id,ikd->ik", rows, partners)
        out[start:stop] = np.maximum(0.0, 2.0 - 2.0 * cos.astype(np.float64))
    return out


def d2_prune(
    X: np.ndarray,
    budget: int,
    difficulty: np.ndarray | None = None,
    n_neighbors: int = 10,
    gamma_forward: float = 1.0,
    gamma_reverse: float = 1.0,
    n_clusters: int = 10,
    seed: int = 0,
) -> np.ndarray:
    """D2 pruning (Maharana et al., ICLR 2024): message passing balancing difficulty and diversity.

    Choices made here (label-free variant):

    - Graph: each sample's ``n_neighbors`` nearest other samples by cosine similarity (faiss
      search, self excluded; capped at N-1; exact up to ``EXACT_KNN_MAX_SAMPLES``, an IVF index
      seeded with ``seed`` above, see ``nearest_neighbors``). Edge weight
      ``w_ij = exp(-gamma * ||x_i - x_j||^2)`` with Euclidean distance between L2-normalised
      rows (so ``||.||^2 = 2 - 2 cos`` in [0, 4]).
      The graph is directed: i's neighbours are i's own k nearest.
    - Difficulty (higher = harder = preferred): if None, the distance to the own spherical
      k-means centroid (``prototypicality_scores``, the paper's self-supervised variant).
      Scores are min-max scaled to [0, 1] (a constant score becomes 1) so messages add
      non-negative amounts; pass e.g. ``-aum`` for a low-is-hard score.
    - Forward message passing (one round):
      ``s_i = d_i + sum_{j in kNN(i)} w_ij(gamma_forward) * d_j``, so hard samples in hard
      neighbourhoods score highest.
    - Reverse message passing: repeatedly take the highest-scoring unselected sample i (ties:
      lowest index), then for each j in kNN(i) set ``s_j -= w_ij(gamma_reverse) * s_i``, which
      pushes down i's near-duplicates. Blocked argmax (``_reverse_pass``), O(N k) memory.

    The paper's optional hard-end cut (dropping the hardest first at high pruning rates) is not
    applied. Returns sorted int64 indices; a budget >= N returns every index.
    """
    X = check_features(X)
    budget = _check_budget(budget)
    seed = _check_seed(seed)
    n_neighbors = _check_positive_int(n_neighbors, "n_neighbors")
    gamma_forward = _check_gamma(gamma_forward, "gamma_forward")
    gamma_reverse = _check_gamma(gamma_reverse, "gamma_reverse")
    n = X.shape[0]
    if difficulty is not None:
        diff = _check_difficulty(difficulty, n)
    if budget >= n:
        return _all_indices(n)
    if difficulty is None:
        diff, _ = prototypicality_scores(X, n_clusters=n_clusters, seed=seed)
    lo, hi = float(diff.min()), float(diff.max())
    diff = (diff - lo) / (hi - lo) if hi > lo else np.ones(n, dtype=np.float64)

    k = min(n_neighbors, n - 1)
    nbrs = nearest_neighbors(X, k, seed=seed)
    sq = _edge_sq_dists(X, nbrs)
    scores = diff + (np.exp(-gamma_forward * sq) * diff[nbrs]).sum(axis=1)
    w_reverse = np.exp(-gamma_reverse * sq)
    return np.sort(_reverse_pass(scores, nbrs, w_reverse, budget))


def _reverse_pass(
    scores: np.ndarray, nbrs: np.ndarray, w_reverse: np.ndarray, budget: int
) -> np.ndarray:
    """D2's greedy picks: the argmax of ``scores`` each time, then its neighbours pushed down.

    Same picks as a full ``np.argmax`` per step (ties to the lowest index): the maximum of each
    block of ``_ARGMAX_BLOCK`` scores is kept, the first block holding the overall maximum is
    searched, and only the blocks a pick touched are recomputed. O(budget x (N / block + k x
    block)) instead of O(budget x N): minutes, not hours, for 128,000 picks out of 1.28M.
    """
    n = scores.size
    n_blocks = -(-n // _ARGMAX_BLOCK)
    padded = np.full(n_blocks * _ARGMAX_BLOCK, -np.inf)
    padded[:n] = scores
    blocks = padded.reshape(n_blocks, _ARGMAX_BLOCK)  # a view: updates show in both
    block_max = blocks.max(axis=1)
    picks = np.empty(budget, dtype=np.int64)
    for t in range(budget):
        b = int(np.argmax(block_max))
        i = b * _ARGMAX_BLOCK + int(np.argmax(blocks[b]))
        picks[t] = i
        s_i = padded[i]
        padded[nbrs[i]] -= w_reverse[i] * s_i  # a row's neighbours are distinct: no lost updates
        padded[i] = -np.inf  # selected: never picked again (-inf minus a finite number stays -inf)
        touched = np.unique(np.append(nbrs[i] // _ARGMAX_BLOCK, b))
        block_max[touched] = blocks[touched].max(axis=1)
    return picks


# ----------------------------------------------------------------------------- ZCore


def _triangular(u: np.ndarray, left: np.ndarray, mode: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Inverse-CDF triangular samples from uniforms ``u``; a zero-width range returns ``left``."""
    width = right - left
    safe = np.where(width > 0, width, 1.0)
    cut = np.where(width > 0, (mode - left) / safe, 0.0)
    low = left + np.sqrt(u * width * (mode - left))
    high = right - np.sqrt((1.0 - u) * width * (right - mode))
    return np.where(u < cut, low, high)


def _redundancy_weights(nd: np.ndarray) -> np.ndarray:
    """Per-row weights ~ distance^-4 summing to 1; zero distances share the whole unit."""
    nd = nd.astype(np.float64)
    zero = nd == 0.0
    n_zero = zero.sum(axis=1, keepdims=True)
    # Rows without duplicates: (d_min / d)^4 <= 1 avoids overflow for tiny distances.
    d_min = np.where(zero, np.inf, nd).min(axis=1, keepdims=True)
    d_min = np.where(n_zero > 0, 1.0, d_min)  # rows with duplicates use the other branch
    ratio = np.where(zero, 0.0, d_min / np.where(zero, 1.0, nd)) ** 4
    ratio /= np.maximum(ratio.sum(axis=1, keepdims=True), np.finfo(np.float64).tiny)
    return np.where(n_zero > 0, zero / np.maximum(n_zero, 1), ratio)


def _smallest_per_row(dist: np.ndarray, k: int, probe: np.ndarray | None) -> np.ndarray:
    """Column indices [B, k] of the k smallest entries of each row (any order among them).

    With ``probe`` (a random subset of columns), each row's threshold is a high order statistic
    of its probed values, so about 1.2k-1.5k candidates survive a single comparison pass; rows
    where fewer than k survive fall back to a full ``argpartition``. Same result, less work.
    """
    b, n = dist.shape
    if probe is None:
        return np.argpartition(dist, k - 1, axis=1)[:, :k]
    m = probe.size
    q = k / n
    rank = min(m - 1, int(np.ceil(q * m + 4.0 * np.sqrt(q * m) + 4.0)))
    thr = np.partition(dist[:, probe], rank, axis=1)[:, rank]
    mask = dist <= thr[:, None]
    counts = mask.sum(axis=1)
    out = np.empty((b, k), dtype=np.int64)
    ok = counts >= k
    if ok.any():
        all_ok = bool(ok.all())  # the usual case: no row copies needed
        rows, cols = np.nonzero(mask if all_ok else mask[ok])
        kept = counts if all_ok else counts[ok]
        starts = np.concatenate(([0], np.cumsum(kept)[:-1]))
        pos = np.arange(rows.size) - starts[rows]
        cand = np.full((kept.size, int(kept.max())), -1, dtype=np.int64)
        cand[rows, pos] = cols
        vals = np.full(cand.shape, np.inf, dtype=dist.dtype)
        vals[rows, pos] = dist[rows if all_ok else np.flatnonzero(ok)[rows], cols]
        sel = np.argpartition(vals, k - 1, axis=1)[:, :k]
        out[ok] = np.take_along_axis(cand, sel, axis=1)
    if not ok.all():
        out[~ok] = np.argpartition(dist[~ok], k - 1, axis=1)[:, :k]
    return out


def _zcore_queries(
    rng: np.random.Generator, b: int, lo: np.ndarray, med: np.ndarray, hi: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``b`` ZCore draws: two distinct random coordinates each and a triangular(min, median, max)
    sample in each of them; returns (dim_a, dim_b, value_a, value_b), values as float32."""
    d = lo.size
    dim_a = rng.integers(0, d, size=b)
    dim_b = rng.integers(0, d - 1, size=b)
    dim_b += dim_b >= dim_a  # a uniformly random pair of distinct coordinates
    u = rng.random((2, b))
    pa = _triangular(u[0], lo[dim_a], med[dim_a], hi[dim_a]).astype(np.float32)
    pb = _triangular(u[1], lo[dim_b], med[dim_b], hi[dim_b]).astype(np.float32)
    return dim_a, dim_b, pa, pb


def _transpose_f32(X: np.ndarray) -> np.ndarray:
    """X.T as a C-contiguous float32 [dim, N] array, filled from row chunks of X (any dtype),
    so the transposed copy is the only copy made."""
    n, d = X.shape
    XT = np.empty((d, n), dtype=np.float32)
    step = max(1, _ROW_BUDGET // d)
    for start in range(0, n, step):
        XT[:, start : start + step] = np.asarray(X[start : start + step], dtype=np.float32).T
    return XT


def _check_rows(X: np.ndarray) -> np.ndarray:
    """Validate X like ``check_features`` without making a float32 copy of it."""
    X = np.asarray(X)
    check_features(X[:1])  # shape, dtype
    step = max(1, _ROW_BUDGET // max(X.shape[1], 1))
    for start in range(0, X.shape[0], step):
        check_features(X[start : start + step])  # finite values, chunk by chunk
    return X


def _zcore_raw(
    X: np.ndarray, n_draws: int, n_redundancy: int, rng: np.random.Generator
) -> np.ndarray:
    """ZCore's coverage-minus-redundancy counts (float64, sum 0) before noise and scaling."""
    n = X.shape[0]
    XT = _transpose_f32(X)  # [dim, N]: one coordinate's values are a contiguous row
    lo = XT.min(axis=1).astype(np.float64)
    step = max(1, _ROW_BUDGET // n)  # np.median copies its input: a few coordinates at a time
    med = np.concatenate(
        [np.median(XT[i : i + step], axis=1) for i in range(0, XT.shape[0], step)]
    ).astype(np.float64)
    hi = XT.max(axis=1).astype(np.float64)
    k = min(n_redundancy, n - 1)
    # The probe only speeds up the neighbour search (the result is the same without it), so it
    # has its own fixed generator and leaves the draws' random stream untouched.
    probe = None
    n_probe = int(np.ceil(_ZCORE_PROBE_HITS * n / max(k, 1)))
    n_probe = int(np.clip(n_probe, _ZCORE_PROBE_MIN, _ZCORE_PROBE_MAX))
    if k >= 1 and 4 * n_probe <= n and 8 * (k + 1) <= n:
        probe = np.sort(np.random.default_rng(n).choice(n, size=n_probe, replace=False))
    batch = int(np.clip(_ROW_BUDGET // n, 1, _ZCORE_MAX_BATCH))
    raw = np.zeros(n, dtype=np.float64)
    rows_b = np.arange(batch)
    for done in range(0, n_draws, batch):
        b = min(batch, n_draws - done)
        dim_a, dim_b, pa, pb = _zcore_queries(rng, b, lo, med, hi)
        va, vb = XT[dim_a], XT[dim_b]  # [b, N] copies of the two coordinates
        dist = np.abs(va - pa[:, None])
        dist += np.abs(vb - pb[:, None])
        covered = dist.argmin(axis=1)  # L1 nearest sample in the 2 dims; ties: lowest index
        raw += np.bincount(covered, minlength=n)
        if k < 1:
            continue
        r = rows_b[:b]
        np.abs(va - va[r, covered][:, None], out=dist)
        dist += np.abs(vb - vb[r, covered][:, None])
        dist[r, covered] = np.inf  # the covered sample is not its own neighbour
        nbrs = _smallest_per_row(dist, k, probe)
        weights = _redundancy_weights(np.take_along_axis(dist, nbrs, axis=1))
        raw -= np.bincount(nbrs.ravel(), weights=weights.ravel(), minlength=n)
    return raw


def _check_zcore_work(n: int, n_draws: int) -> None:
    """Raise a ValueError when n_draws x N exceeds ``ZCORE_MAX_WORK``."""
    work = float(n_draws) * n
    if work > ZCORE_MAX_WORK:
        raise ValueError(
            f"ZCore would need n_draws x N = {n_draws} x {n} = {work:.2g} sample scans, above "
            f"its limit ZCORE_MAX_WORK = {ZCORE_MAX_WORK:.2g} (about 30 minutes on 2 CPU "
            f"cores). Use n_draws <= {int(ZCORE_MAX_WORK // n)} here (fewer draws per sample "
            "make the scores noisier), run it on a random subset of the pool, or use a method "
            "that scales to this size: ELFS, d2_prune or prototypicality_select."
        )


def zcore_scores(
    X: np.ndarray,
    n_draws: int = 1_000_000,
    n_redundancy: int = 1000,
    seed: int = 0,
) -> np.ndarray:
    """ZCore (Griffin et al., 2024) zero-shot coverage-minus-redundancy scores in [0, 1].

    Per draw: pick 2 distinct random coordinates; sample a point there from a triangular
    distribution per coordinate (min, mode = median, max of that coordinate over the pool); the
    sample nearest to it by L1 distance in those 2 coordinates gets +1; its ``n_redundancy``
    nearest other samples in the same 2 coordinates lose weights proportional to distance^-4
    that sum to 1 (exact duplicates at distance 0 share the whole unit). Then U(0, 1) noise is
    added to every score and the scores are min-max normalised; higher = keep.

    ZCore itself scores its own embeddings (CLIP ViT-L/14 + ResNet-18, concatenated); here it
    runs on whatever embeddings are given, unnormalised. Draws run in batches of up to 256 with
    a few [batch, N] float32 temporaries (O(N) memory per batch), about 2-3 passes over N per
    draw; ties for the nearest sample go to the lowest index, as with argmin in the original.
    Cost grows as n_draws * N (not with dim): one core took ~0.17 ms/draw on 10k x 64 (1e6 draws
    ~3 min) and ~1 ms/draw on 50k x 1280 (1e6 draws ~15 min). Above ``ZCORE_MAX_WORK``
    (n_draws x N) it raises a ValueError naming the limit and the alternatives. Memory: X plus
    one float32 transposed copy (built from row chunks; X itself is not copied).
    """
    X = _check_rows(X)
    n_draws = _check_positive_int(n_draws, "n_draws")
    n_redundancy = _check_positive_int(n_redundancy, "n_redundancy")
    seed = _check_seed(seed)
    if X.shape[1] < 2:
        raise ValueError(
            f"ZCore samples pairs of coordinates, so X needs at least 2 columns; got shape "
            f"{X.shape}."
        )
    _check_zcore_work(X.shape[0], n_draws)
    rng = np.random.default_rng(seed)
    scores = _zcore_raw(X, n_draws, n_redundancy, rng)
    scores += rng.random(scores.size)
    lo, hi = scores.min(), scores.max()
    return (scores - lo) / (hi - lo) if hi > lo else np.zeros_like(scores)


def zcore_select(
    X: np.ndarray,
    budget: int,
    n_draws: int = 1_000_000,
    n_redundancy: int = 1000,
    seed: int = 0,
) -> np.ndarray:
    """Keep the ``budget`` samples with the highest ZCore score (``zcore_scores``); sorted indices.

    A budget >= N returns every index without scoring.
    """
    X = _check_rows(X)
    budget = _check_budget(budget)
    if budget >= X.shape[0]:
        return _all_indices(X.shape[0])
    scores = zcore_scores(X, n_draws=n_draws, n_redundancy=n_redundancy, seed=seed)
    return _top_indices(scores, budget, largest=True)
