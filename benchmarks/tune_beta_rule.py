"""Tune the label-free beta rule on the VALIDATION split (never on test).

The rule being tuned: beta = c * (1 - budget_fraction), i.e. drop the fraction ``c`` of the
samples that pruning removes from the hard end of the pseudo-label AUM ranking and the rest from
the easy end. For each pruning rate, seed and ``c`` this trains the downstream model of each
requested protocol on the ELFS k-means selection (double-end window or CCS) and scores it on the
validation split carved from the pool; random and supervised CCS (beta = c * (1 - f) as well, on
true-label AUM) are scored the same way for reference. Results go to
``results/<run-name>/tuning.json`` (resumable) and ``tuning.md``.

The commands that produced ``results/beta-rule-tuning`` are in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
from elfs_bench import data as bdata  # noqa: E402
from elfs_bench.cli import _floats, _ints  # noqa: E402
from elfs_bench.methods import (  # noqa: E402
    ArtefactCache,
    LabeledInputs,
    LabelFreeInputs,
    MethodContext,
    MethodParams,
    _difficulty,
)
from elfs_bench.protocols import (  # noqa: E402
    TrainConfig,
    feature_stats,
    pixel_stats,
    protocol_a,
    protocol_b,
)
from elfs_bench.runner import REPO, _budget, provenance  # noqa: E402

from fiftyone_elfs.selection.baselines import random_select  # noqa: E402

BENCH_DIR = os.path.join(REPO, "benchmarks")


def _log(message: str) -> None:
    print(f"[tune] {message}", file=sys.stderr, flush=True)


def _select(mode: str, aum: np.ndarray, budget: int, beta: float, seed: int) -> np.ndarray:
    """ELFS selection from a difficulty ranking: the double-end window or CCS."""
    from fiftyone_elfs.selection import ccs_select, double_end_prune

    if mode == "ccs":
        return np.sort(ccs_select(aum, budget, beta, seed=seed))
    return np.sort(double_end_prune(aum, budget, beta).indices)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--cifar10-archive",
        default=os.path.join(REPO, "..", "shared", "data", "cifar10-jpg.tar.gz"),
    )
    p.add_argument("--pool-size", type=int, default=10000)
    p.add_argument("--test-size", type=int, default=2000)
    p.add_argument("--rates", type=_floats, default=[70, 90])
    p.add_argument("--seeds", type=_ints, default=[0])
    p.add_argument("--cs", type=_floats, default=[0.0, 0.25, 0.5, 0.75])
    p.add_argument("--modes", default="double-end,ccs")
    p.add_argument("--clusterings", default="kmeans")
    p.add_argument("--protocols", default="A,B")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--run-name", default="beta-rule-tuning")
    p.add_argument("--cache-dir", default=os.path.join(BENCH_DIR, "cache"))
    args = p.parse_args(argv)

    data = bdata.load_bench_data(cifar10_archive=args.cifar10_archive, pool_size=args.pool_size,
                                 test_size=args.test_size, cache_dir=args.cache_dir)  # fmt: skip
    protocols = [s.strip().upper() for s in args.protocols.split(",") if s.strip()]
    bdata.load_features(data, args.cache_dir, "efficientnet-lite0", 128, "B" in protocols)
    pool, val = data.pool, data.val
    n = len(pool)
    params = MethodParams()
    artefacts = ArtefactCache(
        bdata.artefact_folder(args.cache_dir, data, "efficientnet-lite0", 128)
    )
    inputs = LabelFreeInputs(pool.embeddings, pool.pixels, pool.paths, len(data.classes),
                             artefacts, params)  # fmt: skip
    emb_stats = feature_stats(pool.embeddings)
    pix_stats = pixel_stats(pool.pixels) if pool.pixels is not None else None
    no_eval = lambda idx: float("nan")  # noqa: E731 - never called: beta is given here
    labeled = LabeledInputs(pool.labels, no_eval, no_eval)

    out_dir = os.path.join(BENCH_DIR, "results", args.run_name)
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "tuning.json")
    results: dict = {}
    if os.path.exists(path):
        with open(path) as f:
            results = json.load(f)["results"]
    command = shlex.join([sys.executable, "benchmarks/tune_beta_rule.py", *(argv or sys.argv[1:])])
    meta = {"split_scored": "validation", "n_pool": n, "n_val": len(val),
            "steps": args.steps, "width": args.width, **provenance(command)}  # fmt: skip

    def score(idx: np.ndarray, seed: int, protocol: str) -> float:
        if protocol == "A":
            return protocol_a(pool.embeddings[idx], pool.labels[idx], val.embeddings, val.labels,
                              emb_stats).accuracy  # fmt: skip
        cfg = TrainConfig(steps=args.steps, width=args.width)
        return protocol_b(pool.pixels[idx], pool.labels[idx], val.pixels, val.labels,
                          len(data.classes), seed, pix_stats, cfg).accuracy  # fmt: skip

    computed = 0
    jobs = []
    for seed in args.seeds:
        for rate in args.rates:
            jobs.append(("random", None, None, rate, seed))
            for c in args.cs:
                for mode in args.modes.split(","):
                    for clustering in args.clusterings.split(","):
                        jobs.append((f"elfs_{clustering}", mode, c, rate, seed))
                jobs.append(("supervised", "ccs", c, rate, seed))
    for protocol in protocols:  # all of A first: it is cheap and shows the shape early
        for name, mode, c, rate, seed in jobs:
            key = f"{protocol}|{name}|{mode}|{c}|{rate:g}|{seed}"
            if key in results:
                continue
            budget = _budget(rate, n)
            if name == "random":
                idx = random_select(n, budget, seed=seed)
                beta = None
            else:
                clustering = "truth" if name == "supervised" else name.split("_", 1)[1]
                ctx = MethodContext(inputs, labeled if clustering == "truth" else None)
                aum = _difficulty(ctx, seed, clustering)[0]["aum"]
                beta = c * (1 - budget / n)
                idx = _select(mode, aum, budget, beta, seed)
            t0 = time.perf_counter()
            acc = score(idx, seed, protocol)
            results[key] = {"protocol": protocol, "method": name, "mode": mode, "c": c,
                            "beta": beta, "rate": rate, "seed": seed, "val_accuracy": acc,
                            "seconds": round(time.perf_counter() - t0, 1)}  # fmt: skip
            computed += 1
            _log(f"{key}: val accuracy {acc:.4f} ({results[key]['seconds']} s)")
            with open(path + ".tmp", "w") as f:
                json.dump({"meta": meta, "results": results}, f, indent=1)
            os.replace(path + ".tmp", path)
    table = os.path.join(out_dir, "tuning.md")
    if computed == 0 and os.path.exists(table):
        # its header names the command that computed the rows; a rerun that reused them all
        # would put its own command there
        _log(f"every row was on disk already: {table} left as it is")
        return
    _write_table(results, table, meta)


def _write_table(results: dict, path: str, meta: dict) -> None:
    """Mean validation accuracy per (protocol, method, mode, c) and rate, minus random."""
    rows: dict = {}
    rand: dict = {}
    for r in results.values():
        if r["method"] == "random":
            rand.setdefault((r["protocol"], r["rate"]), []).append(r["val_accuracy"])
    for r in results.values():
        if r["method"] == "random":
            continue
        key = (r["protocol"], r["method"], r["mode"], r["c"])
        rows.setdefault(key, {}).setdefault(r["rate"], []).append(r["val_accuracy"])
    rates = sorted({r["rate"] for r in results.values()})
    lines = [
        "# Beta-rule tuning on the VALIDATION split (beta = c * (1 - budget fraction))",
        "",
        f"Command: `{meta['command']}`; commit `{meta['commit']}`; pool {meta['n_pool']}, "
        f"validation {meta['n_val']}; protocol B: {meta['steps']} steps, width {meta['width']}.",
        "Cells: mean validation accuracy (%) over seeds, and in brackets the difference to random.",
        "",
        "| protocol | method | selection | c | " + " | ".join(f"{r:g}%" for r in rates) + " |",
        "|---" * (4 + len(rates)) + "|",
    ]
    for protocol in sorted({k[0] for k in rows}):
        base = [f"{100 * np.mean(rand[(protocol, r)]):.2f}" if (protocol, r) in rand else "–"
                for r in rates]  # fmt: skip
        lines.append(f"| {protocol} | random | – | – | " + " | ".join(base) + " |")
        for key in sorted(k for k in rows if k[0] == protocol):
            cells = []
            for r in rates:
                vals = rows[key].get(r)
                if not vals:
                    cells.append("–")
                    continue
                diff = np.mean(vals) - np.mean(rand.get((protocol, r), [np.nan]))
                cells.append(f"{100 * np.mean(vals):.2f} ({100 * diff:+.2f})")
            lines.append(f"| {protocol} | {key[1]} | {key[2]} | {key[3]:g} | " + " | ".join(cells)
                         + " |")  # fmt: skip
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
