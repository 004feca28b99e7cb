"""Leases: at most one run at a time of each (dataset, key, stage), across processes and machines.

A lease is one document of the collection ``elfs_leases`` in FiftyOne's own database (the one
every process working on the dataset shares; process ids alone mean nothing on another
machine)::

    {_id: "<dataset id>:<key>:<stage>", owner: <uuid4 of this acquisition>,
     started_at, heartbeat_at (both the database server's clock), host, pid, pid_start}

- Acquire: one atomic ``find_one_and_update(upsert=True)`` that matches only a lease already
  ours or one whose heartbeat is older than `EXPIRY_S` on the server's clock; if another live
  holder has it, the upsert collides on ``_id`` and the caller gets `ElfsInputError` naming when
  and where the other run started, and what to do.
- Heartbeat: a daemon thread refreshes ``heartbeat_at`` of every lease this process holds every
  `HEARTBEAT_S`, so a crashed or killed run stops holding its lease after at most `EXPIRY_S`.
  On the same host a holder whose process is gone (pid and process start time checked) is
  taken over at once, so a rerun after ``kill -9`` need not wait.
- Release: the ``with`` block's end, normal or by exception, deletes the document if it is
  still ours.

Leases are re-entrant within one thread (the pipeline holds its stages' leases while each stage
takes its own); another thread of the same process is another run. Stage names: a stage's own,
except that every labeling round of a key shares the lease ``rounds``.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from fiftyone_elfs.errors import ElfsInputError

COLLECTION = "elfs_leases"
#: A lease whose heartbeat is older than this (seconds, server clock) is free.
EXPIRY_S = 60.0
#: How often the holder refreshes its heartbeat (seconds).
HEARTBEAT_S = 10.0


@dataclass
class _Held:
    owner: str
    thread: int
    depth: int


_held: dict[str, _Held] = {}
_lock = threading.Lock()
_heartbeat: threading.Thread | None = None
_stop = threading.Event()  # never set: the heartbeat's interruptible sleep


def _collection():
    import fiftyone.core.odm as foo

    return foo.get_db_conn()[COLLECTION]


def lease_stage(stage: str) -> str:
    """The lease a stage takes: its own name, or "rounds" for every labeling round."""
    return "rounds" if stage.startswith("round") else stage


def lease_id(dataset_id: str, key: str, stage: str) -> str:
    """The `_id` of the lease document of a stage of one run key of one dataset."""
    return f"{dataset_id}:{key}:{lease_stage(stage)}"


def _process_start(pid: int) -> str | None:
    """The start time of process `pid` (Linux /proc; None elsewhere or if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    if fields[0] in ("Z", "X"):  # a zombie has finished running
        return None
    return fields[19]  # field 22 of stat: start time in clock ticks since boot


def _holder_is_gone(doc: dict) -> bool:
    """Whether the holder ran on this host and its process no longer exists."""
    if doc.get("host") != socket.gethostname() or not doc.get("pid"):
        return False
    if not os.path.isdir("/proc"):
        return False
    start = _process_start(int(doc["pid"]))
    return start is None or (doc.get("pid_start") is not None and start != doc["pid_start"])


def _busy_error(doc: dict, key: str, stage: str) -> ElfsInputError:
    started = doc.get("started_at")
    when = (
        started.strftime("%Y-%m-%d %H:%M:%S UTC")
        if isinstance(started, datetime.datetime)
        else "an unknown time"
    )
    where = f"host {doc.get('host', '?')}, process {doc.get('pid', '?')}"
    return ElfsInputError(
        f"Another run of the '{stage}' stage of key '{key}' on this dataset is in progress "
        f"(started {when} on {where}); two runs would overwrite each other's results. Fix: "
        f"wait for it to finish, or use another key. If that run was killed, its lease expires "
        f"{EXPIRY_S:.0f} s after its last heartbeat; rerun then.",
        param="key",
    )


def _acquire(lid: str, key: str, stage: str) -> str:
    """Takes the lease `lid` for a new owner id, or raises the busy error.

    Three atomic steps, each a single-document write: insert a new lease; else take over an
    expired one (heartbeat older than `EXPIRY_S` on the server's clock); else take over one
    whose holder's process is gone from this host.
    """
    from pymongo.errors import DuplicateKeyError

    owner = uuid.uuid4().hex
    pid = os.getpid()
    claim = {
        "owner": owner,
        "host": socket.gethostname(),
        "pid": pid,
        "pid_start": _process_start(pid),
    }
    now = [{"$set": {**claim, "started_at": "$$NOW", "heartbeat_at": "$$NOW"}}]
    collection = _collection()
    try:
        stamp = datetime.datetime.now(datetime.timezone.utc)  # then the server's, at once
        collection.insert_one({"_id": lid, **claim, "started_at": stamp, "heartbeat_at": stamp})
        collection.update_one({"_id": lid, "owner": owner}, now)
        return owner
    except DuplicateKeyError:
        pass
    expired = {"$expr": {"$lt": ["$heartbeat_at", {"$subtract": ["$$NOW", int(EXPIRY_S * 1000)]}]}}
    if collection.find_one_and_update({"_id": lid, **expired}, now) is not None:
        return owner
    doc = collection.find_one({"_id": lid})
    if doc is None:  # released meanwhile: try again
        return _acquire(lid, key, stage)
    if _holder_is_gone(doc) and collection.find_one_and_update(
        {"_id": lid, "owner": doc["owner"]}, now
    ):
        return owner
    raise _busy_error(collection.find_one({"_id": lid}) or doc, key, stage)


def _beat() -> None:
    """The heartbeat thread: refreshes every held lease until none is left."""
    global _heartbeat
    while True:
        with _lock:
            held = {lid: h.owner for lid, h in _held.items()}
            if not held:
                _heartbeat = None
                return
        collection = _collection()
        for lid, owner in held.items():
            collection.update_one(
                {"_id": lid, "owner": owner}, [{"$set": {"heartbeat_at": "$$NOW"}}]
            )
        _stop.wait(HEARTBEAT_S)


def _start_heartbeat() -> None:
    global _heartbeat
    if _heartbeat is None:
        _heartbeat = threading.Thread(target=_beat, name="elfs-lease-heartbeat", daemon=True)
        _heartbeat.start()


@contextlib.contextmanager
def hold(dataset_id: str, key: str, stages: Sequence[str]) -> Iterator[None]:
    """Holds the leases of `stages` of `key` on a dataset for the ``with`` block.

    Raises:
        ElfsInputError: another run holds one of them (nothing is held then).
    """
    me = threading.get_ident()
    taken: list[str] = []
    try:
        for stage in dict.fromkeys(lease_stage(s) for s in stages):
            lid = lease_id(dataset_id, key, stage)
            with _lock:
                mine = _held.get(lid)
                if mine is not None and mine.thread == me:
                    mine.depth += 1
                    taken.append(lid)
                    continue
            owner = _acquire(lid, key, stage)
            with _lock:
                _held[lid] = _Held(owner, me, 1)
                taken.append(lid)
                _start_heartbeat()
        yield
    finally:
        for lid in reversed(taken):
            _release(lid)


def _release(lid: str) -> None:
    with _lock:
        held = _held.get(lid)
        if held is None:
            return
        held.depth -= 1
        if held.depth > 0:
            return
        del _held[lid]
    _collection().delete_one({"_id": lid, "owner": held.owner})


def is_held_elsewhere(dataset_id: str, key: str, stage: str) -> bool:
    """Whether a live run other than this thread's holds the lease of (key, stage)."""
    lid = lease_id(dataset_id, key, stage)
    with _lock:
        mine = _held.get(lid)
        if mine is not None and mine.thread == threading.get_ident():
            return False
    doc = _collection().find_one({"_id": lid})
    if doc is None or _holder_is_gone(doc):
        return False
    age = _collection().aggregate(
        [
            {"$match": {"_id": lid}},
            {"$project": {"age": {"$subtract": ["$$NOW", "$heartbeat_at"]}}},
        ]
    )
    ages = [d["age"] for d in age]
    return bool(ages) and ages[0] < EXPIRY_S * 1000


def verify(dataset_id: str, key: str, stage: str) -> None:
    """Raises if this thread held the lease of (key, stage) and has lost it (it stalled for
    longer than the expiry and another run took over): its results must not be committed."""
    lid = lease_id(dataset_id, key, stage)
    with _lock:
        mine = _held.get(lid)
    if mine is None or mine.thread != threading.get_ident():
        return
    if _collection().count_documents({"_id": lid, "owner": mine.owner}) == 0:
        raise ElfsInputError(
            f"This run of the '{stage}' stage of key '{key}' lost its lease (no heartbeat for "
            f"{EXPIRY_S:.0f} s) and another run took over; its results were not written. Fix: "
            "rerun when the other run has finished."
        )


def live_keys(dataset_id: str) -> set[str]:
    """The run keys of the dataset that a live run holds a lease of (its heartbeat younger than
    `EXPIRY_S`, its process not gone from this host): one query for the whole dataset."""
    docs = _collection().aggregate(
        [
            {"$match": {"_id": {"$regex": f"^{re.escape(dataset_id)}:"}}},
            {"$addFields": {"age": {"$subtract": ["$$NOW", "$heartbeat_at"]}}},
        ]
    )
    return {
        doc["_id"][len(dataset_id) + 1 :].rsplit(":", 1)[0]
        for doc in docs
        if doc.get("age") is not None and doc["age"] < EXPIRY_S * 1000 and not _holder_is_gone(doc)
    }


#: The lease of a dataset's commits (any key; "*" is no valid key): FiftyOne rewrites a
#: dataset's field list from the process's copy of it, so two keys' commits at once lost each
#: other's fields or their ELFS marks, or failed on a field the other had just removed.
COMMIT_KEY, COMMIT_STAGE = "*", "commit"


@contextlib.contextmanager
def commit_turn(dataset_id: str, poll_s: float = 0.25) -> Iterator[None]:
    """Holds the dataset's commit lease for the block, waiting while another live run holds it
    (a commit takes seconds, minutes at a million samples; a killed holder's lease expires
    after `EXPIRY_S`). Re-entrant in a thread, like every lease. Taken last, after the key's
    stage leases, and only for the commit: waiting on it cannot deadlock."""
    with contextlib.ExitStack() as stack:
        while True:
            try:
                stack.enter_context(hold(dataset_id, COMMIT_KEY, [COMMIT_STAGE]))
                break
            except ElfsInputError:  # another run is committing on this dataset
                time.sleep(poll_s)
        yield


def dataset_ids() -> set[str]:
    """The ids of the datasets leases are held (or were left) on."""
    return {str(i).split(":", 1)[0] for i in _collection().distinct("_id")}


def forget_datasets(ids: set[str]) -> None:
    """Removes the leases of these datasets (deleted: no run of theirs can commit)."""
    if ids:
        prefixes = "|".join(re.escape(i) for i in sorted(ids))
        _collection().delete_many({"_id": {"$regex": f"^({prefixes}):"}})
