"""Scores the plan in README.md from the explorer's rows (paired differences to random, mean over
seeds, one-sided 90% lower bound: mean - 1.383 x sd / sqrt(n), as in ../d2-large-budget-tuning).

    .venv/bin/python benchmarks/results/d2-colour-confirmation/score.py
"""

from __future__ import annotations

import collections
import json
import math
import os
import statistics

HERE = os.path.dirname(__file__)
SETS = ["confirm-cifar5-lt6", "confirm-cifar4", "confirm-cifar9-lt10", "confirm-cifar6-lt3"]
RATES = (30.0, 50.0, 70.0)


def main() -> None:
    means: dict[tuple[str, str], float] = {}
    for name in SETS:
        accuracy = collections.defaultdict(dict)
        with open(os.path.join(HERE, name + ".jsonl"), encoding="utf-8") as f:
            for line in f:
                row = json.loads(line)
                if row.get("accuracy") is not None:
                    accuracy[row["method"], float(row["rate"])][row["seed"]] = row["accuracy"]
        for method in ("d2", "typiclust"):
            cells = []
            for rate in RATES:
                rows, base = accuracy[method, rate], accuracy["random", rate]
                diffs = [100 * (rows[s] - base[s]) for s in rows if s in base]
                mean = statistics.mean(diffs)
                low = mean - 1.383 * statistics.stdev(diffs) / math.sqrt(len(diffs))
                cells.append(f"{mean:+.2f} [{low:+.2f}] (n{len(diffs)})")
                means[name, method] = means.get((name, method), 0.0) + mean / len(RATES)
            print(f"{name:20s} {method:10s} 30 / 50 / 70%:", " | ".join(cells))
    gaps = [means[n, "d2"] - means[n, "typiclust"] for n in SETS]
    print(f"(1) mean of the 12 cells, d2 - typical: {statistics.mean(gaps):+.2f} (needs >= +0.15)")
    print(f"(2) the worst set, d2 - typical: {min(gaps):+.2f} (needs >= -0.25)")
    for name in SETS:
        print(f"    {name:20s} set means: d2 {means[name, 'd2']:+.2f}, typical "
              f"{means[name, 'typiclust']:+.2f}")  # fmt: skip
    worst = min(means[n, "d2"] for n in SETS)
    print(f"(3) d2's lowest set mean over random: {worst:+.2f} (needs >= 0)")


if __name__ == "__main__":
    main()
