"""Benchmark entry point: ``.venv/bin/python benchmarks/run_benchmark.py --help``.

See benchmarks/README.md for the methods, protocols and how to run the smoke and full runs.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from elfs_bench.cli import main  # noqa: E402  (elfs_bench sets OMP_WAIT_POLICY before torch)

if __name__ == "__main__":
    main()
