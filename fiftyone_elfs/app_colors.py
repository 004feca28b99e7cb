"""The App's colours for what ELFS writes: coreset regions and pseudo-label clusters.

Without a colour scheme the App picks a colour per value from a hash (the three regions came
out green, dark green and teal), so the Embeddings panel, the grid and the ELFS panel disagreed.
`apply_app_colors` writes the dataset's App colour scheme entries for "<key>_coreset_region"
(`REGION_COLORS`, the ELFS panel's colours) and "<key>_pseudo_label" (`cluster_colors`, also
used by the panel's cluster chart), so every view of a run shows the same colour for the same
value. FiftyOne's Embeddings panel and grid read these per-value colours
(``ColorScheme.fields[i].valueColors``); the browser test checks the rendered pixels.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import fiftyone as fo

from fiftyone_elfs import dataset_io, leases, output_proof, runs

#: Region -> colour, shared by the ELFS panel's histogram and the App colour scheme.
REGION_COLORS = {
    "dropped_hard": "#d62728",  # red: the hardest, where the pseudo-label noise lives
    "coreset": "#2ca02c",  # green: the samples to label
    "dropped_easy": "#9e9e9e",  # grey: the easy rest
    "not_drawn": "#6baed6",  # light blue: left by a CCS draw or typical selection
}

#: Colours of the pseudo-label clusters in natural order (cluster_0, cluster_1, ...), cycled.
CLUSTER_PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
    "#aec7e8",
    "#ffbb78",
    "#98df8a",
    "#ff9896",
    "#c5b0d5",
    "#c49c94",
    "#f7b6d2",
    "#c7c7c7",
    "#dbdb8d",
    "#9edae5",
)


def _natural_key(label: str) -> list[Any]:
    """Sort key putting cluster_2 before cluster_10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(label))]


def cluster_colors(labels: Iterable[str]) -> dict[str, str]:
    """A colour per cluster label: `CLUSTER_PALETTE` in natural order of the labels, cycled."""
    ordered = sorted(set(labels), key=_natural_key)
    return {label: CLUSTER_PALETTE[i % len(CLUSTER_PALETTE)] for i, label in enumerate(ordered)}


def color_scheme_fields(key: str, cluster_labels: Iterable[str]) -> list[dict[str, Any]]:
    """The colour scheme entries of a key's region and pseudo-label fields."""
    names = runs.PipelineNames(key)
    return [
        {
            "path": names.region_field,
            "valueColors": [{"value": v, "color": c} for v, c in REGION_COLORS.items()],
        },
        {
            "path": names.pseudo_label_field,
            "colorByAttribute": "label",
            "valueColors": [
                {"value": v, "color": c} for v, c in cluster_colors(cluster_labels).items()
            ],
        },
    ]


def apply_app_colors(
    dataset: fo.Dataset, key: str, cluster_labels: Iterable[str] | None = None
) -> None:
    """Sets the App colours of `key`'s region and pseudo-label fields on `dataset`.

    Replaces only those two entries of the dataset's colour scheme (other fields' colours are
    kept; the pseudo-label entry only where the key's own run wrote that field) and, when the
    scheme does not say how to colour, colours by value, so the grid shows each region in its
    colour too. Called by the selection stage after it writes the regions (and by the
    pipeline, which passes the `cluster_labels` it wrote: not read back).
    """
    dataset = dataset_io.dataset_of(dataset)
    names = runs.PipelineNames(key)
    # a field of that name that no run of the key wrote (a typical selection reads none) is
    # the user's, with their colours
    own_labels = cluster_labels is not None or _owns_pseudo_labels(dataset, names)
    labels: list[str] = []
    if cluster_labels is not None:
        labels = list(set(cluster_labels))
    elif own_labels:
        labels = dataset_io.distinct_values(dataset, f"{names.pseudo_label_field}.label")
    ours = color_scheme_fields(key, labels)
    if not own_labels:
        ours = [e for e in ours if e["path"] != names.pseudo_label_field]
    paths = {entry["path"] for entry in ours}
    # the scheme as stored, changed in the commit turn: concurrent runs of other keys each
    # wrote the scheme they had loaded, and only the last one's entries were left
    with leases.commit_turn(dataset_io.dataset_id(dataset)):
        config = dataset_io.stored_app_config(dataset)
        scheme = config.color_scheme or fo.ColorScheme()
        kept = [f for f in (scheme.fields or []) if dict(f).get("path") not in paths]
        scheme.fields = kept + ours
        if not scheme.color_by:
            scheme.color_by = "value"
        config.color_scheme = scheme
        dataset.save()


def forget_app_colors(dataset: fo.Dataset, key: str) -> None:
    """Removes the colour scheme entries `apply_app_colors` wrote for `key`'s fields that are
    gone (`delete_key`); entries of fields still there (the user's, under those names) stay, and
    so does the scheme's colouring by value."""
    dataset = dataset_io.dataset_of(dataset)
    names = runs.PipelineNames(key)
    scheme = dataset_io.stored_app_config(dataset).color_scheme  # (in delete_key's commit turn)
    gone = {
        path
        for path in (names.region_field, names.pseudo_label_field)
        if not dataset_io.has_field(dataset, path)
    }
    if scheme is None or not any(dict(f).get("path") in gone for f in scheme.fields or []):
        return
    scheme.fields = [f for f in scheme.fields if dict(f).get("path") not in gone]
    dataset.app_config.color_scheme = scheme
    dataset.save()


def _owns_pseudo_labels(dataset: fo.Dataset, names: runs.PipelineNames) -> bool:
    """Whether the key's pseudo-label run wrote the field of its name, as it is now."""
    field = names.pseudo_label_field
    config = runs.stage_config(dataset, names, "pseudo_labels")
    return (
        config is not None
        and field in (getattr(config, "owned_fields", None) or [])
        and dataset_io.has_field(dataset, field)
        and output_proof.still_owned(dataset, config, "owned_fields", field)
    )
