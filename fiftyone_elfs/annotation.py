"""Hand a view to Label Studio through FiftyOne's annotation API, and take back only human answers.

FiftyOne's Label Studio importer returns a task's pre-annotation when nobody answered it, so an
unanswered task would look labeled. `load_from_label_studio` therefore loads into a scratch field
and copies a label into the user's field only for tasks that Label Studio reports as answered
(`total_annotations > 0`; skipped tasks do not count).
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field
from typing import Any

import fiftyone as fo
import fiftyone.core.collections as foc
import requests

from fiftyone_elfs import dataset_io
from fiftyone_elfs.errors import ElfsInputError
from fiftyone_elfs.pseudo_labels import majority_class_map

logger = logging.getLogger(__name__)

URL_ENV = "FIFTYONE_LABELSTUDIO_URL"
API_KEY_ENV = "FIFTYONE_LABELSTUDIO_API_KEY"
_RUN_METHOD = "fiftyone_elfs_annotation"  # not "fiftyone_elfs.<stage>": not a pipeline stage
_TIMEOUT_S = 30
_PAGE_SIZE = 500


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
        return asdict(self)


def annotation_run_key(anno_key: str) -> str:
    """The FiftyOne run that records what ELFS sent under `anno_key` and what came back."""
    return f"elfs_annotation_{anno_key}"


def prelabel_field_for(anno_key: str) -> str:
    """The field holding the pre-annotations sent with `anno_key` (Label Studio predictions)."""
    return f"{anno_key}_prelabel"


def _scratch_field_for(anno_key: str) -> str:
    return f"{anno_key}_download"


def resolve_credentials(url: str | None = None, api_key: str | None = None) -> tuple[str, str]:
    """Label Studio URL and API key: arguments first, then FiftyOne's `FIFTYONE_LABELSTUDIO_*`."""
    backend = fo.annotation_config.backends.get("labelstudio", {})
    url = url or os.environ.get(URL_ENV) or backend.get("url")
    api_key = api_key or os.environ.get(API_KEY_ENV) or backend.get("api_key")
    if not url:
        raise ElfsInputError(
            f"No Label Studio URL. Fix: set {URL_ENV} (e.g. http://localhost:8080) in the "
            "environment or the plugin's secrets, or pass url=..."
        )
    if not api_key:
        raise ElfsInputError(
            f"No Label Studio API key. Fix: set {API_KEY_ENV} to the legacy token shown in Label "
            "Studio under Account & Settings, or pass api_key=..."
        )
    return url.rstrip("/"), api_key


def _get(url: str, api_key: str, path: str, **params: Any) -> requests.Response:
    """One authenticated GET, turning connection and auth failures into errors with a fix."""
    try:
        response = requests.get(
            url + path,
            params=params,
            headers={"Authorization": f"Token {api_key}"},
            timeout=_TIMEOUT_S,
        )
    except requests.RequestException as e:
        raise ElfsInputError(
            f"Cannot reach Label Studio at {url} ({type(e).__name__}). Fix: start the server "
            f"(`label-studio start`) or correct {URL_ENV}."
        ) from e
    if response.status_code in (401, 403):
        raise ElfsInputError(
            f"Label Studio at {url} refused the API key (HTTP {response.status_code}: "
            f"{response.text[:200]}). Fix: set {API_KEY_ENV} to your legacy access token; since "
            "Label Studio 1.17 an admin must first enable legacy tokens (Organization > API "
            "Tokens Settings), because FiftyOne authenticates with a 'Token' header."
        )
    if response.status_code != 200:
        raise ElfsInputError(
            f"Label Studio at {url} answered HTTP {response.status_code} to GET {path}: "
            f"{response.text[:200]}"
        )
    return response


def check_label_studio(url: str | None = None, api_key: str | None = None) -> tuple[str, str]:
    """Checks the SDK is installed and the server accepts the key; returns (url, api_key)."""
    try:
        import label_studio_sdk  # noqa: F401  (FiftyOne's backend imports it lazily)
    except ImportError as e:
        raise ElfsInputError(
            "The Label Studio client (label-studio-sdk) is not installed. Fix: run "
            "`bash scripts/setup_label_studio.sh` (it installs the client FiftyOne needs into "
            "the project's environment)."
        ) from e
    url, api_key = resolve_credentials(url, api_key)
    _get(url, api_key, "/api/projects", page_size=1)
    return url, api_key


