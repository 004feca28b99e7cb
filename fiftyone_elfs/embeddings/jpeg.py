"""Fast decoding of ordinary JPEG files, with exactly PIL's pixels.

Why: decoding is most of what the embedding loop does outside the encoder. For a 32 px CIFAR
JPEG, PIL takes about 0.19 ms (0.07 of it parsing the header in Python) and OpenCV's
`cv2.imdecode` 0.03-0.04 ms, both with libjpeg-turbo at its default settings, so the pixels are
the same: checked on photos saved with 4:4:4, 4:2:2 and 4:2:0 chroma, progressive, optimised
and grayscale (`tests/test_jpeg.py`), and on 3,072 CIFAR-10 files, whose embeddings came out
bit-identical (`benchmarks/scale/embed_speedups.py --only decode`). OpenCV is a dependency of
FiftyOne (`opencv-python-headless`).

Only files whose result cannot differ from PIL's take this path (`decode_rgb` returns None for
the rest, and the caller decodes them with PIL as before):

- a JPEG of 8-bit samples with 1 (grayscale) or 3 (YCbCr or RGB) components, Huffman-coded
  (baseline, extended or progressive): no CMYK, where PIL and OpenCV convert differently;
- that ends with the end-of-image marker: OpenCV returns a truncated file's top part with a
  grey rest, where PIL raises, so a truncated or padded file goes to PIL;
- no larger than PIL's decompression-bomb limit, which PIL then enforces as before.

The EXIF orientation is applied by OpenCV, as `upright_rgb` applies it to PIL's pixels
(``ImageOps.exif_transpose``): the same pixels for all eight orientations (`tests/test_jpeg.py`).

Large photos: a caller that shrinks every image to a fixed size can ask for a reduced decode
(`decode_rgb(at_least=...)`): libjpeg then decodes directly at 1/2, 1/4 or 1/8 of the size,
several times faster than the full decode and resize; those pixels are a downscale of PIL's, no
longer equal to them.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
from PIL import Image

#: Start-of-frame markers of Huffman-coded JPEGs: baseline, extended sequential, progressive.
_HUFFMAN_FRAMES = frozenset({0xC0, 0xC1, 0xC2})
#: Every other start-of-frame marker (lossless, hierarchical, arithmetic-coded).
_OTHER_FRAMES = frozenset(range(0xC3, 0xD0)) - {0xC4, 0xC8, 0xCC}
#: Markers without a length field: TEM and the restart markers RST0-RST7.
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})
_START_OF_SCAN = 0xDA


@functools.cache
def _opencv() -> Any | None:
    """The cv2 module, or None where OpenCV is not installed."""
    try:
        import cv2
    except ImportError:
        return None
    return cv2


def frame_header(data: bytes) -> tuple[int, int, int, int, int] | None:
    """(frame marker, sample precision, height, width, components) of a JPEG file's frame
    header, or None when `data` does not start like a JPEG or has no frame header before its
    first scan. Reads the segment headers only (a few per file), never the image data."""
    if not data.startswith(b"\xff\xd8"):
        return None
    pos, n = 2, len(data)
    while pos + 4 <= n:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _STANDALONE:
            pos += 2
            continue
        if marker == _START_OF_SCAN:
            return None
        if marker in _HUFFMAN_FRAMES or marker in _OTHER_FRAMES:
            if pos + 10 > n:
                return None
            height = int.from_bytes(data[pos + 5 : pos + 7], "big")
            width = int.from_bytes(data[pos + 7 : pos + 9], "big")
            return marker, data[pos + 4], height, width, data[pos + 9]
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    return None


#: libjpeg's DCT-domain downscales: decoding at 1/2, 1/4 or 1/8 of the size (`reduction`).
REDUCTIONS = (2, 4, 8)
#: A JPEG is decoded at a reduced size only down to this many times the size it is shrunk to
#: next, so that the antialiased resize still does the last 2x or more of the reduction:
#: measured on photos of 600 to 4,000 px, embeddings within cosine 0.996 of the full decode's
#: at 2x (`benchmarks/scale/large_photos.py`), down to 0.975 at 1x in a first probe.
REDUCED_DECODE_MARGIN = 2


def reduction(height: int, width: int, at_least: tuple[int, int] | None) -> int:
    """The largest of `REDUCTIONS` (else 1) at which an image of `height` x `width` decodes to
    at least `at_least` = (height, width) pixels (libjpeg rounds the reduced sides up)."""
    if at_least is None:
        return 1
    fits = [
        s for s in REDUCTIONS if -(-height // s) >= at_least[0] and -(-width // s) >= at_least[1]
    ]
    return max(fits, default=1)


def decode_rgb(data: bytes, at_least: tuple[int, int] | None = None) -> np.ndarray | None:
    """The RGB pixels, uint8 [H, W, 3], upright, of a JPEG file's bytes that OpenCV decodes
    exactly as PIL's `Image.open(...)` and `upright_rgb` would (see the module docstring); None
    for any other file, or where OpenCV is missing or fails, for the caller to decode with PIL.

    `at_least` (height, width): the caller will shrink the image to a fixed size anyway, so a
    photo that is at least twice that size on a side is decoded directly at 1/2, 1/4 or 1/8 of
    its size (`reduction`: libjpeg's scaled inverse DCT, OpenCV's ``IMREAD_REDUCED_COLOR_*``),
    never below `at_least`. Then the pixels are no longer PIL's full decode but a downscale of
    it. Why: a photo's full decode and resize took about 3x the encoder's own time per image at
    400 px and over 100x at 4,000 px on a CPU here (`benchmarks/scale/large_photos.py`).
    """
    header = frame_header(data)
    if header is None or not data.endswith(b"\xff\xd9"):
        return None
    marker, precision, height, width, components = header
    if marker not in _HUFFMAN_FRAMES or precision != 8 or components not in (1, 3):
        return None
    limit = Image.MAX_IMAGE_PIXELS
    if height < 1 or width < 1 or (limit is not None and height * width > limit):
        return None
    cv2 = _opencv()
    if cv2 is None:
        return None
    scale = reduction(height, width, at_least)
    colour = cv2.IMREAD_COLOR if scale == 1 else getattr(cv2, f"IMREAD_REDUCED_COLOR_{scale}")
    bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), colour)  # EXIF orientation applied
    rows, cols = -(-height // scale), -(-width // scale)
    if bgr is None or bgr.shape not in ((rows, cols, 3), (cols, rows, 3)):  # turned a quarter
        return None
    return bgr[:, :, ::-1]
