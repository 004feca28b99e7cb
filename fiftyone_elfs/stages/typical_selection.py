"""Typical selection's FiftyOne side: the embeddings of the candidates in, a selection out.

Typical selection reads no score. Its candidates are the samples the key scored, as for the
other rules, when it has scores; an explicit ``mode="typical"`` also runs on a key that has
embeddings and nothing else, and then its candidates are the samples of the view with an
embedding (`embedded_pool`), recorded as ``scored=False``: its rounds keep to that pool, whatever
scores are computed later. `select_coreset` and `select_more`
(`fiftyone_elfs.stages.selection`) call `typical_prune` when the rule is "typical": it reads the
embeddings the pseudo-labels were computed on (the key's embeddings run's field when it has no
pseudo-labels), runs `fiftyone_elfs.selection.typical_select` and returns the result in the
shape of the other rules (`PruneResult`: no cut, so every unselected sample is "not drawn").
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fiftyone_elfs import dataset_io, runs
from fiftyone_elfs.dataset_io import SampleCollection
from fiftyone_elfs.errors import ElfsInputError
from fiftyone_elfs.stages import embeddings, record
from fiftyone_elfs.stages.candidates import (
    found_elsewhere,
    read_scores,
    scoring_stage,
    unscored_notice,
)

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
    return record.held_config(held, samples, names, scoring_stage(score)) is not None


def require_embeddings_field(
    samples: SampleCollection,
    names: runs.PipelineNames,
    field_name: str,
    param: str,
    other_rule: str = "",
) -> None:
    """Refuses a typical selection whose embeddings field is gone, with the two ways back.

    Raises:
        ElfsInputError: `field_name` is not on the dataset.
    """
    if dataset_io.has_field(samples, field_name):
        return
    raise ElfsInputError(
        f"Typical selection reads the embeddings, and the field '{field_name}' it reads for key "
        f"'{names.key}' is not on this dataset (renamed or deleted). Fix: rename the field back "
        f"to '{field_name}', or run compute_embeddings again with key '{names.key}' (or "
        f"compute_pseudo_labels with the embeddings_field you use){other_rule}.",
        param=param,
    )


def embedded_pool(
    samples: SampleCollection,
    names: runs.PipelineNames,
    held: record.HeldRuns | None = None,
    field: str | None = None,
) -> tuple[list[str], list[str]]:
    """The candidates of a typical selection on a key without scores: the samples of the view
    with an embedding in `field` (default: `embeddings_field`), and a notice if some have none.

    Raises:
        ElfsInputError: the key has neither pseudo-labels nor embeddings of its own, its
            embeddings field is gone, or no sample of the view has an embedding.
    """
    dataset_io.require_nonempty(samples)
    field_name = field or embeddings_field(samples, names, held)
    if record.held_config(held, samples, names, "pseudo_labels") is None:
        record.check_input(samples, names, "embeddings", field_name, "embeddings", held)
    require_embeddings_field(samples, names, field_name, param="key")
    ids = dataset_io.ids_with_values(samples, field_name)
    if not ids:
        raise ElfsInputError(
            f"mode='typical' selects on the embeddings, and no sample of this view has one in "
            f"'{field_name}'{found_elsewhere(samples, field_name)}. Fix: pass the samples key "
            f"'{names.key}' embedded, or run compute_embeddings with key '{names.key}' on this "
            "view.",
            param="key",
        )
    n = dataset_io.count(samples)
    notices = []
    if len(ids) < n:
        fill = (
            "run compute_embeddings again with this key on all the samples to select from"
            if field_name == embeddings.key_field(samples, names)
            else f"write their vectors into '{field_name}' (your own field, which "
            "compute_embeddings does not write)"
        )
        notices.append(
            f"{n - len(ids)} of the {n} samples have no embedding in '{field_name}', so none of "
            "them can be selected: the embeddings were computed on a view without them, or they "
            f"were added since, or their images could not be read. To include them, {fill}."
        )
    return ids, notices


def read_candidates(
    samples: SampleCollection,
    names: runs.PipelineNames,
    score: str,
    scored: bool,
    held: record.HeldRuns | None = None,
    rounds: bool = False,
    ranked: bool = True,
    field: str | None = None,
) -> tuple[list[str], np.ndarray | None, list[str]]:
    """The candidates of a selection, their `score` values and a notice on the samples left
    out: the scored samples; with `scored` False (a typical selection on a key without scores)
    the samples with an embedding in `field` (a typical coreset's, for its rounds), and no
    values. `rounds`: for `select_more`. `ranked` False: the rule (typical selection) does not
    rank by the scores, they mark the candidates."""
    if not scored:
        ids, notices = embedded_pool(samples, names, held, field)
        return ids, None, notices
    ids, values = read_scores(samples, names, score, held, ranked=ranked)
    # a pipeline's unscored samples are its unreadable images, listed already
    notices = unscored_notice(samples, len(ids), score, rounds=rounds) if held is None else []
    return ids, values, notices


def with_earlier_picks(
    samples: SampleCollection,
    names: runs.PipelineNames,
    ids: list[str],
    excluded: np.ndarray,
    earlier: set[str],
    field: str,
) -> tuple[list[str], np.ndarray]:
    """The candidates of a typical round plus the samples selected or labeled before that are
    not among them (scores recomputed on part of the pool since), as excluded rows: they cover
    their k-means cells of the embeddings in `field`, so the round leaves those cells alone."""
    pool = set(ids)
    outside = [i for i in earlier if i not in pool]
    if not outside:
        return ids, excluded
    embedded = set(dataset_io.ids_with_values(samples, field))
    extra = sorted(i for i in outside if i in embedded)
    return ids + extra, np.concatenate([excluded, np.ones(len(extra), dtype=bool)])


def typical_prune(
    samples: SampleCollection,
    names: runs.PipelineNames,
    ids: list[str],
    budget: int,
    seed: int,
    held: record.HeldRuns | None = None,
    excluded: np.ndarray | None = None,
    field: str | None = None,
    rounds: bool = False,
) -> Any:
    """Typical selection (`selection.typical_select`) on the embeddings in `field` (default:
    `embeddings_field`) of the candidates `ids`, as a `PruneResult` with no cut and no ranking
    (ranks: the candidates' order). `rounds`: for `select_more` (whose rule is the coreset's)."""
    from fiftyone_elfs.selection import PruneResult, typical_select

    field_name = field or embeddings_field(samples, names, held)
    other_rule = (
        "" if rounds else ", or choose mode='window' or mode='ccs', which need only the scores"
    )
    require_embeddings_field(samples, names, field_name, param="mode", other_rule=other_rule)
    read_ids, X = dataset_io.read_embeddings(samples, field_name, ids=ids)
    if len(read_ids) != len(ids):  # scored samples whose vectors were removed since
        raise ElfsInputError(
            f"mode='typical' selects on the embeddings, and {len(ids) - len(read_ids)} of the "
            f"{len(ids)} candidates have none in '{field_name}'. Fix: run compute_embeddings "
            f"for key '{names.key}' (or compute_pseudo_labels with the embeddings_field you "
            f"use){other_rule}.",
            param="mode",
        )
    indices = typical_select(X, budget, excluded=excluded, seed=seed)
    n = len(ids)
    free = n if excluded is None else n - int(np.count_nonzero(excluded))
    notices = []
    if budget >= free:
        where = "candidates" if free == n else "candidates not yet selected or labeled"
        notices.append(
            f"The budget ({budget}) is at least the number of {where} ({free}; candidates: "
            f"samples with an embedding and an image file): all {free} are selected."
        )
    return PruneResult(
        indices=indices, ranks=np.arange(n), start=0, stop=n, effective_beta=0.0, notices=notices
    )
