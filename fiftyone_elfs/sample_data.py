"""Real images that exist on any machine: scikit-learn's digit scans written as image files.

Used by the main job when no other data is at hand, and by the tests on machines without
../shared. Nothing is downloaded: the 1,797 8x8 scans ship inside scikit-learn.
"""

from __future__ import annotations

import os

import numpy as np

_COMPLETE = ".complete"


def write_digit_images(folder: str, per_class: int | None = None) -> str:
    """Writes the digit scans as grey PNGs in class subfolders (``folder/<digit>/<index>.png``).

    ``per_class`` keeps only the first that many of each digit (all 1,797 when None). Idempotent:
    a folder already completed for the same request is returned as it is.
    """
    from PIL import Image
    from sklearn.datasets import load_digits

    marker = os.path.join(folder, _COMPLETE)
    request = f"per_class={per_class}"
    if os.path.exists(marker) and open(marker).read() == request:
        return folder
    digits = load_digits()
    counts: dict[int, int] = {}
    for i, (image, label) in enumerate(zip(digits.images, digits.target, strict=True)):
        label = int(label)
        if per_class is not None and counts.get(label, 0) >= per_class:
            continue
        counts[label] = counts.get(label, 0) + 1
        os.makedirs(os.path.join(folder, str(label)), exist_ok=True)
        pixels = (image * (255.0 / 16.0)).round().astype(np.uint8)
        Image.fromarray(pixels, mode="L").save(os.path.join(folder, str(label), f"{i:04d}.png"))
    with open(marker, "w") as f:
        f.write(request)
    return folder
