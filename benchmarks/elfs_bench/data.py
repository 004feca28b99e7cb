"""Benchmark data: a labeled class tree or FiftyOne split, balanced splits, cached features.

Labels are read here because the benchmark needs them to train and score downstream models; the
selection methods never see them (see ``methods``). A class tree is read as FiftyOne's
ImageClassificationDirectoryTree importer reads one (images in subfolders of a class folder count
for it, hidden files and folders are skipped); data whose splits do not hold the same classes is
refused before any image is read (``BenchDataError``). Features (encoder embeddings and 32x32 pixel
arrays) are computed once per list of files and cached as ``.npy`` under the cache folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import unicodedata
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "BenchData",
    "BenchDataError",
    "Split",
    "artefact_folder",
    "balanced_subsample",
    "proportional_subsample",
    "cached_embeddings",
    "cached_pixels",
    "cached_trunk",
    "check_classes",
    "class_name",
    "list_class_tree",
    "list_fiftyone_split",
    "split_class_folder",
    "load_bench_data",
    "load_pixels",
    "prepare_cifar10",
    "scan_class_tree",
    "unreadable_message",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
PIXEL_SIZE = 32  # protocol B trains on 32x32 RGB


def _log(message: str) -> None:
    """Progress line on stderr (stdout stays free for the CLI's summary)."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


class BenchDataError(ValueError):
    """The benchmark's data cannot be used as given; the message names what and the fix (the
    command line prints it without a traceback)."""


def class_name(name: str) -> str:
    """A class name as the benchmark compares it: NFC-normalised Unicode, so a folder written
    by macOS (NFD, ``cafe\u0301``) and one written elsewhere (NFC, ``caf\xe9``) are one class."""
    return unicodedata.normalize("NFC", str(name))


@dataclass
class Split:
    """One split: absolute image paths, integer labels, and (once loaded) its features."""

    name: str
    paths: list[str]
    labels: np.ndarray  # int64 indices into BenchData.classes
    embeddings: np.ndarray | None = None  # float32 [N, d]
    pixels: np.ndarray | None = None  # uint8 [N, 32, 32, 3]
    trunk: np.ndarray | None = None  # protocol C: float16 [N, 2, C, H, W] (image, mirror)

    def __len__(self) -> int:
        """Number of images in the split."""
        return len(self.paths)


@dataclass
class BenchData:
    """Pool (what methods select from), validation (carved from the pool) and test splits."""

    classes: list[str]
    pool: Split
    val: Split
    test: Split
    source: dict = field(default_factory=dict)

    @property
    def key(self) -> str:
        """Identity of the data: a hash of every split's file list and labels."""
        h = hashlib.sha1()
        for split in (self.pool, self.val, self.test):
            h.update(split.name.encode())
            h.update("\n".join(split.paths).encode())
            h.update(np.asarray(split.labels, dtype=np.int64).tobytes())
        return h.hexdigest()[:16]

    def describe(self) -> dict:
        """JSON-able summary written into every result."""
        return {
            **self.source,
            "key": self.key,
            "classes": self.classes,
            "pool_size": len(self.pool),
            "val_size": len(self.val),
            "test_size": len(self.test),
        }


# --------------------------------------------------------------------------- sources


def prepare_cifar10(archive: str, cache_dir: str) -> str:
    """Extract the CIFAR-10 JPEG archive once into ``cache_dir/cifar10``; return that folder.

    A marker file records a complete extraction, so an interrupted one is redone.
    """
    dest = os.path.join(cache_dir, "cifar10")
    marker = os.path.join(dest, ".complete")
    if os.path.exists(marker):
        return dest
    if not os.path.exists(archive):
        raise FileNotFoundError(
            f"CIFAR-10 archive not found: {archive}. Pass --cifar10-archive PATH, or --data-dir "
            "for an extracted class tree, or --dataset for a FiftyOne dataset."
        )
    _log(f"extracting {archive} into {dest} (once)")
    tmp = dest + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    if shutil.which("tar"):
        subprocess.run(["tar", "-xzf", archive, "-C", tmp], check=True)
    else:  # pragma: no cover - every Linux has tar
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)
    with open(marker, "w") as f:
        f.write(archive + "\n")
    return dest


