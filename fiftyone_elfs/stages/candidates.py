"""The candidates of a selection: the samples of a view that the key's run scored, with their
scores, less those whose image file is gone.

Refused: scores on more samples than the key's run scored (merged in from a dataset that ran
the same key). Left out with a notice: samples without a score (added since the scores were
computed) and samples whose image was deleted after it was embedded. Noted: the other slices
of a grouped dataset (the active slice is the pool) and, after a draw, selected samples that
share an image file.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence

import numpy as np

from fiftyone_elfs import dataset_io, runs
from fiftyone_elfs.dataset_io import SampleCollection
from fiftyone_elfs.errors import ElfsInputError
from fiftyone_elfs.stages import difficulty, foreign_values, record


def other_slices_notice(samples: SampleCollection) -> list[str]:
    """A notice when `samples` is a grouped dataset (or view of one) whose active slice alone
    was the pool, as FiftyOne's grouped collections are: the images of its other slices were
    no candidates, which a pool size alone does not say."""
    if samples.media_type != "group":
        return []
    others = sorted(s for s in samples.group_media_types if s != samples.group_slice)
    if not others:
        return []
    return [
        f"This grouped dataset's pool is its active slice '{samples.group_slice}'; the samples "
        f"of its slices {others} were no candidates. To select among several slices, pass "
        "dataset.select_group_slices([...]) (their image slices)."
    ]


def without_missing_media(
    samples: SampleCollection, ids: list[str], values: np.ndarray | None
) -> tuple[list[str], np.ndarray | None, list[str]]:
    """The candidates (the scored samples; with `values` None, the embedded ones) whose image
    file still exists (local paths; a URL is kept), with a notice naming how many were left out:
    images deleted since they were embedded would be selected again on every run and then
    refused by the export. When no file at all is reachable from this process (media on
    another machine, embeddings brought in with `embeddings_field`), none is left out: the
    notice says so."""
    _, paths = dataset_io.read_values(samples, "filepath", ids)
    gone = [i for i, path in enumerate(paths) if "://" not in path and not os.path.exists(path)]
    if not gone:
        return ids, values, []
    example = paths[gone[0]]
    if len(gone) == len(ids):
        return (
            ids,
            values,
            [
                f"None of the {len(ids)} candidate samples' image files is reachable from here "
                f"(e.g. {example}), so the selection is made among all of them; exporting the "
                "coreset needs the files."
            ],
        )
    keep = np.ones(len(ids), dtype=bool)
    keep[gone] = False
    notice = (
        f"{len(gone)} of the {len(ids)} candidate samples have no image file any more (e.g. "
        f"{example}), so none of them was selected. Restore the files to include them, or "
        "delete those samples from the dataset."
    )
    kept_values = None if values is None else values[keep]
    return [i for i, k in zip(ids, keep, strict=True) if k], kept_values, [notice]


def scoring_stage(score: str) -> str:
    """The stage that computes a selection score: "contrastive", or the proxy's "difficulty"."""
    return "contrastive" if score == "contrastive" else "difficulty"


def read_scores(
    samples: SampleCollection,
    names: runs.PipelineNames,
    score: str,
    held: record.HeldRuns | None = None,
    ranked: bool = True,
) -> tuple[list[str], np.ndarray]:
    """The ids and `score` values of the scored samples of a view (those of the held run if
    `held` holds the scoring stage), or a clear error. `ranked` False: the caller uses the
    scores only to know which samples were scored (typical selection), as a refusal of stale
    scores says."""
    dataset_io.require_nonempty(samples)
    score_field = names.score_field(score)
    scoring = scoring_stage(score)
    stage = "compute_contrastive_scores" if score == "contrastive" else "compute_difficulty"
    record.check_input(samples, names, scoring, score_field, f"'{score}' scores", held)
    difficulty.require_current_scores(samples, names, score, held, ranked=ranked)
    held_run = record.held_run(held, scoring)
    if held_run is not None:
        ids, values = held_run.outputs.values[score_field]
        ids, values = list(ids), list(values)
    else:
        if not dataset_io.has_field(samples, score_field):
            raise ElfsInputError(
                f"The field '{score_field}' that key '{names.key}' wrote its '{score}' scores "
                f"to is not on this dataset (renamed or deleted). Fix: run {stage} again with "
                f"key '{names.key}'."
            )
        ids, values = dataset_io.read_values(samples, score_field)
        foreign_values.refuse_scores_from_elsewhere(
            samples, names, scoring, score_field, stage, ids, values
        )
    if not ids:
        raise ElfsInputError(
            f"No sample of this view has a '{score}' score{found_elsewhere(samples, score_field)}"
            f". Fix: pass the samples the key scored, or run {stage} on this view."
        )
    return ids, np.asarray(values, dtype=float)


