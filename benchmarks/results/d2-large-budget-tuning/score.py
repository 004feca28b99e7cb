"""Scores the plan in README.md from the explorer's jsonl rows: paired differences to random
(mean over seeds, one-sided 90% lower bound with the normal quantile 1.383 / sqrt(n) scaling of
the seeds' standard deviation, as the other tuning folders report them).

    .venv/bin/python benchmarks/results/d2-large-budget-tuning/score.py
"""

from __future__ import annotations

import collections
import json
import math
import os
import statistics

RESULTS = os.path.join(os.path.dirname(__file__), "..")
FRESH = ["fresh-cifar3", "fresh-cifar6-lt4-gray", "fresh-cifar8-lt8", "fresh-cifar10-s250"]
EARLIER = [
    ("selection-rule-tuning/digits10-gray", (50.0, 70.0)),
    ("long-tail-tuning/cifar4-lt20", (50.0, 70.0)),
    ("long-tail-tuning/cifar10-lt10", (50.0, 70.0)),
    ("selection-rule-tuning/explore", (30.0, 50.0, 70.0)),
]
METHODS = ("d2", "cell_incellg")


def load(name: str) -> tuple[dict, dict]:
    accuracy, tail = collections.defaultdict(dict), collections.defaultdict(dict)
    with open(os.path.join(RESULTS, name + ".jsonl"), encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if row.get("accuracy") is None:
                continue
            cell = (row["method"], row["protocol"], float(row["rate"]))
            accuracy[cell][row["seed"]] = row["accuracy"]
            tail[cell][row["seed"]] = row.get("tail_coverage")
    return accuracy, tail


def paired(accuracy: dict, method: str, protocol: str, rate: float) -> tuple | None:
    base, rows = (
        accuracy.get(("random", protocol, rate), {}),
        accuracy.get((method, protocol, rate)),
    )
    if not rows:
        return None
    diffs = [100 * (rows[s] - base[s]) for s in rows if s in base]
    if len(diffs) < 2:
        return None
    mean = statistics.mean(diffs)
    return mean, mean - 1.383 * statistics.stdev(diffs) / math.sqrt(len(diffs)), len(diffs)


def fmt(cell: tuple | None) -> str:
    return "-" if cell is None else f"{cell[0]:+.2f} [{cell[1]:+.2f}] (n{cell[2]})"


def main() -> None:
    print("Fresh sets, protocol A, 30 / 50 / 70%: mean [one-sided 90% lower bound] (seeds)")
    cells = {m: [] for m in METHODS}
    set_means = {}
    for name in FRESH:
        accuracy, tail = load(f"budget-regime-tuning/{name}")
        for method in METHODS:
            row = [paired(accuracy, method, "A", r) for r in (30.0, 50.0, 70.0)]
            cover = [statistics.mean(tail[(method, "A", r)].values()) for r in (30.0, 50.0, 70.0)]
            print(f"  {name:22s} {method:13s}", " | ".join(fmt(c) for c in row),
                  " tail coverage", " ".join(f"{c:.2f}" for c in cover))  # fmt: skip
            cells[method] += [c[0] for c in row]
            set_means[name, method] = statistics.mean(c[0] for c in row)
    gain = statistics.mean(cells["d2"]) - statistics.mean(cells["cell_incellg"])
    print(f"  mean of the 12 cells: d2 {statistics.mean(cells['d2']):+.2f}, cell_incellg "
          f"{statistics.mean(cells['cell_incellg']):+.2f}; (1) d2 - cell_incellg = {gain:+.2f} "
          "(needs >= +0.15)")  # fmt: skip
    worst = min(set_means[n, "d2"] - set_means[n, "cell_incellg"] for n in FRESH)
    for name in FRESH:
        print(f"  {name:22s} set mean d2 - cell_incellg: "
              f"{set_means[name, 'd2'] - set_means[name, 'cell_incellg']:+.2f}")  # fmt: skip
    print(f"  (2) the worst set: {worst:+.2f} (needs >= -0.25)")
    print("Earlier validation sets, protocol A")
    earlier = {m: [] for m in METHODS}
    for name, rates in EARLIER:
        accuracy, _ = load(name)
        for method in METHODS:
            row = [paired(accuracy, method, "A", r) for r in rates]
            print(f"  {name:38s} {method:13s}", " | ".join(fmt(c) for c in row))
            earlier[method] += [c[0] for c in row]
    lead = statistics.mean(earlier["d2"]) - statistics.mean(earlier["cell_incellg"])
    print(f"  (3) mean over their cells, d2 - cell_incellg = {lead:+.2f} (needs >= -0.10)")
    accuracy, _ = load("selection-rule-tuning/explore")
    print("The CIFAR-10 tuning pool, protocols B and C (reported, not scored)")
    for protocol in ("B", "C"):
        for method in METHODS:
            row = [paired(accuracy, method, protocol, r) for r in (50.0, 70.0)]
            print(f"  {protocol} {method:13s} 50 / 70%:", " | ".join(fmt(c) for c in row))


if __name__ == "__main__":
    main()
