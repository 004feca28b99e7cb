"""Pool adaptation: an offline EfficientNet-Lite encoder's last stages fine-tuned, without labels,
on the very images it is about to embed.

Why: ELFS's pseudo-labels are only as good as the embeddings they cluster, and ImageNet features
cluster a foreign pool's kinds of images poorly (Lite0 at 128 px: about half of CIFAR-10's
images in a cluster of their own class). Training the network's last stages on the pool with
SimCLR, starting from the shipped weights, needs no network and no labels. Measured on
validation data only (`benchmarks/results/adapted-encoder/README.md`, 300 steps): TEMI's
pseudo-labels 51 -> 61% right on a 10,000-image CIFAR-10 tuning pool, 81 -> 91% on
scikit-learn's digits; the default selection +1.67 over random on the CNN protocol at 90%
pruning against +1.23 without it.

What trains: ``blocks[5]``, ``blocks[6]`` and ``conv_head`` (`TRAINED_MODULES`); the rest of the
network stays frozen, and every batch norm keeps its ImageNet running statistics (the model
stays in eval mode: a batch of 128 cannot estimate them). A projection head
Linear(1280, 512)-ReLU-Linear(512, 128) is trained alongside and dropped. Loss: SimCLR's
NT-Xent (temperature 0.2) between two views per image (`simclr_views`: crop of 20-100% of the
area, flip, colour jitter, grayscale); Adam, 1e-4 for the encoder and 1e-3 for the head.

Cost: a fixed number of optimiser steps of `BATCH_SIZE` images, whatever the pool's size (as
TEMI's schedule is sized in steps). Each step reads only its own batch of files, drawn from a
seeded permutation of the pool that is redrawn after each pass, so memory is one batch's
pixels, not the pool's. 300 steps took 22-40 minutes on 2 CPU cores, before training ran
channels-last (1.5x faster a step on one thread: `benchmarks/scale/adaptation_layout.py`).

The result is the trained modules' state (`AdaptedWeights`), about 10.7 MB for Lite0;
`apply_adapted_weights` loads it into a freshly loaded network before it embeds. No FiftyOne
here: the FiftyOne layer reads the paths, stores the weights (`fiftyone_elfs.adapted_weights`)
and embeds with them.
"""

from __future__ import annotations

import copy
import hashlib
import io
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from fiftyone_elfs.errors import ElfsInputError

#: The modules SimCLR trains (names in timm's EfficientNet); every other one stays frozen.
TRAINED_MODULES = ("blocks.5", "blocks.6", "conv_head")
#: Images per optimiser step (fewer when the pool is smaller).
BATCH_SIZE = 128
TEMPERATURE = 0.2
MIN_CROP_AREA = 0.2
ENCODER_LR, HEAD_LR = 1e-4, 1e-3
PROJECTION_DIMS = (512, 128)
#: The number of steps the measurements above used (the option's suggested value; 0 is off).
SUGGESTED_STEPS = 300
#: How often (at most) the training state is handed out to be stored (`adapt_network`).
CHECKPOINT_SECONDS = 60.0

#: The trained modules' tensors by state-dict name, e.g. "blocks.5.0.conv_pw.weight".
AdaptedWeights = dict[str, torch.Tensor]
#: Reads the images at these pool indices as float [n, 3, S, S] in [0, 1]; unreadable ones are
#: left out, so n may be smaller than the number of indices.
ImageReader = Callable[[np.ndarray], torch.Tensor]
ProgressFn = Callable[[float, str], None]
#: Everything `adapt_network` needs to go on where it stopped (tensors, ints, dicts of them).
AdaptationState = dict[str, Any]


def _is_trained(name: str) -> bool:
    return any(name == m or name.startswith(m + ".") for m in TRAINED_MODULES)


