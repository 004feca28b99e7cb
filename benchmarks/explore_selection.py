"""Exploration on VALIDATION data only: which label-free selection beats random on protocols B/C?

Draws a tuning pool and a disjoint validation split from the TRAIN images of a class tree
(``DIR/train/<class>/*``, or ``DIR/<class>/*`` when there is no ``train/``; CIFAR-10 by default,
data seed 101, so not the benchmark tables' pool), runs candidate
selections at several pruning rates and scores protocols A, B and C on the validation split.
The test split is never read. Results are appended to a JSON-lines file (resumable).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import numpy as np  # noqa: E402
from elfs_bench.cli import at_least, protocol_letters, pruning_rates  # noqa: E402
from elfs_bench.data import (  # noqa: E402
    cached_embeddings,
    cached_pixels,
    cached_trunk,
    list_class_tree,
    prepare_cifar10,
)


def val_quota(labels: np.ndarray, val_per_class: int) -> dict[int, int]:
    """Validation images per class for ``--val-per-class N``: N, but at most half of a class's
    images (rounded down), so that no class leaves the pool entirely."""
    classes, counts = np.unique(labels, return_counts=True)
    return {int(c): min(val_per_class, int(n) // 2) for c, n in zip(classes, counts, strict=True)}


def draw(
    labels: np.ndarray, pool: int, val: int, seed: int, val_per_class: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint pool and validation indices drawn uniformly (the data's own class proportions).

    With ``val_per_class`` the validation split takes that many images of every class instead
    (balanced, as a long-tailed set's test split is), at most half of a class's images
    (``val_quota``), and the pool is drawn from the rest.
    """
    rng = np.random.default_rng(seed)
    if not val_per_class:
        perm = rng.permutation(labels.size)
        return np.sort(perm[:pool]), np.sort(perm[pool : pool + val])
    quota = val_quota(labels, val_per_class)
    val_idx = np.concatenate(
        [rng.permutation(np.flatnonzero(labels == c))[: quota[int(c)]] for c in np.unique(labels)]
    ).astype(np.int64)
    rest = rng.permutation(np.setdiff1d(np.arange(labels.size), val_idx))
    return np.sort(rest[:pool]), np.sort(val_idx)


# --------------------------------------------------------------------------- candidates


def _normalize(X: np.ndarray) -> np.ndarray:
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


def knn_density(X: np.ndarray, k: int = 20) -> np.ndarray:
    """Mean cosine similarity to the k nearest neighbours (higher = denser = more typical)."""
    import faiss

    Xn = np.ascontiguousarray(_normalize(X), dtype=np.float32)
    index = faiss.IndexFlatIP(Xn.shape[1])
    index.add(Xn)
    sims, _ = index.search(Xn, k + 1)
    return sims[:, 1:].mean(axis=1)


def oracle_labels(pseudo: np.ndarray, y_true: np.ndarray, accuracy: float, seed: int) -> np.ndarray:
    """CALIBRATION ONLY (reads the true labels): TEMI's pseudo-labels mapped to the classes by
    the Hungarian matching, then a random share of the wrong ones set to their true class until
    ``accuracy`` of the pool is right. The errors left are TEMI's own (its confusions, not
    uniform noise), so the rows ask: how accurate must pseudo-labels of this kind be before
    the default rule's selection pays?"""
    from fiftyone_elfs.pseudo_labels import hungarian_match

    match = hungarian_match(y_true, pseudo)
    for c in np.setdiff1d(pseudo, list(match)).tolist():  # more clusters than classes: the
        match[c] = int(np.bincount(y_true[pseudo == c]).argmax())  # majority class
    mapped = np.array([match[c] for c in pseudo.tolist()])
    wrong = np.flatnonzero(mapped != y_true)
    n_fix = int(np.clip(round(accuracy * y_true.size) - (y_true.size - wrong.size), 0, wrong.size))
    fix = np.random.default_rng(seed + 777).choice(wrong, n_fix, replace=False)
    mapped[fix] = y_true[fix]
    return mapped