def _hidden(name: str) -> bool:
    return name.startswith(".")


def scan_class_tree(root: str) -> tuple[list[str], list[str], dict[str, int]]:
    """``list_class_tree`` plus the images found per class folder (0 for a folder without any),
    keyed by the NFC-normalised class name."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"Not a folder: {root}")
    paths: list[str] = []
    names: list[str] = []
    per_folder: dict[str, int] = {}
    nested: dict[str, int] = {}
    folders = sorted(
        d for d in os.listdir(root) if not _hidden(d) and os.path.isdir(os.path.join(root, d))
    )
    for cls in folders:
        folder = os.path.join(root, cls)
        found: list[str] = []
        for here, subdirs, files in os.walk(folder):
            subdirs[:] = [d for d in subdirs if not _hidden(d)]  # hidden folders skipped
            rel = os.path.relpath(here, folder)
            for name in files:
                if not _hidden(name) and name.lower().endswith(IMAGE_EXTENSIONS):
                    found.append(name if rel == "." else os.path.join(rel, name))
        label = class_name(cls)
        per_folder[label] = per_folder.get(label, 0) + len(found)
        n_nested = sum(os.sep in f for f in found)
        if n_nested:
            nested[cls] = n_nested
        for name in sorted(found):
            paths.append(os.path.abspath(os.path.join(folder, name)))
            names.append(label)
    if nested:
        _log(
            f"{root}: images in subfolders of a class folder are read and labelled by the class "
            f"folder (as FiftyOne's ImageClassificationDirectoryTree importer does): "
            + ", ".join(f"{c}: {n}" for c, n in nested.items())
        )
    return paths, names, per_folder


def list_class_tree(root: str) -> tuple[list[str], list[str]]:
    """List an image classification tree ``root/<class>/...``: (abs paths, class names).

    As FiftyOne's ImageClassificationDirectoryTree importer reads it: the images anywhere under
    a class folder (subfolders included) are labelled by that top folder; hidden files and
    folders (names starting with ".") are skipped. Class names are NFC-normalised
    (``class_name``). Sorted by class folder then relative path, so the listing is the same
    on every machine.
    """
    paths, names, _ = scan_class_tree(root)
    if not paths:
        raise BenchDataError(
            f"No images found under {root} (expected {root}/<class>/<image>, images "
            f"with the extensions {', '.join(IMAGE_EXTENSIONS)})."
        )
    return paths, names


def list_fiftyone_split(
    dataset_name: str, tag: str, label_field: str = "ground_truth"
) -> tuple[list[str], list[str]]:
    """The samples of a FiftyOne dataset carrying ``tag``: (file paths, class names), by path.

    Samples without a label in ``label_field`` (a Classification field) are skipped.
    """
    import fiftyone as fo

    view = fo.load_dataset(dataset_name).match_tags(tag)
    paths = view.values("filepath")
    labels = view.values(f"{label_field}.label")
    pairs = sorted((p, class_name(c)) for p, c in zip(paths, labels, strict=True) if c is not None)
    if not pairs:
        raise BenchDataError(
            f"Dataset {dataset_name!r} has no labeled samples tagged {tag!r} in {label_field!r}."
        )
    return [p for p, _ in pairs], [str(c) for _, c in pairs]


# --------------------------------------------------------------------------- splits


def balanced_subsample(labels: np.ndarray, size: int | None, seed: int) -> np.ndarray:
    """Sorted indices of a class-balanced random subset of ``size`` (all when None or >= N).

    Each class gets ``size // K`` (the remainder goes to randomly chosen classes); a class with too
    few samples gives all it has and the shortfall is spread over the others.
    """
    labels = np.asarray(labels)
    n = labels.size
    if size is None or size >= n:
        return np.arange(n, dtype=np.int64)
    if size < 1:
        raise ValueError(f"Subsample size must be >= 1; got {size}.")
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    members = {c: rng.permutation(np.flatnonzero(labels == c)) for c in classes}
    quota = {c: 0 for c in classes}
    remaining = size
    open_classes = list(classes)
    while remaining > 0 and open_classes:
        order = rng.permutation(len(open_classes))
        share, extra = divmod(remaining, len(open_classes))
        for rank, i in enumerate(order):
            c = open_classes[i]
            want = share + (1 if rank < extra else 0)
            take = min(want, members[c].size - quota[c])
            quota[c] += take
            remaining -= take
        open_classes = [c for c in open_classes if quota[c] < members[c].size]
    chosen = np.concatenate([members[c][: quota[c]] for c in classes])
    return np.sort(chosen).astype(np.int64)


def proportional_subsample(labels: np.ndarray, size: int | None, seed: int) -> np.ndarray:
    """Sorted indices of a random subset of ``size`` that keeps the data's own class proportions.

    Each class gets its share of ``size`` rounded by largest remainder (so a class of 3% of the
    data is 3% of the subset, up to one image); members are drawn uniformly within a class.
    """
    labels = np.asarray(labels)
    n = labels.size
    if size is None or size >= n:
        return np.arange(n, dtype=np.int64)
    if size < 1:
        raise ValueError(f"Subsample size must be >= 1; got {size}.")
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    raw = size * counts / n
    quota = np.floor(raw).astype(np.int64)
    by_remainder = np.argsort(-(raw - quota), kind="stable")
    quota[by_remainder[: size - int(quota.sum())]] += 1
    chosen = [
        rng.choice(np.flatnonzero(labels == c), size=int(q), replace=False)
        for c, q in zip(classes, quota, strict=True)
        if q
    ]
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def _split(name: str, paths: list[str], labels: np.ndarray, idx: np.ndarray) -> Split:
    """The subset ``idx`` of (paths, labels) as a named Split."""
    return Split(name, [paths[i] for i in idx], np.asarray(labels)[idx].astype(np.int64))


def split_class_folder(
    paths: list[str], names: list[str], test_fraction: float, seed: int
) -> tuple[list[int], list[int]]:
    """A stratified, seeded train/test split of one labelled folder: (train positions, test
    positions), each sorted. Every class gives ``round(test_fraction * n)`` images to test,
    at least 1 and never all of them; a class of one image is refused (it cannot be in both)."""
    if not 0.0 < test_fraction < 1.0:
        raise BenchDataError(f"--split-test must be in (0, 1); got {test_fraction}.")
    labels = np.array(names)
    lonely = [c for c in sorted(set(names)) if int((labels == c).sum()) < 2]
    if lonely:
        raise BenchDataError(
            f"--split-test: the class(es) {lonely} have a single image, which cannot be in both "
            "the train and the test split. Fix: add images to them, or remove their folders."
        )
    rng = np.random.default_rng(seed)
    train: list[int] = []
    test: list[int] = []
    for c in sorted(set(names)):
        members = rng.permutation(np.flatnonzero(labels == c))
        n_test = min(max(1, int(round(test_fraction * members.size))), members.size - 1)
        test.extend(members[:n_test].tolist())
        train.extend(members[n_test:].tolist())
    return sorted(train), sorted(test)


def _near_duplicates(names: list[str]) -> list[tuple[str, str]]:
    """Pairs of class names that differ only by letter case or Unicode form (NFKC)."""

    def fold(name: str) -> str:
        return unicodedata.normalize("NFKC", name).casefold()

    out = []
    ordered = sorted(set(names))
    for i, a in enumerate(ordered):
        for b in ordered[i + 1 :]:
            if fold(a) == fold(b):
                out.append((a, b))
    return out


def check_classes(
    train_names: list[str],
    test_names: list[str],
    *,
    where: tuple[str, str] = ("train", "test"),
    empty_train: list[str] = (),
    empty_test: list[str] = (),
) -> None:
    """Refuse data whose train and test splits do not hold the same classes: a class without
    train images can never be predicted (its test images cap the accuracy), and one without test
    images is never scored, while every method is told K = the number of classes. Names the
    classes, any near-duplicates (case or Unicode form) that explain the mismatch, and the fix."""
    train, test = set(train_names), set(test_names)
    only_test = sorted(test - train)
    only_train = sorted(train - test)
    if not only_test and not only_train:
        return
    lines = [f"The {where[0]} and {where[1]} splits do not hold the same classes:"]
    for c in only_test:
        why = "its train folder holds no images" if c in empty_train else "no train images"
        lines.append(f"  - {c!r}: {why} (only in {where[1]})")
    for c in only_train:
        why = "its test folder holds no images" if c in empty_test else "no test images"
        lines.append(f"  - {c!r}: {why} (only in {where[0]})")
    pairs = [
        p for p in _near_duplicates(sorted(train | test)) if set(p) & set(only_test + only_train)
    ]
    if pairs:
        lines.append(
            "Names that differ only by letter case or Unicode form (probably one class): "
            + ", ".join(f"{a!r} / {b!r}" for a, b in pairs)
            + "."
        )
    lines.append(
        "Fix: give every class images in both splits under the same name (rename or move the "
        "folders), or remove the class from both; a folder without a train/test split can be "
        "split with --split-test FRACTION."
    )
    raise BenchDataError("\n".join(lines))


def load_bench_data(
    *,
    data_dir: str | None = None,
    cifar10_archive: str | None = None,
    dataset: str | None = None,
    train_tag: str = "train",
    test_tag: str = "test",
    label_field: str = "ground_truth",
    pool_size: int | None = None,
    test_size: int | None = None,
    val_fraction: float = 0.1,
    data_seed: int = 0,
    balanced: bool = False,
    split_test: float | None = None,
    cache_dir: str,
) -> BenchData:
    """Resolve the source, subsample train and test (balanced, seeded) and carve validation.

    Source priority: a FiftyOne ``dataset`` (split by tags), else ``data_dir`` (a folder with
    ``train/`` and ``test/`` class trees, or with ``split_test``: one class tree
    ``data_dir/<class>/...`` split here, stratified and seeded by ``data_seed``), else the
    CIFAR-10 archive extracted into the cache. Both splits must hold the same classes
    (``check_classes``; names NFC-normalised), checked before any image is read.
    ``pool_size`` counts the train images drawn before ``val_fraction`` of them is carved off
    as the validation split; the rest is the selection pool. Every draw keeps the data's own
    class proportions (``proportional_subsample``), so a dataset's natural imbalance is what
    the methods face; ``balanced=True`` draws the same number per class instead: without
    ``pool_size`` (``test_size``) that is every class cut down to the smallest one's count.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise BenchDataError(f"val_fraction must be in [0, 1); got {val_fraction}.")
    pool_size_arg, test_size_arg = pool_size, test_size
    empty_train: list[str] = []
    empty_test: list[str] = []
    if split_test is not None and (dataset or not data_dir):
        raise BenchDataError("--split-test splits a --data-dir class tree; give --data-dir.")
    if dataset:
        train_paths, train_names = list_fiftyone_split(dataset, train_tag, label_field)
        test_paths, test_names = list_fiftyone_split(dataset, test_tag, label_field)
        source = {"kind": "fiftyone", "dataset": dataset, "train_tag": train_tag,
                  "test_tag": test_tag, "label_field": label_field}  # fmt: skip
        where = (f"{train_tag!r}-tagged", f"{test_tag!r}-tagged")
    else:
        if not data_dir:
            if not cifar10_archive:
                raise BenchDataError("Give --data-dir, --dataset or --cifar10-archive.")
            data_dir = prepare_cifar10(cifar10_archive, cache_dir)
            source = {"kind": "cifar10-archive", "archive": os.path.abspath(cifar10_archive)}
        else:
            source = {"kind": "class-tree", "data_dir": os.path.abspath(data_dir)}
        train_dir, test_dir = os.path.join(data_dir, "train"), os.path.join(data_dir, "test")
        has_splits = os.path.isdir(train_dir) or os.path.isdir(test_dir)
        if split_test is not None:
            if has_splits:
                raise BenchDataError(
                    f"--split-test draws a test split from a folder of class folders, but "
                    f"{data_dir} already has train/ or test/. Fix: drop --split-test (the "
                    "folder's own split is used), or point --data-dir at a folder of classes."
                )
            paths, names, _ = scan_class_tree(data_dir)
            if not paths:
                raise BenchDataError(f"No images found under {data_dir}/<class>/.")
            tr, te = split_class_folder(paths, names, split_test, data_seed + 3)
            train_paths, train_names = [paths[i] for i in tr], [names[i] for i in tr]
            test_paths, test_names = [paths[i] for i in te], [names[i] for i in te]
            source.update(kind="class-folder", split_test=split_test)
        elif not has_splits and os.path.isdir(data_dir):
            raise BenchDataError(
                f"{data_dir} has no train/ and test/ folders. If it is one labelled folder "
                f"({data_dir}/<class>/<image>), pass --split-test 0.2 (or another fraction) to "
                "draw a stratified, seeded test split from it; otherwise point --data-dir at "
                "a folder holding train/<class>/* and test/<class>/*."
            )
        else:
            train_paths, train_names, train_found = scan_class_tree(train_dir)
            test_paths, test_names, test_found = scan_class_tree(test_dir)
            empty_train = [c for c, n in train_found.items() if n == 0]
            empty_test = [c for c, n in test_found.items() if n == 0]
            for split_dir, found in ((train_dir, train_paths), (test_dir, test_paths)):
                if not found:
                    raise BenchDataError(
                        f"No images found under {split_dir} (expected {split_dir}/<class>/<image>)."
                    )
        where = ("train", "test")
    check_classes(
        train_names, test_names, where=where, empty_train=empty_train, empty_test=empty_test
    )
    classes = sorted(set(train_names) | set(test_names))
    index = {c: i for i, c in enumerate(classes)}
    y_train = np.array([index[c] for c in train_names], dtype=np.int64)
    y_test = np.array([index[c] for c in test_names], dtype=np.int64)

    draw: dict = {}
    if balanced:  # "balanced" without a size: every class cut down to the smallest one
        smallest = {
            "pool": int(np.bincount(y_train, minlength=len(classes)).min()),
            "test": int(np.bincount(y_test, minlength=len(classes)).min()),
        }
        if pool_size is None:
            pool_size = smallest["pool"] * len(classes)
            draw["balanced_pool_per_class"] = smallest["pool"]
        if test_size is None:
            test_size = smallest["test"] * len(classes)
            draw["balanced_test_per_class"] = smallest["test"]
        if draw:
            _log(
                "--balanced without a size: every class cut down to the smallest one's count ("
                + ", ".join(f"{k.split('_')[1]}: {v} per class" for k, v in draw.items())
                + ")"
            )
    subsample = balanced_subsample if balanced else proportional_subsample
    drawn = subsample(y_train, pool_size, data_seed)
    n_val = int(round(val_fraction * drawn.size))
    val_pos = subsample(y_train[drawn], n_val, data_seed + 1) if n_val else []
    is_val = np.zeros(drawn.size, dtype=bool)
    is_val[val_pos] = True
    test_idx = subsample(y_test, test_size, data_seed + 2)
    source.update(
        pool_size_arg=pool_size_arg,
        test_size_arg=test_size_arg,
        val_fraction=val_fraction,
        data_seed=data_seed,
        draw="balanced" if balanced else "proportional",
        **draw,
    )
    return BenchData(
        classes=classes,
        pool=_split("pool", train_paths, y_train, drawn[~is_val]),
        val=_split("val", train_paths, y_train, drawn[is_val]),
        test=_split("test", test_paths, y_test, test_idx),
        source=source,
    )


