"""How accurate could ANY pseudo-labels built on these features be? (validation data only)

The default rule's selection pays only once its pseudo-labels are accurate enough (the
``oracle<acc>`` calibration rows of ``explore_selection.py``). This script asks how close to
that the offline encoders' features can carry a label-free method, by two ceilings that USE the
true labels (report only; nothing here selects anything):

- ``knn agreement``: per sample, the share of its k nearest neighbours (cosine, in the pool)
  with its own true class. A clustering that follows the features' neighbourhoods (TEMI, SCAN,
  spectral) cannot put many samples with a neighbourhood of another class in their own class.
- ``probe (5-fold)``: a linear probe fitted to the TRUE labels of four fifths of the pool,
  predicting the fifth; the accuracy of the best pseudo-labels a linear readout of the features
  gives, with all labels known.

On the exploration's CIFAR-10 tuning pool (10,000 train images, data seed 101, as
``explore_selection.py``; the test split is never read):

    .venv/bin/python benchmarks/feature_ceiling.py [--encoders efficientnet-lite0,...]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # other jobs share the cores
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import numpy as np  # noqa: E402
from elfs_bench.data import cached_embeddings, list_class_tree, prepare_cifar10  # noqa: E402
from elfs_bench.methods import knn_agreement  # noqa: E402
from explore_selection import draw  # noqa: E402  (the same pool and validation split)

from fiftyone_elfs.pseudo_labels import nearest_neighbors  # noqa: E402

#: encoder name -> input size, as the exploration embeds them
IMAGE_SIZES = {
    "efficientnet-lite0": 128,
    "efficientnet-lite0-prehead": 128,
    "efficientnet-lite2": 260,
}


def cross_validated_probe_labels(
    X: np.ndarray, y: np.ndarray, folds: int = 5, seed: int = 0
) -> np.ndarray:
    """Each sample's class as predicted by protocol A's linear probe fitted to the TRUE labels
    of the other folds: the best pseudo-labels a linear readout of ``X`` gives (uses labels)."""
    from elfs_bench.protocols import feature_stats, probe_predictions

    stats = feature_stats(X)
    pred = np.empty_like(y)
    order = np.random.default_rng(seed).permutation(y.size)
    for part in np.array_split(order, folds):
        rest = np.setdiff1d(order, part)
        pred[part] = probe_predictions(X[rest], y[rest], X[part], stats)[0]
    return pred


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--encoders", default="efficientnet-lite0,efficientnet-lite0-prehead")
    p.add_argument("--pool", type=int, default=10000)
    p.add_argument("--data-seed", type=int, default=101)
    p.add_argument("--cache-dir", default=os.path.join(HERE, "cache"))
    a = p.parse_args()
    root = prepare_cifar10(
        os.path.join(HERE, "..", "..", "shared", "data", "cifar10-jpg.tar.gz"), a.cache_dir
    )
    paths, names = list_class_tree(os.path.join(root, "train"))
    classes = sorted(set(names))
    y_all = np.array([classes.index(c) for c in names])
    pool_idx, _ = draw(y_all, a.pool, 5000, a.data_seed, 0)
    pool_paths = [paths[i] for i in pool_idx]
    y = y_all[pool_idx]
    print("| encoder | dim | 10-NN agreement | 50-NN agreement | probe (5-fold) | seconds |")
    print("|---|---|---|---|---|---|")
    for name in a.encoders.split(","):
        t0 = time.time()
        X = cached_embeddings(pool_paths, a.cache_dir, name, image_size=IMAGE_SIZES[name])
        nn = nearest_neighbors(X, 50)  # cosine, each sample itself excluded
        row = (
            float(np.mean(knn_agreement(y, nn[:, :10]))),
            float(np.mean(knn_agreement(y, nn))),
            float(np.mean(cross_validated_probe_labels(X, y) == y)),
        )
        print(
            f"| {name} | {X.shape[1]} | "
            + " | ".join(f"{100 * v:.1f}%" for v in row)
            + f" | {time.time() - t0:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