class Artefacts:
    """What the candidates of one seed share: pseudo-labels, AUM and density, computed once.

    ``X``: the features the selection sees (clustering, MLP proxy, density); ``clustering``:
    "kmeans" or "spectral" pseudo-labels.
    """

    def __init__(
        self,
        X: np.ndarray,
        n_classes: int,
        seed: int,
        clustering: str = "kmeans",
        y_true: np.ndarray | None = None,
    ):
        self.X, self.K, self.seed, self.clustering = X, n_classes, seed, clustering
        self.y_true = y_true  # read only by the calibration variants (oracle, probe)
        self._memo: dict = {}

    def has(self, name) -> bool:
        return name in self._memo

    def get(self, name, fn):
        if name not in self._memo:
            self._memo[name] = fn()
        return self._memo[name]

    def pseudo(self):
        from fiftyone_elfs.pseudo_labels import kmeans_pseudo_labels, spectral_pseudo_labels

        if self.clustering == "temi":  # the library's defaults, as run_pipeline runs it

            def fn(X, k, seed):
                temi = self.temi()
                return temi.labels_, temi.confidence_
        elif self.clustering == "probecv":  # calibration only: uses the TRUE labels

            def fn(X, k, seed):
                from feature_ceiling import cross_validated_probe_labels

                return (cross_validated_probe_labels(X, self.y_true, seed=seed),)
        elif self.clustering.startswith("probe"):  # calibration only: "probe<n>", the labels a
            # linear probe fitted to the TRUE labels of n random pool samples predicts (what a
            # first annotation round of n labels would give)

            def fn(X, k, seed):
                from elfs_bench.protocols import feature_stats, probe_predictions

                few = np.random.default_rng(seed + 888).choice(
                    X.shape[0], int(self.clustering[len("probe") :]), replace=False
                )
                return (probe_predictions(X[few], self.y_true[few], X, feature_stats(X))[0],)
        elif self.clustering.startswith("oracle"):  # calibration only: uses the TRUE labels

            def fn(X, k, seed):
                accuracy = float(self.clustering[len("oracle") :]) / 100
                return (oracle_labels(self.temi().labels_, self.y_true, accuracy, seed),)
        else:
            fn = spectral_pseudo_labels if self.clustering == "spectral" else kmeans_pseudo_labels
        return self.get("pseudo", lambda: fn(self.X, self.K, seed=self.seed)[0])

    def temi(self):
        """The fitted TEMI model (the library's defaults), shared by its pseudo-labels and heads."""
        from fiftyone_elfs.pseudo_labels import TEMIClustering

        return self.get("temi", lambda: TEMIClustering(self.K, seed=self.seed).fit(self.X))

    def knn_agreement(self, k: int = 50):
        """Per sample, the share of its k nearest neighbours in its own pseudo-cluster, averaged
        over TEMI's heads (higher = easier); the steadiest label-free difficulty signal in
        ``benchmarks/difficulty_signal.py`` (Spearman 0.44 with the true-label AUM, against
        0.34 for the MLP proxy's AUM on the selected head)."""
        from elfs_bench.methods import knn_agreement

        from fiftyone_elfs.pseudo_labels import nearest_neighbors

        def fn():
            nn = nearest_neighbors(self.X, k)
            temi = self.temi()
            heads = [temi.predict(self.X, head=h) for h in range(temi.n_heads)]
            return np.mean([knn_agreement(h, nn) for h in heads], axis=0)

        return self.get("knn_agreement", fn)

    def aum(self):
        from fiftyone_elfs.difficulty import train_mlp_proxy

        return self.get(
            "aum",
            lambda: (
                train_mlp_proxy(
                    self.X, self.pseudo(), n_classes=self.K, epochs=40, seed=self.seed
                ).aum
            ),
        )

    def density(self):
        return self.get("density", lambda: knn_density(self.X))