# --------------------------------------------------------------------------- features


def _paths_key(paths: list[str], *extra: object) -> str:
    """A short hash of a file list plus settings: the cache key of that list's features."""
    h = hashlib.sha1(json.dumps([str(e) for e in extra]).encode())
    h.update("\n".join(paths).encode())
    return h.hexdigest()[:20]


def artefact_folder(cache_dir: str, data: BenchData, encoder_name: str, image_size: int) -> str:
    """Where the rate-independent artefacts of ``data``'s pool (pseudo-labels and AUM, ZCore and
    Brain scores, ...) are cached: ``cache_dir/artefacts/<data key>/<encoder>-<size>-<digest>``.

    The artefacts are computed from the pool's embeddings, so their key holds everything those
    depend on, as the ``.npy`` feature cache's does: the file lists and labels (the data key),
    the encoder and its input size, and a digest of the pool's embeddings themselves (which also
    changes when the encoder's weights or preprocessing do). A run with another ``--encoder`` or
    ``--image-size`` therefore never reuses another's artefacts. Needs the pool's embeddings
    loaded (``load_features``).
    """
    X = data.pool.embeddings
    if X is None:
        raise ValueError("artefact_folder needs the pool's embeddings (load_features first)")
    X = np.ascontiguousarray(X)
    h = hashlib.sha1(
        json.dumps([encoder_name, int(image_size), list(X.shape), str(X.dtype)]).encode()
    )
    h.update(X.tobytes())
    safe = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in encoder_name)
    return os.path.join(
        cache_dir, "artefacts", data.key, f"{safe}-{int(image_size)}-{h.hexdigest()[:12]}"
    )


