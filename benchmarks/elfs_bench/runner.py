"""The resumable benchmark loop: one JSON per (method, pruning rate, seed, protocol).

For each method, seed and rate the selection is made once (and saved as an index list under
``selections/``), then every requested protocol trains on it. A result JSON that already exists
(without an error) is reused, so an interrupted run picks up where it stopped; a run folder
refuses results made with other settings (``config.json``).
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from . import data as bdata
from .finetune import FinetuneConfig, protocol_c
from .methods import (
    ArtefactCache,
    LabeledInputs,
    LabelFreeInputs,
    MethodContext,
    MethodParams,
    MethodSpec,
    Selection,
    measure,
    params_dict,
)
from .protocols import (
    ProbeConfig,
    TrainConfig,
    available_cpus,
    feature_stats,
    pixel_stats,
    protocol_a,
    protocol_b,
    torch_threads,
)

__all__ = ["RunConfig", "provenance", "result_path", "run_benchmark"]

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROTOCOLS = ("A", "B", "C")


def _log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


@dataclass
class RunConfig:
    """Everything one invocation needs (the CLI fills it)."""

    methods: list[MethodSpec]
    rates: list[float]
    seeds: list[int]
    protocols: list[str]
    run_dir: str
    cache_dir: str
    source: dict  # keyword arguments of data.load_bench_data (without cache_dir)
    encoder: str = "efficientnet-lite0"
    image_size: int = 128
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    params: MethodParams = field(default_factory=MethodParams)
    threads: int = 0
    command: str = ""
    #: Another run folder whose selections (same pool, same method settings) are reused instead
    #: of made again, e.g. to score them on a larger test split (``--selections-from``).
    selections_from: str | None = None


# --------------------------------------------------------------------------- provenance


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, check=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def _memory_gb() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):  # pragma: no cover
        return None


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def provenance(command: str) -> dict:
    """Commit (and whether the tree had local changes), command line, machine and versions."""
    status = _git("status", "--porcelain")
    return {
        "commit": _git("rev-parse", "HEAD"),
        "dirty": bool(status) if status is not None else None,
        "command": command,
        "process_argv": shlex.join(sys.argv),  # differs from command when called in-process
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "cpus_available": available_cpus(),
            "memory_gb": _memory_gb(),
            "python": platform.python_version(),
        },
        "versions": {
            name: _version(pkg)
            for name, pkg in (
                ("torch", "torch"),
                ("numpy", "numpy"),
                ("fiftyone", "fiftyone"),
                ("sklearn", "scikit-learn"),
                ("faiss", "faiss-cpu"),
                ("fiftyone_elfs", "fiftyone-elfs"),
            )
        },
    }


def default_command(argv: list[str]) -> str:
    """How this run was started, as a shell line."""
    return shlex.join([sys.executable, "benchmarks/run_benchmark.py", *argv])


# --------------------------------------------------------------------------- files


def _rate_tag(rate: float) -> str:
    return f"{rate:g}".replace(".", "p")


def result_path(run_dir: str, method: str, rate: float, seed: int, protocol: str) -> str:
    """Where the result of (method, rate, seed, protocol) lives."""
    name = f"{method}__r{_rate_tag(rate)}__s{seed}__{protocol}.json"
    return os.path.join(run_dir, "raw", name)


def _write_json(path: str, payload: dict) -> None:
    """Write JSON atomically, so an interruption never leaves a half-written result."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=1, default=_json_default)
    os.replace(tmp, path)


def _json_default(obj: object) -> object:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON-serialisable: {type(obj).__name__}")


def _reusable(path: str) -> bool:
    """True when a finished result without error is on disk."""
    if not os.path.exists(path):
        return False
    try:
        with open(path) as f:
            return not json.load(f).get("error")
    except (OSError, json.JSONDecodeError):
        return False


def _settings(cfg: RunConfig, data_key: str) -> dict:
    """The settings every result of a run folder must share."""
    return {
        "data_key": data_key,
        "encoder": cfg.encoder,
        "image_size": cfg.image_size,
        "probe": asdict(cfg.probe),
        "train": {k: v for k, v in asdict(cfg.train).items() if k != "threads"},
        "finetune": {k: v for k, v in asdict(cfg.finetune).items() if k != "threads"},
        "method_params": params_dict(cfg.params),
    }


