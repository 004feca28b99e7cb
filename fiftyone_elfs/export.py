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

Label Studio (issue 17): annotators choose among the real class names (`classes`); a task is
pre-annotated only through a cluster-to-class map (`prelabel_map`), never with a cluster name
in the class slot. Without `classes`, the labeling config asks for the class as free text.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import uuid
from collections.abc import Sequence
from typing import Any
from xml.sax.saxutils import quoteattr

import fiftyone as fo
import fiftyone.core.collections as foc

from fiftyone_elfs import dataset_io, params, runs
from fiftyone_elfs.errors import ElfsInputError
from fiftyone_elfs.faults import kill_point
from fiftyone_elfs.params import public

FORMATS: tuple[str, ...] = params.OPERATIONS["export_coreset"].param("formats").choices
MEDIA_DIR = "media"
MANIFEST = "manifest.csv"
FIFTYONE_DIR = "fiftyone_dataset"
LABEL_STUDIO_TASKS = "labelstudio_tasks.json"
LABEL_STUDIO_CONFIG = "labelstudio_config.xml"
LABEL_STUDIO_PREFIX: str = params.OPERATIONS["export_coreset"].param("label_studio_prefix").default
RECORD = ".elfs-export.json"
INCOMPLETE = ".elfs-export-incomplete.json"
STAGING_PREFIX = ".elfs-export-staging-"
_PREVIOUS = ".previous"  # inside the staging folder: the earlier export's outputs, moved aside


def coreset_view(samples: foc.SampleCollection, *, key: str = "elfs") -> fo.DatasetView:
    """The samples of `samples` that the coreset of `key` selected."""
    names = runs.validate_key(key)
    dataset = dataset_io.dataset_of(samples)
    config = runs.stage_config(dataset, names, "coreset")
    if config is None:
        raise ElfsInputError(
            f"No coreset has been selected with key '{key}'. Fix: run select_coreset "
            f"(or run_pipeline) with key='{key}' first; existing keys: "
            f"{sorted(runs.list_pipelines(dataset))}.",
            param="key",
        )
    return samples.match_tags(config.tag)


# --------------------------------------------------------------------------- the folder


def _is_ours(entry: str) -> bool:
    """Whether a top-level name in an export folder is this exporter's bookkeeping."""
    return entry in (RECORD, INCOMPLETE, RECORD + ".tmp", INCOMPLETE + ".tmp") or entry.startswith(
        STAGING_PREFIX
    )


def check_export_dir(export_dir: str, overwrite: bool) -> str:
    """The absolute folder, or an error if it cannot be a folder, or is not empty without
    `overwrite` (this exporter's bookkeeping files do not count)."""
    export_dir = os.path.abspath(os.path.expanduser(export_dir))
    if os.path.isfile(export_dir):
        raise ElfsInputError(
            f"export_dir '{export_dir}' is a file. Fix: pass a folder path.", param="export_dir"
        )
    parent = export_dir
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ElfsInputError(
            f"export_dir '{export_dir}' cannot be created: '{parent}' is a file. Fix: pass a "
            "folder path that is not inside a file.",
            param="export_dir",
        )
    if not os.access(parent, os.W_OK):
        raise ElfsInputError(
            f"export_dir '{export_dir}' cannot be written: no write permission on '{parent}'. "
            "Fix: pass a folder you can write to.",
            param="export_dir",
        )
    existing = (
        [e for e in os.listdir(export_dir) if not _is_ours(e)] if os.path.isdir(export_dir) else []
    )
    if existing and not overwrite:
        raise ElfsInputError(
            f"export_dir '{export_dir}' exists and is not empty; refusing to overwrite it. "
            "Fix: pass a new folder, or overwrite=True to replace this exporter's outputs there.",
            param="export_dir",
        )
    return export_dir


def preflight(samples: foc.SampleCollection, values: dict[str, Any]) -> None:
    """The cheap check an App form repeats as the user types: a usable export folder."""
    if values.get("export_dir"):
        check_export_dir(values["export_dir"], bool(values.get("overwrite")))


def _read_json(path: str) -> dict[str, Any] | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _write_json(path: str, content: dict[str, Any]) -> None:
    """Writes a small JSON file atomically (a reader sees the old or the new one, whole)."""
    with open(path + ".tmp", "w") as f:
        json.dump(content, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(path + ".tmp", path)


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)


def _files_under(path: str) -> list[str]:
    """Relative paths of the files of a folder (or [] for a file)."""
    if not os.path.isdir(path):
        return []
    return sorted(
        os.path.relpath(os.path.join(root, name), path)
        for root, _, files in os.walk(path)
        for name in files
    )


