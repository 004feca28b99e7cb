"""How an ELFS operator runs its library call: progress reported one way (a delegated
operation's record, a terminal bar for a script's ``__call__``, the App's bar), the library in a
worker thread, and a run stopped with its caller: a delegated operation marked failed, Ctrl-C in
a script or a notebook cell (the run rolls back and releases the key before the call raises).
"""

from __future__ import annotations

import asyncio
import inspect
import queue
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

import fiftyone.operators as foo
from fiftyone.operators.executor import ExecutionResult

from fiftyone_elfs.errors import ElfsInputError
from fiftyone_elfs.plugin.delegation import StopWatch
from fiftyone_elfs.progress import ProgressFn

#: The request parameter naming a ``__call__`` from a script (a key of `SCRIPT_CALLS`).
SCRIPT_CALL_PARAM = "elfs_script_call"


@dataclass
class ScriptCall:
    """A ``__call__`` in progress in this process: its terminal bar and, once done, its result
    or the `ElfsInputError` its form checks or its run refused the data with."""

    progress: ProgressFn
    result: Any = None
    error: ElfsInputError | None = None
    #: set when the caller is interrupted (Ctrl-C in a notebook cell) while the run goes on in
    #: a worker thread: the run stops at its next progress report
    interrupted: threading.Event = field(default_factory=threading.Event)

    def refuse(self, error: ElfsInputError) -> None:
        self.error = error


SCRIPT_CALLS: dict[str, ScriptCall] = {}


def script_call(ctx: Any) -> ScriptCall | None:
    """The script call `ctx` runs for, if any (never for a delegated run: another process)."""
    if ctx.delegated:
        return None
    return SCRIPT_CALLS.get(ctx.request_params.get(SCRIPT_CALL_PARAM) or "")


def report_progress(ctx: Any, fraction: float, label: str) -> Generator[Any, None, None]:
    """Reports progress the one way every ELFS operator does: recorded on the operation when
    delegated, a bar in the terminal for a script's ``__call__``, a progress bar in the App (a
    yielded ``set_progress`` op) when immediate."""
    call = script_call(ctx)
    if ctx.delegated:
        ctx.set_progress(progress=fraction, label=label)
    elif call is not None:
        call.progress(fraction, label)
    else:
        yield ctx.ops.set_progress(progress=fraction, label=label)


def run_with_progress(ctx: Any, fn: Callable[..., Any], **kwargs: Any) -> Generator[Any, None, Any]:
    """Runs `fn(**kwargs)` and reports its progress; returns what it returned.

    A function that takes ``progress`` runs in a worker thread and its (fraction, label)
    updates are streamed with `report_progress`; others just run. Re-raises `fn`'s error.
    """
    if "progress" not in inspect.signature(fn).parameters:
        return fn(**kwargs)
    updates: queue.Queue = queue.Queue()
    outcome: dict[str, Any] = {}
    watch = StopWatch(ctx)  # `fiftyone delegated fail` stops a worker's run at its next report

    def target() -> None:
        try:
            outcome["result"] = fn(progress=watch.reporter(updates.put), **kwargs)
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            outcome["error"] = e
        finally:
            updates.put(None)

    worker = threading.Thread(target=target, name="fiftyone-elfs", daemon=True)
    worker.start()
    last, last_time = -1.0, 0.0
    call = script_call(ctx)
    try:
        while True:
            if not watch.interrupted and interrupt_requested(call):
                watch.interrupt()  # the worker raises at its next report, rolling back
            try:
                item = updates.get(timeout=POLL_S)
            except queue.Empty:
                continue
            if item is None:
                break
            fraction, label = item
            now = time.monotonic()  # a new label passes once a second even if the bar stays put
            if fraction - last < 0.01 and fraction < 1.0 and now - last_time < 1.0:
                continue
            last, last_time = fraction, now
            yield from report_progress(ctx, fraction, label)
    except BaseException:  # Ctrl-C, a cancelled task, a closed generator: stop the run too
        watch.interrupt()
        while updates.get() is not None:  # its rollback and lease release done first
            pass
        raise
    worker.join()
    if watch.interrupted and "error" in outcome:  # stopped for its caller: the call's loop
        raise asyncio.CancelledError()  # ends as cancelled, i.e. a KeyboardInterrupt there
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("result")


#: How often the wait for a run's progress looks for an interrupt of its caller (seconds).
POLL_S = 0.2


def interrupt_requested(call: ScriptCall | None) -> bool:
    """Whether the script that called a running operator was interrupted: Ctrl-C in a notebook
    cell (the call's event, set by `execute_blocking`), or Ctrl-C in a script, which the event
    loop FiftyOne starts for the call turns into a cancel request of its task that a run in a
    worker thread would never see (every task of that loop is the call's). Never for a run of
    the App or of a delegated worker (a failed operation stops those: `StopWatch`)."""
    if call is None:
        return False
    if call.interrupted.is_set():
        return True
    try:
        tasks = asyncio.all_tasks()
    except RuntimeError:  # no event loop in this thread
        return False
    return any(task.cancelling() > 0 for task in tasks)


def reload_dataset(ctx: Any) -> Generator[Any, None, None]:
    """Asks the App to show what a run wrote (only an App session, not a delegated run)."""
    if not ctx.delegated:
        yield ctx.trigger("reload_dataset")


def execute_blocking(
    uri: str,
    ctx: dict[str, Any],
    on_interrupt: Callable[[], None] = lambda: None,
    **kwargs: Any,
) -> ExecutionResult:
    """`foo.execute_operator`, returning its ``ExecutionResult`` (raising its ``ExecutionError``)
    even where an event loop runs in this thread, as in a notebook cell: there FiftyOne would only
    schedule the run as a task, so it runs in a worker thread with a loop of its own. Ctrl-C
    while it runs there calls `on_interrupt` (which stops the run) and waits for the run to
    stop before raising: it no longer went on in the background holding the key's lease."""
    try:
        asyncio.get_running_loop()
        loop_running = True
    except RuntimeError:
        loop_running = False
    if not loop_running:  # outside the except block: its errors carry no RuntimeError context
        return foo.execute_operator(uri, ctx, **kwargs)
    outcome: dict[str, Any] = {}

    finished = threading.Event()  # not Thread.join: one interrupted by Ctrl-C (Python 3.11)
    # marks the thread finished, and a second join returns while it still runs

    def target() -> None:
        try:
            outcome["result"] = foo.execute_operator(uri, ctx, **kwargs)
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            outcome["error"] = e
        finally:
            finished.set()

    threading.Thread(target=target, name="fiftyone-elfs-call", daemon=True).start()
    try:
        finished.wait()
    except BaseException:
        on_interrupt()
        finished.wait()
        raise
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]
