"""Idle OpenMP threads spinning or sleeping: the embedding loop and TEMI, alone and two at once.

torch's OpenMP threads spin for a while after each parallel region unless ``OMP_WAIT_POLICY``
is ``PASSIVE`` (read once, when torch first loads). Alone that costs nothing; where two torch
processes share the cores (two delegated workers embedding shards on one machine, a pipeline
next to a training job) the spinning threads take cores from the other process. This script
starts ``--concurrent`` fresh processes at once, each embedding the same ``--images`` JPEGs
(decoding in the process, as the embedding stage does on a CPU) and then fitting TEMI on their
embeddings, under each of ``--settings`` in turn (``--repeats`` passes, the order reversed
each pass: this machine's speed drifts over minutes), and prints each process's
seconds per phase. Appends one JSON line per setting to
``benchmarks/results/scale/thread_wait_policy.jsonl``::

    .venv/bin/python benchmarks/scale/thread_wait_policy.py --concurrent 1
    .venv/bin/python benchmarks/scale/thread_wait_policy.py --concurrent 2
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
TAR = os.path.join(ROOT, "..", "shared", "data", "cifar10-jpg.tar.gz")
OUT = os.path.join(ROOT, "benchmarks", "results", "scale", "thread_wait_policy.jsonl")


def child(paths_file: str, temi_steps: int) -> None:
    """One worker: embeds the listed files, then fits TEMI; prints its phases' seconds as JSON."""
    sys.path.insert(0, ROOT)
    t0 = time.perf_counter()
    import numpy as np

    from fiftyone_elfs.embeddings import load_encoder
    from fiftyone_elfs.embeddings.encoders import iter_embedded_chunks
    from fiftyone_elfs.pseudo_labels.temi import TEMIClustering

    paths = open(paths_file).read().split("\n")
    encoder = load_encoder("efficientnet-lite0", image_size=128)
    t1 = time.perf_counter()
    X = np.concatenate([x for _, x, _ in iter_embedded_chunks(paths, encoder)])
    t2 = time.perf_counter()
    TEMIClustering(10, seed=0, min_steps=temi_steps).fit_predict(X)
    t3 = time.perf_counter()
    row = {"load_s": t1 - t0, "embed_s": t2 - t1, "temi_s": t3 - t2}
    print(json.dumps({k: round(v, 1) for k, v in row.items()}), flush=True)


def run_setting(setting: str, args: argparse.Namespace, paths_file: str) -> dict:
    """Runs the workers at once with `setting` ("unset" or VAR=VALUE) in their environment."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    if setting != "unset":
        name, value = setting.split("=", 1)
        env[name] = value
    cmd = [sys.executable, __file__, "--child", paths_file, "--temi-steps", str(args.temi_steps)]
    t = time.perf_counter()
    procs = [
        subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(args.concurrent)
    ]
    outs = [p.communicate()[0] for p in procs]
    wall = time.perf_counter() - t
    if any(p.returncode for p in procs):
        raise SystemExit(f"a worker failed: {[p.returncode for p in procs]}")
    return {
        "setting": setting,
        "concurrent": args.concurrent,
        "images": args.images,
        "temi_min_steps": args.temi_steps,
        "workers": [json.loads(o.strip().splitlines()[-1]) for o in outs],
        "wall_s": round(wall, 1),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--concurrent", type=int, default=2, help="processes started at once")
    p.add_argument("--images", type=int, default=1024, help="JPEGs each process embeds")
    p.add_argument("--temi-steps", type=int, default=150, help="TEMI's least optimiser steps")
    p.add_argument(
        "--settings",
        default="unset,OMP_WAIT_POLICY=PASSIVE",
        help="comma-separated: unset (neither OMP_WAIT_POLICY nor GOMP_SPINCOUNT) or VAR=VALUE",
    )
    p.add_argument(
        "--repeats", type=int, default=1, help="passes over the settings, order reversed each"
    )
    p.add_argument("--out", default=OUT)
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.child, args.temi_steps)
        return
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="elfs-wait-policy-")
    try:
        subprocess.run(["tar", "-xzf", TAR, "-C", tmp, "--wildcards", "train/*"], check=True)
        paths = sorted(glob.glob(os.path.join(tmp, "train", "*", "*.jpg")))
        paths = paths[:: max(1, len(paths) // args.images)][: args.images]
        paths_file = os.path.join(tmp, "paths.txt")
        with open(paths_file, "w") as f:
            f.write("\n".join(paths))
        settings = args.settings.split(",")
        for r in range(args.repeats):
            for setting in settings if r % 2 == 0 else settings[::-1]:
                line = json.dumps(run_setting(setting, args, paths_file))
                print(line, flush=True)
                with open(args.out, "a") as f:
                    f.write(line + "\n")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
