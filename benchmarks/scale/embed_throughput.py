"""Embedding throughput (issue 16): the whole embedding stage against the encoder alone.

On the CIFAR-10 JPEGs (``../shared/data/cifar10-jpg.tar.gz``, extracted to a temporary folder),
in one run, on a private FiftyOne database:

- encoder: ``ImageEncoder.embed_batch`` on already-decoded, preprocessed batches (the same
  images, decoded once beforehand): the encoder's own batched throughput;
- stage: ``fiftyone_elfs.compute_embeddings`` on a dataset of those images (ids and paths read
  from the database, JPEG decoding, the encoder, chunks stored, the field written): what a
  user gets.

The encoder is timed before and after the stage and the two rates averaged, since other jobs
share the machine; the ratio stage / encoder says whether decoding or the database is the
bottleneck (target >= 0.9). The device is CUDA when present (``resolve_device``), else the CPU.
Prints one JSON line and appends it to ``benchmarks/results/scale/embed_throughput.jsonl``:

    .venv/bin/python benchmarks/scale/embed_throughput.py --limit 5000
    .venv/bin/python benchmarks/scale/embed_throughput.py            # all 50,000
"""

from __future__ import annotations

import argparse
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
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)
TAR = os.path.join(ROOT, "..", "shared", "data", "cifar10-jpg.tar.gz")
OUT = os.path.join(ROOT, "benchmarks", "results", "scale", "embed_throughput.jsonl")


def encoder_rate(encoder, batches, n_images: int) -> float:
    """Images per second of the encoder alone, cycling over decoded batches for n_images."""
    done, t = 0, time.perf_counter()
    while done < n_images:
        for batch in batches:
            encoder.embed_batch(batch)
            done += len(batch)
            if done >= n_images:
                break
    return done / (time.perf_counter() - t)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--limit", type=int, default=50_000, help="images (the first of each class)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--encoder-images", type=int, default=1024, help="per encoder measurement")
    p.add_argument("--out", default=OUT)
    args = p.parse_args()

    tmp = tempfile.mkdtemp(prefix="elfs-throughput-")
    import private_db

    mongod = private_db.use(os.path.join(tmp, "db"))
    try:
        subprocess.run(["tar", "-xzf", TAR, "-C", tmp, "--wildcards", "train/*"], check=True)
        paths = sorted(glob.glob(os.path.join(tmp, "train", "*", "*.jpg")))
        paths = sorted(paths, key=lambda q: os.path.basename(q))[: args.limit]

        import fiftyone as fo
        import torch

        import fiftyone_elfs as elfs
        from fiftyone_elfs.embeddings import load_encoder
        from fiftyone_elfs.embeddings.encoders import _read_image  # noqa: PLC2701 - same decode

        ds = fo.Dataset()
        ds.add_samples([fo.Sample(filepath=q) for q in paths], progress=False)
        encoder = load_encoder("efficientnet-lite0", image_size=args.image_size)
        decoded = [_read_image(q, encoder.transform)[0] for q in paths[: args.encoder_images]]
        batches = [
            torch.stack(decoded[s : s + args.batch_size])
            for s in range(0, len(decoded), args.batch_size)
        ]
        encoder_rate(encoder, batches[:2], 2 * args.batch_size)  # warm-up
        load_before = os.getloadavg()[0]
        before = encoder_rate(encoder, batches, args.encoder_images)

        t = time.perf_counter()
        results = elfs.compute_embeddings(
            ds,
            key="t",
            batch_size=args.batch_size,
            num_workers=args.num_workers,
            image_size=args.image_size,
            progress=lambda f, m: None,
        )
        stage = len(paths) / (time.perf_counter() - t)
        after = encoder_rate(encoder, batches, args.encoder_images)
        encoder_alone = (before + after) / 2
        row = {
            "images": len(paths),
            "computed": results["n_computed"],
            "device": str(encoder.device),
            "torch_threads": torch.get_num_threads(),
            "batch_size": args.batch_size,
            "num_workers": args.num_workers,
            "image_size": args.image_size,
            "stage_images_per_s": round(stage, 1),
            "encoder_images_per_s": round(encoder_alone, 1),
            "encoder_before_after": [round(before, 1), round(after, 1)],
            "ratio": round(stage / encoder_alone, 3),
            "load_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            "cpus": os.cpu_count(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        print(json.dumps(row), flush=True)
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
        with open(args.out, "a") as f:
            f.write(json.dumps(row) + "\n")
    finally:
        mongod.terminate()
        mongod.wait(60)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