def _save_npy(path: str, array: np.ndarray) -> None:
    """Write an .npy atomically (a crash never leaves a truncated cache file); the temporary
    name is the process's own, so two benchmarks filling the same cache entry do not collide."""
    tmp = f"{path}.{os.getpid()}.tmp.npy"
    np.save(tmp, array)
    os.replace(tmp, path)


def load_pixels(
    paths: list[str], size: int = PIXEL_SIZE, resample: int | None = None
) -> np.ndarray:
    """Decode images to uint8 RGB [N, size, size, 3] (upright, 16-bit ones scaled: `upright_rgb`),
    resizing those of another size (``resample``: a PIL filter, bilinear by default)."""
    from PIL import Image

    resample = Image.BILINEAR if resample is None else resample

    from fiftyone_elfs.embeddings.upright_rgb import upright_rgb

    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    for i, path in enumerate(paths):
        with Image.open(path) as img:  # upright_rgb may return img itself: read it here
            rgb = upright_rgb(img)
            if rgb.size != (size, size):
                rgb = rgb.resize((size, size), resample)
            out[i] = np.asarray(rgb, dtype=np.uint8)
    return out


def cached_pixels(paths: list[str], cache_dir: str) -> np.ndarray:
    """32x32 pixel arrays of ``paths``, from ``cache_dir/features`` or decoded and cached."""
    folder = os.path.join(cache_dir, "features")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"pixels-{_paths_key(paths, PIXEL_SIZE)}.npy")
    if os.path.exists(path):
        return np.load(path)
    t0 = time.perf_counter()
    pixels = load_pixels(paths)
    _save_npy(path, pixels)
    _log(f"decoded {len(paths)} images to 32x32 pixels in {time.perf_counter() - t0:.1f} s")
    return pixels


