"""TEMI's pseudo-labels with many clusters, against k-means on the same data (issue 16).

At 1,280,000 synthetic samples with 1,000 clusters TEMI's labels reached an adjusted Rand index
of 0.06-0.09 where k-means reached 0.56 (``results/scale/README.md``). This script reproduces
that at a size that runs in minutes: synthetic 512-d embeddings of ``--clusters`` Gaussian
clusters (``synthetic.py``), one ``TEMIClustering`` fit per ``--temi`` setting (JSON of extra
arguments, ``{}`` for the defaults), and faiss k-means on the same inputs (PCA-128, centred, as
TEMI sees them). It prints, per fit, the adjusted Rand index with the true clusters, the mean
confidence of the selected head, whether TEMI flags it as near uniform (the pseudo-labels stage
then labels with k-means instead), the clusters used and the time, and appends them to
``--out`` as JSON lines.

    .venv/bin/python benchmarks/scale/temi_many_clusters.py --n 16384 --clusters 1000 \
        --temi '{}' '{"n_heads": 2}' --threads 1 \
        --out benchmarks/results/scale/temi_many_clusters.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
from sklearn.metrics import adjusted_rand_score

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

from synthetic import gaussian_cluster_embeddings  # noqa: E402

from fiftyone_elfs.embeddings.projection import fit_pca  # noqa: E402
from fiftyone_elfs.pseudo_labels import TEMIClustering  # noqa: E402


def kmeans_reference(X: np.ndarray, n_clusters: int, seed: int) -> np.ndarray:
    """faiss k-means (20 iterations) on TEMI's inputs: PCA-128 of the normalised rows, centred."""
    import faiss

    Z = fit_pca(X, 128, seed, normalize=True).transform(X)
    Z = np.ascontiguousarray(Z - Z.mean(axis=0), dtype=np.float32)
    km = faiss.Kmeans(Z.shape[1], n_clusters, niter=20, seed=seed)
    km.train(Z)
    return km.index.search(Z, 1)[1][:, 0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=16384, help="samples")
    parser.add_argument("--clusters", type=int, default=1000, help="true and fitted clusters")
    parser.add_argument("--temi", nargs="+", default=["{}"], help="JSON extra TEMI arguments")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch and faiss threads")
    parser.add_argument("--out", default=None, help="append the rows here (JSON lines)")
    args = parser.parse_args()

    if args.threads:
        import faiss

        faiss.omp_set_num_threads(args.threads)
    X, y = gaussian_cluster_embeddings(args.n, 512, args.clusters, seed=args.seed)

    def emit(row: dict) -> None:
        row.update(n=args.n, clusters=args.clusters, seed=args.seed, threads=args.threads)
        print(json.dumps(row), flush=True)
        if args.out:
            with open(args.out, "a") as f:
                f.write(json.dumps(row) + "\n")

    t0 = time.perf_counter()
    km = kmeans_reference(X, args.clusters, args.seed)
    emit({"fit": "kmeans", "ari": adjusted_rand_score(y, km), "seconds": time.perf_counter() - t0})
    for spec in args.temi:
        extra = json.loads(spec)
        t0 = time.perf_counter()
        model = TEMIClustering(args.clusters, seed=args.seed, num_threads=args.threads, **extra)
        model.fit(X)
        emit(
            {
                "fit": "temi",
                "temi": extra,
                "ari": adjusted_rand_score(y, model.labels_),
                "mean_confidence": model.mean_confidence_,
                "near_uniform": bool(model.near_uniform_),
                "clusters_used": int(np.unique(model.labels_).size),
                "seconds": time.perf_counter() - t0,
            }
        )


if __name__ == "__main__":
    main()
