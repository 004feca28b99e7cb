"""Sharded embeddings: the embedding stage split over workers on several machines.

Each shard is one delegated operation (`embed_shard`); workers started with ``fiftyone
delegated launch`` on any machines that share FiftyOne's database (``FIFTYONE_DATABASE_URI``)
and find the plugin (``FIFTYONE_PLUGINS_DIR``) run them in parallel. A shard embeds its part of
the images into the chunk store (`fiftyone_elfs.embedding_chunks`: a shard rerun after an
interruption resumes from the chunks it stored), under its own lease (`fiftyone_elfs.leases`,
stage ``embeddings_shard<i>``), and writes nothing to the dataset. Then it marks itself done in
one atomic ``find_one_and_update`` of the plan: exactly one call, the one that completes the
set, is told it is last, whatever the order of the shards and however often one is rerun (if
its queueing fails, the next shard rerun is). That shard's operation queues the rest of the
pipeline as one more delegated operation, whose
embedding stage finds every vector in the chunk store and writes the field. Nobody waits or
polls: FiftyOne's own queue runs everything.

Plan documents, in the collection ``elfs_shard_plans`` of FiftyOne's database::

    {_id: "<dataset id>:<key>", n_shards, pipeline: {run_pipeline keyword arguments},
     done: [shard, ...], queued: whether a shard claimed the queueing of the rest}
"""

from __future__ import annotations

from typing import Any

from fiftyone_elfs.errors import ElfsInputError

COLLECTION = "elfs_shard_plans"


def _collection():
    import fiftyone.core.odm as foo

    return foo.get_db_conn()[COLLECTION]


def shard_bounds(n: int, shard: int, n_shards: int) -> tuple[int, int]:
    """[start, stop) of shard `shard` of `n` items split into `n_shards` near-equal parts."""
    if not 0 <= shard < n_shards:
        raise ElfsInputError(
            f"shard must be in 0 .. n_shards - 1 = {n_shards - 1}, got {shard}. Fix: number the "
            "shards 0, 1, ..., n_shards - 1.",
            param="shard",
        )
    return n * shard // n_shards, n * (shard + 1) // n_shards


def plan(dataset_id: str, key: str, n_shards: int, pipeline: dict[str, Any]) -> None:
    """Starts (or restarts) a sharded run of `key`: what the last shard queues afterwards."""
    _collection().replace_one(
        {"_id": f"{dataset_id}:{key}"},
        {"n_shards": n_shards, "pipeline": pipeline, "done": []},
        upsert=True,
    )


def planned_pipeline(dataset_id: str, key: str) -> dict[str, Any] | None:
    """The run_pipeline keyword arguments of the plan of `key` (None: no plan, or shards run
    on their own, whose set `mark_done` records without a pipeline)."""
    doc = _collection().find_one({"_id": f"{dataset_id}:{key}"})
    return None if doc is None or "pipeline" not in doc else dict(doc["pipeline"] or {})


def mark_done(dataset_id: str, key: str, shard: int, n_shards: int) -> bool:
    """Records that `shard` is embedded; True for exactly one call: the first to find the set
    of `n_shards` complete, which claims the queueing of the rest (two atomic updates). Where
    that queueing fails (`release`), the claim is free again and the next call (a rerun of any
    shard) is told it is last: the rest of the run was queued by nobody before."""
    from pymongo import ReturnDocument

    plan_id = f"{dataset_id}:{key}"
    after = _collection().find_one_and_update(
        {"_id": plan_id},
        {"$addToSet": {"done": shard}, "$setOnInsert": {"n_shards": n_shards}},
        upsert=True,
        return_document=ReturnDocument.AFTER,
    )
    if len(set(after.get("done", []))) < n_shards:
        return False
    claimed = _collection().find_one_and_update(
        {"_id": plan_id, "queued": {"$ne": True}}, {"$set": {"queued": True}}
    )
    return claimed is not None


def release(dataset_id: str, key: str) -> None:
    """Gives back the claim `mark_done` gave the last shard: queueing the rest failed (refused,
    interrupted), so a rerun of a shard queues it."""
    _collection().update_one({"_id": f"{dataset_id}:{key}"}, {"$set": {"queued": False}})


def clear(dataset_id: str, key: str) -> None:
    """Removes the plan of `key` (its embeddings are recorded, or it is abandoned)."""
    _collection().delete_one({"_id": f"{dataset_id}:{key}"})


def planned_keys() -> list[str]:
    """The ``<dataset id>:<key>`` of every plan (a small collection: one document per run)."""
    return [str(i) for i in _collection().distinct("_id")]


def forget(plan_ids: list[str]) -> None:
    """Removes the plans of these ``<dataset id>:<key>`` (e.g. of datasets deleted since:
    `embedding_chunks.forget_deleted_datasets`)."""
    if plan_ids:
        _collection().delete_many({"_id": {"$in": list(plan_ids)}})
