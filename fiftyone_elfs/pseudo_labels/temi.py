"""TEMI deep clustering (Adaloglou et al., 2023) on cached embeddings: ELFS's pseudo-labeller.

Arrays in, arrays out; no FiftyOne import. See ``TEMIClustering``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import numbers
import time
import warnings
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..difficulty.checkpoints import EpochCheckpoint
from ..embeddings.projection import PCAProjection, fit_pca
from ..heap import keep_freed_memory
from .kmeans import check_n_clusters
from .neighbors import check_features, nearest_neighbors

logger = logging.getLogger(__name__)

__all__ = [
    "NEAR_UNIFORM_WARNING",
    "TEMI_MAX_FIT_SAMPLES",
    "TEMI_MIN_STEPS",
    "TEMI_NEIGHBORS",
    "TEMIClustering",
]

#: Above this many samples TEMI trains on this many anchors drawn with the seed (their
#: neighbour partners still come from all samples) and then assigns every sample with the
#: selected teacher head. About 50,000 samples is what the defaults were tuned on (CIFAR-10).
TEMI_MAX_FIT_SAMPLES = 65_536

#: The fewest optimiser steps a fit takes: below it the epochs (and warm-up epochs, in
#: proportion) are raised. 15 epochs of batch 256 give 10,000 samples 600 steps but 1,000
#: samples 60, and there TEMI stayed at k-means' accuracy (40-45% on CIFAR-10, 3 draws) where
#: 600 steps reached 50-53% (``benchmarks/results/temi-small-data``). Pools from about 8,500
#: samples up already take this many and are unchanged.
TEMI_MIN_STEPS = 500

#: Neighbours a sample's training partner is drawn from, by default (the paper's 50), capped at
#: half the mean cluster size N / (2K) (at least 5) so that on small data most partners share a
#: cluster: on 300 CIFAR-10 images with 10 clusters, 15 neighbours gave 42.7-54.3% accuracy
#: where 50 gave 36.0-45.7% (3 draws; ``benchmarks/results/temi-small-data``). The cap binds only
#: below N = 100K (1,000 samples for 10 clusters).
TEMI_NEIGHBORS = 50

#: How ``fit``'s RuntimeWarning for a head that stayed near the uniform assignment begins.
NEAR_UNIFORM_WARNING = "TEMI's selected head stayed close to the uniform assignment"

ProgressFn = Callable[[float, str], None]

_PREDICT_CHUNK = 8192
_MIN_LR = 1e-6  # end of the cosine schedule (as in DINO/TEMI)
_PRIOR_FLOOR = 1e-8  # keeps log p_k finite if a cluster empties
_PAPER_TEACHER_MOMENTUM = 0.996
_TEACHER_MEMORY_FRACTION_INV = 40.0  # teacher memory = 1/40 of all steps (paper: 250 of ~9,800)
_CHECKPOINT = "temi.pt"
_MOMENT_CHUNK = 65_536  # rows per float64 chunk when taking the input's mean square


class _NoScheduler:
    """Stands in for a learning-rate scheduler in ``EpochCheckpoint`` (TEMI's schedule is a
    function of the step, which the checkpoint stores)."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        del state


def _auto_teacher_momentum(total_steps: int | None) -> float:
    """EMA momentum whose time constant is 1/40 of training, as the paper's 0.996 over ~9,800 steps.

    1 / (1 - m) is the teacher's memory in steps: 250 steps for the paper's 0.996 at 200 epochs of
    batch 1024 on 50k images. Short CPU schedules with the same m leave the teacher lagging for
    much of training (CIFAR-10 10k, 4,000 steps: loss still falling at the end and 50.9% accuracy,
    vs converged and 52.4% with 0.99), so m keeps that memory a fixed fraction of the run, clipped
    to [0.9, 0.996]. None (unknown length) gives the paper's 0.996.
    """
    if total_steps is None:
        return _PAPER_TEACHER_MOMENTUM
    memory = total_steps / _TEACHER_MEMORY_FRACTION_INV
    return float(np.clip(1.0 - 1.0 / max(memory, 1.0), 0.9, _PAPER_TEACHER_MOMENTUM))