def select(name: str, art: Artefacts, budget: int, seed: int) -> np.ndarray:
    from fiftyone_elfs.selection import (
        ccs_select,
        double_end_prune,
        label_free_beta,
        proportional_quota,
        stratified_typical_select,
    )

    n = art.X.shape[0]
    rng = np.random.default_rng(seed + 12345)
    if name == "random":
        return np.sort(rng.choice(n, budget, replace=False))
    if name == "kcenter":  # greedy k-center on the embeddings, as the benchmark harness runs it
        from fiftyone_elfs.selection.baselines import k_center_greedy

        return k_center_greedy(art.X, budget, seed=seed)
    if name == "d2":  # D2 as the benchmark harness runs it (prototypicality difficulty)
        from fiftyone_elfs.selection.baselines import d2_prune

        return d2_prune(art.X, budget, n_clusters=art.K, seed=seed)
    if name == "d2_aum":  # ELFS's hard-end cut, then D2's message passing on the survivors
        # with the pseudo-label AUM as the difficulty (low AUM = hard = preferred)
        from fiftyone_elfs.selection.baselines import d2_prune

        survivors = _hard_end_survivors(art, budget)
        picks = d2_prune(art.X[survivors], budget, difficulty=-art.aum()[survivors], seed=seed)
        return np.sort(survivors[picks])
    if name == "cut_kcenter":  # ELFS's label-free hard-end cut (share 0.5), then greedy
        # k-center on the survivors: coverage without the outliers k-center is drawn to
        from fiftyone_elfs.selection.baselines import k_center_greedy

        survivors = _hard_end_survivors(art, budget)
        return np.sort(survivors[k_center_greedy(art.X[survivors], budget, seed=seed)])
    if name == "cut_kcenter_strat":  # the same cut, then k-center inside each pseudo-cluster
        # with quotas proportional to the clusters' sizes in the whole pool (the cut may thin a
        # cluster below its quota: the shortfall goes to the others by their spare survivors)
        from fiftyone_elfs.selection.baselines import k_center_greedy

        lab = art.pseudo()
        survivors = _hard_end_survivors(art, budget)
        left = np.bincount(lab[survivors], minlength=art.K)
        quota = np.minimum(proportional_quota(np.bincount(lab, minlength=art.K), budget), left)
        quota += proportional_quota(left - quota, budget - int(quota.sum()))
        picks = []
        for c in np.flatnonzero(quota):
            members = survivors[lab[survivors] == c]
            picks.append(members[k_center_greedy(art.X[members], int(quota[c]), seed=seed)])
        return np.sort(np.concatenate(picks))
    if name.startswith("elfs_auto_ramp_floor"):  # the ramp, then every pseudo-cluster gets at
        # least <f> (default 0.5) of its proportional share ("elfs_auto_ramp_floor<f>")
        f = float(name[len("elfs_auto_ramp_floor") :] or 0.5)
        idx = select("elfs_auto_ramp", art, budget, seed)
        aum = art.aum()
        beta, _ = label_free_beta(aum, budget / n, hard_share=_share("ccs_ramp", budget / n))
        return _cluster_floor(idx, art.pseudo(), aum, beta, budget, f, rng)
    if name in ("elfs_auto", "elfs_auto_ramp"):  # window or CCS by trust, as select_coreset
        # "elfs_auto": the package's rule (window / typical / CCS; before 2026-12-05 CCS at
        # weak trust, so its earlier rows are that rule);
        # "elfs_auto_ramp": CCS's hard-end share ramps (`_share`)
        from fiftyone_elfs.pseudo_labels import pseudo_label_trust
        from fiftyone_elfs.selection import resolve_mode

        trust = art.get("trust", lambda: pseudo_label_trust(art.X, art.pseudo(), seed=seed))
        mode, _ = resolve_mode("auto", trust.as_dict())
        art.get("mode", lambda: mode)
        if mode == "typical":  # the weak-trust rule since 2026-12-05
            return select("typiclust", art, budget, seed)
        suffix = "_ramp" if name == "elfs_auto_ramp" else ""
        name = ("elfs_ccs" if mode == "ccs" else "elfs_de") + suffix
    if name in ("elfs_de", "elfs_de_ramp"):
        aum = art.aum()
        beta, _ = label_free_beta(aum, budget / n, hard_share=_share(name, budget / n))
        return np.sort(double_end_prune(aum, budget, beta).indices)
    if name in ("elfs_ccs", "elfs_ccs_ramp"):  # the label-free beta, share 0.5 or the ramp's
        aum = art.aum()
        beta, _ = label_free_beta(aum, budget / n, hard_share=_share(name, budget / n))
        return ccs_select(aum, budget, beta, seed=seed)
    if name in ("ccs_knn", "ccs_mix"):  # the default's beta (AUM's label-free rule), CCS on
        # another ranking: the kNN agreement averaged over TEMI's heads ("ccs_knn"), or the mean
        # of its rank and AUM's ("ccs_mix"); needs "@temi"
        from scipy.stats import rankdata

        aum = art.aum()
        beta, _ = label_free_beta(aum, budget / n, hard_share=_share("elfs_ccs", budget / n))
        score = art.knn_agreement()
        if name == "ccs_mix":
            score = (rankdata(aum) + rankdata(score)) / 2
        return ccs_select(score, budget, beta, seed=seed)
    if name.startswith("elfs_ccs_b"):  # fixed beta
        beta = float(name[len("elfs_ccs_b") :])
        return ccs_select(art.aum(), budget, beta, seed=seed)
    if name.startswith("elfs_ccs_h"):  # the label-free beta with another hard-end share
        aum = art.aum()
        beta, _ = label_free_beta(aum, budget / n, hard_share=float(name[len("elfs_ccs_h") :]))
        return ccs_select(aum, budget, beta, seed=seed)
    if name.startswith("pc_cut_ccs"):  # the label-free cut made inside each pseudo-cluster,
        # then CCS's strata over all survivors ("pc_cut_ccs<share>": another hard-end share)
        lab, aum = art.pseudo(), art.aum()
        share = float(name[len("pc_cut_ccs") :] or 0.5)
        beta, _ = label_free_beta(aum, budget / n, hard_share=share)
        keep = np.ones(n, dtype=bool)
        for c in np.unique(lab):
            members = np.flatnonzero(lab == c)
            cut = int(np.floor(beta * members.size))
            keep[members[np.argsort(aum[members], kind="stable")[:cut]]] = False
        survivors = np.flatnonzero(keep)
        if survivors.size < budget:
            return ccs_select(aum, budget, beta, seed=seed)
        return np.sort(survivors[ccs_select(aum[survivors], budget, 0.0, seed=seed)])
    if name.startswith("strat_ccs_lf"):  # per pseudo-cluster CCS, the label-free beta in each
        share = float(name[len("strat_ccs_lf") :] or 0.5)
        beta, _ = label_free_beta(art.aum(), budget / n, hard_share=share)
        return _per_cluster_ccs(art, budget, beta, seed)
    if name == "strat_random":
        lab = art.pseudo()
        quota = proportional_quota(np.bincount(lab, minlength=art.K), budget)
        return np.sort(
            np.concatenate(
                [
                    rng.choice(np.flatnonzero(lab == c), q, replace=False)
                    for c, q in enumerate(quota)
                    if q
                ]
            )
        )
    if name.startswith("trim_random"):  # drop the lowest-density share, random from the rest
        q = float(name[len("trim_random") :])
        dens = art.density()
        keep = np.argsort(-dens, kind="stable")[: max(budget, int(round((1 - q) * n)))]
        return np.sort(rng.choice(keep, budget, replace=False))
    if name in ("cell_incell", "cell_centroid", "cell_random", "cell_incellg"):
        # K = budget k-means cells as typical selection makes them (pools <= 10,000), one
        # member each: the densest by its 20-NN inside the cell (TypiClust's published code);
        # "cell_incell" breaks exact ties (a pair's two members) by pool order, which is
        # class-folder order (do not use), "cell_incellg" by the pool's density; the nearest
        # to the cell's centre; or a random member (coverage without the density choice)
        return _one_per_cell(art.X, budget, seed, name[len("cell_") :])
    if name.startswith("typiclust"):  # k-means with K = budget, the densest of each cell
        # (the library's `typical_select`: since 2026-12-05, late, the most typical member by
        # its neighbours inside the cell; rows written before then used the pool's density)
        from fiftyone_elfs.selection import typical_select

        return typical_select(art.X, budget, seed=seed)
    if name.startswith("typical_h"):  # per pseudo-cluster: one typical member per k-means cell
        return stratified_typical_select(art.X, art.pseudo(), budget, seed=seed)
    if name.startswith("strat_ccs"):  # per pseudo-cluster CCS on AUM, a fixed beta in each
        return _per_cluster_ccs(art, budget, float(name[len("strat_ccs") :] or 0.1), seed)
    raise ValueError(name)


