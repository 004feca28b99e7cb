"""The fast JPEG path (`fiftyone_elfs.embeddings.jpeg`): PIL's pixels exactly, or no answer;
and large photos decoded at a reduced size, never below twice the encoder's input."""

from __future__ import annotations

import io

import numpy as np
import pytest
import skimage.data
from PIL import Image

from fiftyone_elfs.embeddings import jpeg
from fiftyone_elfs.embeddings.encoders import embed_image_files, load_encoder
from fiftyone_elfs.embeddings.upright_rgb import upright_rgb


def _jpeg_bytes(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", **options)
    return buffer.getvalue()


def _pil_rgb(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"))


def _photos() -> dict[str, Image.Image]:
    rng = np.random.default_rng(0)
    return {
        "astronaut": Image.fromarray(skimage.data.astronaut()),
        "coffee, odd size": Image.fromarray(skimage.data.coffee()).resize((101, 77)),
        "grayscale": Image.fromarray(skimage.data.camera()),
        "noise": Image.fromarray(rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)),
        "one pixel": Image.new("RGB", (1, 1), (200, 10, 90)),
    }


_OPTIONS = {
    "default": {},
    "4:4:4": {"subsampling": 0, "quality": 75},
    "4:2:2": {"subsampling": 1, "quality": 75},
    "4:2:0": {"subsampling": 2, "quality": 75},
    "progressive": {"progressive": True, "quality": 85},
    "optimised": {"optimize": True, "quality": 95},
}


@pytest.mark.parametrize("options", list(_OPTIONS.values()), ids=list(_OPTIONS))
def test_decoded_pixels_are_pils_bit_for_bit(options):
    """Every ordinary JPEG kind decodes to exactly the array PIL's convert("RGB") gives, in
    RGB order, grayscale spread over three channels."""
    for name, image in _photos().items():
        data = _jpeg_bytes(image, **options)
        pixels = jpeg.decode_rgb(data)
        assert pixels is not None, name
        assert pixels.dtype == np.uint8
        np.testing.assert_array_equal(pixels, _pil_rgb(data), err_msg=name)


def _with_orientation(image: Image.Image, orientation: int, **options) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _jpeg_bytes(image, exif=exif.tobytes(), **options)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_as_upright_rgb_applies_it(orientation):
    """A camera's EXIF orientation turns the pixels (as the App shows them): the fast path gives
    exactly PIL's pixels turned by `upright_rgb`, at full and at reduced size."""
    image = Image.fromarray(skimage.data.coffee()).resize((64, 40))
    data = _with_orientation(image, orientation)
    pixels = jpeg.decode_rgb(data)
    turned = orientation >= 5  # 5-8 swap width and height
    assert pixels is not None and pixels.shape == ((64, 40, 3) if turned else (40, 64, 3))
    with Image.open(io.BytesIO(data)) as img:
        upright = np.asarray(upright_rgb(img))
    np.testing.assert_array_equal(pixels, upright)
    if orientation != 1:
        assert not np.array_equal(np.asarray(upright), _pil_rgb(data)[: upright.shape[0]])
    reduced = jpeg.decode_rgb(data, at_least=(5, 5))  # 1/8: 40 x 64 -> 5 x 8
    assert reduced is not None and reduced.shape == ((8, 5, 3) if turned else (5, 8, 3))


def test_frame_header_reads_kind_size_and_components():
    image = Image.fromarray(skimage.data.astronaut()).resize((70, 30))
    assert jpeg.frame_header(_jpeg_bytes(image)) == (0xC0, 8, 30, 70, 3)
    assert jpeg.frame_header(_jpeg_bytes(image, progressive=True)) == (0xC2, 8, 30, 70, 3)
    assert jpeg.frame_header(_jpeg_bytes(image.convert("L"))) == (0xC0, 8, 30, 70, 1)
    assert jpeg.frame_header(_jpeg_bytes(image.convert("CMYK")))[4] == 4
    assert jpeg.frame_header(b"\x89PNG\r\n\x1a\n") is None
    assert jpeg.frame_header(b"") is None


def test_files_pil_would_treat_differently_get_no_answer(monkeypatch):
    """CMYK, truncated files, data after the end marker, other formats and images over PIL's
    decompression-bomb limit are left to PIL (None), as is everything when OpenCV is missing."""
    image = Image.fromarray(skimage.data.astronaut()).resize((48, 32))
    good = _jpeg_bytes(image)
    png = io.BytesIO()
    image.save(png, "PNG")
    for name, data in {
        "CMYK": _jpeg_bytes(image.convert("CMYK")),
        "truncated": good[: len(good) // 2],
        "data after the end marker": good + b"trailing bytes",
        "PNG": png.getvalue(),
        "not an image": b"hello",
    }.items():
        assert jpeg.decode_rgb(data) is None, name
    assert jpeg.decode_rgb(good) is not None
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 48 * 32 - 1)
    assert jpeg.decode_rgb(good) is None
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 48 * 32)
    assert jpeg.decode_rgb(good) is not None
    monkeypatch.setattr(jpeg, "_opencv", lambda: None)
    assert jpeg.decode_rgb(good) is None


