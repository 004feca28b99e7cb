"""Hand a view to Label Studio through FiftyOne's annotation API, and take back only human answers.

FiftyOne's Label Studio importer returns a task's pre-annotation when nobody answered it, so an
unanswered task would look labeled. `load_from_label_studio` therefore loads into a scratch field
and copies a label into the user's field only for tasks that Label Studio reports as answered
(`total_annotations > 0`; skipped tasks do not count; `fiftyone_elfs.label_studio` asks the
server). The parameters are checked against their tables in `fiftyone_elfs.params`.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import fiftyone as fo
import fiftyone.core.collections as foc

from fiftyone_elfs import dataset_io
from fiftyone_elfs.errors import ElfsInputError
from fiftyone_elfs.label_studio import (
    API_KEY_ENV,
    URL_ENV,
    check_label_studio,
    redact,
    resolve_credentials,
    task_states,
)
from fiftyone_elfs.params import public

__all__ = [
    "API_KEY_ENV",
    "URL_ENV",
    "AnnotationSummary",
    "annotation_summary",
    "check_anno_key",
    "check_label_studio",
    "delete_label_studio_run",
    "list_annotation_runs",
    "load_from_label_studio",
    "resolve_credentials",
    "send_to_label_studio",
]

logger = logging.getLogger(__name__)

_RUN_METHOD = "fiftyone_elfs_annotation"  # not "fiftyone_elfs.<stage>": not a pipeline stage


@dataclass
class AnnotationSummary:
    """What came back from one annotation run: counts and the samples that got a human label."""

    anno_key: str
    label_field: str
    n_sent: int
    n_labeled: int
    n_skipped: int
    n_unanswered: int
    labeled_ids: list[str] = field(default_factory=list)
    project_url: str = ""

    def as_dict(self) -> dict[str, Any]:
        """The counts and ids as a plain dict (operator results, run records)."""
        return asdict(self)


def annotation_run_key(anno_key: str) -> str:
    """The FiftyOne run that records what ELFS sent under `anno_key` and what came back."""
    return f"elfs_annotation_{anno_key}"


def prelabel_field_for(anno_key: str) -> str:
    """The field holding the pre-annotations sent with `anno_key` (Label Studio predictions)."""
    return f"{anno_key}_prelabel"


def _scratch_field_for(anno_key: str) -> str:
    return f"{anno_key}_download"


def check_anno_key(samples: foc.SampleCollection, anno_key: str) -> None:
    """Refuses an annotation key already used on the dataset, or whose fields are taken."""
    dataset = dataset_io.dataset_of(samples)
    if anno_key in dataset.list_annotation_runs():
        raise ElfsInputError(
            f"The annotation key '{anno_key}' is already used on this dataset. Fix: choose "
            f"another key (e.g. '{anno_key}_2'), or remove the old run with "
            f"dataset.delete_annotation_run('{anno_key}').",
            param="anno_key",
        )
    for taken in (prelabel_field_for(anno_key), _scratch_field_for(anno_key)):
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


def _check_label_field(samples: foc.SampleCollection, label_field: str, overwrite: bool) -> None:
    if not label_field.isidentifier():
        raise ElfsInputError(
            f"Invalid label field name {label_field!r}; use e.g. 'ground_truth'.",
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


def _prelabels(
    samples: foc.SampleCollection,
    prelabel_field: str,
    prelabel_map: dict[str, str] | None,
    label_field: str,
    classes: list[str],
) -> tuple[list[str], list[str | None]]:
    """Per sample, the class to pre-annotate (or None): mapped pseudo-labels that are classes."""
    from fiftyone_elfs.pseudo_labels import majority_class_map

    if not dataset_io.has_field(samples, prelabel_field):
        raise ElfsInputError(
            f"The pre-annotation field '{prelabel_field}' does not exist. Fix: run "
            "compute_pseudo_labels, or pass prelabel_field=None.",
            param="prelabel_field",
        )
    ids, values = dataset_io.read_columns(samples, ["id", f"{prelabel_field}.label"])
    if prelabel_map is None:
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
    unknown = sorted({v for v in prelabel_map.values() if v not in classes})
    if unknown:
        raise ElfsInputError(
            f"prelabel_map maps to {unknown}, which are not in classes {classes}. Fix: map every "
            "cluster to one of the classes, or leave it out.",
            param="prelabel_map",
        )
    out = [
        prelabel_map.get(v, v if v in classes else None) if v is not None else None for v in values
    ]
    return ids, [v if v in classes else None for v in out]


@public("send_to_label_studio")
def send_to_label_studio(
    samples: foc.SampleCollection,
    anno_key: str,
    classes: list[str],
    *,
    label_field: str = "ground_truth",
    prelabel_field: str | None = None,
    prelabel_map: dict[str, str] | None = None,
    url: str | None = None,
    api_key: str | None = None,
    project_name: str | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Creates a Label Studio project with these samples to be classified into `classes`.

    The answers are later loaded into `label_field` by `load_from_label_studio`. With
    `prelabel_field` (e.g. "elfs_pseudo_label"), each task carries a pre-annotation the annotator
    can accept or fix: the sample's value mapped through `prelabel_map` ({cluster: class}); by
    default a cluster maps to the majority class annotators gave its members in `label_field`
    (so round 2 can pre-annotate from round 1), and values that are not classes are not sent.
    The pre-annotations are kept in "<anno_key>_prelabel". Everything is checked (server, key,
    fields) before the dataset is changed.

    Returns:
        n_sent, n_prelabeled and the project's URL.
    """
    dataset_io.require_stored(samples)
    dataset = dataset_io.dataset_of(samples)
    check_anno_key(dataset, anno_key)
    n = dataset_io.require_nonempty(samples)
    _check_label_field(samples, label_field, overwrite)
    prelabels = None
    if prelabel_field is not None:
        prelabels = _prelabels(samples, prelabel_field, prelabel_map, label_field, classes)
    url, api_key = check_label_studio(url, api_key)

    upload_field = prelabel_field_for(anno_key)
    dataset_io.add_classification_field(dataset, upload_field)
    n_prelabeled = 0
    try:
        if prelabels is not None:
            ids, labels = prelabels
            pairs = [(i, c) for i, c in zip(ids, labels, strict=True) if c is not None]
            n_prelabeled = len(pairs)
            if pairs:
                dataset_io.write_values(
                    dataset,
                    upload_field,
                    [i for i, _ in pairs],
                    dataset_io.classifications([c for _, c in pairs]),
                )
        # An existing field makes FiftyOne send its values as Label Studio predictions.
        results = samples.annotate(
            anno_key,
            backend="labelstudio",
            label_field=upload_field,
            classes=classes,
            url=url,
            api_key=api_key,
            project_name=project_name,
        )
    except Exception:
        dataset_io.delete_fields(dataset, [upload_field])
        if anno_key in dataset.list_annotation_runs():
            dataset.delete_annotation_run(anno_key)
        raise
    project_url = f"{redact(url)}/projects/{results.project_id}"
    config = dataset.init_run(
        method=_RUN_METHOD,
        anno_key=anno_key,
        label_field=label_field,
        upload_field=upload_field,
        prelabel_field=prelabel_field,
        classes=classes,
        url=redact(url),  # never stored with a password: loading then needs url= or the env
        project_id=results.project_id,
    )
    run_key = annotation_run_key(anno_key)
    dataset.register_run(run_key, config, overwrite=True)
    sent = {"n_sent": n, "n_prelabeled": n_prelabeled, "project_url": project_url}
    dataset.save_run_results(run_key, dataset.init_run_results(run_key, **sent))
    logger.info("Sent %d samples to Label Studio: %s", n, project_url)
    return sent


