"""Moves data between FiftyOne collections and numpy arrays, in bulk (never one sample at a time).

The one module of the pipeline that reads sample values or writes sample fields, tags, saved
views and brain layouts: the stages (`fiftyone_elfs.stages`) get their inputs here as arrays and
hand their outputs back through `fiftyone_elfs.stages.record`, so the algorithm packages never
import FiftyOne. (The run summary reads database aggregations for display, and the annotation
hand-off drives FiftyOne's exporter and annotation backend; both use this module for plain
reads and writes.)

Any number of samples: no command carries more than `id_chunk_rows` sample ids (MongoDB refuses
commands over 16 MB), reads by id never use an ordered select, and a brain run's view never
lists the ids of the whole collection. Longer than 420 lines on purpose: every read and write of
samples, and so every place where those limits matter, is in this one module.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import contextvars
import dataclasses
import datetime
import io
import json
import os
import re
import uuid
import zlib
from collections.abc import Iterator, Sequence
from typing import Any

import fiftyone as fo
import fiftyone.core.collections as foc
import fiftyone.core.utils as fou
import numpy as np
from bson import ObjectId

from fiftyone_elfs.cpus import available_cpus
from fiftyone_elfs.errors import ElfsInputError

SampleCollection = foc.SampleCollection

#: Collections of FiftyOne's database holding staged values of an unfinished write
#: (`stage_rows`, `commit_staged`): ``elfs_staging_<dataset id>_<random>``.
STAGING_COLLECTION_PREFIX = "elfs_staging_"

#: Most sample ids one database command carries (a `select`, a bulk write, a tag update).
#: MongoDB refuses commands over 16 MB: an ordered `select` of about 440k ids, an unordered one
#: of about 870k. ``ELFS_ID_CHUNK_ROWS`` overrides it (the tests force tiny chunks so that the
#: chunked paths run on small datasets).
ID_CHUNK_ROWS = 100_000
ID_CHUNK_ENV = "ELFS_ID_CHUNK_ROWS"


def id_chunk_rows() -> int:
    """The number of ids per command: ``$ELFS_ID_CHUNK_ROWS`` if set, else `ID_CHUNK_ROWS`."""
    value = os.environ.get(ID_CHUNK_ENV)
    return max(1, int(value)) if value else ID_CHUNK_ROWS


def id_chunks(ids: Sequence[str]) -> Iterator[list[str]]:
    """`ids` in consecutive chunks of at most `id_chunk_rows` ids."""
    size = id_chunk_rows()
    for start in range(0, len(ids), size):
        yield list(ids[start : start + size])


def _values_of_ids(
    samples: SampleCollection, paths: Sequence[str], ids: Sequence[str]
) -> tuple[list[str], list[list[Any]]]:
    """Values of `paths` for the samples `ids` of `samples`, in the order of `ids`.

    Ids not in `samples` are left out (as ``select(ids, ordered=True)`` would). Never sends more
    than `id_chunk_rows` ids in one command and never uses an ordered select (its per-sample
    ``$indexOfArray`` is quadratic): for a large share of the collection one scan of the whole
    collection (as fast as ``values``), ordered here by a dict; otherwise unordered selects of
    chunks of ids (the ``_id`` index), ordered the same way.
    """
    ids = list(ids)
    columns: list[list[Any]]
    if 4 * len(ids) >= len(samples):
        found, *columns = samples.values(["id", *paths])
    else:
        found, columns = [], [[] for _ in paths]
        for chunk in id_chunks(ids):
            got, *values = samples.select(chunk).values(["id", *paths])
            found += got
            for column, value in zip(columns, values, strict=True):
                column += value
    row = {sample_id: i for i, sample_id in enumerate(found)}
    keep = [row[i] for i in ids if i in row]
    return [found[k] for k in keep], [[column[k] for k in keep] for column in columns]


# --------------------------------------------------------------------------- collections


def with_every_field(samples: Any, param: str = "samples") -> SampleCollection:
    """The collection a public function runs on: the same samples, with any field selection
    (``select_fields`` / ``exclude_fields``, often used to slim the App's sidebar) lifted, so
    that ELFS sees the fields its earlier runs wrote instead of taking them for absent
    (re-embedding every image, or failing after the work); and a view that orders its samples
    (``sort_by``, ``shuffle``, ``take`` ...) sorted by sample id, since clustering starts,
    training batches and seeded draws follow the order of the arrays: the same samples and seed
    give the same result whatever order a view lists them in.

    Raises:
        ElfsInputError: `samples` is not a FiftyOne dataset or view (e.g. a dataset's name), or
            is a view of dynamic groups.
    """
    import fiftyone.core.collections as foc
    import fiftyone.core.stages as fos

    if not isinstance(samples, foc.SampleCollection):
        shown = f"the name {samples!r}" if isinstance(samples, str) else type(samples).__name__
        raise ElfsInputError(
            f"{param} must be a FiftyOne dataset or view, and {shown} was passed. Fix: pass "
            "the dataset itself, e.g. fo.load_dataset('<name>'), or a view of it.",
            param=param,
        )
    if samples._is_dynamic_groups:  # its len() counts groups, its values() lists by group
        raise ElfsInputError(
            f"{param} is a view of dynamic groups (group_by): ELFS selects among samples, and "
            "such a view lists groups. Fix: flatten it, view.group_by('<field>', flat=True), or "
            "pass the dataset (or a view of it without group_by).",
            param=param,
        )
    if not isinstance(samples, fo.DatasetView) or samples._is_generated:
        return samples
    _refuse_repeated_samples(samples, param)
    view = samples
    fields = (fos.SelectFields, fos.ExcludeFields)
    if any(isinstance(stage, fields) for stage in samples._stages):
        view = _with_stages(samples, [s for s in samples._stages if not isinstance(s, fields)])
    if any(_orders(stage) for stage in samples._stages):
        view = view.sort_by("_id")
    return view


def _with_stages(view: fo.DatasetView, stages: list[Any]) -> fo.DatasetView:
    """A view of `view`'s dataset with these stages (some of `view`'s), on its group slice."""
    rebuilt = view._dataset.view()
    for stage in stages:
        rebuilt = rebuilt.add_stage(stage)
    if view.media_type == "group":  # a rebuilt view starts on the default slice
        rebuilt.group_slice = view.group_slice
    return rebuilt


def _refuse_repeated_samples(view: fo.DatasetView, param: str) -> None:
    """Refuses a view that lists a sample more than once (``concat`` of overlapping views, a
    ``mongo`` stage): each sample holds one value per field, so the writes would fail after the
    work, and a layout would plot the sample twice. Only such views are read."""
    import fiftyone.core.stages as fos

    if not any(isinstance(stage, (fos.Concat, fos.Mongo)) for stage in view._stages):
        return
    ids = view.values("id")
    n_distinct = len(set(ids))
    if n_distinct < len(ids):
        raise ElfsInputError(
            f"{param} lists {len(ids)} entries for {n_distinct} distinct samples (a concat of "
            "overlapping views?): ELFS writes one value per sample. Fix: pass each sample "
            "once: dataset.select(view.distinct('id')).",
            param=param,
        )


def _orders(stage: Any) -> bool:
    """Whether a view stage lists the samples in an order of its own (not the dataset's)."""
    import fiftyone.core.stages as fos

    ordering = (fos.SortBy, fos.SortBySimilarity, fos.Shuffle, fos.Take, fos.GroupBy, fos.Mongo)
    ordering += (fos.Concat, fos._GeoStage)
    if isinstance(stage, (fos.Select, fos.SelectBy)):
        return bool(getattr(stage, "_ordered", False))
    return isinstance(stage, ordering)


#: The parts of a dataset's record that ELFS reads: its runs, layouts, annotation runs, saved
#: views (ids of their documents) and fields (names).
_RECORD_PARTS = ("runs", "brain_methods", "annotation_runs", "saved_views", "sample_fields")


def _record_parts(document: dict[str, Any]) -> dict[str, Any]:
    parts = {part: document.get(part) for part in _RECORD_PARTS}
    parts["sample_fields"] = sorted(f["name"] for f in parts["sample_fields"] or [])
    return parts


def refresh_records(samples: SampleCollection) -> None:
    """Reloads the dataset's record (its runs, fields and saved views) if the stored one
    differs from this process's copy: a delegated worker's run, another script. Without it a
    script that queued a run and went on with its loaded dataset read the old runs (it
    selected from scores of replaced pseudo-labels, or sent the user to recompute what the
    worker had just computed). One lookup of the dataset's document.

    Raises:
        ElfsInputError: the record changed and this process has unsaved changes to it (e.g.
            `dataset.info` edited without `dataset.save()`); nothing is changed then.
    """
    dataset = dataset_of(samples)
    doc = dataset._doc
    stored = _database()["datasets"].find_one({"_id": doc.id}, dict.fromkeys(_RECORD_PARTS, 1))
    if stored is None or _record_parts(stored) == _record_parts(doc.to_dict()):
        return  # deleted (the next read says so), or the same
    if _unsaved_edits(doc):
        raise ElfsInputError(
            f"The dataset '{dataset.name}' was changed in the database (by a delegated run or "
            "another script) and this process has unsaved changes to it. Fix: "
            "dataset.save() to store yours, then run again; or dataset.reload() to drop them."
        )
    dataset._reload(hard=True)
    for cache in (dataset._run_cache, dataset._brain_cache, dataset._annotation_cache):
        cache.clear()


#: Parts of a dataset's document that FiftyOne stores as soon as they change (the schema):
#: never a user's unsaved edit. FiftyOne marks the `metadata` entry changed when it loads a
#: dataset with samples (its `created_at` set anew), which is no edit of the user's.
_SAVED_AT_ONCE = ("sample_fields", "frame_fields")


def stored_app_config(dataset: fo.Dataset) -> Any:
    """The dataset's App config as stored now (another process may have changed it since this
    one loaded the dataset: a concurrent run's colours), unless this process has unsaved edits
    to it, which are kept. Read it inside the commit turn before changing it."""
    doc = dataset._doc
    if not any(p.split(".", 1)[0] == "app_config" for p in doc._get_changed_fields()):
        doc.reload("app_config")
    return dataset.app_config


def _unsaved_edits(doc: Any) -> list[str]:
    """The paths of the dataset's document changed in this process and not stored: mongoengine's
    changed fields, but the schema (`_SAVED_AT_ONCE`) and values equal to the stored ones."""
    changed = [p for p in doc._get_changed_fields() if p.split(".", 1)[0] not in _SAVED_AT_ONCE]
    if not changed:
        return []
    tops = {path.split(".", 1)[0] for path in changed}
    stored = _database()["datasets"].find_one({"_id": doc.id}, dict.fromkeys(tops, 1)) or {}
    mine = doc.to_mongo()
    return [path for path in changed if _value_at(mine, path) != _value_at(stored, path)]


def _value_at(document: Any, path: str) -> Any:
    """The value at a dotted path of a stored document (list positions as numbers); None if
    the path is not there."""
    value = document
    for part in path.split("."):
        if isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        elif isinstance(value, dict) and part in value:
            value = value[part]
        else:
            return None
    return value


def dataset_of(samples: SampleCollection) -> fo.Dataset:
    """The dataset a view (or dataset) belongs to: where fields, tags and runs live."""
    return samples._dataset


def records_of(samples: Any, param: str = "dataset") -> fo.Dataset:
    """The dataset whose run records a read-only call (a summary, the keys) or a whole-key
    deletion works on: a view's source dataset (a patches view's too, not FiftyOne's temporary
    one), whatever the view lists; a clear error for anything but a dataset or view."""
    import fiftyone.core.collections as foc

    if not isinstance(samples, foc.SampleCollection):
        with_every_field(samples, param)  # raises its error, naming the parameter and the fix
    return samples._root_dataset


def dataset_id(samples: SampleCollection) -> str:
    """A stable identifier of the dataset (survives renames): names on-disk caches."""
    return str(dataset_of(samples)._doc.id)


def require_nonempty(samples: SampleCollection) -> int:
    """Returns the number of samples, raising a clear error for an empty collection."""
    n = count(samples)
    if n == 0:
        raise ElfsInputError(
            "The dataset or view is empty: there is nothing to select from. "
            "Fix: pass a view that contains samples (check your filters or tags)."
        )
    return n


def require_stored(samples: SampleCollection) -> None:
    """Raises a clear error for a view FiftyOne generates (patches, frames, clips), whose samples
    live in a temporary dataset: fields, runs and saved views written there would not be kept
    (FiftyOne refuses to save field definitions on it, after all the work). Changes nothing."""
    if not samples._is_generated:
        return
    from fiftyone.core.clips import ClipsView
    from fiftyone.core.patches import EvaluationPatchesView, PatchesView
    from fiftyone.core.video import FramesView

    why = (
        "its samples live in a temporary dataset FiftyOne generates, so ELFS's fields, runs and "
        "saved view could not be kept there."
    )
    if isinstance(samples, (PatchesView, EvaluationPatchesView)):
        raise ElfsInputError(
            f"This is a patches view: {why} Fix: select among the images (the dataset, or a view "
            "of it); to select among the objects, export them as images first "
            "(patches.export(export_dir, dataset_type=fo.types.ImageClassificationDirectoryTree, "
            "label_field=...)) and use that folder, or make them a dataset of their own "
            "(objects = patches.clone('<name>')) and pass embeddings_field=<the objects' own "
            "embeddings> (the encoder would read each object's whole image)."
        )
    if isinstance(samples, FramesView):
        raise ElfsInputError(
            f"This is a frames view: {why} Fix: make the frames a dataset of their own, "
            "frames = dataset.to_frames(sample_frames=True).clone('<name>'), and pass that."
        )
    kind = "clips view" if isinstance(samples, ClipsView) else "view FiftyOne generates"
    raise ElfsInputError(
        f"This is a {kind}: {why} Fix: make it a dataset of its own (view.clone('<name>')); "
        "for videos, select among their frames: "
        "dataset.to_frames(sample_frames=True).clone('<name>')."
    )


def require_images(samples: SampleCollection) -> None:
    """Raises a clear error unless the collection's media are images (for a grouped dataset: its
    active slice) held by a dataset (not a generated patches or frames view), before any file is
    read."""
    require_stored(samples)
    media = samples.media_type
    if media == "group":
        media = samples.group_media_types.get(samples.group_slice)
    if media != "image":
        raise ElfsInputError(
            f"ELFS selects among images, and these samples are '{media}' samples. Fix: for "
            "videos, select among their frames as images: "
            "frames = dataset.to_frames(sample_frames=True).clone('<name>'), then pass `frames`; "
            "for a grouped dataset, choose an image slice: dataset.select_group_slices('<slice>')."
        )


def count(samples: SampleCollection) -> int:
    """The number of samples of a collection, without the orderings that end a view (the App
    grid's sort by a field, ``shuffle``): they do not change which samples it holds, and
    counting through them sorts every sample (3 s at 1M samples, each time a form changes)."""
    return len(unordered(samples))


def holds_any(samples: SampleCollection) -> bool:
    """Whether the collection holds a sample: the database stops at the first it finds (a
    count of a filtered view reads every sample: 0.3 s at 200,000, each time a form changes);
    the orderings that end a view are left out, as in `count`."""
    return len(unordered(samples).limit(1)) > 0


def unordered(samples: SampleCollection) -> SampleCollection:
    """The collection without the orderings that end a view (sort_by, shuffle): the same
    samples, without sorting every one of them."""
    import fiftyone.core.stages as fos

    if not isinstance(samples, fo.DatasetView) or samples._is_generated:
        return samples
    stages = list(samples._stages)
    while stages and isinstance(stages[-1], (fos.SortBy, fos.Shuffle)):
        stages.pop()
    if len(stages) == len(samples._stages):
        return samples
    return _with_stages(samples, stages)


def has_field(samples: SampleCollection, field: str) -> bool:
    """Whether the collection's schema has a (top-level) field of this name."""
    return samples.get_field(field) is not None


def is_classification_field(schema_field: Any) -> bool:
    """Whether a schema field (from `get_field`, possibly None) holds `fo.Classification` labels."""
    return getattr(schema_field, "document_type", None) is fo.Classification


def require_classification_field(samples: SampleCollection, field: str, param: str) -> None:
    """Refuses a field that is missing or does not hold `fo.Classification` labels."""
    schema_field = samples.get_field(field)
    if not is_classification_field(schema_field):
        found = "missing" if schema_field is None else type(schema_field).__name__
        raise ElfsInputError(
            f"'{field}' must be a field of fo.Classification labels; it is {found}. Fix: "
            "pass the field your annotations were loaded into (e.g. 'ground_truth').",
            param=param,
        )


def require_labels(samples: SampleCollection, field: str, param: str) -> None:
    """Refuses a Classification field that holds no label in `samples` (the answers were
    loaded into another field, or not yet): a run "with labels" would have none."""
    if samples.exists(f"{field}.label").limit(1).count() == 0:
        raise ElfsInputError(
            f"'{field}' holds no labels in these samples. Fix: load the annotations first "
            f"(load_from_label_studio(..., label_field='{field}')), or pass the field they were "
            "loaded into.",
            param=param,
        )


def require_field(samples: SampleCollection, field: str, param: str, what: str) -> None:
    """Refuses a field name the dataset does not have; `what` says what it should hold."""
    if not has_field(samples, field):
        raise ElfsInputError(
            f"The {what} '{field}' does not exist on this dataset. Fix: pass an existing field "
            f"(e.g. the one annotations were loaded into), or {param}=None.",
            param=param,
        )


# --------------------------------------------------------------------------- reads


def sample_ids_and_paths(samples: SampleCollection) -> tuple[list[str], list[str]]:
    """Returns the sample ids and media paths of a collection, in one query."""
    ids, paths = samples.values(["id", "filepath"])
    return list(ids), list(paths)


def ids_and_paths_without(samples: SampleCollection, field: str) -> tuple[list[str], list[str]]:
    """Ids and media paths of the samples with no value in `field` (all, if it is missing)."""
    todo = samples.exists(field, False) if has_field(samples, field) else samples
    return sample_ids_and_paths(todo)


def files_changed_since(
    samples: SampleCollection, field: str, since: datetime.datetime
) -> tuple[list[str], list[str]]:
    """Ids and media paths of the samples with a value in `field` whose local file was modified
    after `since` (a naive datetime is UTC): an image rewritten in place, or a sample pointed at
    a newer file, since its value was computed. URLs and files that cannot be read are left
    out (the stage that reads them says so)."""
    if not has_field(samples, field):
        return [], []
    cutoff = (since if since.tzinfo else since.replace(tzinfo=datetime.timezone.utc)).timestamp()
    changed = []
    for sample_id, path in zip(*sample_ids_and_paths(samples.exists(field)), strict=True):
        try:
            if "://" not in path and os.stat(path).st_mtime > cutoff:
                changed.append((sample_id, path))
        except OSError:
            continue
    return [i for i, _ in changed], [p for _, p in changed]


def distinct_tags(samples: SampleCollection) -> list[str]:
    """The tags on samples of `samples` (every group slice, as `ids_with_tags` reads them), each
    once (one aggregation)."""
    return list(every_slice(samples).distinct("tags"))


def ids_with_tags(samples: SampleCollection, tags: Sequence[str]) -> list[str]:
    """Ids of the samples that carry any of `tags`."""
    return list(every_slice(samples).match_tags(list(tags)).values("id"))


def ids_with_values(samples: SampleCollection, field: str) -> list[str]:
    """Ids of the samples whose `field` is set (not None)."""
    if not has_field(samples, field):
        return []
    return list(samples.exists(field).values("id"))


def read_values(
    samples: SampleCollection, field: str, ids: Sequence[str] | None = None
) -> tuple[list[str], list[Any]]:
    """Ids and values of the samples that have a value in `field` (or of `ids`, in order)."""
    if ids is not None:
        found, (values,) = _values_of_ids(samples, [field], ids)
        return found, values
    ids_, values = samples.exists(field).values(["id", field])
    return list(ids_), list(values)


def read_columns(
    samples: SampleCollection, paths: Sequence[str], having: Sequence[str] = ()
) -> list[list[Any]]:
    """One list of values per field path (e.g. "id", "label.confidence"), in one query; only
    samples with a value in every field of `having`."""
    for field in having:
        samples = samples.exists(field)
    return [list(column) for column in samples.values(list(paths))]


def distinct_values(samples: SampleCollection, path: str) -> list[Any]:
    """The distinct values of a field path (e.g. "label_field.label"), one aggregation."""
    return list(samples.distinct(path))


def read_labels(samples: SampleCollection, field: str, ids: Sequence[str]) -> list[str | None]:
    """Reads the `label` of a Classification field for the given sample ids, in that order
    (None for a sample without one, or not in `samples`); any number of ids."""
    found, (labels,) = _values_of_ids(samples, [f"{field}.label"], ids)
    by_id = dict(zip(found, labels, strict=True))
    return [by_id.get(i) for i in ids]


def hides_labels(samples: SampleCollection) -> bool:
    """Whether a view hides labels of the samples it holds (``filter_labels``, the App's sidebar
    filters; ``select_labels`` ...): read through it, a hidden label looks absent."""
    import fiftyone.core.stages as fos

    hiding = (fos.FilterLabels, fos.SelectLabels, fos.ExcludeLabels, fos.LimitLabels)
    stages = getattr(samples, "_stages", [])
    return any(isinstance(stage, (*hiding, fos.FilterField)) for stage in stages)


def labels_of_samples(samples: SampleCollection, field: str) -> tuple[list[str], list[str]]:
    """Ids and labels of the samples of `samples` with a Classification label in `field`, in
    their order, the labels read from the dataset: a label the view hides counts."""
    ids = list(samples.values("id"))
    labels = read_labels(every_slice(dataset_of(samples)), field, ids)
    kept = [(i, label) for i, label in zip(ids, labels, strict=True) if label is not None]
    return [i for i, _ in kept], [label for _, label in kept]


def read_labelled(samples: SampleCollection, field: str) -> tuple[list[str], list[str], list[str]]:
    """Ids, media paths and labels of the samples with a Classification label in `field`."""
    ids, paths, labels = samples.exists(field).values(["id", "filepath", f"{field}.label"])
    return list(ids), list(paths), list(labels)


#: Embeddings already read inside a `reuse_embeddings` block: (collection, field) -> (the
#: collection, ids, X). A context variable, so concurrent operator runs do not share it.
_EMBEDDINGS_READ: contextvars.ContextVar[dict | None] = contextvars.ContextVar(
    "elfs_embeddings_read", default=None
)


@contextlib.contextmanager
def reuse_embeddings() -> Iterator[None]:
    """Within the block, each collection's embeddings field is read from the database once.

    Why: the pipeline's stages each read the embeddings (pseudo-labels, difficulty, plot); at
    1.28M x 512 one read is minutes of database time and a 2.6 GB array. Inside the block a
    second `read_embeddings` of the same collection object and field returns the rows already
    read (`having` and `ids` select rows of them). A write to that field through this module
    (`write_values`) forgets what was read of it.
    """
    token = _EMBEDDINGS_READ.set({} if _EMBEDDINGS_READ.get() is None else _EMBEDDINGS_READ.get())
    try:
        yield
    finally:
        _EMBEDDINGS_READ.reset(token)


def _forget_read(field: str) -> None:
    """Drops what a `reuse_embeddings` block read of `field` (it is being written)."""
    read = _EMBEDDINGS_READ.get()
    if read:
        for key in [k for k in read if k[1] == field]:
            del read[key]


#: Fields of one number (or id) per sample: not embeddings, though each reads as a 1-d "vector".
_SCALAR_FIELDS_NOT_VECTORS = (fo.FloatField, fo.IntField, fo.BooleanField, fo.ObjectIdField)
#: Fields of labels, text or dates (or lists of them): no embeddings either.
_FIELDS_NOT_VECTORS = (
    fo.EmbeddedDocumentField,
    fo.DictField,
    fo.StringField,
    fo.DateField,
    fo.DateTimeField,
    fo.BooleanField,
    fo.ObjectIdField,
)
#: Embedding values of larger magnitude are refused: no encoder comes near (unit-norm or ReLU
#: features are below 1e3), and above about 1e18 a 1,280-d vector's squared norm overflows
#: float32 (k-means then put every sample in one cluster, the plot failed inside numpy); at
#: 1e15 squared norms stay below 1e35 for up to 100,000 dimensions.
MAX_EMBEDDING_MAGNITUDE = 1e15


def require_vector_field(samples: SampleCollection, field: str) -> None:
    """Refuses, from the schema alone (also an App form's check), a field whose type cannot
    hold embeddings: one number or id per sample (a FloatField, 'id'), or labels, text, dates.
    (A field without a declared type is checked by its values, `read_embeddings`.)"""
    schema_field = samples.get_field(field)
    if isinstance(schema_field, _SCALAR_FIELDS_NOT_VECTORS):
        kind = "id" if isinstance(schema_field, fo.ObjectIdField) else "value"
        name = type(schema_field).__name__
        article = "an" if name[0] in "AEIOU" else "a"
        raise ElfsInputError(
            f"'{field}' is {article} {name} (one {kind} per sample), not a "
            "vector field, so it cannot be used as embeddings. Fix: pass a vector field, e.g. "
            "'<key>_embedding' from compute_embeddings or a field of one array per sample.",
            param="embeddings_field",
        )
    kind = schema_field
    if isinstance(kind, fo.ListField) and kind.field is not None:
        kind = kind.field  # a list's elements: numbers make a vector
    if isinstance(kind, _FIELDS_NOT_VECTORS):
        found = getattr(kind, "document_type", None) or type(kind)
        raise ElfsInputError(
            f"The field '{field}' does not hold numeric vectors (it holds {found.__name__} "
            "values), so it cannot be used as embeddings. Fix: pass a vector field (e.g. "
            "'<key>_embedding' from compute_embeddings).",
            param="embeddings_field",
        )


def read_embeddings(
    samples: SampleCollection,
    field: str,
    ids: Sequence[str] | None = None,
    having: str | None = None,
) -> tuple[list[str], np.ndarray]:
    """Reads an embeddings field as an [N, dim] float32 array, checking it is usable.

    Samples without a value are left out (their images could not be read), and so are those
    without a value in `having` if given; with `ids`, exactly those samples are read, in that
    order. A NaN, a non-numeric value or a vector of the wrong dimension is an error, since it
    would silently corrupt the clustering.

    Memory: the vectors are read `id_chunk_rows` samples at a time into one preallocated float32
    matrix, so the peak is that matrix plus one chunk of decoded vectors (not the two or three
    copies of all of them that reading everything at once costs).
    """
    if not has_field(samples, field):
        raise ElfsInputError(
            f"The embeddings field '{field}' does not exist on this dataset. "
            "Fix: run compute_embeddings first, or pass embeddings_field=<an existing vector "
            "field>.",
            param="embeddings_field",
        )
    require_vector_field(samples, field)
    read = _EMBEDDINGS_READ.get()
    cached = None if read is None else read.get((id(samples), field))
    if cached is not None:
        _, all_ids, X = cached
    elif ids is not None and read is None:  # only the rows asked for
        all_ids, X = _read_vector_rows(samples.exists(field), field, ids)
    else:
        all_ids, X = _read_vector_rows(samples.exists(field), field)
        if read is not None:
            read[(id(samples), field)] = (samples, all_ids, X)
    if having is None and ids is None:
        return list(all_ids), X
    keep = np.ones(len(all_ids), dtype=bool)
    if having is not None:
        with_value = set(samples.exists(field).exists(having).values("id"))
        keep = np.fromiter((i in with_value for i in all_ids), dtype=bool, count=len(all_ids))
    row = {sample_id: r for r, sample_id in enumerate(all_ids) if keep[r]}
    order = [row[i] for i in ids if i in row] if ids is not None else np.flatnonzero(keep)
    if len(order) == 0:
        raise ElfsInputError(
            f"None of the requested samples has a value in '{field}'"
            + (f" and in '{having}'" if having else "")
            + ". Fix: run compute_embeddings (and the stage that writes it) on this view first.",
            param="embeddings_field",
        )
    if len(order) == len(all_ids) and np.array_equal(order, np.arange(len(all_ids))):
        return list(all_ids), X
    return [all_ids[r] for r in order], X[np.asarray(order)]


def _decode_vectors(stored: list[Any]) -> list[Any]:
    """Vectors as FiftyOne stores them (the zlib-compressed bytes of an .npy file) as numpy
    arrays; other values (lists, strings) as they are, for `_read_vector_rows` to check.

    Why not FiftyOne's own decoding (`values` without ``_raw``): it parses every vector's .npy
    header; here a row whose header equals the previous one's (same dtype and shape) is read
    straight from its buffer: at 200k x 512, 3.7 s of decoding against about 18 s.
    """
    out: list[Any] = []
    header, dtype, shape = b"", None, ()
    for value in stored:
        if not isinstance(value, bytes):
            out.append(value)
            continue
        try:
            buffer = zlib.decompress(value)
        except zlib.error:
            out.append(value)  # not a stored vector: reported as such
            continue
        if dtype is not None and buffer.startswith(header):
            out.append(np.frombuffer(buffer, dtype, offset=len(header)).reshape(shape))
            continue
        try:
            array = np.load(io.BytesIO(buffer), allow_pickle=False)
        except ValueError:
            out.append(value)
            continue
        out.append(array)
        # the same header means the same dtype, shape and order: C-ordered rows read directly
        fast = array.ndim <= 1 or array.flags.c_contiguous
        if fast:
            header, dtype, shape = buffer[: len(buffer) - array.nbytes], array.dtype, array.shape
        else:
            header, dtype, shape = b"", None, ()
    return out


#: zlib level of stored vectors: 1 compresses float32 embeddings within a few percent of
#: FiftyOne's default level 6 (3,036 against 2,920 bytes for a 1280-d ReLU-like vector) in half
#: the time (0.14 against 0.32 ms per vector, FiftyOne's serialize_numpy_array included).
_VECTOR_ZLIB_LEVEL = 1
#: zlib strategy of stored vectors: run-length matches only. The bytes of float32 features
#: rarely repeat beyond runs (of zeros: 47% of EfficientNet-Lite0's pooled values on CIFAR-10),
#: so the full match search of the default strategy costs time for nothing: on 600 real
#: 1280-d vectors, 0.155 against 0.196 ms each, and 3,006 against 3,108 bytes. Any zlib reader
#: (FiftyOne's `deserialize_numpy_array`) reads the stream as before.
_VECTOR_ZLIB_STRATEGY = zlib.Z_RLE


#: Threads that compress vectors at once (zlib releases the GIL while it compresses).
_VECTOR_ENCODE_THREADS = 4
#: Fewer vectors than this per thread are not worth a thread.
_VECTORS_PER_THREAD = 2048


def _encode_vectors(values: Sequence[Any], threads: int | None = None) -> list[Any]:
    """Vectors in FiftyOne's stored form (the zlib-compressed bytes of an .npy file, which
    `fou.deserialize_numpy_array` and `_decode_vectors` read) and None as None.

    Why not `fou.serialize_numpy_array`: it writes each vector's .npy header through np.save
    and compresses at zlib's default level; here the header is built once per dtype and shape,
    the compression is faster (`_VECTOR_ZLIB_LEVEL`) and runs on every available core, the
    format unchanged. (Compressing is most of the time spent writing an embedding field: 0.09
    ms per 1280-d vector on one core here; on two, 0.045.) `threads`: how many compress at
    once; by default one per available core (at most 4) and per 2,048 vectors.
    """
    if threads is None:
        threads = min(_VECTOR_ENCODE_THREADS, available_cpus(), len(values) // _VECTORS_PER_THREAD)
    threads = min(threads, len(values))
    if threads <= 1:
        return _encode_vector_run(values)
    step = -(-len(values) // threads)
    runs = [values[start : start + step] for start in range(0, len(values), step)]
    with concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="elfs-encode") as pool:
        return [stored for run in pool.map(_encode_vector_run, runs) for stored in run]


def _encode_vector_run(values: Sequence[Any]) -> list[Any]:
    """`_encode_vectors` of one run of values, in one thread."""
    from numpy.lib import format as npy_format

    headers: dict[tuple[str, tuple[int, ...]], bytes] = {}
    out: list[Any] = []
    for value in values:
        if value is None:
            out.append(None)
            continue
        array = np.asarray(value)
        if array.dtype.hasobject:  # np.save refuses these too; let FiftyOne say so
            out.append(fou.serialize_numpy_array(array))
            continue
        key = (array.dtype.str, array.shape)
        header = headers.get(key)
        if header is None:
            buffer = io.BytesIO()
            npy_format.write_array_header_1_0(
                buffer,
                {
                    "descr": npy_format.dtype_to_descr(array.dtype),
                    "fortran_order": False,
                    "shape": array.shape,
                },
            )
            header = headers[key] = buffer.getvalue()
        compressor = zlib.compressobj(
            _VECTOR_ZLIB_LEVEL, zlib.DEFLATED, zlib.MAX_WBITS, 8, _VECTOR_ZLIB_STRATEGY
        )
        out.append(compressor.compress(header + array.tobytes(order="C")) + compressor.flush())
    return out


def _read_vector_rows(
    view: SampleCollection, field: str, ids: Sequence[str] | None = None
) -> tuple[list[str], np.ndarray]:
    """The vectors of `field` in `view` (all have a value) as float32 rows, read in chunks: of
    every sample, or of `ids` in that order (those not in `view` left out)."""
    whole = ids is None and len(view) <= id_chunk_rows()  # one plain scan holds them all
    if whole:
        ids = []  # the scan returns them
    elif ids is None:
        ids = list(view.values("id"))
    else:
        ids = list(dict.fromkeys(ids))
    X: np.ndarray | None = None
    dims: collections.Counter = collections.Counter()
    kinds: set[str] = set()
    odd_rows: list[int] = []  # rows whose value is not a numeric vector (the first 5)
    n_odd = 0
    not_finite: list[int] = []
    n_not_finite = 0
    huge: list[int] = []  # rows with a value beyond MAX_EMBEDDING_MAGNITUDE (the first 5)
    n_huge, largest = 0, 0.0
    row = 0
    kept: list[str] = []  # the ids read, in order (an id not in `view` is left out)
    for chunk in [ids] if whole else id_chunks(ids):
        source = view if whole else view.select(chunk)
        got, vectors = source.values(["id", field], _raw=True)
        vectors = _decode_vectors(vectors)
        if not whole:  # an unordered select: put the chunk back in the order of `ids`
            position = {sample_id: k for k, sample_id in enumerate(got)}
            kept += [i for i in chunk if i in position]
            vectors = [vectors[position[i]] for i in chunk if i in position]
        else:
            kept = list(got)
        arrays = [np.asarray(v) for v in vectors]
        odd = [k for k, a in enumerate(arrays) if a.dtype.kind not in "biuf"]
        kinds.update(type(vectors[k]).__name__ for k in odd)
        n_odd += len(odd)
        odd_rows += [row + k for k in odd[: max(0, 5 - len(odd_rows))]]
        del vectors
        dims.update(a.size for a in arrays)
        if kinds or len(dims) != 1 or 0 in dims:
            row += len(arrays)
            continue  # counted for the error below; nothing more to store
        if X is None:
            X = np.empty((len(arrays) if whole else len(ids), next(iter(dims))), np.float32)
        block = X[row : row + len(arrays)]
        for k, a in enumerate(arrays):
            block[k] = a.ravel()
        # each row's extremes (reductions: no [rows, dim] temporary); NaN propagates into them
        high, low = block.max(axis=1), block.min(axis=1)
        finite = np.isfinite(high) & np.isfinite(low)
        bad = np.flatnonzero(~finite)
        n_not_finite += bad.size
        not_finite += [row + int(b) for b in bad[: max(0, 5 - len(not_finite))]]
        magnitude = np.maximum(high, -low, where=finite, out=np.zeros_like(high))
        too_large = np.flatnonzero(magnitude > MAX_EMBEDDING_MAGNITUDE)
        n_huge += too_large.size
        huge += [row + int(b) for b in too_large[: max(0, 5 - len(huge))]]
        largest = max(largest, float(magnitude.max(initial=0.0)))
        row += len(arrays)
    if not kept:
        raise ElfsInputError(
            f"No sample in this collection has a value in '{field}'. "
            "Fix: run compute_embeddings on this view first.",
            param="embeddings_field",
        )
    if kinds and n_odd < len(kept):  # some vectors, e.g. one holding a JSON export's null
        raise ElfsInputError(
            f"{n_odd} of the {len(kept)} values in '{field}' are not numeric vectors (e.g. "
            f"samples {[kept[r] for r in odd_rows]}: a list holding None or text?). Fix: "
            "recompute or correct those vectors, or exclude those samples from the view "
            "(view.exclude([...]) with the ids named).",
            param="embeddings_field",
        )
    if kinds:
        raise ElfsInputError(
            f"The field '{field}' does not hold numeric vectors (found {sorted(kinds)}), so it "
            "cannot be used as embeddings. Fix: pass a vector field (e.g. '<key>_embedding' "
            "from compute_embeddings).",
            param="embeddings_field",
        )
    if len(dims) != 1:
        raise ElfsInputError(
            f"The embeddings in '{field}' have different dimensions {sorted(dims)} "
            f"(samples per dimension: {dict(dims)}). Fix: recompute them with one model, e.g. "
            "compute_embeddings(..., overwrite=True).",
            param="embeddings_field",
        )
    if 0 in dims:
        raise ElfsInputError(
            f"The embeddings in '{field}' are empty (0 values each), so there is nothing to "
            f"cluster or plot. Fix: recompute them (compute_embeddings(..., overwrite=True), "
            "into this field or the key's own), or pass embeddings_field=<a field of "
            "non-empty vectors>.",
            param="embeddings_field",
        )
    if n_not_finite:
        first = [kept[i] for i in not_finite]
        raise ElfsInputError(
            f"{n_not_finite} embeddings in '{field}' contain NaN or infinite values "
            f"(e.g. samples {first}). Fix: recompute them "
            "(compute_embeddings(..., overwrite=True)) "
            "or exclude those samples from the view.",
            param="embeddings_field",
        )
    if n_huge:
        first = [kept[i] for i in huge]
        raise ElfsInputError(
            f"{n_huge} embeddings in '{field}' have values of magnitude above "
            f"{MAX_EMBEDDING_MAGNITUDE:.0e} (largest {largest:.1e}; e.g. samples {first}), far "
            "beyond any encoder's output: squared norms of such vectors reach float32's limit, "
            "where clustering and the plot fail or collapse. Fix: recompute them "
            "(compute_embeddings(..., overwrite=True)), rescale the field (e.g. divide each "
            "vector by its norm), or exclude those samples from the view.",
            param="embeddings_field",
        )
    assert X is not None
    return kept, (X if row == X.shape[0] else X[:row].copy())


def missing_ids_and_paths(samples: SampleCollection, field: str) -> list[tuple[str, str]]:
    """(id, media path) of the samples of `samples` without a value in `field`."""
    missing = samples.exists(field, False)
    return list(zip(*missing.values(["id", "filepath"]), strict=True))


# --------------------------------------------------------------------------- writes


def write_values(
    samples: SampleCollection, field: str, ids: Sequence[str], values: Sequence[Any]
) -> None:
    """Writes one value per sample id into `field`, in a single bulk update."""
    if len(ids) != len(values):
        raise ValueError(f"got {len(ids)} ids but {len(values)} values")
    _forget_read(field)
    dataset = dataset_of(samples)
    size = id_chunk_rows()
    for start in range(0, len(ids), size):
        stop = start + size
        dataset.set_values(
            field, dict(zip(ids[start:stop], values[start:stop], strict=True)), key_field="id"
        )


@dataclasses.dataclass(frozen=True)
class ClassificationColumn:
    """One `fo.Classification` per sample, given as label names and optional confidences.

    `stage_rows` stores these as FiftyOne's own label documents without building a FiftyOne
    label object per sample (at 1.28M samples the objects alone took over a minute). Slices
    like a list, so a staged write can go in chunks.
    """

    labels: Sequence[str]
    confidences: Sequence[float] | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, rows: slice) -> ClassificationColumn:
        return ClassificationColumn(
            self.labels[rows], None if self.confidences is None else self.confidences[rows]
        )

    def documents(self) -> list[dict[str, Any]]:
        """The label documents, as FiftyOne serialises `fo.Classification(label, confidence)`."""
        docs = [
            {"_id": ObjectId(), "_cls": "Classification", "tags": [], "label": str(label)}
            for label in self.labels
        ]
        if self.confidences is not None:
            for doc, conf in zip(docs, self.confidences, strict=True):
                doc["confidence"] = float(conf)
        return docs


#: Python type of every value of a column -> the FiftyOne field it is stored in (`column_kind`).
_SCALAR_FIELDS = {
    float: fo.FloatField,
    int: fo.IntField,
    bool: fo.BooleanField,
    str: fo.StringField,
}


@dataclasses.dataclass(frozen=True)
class ColumnKind:
    """The FiftyOne field a column of values is stored in (`column_kind`)."""

    field_type: type
    embedded_doc_type: type | None = None


def column_kind(values: Sequence[Any]) -> ColumnKind:
    """The field type of a column: Python floats (ints among them allowed), ints, bools or
    strings, numpy vectors, or a `ClassificationColumn` (None allowed in each).

    Raises:
        TypeError: other values (no stage writes them).
    """
    if isinstance(values, ClassificationColumn):
        return ColumnKind(fo.EmbeddedDocumentField, fo.Classification)
    types = {type(v) for v in values} - {type(None)}
    if types and all(issubclass(t, np.ndarray) for t in types):
        return ColumnKind(fo.VectorField)
    if float in types and types <= {int, float}:
        return ColumnKind(fo.FloatField)
    if len(types) == 1 and next(iter(types)) in _SCALAR_FIELDS:
        return ColumnKind(_SCALAR_FIELDS[next(iter(types))])
    raise TypeError(f"cannot store a column of {sorted(t.__name__ for t in types)} values")


def _stored_values(values: Sequence[Any], kind: ColumnKind) -> list[Any]:
    """A column as FiftyOne stores it in the database."""
    if isinstance(values, ClassificationColumn):
        return values.documents()
    if kind.field_type is fo.VectorField:
        return _encode_vectors(values)
    if kind.field_type is fo.FloatField:
        return [None if v is None else float(v) for v in values]
    return list(values)


def _database() -> Any:
    import fiftyone.core.odm as foo

    return foo.get_db_conn()


def new_staging_collection(dataset: fo.Dataset) -> str:
    """A fresh name for a staging collection of the dataset (`stage_rows`), in FiftyOne's
    database; nothing is created until rows are staged."""
    return f"{STAGING_COLLECTION_PREFIX}{dataset_id(dataset)}_{uuid.uuid4().hex[:8]}"


def staging_collections(dataset: fo.Dataset | None = None) -> list[str]:
    """The staging collections that exist (of `dataset`, or of every dataset)."""
    prefix = STAGING_COLLECTION_PREFIX + (f"{dataset_id(dataset)}_" if dataset is not None else "")
    return sorted(c for c in _database().list_collection_names() if c.startswith(prefix))


def staging_dataset_id(collection: str) -> str:
    """The id of the dataset a staging collection (`new_staging_collection`) belongs to."""
    return collection[len(STAGING_COLLECTION_PREFIX) :].rsplit("_", 1)[0]


def stage_rows(
    collection: str, ids: Sequence[str], columns: dict[str, Any], kinds: dict[str, ColumnKind]
) -> None:
    """Inserts one small document per sample id into the staging collection `collection`:
    the sample's ``_id``, its value of each column (`kinds`: `column_kind` of each full
    column) and FiftyOne's ``last_modified_at``. The samples are not touched (`commit_staged`
    moves the values into their fields).
    """
    ids = list(ids)
    stored = []
    for field, values in columns.items():
        if len(values) != len(ids):
            raise ValueError(f"got {len(ids)} ids but {len(values)} values for '{field}'")
        stored.append(_stored_values(values, kinds[field]))
    if not ids:
        return
    now = datetime.datetime.utcnow()  # FiftyOne's own `last_modified_at` convention
    docs = [
        {"_id": ObjectId(sample_id), **dict(zip(columns, row, strict=True))}
        for sample_id, row in zip(ids, zip(*stored, strict=True), strict=True)
    ]
    for doc in docs:
        doc["last_modified_at"] = now
    _database()[collection].insert_many(docs, ordered=False)


def commit_staged(
    dataset: fo.Dataset,
    collection: str,
    kinds: dict[str, ColumnKind],
    ids: Sequence[str],
    marks: dict[str, dict[str, Any]] | None = None,
) -> None:
    """Moves the staged values of `collection` into their sample fields in one server-side
    ``$merge`` (one pass over the samples), then drops the collection.

    Fields that do not exist are declared first with their `ColumnKind` and their entry of
    `marks` (`field_mark`: a field ELFS creates carries its run's mark from its first moment,
    so one a user creates under that name after an interruption is told apart); existing ones
    keep the other samples' values (a resumable stage adds to its field). Why not FiftyOne's
    `set_values`: at 1.28M samples of ~2.3 KB each (the embedding is in the document), a bulk
    update per sample costs about twice one server-side pass (`benchmarks/results/scale`), and
    staging into a separate collection keeps every result field whole or absent after an
    interruption without a staging field to rename. `ids`: the staged samples, whose loaded
    `fo.Sample` objects are reloaded.
    """
    import fiftyone.core.sample as fos

    for field, kind in kinds.items():
        _forget_read(field)
        if dataset.get_field(field) is None:
            extra = {"embedded_doc_type": kind.embedded_doc_type} if kind.embedded_doc_type else {}
            if marks and field in marks:
                extra["info"] = {MARK: marks[field]}
            dataset.add_sample_field(field, kind.field_type, **extra)
    merge = {
        "into": dataset._sample_collection_name,
        "on": "_id",
        "whenMatched": "merge",
        "whenNotMatched": "discard",  # a sample deleted meanwhile stays deleted
    }
    _database()[collection].aggregate([{"$merge": merge}])
    drop_staging(collection)
    fos.Sample._reload_docs(dataset._sample_collection_name, sample_ids=list(ids))


def drop_staging(collection: str) -> None:
    """Drops a staging collection (absent: nothing to do)."""
    _database().drop_collection(collection)


def classifications(labels: Sequence[str], confidences: Sequence[float] | None = None) -> list:
    """`fo.Classification` values for `write_values` (confidence optional)."""
    if confidences is None:
        return [fo.Classification(label=str(label)) for label in labels]
    return [
        fo.Classification(label=str(label), confidence=float(conf))
        for label, conf in zip(labels, confidences, strict=True)
    ]


def write_classifications(
    samples: SampleCollection,
    field: str,
    ids: Sequence[str],
    labels: Sequence[str],
    confidences: Sequence[float],
) -> None:
    """Writes pseudo-labels as `fo.Classification(label, confidence)` in one bulk update."""
    write_values(samples, field, ids, classifications(labels, confidences))


def add_classification_field(dataset: fo.Dataset, field: str) -> None:
    """Declares an (empty) field of `fo.Classification` labels."""
    dataset.add_sample_field(field, fo.EmbeddedDocumentField, embedded_doc_type=fo.Classification)


def write_zoo_embeddings(
    samples: SampleCollection,
    model: Any,
    field: str,
    ids: Sequence[str],
    batch_size: int,
    mark: dict[str, Any],
) -> None:
    """Embeds the samples `ids` with a FiftyOne zoo model into `field` (FiftyOne reads them);
    a field it creates is declared first with the run's `mark` (as `commit_staged` does)."""
    _forget_read(field)
    dataset = dataset_of(samples)
    if dataset.get_field(field) is None:
        dataset.add_sample_field(field, fo.VectorField, info={MARK: mark})
    for chunk in id_chunks(ids):
        samples.select(chunk).compute_embeddings(
            model, embeddings_field=field, batch_size=batch_size, skip_failures=True
        )


def export_dataset(samples: SampleCollection, export_dir: str) -> None:
    """Writes the samples with their media as a FiftyOne dataset folder.

    Samples of a grouped dataset keep its group layout; the folder's default slice is made the
    one holding most of them (FiftyOne writes the dataset's own, and a coreset drawn from
    another slice then opened empty).
    """
    samples.export(export_dir=export_dir, dataset_type=fo.types.FiftyOneDataset, export_media=True)
    group_field = dataset_of(samples).group_field
    if group_field is None:
        return
    per_slice = every_slice(samples).count_values(f"{group_field}.name")
    if not per_slice:
        return
    path = os.path.join(export_dir, "metadata.json")
    with open(path, encoding="utf-8") as f:
        metadata = json.load(f)
    metadata["default_group_slice"] = max(sorted(per_slice), key=per_slice.get)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(metadata, f)


def delete_fields(dataset: fo.Dataset, fields: Sequence[str]) -> None:
    """Deletes the given sample fields from the dataset, ignoring ones that do not exist."""
    existing = [f for f in fields if dataset.get_field(f) is not None]
    if existing:
        dataset.delete_sample_fields(existing)


def every_slice(samples: SampleCollection) -> SampleCollection:
    """`samples` with the samples of every group slice: on a grouped collection FiftyOne's
    select, match, tag and untag reach only the active slice, so a coreset drawn from another
    slice (or several) would be tagged nowhere, or in part. Other collections as they are."""
    if samples.media_type != "group":
        return samples
    return samples.select_group_slices(_allow_mixed=True)


def tagged(samples: SampleCollection, tag: str) -> SampleCollection:
    """The samples of `samples` carrying `tag`, whatever their group slice (`every_slice`)."""
    return every_slice(samples).match_tags(tag)


def add_tag(dataset: fo.Dataset, tag: str, ids: Sequence[str]) -> None:
    """Puts `tag` on the samples `ids` (one bulk update per `id_chunk_rows` ids)."""
    for chunk in id_chunks(ids):
        every_slice(dataset).select(chunk).tag_samples(tag)


def replace_tag(dataset: fo.Dataset, tag: str, ids: Sequence[str]) -> None:
    """Removes `tag` from every sample of the dataset, then puts it on exactly `ids`."""
    remove_tag(dataset, tag)
    add_tag(dataset, tag, ids)


def remove_tag(dataset: fo.Dataset, tag: str) -> None:
    """Removes `tag` from every sample of the dataset (every group slice)."""
    every_slice(dataset).untag_samples(tag)


def has_tag(dataset: fo.Dataset, tag: str) -> bool:
    """Whether any sample of the dataset carries `tag`.

    One match with a limit of one: it stops at the first tagged sample (at 1.28M samples
    2.5 s when no sample has the tag, against 4-12 s for counting every tag)."""
    return len(tagged(dataset, tag).limit(1)) > 0


def save_tagged_view(dataset: fo.Dataset, name: str, tag: str, description: str) -> None:
    """Saves (or replaces) a view of the samples carrying `tag` under `name` (of a grouped
    dataset: its image slices, where ELFS selects)."""
    view = dataset
    if dataset.media_type == "group":
        view = dataset.select_group_slices(media_type="image")
    dataset.save_view(name, view.match_tags(tag), description=description, overwrite=True)


MARK = "fiftyone_elfs"  # the key of a field's `info` that says which ELFS run wrote it


def field_mark(dataset: fo.Dataset, field: str) -> dict[str, Any] | None:
    """The mark an ELFS run left on a field (its `info`), None if unmarked or absent.

    Field info survives renames and clones, and a field deleted and re-created under the same
    name (the user's own, then) has none: it tells an ELFS output from user data of its name.
    """
    schema_field = dataset.get_field(field)
    info = getattr(schema_field, "info", None) or {}
    return info.get(MARK)


def mark_field(dataset: fo.Dataset, field: str, mark: dict[str, Any]) -> None:
    """Leaves `mark` in a field's `info` (other info kept)."""
    schema_field = dataset.get_field(field)
    schema_field.info = {**(schema_field.info or {}), MARK: mark}
    schema_field.save()


def has_saved_view(dataset: fo.Dataset, name: str) -> bool:
    """Whether the dataset has a saved view of that name."""
    return dataset.has_saved_view(name)


def saved_view_sharing_slug(dataset: fo.Dataset, name: str) -> str | None:
    """Another saved view that saving `name` would replace: FiftyOne identifies saved views by
    their URL slug, so 'ELFS-coreset' replaces 'elfs-coreset' and 'my_set-coreset' replaces
    'my set-coreset'; None if there is none."""
    import fiftyone.core.utils as fou

    slug = fou.to_slug(name)
    return next(
        (
            other
            for other in dataset.list_saved_views()
            if other != name and fou.to_slug(other) == slug
        ),
        None,
    )


def delete_saved_view(dataset: fo.Dataset, name: str) -> None:
    """Deletes a saved view if it exists."""
    if dataset.has_saved_view(name):
        dataset.delete_saved_view(name)


# --------------------------------------------------------------------------- brain layouts


def brain_runs(dataset: fo.Dataset) -> list[str]:
    """The dataset's brain keys."""
    return list(dataset.list_brain_runs())


def delete_brain_run(dataset: fo.Dataset, brain_key: str) -> None:
    """Deletes a brain run if it exists."""
    if brain_key in dataset.list_brain_runs():
        dataset.delete_brain_run(brain_key)


def write_layout(
    samples: SampleCollection,
    brain_key: str,
    ids: Sequence[str],
    embeddings: np.ndarray,
    method: str,
    owned: Sequence[str] = (),
    **kwargs: Any,
) -> None:
    """Registers a 2-D layout of `embeddings` (rows = `ids`) as a FiftyOne Brain run.

    FiftyOne Brain computes the layout (`method` "umap" or "pca") and the App's Embeddings panel
    plots it. A failed run is removed (FiftyOne leaves it registered). The run's view is
    `layout_base` (`owned`: patterns of the names the run's key writes).
    """
    import fiftyone.brain as fob

    dataset = dataset_of(samples)
    view, order = _layout_view(layout_base(samples, owned), ids)
    if order is not None:  # rows follow the view's own order
        embeddings = embeddings[order]
        kwargs = {k: v[order] if k == "points" else v for k, v in kwargs.items()}
    try:
        fob.compute_visualization(
            view,
            embeddings=embeddings,
            brain_key=brain_key,
            method=method,
            num_dims=2,
            **kwargs,
        )
    except Exception:
        delete_brain_run(dataset, brain_key)
        raise


def reads_names(samples: SampleCollection, patterns: Sequence[str]) -> bool:
    """Whether the view stages of `samples` name a field, a path inside one or a tag that
    matches one of `patterns` (regular expressions for whole names), e.g.
    ``match_tags("elfs_coreset", bool=False)`` or ``exists("elfs_aum")``."""
    if isinstance(samples, fo.Dataset) or not patterns:
        return False
    stages = json.dumps(samples._serialize())
    # a name appears as a quoted value ("elfs_aum") or an expression path ("$elfs_aum.label")
    names = "|".join(f"(?:{pattern})" for pattern in patterns)
    return re.search(rf'"\$?(?:{names})(?:\.[^"]*)?"', stages) is not None


def layout_base(samples: SampleCollection, owned: Sequence[str] = ()) -> SampleCollection:
    """The collection a layout's brain run is stored on: `samples`, or the whole dataset (every
    group slice) where the view names what the run's key writes (`owned`: patterns for
    `reads_names`).

    A brain run stores its view's stages and evaluates them again on every load: a view such
    as "the samples not in the coreset yet" selects other samples once the run has tagged its
    coreset, and the plot would lose exactly the samples just selected. The layout's own
    select/exclude of ids (`_layout_view`) on the dataset does not change with the key's runs.
    """
    if reads_names(samples, owned):
        return every_slice(dataset_of(samples))
    return samples


def check_layout(
    samples: SampleCollection, ids: Sequence[str] | None, owned: Sequence[str], fix: str
) -> None:
    """Refuses, before anything changes, a layout `write_layout` could not store (`ids`: those
    to lay out, None: every sample of the view; `fix`: the caller's way out)."""
    base = layout_base(samples, owned)
    if base is samples:
        return  # its layout is the view itself, less at most a few of its samples
    try:
        _layout_view(base, samples.values("id") if ids is None else ids)
    except ValueError as e:
        raise ElfsInputError(
            "This view selects its samples by fields or tags the key writes, so its embedding "
            f"plot is stored on the dataset by sample ids: {e}. Fix: select the samples by a "
            f"tag or field of your own (e.g. tag them, then match_tags(<your tag>)), or {fix}.",
            param="samples",
        ) from None


def _layout_view(
    samples: SampleCollection, ids: Sequence[str]
) -> tuple[SampleCollection, np.ndarray | None]:
    """The view of exactly `ids` for a brain run, and the row order matching it (None: as is).

    A brain run stores its view's stages, so a view listing a million ids would not fit in its
    16 MB run document: the collection itself, or it minus the few samples not laid out, in the
    collection's order (rows reordered to match); an ordered select only for a few ids.
    """
    ids = list(ids)
    if len(ids) <= id_chunk_rows() and 4 * len(ids) < len(samples):
        return samples.select(ids, ordered=True), None
    natural = samples.values("id")
    wanted = set(ids)
    left_out = [i for i in natural if i not in wanted]
    if len(left_out) > id_chunk_rows():
        raise ValueError(
            f"a layout of {len(ids)} of {len(natural)} samples leaves out {len(left_out)}, and "
            f"ids in one stored view are limited to {id_chunk_rows()}"
        )
    row = {sample_id: i for i, sample_id in enumerate(ids)}
    order = np.array([row[i] for i in natural if i in wanted], dtype=np.int64)
    view = samples.exclude(left_out) if left_out else samples
    return view, order
