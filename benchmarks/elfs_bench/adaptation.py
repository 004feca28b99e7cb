"""The offline encoder adapted to an unlabeled pool by SimCLR (an issue-13 lever; benchmark only).

EfficientNet-Lite0 starts from its shipped ImageNet weights; ``blocks[5]``, ``blocks[6]`` and
``conv_head`` are fine-tuned with SimCLR's NT-Xent on the pool's own pixels (no labels), the rest
frozen, every batch norm on its ImageNet statistics (a batch of 128 cannot shift them). A
projection head Linear(1280, 512)-ReLU-Linear(512, 128) is trained alongside and dropped: the
features are the encoder's pooled 1280-d output of the un-augmented images, as
``efficientnet-lite0`` embeds them. Views: the package's ``simclr_views`` (crop area 0.2-1, flip,
colour jitter, grayscale) at 128 px. Settings fixed on 2026-12-07 before any run, except the
schedule, set in optimiser steps after the first (``benchmarks/results/adapted-encoder/``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from . import data
from .data import _log, _paths_key, _save_npy

TRAINED_STAGES = (5, 6)  # blocks[5], blocks[6]; conv_head too
#: What the adaptation trains, as the rows record it
TRAINED = ", ".join(f"blocks[{i}]" for i in TRAINED_STAGES) + ", conv_head"
IMAGE_SIZE = 128
BATCH = 128
TEMPERATURE = 0.2
MIN_CROP_AREA = 0.2
ENCODER_LR, HEAD_LR = 1e-4, 1e-3
#: Optimiser steps (of BATCH images): 300, about the 12 epochs of a 3,000-image pool (276 steps)
#: that lifted 10-NN agreement from 55% to 63% and k-means from 44% to 58% there; set after
#: that first run (``benchmarks/results/adapted-encoder/README.md``).
DEFAULT_STEPS = 300


def load_pixels(paths: list[str], size: int = IMAGE_SIZE) -> torch.Tensor:
    """Every image as float [N, 3, size, size] in [0, 1], decoded as the harness decodes images
    (`data.load_pixels`) and resized bicubic, as the encoder's own transform does."""
    pixels = data.load_pixels(paths, size, resample=Image.BICUBIC)
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).float().div_(255.0)


class AdaptedLite(nn.Module):
    """Lite0 split at ``blocks[5]``: a frozen trunk run without gradients, the trained rest."""

    def __init__(self) -> None:
        from fiftyone_elfs.embeddings.efficientnet_lite import (
            INPUT_MEAN,
            INPUT_STD,
            load_efficientnet_lite,
        )

        super().__init__()
        self.net = load_efficientnet_lite("lite0")  # eval mode, every parameter frozen
        for i in TRAINED_STAGES:
            for p in self.net.blocks[i].parameters():
                p.requires_grad_(True)
        for p in self.net.conv_head.parameters():
            p.requires_grad_(True)
        self.register_buffer("mean", torch.tensor(INPUT_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(INPUT_STD).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled 1280-d features of images in [0, 1]."""
        net = self.net
        x = (x - self.mean) / self.std
        with torch.no_grad():
            x = net.bn1(net.conv_stem(x))
            for i in range(TRAINED_STAGES[0]):
                x = net.blocks[i](x)
        for i in TRAINED_STAGES:
            x = net.blocks[i](x)
        x = net.bn2(net.conv_head(x))
        return x.mean(dim=(2, 3))


def embed(model: AdaptedLite, pixels: torch.Tensor, batch: int = 256) -> np.ndarray:
    """The model's features of un-augmented images, float32 [N, 1280]."""
    with torch.no_grad():
        parts = [model(pixels[i : i + batch]) for i in range(0, len(pixels), batch)]
    return torch.cat(parts).numpy().astype(np.float32)


def adapt(
    pixels: torch.Tensor,
    steps: int = DEFAULT_STEPS,
    seed: int = 0,
    on_steps: Callable[[int, float, AdaptedLite], None] | None = None,
    every: int = 50,
) -> AdaptedLite:
    """SimCLR fine-tuning of Lite0's last stages on ``pixels`` for ``steps`` optimiser steps of
    ``BATCH`` images (epochs of full batches, the last one cut short); ``on_steps(step, mean
    loss since the last call, model)`` every ``every`` steps and after the last.

    A fixed number of steps, not epochs: the cost does not grow with the pool (a 1.28M-image
    pool trains as long as a 3,000-image one), as TEMI's schedule is sized in steps."""
    from fiftyone_elfs.difficulty.contrastive import nt_xent, simclr_views

    if len(pixels) < BATCH:
        raise ValueError(f"adaptation needs at least {BATCH} images, got {len(pixels)}")
    torch.manual_seed(seed)
    model = AdaptedLite()
    head = nn.Sequential(nn.Linear(1280, 512), nn.ReLU(inplace=True), nn.Linear(512, 128))
    trained = [q for q in model.parameters() if q.requires_grad]
    optimizer = torch.optim.Adam(
        [{"params": trained, "lr": ENCODER_LR}, {"params": head.parameters(), "lr": HEAD_LR}]
    )
    generator = torch.Generator().manual_seed(seed)
    step, losses, t = 0, [], time.time()
    while step < steps:
        order = torch.randperm(len(pixels), generator=generator)
        for start in range(0, len(order) - BATCH + 1, BATCH):
            x = pixels[order[start : start + BATCH]]
            views = [simclr_views(x, generator, MIN_CROP_AREA) for _ in range(2)]
            z = F.normalize(head(model(torch.cat(views))), dim=1)
            loss = nt_xent(z[:BATCH], z[BATCH:], TEMPERATURE)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            step += 1
            if step % every == 0 or step == steps:
                _log(f"adaptation step {step}/{steps}: loss {np.mean(losses):.3f}, "
                     f"{time.time() - t:.0f} s")  # fmt: skip
                if on_steps is not None:
                    on_steps(step, float(np.mean(losses)), model)
                losses, t = [], time.time()
            if step == steps:
                break
    return model


def cached_adapted_embeddings(
    paths: list[str], cache_dir: str, steps: int = DEFAULT_STEPS, seed: int = 0
) -> np.ndarray:
    """The adapted encoder's features of ``paths`` after it trained on those same images, from
    ``cache_dir/features`` or computed once."""
    folder = os.path.join(cache_dir, "features")
    os.makedirs(folder, exist_ok=True)
    key = _paths_key(paths, "adapted-lite0", steps, seed, TRAINED_STAGES, BATCH, TEMPERATURE)
    path = os.path.join(folder, f"emb-adapted-lite0-{steps}steps-s{seed}-{key}.npy")
    if os.path.exists(path):
        return np.load(path)
    t0 = time.perf_counter()
    pixels = load_pixels(paths)
    X = embed(adapt(pixels, steps, seed), pixels)
    _save_npy(path, X)
    _log(f"adapted encoder on {len(paths)} images in {time.perf_counter() - t0:.0f} s")
    return X
