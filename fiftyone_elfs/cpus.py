"""How many CPU cores this process may use (its affinity, not the machine's count).

No FiftyOne, no torch: both the embedding loop and the database writes size their threads
with it.
"""

from __future__ import annotations

import os

__all__ = ["available_cpus"]


def available_cpus() -> int:
    """CPUs this process may run on (``sched_getaffinity``; the machine's count elsewhere)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
