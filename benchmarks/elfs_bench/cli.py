"""Command line of the benchmark: ``python benchmarks/run_benchmark.py --help``."""

from __future__ import annotations

import argparse
import os
import sys

from .data import BenchDataError
from .finetune import FinetuneConfig
from .methods import METHODS, MethodParams, resolve_methods
from .protocols import ProbeConfig, TrainConfig
from .report import write_report
from .runner import PROTOCOLS, REPO, RunConfig, default_command, run_benchmark

__all__ = ["at_least", "build_parser", "main", "protocol_letters", "pruning_rates"]

BENCH_DIR = os.path.join(REPO, "benchmarks")


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


# argparse types: a bad value is refused before any data is read, as "error: argument ...",
# exit status 2 and no traceback (a ValueError raised by a type gives a bare "invalid value")


def _comma_list(parse, what: str):
    """A non-empty comma list of ``parse``d values."""

    def convert(text: str) -> list:
        try:
            values = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a comma list of {what}; got {text!r}"
            ) from None
        if not values:
            raise argparse.ArgumentTypeError(f"expected at least one of {what}; got {text!r}")
        return values

    return convert


def pruning_rates(text: str) -> list[float]:
    """Pruning rates in percent, each in [0, 100) (70 keeps 30% of the pool)."""
    rates = _comma_list(_floats, "pruning rates in percent")(text)
    bad = [r for r in rates if not 0 <= r < 100]  # also NaN
    if bad:
        raise argparse.ArgumentTypeError(
            "pruning rates are percentages in [0, 100) (70 keeps 30% of the pool); got "
            + ", ".join(f"{r:g}" for r in bad)
        )
    return rates


def protocol_letters(text: str) -> list[str]:
    """Protocol letters, each one of PROTOCOLS (case-insensitive)."""
    chosen = [s.strip().upper() for s in text.split(",") if s.strip()]
    if not chosen or any(p not in PROTOCOLS for p in chosen):
        raise argparse.ArgumentTypeError(
            f"protocols are a comma list of {', '.join(PROTOCOLS)}; got {text!r}"
        )
    return list(dict.fromkeys(chosen))


def _betas(text: str) -> list[float]:
    betas = _comma_list(_floats, "betas")(text)
    if any(not 0 <= b < 1 for b in betas):
        raise argparse.ArgumentTypeError(f"betas are shares of the pool in [0, 1); got {text!r}")
    return betas


def at_least(low: int):
    """A whole number >= ``low``."""

    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number; got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}; got {value}")
        return value

    return convert


