"""Spherical k-means pseudo-labels: the fast baseline to TEMI clustering."""

from __future__ import annotations

import faiss
import numpy as np

from .neighbors import check_features, l2_normalize

__all__ = ["kmeans_pseudo_labels", "check_n_clusters", "DEFAULT_KMEANS_TEMPERATURE"]

# Softmax temperature over cosine similarities to the centroids. Cosines live in [-1, 1]; a
# nearest-vs-second-nearest gap of 0.1 gives confidence ~0.73 between two clusters at 0.1.
# Same value as TEMI's temperature, so the two confidences are on a comparable scale.
DEFAULT_KMEANS_TEMPERATURE = 0.1


def check_n_clusters(n_clusters: int, n_samples: int) -> int:
    """Return n_clusters as int, or raise a ValueError explaining the valid range."""
    if isinstance(n_clusters, bool) or not isinstance(n_clusters, (int, np.integer)):
        raise ValueError(f"n_clusters must be an integer; got {n_clusters!r}.")
    n_clusters = int(n_clusters)
    if n_clusters < 2:
        raise ValueError(
            f"n_clusters must be >= 2 (got {n_clusters}): one cluster carries no information. "
            "Use the expected number of classes, e.g. 10 for CIFAR-10."
        )
    if n_clusters > n_samples:
        raise ValueError(
            f"n_clusters={n_clusters} exceeds the number of samples ({n_samples}); "
            f"use n_clusters <= {n_samples} or pass more samples."
        )
    return n_clusters


def kmeans_pseudo_labels(
    X: np.ndarray,
    n_clusters: int,
    seed: int = 0,
    n_iter: int = 50,
    *,
    temperature: float = DEFAULT_KMEANS_TEMPERATURE,
    n_init: int = 5,
) -> tuple[np.ndarray, np.ndarray]:
    """Cluster L2-normalised features with spherical faiss k-means; return labels and confidences.

    Returns ``(labels, confidence)``: int64 cluster ids in [0, n_clusters) and, per sample, the
    softmax over cosine similarities to all centroids divided by ``temperature`` taken at the
    assigned centroid (a value in [1/n_clusters, 1]). Every sample is used for training (no
    faiss subsampling); the best of ``n_init`` random initialisations (highest total cosine to
    the centroids) is kept, which avoids the merged-and-split-cluster local optima of a single
    run. Deterministic for a fixed seed.
    """
    X = check_features(X)
    n, d = X.shape
    n_clusters = check_n_clusters(n_clusters, n)
    if int(n_iter) < 1:
        raise ValueError(f"n_iter must be >= 1; got {n_iter}.")
    if int(n_init) < 1:
        raise ValueError(f"n_init must be >= 1; got {n_init}.")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0; got {temperature}.")
    Xn = l2_normalize(X)
    km = faiss.Kmeans(
        d,
        n_clusters,
        niter=int(n_iter),
        nredo=int(n_init),
        seed=int(seed),
        spherical=True,
        verbose=False,
        max_points_per_centroid=max(n, 1),  # train on every sample
        min_points_per_centroid=1,  # small inputs are allowed; no warning spam
    )
    km.train(Xn)
    centroids = l2_normalize(km.centroids)
    labels = np.empty(n, dtype=np.int64)
    confidence = np.empty(n, dtype=np.float32)
    for start in range(0, n, 16384):
        sims = Xn[start : start + 16384] @ centroids.T
        lab = sims.argmax(axis=1)
        logits = (sims - sims.max(axis=1, keepdims=True)) / temperature
        probs = np.exp(logits)
        probs /= probs.sum(axis=1, keepdims=True)
        labels[start : start + 16384] = lab
        confidence[start : start + 16384] = probs[np.arange(lab.size), lab]
    return labels, np.clip(confidence, 0.0, 1.0)
