"""Embedding chunks staged in MongoDB while the embedding stage runs: what an interruption keeps.

The embedding stage is the longest (hours at ImageNet size on a CPU), and its user-visible
field is written only when it completes (`stages.record`: a result field appears whole or not
at all). So each chunk of vectors is stored here as soon as it is computed, and a rerun of the
same (dataset, key, model, image size) embeds only the images no chunk holds. Chunks live in the
collection ``elfs_embedding_chunks`` of FiftyOne's own database rather than in a local folder,
so that workers on several machines sharing that database (sharded embeddings) resume from one
another's chunks too; the user never sees them (no sample field, no dataset change)::

    {_id: <uuid4>, run: "<dataset id>:<key>:<model signature>", ids: [sample id, ...],
     vectors: <float32 bytes, rows in the order of ids>, dim,
     failures: [[sample id, reason], ...]}

A chunk is one document written by one insert, so it is whole or absent after a ``kill -9``.
`clear` removes a key's chunks once its run is recorded (or when it must start over, or the key
is deleted). Chunks of a dataset deleted meanwhile can be reached by no API any more: each
embedding run removes them as it starts (`forget_deleted_datasets`: a few index-only queries),
with the shard plans of such datasets (`fiftyone_elfs.sharding`) and what their interrupted runs
left (journal entries, leases, staging collections, training checkpoints on disk).
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Sequence

import numpy as np

COLLECTION = "elfs_embedding_chunks"
#: Rows per stored chunk (rounded to whole batches); ``ELFS_EMBED_CHUNK_ROWS`` overrides it.
#: 1,024 rows of 1,280-d float32 are 5 MB: far below MongoDB's 16 MB document limit, and at
#: most a few seconds of work lost to an interruption.
CHUNK_ROWS = 1024
CHUNK_ENV = "ELFS_EMBED_CHUNK_ROWS"
_MAX_CHUNK_BYTES = 8 * 1024 * 1024
_indexed: set[int] = set()  # ids of the database connections the "run" index was ensured on


def _collection():
    import fiftyone.core.odm as foo

    db = foo.get_db_conn()
    if id(db.client) not in _indexed:  # the lookups by run, and its distinct values, use it
        db[COLLECTION].create_index("run")
        _indexed.add(id(db.client))
    return db[COLLECTION]


def existing_dataset_ids() -> set[str]:
    """The ids of the datasets in FiftyOne's database (an index-only query)."""
    import fiftyone.core.odm as foo

    return {str(i) for i in foo.get_db_conn()["datasets"].distinct("_id")}


def forget_deleted_datasets() -> int:
    """Removes what ELFS keeps for datasets that no longer exist: their chunks, shard plans,
    adapted encoder weights, and what their interrupted runs left (journal entries, leases,
    staging collections: a copy of a run's results, which no key's next run or `delete_key`
    can reach once the dataset is gone; training checkpoints on disk,
    `checkpoint_folders.forget_deleted`); returns how many chunks. Everything
    is listed before the datasets are, so a dataset created meanwhile is never taken for a
    deleted one."""
    from fiftyone_elfs import (
        adapted_weights,
        checkpoint_folders,
        dataset_io,
        journal,
        leases,
        sharding,
    )

    stored = _collection().distinct("run")
    plans = sharding.planned_keys()
    weights = adapted_weights.owners()
    journaled, leased = journal.dataset_ids(), leases.dataset_ids()
    staged = dataset_io.staging_collections()
    checkpointed = checkpoint_folders.marked_dataset_ids()
    existing = existing_dataset_ids()
    checkpoint_folders.forget_deleted(checkpointed, existing)
    sharding.forget([p for p in plans if p.split(":", 1)[0] not in existing])
    adapted_weights.forget([w for w in weights if w.split(":", 1)[0] not in existing])
    journal.forget_datasets(journaled - existing)
    leases.forget_datasets(leased - existing)
    for collection in staged:
        if dataset_io.staging_dataset_id(collection) not in existing:
            dataset_io.drop_staging(collection)
    gone = [r for r in stored if r.split(":", 1)[0] not in existing]
    return _collection().delete_many({"run": {"$in": gone}}).deleted_count if gone else 0


