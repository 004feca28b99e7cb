"""Peak memory of an embedding shard worker against the size of its shard (issue 16).

A worker of a sharded run (`fiftyone_elfs.embed_shard`, what each delegated operation runs)
stores every chunk of vectors in the database as soon as it is computed and keeps none of
them, so its peak memory should not grow with its shard's size beyond the ids and paths it
reads (a few dozen bytes a sample). For each ``--sizes`` N, a fresh child process on a private
FiftyOne database makes a dataset of the first N CIFAR-10 train JPEGs, embeds it as shard 0 of
1 and reports its peak RSS during the call (VmHWM, reset just before it), the RSS just before
the call and the difference. A worker that kept its shard's vectors would grow by about
N x dim x 4 bytes (printed next to it as ``vectors_mb``). Prints one JSON line per size and
appends it to ``benchmarks/results/scale/shard_memory.jsonl``::

    .venv/bin/python benchmarks/scale/shard_memory.py --sizes 2000,20000
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)
OUT = os.path.join(ROOT, "benchmarks", "results", "scale", "shard_memory.jsonl")
DEFAULT_IMAGES = os.path.join(ROOT, "benchmarks", "cache", "cifar10", "train")


def _status_mb(field: str) -> float:
    """VmRSS (now) or VmHWM (peak since the last reset) of this process, in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak() -> None:
    """Resets this process's peak RSS (VmHWM) to its current RSS (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def child(n: int, images: str, batch_size: int) -> dict:
    """One measurement, in this (fresh) process."""
    import private_db

    db_dir = tempfile.mkdtemp(prefix="elfs-shard-mem-")
    mongod = private_db.use(db_dir)
    try:
        import fiftyone as fo
        import torch

        import fiftyone_elfs as elfs
        from fiftyone_elfs.embeddings import efficientnet_lite

        torch.set_num_threads(1)
        paths = sorted(glob.glob(os.path.join(images, "*", "*.jpg")))[:n]
        if len(paths) < n:
            raise SystemExit(
                f"only {len(paths)} JPEGs under {images}/<class>/, {n} asked. Fix: pass "
                "--images with a larger class tree (the benchmark harness extracts CIFAR-10's "
                "50,000 train images into benchmarks/cache/cifar10/train on its first run)."
            )
        dataset = fo.Dataset()
        dataset.add_samples([fo.Sample(filepath=p) for p in paths])
        # warm-up on a few images under another key: the encoder and torch's kernels load
        elfs.embed_shard(
            dataset.limit(2 * batch_size), 0, 1, key="warmup", progress=lambda *_: None
        )
        before = _status_mb("VmRSS")
        _reset_peak()
        start = time.perf_counter()
        result = elfs.embed_shard(dataset, 0, 1, batch_size=batch_size, progress=lambda *_: None)
        seconds = time.perf_counter() - start
        peak = _status_mb("VmHWM")
        dim = efficientnet_lite.FEATURE_DIM  # the default encoder's output width
        return {
            "n": n,
            "n_computed": result["n_computed"],
            "seconds": round(seconds, 1),
            "rss_before_mb": round(before, 1),
            "peak_mb": round(peak, 1),
            "growth_mb": round(peak - before, 1),
            "vectors_mb": round(n * dim * 4 / 2**20, 1),
            "batch_size": batch_size,
            "time": time.strftime("%Y-%m-%d %H:%M"),
        }
    finally:
        mongod.terminate()
        mongod.wait()
        shutil.rmtree(db_dir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="2000,20000", help="comma list of shard sizes")
    parser.add_argument("--images", default=DEFAULT_IMAGES, help="folder of <class>/*.jpg")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.images, args.batch_size)))
        return
    for n in (int(s) for s in args.sizes.split(",")):
        child_run = subprocess.run(
            [sys.executable, __file__, "--child", str(n), "--images", args.images]
            + ["--batch-size", str(args.batch_size)],
            stdout=subprocess.PIPE,  # the child's errors go to this process's stderr
            text=True,
        )
        if child_run.returncode:
            raise SystemExit(child_run.returncode)
        out = child_run.stdout
        row = json.loads(out.strip().splitlines()[-1])
        print(json.dumps(row), flush=True)
        with open(OUT, "a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
