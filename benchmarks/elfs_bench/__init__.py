"""ELFS benchmark harness: which label-free coreset trains the best model at a labeling budget?

Modules: ``data`` (datasets, splits, cached features), ``methods`` (the selection registry),
``protocols`` (downstream training: A = linear probe on frozen embeddings, B = small CNN on
pixels), ``runner`` (the resumable loop writing one JSON per result), ``report`` (tables, plots)
and ``cli`` (``python benchmarks/run_benchmark.py``).
"""

import os

# Before torch is first imported: with another process on the cores, OpenMP's default
# busy-waiting made this harness ~5x slower on 2 cores (smoke run 187 s vs 35 s). Set
# OMP_WAIT_POLICY yourself to override; it has no effect once torch is already loaded.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__all__ = ["cli", "data", "methods", "protocols", "report", "runner"]