#: ``select``'s method names: exact ones, and prefixes followed by a number (``True``: the number
#: is required; ``False``: optional, the method has a default) or by anything (``None``)
EXACT_METHODS = (
    "random", "kcenter", "d2", "d2_aum", "cut_kcenter", "cut_kcenter_strat", "elfs_auto",
    "elfs_auto_ramp", "elfs_de", "elfs_de_ramp", "elfs_ccs", "elfs_ccs_ramp", "ccs_knn",
    "ccs_mix", "strat_random", "cell_incell", "cell_centroid", "cell_random", "cell_incellg",
)  # fmt: skip
PREFIX_METHODS = (  # in the order ``select`` tries them
    ("elfs_auto_ramp_floor", False), ("elfs_ccs_b", True), ("elfs_ccs_h", True),
    ("pc_cut_ccs", False), ("strat_ccs_lf", False), ("trim_random", True), ("typiclust", None),
    ("typical_h", None), ("strat_ccs", False),
)  # fmt: skip


def method_problem(method: str) -> str | None:
    """Why ``method`` ("<name>" or "<name>@<variant>") is not one ``select`` runs, or None."""
    base, _, variant = method.partition("@")
    if variant not in VARIANTS:
        names = ", ".join(v for v in VARIANTS if v)
        return f"{method!r}: unknown variant {variant!r} after '@' (one of: {names})"
    if base in EXACT_METHODS:
        return None
    for prefix, number in PREFIX_METHODS:
        if base.startswith(prefix):
            rest = base[len(prefix) :]
            if number is None or (not rest and not number):
                return None
            try:
                float(rest)
            except ValueError:
                return f"{method!r}: {prefix} takes a number after its name (e.g. {prefix}0.5)"
            return None
    return (
        f"{method!r}: unknown method (exact names: {', '.join(EXACT_METHODS)}; with a number: "
        f"{', '.join(p + '<x>' for p, n in PREFIX_METHODS if n is not None)}; any suffix: "
        "typiclust*, typical_h*)"
    )


