"""Reduced JPEG decoding (`jpeg.decode_rgb(at_least=...)`): the time it saves and what it changes.

A JPEG at least twice the encoder's input size on a side is decoded directly at 1/2, 1/4 or 1/8
of its size (libjpeg's scaled inverse DCT) instead of in full and then resized. For photos
whose long side is each of ``--sizes`` (random crops of scikit-image's sample photos, resized
and saved as JPEG quality 90; the larger sizes are upsampled from sources of at most 1,411 px,
so they are smoother than camera photos of that size), this prints one JSON line per size:

- ``ms_full`` / ``ms_reduced``: milliseconds per image of the loop's per-image work (file read,
  decode, the per-image resize of the encoder's preprocessing: `encoders._read_image`), median
  of ``--repeats`` passes over the files (the two ways alternating), one thread;
- ``cosine_min`` / ``cosine_p5`` / ``cosine_median``: cosine similarity between each photo's
  EfficientNet-Lite0 embedding from the full decode and from the reduced one;
- ``knn_agreement``: the share of each photo's 5 nearest neighbours (among the photos of that
  size) that both embeddings give;
- ``reduced_share`` and the reductions used, at the default margin
  (`jpeg.REDUCED_DECODE_MARGIN`) and, for comparison, with ``--margin``.

    .venv/bin/python benchmarks/scale/reduced_decode.py \\
        --out benchmarks/results/scale/reduced_decode.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

from photos import photo_jpegs  # noqa: E402


def knn(X: np.ndarray, k: int = 5) -> np.ndarray:
    """Each row's k nearest other rows by cosine (few rows: the full matrix is fine here)."""
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    sims = Xn @ Xn.T
    np.fill_diagonal(sims, -np.inf)
    return np.argsort(-sims, axis=1)[:, :k]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sizes", default="400,600,1000,2000,4000", help="long sides, px")
    p.add_argument("--photos", type=int, default=60, help="per size")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--margin", type=float, default=1.0, help="a second margin to compare")
    p.add_argument("--out", default=None)
    args = p.parse_args()

    import torch

    from fiftyone_elfs.embeddings import encoders, jpeg, load_encoder

    torch.set_num_threads(1)
    encoder = load_encoder("efficientnet-lite0", image_size=128)
    split = encoder.batched_preprocessing
    floor = encoders.reduced_decode_floor(split)
    for long_side in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory() as folder:
            paths = []
            for i, data in enumerate(photo_jpegs(args.photos, long_side, seed=long_side)):
                paths.append(os.path.join(folder, f"{i:04d}.jpg"))
                with open(paths[-1], "wb") as f:
                    f.write(data)
            inputs, times = {}, {"full": [], "reduced": []}
            for _ in range(args.repeats):  # alternating, so that a drifting machine hits both
                for name, at_least in (("full", None), ("reduced", floor)):
                    t0 = time.perf_counter()
                    inputs[name] = [
                        encoders._read_image(path, split.to_array, True, at_least)[0]
                        for path in paths
                    ]
                    times[name].append((time.perf_counter() - t0) / len(paths) * 1000)
            ms = {name: statistics.median(values) for name, values in times.items()}
            embedded = {name: encoder.embed_batch(split.to_batch(a)) for name, a in inputs.items()}
            sides = []
            for path in paths:
                with open(path, "rb") as f:
                    sides.append(jpeg.frame_header(f.read())[2:4])
        full, reduced = embedded["full"], embedded["reduced"]
        cos = np.sum(full * reduced, axis=1) / (
            np.linalg.norm(full, axis=1) * np.linalg.norm(reduced, axis=1)
        )
        agreement = np.mean(
            [len(set(a) & set(b)) / 5 for a, b in zip(knn(full), knn(reduced), strict=True)]
        )
        used = [jpeg.reduction(h, w, floor) for h, w in sides]
        other = (round(args.margin * 128), round(args.margin * 128))
        row = {
            "long_side_px": long_side,
            "photos": len(paths),
            "ms_full": round(ms["full"], 2),
            "ms_reduced": round(ms["reduced"], 2),
            "speedup": round(ms["full"] / ms["reduced"], 2),
            "cosine_min": round(float(cos.min()), 4),
            "cosine_p5": round(float(np.percentile(cos, 5)), 4),
            "cosine_median": round(float(np.median(cos)), 4),
            "knn_agreement": round(float(agreement), 3),
            "reduced_share": round(float(np.mean(np.asarray(used) > 1)), 2),
            "reductions": sorted(set(used)),
            f"reductions_at_margin_{args.margin:g}": sorted(
                {jpeg.reduction(h, w, other) for h, w in sides}
            ),
        }
        line = json.dumps(row)
        print(line, flush=True)
        if args.out:
            with open(args.out, "a") as f:
                f.write(line + "\n")


if __name__ == "__main__":
    main()
