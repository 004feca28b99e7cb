"""Write a labeled image folder unlike the tuning data, for checking that a rule generalises.

The selection rules were tuned on balanced, colour, 10-class CIFAR-10 (validation split). This
script derives class trees (``OUT/train/<class>/*.png``, ``OUT/test/<class>/*.png``, the layout
``run_benchmark.py --data-dir`` reads) that differ in what the rules must not depend on:

- ``--source digits``: scikit-learn's handwritten digits (8 x 8 grayscale, ships with the
  package), split 70/30 per class;
- ``--source cifar10``: CIFAR-10's JPEG tree (extracted by the benchmark into its cache);
- ``--classes K``: keep K classes (2 to the source's number), chosen by ``--seed``;
- ``--imbalance R``: long-tailed train split, class i keeps ``n_max * R ** (-i / (K - 1))``
  images (the first class the most, the last ``R`` times fewer); the test split stays as drawn;
- ``--grayscale``: store single-channel images.

Example (the sets of ``results/generalisation-*/``)::

    .venv/bin/python benchmarks/make_class_tree.py --source cifar10 --classes 5 \\
        --imbalance 10 --grayscale --per-class 1500 --test-per-class 200 \\
        --out benchmarks/cache/derived/cifar5-lt10-gray
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

from elfs_bench.data import list_class_tree  # noqa: E402

from fiftyone_elfs.sample_data import write_digit_images  # noqa: E402


def _labelled(paths: list[str], names: list[str]) -> tuple[list[str], np.ndarray, list[str]]:
    """(paths, class index per path, class names) from ``list_class_tree``'s listing."""
    classes = sorted(set(names))
    index = {c: i for i, c in enumerate(classes)}
    return paths, np.array([index[n] for n in names], dtype=np.int64), classes


def _digit_splits(cache_dir: str) -> tuple[list[str], np.ndarray, list[str], np.ndarray, list[str]]:
    """scikit-learn's digit scans (written once as PNGs), split 70/30 per class (seed 0)."""
    folder = write_digit_images(os.path.join(cache_dir, "digit-scans"))
    paths, labels, classes = _labelled(*list_class_tree(folder))
    rng = np.random.default_rng(0)
    train, test = [], []
    for c in range(len(classes)):
        members = rng.permutation(np.flatnonzero(labels == c))
        cut = int(round(0.7 * members.size))
        train.extend(members[:cut])
        test.extend(members[cut:])
    tr, te = np.sort(train), np.sort(test)
    return [paths[i] for i in tr], labels[tr], [paths[i] for i in te], labels[te], classes


def long_tail_counts(available: np.ndarray, per_class: int, imbalance: float) -> np.ndarray:
    """Images kept per class: ``per_class * imbalance ** (-i / (K - 1))``, capped by what exists."""
    k = available.size
    if imbalance < 1:
        raise SystemExit(f"--imbalance must be >= 1 (1 = balanced); got {imbalance}")
    exponent = np.arange(k) / max(k - 1, 1)
    wanted = np.maximum(1, np.round(per_class * imbalance ** (-exponent))).astype(int)
    return np.minimum(wanted, available)


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--source", choices=("digits", "cifar10"), required=True)
    p.add_argument("--cifar10-dir", default=os.path.join(HERE, "cache", "cifar10"))
    p.add_argument("--cache-dir", default=os.path.join(HERE, "cache"), help="digits PNGs go here")
    p.add_argument("--classes", type=int, help="keep this many classes, 2..all (default all)")
    p.add_argument("--imbalance", type=float, default=1.0, help="largest / smallest class")
    p.add_argument(
        "--per-class", type=int, help="train images of the largest class (default: fewest any has)"
    )
    p.add_argument(
        "--test-per-class",
        type=int,
        default=10**9,
        help="test images per class, >= 1 (default all)",
    )
    p.add_argument("--grayscale", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    if a.classes is not None and a.classes < 2:
        p.error(f"argument --classes: keep at least 2 classes; got {a.classes}")
    if a.test_per_class < 1:
        p.error(f"argument --test-per-class: must be >= 1; got {a.test_per_class}")
    if a.per_class is not None and a.per_class < 1:
        p.error(f"argument --per-class: must be >= 1; got {a.per_class}")
    if os.path.exists(a.out):
        sys.exit(f"{a.out} already exists: pass another --out, or delete it to write it anew.")
    rng = np.random.default_rng(a.seed)

    if a.source == "digits":
        tr_paths, tr_y, te_paths, te_y, names = _digit_splits(a.cache_dir)
    else:
        if not os.path.isdir(os.path.join(a.cifar10_dir, "train")):
            sys.exit(
                f"No CIFAR-10 tree at {a.cifar10_dir}: run any CIFAR-10 benchmark once (it "
                "extracts the archive there) or pass --cifar10-dir."
            )
        tr_paths, tr_y, names = _labelled(*list_class_tree(os.path.join(a.cifar10_dir, "train")))
        te_paths, te_y, _ = _labelled(*list_class_tree(os.path.join(a.cifar10_dir, "test")))

    n_classes = len(names)
    if a.classes is not None and a.classes > n_classes:
        sys.exit(
            f"--classes {a.classes}: the {a.source} source has {n_classes} classes; keep "
            f"2..{n_classes}."
        )
    kept = np.sort(rng.permutation(n_classes)[: a.classes or n_classes])
    order = rng.permutation(kept)  # which kept class is the head of the long tail
    available = np.array([(tr_y == c).sum() for c in order])
    counts = long_tail_counts(available, a.per_class or int(available.min()), a.imbalance)

    tmp = a.out.rstrip("/") + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    written = {"train": {}, "test": {}}
    for split, paths, labels, quota in (
        ("train", tr_paths, tr_y, dict(zip(order, counts, strict=True))),
        ("test", te_paths, te_y, {c: a.test_per_class for c in order}),
    ):
        for c in order:
            folder = os.path.join(tmp, split, names[c])
            os.makedirs(folder)
            members = rng.permutation(np.flatnonzero(labels == c))[: int(quota[c])]
            for i in members:
                img = Image.open(paths[i])
                img = img.convert("L") if a.grayscale else img.convert("RGB")
                img.save(os.path.join(folder, f"{int(i):06d}.png"))
            written[split][names[c]] = int(members.size)
    os.replace(tmp, a.out)
    for split, per_class in written.items():
        print(f"{split}: {sum(per_class.values())} images, per class {per_class}")
    return a.out


if __name__ == "__main__":
    main()
