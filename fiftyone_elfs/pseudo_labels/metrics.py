"""Cluster-quality metrics for reporting only: they read ground truth, so never feed them back."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

__all__ = ["cluster_accuracy", "hungarian_match"]


def _assignment(
    true: np.ndarray, pred: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Contingency table (clusters x classes) and its best one-to-one matching."""
    true = np.asarray(true).ravel()
    pred = np.asarray(pred).ravel()
    if true.shape != pred.shape:
        raise ValueError(
            f"true and pred must have the same length; got {true.size} and {pred.size}."
        )
    if true.size == 0:
        raise ValueError("true and pred are empty; accuracy is undefined.")
    classes, t = np.unique(true, return_inverse=True)
    clusters, p = np.unique(pred, return_inverse=True)
    table = np.zeros((clusters.size, classes.size), dtype=np.int64)
    np.add.at(table, (p, t), 1)
    rows, cols = linear_sum_assignment(table, maximize=True)
    return clusters, classes, table, rows, cols


def cluster_accuracy(true: np.ndarray, pred: np.ndarray) -> float:
    """Fraction of samples whose cluster maps to their class under the best one-to-one matching.

    Builds the (clusters x classes) contingency table and solves the assignment with the
    Hungarian method (scipy ``linear_sum_assignment``); unmatched clusters count as wrong.
    Labels may be any hashable integers or strings.
    """
    _, _, table, rows, cols = _assignment(true, pred)
    return float(table[rows, cols].sum() / table.sum())


def hungarian_match(true: np.ndarray, pred: np.ndarray) -> dict[Any, Any]:
    """The cluster -> class mapping behind `cluster_accuracy` (clusters left unmatched, when
    there are more clusters than classes, are absent)."""
    clusters, classes, _, rows, cols = _assignment(true, pred)
    return {clusters[r].item(): classes[c].item() for r, c in zip(rows, cols, strict=True)}
