"""The main job: select a coreset worth annotating from a real image dataset, offline.

Data, in order of preference unless you name one:
  --dataset NAME        an existing FiftyOne dataset
  --images-dir PATH     a folder of images (class subfolders become `ground_truth`, used only
                        for the report, never by the selection)
  default               CIFAR-10 from ../shared/data when present (2,000 train images, or the
                        full 50,000 with --full), else scikit-learn's digits written as images

Runs embeddings -> pseudo-labels -> difficulty -> selection (which also gives the App the ELFS
panel's colours for the regions and clusters) -> embedding plot -> export, and prints a summary
ending with the command that opens the App on the dataset.

Every flag is checked before anything slow: syntax and ranges before FiftyOne or torch is
imported (with the library's own parameter rows, so the limits and messages are the API's), the
data right after importing FiftyOne (the named dataset exists, enough images for the clusters).
A bad value exits with status 2 and a message naming the flag and the fix, without a traceback.
"""

from __future__ import annotations

import argparse
import mimetypes
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from fiftyone_elfs.errors import ElfsInputError
from fiftyone_elfs.param_rows import (
    ADAPT_STEPS,
    BETA,
    BUDGET_COUNT,
    BUDGET_FRACTION,
    CLUSTERING,
    KEY,
    MODE,
    MODEL,
    N_CLUSTERS,
    OFFLINE_ENCODER_NAMES,
    SEED,
    is_encoder_name,
)
from fiftyone_elfs.param_types import Param

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_CIFAR = os.path.join(REPO, "..", "shared", "data", "cifar10-jpg.tar.gz")
DEFAULT_BUDGET_FRACTION = 0.1

#: API parameter -> the flag that sets it: library messages are shown in the flags' words.
FLAGS = {
    "budget_fraction": "--budget-fraction",
    "budget_count": "--budget-count",
    "n_clusters": "--clusters",
    "clustering": "--clustering",
    "mode": "--mode",
    "beta": "--beta",
    "key": "--key",
    "seed": "--seed",
    "model": "--model",
    "adapt_steps": "--adapt-steps",
}


#: Fixes in library messages that name API parameters the main job has no flag for, in words a
#: command-line user can act on (applied before the flag names are put in, see `in_flag_words`).
CLI_FIXES = [
    (
        re.compile(
            r"Fix: to use those embeddings, pass embeddings_field='([^']*)' to the later stages "
            r"\(or run_pipeline\) instead; to compute new ones, choose another key or "
            r"embeddings_field\."
        ),
        r"Fix: to compute new embeddings, use another --key (e.g. --key=elfs2); to use those "
        r"embeddings, run fiftyone_elfs.run_pipeline(dataset, embeddings_field='\1') from "
        r"Python (the main job has no flag for existing embeddings).",
    ),
    (re.compile(r"pass another tag \(tag=\.\.\.\) or another key"), "use another key"),
    (
        re.compile(r"choose another tag, or leave tag=None to derive it from the key"),
        "use another --key (the tag is derived from it)",
    ),
    (
        re.compile(
            r"pass another brain_key(?: \(compute_visualization\) or visualize=False "
            r"\(run_pipeline\))?(?=[,.])"
        ),
        "use another --key (the embedding plot's brain key is '<key>_umap')",
    ),
]


class UsageError(Exception):
    """A flag that does not fit the data, found after parsing: reported like argparse's."""


def in_flag_words(message: str) -> str:
    """A library message with the flags in place of the API parameter names.

    Names with an underscore are replaced wherever they appear ("n_clusters=5000 is larger ...",
    "... as a count (budget_count)"); short ones (key, beta, seed) only as "beta=" or at the
    start ("beta must be ..."), since they are also ordinary words.
    """
    message = message.replace(" (or None)", "")
    for pattern, replacement in CLI_FIXES:
        message = pattern.sub(replacement, message)
    for name, flag in FLAGS.items():
        if "_" in name:
            message = re.sub(rf"(?<![\w-]){name}(?!\w)", flag, message)
        else:
            message = re.sub(rf"(?<![\w-]){name}=", f"{flag}=", message)
            message = re.sub(rf"^{name} ", f"{flag} ", message)
    message = re.sub(r"leave (--[\w-]+)=None", r"leave out \1", message)
    return re.sub(r"(--[\w-]+)=None", r"no \1", message)


