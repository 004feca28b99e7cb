"""Pseudo-labels corrected by the true labels that annotators returned (for the next round).

Arrays in, lists out; no FiftyOne import.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence

import numpy as np

from .neighbors import l2_normalize

__all__ = ["majority_class_map", "merge_true_labels", "probe_true_labels"]


def majority_class_map(pseudo: Sequence[str], true: Sequence[str | None]) -> dict[str, str]:
    """Map each cluster to the most frequent true class among its labeled members.

    Clusters without a labeled member are left out; ties go to the alphabetically first class so
    the map is reproducible. Used to pre-annotate with a class name instead of a cluster id, and
    to merge clusters that annotators showed to be one class.
    """
    if len(pseudo) != len(true):
        raise ValueError(f"got {len(pseudo)} pseudo-labels but {len(true)} true labels")
    counts: dict[str, Counter] = defaultdict(Counter)
    for cluster, label in zip(pseudo, true, strict=True):
        if label is not None:
            counts[cluster][label] += 1
    return {
        cluster: min(c.items(), key=lambda kv: (-kv[1], kv[0]))[0] for cluster, c in counts.items()
    }


def merge_true_labels(pseudo: Sequence[str], true: Sequence[str | None]) -> list[str]:
    """Proxy targets: true labels where they exist, majority-corrected pseudo-labels elsewhere.

    A labeled sample gets its true class; an unlabeled one gets the majority class of its
    cluster's labeled members (``majority_class_map``), or keeps its cluster id when nobody in
    its cluster was labeled. So the proxy learns the annotators' classes, and AUM measures
    difficulty against them instead of against the clustering's mistakes.
    """
    mapping = majority_class_map(pseudo, true)
    classes = {label for label in true if label is not None}
    merged = []
    for cluster, label in zip(pseudo, true, strict=True):
        if label is not None:
            merged.append(label)
        elif cluster in mapping:
            merged.append(mapping[cluster])
        else:  # an unmapped cluster id must not collide with a class name
            merged.append(cluster if cluster not in classes else f"pseudo:{cluster}")
    return merged


def probe_true_labels(
    X: np.ndarray, true: Sequence[str | None], C: float = 10.0, seed: int = 0
) -> list[str]:
    """Proxy targets: true labels where they exist, a linear probe's predictions elsewhere.

    A multinomial logistic regression on the (L2-normalised) embeddings of the labeled samples
    labels the rest: with a few hundred answers it usually beats the clusters as targets, since
    it learns the annotators' classes directly. Needs at least two labeled classes.
    """
    from sklearn.linear_model import LogisticRegression

    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2 or X.shape[0] != len(true):
        raise ValueError(f"X must be [n, d] with one row per label; got {X.shape} for {len(true)}")
    known = np.array([t is not None for t in true])
    labels = np.array([t for t in true if t is not None])
    if len(set(labels)) < 2:
        raise ValueError("The probe needs labeled samples of at least two classes.")
    Xn = l2_normalize(X)
    probe = LogisticRegression(C=C, max_iter=1000, random_state=seed).fit(Xn[known], labels)
    merged = np.empty(len(true), dtype=object)
    merged[known] = labels
    if (~known).any():
        merged[~known] = probe.predict(Xn[~known])
    return [str(m) for m in merged]
