"""Proxy training dynamics (AUM, forgetting, EL2N) recorded online, and the CPU-cheap MLP proxy.

Arrays in, arrays out; no FiftyOne import. ``TrainingDynamicsRecorder`` only needs each minibatch's
sample indices, logits and labels, so any training loop (the MLP proxy here, a CNN on pixels later)
can feed it. Nothing per-logit is stored: memory is O(N) for the recorder.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "DEFAULT_PROXY_EPOCHS",
    "HARD_IS_LOW",
    "MIN_SCALED_PROXY_EPOCHS",
    "PROXY_WORK_BUDGET",
    "DifficultyScores",
    "TrainingDynamicsRecorder",
    "scaled_proxy_epochs",
    "train_mlp_proxy",
]

ProgressFn = Callable[[float, str], None]

#: Score name -> True when a LOW value means a hard sample (used to rank hardest first).
HARD_IS_LOW: dict[str, bool] = {"aum": True, "forgetting": False, "el2n": False}

#: Default MLP proxy epochs: about 2 minutes for 50,000 x 1280 on 2 CPU cores (``train_mlp_proxy``).
DEFAULT_PROXY_EPOCHS = 40
#: Multiply-adds (forward and backward, all epochs) that ``scaled_proxy_epochs`` allows the MLP
#: proxy: about 4-5 minutes on 2 CPU cores (measured ~75 GFLOP/s for these layer sizes).
PROXY_WORK_BUDGET = 1e13
#: ``scaled_proxy_epochs`` never goes below this many epochs (AUM averages over epochs and
#: forgetting needs several; EL2N uses the first 10). Measured on 100,000 x 512 synthetic
#: embeddings with 1,000 classes and 20% flipped labels
#: (``benchmarks/results/scale/proxy_epochs_fidelity.jsonl``): AUM after 3 epochs has rank
#: correlation 0.955 with AUM after 40 (6 epochs: 0.976), shares 93% of its hardest 45% (6:
#: 95%) and finds the flipped labels with ROC AUC 0.997 (40 epochs: 0.999).
MIN_SCALED_PROXY_EPOCHS = 3

_SMALL_STEP = 2**25  # first-layer multiply-adds per step below which one CPU thread is fastest
_STD_FLOOR = 1e-6  # per-dimension std below this is treated as constant (left centred, not scaled)
_CHUNK_ROWS = 16_384  # rows per chunk of a temporary in input checks and preprocessing


@dataclass
class DifficultyScores:
    """Per-sample difficulty from a proxy run: AUM (low = hard); forgetting, EL2N (high = hard).

    ``forgetting`` is the forgetting score, not the raw count: a sample the proxy never got
    right counts one event per presentation (Toneva et al. rank never-learned samples as the
    most forgotten; a learned sample seen as often has at most half as many events). Without
    that it had no event and ranked with the easiest samples.
    """

    aum: np.ndarray
    forgetting: np.ndarray
    el2n: np.ndarray
    n_epochs: int
    epochs_seen: np.ndarray | None = None
    n_correct: np.ndarray | None = None
    el2n_epochs: int = 10
    info: dict = field(default_factory=dict)

    def __len__(self) -> int:
        """Number of samples scored."""
        return int(self.aum.shape[0])


def _to_numpy(x: object) -> np.ndarray:
    """Return a numpy view/copy of a torch tensor (detached, on CPU) or any array-like."""
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu").numpy()
    return np.asarray(x)


class TrainingDynamicsRecorder:
    """Accumulates AUM, forgetting and EL2N per sample from minibatch logits, without storing them.

    Feed it from any training loop: call ``update(indices, logits, labels)`` for every training
    minibatch with the logits of the forward pass (before the optimiser step) and ``end_epoch()``
    after each pass over the data. With y the (pseudo-)label and p = softmax(logits):

    - ``aum``: sum over presentations of p(y) - max_{k != y} p(k) (Pleiss et al.; low = hard,
      negative = the proxy prefers another class on average: a likely mislabelled sample).
    - ``forgetting``: number of correct -> incorrect transitions (correct = argmax == y) between
      consecutive presentations of the sample, i.e. between consecutive epochs in which it was seen
      when each sample is presented once per epoch (Toneva et al.; high = hard).
    - ``el2n``: sum of ||p - onehot(y)||_2 over presentations in the first ``el2n_epochs`` epochs
      (Paul et al.; high = hard).

    It also counts ``presentations`` and ``n_correct`` (presentations with argmax == y): a sample
    with ``n_correct == 0`` was never learned, so it has no forgetting event although it is hard;
    `scores` ranks it as the most forgotten, as Toneva et al. do. A sample presented several
    times in one epoch contributes once per presentation.
    """

    def __init__(self, n_samples: int, n_classes: int, el2n_epochs: int = 10) -> None:
        """Create zeroed statistics for ``n_samples`` samples and ``n_classes`` classes."""
        for name, value, low in (
            ("n_samples", n_samples, 1),
            ("n_classes", n_classes, 2),
            ("el2n_epochs", el2n_epochs, 0),
        ):
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}; got {value!r}.")
        self.n_samples = int(n_samples)
        self.n_classes = int(n_classes)
        self.el2n_epochs = int(el2n_epochs)
        self.n_epochs = 0  # completed epochs (end_epoch calls)
        self._aum = np.zeros(self.n_samples, dtype=np.float64)
        self._el2n = np.zeros(self.n_samples, dtype=np.float64)
        self.forgetting = np.zeros(self.n_samples, dtype=np.int32)
        self.presentations = np.zeros(self.n_samples, dtype=np.int32)
        self.n_correct = np.zeros(self.n_samples, dtype=np.int32)
        self.epochs_seen = np.zeros(self.n_samples, dtype=np.int32)
        self._seen_this_epoch = np.zeros(self.n_samples, dtype=bool)
        self._last_correct = np.full(self.n_samples, -1, dtype=np.int8)  # -1: never seen

    @property
    def aum(self) -> np.ndarray:
        """Summed margin per sample (float32); low = hard."""
        return self._aum.astype(np.float32)

    @property
    def el2n(self) -> np.ndarray:
        """Summed EL2N over the first ``el2n_epochs`` epochs (float32); high = hard."""
        return self._el2n.astype(np.float32)

    def update(self, indices: object, logits: object, labels: object) -> None:
        """Add one minibatch: dataset ``indices`` [B], ``logits`` [B, K] and ``labels`` [B].

        The per-batch arithmetic runs in torch on the logits' own precision (float32 from a
        model, float64 from a float64 array), without copies of the B x K probabilities: the
        largest other-class probability comes from the top two, and EL2N from
        ||p - onehot(y)||^2 = sum(p^2) - 2 p(y) + 1. At K = 1,000 this is about a sixth of the
        cost of the float64 numpy version it replaces, which took a quarter of each proxy step.
        """
        idx = _to_numpy(indices).astype(np.int64, copy=False).reshape(-1)
        z = (
            logits.detach().to("cpu")
            if isinstance(logits, torch.Tensor)
            else torch.as_tensor(np.asarray(logits))
        )
        if not z.is_floating_point():
            z = z.to(torch.float32)
        y_np = _to_numpy(labels).astype(np.int64, copy=False).reshape(-1)
        if z.ndim != 2 or z.shape[1] != self.n_classes:
            raise ValueError(
                f"logits must have shape (batch, {self.n_classes}); got {tuple(z.shape)}. Pass "
                "the model's raw outputs for this minibatch: one row per sample, one column per "
                "class."
            )
        if not (idx.shape[0] == y_np.shape[0] == z.shape[0]):
            raise ValueError(
                f"indices ({idx.shape[0]}), logits ({z.shape[0]}) and labels ({y_np.shape[0]}) "
                "must have the same length: one entry per sample of the minibatch."
            )
        if idx.size == 0:
            return
        if idx.min() < 0 or idx.max() >= self.n_samples:
            raise ValueError(
                f"indices must lie in [0, {self.n_samples}); got values in "
                f"[{idx.min()}, {idx.max()}]. Pass each sample's position in the training set."
            )
        if y_np.min() < 0 or y_np.max() >= self.n_classes:
            raise ValueError(
                f"labels must lie in [0, {self.n_classes}); got [{y_np.min()}, {y_np.max()}]."
            )
        # the sum is finite whenever every logit is (the exact check only runs when it is not)
        if not bool(torch.isfinite(z.sum())) and not bool(torch.isfinite(z).all()):
            raise ValueError(
                "logits contain NaN or infinite values: the proxy diverged. Lower the learning "
                "rate."
            )

        y = torch.from_numpy(y_np)[:, None]
        p = torch.softmax(z, dim=1)
        p_y = p.gather(1, y)[:, 0]
        top_p, top_k = p.topk(2, dim=1)
        # the largest probability of a class other than y (ties give a margin of 0 either way)
        other = torch.where(top_k[:, 0] == y[:, 0], top_p[:, 1], top_p[:, 0])
        margin = (p_y - other).to(torch.float64).numpy()
        correct = (z.argmax(dim=1) == y[:, 0]).numpy().astype(np.int8)
        unique = np.unique(idx).size == idx.size

        def add(total: np.ndarray, values: np.ndarray) -> None:
            if unique:
                total[idx] += values
            else:
                np.add.at(total, idx, values)

        add(self._aum, margin)
        add(self.presentations, np.ones(idx.size, dtype=np.int32))
        add(self.n_correct, correct.astype(np.int32))
        if self.n_epochs < self.el2n_epochs:
            sq_err = (p * p).sum(dim=1) - 2.0 * p_y + 1.0
            add(self._el2n, sq_err.clamp_min(0.0).sqrt().to(torch.float64).numpy())
        self._seen_this_epoch[idx] = True

        # Forgetting compares consecutive presentations, so repeated indices are handled in order.
        if unique:
            self._record_correct(idx, correct)
        else:
            for i, c in zip(idx.tolist(), correct.tolist(), strict=True):
                self._record_correct(np.array([i]), np.array([c], dtype=np.int8))

    def _record_correct(self, idx: np.ndarray, correct: np.ndarray) -> None:
        """Count correct -> incorrect transitions for distinct ``idx``; remember the new state."""
        forgot = (self._last_correct[idx] == 1) & (correct == 0)
        self.forgetting[idx] += forgot.astype(np.int32)
        self._last_correct[idx] = correct

    def end_epoch(self) -> None:
        """Close the current epoch (EL2N stops accumulating after ``el2n_epochs`` of these)."""
        self.epochs_seen += self._seen_this_epoch
        self._seen_this_epoch[:] = False
        self.n_epochs += 1

    def scores(self, **info: object) -> DifficultyScores:
        """Snapshot the current statistics as ``DifficultyScores`` (copies; recording can go on)."""
        never_learned = (self.n_correct == 0) & (self.presentations > 0)
        return DifficultyScores(
            aum=self.aum,
            forgetting=np.where(never_learned, self.presentations, self.forgetting),
            el2n=self.el2n,
            n_epochs=self.n_epochs,
            epochs_seen=self.epochs_seen.copy(),
            n_correct=self.n_correct.copy(),
            el2n_epochs=self.el2n_epochs,
            info=dict(info),
        )


# --------------------------------------------------------------------------- MLP proxy


def _check_inputs(
    X: np.ndarray, labels: np.ndarray, n_classes: int | None
) -> tuple[np.ndarray, np.ndarray, int]:
    """Validate embeddings and pseudo-labels; return float32 X, int64 labels and the class count."""
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(
            f"X must be a 2-D array of shape (n_samples, n_features); got shape {X.shape}. "
            "Stack one embedding vector per sample into a matrix (e.g. np.stack(vectors))."
        )
    if X.shape[0] < 2 or X.shape[1] == 0:
        raise ValueError(
            f"X has shape {X.shape}; the proxy needs at least 2 samples and 1 feature."
        )
    if not np.issubdtype(X.dtype, np.number) or np.iscomplexobj(X):
        raise ValueError(f"X must hold real numbers; got dtype {X.dtype}.")
    X = np.asarray(X, dtype=np.float32)
    finite = np.ones(X.shape[0], dtype=bool)
    for start in range(0, X.shape[0], _CHUNK_ROWS):  # no N x d boolean mask
        finite[start : start + _CHUNK_ROWS] = np.isfinite(X[start : start + _CHUNK_ROWS]).all(1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise ValueError(
            f"X contains NaN or infinite values in {bad.size} row(s) (first: {bad[:5].tolist()}). "
            "Recompute those embeddings or drop the affected samples."
        )
    y = np.asarray(labels)
    if y.ndim != 1 or y.shape[0] != X.shape[0]:
        raise ValueError(
            f"labels must be a 1-D array with one pseudo-label per row of X ({X.shape[0]}); got "
            f"shape {y.shape}. Pass the cluster index of every sample, in the same order as X."
        )
    if y.dtype == bool or not np.issubdtype(y.dtype, np.number):
        raise ValueError(f"labels must be integer class indices; got dtype {y.dtype}.")
    if not np.all(np.isfinite(y)) or not np.all(np.mod(y, 1) == 0) or y.min() < 0:
        raise ValueError(
            "labels must be non-negative integer class indices (0, 1, ...). Map cluster names to "
            "indices first, e.g. np.unique(names, return_inverse=True)[1]."
        )
    y = y.astype(np.int64)
    if n_classes is None:
        n_classes = int(y.max()) + 1
    elif isinstance(n_classes, bool) or not isinstance(n_classes, int | np.integer):
        raise ValueError(f"n_classes must be an integer or None; got {n_classes!r}.")
    n_classes = int(n_classes)
    if y.max() >= n_classes:
        raise ValueError(
            f"labels go up to {int(y.max())} but n_classes is {n_classes}; pass n_classes > "
            "max label or leave it as None to infer it."
        )
    if n_classes < 2 or np.unique(y).size < 2:
        raise ValueError(
            f"The pseudo-labels contain {np.unique(y).size} distinct class(es); difficulty "
            "needs at least 2. Recompute the pseudo-labels with n_clusters >= 2."
        )
    return X, y, n_classes


def _check_positive(name: str, value: object, kind: type = int) -> None:
    """Raise a ValueError unless ``value`` is a positive number of the given kind."""
    ok_types = (int, np.integer) if kind is int else (int, float, np.integer, np.floating)
    if isinstance(value, bool) or not isinstance(value, ok_types) or not value > 0:
        raise ValueError(f"{name} must be a positive {kind.__name__}; got {value!r}.")


def _normalize_rows(rows: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (float32, a new array)."""
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


