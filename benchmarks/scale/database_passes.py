"""What one pass over the samples costs in MongoDB, for the write and read paths of `dataset_io`.

On the scale benchmark's dataset of N samples (made by ``run_scale.py --with-dataset``; each
document holds a 512-d embedding, ~2.3 KB), prints seconds for:

- reading the embeddings: FiftyOne's ``values`` against ``values(_raw=True)`` plus
  `dataset_io._decode_vectors` (what `read_embeddings` does);
- the staged write of `fiftyone_elfs.stages.record`: three float columns, then one column of
  Classification labels, each staged into a collection (`dataset_io.stage_rows`, in chunks of
  `record.WRITE_CHUNK_ROWS`) and moved into the samples by one ``$merge``
  (`dataset_io.commit_staged`);
- server-side passes for scale: renaming one field (``$rename``), unsetting one, and FiftyOne's
  ``delete_sample_fields`` of three;
- with ``--kill-merge``: a ``$merge`` started by a client process that is SIGKILLed after
  ``--kill-after`` seconds, and how many samples hold the merged field then and later (does the
  server finish the command without its client?).

    .venv/bin/python benchmarks/scale/database_passes.py --n 1280000 --kill-merge

The dataset is left as it was (the fields written here are removed).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import private_db  # noqa: E402


def _timed(label: str, fn):
    t = time.perf_counter()
    out = fn()
    print(f"{label}: {time.perf_counter() - t:.1f} s", flush=True)
    return out


def _staged_write(ds, ids, columns) -> None:
    from fiftyone_elfs import dataset_io
    from fiftyone_elfs.stages.record import WRITE_CHUNK_ROWS

    kinds = {f: dataset_io.column_kind(v) for f, v in columns.items()}
    collection = dataset_io.new_staging_collection(ds)
    t = time.perf_counter()
    for start in range(0, len(ids), WRITE_CHUNK_ROWS):
        rows = slice(start, start + WRITE_CHUNK_ROWS)
        chunk = {f: v[rows] for f, v in columns.items()}
        dataset_io.stage_rows(collection, ids[rows], chunk, kinds)
    staged = time.perf_counter() - t
    t = time.perf_counter()
    dataset_io.commit_staged(ds, collection, kinds, ids)
    merged = time.perf_counter() - t
    print(f"staged write of {list(columns)}: stage {staged:.1f} s, merge {merged:.1f} s")


def _kill_merge(ds, ids, after: float) -> None:
    """A client that starts a $merge and is SIGKILLed: does the server finish it?"""
    import fiftyone as fo

    from fiftyone_elfs import dataset_io

    kinds = {"dp_killed": dataset_io.column_kind([1.0])}
    collection = dataset_io.new_staging_collection(ds)
    for start in range(0, len(ids), 100_000):
        chunk = ids[start : start + 100_000]
        values = [float(start + i) for i in range(len(chunk))]
        dataset_io.stage_rows(collection, chunk, {"dp_killed": values}, kinds)
    coll = ds._sample_collection_name
    db = fo.core.odm.get_db_conn()
    merge = {"into": coll, "on": "_id", "whenMatched": "merge", "whenNotMatched": "discard"}
    code = (
        "import pymongo\n"
        f"db = pymongo.MongoClient({os.environ['FIFTYONE_DATABASE_URI']!r})[{db.name!r}]\n"
        f"db[{collection!r}].aggregate([{{'$merge': {merge!r}}}])\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code])
    time.sleep(after)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    seen = db[coll].count_documents({"dp_killed": {"$exists": True}})
    print(f"merge client killed after {after:.0f} s: {seen} of {len(ids)} samples merged")
    while True:
        time.sleep(5)
        now = db[coll].count_documents({"dp_killed": {"$exists": True}})
        print(f"  5 s later: {now}", flush=True)
        if now in (seen, len(ids)):
            break
        seen = now
    db[coll].update_many({}, {"$unset": {"dp_killed": ""}})
    dataset_io.drop_staging(collection)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=200_000)
    p.add_argument("--data-dir", default="/tmp/elfs-scale")
    p.add_argument("--kill-merge", action="store_true")
    p.add_argument("--kill-after", type=float, default=15.0)
    args = p.parse_args()
    proc = private_db.use(os.path.join(args.data_dir, f"db-n{args.n}"))
    try:
        import fiftyone as fo

        from fiftyone_elfs import dataset_io

        ds = fo.load_dataset(f"elfs-scale-{args.n}")
        db = fo.core.odm.get_db_conn()
        coll = ds._sample_collection_name
        ids = _timed("ids", lambda: ds.values("id"))
        stored = _timed("embeddings, values(_raw=True)", lambda: ds.values("emb", _raw=True))
        decoded = _timed("  decoding them", lambda: dataset_io._decode_vectors(stored))
        stored = None
        values = _timed("embeddings, values()", lambda: ds.values("emb"))
        pairs = zip(decoded[:1000], values[:1000], strict=True)
        same = all(np.array_equal(a, b) for a, b in pairs)
        print(f"  first 1,000 equal: {same}", flush=True)
        del decoded, values
        rng = np.random.default_rng(0)
        floats = {f"dp_f{i}": rng.random(len(ids)).tolist() for i in range(3)}
        _staged_write(ds, ids, floats)
        labels = [f"cluster_{i % 1000:03d}" for i in range(len(ids))]
        column = dataset_io.ClassificationColumn(labels, rng.random(len(ids)).tolist())
        _staged_write(ds, ids, {"dp_label": column})
        samples = db[coll]
        _timed("$rename of one field", lambda: samples.update_many({}, {"$rename": {"dp_f0": "r"}}))
        _timed("$unset of one field", lambda: samples.update_many({}, {"$unset": {"r": ""}}))
        ds.reload()
        _timed(
            "delete_sample_fields of three",
            lambda: dataset_io.delete_fields(ds, ["dp_f0", "dp_f1", "dp_f2", "dp_label"]),
        )
        if args.kill_merge:
            _kill_merge(ds, ids, args.kill_after)
    finally:
        proc.terminate()
        proc.wait(60)


if __name__ == "__main__":
    main()
