"""Downstream training protocols: how good a model does a coreset train?

- Protocol A: multinomial logistic regression on frozen, standardised embeddings, trained to
  convergence with L-BFGS and an L2 penalty fixed in advance; accuracy on the test split.
- Protocol B: a small CNN trained from scratch on the coreset's 32x32 pixels with crop + flip
  augmentation for a fixed number of SGD steps; accuracy on the test split.

Both are deterministic for a fixed seed and thread count.
"""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fiftyone_elfs.difficulty import SmallConvNet

__all__ = [
    "ProbeConfig",
    "ProtocolResult",
    "SmallCNN",
    "TrainConfig",
    "available_cpus",
    "protocol_a",
    "protocol_b",
    "torch_threads",
]


def available_cpus() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run torch with ``n`` intra-op threads, restoring the previous setting afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, int(n)))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@dataclass
class ProtocolResult:
    """Test accuracy of one downstream training, its wall time and protocol details."""

    accuracy: float
    seconds: float
    info: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- protocol A


@dataclass(frozen=True)
class ProbeConfig:
    """Protocol A settings: L2 penalty ``l2/2 * ||W||^2`` on the MEAN cross-entropy, L-BFGS."""

    l2: float = 1e-2
    max_iter: int = 1000
    tol: float = 1e-6