def _holds_results(run_dir: str) -> bool:
    """True when the run folder holds a result or a selection (anything made with its settings)."""
    for sub in ("raw", "selections"):
        folder = os.path.join(run_dir, sub)
        if os.path.isdir(folder) and any(n.endswith(".json") for n in os.listdir(folder)):
            return True
    return False


def _check_settings(cfg: RunConfig, settings: dict, quiet: bool = False) -> None:
    """Refuse to mix results made with different settings in one run folder.

    ``config.json`` is written only once the data is embedded (``_record_settings``), so a run
    stopped before (an unreadable image, Ctrl-C during the embeddings) leaves none; a folder
    whose ``config.json`` differs but holds no result or selection (a run stopped before its
    first one) is not a conflict: its settings are replaced.
    """
    path = os.path.join(cfg.run_dir, "config.json")
    if not os.path.exists(path):
        return
    with open(path) as f:
        old = json.load(f)
    diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
    if not diff:
        return
    if _holds_results(cfg.run_dir):
        raise SystemExit(
            f"{cfg.run_dir} holds results made with other settings ({', '.join(diff)}). "
            "Use another --run-name, or delete that folder to start over."
        )
    if not quiet:
        _log(
            f"{cfg.run_dir}: its config.json has other settings ({', '.join(diff)}) but the "
            "folder holds no results (an earlier run stopped before its first): they are replaced"
        )


def _record_settings(cfg: RunConfig, settings: dict) -> None:
    """Write ``config.json`` before the first selection or result (checked again: another
    process may have filled the folder meanwhile)."""
    _check_settings(cfg, settings, quiet=True)
    _write_json(os.path.join(cfg.run_dir, "config.json"), settings)


# --------------------------------------------------------------------------- the loop


def _budget(rate: float, n: int) -> int:
    """Samples kept at a pruning rate in percent (rate 70 keeps 30% of the pool)."""
    from fiftyone_elfs.selection import resolve_budget

    if not 0 <= rate < 100:
        raise ValueError(f"pruning rates are percentages in [0, 100); got {rate}")
    return resolve_budget(n, budget_fraction=1.0 - rate / 100.0)


def _make_selection(
    spec: MethodSpec, ctx: MethodContext, budget: int, seed: int, pool_labels: np.ndarray
) -> tuple[np.ndarray, dict]:
    """Run a method, measure it, check its answer and add the cluster accuracy of its labels."""
    from fiftyone_elfs.pseudo_labels import cluster_accuracy

    with measure() as cost:
        sel: Selection = spec.fn(ctx, budget, seed)
    idx = np.asarray(sel.indices, dtype=np.int64)
    n = pool_labels.size
    if idx.ndim != 1 or np.unique(idx).size != idx.size or idx.min() < 0 or idx.max() >= n:
        raise RuntimeError(f"{spec.name} returned invalid indices (shape {idx.shape})")
    info = dict(sel.info)
    info.update(
        select_seconds=cost["seconds"],
        select_peak_rss_delta_mb=cost["peak_rss_delta_mb"],
        select_maxrss_delta_mb=cost["maxrss_delta_mb"],
    )
    # The cost of this selection from scratch: a reused artefact's recorded cost is added back.
    reused = bool(info.get("artefact_reused"))
    info["from_scratch_seconds"] = round(
        cost["seconds"] + ((info.get("artefact_seconds") or 0.0) if reused else 0.0), 3
    )
    info["from_scratch_peak_rss_delta_mb"] = max(
        cost["peak_rss_delta_mb"], (info.get("artefact_peak_rss_delta_mb") or 0.0)
    )
    counts = np.bincount(pool_labels[idx], minlength=int(pool_labels.max()) + 1)
    shares = np.bincount(pool_labels, minlength=counts.size) / n
    info["class_counts"] = counts.tolist()
    # Per-class coverage: the smallest ratio of a class's share of the selection to its share of
    # the pool (1 = every class at least as represented as in the pool, 0 = a class is missing).
    info["min_class_coverage"] = round(
        float(np.min((counts / max(idx.size, 1))[shares > 0] / shares[shares > 0])), 4
    )
    if sel.pseudo_labels is not None:  # scored against the truth here, never inside the method
        info["cluster_accuracy"] = round(cluster_accuracy(pool_labels, sel.pseudo_labels), 4)
    return np.sort(idx), info