class _Standardizer:
    """L2-normalise rows (cosine geometry, as for the pseudo-labels), then standardise each dim.

    Fitted in row chunks: the per-dimension mean (a sequential float64 sum, as numpy's own
    ``mean(axis=0)``) and standard deviation (float64 sums of squares) of the normalised rows,
    so neither a normalised nor a float64 N x d copy of X is made. ``rows(X, idx)`` applies it
    to the rows ``idx`` only: the CPU proxy standardises each minibatch as it is drawn.
    """

    def __init__(self, X: np.ndarray) -> None:
        n, d = X.shape
        total = np.zeros((1, d), dtype=np.float64)
        for start in range(0, n, _CHUNK_ROWS):
            chunk = _normalize_rows(X[start : start + _CHUNK_ROWS])
            # Continue one running sum row by row: the same order as reducing all rows at once.
            total = np.add.reduce(np.vstack([total, chunk.astype(np.float64)]), axis=0)[None]
        mean64 = total[0] / n
        sq = np.zeros(d, dtype=np.float64)
        for start in range(0, n, _CHUNK_ROWS):
            centred = _normalize_rows(X[start : start + _CHUNK_ROWS]).astype(np.float64) - mean64
            sq += np.einsum("ij,ij->j", centred, centred)
        std = np.sqrt(sq / n).astype(np.float32)
        self.mean = mean64.astype(np.float32)
        self.scale = np.where(std > _STD_FLOOR, std, np.float32(1.0))

    def rows(self, X: np.ndarray, idx: np.ndarray | slice) -> np.ndarray:
        """Standardised float32 copies of ``X[idx]``."""
        out = _normalize_rows(X[idx])
        out -= self.mean
        out /= self.scale
        return out