def test_embeddings_are_the_same_with_and_without_the_fast_path(tmp_path, monkeypatch):
    """The embedding loop gives identical vectors and failure reasons whether JPEGs are decoded
    by OpenCV or by PIL, for JPEGs of every kind mixed with EXIF-turned JPEGs, a PNG, a CMYK
    JPEG, a truncated JPEG and a missing file, through the batched and the per-image
    preprocessing."""
    paths = []
    for k, image in enumerate(_photos().values()):
        for kind, options in _OPTIONS.items():
            paths.append(str(tmp_path / f"{k}-{kind}.jpg"))
            image.save(paths[-1], "JPEG", **options)
    image = Image.fromarray(skimage.data.chelsea()).resize((40, 30))
    for orientation in (3, 6):  # a phone photo stored upside down or sideways
        paths.append(str(tmp_path / f"turned-{orientation}.jpg"))
        (tmp_path / f"turned-{orientation}.jpg").write_bytes(_with_orientation(image, orientation))
    paths.append(str(tmp_path / "cmyk.jpg"))
    image.convert("CMYK").save(paths[-1], "JPEG")
    paths.append(str(tmp_path / "image.png"))
    image.save(paths[-1])
    truncated = _jpeg_bytes(image)
    paths.append(str(tmp_path / "truncated.jpg"))
    (tmp_path / "truncated.jpg").write_bytes(truncated[: len(truncated) // 2])
    paths.append(str(tmp_path / "missing.jpg"))

    decoded = []
    decode_rgb = jpeg.decode_rgb

    def counting(data, at_least=None):
        pixels = decode_rgb(data)  # at full size: PIL's pixels (reduced decoding: tested below)
        decoded.append(pixels is not None)
        return pixels

    monkeypatch.setattr(jpeg, "decode_rgb", counting)
    encoder = load_encoder("efficientnet-lite0", image_size=64, device="cpu")
    fast, fast_failures = embed_image_files(paths, encoder, batch_size=7)
    assert sum(decoded) == len(_photos()) * len(_OPTIONS) + 2  # every ordinary JPEG, no other
    # the unsplit path: the per-image transform gets the fast path's pixels as PIL images
    monkeypatch.setattr(type(encoder), "batched_preprocessing", property(lambda self: None))
    fast_unsplit, unsplit_failures = embed_image_files(paths, encoder, batch_size=7)
    monkeypatch.undo()
    monkeypatch.setattr(jpeg, "_opencv", lambda: None)
    slow, slow_failures = embed_image_files(paths, encoder, batch_size=7)
    assert fast_failures == slow_failures == unsplit_failures
    assert sorted(fast_failures) == [len(paths) - 2, len(paths) - 1]  # truncated, missing
    np.testing.assert_array_equal(fast, slow)
    ok = [i for i in range(len(paths)) if i not in fast_failures]
    # the per-image transform resizes small images with PIL instead of the batch's kernel
    cosine = (fast_unsplit[ok] * slow[ok]).sum(axis=1)
    cosine /= np.linalg.norm(fast_unsplit[ok], axis=1) * np.linalg.norm(slow[ok], axis=1)
    assert cosine.min() > 0.9999


def test_reduction_is_the_largest_that_keeps_the_requested_size():
    assert jpeg.reduction(601, 1003, None) == 1
    assert jpeg.reduction(601, 1003, (256, 256)) == 2  # ceil(601 / 4) = 151 < 256
    assert jpeg.reduction(601, 1003, (151, 251)) == 4  # libjpeg rounds the sides up
    assert jpeg.reduction(601, 1003, (152, 100)) == 2
    assert jpeg.reduction(4000, 3000, (256, 256)) == 8
    assert jpeg.reduction(255, 4000, (256, 256)) == 1  # already below on one side


@pytest.mark.parametrize("kind", ["4:2:0", "4:4:4", "progressive"])
def test_reduced_decoding_is_a_downscale_of_the_full_decode(kind):
    """At_least picks the scale; the pixels are the full decode shrunk (within a few levels of
    its 2x2 / 4x4 block means), colour and grayscale alike."""
    photo = Image.fromarray(skimage.data.astronaut()).resize((1003, 601))
    for image in (photo, photo.convert("L")):
        data = _jpeg_bytes(image, **_OPTIONS[kind])
        full = _pil_rgb(data).astype(np.float64)
        for at_least, scale in (((256, 256), 2), ((151, 251), 4), ((600, 1000), 1)):
            pixels = jpeg.decode_rgb(data, at_least=at_least)
            assert pixels.shape == (-(-601 // scale), -(-1003 // scale), 3)
            if scale == 1:
                np.testing.assert_array_equal(pixels, full)
                continue
            h, w = 601 // scale, 1003 // scale
            means = full[: h * scale, : w * scale].reshape(h, scale, w, scale, 3).mean((1, 3))
            assert np.abs(pixels[:h, :w] - means).mean() < 3.0, (kind, image.mode, scale)


def test_the_loop_decodes_large_photos_reduced_and_their_embeddings_barely_move(
    tmp_path, monkeypatch
):
    """The embedding loop asks for at least twice the encoder's input size; photos that large
    come out within cosine 0.99 of the full decode, smaller files exactly as before."""
    paths = []
    for k, image in enumerate(_photos().values()):  # up to 512 px
        paths.append(str(tmp_path / f"{k}.jpg"))
        image.save(paths[-1], "JPEG", quality=90)
    big = Image.fromarray(skimage.data.coffee()).resize((1200, 800))
    paths.append(str(tmp_path / "big.jpg"))
    big.save(paths[-1], "JPEG", quality=90)
    encoder = load_encoder("efficientnet-lite0", image_size=128, device="cpu")

    asked = []
    decode_rgb = jpeg.decode_rgb

    def recording(data, at_least=None):
        asked.append(at_least)
        return decode_rgb(data, at_least=at_least)

    monkeypatch.setattr(jpeg, "decode_rgb", recording)
    reduced, failures = embed_image_files(paths, encoder, batch_size=4)
    assert not failures and set(asked) == {(256, 256)}
    monkeypatch.setattr(jpeg, "decode_rgb", lambda data, at_least=None: decode_rgb(data))
    full, _ = embed_image_files(paths, encoder, batch_size=4)
    cosine = (reduced * full).sum(axis=1)
    cosine /= np.linalg.norm(reduced, axis=1) * np.linalg.norm(full, axis=1)
    # astronaut and the grayscale camera (512 px: 1/2) and the big photo (1/2, as 800 / 4 <
    # 256) are decoded reduced; the others are below 256 px
    changed = [i for i in range(len(paths)) if not np.array_equal(reduced[i], full[i])]
    assert changed == [0, 2, len(paths) - 1]
    assert cosine.min() > 0.99
