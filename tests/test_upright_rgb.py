"""Images reach the encoder and the CNN proxy as people see them: 16-bit and floating-point ones
scaled, not clipped; photos stored sideways turned by their EXIF orientation."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data
from PIL import Image

from fiftyone_elfs.difficulty import load_images
from fiftyone_elfs.embeddings import EfficientNetLite0Encoder, embed_image_files
from fiftyone_elfs.embeddings.upright_rgb import upright_rgb


def _camera_8bit() -> np.ndarray:
    """A real grayscale photo (scikit-image's camera man), 64 x 64, uint8."""
    return np.asarray(Image.fromarray(skimage.data.camera()).resize((64, 64)))


def _channels(img: Image.Image) -> np.ndarray:
    rgb = upright_rgb(img)
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
    assert upright_rgb(rgb) is rgb
    for mode in ("L", "LA", "RGBA", "P", "1", "CMYK"):
        img = gray.convert(mode)
        assert (np.asarray(upright_rgb(img)) == np.asarray(img.convert("RGB"))).all(), mode


@pytest.fixture(scope="module")
def same_photo_files(tmp_path_factory) -> list[str]:
    """The same photo as PNG files: 8-bit upright, 16-bit, and 8-bit stored sideways with the
    EXIF orientation (6: turn 90 degrees clockwise to display) that turns it back."""
    root = tmp_path_factory.mktemp("same-photo")
    gray = _camera_8bit()[:, :48]  # not square, so a wrong turn changes the shape
    paths = [str(root / name) for name in ("upright.png", "sixteen.png", "sideways.png")]
    Image.fromarray(gray).save(paths[0])
    Image.fromarray(gray.astype(np.uint16) * 257).save(paths[1])
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(gray).transpose(Image.Transpose.ROTATE_90).save(paths[2], exif=exif.tobytes())
    with Image.open(paths[1]) as sixteen, Image.open(paths[2]) as sideways:
        assert sixteen.mode == "I;16"
        assert sideways.size == (64, 48) and sideways.getexif()[0x0112] == 6
    return paths


def test_sixteen_bit_and_sideways_files_embed_like_the_upright_eight_bit_one(same_photo_files):
    encoder = EfficientNetLite0Encoder(image_size=128, device="cpu")
    X, failures = embed_image_files(same_photo_files, encoder)
    assert failures == {}
    np.testing.assert_allclose(X[1], X[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(X[2], X[0], rtol=1e-5, atol=1e-5)


def test_sixteen_bit_and_sideways_files_reach_the_cnn_proxy_like_the_upright_one(
    same_photo_files,
):
    pixels = load_images(same_photo_files, image_size=32, num_workers=0)
    assert (pixels[1] == pixels[0]).all()
    assert (pixels[2] == pixels[0]).all()
    assert len(np.unique(pixels[1])) > 16  # a picture, not a mask