def unreadable_message(paths: list[str], failures: dict[int, str], shown: int = 20) -> str:
    """The error for images that could not be read: each file's path and why, and the fix."""
    lines = [f"{len(failures)} image(s) could not be read, so nothing was embedded:"]
    lines += [f"  {paths[i]}: {reason}" for i, reason in list(failures.items())[:shown]]
    if len(failures) > shown:
        lines.append(f"  ... and {len(failures) - shown} more")
    lines.append(
        "Fix: replace or delete these files (a benchmark's data must be complete), then run the "
        "same command again."
    )
    return "\n".join(lines)


def cached_embeddings(
    paths: list[str],
    cache_dir: str,
    encoder_name: str = "efficientnet-lite0",
    image_size: int = 128,
) -> np.ndarray:
    """Encoder embeddings of ``paths`` (float32), from ``cache_dir/features`` or computed once.

    Uses the library's ``load_encoder`` and ``embed_image_files``; an unreadable image is an
    error here (a benchmark's data must be complete) that names the files.
    """
    folder = os.path.join(cache_dir, "features")
    os.makedirs(folder, exist_ok=True)
    key = _paths_key(paths, encoder_name, image_size)
    path = os.path.join(folder, f"emb-{encoder_name}-{image_size}-{key}.npy")
    if os.path.exists(path):
        return np.load(path)
    from fiftyone_elfs.embeddings import embed_image_files, load_encoder

    t0 = time.perf_counter()
    encoder = load_encoder(encoder_name, image_size=image_size)
    last = [0.0]

    def progress(fraction: float, label: str) -> None:
        if fraction - last[0] >= 0.1 or fraction >= 1.0:
            last[0] = fraction
            _log(f"embedding: {label}")

    emb, failures = embed_image_files(paths, encoder, progress=progress)
    if failures:
        raise BenchDataError(unreadable_message(paths, failures))
    _save_npy(path, emb)
    seconds = time.perf_counter() - t0
    _log(f"embedded {len(paths)} images in {seconds:.1f} s ({len(paths) / seconds:.0f} images/s)")
    return emb