def _check_selections_source(cfg: RunConfig, data: bdata.BenchData) -> None:
    """Refuse ``selections_from`` unless that folder's selections index this run's pool and
    were made with this run's method settings (only the test split and protocols may differ)."""
    source = cfg.selections_from
    if not source:
        return
    flag = f"--selections-from {_run_name(source)}"
    pool_file = os.path.join(source, "pool_paths.txt")
    config_file = os.path.join(source, "config.json")
    if not (os.path.exists(pool_file) and os.path.exists(config_file)):
        raise SystemExit(
            f"{flag}: {source} is not a filled run folder (no pool_paths.txt or config.json). "
            "Fix: name a run folder under --results-dir that an earlier run wrote."
        )
    with open(pool_file) as f:
        their_pool = f.read().splitlines()
    if _path_tails(their_pool) != _path_tails(data.pool.paths):
        raise SystemExit(
            f"{flag}: that run's pool ({len(their_pool)} images) is not this run's "
            f"({len(data.pool)} images, or other files), and its selections are positions in "
            "its own pool. Fix: use that run's data source, --pool-size, --val-fraction, "
            "--data-seed, --balanced and --cache-dir; only the test split may differ."
        )
    with open(config_file) as f:
        theirs = json.load(f)
    ours = _settings(cfg, data.key)
    differ = [k for k in ("encoder", "image_size", "method_params") if theirs.get(k) != ours[k]]
    if differ:
        raise SystemExit(
            f"{flag}: that run's selections were made with other method settings "
            f"({', '.join(differ)}). Fix: pass the same --encoder, --image-size and method "
            "options as that run."
        )


def _path_tails(paths: list[str]) -> list[str]:
    """The last three parts of each path (split/class/file in a class tree): a pool's identity
    that survives moving the cache folder or the checkout."""
    return ["/".join(os.path.normpath(p).split(os.sep)[-3:]) for p in paths]


def _read_selection(path: str) -> tuple[np.ndarray, dict]:
    """A saved selection's indices and info."""
    with open(path) as f:
        saved = json.load(f)
    return np.asarray(saved["indices"], dtype=np.int64), saved["info"]


def _run_name(run_dir: str) -> str:
    return os.path.basename(os.path.normpath(run_dir))


def _selection_file(run_dir: str, method: str, rate: float, seed: int) -> str:
    return os.path.join(run_dir, "selections", f"{method}__r{_rate_tag(rate)}__s{seed}.json")


def run_benchmark(cfg: RunConfig) -> dict:
    """Run every (method, rate, seed, protocol) not already on disk; return counts and paths.

    Returns ``{"computed": int, "reused": int, "errors": int, "run_dir": str}``.
    """
    for p in cfg.protocols:  # the command line refuses these before; checked for API callers
        if p not in PROTOCOLS:
            raise ValueError(f"Unknown protocol {p!r}; choose from {PROTOCOLS}")
    for rate in cfg.rates:
        if not 0 <= rate < 100:
            raise ValueError(f"pruning rates are percentages in [0, 100); got {rate}")
    threads = cfg.threads or available_cpus()
    os.makedirs(cfg.run_dir, exist_ok=True)
    data = bdata.load_bench_data(**cfg.source, cache_dir=cfg.cache_dir)
    _log(
        f"data {data.key}: pool {len(data.pool)}, val {len(data.val)}, test {len(data.test)}, "
        f"{len(data.classes)} classes"
    )
    _check_selections_source(cfg, data)  # before this run folder records its settings
    _check_settings(cfg, _settings(cfg, data.key))

    todo = [
        (spec, rate, seed, p)
        for spec in cfg.methods
        for seed in cfg.seeds
        for rate in cfg.rates
        for p in cfg.protocols
    ]
    missing = [t for t in todo if not _reusable(result_path(cfg.run_dir, t[0].name, *t[1:]))]
    summary = {"computed": 0, "reused": len(todo) - len(missing), "errors": 0}
    summary["run_dir"] = cfg.run_dir
    if not missing:
        _log(f"all {len(todo)} results already on disk: nothing to compute")
        return summary

    with torch_threads(threads):
        need_pixels = "B" in cfg.protocols or any(spec.needs_pixels for spec in cfg.methods)
        bdata.load_features(
            data, cfg.cache_dir, cfg.encoder, cfg.image_size, need_pixels, "C" in cfg.protocols
        )
        _run_missing(cfg, data, missing, summary, threads)
    return summary