def recover(export_dir: str) -> bool:
    """Rolls back an interrupted export in `export_dir`; returns whether there was one.

    Restores the folder as it was before that export began: while it was writing, only its
    staging folder existed; once it was committing, its outputs already moved into place are
    removed and the earlier export's outputs and record moved back. The marker goes last.
    """
    marker_path = os.path.join(export_dir, INCOMPLETE)
    marker = _read_json(marker_path)
    if marker is not None and marker.get("phase") == "committing":
        staging = os.path.join(export_dir, marker["staging"])
        for name in marker["outputs"]:
            if not os.path.lexists(os.path.join(staging, name)):  # already moved into place
                _remove(os.path.join(export_dir, name))
        previous = os.path.join(staging, _PREVIOUS)
        for name in os.listdir(previous) if os.path.isdir(previous) else []:
            _remove(os.path.join(export_dir, name))
            os.rename(os.path.join(previous, name), os.path.join(export_dir, name))
        if not marker.get("had_record"):
            _remove(os.path.join(export_dir, RECORD))
    found = marker is not None
    for entry in os.listdir(export_dir):
        if entry.startswith(STAGING_PREFIX) or entry in (RECORD + ".tmp", INCOMPLETE + ".tmp"):
            _remove(os.path.join(export_dir, entry))
            found = True
    if marker is not None:
        os.remove(marker_path)
    return found


def _check_replaceable(export_dir: str, names: Sequence[str]) -> dict[str, Any] | None:
    """The earlier export's record, after checking that every existing output name the new
    export writes is that export's own (nothing else of the user's would be replaced)."""
    record = _read_json(os.path.join(export_dir, RECORD))
    own: dict[str, list[str]] = (record or {}).get("outputs", {})
    for name in names:
        path = os.path.join(export_dir, name)
        if not os.path.lexists(path):
            continue
        if name not in own:
            raise ElfsInputError(
                f"'{path}' exists, and no earlier export by fiftyone-elfs recorded it as its own "
                "(it may be yours); refusing to replace it. Fix: move it away, or export to "
                "another folder.",
                param="export_dir",
            )
        foreign = sorted(set(_files_under(path)) - set(own[name]))
        if foreign:
            raise ElfsInputError(
                f"'{path}' holds {len(foreign)} files that the earlier export did not write "
                f"(e.g. {foreign[:3]}); refusing to replace them. Fix: move them out, or export "
                "to another folder.",
                param="export_dir",
            )
    for name in own:  # replacing the earlier export: its other outputs are checked the same way
        if name not in names and os.path.lexists(os.path.join(export_dir, name)):
            foreign = sorted(set(_files_under(os.path.join(export_dir, name))) - set(own[name]))
            if foreign:
                raise ElfsInputError(
                    f"'{os.path.join(export_dir, name)}' holds files that the earlier export "
                    f"did not write (e.g. {foreign[:3]}). Fix: move them out, or export to "
                    "another folder.",
                    param="export_dir",
                )
    return record


# --------------------------------------------------------------------------- the rows


