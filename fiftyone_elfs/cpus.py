"""How many CPU cores this process may use (its affinity, not the machine's count).

No FiftyOne, no torch: both the embedding loop and the database writes size their threads
with it, and the image decoders their worker processes (`decode_workers`).
"""

from __future__ import annotations

import os

__all__ = ["MAX_DECODE_WORKERS", "available_cpus", "decode_workers"]

#: Decoding processes by default when a GPU runs the model (`decode_workers`): a bound for
#: many-core machines, not a target (each process decoded about 700-1,300 CIFAR-sized JPEGs a
#: second on the H200 machine, whose GPU embeds about 21,000 a second at 128 px).
MAX_DECODE_WORKERS = 32


def available_cpus() -> int:
    """CPUs this process may run on (``sched_getaffinity``; the machine's count elsewhere)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def decode_workers(num_workers: int | None, model_on_gpu: bool) -> int:
    """Image-decoding worker processes: `num_workers` when given, else the default.

    The default: on a CPU none (decoding in the calling process), because the model's threads
    already use every core and a decoding process takes one from them (measured on the
    embedding loop: `benchmarks/results/scale`); with a GPU running the model, one process
    per core but one (at most `MAX_DECODE_WORKERS`), because there decoding is the bottleneck:
    on an H200 with 16 cores (loops after a first one in the process), 50,000 CIFAR-sized JPEGs
    took 10,114 images a second with 8 processes and 10,870-11,305 with 15 (the encoder alone
    on decoded batches: 10,004), 500 px photos 3,023 and 4,060 (`benchmarks/scale/gpu_check.py`,
    `benchmarks/results/scale/`).
    """
    if num_workers is not None:
        return num_workers
    if not model_on_gpu:
        return 0
    return max(0, min(MAX_DECODE_WORKERS, available_cpus() - 1))
