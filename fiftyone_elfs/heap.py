"""Keeping freed memory in the process heap while torch loops run, so they stop page-faulting.

No FiftyOne, no torch: plain ctypes on glibc, a no-op elsewhere.

Every batch of a torch loop (an encoder's forward pass, a training step) allocates and frees
the same tens of MB of activations. By default glibc serves blocks of 32 MB and more with
fresh ``mmap()`` calls and returns heap tops over 64 MB to the kernel, so each batch touches
fresh pages and faults them in again. Measured on this project's 2-core CPU machine:

- TEMI (8 heads, batch 1,024): about 60,000 faults and 30-75% extra time per step;
- the EfficientNet-Lite0 encoder at 128 px, batch 64, inside the embedding loop: about 3,000
  faults per image and 63 images/s, against about 100 faults and 106-123 images/s with the
  thresholds raised (three runs of 1,024 CIFAR-10 images each way).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import sys
import threading
from collections.abc import Iterator

__all__ = ["keep_freed_memory"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_RAISED = 1 << 30  # keep up to 1 GB of freed blocks; serve blocks under 1 GB from the heap
_GLIBC_MMAP_THRESHOLD = 32 << 20  # glibc's usual values once its thresholds have adapted
_GLIBC_TRIM_THRESHOLD = 64 << 20

_lock = threading.Lock()
_depth = 0


def _libc() -> ctypes.CDLL | None:
    """glibc with mallopt and malloc_trim, or None (not Linux, or another C library)."""
    if not sys.platform.startswith("linux"):
        return None
    with contextlib.suppress(OSError, TypeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim"):
            return libc
    return None


@contextlib.contextmanager
def keep_freed_memory() -> Iterator[None]:
    """Raise glibc's mmap and trim thresholds for the duration, then restore and release.

    Re-entrant and safe across threads and suspended generators: the thresholds are raised by
    the first entry and restored, with the cached memory handed back (``malloc_trim``), by the
    last exit. Memory freed inside stays with the process until then, so the peak resident size
    can be higher by what the loop frees between two batches (its activations).
    """
    global _depth
    libc = _libc()
    if libc is None:
        yield
        return
    with _lock:
        _depth += 1
        if _depth == 1:
            libc.mallopt(_M_MMAP_THRESHOLD, _RAISED)
            libc.mallopt(_M_TRIM_THRESHOLD, _RAISED)
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                libc.mallopt(_M_MMAP_THRESHOLD, _GLIBC_MMAP_THRESHOLD)
                libc.mallopt(_M_TRIM_THRESHOLD, _GLIBC_TRIM_THRESHOLD)
                libc.malloc_trim(0)