def encoder_name(text: str) -> str:
    """An argparse type: an encoder name of a form the library loads (whether it loads, e.g.
    a timm model's weights offline, is checked when the embeddings start)."""
    if is_encoder_name(text):
        return text.strip()
    raise argparse.ArgumentTypeError(
        f"unknown encoder {text!r}. Fix: use {', '.join(OFFLINE_ENCODER_NAMES)} (offline), "
        "'timm:<model name>' or 'zoo:<FiftyOne zoo model>' (these two download their weights)."
    )


def checked(row: Param, flag: str, parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse type: parses the text, then checks the value with the library's row."""

    def convert(text: str) -> Any:
        try:
            value = parse(text)
        except ValueError:
            fix = f" Fix: {row.fix}" * bool(row.fix)
            message = in_flag_words(f"must be {row.range_text()}; got {text!r}.{fix}")
            raise argparse.ArgumentTypeError(message) from None
        try:
            return row.check(value, flag)
        except ElfsInputError as error:
            message = in_flag_words(str(error)).removeprefix(f"{flag} ")
            raise argparse.ArgumentTypeError(message) from None

    return convert


def class_list(text: str) -> list[str]:
    """``--classes``: comma-separated, non-empty, distinct class names."""
    names = [name.strip() for name in text.split(",")]
    if not all(names) or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(
            f"'{text}' is not a list of distinct, non-empty class names. "
            "Fix: pass them separated by commas, e.g. --classes cat,dog,bird."
        )
    return names


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--dataset", help="name of an existing FiftyOne dataset")
    source.add_argument("--images-dir", help="a folder of images (optionally class subfolders)")
    source.add_argument(
        "--source",
        choices=["auto", "cifar10", "digits"],
        default="auto",
        help="built-in data when no dataset/folder is named (default: auto)",
    )
    parser.add_argument("--full", action="store_true", help="CIFAR-10: use all 50,000 train images")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument(
        "--budget-fraction",
        type=checked(BUDGET_FRACTION, "--budget-fraction", float),
        help=f"share of the images to label, in (0, 1] (default {DEFAULT_BUDGET_FRACTION})",
    )
    budget.add_argument(
        "--budget-count",
        type=checked(BUDGET_COUNT, "--budget-count", int),
        help="number of images to label (instead of --budget-fraction)",
    )
    parser.add_argument(
        "--clusters",
        type=checked(N_CLUSTERS, "--clusters", int),
        default=N_CLUSTERS.default,
        help=f"{N_CLUSTERS.help} (default {N_CLUSTERS.default})",
    )
    parser.add_argument(
        "--clustering",
        choices=CLUSTERING.choices,
        default=CLUSTERING.default,
        help=f"{CLUSTERING.help} (default {CLUSTERING.default})",
    )
    parser.add_argument(
        "--mode",
        choices=MODE.choices,
        default=MODE.default,
        help=f"{MODE.help} (default {MODE.default})",
    )
    parser.add_argument(
        "--model",
        type=encoder_name,
        default=MODEL.default,
        help=f"the encoder of the embeddings: {MODEL.help} (default {MODEL.default})",
    )
    parser.add_argument(
        "--adapt-steps",
        type=checked(ADAPT_STEPS, "--adapt-steps", int),
        default=ADAPT_STEPS.default,
        help=f"{ADAPT_STEPS.help} (default {ADAPT_STEPS.default}: off; 300 is what was measured)",
    )
    parser.add_argument(
        "--beta",
        type=checked(BETA, "--beta", float),
        default=None,
        help="share of the hardest images dropped, in [0, 1) (default: the label-free rule)",
    )
    parser.add_argument(
        "--key", type=checked(KEY, "--key", str), default=KEY.default, help=KEY.help
    )
    parser.add_argument("--seed", type=checked(SEED, "--seed", int), default=SEED.default)
    parser.add_argument(
        "--classes",
        type=class_list,
        default=None,
        help="comma-separated class names annotators choose from in the Label Studio export "
        "(default: none, they type the class)",
    )
    parser.add_argument(
        "--workdir",
        default=os.path.join(REPO, "elfs_output"),
        help="where demo images and the export go",
    )
    parser.add_argument("--shared-data", default=SHARED_CIFAR, help=argparse.SUPPRESS)
    return parser


def parse_args(
    argv: list[str] | None = None, parser: argparse.ArgumentParser | None = None
) -> argparse.Namespace:
    """Parses and checks every flag that can be checked without importing FiftyOne."""
    parser = parser or build_parser()
    args = parser.parse_args(argv)
    if args.budget_fraction is None and args.budget_count is None:
        args.budget_fraction = DEFAULT_BUDGET_FRACTION
    if args.images_dir is not None:
        # the real folder: the same folder reached through a link finds its dataset again
        args.images_dir = os.path.realpath(args.images_dir)
        if not os.path.isdir(args.images_dir):
            parser.error(
                f"argument --images-dir: '{args.images_dir}' is not a folder. "
                "Fix: pass a folder of images (class subfolders optional)."
            )
    if args.dataset is None and args.images_dir is None:
        args.source = resolve_source(args.source, args.shared_data)
        if args.source == "cifar10" and not os.path.exists(args.shared_data):
            parser.error(
                f"argument --source: the CIFAR-10 archive is not at {args.shared_data}. "
                "Fix: use --source digits, --images-dir PATH or --dataset NAME."
            )
    if args.full and (args.dataset or args.images_dir or args.source != "cifar10"):
        parser.error("argument --full: only applies to the built-in CIFAR-10 data.")
    workdir = os.path.abspath(args.workdir)
    parent = workdir
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
        parser.error(f"argument --workdir: cannot create or write '{workdir}'.")
    builtin = args.dataset is None and args.images_dir is None
    for sub in ["export", *(["data"] if builtin else [])]:
        problem = folder_problem(os.path.join(workdir, sub))
        if problem:
            parser.error(
                f"argument --workdir: {problem}. Fix: pass another --workdir, or move that "
                "file away."
            )
    args.workdir = workdir
    return args


def folder_problem(path: str) -> str | None:
    """Why `path` is not, and cannot be made as, a writable folder (None when it is or can).

    Made here, before anything slow, so that a path the checks above accept but the system
    refuses (e.g. under /proc, even as root) is found now and not after the whole run."""
    if os.path.lexists(path) and not os.path.isdir(path):
        return f"'{path}' is a file, not a folder"
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as error:
        return f"'{path}' cannot be made as a folder ({error.strerror or error})"
    if not os.access(path, os.W_OK):
        return f"'{path}' is not writable"
    return None


def resolve_source(source: str, shared_data: str) -> str:
    """The built-in data to use: CIFAR-10 when its archive is there ("auto"), else digits."""
    if source == "auto":
        return "cifar10" if os.path.exists(shared_data) else "digits"
    return source


def extract_cifar(archive: str, folder: str, full: bool) -> str:
    """Extracts CIFAR-10 train images (200 per class, or all) from the shared archive, once."""
    done = os.path.join(folder, ".complete")
    if not os.path.exists(done):
        os.makedirs(folder, exist_ok=True)
        pattern = ["train/*"] if full else ["train/*/00[0-9][0-9].jpg", "train/*/01[0-9][0-9].jpg"]
        subprocess.run(["tar", "-xzf", archive, "-C", folder, "--wildcards", *pattern], check=True)
        open(done, "w").close()
    return os.path.join(folder, "train")


def load_source(args: argparse.Namespace):
    """Returns the FiftyOne dataset to select from, creating it from files if needed."""
    import fiftyone as fo

    if args.dataset:
        if not fo.dataset_exists(args.dataset):
            raise UsageError(
                f"argument --dataset: no FiftyOne dataset named '{args.dataset}'. "
                f"Fix: use one of {fo.list_datasets()}, or --images-dir PATH."
            )
        dataset = fo.load_dataset(args.dataset)
        refuse_grouped(dataset)
        refuse_non_images(dataset)
        return dataset
    if args.images_dir:
        folder = args.images_dir
        name = "elfs-" + os.path.basename(folder.rstrip("/"))
    elif args.source == "cifar10":
        sub = "cifar10-full" if args.full else "cifar10-2000"
        folder = extract_cifar(args.shared_data, os.path.join(args.workdir, "data", sub), args.full)
        name = f"elfs-demo-{sub}"
    else:
        from fiftyone_elfs.sample_data import write_digit_images

        folder = write_digit_images(os.path.join(args.workdir, "data", "digits"))
        name = "elfs-demo-digits"
    return dataset_from_folder(name, folder, args.workdir)


def refuse_grouped(dataset) -> None:
    """A grouped dataset is refused with the fix: the pipeline would see only its default slice
    (the other slices' images never candidates, and nothing said so), and which slice, or all
    of them as separate images, is the user's choice, made once in a dataset of its own."""
    if dataset.media_type != "group":
        return
    slices = sorted(dataset.group_slices)
    default = dataset.default_group_slice or slices[0]
    raise UsageError(
        f"argument --dataset: '{dataset.name}' is a grouped dataset (slices {slices}); the main "
        f"job would select from its default slice '{default}' only and leave out the others. "
        "Fix: make a dataset of the images to select from and pass that, e.g. in Python "
        f"fo.load_dataset('{dataset.name}').select_group_slices('{default}')"
        f".clone('{dataset.name}-{default}', persistent=True) (or select_group_slices("
        "media_type='image') for every slice's images)."
    )


def refuse_non_images(dataset) -> None:
    """A dataset of videos (or 3D scenes, point clouds) is refused first, with the fix in this
    job's words: counted as images, a few videos were refused for their number of clusters, and
    the fix followed then met this refusal."""
    if dataset.media_type in ("image", None):  # None: no samples yet (refused as empty)
        return
    frames = ""
    if dataset.media_type == "video":
        frames = (
            " For videos, select among their frames: in Python "
            f"fo.load_dataset('{dataset.name}').to_frames(sample_frames=True)"
            f".clone('{dataset.name}-frames', persistent=True), then --dataset "
            f"{shlex.quote(dataset.name + '-frames')}."
        )
    raise UsageError(
        f"argument --dataset: '{dataset.name}' holds '{dataset.media_type}' samples, and ELFS "
        f"selects among images. Fix: pass a dataset of images.{frames}"
    )


def on_disk(dataset, folder_based: bool):
    """The samples to run on, and how many were left out: for a dataset made from a folder,
    those whose file is still there (an image deleted from the folder would be selected again on
    every run and then refused by the export); the dataset itself is never changed."""
    if not folder_based:
        return dataset, 0
    ids, paths = dataset.values(["id", "filepath"])
    gone = [i for i, p in zip(ids, paths, strict=True) if not os.path.exists(p)]
    return (dataset.exclude(gone) if gone else dataset), len(gone)


def register_image_types() -> None:
    """Gives this process an image MIME type for each extension PIL reads that the machine's
    MIME table lacks (a slim system's has no WebP, TGA or JPEG 2000). FiftyOne decides a
    sample's media type by that table, so such files were neither found nor could be image
    samples, and the same folder gave different pools on different machines. Left out: PIL's
    stub formats (no pixels without a plugin) and '.pcd', FiftyOne's point clouds."""
    from PIL import Image, ImageFile

    Image.init()
    for ext, kind in Image.registered_extensions().items():
        factory = Image.OPEN.get(kind, (None,))[0]
        if factory is None or ext == ".pcd" or mimetypes.guess_type("x" + ext)[0] is not None:
            continue
        if isinstance(factory, type) and issubclass(factory, ImageFile.StubImageFile):
            continue
        mimetypes.add_type(f"image/{kind.lower()}", ext)


def image_files(folder: str, leave_out: Sequence[str] = ()) -> list[tuple[str, str | None]]:
    """Every image file under `folder` (an image by its extension's MIME type, as FiftyOne
    decides, with every format PIL reads registered: `register_image_types`), sorted, with its
    class: the top-level subfolder it is in, or None for an image directly in `folder`. Linked
    folders are followed (each real folder once); hidden files and folders (a name starting with
    '.', e.g. .ipynb_checkpoints or macOS' ._ files) are left out, and so are the folders
    `leave_out` below `folder` (what the run writes under its --workdir: exports, copies of the
    images)."""
    register_image_types()
    found: list[tuple[str, str | None]] = []
    seen: set[str] = set()  # real paths of the folders walked: a link loop is walked once
    top = os.path.realpath(folder)
    skipped = {os.path.realpath(p) for p in leave_out} - {top}
    for root, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen or real in skipped:
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            mime = mimetypes.guess_type(name)[0]
            if name.startswith(".") or mime is None or not mime.startswith("image/"):
                continue
            path = os.path.join(root, name)
            parts = os.path.relpath(path, folder).split(os.sep, 1)
            found.append((path, parts[0] if len(parts) > 1 else None))
    return found


def add_image_files(dataset, files: list[tuple[str, str | None]]) -> int:
    """Adds the files that are not samples of `dataset` yet (class subfolders become
    `ground_truth`); returns how many."""
    import fiftyone as fo

    known = set(dataset.values("filepath"))
    samples = [
        fo.Sample(filepath=path, ground_truth=fo.Classification(label=label))
        if label is not None
        else fo.Sample(filepath=path)
        for path, label in files
        if path not in known
    ]
    if samples:
        dataset.add_samples(samples)
    return len(samples)


def _below(path: str, folder: str) -> bool:
    """Whether `path` is strictly inside `folder` (real paths)."""
    return os.path.realpath(path).startswith(os.path.join(os.path.realpath(folder), ""))


def dataset_from_folder(name: str, folder: str, workdir: str | None = None):
    """Loads a folder as a persistent dataset, reusing the one made from it before (and its
    embeddings) and adding the images that appeared in the folder since.

    Every image under the folder is a sample, at any depth, beside class subfolders or not
    (`image_files`). The dataset is called ``name``, or ``name-2``, ``name-3``, ... when that
    name belongs to a dataset made from another folder (a second checkout's demo images,
    another folder with the same base name) or by someone else: each folder gets its own
    dataset, found again on the next run, and no other dataset is read for samples or changed.
    What the command writes under `workdir` (exports, extracted data) is left out where it
    lies inside the folder: copies of the samples.
    """
    from fiftyone_elfs import leases

    written = [os.path.join(workdir, sub) for sub in ("export", "data")] if workdir else []
    files = image_files(folder, leave_out=written)
    inside = [p for p in written if _below(p, folder) and os.path.isdir(p)]
    if inside:
        print(
            f"{' and '.join(inside)} (written by this command: exports and extracted data, "
            f"copies of images) {'is' if len(inside) == 1 else 'are'} inside {folder}, and "
            "not taken as images of the folder."
        )
    if not files:
        raise UsageError(f"argument --images-dir: no images found in '{folder}'.")
    # one run at a time finds or makes the folder's dataset (a second one started together
    # would make it twice, or add its images twice)
    try:
        with leases.hold(f"folder:{folder}", "elfs", ["dataset_from_folder"]):
            return _dataset_from_files(name, folder, files)
    except ElfsInputError as error:
        if "dataset_from_folder" not in str(error):
            raise
        raise UsageError(
            f"Another run is making or updating the dataset of {folder} right now; two would "
            "add its images twice. Fix: wait for that run to finish its dataset (a few seconds "
            "to minutes), then run this command again."
        ) from None


def _dataset_from_files(name: str, folder: str, files: list[tuple[str, str | None]]):
    """`dataset_from_folder`'s work, under its lease."""
    import fiftyone as fo
    from fiftyone.core.utils import to_slug

    # FiftyOne refuses a name whose URL slug another dataset has: 'elfs-Pics' after 'elfs-pics'
    same_stem = re.compile(rf"{re.escape(to_slug(name))}(-[0-9]+)?")
    taken = {n for n in fo.list_datasets() if same_stem.fullmatch(to_slug(n))}
    for existing in sorted(taken, key=lambda n: (len(n), n)):
        dataset = fo.load_dataset(existing)
        if dataset.info.get("source_folder") == folder:
            added = add_image_files(dataset, files)
            if added:
                print(f"{added} images new in {folder} since the last run were added.")
            return dataset
    taken_slugs = {to_slug(n) for n in taken}
    free, number = name, 2
    while to_slug(free) in taken_slugs:
        free, number = f"{name}-{number}", number + 1
    if free != name:
        print(
            f"Dataset '{name}' exists and was not made from {folder}; "
            f"this folder's images go into a new dataset, '{free}'."
        )
    try:
        dataset = fo.Dataset(free)  # not persistent until complete: an interrupted run leaves none
    except Exception as error:  # made meanwhile by a run on another folder of the same name
        if not fo.dataset_exists(free):
            raise
        raise UsageError(
            f"Another run made a dataset named '{free}' (from another folder) just now. Fix: run "
            "this command again; it will pick the next free name."
        ) from error
    dataset.info["source_folder"] = folder  # first: another run sees whose dataset it is
    dataset.save()
    add_image_files(dataset, files)
    dataset.persistent = True
    dataset.save()
    return dataset


def check_data(samples, args: argparse.Namespace, name: str | None = None) -> None:
    """The checks that need the data, before anything is computed."""
    from fiftyone_elfs.selection import resolve_budget
    from fiftyone_elfs.stages.pseudo_labels import check_n_clusters

    n = len(samples)
    if n == 0:
        raise UsageError(
            f"dataset '{name or samples.name}' has no samples. Fix: add images to it, name "
            "another with --dataset, or pass a folder of images with --images-dir PATH."
        )
    resolve_budget(n, budget_count=args.budget_count, budget_fraction=args.budget_fraction)
    check_n_clusters(args.clusters, n)


def quiet_logging() -> None:
    """Shows this package's warnings once, without doubling FiftyOne's own progress lines."""
    import logging

    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    package_logger = logging.getLogger("fiftyone_elfs")
    package_logger.addHandler(handler)
    package_logger.setLevel(logging.WARNING)


def app_command(dataset_name: str) -> str:
    """The one command that opens the App on `dataset_name` with the ELFS plugin available."""
    exe = os.path.join(os.path.dirname(sys.executable), "fiftyone-elfs")
    return f"{shlex.quote(exe)} app {shlex.quote(dataset_name)}"


class StageClock:
    """Wall time of each pipeline stage, from the labels of its progress reports ("embeddings:
    ...", "pseudo-labels: ...", ...): a stage runs from its first report to the next stage's."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self._stage: str | None = None
        self._since = time.perf_counter()

    def mark(self, label: str) -> None:
        if ":" not in label:  # the closing "selected N samples"
            return
        stage = label.split(":", 1)[0]
        if stage == "coreset":
            stage = "selection"
        elif stage == "writing":
            stage = "writing (with the embedding plot)"
        if stage != self._stage:
            self.stop()
            self._stage, self._since = stage, time.perf_counter()

    def stop(self) -> None:
        if self._stage is not None:
            now = time.perf_counter()
            self.timings[self._stage] = self.timings.get(self._stage, 0.0) + now - self._since
            self._stage = None


def export_base(workdir: str, dataset_name: str, key: str) -> str:
    """The export folder of a dataset and key: always a folder directly in <workdir>/export,
    named from the dataset's name with path separators and '..' replaced (FiftyOne accepts
    'team/digits' or '../x' as names)."""
    safe = re.sub(r"[/\\\x00]", "_", dataset_name).replace("..", "__")
    return os.path.join(workdir, "export", f"{safe}-{key}")


def run(dataset, args: argparse.Namespace, samples=None, n_gone: int = 0) -> int:
    """Runs the pipeline and the export under one lease of the main job, then prints the
    summary. `samples`: the samples to select from (default: the whole dataset)."""
    from fiftyone_elfs import leases
    from fiftyone_elfs.dataset_io import dataset_id

    samples = dataset if samples is None else samples
    try:
        with leases.hold(dataset_id(dataset), args.key, ["main_job"]):
            return _run(dataset, samples, args, n_gone)
    except ElfsInputError as error:
        if "'main_job' stage" not in str(error):
            raise
        raise UsageError(
            f"Another main job on dataset '{dataset.name}' with key '{args.key}' is running; two "
            "would overwrite each other's coreset and export. Fix: wait for it to finish, or use "
            f"another --key (e.g. --key={args.key}2). If that run was killed, rerun in a minute."
        ) from None


def _run(dataset, samples, args: argparse.Namespace, n_gone: int) -> int:
    import fiftyone_elfs as elfs
    from fiftyone_elfs.progress import stop_progress, terminal_progress
    from fiftyone_elfs.stages import visualization as plot

    bar = terminal_progress("ELFS")
    clock = StageClock()

    def progress(fraction: float, label: str) -> None:
        clock.mark(label)
        bar(fraction, label)

    start = time.perf_counter()
    # every flag, ownership and the mode/beta pair are checked before the first write
    try:
        result = elfs.run_pipeline(
            samples,
            budget_count=args.budget_count,
            budget_fraction=args.budget_fraction,
            n_clusters=args.clusters,
            clustering=args.clustering,
            key=args.key,
            model=args.model,
            adapt_steps=args.adapt_steps,
            mode=args.mode,
            beta=args.beta,
            seed=args.seed,
            progress=progress,
        )
    except BaseException:
        stop_progress(bar, "(failed)")  # the error goes on a line of its own
        raise
    clock.stop()
    timings = dict(clock.timings)
    pipeline_s = time.perf_counter() - start
    timings["other"] = max(pipeline_s - sum(timings.values()), 0.0)
    emb = dataset.load_run_results(f"{args.key}_embeddings")
    brain_key = plot.brain_key_for(args.key, "umap", None)
    selected = list(result.selected_ids)
    own = dataset.select(selected)  # this run's coreset, whatever the tag says meanwhile
    if len(own.match_tags(result.tag)) != len(selected):
        raise UsageError(
            f"The coreset tag '{result.tag}' was moved by another run while this one ran; "
            "nothing was exported. Fix: run this command again once that run has finished."
        )
    base = export_base(args.workdir, dataset.name, args.key)
    export_dir = export_dir_for(base, set(selected))
    if export_dir != base:
        print(
            f"An earlier export of another selection stays as it was in {base} (an annotation "
            f"tool may be serving it); this selection goes to {export_dir}."
        )
    start = time.perf_counter()
    outputs = elfs.export_coreset(
        own, export_dir, classes=args.classes, overwrite=True, key=args.key
    )
    timings["export"] = time.perf_counter() - start
    print_summary(dataset, args, result, emb, brain_key, outputs, timings, n_gone, samples)
    return 0


def exported_sample_ids(folder: str) -> set[str] | None:
    """The sample ids listed in an export folder's manifest, or None when it has none."""
    import csv

    from fiftyone_elfs.export import MANIFEST

    try:
        with open(os.path.join(folder, MANIFEST), newline="", encoding="utf-8") as f:
            return {row["sample_id"] for row in csv.DictReader(f)}
    except (OSError, KeyError, csv.Error):
        return None