def cached_trunk(paths: list[str], cache_dir: str) -> np.ndarray:
    """Protocol C's frozen-trunk features of ``paths`` and their mirror images (float16,
    memory-mapped), from ``cache_dir/features`` or computed once (``finetune.trunk_features``)."""
    from .finetune import SPLIT_STAGE, TRUNK_IMAGE_SIZE, trunk_features

    folder = os.path.join(cache_dir, "features")
    os.makedirs(folder, exist_ok=True)
    # the settings are in the file name; the key hashes the file list
    path = os.path.join(
        folder, f"trunk-lite0-{TRUNK_IMAGE_SIZE}-s{SPLIT_STAGE}-{_paths_key(paths)}.npy"
    )
    if not os.path.exists(path):
        t0 = time.perf_counter()
        step = max(1, len(paths) // 10)

        def progress(done: int, total: int) -> None:
            if done % step < 64 or done == total:
                _log(f"protocol C trunk features: {done}/{total} images")

        _save_npy(path, trunk_features(paths, progress=progress))
        _log(f"protocol C trunk features of {len(paths)} images in "
             f"{time.perf_counter() - t0:.1f} s")  # fmt: skip
    return np.load(path, mmap_mode="r")


def load_features(
    data: BenchData,
    cache_dir: str,
    encoder_name: str,
    image_size: int,
    need_pixels: bool,
    need_trunk: bool = False,
) -> None:
    """Fill every split's ``embeddings`` (and ``pixels`` for protocol B, ``trunk`` for protocol
    C), using the cache. Pixels are decoded only for protocol B and for the methods that train on
    them; trunk features only for protocol C (pool and test: validation is scored by A only)."""
    for split in (data.pool, data.val, data.test):
        if len(split) == 0:
            split.embeddings = np.empty((0, 0), dtype=np.float32)
            split.pixels = np.empty((0, PIXEL_SIZE, PIXEL_SIZE, 3), dtype=np.uint8)
            continue
        split.embeddings = cached_embeddings(split.paths, cache_dir, encoder_name, image_size)
        if need_pixels:
            split.pixels = cached_pixels(split.paths, cache_dir)
        if need_trunk and split is not data.val:
            split.trunk = cached_trunk(split.paths, cache_dir)
