"""Does adapting the offline encoder to the unlabeled pool lift its pseudo-labels? (validation only)

Issue 13's ceiling is pseudo-label quality: EfficientNet-Lite0's ImageNet features cluster into
CIFAR-10's classes on about half the images, and the measured lever (a self-supervised encoder)
needs a network. This script measures the lever that needs none: SimCLR fine-tuning of Lite0's
last block stages on the pool's own pixels (no labels), starting from the shipped ImageNet
weights, then the same label-free clusterings on the adapted features.

Setting, fixed before any run (2026-12-07):
- Pool: ``--pool`` images drawn (seed 0) from the exploration's CIFAR-10 tuning pool (train
  images, data seed 101, as ``explore_selection.py``; the test split is never read), or
  scikit-learn's 1,797 digits (``--source digits``, the second sanity set).
- Trained: ``blocks[5]``, ``blocks[6]`` and ``conv_head`` with a projection head, by SimCLR on
  the pool's pixels, by the package's `fiftyone_elfs.embeddings.pool_adaptation` (through
  ``elfs_bench/adaptation.py``, shared with
  ``explore_selection.py``'s ``@adapted`` variants).
- Read: the pooled 1280-d features of the un-augmented images (the encoder's output, not the
  projection), before training and every ``--eval-every`` optimiser steps: 10-NN label agreement,
  k-means and TEMI (one cluster per class, seeds 0-2) Hungarian accuracy. The labels are read
  only to score (report only).

    .venv/bin/python benchmarks/adapted_encoder.py [--pool 3000] [--steps 300] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # other jobs share the cores
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from elfs_bench import adaptation  # noqa: E402
from elfs_bench.data import list_class_tree, prepare_cifar10  # noqa: E402
from elfs_bench.methods import knn_agreement  # noqa: E402
from explore_selection import draw  # noqa: E402  (the same pool and validation split)

from fiftyone_elfs.pseudo_labels import (  # noqa: E402
    TEMIClustering,
    cluster_accuracy,
    kmeans_pseudo_labels,
    nearest_neighbors,
)


def pool_images(source: str, pool: int, cache_dir: str) -> tuple[list[str], np.ndarray]:
    """(image paths, class ids) of the pool: ``pool`` images drawn (seed 0) from the CIFAR-10
    tuning pool (a random subset: the draw is sorted, and the listing is by class), or every one
    of scikit-learn's 1,797 digits written as PNGs (the second sanity set)."""
    if source == "digits":
        from fiftyone_elfs.sample_data import write_digit_images

        root = write_digit_images(os.path.join(tempfile.gettempdir(), "elfs-digits-images"))
    else:
        archive = os.path.join(HERE, "..", "..", "shared", "data", "cifar10-jpg.tar.gz")
        root = os.path.join(prepare_cifar10(archive, cache_dir), "train")
    paths, names = list_class_tree(root)
    classes = sorted(set(names))
    y = np.array([classes.index(c) for c in names])
    if source == "digits":
        return paths, y
    pool_idx, _ = draw(y, 10000, 5000, 101, 0)
    pool_idx = np.sort(np.random.default_rng(0).permutation(pool_idx)[:pool])
    return [paths[i] for i in pool_idx], y[pool_idx]


def scores(X: np.ndarray, y: np.ndarray, n_clusters: int) -> dict[str, float]:
    nn10 = nearest_neighbors(X, 10)
    km = [cluster_accuracy(y, kmeans_pseudo_labels(X, n_clusters, seed=s)[0]) for s in (0, 1, 2)]
    temi = [
        cluster_accuracy(y, TEMIClustering(n_clusters, seed=s).fit(X).labels_) for s in (0, 1, 2)
    ]
    return {
        "knn10_agreement": float(np.mean(knn_agreement(y, nn10))),
        "kmeans_acc_mean": float(np.mean(km)),
        "kmeans_acc_min": float(np.min(km)),
        "kmeans_acc_max": float(np.max(km)),
        "temi_acc_mean": float(np.mean(temi)),
        "temi_acc_min": float(np.min(temi)),
        "temi_acc_max": float(np.max(temi)),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--source", choices=("cifar10", "digits"), default="cifar10")
    p.add_argument("--pool", type=int, default=3000, help="CIFAR-10 images (digits: all 1,797)")
    p.add_argument("--steps", type=int, default=adaptation.DEFAULT_STEPS)
    p.add_argument("--eval-every", type=int, default=100, help="steps")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache-dir", default=os.path.join(HERE, "cache"))
    p.add_argument("--out", default=None, help="jsonl file the rows are appended to")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    paths, y = pool_images(a.source, a.pool, a.cache_dir)
    classes = np.unique(y)
    t0 = time.time()
    pixels = adaptation.load_pixels(paths)
    print(f"{len(paths)} images loaded in {time.time() - t0:.0f} s", flush=True)

    settings = {
        "source": a.source,
        "pool": len(paths),
        "batch": adaptation.BATCH,
        "size": adaptation.IMAGE_SIZE,
        "seed": a.seed,
        "trained": adaptation.TRAINED,
    }
    train_s = [0.0, time.time()]

    def report(step: int, loss: float | None, weights: adaptation.Weights | None) -> None:
        t = time.time()
        train_s[0] += t - train_s[1]
        row = {**settings, "step": step, "loss": loss, "train_s": round(train_s[0], 1)}
        row.update(scores(adaptation.embed(weights, pixels), y, len(classes)))
        row["eval_s"] = round(time.time() - t, 1)
        print(json.dumps(row), flush=True)
        if a.out:
            with open(a.out, "a") as f:
                f.write(json.dumps(row) + "\n")
        train_s[1] = time.time()

    report(0, None, None)
    adaptation.adapt(pixels, a.steps, a.seed, report, every=a.eval_every)


if __name__ == "__main__":
    main()