def chunk_rows(dim: int) -> int:
    """Rows per chunk for vectors of `dim` floats: ``$ELFS_EMBED_CHUNK_ROWS`` or `CHUNK_ROWS`,
    capped so that a chunk stays under 8 MB."""
    wanted = int(os.environ.get(CHUNK_ENV) or CHUNK_ROWS)
    return max(1, min(wanted, _MAX_CHUNK_BYTES // (4 * max(1, dim))))


def signature(model: str, image_size: int | None, adaptation: str | None = None) -> str:
    """What the vectors depend on, as a short stable hash (part of a chunk's run name):
    the encoder, its input size and its adapted weights' name, if any."""
    shape: dict[str, object] = {"model": model, "image_size": image_size}
    if adaptation is not None:  # (so that the chunks of unadapted runs keep their names)
        shape["adaptation"] = adaptation
    text = json.dumps(shape, sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def run_name(dataset_id: str, key: str, model_signature: str) -> str:
    """The ``run`` of the chunks of one dataset, run key and model (`signature`)."""
    return f"{dataset_id}:{key}:{model_signature}"


def store(run: str, ids: Sequence[str], vectors: np.ndarray, failures: dict[str, str]) -> None:
    """Stores one chunk: `vectors` [len(ids), dim] (rows of failed ids are ignored) and the
    failure reasons by sample id, as documents of at most `chunk_rows(dim)` rows each (a chunk
    of whole encoder batches can be larger: MongoDB refuses a document over 16 MB)."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.shape[0] != len(ids):
        raise ValueError(f"got {len(ids)} ids but {vectors.shape[0]} vectors")
    rows = chunk_rows(vectors.shape[1])
    documents = []
    for start in range(0, len(ids), rows):
        part = list(ids[start : start + rows])
        documents.append(
            {
                "_id": uuid.uuid4().hex,
                "run": run,
                "ids": part,
                "vectors": vectors[start : start + rows].tobytes(),
                "dim": int(vectors.shape[1]),
                "failures": [[i, failures[i]] for i in part if i in failures],
            }
        )
    if documents:
        _collection().insert_many(documents)


def load(run: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The vectors (by sample id) and failure reasons (by sample id) every stored chunk of
    `run` holds. An embedding run starts with this (or `stored_ids`): it first removes the
    chunks of deleted datasets (`forget_deleted_datasets`)."""
    forget_deleted_datasets()
    vectors: dict[str, np.ndarray] = {}
    failures: dict[str, str] = {}
    for doc in _collection().find({"run": run}):
        X = np.frombuffer(doc["vectors"], dtype=np.float32).reshape(len(doc["ids"]), doc["dim"])
        failed = dict(doc["failures"])
        failures.update(failed)
        vectors.update((i, x) for i, x in zip(doc["ids"], X, strict=True) if i not in failed)
    return vectors, {i: r for i, r in failures.items() if i not in vectors}


def stored_ids(run: str) -> tuple[set[str], dict[str, str]]:
    """The sample ids whose vectors the stored chunks of `run` hold, and the failure reasons
    by sample id: what `load` returns without reading a single vector (a shard worker only
    needs to know what is done, so its memory stays one chunk's, not its shard's). Removes the
    chunks of deleted datasets first, as `load` does."""
    forget_deleted_datasets()
    done: set[str] = set()
    failures: dict[str, str] = {}
    for doc in _collection().find({"run": run}, {"ids": 1, "failures": 1}):
        failed = dict(doc["failures"])
        failures.update(failed)
        done.update(i for i in doc["ids"] if i not in failed)
    return done, {i: r for i, r in failures.items() if i not in done}


def count(dataset_id: str, key: str) -> int:
    """The number of chunks stored for a key (any model)."""
    return _collection().count_documents({"run": {"$regex": f"^{dataset_id}:{key}:"}})


def clear(dataset_id: str, key: str) -> int:
    """Removes every chunk of a key (any model); returns how many."""
    prefix = f"{dataset_id}:{key}:"
    return _collection().delete_many({"run": {"$regex": f"^{prefix}"}}).deleted_count