def _check_anno_key(dataset: fo.Dataset, anno_key: str) -> None:
    if not isinstance(anno_key, str) or not anno_key.isidentifier() or anno_key.startswith("_"):
        raise ElfsInputError(
            f"Invalid annotation key {anno_key!r}: it names fields and runs, so use letters, "
            "digits and underscores (e.g. 'round1')."
        )
    if anno_key in dataset.list_annotation_runs():
        raise ElfsInputError(
            f"The annotation key '{anno_key}' is already used on this dataset. Fix: choose "
            f"another key (e.g. '{anno_key}_2'), or remove the old run with "
            f"dataset.delete_annotation_run('{anno_key}')."
        )
    for taken in (prelabel_field_for(anno_key), _scratch_field_for(anno_key)):
        if dataset.get_field(taken) is not None:
            raise ElfsInputError(
                f"The field '{taken}' already exists and annotation key '{anno_key}' would use "
                "it. Fix: choose another annotation key."
            )


def _check_classes(classes: Any) -> list[str]:
    if isinstance(classes, str) or not classes:
        raise ElfsInputError(
            f"classes must be a non-empty list of class names; got {classes!r}. "
            "Fix: e.g. classes=['cat', 'dog']."
        )
    names = [str(c).strip() for c in classes]
    if any(not c for c in names) or len(set(names)) != len(names):
        raise ElfsInputError(f"classes must be distinct, non-empty names; got {list(classes)!r}.")
    return names


def _check_label_field(samples: foc.SampleCollection, label_field: str, overwrite: bool) -> None:
    if not isinstance(label_field, str) or not label_field.isidentifier():
        raise ElfsInputError(f"Invalid label field name {label_field!r}; use e.g. 'ground_truth'.")
    existing = samples.get_field(label_field)
    if existing is None:
        return
    if not dataset_io.is_classification_field(existing):
        raise ElfsInputError(
            f"The field '{label_field}' exists and does not hold fo.Classification labels. "
            "Fix: choose a new label field name."
        )
    already = len(samples.exists(label_field))
    if already and not overwrite:
        raise ElfsInputError(
            f"{already} of these samples already have a label in '{label_field}'. Fix: send only "
            f"the unlabeled ones (view.exists('{label_field}', False)), or pass overwrite=True to "
            "let the annotators' answers replace them."
        )


def _prelabels(
    samples: foc.SampleCollection,
    prelabel_field: str,
    prelabel_map: dict[str, str] | None,
    label_field: str,
    classes: list[str],
) -> tuple[list[str], list[str | None]]:
    """Per sample, the class to pre-annotate (or None): mapped pseudo-labels that are classes."""
    if samples.get_field(prelabel_field) is None:
        raise ElfsInputError(
            f"The pre-annotation field '{prelabel_field}' does not exist. Fix: run "
            "compute_pseudo_labels, or pass prelabel_field=None."
        )
    ids, values = samples.values(["id", f"{prelabel_field}.label"])
    if prelabel_map is None:
        # Clusters get the majority class that annotators already gave their members, if any.
        dataset = samples._dataset
        prelabel_map = {}
        if dataset.get_field(label_field) is not None:
            labeled = dataset.exists(label_field).exists(prelabel_field)
            pseudo, true = labeled.values([f"{prelabel_field}.label", f"{label_field}.label"])
            prelabel_map = majority_class_map(pseudo, true)
    unknown = sorted({v for v in prelabel_map.values() if v not in classes})
    if unknown:
        raise ElfsInputError(
            f"prelabel_map maps to {unknown}, which are not in classes {classes}. Fix: map every "
            "cluster to one of the classes, or leave it out."
        )
    out = [
        prelabel_map.get(v, v if v in classes else None) if v is not None else None for v in values
    ]
    return ids, [v if v in classes else None for v in out]