def _quality_embeddings(paths: list[str], cfg: RunConfig) -> np.ndarray:
    """The pool's embeddings from the optional quality encoder at the library's default size
    for it (EfficientNet-Lite2, 260 px), cached like the default encoder's."""
    from fiftyone_elfs.embeddings.encoders import LITE2_ENCODER, OFFLINE_ENCODERS

    size = OFFLINE_ENCODERS[LITE2_ENCODER].default_image_size
    _log(f"quality embeddings: {LITE2_ENCODER} at {size} px (cached after the first run)")
    return bdata.cached_embeddings(paths, cfg.cache_dir, LITE2_ENCODER, size)


def _adapted_embeddings(paths: list[str], cfg: RunConfig) -> np.ndarray:
    """The pool's embeddings from Lite0 adapted to the pool itself (the package's
    ``adapt_steps=300``, seed 0), cached like the default encoder's."""
    from .adaptation import DEFAULT_STEPS, cached_adapted_embeddings

    _log(f"adapted embeddings: Lite0, {DEFAULT_STEPS} steps on the pool (cached after the first)")
    return cached_adapted_embeddings(paths, cfg.cache_dir)


def _run_missing(
    cfg: RunConfig, data: bdata.BenchData, missing: list, summary: dict, threads: int
) -> None:
    """The inner loop of ``run_benchmark`` over results that are not on disk yet."""
    pool, val, test = data.pool, data.val, data.test
    emb_stats = feature_stats(pool.embeddings)
    pix_stats = pixel_stats(pool.pixels) if pool.pixels is not None else None
    # keyed by the data, the encoder, its input size and the pool's embeddings themselves
    artefacts = ArtefactCache(
        bdata.artefact_folder(cfg.cache_dir, data, cfg.encoder, cfg.image_size)
    )
    inputs = LabelFreeInputs(
        X=pool.embeddings,
        pixels=pool.pixels,
        paths=pool.paths,
        n_classes=len(data.classes),
        artefacts=artefacts,
        params=cfg.params,
        quality_embeddings=functools.cache(lambda: _quality_embeddings(pool.paths, cfg)),
        adapted_embeddings=functools.cache(lambda: _adapted_embeddings(pool.paths, cfg)),
    )

    def probe(idx: np.ndarray, split: bdata.Split) -> float:
        return protocol_a(
            pool.embeddings[idx], pool.labels[idx], split.embeddings, split.labels,
            emb_stats, cfg.probe,
        ).accuracy  # fmt: skip

    labeled = LabeledInputs(
        y=pool.labels,
        val_accuracy=lambda idx: probe(idx, val),
        test_accuracy=lambda idx: probe(idx, test),
    )
    prov = provenance(cfg.command)
    settings = _settings(cfg, data.key)
    _record_settings(cfg, settings)  # the embeddings are done: results follow
    with open(os.path.join(cfg.run_dir, "pool_paths.txt"), "w") as f:
        f.write("\n".join(pool.paths) + "\n")  # selections/ hold indices into this list
    n = len(pool)
    total = len(missing)
    selections: dict[tuple, tuple[np.ndarray | None, dict]] = {}
    for k, (spec, rate, seed, protocol) in enumerate(missing, 1):
        if _reusable(result_path(cfg.run_dir, spec.name, rate, seed, protocol)):
            summary["reused"] += 1  # another process on this run folder finished it meanwhile
            continue
        budget = _budget(rate, n)
        sel_key = (spec.name, rate, seed)
        if sel_key not in selections:
            selections[sel_key] = _selection(cfg, spec, rate, seed, budget, inputs, labeled, pool)
        idx, info = selections[sel_key]
        record = {
            "method": spec.name,
            "uses_labels": spec.uses_labels,
            "oracle": spec.oracle,
            "rate": rate,
            "seed": seed,
            "protocol": protocol,
            "budget": budget,
            "pool_size": n,
            "selected": None if idx is None else int(idx.size),
            "method_info": info,
            "data": data.describe(),
            "settings": settings,
            **prov,
        }
        label = f"[{k}/{total}] {spec.name} rate={rate:g} seed={seed} protocol {protocol}"
        if idx is None:
            record.update(accuracy=None, error=info.get("error"))
            summary["errors"] += 1
            _log(f"{label}: ERROR {info.get('error')}")
        else:
            try:
                result = _train(protocol, idx, data, seed, emb_stats, pix_stats, cfg, threads)
                record.update(
                    accuracy=result.accuracy,
                    train_seconds=round(result.seconds, 2),
                    protocol_info=result.info,
                )
                _log(f"{label}: accuracy {result.accuracy:.4f} ({result.seconds:.1f} s)")
            except Exception as e:  # noqa: BLE001 - record, keep the benchmark going
                record.update(accuracy=None, error=f"{type(e).__name__}: {e}")
                summary["errors"] += 1
                _log(f"{label}: ERROR {record['error']}")
        record["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        _write_json(result_path(cfg.run_dir, spec.name, rate, seed, protocol), record)
        summary["computed"] += 1


def _selection(
    cfg: RunConfig,
    spec: MethodSpec,
    rate: float,
    seed: int,
    budget: int,
    inputs: LabelFreeInputs,
    labeled: LabeledInputs,
    pool: bdata.Split,
) -> tuple[np.ndarray | None, dict]:
    """A method's selection: reused from ``selections/`` or made now (None + error on failure)."""
    path = _selection_file(cfg.run_dir, spec.name, rate, seed)
    if os.path.exists(path):
        return _read_selection(path)
    source = cfg.selections_from and _selection_file(cfg.selections_from, spec.name, rate, seed)
    if source and os.path.exists(source):  # checked by _check_selections_source
        with open(source) as f:
            saved = json.load(f)
        saved["info"] = {**saved["info"], "selection_from_run": _run_name(cfg.selections_from)}
        _write_json(path, saved)  # this run folder stays complete on its own
        return _read_selection(path)
    ctx = MethodContext(inputs, labeled if spec.uses_labels else None)
    try:
        idx, info = _make_selection(spec, ctx, budget, seed, pool.labels)
    except Exception as e:  # noqa: BLE001 - e.g. a Brain call unusable offline: record it
        return None, {"error": f"{type(e).__name__}: {e}"}
    payload = {
        "method": spec.name,
        "rate": rate,
        "seed": seed,
        "budget": budget,
        "indices": idx.tolist(),  # positions in pool_paths.txt
        "info": info,
    }
    _write_json(path, payload)
    return idx, info


def _train(protocol, idx, data, seed, emb_stats, pix_stats, cfg, threads):
    """Train the downstream model of ``protocol`` on pool[idx] and score it on test."""
    pool, test = data.pool, data.test
    if protocol == "A":
        return protocol_a(
            pool.embeddings[idx], pool.labels[idx], test.embeddings, test.labels,
            emb_stats, cfg.probe,
        )  # fmt: skip
    if protocol == "C":
        finetune = FinetuneConfig(**{**asdict(cfg.finetune), "threads": threads})
        return protocol_c(
            pool.trunk[idx], pool.labels[idx], test.trunk, test.labels,
            len(data.classes), seed, finetune,
        )  # fmt: skip
    train = TrainConfig(**{**asdict(cfg.train), "threads": threads})
    return protocol_b(
        pool.pixels[idx], pool.labels[idx], test.pixels, test.labels,
        len(data.classes), seed, pix_stats, train,
    )  # fmt: skip
