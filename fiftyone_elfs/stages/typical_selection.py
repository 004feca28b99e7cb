"""Typical selection's FiftyOne side: the embeddings of the candidates in, a selection out.

`select_coreset` and `select_more` (`fiftyone_elfs.stages.selection`) call `typical_prune` when
the rule is "typical": it reads the embeddings the pseudo-labels were computed on (the key's
embeddings run's field when it has no pseudo-labels), checks every candidate has one, runs
`fiftyone_elfs.selection.typical_select` and returns the result in the shape of the other rules
(`PruneResult`: no cut, so every unselected sample is "not drawn").

Typical selection uses no score, so an explicit ``mode="typical"`` also runs on a key that has
embeddings and nothing else: `embedded_pool` gives its candidates, the samples with an embedding.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fiftyone_elfs import dataset_io, runs
from fiftyone_elfs.dataset_io import SampleCollection
from fiftyone_elfs.errors import ElfsInputError
from fiftyone_elfs.stages import embeddings, record

#: The beta reason of a typical selection.
NO_CUT_REASON = "no cut: typical selection works on the embeddings, not the difficulty ranking"


def embeddings_field(
    samples: SampleCollection, names: runs.PipelineNames, held: record.HeldRuns | None = None
) -> str:
    """The field typical selection reads: the one the key's pseudo-labels were computed on, else
    the one its embeddings run wrote."""
    config = record.held_config(held, samples, names, "pseudo_labels")
    return getattr(config, "embeddings_field", None) or embeddings.key_field(samples, names)


def has_scores(
    samples: SampleCollection, names: runs.PipelineNames, score: str, held: record.HeldRuns | None
) -> bool:
    """Whether the key has run the stage that computes `score` (it may be held by a pipeline)."""
    stage = "contrastive" if score == "contrastive" else "difficulty"
    return record.held_config(held, samples, names, stage) is not None


def embedded_pool(
    samples: SampleCollection, names: runs.PipelineNames, held: record.HeldRuns | None = None
) -> tuple[list[str], list[str]]:
    """The candidates of a typical selection on a key without scores: the samples of the view
    with an embedding in `embeddings_field`, and a notice if some have none.

    Raises:
        ElfsInputError: the key has neither pseudo-labels nor embeddings of its own, or no
            sample of the view has an embedding.
    """
    dataset_io.require_nonempty(samples)
    field_name = embeddings_field(samples, names, held)
    if record.held_config(held, samples, names, "pseudo_labels") is None:
        record.check_input(samples, names, "embeddings", field_name, "embeddings", held)
    ids = dataset_io.ids_with_values(samples, field_name)
    n = dataset_io.count(samples)
    if not ids:
        raise ElfsInputError(
            f"mode='typical' selects on the embeddings, and no sample of this view has one in "
            f"'{field_name}'. Fix: pass the samples key '{names.key}' embedded, or run "
            f"compute_embeddings with key '{names.key}' on this view.",
            param="key",
        )
    notices = []
    if len(ids) < n:
        notices.append(
            f"{n - len(ids)} of the {n} samples have no embedding in '{field_name}', so none of "
            "them can be selected: their images could not be read, or they were added since. "
            "To include them, run compute_embeddings again with this key on all the samples "
            "to select from."
        )
    return ids, notices


def typical_prune(
    samples: SampleCollection,
    names: runs.PipelineNames,
    ids: list[str],
    values: np.ndarray | None,
    budget: int,
    hard_is_low: bool,
    seed: int,
    held: record.HeldRuns | None = None,
    excluded: np.ndarray | None = None,
) -> Any:
    """Typical selection (`selection.typical_select`) on the embeddings of the candidates
    `ids`, as a `PruneResult` with no cut (ranks: the score's `values`, for the record only;
    the candidates' order where there are none)."""
    from fiftyone_elfs.selection import PruneResult, rank_hardest_first, typical_select

    field_name = embeddings_field(samples, names, held)
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
        pool = "scored samples" if values is not None else "samples with an embedding"
        where = pool if free == n else "samples not yet selected or labeled"
        notices.append(
            f"The budget ({budget}) is at least the number of {where} ({free}): all {free} "
            "are selected."
        )
    ranks = np.arange(n)
    if values is not None:
        ranks[rank_hardest_first(values, hard_is_low=hard_is_low)] = np.arange(n)
    return PruneResult(
        indices=indices, ranks=ranks, start=0, stop=n, effective_beta=0.0, notices=notices
    )