def send_to_label_studio(
    samples: foc.SampleCollection,
    anno_key: str,
    classes: list[str],
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
    """
    dataset = samples._dataset
    _check_anno_key(dataset, anno_key)
    classes = _check_classes(classes)
    n = dataset_io.require_nonempty(samples)
    _check_label_field(samples, label_field, overwrite)
    prelabels = None
    if prelabel_field is not None:
        prelabels = _prelabels(samples, prelabel_field, prelabel_map, label_field, classes)
    url, api_key = check_label_studio(url, api_key)

    upload_field = prelabel_field_for(anno_key)
    dataset.add_sample_field(
        upload_field, fo.EmbeddedDocumentField, embedded_doc_type=fo.Classification
    )
    n_prelabeled = 0
    try:
        if prelabels is not None:
            ids, labels = prelabels
            pairs = [
                (i, fo.Classification(label=c))
                for i, c in zip(ids, labels, strict=True)
                if c is not None
            ]
            n_prelabeled = len(pairs)
            if pairs:
                dataset_io.write_values(
                    dataset, upload_field, [i for i, _ in pairs], [v for _, v in pairs]
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
    project_url = f"{url}/projects/{results.project_id}"
    config = dataset.init_run(
        method=_RUN_METHOD,
        anno_key=anno_key,
        label_field=label_field,
        upload_field=upload_field,
        prelabel_field=prelabel_field,
        classes=classes,
        url=url,
        project_id=results.project_id,
    )
    run_key = annotation_run_key(anno_key)
    dataset.register_run(run_key, config, overwrite=True)
    sent = {"n_sent": n, "n_prelabeled": n_prelabeled, "project_url": project_url}
    dataset.save_run_results(run_key, dataset.init_run_results(run_key, **sent))
    logger.info("Sent %d samples to Label Studio: %s", n, project_url)
    return sent


def _task_states(url: str, api_key: str, project_id: int) -> dict[int, tuple[int, int]]:
    """Maps each task id of a project to (answers, skips), reading Label Studio page by page."""
    states: dict[int, tuple[int, int]] = {}
    page = 1
    while True:
        body = _get(
            url,
            api_key,
            "/api/tasks",
            project=project_id,
            page=page,
            page_size=_PAGE_SIZE,
            fields="all",
        ).json()
        tasks = body["tasks"] if isinstance(body, dict) else body
        for task in tasks:
            states[int(task["id"])] = (
                int(task.get("total_annotations") or 0),
                int(task.get("cancelled_annotations") or 0),
            )
        total = body.get("total") if isinstance(body, dict) else None
        if not tasks or len(tasks) < _PAGE_SIZE or (total is not None and len(states) >= total):
            return states
        page += 1


def load_from_label_studio(
    dataset: fo.Dataset,
    anno_key: str,
    url: str | None = None,
    api_key: str | None = None,
) -> AnnotationSummary:
    """Loads the answers of `anno_key` into its label field: only tasks a person answered.

    Skipped and never-opened tasks leave the sample unlabeled, even when they carried a
    pre-annotation. Loading again picks up answers given since (each task's latest answer
    wins). The counts are stored with the run (see
    `annotation_summary`).
    """
    run_key = annotation_run_key(anno_key)
    if run_key not in dataset.list_runs():
        raise ElfsInputError(
            f"No annotation run '{anno_key}' sent by fiftyone-elfs on this dataset (known: "
            f"{sorted(list_annotation_runs(dataset))}). Fix: check the key; for runs started "
            "with view.annotate use dataset.load_annotations."
        )
    config = dataset.get_run_info(run_key).config
    url, api_key = check_label_studio(url or config.url, api_key)
    results = dataset.load_annotation_results(anno_key, url=url, api_key=api_key)
    states = _task_states(url, api_key, results.project_id)
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
        if answered and dataset.get_field(scratch) is not None:
            view = dataset.select(answered).exists(scratch)
            labeled, labels = view.values(["id", scratch])
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
        project_url=f"{url}/projects/{results.project_id}",
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
            url, api_key = check_label_studio(url or config.url, api_key)
            dataset.load_annotation_results(anno_key, url=url, api_key=api_key).cleanup()
        dataset.delete_annotation_run(anno_key)
    dataset_io.delete_fields(dataset, [config.upload_field])
    dataset.delete_run(run_key)
