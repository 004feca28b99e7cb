"""Embedding throughput (issue 16): the whole embedding stage against the encoder alone.

On the CIFAR-10 JPEGs (``../shared/data/cifar10-jpg.tar.gz``, extracted to a temporary folder),
in one run, on a private FiftyOne database:

- encoder: ``ImageEncoder.embed_batch`` on already-decoded, preprocessed batches (the same
  images, decoded once beforehand): the encoder's own batched throughput;
- stage: ``fiftyone_elfs.compute_embeddings`` on a dataset of those images (ids and paths read
  from the database, JPEG decoding, the encoder, chunks stored, the field written): what a
  user gets.

This machine's speed drifts by 10-20% over minutes even when idle (the encoder alone ran at
81 and 99 images/s before and after one 12-minute stage), so a single before/after pair is not
a fair reference. The encoder is therefore also timed *during* the stage: each time the
stage's progress passes another 1/``--probes`` of the images, the progress callback runs the
encoder alone on ``--probe-images`` decoded images, and that time is subtracted from the
stage's. The ratio stage / encoder (interleaved) says whether decoding or the database is the
bottleneck (target >= 0.9); the before/after ratio is printed next to it. The time the stage
spends inside ``ImageEncoder.embed_batch`` is also recorded: ``encoder_share`` is that time
over the stage's wall time, what is left for decoding, the database and the rest being
``1 - encoder_share``. ``phases_s`` splits the stage's wall time into before the first progress
report, the embedding loop, and after the last image. The device is CUDA when present
(``resolve_device``), else the CPU.
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


def encoder_timing(encoder, batches, n_images: int) -> tuple[int, float]:
    """(images, seconds) of the encoder alone, cycling over decoded batches for n_images, with
    the heap settings the stage uses (`keep_freed_memory`; without them the same encoder runs
    at about 0.55x the speed here, so a reference without them would flatter the stage)."""
    from fiftyone_elfs.heap import keep_freed_memory

    done, t = 0, time.perf_counter()
    with keep_freed_memory():
        while done < n_images:
            for batch in batches:
                encoder.embed_batch(batch)
                done += len(batch)
                if done >= n_images:
                    break
    return done, time.perf_counter() - t


def encoder_rate(encoder, batches, n_images: int) -> float:
    """Images per second of the encoder alone (`encoder_timing`)."""
    done, seconds = encoder_timing(encoder, batches, n_images)
    return done / seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--limit", type=int, default=50_000, help="images (the first of each class)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--encoder-images", type=int, default=1024, help="before and after the stage")
    p.add_argument("--probes", type=int, default=20, help="encoder timings during the stage")
    p.add_argument("--probe-images", type=int, default=256, help="per timing during the stage")
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
        from PIL import Image

        import fiftyone_elfs as elfs
        from fiftyone_elfs.embeddings import ImageEncoder, load_encoder

        ds = fo.Dataset()
        ds.add_samples([fo.Sample(filepath=q) for q in paths], progress=False)
        encoder = load_encoder("efficientnet-lite0", image_size=args.image_size)
        images = []
        for q in paths[: args.encoder_images]:
            with Image.open(q) as img:
                images.append(img.convert("RGB"))
        batches = [
            encoder.preprocess(images[s : s + args.batch_size])
            for s in range(0, len(images), args.batch_size)
        ]
        encoder_rate(encoder, batches[:2], 2 * args.batch_size)  # warm-up
        load_before = os.getloadavg()[0]
        before = encoder_rate(encoder, batches, args.encoder_images)

        probes = {"next": 1, "images": 0, "seconds": 0.0}
        #: (seconds since the stage started, minus the probes so far) of the first progress
        #: report and of the report that all images are embedded: the stage's phases
        marks: dict[str, float] = {}
        all_done = f"{len(paths)}/{len(paths)} images"

        def probe_encoder(fraction: float, message: str) -> None:
            """Times the encoder alone each time another 1/--probes of the images is done."""
            now = time.perf_counter() - t - probes["seconds"]
            marks.setdefault("first_report", now)
            if message == all_done:
                marks.setdefault("all_embedded", now)
            if fraction >= 1.0 or fraction * args.probes < probes["next"]:
                return
            probes["next"] = int(fraction * args.probes) + 1
            done, seconds = encoder_timing(encoder, batches, args.probe_images)
            probes["images"] += done
            probes["seconds"] += seconds

        in_stage = {"images": 0, "seconds": 0.0}
        embed_batch = ImageEncoder.embed_batch

        def timed_embed_batch(self, batch):
            t0 = time.perf_counter()
            out = embed_batch(self, batch)
            in_stage["seconds"] += time.perf_counter() - t0
            in_stage["images"] += len(batch)
            return out

        t = time.perf_counter()
        ImageEncoder.embed_batch = timed_embed_batch  # the stage's own encoder instance
        try:
            results = elfs.compute_embeddings(
                ds,
                key="t",
                batch_size=args.batch_size,
                num_workers=args.num_workers,
                image_size=args.image_size,
                progress=probe_encoder,
            )
        finally:
            ImageEncoder.embed_batch = embed_batch
        stage_seconds = time.perf_counter() - t - probes["seconds"]
        in_stage["seconds"] -= probes["seconds"]  # the probes' own calls were counted too
        stage = len(paths) / stage_seconds
        after = encoder_rate(encoder, batches, args.encoder_images)
        encoder_alone = (before + after) / 2
        interleaved = probes["images"] / probes["seconds"] if probes["seconds"] else float("nan")
        row = {
            "images": len(paths),
            "computed": results["n_computed"],
            "device": str(encoder.device),
            "torch_threads": torch.get_num_threads(),
            "batch_size": args.batch_size,
            "num_workers": args.num_workers,
            "image_size": args.image_size,
            "stage_images_per_s": round(stage, 1),
            "stage_seconds": round(stage_seconds, 1),
            "encoder_images_per_s": round(interleaved, 1),
            "encoder_probes": [probes["images"], round(probes["seconds"], 1)],
            "ratio": round(stage / interleaved, 3),
            "encoder_share": round(in_stage["seconds"] / stage_seconds, 3),
            "in_stage_encoder_images_per_s": round(
                (in_stage["images"] - probes["images"]) / in_stage["seconds"], 1
            ),
            # wall seconds before the first image's progress, embedding, and after the last
            # image (writing the field, recording the run)
            "phases_s": [
                round(marks.get("first_report", float("nan")), 1),
                round(marks.get("all_embedded", float("nan")) - marks.get("first_report", 0), 1),
                round(stage_seconds - marks.get("all_embedded", float("nan")), 1),
            ],
            "encoder_before_after": [round(before, 1), round(after, 1)],
            "ratio_before_after": round(stage / encoder_alone, 3),
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
