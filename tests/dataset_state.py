"""What a user can see of a dataset, as comparable values: for "nothing changed" assertions."""

from __future__ import annotations

import hashlib
from typing import Any

import fiftyone as fo
import numpy as np


def _digest(values: list[Any]) -> str:
    """A digest of one field's values in sample order (arrays and labels included)."""
    h = hashlib.sha256()
    for v in values:
        if isinstance(v, np.ndarray):
            h.update(v.tobytes())
        elif isinstance(v, fo.core.labels.Label):
            h.update(repr(sorted((k, v[k]) for k in v.field_names if k != "id")).encode())
        else:
            h.update(repr(v).encode())
        h.update(b"|")
    return h.hexdigest()


def snapshot(dataset: fo.Dataset, fields: list[str] | None = None) -> dict[str, Any]:
    """Fields (type and every value), tags per sample, saved views (name, description, stages),
    runs and brain runs. `fields`: only these fields' values (default: all)."""
    dataset.reload()
    schema = dataset.get_field_schema()
    names = sorted(schema) if fields is None else [f for f in fields if f in schema]
    views = {}
    for info in dataset.list_saved_views(info=True):
        view = dataset.load_saved_view(info["name"])
        views[info["name"]] = (info.get("description"), repr(view._serialize(include_uuids=False)))
    return {
        "schema": {name: type(field).__name__ for name, field in schema.items()},
        "values": {name: _digest(dataset.values(name)) for name in names},
        "tags": dataset.values("tags"),
        "views": views,
        "runs": sorted(dataset.list_runs()),
        "brain_runs": sorted(dataset.list_brain_runs()),
    }
