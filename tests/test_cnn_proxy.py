"""The CNN proxy: training on real image files, planted label noise ranked hardest, resumable."""

from __future__ import annotations

import glob
import os

import fiftyone.operators as foo
import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

import fiftyone_elfs as elfs
from fiftyone_elfs.difficulty import (
    augment_batch,
    build_proxy_network,
    load_images,
    train_cnn_proxy,
)
from fiftyone_elfs.sample_data import write_digit_images


@pytest.fixture(scope="module")
def digit_files(tmp_path_factory):
    """300 real digit scans (30 per class) as PNG files, with their classes."""
    folder = write_digit_images(str(tmp_path_factory.mktemp("digits")), per_class=30)
    paths = sorted(glob.glob(os.path.join(folder, "*", "*.png")))
    classes = sorted({os.path.basename(os.path.dirname(p)) for p in paths})
    y = np.array([classes.index(os.path.basename(os.path.dirname(p))) for p in paths])
    return paths, y


def test_augmentation_crops_and_flips_without_inventing_pixels():
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(1, 255, size=(64, 16, 16, 3), dtype=np.uint8))
    out = augment_batch(images, torch.Generator().manual_seed(0), pad=4)
    assert out.shape == images.shape and out.dtype == torch.uint8
    identical = mirrored = 0
    for a, b in zip(images, out, strict=True):
        # every output pixel is an input pixel of the same image, or zero padding
        kept = {tuple(px) for px in b[b.sum(-1) > 0].reshape(-1, 3).tolist()}
        assert kept <= {tuple(px) for px in a.reshape(-1, 3).tolist()}
        identical += bool(torch.equal(a, b))
        mirrored += bool(torch.equal(a.flip(1), b))
    assert 0 < identical + mirrored < 64  # some unshifted crops, mostly shifted ones


def test_resnet18_has_a_cifar_stem_and_k_outputs():
    net = build_proxy_network("resnet18", 7)
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 7)
    assert net.conv1.kernel_size == (3, 3)
    with pytest.raises(ValueError, match="Unknown architecture"):
        build_proxy_network("vgg", 7)


def test_wrong_pseudo_labels_rank_hardest(digit_files):
    paths, y = digit_files
    rng = np.random.default_rng(0)
    flipped = rng.random(y.size) < 0.15
    noisy = y.copy()
    noisy[flipped] = (y[flipped] + rng.integers(1, 10, flipped.sum())) % 10
    scores = train_cnn_proxy(
        paths, noisy, n_classes=10, epochs=15, batch_size=32, seed=0, num_threads=1
    )
    assert scores.aum.shape == (y.size,) and np.isfinite(scores.aum).all()
    assert roc_auc_score(flipped, -scores.aum) > 0.8  # low AUM = hard
    assert roc_auc_score(flipped, scores.el2n) > 0.8  # high EL2N = hard
    assert scores.info["proxy"] == "cnn" and scores.n_epochs == 15


class _Interrupt(Exception):
    pass


def test_interrupted_then_resumed_equals_uninterrupted(digit_files, tmp_path):
    paths, y = digit_files
    paths, y = paths[::3], y[::3]
    kwargs = dict(n_classes=10, epochs=4, batch_size=32, seed=3, num_threads=1)
    full = train_cnn_proxy(paths, y, **kwargs)

    def stop_after_two(fraction, label):
        if fraction >= 0.5:
            raise _Interrupt(label)

    ckpt = tmp_path / "ckpt"
    with pytest.raises(_Interrupt):
        train_cnn_proxy(paths, y, checkpoint_dir=str(ckpt), progress=stop_after_two, **kwargs)
    assert (ckpt / "cnn_proxy.pt").exists()
    resumed = train_cnn_proxy(paths, y, checkpoint_dir=str(ckpt), **kwargs)
    assert resumed.info["resumed_from_epoch"] == 2
    np.testing.assert_array_equal(resumed.aum, full.aum)
    np.testing.assert_array_equal(resumed.forgetting, full.forgetting)
    np.testing.assert_array_equal(resumed.el2n, full.el2n)
    assert not (ckpt / "cnn_proxy.pt").exists()  # removed once training completed

    # A checkpoint of other settings is not resumed: a different seed starts from epoch 0.
    with pytest.raises(_Interrupt):
        train_cnn_proxy(paths, y, checkpoint_dir=str(ckpt), progress=stop_after_two, **kwargs)
    other = train_cnn_proxy(paths, y, checkpoint_dir=str(ckpt), **dict(kwargs, seed=4))
    assert other.info["resumed_from_epoch"] == 0


