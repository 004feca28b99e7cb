"""Any PIL image as the 8-bit RGB picture a person sees: upright, and 16-bit or float ones scaled.

**Orientation.** A camera or phone often stores a photo sideways and says in its EXIF
orientation tag how to turn it; the App (the browser), FiftyOne's own image reader (OpenCV) and
the annotation tools show it turned, but PIL's ``Image.open`` does not turn it. Embedded
sideways, the same scene in a portrait and a landscape shot lands in different clusters. So the
tag is applied (``ImageOps.exif_transpose``; the fast JPEG path, `jpeg.decode_rgb`, lets
OpenCV apply it, with the same pixels).

**Bit depth.** PIL's ``convert("RGB")`` clips a 16-bit grayscale image (mode ``I;16``: 16-bit
PNGs and TIFFs, common in microscopy, medical and depth data) to 0-255 instead of scaling it, so
every pixel above 255 of 65,535 turns white and the image becomes a near-binary mask; a 32-bit
integer (``I``) or float (``F``) image fares the same. The embeddings, and any model trained on
the pixels, would then see masks and not the pictures the annotators see.

So those modes are scaled into 0-255 first, by the range their values can take:

- ``I;16`` (any byte order): the full 16-bit range, value / 257, as image viewers show it;
- ``I`` and ``F``: the smallest of [0, 1] (``F`` only), [0, 255] and [0, 65,535] that holds
  every finite value (a 16-bit PNG opened by an older PIL is ``I``); values outside all of
  them are stretched from the image's own minimum to its maximum (a constant image becomes
  0). NaN becomes 0.

Every other mode goes through ``convert("RGB")`` as before (an upright RGB image is returned as
is). Images in, images out; no FiftyOne.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

__all__ = ["upright_rgb"]

#: The EXIF orientation tag; 1 (or none) means the pixels are stored upright.
_ORIENTATION_TAG = 0x0112

_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
_HIGH_DEPTH_MODES = _SIXTEEN_BIT_MODES | {"I", "F"}
_UINT16_MAX = 65_535.0


def _high_depth_to_uint8(values: np.ndarray, mode: str) -> np.ndarray:
    """The pixel values of a high-depth grayscale image scaled into uint8 (module docstring)."""
    a = values.astype(np.float64)
    finite = np.isfinite(a)
    a[~finite] = 0.0
    if mode in _SIXTEEN_BIT_MODES:
        scaled = a / 257.0
    else:
        lo = float(a[finite].min()) if finite.any() else 0.0
        hi = float(a[finite].max()) if finite.any() else 0.0
        if lo >= 0.0 and hi <= 1.0 and mode == "F":
            scaled = a * 255.0
        elif lo >= 0.0 and hi <= 255.0:
            scaled = a
        elif lo >= 0.0 and hi <= _UINT16_MAX:
            scaled = a / 257.0
        else:  # a constant image becomes 0
            scaled = (a - lo) * (255.0 / max(hi - lo, 1e-12))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _orientation(img: Image.Image) -> int:
    """The EXIF orientation (1 = upright); 1 as well where the EXIF block cannot be parsed, so a
    damaged tag never costs an otherwise readable image."""
    try:
        return int(img.getexif().get(_ORIENTATION_TAG, 1))
    except Exception:  # noqa: BLE001 - PIL raises several kinds on malformed EXIF
        return 1


def upright_rgb(img: Image.Image) -> Image.Image:
    """`img` as an 8-bit RGB image, turned as its EXIF orientation says; 16-bit, 32-bit integer
    and float grayscale images are scaled, not clipped (see the module docstring)."""
    if _orientation(img) != 1:
        img = ImageOps.exif_transpose(img)
    if img.mode == "RGB":
        return img
    if img.mode in _HIGH_DEPTH_MODES:
        gray = _high_depth_to_uint8(np.asarray(img), img.mode)
        return Image.fromarray(gray).convert("RGB")
    return img.convert("RGB")
