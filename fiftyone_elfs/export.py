"""Hands a coreset to annotators: media + CSV manifest, FiftyOne dataset, Label Studio tasks.

Exports never delete anything they did not write: an existing non-empty folder is refused unless
`overwrite=True`, and then only this exporter's own outputs in it are replaced.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from typing import Any
from xml.sax.saxutils import quoteattr

import fiftyone as fo
import fiftyone.core.collections as foc

from fiftyone_elfs import dataset_io, params, runs
from fiftyone_elfs.errors import ElfsInputError
from fiftyone_elfs.params import public

FORMATS: tuple[str, ...] = params.OPERATIONS["export_coreset"].param("formats").choices
MEDIA_DIR = "media"
MANIFEST = "manifest.csv"
FIFTYONE_DIR = "fiftyone_dataset"
LABEL_STUDIO_TASKS = "labelstudio_tasks.json"
LABEL_STUDIO_CONFIG = "labelstudio_config.xml"
LABEL_STUDIO_PREFIX: str = params.OPERATIONS["export_coreset"].param("label_studio_prefix").default
_OUTPUTS = (MEDIA_DIR, MANIFEST, FIFTYONE_DIR, LABEL_STUDIO_TASKS, LABEL_STUDIO_CONFIG)


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


def check_export_dir(export_dir: str, overwrite: bool) -> str:
    """The absolute folder, or an error if it is a file, or not empty without `overwrite`."""
    export_dir = os.path.abspath(os.path.expanduser(export_dir))
    if os.path.isfile(export_dir):
        raise ElfsInputError(
            f"export_dir '{export_dir}' is a file. Fix: pass a folder path.", param="export_dir"
        )
    if os.path.isdir(export_dir) and os.listdir(export_dir) and not overwrite:
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


def _prepare_dir(export_dir: str, overwrite: bool) -> None:
    check_export_dir(export_dir, overwrite)
    if os.path.isdir(export_dir) and os.listdir(export_dir):
        for name in _OUTPUTS:
            path = os.path.join(export_dir, name)
            if os.path.isdir(path):
                shutil.rmtree(path)
            elif os.path.exists(path):
                os.remove(path)
    os.makedirs(export_dir, exist_ok=True)


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


def _rows(view: fo.DatasetView, names: runs.PipelineNames) -> list[dict[str, Any]]:
    """One dict per sample with its id, path, pseudo-label and scores, read in one query."""
    fields = ["id", "filepath"]
    extra = []
    if dataset_io.has_field(view, names.pseudo_label_field):
        extra += [f"{names.pseudo_label_field}.label", f"{names.pseudo_label_field}.confidence"]
    extra += [
        names.score_field(s)
        for s in runs.SCORE_NAMES
        if dataset_io.has_field(view, names.score_field(s))
    ]
    columns = dataset_io.read_columns(view, fields + extra)
    keys = ["sample_id", "source_filepath"] + [
        {
            f"{names.pseudo_label_field}.label": "pseudo_label",
            f"{names.pseudo_label_field}.confidence": "pseudo_label_confidence",
        }.get(f, f.removeprefix(f"{names.key}_"))
        for f in extra
    ]
    return [dict(zip(keys, values, strict=True)) for values in zip(*columns, strict=True)]


@public("export_coreset")
def export_coreset(
    samples: foc.SampleCollection,
    export_dir: str,
    *,
    key: str = "elfs",
    formats: tuple[str, ...] | list[str] = ("media", "fiftyone", "labelstudio"),
    include_pseudo_labels: bool = True,
    label_studio_prefix: str = "/data/local-files/?d=",
    overwrite: bool = False,
) -> dict[str, str]:
    """Exports the coreset of `key` for annotation.

    "media": the images (names kept, collisions suffixed) plus `manifest.csv`;
    "fiftyone": a FiftyOne dataset folder (`fo.Dataset.from_dir(..., FiftyOneDataset)`);
    "labelstudio": a task JSON importable into a Label Studio project (images referenced through
    Label Studio's local-files storage rooted at `export_dir`) with the pseudo-label as an
    optional pre-annotation, and the matching labeling config.

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
    _prepare_dir(export_dir, overwrite)
    outputs: dict[str, str] = {}
    rows = _rows(view, names)

    if "media" in formats or "labelstudio" in formats:
        media_dir = os.path.join(export_dir, MEDIA_DIR)
        os.makedirs(media_dir)
        file_names = _unique_names([r["source_filepath"] for r in rows])
        for row, name in zip(rows, file_names, strict=True):
            shutil.copy2(row["source_filepath"], os.path.join(media_dir, name))
            row["filename"] = f"{MEDIA_DIR}/{name}"
        manifest = os.path.join(export_dir, MANIFEST)
        columns = ["filename"] + [c for c in rows[0] if c != "filename"]
        with open(manifest, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
        outputs["media"] = media_dir
        outputs["manifest"] = manifest

    if "fiftyone" in formats:
        fo_dir = os.path.join(export_dir, FIFTYONE_DIR)
        dataset_io.export_dataset(view, fo_dir)
        outputs["fiftyone"] = fo_dir

    if "labelstudio" in formats:
        tasks = [
            _label_studio_task(r, key, include_pseudo_labels, label_studio_prefix) for r in rows
        ]
        tasks_path = os.path.join(export_dir, LABEL_STUDIO_TASKS)
        with open(tasks_path, "w") as f:
            json.dump(tasks, f, indent=1)
        classes = sorted({r["pseudo_label"] for r in rows if r.get("pseudo_label")})
        config_path = os.path.join(export_dir, LABEL_STUDIO_CONFIG)
        with open(config_path, "w") as f:
            f.write(label_studio_config(classes))
        outputs["labelstudio"] = tasks_path
        outputs["labelstudio_config"] = config_path
    return outputs


def label_studio_config(classes: list[str]) -> str:
    """A Label Studio labeling config: one image, one single-choice question."""
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
    if include_pseudo_labels and row.get("pseudo_label"):
        task["predictions"] = [
            {
                "model_version": f"fiftyone-elfs:{key}",
                "score": float(row.get("pseudo_label_confidence") or 0.0),
                "result": [
                    {
                        "from_name": "label",
                        "to_name": "image",
                        "type": "choices",
                        "value": {"choices": [row["pseudo_label"]]},
                    }
                ],
            }
        ]
    return task
