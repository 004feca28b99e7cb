"""Moves data between FiftyOne collections and numpy arrays, in bulk (never one sample at a time).

Everything the algorithms need comes out of here as arrays, and everything they produce goes back
through here, so the algorithm modules never import FiftyOne.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from typing import Any

import fiftyone as fo
import fiftyone.core.collections as foc
import numpy as np

from fiftyone_elfs.errors import ElfsInputError

SampleCollection = foc.SampleCollection


def require_nonempty(samples: SampleCollection) -> int:
    """Returns the number of samples, raising a clear error for an empty collection."""
    n = len(samples)
    if n == 0:
        raise ElfsInputError(
            "The dataset or view is empty: there is nothing to select from. "
            "Fix: pass a view that contains samples (check your filters or tags)."
        )
    return n


def sample_ids_and_paths(samples: SampleCollection) -> tuple[list[str], list[str]]:
    """Returns the sample ids and media paths of a collection, in one query."""
    ids, paths = samples.values(["id", "filepath"])
    return list(ids), list(paths)


def has_field(samples: SampleCollection, field: str) -> bool:
    """Whether the collection's schema has a (top-level) field of this name."""
    return samples.get_field(field) is not None


def is_classification_field(schema_field: Any) -> bool:
    """Whether a schema field (from `get_field`, possibly None) holds `fo.Classification` labels."""
    return getattr(schema_field, "document_type", None) is fo.Classification


def ids_with_values(samples: SampleCollection, field: str) -> list[str]:
    """Ids of the samples whose `field` is set (not None)."""
    if not has_field(samples, field):
        return []
    return list(samples.exists(field).values("id"))


def read_embeddings(samples: SampleCollection, field: str) -> tuple[list[str], np.ndarray]:
    """Reads an embeddings field as an [N, dim] float32 array, checking it is usable.

    Samples without a value are left out (their images could not be read); a NaN or a vector of
    the wrong dimension is an error, since it would silently corrupt the clustering.
    """
    if not has_field(samples, field):
        raise ElfsInputError(
            f"The embeddings field '{field}' does not exist on this dataset. "
            "Fix: run compute_embeddings first, or pass embeddings_field=<an existing vector "
            "field>."
        )
    view = samples.exists(field)
    ids, vectors = view.values(["id", field])
    if not ids:
        raise ElfsInputError(
            f"No sample in this collection has a value in '{field}'. "
            "Fix: run compute_embeddings on this view first."
        )
    counts = collections.Counter(np.asarray(v).size for v in vectors)
    if len(counts) != 1:
        raise ElfsInputError(
            f"The embeddings in '{field}' have different dimensions {sorted(counts)} "
            f"(samples per dimension: {dict(counts)}). Fix: recompute them with one model, e.g. "
            "compute_embeddings(..., overwrite=True)."
        )
    X = np.stack([np.asarray(v, dtype=np.float32).ravel() for v in vectors])
    bad = ~np.isfinite(X).all(axis=1)
    if bad.any():
        first = [ids[i] for i in np.flatnonzero(bad)[:5]]
        raise ElfsInputError(
            f"{int(bad.sum())} embeddings in '{field}' contain NaN or infinite values "
            f"(e.g. samples {first}). Fix: recompute them "
            "(compute_embeddings(..., overwrite=True)) "
            "or exclude those samples from the view."
        )
    return list(ids), X


def read_labels(samples: SampleCollection, field: str, ids: Sequence[str]) -> list[str | None]:
    """Reads the `label` of a Classification field for the given sample ids, in that order."""
    view = samples.select(ids, ordered=True)
    return list(view.values(f"{field}.label"))


def write_values(
    samples: SampleCollection, field: str, ids: Sequence[str], values: Sequence[Any]
) -> None:
    """Writes one value per sample id into `field`, in a single bulk update."""
    if len(ids) != len(values):
        raise ValueError(f"got {len(ids)} ids but {len(values)} values")
    dataset = samples._dataset
    dataset.set_values(field, dict(zip(ids, values, strict=True)), key_field="id")


def write_classifications(
    samples: SampleCollection,
    field: str,
    ids: Sequence[str],
    labels: Sequence[str],
    confidences: Sequence[float],
) -> None:
    """Writes pseudo-labels as `fo.Classification(label, confidence)` in one bulk update."""
    values = [
        fo.Classification(label=str(label), confidence=float(conf))
        for label, conf in zip(labels, confidences, strict=True)
    ]
    write_values(samples, field, ids, values)


def clear_field(dataset: fo.Dataset, field: str) -> None:
    """Sets `field` to None on every sample of the dataset (if the field exists)."""
    if dataset.get_field(field) is not None:
        dataset.set_field(field, None).save()


def delete_fields(dataset: fo.Dataset, fields: Sequence[str]) -> None:
    """Deletes the given sample fields from the dataset, ignoring ones that do not exist."""
    existing = [f for f in fields if dataset.get_field(f) is not None]
    if existing:
        dataset.delete_sample_fields(existing)


def replace_tag(dataset: fo.Dataset, tag: str, ids: Sequence[str]) -> None:
    """Removes `tag` from every sample of the dataset, then puts it on exactly `ids`."""
    dataset.untag_samples(tag)
    if ids:
        dataset.select(ids).tag_samples(tag)


def remove_tag(dataset: fo.Dataset, tag: str) -> None:
    """Removes `tag` from every sample of the dataset."""
    dataset.untag_samples(tag)


def save_tagged_view(dataset: fo.Dataset, name: str, tag: str, description: str) -> None:
    """Saves (or replaces) a view of the samples carrying `tag` under `name`."""
    dataset.save_view(name, dataset.match_tags(tag), description=description, overwrite=True)


def delete_saved_view(dataset: fo.Dataset, name: str) -> None:
    """Deletes a saved view if it exists."""
    if dataset.has_saved_view(name):
        dataset.delete_saved_view(name)
