"""The journal: names an unfinished operation of a (pipeline key, stage) may leave behind.

Before an operation writes or deletes anything, it lists here (collection ``elfs_journal`` of
FiftyOne's database) every field, tag, saved view or brain run it may leave behind, and its
staging collections; when its run is recorded (or it is deleted) the entry is closed. An entry
left open by a killed run is what `fiftyone_elfs.runs.recover` cleans up, and it is how ownership
checks tell such leftovers from the user's own fields, tags and views.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import fiftyone as fo

from fiftyone_elfs import dataset_io

COLLECTION = "elfs_journal"


def _journal():
    import fiftyone.core.odm as foo

    return foo.get_db_conn()[COLLECTION]


def _journal_id(dataset: fo.Dataset, key: str, stage: str) -> str:
    return f"{dataset_io.dataset_id(dataset)}:{key}:{stage}"


def add(
    dataset: fo.Dataset,
    key: str,
    stage: str,
    owned: dict[str, Sequence[str]],
    staging_collections: Sequence[str] = (),
    unmarked_fields: Sequence[str] = (),
) -> None:
    """Lists, before they are written or deleted, names an operation of (key, stage) may leave
    behind: `owned` by kind (``owned_fields`` ...) and its staging collections
    (`dataset_io.stage_rows`).

    A field the operation creates carries the mark of (key, stage) from its first moment
    (`dataset_io.field_mark`), so cleaning up deletes a listed field only if it carries it
    (one created by the user after an interruption has none); `unmarked_fields`: listed fields
    that may lack it and are deleted all the same (outputs of runs from before marks, deleted)."""
    additions = {kind: {"$each": list(v)} for kind, v in owned.items() if v}
    if staging_collections:
        additions["staging_collections"] = {"$each": list(staging_collections)}
    if unmarked_fields:
        additions["unmarked_fields"] = {"$each": list(unmarked_fields)}
    _journal().update_one(
        {"_id": _journal_id(dataset, key, stage)},
        {
            "$set": {
                "dataset_id": dataset_io.dataset_id(dataset),
                "key": key,
                "stage": stage,
                "fields_marked": True,
            },
            **({"$addToSet": additions} if additions else {}),
        },
        upsert=True,
    )


def forget(dataset: fo.Dataset, key: str, stage: str, attribute: str, name: str) -> None:
    """Takes `name` off the entry of (key, stage): it is not the operation's to leave behind
    (someone else created it meanwhile), so cleaning up after the operation must keep it."""
    _journal().update_one({"_id": _journal_id(dataset, key, stage)}, {"$pull": {attribute: name}})


def end(dataset: fo.Dataset, key: str, stage: str) -> None:
    """Closes the journal entry of (key, stage): what it listed is now recorded or gone."""
    _journal().delete_one({"_id": _journal_id(dataset, key, stage)})


def entries(dataset: fo.Dataset, key: str | None = None) -> list[dict[str, Any]]:
    """The open journal entries of a dataset (of one key): operations that did not finish."""
    query: dict[str, Any] = {"dataset_id": dataset_io.dataset_id(dataset)}
    if key is not None:
        query["key"] = key
    return list(_journal().find(query))


def pending_owner(dataset: fo.Dataset, attribute: str, name: str) -> tuple[str, str] | None:
    """The (key, stage) of an unfinished operation that journaled `name`, or None."""
    query = {"dataset_id": dataset_io.dataset_id(dataset), attribute: name}
    entry = _journal().find_one(query)
    return (entry["key"], entry["stage"]) if entry else None


def close(entry: dict[str, Any]) -> None:
    """Closes one entry returned by `entries` (its leftovers were cleaned up)."""
    _journal().delete_one({"_id": entry["_id"]})


def dataset_ids() -> set[str]:
    """The ids of the datasets the journal holds entries of."""
    return {str(i) for i in _journal().distinct("dataset_id")}


def forget_datasets(ids: set[str]) -> None:
    """Removes the entries of these datasets (deleted: nothing of theirs is left to clean)."""
    if ids:
        _journal().delete_many({"dataset_id": {"$in": sorted(ids)}})
