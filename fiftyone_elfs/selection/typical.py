"""Typical selection (TypiClust, Hacohen et al. 2022): one typical sample per region of the pool.

Where the budget is small next to the number of classes, a coreset is worth most when it covers
the embedding and each pick is a typical sample, not an outlier: the pool is split into as many
k-means cells as samples will be labeled, and each cell contributes its most typical member:
the highest mean cosine similarity to its nearest neighbours **inside the cell** (TypiClust's
typicality, computed per cluster; a pair's tie goes to the member that is denser over the
pool). Computed over the whole pool instead, the pick drifts to the cell's edge next to a denser
region; on validation sets the in-cell figure was ahead (``benchmarks/results/
budget-regime-tuning``). No pseudo-label and no difficulty score is used, so it does not depend
on how well the clustering matches the classes.

Next labeling rounds (``excluded``: samples already selected or labeled) follow TypiClust's
own rule: the pool is split into ``len(excluded) + budget`` cells, cells that hold an excluded
sample are covered, and the largest uncovered cells each contribute their most typical free
member.

Scale: with more than ``group_rows`` samples the pool is first cut into about
``N / group_rows`` coarse spherical k-means groups (trained on a sample of at most
``64 x groups`` rows, assigned in batches); the cells are shared among the groups in
proportion to their sizes and both the cell k-means and the neighbour density run inside each
group. So no N x N matrix: time O(N x group_rows x dim) for the density and
O(cells x group_rows x dim) per k-means iteration; memory: X itself (never copied: rows are
normalised one group at a time, and the coarse groups are assigned on X as given) plus one
group's rows and O(N) bookkeeping. ``group_rows`` shrinks
(not below 256) so that cells x group_rows stays under 5 x 10^8, which bounds the k-means
when the budget is a large share of a large pool. A pool of at most 10,000 samples is always
one group, and then the selection is TypiClust's with K = budget (its k-NN typicality, as a
mean cosine similarity instead of an inverse mean distance).

Arrays in, arrays out; no FiftyOne.
"""

from __future__ import annotations

import numpy as np

from .coverage import check_embeddings_and_budget, proportional_quota

__all__ = ["TYPICAL_GROUP_ROWS", "in_cell_density", "neighbour_density", "typical_select"]

#: Above this many samples the pool is cut into coarse groups first (see the module docstring).
TYPICAL_GROUP_ROWS = 10_000
_CELLS_X_ROWS = 500_000_000  # cells x group rows: bounds the cell k-means (see above)
_MIN_GROUP_ROWS = 256
_NEIGHBOURS = 20  # TypiClust's neighbourhood for the density
_KMEANS_ITERATIONS = 25
_ASSIGN_BATCH = 65_536
_COARSE_ROWS_PER_GROUP = 64  # unit rows drawn per coarse group to train its centre


def _spherical_kmeans(Xn: np.ndarray, k: int, seed: int, sample_all: bool) -> object:
    """faiss spherical k-means: on every row (the cells), or on a sample of 64 rows per centre
    and 10 iterations (the coarse groups: a partition, not a result)."""
    import faiss

    n, d = Xn.shape
    km = faiss.Kmeans(
        d,
        int(k),
        niter=_KMEANS_ITERATIONS if sample_all else 10,
        seed=int(seed),
        spherical=True,
        verbose=False,
        max_points_per_centroid=max(1, n) if sample_all else _COARSE_ROWS_PER_GROUP,
        min_points_per_centroid=1,
    )
    km.train(Xn)
    return km


def _nearest_centre(km: object, X: np.ndarray) -> np.ndarray:
    """The cell of every row, assigned in batches (no N x K matrix). The rows need not be
    normalised: a row's largest inner product with the unit centres does not change with its
    length."""
    cells = np.empty(X.shape[0], dtype=np.int64)
    for start in range(0, X.shape[0], _ASSIGN_BATCH):
        batch = np.ascontiguousarray(X[start : start + _ASSIGN_BATCH], dtype=np.float32)
        cells[start : start + _ASSIGN_BATCH] = km.index.search(batch, 1)[1][:, 0]
    return cells


def _row_norms(X: np.ndarray) -> np.ndarray:
    """Each row's L2 norm as float32 [N, 1] (floored at 1e-12), computed a batch of rows at a
    time: no N x dim temporary."""
    norms = np.empty((X.shape[0], 1), dtype=np.float32)
    for start in range(0, X.shape[0], _ASSIGN_BATCH):
        batch = np.asarray(X[start : start + _ASSIGN_BATCH], dtype=np.float32)
        norms[start : start + _ASSIGN_BATCH] = np.linalg.norm(batch, axis=1, keepdims=True)
    return np.maximum(norms, 1e-12)


