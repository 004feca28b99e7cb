"""Values of a key's fields that its runs did not write: scores and pseudo-labels merged in
from a dataset that ran the same key (FiftyOne's ``merge_samples`` overwrites the values of the
samples both hold, matched by filepath, and adds its own), or set since. A run records
fingerprints of the values a later stage reads (`record.Outputs.checked`,
`fiftyone_elfs.value_fingerprints`); the readers refuse values that do not match them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fiftyone_elfs import dataset_io, runs, value_fingerprints
from fiftyone_elfs.dataset_io import SampleCollection
from fiftyone_elfs.errors import ElfsInputError
from fiftyone_elfs.stages import record


def not_written_by(
    samples: SampleCollection,
    names: runs.PipelineNames,
    stage: str,
    field_name: str,
    ids: Sequence[str],
    values: Sequence[Any],
) -> list[str] | None:
    """The ids whose value of `field_name` is not one the key's `stage` run wrote (merged in
    from another dataset, set since); None when the run recorded no fingerprints of the field
    (recorded before they were, or not a checked field)."""
    results = runs.stage_results(dataset_io.dataset_of(samples), names, stage)
    packed = (getattr(results, record.WRITTEN_VALUES, None) or {}).get(field_name)
    if packed is None:
        return None
    foreign = value_fingerprints.not_written(ids, values, packed)
    return [i for i, f in zip(ids, foreign, strict=True) if f]


def refuse_scores_from_elsewhere(
    samples: SampleCollection,
    names: runs.PipelineNames,
    scoring: str,
    field: str,
    stage: str,
    ids: list[str],
    values: list[Any],
) -> None:
    """Refuses scores the key's run did not write: merged in (``merge_samples`` /
    ``add_collection`` of a dataset that ran the same key, which also overwrites the scores of
    the samples both hold) or set since. They come from another proxy over other pseudo-labels,
    and ranking them together means nothing. Runs recorded before they kept fingerprints of
    their values (`not_written_by`) are checked by count: more samples of the dataset
    carry scores than the run scored."""
    fix = (
        f"Fix: run {stage}{'' if scoring == 'contrastive' else ' (or run_pipeline)'} again with "
        f"key '{names.key}' on this dataset, or use another key."
    )
    foreign = not_written_by(samples, names, scoring, field, ids, values)
    if foreign:
        raise ElfsInputError(
            f"{len(foreign)} of the {len(ids)} samples' '{field}' values are not those the "
            f"{scoring} run of key '{names.key}' wrote (e.g. sample {foreign[0]}): they came "
            "from elsewhere (merged in from a dataset that ran the same key?) or were set "
            f"since, from another training on other pseudo-labels. {fix}"
        )
    if foreign is not None:
        return
    dataset = dataset_io.dataset_of(samples)
    recorded = getattr(runs.stage_results(dataset, names, scoring), "n_samples", None)
    if recorded is None:
        return
    n = dataset_io.count(dataset_io.every_slice(dataset).exists(field))
    if n > recorded:
        raise ElfsInputError(
            f"{n} samples of the dataset carry '{field}' values, and the {scoring} run of key "
            f"'{names.key}' scored {recorded}: the others came from elsewhere (merged in from a "
            f"dataset that ran the same key?), from another training on other pseudo-labels. {fix}"
        )


def refuse_labels_from_elsewhere(
    samples: SampleCollection, names: runs.PipelineNames, ids: list[str], labels: list[str]
) -> None:
    """Refuses pseudo-labels the key's pseudo-labels run did not write (merged in from a
    dataset that ran the same key, set since): its "cluster_0" is not theirs, and a proxy
    would learn two clusterings as one (`not_written_by`)."""
    field_name = names.pseudo_label_field
    foreign = not_written_by(samples, names, "pseudo_labels", field_name, ids, labels)
    if foreign:
        raise ElfsInputError(
            f"{len(foreign)} of the {len(ids)} samples' pseudo-labels in '{field_name}' are not "
            f"those the pseudo-labels run of key '{names.key}' wrote (e.g. sample "
            f"{foreign[0]}): they came from elsewhere (merged in from a dataset that ran the "
            "same key?) or were set since, and a proxy would learn two clusterings' "
            f"'cluster_0' as one class. Fix: run compute_pseudo_labels again with key "
            f"'{names.key}' on this dataset, then compute_difficulty (or run_pipeline), or use "
            "another key."
        )