@public("load_from_label_studio")
def load_from_label_studio(
    dataset: fo.Dataset,
    anno_key: str,
    *,
    url: str | None = None,
    api_key: str | None = None,
) -> AnnotationSummary:
    """Loads the answers of `anno_key` into its label field: only tasks a person answered.

    Skipped and never-opened tasks leave the sample unlabeled, even when they carried a
    pre-annotation. Loading again picks up answers given since (each task's latest answer
    wins). The counts are stored with the run (see `annotation_summary`).

    Returns:
        an `AnnotationSummary`.
    """
    run_key = annotation_run_key(anno_key)
    if run_key not in dataset.list_runs():
        raise ElfsInputError(
            f"No annotation run '{anno_key}' sent by fiftyone-elfs on this dataset (known: "
            f"{sorted(list_annotation_runs(dataset))}). Fix: check the key; for runs started "
            "with view.annotate use dataset.load_annotations.",
            param="anno_key",
        )
    config = dataset.get_run_info(run_key).config
    stored_url = None if "***@" in config.url else config.url  # redacted: not usable
    url, api_key = check_label_studio(url or stored_url, api_key)
    results = dataset.load_annotation_results(anno_key, url=url, api_key=api_key)
    states = task_states(url, api_key, results.project_id)
    task_to_sample = {int(t): s for t, s in results.uploaded_tasks.items()}
    answers = {s: states.get(t, (0, 0)) for t, s in task_to_sample.items()}
    answered = [s for s, (n_answers, _) in answers.items() if n_answers > 0]
    skipped = [s for s, (n_answers, n_skips) in answers.items() if n_answers == 0 and n_skips > 0]

    scratch = _scratch_field_for(anno_key)
    try:
        dataset.load_annotations(
            anno_key, dest_field=scratch, unexpected="ignore", url=url, api_key=api_key
        )
        labeled: list[str] = []
        if answered and dataset_io.has_field(dataset, scratch):
            labeled, labels = dataset_io.read_values(dataset.select(answered), scratch)
            if labeled:
                dataset_io.write_values(dataset, config.label_field, labeled, labels)
    finally:
        dataset_io.delete_fields(dataset, [scratch])
    summary = AnnotationSummary(
        anno_key=anno_key,
        label_field=config.label_field,
        n_sent=len(task_to_sample),
        n_labeled=len(labeled),
        n_skipped=len(skipped),
        n_unanswered=len(task_to_sample) - len(labeled) - len(skipped),
        labeled_ids=list(labeled),
        project_url=f"{redact(url)}/projects/{results.project_id}",
    )
    previous = dataset.load_run_results(run_key, load_view=False)
    dataset.save_run_results(
        run_key,
        dataset.init_run_results(
            run_key,
            n_sent=summary.n_sent,
            n_prelabeled=getattr(previous, "n_prelabeled", 0),
            project_url=summary.project_url,
            n_labeled=summary.n_labeled,
            n_skipped=summary.n_skipped,
            n_unanswered=summary.n_unanswered,
            labeled_ids=summary.labeled_ids,
        ),
        overwrite=True,
    )
    logger.info(
        "Loaded %d labels into '%s' (%d skipped, %d unanswered)",
        summary.n_labeled,
        summary.label_field,
        summary.n_skipped,
        summary.n_unanswered,
    )
    return summary


