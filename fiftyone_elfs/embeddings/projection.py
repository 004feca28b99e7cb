"""Linear projection of embeddings before a 2-D layout (UMAP scales with the input dimension)."""

from __future__ import annotations

import numpy as np
from sklearn.decomposition import PCA


def pca_reduce(X: np.ndarray, n_components: int, seed: int = 0) -> np.ndarray:
    """Projects [N, d] embeddings onto their top `n_components` principal axes (float32).

    Returns X unchanged when it already has at most `n_components` dimensions or fewer samples
    than that. Randomized SVD keeps time and memory O(N * d).
    """
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2:
        raise ValueError(f"expected a 2-D array [N, d], got shape {X.shape}")
    if n_components < 1:
        raise ValueError(f"n_components must be >= 1, got {n_components}")
    if X.shape[1] <= n_components or X.shape[0] <= n_components:
        return X
    pca = PCA(n_components=n_components, svd_solver="randomized", random_state=seed)
    return pca.fit_transform(X).astype(np.float32)