def feature_stats(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and std (std floored) of the unlabeled pool, used to standardise."""
    X = np.asarray(X, dtype=np.float64)
    mean = X.mean(axis=0)
    std = X.std(axis=0)
    return mean.astype(np.float32), np.where(std > 1e-6, std, 1.0).astype(np.float32)


def probe_predictions(
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_test: np.ndarray,
    stats: tuple[np.ndarray, np.ndarray] | None = None,
    config: ProbeConfig | None = None,
) -> tuple[np.ndarray, dict]:
    """Protocol A's linear probe fitted to (X_train, y_train): its predictions for X_test.

    Features are standardised with ``stats`` (pool mean and std; the same transform for every
    coreset) or with the training set's own when None. The penalty is fixed per sample, not per
    coreset: sklearn's ``C`` is set to ``1 / (l2 * n_train)``, which minimises mean CE +
    ``l2/2 * ||W||^2`` whatever the coreset size. A coreset holding a single class predicts it.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    cfg = config or ProbeConfig()
    mean, std = stats if stats is not None else feature_stats(X_train)
    Xtr = (np.asarray(X_train, dtype=np.float32) - mean) / std
    Xte = (np.asarray(X_test, dtype=np.float32) - mean) / std
    y_train = np.asarray(y_train)
    classes = np.unique(y_train)
    info: dict = {"n_train": int(y_train.size), "n_classes_seen": int(classes.size)}
    if classes.size == 1:
        info.update(converged=True, n_iter=0)
        return np.full(len(Xte), classes[0]), info
    clf = LogisticRegression(
        C=1.0 / (cfg.l2 * y_train.size), max_iter=cfg.max_iter, tol=cfg.tol, solver="lbfgs"
    )
    # One BLAS thread: with a second process on the cores, OpenBLAS's spinning threads made
    # an 81 x 1280 fit take 12 s instead of 0.15 s (measured on 2 cores).
    with warnings.catch_warnings(record=True) as caught, threadpool_limits(1, "blas"):
        warnings.simplefilter("always", ConvergenceWarning)
        clf.fit(Xtr, y_train)
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    info.update(converged=converged, n_iter=int(np.max(clf.n_iter_)))
    with threadpool_limits(1, "blas"):
        return clf.predict(Xte), info


def protocol_a(
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_test: np.ndarray,
    y_test: np.ndarray,
    stats: tuple[np.ndarray, np.ndarray] | None = None,
    config: ProbeConfig | None = None,
) -> ProtocolResult:
    """Linear probe trained to convergence on (X_train, y_train); accuracy on (X_test, y_test)
    (`probe_predictions`: standardised with ``stats``, a penalty fixed per sample)."""
    t0 = time.perf_counter()
    pred, info = probe_predictions(X_train, y_train, X_test, stats, config)
    accuracy = float(np.mean(pred == np.asarray(y_test))) if len(y_test) else float("nan")
    return ProtocolResult(accuracy, time.perf_counter() - t0, info)


# --------------------------------------------------------------------------- protocol B


@dataclass(frozen=True)
class TrainConfig:
    """Protocol B settings (SGD Nesterov 0.9, one-cycle cosine LR, crop 32 pad 4, optional flip)."""

    steps: int = 1500
    width: int = 16
    batch_size: int = 128
    lr: float = 0.1  # one-cycle peak
    weight_decay: float = 5e-4
    flip: bool = True  # mirror half the images; turn off where left vs right carries meaning
    threads: int = 0  # 0: every available core


# The benchmark's CNN is the library's CPU proxy network (same layers, same initialisation).
SmallCNN = SmallConvNet


def pixel_stats(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std (in [0, 1] units) of uint8 [N, H, W, 3] pool pixels."""
    p = np.asarray(pixels, dtype=np.float64).reshape(-1, 3) / 255.0
    return p.mean(axis=0).astype(np.float32), np.maximum(p.std(axis=0), 1e-3).astype(np.float32)


def _to_input(batch: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 NHWC -> normalised float NCHW, stored channels-last (~20% faster convs on CPU)."""
    x = batch.permute(0, 3, 1, 2).float().div_(255.0)
    x = (x - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    return x.contiguous(memory_format=torch.channels_last)


def _evaluate(model: nn.Module, pixels: np.ndarray, labels: np.ndarray, mean, std) -> float:
    """Test accuracy in eval mode (BatchNorm running statistics), batches of 1000."""
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(labels), 1000):
            x = _to_input(torch.from_numpy(pixels[start : start + 1000]), mean, std)
            pred = model(x).argmax(dim=1).numpy()
            correct += int((pred == labels[start : start + 1000]).sum())
    return correct / max(len(labels), 1)


def protocol_b(
    pixels_train: np.ndarray,
    y_train: np.ndarray,
    pixels_test: np.ndarray,
    y_test: np.ndarray,
    n_classes: int,
    seed: int,
    stats: tuple[np.ndarray, np.ndarray] | None = None,
    config: TrainConfig | None = None,
) -> ProtocolResult:
    """Train ``SmallCNN`` from scratch on the coreset's pixels; return its test accuracy.

    ``config.steps`` SGD steps of ``batch_size`` (smaller when the coreset is), drawn from
    consecutive seeded permutations of the coreset; each image is padded by 4 (zeros), randomly
    cropped back to 32 and flipped with probability 1/2. SGD with Nesterov momentum 0.9, weight
    decay, one-cycle LR (cosine, peak ``lr`` at 25% of the steps). Inputs are normalised with
    ``stats`` (pool channel mean/std). Deterministic for a seed: weights from ``torch.manual_seed``
    inside a forked RNG (the global torch RNG is left untouched), batches and augmentation from
    a numpy generator.
    """
    cfg = config or TrainConfig()
    threads = cfg.threads or available_cpus()
    y_train = np.asarray(y_train, dtype=np.int64)
    y_test = np.asarray(y_test, dtype=np.int64)
    n = y_train.size
    if n == 0:
        raise ValueError("protocol B needs a non-empty coreset")
    mean_np, std_np = stats if stats is not None else pixel_stats(pixels_train)
    mean, std = torch.from_numpy(mean_np), torch.from_numpy(std_np)
    batch = min(cfg.batch_size, n)
    rng = np.random.default_rng(seed)
    n_epochs = -(-cfg.steps * batch // n)
    order = np.concatenate([rng.permutation(n) for _ in range(n_epochs)])
    padded = torch.from_numpy(np.pad(pixels_train, ((0, 0), (4, 4), (4, 4), (0, 0))))
    ys = torch.from_numpy(y_train)
    ar = torch.arange(32)

    t0 = time.perf_counter()
    with torch_threads(threads), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SmallCNN(n_classes, cfg.width).to(memory_format=torch.channels_last)
        opt = torch.optim.SGD(
            model.parameters(),
            lr=cfg.lr,
            momentum=0.9,
            nesterov=True,
            weight_decay=cfg.weight_decay,
        )
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=0.25, cycle_momentum=False
        )
        model.train()
        loss_sum = 0.0
        for step in range(cfg.steps):
            idx = torch.from_numpy(order[step * batch : (step + 1) * batch])
            offsets = torch.from_numpy(rng.integers(0, 9, size=(2, idx.numel())))
            flip = torch.from_numpy(rng.random(idx.numel()) < (0.5 if cfg.flip else 0.0))
            rows = (offsets[0][:, None] + ar)[:, :, None]
            cols = (offsets[1][:, None] + ar)[:, None, :]
            xb = padded[idx[:, None, None], rows, cols]  # [B, 32, 32, 3]
            xb = torch.where(flip[:, None, None, None], xb.flip(2), xb)
            loss = F.cross_entropy(model(_to_input(xb, mean, std)), ys[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if step >= cfg.steps - 50:
                loss_sum += float(loss.detach())
        train_seconds = time.perf_counter() - t0
        accuracy = _evaluate(model, pixels_test, y_test, mean, std)
    seconds = time.perf_counter() - t0
    info = {
        "n_train": int(n),
        "steps": cfg.steps,
        "batch_size": batch,
        "epochs": round(cfg.steps * batch / n, 2),
        "final_train_loss": round(loss_sum / min(50, cfg.steps), 4),
        "train_seconds": round(train_seconds, 2),
        "images_per_second": round(cfg.steps * batch / train_seconds, 1),
        "threads": threads,
        "flip": cfg.flip,
        "parameters": int(sum(p.numel() for p in model.parameters())),
    }
    return ProtocolResult(accuracy, seconds, info)