def after_recovery(folder: str) -> tuple[set[str], str | None]:
    """The entries `folder` holds once an interrupted export there is rolled back (as
    `export_coreset` does first), the exporter's bookkeeping left out, and the manifest that
    will then be there (None when none)."""
    import json

    from fiftyone_elfs.export import MANIFEST
    from fiftyone_elfs.export_folder import INCOMPLETE, LOCK, RECORD, STAGING_PREFIX

    bookkeeping = {RECORD, INCOMPLETE, RECORD + ".tmp", INCOMPLETE + ".tmp", LOCK}
    entries = {
        e for e in os.listdir(folder) if e not in bookkeeping and not e.startswith(STAGING_PREFIX)
    }
    manifest = os.path.join(folder, MANIFEST)
    try:
        with open(os.path.join(folder, INCOMPLETE), encoding="utf-8") as f:
            marker = json.load(f)
    except (OSError, ValueError):
        marker = None
    if isinstance(marker, dict) and marker.get("phase") == "committing":
        staging = os.path.join(folder, str(marker.get("staging", "")))
        for name in marker.get("outputs", []):  # moved into place: removed by the rollback
            if not os.path.lexists(os.path.join(staging, name)):
                entries.discard(name)
        previous = os.path.join(staging, ".previous")  # the earlier export's: moved back
        for name in os.listdir(previous) if os.path.isdir(previous) else []:
            entries.add(name)
            if name == MANIFEST:
                manifest = os.path.join(previous, MANIFEST)
    return entries, (manifest if MANIFEST in entries else None)


