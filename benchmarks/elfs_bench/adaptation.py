"""The offline encoder adapted to an unlabeled pool by SimCLR (an issue-13 lever), for the harness.

The training is the package's (`fiftyone_elfs.embeddings.pool_adaptation`, what
``compute_embeddings(adapt_steps=...)`` runs): Lite0's ``blocks[5]``, ``blocks[6]`` and
``conv_head`` fine-tuned from the shipped weights, batch norms on their ImageNet statistics, the
package's ``simclr_views`` at 128 px. Here the pool's pixels are decoded once and held in memory
(the package reads each step's files instead), and the features are the encoder's pooled 1280-d
output of the un-augmented images, as ``efficientnet-lite0`` embeds them.

History: the rows of 2026-12-07 in ``benchmarks/results/adapted-encoder/`` were made by this
module's own copy of the training (commit f51dc63), whose projection head drew its initial
weights after the network's random initialisation; the package draws them from the seed alone.
The cache key names the implementation, so those rows' cached features are never mixed with
the package's.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image

from fiftyone_elfs.embeddings import efficientnet_lite, pool_adaptation
from fiftyone_elfs.embeddings.encoders import EfficientNetLiteEncoder

from . import data
from .data import _log, _paths_key, _save_npy

#: What the adaptation trains, as the rows record it ("blocks[5], blocks[6], conv_head")
TRAINED = ", ".join(
    m.replace(".", "[") + "]" if m.startswith("blocks.") else m
    for m in pool_adaptation.TRAINED_MODULES
)
IMAGE_SIZE = 128
BATCH = pool_adaptation.BATCH_SIZE
#: Optimiser steps: 300, about the 12 epochs of a 3,000-image pool (276 steps) that lifted 10-NN
#: agreement from 55% to 63% and k-means from 44% to 58% there (`SUGGESTED_STEPS`).
DEFAULT_STEPS = pool_adaptation.SUGGESTED_STEPS
#: Part of the cache key: which implementation trained the cached features. Kept at "package"
#: when the package's training went channels-last (2026-12-07; the same steps, floats summed in
#: another order): the features cached before, of the held-out CIFAR-10 and cifar7-lt5 pools,
#: stay those their committed rows were selected on, and pools adapted since train channels-last.
IMPLEMENTATION = "package"

Weights = pool_adaptation.AdaptedWeights


def load_pixels(paths: list[str], size: int = IMAGE_SIZE) -> torch.Tensor:
    """Every image as float [N, 3, size, size] in [0, 1], decoded as the harness decodes images
    (`data.load_pixels`) and resized bicubic, as the encoder's own transform does."""
    pixels = data.load_pixels(paths, size, resample=Image.BICUBIC)
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).float().div_(255.0)


def embed(weights: Weights | None, pixels: torch.Tensor, batch: int = 256) -> np.ndarray:
    """Features of un-augmented images in [0, 1] by Lite0 with `weights` (None: as shipped),
    float32 [N, 1280]."""
    encoder = EfficientNetLiteEncoder(
        "efficientnet-lite0", image_size=pixels.shape[-1], adapted_weights=weights
    )
    mean = torch.tensor(efficientnet_lite.INPUT_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(efficientnet_lite.INPUT_STD).view(1, 3, 1, 1)
    parts = [
        encoder.embed_batch((pixels[i : i + batch] - mean) / std)
        for i in range(0, len(pixels), batch)
    ]
    return np.concatenate(parts).astype(np.float32)


def adapt(
    pixels: torch.Tensor,
    steps: int = DEFAULT_STEPS,
    seed: int = 0,
    on_steps: Callable[[int, float, Weights], None] | None = None,
    every: int = 50,
) -> Weights:
    """The package's SimCLR adaptation of Lite0 on `pixels` for `steps` optimiser steps;
    ``on_steps(step, mean loss since the last call, weights so far)`` every `every` steps and
    after the last. Returns the adapted weights."""
    if len(pixels) < BATCH:
        raise ValueError(f"adaptation needs at least {BATCH} images, got {len(pixels)}")
    net = efficientnet_lite.load_efficientnet_lite("lite0")
    losses: list[float] = []
    t = [time.time()]

    def on_step(step: int, loss: float) -> None:
        losses.append(loss)
        if step % every == 0 or step == steps:
            _log(f"adaptation step {step}/{steps}: loss {np.mean(losses):.3f}, "
                 f"{time.time() - t[0]:.0f} s")  # fmt: skip
            if on_steps is not None:
                on_steps(step, float(np.mean(losses)), pool_adaptation.adapted_weights_of(net))
            losses.clear()
            t[0] = time.time()

    def read(indices: np.ndarray) -> torch.Tensor:
        return pixels[torch.from_numpy(indices)]

    return pool_adaptation.adapt_network(
        net, read, len(pixels), steps, seed, on_step=on_step, batch_size=BATCH
    )


def cached_adapted_embeddings(
    paths: list[str], cache_dir: str, steps: int = DEFAULT_STEPS, seed: int = 0
) -> np.ndarray:
    """The adapted encoder's features of ``paths`` after it trained on those same images, from
    ``cache_dir/features`` or computed once."""
    folder = os.path.join(cache_dir, "features")
    os.makedirs(folder, exist_ok=True)
    key = _paths_key(
        paths,
        "adapted-lite0",
        steps,
        seed,
        pool_adaptation.TRAINED_MODULES,
        BATCH,
        pool_adaptation.TEMPERATURE,
        IMPLEMENTATION,
    )
    path = os.path.join(folder, f"emb-adapted-lite0-{steps}steps-s{seed}-{key}.npy")
    if os.path.exists(path):
        return np.load(path)
    t0 = time.perf_counter()
    pixels = load_pixels(paths)
    X = embed(adapt(pixels, steps, seed), pixels)
    _save_npy(path, X)
    _log(f"adapted encoder on {len(paths)} images in {time.perf_counter() - t0:.0f} s")
    return X
