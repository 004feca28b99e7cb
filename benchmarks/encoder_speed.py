"""Per-image forward time of encoders at their own input sizes (what `image_size` unset uses).

The weak-trust sentence suggests a self-supervised ViT (`timm:vit_small_patch16_224.dino`)
whose weights need a network; its cost is the architecture's, so this times the same
architecture with random weights (`pretrained=False`, nothing downloaded) next to the default
encoder, on random batches already in memory (no decoding), one thread by default.

    .venv/bin/python benchmarks/encoder_speed.py --out benchmarks/results/encoder-speed/speed.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch

from fiftyone_elfs.embeddings.encoders import TimmEncoder, default_image_size, load_encoder

#: (name shown, the name whose unset image size is used, how to build it)
ENCODERS = (
    (
        "efficientnet-lite0",
        "efficientnet-lite0",
        lambda: load_encoder("efficientnet-lite0", device="cpu"),
    ),
    (
        "timm:vit_small_patch16_224 (random weights; = the .dino architecture)",
        "timm:vit_small_patch16_224.dino",
        lambda: TimmEncoder("vit_small_patch16_224", pretrained=False, device="cpu"),
    ),
)


def seconds_per_image(encoder, size: int, batch: int, repeats: int) -> float:
    """Median over `repeats` of one batch's forward time, per image (after a warm-up batch)."""
    x = torch.rand(batch, 3, size, size)
    times = []
    with torch.inference_mode():
        encoder.features(x[:4])
        for _ in range(repeats):
            start = time.perf_counter()
            encoder.features(x)
            times.append((time.perf_counter() - start) / batch)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None, help="append one JSON line per encoder here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for shown, sized_as, build in ENCODERS:
        size = default_image_size(sized_as)
        per_image = seconds_per_image(build(), size, args.batch, args.repeats)
        row = dict(
            encoder=shown,
            image_size=size,
            images_per_s=round(1 / per_image, 1),
            threads=args.threads,
            batch=args.batch,
            load_average=round(os.getloadavg()[0], 2),
            machine=platform.processor() or platform.machine(),
        )
        print(json.dumps(row), flush=True)
        rows.append(row)
    if args.out:  # all rows at the end: a run cut short leaves none half-written
        with open(args.out, "a") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)


if __name__ == "__main__":
    main()