def export_dir_for(base: str, selected_ids: set[str]) -> str:
    """``base``, or ``base-2``, ``base-3``, ...: the first folder that is free (absent or empty)
    or holds an export of exactly this selection, which is then replaced (a re-run with the same
    result, e.g. other --classes). An export of another selection may already be in annotators'
    hands (a Label Studio storage serves its media), so it is never replaced. A folder is judged
    as it will be once an interrupted export there is rolled back: one holding only an
    interrupted first export's marker and staging is free (the export recovers it)."""
    n = 1
    while True:
        folder = base if n == 1 else f"{base}-{n}"
        if not os.path.isdir(folder):
            return folder
        entries, manifest = after_recovery(folder)
        if not entries:
            return folder
        if manifest is not None and exported_sample_ids(os.path.dirname(manifest)) == set(
            selected_ids
        ):
            return folder
        n += 1


def print_summary(
    dataset, args, result, emb, brain_key, outputs, timings, n_gone=0, samples=None
) -> None:
    """What was selected and why, where it went, and how to look at it. `samples`: the samples
    the run selected from (default: the dataset)."""
    from fiftyone_elfs.pseudo_labels import cluster_accuracy

    pool_samples = dataset if samples is None else samples
    label_field = f"{args.key}_pseudo_label"
    pool = count_labels(pool_samples.exists(label_field).values(f"{label_field}.label"))
    core = count_labels(result.view(dataset).values(f"{label_field}.label"))
    print("\n=== ELFS coreset summary ===")
    share = 100 * result.budget / max(result.n_pool, 1)
    # typical selection draws from the embeddings: the difficulty score is not what chose
    how = "typical selection" if result.mode == "typical" else result.score
    print(f"selected {result.budget} of {result.n_pool} samples ({share:.1f}%) by {how}")
    reason = result.beta_reason  # the label-free rule's reason starts with "beta = ..."
    if not reason.startswith("beta"):
        reason = f"beta = {result.beta:.4g}: {reason}"
    print(f"hard-end cut: {reason}")
    print(f"selection rule: {result.mode}: {result.mode_reason}")
    for notice in result.notices:
        print(f"notice: {notice}")
    pseudo_labels = dataset.load_run_results(f"{args.key}_pseudo_labels")
    fallback = getattr(pseudo_labels, "fallback", None)
    if fallback:
        print(f"pseudo-labels by k-means: {fallback}")
    trust = getattr(pseudo_labels, "trust", None)
    if trust and "stability" in trust:
        print(
            f"pseudo-label trust: {trust['level']} (k-means from other starts agrees on "
            f"{trust['stability']:.0%} of samples; strong at >= {trust['threshold']:.0%})"
        )
    elif trust and trust.get("reason"):
        print(f"pseudo-label trust: not measured ({trust['reason']})")
    print("per-cluster counts (pool -> coreset):")
    for label in sorted(pool, key=natural_key):
        print(f"  {label}: {pool[label]:6d} -> {core.get(label, 0)}")
    size = dataset.get_run_info(f"{args.key}_embeddings").config.image_size
    adapted = getattr(emb, "adaptation", None)
    if adapted:
        trained = f"trained in {adapted['seconds']:.0f} s" if adapted.get("seconds") else "stored"
        adapted = f", adapted to these images ({adapted['steps']} steps, seed {adapted['seed']}, "
        adapted += f"{trained})"
    print(f"embeddings: {args.model}" + (f" at {size} px" if size else "") + (adapted or ""))
    print(f"skipped images: {emb.n_skipped} (reused embeddings: {emb.n_reused})")
    for item in list(emb.skipped)[:5]:
        print(f"  {item['filepath']}: {item['reason']}")
    if n_gone:
        print(
            f"{n_gone} images of this dataset are no longer in the folder: left out, kept in "
            "the dataset"
        )
    if is_classification_field(dataset, "ground_truth"):
        # only samples with a usable label: a cleared field or None labels give no line
        view = pool_samples.exists(label_field).exists("ground_truth.label")
        truth, pred = view.values(["ground_truth.label", f"{label_field}.label"])
        pairs = [(t, p) for t, p in zip(truth, pred, strict=True) if t is not None and p]
        if pairs:
            truth, pred = (list(x) for x in zip(*pairs, strict=True))
            accuracy = cluster_accuracy(codes(truth), codes(pred))
            print(f"cluster accuracy vs ground_truth (Hungarian, report only): {accuracy:.3f}")
    total = sum(timings.values())
    print(
        "stage wall times: "
        + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items())
        + f"; total {total:.1f}s"
    )
    print(f"tag '{result.tag}', saved view '{result.saved_view}', embedding plot '{brain_key}'")
    print("export:")
    for kind, path in outputs.items():
        print(f"  {kind}: {path}")
    print(f"open it in the App (with the ELFS plugin):\n  {app_command(dataset.name)}")