class _MLP(nn.Module):
    """Linear(d, hidden) - BatchNorm - ReLU - Linear(hidden, K): a small proxy classifier."""

    def __init__(
        self, in_dim: int, hidden_dim: int, n_classes: int, generator: torch.Generator
    ) -> None:
        super().__init__()
        # skip_init + explicit init: PyTorch's default init, drawn from our own generator, so the
        # global torch RNG is not consumed.
        self.fc1 = nn.utils.skip_init(nn.Linear, in_dim, hidden_dim)
        self.bn = nn.BatchNorm1d(hidden_dim)
        self.fc2 = nn.utils.skip_init(nn.Linear, hidden_dim, n_classes)
        for layer in (self.fc1, self.fc2):
            nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)
            bound = 1.0 / math.sqrt(layer.in_features)
            nn.init.uniform_(layer.bias, -bound, bound, generator=generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits [B, K]."""
        return self.fc2(F.relu(self.bn(self.fc1(x))))


def train_mlp_proxy(
    X: np.ndarray,
    labels: np.ndarray,
    n_classes: int | None = None,
    epochs: int = DEFAULT_PROXY_EPOCHS,
    batch_size: int = 256,
    hidden_dim: int = 512,
    lr: float = 0.1,
    weight_decay: float = 5e-3,
    seed: int = 0,
    device: str | None = None,
    progress: ProgressFn | None = None,
    el2n_epochs: int = 10,
    num_threads: int | None = None,
    input_dropout: float = 0.3,
) -> DifficultyScores:
    """Train an MLP proxy on embeddings and pseudo-labels; return its per-sample training dynamics.

    The CPU-cheap stand-in for ELFS's ResNet-18 proxy: rows of ``X`` are L2-normalised then
    standardised per dimension, and Linear(d, ``hidden_dim``)-BatchNorm-ReLU-Linear(``hidden_dim``,
    K) is trained on ``labels`` with cross-entropy and SGD (Nesterov momentum 0.9, ``weight_decay``,
    cosine decay of ``lr`` per step to 0), as in the paper's recipe. AUM, forgetting and EL2N are
    recorded from every training minibatch's logits (forward pass before the update) by a
    ``TrainingDynamicsRecorder``; each sample is seen once per epoch (no drop_last).

    Regularisation (``weight_decay`` 5e-3, ten times the paper's, and ``input_dropout`` 0.3, a
    feature-space stand-in for the paper's image augmentation) keeps the proxy from memorising
    wrong labels. With 5e-4 and no dropout the MLP fitted 30% planted label flips on synthetic
    10k-20k x 128-1280 embeddings within ~10 epochs, so no sample kept a negative AUM and the
    label-free beta (fraction with AUM < 0) was 0; with these defaults that fraction tracked the
    planted rate (0.0 / 0.10 / 0.28 for 0 / 10 / 30%) while AUM still ranked flipped samples
    hardest (ROC AUC 0.98-1.0). Never-learned samples have no forgetting event; the forgetting
    score ranks them as the most forgotten (``DifficultyScores``).

    Cost, measured on this project's 2-core machine with 50,000 x 1280 float32 embeddings:
    about 2.6 s per epoch with 2 idle cores (K = 10 or 100), 3.3-4 s with 1 thread, so the
    default ``epochs`` = 40 takes about 2 minutes. When another process competes for the cores,
    OpenMP's default busy-waiting made 2 threads 10x slower (25-40 s per epoch); setting
    ``OMP_WAIT_POLICY=PASSIVE`` before torch is imported, or ``num_threads=1``, avoids that. A
    GPU is used when available unless ``device`` says otherwise. Memory is O(N) beyond ``X`` on
    a CPU: each minibatch is normalised and standardised from ``X`` as it is drawn (the
    statistics are float64 sums over row chunks; no copy of ``X`` is made); on a GPU one
    standardised float32 copy lives in device memory. Time
    per epoch is linear in N: N / ``batch_size`` steps of (d x ``hidden_dim`` + ``hidden_dim``
    x K) multiply-adds per sample, so K = 1,000 classes cost about 3x K = 10 per epoch
    (``benchmarks/results/scale/README.md`` has the measured figures up to 1.28M samples).

    ``num_threads``: CPU threads for torch during this call (restored afterwards). None picks 1
    for small problems (``batch_size * d * hidden_dim`` < 2**25), where threading only adds
    overhead, and torch's current setting otherwise.

    Deterministic for a fixed ``seed`` on a given device and thread count (weights and minibatch
    order come from a private generator; the global torch RNG is left untouched).
    ``progress(fraction, label)`` is called after every epoch.
    """
    X, y, n_classes = _check_inputs(X, labels, n_classes)
    _check_positive("epochs", epochs)
    _check_positive("batch_size", batch_size)
    _check_positive("hidden_dim", hidden_dim)
    _check_positive("lr", lr, float)
    if isinstance(weight_decay, bool) or not weight_decay >= 0:
        raise ValueError(f"weight_decay must be >= 0; got {weight_decay!r}.")
    if num_threads is not None:
        _check_positive("num_threads", num_threads)
    if isinstance(input_dropout, bool) or not 0.0 <= input_dropout < 1.0:
        raise ValueError(f"input_dropout must be in [0, 1); got {input_dropout!r}.")
    if (
        isinstance(el2n_epochs, bool)
        or not isinstance(el2n_epochs, int | np.integer)
        or el2n_epochs < 0
    ):
        raise ValueError(f"el2n_epochs must be an integer >= 0; got {el2n_epochs!r}.")
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if num_threads is None:
        small = batch_size * X.shape[1] * hidden_dim < _SMALL_STEP
        num_threads = 1 if small else torch.get_num_threads()
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(int(num_threads))
    try:
        return _train(
            X,
            y,
            n_classes,
            dev,
            progress,
            epochs=int(epochs),
            batch_size=int(batch_size),
            hidden_dim=int(hidden_dim),
            lr=float(lr),
            weight_decay=float(weight_decay),
            seed=int(seed),
            el2n_epochs=int(el2n_epochs),
            input_dropout=float(input_dropout),
        )
    finally:
        torch.set_num_threads(previous_threads)


def scaled_proxy_epochs(
    n_samples: int,
    n_features: int,
    n_classes: int,
    hidden_dim: int = 512,
    epochs: int = DEFAULT_PROXY_EPOCHS,
) -> int:
    """Epochs for ``train_mlp_proxy`` that keep its work within ``PROXY_WORK_BUDGET``.

    What: ``epochs`` (default 40) when N x 3 x (d x hidden + hidden x K) x epochs multiply-adds
    fit in the budget, else the largest count that fits, but at least
    ``MIN_SCALED_PROXY_EPOCHS``. Examples (512-d, K = 1,000): 40 up to ~107,000 samples, 21 at
    200,000, 3 at 1.28M (about 5 minutes on 2 cores instead of 50); CIFAR-10 50,000 x 1280 with
    K = 10: 40.

    Why: an epoch's cost is linear in N, so a fixed 40 epochs costs ~50 minutes at 1.28M x 512
    with 1,000 pseudo-classes on 2 CPU cores. A larger pool gives each epoch proportionally more
    optimiser steps (5,000 per epoch at 1.28M against 196 at 50,000), so the proxy converges in
    fewer epochs; what fewer epochs cost is fewer observations per sample in AUM's average
    (measured at ``MIN_SCALED_PROXY_EPOCHS``).
    Deterministic (a function of the shapes only), so runs stay reproducible.
    """
    for name, value in (
        ("n_samples", n_samples),
        ("n_features", n_features),
        ("n_classes", n_classes),
        ("hidden_dim", hidden_dim),
        ("epochs", epochs),
    ):
        _check_positive(name, value)  # fmt: skip
    per_epoch = 3.0 * n_samples * (n_features * hidden_dim + hidden_dim * n_classes)
    fits = int(PROXY_WORK_BUDGET // per_epoch)
    return int(min(int(epochs), max(fits, MIN_SCALED_PROXY_EPOCHS)))


def cosine_schedule(opt: torch.optim.Optimizer, total_steps: int) -> Any:
    """Per-step cosine decay of the learning rate from its initial value to 0."""
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))
    )


def proxy_train_step(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    sched: Any,
    recorder: TrainingDynamicsRecorder,
    idx: torch.Tensor,
    xb: torch.Tensor,
    yb: torch.Tensor,
) -> float:
    """One proxy minibatch: record the dynamics from the logits before the update, then a
    cross-entropy SGD step. Returns the batch's summed loss (0 for a lone sample, which
    BatchNorm cannot train on: it is only scored, in eval mode)."""
    if xb.shape[0] == 1:
        model.eval()
        with torch.no_grad():
            recorder.update(idx, model(xb), yb)
        model.train()
        return 0.0
    logits = model(xb)
    loss = F.cross_entropy(logits, yb)
    recorder.update(idx, logits.detach(), yb)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    sched.step()
    return float(loss.detach()) * xb.shape[0]


def _train(
    X: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    dev: torch.device,
    progress: ProgressFn | None,
    **cfg: Any,
) -> DifficultyScores:
    """The training loop of ``train_mlp_proxy`` on validated inputs (``cfg``: its parameters)."""
    epochs, batch_size, lr = cfg["epochs"], cfg["batch_size"], cfg["lr"]
    p_drop = cfg["input_dropout"]
    t0 = time.perf_counter()
    n, d = X.shape
    standardizer = _Standardizer(X)
    if dev.type == "cpu":
        Xt = None  # each minibatch is standardised from X as it is drawn: no copy of X
    else:  # an accelerator: the standardised rows live in its memory, copied chunk by chunk
        Xt = torch.empty((n, d), dtype=torch.float32, device=dev)
        for start in range(0, n, _CHUNK_ROWS):
            stop = min(start + _CHUNK_ROWS, n)
            Xt[start:stop] = torch.from_numpy(standardizer.rows(X, slice(start, stop))).to(dev)
    yt = torch.from_numpy(y).to(dev)
    gen = torch.Generator().manual_seed(cfg["seed"])
    model = _MLP(d, cfg["hidden_dim"], n_classes, gen).to(dev)
    opt = torch.optim.SGD(
        model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=cfg["weight_decay"]
    )
    steps_per_epoch = math.ceil(n / batch_size)
    total_steps = epochs * steps_per_epoch
    sched = cosine_schedule(opt, total_steps)
    recorder = TrainingDynamicsRecorder(n, n_classes, el2n_epochs=cfg["el2n_epochs"])

    model.train()
    for epoch in range(epochs):
        perm = torch.randperm(n, generator=gen)
        loss_sum = 0.0
        for start in range(0, n, batch_size):
            idx = perm[start : start + batch_size]
            idx_dev = idx.to(dev)
            if Xt is None:
                xb = torch.from_numpy(standardizer.rows(X, idx.numpy()))
            else:
                xb = Xt[idx_dev]
            yb = yt[idx_dev]
            if p_drop > 0:  # feature dropout: the embedding-space stand-in for augmentation
                keep = torch.rand(xb.shape, generator=gen) >= p_drop
                xb = xb * keep.to(dev) / (1.0 - p_drop)
            loss_sum += proxy_train_step(model, opt, sched, recorder, idx, xb, yb)
        recorder.end_epoch()
        if progress is not None:
            progress((epoch + 1) / epochs, f"epoch {epoch + 1}/{epochs}, loss {loss_sum / n:.3f}")

    return recorder.scores(
        proxy="mlp", seconds=round(time.perf_counter() - t0, 2), device=str(dev), **cfg
    )