def test_images_must_be_uint8_and_numpy_integers_are_integers(digit_files):
    """Float pixels in [0, 1] were cast to uint8 (black images) and trained on without a word;
    np.int64 epochs were refused as 'not a positive integer'."""
    paths, labels = digit_files[0][:20], np.arange(20) % 2
    pixels = load_images(paths, image_size=16)
    with pytest.raises(ValueError, match=r"images must be uint8.*got float32.*Fix: pass pixels"):
        train_cnn_proxy(paths, labels, image_size=16, images=pixels / np.float32(255))
    scores = train_cnn_proxy(
        paths, labels, image_size=np.int64(16), images=pixels, epochs=np.int64(1),
        batch_size=np.int32(8), width=np.int64(4), num_threads=1,
    )  # fmt: skip
    assert scores.aum.shape == (20,) and scores.n_epochs == 1


def test_unreadable_images_are_named(digit_files, tmp_path):
    paths, _ = digit_files
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="1 images could not be read.*broken.png"):
        load_images([paths[0], str(broken)], image_size=16)
    assert load_images(paths[:5], image_size=16, num_workers=2).shape == (5, 16, 16, 3)


def test_large_photos_are_decoded_reduced_and_keep_their_pixels(tmp_path):
    """A photo many times the proxy's input size is decoded at a reduced size (libjpeg's scaled
    decoding, never below twice the input): the 32 px result differs from the full decode's by
    a few levels at most; a small JPEG and a PNG are decoded exactly as before."""
    import skimage.data
    from PIL import Image

    photo = Image.fromarray(skimage.data.astronaut()).resize((1200, 900))
    big, small, png = (str(tmp_path / name) for name in ("big.jpg", "small.jpg", "big.png"))
    photo.save(big, quality=90)
    photo.resize((60, 45)).save(small, quality=90)
    photo.save(png)
    images = load_images([big, small, png], image_size=32)

    def full_decode(path: str) -> np.ndarray:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB").resize((32, 32), Image.BILINEAR))

    difference = np.abs(images[0].astype(int) - full_decode(big).astype(int))
    assert difference.max() > 0  # decoded reduced, not in full
    assert difference.mean() < 3.0
    np.testing.assert_array_equal(images[1], full_decode(small))
    np.testing.assert_array_equal(images[2], full_decode(png))


def test_cnn_proxy_through_the_operator_scores_every_sample(dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("ELFS_CACHE_DIR", str(tmp_path))
    elfs.compute_pseudo_labels(dataset, n_clusters=10, clustering="kmeans")
    op = foo.get_operator("@fiftyone-elfs/elfs/compute_difficulty")
    op(dataset, proxy="cnn", epochs=2, cnn_width=8, cnn_image_size=32)
    aum = np.array(dataset.values("elfs_aum"), dtype=float)
    assert aum.shape == (len(dataset),) and np.isfinite(aum).all()
    config = dataset.get_run_info("elfs_difficulty").config
    assert config.proxy == "cnn" and config.cnn_params["width"] == 8
    assert config.checkpoint_dir.startswith(str(tmp_path))
    assert not os.listdir(config.checkpoint_dir)  # finished: nothing left to resume

    before = dataset.values("elfs_aum")
    with pytest.raises(elfs.ElfsInputError, match="Unknown cnn_params"):
        elfs.compute_difficulty(dataset, proxy="cnn", cnn_params={"depth": 3})
    with pytest.raises(elfs.ElfsInputError, match="Unknown CNN architecture"):
        elfs.compute_difficulty(dataset, proxy="cnn", cnn_params={"arch": "vgg"})
    assert dataset.values("elfs_aum") == before
