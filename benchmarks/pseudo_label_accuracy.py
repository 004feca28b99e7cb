"""How close each label-free clustering comes to the true classes, on validation data only.

Prints the Hungarian-matched accuracy (report only: the labels are never used to cluster) of
k-means and spectral pseudo-labels, for the default EfficientNet-Lite0 features and its pre-head
features, over several seeds, on:
- the exploration's CIFAR-10 tuning pool (10,000) and validation split (5,000) drawn from the
  train images with data seed 101 (as ``explore_selection.py``; the test split is never read);
- scikit-learn's 1,797 digits written as images (the second sanity set).

    .venv/bin/python benchmarks/pseudo_label_accuracy.py [--seeds 0,1,2] [--skip-cifar]

Embeddings are cached in ``benchmarks/cache/features`` (computed once, about 3 minutes per
10,000 images on 2 cores).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # other jobs share the cores
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import numpy as np  # noqa: E402
from elfs_bench.data import (  # noqa: E402
    cached_embeddings,
    list_class_tree,
    prepare_cifar10,
)
from explore_selection import draw  # noqa: E402  (the same pool and validation split)

from fiftyone_elfs.pseudo_labels import (  # noqa: E402
    cluster_accuracy,
    kmeans_pseudo_labels,
    pseudo_label_trust,
    spectral_pseudo_labels,
)

ENCODERS = ("efficientnet-lite0", "efficientnet-lite0-prehead")
CLUSTERINGS = {"kmeans": kmeans_pseudo_labels, "spectral": spectral_pseudo_labels}


def _splits(cache_dir: str, skip_cifar: bool) -> list[tuple[str, list[str], np.ndarray]]:
    """(name, image paths, class ids) of each evaluation set."""
    out = []
    if not skip_cifar:
        root = prepare_cifar10(
            os.path.join(HERE, "..", "..", "shared", "data", "cifar10-jpg.tar.gz"), cache_dir
        )
        paths, names = list_class_tree(os.path.join(root, "train"))
        classes = sorted(set(names))
        y = np.array([classes.index(c) for c in names])
        pool, val = draw(y, pool=10000, val=5000, seed=101)
        for name, idx in (("cifar10 pool", pool), ("cifar10 val", val)):
            out.append((name, [paths[i] for i in idx], y[idx]))
    from fiftyone_elfs.sample_data import write_digit_images

    root = write_digit_images(os.path.join(tempfile.gettempdir(), "elfs-digits-images"))
    paths, names = list_class_tree(root)
    classes = sorted(set(names))
    out.append(("digits", paths, np.array([classes.index(c) for c in names])))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--cache-dir", default=os.path.join(HERE, "cache"))
    p.add_argument("--skip-cifar", action="store_true")
    a = p.parse_args()
    seeds = [int(s) for s in a.seeds.split(",")]
    print(
        "| data | features | clustering | accuracy per seed | mean | s per run "
        "| trust stability per seed |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, paths, y in _splits(a.cache_dir, a.skip_cifar):
        k = int(np.unique(y).size)
        for encoder in ENCODERS:
            X = cached_embeddings(paths, a.cache_dir, encoder)
            for method, fn in CLUSTERINGS.items():
                t0 = time.perf_counter()
                labels = [fn(X, k, seed=s)[0] for s in seeds]
                per_run = (time.perf_counter() - t0) / len(seeds)
                accs = [cluster_accuracy(y, lab) for lab in labels]
                # the label-free diagnostic that select_coreset(mode="auto") reads
                trust = [
                    pseudo_label_trust(X, lab, seed=s).stability
                    for lab, s in zip(labels, seeds, strict=True)
                ]
                cells = " / ".join(f"{100 * v:.1f}" for v in accs)
                print(
                    f"| {name} | {encoder} | {method} | {cells} | {100 * np.mean(accs):.1f} "
                    f"| {per_run:.1f} | {' / '.join(f'{v:.2f}' for v in trust)} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
