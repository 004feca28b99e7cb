"""Hand a view to Label Studio through FiftyOne's annotation API, and take back only human answers.

FiftyOne uploads the tasks (the images in batches: `fiftyone_elfs.label_studio_upload`) and
remembers which sample each task holds. The answers are read from Label Studio's tasks directly
(`fiftyone_elfs.label_studio`), not through FiftyOne's importer, which returns a task's
pre-annotation when nobody answered it and its latest annotation even when that is a skip.
`fiftyone_elfs.label_studio_answers` decides what a (re)load writes: the run's record keeps, per
sample, the answer loaded and the label written, so a reload writes only new or changed answers,
never overwrites a label changed in FiftyOne since, and removes a label whose answer was
withdrawn. The parameters are checked against their tables in `fiftyone_elfs.params`.
"""

from __future__ import annotations

import logging
from typing import Any

import fiftyone as fo
import fiftyone.core.collections as foc

from fiftyone_elfs import dataset_io
from fiftyone_elfs.annotation_inputs import (
    RUN_METHOD,
    annotation_run_key,
    check_anno_key,
    check_label_field,
    list_annotation_runs,
    preflight,
    prelabel_field_for,
    prelabels_for,
)
from fiftyone_elfs.errors import ElfsInputError
from fiftyone_elfs.label_studio import (
    API_KEY_ENV,
    URL_ENV,
    check_label_studio,
    delete_project_by_id,
    redact,
    resolve_credentials,
    task_states,
)
from fiftyone_elfs.label_studio_answers import AnnotationSummary, LoadPlan, TaskState, plan_load
from fiftyone_elfs.label_studio_upload import BatchedLabelStudioBackendConfig
from fiftyone_elfs.params import public

__all__ = [
    "API_KEY_ENV",
    "URL_ENV",
    "AnnotationSummary",
    "annotation_summary",
    "check_anno_key",
    "check_label_field",
    "check_label_studio",
    "delete_label_studio_run",
    "list_annotation_runs",
    "load_from_label_studio",
    "preflight",
    "resolve_credentials",
    "send_to_label_studio",
]

logger = logging.getLogger(__name__)


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
    check_label_field(samples, label_field, overwrite, anno_key)
    prelabels = None
    if prelabel_field is not None:
        prelabels = prelabels_for(samples, prelabel_field, prelabel_map, label_field, classes)
    url, api_key = check_label_studio(url, api_key)

    upload_field = prelabel_field_for(anno_key)
    dataset_io.add_classification_field(dataset, upload_field)
    n_prelabeled = 0
    project_id = None
    run_key = annotation_run_key(anno_key)
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
        # An existing field makes FiftyOne send its values as Label Studio predictions; the
        # config uploads the images in batches and deletes the project of a failed send.
        results = samples.annotate(
            anno_key,
            backend="labelstudio",
            config_cls=BatchedLabelStudioBackendConfig,
            label_field=upload_field,
            classes=classes,
            attributes=False,  # a class per image: none (FiftyOne warned of ignoring them)
            url=url,
            api_key=api_key,
            project_name=project_name,
        )
        project_id = results.project_id
        sent = {
            "n_sent": n,
            "n_prelabeled": n_prelabeled,
            "project_url": f"{redact(url)}/projects/{project_id}",
        }
        config = dataset.init_run(
            method=RUN_METHOD,
            anno_key=anno_key,
            label_field=label_field,
            upload_field=upload_field,
            prelabel_field=prelabel_field,
            classes=classes,
            url=redact(url),  # never stored with a password: loading then needs url= or the env
            project_id=project_id,
            overwrite=overwrite,  # whether a first answer may replace a label ELFS did not write
        )
        dataset.register_run(run_key, config, overwrite=True)
        dataset.save_run_results(run_key, dataset.init_run_results(run_key, **sent))
    except BaseException:  # Ctrl-C too: the key stays free for the retry
        if project_id is not None:  # sent, but not recorded: no run would reach the project
            _delete_unrecorded_project(url, api_key, project_id)
        dataset_io.delete_fields(dataset, [upload_field])
        if anno_key in dataset.list_annotation_runs():
            dataset.delete_annotation_run(anno_key)
        if run_key in dataset.list_runs():
            dataset.delete_run(run_key)
        raise
    logger.info("Sent %d samples to Label Studio: %s", n, sent["project_url"])
    return sent


