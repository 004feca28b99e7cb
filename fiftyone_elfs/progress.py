"""Progress reporting shared by the library and the operators: a callback of (fraction, label)."""

from __future__ import annotations

from collections.abc import Callable

from tqdm.auto import tqdm

ProgressFn = Callable[[float, str], None]


def terminal_progress(description: str) -> ProgressFn:
    """A callback that draws a tqdm bar in the terminal (the default for scripts)."""
    bar = tqdm(
        total=1000,
        desc=description,
        unit="",
        bar_format="{l_bar}{bar}| {elapsed}<{remaining} {postfix}",
    )
    state = {"done": 0}

    def report(fraction: float, label: str) -> None:
        target = int(round(min(max(fraction, 0.0), 1.0) * 1000))
        if target > state["done"]:
            bar.update(target - state["done"])
            state["done"] = target
        bar.set_postfix_str(label, refresh=False)
        if target >= 1000:
            bar.close()

    return report


def sub_progress(
    progress: ProgressFn | None, start: float, stop: float, prefix: str
) -> ProgressFn | None:
    """Maps a stage's 0..1 progress into [start, stop] of an overall bar, with a stage label."""
    if progress is None:
        return None

    def report(fraction: float, label: str) -> None:
        progress(start + (stop - start) * min(max(fraction, 0.0), 1.0), f"{prefix}: {label}")

    return report