def _unit_rows(X: np.ndarray, norms: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The given rows of X, L2-normalised, float32: a group's copy, never the whole pool's."""
    return np.asarray(X[rows], dtype=np.float32) / norms[rows]


def neighbour_density(
    Xn: np.ndarray, neighbours: int = _NEIGHBOURS, rows: np.ndarray | None = None
) -> np.ndarray:
    """Mean cosine similarity of each unit row to its ``neighbours`` nearest other rows (exact;
    higher = denser = more typical). One row alone has density 0.

    ``rows``: only these rows' figures (still against all rows), in their order; all by default.
    """
    import faiss

    n = Xn.shape[0]
    queries = Xn if rows is None else Xn[np.asarray(rows, dtype=np.int64)]
    k = min(int(neighbours), n - 1)
    if k < 1:
        return np.zeros(queries.shape[0], dtype=np.float32)
    index = faiss.IndexFlatIP(Xn.shape[1])
    index.add(Xn)
    density = np.empty(queries.shape[0], dtype=np.float32)
    for start in range(0, queries.shape[0], _ASSIGN_BATCH):
        sims, _ = index.search(queries[start : start + _ASSIGN_BATCH], k + 1)
        density[start : start + _ASSIGN_BATCH] = sims[:, 1:].mean(axis=1)
    return density


def in_cell_density(Xn: np.ndarray, cells: np.ndarray, neighbours: int = _NEIGHBOURS) -> np.ndarray:
    """Mean cosine similarity of each unit row to its ``neighbours`` nearest other rows **of its
    own cell** (TypiClust's typicality, computed inside each cluster; higher = more typical).

    A cell of at most ``neighbours + 1`` rows has every other member as a neighbour, so its
    rows' figures come from the cell's sum (no search); larger cells are searched exactly, one
    at a time (cost: the squares of their sizes, at most that of the rows passed). A row alone
    in its cell has density 0.
    """
    n = Xn.shape[0]
    density = np.zeros(n, dtype=np.float32)
    if n == 0:
        return density
    cells = np.asarray(cells, dtype=np.int64)
    sizes = np.bincount(cells)
    order = np.argsort(cells, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    small = (sizes >= 2) & (sizes <= int(neighbours) + 1)
    rows = np.flatnonzero(small[cells])
    if rows.size:
        sums = np.zeros((sizes.size, Xn.shape[1]), dtype=np.float32)
        nonempty = np.flatnonzero(sizes)
        sums[nonempty] = np.add.reduceat(Xn[order], bounds[:-1][nonempty], axis=0)
        Xr = Xn[rows]
        own = np.einsum("ij,ij->i", Xr, Xr)
        others = np.einsum("ij,ij->i", Xr, sums[cells[rows]]) - own
        density[rows] = others / (sizes[cells[rows]] - 1)
        # a pair: both members get the same figure (their cosine), computed once from the sum
        # (|x + y|^2 - |x|^2 - |y|^2) / 2, so that the tie is exact and broken elsewhere
        pairs = sizes[cells[rows]] == 2
        if pairs.any():
            pair_cells = cells[rows[pairs]]
            own_sum = np.zeros(sizes.size, dtype=np.float32)
            np.add.at(own_sum, pair_cells, own[pairs])
            squared = np.einsum("ij,ij->i", sums[pair_cells], sums[pair_cells])
            density[rows[pairs]] = (squared - own_sum[pair_cells]) / 2
    for c in np.flatnonzero(sizes > int(neighbours) + 1):
        members = order[bounds[c] : bounds[c + 1]]
        density[members] = neighbour_density(Xn[members], neighbours)
    return density


def _density_of_tied_tops(
    Xg: np.ndarray, rows: np.ndarray, cells: np.ndarray, dens: np.ndarray
) -> np.ndarray:
    """The group-wide density of the ``rows`` tied for their cell's highest in-cell figure (the
    two members of a pair, always), 0 for the others: only those ties need it, so the group's
    search runs for a few rows instead of all of them."""
    out = np.zeros(rows.size, dtype=np.float32)
    if rows.size == 0:
        return out
    top = np.full(int(cells.max()) + 1, -np.inf, dtype=np.float32)
    np.maximum.at(top, cells, dens)
    at_top = dens == top[cells]
    tied = at_top & (np.bincount(cells[at_top], minlength=top.size)[cells] > 1)
    if tied.any():
        out[tied] = neighbour_density(Xg, rows=rows[tied])
    return out


def _coarse_groups(X: np.ndarray, norms: np.ndarray, group_rows: int, seed: int) -> np.ndarray:
    """Every row's coarse group: spherical k-means trained on a seeded draw of 64 unit rows per
    group, then every row assigned (as it is: the assignment needs no normalised copy)."""
    n = X.shape[0]
    n_groups = int(np.ceil(n / group_rows))
    if n_groups <= 1:
        return np.zeros(n, dtype=np.int64)
    rng = np.random.default_rng(seed)
    train = np.sort(rng.choice(n, size=min(n, _COARSE_ROWS_PER_GROUP * n_groups), replace=False))
    km = _spherical_kmeans(_unit_rows(X, norms, train), n_groups, seed, sample_all=False)
    return _nearest_centre(km, X)


def typical_select(
    X: np.ndarray,
    budget: int,
    excluded: np.ndarray | None = None,
    seed: int = 0,
    group_rows: int = TYPICAL_GROUP_ROWS,
) -> np.ndarray:
    """Sorted indices of ``budget`` typical samples: the most typical of each k-means cell.

    Args:
        X: embeddings [N, dim] (cosine geometry: rows are L2-normalised here).
        budget: samples to select (>= 1; every free sample when larger).
        excluded: optional boolean mask [N] of samples already selected or labeled: never
            selected, and the cells they fall in count as covered (next labeling rounds).
        seed: seeds the k-means (group g of a large pool uses seed + 1 + g).
        group_rows: above this many samples the pool is cut into coarse groups first (fewer
            when the budget is large: see the module docstring).
    """
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[0] == 0:
        raise ValueError(f"X must be a non-empty [N, dim] array; got shape {X.shape}")
    check_embeddings_and_budget(X, budget)
    if int(group_rows) < 2:
        raise ValueError(f"group_rows must be >= 2; got {group_rows!r}")
    n = X.shape[0]
    taken = np.zeros(n, dtype=bool) if excluded is None else np.asarray(excluded, dtype=bool)
    if taken.shape != (n,):
        raise ValueError(f"excluded must be a boolean mask of {n} rows; got {taken.shape}")
    free = np.flatnonzero(~taken)
    if int(budget) >= free.size:
        return free
    budget = int(budget)
    # cosine geometry: each group's rows are normalised when it is processed, so no
    # normalised copy of the whole pool is held next to X (memory O(N x dim) plus a group)
    norms = _row_norms(X)
    cells_total = int(taken.sum()) + budget
    rows = min(int(group_rows), max(_MIN_GROUP_ROWS, _CELLS_X_ROWS // cells_total))
    groups = _coarse_groups(X, norms, rows, int(seed))
    n_groups = int(groups.max()) + 1
    group_sizes = np.bincount(groups, minlength=n_groups)
    quota = proportional_quota(group_sizes, cells_total)
    by_group = np.argsort(groups, kind="stable")  # members of group g: one slice of it
    bounds = np.concatenate([[0], np.cumsum(group_sizes)])
    density = np.zeros(n, dtype=np.float32)
    sizes, densest, picks = [], [], []  # per uncovered cell: size, density, densest free member
    for g in range(n_groups):
        members = by_group[bounds[g] : bounds[g + 1]]
        if members.size == 0:
            continue
        Xg = _unit_rows(X, norms, members)
        q = int(quota[g])
        if q == 0:  # no cell here: the group's density, for the fill-up below
            density[members] = neighbour_density(Xg)
            continue
        seed_g = int(seed) + (1 + g if n_groups > 1 else 0)
        if q >= members.size:
            cells = np.arange(members.size)
        else:
            cells = _nearest_centre(_spherical_kmeans(Xg, q, seed_g, sample_all=True), Xg)
        density[members] = in_cell_density(Xg, cells)
        covered = np.zeros(int(cells.max()) + 1, dtype=bool)
        covered[cells[taken[members]]] = True
        cell_sizes = np.bincount(cells, minlength=covered.size)
        open_rows = np.flatnonzero(~taken[members] & ~covered[cells])
        dens = density[members[open_rows]]
        tie_break = _density_of_tied_tops(Xg, open_rows, cells[open_rows], dens)
        # by cell, the most typical first (ties: the denser in the group)
        by_cell = open_rows[np.lexsort((-tie_break, -dens, cells[open_rows]))]
        first = np.ones(by_cell.size, dtype=bool)
        first[1:] = cells[by_cell][1:] != cells[by_cell][:-1]
        best = by_cell[first]
        sizes.append(cell_sizes[cells[best]])
        densest.append(density[members[best]])
        picks.append(members[best])
    sizes_arr = np.concatenate(sizes) if sizes else np.zeros(0, dtype=np.int64)
    dens_arr = np.concatenate(densest) if densest else np.zeros(0, dtype=np.float32)
    picks_arr = np.concatenate(picks) if picks else np.zeros(0, dtype=np.int64)
    chosen = picks_arr[np.lexsort((-dens_arr, -sizes_arr))[:budget]]  # largest cells first
    if chosen.size < budget:  # empty or covered cells: the densest free samples left
        left = np.setdiff1d(free, chosen)
        left = left[np.argsort(-density[left], kind="stable")]
        chosen = np.concatenate([chosen, left[: budget - chosen.size]])
    return np.sort(chosen)
