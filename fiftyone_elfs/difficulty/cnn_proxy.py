"""The faithful ELFS proxy: a CNN trained from scratch on the images and their pseudo-labels,
with AUM, forgetting and EL2N recorded online (``TrainingDynamicsRecorder``). No FiftyOne import.

Images are decoded once through a torch DataLoader (worker processes when ``num_workers`` > 0),
resized to ``image_size`` and kept as uint8 in memory (N x S x S x 3 bytes: 150 MB for 50,000
images at 32 px); every epoch then augments minibatches in torch (random crop with 4-pixel
padding, horizontal flip). Training can be stopped and resumed from the checkpoint written after
every epoch in ``checkpoint_dir``, with the same scores as an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from numbers import Integral
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from fiftyone_elfs.cpus import decode_workers
from fiftyone_elfs.embeddings.jpeg import REDUCED_DECODE_MARGIN
from fiftyone_elfs.embeddings.upright_rgb import upright_rgb

from .checkpoints import EpochCheckpoint
from .training_dynamics import (
    DifficultyScores,
    TrainingDynamicsRecorder,
    cosine_schedule,
    proxy_train_step,
)

ProgressFn = Callable[[float, str], None]

ARCHITECTURES = ("small", "resnet18")
#: CPU-sized default: 15 epochs of the width-16 small CNN at 32 px (see ``train_cnn_proxy``).
DEFAULT_CNN_EPOCHS = 15
DEFAULT_CNN_WIDTH = 16
_CHECKPOINT = "cnn_proxy.pt"
_PAD = 4


class SmallConvNet(nn.Module):
    """Six 3x3 conv-BN-ReLU layers (widths w, 2w, 2w, 4w, 4w, 8w), max-pool after each pair,
    global average pool, linear head: 145k parameters at width 16, practical on a CPU."""

    def __init__(self, n_classes: int, width: int = DEFAULT_CNN_WIDTH) -> None:
        super().__init__()
        widths = [width, 2 * width, 2 * width, 4 * width, 4 * width, 8 * width]
        layers: list[nn.Module] = []
        c_in = 3
        for i, c in enumerate(widths):
            layers += [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)]
            layers.append(nn.ReLU(inplace=True))
            if i % 2 == 1:
                layers.append(nn.MaxPool2d(2))
            c_in = c
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c_in, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits [B, K] for images [B, 3, S, S]."""
        return self.head(self.features(x).mean(dim=(2, 3)))


def build_proxy_network(arch: str, n_classes: int, width: int = DEFAULT_CNN_WIDTH) -> nn.Module:
    """The proxy CNN: ``"small"`` (CPU default) or ``"resnet18"`` (the paper's; use a GPU).

    ResNet-18 gets the CIFAR stem (3x3 first convolution, no max-pool) for small images.
    """
    if arch == "small":
        return SmallConvNet(n_classes, width)
    if arch == "resnet18":
        from torchvision.models import resnet18

        net = resnet18(num_classes=n_classes)
        net.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
        return net
    raise ValueError(f"Unknown architecture {arch!r}. Fix: use one of {list(ARCHITECTURES)}.")


class _ImageFiles(torch.utils.data.Dataset):
    """Decodes one image file to uint8 [S, S, 3]; unreadable files come back flagged."""

    def __init__(self, paths: Sequence[str], size: int) -> None:
        self.paths, self.size = list(paths), size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, bool]:
        try:
            with Image.open(self.paths[i]) as im:
                # a large JPEG decodes at 1/2 to 1/8 of its size, never below twice the target
                # (PIL's draft: libjpeg's scaled decoding; other formats ignore it)
                reduced = REDUCED_DECODE_MARGIN * self.size
                im.draft("RGB", (reduced, reduced))
                im = upright_rgb(im).resize((self.size, self.size), Image.BILINEAR)
                return torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()), True
        except Exception:  # noqa: BLE001 - any bad image (e.g. over PIL's pixel limit) is skipped
            return torch.zeros(self.size, self.size, 3, dtype=torch.uint8), False


def load_images(
    paths: Sequence[str],
    image_size: int = 32,
    num_workers: int | None = None,
    batch_size: int = 256,
    progress: ProgressFn | None = None,
) -> np.ndarray:
    """Decodes and resizes every image into one uint8 [N, S, S, 3] array, through a DataLoader.

    Raises ValueError naming the unreadable files (`decode_images` reports them instead, for
    skipping them, as the difficulty stage does).
    """
    out, ok = decode_images(paths, image_size, num_workers, batch_size, progress)
    bad = [paths[i] for i in np.flatnonzero(~ok)]
    if bad:
        raise ValueError(
            f"{len(bad)} images could not be read (e.g. {bad[:3]}): missing or not readable "
            "images. Fix: correct those paths, or leave those images out (decode_images "
            "reports which cannot be read instead of raising)."
        )
    return out


