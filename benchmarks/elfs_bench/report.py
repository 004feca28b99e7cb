"""Tables and plots from a run folder's raw JSON results.

Writes ``table_<protocol>.md`` (accuracy mean +- std per method and pruning rate, the paired
difference to random for the same seed with its one-sided lower bound and per seed, and
per-method details: beta, cluster accuracy, cost),
``plot_<protocol>.png`` (accuracy and difference to random vs pruning rate) and ``results.csv``.
"""

from __future__ import annotations

import csv
import glob
import json
import os
from collections import defaultdict
from collections.abc import Callable

import numpy as np

__all__ = ["load_results", "write_report"]

LABELS_MARK = "†"  # uses labels
ORACLE_MARK = "‡"  # uses TEST labels: an upper bound, not a method


def load_results(run_dir: str) -> list[dict]:
    """Every result JSON under ``run_dir/raw``."""
    rows = []
    for path in sorted(glob.glob(os.path.join(run_dir, "raw", "*.json"))):
        with open(path) as f:
            rows.append(json.load(f))
    return rows


def _order(rows: list[dict]) -> list[str]:
    """Methods in registry order (unknown names last, alphabetically)."""
    from .methods import METHODS

    names = {r["method"] for r in rows}
    known = [m for m in METHODS if m in names]
    return known + sorted(names - set(known))


def _display(name: str, row: dict) -> str:
    if row.get("oracle"):
        return f"{name} {ORACLE_MARK} (oracle)"
    if row.get("uses_labels"):
        return f"{name} {LABELS_MARK}"
    return name


def _fmt(values: list[float], scale: float = 100.0, signed: bool = False) -> str:
    """'mean ± std (n)' in percentage points; std only with 2+ values."""
    if not values:
        return "–"
    v = np.asarray(values, dtype=np.float64) * scale
    mean = f"{v.mean():+.2f}" if signed else f"{v.mean():.2f}"
    if v.size == 1:
        return f"{mean} (1)"
    return f"{mean} ± {v.std(ddof=1):.2f} ({v.size})"


