"""JPEG photos of ordinary sizes for the decoding benchmarks (`large_photos.py`, `gpu_check.py`).

No image set of camera-sized photos ships with this project's dependencies, so these are random
crops of scikit-image's sample photos (at most 1,411 px), resized to the wanted long side and
saved as quality-90 JPEGs. Sizes above the sources' are upsampled: smoother than camera photos.
"""

from __future__ import annotations

import io

import numpy as np

#: scikit-image's sample photos used as sources (those that fail to load are skipped: some
#: scikit-image versions download a few of them).
SOURCES = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "retina", "coins")


def photo_jpegs(n: int, long_side: int, seed: int, square: bool = False) -> list[bytes]:
    """JPEG bytes of `n` random crops (50-100% of each side; of the short side, both sides
    alike, when `square`, as CIFAR-10's images are) of the sample photos, in turn, resized
    (bicubic) to `long_side` px on their long side."""
    import skimage.data
    from PIL import Image

    sources = []
    for name in SOURCES:
        try:
            sources.append(Image.fromarray(getattr(skimage.data, name)()).convert("RGB"))
        except Exception:  # noqa: BLE001 - a sample this scikit-image cannot give offline
            continue
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        image = sources[i % len(sources)]
        w, h = image.size
        cw, ch = int(w * rng.uniform(0.5, 1.0)), int(h * rng.uniform(0.5, 1.0))
        if square:
            cw = ch = min(cw, ch)
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        crop = image.crop((x, y, x + cw, y + ch))
        scale = long_side / max(crop.size)
        size = (max(1, round(cw * scale)), max(1, round(ch * scale)))
        buffer = io.BytesIO()
        crop.resize(size, Image.BICUBIC).save(buffer, format="JPEG", quality=90)
        out.append(buffer.getvalue())
    return out
