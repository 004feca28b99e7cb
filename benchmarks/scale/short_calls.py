"""Helpers shared by the scale benchmarks that time short calls (form redraws, the panel's
summary) on a dataset the pipeline has run on."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any


def median_seconds(fn: Callable[[], Any], repeats: int = 5) -> float:
    """The median wall time of `repeats` calls of `fn`, in seconds: steadier than the mean on
    cores shared with other jobs."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def select_cheaply(dataset: Any, embeddings_field: str = "emb") -> None:
    """The pipeline at its cheapest (k-means into 10 clusters, one MLP epoch, 10% budget, no
    plot) on precomputed embeddings, timed: the short calls then read what it wrote."""
    import fiftyone_elfs as elfs

    t = time.perf_counter()
    elfs.run_pipeline(
        dataset,
        budget_fraction=0.1,
        embeddings_field=embeddings_field,
        n_clusters=10,
        clustering="kmeans",
        epochs=1,
        visualize=False,
    )
    print(f"pipeline: {time.perf_counter() - t:.0f} s", flush=True)