def decode_images(
    paths: Sequence[str],
    image_size: int = 32,
    num_workers: int | None = None,
    batch_size: int = 256,
    progress: ProgressFn | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """`load_images` that reports instead of raising: (uint8 [N, S, S, 3] images, bool [N]
    readable); an unreadable file's image is all zeros, for the caller to skip.

    ``num_workers=None``: worker processes only when a GPU is present, for the model that is
    trained on the images next (`fiftyone_elfs.cpus.decode_workers`).
    """
    num_workers = decode_workers(num_workers, model_on_gpu=torch.cuda.is_available())
    loader = torch.utils.data.DataLoader(
        _ImageFiles(paths, image_size),
        batch_size=batch_size,
        num_workers=num_workers,
        shuffle=False,
    )
    out = np.empty((len(paths), image_size, image_size, 3), dtype=np.uint8)
    readable = np.ones(len(paths), dtype=bool)
    start = 0
    for images, ok in loader:
        stop = start + images.shape[0]
        out[start:stop] = images.numpy()
        readable[start:stop] = ok.numpy()
        start = stop
        if progress is not None:
            progress(stop / len(paths), f"decoded {stop}/{len(paths)} images")
    return out, readable


def augment_batch(
    images: torch.Tensor, generator: torch.Generator, pad: int = _PAD
) -> torch.Tensor:
    """Random crop after zero padding by ``pad`` pixels, and horizontal flip with p = 1/2.

    ``images``: uint8 [B, S, S, 3]; returns the same shape and dtype.
    """
    b, s = images.shape[0], images.shape[1]
    padded = F.pad(images, (0, 0, pad, pad, pad, pad))
    offsets = torch.randint(0, 2 * pad + 1, (2, b), generator=generator)
    flip = torch.rand(b, generator=generator) < 0.5
    ar = torch.arange(s)
    rows = (offsets[0][:, None] + ar)[:, :, None]
    cols = (offsets[1][:, None] + ar)[:, None, :]
    out = padded[torch.arange(b)[:, None, None], rows, cols]
    return torch.where(flip[:, None, None, None], out.flip(2), out)


def _to_input(batch: torch.Tensor, dev: torch.device) -> torch.Tensor:
    """uint8 NHWC -> float NCHW in [-1, 1], channels-last (faster convolutions on CPU)."""
    x = batch.to(dev).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
    return x.contiguous(memory_format=torch.channels_last)


def _config_digest(cfg: dict[str, Any], labels: np.ndarray, paths: Sequence[str]) -> str:
    """Identifies a training run: a checkpoint is resumed only by the same run."""
    h = hashlib.sha256(json.dumps(cfg, sort_keys=True).encode())
    h.update(np.ascontiguousarray(labels).tobytes())
    h.update("\n".join(map(str, paths)).encode())
    return h.hexdigest()[:16]


def train_cnn_proxy(
    image_paths: Sequence[str],
    labels: np.ndarray,
    n_classes: int | None = None,
    epochs: int = DEFAULT_CNN_EPOCHS,
    arch: str = "small",
    width: int = DEFAULT_CNN_WIDTH,
    image_size: int = 32,
    batch_size: int = 128,
    lr: float = 0.1,
    weight_decay: float = 5e-4,
    seed: int = 0,
    device: str | None = None,
    num_workers: int | None = None,
    checkpoint_dir: str | None = None,
    progress: ProgressFn | None = None,
    el2n_epochs: int = 10,
    images: np.ndarray | None = None,
    num_threads: int | None = None,
) -> DifficultyScores:
    """Train a CNN from scratch on the images and pseudo-labels; return its training dynamics.

    ELFS's proxy recipe: cross-entropy, SGD with Nesterov momentum 0.9, ``weight_decay``, cosine
    decay of ``lr`` per step, random crop + flip; every sample seen once per epoch, AUM /
    forgetting / EL2N recorded from each minibatch's logits before the update.

    Sized for a CPU by default (``arch="small"``, width 16, 32 px, 15 epochs); the paper's setting
    is ``arch="resnet18"`` with ``epochs=200`` on a GPU, which is used when present unless
    ``device`` says otherwise. ``num_workers`` decoding processes read the files (0: in-process;
    None: one per core but one on a GPU, none on a CPU: `fiftyone_elfs.cpus.decode_workers`);
    ``images`` (uint8 [N, S, S, 3]) skips the decoding when the caller has the pixels already.

    ``checkpoint_dir``: after every epoch the model, optimiser, random state and recorder are
    saved there; a later call with the same inputs and settings resumes from it and returns the
    same scores as an uninterrupted run (for a fixed seed, device and thread count). The
    checkpoint is removed when training completes. ``progress(fraction, label)`` after every epoch.

    ``num_threads``: torch CPU threads during the call (restored afterwards; None: unchanged).
    When other processes compete for the cores, 1 thread (or ``OMP_WAIT_POLICY=PASSIVE``) avoids
    OpenMP's busy-waiting, which made 2 threads several times slower here.
    """
    previous_threads = torch.get_num_threads()
    if num_threads is not None:
        if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
            raise ValueError(f"num_threads must be a positive integer; got {num_threads!r}.")
        torch.set_num_threads(num_threads)
    try:
        return _train_cnn(
            image_paths, labels, n_classes, epochs, arch, width, image_size, batch_size, lr,
            weight_decay, seed, device, num_workers, checkpoint_dir, progress, el2n_epochs, images,
        )  # fmt: skip
    finally:
        torch.set_num_threads(previous_threads)


def _train_cnn(
    image_paths: Sequence[str],
    labels: np.ndarray,
    n_classes: int | None,
    epochs: int,
    arch: str,
    width: int,
    image_size: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    seed: int,
    device: str | None,
    num_workers: int | None,
    checkpoint_dir: str | None,
    progress: ProgressFn | None,
    el2n_epochs: int,
    images: np.ndarray | None,
) -> DifficultyScores:
    """``train_cnn_proxy`` after the thread setting: validation, decoding, the training loop."""
    y = np.asarray(labels)
    if y.ndim != 1 or y.size != len(image_paths) or y.size == 0:
        raise ValueError(
            f"labels must be one integer per image: got {y.shape} for {len(image_paths)} images."
        )
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
        raise ValueError("labels must be non-negative integers (cluster ids).")
    y = y.astype(np.int64)
    n_classes = int(n_classes if n_classes is not None else y.max() + 1)
    if n_classes < 2 or y.max() >= n_classes:
        raise ValueError(f"n_classes must be >= 2 and > every label; got {n_classes}.")
    for name, value in (("epochs", epochs), ("width", width), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
            raise ValueError(f"{name} must be a positive integer; got {value!r}.")
    if isinstance(image_size, bool) or not isinstance(image_size, Integral) or image_size < 8:
        raise ValueError(f"image_size must be an integer >= 8; got {image_size!r}.")
    epochs, width, batch_size, image_size = map(int, (epochs, width, batch_size, image_size))
    if arch not in ARCHITECTURES:
        raise ValueError(f"Unknown architecture {arch!r}. Fix: use one of {list(ARCHITECTURES)}.")
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    cfg = dict(
        arch=arch, width=width, image_size=image_size, batch_size=batch_size, lr=float(lr),
        weight_decay=float(weight_decay), seed=int(seed), epochs=epochs, n_classes=n_classes,
        el2n_epochs=int(el2n_epochs), device=str(dev),
    )  # fmt: skip
    t0 = time.perf_counter()
    if images is None:
        workers = decode_workers(num_workers, model_on_gpu=dev.type == "cuda")
        images = load_images(image_paths, image_size, num_workers=workers)
    images = np.asarray(images)
    # floats in [0, 1] cast to uint8 would be black images
    if images.shape != (len(image_paths), image_size, image_size, 3) or images.dtype != np.uint8:
        raise ValueError(
            f"images must be uint8 [{len(image_paths)}, {image_size}, {image_size}, 3]; "
            f"got {images.dtype} {images.shape}. Fix: pass pixels as uint8 in "
            "[0, 255] (e.g. (images * 255).round().astype(np.uint8) for floats in [0, 1])."
        )
    pixels = torch.from_numpy(np.ascontiguousarray(images))
    yt = torch.from_numpy(y)
    n = y.size

    gen = torch.Generator().manual_seed(int(seed))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = build_proxy_network(arch, n_classes, width)
    model = model.to(dev).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(
        model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay
    )
    total_steps = epochs * math.ceil(n / batch_size)
    sched = cosine_schedule(opt, total_steps)
    recorder = TrainingDynamicsRecorder(n, n_classes, el2n_epochs=int(el2n_epochs))
    checkpoint = EpochCheckpoint(checkpoint_dir, _CHECKPOINT, _config_digest(cfg, y, image_paths))
    first_epoch, saved = checkpoint.restore(model, opt, sched, gen, dev)
    recorder.__dict__.update(saved.get("recorder", {}))

    model.train()
    for epoch in range(first_epoch, epochs):
        perm = torch.randperm(n, generator=gen)
        loss_sum = 0.0
        for start in range(0, n, batch_size):
            idx = perm[start : start + batch_size]
            xb = _to_input(augment_batch(pixels[idx], gen), dev)
            loss_sum += proxy_train_step(model, opt, sched, recorder, idx, xb, yt[idx].to(dev))
        recorder.end_epoch()
        checkpoint.save(epoch + 1, model, opt, sched, gen, {"recorder": dict(recorder.__dict__)})
        if progress is not None:
            progress((epoch + 1) / epochs, f"epoch {epoch + 1}/{epochs}, loss {loss_sum / n:.3f}")

    checkpoint.finish()
    return recorder.scores(
        proxy="cnn",
        seconds=round(time.perf_counter() - t0, 2),
        resumed_from_epoch=first_epoch,
        **cfg,
    )