def _delete_unrecorded_project(url: str, api_key: str, project_id: int) -> None:
    """Deletes a project whose send failed after its upload; if even that fails, says where it
    is, as no run of this dataset will name it."""
    try:
        delete_project_by_id(url, api_key, project_id)
    except Exception as e:  # the send's own error is the one raised
        logger.warning(
            "The send failed after its upload, and its Label Studio project could not be "
            "deleted (%s). Fix: delete it in Label Studio: %s/projects/%s",
            e,
            redact(url),
            project_id,
        )


def _run_config(dataset: fo.Dataset, anno_key: str) -> Any:
    """The record of ELFS run `anno_key`, refused with a fix if it is unknown or if FiftyOne's
    own annotation run (which maps tasks to samples) was deleted."""
    if annotation_run_key(anno_key) not in dataset.list_runs():
        raise ElfsInputError(
            f"No annotation run '{anno_key}' sent by fiftyone-elfs on this dataset (known: "
            f"{sorted(list_annotation_runs(dataset))}). Fix: check the key; for runs started "
            "with view.annotate use dataset.load_annotations.",
            param="anno_key",
        )
    if anno_key not in dataset.list_annotation_runs():
        raise ElfsInputError(
            f"FiftyOne's annotation run '{anno_key}' was deleted from this dataset (e.g. with "
            "dataset.delete_annotation_run), and with it which sample each Label Studio task "
            f"holds, so its answers cannot be loaded. Fix: remove what is left with "
            f"elfs.delete_label_studio_run(dataset, '{anno_key}') (delete_project=True also "
            "deletes the Label Studio project), then send the samples again.",
            param="anno_key",
        )
    return dataset.get_run_info(annotation_run_key(anno_key)).config


#: What a label ELFS loads holds (and logits, which it ignores); anything else on it (tags, a
#: confidence, attributes) was set in FiftyOne since.
_LOADED_KEYS = {"_id", "_cls", "label", "logits"}


def _current_labels(
    dataset: fo.Dataset, label_field: str, ids: list[str]
) -> tuple[dict[str, Any], set[str]]:
    """The class each of `ids` still in the dataset holds in `label_field` (None: none), and
    the samples whose label carries tags, a confidence or attributes set in FiftyOne (label
    tags from the App, a reviewer's note): one bulk read."""
    if not dataset_io.has_field(dataset, label_field):
        found, _ = dataset_io.read_values(dataset, "id", ids)
        return dict.fromkeys(found), set()
    found, labels = dataset_io.read_values(dataset, label_field, ids)
    current, touched = {}, set()
    for sample_id, label in zip(found, labels, strict=True):
        current[sample_id] = None if label is None else getattr(label, "label", None)
        if label is not None and any(
            bool(v) if k == "tags" else v is not None  # (every label has a tags list)
            for k, v in label.to_dict().items()
            if k not in _LOADED_KEYS
        ):
            touched.add(sample_id)
    return current, touched


