"""What the ELFS panel's figures cost at scale: `run_summary.summarize_run` (what the panel
reads each time it opens or refreshes) against the same figures read one pass per figure.

Makes a dataset of N samples in a private mongod (dummy file paths, 512-d random
embeddings, so that each document is as large as in the other scale benchmarks: ~2.3 KB),
runs the pipeline on it (k-means, one MLP epoch, 10% budget, no plot), then prints the
median seconds of 3 runs of

- ``summarize_run``, and its ``coreset_figures`` alone (two passes over the samples since
  2026-12-07: the score bounds, the cluster balance and the tag count share one ``$facet``,
  then the histogram);
- the anchor, in the same run: the four figures read one pass each with FiftyOne's public
  aggregations, as ``summarize_run`` did before (score bounds, histogram, cluster balance,
  tag count), each also timed alone.

    .venv/bin/python benchmarks/scale/panel_summary.py --n 200000

The database folder is deleted afterwards.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import private_db  # noqa: E402
from short_calls import median_seconds, select_cheaply  # noqa: E402


def _one_pass_each(ds, bins: int = 40) -> dict:
    """The four figures as `summarize_run` read them before 2026-12-07: one pass each."""
    from fiftyone import ViewField as F

    from fiftyone_elfs import dataset_io, runs

    names = runs.PipelineNames("elfs")
    field_name, region = names.score_field("aum"), names.region_field
    samples = dataset_io.every_slice(ds)
    finite = (F(field_name) > -math.inf) & (F(field_name) < math.inf)
    scored = samples.match(F(region).is_in(runs.REGIONS) & finite)
    out = {}
    t = time.perf_counter()
    low, high = scored.bounds(field_name)
    out["bounds"] = time.perf_counter() - t
    top = high + (high - low) * 1e-6
    position = ((F(field_name) - low) * (bins / (top - low))).floor()
    bin_index = position.max(0).min(bins - 1).to_int()
    t = time.perf_counter()
    scored.count_values(F(region).concat("|", bin_index.to_string()))
    out["histogram"] = time.perf_counter() - t
    pooled = (F(region) != None).if_else("1", "0")  # noqa: E711
    cored = F("tags").contains("elfs_coreset").if_else("1", "0")
    t = time.perf_counter()
    samples.count_values(F(f"{names.pseudo_label_field}.label").concat("|", pooled, "|", cored))
    out["clusters"] = time.perf_counter() - t
    t = time.perf_counter()
    dataset_io.count(dataset_io.tagged(ds, "elfs_coreset"))
    out["tag_count"] = time.perf_counter() - t
    out["total"] = sum(out.values())
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=200_000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--data-dir", default="/tmp/elfs-panel-summary")
    p.add_argument(
        "--keep", action="store_true", help="keep the database (a later run with --keep reuses it)"
    )
    args = p.parse_args()
    proc = private_db.use(os.path.join(args.data_dir, "db"))
    try:
        import fiftyone as fo

        name = f"elfs-panel-summary-{args.n}-{args.dim}"
        if args.keep and fo.dataset_exists(name):
            _time_summaries(fo.load_dataset(name))
            return
        rng = np.random.default_rng(0)
        t = time.perf_counter()
        ds = fo.Dataset(name)
        batch = 20_000
        for start in range(0, args.n, batch):
            rows = rng.normal(size=(min(batch, args.n - start), args.dim)).astype(np.float32)
            ds.add_samples(
                [
                    fo.Sample(filepath=f"/nonexistent/img{start + i:07d}.jpg", emb=row)
                    for i, row in enumerate(rows)
                ],
                progress=False,
            )
        print(f"dataset of {args.n:,} samples: {time.perf_counter() - t:.0f} s", flush=True)
        select_cheaply(ds)
        _time_summaries(ds)
        if not args.keep:
            ds.delete()
    finally:
        proc.terminate()
        proc.wait()
        if not args.keep:
            shutil.rmtree(args.data_dir, ignore_errors=True)


def _time_summaries(ds) -> None:
    from fiftyone_elfs import run_summary, runs

    summary = run_summary.summarize_run(ds)  # warm the cache once, checked below
    assert summary.histogram is not None and len(summary.clusters) == 10
    together = median_seconds(lambda: run_summary.summarize_run(ds), repeats=3)
    names = runs.PipelineNames("elfs")
    figures = median_seconds(
        lambda: run_summary.coreset_figures(ds, names, "aum", "elfs_coreset"), repeats=3
    )
    anchors = [_one_pass_each(ds) for _ in range(3)]
    print(f"summarize_run: {together:.2f} s (median of 3)", flush=True)
    print(f"  its coreset_figures alone: {figures:.2f} s (median of 3)", flush=True)
    print("the four figures one pass each (median of 3):", flush=True)
    for part in ("bounds", "histogram", "clusters", "tag_count", "total"):
        median = statistics.median(a[part] for a in anchors)
        print(f"  {part}: {median:.2f} s", flush=True)


if __name__ == "__main__":
    main()