def _mean(values: list) -> float | None:
    vals = [float(v) for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def _lower_bound(diffs: list[float]) -> str:
    """One-sided 90% lower confidence bound of a mean paired difference, in points."""
    if len(diffs) < 2:
        return "–"
    from scipy import stats

    d = 100.0 * np.asarray(diffs, dtype=float)
    bound = d.mean() - stats.t.ppf(0.9, d.size - 1) * d.std(ddof=1) / np.sqrt(d.size)
    return f"{bound:+.2f} ({d.size})"


def _paired_diffs(
    acc: dict[tuple[str, float], dict[int, float]], method: str, rate: float
) -> dict[int, float]:
    """Seed -> the method's accuracy minus random's with the same seed (seeds both have)."""
    ref = acc.get(("random", rate), {})
    mine = acc.get((method, rate), {})
    return {seed: mine[seed] - ref[seed] for seed in sorted(mine) if seed in ref}


#: Gap closure is shown only where the supervised reference is at least this far above random
#: (points): below it the ratio divides by noise (issue 13's target uses the same threshold).
GAP_CLOSURE_MIN_REFERENCE = 1.0


def _gap_closure(acc: dict[tuple[str, float], dict[int, float]], method: str, rate: float) -> str:
    """(method - random) / (supervised CCS - random), paired means over the seeds all three
    share, in percent; '–' without such seeds or where the reference gains under
    `GAP_CLOSURE_MIN_REFERENCE` points."""
    mine = _paired_diffs(acc, method, rate)
    reference = _paired_diffs(acc, "supervised_ccs", rate)
    seeds = sorted(set(mine) & set(reference))
    if not seeds:
        return "–"
    gained = 100.0 * float(np.mean([mine[s] for s in seeds]))
    possible = 100.0 * float(np.mean([reference[s] for s in seeds]))
    if possible < GAP_CLOSURE_MIN_REFERENCE:
        return f"– (reference {possible:+.2f})"
    return f"{100.0 * gained / possible:+.0f}% ({len(seeds)})"


def _per_seed(diffs: dict[int, float]) -> str:
    """'s0 +1.23, s1 -0.40' in points, in seed order."""
    if not diffs:
        return "–"
    return ", ".join(f"s{seed} {100.0 * d:+.2f}" for seed, d in diffs.items())


def _commits(rows: list[dict]) -> str:
    """The commits the rows were made at, in the order their rows finished (a run resumed across
    commits names each; more than three: the first and the last and how many), and how many rows
    came from a tree with local changes. Each row's own commit is in its raw file."""
    timed = sorted(rows, key=lambda r: str(r.get("finished_at") or ""))
    commits = list(dict.fromkeys(str(r.get("commit"))[:12] for r in timed)) or ["None"]
    if len(commits) <= 3:
        text = "commit " if len(commits) == 1 else "commits "
        text += ", ".join(f"`{c}`" for c in commits)
    else:
        text = f"{len(commits)} commits from `{commits[0]}` to `{commits[-1]}`"
    dirty = sum(bool(r.get("dirty")) for r in rows)
    if dirty:
        text += (
            " (with local changes)"
            if dirty == len(rows)
            else f" ({dirty} of {len(rows)} rows with local changes)"
        )
    return text


def _protocol_tables(rows: list[dict], protocol: str, run_name: str) -> str:
    """The markdown of one protocol's tables."""
    rows = [r for r in rows if r["protocol"] == protocol]
    methods = _order(rows)
    rates = sorted({float(r["rate"]) for r in rows})
    acc: dict[tuple[str, float], dict[int, float]] = defaultdict(dict)
    errors: dict[str, list[str]] = defaultdict(list)
    first: dict[str, dict] = {}
    for r in rows:
        first.setdefault(r["method"], r)
        if r.get("accuracy") is None:
            errors[r["method"]].append(str(r.get("error")))
        else:
            acc[(r["method"], float(r["rate"]))][int(r["seed"])] = float(r["accuracy"])

    any_row = rows[0] if rows else {}
    data = any_row.get("data", {})
    header = "| method | " + " | ".join(f"{rate:g}%" for rate in rates) + " |"
    rule = "|---|" + "---|" * len(rates)
    title = {
        "A": "linear probe on frozen embeddings",
        "B": "small CNN on pixels",
        "C": "fine-tuned pretrained encoder",
    }.get(protocol)
    lines = [
        f"# Protocol {protocol} ({title}): test accuracy vs pruning rate — run `{run_name}`",
        "",
        f"Pool {data.get('pool_size')} images (validation {data.get('val_size')}), test "
        f"{data.get('test_size')}, {len(data.get('classes', []))} classes; data key "
        f"`{data.get('key')}`; {_commits(rows)}.",
        "",
        f"Columns are pruning rates (70% = keep 30% of the pool). {LABELS_MARK}: uses the true "
        f"labels (a supervised reference). {ORACLE_MARK}: chooses beta by TEST accuracy (an upper "
        "bound, not a usable method). Cells: mean ± sample std over seeds (number of seeds).",
        "",
        "## Accuracy (%)",
        "",
        header,
        rule,
    ]
    for m in methods:
        cells = [_fmt(list(acc[(m, rate)].values())) for rate in rates]
        lines.append(f"| {_display(m, first[m])} | " + " | ".join(cells) + " |")

    def paired(summary: Callable[[dict[int, float]], str]) -> Callable[[str, float], str]:
        return lambda m, rate: summary(_paired_diffs(acc, m, rate))

    sections = [
        ("Paired difference to random (percentage points, same seed)", "",
         paired(lambda diffs: _fmt(list(diffs.values()), signed=True)), ("random",)),
        ("One-sided 90% lower bound of the paired difference (points)",
         "mean - t(0.9, n-1) * std / sqrt(n) over the seeds; above -0.5 is the 'never harm' "
         "target. Needs at least 2 seeds.",
         paired(lambda diffs: _lower_bound(list(diffs.values()))), ("random",)),
        ("Paired difference per seed (points)",
         "seed: this method's accuracy minus random's with that seed, so that a reader can "
         "check the summaries above and see which seeds carry a mean.",
         paired(_per_seed), ("random",)),
    ]  # fmt: skip
    if "supervised_ccs" in methods:
        sections.append((
            "Gap closure: (method - random) / (supervised CCS - random)",
            "Paired mean differences over the seeds the method, random and supervised CCS share "
            f"(number of seeds); shown where supervised CCS is at least "
            f"{GAP_CLOSURE_MIN_REFERENCE:g} point above random. 50% or more is the target.",
            lambda m, rate: _gap_closure(acc, m, rate),
            ("random", "supervised_ccs"),
        ))  # fmt: skip
    for title, note, cell, skipped in sections:
        lines += ["", f"## {title}", "", *([note, ""] if note else []), header, rule]
        for m in methods:
            if m not in skipped:
                cells = [cell(m, rate) for rate in rates]
                lines.append(f"| {_display(m, first[m])} | " + " | ".join(cells) + " |")

    lines += [
        "",
        "## Method details (means over seeds)",
        "",
        "Beta per rate in column order. 'select s' and 'peak RSS' are the cost of one "
        "selection from scratch (wall time; resident memory growth, sampled); 'shared s' is the "
        "part of it spent on rate-independent artefacts (pseudo-labels + proxy AUM, ZCore or "
        "Brain scores), computed once per seed and reused by every rate.",
        "",
        "'mode by rate': the selection mode a rule chose at each rate (most frequent over seeds). "
        "'min class cov.': the smallest ratio, over classes, of a class's share of the selection "
        "to its share of the pool (1 = no class under-represented; 0 = a class missing), the "
        "lowest over rates and seeds.",
        "",
        "| method | cluster acc. (%) | beta by rate | mode by rate | min class cov. | select s "
        "| shared s | peak RSS Δ MB | errors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for m in methods:
        mine = [r for r in rows if r["method"] == m]
        infos = [r.get("method_info") or {} for r in mine]
        ca = _mean([i.get("cluster_accuracy") for i in infos])
        betas = []
        for rate in rates:
            b = _mean([
                (r.get("method_info") or {}).get("beta") for r in mine if float(r["rate"]) == rate
            ])  # fmt: skip
            betas.append("–" if b is None else f"{b:.2f}")
        modes = []
        for rate in rates:
            chosen = [
                (r.get("method_info") or {}).get("mode") for r in mine if float(r["rate"]) == rate
            ]
            chosen = [c for c in chosen if c]
            modes.append(max(set(chosen), key=chosen.count) if chosen else "–")
        coverage = [i.get("min_class_coverage") for i in infos]
        coverage = [c for c in coverage if c is not None]
        sel_s = _mean([i.get("from_scratch_seconds") for i in infos])
        art = {}
        for r in mine:  # one artefact cost per seed
            i = r.get("method_info") or {}
            if i.get("artefact_seconds") is not None:
                art[r["seed"]] = i["artefact_seconds"]
        art_s = _mean(list(art.values()))
        peak = _mean([i.get("from_scratch_peak_rss_delta_mb") for i in infos])
        errs = errors.get(m, [])
        first_err = errs[0][:80].replace("|", "/").replace("\n", " ") if errs else ""
        err = f"{len(errs)}: {first_err}" if errs else ""
        lines.append(
            f"| {_display(m, first[m])} | {'–' if ca is None else f'{100 * ca:.1f}'} | "
            f"{' / '.join(betas) if any(b != '–' for b in betas) else '–'} | "
            f"{' / '.join(modes) if any(c != '–' for c in modes) else '–'} | "
            f"{f'{min(coverage):.2f}' if coverage else '–'} | "
            f"{'–' if sel_s is None else f'{sel_s:.2f}'} | "
            f"{'–' if art_s is None else f'{art_s:.1f}'} | "
            f"{'–' if peak is None else f'{peak:.0f}'} | {err} |"
        )
    train_s = _mean([r.get("train_seconds") for r in rows])
    ips = _mean([(r.get("protocol_info") or {}).get("images_per_second") for r in rows])
    lines += [
        "",
        f"Downstream training: {'–' if train_s is None else f'{train_s:.1f}'} s per run on "
        f"average"
        + (f", {ips:.0f} images/s" if ips else "")
        + f"; machine: {any_row.get('machine', {}).get('platform')}, "
        f"{any_row.get('machine', {}).get('cpus_available')} CPUs.",
        "",
    ]
    return "\n".join(lines)


def _plot(rows: list[dict], protocol: str, path: str, run_name: str) -> None:
    """Accuracy (left) and paired difference to random (right) vs pruning rate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r["protocol"] == protocol and r.get("accuracy") is not None]
    methods = _order(rows)
    rates = sorted({float(r["rate"]) for r in rows})
    acc: dict[tuple[str, float], dict[int, float]] = defaultdict(dict)
    flags: dict[str, dict] = {}
    for r in rows:
        acc[(r["method"], float(r["rate"]))][int(r["seed"])] = 100 * float(r["accuracy"])
        flags.setdefault(r["method"], r)
    fig, (ax_acc, ax_diff) = plt.subplots(1, 2, figsize=(13, 5))
    cmap = plt.get_cmap("tab10")
    markers = "os^vDP"
    for i, m in enumerate(methods):
        style = {
            "color": "black" if m == "random" else cmap(i % 10),
            "linestyle": ":" if flags[m].get("oracle") else (
                "--" if flags[m].get("uses_labels") else "-"
            ),
            "marker": markers[(i // 10) % len(markers)],
            "markersize": 4,
            "capsize": 3,
            "linewidth": 2.2 if m == "random" else 1.3,
            "label": _display(m, flags[m]),
        }  # fmt: skip
        xs, ys, es, dx, dy, de = [], [], [], [], [], []
        for rate in rates:
            vals = list(acc[(m, rate)].values())
            if vals:
                xs.append(rate)
                ys.append(np.mean(vals))
                es.append(np.std(vals, ddof=1) if len(vals) > 1 else 0.0)
            diffs = list(_paired_diffs(acc, m, rate).values())
            if diffs:
                dx.append(rate)
                dy.append(np.mean(diffs))
                de.append(np.std(diffs, ddof=1) if len(diffs) > 1 else 0.0)
        if xs:
            ax_acc.errorbar(xs, ys, yerr=es, **style)
        if dx:
            ax_diff.errorbar(dx, dy, yerr=de, **style)
    ax_diff.axhline(0.0, color="grey", linewidth=0.8)
    for ax, ylabel in ((ax_acc, "test accuracy (%)"), (ax_diff, "difference to random (points)")):
        ax.set_xlabel("pruning rate (%)")
        ax.set_ylabel(ylabel)
        ax.set_xticks(rates)
        ax.grid(alpha=0.3)
    ax_acc.set_title(f"Protocol {protocol}: accuracy ({run_name})")
    ax_diff.set_title(f"Protocol {protocol}: paired difference to random")
    if ax_diff.get_legend_handles_labels()[0]:  # nothing drawn without random's rows
        ax_diff.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _write_csv(rows: list[dict], path: str) -> None:
    """One line per result, for spreadsheets."""
    fields = [
        "method", "uses_labels", "oracle", "protocol", "rate", "seed", "budget", "selected",
        "accuracy", "beta", "cluster_accuracy", "select_seconds", "train_seconds", "error",
    ]  # fmt: skip
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for r in rows:
            info = r.get("method_info") or {}
            writer.writerow({
                **{k: r.get(k) for k in fields},
                "beta": info.get("beta"),
                "cluster_accuracy": info.get("cluster_accuracy"),
                "select_seconds": info.get("select_seconds"),
            })  # fmt: skip


def write_report(run_dir: str) -> list[str]:
    """Write the tables, plots and CSV of every protocol found in ``run_dir``; return the paths."""
    rows = load_results(run_dir)
    if not rows:
        raise FileNotFoundError(f"No results under {os.path.join(run_dir, 'raw')}.")
    run_name = os.path.basename(os.path.normpath(run_dir))
    written = []
    for protocol in sorted({r["protocol"] for r in rows}):
        table = os.path.join(run_dir, f"table_{protocol}.md")
        with open(table, "w") as f:
            f.write(_protocol_tables(rows, protocol, run_name))
        plot = os.path.join(run_dir, f"plot_{protocol}.png")
        _plot(rows, protocol, plot, run_name)
        written += [table, plot]
    csv_path = os.path.join(run_dir, "results.csv")
    _write_csv(rows, csv_path)
    return [*written, csv_path]
