"""Large photos in the embedding loop: reduced JPEG decoding and the per-image shrink (issue 16).

Two changes of 2026-12-03 to the loop's per-image work on photos larger than the encoder's
input: a JPEG at least twice that size on a side is decoded directly at 1/2, 1/4 or 1/8 of its
size (`jpeg.decode_rgb(at_least=...)`, libjpeg's scaled inverse DCT), and the shrink to the
input size runs on torch's antialiased uint8 kernel instead of PIL's resize
(`BatchedPreprocessing.to_array`). For photos whose long side is each of ``--sizes``
(`photos.photo_jpegs`: random crops of scikit-image's sample photos, upsampled above 1,411 px),
three ways, EfficientNet-Lite0 at 128 px, one JSON line per size:

- ``before``: full decode, PIL resize (the code before these changes);
- ``torch_resize``: full decode, torch's kernel (the second change alone);
- ``now``: reduced decode, torch's kernel (what the loop does now).

Columns: ``ms_<way>``, milliseconds per image of the loop's per-image work (file read, decode,
shrink: `encoders.read_image`), median of ``--repeats`` passes over the files with the ways
alternating, one thread; ``speedup``, before over now; ``cosine_<way>_min`` / ``_p5`` /
``_median``, the cosine similarity of each photo's embedding to its ``before`` embedding;
``knn_agreement``, the share of each photo's 5 nearest neighbours (among that size's photos)
that ``now`` and ``before`` both give; ``reduced_share`` and the reductions used at the default
margin (`jpeg.REDUCED_DECODE_MARGIN`) and, for comparison, at ``--margin``.

    .venv/bin/python benchmarks/scale/large_photos.py \\
        --out benchmarks/results/scale/large_photos.jsonl

(Rows without ``ms_before`` are of the first version of this script, ``reduced_decode.py``,
which compared full against reduced decoding, both with PIL's resize.)
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
    from PIL import Image

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
            ways = {
                "before": (None, lambda pixels: np.asarray(
                    split.geometry(Image.fromarray(np.ascontiguousarray(pixels))), np.uint8
                )),
                "torch_resize": (None, split.to_array),
                "now": (floor, split.to_array),
            }  # fmt: skip
            inputs, times = {}, {way: [] for way in ways}
            for _ in range(args.repeats):  # alternating, so that a drifting machine hits all
                for way, (at_least, to_array) in ways.items():
                    t0 = time.perf_counter()
                    inputs[way] = [
                        encoders.read_image(path, to_array, True, at_least)[0] for path in paths
                    ]
                    times[way].append((time.perf_counter() - t0) / len(paths) * 1000)
            ms = {way: statistics.median(values) for way, values in times.items()}
            embedded = {way: encoder.embed_batch(split.to_batch(a)) for way, a in inputs.items()}
            sides = []
            for path in paths:
                with open(path, "rb") as f:
                    sides.append(jpeg.frame_header(f.read())[2:4])
        before = embedded["before"]
        row = {"long_side_px": long_side, "photos": len(paths)}
        row.update({f"ms_{way}": round(value, 2) for way, value in ms.items()})
        row["speedup"] = round(ms["before"] / ms["now"], 2)
        for way in ("torch_resize", "now"):
            cos = np.sum(before * embedded[way], axis=1) / (
                np.linalg.norm(before, axis=1) * np.linalg.norm(embedded[way], axis=1)
            )
            row[f"cosine_{way}_min"] = round(float(cos.min()), 4)
            row[f"cosine_{way}_p5"] = round(float(np.percentile(cos, 5)), 4)
            row[f"cosine_{way}_median"] = round(float(np.median(cos)), 4)
        pairs = zip(knn(before), knn(embedded["now"]), strict=True)
        row["knn_agreement"] = round(
            float(np.mean([len(set(a) & set(b)) / 5 for a, b in pairs])), 3
        )
        used = [jpeg.reduction(h, w, floor) for h, w in sides]
        other = (round(args.margin * 128), round(args.margin * 128))
        row["reduced_share"] = round(float(np.mean(np.asarray(used) > 1)), 2)
        row["reductions"] = sorted(set(used))
        row[f"reductions_at_margin_{args.margin:g}"] = sorted(
            {jpeg.reduction(h, w, other) for h, w in sides}
        )
        line = json.dumps(row)
        print(line, flush=True)
        if args.out:
            with open(args.out, "a") as f:
                f.write(line + "\n")


if __name__ == "__main__":
    main()