def _one_per_cell(X: np.ndarray, budget: int, seed: int, how: str) -> np.ndarray:
    """One member of each of ``budget`` spherical k-means cells (typical selection's cells for
    a pool of at most 10,000 rows), chosen by ``how``: "incell", "centroid" or "random"."""
    from fiftyone_elfs.selection.coverage import _normalized
    from fiftyone_elfs.selection.typical import (
        _nearest_centre,
        _spherical_kmeans,
        neighbour_density,
    )

    Xn = _normalized(X)
    km = _spherical_kmeans(Xn, budget, seed, sample_all=True)
    cells = _nearest_centre(km, Xn)
    rng = np.random.default_rng(seed)
    if how == "incellg":  # in-cell density, ties (a pair's two members) by the pool's density
        from fiftyone_elfs.selection.typical import in_cell_density

        in_cell, pool = in_cell_density(Xn, cells), neighbour_density(Xn)
    picks = []
    for c in np.unique(cells):
        members = np.flatnonzero(cells == c)
        if how == "incellg":
            picks.append(int(members[np.lexsort((-pool[members], -in_cell[members]))[0]]))
        elif how == "random":
            picks.append(int(rng.choice(members)))
        elif how == "centroid":
            picks.append(int(members[np.argmax(Xn[members] @ km.centroids[c])]))
        else:
            picks.append(int(members[np.argmax(neighbour_density(Xn[members]))]))
    picks = np.array(picks, dtype=np.int64)
    if picks.size < budget:  # empty cells: random free rows
        rest = np.setdiff1d(np.arange(X.shape[0]), picks)
        picks = np.concatenate([picks, rng.choice(rest, budget - picks.size, replace=False)])
    return np.sort(picks)


def _hard_end_survivors(art: Artefacts, budget: int) -> np.ndarray:
    """Sorted indices left after ELFS's label-free hard-end cut (AUM, share 0.5), never fewer
    than ``budget`` (`elfs_bench.methods.hard_end_survivors`, as the harness runs it)."""
    from elfs_bench.methods import hard_end_survivors

    return hard_end_survivors(art.aum(), budget)[0]