def found_elsewhere(samples: SampleCollection, field: str) -> str:
    """Where the dataset's values of `field` (scores, embeddings) are when a view has none: the
    count, and the group slices of a grouped dataset (whose active slice a view of the dataset
    reaches by default); "" when the dataset has none either."""
    dataset = dataset_io.dataset_of(samples)
    scored = dataset_io.every_slice(dataset).exists(field)
    n = dataset_io.count(scored)
    if not n:
        return ""
    if dataset.group_field is None:
        return f" ({n} samples of the dataset outside it have one)"
    slices = sorted(scored.distinct(f"{dataset.group_field}.name"))
    which = slices[0] if len(slices) == 1 else slices
    return (
        f" ({n} samples of the group slice(s) {slices} have one: pass "
        f"dataset.select_group_slices({which!r}))"
    )


def unscored_notice(
    samples: SampleCollection, n_scored: int, score: str, rounds: bool = False
) -> list[str]:
    """A notice when samples of the collection have no score, so are not candidates: samples
    added since the scores were computed (or whose images could not be read). With `rounds`
    (the key has labeling rounds, which run_pipeline refuses to redo) the stages are named."""
    n = dataset_io.count(samples)
    if n_scored >= n:
        return []
    if score == "contrastive":  # the pipeline does not compute these
        fix = "compute_contrastive_scores"
    else:
        stages = "compute_embeddings, compute_pseudo_labels and compute_difficulty"
        fix = stages if rounds else f"the pipeline (or {stages})"
    return [
        f"{n - n_scored} of the {n} samples have no '{score}' score, so none of them can be "
        "selected: the scores were computed on a view without them, or they were added since, "
        f"or their images could not be read. To include them, run {fix} again with this key "
        "on all the samples to select from."
    ]


def shared_files_notice(
    samples: SampleCollection, selected: list[str], earlier: Sequence[str] = ()
) -> list[str]:
    """A notice when selected samples share an image file with each other or with `earlier`
    selections (a folder imported twice, a merge): the copies' scores are alike, so a window
    keeps them together, and the same image would be labelled more than once. Reads the paths
    of those samples only."""
    _, paths = dataset_io.read_values(samples, "filepath", selected)
    repeated = {path: n for path, n in Counter(paths).items() if n > 1}
    before: list[str] = []
    if earlier:  # earlier rounds and labelled samples may lie outside this view
        everywhere = dataset_io.every_slice(dataset_io.dataset_of(samples))
        _, before = dataset_io.read_values(everywhere, "filepath", earlier)
    again = set(paths) & set(before)
    out = []
    if repeated:
        n_extra = sum(repeated.values()) - len(repeated)
        out.append(
            f"{n_extra} of the {len(selected)} selected samples repeat the image file of "
            f"another selected sample (e.g. {next(iter(repeated))}), so the same image would be "
            f"labelled more than once. {_DUPLICATES_FIX}"
        )
    if again:
        n_again = sum(path in again for path in paths)
        out.append(
            f"{n_again} of the {len(selected)} selected samples have the image file of a sample "
            f"selected or labelled before (e.g. {min(again)}), so that image would be labelled "
            f"again. {_DUPLICATES_FIX}"
        )
    return out


_DUPLICATES_FIX = (
    "Fix: delete the repeated samples (fiftyone.brain's compute_exact_duplicates finds them, "
    "copies under other names too), then select again."
)
