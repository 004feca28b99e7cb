"""What a send to Label Studio is checked against before the dataset changes, and the names an
annotation run uses: its run key, its pre-annotation field, the keys already sent.

Checks refuse, with the fix, an annotation key in use, an answers field ELFS writes itself (a
stage's output, a run's pre-annotation field: the answers would be replaced, deleted, or read as
the stage's results), an answers field holding labels (unless overwrite), and a pre-annotation
field without labels.
"""

from __future__ import annotations

import logging
from typing import Any

import fiftyone as fo
import fiftyone.core.collections as foc

from fiftyone_elfs import dataset_io, runs
from fiftyone_elfs.errors import ElfsInputError

logger = logging.getLogger(__name__)

__all__ = [
    "RUN_METHOD",
    "annotation_run_key",
    "check_anno_key",
    "check_label_field",
    "check_map_to_classes",
    "list_annotation_runs",
    "prelabel_field_for",
    "prelabels_for",
    "preflight",
]

RUN_METHOD = "fiftyone_elfs_annotation"  # not "fiftyone_elfs.<stage>": not a pipeline stage


def annotation_run_key(anno_key: str) -> str:
    """The FiftyOne run that records what ELFS sent under `anno_key` and what came back."""
    return f"elfs_annotation_{anno_key}"


def prelabel_field_for(anno_key: str) -> str:
    """The field holding the pre-annotations sent with `anno_key` (Label Studio predictions)."""
    return f"{anno_key}_prelabel"


def check_anno_key(samples: foc.SampleCollection, anno_key: str) -> None:
    """Refuses an annotation key already used on the dataset, or whose fields are taken."""
    dataset = dataset_io.dataset_of(samples)
    if annotation_run_key(anno_key) in dataset.list_runs():
        raise ElfsInputError(
            f"The annotation key '{anno_key}' is already used by a Label Studio run sent from "
            f"this dataset. Fix: choose another key (e.g. '{anno_key}_2'), or remove the old run "
            f"with elfs.delete_label_studio_run(dataset, '{anno_key}') (loaded labels stay; "
            "delete_project=True also deletes its Label Studio project).",
            param="anno_key",
        )
    if anno_key in dataset.list_annotation_runs():
        raise ElfsInputError(
            f"The annotation key '{anno_key}' is already used by a FiftyOne annotation run of "
            f"this dataset. Fix: choose another key (e.g. '{anno_key}_2'), or remove that run "
            f"with dataset.delete_annotation_run('{anno_key}').",
            param="anno_key",
        )
    taken = prelabel_field_for(anno_key)
    if dataset_io.has_field(dataset, taken):
        raise ElfsInputError(
            f"The field '{taken}' already exists and annotation key '{anno_key}' would use "
            "it. Fix: choose another annotation key.",
            param="anno_key",
        )


def preflight(samples: foc.SampleCollection, values: dict[str, Any]) -> None:
    """The cheap check an App form repeats as the user types: a new annotation key."""
    if values.get("anno_key"):
        check_anno_key(samples, values["anno_key"])


def check_label_field(
    samples: foc.SampleCollection, label_field: str, overwrite: bool, anno_key: str
) -> None:
    """The answers' field: a name of the user's, not one ELFS writes, and, unless `overwrite`,
    holding no label on these samples yet."""
    if not label_field.isidentifier():
        raise ElfsInputError(
            f"Invalid label field name {label_field!r}; use e.g. 'ground_truth'.",
            param="label_field",
        )
    dataset = dataset_io.dataset_of(samples)
    keys = [anno_key, *list_annotation_runs(dataset)]
    uploads = {prelabel_field_for(k): k for k in keys}
    owner = runs.owner_of(dataset, "owned_fields", label_field)
    if label_field in uploads or owner is not None:
        what = (
            f"the pre-annotation field of annotation key '{uploads[label_field]}'"
            if label_field in uploads
            else f"written by the {owner[1]} stage of ELFS key '{owner[0]}'"
        )
        raise ElfsInputError(
            f"The label field '{label_field}' is {what}: ELFS replaces or deletes it, and the "
            "answers would be lost or read as its results. Fix: choose a field of your own for "
            "the answers, e.g. label_field='ground_truth'.",
            param="label_field",
        )
    existing = samples.get_field(label_field)
    if existing is None:
        return
    if not dataset_io.is_classification_field(existing):
        raise ElfsInputError(
            f"The field '{label_field}' exists and does not hold fo.Classification labels. "
            "Fix: choose a new label field name.",
            param="label_field",
        )
    already = len(dataset_io.ids_with_values(samples, label_field))
    if already and not overwrite:
        raise ElfsInputError(
            f"{already} of these samples already have a label in '{label_field}'. Fix: send only "
            f"the unlabeled ones (view.exists('{label_field}', False)), or pass overwrite=True to "
            "let the annotators' answers replace them.",
            param="label_field",
        )


