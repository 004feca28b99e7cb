"""Coreset selection from difficulty: double-end pruning, label-free beta, CCS; no FiftyOne."""

from .pruning import (
    PruneResult,
    ccs_select,
    double_end_prune,
    label_free_beta,
    rank_hardest_first,
    resolve_budget,
)

__all__ = [
    "PruneResult",
    "ccs_select",
    "double_end_prune",
    "label_free_beta",
    "rank_hardest_first",
    "resolve_budget",
]