def _unique_names(paths: list[str]) -> list[str]:
    """Output file names that keep each image's base name and never collide."""
    used: set[str] = set()
    names = []
    for path in paths:
        stem, ext = os.path.splitext(os.path.basename(path))
        name, count = stem + ext, 1
        while name.lower() in used:
            name, count = f"{stem}-{count}{ext}", count + 1
        used.add(name.lower())
        names.append(name)
    return names


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
    unknown_classes = sorted({v for v in prelabel_map.values() if v not in classes})
    if unknown_classes:
        raise ElfsInputError(
            f"prelabel_map maps to {unknown_classes}, which are not in classes {classes}. Fix: "
            "map every cluster to one of the classes, or leave it out.",
            param="prelabel_map",
        )
    unknown_clusters = sorted(set(prelabel_map) - set(all_clusters))
    if unknown_clusters:
        raise ElfsInputError(
            f"prelabel_map has keys {unknown_clusters} that are not clusters of this key "
            f"(clusters: {sorted(all_clusters)}). Fix: use the cluster names of the pseudo-label "
            "field as keys.",
            param="prelabel_map",
        )
    return dict(prelabel_map)


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
    Label Studio's local-files storage rooted at `export_dir`) and the matching labeling config:
    a single choice among `classes`, or a free-text answer when no classes are given. A task is
    pre-annotated with its cluster's class from `prelabel_map` ({cluster: class}); clusters
    without a class, and every task without a map, get no pre-annotation.

    Everything is written beside the outputs and moved into place at the end; an export that
    was interrupted is rolled back by the next one. `overwrite=True` replaces only what an
    earlier export recorded as its own (``.elfs-export.json``).

    Returns:
        the path of each output written, by kind.
    """
    names = runs.PipelineNames(key)
    view = coreset_view(samples, key=key)
    if len(view) == 0:
        raise ElfsInputError(
            f"The coreset of key '{key}' has no sample in this view. Fix: export from the dataset "
            "or a view that contains the selected samples."
        )
    export_dir = os.path.abspath(os.path.expanduser(export_dir))
    check_export_dir(export_dir, overwrite=True)  # a usable folder (emptiness: after recovery)
    rows = _rows(view, names)
    _check_sources(rows)
    pseudo = _pseudo_label_field(view, names)
    all_clusters = dataset_io.distinct_values(samples, f"{pseudo}.label") if pseudo else []
    mapping = _check_classes(classes, prelabel_map, all_clusters)
    if os.path.isdir(export_dir):
        recover(export_dir)
    check_export_dir(export_dir, overwrite)

    media = "media" in formats or "labelstudio" in formats
    outputs = [MEDIA_DIR, MANIFEST] if media else []
    outputs += [FIFTYONE_DIR] if "fiftyone" in formats else []
    outputs += [LABEL_STUDIO_TASKS, LABEL_STUDIO_CONFIG] if "labelstudio" in formats else []
    earlier = _check_replaceable(export_dir, outputs)
    staging_name = f"{STAGING_PREFIX}{uuid.uuid4().hex[:8]}"
    staging = os.path.join(export_dir, staging_name)
    os.makedirs(export_dir, exist_ok=True)
    _write_json(
        os.path.join(export_dir, INCOMPLETE),
        {
            "staging": staging_name,
            "outputs": outputs,
            "had_record": earlier is not None,
            "phase": "writing",
            "note": "An export by fiftyone-elfs was interrupted here; the next export rolls it "
            "back. Outputs in this folder may be incomplete until then.",
        },
    )
    os.makedirs(staging)
    for row in rows:
        if mapping and row.get("pseudo_label") in mapping:
            row["prelabel"] = mapping[row["pseudo_label"]]
    _write_outputs(
        view, rows, staging, formats, key, classes, include_pseudo_labels, label_studio_prefix
    )
    kill_point("export", "before_commit")
    _commit(export_dir, staging, outputs, earlier, key, len(rows))
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
        file_names = _unique_names([r["source_filepath"] for r in rows])
        for row, name in zip(rows, file_names, strict=True):
            shutil.copy2(row["source_filepath"], os.path.join(media_dir, name))
            row["filename"] = f"{MEDIA_DIR}/{name}"
            kill_point("export", "copy")
        columns = list(dict.fromkeys(["filename", *(c for r in rows for c in r)]))
        with open(os.path.join(staging, MANIFEST), "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns, restval="")
            writer.writeheader()
            writer.writerows(rows)
    if "fiftyone" in formats:
        dataset_io.export_dataset(view, os.path.join(staging, FIFTYONE_DIR))
    if "labelstudio" in formats:
        tasks = [_label_studio_task(r, key, include_pseudo_labels, prefix) for r in rows]
        with open(os.path.join(staging, LABEL_STUDIO_TASKS), "w") as f:
            json.dump(tasks, f, indent=1)
        with open(os.path.join(staging, LABEL_STUDIO_CONFIG), "w") as f:
            f.write(label_studio_config(classes))


def _commit(
    export_dir: str,
    staging: str,
    outputs: list[str],
    earlier: dict[str, Any] | None,
    key: str,
    n_samples: int,
) -> None:
    """Moves the earlier export aside and the new outputs into place, then records them."""
    marker_path = os.path.join(export_dir, INCOMPLETE)
    _write_json(marker_path, {**(_read_json(marker_path) or {}), "phase": "committing"})
    previous = os.path.join(staging, _PREVIOUS)
    os.makedirs(previous)
    for name in [*(earlier or {}).get("outputs", {}), *([RECORD] if earlier else [])]:
        if os.path.lexists(os.path.join(export_dir, name)):
            os.rename(os.path.join(export_dir, name), os.path.join(previous, name))
            kill_point("export", "commit")
    for name in outputs:
        os.rename(os.path.join(staging, name), os.path.join(export_dir, name))
        kill_point("export", "commit")
    record = {
        "written_by": "fiftyone-elfs export_coreset",
        "key": key,
        "n_samples": n_samples,
        "outputs": {name: _files_under(os.path.join(export_dir, name)) for name in outputs},
    }
    _write_json(os.path.join(export_dir, RECORD), record)
    kill_point("export", "before_marker_removal")
    os.remove(marker_path)  # the commit point
    shutil.rmtree(staging)


def label_studio_config(classes: Sequence[str] | None) -> str:
    """A Label Studio labeling config: one image and a single choice among `classes`, or, with
    no classes, the class typed as free text."""
    if not classes:
        return (
            '<View>\n  <Image name="image" value="$image"/>\n'
            '  <Header value="The class of this image"/>\n'
            '  <TextArea name="label" toName="image" maxSubmissions="1" editable="true"/>\n'
            "</View>\n"
        )
    choices = "\n".join(f"    <Choice value={quoteattr(c)}/>" for c in classes)
    return (
        '<View>\n  <Image name="image" value="$image"/>\n'
        '  <Choices name="label" toName="image" choice="single" showInLine="true">\n'
        f"{choices}\n  </Choices>\n</View>\n"
    )


def _label_studio_task(
    row: dict[str, Any], key: str, include_pseudo_labels: bool, prefix: str
) -> dict[str, Any]:
    task: dict[str, Any] = {
        "data": {
            "image": prefix + row["filename"],
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