def check_map_to_classes(prelabel_map: dict[str, str], classes: list[str]) -> None:
    """Refuses a {cluster: class} map with a value that is not one of `classes`."""
    unknown = sorted({v for v in prelabel_map.values() if v not in classes})
    if unknown:
        raise ElfsInputError(
            f"prelabel_map maps to {unknown}, which are not in classes {classes}. Fix: map every "
            "cluster to one of the classes, or leave it out.",
            param="prelabel_map",
        )


def prelabels_for(
    samples: foc.SampleCollection,
    prelabel_field: str,
    prelabel_map: dict[str, str] | None,
    label_field: str,
    classes: list[str],
) -> tuple[list[str], list[str | None]]:
    """Per sample, the class to pre-annotate (or None): mapped pseudo-labels that are classes."""
    from fiftyone_elfs.pseudo_labels import majority_class_map

    existing = samples.get_field(prelabel_field)
    if existing is None or not dataset_io.is_classification_field(existing):
        problem = "does not exist" if existing is None else "does not hold fo.Classification labels"
        raise ElfsInputError(
            f"The pre-annotation field '{prelabel_field}' {problem}. Fix: pass a field of "
            "labels (e.g. 'elfs_pseudo_label' after compute_pseudo_labels), or "
            "prelabel_field=None.",
            param="prelabel_field",
        )
    ids, values = dataset_io.read_columns(samples, ["id", f"{prelabel_field}.label"])
    if all(v is None for v in values):
        raise ElfsInputError(
            f"None of these samples has a label in the pre-annotation field '{prelabel_field}'. "
            "Fix: run compute_pseudo_labels on them, or pass prelabel_field=None.",
            param="prelabel_field",
        )
    given = prelabel_map is not None
    if not given:
        # Clusters get the majority class that annotators already gave their members, if any.
        dataset = dataset_io.dataset_of(samples)
        prelabel_map = {}
        if dataset_io.has_field(dataset, label_field):
            pseudo, true = dataset_io.read_columns(
                dataset,
                [f"{prelabel_field}.label", f"{label_field}.label"],
                having=(label_field, prelabel_field),
            )
            prelabel_map = majority_class_map(pseudo, true)
        # A cluster whose majority answer is not a class (a label set in FiftyOne, a choice
        # outside the labeling config) gets no pre-annotation, as the docstring promises.
        prelabel_map = {k: v for k, v in prelabel_map.items() if v in classes}
    check_map_to_classes(prelabel_map, classes)
    if given and prelabel_map:  # yours: a key must match a label of the samples sent
        sent = {v for v in values if v is not None}
        if not sent & set(prelabel_map):
            raise ElfsInputError(
                f"prelabel_map has no key that is a label of '{prelabel_field}' on the samples "
                f"sent (labels there: {sorted(sent)[:12]}{', ...' if len(sent) > 12 else ''}), "
                "so it would pre-annotate nothing. Fix: use those labels as the keys.",
                param="prelabel_map",
            )
        everywhere = dataset_io.every_slice(dataset_io.dataset_of(samples))
        known = sent | set(dataset_io.distinct_values(everywhere, f"{prelabel_field}.label"))
        if unknown := sorted(set(prelabel_map) - known):
            logger.warning(
                "prelabel_map keys %s are no label of '%s' (misspelt?): they pre-annotate nothing.",
                unknown,
                prelabel_field,
            )
    out = [
        prelabel_map.get(v, v if v in classes else None) if v is not None else None for v in values
    ]
    return ids, [v if v in classes else None for v in out]


def list_annotation_runs(dataset: fo.Dataset) -> list[str]:
    """The annotation keys that fiftyone-elfs sent from this dataset."""
    keys = []
    for run_key in dataset.list_runs():
        config = dataset.get_run_info(run_key).config
        if getattr(config, "method", None) == RUN_METHOD:
            keys.append(config.anno_key)
    return keys
