"""The main job: select a coreset worth annotating from a real image dataset, offline.

Data, in order of preference unless you name one:
  --dataset NAME        an existing FiftyOne dataset
  --images-dir PATH     a folder of images (class subfolders become `ground_truth`, used only
                        for the report, never by the selection)
  default               CIFAR-10 from ../shared/data when present (2,000 train images, or the
                        full 50,000 with --full), else scikit-learn's digits written as images

Runs embeddings -> pseudo-labels -> difficulty -> selection -> export, and prints a summary.
"""

from __future__ import annotations

import argparse
import collections
import logging
import os
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_CIFAR = os.path.join(REPO, "..", "shared", "data", "cifar10-jpg.tar.gz")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
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
    parser.add_argument(
        "--budget-fraction", type=float, default=None, help="fraction to label (default 0.1)"
    )
    parser.add_argument("--budget-count", type=int, default=None, help="number of samples to label")
    parser.add_argument("--clusters", type=int, default=10, help="number of pseudo-classes")
    parser.add_argument("--clustering", choices=["temi", "kmeans"], default="temi")
    parser.add_argument("--beta", type=float, default=None, help="hard-end cut; default label-free")
    parser.add_argument("--key", default="elfs", help="run key naming fields, tag, view and runs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--workdir",
        default=os.path.join(REPO, "elfs_output"),
        help="where demo images and the export go",
    )
    parser.add_argument("--shared-data", default=SHARED_CIFAR, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.budget_fraction is None and args.budget_count is None:
        args.budget_fraction = 0.1
    return args


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
            sys.exit(
                f"error: no FiftyOne dataset named '{args.dataset}'. Existing: {fo.list_datasets()}"
            )
        return fo.load_dataset(args.dataset)
    if args.images_dir:
        folder = os.path.abspath(args.images_dir)
        if not os.path.isdir(folder):
            sys.exit(f"error: --images-dir '{folder}' is not a folder")
        name = "elfs-" + os.path.basename(folder.rstrip("/"))
    else:
        source = args.source
        if source == "auto":
            source = "cifar10" if os.path.exists(args.shared_data) else "digits"
        if source == "cifar10":
            if not os.path.exists(args.shared_data):
                sys.exit(f"error: CIFAR-10 archive not found at {args.shared_data}")
            sub = "cifar10-full" if args.full else "cifar10-2000"
            folder = extract_cifar(
                args.shared_data, os.path.join(args.workdir, "data", sub), args.full
            )
            name = f"elfs-demo-{sub}"
        else:
            from fiftyone_elfs.sample_data import write_digit_images

            folder = write_digit_images(os.path.join(args.workdir, "data", "digits"))
            name = "elfs-demo-digits"
    return dataset_from_folder(name, folder)


def dataset_from_folder(name: str, folder: str):
    """Loads a folder as a persistent dataset, reusing it (and its embeddings) when unchanged."""
    import fiftyone as fo

    has_classes = any(os.path.isdir(os.path.join(folder, d)) for d in os.listdir(folder))
    dataset_type = (
        fo.types.ImageClassificationDirectoryTree if has_classes else fo.types.ImageDirectory
    )
    if fo.dataset_exists(name):
        dataset = fo.load_dataset(name)
        if dataset.info.get("source_folder") == folder:
            return dataset
        sys.exit(
            f"error: dataset '{name}' exists but was made from another folder; "
            f"delete it (fo.delete_dataset('{name}')) or pass --dataset {name}"
        )
    dataset = fo.Dataset.from_dir(
        dataset_dir=folder,
        dataset_type=dataset_type,
        name=name,
        label_field="ground_truth" if has_classes else None,
    )
    dataset.info["source_folder"] = folder
    dataset.persistent = True
    dataset.save()
    return dataset


def _codes(values: list[str]) -> np.ndarray:
    """Integer codes for string labels."""
    return np.unique(np.asarray(values), return_inverse=True)[1]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    import fiftyone_elfs as elfs
    from fiftyone_elfs.pseudo_labels.metrics import cluster_accuracy

    t0 = time.perf_counter()
    dataset = load_source(args)
    print(f"\nDataset '{dataset.name}': {len(dataset)} images")

    timings = {}
    start = time.perf_counter()
    emb = elfs.compute_embeddings(dataset, key=args.key)
    timings["embeddings"] = time.perf_counter() - start
    start = time.perf_counter()
    elfs.compute_pseudo_labels(
        dataset, n_clusters=args.clusters, clustering=args.clustering, key=args.key, seed=args.seed
    )
    timings["pseudo-labels"] = time.perf_counter() - start
    start = time.perf_counter()
    elfs.compute_difficulty(dataset, key=args.key, seed=args.seed)
    timings["difficulty"] = time.perf_counter() - start
    start = time.perf_counter()
    result = elfs.select_coreset(
        dataset,
        budget_count=args.budget_count,
        budget_fraction=args.budget_fraction,
        beta=args.beta,
        key=args.key,
    )
    timings["selection"] = time.perf_counter() - start
    start = time.perf_counter()
    export_dir = os.path.join(args.workdir, "export", f"{dataset.name}-{args.key}")
    outputs = elfs.export_coreset(dataset, export_dir, key=args.key, overwrite=True)
    timings["export"] = time.perf_counter() - start

    label_field = f"{args.key}_pseudo_label"
    pool = collections.Counter(dataset.exists(label_field).values(f"{label_field}.label"))
    core = collections.Counter(result.view(dataset).values(f"{label_field}.label"))
    print("\n=== ELFS coreset summary ===")
    print(
        f"selected {result.budget} of {result.n_pool} samples "
        f"(beta={result.beta:.3f}: {result.beta_reason})"
    )
    for notice in result.notices:
        print(f"notice: {notice}")
    print("per-cluster counts (pool -> coreset):")
    for label in sorted(pool):
        print(f"  {label}: {pool[label]:6d} -> {core.get(label, 0)}")
    print(f"skipped images: {emb['n_skipped']} (reused embeddings: {emb['n_reused']})")
    for item in emb["skipped"][:5]:
        print(f"  {item['filepath']}: {item['reason']}")
    if dataset.get_field("ground_truth") is not None:
        ids = dataset.exists(label_field).exists("ground_truth").values("id")
        view = dataset.select(ids, ordered=True)
        truth, pred = view.values(["ground_truth.label", f"{label_field}.label"])
        print(
            f"cluster accuracy vs ground_truth (Hungarian, report only): "
            f"{cluster_accuracy(_codes(truth), _codes(pred)):.3f}"
        )
    print(
        "stage wall times: "
        + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items())
        + f"; total {time.perf_counter() - t0:.1f}s"
    )
    print(f"tag: '{result.tag}', saved view: '{result.saved_view}'")
    print("export:")
    for kind, path in outputs.items():
        print(f"  {kind}: {path}")
    print(
        "open it in the App:\n"
        f'  {sys.executable} -c "import fiftyone as fo; '
        f"fo.launch_app(fo.load_dataset('{dataset.name}'), auto=False).wait()\""
    )
    print(f"  then load the saved view '{result.saved_view}'")
    return 0


if __name__ == "__main__":
    sys.exit(main())
