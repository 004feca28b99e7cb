"""Synthetic embeddings shaped like real ones, for the scale benchmark: Gaussian clusters.

``gaussian_cluster_embeddings(n, dim=512, n_clusters=1000, seed=0)`` returns float32 [n, dim]
rows and their int64 cluster ids. Cluster centres are N(0, I) in ``dim`` dimensions, samples
are centre + N(0, ``noise``^2 I), and every row is shifted by one shared non-negative offset
vector (|N(0, 1)| per coordinate) so that, as with pooled CNN features, the mean direction
dominates raw cosines and centring matters. Cluster sizes are uneven (a Dirichlet(2) draw).
Rows are generated in chunks with per-chunk seeds, so a file of any size is written in bounded
memory and the first rows do not depend on n.
"""

from __future__ import annotations

import numpy as np

DEFAULT_NOISE = 1.5  # with N(0, 1) centres in 512-d: 10-NN cluster agreement ~1.0, k-means ARI < 1
_CHUNK = 65_536


def _model(dim: int, n_clusters: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centres [K, dim], shared offset [dim] and cluster probabilities [K] for a seed."""
    rng = np.random.default_rng([seed, 0])
    centres = rng.normal(size=(n_clusters, dim)).astype(np.float32)
    offset = np.abs(rng.normal(size=dim)).astype(np.float32)
    probs = rng.dirichlet(np.full(n_clusters, 2.0))
    return centres, offset, probs


def write_chunks(
    out: np.ndarray,
    labels: np.ndarray,
    n_clusters: int = 1000,
    seed: int = 0,
    noise: float = DEFAULT_NOISE,
) -> None:
    """Fill ``out`` [n, dim] (an array or a memmap) and ``labels`` [n] chunk by chunk."""
    n, dim = out.shape
    centres, offset, probs = _model(dim, n_clusters, seed)
    for i, start in enumerate(range(0, n, _CHUNK)):
        stop = min(start + _CHUNK, n)
        rng = np.random.default_rng([seed, 1, i])
        lab = rng.choice(n_clusters, size=stop - start, p=probs)
        block = rng.standard_normal((stop - start, dim), dtype=np.float32)
        block *= np.float32(noise)
        block += centres[lab]
        block += offset
        out[start:stop] = block
        labels[start:stop] = lab


def gaussian_cluster_embeddings(
    n: int, dim: int = 512, n_clusters: int = 1000, seed: int = 0, noise: float = DEFAULT_NOISE
) -> tuple[np.ndarray, np.ndarray]:
    """In-memory ``[n, dim]`` float32 embeddings and int64 cluster ids (see the module doc)."""
    X = np.empty((n, dim), dtype=np.float32)
    y = np.empty(n, dtype=np.int64)
    write_chunks(X, y, n_clusters=n_clusters, seed=seed, noise=noise)
    return X, y
