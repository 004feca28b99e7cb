"""Command line of the benchmark: ``python benchmarks/run_benchmark.py --help``."""

from __future__ import annotations

import argparse
import os
import sys

from .finetune import FinetuneConfig
from .methods import METHODS, MethodParams, resolve_methods
from .protocols import ProbeConfig, TrainConfig
from .report import write_report
from .runner import REPO, RunConfig, default_command, run_benchmark

__all__ = ["build_parser", "main"]

BENCH_DIR = os.path.join(REPO, "benchmarks")


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


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
    src.add_argument("--data-dir", help="folder with train/<class>/* and test/<class>/* images")
    src.add_argument(
        "--cifar10-archive",
        default=os.path.normpath(os.path.join(REPO, "..", "shared", "data", "cifar10-jpg.tar.gz")),
        help="CIFAR-10 JPEG archive, extracted once into the cache folder",
    )
    src.add_argument(
        "--pool-size", type=int, help="train images drawn (class proportions kept); default all"
    )
    src.add_argument("--test-size", type=int, help="test images drawn; default all")
    src.add_argument(
        "--balanced",
        action="store_true",
        help="draw the same number of images per class instead of the data's own proportions",
    )
    src.add_argument("--val-fraction", type=float, default=0.1, help="carved from the pool")
    src.add_argument("--data-seed", type=int, default=0, help="seed of the subsampling")

    grid = p.add_argument_group("grid")
    grid.add_argument("--rates", type=_floats, default=[30, 50, 70, 80, 90], help="in %%")
    grid.add_argument("--seeds", type=_ints, default=[0, 1, 2])
    grid.add_argument("--methods", default="all", help="comma list: " + ",".join(METHODS))
    grid.add_argument(
        "--protocols",
        default="A,B",
        help="A (linear probe), B (small CNN from scratch), C (fine-tuned encoder stages)",
    )

    prot = p.add_argument_group("protocols")
    prot.add_argument("--steps", type=int, default=TrainConfig.steps, help="B: SGD steps")
    prot.add_argument("--width", type=int, default=TrainConfig.width, help="B: CNN width")
    prot.add_argument("--batch-size", type=int, default=TrainConfig.batch_size, help="B")
    prot.add_argument("--lr", type=float, default=TrainConfig.lr, help="B: one-cycle peak LR")
    prot.add_argument(
        "--no-flip",
        action="store_true",
        help="B and C: no mirror augmentation (for classes whose meaning is left vs right)",
    )
    prot.add_argument(
        "--finetune-steps", type=int, default=FinetuneConfig.steps, help="C: SGD steps"
    )
    prot.add_argument("--probe-l2", type=float, default=ProbeConfig.l2, help="A: L2 penalty")
    prot.add_argument("--threads", type=int, default=0, help="torch threads; 0 = all cores")

    meth = p.add_argument_group("methods")
    meth.add_argument("--encoder", default="efficientnet-lite0")
    meth.add_argument("--image-size", type=int, default=128, help="encoder input size")
    meth.add_argument("--proxy-epochs", type=int, default=MethodParams.proxy_epochs)
    meth.add_argument("--temi-epochs", type=int, default=MethodParams.temi_epochs)
    meth.add_argument("--temi-heads", type=int, default=MethodParams.temi_heads)
    meth.add_argument("--zcore-draws", type=int, default=MethodParams.zcore_draws)
    meth.add_argument(
        "--beta-grid",
        type=_floats,
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
    args = build_parser().parse_args(argv)
    if args.list_methods:
        for spec in METHODS.values():
            flag = " [uses labels]" if spec.uses_labels else ""
            flag += " [oracle]" if spec.oracle else ""
            print(f"{spec.name:26s} {spec.description}{flag}")
        return {}
    run_dir = os.path.join(args.results_dir, args.run_name)
    summary: dict = {"run_dir": run_dir, "computed": 0, "reused": 0, "errors": 0}
    if not args.report_only:
        cfg = RunConfig(
            methods=resolve_methods(args.methods),
            rates=args.rates,
            seeds=args.seeds,
            protocols=[s.strip().upper() for s in args.protocols.split(",") if s.strip()],
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
        summary = run_benchmark(cfg)
    summary["report"] = write_report(run_dir)
    print(
        f"{summary['computed']} computed, {summary['reused']} reused, {summary['errors']} errors; "
        f"report: {', '.join(summary['report'])}"
    )
    return summary
