"""Hands a coreset to annotators: media + CSV manifest, FiftyOne dataset, Label Studio tasks.

Exports never delete anything they did not write, and a user never sees half an export:

- **Own files are recorded.** A complete export leaves ``.elfs-export.json`` in `export_dir`,
  listing every file it wrote. ``overwrite=True`` replaces only the outputs that record lists;
  an existing output name it does not list (or a folder holding a file it does not list) is
  the user's, and the export is refused before anything changes.
- **Written beside, then moved into place.** Everything is written into a hidden staging folder
  inside `export_dir`, announced first by the marker ``.elfs-export-incomplete.json``; then the
  earlier export's outputs are moved aside, the new ones moved in (one rename each), the record
  rewritten, and the marker removed: that removal is the commit point.
- **Interrupted exports are rolled back.** An export that finds the marker (a ``kill -9``, a
  full disk ...) first restores the folder exactly as it was before the interrupted export:
  outputs already moved in are removed, the earlier ones moved back, the staging folder
  deleted. Until then the marker says the folder is incomplete.
- **One export per folder at a time.** A running export holds a lock in the folder (released by
  the system when its process ends, however it ends); a second export into that folder is
  refused, naming the running one, instead of rolling back its work as an interrupted export.
- **Outputs the new export does not write are kept** (and stay recorded), as long as they
  describe the same coreset; otherwise the export is refused before anything changes
  (`_check_kept` says why).

This module decides what is written; `fiftyone_elfs.export_folder` is the folder transaction.

Label Studio (issue 17): annotators choose among the real class names (`classes`); a task is
pre-annotated only through a cluster-to-class map (`prelabel_map`), never with a cluster name
in the class slot. Without `classes`, the labeling config asks for the class as free text.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import urllib.parse
from collections.abc import Sequence
from typing import Any
from xml.sax.saxutils import quoteattr

import fiftyone as fo
import fiftyone.core.collections as foc

from fiftyone_elfs import dataset_io, export_folder, export_lock, params, runs
from fiftyone_elfs.annotation_inputs import check_map_to_classes
from fiftyone_elfs.coreset_tag import (
    coreset_view,
    empty_coreset_error,
    not_selected_notice,
    outside_view_notice,
)
from fiftyone_elfs.errors import ElfsInputError
from fiftyone_elfs.faults import kill_point
from fiftyone_elfs.params import public

FORMATS: tuple[str, ...] = params.OPERATIONS["export_coreset"].param("formats").choices
MEDIA_DIR = "media"
MANIFEST = "manifest.csv"
FIFTYONE_DIR = "fiftyone_dataset"
LABEL_STUDIO_TASKS = "labelstudio_tasks.json"
LABEL_STUDIO_CONFIG = "labelstudio_config.xml"
_logger = logging.getLogger(__name__)
LABEL_STUDIO_PREFIX: str = params.OPERATIONS["export_coreset"].param("label_studio_prefix").default


def preflight(samples: foc.SampleCollection, values: dict[str, Any]) -> None:
    """The cheap checks an App form repeats as the user types: a key with a coreset and a
    usable export folder."""
    if values.get("key"):
        coreset_view(samples, key=values["key"])
    if values.get("export_dir"):
        export_folder.check_export_dir(values["export_dir"], bool(values.get("overwrite")))


# --------------------------------------------------------------------------- the rows


def _pseudo_label_field(view: fo.DatasetView, names: runs.PipelineNames) -> str | None:
    """The key's pseudo-label field if its pseudo-label run wrote it (a user's field of the same
    name is not exported as pseudo-labels)."""
    config = runs.stage_config(dataset_io.dataset_of(view), names, "pseudo_labels")
    field = names.pseudo_label_field
    if config is None or field not in (config.owned_fields or []):
        return None
    return field if dataset_io.has_field(view, field) else None


def _rows(view: fo.DatasetView, names: runs.PipelineNames) -> list[dict[str, Any]]:
    """One dict per sample with its id, path, pseudo-label and scores, read in one query."""
    fields = ["id", "filepath"]
    extra = []
    pseudo = _pseudo_label_field(view, names)
    if pseudo is not None:
        extra += [f"{pseudo}.label", f"{pseudo}.confidence"]
    difficulty = runs.stage_config(dataset_io.dataset_of(view), names, "difficulty")
    owned = (difficulty.owned_fields or []) if difficulty is not None else []
    extra += [
        names.score_field(s)
        for s in runs.SCORE_NAMES
        if names.score_field(s) in owned and dataset_io.has_field(view, names.score_field(s))
    ]
    columns = dataset_io.read_columns(view, fields + extra)
    keys = ["sample_id", "source_filepath"] + [
        {
            f"{pseudo}.label": "pseudo_label",
            f"{pseudo}.confidence": "pseudo_label_confidence",
        }.get(f, f.removeprefix(f"{names.key}_"))
        for f in extra
    ]
    return [dict(zip(keys, values, strict=True)) for values in zip(*columns, strict=True)]


def _check_sources(rows: list[dict[str, Any]]) -> None:
    """Refuses, before anything is written, media files that are missing or unreadable."""
    bad = [r for r in rows if not os.access(r["source_filepath"], os.R_OK)]
    if bad:
        examples = ", ".join(f"{r['source_filepath']} (sample {r['sample_id']})" for r in bad[:3])
        raise ElfsInputError(
            f"{len(bad)} media files of the coreset are missing or unreadable (e.g. {examples}); "
            "nothing was exported. Fix: restore those files, or export a view without them "
            "(e.g. samples.exclude([<their sample ids>])).",
            param="export_dir",
        )


def _check_classes(
    classes: list[str] | None,
    prelabel_map: dict[str, str] | None,
    all_clusters: Sequence[str],
) -> dict[str, str]:
    """The cluster -> class map to pre-annotate with, checked against the classes."""
    if prelabel_map is None:
        return {}
    if classes is None:
        raise ElfsInputError(
            "prelabel_map maps clusters to classes, but no classes were given. Fix: pass "
            "classes=[...] (the names annotators choose from) together with prelabel_map.",
            param="classes",
        )
    check_map_to_classes(prelabel_map, classes)
    unknown_clusters = sorted(set(prelabel_map) - set(all_clusters))
    if unknown_clusters and not all_clusters:
        raise ElfsInputError(
            "prelabel_map maps clusters to classes, and this key has no pseudo-labels (its "
            "coreset was selected from the embeddings alone, or the field was deleted). Fix: "
            "leave prelabel_map unset, or run compute_pseudo_labels with this key first.",
            param="prelabel_map",
        )
    if unknown_clusters:
        raise ElfsInputError(
            f"prelabel_map has keys {unknown_clusters} that are not clusters of this key "
            f"(clusters: {sorted(all_clusters)}). Fix: use the cluster names of the pseudo-label "
            "field as keys.",
            param="prelabel_map",
        )
    return dict(prelabel_map)


# --------------------------------------------------------------------------- kept outputs

_FORMAT_OF = {
    MEDIA_DIR: "media",
    MANIFEST: "media",
    FIFTYONE_DIR: "fiftyone",
    LABEL_STUDIO_TASKS: "labelstudio",
    LABEL_STUDIO_CONFIG: "labelstudio",
}


def _outputs(formats: Sequence[str]) -> list[str]:
    """The output names an export of `formats` writes (Label Studio tasks need the media)."""
    media = "media" in formats or "labelstudio" in formats
    outputs = [MEDIA_DIR, MANIFEST] if media else []
    outputs += [FIFTYONE_DIR] if "fiftyone" in formats else []
    return outputs + ([LABEL_STUDIO_TASKS, LABEL_STUDIO_CONFIG] if "labelstudio" in formats else [])


def _identity(key: str, rows: list[dict[str, Any]]) -> str:
    """What an export describes: its key and, per sample, its id, media file name and source.
    Outputs of two exports with the same identity refer to the same samples and files."""
    names = export_folder.unique_names([r["source_filepath"] for r in rows])
    samples = [
        (r["sample_id"], f"{MEDIA_DIR}/{n}", r["source_filepath"])
        for r, n in zip(rows, names, strict=True)
    ]
    return export_folder.identity(key, samples)


def _check_kept(
    export_dir: str,
    earlier: dict[str, Any] | None,
    formats: Sequence[str],
    identity: str,
    about: str,
) -> None:
    """Refuses, before anything changes, to keep an earlier export's outputs beside new ones
    of another coreset.

    `overwrite=True` replaces only what the new export writes; the earlier export's other
    outputs stay, recorded as before. Why not delete them: an export may already be in
    annotators' hands (a Label Studio storage serves its ``media/``, its tasks name those
    files), and asking for, say, only a FiftyOne copy must not pull the images from under them.

    Why refuse when the coreset changed (another key, a new selection, another view, samples
    deleted): the kept outputs would then describe other samples than the new ones (a manifest
    or tasks that do not match the media, a dataset of another coreset), and a folder mixing two
    coresets misleads silently: annotators would label samples that are no longer the coreset.
    Guessing which side the user wants is worse than asking, so the refusal names the outputs
    and the formats that would replace them. Same coreset means the same key and, per sample,
    the same id, source file and media name; pseudo-labels, scores and classes are not compared
    (a kept Label Studio config keeps its classes).
    """
    if earlier is None:
        return
    kept = export_folder.kept_outputs(export_dir, earlier, _outputs(formats))
    recorded = export_folder.recorded_identity(export_dir, earlier, MANIFEST)
    if not kept or recorded == identity:
        return
    both = [f for f in FORMATS if f in formats or f in {_FORMAT_OF.get(n) for n in kept}]
    then = f"key '{earlier.get('key')}', {earlier.get('n_samples')} samples"
    why = (
        "no record says which coreset they describe"
        if recorded is None
        else f"they describe another coreset ({then} then; {about} now)"
    )
    raise ElfsInputError(
        f"export_dir '{export_dir}' holds {sorted(kept)} of an earlier export, which this export "
        f"(formats {list(formats)}) would leave in place, and {why}: the folder would mix two "
        "coresets (a Label Studio storage serving its media/ would keep serving the old images). "
        f"Nothing was changed. Fix: export with formats={both} to replace them too, export into "
        "another folder, or move those outputs out of the folder first.",
        param="formats",
    )


# --------------------------------------------------------------------------- the export


@public("export_coreset")
def export_coreset(
    samples: foc.SampleCollection,
    export_dir: str,
    *,
    key: str = "elfs",
    formats: tuple[str, ...] | list[str] = ("media", "fiftyone", "labelstudio"),
    classes: list[str] | None = None,
    prelabel_map: dict[str, str] | None = None,
    include_pseudo_labels: bool = True,
    label_studio_prefix: str = "/data/local-files/?d=",
    overwrite: bool = False,
) -> dict[str, str]:
    """Exports the coreset of `key` for annotation, atomically.

    "media": the images (names kept, collisions suffixed) plus `manifest.csv`;
    "fiftyone": a FiftyOne dataset folder (`fo.Dataset.from_dir(..., FiftyOneDataset)`);
    "labelstudio": a task JSON importable into a Label Studio project (images referenced through
    Label Studio's local-file serving rooted at `export_dir`; the project needs a Local files
    source storage over `export_dir/media`, not synced, for them to load) and the matching
    labeling config:
    a single choice among `classes`, or a free-text answer when no classes are given. A task is
    pre-annotated with its cluster's class from `prelabel_map` ({cluster: class}); clusters
    without a class, and every task without a map, get no pre-annotation.

    Everything is written beside the outputs and moved into place at the end; an export that
    was interrupted is rolled back by the next one, and one still running makes another export
    into the folder be refused. `overwrite=True` replaces only what an earlier export recorded
    as its own (``.elfs-export.json``) and this one writes; the earlier export's other outputs
    are kept if they describe the same coreset, else the export is refused (`_check_kept`).

    Returns:
        the path of each output written, by kind.
    """
    names = runs.PipelineNames(key)
    view = coreset_view(samples, key=key)
    if len(view) == 0:
        raise empty_coreset_error(samples, key)
    export_dir = os.path.abspath(os.path.expanduser(export_dir))
    # a usable folder; whether it is empty is checked after an interrupted export is recovered
    export_folder.check_export_dir(export_dir, overwrite=True)
    rows = _rows(view, names)
    _check_sources(rows)
    notice = not_selected_notice(samples, key=key, tagged_ids=[r["sample_id"] for r in rows])
    if notice:
        _logger.warning(notice)
    part = outside_view_notice(samples, key=key, n_in_view=len(rows))
    if part:
        _logger.warning(part)
    pseudo = _pseudo_label_field(view, names)
    all_clusters = dataset_io.distinct_values(samples, f"{pseudo}.label") if pseudo else []
    mapping = _check_classes(classes, prelabel_map, all_clusters)
    for row in rows:
        if mapping and row.get("pseudo_label") in mapping:
            row["prelabel"] = mapping[row["pseudo_label"]]
    about = {"key": key, "n_samples": len(rows), "identity": _identity(key, rows)}
    outputs = _outputs(formats)
    with export_lock.exclusive(export_dir):
        export_folder.recover(export_dir)
        export_folder.check_export_dir(export_dir, overwrite)
        earlier = export_folder.check_replaceable(export_dir, outputs)
        _check_kept(
            export_dir, earlier, formats, about["identity"], f"key '{key}', {len(rows)} samples"
        )
        staging = export_folder.begin(export_dir, outputs, had_record=earlier is not None)
        _write_outputs(
            view, rows, staging, formats, key, classes, include_pseudo_labels, label_studio_prefix
        )
        kill_point("export", "before_commit")
        export_folder.commit(export_dir, staging, outputs, earlier, about)
    paths = {
        "media": MEDIA_DIR,
        "manifest": MANIFEST,
        "fiftyone": FIFTYONE_DIR,
        "labelstudio": LABEL_STUDIO_TASKS,
        "labelstudio_config": LABEL_STUDIO_CONFIG,
    }
    return {kind: os.path.join(export_dir, name) for kind, name in paths.items() if name in outputs}


def _write_outputs(
    view: fo.DatasetView,
    rows: list[dict[str, Any]],
    staging: str,
    formats: Sequence[str],
    key: str,
    classes: list[str] | None,
    include_pseudo_labels: bool,
    prefix: str,
) -> None:
    """Writes every output into the staging folder (each media copy is a kill point)."""
    if "media" in formats or "labelstudio" in formats:
        media_dir = os.path.join(staging, MEDIA_DIR)
        os.makedirs(media_dir)
        file_names = export_folder.unique_names([r["source_filepath"] for r in rows])
        for row, name in zip(rows, file_names, strict=True):
            shutil.copy2(row["source_filepath"], os.path.join(media_dir, name))
            row["filename"] = f"{MEDIA_DIR}/{name}"
            kill_point("export", "copy")
        columns = list(dict.fromkeys(["filename", *(c for r in rows for c in r)]))
        with open(os.path.join(staging, MANIFEST), "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=columns, restval="")
            writer.writeheader()
            writer.writerows(rows)
    if "fiftyone" in formats:
        dataset_io.export_dataset(view, os.path.join(staging, FIFTYONE_DIR))
    if "labelstudio" in formats:
        tasks = [_label_studio_task(r, key, include_pseudo_labels, prefix) for r in rows]
        with open(os.path.join(staging, LABEL_STUDIO_TASKS), "w", encoding="utf-8") as f:
            json.dump(tasks, f, indent=1)
        with open(os.path.join(staging, LABEL_STUDIO_CONFIG), "w", encoding="utf-8") as f:
            f.write(label_studio_config(classes))


def label_studio_config(classes: Sequence[str] | None) -> str:
    """A Label Studio labeling config: one image and a single choice among `classes`, or, with
    no classes, the class typed as free text; either is required (Label Studio refuses to
    submit a task without it)."""
    if not classes:
        return (
            '<View>\n  <Image name="image" value="$image"/>\n'
            '  <Header value="The class of this image"/>\n'
            '  <TextArea name="label" toName="image" maxSubmissions="1" editable="true"'
            ' required="true"/>\n'
            "</View>\n"
        )
    choices = "\n".join(f"    <Choice value={quoteattr(c)}/>" for c in classes)
    return (
        '<View>\n  <Image name="image" value="$image"/>\n'
        '  <Choices name="label" toName="image" choice="single" showInLine="true"'
        ' required="true">\n'
        f"{choices}\n  </Choices>\n</View>\n"
    )


def _label_studio_task(
    row: dict[str, Any], key: str, include_pseudo_labels: bool, prefix: str
) -> dict[str, Any]:
    task: dict[str, Any] = {
        "data": {
            # quoted: '&', '#', '+', '%', '?' or a space in a file name would otherwise end or
            # change the URL's query (Label Studio then answers 404)
            "image": prefix + urllib.parse.quote(row["filename"]),
            "sample_id": row["sample_id"],
            "source_filepath": row["source_filepath"],
        }
    }
    if include_pseudo_labels and row.get("prelabel"):
        task["predictions"] = [
            {
                "model_version": f"fiftyone-elfs:{key}",
                "score": float(row.get("pseudo_label_confidence") or 0.0),
                "result": [
                    {
                        "from_name": "label",
                        "to_name": "image",
                        "type": "choices",
                        "value": {"choices": [row["prelabel"]]},
                    }
                ],
            }
        ]
    return task