def list_annotation_runs(dataset: fo.Dataset) -> list[str]:
    """The annotation keys that fiftyone-elfs sent from this dataset."""
    keys = []
    for run_key in dataset.list_runs():
        config = dataset.get_run_info(run_key).config
        if getattr(config, "method", None) == _RUN_METHOD:
            keys.append(config.anno_key)
    return keys


def annotation_summary(dataset: fo.Dataset, anno_key: str) -> dict[str, Any]:
    """What was sent under `anno_key` and, once loaded, how many answers came back."""
    run_key = annotation_run_key(anno_key)
    if run_key not in dataset.list_runs():
        raise ElfsInputError(f"No annotation run '{anno_key}' sent by fiftyone-elfs.")
    config = dataset.get_run_info(run_key).config
    results = dataset.load_run_results(run_key, load_view=False)
    out = {
        "anno_key": anno_key,
        "label_field": config.label_field,
        "classes": list(config.classes),
        "n_sent": results.n_sent,
        "n_prelabeled": getattr(results, "n_prelabeled", 0),
        "project_url": results.project_url,
        "loaded": hasattr(results, "n_labeled"),
    }
    for name in ("n_labeled", "n_skipped", "n_unanswered"):
        out[name] = getattr(results, name, None)
    return out


def delete_label_studio_run(
    dataset: fo.Dataset,
    anno_key: str,
    *,
    delete_project: bool = False,
    url: str | None = None,
    api_key: str | None = None,
) -> None:
    """Forgets annotation run `anno_key` (its pre-annotation field too); loaded labels stay.

    `delete_project=True` also deletes the Label Studio project and its tasks (FiftyOne's
    cleanup), which needs the server.
    """
    run_key = annotation_run_key(anno_key)
    if run_key not in dataset.list_runs():
        raise ElfsInputError(f"No annotation run '{anno_key}' sent by fiftyone-elfs.")
    config = dataset.get_run_info(run_key).config
    if anno_key in dataset.list_annotation_runs():
        if delete_project:
            stored_url = None if "***@" in config.url else config.url
            url, api_key = check_label_studio(url or stored_url, api_key)
            dataset.load_annotation_results(anno_key, url=url, api_key=api_key).cleanup()
        dataset.delete_annotation_run(anno_key)
    dataset_io.delete_fields(dataset, [config.upload_field])
    dataset.delete_run(run_key)
