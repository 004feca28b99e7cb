"""The embedding speed-ups of 2026-12-02, each against the code without it (issue 16).

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

And three of the evening of 2026-12-02 (``--only decode,normalise,compress``):

- ``decode``: ``iter_embedded_chunks`` with ordinary JPEGs decoded by OpenCV
  (``embeddings.jpeg``) against PIL for every file (OpenCV hidden), in alternation; plus
  whether the embeddings are bit-identical.
- ``normalise``: ``BatchedPreprocessing.to_batch`` (Normalize by scalars) against the former
  broadcast ``(1, C, 1, 1)`` Normalize on the same uint8 batches, ms per image; plus whether the
  tensors are bit-identical.
- ``compress``: ``dataset_io._encode_vectors`` on one thread with zlib's run-length strategy
  (``_VECTOR_ZLIB_STRATEGY``) against the default strategy, on the embeddings of the decode
  comparison: ms per vector and mean stored bytes.

The machine's speed drifts over minutes, so only the paired ratios mean much. Prints one JSON
line and appends it to ``benchmarks/results/scale/embed_speedups.jsonl``:

    .venv/bin/python benchmarks/scale/embed_speedups.py
    .venv/bin/python benchmarks/scale/embed_speedups.py --only decode,normalise,compress
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
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, ROOT)
TAR = os.path.join(ROOT, "..", "shared", "data", "cifar10-jpg.tar.gz")
OUT = os.path.join(ROOT, "benchmarks", "results", "scale", "embed_speedups.jsonl")


def _rate(fn, n_images: int) -> float:
    t = time.perf_counter()
    fn()
    return n_images / (time.perf_counter() - t)


def _timed_loop(encoder, paths: list[str]) -> tuple[float, Any]:
    """(images per second, embeddings) of one `iter_embedded_chunks` pass over `paths`."""
    import numpy as np

    from fiftyone_elfs.embeddings.encoders import iter_embedded_chunks

    t = time.perf_counter()
    X = np.concatenate([x for _, x, _ in iter_embedded_chunks(paths, encoder)])
    return len(paths) / (time.perf_counter() - t), X


def _alternate(without, with_, pairs: int) -> tuple[list[tuple[float, float]], Any, Any]:
    """Runs `with_` once to warm up, then `without` and `with_` in alternation `pairs` times;
    returns the (without, with) rates and the last embeddings of each."""
    with_()
    rows = []
    for _ in range(pairs):
        a, X_without = without()
        b, X_with = with_()
        rows.append((a, b))
    return rows, X_without, X_with


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

    cls = type(encoder)
    batched = encoder.batched_preprocessing
    per_image = dataclasses.replace(batched, batch_resize=None)
    original = cls.batched_preprocessing

    def run(split) -> tuple[float, np.ndarray]:
        cls.batched_preprocessing = property(lambda self: split)
        try:
            return _timed_loop(encoder, paths)
        finally:
            cls.batched_preprocessing = original

    rows, X_pil, X_batch = _alternate(lambda: run(per_image), lambda: run(batched), pairs)
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


def decode_pairs(encoder, paths: list[str], pairs: int) -> tuple[dict, Any]:
    """Images per second of the loop with the OpenCV JPEG path and with PIL only, in
    alternation, whether both give the same embeddings, and those embeddings."""
    import numpy as np

    from fiftyone_elfs.embeddings import jpeg

    def pil_only() -> tuple[float, np.ndarray]:
        original = jpeg._opencv
        jpeg._opencv = lambda: None
        try:
            return _timed_loop(encoder, paths)
        finally:
            jpeg._opencv = original

    rows, X_pil, X_cv = _alternate(pil_only, lambda: _timed_loop(encoder, paths), pairs)
    return {
        "pil_opencv_images_per_s": [[round(a, 1), round(b, 1)] for a, b in rows],
        "speedup": round(sum(b for _, b in rows) / sum(a for a, _ in rows), 3),
        "bit_identical": bool(np.array_equal(X_pil, X_cv)),
    }, X_cv


def normalise_pairs(encoder, paths: list[str], pairs: int, batch_size: int = 64) -> dict:
    """ms per image of `to_batch` and of the former broadcast Normalize, in alternation."""
    import torch

    from fiftyone_elfs.embeddings.encoders import _collate, _ImageFiles

    split = encoder.batched_preprocessing
    files = _ImageFiles(paths, split.to_array, takes_arrays=True)
    batches = [
        _collate([files[i] for i in range(s, min(s + batch_size, len(paths)))])[1]
        for s in range(0, len(paths), batch_size)
    ]

    def broadcast(arrays):
        x = split._uint8_batch(arrays).to(dtype=torch.get_default_dtype()).div(255)
        mean = torch.as_tensor(split.mean, dtype=x.dtype).view(1, -1, 1, 1)
        std = torch.as_tensor(split.std, dtype=x.dtype).view(1, -1, 1, 1)
        return x.sub_(mean).div_(std)

    def ms(fn) -> float:
        t = time.perf_counter()
        for b in batches:
            fn(b)
        return 1000 * (time.perf_counter() - t) / len(paths)

    same = all(torch.equal(broadcast(b), split.to_batch(b)) for b in batches)
    rows = [(ms(broadcast), ms(split.to_batch)) for _ in range(pairs)]
    return {
        "broadcast_scalar_ms_per_image": [[round(a, 4), round(b, 4)] for a, b in rows],
        "speedup": round(sum(a for a, _ in rows) / sum(b for _, b in rows), 3),
        "bit_identical": bool(same),
        "mean_std": [list(split.mean), list(split.std)],
    }


def compress_pairs(X: Any, pairs: int) -> dict:
    """ms per vector and mean bytes of the stored vectors with zlib's run-length strategy and
    with its default strategy, one thread, in alternation."""
    import zlib

    from fiftyone_elfs import dataset_io

    vectors = list(X)
    results = {}

    def run(strategy: int) -> tuple[float, float]:
        original = dataset_io._VECTOR_ZLIB_STRATEGY
        dataset_io._VECTOR_ZLIB_STRATEGY = strategy
        try:
            t = time.perf_counter()
            stored = dataset_io._encode_vectors(vectors, threads=1)
            seconds = time.perf_counter() - t
        finally:
            dataset_io._VECTOR_ZLIB_STRATEGY = original
        results[strategy] = stored
        return 1000 * seconds / len(vectors), sum(map(len, stored)) / len(stored)

    rows = [(run(zlib.Z_DEFAULT_STRATEGY), run(zlib.Z_RLE)) for _ in range(pairs)]
    readable = all(
        zlib.decompress(a) == zlib.decompress(b)
        for a, b in zip(results[zlib.Z_DEFAULT_STRATEGY], results[zlib.Z_RLE], strict=True)
    )
    return {
        "vectors": len(vectors),
        "dim": int(X.shape[1]),
        "default_rle_ms_per_vector": [[round(a[0], 4), round(b[0], 4)] for a, b in rows],
        "speedup": round(sum(a[0] for a, _ in rows) / sum(b[0] for _, b in rows), 3),
        "default_rle_bytes": [round(rows[0][0][1]), round(rows[0][1][1])],
        "same_contents": bool(readable),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--image-dir", help="a folder of images (default: the CIFAR-10 train JPEGs)")
    p.add_argument("--images", type=int, default=3072, help="files for the resize comparison")
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument(
        "--only",
        default="fold,resize",
        help="comma-separated: fold, resize, decode, normalise, compress (compress runs decode)",
    )
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
        only = set(args.only.split(","))
        row = {"images": len(paths), "torch_threads": torch.get_num_threads()}
        if "fold" in only:
            row["fold"] = fold_pairs(encoder, paths, args.pairs)
        if "resize" in only:
            row["resize"] = resize_pairs(encoder, paths, args.pairs)
        if "decode" in only or "compress" in only:
            row["decode"], X = decode_pairs(encoder, paths, args.pairs)
        if "normalise" in only:
            row["normalise"] = normalise_pairs(encoder, paths, args.pairs)
        if "compress" in only:
            row["compress"] = compress_pairs(X, args.pairs)
        row["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
        print(json.dumps(row), flush=True)
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
        with open(args.out, "a") as f:
            f.write(json.dumps(row) + "\n")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
