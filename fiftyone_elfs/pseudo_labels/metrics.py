"""Cluster-quality metrics for reporting only: they read ground truth, so never feed them back."""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

__all__ = ["cluster_accuracy"]


def cluster_accuracy(true: np.ndarray, pred: np.ndarray) -> float:
    """Fraction of samples whose cluster maps to their class under the best one-to-one matching.

    Builds the (clusters x classes) contingency table and solves the assignment with the
    Hungarian method (scipy ``linear_sum_assignment``); unmatched clusters count as wrong.
    Labels may be any hashable integers or strings.
    """
    true = np.asarray(true).ravel()
    pred = np.asarray(pred).ravel()
    if true.shape != pred.shape:
        raise ValueError(
            f"true and pred must have the same length; got {true.size} and {pred.size}."
        )
    if true.size == 0:
        raise ValueError("true and pred are empty; accuracy is undefined.")
    _, t = np.unique(true, return_inverse=True)
    _, p = np.unique(pred, return_inverse=True)
    table = np.zeros((p.max() + 1, t.max() + 1), dtype=np.int64)
    np.add.at(table, (p, t), 1)
    rows, cols = linear_sum_assignment(table, maximize=True)
    return float(table[rows, cols].sum() / true.size)