class _MultiHeadMLP(nn.Module):
    """H independent clustering heads evaluated together with batched matmuls.

    Head h: Linear(d, hidden) - GELU - Linear(hidden, bottleneck) - L2-normalise - weight-normalised
    Linear(bottleneck, K) without bias and with the norm g fixed to 1 (DINO's ``norm_last_layer``),
    so its logits are cosine similarities between the bottleneck code and K prototype vectors.
    The first layers of all heads share the input, so they run as one [d, H * hidden] matmul.
    """

    def __init__(
        self,
        in_dim: int,
        n_heads: int,
        n_clusters: int,
        hidden_dim: int,
        bottleneck_dim: int,
        generator: torch.Generator,
    ) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.hidden_dim = hidden_dim
        self.w1 = nn.Parameter(torch.empty(in_dim, n_heads * hidden_dim))
        self.b1 = nn.Parameter(torch.zeros(n_heads * hidden_dim))
        self.w2 = nn.Parameter(torch.empty(n_heads, hidden_dim, bottleneck_dim))
        self.b2 = nn.Parameter(torch.zeros(n_heads, 1, bottleneck_dim))
        self.v = nn.Parameter(torch.empty(n_heads, bottleneck_dim, n_clusters))
        for w in (self.w1, self.w2):  # DINO head init: truncated normal, std 0.02
            nn.init.trunc_normal_(w, std=0.02, a=-0.04, b=0.04, generator=generator)
        nn.init.normal_(self.v, generator=generator)  # only its direction matters

    def forward(self, x: torch.Tensor, head: int | None = None) -> torch.Tensor:
        """Return cosine logits [H, B, K] for all heads, or [1, B, K] for one ``head``."""
        if head is None:
            w1, b1, w2, b2, v = self.w1, self.b1, self.w2, self.b2, self.v
            n_heads = self.n_heads
        else:
            cols = slice(head * self.hidden_dim, (head + 1) * self.hidden_dim)
            w1, b1 = self.w1[:, cols], self.b1[cols]
            w2, b2, v = self.w2[head : head + 1], self.b2[head : head + 1], self.v[head : head + 1]
            n_heads = 1
        h = F.gelu(torch.addmm(b1, x, w1))  # [B, H * hidden]
        h = h.view(x.shape[0], n_heads, self.hidden_dim).transpose(0, 1)  # [H, B, hidden]
        z = F.normalize(torch.baddbmm(b2, h, w2), dim=-1)  # [H, B, bottleneck], unit norm
        return torch.bmm(z, F.normalize(v, dim=1))  # [H, B, K], cosine similarities


