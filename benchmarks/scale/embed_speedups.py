"""The two embedding speed-ups of 2026-12-02, each against the code without it (issue 16).

On CIFAR-10 train JPEGs (``../shared/data/cifar10-jpg.tar.gz``, extracted to a temporary folder;
or ``--image-dir``), CPU, the encoder's default threads, EfficientNet-Lite0 at 128 px:

- ``fold``: the encoder's ``features`` with the batch norms folded into the convolutions (what
  ``load_encoder`` builds) against the same weights unfolded (``load_efficientnet_lite``), on
  the same decoded batches, the two timed in alternation ``--pairs`` times; plus the largest
  relative difference of the pooled features.
- ``resize``: ``iter_embedded_chunks`` on ``--images`` files with the batched uint8 resize
  against the per-image PIL resize (``batch_resize=None``), in alternation ``--pairs`` times;
  plus how much the embeddings differ (smallest cosine, median relative difference, and the
  share of each image's 10 nearest neighbours that both give).

The machine's speed drifts over minutes, so only the paired ratios mean much. Prints one JSON
line and appends it to ``benchmarks/results/scale/embed_speedups.jsonl``:

    .venv/bin/python benchmarks/scale/embed_speedups.py
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
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
sys.path.insert(0, ROOT)
TAR = os.path.join(ROOT, "..", "shared", "data", "cifar10-jpg.tar.gz")
OUT = os.path.join(ROOT, "benchmarks", "results", "scale", "embed_speedups.jsonl")


def _rate(fn, n_images: int) -> float:
    t = time.perf_counter()
    fn()
    return n_images / (time.perf_counter() - t)


def fold_pairs(encoder, paths: list[str], pairs: int) -> dict:
    """Images per second of the folded and the unfolded network, in alternation."""
    import torch
    from PIL import Image

    from fiftyone_elfs.embeddings import efficientnet_lite
    from fiftyone_elfs.heap import keep_freed_memory

    unfolded = copy.copy(encoder)
    unfolded.model = (
        efficientnet_lite.load_efficientnet_lite("lite0")
        .to(encoder.device)
        .to(memory_format=torch.channels_last)
    )
    images = []
    for p in paths[:256]:
        with Image.open(p) as img:
            images.append(img.convert("RGB"))
    batches = [encoder.preprocess(images[s : s + 64]) for s in range(0, len(images), 64)]

    def run(enc) -> None:
        for batch in batches:
            enc.embed_batch(batch)

    rows = []
    with torch.inference_mode(), keep_freed_memory():
        run(encoder), run(unfolded)  # warm-up
        for _ in range(pairs):
            rows.append(
                (
                    _rate(lambda: run(unfolded), len(images)),
                    _rate(lambda: run(encoder), len(images)),
                )
            )
        want = torch.cat([unfolded.features(b) for b in batches])
        got = torch.cat([encoder.features(b) for b in batches])
    rel = ((got - want).norm(dim=1) / want.norm(dim=1)).max().item()
    return {
        "unfolded_folded_images_per_s": [[round(a, 1), round(b, 1)] for a, b in rows],
        "speedup": round(sum(b for _, b in rows) / sum(a for a, _ in rows), 3),
        "max_relative_difference": float(f"{rel:.2e}"),
    }


def resize_pairs(encoder, paths: list[str], pairs: int) -> dict:
    """Images per second of the loop with and without the batched resize, in alternation,
    and how far apart the two give the embeddings."""
    import numpy as np

    from fiftyone_elfs.embeddings.encoders import iter_embedded_chunks

    cls = type(encoder)
    batched = encoder.batched_preprocessing
    per_image = dataclasses.replace(batched, batch_resize=None)
    original = cls.batched_preprocessing

    def run(split) -> tuple[float, np.ndarray]:
        cls.batched_preprocessing = property(lambda self: split)
        try:
            t = time.perf_counter()
            X = np.concatenate([x for _, x, _ in iter_embedded_chunks(paths, encoder)])
            return len(paths) / (time.perf_counter() - t), X
        finally:
            cls.batched_preprocessing = original

    run(batched)  # warm-up
    rows = []
    for _ in range(pairs):
        a, X_pil = run(per_image)
        b, X_batch = run(batched)
        rows.append((a, b))
    cosine = (
        (X_pil * X_batch).sum(1) / np.linalg.norm(X_pil, axis=1) / np.linalg.norm(X_batch, axis=1)
    )
    rel = np.linalg.norm(X_pil - X_batch, axis=1) / np.linalg.norm(X_pil, axis=1)

    def knn(X: np.ndarray) -> np.ndarray:
        Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
        S = Xn @ Xn.T  # a few thousand rows: a benchmark, not the library
        np.fill_diagonal(S, -np.inf)
        return np.argsort(-S, axis=1)[:, :10]

    overlap = np.mean(
        [len(set(a) & set(b)) / 10 for a, b in zip(knn(X_pil), knn(X_batch), strict=True)]
    )
    return {
        "pil_batched_images_per_s": [[round(a, 1), round(b, 1)] for a, b in rows],
        "speedup": round(sum(b for _, b in rows) / sum(a for a, _ in rows), 3),
        "min_cosine": round(float(cosine.min()), 7),
        "median_relative_difference": float(f"{np.median(rel):.2e}"),
        "knn10_overlap": round(float(overlap), 4),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--image-dir", help="a folder of images (default: the CIFAR-10 train JPEGs)")
    p.add_argument("--images", type=int, default=3072, help="files for the resize comparison")
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument("--out", default=OUT)
    args = p.parse_args()

    tmp = tempfile.mkdtemp(prefix="elfs-speedups-")
    try:
        folder = args.image_dir
        if folder is None:
            subprocess.run(["tar", "-xzf", TAR, "-C", tmp, "--wildcards", "train/*"], check=True)
            folder = os.path.join(tmp, "train")
        paths = sorted(glob.glob(os.path.join(folder, "**", "*.*"), recursive=True))
        paths = paths[:: max(1, len(paths) // args.images)][: args.images]

        import torch

        from fiftyone_elfs.embeddings import load_encoder

        encoder = load_encoder("efficientnet-lite0", image_size=128)
        row = {
            "images": len(paths),
            "torch_threads": torch.get_num_threads(),
            "fold": fold_pairs(encoder, paths, args.pairs),
            "resize": resize_pairs(encoder, paths, args.pairs),
            "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        print(json.dumps(row), flush=True)
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
        with open(args.out, "a") as f:
            f.write(json.dumps(row) + "\n")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
