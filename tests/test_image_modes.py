"""16-bit and floating-point images reach the encoder and the CNN proxy scaled, not clipped."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data
from PIL import Image

from fiftyone_elfs.difficulty import load_images
from fiftyone_elfs.embeddings import EfficientNetLite0Encoder, embed_image_files
from fiftyone_elfs.embeddings.image_modes import to_rgb


def _camera_8bit() -> np.ndarray:
    """A real grayscale photo (scikit-image's camera man), 64 x 64, uint8."""
    return np.asarray(Image.fromarray(skimage.data.camera()).resize((64, 64)))


def _channels(img: Image.Image) -> np.ndarray:
    rgb = to_rgb(img)
    assert rgb.mode == "RGB"
    a = np.asarray(rgb)
    assert (a[..., 0] == a[..., 1]).all() and (a[..., 1] == a[..., 2]).all()
    return a[..., 0].astype(int)


def test_sixteen_bit_grayscale_is_scaled_by_its_range_not_clipped():
    gray = _camera_8bit()
    sixteen = Image.fromarray(gray.astype(np.uint16) * 257)  # the same picture at 16 bits
    assert sixteen.mode == "I;16"
    assert (_channels(sixteen) == gray).all()
    # PIL's own conversion turns it into a mask: what this module exists to avoid
    clipped = np.asarray(sixteen.convert("RGB"))[..., 0]
    assert set(np.unique(clipped)) <= {0, 255}


@pytest.mark.parametrize(
    ("values", "mode", "expected"),
    [
        (np.array([[0, 128, 255]], dtype=np.int32), "I", [0, 128, 255]),  # 8-bit range as is
        (np.array([[0, 32896, 65535]], dtype=np.int32), "I", [0, 128, 255]),  # 16-bit range
        (np.array([[-100, 0, 155]], dtype=np.int32), "I", [0, 100, 255]),  # stretched
        (np.array([[0.0, 0.5, 1.0]], dtype=np.float32), "F", [0, 128, 255]),  # unit range
        (np.array([[0.0, np.nan, 255.0]], dtype=np.float32), "F", [0, 0, 255]),  # NaN -> 0
    ],
)
def test_integer_and_float_images_map_onto_0_255(values, mode, expected):
    img = Image.fromarray(values)
    assert img.mode == mode
    assert _channels(img).ravel().tolist() == expected


def test_a_constant_image_outside_every_range_does_not_divide_by_zero():
    img = Image.fromarray(np.full((4, 4), -7, dtype=np.int32))
    assert (_channels(img) == 0).all()


def test_eight_bit_modes_convert_as_pil_does_and_rgb_is_returned_as_is():
    gray = Image.fromarray(_camera_8bit())
    rgb = gray.convert("RGB")
    assert to_rgb(rgb) is rgb
    for mode in ("L", "LA", "RGBA", "P", "1", "CMYK"):
        img = gray.convert(mode)
        assert (np.asarray(to_rgb(img)) == np.asarray(img.convert("RGB"))).all(), mode


@pytest.fixture(scope="module")
def pair_of_files(tmp_path_factory) -> tuple[str, str]:
    """The same photo as an 8-bit and as a 16-bit PNG file."""
    root = tmp_path_factory.mktemp("depth")
    gray = _camera_8bit()
    eight, sixteen = str(root / "eight.png"), str(root / "sixteen.png")
    Image.fromarray(gray).save(eight)
    Image.fromarray(gray.astype(np.uint16) * 257).save(sixteen)
    with Image.open(sixteen) as check:
        assert check.mode == "I;16"
    return eight, sixteen


def test_a_sixteen_bit_file_embeds_like_its_eight_bit_copy(pair_of_files):
    encoder = EfficientNetLite0Encoder(image_size=128, device="cpu")
    X, failures = embed_image_files(list(pair_of_files), encoder)
    assert failures == {}
    np.testing.assert_allclose(X[1], X[0], rtol=1e-5, atol=1e-5)


def test_a_sixteen_bit_file_reaches_the_cnn_proxy_like_its_eight_bit_copy(pair_of_files):
    pixels = load_images(list(pair_of_files), image_size=32, num_workers=0)
    assert (pixels[1] == pixels[0]).all()
    assert len(np.unique(pixels[1])) > 16  # a picture, not a mask
