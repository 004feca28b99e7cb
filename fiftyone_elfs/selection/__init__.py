"""Coreset selection: double-end pruning, label-free beta, CCS, typical selection (TypiClust) and
the rule that chooses between them (modes); geometry-only baselines (random, prototypicality,
k-center greedy, D2 pruning, ZCore); stratified typical coverage; no FiftyOne."""

from .baselines import (
    d2_prune,
    k_center_greedy,
    prototypicality_scores,
    prototypicality_select,
    random_select,
    zcore_scores,
    zcore_select,
)
from .coverage import proportional_quota, stratified_typical_select
from .modes import SELECTION_MODES, resolve_mode
from .pruning import (
    HARD_END_SHARE,
    PruneResult,
    ccs_prune,
    ccs_select,
    double_end_prune,
    label_free_beta,
    next_round_prune,
    rank_hardest_first,
    resolve_budget,
)
from .typical import TYPICAL_GROUP_ROWS, typical_select

__all__ = [
    "HARD_END_SHARE",
    "PruneResult",
    "SELECTION_MODES",
    "TYPICAL_GROUP_ROWS",
    "ccs_prune",
    "ccs_select",
    "d2_prune",
    "double_end_prune",
    "k_center_greedy",
    "label_free_beta",
    "next_round_prune",
    "proportional_quota",
    "prototypicality_scores",
    "prototypicality_select",
    "random_select",
    "rank_hardest_first",
    "resolve_budget",
    "resolve_mode",
    "stratified_typical_select",
    "typical_select",
    "zcore_scores",
    "zcore_select",
]
