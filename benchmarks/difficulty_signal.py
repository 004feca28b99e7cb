"""How much of the true-label difficulty do label-free signals carry? (issue 13, VALIDATION only)

Supervised CCS, which ranks by the AUM of a proxy trained on the TRUE labels, is well ahead of
random on the CNN protocol; ELFS ranks by the AUM of pseudo-labels. This prints the Spearman
correlation with the true-label AUM of label-free signals on the tuning pool of
``explore_selection.py`` (CIFAR-10 train images, data seed 101; the test split is never read):

- the MLP proxy's AUM on each TEMI head's clustering, on the selected head's, and averaged over
  the heads (one idea for a steadier ranking: average over several clusterings);
- the kNN agreement of the pseudo-labels (the share of a sample's k nearest neighbours in its
  cluster), of the selected head and averaged over heads; the local density (mean cosine
  similarity to the k nearest neighbours);
- the encoder's own ImageNet classifier applied to the pooled features (the package ships it
  with the weights): its confidence (top probability, top-2 margin, negative entropy) and the
  kNN agreement of its top-1 ImageNet class, a 1,000-way pseudo-label with no clustering;
- the mean rank of the selected head's AUM and the heads' kNN-50 agreement;
- for scale, the kNN agreement of the TRUE labels (not label-free).

    .venv/bin/python benchmarks/difficulty_signal.py --seed 0 --threads 1   # about 10 minutes
    .venv/bin/python benchmarks/difficulty_signal.py --signals imagenet --threads 1  # 2 minutes
"""

from __future__ import annotations

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import numpy as np  # noqa: E402
from elfs_bench.data import cached_embeddings, list_class_tree, prepare_cifar10  # noqa: E402
from elfs_bench.methods import knn_agreement  # noqa: E402
from explore_selection import draw  # noqa: E402


def imagenet_head_signals(X: np.ndarray, neighbours: np.ndarray) -> dict[str, np.ndarray]:
    """Label-free signals of Lite0's own ImageNet classifier on its pooled features ``X``
    (higher = more confident or more consistent = easier)."""
    from fiftyone_elfs.embeddings import load_encoder

    head = load_encoder("efficientnet-lite0").model.classifier
    logits = X @ head.weight.detach().numpy().T + head.bias.detach().numpy()
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    top2 = np.sort(p, axis=1)[:, -2:]
    top1_class = p.argmax(axis=1)
    signals = {
        "imagenet_top_probability": top2[:, 1],
        "imagenet_top2_margin": top2[:, 1] - top2[:, 0],
        "imagenet_negative_entropy": (p * np.log(p + 1e-12)).sum(axis=1),
    }
    for kk in (10, 20, 50):
        signals[f"imagenet_top1_knn{kk}_agreement"] = knn_agreement(top1_class, neighbours[:, :kk])
    return signals


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pool", type=int, default=10000)
    p.add_argument("--val", type=int, default=5000)
    p.add_argument("--data-seed", type=int, default=101)
    p.add_argument("--threads", type=int, default=0, help="torch threads; 0 = all cores")
    p.add_argument(
        "--signals",
        default="temi,imagenet",
        help="comma-separated: temi (the pseudo-label signals), imagenet (the classifier's)",
    )
    p.add_argument("--cache-dir", default=os.path.join(HERE, "cache"))
    a = p.parse_args()

    import torch
    from scipy.stats import rankdata, spearmanr

    from fiftyone_elfs.difficulty import train_mlp_proxy
    from fiftyone_elfs.pseudo_labels import (
        TEMIClustering,
        cluster_accuracy,
        l2_normalize,
        nearest_neighbors,
    )

    if a.threads:
        torch.set_num_threads(a.threads)
    root = prepare_cifar10(
        os.path.join(HERE, "..", "..", "shared", "data", "cifar10-jpg.tar.gz"), a.cache_dir
    )
    paths, names = list_class_tree(os.path.join(root, "train"))
    classes = sorted(set(names))
    y = np.array([classes.index(c) for c in names])
    pool_idx, _ = draw(y, a.pool, a.val, a.data_seed)
    X = cached_embeddings([paths[i] for i in pool_idx], a.cache_dir)
    y_pool = y[pool_idx]
    k = len(classes)

    def aum_of(labels: np.ndarray) -> np.ndarray:
        return train_mlp_proxy(X, labels, n_classes=k, epochs=40, seed=a.seed).aum

    def rho(signal: np.ndarray) -> float:
        return round(float(spearmanr(signal, true_aum)[0]), 3)

    true_aum = aum_of(y_pool)
    signals = set(a.signals.split(","))
    nn = nearest_neighbors(X, 50)  # exact at this size, most similar first
    Xn = l2_normalize(X)
    sims = np.einsum("nd,nkd->nk", Xn, Xn[nn])  # cosine similarity to each neighbour
    summary: dict = {"seed": a.seed}
    if "temi" in signals:
        temi = TEMIClustering(k, seed=a.seed).fit(X)
        heads = [temi.predict(X, head=h) for h in range(temi.n_heads)]
        head_aums = []
        for h, labels in enumerate(heads):
            head_aums.append(aum_of(labels))
            row = {"head": h, "accuracy": round(cluster_accuracy(y_pool, labels), 3)}
            print(json.dumps({**row, "rho_aum": rho(head_aums[-1])}), flush=True)
        best = temi.best_head_
        summary["best_head"] = best
        summary["rho_aum_best_head"] = rho(head_aums[best])
        summary["rho_aum_mean_over_heads"] = rho(np.mean(head_aums, axis=0))
        for kk in (10, 20, 50):
            summary[f"rho_knn{kk}_agreement_best_head"] = rho(
                knn_agreement(heads[best], nn[:, :kk])
            )
            summary[f"rho_knn{kk}_agreement_mean_over_heads"] = rho(
                np.mean([knn_agreement(h, nn[:, :kk]) for h in heads], axis=0)
            )
        # the mean rank of the selected head's AUM and the heads' kNN-50 agreement, the
        # ranking of explore_selection.py's "ccs_mix"
        agreement = np.mean([knn_agreement(h, nn) for h in heads], axis=0)
        summary["rho_mix_aum_best_head_knn50_mean_over_heads"] = rho(
            rankdata(head_aums[best]) + rankdata(agreement)
        )
    if "imagenet" in signals:
        for name, signal in imagenet_head_signals(X, nn).items():
            summary[f"rho_{name}"] = rho(signal)
    for kk in (10, 20, 50):
        summary[f"rho_density{kk}"] = rho(sims[:, :kk].mean(axis=1))
        summary[f"rho_knn{kk}_agreement_TRUE_labels"] = rho(knn_agreement(y_pool, nn[:, :kk]))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
