"""Protocol C: fine-tune the pretrained encoder's last stages on the coreset, as most users do.

A user with a labeled coreset usually fine-tunes a pretrained network rather than training one
from scratch (protocol B) or fitting a linear probe on frozen features (protocol A). Protocol C
fine-tunes the library's offline encoder, EfficientNet-Lite0 with its ImageNet weights:

- frozen: the stem and block stages 0-4 (batch norm in eval mode). Their output (112 x 8 x 8 at
  128 px input) is computed once per image and per mirror image and cached (float16), so a
  fine-tuning run costs only the trainable part;
- trained: block stages 5 and 6, the 1x1 head convolution and its batch norm (all initialised
  from the ImageNet weights, batch norm in train mode) and a new linear classifier;
- augmentation (each an option, recorded with the result): the mirror image with probability
  1/2 (``flip``), and a random translation of the cached 8 x 8 feature map by up to one cell
  (16 input pixels) with edge replication (``shift``);
- schedule fixed in advance for every coreset: ``steps`` SGD steps (Nesterov momentum 0.9) of
  ``batch_size`` images, one-cycle cosine learning rate peaking at ``lr`` for the classifier and
  ``lr * backbone_lr_scale`` for the pretrained layers after 10% of the steps, weight decay 5e-5.

Deterministic for a seed and a thread count; scored on the test split's cached features.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .protocols import ProtocolResult, available_cpus, torch_threads

__all__ = ["FinetuneConfig", "SPLIT_STAGE", "TRUNK_IMAGE_SIZE", "protocol_c", "trunk_features"]

#: Input resolution of the encoder in protocol C (the library's default embedding resolution).
TRUNK_IMAGE_SIZE = 128
#: Block stages before this index are frozen and cached; the rest are fine-tuned.
SPLIT_STAGE = 5


@dataclass(frozen=True)
class FinetuneConfig:
    """Protocol C settings (fixed in advance; the same for every coreset and method)."""

    steps: int = 1000
    batch_size: int = 64
    lr: float = 0.05  # one-cycle peak for the new classifier
    backbone_lr_scale: float = 0.2  # the pretrained layers learn 5x slower
    weight_decay: float = 5e-5
    flip: bool = True
    shift: bool = True
    threads: int = 0  # 0: every available core


def _load_encoder() -> nn.Module:
    from fiftyone_elfs.embeddings.efficientnet_lite import load_efficientnet_lite0

    return load_efficientnet_lite0()


def trunk_features(
    paths: list[str],
    image_size: int = TRUNK_IMAGE_SIZE,
    batch_size: int = 64,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """The frozen trunk's output for every image and its mirror: float16 [N, 2, C, H, W].

    Images are resized to ``image_size`` (bicubic) and scaled to [-1, 1] as the converted
    TensorFlow weights expect; index 1 of axis 1 is the horizontally mirrored image.
    """
    from PIL import Image

    from fiftyone_elfs.embeddings.efficientnet_lite import build_transform
    from fiftyone_elfs.embeddings.upright_rgb import upright_rgb

    model = _load_encoder()
    transform = build_transform(image_size)
    out: np.ndarray | None = None
    with torch.inference_mode():
        for start in range(0, len(paths), batch_size):
            chunk = paths[start : start + batch_size]
            images = []
            for path in chunk:
                with Image.open(path) as img:
                    images.append(transform(upright_rgb(img)))
            x = torch.stack(images)
            x = torch.cat([x, x.flip(3)])
            h = model.bn1(model.conv_stem(x))
            for stage in model.blocks[:SPLIT_STAGE]:
                h = stage(h)
            h = h.reshape(2, len(chunk), *h.shape[1:]).transpose(0, 1)
            if out is None:
                out = np.empty((len(paths), *h.shape[1:]), dtype=np.float16)
            out[start : start + len(chunk)] = h.numpy().astype(np.float16)
            if progress is not None:
                progress(start + len(chunk), len(paths))
    assert out is not None, "no images"
    return out


class _FinetuneNet(nn.Module):
    """Block stages SPLIT_STAGE.. of the pretrained encoder, its head conv and a new classifier."""

    def __init__(self, n_classes: int) -> None:
        super().__init__()
        base = _load_encoder()
        self.stages = nn.Sequential(*base.blocks[SPLIT_STAGE:])
        self.conv_head, self.bn2 = base.conv_head, base.bn2
        self.classifier = nn.Linear(base.classifier.in_features, n_classes)
        for p in self.parameters():
            p.requires_grad_(True)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = self.bn2(self.conv_head(self.stages(h)))
        return self.classifier(h.mean(dim=(2, 3)))


def _shift(h: torch.Tensor, offsets: np.ndarray) -> torch.Tensor:
    """Translates each feature map [B, C, H, W] by (dy, dx) in {-1, 0, 1}, replicating edges."""
    padded = F.pad(h, (1, 1, 1, 1), mode="replicate")
    H, W = h.shape[2:]
    crops = [padded[i, :, 1 + dy : 1 + dy + H, 1 + dx : 1 + dx + W] for i, (dy, dx) in
             enumerate(offsets)]  # fmt: skip
    return torch.stack(crops)


def protocol_c(
    trunk_train: np.ndarray,
    y_train: np.ndarray,
    trunk_test: np.ndarray,
    y_test: np.ndarray,
    n_classes: int,
    seed: int,
    config: FinetuneConfig | None = None,
) -> ProtocolResult:
    """Fine-tunes the encoder's last stages on the coreset; returns its test accuracy.

    ``trunk_*`` come from ``trunk_features`` (the test split's mirror images are not used).
    """
    cfg = config or FinetuneConfig()
    threads = cfg.threads or available_cpus()
    y_train = np.asarray(y_train, dtype=np.int64)
    y_test = np.asarray(y_test, dtype=np.int64)
    n = y_train.size
    if n == 0:
        raise ValueError("protocol C needs a non-empty coreset")
    batch = min(cfg.batch_size, n)
    rng = np.random.default_rng(seed)
    n_epochs = -(-cfg.steps * batch // n)
    order = np.concatenate([rng.permutation(n) for _ in range(n_epochs)])
    feats = torch.from_numpy(np.ascontiguousarray(trunk_train))
    ys = torch.from_numpy(y_train)

    t0 = time.perf_counter()
    with torch_threads(threads), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _FinetuneNet(n_classes)
        head = list(model.classifier.parameters())
        backbone = [p for name, p in model.named_parameters() if not name.startswith("classifier")]
        lrs = [cfg.lr * cfg.backbone_lr_scale, cfg.lr]
        opt = torch.optim.SGD(
            [{"params": backbone, "lr": lrs[0]}, {"params": head, "lr": lrs[1]}],
            momentum=0.9,
            nesterov=True,
            weight_decay=cfg.weight_decay,
        )
        warmup = max(0.1, 2.0 / cfg.steps)  # OneCycleLR needs at least one warm-up step
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=lrs, total_steps=cfg.steps, pct_start=warmup, cycle_momentum=False
        )
        model.train()
        loss_sum = 0.0
        for step in range(cfg.steps):
            idx = order[step * batch : (step + 1) * batch]
            view = rng.integers(0, 2, idx.size) if cfg.flip else np.zeros(idx.size, np.int64)
            h = feats[torch.from_numpy(idx), torch.from_numpy(view)].float()
            if cfg.shift:
                h = _shift(h, rng.integers(-1, 2, size=(idx.size, 2)))
            loss = F.cross_entropy(model(h), ys[torch.from_numpy(idx)])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if step >= cfg.steps - 50:
                loss_sum += float(loss.detach())
        train_seconds = time.perf_counter() - t0
        model.eval()
        correct = 0
        with torch.no_grad():
            for start in range(0, y_test.size, 500):
                h = torch.from_numpy(trunk_test[start : start + 500, 0].astype(np.float32))
                pred = model(h).argmax(dim=1).numpy()
                correct += int((pred == y_test[start : start + 500]).sum())
    accuracy = correct / max(y_test.size, 1)
    info = {
        "n_train": int(n),
        "steps": cfg.steps,
        "batch_size": batch,
        "epochs": round(cfg.steps * batch / n, 2),
        "final_train_loss": round(loss_sum / min(50, cfg.steps), 4),
        "train_seconds": round(train_seconds, 2),
        "threads": threads,
        "flip": cfg.flip,
        "shift": cfg.shift,
    }
    return ProtocolResult(accuracy, time.perf_counter() - t0, info)
