"""Delegated execution: when an operator's form defaults to it (`execution_options`), and how a
queued run stops when it is marked failed while a worker runs it (`StopWatch`).

FiftyOne's ``fiftyone delegated fail <id>`` (and ``delete``) only changes the operation's record;
the worker goes on computing and writes its results anyway. An ELFS operator run by a worker
reads its operation's state at most every `STOP_CHECK_S` seconds, as its progress comes in, and
the progress report that finds the operation failed or gone raises `RunStopped`:
the run stops there like an interrupted one (what it had started to write is rolled back by the
key's next run, as after Ctrl-C).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import fiftyone.operators as foo

from fiftyone_elfs.plugin.forms import dataset_gone
from fiftyone_elfs.progress import ProgressFn

# Work above this many samples defaults to delegated execution (immediate runs time out at 600 s).
CNN_DELEGATE_ABOVE = 2000  # training on pixels: minutes per thousand images on a CPU
DELEGATE_ABOVE = {
    "compute_embeddings": 5000,
    "compute_pseudo_labels": 20000,
    "compute_difficulty": 20000,
    "compute_contrastive_scores": CNN_DELEGATE_ABOVE,
    "run_elfs_pipeline": 3000,
}


def execution_options(name: str, ctx: Any) -> foo.ExecutionOptions:
    """Allows both modes; defaults to delegated when the target is large enough to be slow, and
    whenever the encoder is adapted first (`adapt_steps`: minutes whatever the size)."""
    threshold = DELEGATE_ABOVE.get(name)
    if ctx.params.get("proxy") == "cnn":
        threshold = min(threshold or CNN_DELEGATE_ABOVE, CNN_DELEGATE_ABOVE)
    if threshold is not None and ctx.params.get("adapt_steps"):
        threshold = 0
    target = None if threshold is None or dataset_gone(ctx) else ctx.target_view()  # what runs
    large = target is not None and len(target) > threshold
    return foo.ExecutionOptions(
        allow_immediate_execution=True,
        allow_delegated_execution=True,
        default_choice_to_delegated=large,
    )


#: How often (seconds) a worker's run reads its operation's state.
STOP_CHECK_S = 10.0


class RunStopped(RuntimeError):
    """The queued run was marked failed or deleted while it ran; it stops at its next report."""


class StopWatch:
    """Watches the delegated operation a context runs for (none for immediate runs)."""

    def __init__(self, ctx: Any) -> None:
        # FiftyOne keeps the operation's id on the context only privately (pinned 1.22)
        self._id = getattr(ctx, "_delegated_operation_id", None) if ctx.delegated else None
        self._last = time.monotonic()
        self.stopped = False
        self.interrupted = False  # Ctrl-C (or a cancelled task) where the call waits

    def interrupt(self) -> None:
        """Stops the run at its next progress report, as Ctrl-C stops a library call: the
        caller was interrupted while the library ran in a worker thread."""
        self.interrupted = True

    def check(self) -> None:
        """Reads the operation's state if `STOP_CHECK_S` has passed since the last read."""
        if self._id is None or self.stopped or time.monotonic() - self._last < STOP_CHECK_S:
            return
        from fiftyone.operators.delegated import DelegatedOperationService

        self._last = time.monotonic()
        try:
            doc = DelegatedOperationService().get(self._id)
        except Exception:  # noqa: BLE001 - a database hiccup must not stop a healthy run
            return
        self.stopped = doc is None or str(doc.run_state) == "failed"

    def reporter(self, put: Callable[[tuple[float, str]], None]) -> ProgressFn:
        """The library's progress callback: passes each report to `put`, and raises
        `RunStopped` once the operation was failed or deleted (the library's thread)."""

        def report(fraction: float, label: str) -> None:
            self.check()  # here, in the library's thread: this very report stops it
            self.raise_if_stopped()
            put((fraction, label))

        return report

    def raise_if_stopped(self) -> None:
        if self.interrupted:  # rolled back like a Ctrl-C of the library call itself
            raise KeyboardInterrupt("interrupted while it ran in a worker thread")
        if self.stopped:
            raise RunStopped(
                f"Operation {self._id} was marked failed (or deleted) while it ran, so it "
                "stopped here; what it had started to write is rolled back by this key's next "
                "run. Fix: queue it again to compute it."
            )
