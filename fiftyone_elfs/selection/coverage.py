"""Coverage selection: typical samples spread over the embedding, in the pool's proportions.

When the pseudo-labels are too weak for their difficulty ranking to be trusted, what a label
budget can still buy without labels is *coverage*: one representative of every region of the
embedding, with regions sized by where the data is. ``stratified_typical_select`` does this in
two levels:

1. the budget is shared among the pseudo-label groups in proportion to their sizes (largest
   remainder), so the coreset keeps the pool's cluster proportions (what protects it on
   imbalanced data: a random draw keeps them too, a diversity criterion does not);
2. inside a group that gets ``q`` samples, spherical k-means with ``q`` centroids splits the
   group into ``q`` cells and each cell contributes the member closest to its centroid: a
   typical sample, never an outlier (TypiClust's idea, Hacohen et al. 2022, with the cell
   centre standing in for the densest point).

Arrays in, arrays out; no FiftyOne. Cost: one k-means per group on its members only, so
O(N x q_max x dim) per iteration in total and O(N x dim) memory (no N x N matrix).
"""

from __future__ import annotations

import numpy as np

__all__ = ["proportional_quota", "stratified_typical_select"]

_KMEANS_ITERATIONS = 20


def proportional_quota(sizes: np.ndarray, budget: int) -> np.ndarray:
    """Shares of ``budget`` proportional to ``sizes`` by largest remainder, never above a size.

    The quotas sum to ``min(budget, sizes.sum())``; ties in the remainders go to the smaller
    index, so the result is deterministic.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    if sizes.ndim != 1 or sizes.size == 0 or (sizes < 0).any():
        raise ValueError(f"sizes must be a non-empty 1-D array of counts >= 0; got {sizes!r}")
    total = int(sizes.sum())
    budget = min(int(budget), total)
    if budget <= 0:
        return np.zeros_like(sizes)
    raw = budget * sizes / total
    quota = np.floor(raw).astype(np.int64)
    order = np.argsort(-(raw - quota), kind="stable")
    short = budget - int(quota.sum())  # < number of groups with a remainder
    quota[order[:short]] += 1
    return np.minimum(quota, sizes)


def check_embeddings_and_budget(X: np.ndarray, budget: int) -> None:
    """Refuses embeddings with NaN or infinite values and a budget that is not a whole number
    >= 1 (a fractional one would be truncated without a word)."""
    if not np.isfinite(X).all():
        raise ValueError("X holds NaN or infinite values; recompute or drop those embeddings")
    if isinstance(budget, bool) or int(budget) != budget or int(budget) < 1:
        raise ValueError(f"budget must be a whole number >= 1; got {budget!r}")


def _normalized(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=np.float32)
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


def _typical_in_group(Xg: np.ndarray, q: int, seed: int) -> np.ndarray:
    """Positions (into Xg) of q typical members: k-means with q cells, nearest to each centre."""
    import faiss

    n, d = Xg.shape
    km = faiss.Kmeans(
        d,
        q,
        niter=_KMEANS_ITERATIONS,
        seed=int(seed),
        spherical=True,
        verbose=False,
        max_points_per_centroid=max(n, 1),
        min_points_per_centroid=1,
    )
    km.train(Xg)
    sims, cells = km.index.search(Xg, 1)
    sims, cells = sims[:, 0], cells[:, 0]
    order = np.lexsort((-sims, cells))  # by cell, then most similar to its centre first
    first = np.ones(n, dtype=bool)
    first[1:] = cells[order][1:] != cells[order][:-1]
    chosen = order[first]  # one per non-empty cell
    if chosen.size < q:  # empty cells: the remaining members closest to their own centres
        rest = np.setdiff1d(np.arange(n), chosen)
        rest = rest[np.argsort(-sims[rest], kind="stable")][: q - chosen.size]
        chosen = np.concatenate([chosen, rest])
    return chosen


def stratified_typical_select(
    X: np.ndarray, groups: np.ndarray, budget: int, seed: int = 0
) -> np.ndarray:
    """Sorted indices of ``budget`` typical samples, shared among ``groups`` by their sizes.

    Args:
        X: embeddings [N, dim] (cosine geometry: rows are L2-normalised here).
        groups: a group id per sample (the pseudo-labels).
        budget: samples to select (>= 1; all N when larger).
        seed: seeds the k-means of every group (group g uses seed + g's position).
    """
    X = np.asarray(X)
    groups = np.asarray(groups).ravel()
    if X.ndim != 2 or X.shape[0] != groups.size or groups.size == 0:
        raise ValueError(
            f"X must be [N, dim] with one group id per row; got X {X.shape}, groups {groups.shape}"
        )
    check_embeddings_and_budget(X, budget)
    n = groups.size
    if budget >= n:
        return np.arange(n)
    names, inverse = np.unique(groups, return_inverse=True)
    quota = proportional_quota(np.bincount(inverse, minlength=names.size), int(budget))
    Xn = _normalized(X)
    chosen = []
    for g, q in enumerate(quota):
        if q == 0:
            continue
        members = np.flatnonzero(inverse == g)
        if q >= members.size:
            chosen.append(members)
        else:
            chosen.append(members[_typical_in_group(Xn[members], int(q), int(seed) + g)])
    return np.sort(np.concatenate(chosen))
