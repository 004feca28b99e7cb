"""Typical selection's FiftyOne side: the embeddings of the scored samples in, a selection out.

`select_coreset` and `select_more` (`fiftyone_elfs.stages.selection`) call `typical_prune` when
the rule is "typical": it reads the embeddings the pseudo-labels were computed on, checks every
scored sample has one, runs `fiftyone_elfs.selection.typical_select` and returns the result in
the shape of the other rules (`PruneResult`: no cut, so every unselected sample is "not drawn").
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fiftyone_elfs import dataset_io, runs
from fiftyone_elfs.dataset_io import SampleCollection
from fiftyone_elfs.errors import ElfsInputError
from fiftyone_elfs.stages import record

#: The beta reason of a typical selection.
NO_CUT_REASON = "no cut: typical selection works on the embeddings, not the difficulty ranking"


def typical_prune(
    samples: SampleCollection,
    names: runs.PipelineNames,
    ids: list[str],
    values: np.ndarray,
    budget: int,
    hard_is_low: bool,
    seed: int,
    held: record.HeldRuns | None = None,
    excluded: np.ndarray | None = None,
) -> Any:
    """Typical selection (`selection.typical_select`) on the embeddings of the scored samples
    `ids`, as a `PruneResult` with no cut (ranks: the score's, for the record only)."""
    from fiftyone_elfs.selection import PruneResult, rank_hardest_first, typical_select

    config = record.held_config(held, samples, names, "pseudo_labels")
    field_name = getattr(config, "embeddings_field", None) or names.embeddings_field
    fix = (
        f"Fix: run compute_embeddings for key '{names.key}' (or compute_pseudo_labels with "
        "the embeddings_field you use), or choose mode='window' or mode='ccs', which need "
        "only the scores."
    )
    if not dataset_io.has_field(samples, field_name):
        raise ElfsInputError(
            f"mode='typical' selects on the embeddings, and the field '{field_name}' does not "
            f"exist. {fix}",
            param="mode",
        )
    read_ids, X = dataset_io.read_embeddings(samples, field_name, ids=ids)
    if len(read_ids) != len(ids):
        raise ElfsInputError(
            f"mode='typical' selects on the embeddings, and {len(ids) - len(read_ids)} of the "
            f"{len(ids)} scored samples have none in '{field_name}'. {fix}",
            param="mode",
        )
    indices = typical_select(X, budget, excluded=excluded, seed=seed)
    n = len(ids)
    free = n if excluded is None else n - int(np.count_nonzero(excluded))
    notices = []
    if budget >= free:
        where = "scored samples" if free == n else "samples not yet selected or labeled"
        notices.append(
            f"The budget ({budget}) is at least the number of {where} ({free}): all {free} "
            "are selected."
        )
    ranks = np.empty(n, dtype=np.int64)
    ranks[rank_hardest_first(values, hard_is_low=hard_is_low)] = np.arange(n)
    return PruneResult(
        indices=indices, ranks=ranks, start=0, stop=n, effective_beta=0.0, notices=notices
    )
