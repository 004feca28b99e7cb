"""Geometry-only baselines on small synthetic arrays: contracts, validation, and the property
each method is built for (k-center covers, prototypicality ranks, ZCore penalises duplicates,
D2 spreads its picks over the kNN graph)."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from fiftyone_elfs.pseudo_labels import nearest_neighbors
from fiftyone_elfs.selection import (
    baselines,
    d2_prune,
    k_center_greedy,
    prototypicality_scores,
    prototypicality_select,
    random_select,
    zcore_scores,
    zcore_select,
)
from fiftyone_elfs.selection.baselines import (
    _redundancy_weights,
    _smallest_per_row,
    _triangular,
    _zcore_queries,
    _zcore_raw,
)

faiss.omp_set_num_threads(1)


def blobs(sizes, spreads, dim: int = 16, seed: int = 0, radius: float = 10.0):
    """Gaussian blobs around mutually orthogonal centres of norm ``radius`` (so they stay
    separated after L2 normalisation); returns (X float32, blob id per row)."""
    rng = np.random.default_rng(seed)
    centers = np.linalg.qr(rng.normal(size=(dim, len(sizes))))[0].T * radius
    X = np.concatenate(
        [c + rng.normal(0.0, s, (n, dim)) for c, n, s in zip(centers, sizes, spreads, strict=True)]
    )
    return X.astype(np.float32), np.repeat(np.arange(len(sizes)), sizes)


X_SMALL, _ = blobs([40, 30, 20, 30], [0.5, 1.0, 2.0, 1.5], dim=8, seed=3)

# Every selector as f(X, budget, seed); small settings keep each call to milliseconds.
SELECTORS = {
    "random": lambda X, b, s: random_select(len(X), b, seed=s),
    "proto_easy": lambda X, b, s: prototypicality_select(X, b, n_clusters=4, keep="easy", seed=s),
    "proto_hard": lambda X, b, s: prototypicality_select(X, b, n_clusters=4, keep="hard", seed=s),
    "k_center": lambda X, b, s: k_center_greedy(X, b, seed=s),
    "d2": lambda X, b, s: d2_prune(X, b, n_neighbors=5, n_clusters=4, seed=s),
    "zcore": lambda X, b, s: zcore_select(X, b, n_draws=500, n_redundancy=20, seed=s),
}


# ----------------------------------------------------------------------------- contracts


@pytest.mark.parametrize("name", SELECTORS)
@pytest.mark.parametrize("budget", [1, 7, 60])
def test_selectors_return_budget_unique_sorted_indices(name, budget):
    sel = SELECTORS[name](X_SMALL, budget, 0)
    assert sel.dtype == np.int64 and sel.ndim == 1
    assert sel.size == budget
    assert np.unique(sel).size == budget
    assert np.all(np.diff(sel) > 0)
    assert sel.min() >= 0 and sel.max() < len(X_SMALL)


@pytest.mark.parametrize("name", SELECTORS)
def test_selectors_are_deterministic_for_a_seed(name):
    a = SELECTORS[name](X_SMALL, 15, 4)
    b = SELECTORS[name](X_SMALL.copy(), 15, 4)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", ["random", "k_center", "zcore"])
def test_seed_changes_randomised_selectors(name):
    picks = {tuple(SELECTORS[name](X_SMALL, 15, s)) for s in range(4)}
    assert len(picks) > 1


@pytest.mark.parametrize("name", SELECTORS)
@pytest.mark.parametrize("extra", [0, 5])
def test_budget_at_least_n_returns_everything(name, extra):
    n = len(X_SMALL)
    np.testing.assert_array_equal(SELECTORS[name](X_SMALL, n + extra, 0), np.arange(n))


def test_zcore_scores_are_normalised_and_seeded():
    s = zcore_scores(X_SMALL, n_draws=300, n_redundancy=10, seed=1)
    assert s.shape == (len(X_SMALL),) and np.isfinite(s).all()
    assert s.min() == 0.0 and s.max() == 1.0
    np.testing.assert_array_equal(s, zcore_scores(X_SMALL, n_draws=300, n_redundancy=10, seed=1))
    assert not np.array_equal(s, zcore_scores(X_SMALL, n_draws=300, n_redundancy=10, seed=2))


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize("name", SELECTORS)
@pytest.mark.parametrize("budget", [0, -3, 2.5, True, "10", None])
def test_bad_budget_raises(name, budget):
    with pytest.raises(ValueError, match="budget"):
        SELECTORS[name](X_SMALL, budget, 0)


BAD_X = {
    "1-D": (np.ones(10, dtype=np.float32), "2-D"),
    "empty": (np.ones((0, 4), dtype=np.float32), "empty"),
    "NaN": (np.where(np.eye(6, 4) > 0, np.nan, 1.0), "NaN"),
    "inf": (np.where(np.eye(6, 4) > 0, np.inf, 1.0), "infinite"),
    "strings": (np.array([["a", "b"], ["c", "d"]]), "real numbers"),
}


@pytest.mark.parametrize("name", [n for n in SELECTORS if n != "random"])
@pytest.mark.parametrize("case", BAD_X)
def test_bad_features_raise(name, case):
    X, match = BAD_X[case]
    with pytest.raises(ValueError, match=match):
        SELECTORS[name](X, 2, 0)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: random_select(0, 1), "n must be"),
        (lambda: random_select(5.0, 1), "n must be"),
        (lambda: random_select(10, 3, seed=-1), "seed"),
        (lambda: prototypicality_select(X_SMALL, 5, keep="medium"), "keep must be"),
        (lambda: prototypicality_select(X_SMALL, 5, n_clusters=1), "n_clusters"),
        (lambda: prototypicality_scores(X_SMALL[:3], n_clusters=10), "n_clusters"),
        (lambda: k_center_greedy(X_SMALL, 5, initial=[0, len(X_SMALL)]), "outside"),
        (lambda: k_center_greedy(X_SMALL, 5, initial=[[0, 1]]), "1-D"),
        (lambda: k_center_greedy(X_SMALL, 5, initial=[0.5]), "integer"),
        (lambda: d2_prune(X_SMALL, 5, difficulty=np.ones(3)), "one score per row"),
        (lambda: d2_prune(X_SMALL, 5, difficulty=np.full(len(X_SMALL), np.nan)), "NaN"),
        (lambda: d2_prune(X_SMALL, 5, n_neighbors=0), "n_neighbors"),
        (lambda: d2_prune(X_SMALL, 5, gamma_forward=-1.0), "gamma_forward"),
        (lambda: d2_prune(X_SMALL, 5, gamma_reverse=float("nan")), "gamma_reverse"),
        (lambda: zcore_scores(X_SMALL[:, :1]), "at least 2 columns"),
        (lambda: zcore_scores(X_SMALL, n_draws=0), "n_draws"),
        (lambda: zcore_scores(X_SMALL, n_redundancy=0), "n_redundancy"),
    ],
)
def test_bad_arguments_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ----------------------------------------------------------------------------- random


def test_random_select_is_roughly_uniform():
    counts = np.zeros(20)
    for seed in range(400):
        counts[random_select(20, 5, seed=seed)] += 1
    # Each index is picked with probability 1/4: 100 of 400 expected, sd ~ 8.7.
    assert np.all(np.abs(counts - 100) < 45)


# ----------------------------------------------------------------------------- prototypicality


def test_prototypicality_easy_is_nearer_the_centroid_than_hard():
    X, _ = blobs([60, 60, 60], [1.0, 2.0, 3.0], seed=1)
    dist, labels = prototypicality_scores(X, n_clusters=3, seed=0)
    assert dist.shape == labels.shape == (len(X),)
    assert np.all((dist >= 0) & (dist <= 2))
    assert set(np.unique(labels)) <= {0, 1, 2}
    easy = prototypicality_select(X, 30, n_clusters=3, keep="easy", seed=0)
    hard = prototypicality_select(X, 30, n_clusters=3, keep="hard", seed=0)
    assert dist[easy].mean() < dist.mean() < dist[hard].mean()
    assert dist[easy].max() <= dist[hard].min()  # a ranking: the two ends do not overlap
    assert np.intersect1d(easy, hard).size == 0


def test_prototypicality_distance_is_to_the_own_cluster_mean():
    X, _ = blobs([50, 50], [1.0, 1.0], seed=2)
    dist, labels = prototypicality_scores(X, n_clusters=2, seed=0)
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    for c in np.unique(labels):
        centroid = Xn[labels == c].mean(axis=0)
        centroid /= np.linalg.norm(centroid)
        expected = np.linalg.norm(Xn[labels == c] - centroid, axis=1)
        np.testing.assert_allclose(dist[labels == c], expected, atol=1e-5)


# ----------------------------------------------------------------------------- k-center greedy


@pytest.mark.parametrize("seed", range(5))
def test_k_center_covers_every_blob(seed):
    sizes = [80, 40, 20, 10, 5, 3]  # very different sizes: random picks would miss blobs
    X, blob = blobs(sizes, [0.3] * len(sizes), seed=seed)
    sel = k_center_greedy(X, len(sizes), seed=seed)
    assert set(blob[sel]) == set(range(len(sizes)))


def test_k_center_with_initial_skips_them_and_covers_the_rest():
    X, blob = blobs([50, 30, 20, 10], [0.3] * 4, seed=7)
    initial = np.flatnonzero(blob == 0)[:3]
    sel = k_center_greedy(X, 3, seed=0, initial=initial)
    assert sel.size == 3 and np.intersect1d(sel, initial).size == 0
    assert set(blob[sel]) == {1, 2, 3}
    # A budget covering every non-initial sample returns exactly those.
    rest = k_center_greedy(X, len(X), initial=initial)
    np.testing.assert_array_equal(rest, np.setdiff1d(np.arange(len(X)), initial))


def test_k_center_never_reselects_duplicates():
    rng = np.random.default_rng(0)
    distinct = rng.normal(size=(10, 6)).astype(np.float32)
    X = np.repeat(distinct, 5, axis=0)  # 10 points, 5 exact copies each
    one_each = k_center_greedy(X, 10, seed=1)
    assert np.unique(one_each // 5).size == 10
    more = k_center_greedy(X, 15, seed=1)  # beyond the distinct points: copies, never repeats
    assert np.unique(more).size == 15


def test_k_center_radius_beats_random():
    X = np.random.default_rng(0).uniform(size=(600, 3)).astype(np.float32)

    def radius(sel):
        return np.sqrt(((X[:, None, :] - X[sel][None]) ** 2).sum(-1).min(1)).max()

    kc = radius(k_center_greedy(X, 30, seed=0, normalize=False))
    rand = min(radius(random_select(len(X), 30, seed=s)) for s in range(10))
    assert kc < rand


@pytest.mark.parametrize("normalize", [True, False])
def test_k_center_matches_a_dense_reference(normalize):
    X = np.random.default_rng(5).normal(size=(90, 5)).astype(np.float32) + 0.5
    Z = X / np.linalg.norm(X, axis=1, keepdims=True) if normalize else X.astype(np.float64)
    sq = ((Z[:, None, :] - Z[None]) ** 2).sum(-1)  # N x N: fine for a 90-point reference
    chosen, min_d = [], sq[[4, 17]].min(axis=0)
    for _ in range(25):
        i = int(np.argmax(np.where(np.isin(np.arange(90), chosen + [4, 17]), -1.0, min_d)))
        chosen.append(i)
        min_d = np.minimum(min_d, sq[i])
    sel = k_center_greedy(X, 25, initial=[4, 17], normalize=normalize)
    np.testing.assert_array_equal(sel, np.sort(chosen))


# ----------------------------------------------------------------------------- D2 pruning


def test_d2_matches_a_dense_reference():
    rng = np.random.default_rng(11)
    X = (rng.normal(size=(80, 6)) + 1.0).astype(np.float32)
    difficulty = rng.normal(size=80) * 3.0 + 5.0
    k, gamma_f, gamma_r = 6, 2.0, 0.5
    Z = X / np.linalg.norm(X, axis=1, keepdims=True)
    sq = ((Z[:, None, :] - Z[None]) ** 2).sum(-1)
    np.fill_diagonal(sq, np.inf)
    nbrs = np.argsort(sq, axis=1, kind="stable")[:, :k]
    edge_sq = np.take_along_axis(sq, nbrs, axis=1)
    d = (difficulty - difficulty.min()) / (difficulty.max() - difficulty.min())
    s = d + (np.exp(-gamma_f * edge_sq) * d[nbrs]).sum(axis=1)
    chosen: list[int] = []
    for _ in range(30):
        i = int(np.argmax(np.where(np.isin(np.arange(80), chosen), -np.inf, s)))
        chosen.append(i)
        s[nbrs[i]] -= np.exp(-gamma_r * edge_sq[i]) * s[i]
    sel = d2_prune(
        X, 30, difficulty=difficulty, n_neighbors=k, gamma_forward=gamma_f, gamma_reverse=gamma_r
    )
    np.testing.assert_array_equal(sel, np.sort(chosen))


def test_d2_forward_pass_rewards_hard_neighbourhoods():
    # An isolated sample of top difficulty among easy ones vs a clump of slightly easier ones.
    rng = np.random.default_rng(0)
    clump = np.array([10.0, 0, 0, 0]) + rng.normal(0, 1e-3, (6, 4))
    lone = np.array([[0.0, 10.0, 0, 0]])
    easy = np.array([0.0, 0, 10.0, 0]) + rng.normal(0, 1.0, (20, 4))
    X = np.concatenate([clump, lone, easy]).astype(np.float32)
    difficulty = np.r_[np.full(6, 0.9), 1.0, np.zeros(20)]
    sel = d2_prune(X, 1, difficulty=difficulty, n_neighbors=5)
    assert sel[0] < 6  # forward messages lift the clump (0.9 each) above the lone 1.0


def _clumps(seed: int, n_clumps: int = 20, size: int = 10, dim: int = 32):
    """Near-duplicate clumps of very different density (spreads 1e-3..2e-2) and a difficulty
    that is constant per clump (plus small noise): top-difficulty takes whole clumps."""
    rng = np.random.default_rng(seed)
    centers = np.linalg.qr(rng.normal(size=(dim, n_clumps)))[0].T * 10.0
    spreads = np.geomspace(1e-3, 2e-2, n_clumps)
    parts = [c + rng.normal(0.0, s, (size, dim)) for c, s in zip(centers, spreads, strict=True)]
    X = np.concatenate(parts)
    clump = np.repeat(np.arange(n_clumps), size)
    difficulty = rng.uniform(0.1, 1.0, n_clumps)[clump] + rng.normal(0.0, 1e-2, clump.size)
    return X.astype(np.float32), clump, difficulty


@pytest.mark.parametrize("seed", range(3))
def test_d2_takes_one_per_near_duplicate_clump(seed):
    X, clump, difficulty = _clumps(seed)
    n_clumps, size = clump.max() + 1, np.bincount(clump)[0]
    sel = d2_prune(X, n_clumps, difficulty=difficulty, n_neighbors=size - 1)
    top = np.argsort(-difficulty, kind="stable")[:n_clumps]
    assert np.bincount(clump[top]).max() == size  # pure difficulty concentrates on whole clumps
    assert np.unique(clump[top]).size <= n_clumps // 2
    assert np.bincount(clump[sel], minlength=n_clumps).max() == 1  # D2: one per clump, all covered


@pytest.mark.parametrize("seed", range(3))
def test_d2_spreads_selection_over_the_knn_graph(seed):
    X, _ = blobs([200, 100, 50, 25], [0.5, 1.0, 2.0, 4.0], seed=seed)  # very different densities
    k = 10
    nbrs = nearest_neighbors(X, k)
    dist, _ = prototypicality_scores(X, n_clusters=4, seed=seed)
    sel = d2_prune(X, 32, n_neighbors=k, n_clusters=4, seed=seed)  # difficulty = dist (default)
    top = np.argsort(-dist, kind="stable")[:32]

    def edges_inside(idx):
        chosen = np.zeros(len(X), dtype=bool)
        chosen[idx] = True
        return int(chosen[nbrs[idx]].sum())

    assert edges_inside(sel) * 2 < edges_inside(top)
    # Still difficulty-driven: D2's picks are harder on average than the pool.
    assert dist[sel].mean() > dist.mean()


def test_d2_without_reverse_suppression_is_top_forward_score():
    # gamma_reverse -> large makes reverse weights ~0 (except exact duplicates): the selection
    # is then simply the top forward scores, so spreading really comes from reverse passing.
    X, clump, difficulty = _clumps(0)
    spread = d2_prune(X, 20, difficulty=difficulty, n_neighbors=9, gamma_reverse=1.0)
    greedy = d2_prune(X, 20, difficulty=difficulty, n_neighbors=9, gamma_reverse=1e12)
    assert np.unique(clump[spread]).size == 20
    assert np.unique(clump[greedy]).size <= 4


# ----------------------------------------------------------------------------- ZCore


def test_redundancy_weights_follow_inverse_fourth_power():
    w = _redundancy_weights(np.array([[1.0, 2.0, 4.0]]))
    expected = np.array([1.0, 1 / 16, 1 / 256])
    np.testing.assert_allclose(w[0], expected / expected.sum())
    # Exact duplicates (distance 0) share the whole unit; no inf or NaN.
    w = _redundancy_weights(np.array([[0.0, 0.0, 3.0], [1e-30, 1.0, 2.0]]))
    np.testing.assert_allclose(w[0], [0.5, 0.5, 0.0])
    assert np.isfinite(w).all()
    np.testing.assert_allclose(w.sum(axis=1), 1.0)


def test_triangular_sampler_matches_its_distribution():
    u = np.random.default_rng(0).random(200_000)
    lo, mode, hi = np.full(u.size, -1.0), np.full(u.size, 0.5), np.full(u.size, 2.0)
    x = _triangular(u, lo, mode, hi)
    assert x.min() >= -1.0 and x.max() <= 2.0
    assert abs(x.mean() - (lo[0] + mode[0] + hi[0]) / 3) < 0.01
    # CDF at the mode is (mode - lo) / (hi - lo).
    assert abs(np.mean(x <= 0.5) - 1.5 / 3.0) < 0.01
    flat = _triangular(u[:5], np.ones(5), np.ones(5), np.ones(5))
    np.testing.assert_array_equal(flat, np.ones(5))


def test_zcore_draws_pick_two_distinct_coordinates_and_triangular_values():
    lo, med, hi = np.array([0.0, 0.0, -5.0]), np.array([1.0, 9.0, 0.0]), np.array([10.0, 10.0, 5.0])
    dim_a, dim_b, pa, pb = _zcore_queries(np.random.default_rng(0), 120_000, lo, med, hi)
    assert np.all(dim_a != dim_b)
    pairs = np.bincount(np.minimum(dim_a, dim_b) * 3 + np.maximum(dim_a, dim_b), minlength=9)
    np.testing.assert_allclose(pairs[[1, 2, 5]] / dim_a.size, 1 / 3, atol=0.01)  # uniform pairs
    dims, vals = np.r_[dim_a, dim_b], np.r_[pa, pb]
    for j in range(3):
        v = vals[dims == j]
        assert v.min() >= lo[j] and v.max() <= hi[j]
        assert abs(v.mean() - (lo[j] + med[j] + hi[j]) / 3) < 0.05  # mode = the median
        assert abs(np.mean(v <= med[j]) - (med[j] - lo[j]) / (hi[j] - lo[j])) < 0.01


def test_smallest_per_row_probe_matches_full_selection():
    rng = np.random.default_rng(0)
    dist = rng.exponential(size=(16, 12_000)).astype(np.float32)
    dist[np.arange(16), rng.integers(0, 12_000, 16)] = np.inf
    dist[3] = np.sort(dist[3])  # sorted rows: an unlucky probe still gives the right answer
    probe = np.sort(rng.choice(12_000, 1024, replace=False))
    fast = _smallest_per_row(dist, 300, probe)
    full = _smallest_per_row(dist, 300, None)
    for a, b in zip(fast, full, strict=True):
        assert set(a.tolist()) == set(b.tolist())


def test_zcore_raw_scores_conserve_one_unit_per_draw():
    X, _ = blobs([50, 50], [1.0, 2.0], dim=6, seed=0)
    raw = _zcore_raw(X, 400, 30, np.random.default_rng(0))
    assert abs(raw.sum()) < 1e-9  # each draw: +1 coverage, -1 redundancy
    one = _zcore_raw(X, 1, 30, np.random.default_rng(1))
    assert np.count_nonzero(one > 0) == 1 and one.max() == 1.0
    assert np.count_nonzero(one < 0) == 30  # exactly n_redundancy neighbours lose weight


def test_zcore_probe_shortcut_does_not_change_scores(monkeypatch):
    X = np.random.default_rng(2).normal(size=(9000, 4)).astype(np.float32)
    fast = _zcore_raw(X, 300, 1000, np.random.default_rng(0))  # large enough to use the probe
    monkeypatch.setattr(baselines, "_ZCORE_PROBE_MIN", 10**9)  # probe never fits: full search
    full = _zcore_raw(X, 300, 1000, np.random.default_rng(0))
    np.testing.assert_allclose(fast, full, atol=1e-9)
    assert abs(fast.sum()) < 1e-8


def test_zcore_raw_matches_a_per_draw_reference():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(60, 5)).astype(np.float32)
    X = np.concatenate([X, np.repeat(X[:2], 3, axis=0)])  # rows 0 and 1 get 3 exact copies each
    n, k, draws = len(X), 10, 200
    lo, med, hi = X.min(0).astype(float), np.median(X, 0).astype(float), X.max(0).astype(float)
    dim_a, dim_b, pa, pb = _zcore_queries(np.random.default_rng(9), draws, lo, med, hi)
    expected = np.zeros(n)
    for a, b, qa, qb in zip(dim_a, dim_b, pa, pb, strict=True):
        c = int(np.argmin(np.abs(X[:, a] - qa) + np.abs(X[:, b] - qb)))  # L1 in the 2 coordinates
        expected[c] += 1.0
        d = np.abs(X[:, a] - X[c, a]) + np.abs(X[:, b] - X[c, b])
        d[c] = np.inf
        nn = np.argsort(d, kind="stable")[:k]
        dn = d[nn].astype(float)
        w = (dn == 0) / np.sum(dn == 0) if np.any(dn == 0) else dn**-4.0 / np.sum(dn**-4.0)
        expected[nn] -= w
    raw = _zcore_raw(X, draws, k, np.random.default_rng(9))
    # Which copy of a duplicate group fills the last neighbour slots is arbitrary (equal
    # distances), so copies are compared as a group; every other sample one by one.
    _, group = np.unique(X, axis=0, return_inverse=True)
    np.testing.assert_allclose(
        np.bincount(group.ravel(), raw), np.bincount(group.ravel(), expected), atol=1e-9
    )
    singles = np.bincount(group.ravel())[group.ravel()] == 1
    np.testing.assert_allclose(raw[singles], expected[singles], atol=1e-9)


def test_zcore_prefers_isolated_points_to_duplicates():
    rng = np.random.default_rng(0)
    isolated = rng.normal(size=(200, 8))
    copies = np.repeat(rng.normal(size=(10, 8)), 20, axis=0)  # 10 points x 20 exact copies
    X = np.concatenate([isolated, copies]).astype(np.float32)
    is_dup = np.arange(len(X)) >= 200
    scores = zcore_scores(X, n_draws=3000, n_redundancy=50, seed=0)
    assert scores[is_dup].mean() < scores[~is_dup].mean()
    sel = zcore_select(X, 100, n_draws=3000, n_redundancy=50, seed=0)
    # A random 100 of 400 would hold ~50 duplicates; ZCore keeps at most ~one copy per point.
    assert is_dup[sel].sum() <= 20


# ----------------------------------------------------------------------------- scale limits


def test_blocked_reverse_pass_matches_a_full_argmax_per_pick():
    from fiftyone_elfs.selection.baselines import _reverse_pass

    rng = np.random.default_rng(4)
    n, k = 5000, 7  # several 1,024-score blocks; rounded scores create exact ties
    scores = np.round(rng.uniform(0, 3, n), 1)
    nbrs = np.stack([rng.choice(n, k, replace=False) for _ in range(n)])
    w = rng.uniform(0, 1, (n, k))
    expected, s = [], scores.copy()
    for _ in range(1500):  # the plain loop: argmax (ties: lowest index), push neighbours down
        i = int(np.argmax(s))
        expected.append(i)
        s[nbrs[i]] -= w[i] * s[i]
        s[i] = -np.inf
    np.testing.assert_array_equal(_reverse_pass(scores.copy(), nbrs, w, 1500), expected)


def test_k_center_refuses_above_its_work_limit_with_the_alternatives(monkeypatch):
    monkeypatch.setattr(baselines, "KCENTER_MAX_WORK", 50 * len(X_SMALL) * X_SMALL.shape[1])
    assert k_center_greedy(X_SMALL, 50).size == 50  # exactly at the limit: runs
    with pytest.raises(ValueError, match="KCENTER_MAX_WORK") as err:
        k_center_greedy(X_SMALL, 51)
    assert "budget of at most 50" in str(err.value) and "d2_prune" in str(err.value)


def test_zcore_refuses_above_its_work_limit_with_the_alternatives(monkeypatch):
    monkeypatch.setattr(baselines, "ZCORE_MAX_WORK", 100 * len(X_SMALL))
    assert zcore_scores(X_SMALL, n_draws=100, n_redundancy=5).shape == (len(X_SMALL),)
    with pytest.raises(ValueError, match="ZCORE_MAX_WORK") as err:
        zcore_select(X_SMALL, 10, n_draws=101)
    assert "n_draws <= 100" in str(err.value) and "prototypicality_select" in str(err.value)


def test_zcore_holds_one_transposed_copy_of_x_not_more():
    import tracemalloc

    X = np.random.default_rng(0).normal(size=(600_000, 32))  # float64 input: no float32 copy
    tracemalloc.start()
    zcore_scores(X, n_draws=2, n_redundancy=5)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    xt = X.shape[0] * X.shape[1] * 4  # the float32 transpose, 77 MB
    # Plus chunk temporaries of at most ~16 MB each; a float32 copy of X would add 77 MB.
    assert peak < 1.5 * xt, peak


def test_d2_on_an_approximate_knn_graph_stays_close_to_the_exact_selection(monkeypatch):
    import functools

    X, _ = blobs([400, 300, 300, 500], [1.0, 2.0, 3.0, 1.5], dim=16, seed=1)
    exact = d2_prune(X, 150, n_neighbors=8, n_clusters=4, seed=0)
    ivf = functools.partial(baselines.nearest_neighbors, exact_max_samples=100, nprobe=4)
    monkeypatch.setattr(baselines, "nearest_neighbors", ivf)  # force the IVF graph
    approx = d2_prune(X, 150, n_neighbors=8, n_clusters=4, seed=0)
    assert approx.size == 150 and np.unique(approx).size == 150
    # The greedy picks cascade, so a few different graph edges change later picks: measured
    # overlap 90-111 of 150 over data seeds 0-3, where a random 150 of 1,500 would share ~15.
    assert np.intersect1d(exact, approx).size >= 80, np.intersect1d(exact, approx).size
