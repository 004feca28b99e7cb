"""Contrastive-similarity scores (Ju et al.): train SimCLR on the unlabeled pool and record, for
every sample and epoch, the cosine similarity of its two augmented views' embeddings; the score is
the sum over epochs. Low similarity = the encoder cannot make the views agree = informative.
SimCLR (in-batch negatives) by default; MoCo (a momentum key encoder and a queue of negatives)
as the option.
No FiftyOne import; images come as uint8 arrays (``load_images`` decodes files).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from numbers import Integral

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .checkpoints import EpochCheckpoint
from .cnn_proxy import DEFAULT_CNN_WIDTH, SmallConvNet
from .training_dynamics import cosine_schedule

ProgressFn = Callable[[float, str], None]

DEFAULT_CONTRASTIVE_EPOCHS = 15
# SimCLR's random-resized-crop area range (0.08-1, as torchvision's default). Larger minimum
# crops let the two views share most pixels, so a unique texture (a noise patch) becomes an
# instance-matching shortcut: corrupted images then score HIGH similarity (see the test).
DEFAULT_MIN_CROP_SCALE = 0.08
CONTRASTIVE_METHODS = ("simclr", "moco")
_CHECKPOINT = "simclr.pt"


@dataclass
class ContrastiveScores:
    """Per-sample view similarity summed over epochs (low = informative)."""

    similarity: np.ndarray
    n_epochs: int
    info: dict = field(default_factory=dict)


class SimCLRNet(nn.Module):
    """The small CNN's convolutional trunk, then a 2-layer projection head (SimCLR)."""

    def __init__(self, width: int = DEFAULT_CNN_WIDTH, projection_dim: int = 64) -> None:
        super().__init__()
        self.features = SmallConvNet(2, width).features
        dim = 8 * width
        self.projection = nn.Sequential(
            nn.Linear(dim, dim), nn.ReLU(inplace=True), nn.Linear(dim, projection_dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """L2-normalised projections [B, projection_dim]."""
        h = self.features(x).mean(dim=(2, 3))
        return F.normalize(self.projection(h), dim=1)


class MoCoNet(nn.Module):
    """MoCo (v2, He et al.): a query encoder trained by SGD, a key encoder that follows it by
    momentum, and a queue of earlier keys used as negatives; one module, so a checkpoint of its
    state holds all three."""

    def __init__(
        self,
        width: int = DEFAULT_CNN_WIDTH,
        projection_dim: int = 64,
        queue_size: int = 4096,
        momentum: float = 0.99,
    ) -> None:
        super().__init__()
        self.query = SimCLRNet(width, projection_dim)
        self.key = SimCLRNet(width, projection_dim)
        self.key.load_state_dict(self.query.state_dict())
        self.key.requires_grad_(False)
        self.momentum = momentum
        self.register_buffer("queue", F.normalize(torch.randn(queue_size, projection_dim), dim=1))
        self.register_buffer("queue_next", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def keys(self, x: torch.Tensor) -> torch.Tensor:
        """Moves the key encoder towards the query encoder, then encodes ``x`` with it."""
        for k, q in zip(self.key.parameters(), self.query.parameters(), strict=True):
            k.mul_(self.momentum).add_(q.detach(), alpha=1 - self.momentum)
        return self.key(x)

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Replaces the oldest queue entries with ``keys`` (a ring buffer)."""
        size = self.queue.shape[0]
        keys = keys[-size:]  # a batch longer than the queue leaves only its newest keys
        slots = (self.queue_next + torch.arange(keys.shape[0], device=keys.device)) % size
        self.queue[slots] = keys
        self.queue_next.copy_((self.queue_next + keys.shape[0]) % size)


def simclr_views(
    images: torch.Tensor,
    generator: torch.Generator,
    min_crop_scale: float = DEFAULT_MIN_CROP_SCALE,
) -> torch.Tensor:
    """One SimCLR view per image: random resized crop (area ``min_crop_scale``-1), flip, colour
    jitter and grayscale with p = 0.2, all batched. ``images``: float [B, 3, S, S] in [0, 1]."""
    b = images.shape[0]
    area = torch.empty(b).uniform_(float(min_crop_scale), 1.0, generator=generator)
    scale = area.sqrt()  # side of the square crop, relative to the image
    shift = (1 - scale) * (torch.rand(2, b, generator=generator) * 2 - 1)
    flip = torch.where(torch.rand(b, generator=generator) < 0.5, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = scale * flip
    theta[:, 1, 1] = scale
    theta[:, 0, 2], theta[:, 1, 2] = shift[0], shift[1]
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    x = F.grid_sample(images, grid.to(images.device), align_corners=False)
    jitter = (torch.rand(3, b, 1, 1, 1, generator=generator) * 0.8 + 0.6).to(images.device)
    gray = x.mean(dim=1, keepdim=True)
    x = x * jitter[0]  # brightness
    x = (x - x.mean(dim=(1, 2, 3), keepdim=True)) * jitter[1] + x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - gray) * jitter[2] + gray  # saturation
    to_gray = (torch.rand(b, generator=generator) < 0.2).to(images.device)[:, None, None, None]
    x = torch.where(to_gray, x.mean(dim=1, keepdim=True).expand_as(x), x)
    return x.clamp(0, 1)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's NT-Xent loss for normalised projections of the two views [B, D] each."""
    z = torch.cat([z1, z2])
    sim = z @ z.T / temperature
    sim.fill_diagonal_(float("-inf"))
    b = z1.shape[0]
    targets = torch.cat([torch.arange(b, 2 * b), torch.arange(0, b)]).to(z.device)
    return F.cross_entropy(sim, targets)


def moco_loss(
    q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float
) -> torch.Tensor:
    """MoCo's InfoNCE: each query against its own key (the positive) and the queued keys."""
    logits = torch.cat([(q * k).sum(1, keepdim=True), q @ queue.T], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long, device=q.device))


def train_contrastive_similarity(
    images: np.ndarray,
    epochs: int = DEFAULT_CONTRASTIVE_EPOCHS,
    width: int = DEFAULT_CNN_WIDTH,
    batch_size: int = 256,
    lr: float = 0.5,
    weight_decay: float = 1e-4,
    temperature: float = 0.5,
    min_crop_scale: float = DEFAULT_MIN_CROP_SCALE,
    method: str = "simclr",
    moco_queue_size: int = 4096,
    moco_momentum: float = 0.99,
    seed: int = 0,
    device: str | None = None,
    checkpoint_dir: str | None = None,
    progress: ProgressFn | None = None,
    num_threads: int | None = None,
) -> ContrastiveScores:
    """Trains SimCLR on ``images`` (uint8 [N, S, S, 3]) and returns each sample's summed view
    similarity. The similarity of a sample in an epoch is the cosine between its two views'
    projections in that epoch's training forward pass, as in Ju et al.

    ``method="moco"`` trains MoCo instead: the similarity is then the cosine between the query
    encoder's view and the momentum key encoder's view; the queue holds at most N - batch keys,
    so that small pools are not contrasted mostly with stale copies of themselves.

    CPU-sized defaults (the width-16 small CNN at the images' size, 15 epochs, batches of 256);
    SGD with momentum 0.9 and cosine decay; SimCLR's crop range (``min_crop_scale`` = 0.08).
    ``checkpoint_dir`` makes training resumable after every epoch, with the same scores as an
    uninterrupted run for a fixed seed; the checkpoint is removed when training completes.
    ``progress(fraction, label)`` after every epoch.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[3] != 3 or images.dtype != np.uint8 or len(images) < 2:
        raise ValueError(
            f"images must be uint8 [N >= 2, S, S, 3]; got {images.dtype} {images.shape}."
        )
    for name, value, low in (
        ("epochs", epochs, 1),
        ("width", width, 1),
        ("batch_size", batch_size, 2),
        ("moco_queue_size", moco_queue_size, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, Integral) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}; got {value!r}.")
    epochs, width, batch_size, moco_queue_size = map(
        int, (epochs, width, batch_size, moco_queue_size)
    )
    if method not in CONTRASTIVE_METHODS:
        raise ValueError(f"method must be one of {CONTRASTIVE_METHODS}; got {method!r}.")
    if not 0.0 <= float(moco_momentum) < 1.0:
        raise ValueError(f"moco_momentum must be in [0, 1); got {moco_momentum!r}.")
    if not 0.0 < float(min_crop_scale) <= 1.0:
        raise ValueError(f"min_crop_scale must be in (0, 1]; got {min_crop_scale!r}.")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    previous_threads = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(int(num_threads))
    t0 = time.perf_counter()
    try:
        n = len(images)
        pixels = torch.from_numpy(np.ascontiguousarray(images))
        gen = torch.Generator().manual_seed(int(seed))
        batch = min(batch_size, n)
        queue_size = max(1, min(moco_queue_size, n - batch))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            if method == "moco":
                model: nn.Module = MoCoNet(width, queue_size=queue_size, momentum=moco_momentum)
            else:
                model = SimCLRNet(width)
            model = model.to(dev).to(memory_format=torch.channels_last)
        trainable = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.SGD(trainable, lr=lr, momentum=0.9, weight_decay=weight_decay)
        total_steps = epochs * math.ceil(n / batch)
        sched = cosine_schedule(opt, total_steps)
        digest = hashlib.sha256(
            repr((n, images.shape, epochs, width, batch, lr, weight_decay, temperature,
                  min_crop_scale, method, queue_size, moco_momentum, seed))
            .encode() + pixels[:: max(1, n // 64)].numpy().tobytes()
        ).hexdigest()[:16]  # fmt: skip
        checkpoint = EpochCheckpoint(checkpoint_dir, _CHECKPOINT, digest)
        first_epoch, saved = checkpoint.restore(model, opt, sched, gen, dev)
        similarity = saved.get("similarity", np.zeros(n, dtype=np.float64))

        model.train()
        for epoch in range(first_epoch, epochs):
            perm = torch.randperm(n, generator=gen)
            loss_sum = 0.0
            # near-equal batches, so none is a lone sample (NT-Xent needs a negative)
            for idx in torch.tensor_split(perm, math.ceil(n / batch)):
                x = pixels[idx].to(dev).permute(0, 3, 1, 2).float().div_(255.0)
                v1 = simclr_views(x, gen, min_crop_scale).sub_(0.5).div_(0.5)
                v2 = simclr_views(x, gen, min_crop_scale).sub_(0.5).div_(0.5)
                v1 = v1.contiguous(memory_format=torch.channels_last)
                v2 = v2.contiguous(memory_format=torch.channels_last)
                if method == "moco":
                    z1, z2 = model.query(v1), model.keys(v2)
                    loss = moco_loss(z1, z2, model.queue, temperature)
                else:
                    z1, z2 = model(v1), model(v2)
                    loss = nt_xent(z1, z2, temperature)
                np.add.at(similarity, idx.numpy(), (z1 * z2).sum(1).detach().cpu().double().numpy())
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                if method == "moco":
                    model.enqueue(z2)
                loss_sum += float(loss.detach()) * idx.numel()
            checkpoint.save(epoch + 1, model, opt, sched, gen, {"similarity": similarity})
            if progress is not None:
                progress(
                    (epoch + 1) / epochs, f"epoch {epoch + 1}/{epochs}, loss {loss_sum / n:.3f}"
                )
        checkpoint.finish()
    finally:
        torch.set_num_threads(previous_threads)
    info = dict(
        method=method, width=width, batch_size=batch, lr=lr, temperature=temperature,
        min_crop_scale=min_crop_scale, seed=seed, device=str(dev),
        seconds=round(time.perf_counter() - t0, 2), resumed_from_epoch=first_epoch,
    )  # fmt: skip
    if method == "moco":
        info.update(moco_queue_size=queue_size, moco_momentum=moco_momentum)
    return ContrastiveScores(similarity.astype(np.float32), epochs, info)