def _pooled_features(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The pooled head features of normalised inputs, with no gradient through the frozen trunk
    (it runs once per batch, the trained stages on its output)."""
    first_trained = int(TRAINED_MODULES[0].split(".")[1])
    with torch.no_grad():
        x = net.bn1(net.conv_stem(x))
        for block in net.blocks[:first_trained]:
            x = block(x)
    for block in net.blocks[first_trained:]:
        x = block(x)
    return net.bn2(net.conv_head(x)).mean(dim=(2, 3))


def adapt_network(
    net: nn.Module,
    read_images: ImageReader,
    n_images: int,
    steps: int,
    seed: int = 0,
    input_mean: Sequence[float] = (0.5, 0.5, 0.5),
    input_std: Sequence[float] = (0.5, 0.5, 0.5),
    batch_size: int = BATCH_SIZE,
    progress: ProgressFn | None = None,
    on_step: Callable[[int, float], None] | None = None,
    on_checkpoint: Callable[[AdaptationState], None] | None = None,
    checkpoint_seconds: float = CHECKPOINT_SECONDS,
    resume: AdaptationState | None = None,
) -> AdaptedWeights:
    """Trains `TRAINED_MODULES` of `net` (a timm EfficientNet-Lite in eval mode, batch norms not
    folded) with SimCLR on a pool of `n_images` read by `read_images`, for `steps` optimiser
    steps; returns their trained state (``net`` itself is trained in place).

    Passes over the pool in a seeded random order, ``min(batch_size, n_images)`` images a step
    (a pass's last partial batch is dropped); the same pool, seed and steps give the same
    weights on the same machine. ``progress(fraction, label)`` and ``on_step(step, loss)``
    after every step.

    Resumable: at most every `checkpoint_seconds` (and never after the last step)
    ``on_checkpoint`` gets the whole training state (`AdaptationState`: the trained modules,
    the head, the optimiser's moments, the random generator, the pass's order and position);
    handed back as `resume`, training goes on from there and ends with the weights an
    uninterrupted run gives.

    Raises ElfsInputError when the pool holds fewer than two readable images (SimCLR contrasts
    an image with the others of its batch).
    """
    from fiftyone_elfs.difficulty.contrastive import nt_xent, simclr_views

    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    batch = min(batch_size, n_images)
    if batch < 2:
        raise ElfsInputError(
            f"Adapting the encoder needs at least 2 images, got {n_images}. Fix: adapt_steps=0."
        )
    if net.training:
        raise ValueError("adapt_network keeps the batch norms' statistics: call net.eval() first")
    device = next(net.parameters()).device
    for name, p in net.named_parameters():
        p.requires_grad_(_is_trained(name))
    # convolutions train about 1.5x faster channels-last on a CPU (measured on 1 thread);
    # `net` is handed back in its usual layout
    net.to(memory_format=torch.channels_last)
    mean = torch.tensor(input_mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(input_std, device=device).view(1, 3, 1, 1)
    with torch.random.fork_rng(devices=[]):  # the head's initialisation, not the caller's RNG
        torch.manual_seed(seed)
        head = nn.Sequential(
            nn.Linear(net.num_features, PROJECTION_DIMS[0]),
            nn.ReLU(inplace=True),
            nn.Linear(*PROJECTION_DIMS),
        ).to(device)
    trained = [p for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(
        [{"params": trained, "lr": ENCODER_LR}, {"params": head.parameters(), "lr": HEAD_LR}]
    )
    generator = torch.Generator().manual_seed(seed)
    step, order, position = 0, None, 0
    if resume is not None:
        apply_adapted_weights(net, resume["net"])
        head.load_state_dict(resume["head"])
        optimizer.load_state_dict(resume["optimizer"])
        generator.set_state(resume["generator"])
        step, position = int(resume["step"]), int(resume["position"])
        order = resume["order"].numpy()
    saved_at = time.monotonic()
    try:
        while step < steps:
            fresh_pass = order is None
            if order is None:
                order, position = torch.randperm(n_images, generator=generator).numpy(), 0
            readable_in_pass, steps_in_pass = 0, 0
            while position + batch <= n_images:
                x = read_images(order[position : position + batch])
                position += batch
                readable_in_pass += len(x)
                if len(x) < 2:
                    continue  # (unreadable files) nothing to contrast
                steps_in_pass += 1
                x = x.to(device)
                views = torch.cat([simclr_views(x, generator, MIN_CROP_AREA) for _ in range(2)])
                views = ((views - mean) / std).contiguous(memory_format=torch.channels_last)
                z = F.normalize(head(_pooled_features(net, views)), dim=1)
                loss = nt_xent(z[: len(x)], z[len(x) :], TEMPERATURE)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                step += 1
                if on_step is not None:
                    on_step(step, float(loss.detach()))
                if progress is not None:
                    progress(step / steps, f"adapting the encoder: step {step}/{steps}")
                if step == steps:
                    break
                if on_checkpoint is not None and time.monotonic() - saved_at >= checkpoint_seconds:
                    on_checkpoint(copy.deepcopy({
                        "step": step, "position": position, "order": torch.from_numpy(order),
                        "net": adapted_weights_of(net), "head": head.state_dict(),
                        "optimizer": optimizer.state_dict(), "generator": generator.get_state(),
                    }))  # fmt: skip
                    saved_at = time.monotonic()
            if fresh_pass and not steps_in_pass:  # a pass without 2 readable images a batch
                raise ElfsInputError(
                    f"Adapting the encoder needs batches of at least 2 readable images; "
                    f"{readable_in_pass} of the {n_images} could be read. Fix: check the "
                    "samples' filepaths, or pass adapt_steps=0."
                )
            order = None
    finally:
        for p in net.parameters():
            p.requires_grad_(False)
        net.to(memory_format=torch.contiguous_format)
    return adapted_weights_of(net)


def adapted_weights_of(net: nn.Module) -> AdaptedWeights:
    """The state of `TRAINED_MODULES` of `net` (parameters and batch-norm buffers), detached
    copies on the CPU, in the usual (contiguous) layout."""
    return {
        name: t.detach().cpu().clone(memory_format=torch.contiguous_format)
        for name, t in net.state_dict().items()
        if _is_trained(name)
    }


def apply_adapted_weights(net: nn.Module, weights: Mapping[str, torch.Tensor]) -> None:
    """Loads adapted weights into `net` (same variant, batch norms not folded yet), in place;
    refuses weights that do not cover exactly `TRAINED_MODULES` of this network."""
    expected = {name for name in net.state_dict() if _is_trained(name)}
    if set(weights) != expected:
        raise ValueError(
            "These adapted weights do not fit this network: "
            f"{len(set(weights) - expected)} unknown and {len(expected - set(weights))} missing "
            "tensors (adapted for another encoder?)"
        )
    net.load_state_dict(dict(weights), strict=False)


def weights_to_bytes(weights: Mapping[str, Any]) -> bytes:
    """Weights (or an `AdaptationState`) serialised in torch's format, loadable with
    ``weights_only=True``."""
    buffer = io.BytesIO()
    torch.save(dict(sorted(weights.items())), buffer)
    return buffer.getvalue()


def weights_from_bytes(data: bytes) -> dict[str, Any]:
    """`weights_to_bytes` reversed (tensors and plain values only: no code is unpickled)."""
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def weights_digest(weights: Mapping[str, torch.Tensor]) -> str:
    """A short hash of the weights' values (recorded with the run: which weights embedded it)."""
    digest = hashlib.sha256()
    for name, t in sorted(weights.items()):
        digest.update(name.encode())
        digest.update(t.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def file_reader(
    paths: Sequence[str], image_size: int, device: torch.device | None = None
) -> ImageReader:
    """An `ImageReader` of image files: each decoded as the encoders decode files (upright RGB)
    and resized bicubic to `image_size`, as the EfficientNet-Lite transform does."""
    from fiftyone_elfs.embeddings.encoders import read_image

    def to_square(image: Image.Image) -> np.ndarray:
        return np.asarray(image.resize((image_size, image_size), Image.BICUBIC))

    at_least = (2 * image_size, 2 * image_size)  # (a large JPEG decoded smaller, as to embed)

    def read(indices: np.ndarray) -> torch.Tensor:
        arrays = [read_image(paths[int(i)], to_square, False, at_least)[0] for i in indices]
        arrays = [a for a in arrays if a is not None]
        if not arrays:
            return torch.empty(0, 3, image_size, image_size)
        x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float().div_(255.0)
        return x if device is None else x.to(device)

    return read


def adapt_encoder_to_images(
    model: str,
    paths: Sequence[str],
    image_size: int,
    steps: int,
    seed: int = 0,
    progress: ProgressFn | None = None,
    device: str | torch.device | None = None,
    batch_size: int = BATCH_SIZE,
    on_checkpoint: Callable[[AdaptationState], None] | None = None,
    resume: AdaptationState | None = None,
) -> AdaptedWeights:
    """`adapt_network` for the offline encoder `model` (a name of
    `encoders.OFFLINE_ENCODERS`) on the image files `paths`, at `image_size` px: the weights
    `encoders.load_encoder(model, adapted_weights=...)` embeds with."""
    from fiftyone_elfs.embeddings import efficientnet_lite
    from fiftyone_elfs.embeddings.encoders import OFFLINE_ENCODERS, resolve_device

    if model not in OFFLINE_ENCODERS:
        raise ValueError(f"pool adaptation needs one of {sorted(OFFLINE_ENCODERS)}, got {model!r}")
    device = resolve_device(device)
    net = efficientnet_lite.load_efficientnet_lite(OFFLINE_ENCODERS[model].variant).to(device)
    return adapt_network(
        net,
        file_reader(paths, image_size, device),
        len(paths),
        steps,
        seed,
        efficientnet_lite.INPUT_MEAN,
        efficientnet_lite.INPUT_STD,
        batch_size,
        progress,
        on_checkpoint=on_checkpoint,
        checkpoint_seconds=CHECKPOINT_SECONDS,
        resume=resume,
    )
