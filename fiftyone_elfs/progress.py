"""Progress reporting shared by the library and the operators: a callback of (fraction, label)."""

from __future__ import annotations

import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from tqdm.auto import tqdm

ProgressFn = Callable[[float, str], None]


#: Seconds between redraws of a bar whose output is not a terminal (a log file, CI): tqdm
#: appends every redraw there, and TEMI alone relabels its bar 500 times.
LOG_REDRAW_SECONDS = 5.0
_TERMINAL_REDRAW_SECONDS = 0.1  # tqdm's own default
_DIGITS = re.compile(r"\d+")


def terminal_progress(description: str) -> ProgressFn:
    """A callback that draws a tqdm bar in the terminal (the default for scripts).

    A call that does not advance the bar still redraws it with the new label (and elapsed
    time), so a long step that only updates its label does not look stuck; such redraws, like
    tqdm's own, come at most every 0.1 s in a terminal and every `LOG_REDRAW_SECONDS` when the
    output goes to a file. A call that starts a new stage (the label's text before its first
    ':' changes other than in its numbers) always redraws, so every stage that ran is shown at
    least once, however fast it was.
    """
    interactive = sys.stderr.isatty()
    every = _TERMINAL_REDRAW_SECONDS if interactive else LOG_REDRAW_SECONDS
    bar = tqdm(
        total=1000,
        desc=description,
        unit="",
        bar_format="{l_bar}{bar}| {elapsed}<{remaining} {postfix}",
        mininterval=every,
    )
    state: dict = {"done": 0, "stage": None, "drawn": 0.0, "label": ""}

    def redraw() -> None:
        bar.refresh()
        state["drawn"] = time.monotonic()

    def report(fraction: float, label: str) -> None:
        target = int(round(min(max(fraction, 0.0), 1.0) * 1000))
        stage = _DIGITS.sub("#", label.split(":", 1)[0])  # "TEMI epoch 3/500" -> "TEMI epoch #/#"
        new_stage = stage != state["stage"]
        state["stage"], state["label"] = stage, label
        bar.set_postfix_str(label, refresh=False)
        if target > state["done"]:
            bar.update(target - state["done"])  # tqdm redraws at most every `every` seconds
            state["done"] = target
            if new_stage:
                redraw()
        elif new_stage or time.monotonic() - state["drawn"] >= every:
            redraw()
        if target >= 1000:
            bar.close()

    def stop(why: str) -> None:
        if not bar.disable:  # not closed yet: the work ended before its last report
            bar.set_postfix_str(f"{state['label']} {why}".strip(), refresh=False)
            bar.close()

    report.stop = stop  # type: ignore[attr-defined]
    opened = getattr(_open_bars, "stops", None)
    if opened is not None:
        opened.append(stop)
    return report


_open_bars = threading.local()


def first_report_progress(description: str) -> ProgressFn:
    """A `terminal_progress` bar drawn at its first report, not before: for a stage whose set-up
    (building an encoder) may fail, so that a failure shows no bar, just the error."""
    bar: list[ProgressFn] = []

    def report(fraction: float, label: str) -> None:
        if not bar:
            bar.append(terminal_progress(description))
        bar[0](fraction, label)

    def stop(why: str) -> None:
        if bar:
            stop_progress(bar[0], why)

    report.stop = stop  # type: ignore[attr-defined]
    return report


@contextmanager
def failed_bars_closed() -> Iterator[None]:
    """Closes, marked failed, the terminal bars opened inside the block if it raises (a stage
    that fails leaves no bar open at the fraction it reached, as if still running)."""
    outer = getattr(_open_bars, "stops", None)
    _open_bars.stops = []
    try:
        yield
    except BaseException:
        for stop in _open_bars.stops:
            stop("(failed)")
        raise
    finally:
        if outer is not None:
            outer.extend(_open_bars.stops)
        _open_bars.stops = outer


def stop_progress(progress: ProgressFn, why: str) -> None:
    """Closes a terminal bar (`terminal_progress`) whose work ended early, where it stopped and
    labelled `why`, instead of leaving it open as if still running; other callbacks are left
    as they are."""
    stop = getattr(progress, "stop", None)
    if stop is not None:
        stop(why)


def sub_progress(
    progress: ProgressFn | None, start: float, stop: float, prefix: str
) -> ProgressFn | None:
    """Maps a stage's 0..1 progress into [start, stop] of an overall bar, with a stage label."""
    if progress is None:
        return None

    def report(fraction: float, label: str) -> None:
        progress(start + (stop - start) * min(max(fraction, 0.0), 1.0), f"{prefix}: {label}")

    return report


@contextmanager
def ticking(progress: ProgressFn, interval: float = 2.0) -> Iterator[ProgressFn]:
    """A callback for a step with long silent stretches (UMAP reports nothing while it runs).

    Yields a callback that passes each call on to `progress`; while no call comes for
    `interval` seconds, it repeats the last label with how long that part has been running
    ("UMAP on all 2000 samples (12 s)"), so the bar shows the work is alive instead of sitting
    still. The fraction is never guessed: it only moves when the step reports.

    The repeats come from a helper thread. An exception `progress` raises there (a caller
    cancelling) is raised again in the calling thread: at the step's next report, else when
    the step ends, so that the step's result is not used.
    """
    lock = threading.Lock()
    state = {"fraction": 0.0, "label": "", "since": time.monotonic()}
    raised: list[BaseException] = []
    stop = threading.Event()

    def report(fraction: float, label: str) -> None:
        with lock:
            if raised:
                raise raised[0]
            state.update(fraction=fraction, label=label, since=time.monotonic())
            progress(fraction, label)

    def tick() -> None:
        while not stop.wait(interval):
            with lock:
                if state["label"]:
                    seconds = time.monotonic() - state["since"]
                    try:
                        progress(state["fraction"], f"{state['label']} ({seconds:.0f} s)")
                    except BaseException as e:  # the caller's to see, in its own thread
                        raised.append(e)
                        return

    thread = threading.Thread(target=tick, name="fiftyone-elfs-ticker", daemon=True)
    thread.start()
    try:
        yield report
    finally:
        stop.set()
        thread.join()
    if raised:
        raise raised[0]
