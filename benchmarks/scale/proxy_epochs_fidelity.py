"""How few MLP-proxy epochs keep the difficulty ranking of a long run (issue 16).

At 1.28M samples the MLP proxy is the most expensive stage after the embeddings, and its cost is
epochs x N. ``scaled_proxy_epochs`` lowers the epochs as N grows; this script measures what that
costs in ranking quality, on synthetic 512-d embeddings of 1,000 Gaussian clusters
(``synthetic.py``) with a share of the labels flipped to another cluster (planted pseudo-label
noise, which AUM exists to find):

- ``spearman_vs_ref``: rank correlation of each run's AUM with the AUM of a long reference run;
- ``hard_end_overlap``: share of the reference's hardest ``--hard-share`` (the part that the
  label-free beta cuts at 90% pruning) that the run also puts there;
- ``flip_auc``: ROC AUC of -AUM for the flipped samples (1.0: every flipped sample is harder).

More samples give each epoch more optimiser steps, so the same epoch count at 1.28M is at least as
converged as here; the figures are a conservative estimate for large N.

    .venv/bin/python benchmarks/scale/proxy_epochs_fidelity.py --n 100000 --epochs 2 3 4 6 \
        --ref-epochs 40 --out benchmarks/results/scale/proxy_epochs_fidelity.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
from scipy.stats import rankdata, spearmanr

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

from synthetic import gaussian_cluster_embeddings  # noqa: E402

from fiftyone_elfs.difficulty.training_dynamics import train_mlp_proxy  # noqa: E402


def flip_labels(y: np.ndarray, share: float, n_classes: int, seed: int) -> np.ndarray:
    """A copy of `y` with `share` of the entries moved to another class (uniformly drawn)."""
    rng = np.random.default_rng(seed)
    flipped = rng.random(y.size) < share
    shift = rng.integers(1, n_classes, size=y.size)
    return np.where(flipped, (y + shift) % n_classes, y)


def roc_auc(score: np.ndarray, positive: np.ndarray) -> float:
    """ROC AUC of `score` for the `positive` samples (rank-sum form, ties averaged)."""
    ranks = rankdata(score)
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--clusters", type=int, default=1000)
    p.add_argument("--flip", type=float, default=0.2, help="share of labels flipped")
    p.add_argument("--epochs", type=int, nargs="+", default=[2, 3, 4, 6])
    p.add_argument("--ref-epochs", type=int, default=40)
    p.add_argument("--hard-share", type=float, default=0.45)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None, help="append one JSON line per run here")
    args = p.parse_args()

    X, y_true = gaussian_cluster_embeddings(args.n, n_clusters=args.clusters, seed=0)
    y = flip_labels(y_true, args.flip, args.clusters, seed=1)
    flipped = y != y_true
    runs: dict[int, tuple[np.ndarray, float]] = {}
    for epochs in [args.ref_epochs, *args.epochs]:
        t = time.perf_counter()
        scores = train_mlp_proxy(
            X, y, n_classes=args.clusters, epochs=epochs, seed=0, num_threads=args.threads
        )
        runs[epochs] = (scores.aum, time.perf_counter() - t)
        print(f"[fidelity] {epochs} epochs: {runs[epochs][1]:.0f} s", file=sys.stderr)

    ref = runs[args.ref_epochs][0]
    n_hard = int(args.hard_share * args.n)
    ref_hard = set(np.argsort(ref, kind="stable")[:n_hard].tolist())
    for epochs, (aum, seconds) in runs.items():
        hard = set(np.argsort(aum, kind="stable")[:n_hard].tolist())
        row = {
            "n": args.n,
            "clusters": args.clusters,
            "flip": args.flip,
            "epochs": epochs,
            "ref_epochs": args.ref_epochs,
            "seconds": round(seconds, 1),
            "threads": args.threads,
            "spearman_vs_ref": round(float(spearmanr(aum, ref).statistic), 4),
            "hard_end_overlap": round(len(hard & ref_hard) / n_hard, 4),
            "flip_auc": round(roc_auc(-aum, flipped), 4),
            "load": round(os.getloadavg()[0], 2),
        }
        print(json.dumps(row), flush=True)
        if args.out:
            with open(args.out, "a") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