def _share(low_open: bool):
    """A number in [0, 1) (``low_open``: in (0, 1))."""

    def convert(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number; got {text!r}") from None
        if not ((0 < value) if low_open else (0 <= value)) or not value < 1:
            raise argparse.ArgumentTypeError(
                f"must be in {'(' if low_open else '['}0, 1); got {text}"
            )
        return value

    return convert


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number; got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0; got {text}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number; got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0; got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (every option documented in benchmarks/README.md)."""
    p = argparse.ArgumentParser(
        prog="run_benchmark.py",
        description="Which coreset trains the best model at a labeling budget? Runs every "
        "(method, pruning rate, seed, protocol) not yet on disk, then writes the report.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    src = p.add_argument_group("data (first given wins: --dataset, --data-dir, archive)")
    src.add_argument("--dataset", help="FiftyOne dataset name (splits chosen by tags)")
    src.add_argument("--train-tag", default="train")
    src.add_argument("--test-tag", default="test")
    src.add_argument("--label-field", default="ground_truth", help="Classification field")
    src.add_argument(
        "--data-dir",
        help="folder with train/<class>/* and test/<class>/* images (images in subfolders of a "
        "class folder count for that class); with --split-test, one folder of <class>/* images",
    )
    src.add_argument(
        "--split-test",
        type=_share(low_open=True),
        metavar="FRACTION",
        help="--data-dir is one labelled folder DIR/<class>/* without train/ and test/: draw "
        "this share of every class as the test split (stratified, seeded by --data-seed)",
    )
    src.add_argument(
        "--cifar10-archive",
        default=os.path.normpath(os.path.join(REPO, "..", "shared", "data", "cifar10-jpg.tar.gz")),
        help="CIFAR-10 JPEG archive, extracted once into the cache folder",
    )
    src.add_argument(
        "--pool-size",
        type=at_least(1),
        help="train images drawn (class proportions kept); default all",
    )
    src.add_argument("--test-size", type=at_least(1), help="test images drawn; default all")
    src.add_argument(
        "--balanced",
        action="store_true",
        help="draw the same number of images per class instead of the data's own proportions; "
        "without --pool-size (--test-size) every class is cut down to the smallest one's count",
    )
    src.add_argument(
        "--val-fraction", type=_share(low_open=False), default=0.1, help="carved from the pool"
    )
    src.add_argument("--data-seed", type=int, default=0, help="seed of the subsampling")

    grid = p.add_argument_group("grid")
    grid.add_argument(
        "--rates",
        type=pruning_rates,
        default=[30, 50, 70, 80, 90],
        help="pruning rates in %%, each in [0, 100) (70 keeps 30%% of the pool)",
    )
    grid.add_argument("--seeds", type=_comma_list(_ints, "whole-number seeds"), default=[0, 1, 2])
    grid.add_argument("--methods", default="all", help="comma list: " + ",".join(METHODS))
    grid.add_argument(
        "--protocols",
        type=protocol_letters,
        default="A,B",
        help="A (linear probe), B (small CNN from scratch), C (fine-tuned encoder stages)",
    )

    prot = p.add_argument_group("protocols")
    prot.add_argument("--steps", type=at_least(1), default=TrainConfig.steps, help="B: SGD steps")
    prot.add_argument("--width", type=at_least(1), default=TrainConfig.width, help="B: CNN width")
    prot.add_argument("--batch-size", type=at_least(1), default=TrainConfig.batch_size, help="B")
    prot.add_argument(
        "--lr", type=_positive_float, default=TrainConfig.lr, help="B: one-cycle peak LR"
    )
    prot.add_argument(
        "--no-flip",
        action="store_true",
        help="B and C: no mirror augmentation (for classes whose meaning is left vs right)",
    )
    prot.add_argument(
        "--finetune-steps", type=at_least(1), default=FinetuneConfig.steps, help="C: SGD steps"
    )
    prot.add_argument(
        "--probe-l2", type=_non_negative_float, default=ProbeConfig.l2, help="A: L2 penalty"
    )
    prot.add_argument("--threads", type=at_least(0), default=0, help="torch threads; 0 = all cores")

    meth = p.add_argument_group("methods")
    meth.add_argument("--encoder", default="efficientnet-lite0")
    meth.add_argument("--image-size", type=at_least(1), default=128, help="encoder input size")
    meth.add_argument("--proxy-epochs", type=at_least(1), default=MethodParams.proxy_epochs)
    meth.add_argument("--temi-epochs", type=at_least(1), default=MethodParams.temi_epochs)
    meth.add_argument("--temi-heads", type=at_least(1), default=MethodParams.temi_heads)
    meth.add_argument("--zcore-draws", type=at_least(1), default=MethodParams.zcore_draws)
    meth.add_argument(
        "--beta-grid",
        type=_betas,
        default=list(MethodParams.beta_grid),
        help="betas tried by supervised_ccs (validation) and elfs_oracle_beta (test)",
    )

    out = p.add_argument_group("output")
    out.add_argument("--run-name", default="default", help="results/<run-name>/")
    out.add_argument("--results-dir", default=os.path.join(BENCH_DIR, "results"))
    out.add_argument("--cache-dir", default=os.path.join(BENCH_DIR, "cache"))
    out.add_argument(
        "--selections-from",
        metavar="RUN_NAME",
        help="reuse the selections of that run (same pool and method settings) instead of "
        "making them again, e.g. to score them on a larger --test-size",
    )
    out.add_argument("--report-only", action="store_true", help="only rewrite tables and plots")
    out.add_argument("--list-methods", action="store_true", help="print the methods and exit")
    return p


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark and the report; return the run summary (counts, run folder, report)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list_methods:
        for spec in METHODS.values():
            flag = " [uses labels]" if spec.uses_labels else ""
            flag += " [oracle]" if spec.oracle else ""
            print(f"{spec.name:26s} {spec.description}{flag}")
        return {}
    run_dir = os.path.join(args.results_dir, args.run_name)
    summary: dict = {"run_dir": run_dir, "computed": 0, "reused": 0, "errors": 0}
    if not args.report_only:
        try:
            methods = resolve_methods(args.methods)
        except ValueError as e:
            parser.error(f"argument --methods: {e}")
        if args.split_test is not None and not args.data_dir:
            parser.error("argument --split-test: splits a --data-dir folder; give --data-dir")
        cfg = RunConfig(
            methods=methods,
            rates=args.rates,
            seeds=args.seeds,
            protocols=args.protocols,
            run_dir=run_dir,
            cache_dir=args.cache_dir,
            source={
                "dataset": args.dataset,
                "train_tag": args.train_tag,
                "test_tag": args.test_tag,
                "label_field": args.label_field,
                "data_dir": args.data_dir,
                "cifar10_archive": args.cifar10_archive,
                "pool_size": args.pool_size,
                "test_size": args.test_size,
                "val_fraction": args.val_fraction,
                "data_seed": args.data_seed,
                "balanced": args.balanced,
                "split_test": args.split_test,
            },
            encoder=args.encoder,
            image_size=args.image_size,
            probe=ProbeConfig(l2=args.probe_l2),
            train=TrainConfig(
                steps=args.steps,
                width=args.width,
                batch_size=args.batch_size,
                lr=args.lr,
                flip=not args.no_flip,
            ),
            finetune=FinetuneConfig(steps=args.finetune_steps, flip=not args.no_flip),
            params=MethodParams(
                proxy_epochs=args.proxy_epochs,
                temi_epochs=args.temi_epochs,
                temi_heads=args.temi_heads,
                zcore_draws=args.zcore_draws,
                beta_grid=tuple(args.beta_grid),
            ),
            threads=args.threads,
            command=default_command(argv),
            selections_from=(
                os.path.join(args.results_dir, args.selections_from)
                if args.selections_from
                else None
            ),
        )
        try:
            summary = run_benchmark(cfg)
        except (BenchDataError, FileNotFoundError) as e:
            # the data cannot be used as given: the message names what and how to fix it
            raise SystemExit(f"run_benchmark.py: data error: {e}") from e
    summary["report"] = write_report(run_dir)
    print(
        f"{summary['computed']} computed, {summary['reused']} reused, {summary['errors']} errors; "
        f"report: {', '.join(summary['report'])}"
    )
    return summary
