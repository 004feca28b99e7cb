"""The selection methods compared by the benchmark: name -> callable(context, budget, seed).

A label-free method sees only ``context.inputs`` (pool embeddings, pool pixels when loaded, the
pool's file paths, the number of classes K, an artefact cache). Methods registered with
``uses_labels=True`` also get ``context.labeled`` (true pool labels and protocol-A evaluators);
for every other method it is None, so a label-free method cannot read labels by mistake.

Rate-independent intermediate results (pseudo-labels, AUM, ZCore and Brain scores) are cached
per seed by ``ArtefactCache``, so all pruning rates reuse them.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import numpy as np

from fiftyone_elfs.param_rows import CLUSTERING, MODE

__all__ = [
    "METHODS",
    "ArtefactCache",
    "LabeledInputs",
    "LabelFreeInputs",
    "MethodContext",
    "MethodParams",
    "MethodSpec",
    "Selection",
    "measure",
    "resolve_methods",
]


# --------------------------------------------------------------------------- measurement


def _rss_bytes() -> int:
    """Current resident set size of this process (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):  # pragma: no cover - not Linux
        return 0


def _maxrss_bytes() -> int:
    """Peak resident set size of this process so far (getrusage; kB on Linux)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@contextmanager
def measure(interval: float = 0.005) -> Iterator[dict]:
    """Wall time and peak memory of a block; fills the yielded dict on exit.

    ``seconds``: wall time. ``peak_rss_delta_mb``: highest resident set size seen by a sampling
    thread (every ``interval`` s) minus the size at entry: covers numpy, torch and faiss
    allocations alike (tracemalloc would miss the last two). ``maxrss_delta_mb``: growth of the
    process's lifetime peak (getrusage), 0 when the block stayed below an earlier peak.
    """
    out: dict = {}
    base = _rss_bytes()
    base_max = _maxrss_bytes()
    peak = [base]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(interval):
            peak[0] = max(peak[0], _rss_bytes())

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    t0 = time.perf_counter()
    try:
        yield out
    finally:
        seconds = time.perf_counter() - t0
        stop.set()
        thread.join()
        peak[0] = max(peak[0], _rss_bytes())
        out.update(
            seconds=round(seconds, 3),
            peak_rss_delta_mb=round((peak[0] - base) / 2**20, 1),
            maxrss_delta_mb=round(max(0, _maxrss_bytes() - base_max) / 2**20, 1),
        )


# --------------------------------------------------------------------------- context


@dataclass(frozen=True)
class MethodParams:
    """Settings of the methods (fixed for a run; part of the artefact cache key)."""

    proxy_epochs: int = 40
    temi_epochs: int = 15
    temi_heads: int = 8
    zcore_draws: int = 1_000_000
    beta_grid: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)


class ArtefactCache:
    """Rate-independent arrays of one (method family, seed) on disk as ``.npz`` + ``.json``.

    The folder is the data's and the embeddings' (``data.artefact_folder``: data key, encoder,
    image size, digest of the pool's embeddings); the file name holds the artefact name, its
    parameters and the seed. The json keeps how long the computation took and its peak memory,
    so a later rate reports the cost it reused.
    """

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self._memo: dict[str, tuple[dict[str, np.ndarray], dict]] = {}

    def get(
        self,
        name: str,
        seed: int | None,
        params: dict,
        compute: Callable[[], tuple[dict[str, np.ndarray], dict]],
    ) -> tuple[dict[str, np.ndarray], dict]:
        """Return (arrays, meta) from the cache, or ``compute()`` them, measure and store."""
        digest = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:10]
        stem = f"{name}-{digest}" + ("" if seed is None else f"-s{seed}")
        if stem in self._memo:
            arrays, meta = self._memo[stem]
            return arrays, {**meta, "reused": True}
        npz = os.path.join(self.folder, stem + ".npz")
        meta_path = os.path.join(self.folder, stem + ".json")
        if os.path.exists(npz) and os.path.exists(meta_path):
            with np.load(npz) as f:
                arrays = {k: f[k] for k in f.files}
            with open(meta_path) as f:
                meta = json.load(f)
            meta["reused"] = True
        else:
            with measure() as cost:
                arrays, extra = compute()
            meta = {"name": name, "seed": seed, "params": params, "cost": cost, **extra}
            os.makedirs(self.folder, exist_ok=True)
            tmp = npz + ".tmp.npz"
            np.savez(tmp, **arrays)
            os.replace(tmp, npz)
            with open(meta_path + ".tmp", "w") as f:
                json.dump(meta, f, indent=1)
            os.replace(meta_path + ".tmp", meta_path)
            meta = {**meta, "reused": False}
        self._memo[stem] = (arrays, meta)
        return arrays, meta


@dataclass
class LabelFreeInputs:
    """What every method may use: the unlabeled pool and the number of classes K."""

    X: np.ndarray  # pool embeddings [N, d]
    pixels: np.ndarray | None  # pool pixels uint8 [N, 32, 32, 3] (None when not loaded)
    paths: list[str]  # pool image files (for the FiftyOne Brain methods)
    n_classes: int  # K, the number of clusters (the paper's assumption: K = number of classes)
    artefacts: ArtefactCache
    params: MethodParams
    # The pool's embeddings from the optional quality encoder (EfficientNet-Lite2 at 260 px),
    # computed on first use: only the ``*_lite2`` methods call it
    quality_embeddings: Callable[[], np.ndarray] | None = None
    # The pool's embeddings from Lite0 adapted to the pool (``adapt_steps=300``, seed 0;
    # `elfs_bench.adaptation`), computed on first use: only the ``*_adapted`` methods call it
    adapted_embeddings: Callable[[], np.ndarray] | None = None

    def features(self, encoder: str) -> np.ndarray:
        """The pool embeddings a method selects on: ``"default"`` (X), ``"lite2"`` or
        ``"adapted"``."""
        if encoder == "default":
            return self.X
        if encoder == "lite2" and self.quality_embeddings is not None:
            return self.quality_embeddings()
        if encoder == "adapted" and self.adapted_embeddings is not None:
            return self.adapted_embeddings()
        raise ValueError(f"no {encoder!r} embeddings for this pool")


@dataclass
class LabeledInputs:
    """What only ``uses_labels`` methods get: true pool labels and protocol-A scorers."""

    y: np.ndarray  # true labels of the pool
    val_accuracy: Callable[[np.ndarray], float]  # protocol A trained on pool[idx], scored on val
    test_accuracy: Callable[[np.ndarray], float]  # the same, scored on TEST (oracle only)


@dataclass
class MethodContext:
    """Inputs handed to a method; ``labeled`` is None for label-free methods."""

    inputs: LabelFreeInputs
    labeled: LabeledInputs | None = None


@dataclass
class Selection:
    """A method's answer: sorted pool indices, JSON-able info, and pseudo-labels if it made any
    (the runner scores those against the truth for the report; the method never does)."""

    indices: np.ndarray
    info: dict = field(default_factory=dict)
    pseudo_labels: np.ndarray | None = None


MethodFn = Callable[[MethodContext, int, int], Selection]


@dataclass(frozen=True)
class MethodSpec:
    """A registered method: its callable, whether it reads labels, and a one-line description."""

    name: str
    fn: MethodFn
    description: str
    uses_labels: bool = False
    oracle: bool = False
    needs_pixels: bool = False  # trains on the pool's images (the runner then decodes them)


def _sorted(indices: np.ndarray) -> np.ndarray:
    """Indices as a sorted int64 array."""
    return np.sort(np.asarray(indices, dtype=np.int64))


def _top(scores: np.ndarray, budget: int) -> np.ndarray:
    """Sorted indices of the ``budget`` highest scores (ties: lower index first)."""
    return _sorted(np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")[:budget])


def _cost_info(meta: dict) -> dict:
    """The shared-artefact cost recorded in a result's info."""
    cost = meta.get("cost", {})
    return {
        "artefact_seconds": cost.get("seconds"),
        "artefact_peak_rss_delta_mb": cost.get("peak_rss_delta_mb"),
        "artefact_reused": meta.get("reused", False),
    }


# --------------------------------------------------------------------------- geometry baselines


def _baselines():  # imported lazily: written alongside this harness
    from fiftyone_elfs.selection import baselines

    return baselines


def random_method(ctx: MethodContext, budget: int, seed: int) -> Selection:
    """Uniform random subset."""
    return Selection(_baselines().random_select(ctx.inputs.X.shape[0], budget, seed=seed))


def _prototypicality(keep: str) -> MethodFn:
    """Distance to the own k-means centroid: keep the closest (easy) or farthest (hard)."""

    def run(ctx: MethodContext, budget: int, seed: int) -> Selection:
        idx = _baselines().prototypicality_select(
            ctx.inputs.X, budget, n_clusters=ctx.inputs.n_classes, keep=keep, seed=seed
        )
        return Selection(idx, {"keep": keep, "n_clusters": ctx.inputs.n_classes})

    return run


def kcenter_method(ctx: MethodContext, budget: int, seed: int) -> Selection:
    """Greedy k-center on L2-normalised embeddings."""
    return Selection(_baselines().k_center_greedy(ctx.inputs.X, budget, seed=seed))


def d2_method(ctx: MethodContext, budget: int, seed: int) -> Selection:
    """D2 pruning with the label-free difficulty (distance to the k-means centroid)."""
    idx = _baselines().d2_prune(ctx.inputs.X, budget, n_clusters=ctx.inputs.n_classes, seed=seed)
    return Selection(idx, {"difficulty": "prototypicality distance"})


def typiclust_method(ctx: MethodContext, budget: int, seed: int) -> Selection:
    """TypiClust (`selection.typical_select`): the densest member of each of budget cells."""
    from fiftyone_elfs.selection import typical_select

    return Selection(typical_select(ctx.inputs.X, budget, seed=seed))


def zcore_method(ctx: MethodContext, budget: int, seed: int) -> Selection:
    """ZCore coverage-minus-redundancy scores (cached per seed), keep the top ``budget``."""
    draws = ctx.inputs.params.zcore_draws
    arrays, meta = ctx.inputs.artefacts.get(
        "zcore",
        seed,
        {"n_draws": draws},
        lambda: (
            {"scores": _baselines().zcore_scores(ctx.inputs.X, n_draws=draws, seed=seed)},
            {},
        ),
    )
    return Selection(_top(arrays["scores"], budget), {"n_draws": draws, **_cost_info(meta)})


# --------------------------------------------------------------------------- FiftyOne Brain


def brain_scores(paths: list[str], X: np.ndarray, kind: str) -> np.ndarray:
    """FiftyOne Brain uniqueness or representativeness of the pool, from our embeddings.

    Builds a temporary (non-persistent) dataset of the pool's file paths, runs
    ``compute_uniqueness`` / ``compute_representativeness`` with ``embeddings=X`` (so no model is
    downloaded), reads the scores back in pool order and deletes the dataset.
    """
    import fiftyone as fo
    import fiftyone.brain as fob

    dataset = fo.Dataset(f"elfs-bench-{kind}-{uuid.uuid4().hex[:8]}")
    try:
        dataset.add_samples([fo.Sample(filepath=p) for p in paths], progress=False)
        if kind == "uniqueness":
            fob.compute_uniqueness(dataset, embeddings=X, progress=False)
        else:
            fob.compute_representativeness(dataset, embeddings=X, progress=False)
        by_path = dict(zip(dataset.values("filepath"), dataset.values(kind), strict=True))
        scores = np.array([by_path[p] for p in paths], dtype=np.float64)
    finally:
        dataset.delete()
    if np.isnan(scores).any():
        raise RuntimeError(f"FiftyOne Brain left {int(np.isnan(scores).sum())} {kind} scores empty")
    return scores


def _brain(kind: str) -> MethodFn:
    """Keep the ``budget`` samples with the highest Brain ``kind`` score."""

    def run(ctx: MethodContext, budget: int, seed: int) -> Selection:
        # Deterministic (no seed), so one cached score array serves every seed.
        arrays, meta = ctx.inputs.artefacts.get(
            f"brain_{kind}",
            None,
            {},
            lambda: ({"scores": brain_scores(ctx.inputs.paths, ctx.inputs.X, kind)}, {}),
        )
        return Selection(_top(arrays["scores"], budget), {"keep": "highest", **_cost_info(meta)})

    return run


# --------------------------------------------------------------------------- ELFS


def _difficulty(
    ctx: MethodContext, seed: int, clustering: str, encoder: str = "default"
) -> tuple[dict[str, np.ndarray], dict]:
    """Pseudo-labels (k-means, TEMI, or the TRUE labels for 'truth') and the MLP proxy's AUM,
    both on the pool embeddings of ``encoder`` (see `LabelFreeInputs.features`)."""
    from fiftyone_elfs.difficulty import train_mlp_proxy
    from fiftyone_elfs.pseudo_labels import (
        TEMIClustering,
        kmeans_pseudo_labels,
        spectral_pseudo_labels,
    )

    inp = ctx.inputs
    X = inp.features(encoder)
    params: dict = {"clustering": clustering, "proxy_epochs": inp.params.proxy_epochs}
    if clustering == "temi":
        params.update(temi_epochs=inp.params.temi_epochs, temi_heads=inp.params.temi_heads)
    name = f"difficulty_{clustering}"
    if encoder != "default":  # the default's cache keys stay as they were
        params["encoder"] = encoder
        name += f"_{encoder}"

    def compute() -> tuple[dict[str, np.ndarray], dict]:
        t0 = time.perf_counter()
        extra: dict = {}
        if clustering == "kmeans":
            labels, _ = kmeans_pseudo_labels(X, inp.n_classes, seed=seed)
        elif clustering == "spectral":
            labels, _ = spectral_pseudo_labels(X, inp.n_classes, seed=seed)
        elif clustering == "temi":
            temi = TEMIClustering(
                inp.n_classes,
                n_heads=inp.params.temi_heads,
                epochs=inp.params.temi_epochs,
                seed=seed,
            ).fit(X)
            labels = temi.labels_
            extra["best_head"] = int(temi.best_head_)
        elif clustering == "truth":
            if ctx.labeled is None:
                raise PermissionError("the true-label proxy is only for uses_labels methods")
            labels = ctx.labeled.y
        elif clustering.startswith("mix"):
            if ctx.labeled is None:
                raise PermissionError("label-quality diagnostics are for uses_labels methods")
            labels = _mixed_pseudo_labels(X, ctx.labeled.y, inp.n_classes, clustering, seed)
        else:
            raise ValueError(f"unknown clustering {clustering!r}")
        extra["clustering_seconds"] = round(time.perf_counter() - t0, 2)
        scores = train_mlp_proxy(
            X, labels, n_classes=inp.n_classes, epochs=inp.params.proxy_epochs, seed=seed
        )
        extra["proxy_seconds"] = scores.info.get("seconds")
        arrays = {
            "labels": np.asarray(labels, dtype=np.int64),
            "aum": scores.aum,
            "forgetting": scores.forgetting,
            "el2n": scores.el2n,
        }
        return arrays, extra

    return inp.artefacts.get(name, seed, params, compute)


def _mixed_pseudo_labels(
    X: np.ndarray, truth: np.ndarray, n_classes: int, clustering: str, seed: int
) -> np.ndarray:
    """Diagnostic pseudo-labels of controlled quality ('mix<pct>'): each sample keeps its TRUE
    label with probability pct/100, otherwise its k-means cluster mapped to a class by the
    Hungarian matching; the errors are k-means's own (structured), not uniform noise."""
    from fiftyone_elfs.pseudo_labels import hungarian_match, kmeans_pseudo_labels

    share = int(clustering[3:]) / 100.0
    clusters, _ = kmeans_pseudo_labels(X, n_classes, seed=seed)
    to_class = np.zeros(n_classes, dtype=np.int64)
    for cluster, cls in hungarian_match(truth, clusters).items():
        to_class[cluster] = cls
    keep_truth = np.random.default_rng(seed + 7919).random(truth.size) < share
    return np.where(keep_truth, truth, to_class[clusters])


def _elfs(
    clustering: str, ccs: bool = False, rule: str | None = None, encoder: str = "default"
) -> MethodFn:
    """ELFS: pseudo-labels -> MLP proxy AUM -> label-free beta -> double-end pruning (or CCS).

    ``rule``: a ``mode`` of ``select_coreset`` ("auto" chooses by the pseudo-labels' trust,
    computed here as the pseudo-labels stage does); the rule used is recorded as "mode".
    ``encoder``: the embeddings the selection works on (`LabelFreeInputs.features`); the
    protocols train on the same data whatever it is.
    """

    def run(ctx: MethodContext, budget: int, seed: int) -> Selection:
        from fiftyone_elfs.difficulty import HARD_IS_LOW
        from fiftyone_elfs.pseudo_labels import pseudo_label_trust
        from fiftyone_elfs.selection import (
            ccs_select,
            double_end_prune,
            label_free_beta,
            resolve_mode,
            typical_select,
        )

        arrays, meta = _difficulty(ctx, seed, clustering, encoder)
        aum = arrays["aum"]
        n = aum.size
        beta, reason = label_free_beta(aum, min(budget / n, 1.0))
        info = {"beta": beta, "beta_reason": reason, "clustering": clustering}
        if encoder != "default":
            info["encoder"] = encoder
        mode = "ccs" if ccs else "window"
        if rule is not None:
            X = ctx.inputs.features(encoder)
            trust = pseudo_label_trust(X, arrays["labels"], seed=seed).as_dict()
            mode, mode_reason = resolve_mode(rule, trust)
            info.update(mode=mode, mode_reason=mode_reason, trust_stability=trust["stability"])
        if mode == "typical":  # only chosen by the rule, so X is the features read above
            idx = typical_select(X, budget, seed=seed)
            info.update(selection="typical", beta=0.0, beta_reason="no cut (typical selection)")
        elif mode == "ccs":
            idx = ccs_select(aum, budget, beta, hard_is_low=HARD_IS_LOW["aum"], seed=seed)
            info["selection"] = "ccs"
        else:
            pruned = double_end_prune(aum, budget, beta, hard_is_low=HARD_IS_LOW["aum"])
            idx = pruned.indices
            info.update(selection="double-end", effective_beta=pruned.effective_beta)
            info["notices"] = pruned.notices
        info.update(_cost_info(meta))
        for key in ("clustering_seconds", "proxy_seconds", "best_head"):
            if key in meta:
                info[key] = meta[key]
        return Selection(_sorted(idx), info, pseudo_labels=arrays["labels"])

    return run


def knn_agreement(labels: np.ndarray, neighbours: np.ndarray) -> np.ndarray:
    """The share of each sample's neighbours (rows of ``neighbours``) that carry its label."""
    return (labels[neighbours] == labels[:, None]).mean(axis=1)


def _temi_heads_agreement(ctx: MethodContext, seed: int, k: int = 50) -> tuple[dict, dict]:
    """Per sample, the share of its ``k`` nearest neighbours in its own TEMI pseudo-cluster,
    averaged over TEMI's heads (higher = easier). TEMI is fitted as in `_difficulty` (same
    settings and seed); "same_labels_as_difficulty" in the meta says whether it gave the same
    pseudo-labels there."""
    from fiftyone_elfs.pseudo_labels import TEMIClustering, nearest_neighbors

    inp = ctx.inputs
    params = {"temi_epochs": inp.params.temi_epochs, "temi_heads": inp.params.temi_heads, "k": k}

    def compute() -> tuple[dict[str, np.ndarray], dict]:
        temi = TEMIClustering(
            inp.n_classes, n_heads=inp.params.temi_heads, epochs=inp.params.temi_epochs, seed=seed
        ).fit(inp.X)
        nn = nearest_neighbors(inp.X, k)
        heads = [temi.predict(inp.X, head=h) for h in range(temi.n_heads)]
        agreement = np.mean([knn_agreement(h, nn) for h in heads], axis=0)
        return {"agreement": agreement, "labels": np.asarray(temi.labels_, dtype=np.int64)}, {}

    return inp.artefacts.get("temi_heads_knn_agreement", seed, params, compute)


def elfs_ccs_knnmix_method(ctx: MethodContext, budget: int, seed: int) -> Selection:
    """CCS on the mean rank of the TEMI pseudo-labels' AUM and their kNN-50 agreement averaged
    over TEMI's heads, with the default's label-free beta (the validation candidate "ccs_mix"
    of ``explore_selection.py``; a CNN-from-scratch candidate, not the default)."""
    from scipy.stats import rankdata

    from fiftyone_elfs.selection import ccs_select, label_free_beta

    arrays, meta = _difficulty(ctx, seed, "temi")
    agreement, _ = _temi_heads_agreement(ctx, seed)
    aum = arrays["aum"]
    beta, reason = label_free_beta(aum, min(budget / aum.size, 1.0))
    score = (rankdata(aum) + rankdata(agreement["agreement"])) / 2
    idx = ccs_select(score, budget, beta, hard_is_low=True, seed=seed)
    info = {
        "beta": beta,
        "beta_reason": reason,
        "selection": "ccs",
        "score": "mean rank of AUM and the heads' kNN-50 agreement",
        "same_labels_as_difficulty": bool(np.array_equal(agreement["labels"], arrays["labels"])),
        **_cost_info(meta),
    }
    return Selection(_sorted(idx), info, pseudo_labels=arrays["labels"])


def hard_end_survivors(aum: np.ndarray, budget: int) -> tuple[np.ndarray, float, str]:
    """ELFS's label-free hard-end cut (AUM, hard-end share 0.5) without the window: the sorted
    indices left after dropping the hardest beta share, never fewer than ``budget``; with the
    beta and its reason."""
    from fiftyone_elfs.selection import label_free_beta, rank_hardest_first

    n = aum.size
    beta, reason = label_free_beta(aum, min(budget / n, 1.0), hard_share=0.5)
    cut = min(int(np.floor(beta * n + 1e-9)), n - budget)
    return np.sort(rank_hardest_first(aum)[cut:]), beta, reason


def elfs_cut_kcenter_method(ctx: MethodContext, budget: int, seed: int) -> Selection:
    """The default's label-free hard-end cut (TEMI pseudo-labels, MLP-proxy AUM, hard-end
    share 0.5), then greedy k-center on the survivors: coverage without the outliers k-center
    alone is drawn to (the validation candidate "cut_kcenter" of ``explore_selection.py``; a
    fine-tuning candidate, not the default)."""
    arrays, meta = _difficulty(ctx, seed, "temi")
    survivors, beta, reason = hard_end_survivors(arrays["aum"], budget)
    cut = arrays["aum"].size - survivors.size
    picked = survivors[_baselines().k_center_greedy(ctx.inputs.X[survivors], budget, seed=seed)]
    info = {
        "beta": beta,
        "beta_reason": reason,
        "selection": "hard-end cut, then k-center",
        "cut": cut,
        **_cost_info(meta),
    }
    return Selection(_sorted(picked), info, pseudo_labels=arrays["labels"])


def _two_rounds(use_labels: bool, targets_from: str = "clusters") -> MethodFn:
    """ELFS in two labeling rounds of half the budget each (`select_more`'s rule for round 2).

    Round 1: ELFS k-means with half the budget. Round 2: `next_round_prune` for the rest, on
    the same AUM (``use_labels=False``), or on the AUM of a proxy retrained with the round-1
    samples' TRUE labels and majority-corrected pseudo-labels elsewhere (``use_labels=True``:
    what a user gets after loading round 1's annotations; only round-1 labels are read).
    """

    def run(ctx: MethodContext, budget: int, seed: int) -> Selection:
        from fiftyone_elfs.difficulty import train_mlp_proxy
        from fiftyone_elfs.pseudo_labels import merge_true_labels
        from fiftyone_elfs.selection import double_end_prune, label_free_beta, next_round_prune

        arrays, meta = _difficulty(ctx, seed, "kmeans")
        aum, pseudo = arrays["aum"], arrays["labels"]
        n = aum.size
        first_budget = max(1, budget // 2)
        beta1, _ = label_free_beta(aum, min(first_budget / n, 1.0))
        first = double_end_prune(aum, first_budget, beta1).indices
        info: dict = {"round1": int(first.size), "beta_round1": beta1, **_cost_info(meta)}
        aum2 = aum
        if use_labels:
            assert ctx.labeled is not None
            known = np.zeros(n, dtype=bool)
            known[first] = True
            true = [str(t) if k else None for t, k in zip(ctx.labeled.y, known, strict=True)]
            if targets_from == "probe":
                from fiftyone_elfs.pseudo_labels import probe_true_labels

                merged = probe_true_labels(ctx.inputs.X, true, seed=seed)
            else:
                merged = merge_true_labels([f"c{int(c)}" for c in pseudo], true)
            classes = sorted(set(merged))
            index = {c: i for i, c in enumerate(classes)}
            targets = np.array([index[c] for c in merged], dtype=np.int64)
            t0 = time.perf_counter()
            scores = train_mlp_proxy(
                ctx.inputs.X,
                targets,
                n_classes=len(classes),
                epochs=ctx.inputs.params.proxy_epochs,
                seed=seed,
            )
            aum2 = scores.aum
            info.update(
                round2_proxy_seconds=round(time.perf_counter() - t0, 2),
                round2_classes=len(classes),
                round2_target_accuracy=float(
                    np.mean([m == str(t) for m, t in zip(merged, ctx.labeled.y, strict=True)])
                ),
            )
        excluded = np.zeros(n, dtype=bool)
        excluded[first] = True
        beta2, reason = label_free_beta(aum2, min(budget / n, 1.0))
        second = next_round_prune(aum2, excluded, budget - first.size, beta2).indices
        info.update(beta=beta2, beta_reason=reason, round2=int(second.size))
        return Selection(_sorted(np.concatenate([first, second])), info, pseudo_labels=pseudo)

    return run


def _pixels(ctx: MethodContext) -> np.ndarray:
    if ctx.inputs.pixels is None:
        raise RuntimeError("this method trains on pixels, but the runner did not load them")
    return ctx.inputs.pixels


def _cnn_difficulty(ctx: MethodContext, seed: int) -> tuple[dict[str, np.ndarray], dict]:
    """k-means pseudo-labels and the AUM of the library's CNN proxy trained on the pool's pixels
    (its CPU defaults: small CNN of width 16, 32 px, 15 epochs)."""
    from fiftyone_elfs.difficulty import DEFAULT_CNN_EPOCHS, DEFAULT_CNN_WIDTH, train_cnn_proxy
    from fiftyone_elfs.pseudo_labels import kmeans_pseudo_labels

    inp = ctx.inputs
    params = {"clustering": "kmeans", "cnn_epochs": DEFAULT_CNN_EPOCHS, "width": DEFAULT_CNN_WIDTH}

    def compute() -> tuple[dict[str, np.ndarray], dict]:
        t0 = time.perf_counter()
        labels, _ = kmeans_pseudo_labels(inp.X, inp.n_classes, seed=seed)
        extra = {"clustering_seconds": round(time.perf_counter() - t0, 2)}
        pixels = _pixels(ctx)
        scores = train_cnn_proxy(
            [str(i) for i in range(len(pixels))],  # names only: the pixels are given
            labels,
            n_classes=inp.n_classes,
            seed=seed,
            images=pixels,
            image_size=pixels.shape[1],
        )
        extra["proxy_seconds"] = scores.info.get("seconds")
        extra["proxy_seconds_per_epoch"] = round(scores.info["seconds"] / scores.n_epochs, 2)
        arrays = {"labels": np.asarray(labels, dtype=np.int64), "aum": scores.aum}
        return arrays, extra

    return inp.artefacts.get("difficulty_kmeans_cnn", seed, params, compute)


def elfs_cnn_method(ctx: MethodContext, budget: int, seed: int) -> Selection:
    """ELFS with the CNN proxy: k-means pseudo-labels, CNN AUM, label-free beta, double-end."""
    from fiftyone_elfs.selection import double_end_prune, label_free_beta

    arrays, meta = _cnn_difficulty(ctx, seed)
    aum = arrays["aum"]
    beta, reason = label_free_beta(aum, min(budget / aum.size, 1.0))
    pruned = double_end_prune(aum, budget, beta)
    info = {"beta": beta, "beta_reason": reason, "effective_beta": pruned.effective_beta}
    info.update(_cost_info(meta))
    for key in ("clustering_seconds", "proxy_seconds", "proxy_seconds_per_epoch"):
        info[key] = meta[key]
    return Selection(_sorted(pruned.indices), info, pseudo_labels=arrays["labels"])


def _contrastive(method: str) -> MethodFn:
    """Ju et al.: SimCLR (or MoCo) on the pool's pixels; keep the least-agreeing samples."""

    def run(ctx: MethodContext, budget: int, seed: int) -> Selection:
        from fiftyone_elfs.difficulty import (
            DEFAULT_CONTRASTIVE_EPOCHS,
            train_contrastive_similarity,
        )
        from fiftyone_elfs.difficulty.contrastive import DEFAULT_MIN_CROP_SCALE

        params = {"epochs": DEFAULT_CONTRASTIVE_EPOCHS, "min_crop_scale": DEFAULT_MIN_CROP_SCALE}
        name = "contrastive_similarity"
        if method != "simclr":  # the SimCLR artefacts keep their earlier cache key
            params["method"], name = method, f"contrastive_similarity_{method}"

        def compute() -> tuple[dict[str, np.ndarray], dict]:
            scores = train_contrastive_similarity(
                _pixels(ctx), epochs=DEFAULT_CONTRASTIVE_EPOCHS, method=method, seed=seed
            )
            per_epoch = round(scores.info["seconds"] / scores.n_epochs, 2)
            return {"similarity": scores.similarity}, {"seconds_per_epoch": per_epoch}

        arrays, meta = ctx.inputs.artefacts.get(name, seed, params, compute)
        idx = np.argsort(arrays["similarity"], kind="stable")[:budget]
        info = {"seconds_per_epoch": meta["seconds_per_epoch"], **_cost_info(meta)}
        return Selection(_sorted(idx), info)

    return run


def _grid(beta_grid: tuple[float, ...], budget: int, n: int) -> list[float]:
    """Betas of the grid whose window fits in the pool (beta*N + budget <= N); never empty."""
    fits = [b for b in beta_grid if int(np.floor(b * n + 1e-9)) + budget <= n]
    return fits or [max(0.0, (n - budget) / n)]


def _grid_search_beta(
    beta_grid: tuple[float, ...],
    aum: np.ndarray,
    budget: int,
    select: Callable[[float], np.ndarray],
    accuracy: Callable[[np.ndarray], float],
) -> tuple[float, np.ndarray, dict[str, float]]:
    """Selects with every beta of the grid that fits; returns the most accurate (ties: smaller)."""
    candidates = {b: select(b) for b in _grid(beta_grid, budget, aum.size)}
    scores = {b: accuracy(idx) for b, idx in candidates.items()}
    best = max(sorted(scores), key=lambda b: scores[b])
    return best, candidates[best], {str(b): round(a, 4) for b, a in scores.items()}


def supervised_ccs_method(ctx: MethodContext, budget: int, seed: int) -> Selection:
    """CCS on the AUM of an MLP proxy trained on TRUE labels; beta by protocol-A VALIDATION."""
    from fiftyone_elfs.selection import ccs_select

    assert ctx.labeled is not None
    arrays, meta = _difficulty(ctx, seed, "truth")
    aum = arrays["aum"]
    best, idx, grid = _grid_search_beta(
        ctx.inputs.params.beta_grid,
        aum,
        budget,
        lambda beta: ccs_select(aum, budget, beta, seed=seed),
        ctx.labeled.val_accuracy,
    )
    info = {
        "beta": best,
        "beta_reason": "grid search by protocol-A validation accuracy",
        "grid_val_accuracy": grid,
        **_cost_info(meta),
    }
    return Selection(_sorted(idx), info)


def elfs_oracle_beta_method(ctx: MethodContext, budget: int, seed: int) -> Selection:
    """ELFS k-means with beta chosen by protocol-A TEST accuracy: an upper bound, not a method."""
    from fiftyone_elfs.selection import double_end_prune

    assert ctx.labeled is not None
    arrays, meta = _difficulty(ctx, seed, "kmeans")
    aum = arrays["aum"]
    best, idx, grid = _grid_search_beta(
        ctx.inputs.params.beta_grid,
        aum,
        budget,
        lambda beta: double_end_prune(aum, budget, beta).indices,
        ctx.labeled.test_accuracy,
    )
    info = {
        "beta": best,
        "beta_reason": "ORACLE: grid search by protocol-A TEST accuracy",
        "grid_test_accuracy": grid,
        **_cost_info(meta),
    }
    return Selection(_sorted(idx), info, pseudo_labels=arrays["labels"])


# --------------------------------------------------------------------------- registry


def _spec(name: str, fn: MethodFn, description: str, **flags: bool) -> tuple[str, MethodSpec]:
    return name, MethodSpec(name, fn, description, **flags)


METHODS: dict[str, MethodSpec] = dict(
    [
        _spec("random", random_method, "uniform random subset (the reference)"),
        _spec(
            "prototypicality_easy",
            _prototypicality("easy"),
            "closest to own k-means centroid (K = #classes)",
        ),
        _spec(
            "prototypicality_hard",
            _prototypicality("hard"),
            "farthest from own k-means centroid (Sorscher et al.)",
        ),
        _spec("kcenter", kcenter_method, "greedy k-center (coverage)"),
        _spec("d2", d2_method, "D2 pruning, prototypicality difficulty, kNN message passing"),
        _spec(
            "typiclust",
            typiclust_method,
            "TypiClust: k-means with K = budget, the densest member of each cell",
        ),
        _spec("zcore", zcore_method, "ZCore coverage minus redundancy on 2-D coordinate pairs"),
        _spec(
            "brain_uniqueness",
            _brain("uniqueness"),
            "FiftyOne Brain compute_uniqueness, highest kept",
        ),
        _spec(
            "brain_representativeness",
            _brain("representativeness"),
            "FiftyOne Brain compute_representativeness, highest kept",
        ),
        _spec("elfs_kmeans", _elfs("kmeans"), "ELFS: k-means pseudo-labels, AUM, double-end"),
        _spec("elfs_temi", _elfs("temi"), "ELFS: TEMI pseudo-labels, AUM, double-end"),
        _spec(
            "elfs_default",
            _elfs(CLUSTERING.default, rule=MODE.default),
            f"the package default: {CLUSTERING.default} pseudo-labels, AUM, mode="
            f"'{MODE.default}' (by pseudo-label trust: the double-end window where it is "
            "strong, typical selection where it is weak; the rule used is recorded per result)",
        ),
        _spec(
            "elfs_default_lite2",
            _elfs(CLUSTERING.default, rule=MODE.default, encoder="lite2"),
            "the package default with model='efficientnet-lite2' (the optional quality "
            "encoder, 260 px): pseudo-labels, proxy and trust on its embeddings",
        ),
        _spec(
            "elfs_default_adapted",
            _elfs(CLUSTERING.default, rule=MODE.default, encoder="adapted"),
            "the package default with adapt_steps=300: Lite0's last stages adapted to the pool "
            "by SimCLR (seed 0, whatever the run's seed), then pseudo-labels, proxy, trust and "
            "selection on its embeddings",
        ),
        _spec(
            "elfs_ccs_knnmix",
            elfs_ccs_knnmix_method,
            "CCS on the mean rank of TEMI AUM and the TEMI heads' kNN-50 agreement, the "
            "default's beta (a CNN-from-scratch candidate from validation)",
        ),
        _spec(
            "elfs_cut_kcenter",
            elfs_cut_kcenter_method,
            "the default's label-free hard-end cut on TEMI AUM, then greedy k-center on the "
            "rest (a fine-tuning candidate from validation)",
        ),
        _spec(
            "elfs_spectral_ccs",
            _elfs("spectral", ccs=True),
            "spectral pseudo-labels of the kNN graph, AUM, CCS with the label-free beta",
        ),
        _spec(
            "elfs_kmeans_ccs",
            _elfs("kmeans", ccs=True),
            "k-means pseudo-label AUM, CCS with the label-free beta",
        ),
        _spec(
            "elfs_2round",
            _two_rounds(use_labels=False),
            "ELFS k-means in two half-budget rounds (select_more), same AUM",
        ),
        _spec(
            "elfs_2round_labels",
            _two_rounds(use_labels=True),
            "ELFS k-means, round 2 on AUM retrained with round 1's returned labels",
            uses_labels=True,
        ),
        _spec(
            "elfs_2round_probe",
            _two_rounds(use_labels=True, targets_from="probe"),
            "ELFS k-means, round 2 on AUM of round-1 labels + a linear probe's labels elsewhere",
            uses_labels=True,
        ),
        _spec(
            "elfs_kmeans_cnn",
            elfs_cnn_method,
            "ELFS: k-means pseudo-labels, CNN proxy AUM on pixels, double-end",
            needs_pixels=True,
        ),
        _spec(
            "contrastive",
            _contrastive("simclr"),
            "Ju et al.: lowest SimCLR view similarity on pixels",
            needs_pixels=True,
        ),
        _spec(
            "contrastive_moco",
            _contrastive("moco"),
            "Ju et al. with MoCo: lowest query/key view similarity on pixels",
            needs_pixels=True,
        ),
        *[
            _spec(
                f"elfs_label_quality_{pct}",
                _elfs(f"mix{pct}"),
                f"diagnostic: ELFS on k-means labels with {pct}% replaced by the TRUE labels",
                uses_labels=True,
            )
            for pct in (50, 80, 100)
        ],
        *[
            _spec(
                f"elfs_label_quality_{pct}_ccs",
                _elfs(f"mix{pct}", ccs=True),
                f"diagnostic: as elfs_label_quality_{pct}, CCS instead of double-end",
                uses_labels=True,
            )
            for pct in (50, 100)
        ],
        _spec(
            "supervised_ccs",
            supervised_ccs_method,
            "CCS on true-label AUM, beta by validation accuracy",
            uses_labels=True,
        ),
        _spec(
            "elfs_oracle_beta",
            elfs_oracle_beta_method,
            "ELFS k-means, beta by TEST accuracy (oracle bound)",
            uses_labels=True,
            oracle=True,
        ),
    ]
)


def resolve_methods(names: str | None) -> list[MethodSpec]:
    """Registry entries for a comma list (None or 'all': every method), with a helpful error."""
    if not names or names.strip() == "all":
        return list(METHODS.values())
    chosen = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in chosen if n not in METHODS]
    if unknown:
        raise ValueError(f"Unknown method(s) {unknown}; choose from {', '.join(METHODS)}.")
    return [METHODS[n] for n in dict.fromkeys(chosen)]


def params_dict(params: MethodParams) -> dict:
    """MethodParams as a JSON-able dict."""
    d = asdict(params)
    d["beta_grid"] = list(params.beta_grid)
    return d
