"""How well does the contrastive score flag planted corruptions, over draws and machines?

The planted set of ``tests/test_contrastive.py``: 300 real digit scans at 32 px, 10% of them
corrupted (noise over half the image, or two large flat occluders). For each draw d, the
corruption draw and the training seed are both d; SimCLR is trained with the test's settings
(15 epochs, batches of 64, lr 0.05) and the AUC of "low summed view similarity" for the
corrupted images is printed, next to the same training with large crops only (area 0.3-1) and
an untrained network (lr 0). Used to choose the test's thresholds from the measured spread:

    .venv/bin/python benchmarks/contrastive_planted_auc.py --draws 0-4 --threads 1
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import tempfile

import numpy as np


def planted_set(folder: str, draw: int) -> tuple[np.ndarray, np.ndarray]:
    """The test's 300 digit scans with 10% corrupted by ``draw`` (images, corrupted mask):
    the corruption is the test's own ``_corrupt``, so the two cannot drift apart."""
    from fiftyone_elfs.difficulty import load_images
    from fiftyone_elfs.sample_data import write_digit_images

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "tests"))
    from test_contrastive import _corrupt

    root = os.path.join(folder, "digits")
    if not os.path.isdir(root):
        write_digit_images(root, per_class=30)
    return _corrupt(load_images(sorted(glob.glob(os.path.join(root, "*", "*.png"))), 32), draw)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--draws", default="0-4", help="a range 'a-b' or a comma list")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--conditions", default="trained,large_crops,untrained")
    a = p.parse_args()
    from sklearn.metrics import roc_auc_score

    from fiftyone_elfs.difficulty import train_contrastive_similarity

    if "-" in a.draws:
        lo, hi = (int(v) for v in a.draws.split("-"))
        draws = list(range(lo, hi + 1))
    else:
        draws = [int(v) for v in a.draws.split(",")]
    settings = {"trained": {}, "large_crops": {"min_crop_scale": 0.3}, "untrained": {"lr": 0.0}}
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for draw in draws:
            images, corrupted = planted_set(folder, draw)
            row: dict = {"draw": draw, "threads": a.threads}
            for name in a.conditions.split(","):
                kwargs = dict(epochs=15, batch_size=64, lr=0.05, seed=draw, num_threads=a.threads)
                kwargs.update(settings[name])
                scores = train_contrastive_similarity(images, **kwargs)
                row[name] = round(float(roc_auc_score(corrupted, -scores.similarity)), 3)
            print(json.dumps(row), flush=True)
            rows.append(row)
    for name in a.conditions.split(","):
        values = np.array([r[name] for r in rows])
        std = values.std(ddof=1) if values.size > 1 else 0.0
        print(
            f"{name}: mean {values.mean():.3f} std {std:.3f} "
            f"min {values.min():.3f} max {values.max():.3f}",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()