class TEMIClustering:
    """Multi-head TEMI clustering of embeddings into pseudo-labels, scikit-learn style.

    Method (ELFS / TEMI; DESIGN.md section 1). Each of ``n_heads`` heads is an MLP
    Linear(d, 512)-GELU-Linear(512, 256)-L2-normalise-weight-normalised Linear(256, K) (no bias,
    norm fixed to 1, so logits are cosines). Student heads learn by AdamW (linear warm-up, then
    cosine decay to 1e-6); teacher heads are an EMA of the students and get no gradient. Every
    epoch each sample x is paired with one neighbour x' drawn afresh from its ``n_neighbors``
    cosine nearest neighbours. The symmetrised per-head loss is

        L_h = -w/2 * [log sum_k (q_s(k|x) q_t(k|x'))^beta / p_k  +  (x <-> x')],

    with q = softmax(cosine logits / ``temperature``), p the running mean of the teacher's cluster
    probabilities (``prior_momentum``) and w = sum_k q_t(k|x) q_t(k|x') averaged over heads
    (detached). The head with the lowest mean loss over the last epoch is selected
    (``best_head_``); ``labels_`` is the argmax of its teacher, ``confidence_`` that teacher's
    max probability. No ground truth is read anywhere.

    Inputs are L2-normalised, reduced by PCA to ``pca_dim`` when wider, centred and scaled to unit
    RMS per coordinate. Neighbours are exact cosine kNN in that centred space unless passed to
    ``fit``: centring removes the mean direction that dominates cosines of non-negative CNN
    features (CIFAR-10, 10k EfficientNet-Lite0 features: 10-NN label agreement 61.2% after PCA-128
    and centring vs 59.9% on raw full-width features) and PCA makes the search ~10x cheaper.
    ``n_neighbors=None`` (default) takes ``TEMI_NEIGHBORS`` (50), or half the mean cluster size
    ``N // (2 * n_clusters)`` when that is smaller (at least 5); an integer is used as given.
    ``n_neighbors >= N`` is clamped to ``N - 1`` (every other sample).

    Sizing for 2 CPU cores (the paper: 50 heads, 200 epochs, batch 1024, teacher momentum 0.996,
    i.e. ~9,800 steps; hours on 2 cores). Defaults here: 8 heads, 15 epochs (2 warm-up), batch
    256, PCA to 128 dims, and at least ``min_steps`` (``TEMI_MIN_STEPS``) optimiser steps, so
    that small datasets get more epochs (1,000 samples: 125 instead of 15). Measured on 2 cores,
    50,000 x 1280 features: 13.8 s per epoch, a full fit in 3.6 minutes (7 s of it kNN). Why: at
    CPU budgets the number of optimiser steps, not epochs, limits the teacher-student dynamics
    (batch 1024 left the loss barely moved, 40% vs 51-52% accuracy at batch 256 on CIFAR-10 10k,
    same compute), and at equal compute 8 heads beat 2 or 4 (47.9 / 52.4 / 55.1%; k-means
    43-48%), with 12-50 epochs on 10k all within noise. ``teacher_momentum=None`` keeps the
    teacher's memory 1/40 of the run as in the paper (0.996 at ~9,800 steps; 0.986 for the
    defaults on 50k); pass 0.996 to force the paper's value. Use ``n_heads=50, epochs=200,
    batch_size=1024, pca_dim=None`` for the paper's schedule on a GPU.

    Scale (``max_samples``, default ``TEMI_MAX_FIT_SAMPLES``): above that many samples, the
    heads train on that many anchors drawn with ``seed``; each anchor's partner is drawn from
    its ``n_neighbors`` nearest neighbours among all samples (approximate search above
    ``EXACT_KNN_MAX_SAMPLES``, see ``nearest_neighbors``), and every sample is then labelled by
    the selected teacher head. Why: an epoch over N costs N / batch optimiser steps and the
    schedule (momentum, warm-up) is tuned in steps of a ~50,000-sample run, so training on all
    1.28M samples for 15 epochs would take ~25x longer for the same number of useful steps;
    the kNN search for the anchors costs anchors x (visited rows), not N^2. Up to
    ``max_samples`` the fit is unchanged (every sample is an anchor). Memory is O(N * pca_dim)
    plus the model; no N x K probability matrix is built by ``fit`` or ``predict``.

    ``checkpoint_dir``: after every epoch the heads, optimiser, prior, random state and loss
    history are saved there (file ``temi.pt``); a later ``fit`` with the same data and settings
    resumes from it, with the same result as an uninterrupted fit (exactly, for a fixed
    ``num_threads`` on the same device), and the file is removed when training completes.
    ``num_threads``: torch CPU threads during ``fit`` (restored afterwards); None keeps torch's.

    Deterministic for a fixed ``seed`` on a given device and thread count.
    """

    def __init__(
        self,
        n_clusters: int,
        n_heads: int = 8,
        epochs: int = 15,
        batch_size: int = 256,
        n_neighbors: int | None = None,
        lr: float = 4e-4,
        warmup_epochs: int = 2,
        weight_decay: float = 1e-4,
        teacher_momentum: float | None = None,
        prior_momentum: float = 0.9,
        temperature: float = 0.1,
        beta: float = 0.6,
        hidden_dim: int = 512,
        bottleneck_dim: int = 256,
        pca_dim: int | None = 128,
        seed: int = 0,
        device: str | torch.device | None = None,
        progress: ProgressFn | None = None,
        max_samples: int | None = TEMI_MAX_FIT_SAMPLES,
        min_steps: int | None = TEMI_MIN_STEPS,
        checkpoint_dir: str | None = None,
        num_threads: int | None = None,
    ) -> None:
        self.n_clusters = n_clusters
        self.n_heads = n_heads
        self.epochs = epochs
        self.batch_size = batch_size
        self.n_neighbors = n_neighbors
        self.lr = lr
        self.warmup_epochs = warmup_epochs
        self.weight_decay = weight_decay
        self.teacher_momentum = teacher_momentum
        self.prior_momentum = prior_momentum
        self.temperature = temperature
        self.beta = beta
        self.hidden_dim = hidden_dim
        self.bottleneck_dim = bottleneck_dim
        self.pca_dim = pca_dim
        self.seed = seed
        self.device = device
        self.progress = progress
        self.max_samples = max_samples
        self.min_steps = min_steps
        self.checkpoint_dir = checkpoint_dir
        self.num_threads = num_threads

    # ------------------------------------------------------------------ public API

    def fit(self, X: np.ndarray, neighbors: np.ndarray | None = None) -> TEMIClustering:
        """Train the heads on X ([N, d] embeddings) and set labels_, confidence_, best_head_, ...

        ``neighbors`` optionally supplies precomputed [N, k] nearest-neighbour indices (self
        excluded, most similar first, e.g. from ``nearest_neighbors``) to skip the kNN search;
        its first ``n_neighbors`` columns are used. Also sets ``n_neighbors_`` (after clamping),
        ``anchors_`` (the training rows, None for all), ``teacher_momentum_``,
        ``epochs_`` and ``warmup_epochs_`` (the schedule run, raised on small data by
        ``min_steps``), ``resumed_from_epoch_``, ``knn_seconds_``, ``train_seconds_``,
        ``mean_confidence_`` and ``near_uniform_`` (True when the selected head stayed close to
        the uniform assignment, with a RuntimeWarning; seen at 1,000 clusters with the CPU
        defaults).
        """
        X = check_features(X)
        n = X.shape[0]
        self._check_params(n)
        k = min(self._neighbor_count(n), n - 1)
        report = self.progress or (lambda frac, msg: None)
        if neighbors is not None:
            neighbors = self._check_neighbors(neighbors, n)[:, :k]
            k = neighbors.shape[1]
        previous_threads = torch.get_num_threads()
        if self.num_threads is not None:
            torch.set_num_threads(int(self.num_threads))
        try:
            self._fit(X, neighbors, k, report)
        finally:
            torch.set_num_threads(previous_threads)
        self._check_uniform()
        return self

    def _fit(self, X: np.ndarray, neighbors: np.ndarray | None, k: int, report: ProgressFn) -> None:
        """``fit`` on validated inputs: features, anchors, neighbours, training, labels."""
        n = X.shape[0]
        report(0.0, "preparing features")
        Z = self._fit_transform(X)
        self.anchors_ = self._anchor_rows(n)
        m = n if self.anchors_ is None else self.anchors_.size
        t0 = time.perf_counter()
        if neighbors is None:
            report(0.0, f"finding the {k} nearest neighbours of {m} of {n} samples")
            neighbors = nearest_neighbors(Z, k, query_rows=self.anchors_, seed=int(self.seed))
        elif self.anchors_ is not None:
            neighbors = neighbors[self.anchors_]
        self.n_neighbors_ = k
        self.knn_seconds_ = time.perf_counter() - t0

        n_batches = max(1, math.ceil(m / int(self.batch_size)))
        self.epochs_, self.warmup_epochs_ = self._schedule(n_batches)
        if self.epochs_ > int(self.epochs):
            logger.info(
                "TEMI: %d epochs instead of %d, to reach min_steps=%d optimiser steps at %d "
                "batches per epoch (min_steps=None keeps the epochs given)",
                self.epochs_, int(self.epochs), int(self.min_steps), n_batches,
            )  # fmt: skip
        total_steps = self.epochs_ * n_batches
        self._setup(Z.shape[1], total_steps)
        Zt = torch.from_numpy(Z).to(self.device_)
        warmup_steps = self.warmup_epochs_ * n_batches
        checkpoint = EpochCheckpoint(self.checkpoint_dir, _CHECKPOINT, self._digest(Z, neighbors))
        t_train = time.perf_counter()
        with keep_freed_memory():  # each step reuses the last one's pages
            self._train(Zt, neighbors, k, n_batches, total_steps, warmup_steps, checkpoint, report)
        self.train_seconds_ = time.perf_counter() - t_train
        self.loss_history_ = np.stack(self.loss_history_)
        self.head_losses_ = self.loss_history_[-1].copy()
        self.best_head_ = int(np.argmin(self.head_losses_))
        self.labels_, self.confidence_ = self._label(Zt, self.best_head_)
        checkpoint.finish()

    def _neighbor_count(self, n: int) -> int:
        """Neighbours per sample for N = ``n``: as given, or the default capped at N / (2K)."""
        if self.n_neighbors is not None:
            return int(self.n_neighbors)
        return min(TEMI_NEIGHBORS, max(5, n // (2 * int(self.n_clusters))))

    def _schedule(self, n_batches: int) -> tuple[int, int]:
        """(epochs, warm-up epochs) of this fit: as given, or raised to reach ``min_steps``
        optimiser steps with the warm-up the same share of the epochs as given."""
        epochs, warmup = int(self.epochs), int(self.warmup_epochs)
        if self.min_steps is None or epochs * n_batches >= int(self.min_steps):
            return epochs, warmup
        raised = math.ceil(int(self.min_steps) / n_batches)
        return raised, math.ceil(warmup * raised / epochs)

    def _anchor_rows(self, n: int) -> np.ndarray | None:
        """Sorted training rows when N exceeds ``max_samples`` (drawn with the seed), else None."""
        if self.max_samples is None or n <= int(self.max_samples):
            return None
        rng = np.random.default_rng([int(self.seed), 1])  # not the training stream
        return np.sort(rng.choice(n, int(self.max_samples), replace=False)).astype(np.int64)

    def _digest(self, Z: np.ndarray, neighbors: np.ndarray) -> str:
        """Identifies a training run (settings, inputs, pairs): a checkpoint resumes only it."""
        names = (
            "n_clusters", "n_heads", "epochs", "batch_size", "n_neighbors", "lr",
            "warmup_epochs", "weight_decay", "teacher_momentum", "prior_momentum",
            "temperature", "beta", "hidden_dim", "bottleneck_dim", "pca_dim", "seed",
            "max_samples", "min_steps",
        )  # fmt: skip
        cfg = {name: getattr(self, name) for name in names}
        h = hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode())
        h.update(repr((Z.shape, neighbors.shape, str(self.device_))).encode())
        h.update(np.ascontiguousarray(Z[:: max(1, Z.shape[0] // 64)]).tobytes())
        h.update(np.ascontiguousarray(neighbors[:: max(1, neighbors.shape[0] // 64)]).tobytes())
        return h.hexdigest()[:16]

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Return [N, K] cluster probabilities from the selected head's teacher.

        N x K floats: for many samples and clusters prefer ``predict`` (chunked, O(N) output).
        """
        Zt = self._prepare_predict(X)
        return self._proba(Zt, self.best_head_)

    def predict(self, X: np.ndarray, head: int | None = None) -> np.ndarray:
        """Return int64 cluster ids (argmax of the selected head's teacher), in chunks.

        ``head``: another head's clustering instead (0 <= head < ``n_heads``); the heads are
        independent clusterings of the same data, e.g. to measure how much they agree.
        """
        if head is not None and (
            isinstance(head, bool)
            or not isinstance(head, (int, np.integer))
            or not (0 <= head < self.n_heads)
        ):
            raise ValueError(f"head must be an int in [0, {self.n_heads}); got {head!r}.")
        Zt = self._prepare_predict(X)
        return self._label(Zt, self.best_head_ if head is None else int(head))[0]

    def _prepare_predict(self, X: np.ndarray) -> torch.Tensor:
        """Validate new rows against the fit and apply the fitted input transform."""
        self._check_fitted()
        X = check_features(X)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {X.shape[1]} features but the model was fitted on {self.n_features_in_}."
            )
        return torch.from_numpy(self._transform(X)).to(self.device_)

    def fit_predict(self, X: np.ndarray, neighbors: np.ndarray | None = None) -> np.ndarray:
        """Fit on X and return labels_."""
        return self.fit(X, neighbors=neighbors).labels_

    # ------------------------------------------------------------------ internals

    def _check_params(self, n: int) -> None:
        """Validate hyper-parameters against N samples; raise ValueError naming the fix."""
        check_n_clusters(self.n_clusters, n)
        self.check_hyperparameters()

    def check_hyperparameters(self) -> None:
        """Validate the hyper-parameters other than ``n_clusters`` (which needs the data) before
        any data is read; raise ValueError starting with the parameter's name."""

        def positive_int(name: str, minimum: int = 1) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}.")
            if value < minimum:
                raise ValueError(f"{name} must be >= {minimum}; got {value}.")

        for name in ("n_heads", "epochs", "batch_size", "hidden_dim"):
            positive_int(name)
        if self.n_neighbors is not None:
            positive_int("n_neighbors")
        positive_int("bottleneck_dim")
        positive_int("warmup_epochs", minimum=0)
        if self.pca_dim is not None:
            positive_int("pca_dim")
        if self.max_samples is not None:
            positive_int("max_samples", minimum=2)
        if self.min_steps is not None:
            positive_int("min_steps")
        if self.num_threads is not None:
            positive_int("num_threads")

        def number(name: str) -> float:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise ValueError(f"{name} must be a number; got {value!r}.")
            return value

        for name in ("teacher_momentum", "prior_momentum"):
            if name == "teacher_momentum" and self.teacher_momentum is None:
                continue
            if not 0.0 <= number(name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1); got {getattr(self, name)}.")
        for name in ("lr", "temperature", "beta"):
            if not number(name) > 0:
                raise ValueError(f"{name} must be > 0; got {getattr(self, name)}.")
        if not number("weight_decay") >= 0:
            raise ValueError(f"weight_decay must be >= 0; got {self.weight_decay}.")
        if self.device is not None:
            try:
                torch.device(self.device)
            except (RuntimeError, TypeError):
                raise ValueError(
                    f"device must be a torch device such as 'cpu' or 'cuda'; got {self.device!r}."
                ) from None

    @staticmethod
    def _check_neighbors(neighbors: np.ndarray, n: int) -> np.ndarray:
        """Validate a precomputed [N, k] neighbour index array."""
        neighbors = np.asarray(neighbors)
        if neighbors.ndim != 2 or neighbors.shape[0] != n or neighbors.shape[1] < 1:
            raise ValueError(
                f"neighbors must have shape ({n}, k) with k >= 1; got {neighbors.shape}. "
                "Compute it with nearest_neighbors(X, k)."
            )
        if not np.issubdtype(neighbors.dtype, np.integer):
            raise ValueError(f"neighbors must hold integer indices; got dtype {neighbors.dtype}.")
        if neighbors.min() < 0 or neighbors.max() >= n:
            raise ValueError(f"neighbors holds indices outside [0, {n}); recompute it for this X.")
        return neighbors.astype(np.int64, copy=False)

    def _fit_transform(self, X: np.ndarray) -> np.ndarray:
        """Fit the input transform (normalise, PCA, centre, unit RMS) on X and apply it.

        Rows are normalised and projected chunk by chunk (``PCAProjection.transform``), and the
        mean square is summed in float64 chunks, so the only N-row array is the float32 result.
        """
        self.n_features_in_ = X.shape[1]
        if self.pca_dim is not None:
            self.pca_ = fit_pca(X, int(self.pca_dim), int(self.seed), normalize=True)
        else:
            self.pca_ = PCAProjection(None, None, normalize=True)
        Z = self.pca_.transform(X)
        self.input_mean_ = Z.mean(axis=0, dtype=np.float64).astype(np.float32)
        Z -= self.input_mean_
        sq = sum(
            float(np.square(Z[i : i + _MOMENT_CHUNK], dtype=np.float64).sum())
            for i in range(0, Z.shape[0], _MOMENT_CHUNK)
        )
        rms = float(np.sqrt(sq / Z.size + 1e-24))
        self.input_scale_ = np.float32(1.0 / max(rms, 1e-12))
        Z *= self.input_scale_
        return Z

    def _transform(self, X: np.ndarray) -> np.ndarray:
        """Apply the fitted input transform to new rows."""
        Z = self.pca_.transform(X)
        Z -= self.input_mean_
        Z *= self.input_scale_
        return Z

    def _setup(self, in_dim: int, total_steps: int | None = None) -> None:
        """Create student, teacher (a copy, no gradient), optimiser, uniform prior, EMA momentum."""
        if self.teacher_momentum is not None:
            self.teacher_momentum_ = float(self.teacher_momentum)
        else:
            self.teacher_momentum_ = _auto_teacher_momentum(total_steps)
        if self.device is None:
            self.device_ = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        else:
            self.device_ = torch.device(self.device)
        gen = torch.Generator().manual_seed(int(self.seed))
        self.student_ = _MultiHeadMLP(
            in_dim,
            int(self.n_heads),
            int(self.n_clusters),
            int(self.hidden_dim),
            int(self.bottleneck_dim),
            gen,
        ).to(self.device_)
        self.teacher_ = copy.deepcopy(self.student_).requires_grad_(False)
        decay = [self.student_.w1, self.student_.w2, self.student_.v]
        no_decay = [self.student_.b1, self.student_.b2]
        self.optimizer_ = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": float(self.weight_decay)},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=float(self.lr),
        )
        self.prior_ = torch.full(
            (int(self.n_heads), int(self.n_clusters)),
            1.0 / int(self.n_clusters),
            device=self.device_,
        )

    def _train(
        self,
        Zt: torch.Tensor,
        neighbors: np.ndarray,
        k: int,
        n_batches: int,
        total_steps: int,
        warmup_steps: int,
        checkpoint: EpochCheckpoint,
        report: ProgressFn,
    ) -> None:
        """The epoch loop: fresh neighbour partners and a fresh shuffle every epoch.

        Anchors are ``anchors_`` (all rows when None); ``neighbors[i]`` lists anchor i's
        neighbours as rows of ``Zt``. Resumes from ``checkpoint`` and saves it after each epoch
        (before ``report``, so an interruption from the progress callback loses nothing).
        """
        anchors = self.anchors_
        m = Zt.shape[0] if anchors is None else anchors.size
        rng = np.random.default_rng(self.seed)
        modules = nn.ModuleDict({"student": self.student_, "teacher": self.teacher_})
        scheduler, generator = _NoScheduler(), torch.Generator()
        first_epoch, saved = checkpoint.restore(
            modules, self.optimizer_, scheduler, generator, self.device_
        )
        self.resumed_from_epoch_ = first_epoch
        self.loss_history_: list[np.ndarray] = list(saved.get("loss_history", []))
        step = int(saved.get("step", 0))
        if saved:
            rng.bit_generator.state = saved["rng"]
            self.prior_.copy_(saved["prior"].to(self.device_))
        for epoch in range(first_epoch, self.epochs_):
            partners = neighbors[np.arange(m), rng.integers(0, k, size=m)]
            epoch_loss = torch.zeros(self.n_heads, dtype=torch.float64)
            for batch in np.array_split(rng.permutation(m), n_batches):
                lr = self._lr_at(step, total_steps, warmup_steps)
                rows = batch if anchors is None else anchors[batch]
                xa = Zt[torch.from_numpy(rows).to(self.device_)]
                xb = Zt[torch.from_numpy(partners[batch]).to(self.device_)]
                losses = self._train_step(xa, xb, lr)
                epoch_loss += losses.double().cpu() * len(batch)
                step += 1
            epoch_loss = (epoch_loss / m).numpy()
            self.loss_history_.append(epoch_loss)
            checkpoint.save(
                epoch + 1,
                modules,
                self.optimizer_,
                scheduler,
                generator,
                {
                    "rng": rng.bit_generator.state,
                    "prior": self.prior_.detach().cpu().clone(),
                    "loss_history": list(self.loss_history_),
                    "step": step,
                },
            )
            report(
                (epoch + 1) / self.epochs_,
                f"TEMI epoch {epoch + 1}/{self.epochs_}: best head loss {epoch_loss.min():.4f}",
            )

    def _lr_at(self, step: int, total_steps: int, warmup_steps: int) -> float:
        """Linear warm-up from 0 to lr over warmup_steps, then cosine decay to _MIN_LR."""
        base = float(self.lr)
        if step < warmup_steps:
            return base * (step + 1) / warmup_steps
        span = max(total_steps - warmup_steps, 1)
        progress = (step - warmup_steps) / span
        return _MIN_LR + 0.5 * (base - _MIN_LR) * (1.0 + math.cos(math.pi * progress))

    def _head_losses(self, xa: torch.Tensor, xb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-head TEMI loss [H] for pairs (xa[i], xb[i]), and teacher probabilities [H, 2B, K]."""
        tau, beta = float(self.temperature), float(self.beta)
        x = torch.cat([xa, xb])
        b = xa.shape[0]
        with torch.no_grad():
            log_t = F.log_softmax(self.teacher_(x) / tau, dim=-1)  # [H, 2B, K]
            t = log_t.exp()
            # Pair weight: agreement of the teachers on x and x', averaged over heads.
            w = (t[:, :b] * t[:, b:]).sum(-1).mean(0)  # [B]
            log_prior = torch.log(self.prior_.clamp_min(_PRIOR_FLOOR)).unsqueeze(1)  # [H, 1, K]
        log_s = F.log_softmax(self.student_(x) / tau, dim=-1)  # [H, 2B, K]
        # log sum_k (q_s(k|x) q_t(k|x'))^beta / p_k, computed stably in log space, both directions.
        pmi_ab = torch.logsumexp(beta * (log_s[:, :b] + log_t[:, b:]) - log_prior, dim=-1)
        pmi_ba = torch.logsumexp(beta * (log_s[:, b:] + log_t[:, :b]) - log_prior, dim=-1)
        losses = -(w * 0.5 * (pmi_ab + pmi_ba)).mean(dim=-1)  # [H]
        return losses, t

    def _train_step(self, xa: torch.Tensor, xb: torch.Tensor, lr: float) -> torch.Tensor:
        """One AdamW step on all heads, then the teacher EMA and prior updates; returns losses."""
        for group in self.optimizer_.param_groups:
            group["lr"] = lr
        losses, t = self._head_losses(xa, xb)
        self.optimizer_.zero_grad(set_to_none=True)
        losses.sum().backward()  # heads are independent: the sum gives each its own gradient
        self.optimizer_.step()
        self._update_teacher()
        with torch.no_grad():
            m = float(self.prior_momentum)
            self.prior_.mul_(m).add_(t.mean(dim=1), alpha=1.0 - m)
        return losses.detach()

    @torch.no_grad()
    def _update_teacher(self, momentum: float | None = None) -> None:
        """teacher <- m * teacher + (1 - m) * student, parameter by parameter."""
        m = self.teacher_momentum_ if momentum is None else float(momentum)
        for pt, ps in zip(self.teacher_.parameters(), self.student_.parameters(), strict=True):
            pt.mul_(m).add_(ps.detach(), alpha=1.0 - m)

    @torch.no_grad()
    def _label(self, Zt: torch.Tensor, head: int) -> tuple[np.ndarray, np.ndarray]:
        """Argmax cluster (int64) and its probability (float32) of one head's teacher, chunked."""
        n = Zt.shape[0]
        labels = np.empty(n, dtype=np.int64)
        confidence = np.empty(n, dtype=np.float32)
        for start in range(0, n, _PREDICT_CHUNK):
            stop = min(start + _PREDICT_CHUNK, n)
            logits = self.teacher_(Zt[start:stop], head=head)[0]
            probs = F.softmax(logits / float(self.temperature), dim=-1).cpu().numpy()
            labels[start:stop] = probs.argmax(axis=1)
            confidence[start:stop] = probs.max(axis=1)
        return labels, confidence

    @torch.no_grad()
    def _proba(self, Zt: torch.Tensor, head: int) -> np.ndarray:
        """Teacher probabilities of one head for transformed inputs, in chunks."""
        out = []
        for start in range(0, Zt.shape[0], _PREDICT_CHUNK):
            logits = self.teacher_(Zt[start : start + _PREDICT_CHUNK], head=head)[0]
            out.append(F.softmax(logits / float(self.temperature), dim=-1).cpu().numpy())
        return np.concatenate(out).astype(np.float32)

    def _check_uniform(self) -> None:
        """Set ``mean_confidence_`` and ``near_uniform_``; warn when the selected head never left
        the uniform assignment (its labels are then close to arbitrary).

        Near uniform: mean confidence below 1/K plus a tenth of the way from 1/K to 1.
        """
        k = int(self.n_clusters)
        mean_conf = float(self.confidence_.mean())
        self.mean_confidence_ = mean_conf
        self.near_uniform_ = mean_conf < 1.0 / k + 0.1 * (1.0 - 1.0 / k)
        if self.near_uniform_:
            warnings.warn(
                f"{NEAR_UNIFORM_WARNING} (mean confidence {mean_conf:.3f} for {k} clusters), "
                "so its labels are close to arbitrary. This happens when nearest neighbours "
                "disagree with the cluster structure or training was too short (seen at 1,000 "
                "clusters with the CPU defaults); try more epochs or kmeans_pseudo_labels "
                "instead.",
                RuntimeWarning,
                stacklevel=3,
            )

    def _check_fitted(self) -> None:
        """Raise if fit has not been called."""
        if not hasattr(self, "best_head_"):
            raise RuntimeError("This TEMIClustering instance is not fitted yet; call fit(X) first.")
