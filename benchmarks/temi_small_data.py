"""TEMI on small datasets: does a floor on optimiser steps stop it staying near uniform?

TEMI's CPU defaults (15 epochs of batch 256) give a 10,000-sample pool 600 optimiser steps but
300 images only 30, and on 300 CIFAR-10 images its heads stayed near the uniform assignment (the
pseudo-labels stage then falls back to k-means). This script measures, on validation data only,
for pool sizes drawn from the exploration's CIFAR-10 tuning pool (train images, data seed 101;
the test split is never read) and on scikit-learn's digits:

- k-means pseudo-labels (the fallback),
- TEMI as it was before ``TEMIClustering(min_steps=...)`` existed (15 epochs, 2 warm-up,
  whatever the data size: ``min_steps=None``),
- TEMI with ``min_steps=--min-steps``: epochs raised so that it takes at least that many
  optimiser steps, the warm-up the same share of them (the library default is
  ``TEMI_MIN_STEPS``; rows named ``temi_min<steps>``),
- TEMI with every library default (``default``: the step floor, and the neighbour count capped
  at half the mean cluster size on small data, ``TEMI_NEIGHBORS``); the two rows above keep the
  50 neighbours they had before that cap,

printing Hungarian accuracy (report only), mean confidence and whether the near-uniform check
fired, with the fit time. One JSON line per (data, size, seed, method) to ``--out``.

    .venv/bin/python benchmarks/temi_small_data.py --sizes 300,1000,3000 --seeds 0,1,2 \
        --out benchmarks/results/temi-small-data/runs.jsonl
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import warnings

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # other jobs share the cores
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import numpy as np  # noqa: E402
from elfs_bench.data import cached_embeddings  # noqa: E402
from pseudo_label_accuracy import _splits  # noqa: E402  (the same tuning pool and digits)

from fiftyone_elfs.pseudo_labels import (  # noqa: E402
    TEMIClustering,
    cluster_accuracy,
    kmeans_pseudo_labels,
)


def _temi(X: np.ndarray, k: int, seed: int, **params) -> dict:
    """The library's TEMI with its defaults but ``params``; ``min_steps=None`` is the schedule
    before the floor (15 epochs, 2 warm-up, whatever the data size)."""
    temi = TEMIClustering(k, seed=seed, num_threads=1, **params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        temi.fit(X)
    return {
        "labels": temi.labels_,
        "epochs": temi.epochs_,
        "n_neighbors": temi.n_neighbors_,
        "steps": temi.epochs_ * math.ceil(X.shape[0] / temi.batch_size),
        "mean_confidence": float(temi.mean_confidence_),
        "near_uniform": bool(temi.near_uniform_),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="300,1000,3000", help="pool sizes drawn from the CIFAR pool")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--min-steps", type=int, default=600)
    p.add_argument("--cache-dir", default=os.path.join(HERE, "cache"))
    p.add_argument("--out", required=True)
    a = p.parse_args()
    seeds = [int(s) for s in a.seeds.split(",")]
    sizes = [int(s) for s in a.sizes.split(",")]
    done = set()
    if os.path.exists(a.out):
        with open(a.out) as f:
            done = {(r["data"], r["n"], r["seed"], r["method"]) for r in map(json.loads, f)}
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    sets = []
    for name, paths, y in _splits(a.cache_dir, skip_cifar=False):
        if name == "cifar10 val":
            continue
        X = cached_embeddings(paths, a.cache_dir)
        if name == "digits":
            sets.append(("digits", X, y, None))
        else:
            sets += [(name, X, y, n) for n in sizes]
    methods = ("kmeans", "temi", f"temi_min{a.min_steps}", "default")
    for name, X_all, y_all, n in sets:
        for seed in seeds:
            if n is None:
                X, y = X_all, y_all
            else:  # a different draw per seed: the pool itself varies, as users' data does
                idx = np.sort(np.random.default_rng(1000 + seed).permutation(y_all.size)[:n])
                X, y = X_all[idx], y_all[idx]
            k = int(np.unique(y).size)
            for method in methods:
                key = (name, int(X.shape[0]), seed, method)
                if key in done:
                    continue
                t0 = time.perf_counter()
                if method == "kmeans":
                    row = {"labels": kmeans_pseudo_labels(X, k, seed=seed)[0]}
                elif method == "default":
                    row = _temi(X, k, seed)
                else:
                    steps = a.min_steps if method != "temi" else None
                    row = _temi(X, k, seed, min_steps=steps, n_neighbors=50)
                labels = row.pop("labels")
                row.update(
                    data=name, n=int(X.shape[0]), seed=seed, method=method, clusters=k,
                    accuracy=float(cluster_accuracy(y, labels)),
                    seconds=round(time.perf_counter() - t0, 2),
                )  # fmt: skip
                print(json.dumps(row), flush=True)
                with open(a.out, "a") as f:
                    f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
