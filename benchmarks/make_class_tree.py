"""Write a labeled image folder unlike the tuning data, for checking that a rule generalises.

The selection rules were tuned on balanced, colour, 10-class CIFAR-10 (validation split). This
script derives class trees (``OUT/train/<class>/*.png``, ``OUT/test/<class>/*.png``, the layout
``run_benchmark.py --data-dir`` reads) that differ in what the rules must not depend on:

- ``--source digits``: scikit-learn's handwritten digits (8 x 8 grayscale, ships with the
  package), split 70/30 per class;
- ``--source cifar10``: CIFAR-10's JPEG tree (extracted by the benchmark into its cache);
- ``--classes K``: keep K classes, chosen by ``--seed``;
- ``--imbalance R``: long-tailed train split, class i keeps ``n_max * R ** (-i / (K - 1))``
  images (the first class the most, the last ``R`` times fewer); the test split stays as drawn;
- ``--grayscale``: store single-channel images.

Example (the sets of ``results/generalisation/``)::

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


def _digits() -> tuple[list[Image.Image], np.ndarray, list[Image.Image], np.ndarray]:
    """scikit-learn's digits as grayscale images, split 70/30 per class (seed 0)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = [Image.fromarray((img * 255.0 / 16.0).astype(np.uint8), "L") for img in d.images]
    rng = np.random.default_rng(0)
    train, test = [], []
    for c in np.unique(d.target):
        members = rng.permutation(np.flatnonzero(d.target == c))
        cut = int(round(0.7 * members.size))
        train.extend(members[:cut])
        test.extend(members[cut:])
    tr, te = np.sort(train), np.sort(test)
    return [images[i] for i in tr], d.target[tr], [images[i] for i in te], d.target[te]


def _class_tree(root: str) -> tuple[list[str], np.ndarray, list[str]]:
    names = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    paths, labels = [], []
    for i, name in enumerate(names):
        files = sorted(os.listdir(os.path.join(root, name)))
        paths += [os.path.join(root, name, f) for f in files]
        labels += [i] * len(files)
    return paths, np.asarray(labels), names


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
    p.add_argument("--classes", type=int, help="keep this many classes (default all)")
    p.add_argument("--imbalance", type=float, default=1.0, help="largest / smallest class")
    p.add_argument(
        "--per-class", type=int, help="train images of the largest class (default: fewest any has)"
    )
    p.add_argument("--test-per-class", type=int, default=10**9)
    p.add_argument("--grayscale", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    rng = np.random.default_rng(a.seed)

    if a.source == "digits":
        tr_img, tr_y, te_img, te_y = _digits()
        names = [f"digit_{c}" for c in range(10)]

        def load_train(i: int) -> Image.Image:
            return tr_img[i]

        def load_test(i: int) -> Image.Image:
            return te_img[i]
    else:
        if not os.path.isdir(os.path.join(a.cifar10_dir, "train")):
            sys.exit(
                f"No CIFAR-10 tree at {a.cifar10_dir}: run any CIFAR-10 benchmark once (it "
                "extracts the archive there) or pass --cifar10-dir."
            )
        tr_paths, tr_y, names = _class_tree(os.path.join(a.cifar10_dir, "train"))
        te_paths, te_y, _ = _class_tree(os.path.join(a.cifar10_dir, "test"))

        def load_train(i: int) -> Image.Image:
            return Image.open(tr_paths[i])

        def load_test(i: int) -> Image.Image:
            return Image.open(te_paths[i])

    n_classes = len(names)
    kept = np.sort(rng.permutation(n_classes)[: a.classes or n_classes])
    order = rng.permutation(kept)  # which kept class is the head of the long tail
    available = np.array([(tr_y == c).sum() for c in order])
    counts = long_tail_counts(available, a.per_class or int(available.min()), a.imbalance)

    tmp = a.out.rstrip("/") + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    written = {"train": {}, "test": {}}
    for split, labels, load, quota in (
        ("train", tr_y, load_train, dict(zip(order, counts, strict=True))),
        ("test", te_y, load_test, {c: a.test_per_class for c in order}),
    ):
        for c in order:
            folder = os.path.join(tmp, split, names[c])
            os.makedirs(folder)
            members = rng.permutation(np.flatnonzero(labels == c))[: int(quota[c])]
            for i in members:
                img = load(int(i))
                img = img.convert("L") if a.grayscale else img.convert("RGB")
                img.save(os.path.join(folder, f"{int(i):06d}.png"))
            written[split][names[c]] = int(members.size)
    shutil.rmtree(a.out, ignore_errors=True)
    os.replace(tmp, a.out)
    for split, per_class in written.items():
        print(f"{split}: {sum(per_class.values())} images, per class {per_class}")
    return a.out


if __name__ == "__main__":
    main()