def _cluster_floor(
    idx: np.ndarray,
    labels: np.ndarray,
    aum: np.ndarray,
    beta: float,
    budget: int,
    floor: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Tops up every pseudo-cluster holding fewer than ``floor`` x its proportional share of the
    budget: first random members that survived the hard-end cut, then the easiest cut ones; the
    same number leaves the clusters above their share (random selected members)."""
    n = labels.size
    sizes = np.bincount(labels)
    expected = budget * sizes / n
    want = np.floor(floor * expected).astype(int)
    chosen = np.zeros(n, dtype=bool)
    chosen[idx] = True
    cut = np.zeros(n, dtype=bool)
    cut[np.argsort(aum, kind="stable")[: int(np.floor(beta * n + 1e-9))]] = True
    added = 0
    for c in np.flatnonzero(np.bincount(labels[idx], minlength=sizes.size) < want):
        need = want[c] - int(chosen[labels == c].sum())
        free = np.flatnonzero((labels == c) & ~chosen)
        kept, was_cut = free[~cut[free]], free[cut[free]]
        picks = rng.permutation(kept)[:need]
        if picks.size < need:
            easiest = was_cut[np.argsort(-aum[was_cut], kind="stable")]
            picks = np.concatenate([picks, easiest[: need - picks.size]])
        chosen[picks] = True
        added += picks.size
    while added > 0:  # one at a time from the cluster furthest above its share
        counts = np.bincount(labels[chosen], minlength=sizes.size)
        c = int(np.argmax(counts - expected))
        members = np.flatnonzero(chosen & (labels == c))
        chosen[rng.choice(members)] = False
        added -= 1
    return np.flatnonzero(chosen)


def _share(name: str, budget_fraction: float) -> float:
    """The hard-end share of a rule: the frozen 0.5, or for "..._ramp" CCS the candidate ramp
    tried on validation data (not adopted: ``results/selection-rule-tuning/README.md``), 0 up to
    50% pruning and 0.5 from 90% (0.25 at 70%; the window keeps 0.5)."""
    if name.endswith("_ramp") and "_de" not in name:
        pruned = 1.0 - budget_fraction
        return 0.5 * min(1.0, max(0.0, (pruned - 0.5) / 0.4))
    return 0.5


def _per_cluster_ccs(art: Artefacts, budget: int, beta: float, seed: int) -> np.ndarray:
    """CCS inside each pseudo-cluster on the AUM, quotas proportional to cluster sizes; each
    cluster cuts its hardest ``beta`` share (less when its quota would not fit)."""
    from fiftyone_elfs.selection import ccs_select, proportional_quota

    lab, aum = art.pseudo(), art.aum()
    quota = proportional_quota(np.bincount(lab, minlength=art.K), budget)
    out = []
    for c, q in enumerate(quota):
        members = np.flatnonzero(lab == c)
        if q == 0:
            continue
        if q >= members.size:
            out.append(members)
            continue
        b = min(beta, 1 - q / members.size)
        out.append(members[ccs_select(aum[members], int(q), b, seed=seed + c)])
    return np.sort(np.concatenate(out))


# --------------------------------------------------------------------------- main

#: method suffix -> (clustering, selection features): "" is k-means on the default embeddings.
VARIANTS = {
    "": ("kmeans", ""),
    "spectral": ("spectral", ""),
    "prehead": ("kmeans", "prehead"),
    "spectral-prehead": ("spectral", "prehead"),
    "temi": ("temi", ""),  # the package's default clustering
    # the optional quality encoder (EfficientNet-Lite2 at its native 260 px) for the selection
    "lite2": ("kmeans", "lite2"),
    "lite2-temi": ("temi", "lite2"),
    # Lite0 adapted to the pool by SimCLR on its pixels (`elfs_bench.adaptation`; no labels)
    "adapted": ("kmeans", "adapted"),
    "adapted-temi": ("temi", "adapted"),
    # calibration (reads the TRUE labels; never a candidate): TEMI's pseudo-labels with a share of
    # their errors corrected up to the given accuracy (`oracle_labels`)
    **{f"oracle{a}": (f"oracle{a}", "") for a in (60, 70, 85, 100)},
    # calibration: the labels a linear probe fitted to the other folds' TRUE labels predicts,
    # the best pseudo-labels a linear readout of the default features gives (`feature_ceiling`)
    "probecv": ("probecv", ""),
    **{f"probe{n}": (f"probe{n}", "") for n in (300, 900)},
}


def _tail_coverage(y_pool: np.ndarray, idx: np.ndarray) -> float:
    """The smallest class of the pool (among the classes the pool holds): its share of the
    selection over its share of the pool (1 = fair, 0 = left out). A class absent from the pool
    has no share to cover; the row's ``pool_classes`` says how many classes the pool holds."""
    counts = np.bincount(y_pool)
    present = np.flatnonzero(counts)
    tail = int(present[np.argmin(counts[present])])
    return float(np.mean(y_pool[idx] == tail) / np.mean(y_pool == tail))


def _lower_bound(paired: list[float]) -> str:
    """One-sided 90% lower confidence bound of the mean paired gap (Student t), in points."""
    from scipy.stats import t

    if len(paired) < 2:
        return "-"
    d = 100 * np.asarray(paired)
    bound = d.mean() - t.ppf(0.9, d.size - 1) * d.std(ddof=1) / np.sqrt(d.size)
    return f"{bound:+.2f}"


def report(path: str) -> str:
    """Markdown table: mean accuracy per (protocol, rate, method) and its paired gap to random."""
    rows = [json.loads(line) for line in open(path)]
    acc = {(r["protocol"], r["rate"], r["method"], r["seed"]): r["accuracy"] for r in rows}
    out = [
        "| protocol | pruning | method | seeds | accuracy | vs random (paired) | 90% lower bound |",
        "|---|---|---|---|---|---|---|",
    ]
    for pr, rate, method in sorted({k[:3] for k in acc}):
        seeds = sorted(k[3] for k in acc if k[:3] == (pr, rate, method))
        mean = np.mean([acc[(pr, rate, method, s)] for s in seeds])
        paired = [
            acc[(pr, rate, method, s)] - acc[(pr, rate, "random", s)]
            for s in seeds
            if (pr, rate, "random", s) in acc
        ]
        gap = (
            "-"
            if method == "random" or not paired
            else (f"{100 * np.mean(paired):+.2f} ({', '.join(f'{100 * d:+.1f}' for d in paired)})")
        )
        bound = "-" if method == "random" else _lower_bound(paired)
        out.append(
            f"| {pr} | {rate:g}% | {method} | {len(seeds)} | {100 * mean:.2f} | {gap} | {bound} |"
        )
    return "\n".join(out)


def _finished_runs(path: str) -> set[tuple[str, float, int, str]]:
    """The (method, rate, seed, protocol) rows already in the results file."""
    if not os.path.exists(path):
        return set()
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return {(r["method"], r["rate"], r["seed"], r["protocol"]) for r in rows}


def _comma(parse, what: str):
    """An argparse type: a non-empty comma list of ``parse``d values."""

    def convert(text: str) -> list:
        try:
            values = [parse(v.strip()) for v in text.split(",") if v.strip()]
        except ValueError:
            values = []
        if not values:
            raise argparse.ArgumentTypeError(f"expected a comma list of {what}; got {text!r}")
        return values

    return convert


def build_parser() -> argparse.ArgumentParser:
    """The options (every list checked here, before any image is read)."""
    p = argparse.ArgumentParser(
        prog="explore_selection.py",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--methods",
        type=_comma(str, "method names"),
        default="random,elfs_de,elfs_ccs,strat_random,typiclust",
        help="comma list of <method> or <method>@<variant> (see select() and VARIANTS)",
    )
    p.add_argument(
        "--rates",
        type=pruning_rates,
        default="90,70,50",
    )
    p.add_argument("--seeds", type=_comma(int, "whole-number seeds"), default="0")
    p.add_argument(
        "--protocols",
        type=protocol_letters,
        default="B,C",
    )
    p.add_argument("--pool", type=at_least(0), default=10000)
    p.add_argument("--val", type=at_least(0), default=5000)
    p.add_argument("--data-seed", type=int, default=101)
    p.add_argument(
        "--val-per-class",
        type=at_least(0),
        default=0,
        help="a balanced validation split of this many images per class (--val is then "
        "ignored); at most half of a class's images, so that no class leaves the pool",
    )
    p.add_argument(
        "--data-dir",
        help="a class tree (e.g. from make_class_tree.py): pool and validation are drawn from "
        "its train/ folder only, or, without train/, from DIR/<class>/* itself (default: "
        "CIFAR-10's train images); the test split is never read",
    )
    p.add_argument("--steps-b", type=at_least(0), default=1500)
    p.add_argument(
        "--out", default=os.path.join(HERE, "results", "selection-rule-tuning", "explore.jsonl")
    )
    p.add_argument("--cache-dir", default=os.path.join(HERE, "cache"))
    p.add_argument("--threads", type=at_least(0), default=0)
    p.add_argument("--report", action="store_true", help="print the table of --out and stop")
    return p


def main(argv: list[str] | None = None) -> None:
    p = build_parser()
    a = p.parse_args(argv)
    if a.report:
        print(report(a.out))
        return
    problems = [m for m in map(method_problem, a.methods) if m]
    if problems:
        p.error("argument --methods: " + "; ".join(problems))
    empty = [r for r in a.rates if int(round((1 - r / 100) * a.pool)) < 1]
    if empty:
        p.error(
            f"argument --rates: {', '.join(f'{r:g}' for r in empty)}% pruning keeps no image of "
            f"the {a.pool}-image pool (budget 0); use a lower rate or a larger --pool"
        )

    if a.data_dir:
        root = a.data_dir
    else:
        root = prepare_cifar10(
            os.path.join(HERE, "..", "..", "shared", "data", "cifar10-jpg.tar.gz"), a.cache_dir
        )
    train_dir = os.path.join(root, "train")
    if not os.path.isdir(train_dir) and os.path.isdir(root):
        print(f"{root} has no train/: pool and validation are drawn from its class folders")
        train_dir = root  # one labelled folder DIR/<class>/*: only train images are needed
    paths, names = list_class_tree(train_dir)
    classes = sorted(set(names))
    y = np.array([classes.index(c) for c in names])
    if a.val_per_class:
        quota = val_quota(y, a.val_per_class)
        for c, q in quota.items():
            if q < a.val_per_class:
                print(
                    f"notice: class {classes[c]!r} has {int((y == c).sum())} images: {q} go to "
                    f"validation instead of {a.val_per_class} (at most half of a class), the "
                    "rest stays for the pool"
                )
        n_val = sum(quota.values())
    else:
        n_val = a.val
    if a.pool + n_val > y.size:
        sys.exit(f"--pool {a.pool} + {n_val} validation images is more than the {y.size} images")
    pool_idx, val_idx = draw(y, a.pool, a.val, a.data_seed, a.val_per_class)
    pool_paths = [paths[i] for i in pool_idx]
    val_paths = [paths[i] for i in val_idx]
    y_pool, y_val = y[pool_idx], y[val_idx]
    missing = [classes[c] for c in range(len(classes)) if not (y_pool == c).any()]
    if missing:
        print(f"notice: the pool holds no image of {missing} (too few images to draw from)")
    X = cached_embeddings(pool_paths, a.cache_dir)
    protocols = a.protocols
    if "A" in protocols:
        X_val = cached_embeddings(val_paths, a.cache_dir)
    if "B" in protocols:
        px_pool, px_val = (
            cached_pixels(pool_paths, a.cache_dir),
            cached_pixels(val_paths, a.cache_dir),
        )
    if "C" in protocols:
        tr_pool, tr_val = (
            cached_trunk(pool_paths, a.cache_dir),
            cached_trunk(val_paths, a.cache_dir),
        )

    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    from elfs_bench.finetune import FinetuneConfig, protocol_c
    from elfs_bench.protocols import (
        TrainConfig,
        feature_stats,
        pixel_stats,
        protocol_a,
        protocol_b,
    )

    from fiftyone_elfs.pseudo_labels import cluster_accuracy

    n = len(pool_paths)
    # "<method>@<variant>": the selection sees other pseudo-labels / features (VARIANTS);
    # the protocols always train on the default features and pixels.
    selection_features = {"": X}
    if any("prehead" in m for m in a.methods):
        selection_features["prehead"] = cached_embeddings(
            pool_paths, a.cache_dir, "efficientnet-lite0-prehead"
        )
    if any("lite2" in m for m in a.methods):
        selection_features["lite2"] = cached_embeddings(
            pool_paths, a.cache_dir, "efficientnet-lite2", image_size=260
        )
    if any("adapted" in m for m in a.methods):
        from elfs_bench.adaptation import cached_adapted_embeddings

        selection_features["adapted"] = cached_adapted_embeddings(pool_paths, a.cache_dir)
    for seed in a.seeds:
        arts = {
            v: Artefacts(selection_features[feat], len(classes), seed, clustering, y_pool)
            for v, (clustering, feat) in VARIANTS.items()
            if feat in selection_features
        }
        for rate in a.rates:
            budget = int(round((1 - rate / 100) * n))
            for method in a.methods:
                # Read afresh each time: another process may be appending to the same file.
                done = _finished_runs(a.out)
                todo = [pr for pr in protocols if (method, rate, seed, pr) not in done]
                if not todo:
                    continue
                t0 = time.time()
                base, _, variant = method.partition("@")
                idx = select(base, arts[variant], budget, seed)
                sel_s = time.time() - t0
                assert idx.size == budget and np.unique(idx).size == budget, (method, idx.size)
                for pr in todo:
                    if (method, rate, seed, pr) in _finished_runs(a.out):
                        continue  # written by another process meanwhile
                    if pr == "A":
                        res = protocol_a(X[idx], y_pool[idx], X_val, y_val, feature_stats(X))
                    elif pr == "B":
                        res = protocol_b(
                            px_pool[idx],
                            y_pool[idx],
                            px_val,
                            y_val,
                            len(classes),
                            seed,
                            pixel_stats(px_pool),
                            TrainConfig(steps=a.steps_b, threads=a.threads),
                        )
                    else:
                        res = protocol_c(
                            tr_pool[idx],
                            y_pool[idx],
                            tr_val,
                            y_val,
                            len(classes),
                            seed,
                            FinetuneConfig(threads=a.threads),
                        )
                    row = dict(
                        method=method,
                        rate=rate,
                        seed=seed,
                        protocol=pr,
                        accuracy=res.accuracy,
                        select_s=round(sel_s, 1),
                        train_s=round(res.seconds, 1),
                        classes_covered=int(np.unique(y_pool[idx]).size),
                        min_class_share=float(
                            np.bincount(y_pool[idx], minlength=len(classes)).min() / budget
                        ),
                        # the smallest pool class: its share of the selection / of the pool
                        tail_coverage=_tail_coverage(y_pool, idx),
                        pool_classes=int(np.unique(y_pool).size),
                    )
                    if arts[variant].has("pseudo"):  # report only: never used to select
                        row.update(
                            pseudo_accuracy=round(
                                float(cluster_accuracy(y_pool, arts[variant].pseudo())), 4
                            )
                        )
                    if base in ("elfs_auto", "elfs_auto_ramp"):  # the rule chosen, and why
                        trust = arts[variant].get("trust", lambda: None)
                        row.update(mode=arts[variant].get("mode", lambda: None))
                        row.update(trust_stability=trust.stability)
                    print(json.dumps(row), flush=True)
                    with open(a.out, "a") as f:
                        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
