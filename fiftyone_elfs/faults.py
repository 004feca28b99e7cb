"""Kill hooks for the fault-injection tests: a named point where a process can be SIGKILLed.

Any stage calls `kill_point(stage, label)` where an interruption must leave nothing half-written
(between two chunk writes, between the field writes and the run record, during a tag update,
during an export copy); `watch_progress` makes every progress report of a stage such a point.
Both do nothing unless the environment variable ``ELFS_KILL_AT`` names the point:

    ELFS_KILL_AT="<stage>:<label>:<count>"    e.g. "difficulty:progress:4", "coreset:tag:1"

kills the process (``SIGKILL``: no cleanup, no ``finally``, no atexit) the <count>-th time the
point is reached. Why an environment variable and a count rather than a timer: the kill lands
at the same place on every run and machine, so a test can name what it interrupted.
"""

from __future__ import annotations

import collections
import os
import signal
import threading

from fiftyone_elfs.progress import ProgressFn

ENV = "ELFS_KILL_AT"
_counts: collections.Counter[tuple[str, str]] = collections.Counter()
_lock = threading.Lock()


def _target() -> tuple[str, str, int] | None:
    spec = os.environ.get(ENV)
    if not spec:
        return None
    stage, label, count = spec.rsplit(":", 2)
    return stage, label, int(count)


def kill_point(stage: str, label: str) -> None:
    """SIGKILLs this process if ``ELFS_KILL_AT`` names this point and its count is reached."""
    target = _target()
    if target is None or target[:2] != (stage, label):
        return
    with _lock:
        _counts[(stage, label)] += 1
        reached = _counts[(stage, label)] == target[2]
    if reached:
        os.kill(os.getpid(), signal.SIGKILL)


def watch_progress(stage: str, progress: ProgressFn | None) -> ProgressFn | None:
    """`progress`, unchanged unless ``ELFS_KILL_AT`` names ``<stage>:progress:<n>``; then a
    reporter that passes each report on and is a kill point (the n-th report kills)."""
    target = _target()
    if target is None or target[:2] != (stage, "progress"):
        return progress

    def report(fraction: float, label: str) -> None:
        if progress is not None:
            progress(fraction, label)
        kill_point(stage, "progress")

    return report