def _apply(dataset: fo.Dataset, label_field: str, plan: LoadPlan) -> None:
    """Writes the planned answers and removes the withdrawn ones' labels (bulk updates). The
    field exists afterwards even with no answer yet, so that the next round can be told to
    leave its labeled samples out (`select_more(label_field=...)`) from the first load on."""
    if not dataset_io.has_field(dataset, label_field):
        dataset_io.add_classification_field(dataset, label_field)
    if plan.writes:
        ids = list(plan.writes)
        labels = dataset_io.classifications([plan.writes[i] for i in ids])
        dataset_io.write_values(dataset, label_field, ids, labels)
    if plan.removals:
        dataset_io.write_values(dataset, label_field, plan.removals, [None] * len(plan.removals))


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
    pre-annotation; a task's latest answer wins (a later skip is no answer). Loading again
    writes only answers that are new or changed since the last load: a label changed in
    FiftyOne since is kept and reported (`n_kept`, `kept_ids`, `notices`), and a label whose
    answer was withdrawn in Label Studio is removed if it is still what was loaded. Answers on
    samples deleted from the dataset count as `n_deleted`; tasks submitted without one of the
    run's classes (none or several picked, or a choice outside `classes`) as `n_unusable`, with
    a notice, and are not loaded; tasks deleted in Label Studio as `n_gone`, with a notice (a
    label loaded from one earlier stays). The counts are stored with the run (see
    `annotation_summary`).

    Returns:
        an `AnnotationSummary`.
    """
    config = _run_config(dataset, anno_key)
    stored_url = None if "***@" in config.url else config.url  # redacted: not usable
    url, api_key = check_label_studio(url or stored_url, api_key)
    results = dataset.load_annotation_results(anno_key, url=url, api_key=api_key)
    states = task_states(url, api_key, results.project_id, config.upload_field)
    by_sample = {
        s: states.get(int(t), TaskState(gone=True)) for t, s in results.uploaded_tasks.items()
    }
    run_key = annotation_run_key(anno_key)
    previous = dataset.load_run_results(run_key, load_view=False)
    current, touched = _current_labels(dataset, config.label_field, list(by_sample))
    overwrite = getattr(config, "overwrite", True)  # runs sent before it was recorded: True
    loaded = getattr(previous, "loaded", None) or {}
    plan = plan_load(by_sample, loaded, current, overwrite, classes=config.classes, touched=touched)
    _apply(dataset, config.label_field, plan)
    project_url = f"{redact(url)}/projects/{results.project_id}"
    summary = plan.summary(anno_key, config.label_field, project_url)
    _save_summary(dataset, run_key, summary, plan, getattr(previous, "n_prelabeled", 0))
    for notice in summary.notices:
        logger.warning(notice)
    logger.info(
        "Loaded %d labels into '%s' (%d skipped, %d unanswered)",
        summary.n_labeled,
        summary.label_field,
        summary.n_skipped,
        summary.n_unanswered,
    )
    return summary


def _save_summary(
    dataset: fo.Dataset, run_key: str, summary: AnnotationSummary, plan: LoadPlan, prelabeled: int
) -> None:
    """Stores the counts, ids and notices with the run, and per sample what was loaded (the
    next load's reference)."""
    record = summary.as_dict()
    for name in ("anno_key", "label_field"):
        record.pop(name)
    dataset.save_run_results(
        run_key,
        dataset.init_run_results(run_key, n_prelabeled=prelabeled, loaded=plan.loaded, **record),
        overwrite=True,
    )


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
    counts = ("n_labeled", "n_skipped", "n_unanswered", "n_kept", "n_deleted", "n_unusable")
    for name in (*counts, "n_gone"):
        out[name] = getattr(results, name, None)
    out["notices"] = list(getattr(results, "notices", []))
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

    `delete_project=True` also deletes the Label Studio project, and with it its tasks, in one
    request (not FiftyOne's cleanup, which deletes the tasks one request each), which needs the
    server at `url` with `api_key` (default: those the run was sent with, or the environment).
    """
    run_key = annotation_run_key(anno_key)
    if run_key not in dataset.list_runs():
        raise ElfsInputError(f"No annotation run '{anno_key}' sent by fiftyone-elfs.")
    config = dataset.get_run_info(run_key).config
    has_fiftyone_run = anno_key in dataset.list_annotation_runs()
    if delete_project:
        stored_url = None if "***@" in config.url else config.url
        url, api_key = check_label_studio(url or stored_url, api_key)
        delete_project_by_id(url, api_key, config.project_id)
    if has_fiftyone_run:
        dataset.delete_annotation_run(anno_key)
    dataset_io.delete_fields(dataset, [config.upload_field])
    dataset.delete_run(run_key)