def is_classification_field(dataset, name: str) -> bool:
    """Whether `name` holds one class label per sample (a Classification), the only kind the
    cluster-accuracy report can compare with the pseudo-labels (not Detections, say)."""
    import fiftyone as fo

    field = dataset.get_field(name)
    return getattr(field, "document_type", None) is fo.Classification


def count_labels(values: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return counts


def natural_key(label: str) -> list[Any]:
    """cluster_2 before cluster_10."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", label)]


def codes(values: list[str]):
    """Integer codes for string labels."""
    import numpy as np

    return np.unique(np.asarray(values), return_inverse=True)[1]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parse_args(argv, parser)  # syntax, ranges, paths: nothing slow imported yet
    quiet_logging()
    try:
        dataset = load_source(args)
        samples, n_gone = on_disk(dataset, folder_based=args.dataset is None)
        check_data(samples, args, dataset.name)
        print(f"\nDataset '{dataset.name}': {len(samples)} images")
        if n_gone:
            print(
                f"{n_gone} images of this dataset are no longer in the folder: left out, kept "
                "in the dataset."
            )
        return run(dataset, args, samples, n_gone)
    except (UsageError, ElfsInputError) as error:
        parser.exit(2, f"{parser.prog}: error: {in_flag_words(str(error))}\n")
    return 2


if __name__ == "__main__":
    sys.exit(main())
