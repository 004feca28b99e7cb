"""Adapted encoder weights kept in FiftyOne's database, one set per (dataset, key, adaptation).

Pool adaptation (`fiftyone_elfs.embeddings.pool_adaptation`) trains an encoder's last stages on
the dataset's images once; every image of the key is then embedded with those weights: the
ones embedded now, the ones a later run adds, and those of every shard when workers on several
machines embed in parallel. So the weights live in the database every worker shares, not in a
local folder, keyed by what determines them (`name`)::

    elfs_adapted_encoders:       {_id: name, owner: "<dataset id>:<key>", attempt, n_parts,
                                  digest, seconds}
    elfs_adapted_encoder_parts:  {_id: "<attempt>:<part>", owner, attempt, part,
                                  data: <at most 8 MB of the serialised weights>}

Two workers that train the same weights at once (shards started together) both store parts under
their own attempt, then race to insert the one ``_id: name`` document: the first insert wins,
the loser deletes its parts and every worker embeds with the winner's weights, so all the key's
vectors come from one encoder. While weights train, their training state is stored about once a
minute under ``_id: "<name>:checkpoint"`` (same layout), so an interrupted adaptation goes on
where it stopped; it is removed once the weights are stored. The weights stay while the key's
embeddings run uses them: `clear` removes them with the key (`delete_key`), when its embeddings
are recomputed with ``overwrite=True``, and `forget` those of deleted datasets.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

COLLECTION = "elfs_adapted_encoders"
PARTS = "elfs_adapted_encoder_parts"
_PART_BYTES = 8 * 1024 * 1024


def _db() -> Any:
    import fiftyone.core.odm as foo

    return foo.get_db_conn()


def name(
    dataset_id: str, key: str, model: str, image_size: int | None, steps: int, seed: int
) -> str:
    """The ``_id`` of one set of weights: the dataset, key and everything that shapes them."""
    shape = json.dumps(
        {"model": model, "image_size": image_size, "steps": steps, "seed": seed}, sort_keys=True
    )
    return f"{dataset_id}:{key}:{hashlib.sha1(shape.encode()).hexdigest()[:12]}"


def _insert_parts(owner: str, data: bytes) -> tuple[str, int]:
    """Stores `data` as parts of a new attempt; returns the attempt and how many parts."""
    attempt = uuid.uuid4().hex
    parts = [data[i : i + _PART_BYTES] for i in range(0, len(data), _PART_BYTES)] or [b""]
    _db()[PARTS].insert_many(
        [
            {"_id": f"{attempt}:{i}", "owner": owner, "attempt": attempt, "part": i, "data": p}
            for i, p in enumerate(parts)
        ]
    )
    return attempt, len(parts)


def load(weights_name: str) -> tuple[bytes, dict[str, Any]] | None:
    """The stored weights of `weights_name` and their document (digest, seconds), or None."""
    doc = _db()[COLLECTION].find_one({"_id": weights_name})
    if doc is None:
        return None
    parts = _db()[PARTS].find({"attempt": doc["attempt"]}).sort("part", 1)
    data = b"".join(bytes(p["data"]) for p in parts)
    if len(data) != doc["n_bytes"]:  # (a part lost by hand): train again rather than embed wrong
        _db()[COLLECTION].delete_one({"_id": weights_name, "attempt": doc["attempt"]})
        return None
    return data, doc


def describe(weights_name: str) -> dict[str, Any] | None:
    """The document of `weights_name` (digest, seconds, size) without its parts; None."""
    return _db()[COLLECTION].find_one({"_id": weights_name})


def store_first(
    weights_name: str, data: bytes, digest: str, seconds: float
) -> tuple[bytes, dict[str, Any]]:
    """Stores the weights unless another worker stored this name first; returns the stored
    ones (these, or the other worker's)."""
    from pymongo.errors import DuplicateKeyError

    owner = weights_name.rsplit(":", 1)[0]
    attempt, n_parts = _insert_parts(owner, data)
    doc = {
        "_id": weights_name,
        "owner": owner,
        "attempt": attempt,
        "n_parts": n_parts,
        "n_bytes": len(data),
        "digest": digest,
        "seconds": seconds,
    }
    try:
        _db()[COLLECTION].insert_one(doc)
    except DuplicateKeyError:
        _db()[PARTS].delete_many({"attempt": attempt})
        stored = load(weights_name)
        if stored is not None:
            return stored
        return store_first(weights_name, data, digest, seconds)  # the winner's parts are gone
    return data, doc


def _checkpoint_name(weights_name: str) -> str:
    return f"{weights_name}:checkpoint"


def store_checkpoint(weights_name: str, data: bytes) -> None:
    """Stores the training state of `weights_name`'s adaptation in place of the last one (the
    new parts first, then the document pointing at them, then the old parts go: a crash at any
    point leaves one whole checkpoint)."""
    name = _checkpoint_name(weights_name)
    owner = weights_name.rsplit(":", 1)[0]
    attempt, n_parts = _insert_parts(owner, data)
    doc = {"owner": owner, "attempt": attempt, "n_parts": n_parts, "n_bytes": len(data)}
    old = _db()[COLLECTION].find_one_and_replace({"_id": name}, doc, upsert=True)
    if old is not None:
        _db()[PARTS].delete_many({"attempt": old["attempt"]})


def load_checkpoint(weights_name: str) -> bytes | None:
    """The last training state stored for `weights_name`, or None."""
    stored = load(_checkpoint_name(weights_name))
    return None if stored is None else stored[0]


def drop_checkpoint(weights_name: str) -> None:
    """Removes the training state of `weights_name` (its weights are stored)."""
    old = _db()[COLLECTION].find_one_and_delete({"_id": _checkpoint_name(weights_name)})
    if old is not None:
        _db()[PARTS].delete_many({"attempt": old["attempt"]})


def clear(dataset_id: str, key: str, keep: str | None = None) -> int:
    """Removes every set of weights of the key but `keep` (a `name`); returns how many."""
    owner = f"{dataset_id}:{key}"
    kept = _db()[COLLECTION].find_one({"_id": keep}) if keep is not None else None
    attempt = {"attempt": {"$ne": kept["attempt"]}} if kept else {}
    _db()[PARTS].delete_many({"owner": owner, **attempt})
    others = {"_id": {"$ne": keep}} if keep is not None else {}
    return _db()[COLLECTION].delete_many({"owner": owner, **others}).deleted_count


def owners() -> set[str]:
    """The ``<dataset id>:<key>`` of every stored set of weights (or part of one)."""
    return set(_db()[PARTS].distinct("owner")) | set(_db()[COLLECTION].distinct("owner"))


def forget(gone: list[str]) -> None:
    """Removes the weights of these ``<dataset id>:<key>`` (of datasets deleted since:
    `embedding_chunks.forget_deleted_datasets`)."""
    if gone:
        _db()[PARTS].delete_many({"owner": {"$in": gone}})
        _db()[COLLECTION].delete_many({"owner": {"$in": gone}})
