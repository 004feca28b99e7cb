"""Scale benchmark of ELFS's array stages on synthetic embeddings (issue 16).

For each N (default 50k, 200k, 1.28M) on synthetic 512-d Gaussian-cluster embeddings with 1,000
clusters (``synthetic.py``), every stage runs in a fresh subprocess that loads X from an .npy
file, so its peak RSS (``ru_maxrss`` of the child, read with ``os.wait4``) is clean and includes
the float32 embeddings themselves, as in a pipeline that holds them. Printed per stage: wall time
(the stage only, not the load), CPU time of the child, peak RSS, peak RSS minus the RSS right
after loading X, the 1-minute load average before/after (other jobs share the machine), the ratio
to the same-run anchors at that N (``faiss.Kmeans`` with its defaults, training + assigning all
samples; ``numpy.argsort`` of N floats) and the ratio to the stage's own time at 200k.

Stages (``--stages``):
  anchor_argsort   numpy.argsort of N random floats (no X)
  anchor_faiss     faiss.Kmeans(d, 1000, spherical, seed 0, defaults: 25 iterations, at most 256
                   points per centroid), then every sample assigned with its index
  kmeans           kmeans_pseudo_labels(X, 1000): the pseudo-labels (saved for the later stages)
  knn              TEMI's input (PCA-128 of normalised rows, centred) and nearest_neighbors(Z, 50)
                   over all N; recall@50 against exact search (all rows when N <= 50k, with the
                   IVF path forced; 2,000 random rows above)
  knn_anchors      TEMI's search above its max_samples: nearest_neighbors(Z, 50) of its 65,536
                   anchors only (IVF forced); recall@50 on 2,000 of them against exact search
  temi             TEMIClustering(1000, seed=0) with its defaults (``--temi-epochs`` to override)
  mlp              train_mlp_proxy(X, kmeans labels, n_classes=1000, epochs=--mlp-epochs;
                   default: scaled_proxy_epochs(N, 512, 1000): 40 up to ~107k, 3 at 1.28M)
  select           label_free_beta + double_end_prune on the MLP's AUM, 10% budget
  layout           layout_2d(X) (UMAP on 50,000 samples, the rest placed by neighbours)
  d2, prototypicality, kcenter, zcore   the geometry baselines at a 10% budget (k-center and
                   ZCore report their refusal when above their work limit)
  typical, typical_half   typical_select (the weak-trust rule) at a 10% and a 50% budget
                   (run by name)
  dataset_build    with --with-dataset (alone: ``--stages`` of these only): a FiftyOne dataset of
                   N samples (dummy file paths) on a private mongod (``private_db.py``, its
                   memory not counted); wall: ``set_values`` of the embeddings (100k at a time)
  dataset_values   anchor: ``dataset.values`` of the embeddings field
  dataset_pipeline run_pipeline (k-means 1,000 clusters, MLP proxy with scaled_proxy_epochs,
                   10% budget, embedding plot) on that dataset; per-stage seconds from the runs
  dataset_pipeline_temi  the same with TEMI pseudo-labels (run by name; the issue's 30 minutes)
  dataset_pipeline_default  run_pipeline with the budget alone: every other argument at its
                   default, the selection rule chosen by the trust diagnostic (run by name)
  dataset_read_labels  read_labels of the pseudo-labels for all ids (shuffled) and 10% of them,
                   against dataset.values of the same labels

Children run with OMP_WAIT_POLICY=PASSIVE (see ``run_stage``). Run (one heavy process at a
time; the machine has 2 cores):
    .venv/bin/python benchmarks/scale/run_scale.py --sizes 50000 200000
    .venv/bin/python benchmarks/scale/run_scale.py --table benchmarks/results/scale/results.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)

from synthetic import write_chunks  # noqa: E402

DEFAULT_STAGES = [
    "anchor_argsort",
    "anchor_faiss",
    "kmeans",
    "knn",
    "mlp",
    "select",
    "layout",
    "temi",
    "knn_anchors",
]
BASELINE_STAGES = ["prototypicality", "d2", "kcenter", "zcore"]
DATASET_STAGES = ["dataset_build", "dataset_values", "dataset_pipeline", "dataset_read_labels"]
# not in --with-dataset: run by name
EXTRA_DATASET_STAGES = ["dataset_pipeline_temi", "dataset_pipeline_default"]
TYPICAL_STAGES = ["typical", "typical_half"]  # the weak-trust rule (10% and 50%): run by name
N_CLUSTERS = 1000
DIM = 512
RECALL_QUERIES = 2000
EXACT_RECALL_MAX = 50_000


# ----------------------------------------------------------------------------- data


def data_paths(data_dir: str, n: int) -> dict[str, str]:
    """Files of one size: embeddings, true clusters, and what stages hand to later stages."""
    base = os.path.join(data_dir, f"n{n}_d{DIM}_k{N_CLUSTERS}")
    return {
        "X": base + "_X.npy",
        "y": base + "_y.npy",
        "labels": base + "_kmeans_labels.npy",
        "aum": base + "_aum.npy",
    }


def ensure_data(data_dir: str, n: int) -> None:
    """Write the synthetic embeddings of size n once (memory-mapped, chunk by chunk)."""
    paths = data_paths(data_dir, n)
    if os.path.exists(paths["X"]) and os.path.exists(paths["y"]):
        return
    os.makedirs(data_dir, exist_ok=True)
    X = np.lib.format.open_memmap(paths["X"] + ".tmp", mode="w+", dtype=np.float32, shape=(n, DIM))
    y = np.empty(n, dtype=np.int64)
    write_chunks(X, y, n_clusters=N_CLUSTERS, seed=0)
    X.flush()
    del X
    np.save(paths["y"], y)
    os.replace(paths["X"] + ".tmp", paths["X"])


# ----------------------------------------------------------------------------- child stages


def _rss_mb() -> float:
    """Peak RSS of this process so far, in MB (Linux reports kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _ari(y: np.ndarray, labels: np.ndarray) -> float:
    from sklearn.metrics import adjusted_rand_score

    return round(float(adjusted_rand_score(y, labels)), 4)


def stage_anchor_argsort(n: int, X: np.ndarray | None, paths: dict, args) -> dict:
    v = np.random.default_rng(0).random(n)
    t = time.perf_counter()
    np.argsort(v)
    return {"wall_s": time.perf_counter() - t}


def stage_anchor_faiss(n: int, X: np.ndarray, paths: dict, args) -> dict:
    import faiss

    t = time.perf_counter()
    for s in range(0, n, 65536):  # normalise in place (the child owns X), chunk by chunk
        X[s : s + 65536] /= np.linalg.norm(X[s : s + 65536], axis=1, keepdims=True)
    km = faiss.Kmeans(DIM, N_CLUSTERS, seed=0, spherical=True, verbose=False)
    km.train(X)
    t_train = time.perf_counter() - t
    labels = np.empty(n, dtype=np.int64)
    for s in range(0, n, 65536):
        labels[s : s + 65536] = km.index.search(X[s : s + 65536], 1)[1][:, 0]
    wall = time.perf_counter() - t
    return {"wall_s": wall, "train_s": round(t_train, 1), "ari": _ari(np.load(paths["y"]), labels)}


def stage_kmeans(n: int, X: np.ndarray, paths: dict, args) -> dict:
    from fiftyone_elfs.pseudo_labels.kmeans import kmeans_pseudo_labels

    t = time.perf_counter()
    labels, conf = kmeans_pseudo_labels(X, N_CLUSTERS, seed=0)
    wall = time.perf_counter() - t
    np.save(paths["labels"], labels)
    return {"wall_s": wall, "ari": _ari(np.load(paths["y"]), labels)}


def stage_knn(n: int, X: np.ndarray, paths: dict, args) -> dict:
    import faiss

    from fiftyone_elfs.embeddings.projection import fit_pca
    from fiftyone_elfs.pseudo_labels.neighbors import l2_normalize, nearest_neighbors

    k = 50
    t = time.perf_counter()
    Z = fit_pca(X, 128, seed=0, normalize=True).transform(X)
    Z -= Z.mean(axis=0, dtype=np.float64).astype(np.float32)
    t_pca = time.perf_counter() - t
    del X
    forced = n <= EXACT_RECALL_MAX  # below the exact threshold: force the IVF path to measure it
    nbrs = nearest_neighbors(Z, k, exact_max_samples=0 if forced else 100_000)
    wall = time.perf_counter() - t
    out = {"wall_s": wall, "pca_s": round(t_pca, 1), "ivf_forced": forced}
    if forced:
        t0 = time.perf_counter()
        exact = nearest_neighbors(Z, k, exact_max_samples=10**12)
        out["exact_s"] = round(time.perf_counter() - t0, 1)
        rows = np.arange(n)
    else:
        rows = np.sort(np.random.default_rng(1).choice(n, RECALL_QUERIES, replace=False))
        index = faiss.IndexFlatIP(Z.shape[1])
        for s in range(0, n, 65536):
            index.add(l2_normalize(Z[s : s + 65536]))
        _, idx = index.search(l2_normalize(Z[rows]), k + 1)
        exact = np.stack([r[r != i][:k] for r, i in zip(idx, rows, strict=True)])
    hits = [np.intersect1d(a, b).size for a, b in zip(nbrs[rows], exact, strict=True)]
    out["recall_at_50"] = round(float(np.mean(hits)) / k, 4)
    out["recall_rows"] = int(rows.size)
    y = np.load(paths["y"])
    out["nn10_same_cluster"] = round(float((y[nbrs[:, :10]] == y[:, None]).mean()), 4)
    return out


def stage_knn_anchors(n: int, X: np.ndarray, paths: dict, args) -> dict:
    """TEMI's search above its ``max_samples``: the 50 nearest neighbours of its anchors only
    (65,536 rows drawn as TEMI draws them) among all N; recall@50 on 2,000 of them."""
    import faiss

    from fiftyone_elfs.embeddings.projection import fit_pca
    from fiftyone_elfs.pseudo_labels.neighbors import l2_normalize, nearest_neighbors
    from fiftyone_elfs.pseudo_labels.temi import TEMIClustering

    k = 50
    Z = fit_pca(X, 128, seed=0, normalize=True).transform(X)
    Z -= Z.mean(axis=0, dtype=np.float64).astype(np.float32)
    del X
    anchors = TEMIClustering(N_CLUSTERS, seed=0)._anchor_rows(n)
    anchors = np.arange(n) if anchors is None else anchors
    t = time.perf_counter()
    nbrs = nearest_neighbors(Z, k, query_rows=anchors, exact_max_samples=0)
    wall = time.perf_counter() - t
    pick = np.sort(np.random.default_rng(1).choice(anchors.size, RECALL_QUERIES, replace=False))
    index = faiss.IndexFlatIP(Z.shape[1])
    for s in range(0, n, 65536):
        index.add(l2_normalize(Z[s : s + 65536]))
    _, idx = index.search(l2_normalize(Z[anchors[pick]]), k + 1)
    exact = np.stack([r[r != i][:k] for r, i in zip(idx, anchors[pick], strict=True)])
    hits = [np.intersect1d(a, b).size for a, b in zip(nbrs[pick], exact, strict=True)]
    return {
        "wall_s": wall,
        "queries": int(anchors.size),
        "recall_at_50": round(float(np.mean(hits)) / k, 4),
        "recall_rows": RECALL_QUERIES,
    }


def stage_temi(n: int, X: np.ndarray, paths: dict, args) -> dict:
    from fiftyone_elfs.pseudo_labels.temi import TEMIClustering

    kw = {} if args.temi_epochs is None else {"epochs": args.temi_epochs}
    t = time.perf_counter()
    model = TEMIClustering(N_CLUSTERS, seed=0, **kw).fit(X)
    wall = time.perf_counter() - t
    return {
        "wall_s": wall,
        "knn_s": round(model.knn_seconds_, 1),
        "train_s": round(model.train_seconds_, 1),
        "epochs": model.loss_history_.shape[0],
        "anchors": n if model.anchors_ is None else int(model.anchors_.size),
        "ari": _ari(np.load(paths["y"]), model.labels_),
    }


def stage_mlp(n: int, X: np.ndarray, paths: dict, args) -> dict:
    from fiftyone_elfs.difficulty.training_dynamics import scaled_proxy_epochs, train_mlp_proxy

    labels = np.load(paths["labels"] if os.path.exists(paths["labels"]) else paths["y"])
    if args.mlp_epochs == "auto":
        epochs = scaled_proxy_epochs(n, X.shape[1], N_CLUSTERS)
    else:
        epochs = int(args.mlp_epochs)
    epoch_ends: list[float] = []
    t = time.perf_counter()
    scores = train_mlp_proxy(
        X,
        labels,
        n_classes=N_CLUSTERS,
        epochs=epochs,
        seed=0,
        progress=lambda f, m: epoch_ends.append(time.perf_counter()),
    )
    wall = time.perf_counter() - t
    np.save(paths["aum"], scores.aum)
    per_epoch = np.diff([t] + epoch_ends)
    return {
        "wall_s": wall,
        "epochs": epochs,
        "s_per_epoch": round(float(np.median(per_epoch)), 1),
        "first_epoch_s": round(float(per_epoch[0]), 1),
    }


def stage_select(n: int, X: np.ndarray | None, paths: dict, args) -> dict:
    from fiftyone_elfs.selection.pruning import double_end_prune, label_free_beta

    aum = np.load(paths["aum"]) if os.path.exists(paths["aum"]) else None
    if aum is None:
        aum = np.random.default_rng(0).normal(size=n).astype(np.float32)
    t = time.perf_counter()
    beta, _ = label_free_beta(aum, 0.1)
    result = double_end_prune(aum, n // 10, beta)
    wall = time.perf_counter() - t
    return {"wall_s": wall, "beta": round(beta, 4), "selected": int(result.indices.size)}


def stage_layout(n: int, X: np.ndarray, paths: dict, args) -> dict:
    from fiftyone_elfs.embeddings.projection import layout_2d

    t = time.perf_counter()
    pts = layout_2d(X, seed=0)
    wall = time.perf_counter() - t
    return {"wall_s": wall, "finite": bool(np.isfinite(pts).all())}


def _baseline(name: str, fn) -> dict:
    t = time.perf_counter()
    try:
        sel = fn()
    except ValueError as e:
        return {"wall_s": time.perf_counter() - t, "refused": str(e)[:160]}
    return {"wall_s": time.perf_counter() - t, "selected": int(sel.size)}


def stage_prototypicality(n: int, X: np.ndarray, paths: dict, args) -> dict:
    from fiftyone_elfs.selection.baselines import prototypicality_select

    return _baseline("prototypicality", lambda: prototypicality_select(X, n // 10, N_CLUSTERS))


def stage_d2(n: int, X: np.ndarray, paths: dict, args) -> dict:
    from fiftyone_elfs.selection.baselines import d2_prune

    return _baseline("d2", lambda: d2_prune(X, n // 10, n_clusters=N_CLUSTERS))


def stage_kcenter(n: int, X: np.ndarray, paths: dict, args) -> dict:
    from fiftyone_elfs.selection.baselines import k_center_greedy

    return _baseline("kcenter", lambda: k_center_greedy(X, n // 10))


def stage_typical(n: int, X: np.ndarray, paths: dict, args) -> dict:
    from fiftyone_elfs.selection import typical_select

    return _baseline("typical", lambda: typical_select(X, n // 10))


def stage_typical_half(n: int, X: np.ndarray, paths: dict, args) -> dict:
    from fiftyone_elfs.selection import typical_select

    return _baseline("typical_half", lambda: typical_select(X, n // 2))


def stage_zcore(n: int, X: np.ndarray, paths: dict, args) -> dict:
    from fiftyone_elfs.selection.baselines import zcore_select

    return _baseline("zcore", lambda: zcore_select(X, n // 10))


def _dataset(n: int, args):
    """This child's FiftyOne on the size's private database (started here, stopped at exit)."""
    import atexit

    import private_db

    proc = private_db.use(os.path.join(args.data_dir, f"db-n{n}"))
    atexit.register(lambda: (proc.terminate(), proc.wait(60)))
    import fiftyone as fo

    name = f"elfs-scale-{n}"
    return fo, (fo.load_dataset(name) if fo.dataset_exists(name) else None), name


def _read_rows(path: str, start: int, stop: int) -> np.ndarray:
    """Rows [start, stop) of an .npy file, read (not memory-mapped: no resident pages kept)."""
    with open(path, "rb") as f:
        np.lib.format.read_magic(f)
        np.lib.format.read_array_header_1_0(f)
        f.seek(f.tell() + start * DIM * 4)
        return np.fromfile(f, dtype=np.float32, count=(stop - start) * DIM).reshape(-1, DIM)


def stage_dataset_build(n: int, X: np.ndarray | None, paths: dict, args) -> dict:
    """A dataset of n samples (dummy file paths); anchor: ``set_values`` of the embeddings."""
    fo, ds, name = _dataset(n, args)
    if ds is not None:
        ds.delete()
    t = time.perf_counter()
    ds = fo.Dataset(name, persistent=True)
    for s in range(0, n, 100_000):
        ds.add_samples(
            [fo.Sample(filepath=f"/no/{i:07d}.jpg") for i in range(s, min(n, s + 100_000))],
            progress=False,
        )
    build = time.perf_counter() - t
    ids = ds.values("id")
    t = time.perf_counter()
    for s in range(0, n, 100_000):  # dataset.set_values of all the embeddings, 100k at a time
        rows = _read_rows(paths["X"], s, min(n, s + 100_000))
        ds.set_values("emb", dict(zip(ids[s : s + 100_000], rows, strict=True)), key_field="id")
    return {"wall_s": time.perf_counter() - t, "build_s": round(build, 1)}


def stage_dataset_values(n: int, X: np.ndarray | None, paths: dict, args) -> dict:
    """Anchor: ``dataset.values`` of the embeddings field (all n vectors)."""
    _, ds, _ = _dataset(n, args)
    t = time.perf_counter()
    values = ds.values("emb")
    return {"wall_s": time.perf_counter() - t, "rows": len(values)}


def stage_dataset_pipeline(
    n: int, X: np.ndarray | None, paths: dict, args, clustering: str | None = "kmeans"
) -> dict:
    """run_pipeline on the dataset: ``clustering`` pseudo-labels (1,000 clusters), MLP proxy
    (scaled_proxy_epochs), 10% selection, embedding plot; each phase's wall time from the
    progress labels. ``clustering=None``: every argument but the budget left at its default
    (what a user who passes only a budget runs)."""
    _, ds, _ = _dataset(n, args)
    import fiftyone_elfs as elfs
    from fiftyone_elfs.difficulty.training_dynamics import scaled_proxy_epochs

    if "s" in elfs.list_keys(ds):
        elfs.delete_key(ds, "s")
    if clustering is None:
        epochs = None
        chosen: dict = {}
    else:
        if args.mlp_epochs == "auto":
            epochs = scaled_proxy_epochs(n, DIM, N_CLUSTERS)
        else:
            epochs = int(args.mlp_epochs)
        chosen = dict(n_clusters=N_CLUSTERS, clustering=clustering, epochs=epochs, visualize=True)
    steps: list[tuple[float, str]] = []  # (time, label) whenever the progress label's step changes

    def timeline(fraction: float, label: str) -> None:
        step = label.split(" (")[0].split(", loss")[0]  # drop tickers' seconds and losses
        if not steps or steps[-1][1] != step:
            steps.append((time.time(), step))

    # the resident memory of each step: sampled every 0.2 s, the peak kept per step index
    step_rss: dict[int, float] = {}
    sampling = threading.Event()

    def sample_rss() -> None:
        page_mb = os.sysconf("SC_PAGE_SIZE") / 2**20
        while not sampling.wait(0.2):
            with open("/proc/self/statm") as f:
                rss = int(f.read().split()[1]) * page_mb
            step_rss[len(steps)] = max(step_rss.get(len(steps), 0.0), rss)

    sampler = threading.Thread(target=sample_rss, daemon=True)
    sampler.start()
    t = time.time()
    result = elfs.run_pipeline(
        ds, key="s", embeddings_field="emb", budget_fraction=0.1, progress=timeline, **chosen
    )
    wall = time.time() - t
    sampling.set()
    sampler.join()
    # seconds from one progress step to the next (the last one to the end of run_pipeline)
    marks = [t, *(m for m, _ in steps), t + wall]
    labels = ["before the first report", *(label for _, label in steps)]
    for k, label in enumerate(labels):
        rss = step_rss.get(k)
        rss_text = "" if rss is None else f"  (peak RSS {rss:,.0f} MB)"
        print(f"[timeline] {marks[k + 1] - marks[k]:8.1f} s  {label}{rss_text}", file=sys.stderr)
    # each phase's seconds: the progress steps whose label starts with its name (the
    # pipeline writes the pseudo-labels, scores and coreset together, in "writing")
    phases = {
        "before the first report": "read_s",
        "pseudo-labels": "pseudo_labels_s",
        "difficulty": "difficulty_s",
        "coreset": "coreset_s",
        "writing": "write_s",
        "embedding plot": "visualization_s",
    }
    out = {"wall_s": wall, "clustering": clustering or "default", "epochs": epochs}
    out["selected"] = int(result.budget)
    out["mode"] = result.mode
    peak_rss: dict[str, float] = {}  # each phase's largest sampled RSS, MB
    for k, label in enumerate(labels):
        name = next((v for p, v in phases.items() if label.startswith(p)), "other_s")
        out[name] = round(out.get(name, 0.0) + marks[k + 1] - marks[k], 1)
        if k in step_rss:
            peak_rss[name[:-2]] = round(max(peak_rss.get(name[:-2], 0.0), step_rss[k]))
    out["rss_mb_by_phase"] = peak_rss
    labels = ds.values("s_pseudo_label.label")  # "cluster_<i>"
    out["ari"] = _ari(np.load(paths["y"]), np.array([int(v.rsplit("_", 1)[1]) for v in labels]))
    return out


def stage_dataset_pipeline_temi(n: int, X: np.ndarray | None, paths: dict, args) -> dict:
    """``dataset_pipeline`` with TEMI pseudo-labels (its defaults: 65,536 anchors above that)."""
    return stage_dataset_pipeline(n, X, paths, args, clustering="temi")


def stage_dataset_pipeline_default(n: int, X: np.ndarray | None, paths: dict, args) -> dict:
    """``dataset_pipeline`` with nothing but the budget: the default clusters, clustering,
    proxy epochs and rule ("auto": the trust diagnostic picks it; typical selection at weak
    trust), the plot included."""
    return stage_dataset_pipeline(n, X, paths, args, clustering=None)


def stage_dataset_read_labels(n: int, X: np.ndarray | None, paths: dict, args) -> dict:
    """``dataset_io.read_labels`` of the pseudo-labels for all ids (shuffled) and for 10% of
    them, against ``dataset.values`` of the same labels (the anchor, in wall_s)."""
    _, ds, _ = _dataset(n, args)
    from fiftyone_elfs import dataset_io

    ids = ds.values("id")
    shuffled = list(np.random.default_rng(0).permutation(ids))
    t = time.perf_counter()
    ds.values("s_pseudo_label.label")
    anchor = time.perf_counter() - t
    t = time.perf_counter()
    dataset_io.read_labels(ds, "s_pseudo_label", shuffled)
    all_s = time.perf_counter() - t
    t = time.perf_counter()
    dataset_io.read_labels(ds, "s_pseudo_label", shuffled[: n // 10])
    tenth = time.perf_counter() - t
    return {
        "wall_s": anchor,
        "read_labels_all_s": round(all_s, 2),
        "read_labels_10pct_s": round(tenth, 2),
        "x_values_all": round(all_s / anchor, 2),
    }


NEEDS_X = {"anchor_argsort": False, "select": False, "dataset_build": False,
           "dataset_values": False, "dataset_pipeline": False, "dataset_pipeline_temi": False,
           "dataset_read_labels": False, "dataset_pipeline_default": False}  # fmt: skip


def run_child(stage: str, n: int, args) -> None:
    """Run one stage in this (fresh) process and print its result as one JSON line."""
    paths = data_paths(args.data_dir, n)
    X = np.load(paths["X"]) if NEEDS_X.get(stage, True) else None
    load_rss = _rss_mb()
    load = os.getloadavg()[0]
    fn = globals()[f"stage_{stage}"]
    try:
        result = fn(n, X, paths, args)
    except NotImplementedError as e:
        result = {"wall_s": None, "not_yet": str(e)}
    result.update(
        stage=stage,
        n=n,
        load_rss_mb=round(load_rss, 1),
        child_peak_rss_mb=round(_rss_mb(), 1),
        load_before=round(load, 2),
        load_after=round(os.getloadavg()[0], 2),
    )
    if result["wall_s"] is not None:
        result["wall_s"] = round(result["wall_s"], 2)
    print("RESULT " + json.dumps(result), flush=True)


# ----------------------------------------------------------------------------- parent


def run_stage(stage: str, n: int, args, log) -> dict:
    """Run ``stage`` at size n in a child process; add its peak RSS and CPU time from wait4."""
    cmd = [sys.executable, os.path.abspath(__file__), "--child", stage, "--n", str(n)]
    cmd += ["--data-dir", args.data_dir, "--mlp-epochs", str(args.mlp_epochs)]
    if args.temi_epochs is not None:
        cmd += ["--temi-epochs", str(args.temi_epochs)]
    # Passive OpenMP waiting: with other jobs on the cores, busy-waiting threads (the default)
    # made torch 10x slower and inflate CPU time; alone on the machine it changes little.
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True, cwd=ROOT, env=env)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        return {"stage": stage, "n": n, "error": f"exit {proc.returncode}", "wall_s": None}
    result = json.loads(lines[-1][len("RESULT ") :])
    result["peak_rss_mb"] = round(usage.ru_maxrss / 1024.0, 1)
    result["cpu_s"] = round(usage.ru_utime + usage.ru_stime, 1)
    return result


def main_parent(args) -> None:
    stages = args.stages
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    log = open(args.log, "a")  # noqa: SIM115 - children write their stderr here
    for n in args.sizes:
        # In a child too: subprocess starts children with vfork, which hands the parent's peak
        # RSS to each child's ru_maxrss, so the parent must never grow.
        cmd = [sys.executable, os.path.abspath(__file__), "--child", "generate", "--n", str(n)]
        subprocess.run(cmd + ["--data-dir", args.data_dir], check=True, stderr=log, cwd=ROOT)
        for stage in stages:
            t = time.time()
            result = run_stage(stage, n, args, log)
            result["started"] = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))
            print(json.dumps(result), flush=True)
            with open(args.out, "a") as f:
                f.write(json.dumps(result) + "\n")


# ----------------------------------------------------------------------------- table


def _fmt_s(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.1f}" if v < 100 else f"{v:.0f}"


def render_table(path: str) -> str:
    """Markdown table from a results .jsonl (the latest row per stage and size)."""
    rows: dict[tuple[str, int], dict] = {}
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            rows[(r["stage"], r["n"])] = r
    sizes = sorted({n for _, n in rows})
    stages = list(dict.fromkeys(s for s, _ in rows))
    out = [
        "| stage | N | wall s | CPU s | peak RSS MB | RSS above X MB | x faiss.Kmeans | "
        "x argsort | x its 200k time | load avg | notes |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    skip = {"stage", "n", "wall_s", "cpu_s", "peak_rss_mb", "child_peak_rss_mb", "load_rss_mb",
            "load_before", "load_after", "started"}  # fmt: skip
    for stage in stages:
        for n in sizes:
            r = rows.get((stage, n))
            if r is None:
                continue
            wall = r.get("wall_s")
            faiss_r = rows.get(("anchor_faiss", n), {}).get("wall_s")
            argsort_r = rows.get(("anchor_argsort", n), {}).get("wall_s")
            at200 = rows.get((stage, 200_000), {}).get("wall_s")

            def ratio(ref: float | None, wall=wall) -> str:
                return f"{wall / ref:.3g}" if wall is not None and ref else "-"

            above = None
            if r.get("peak_rss_mb") is not None and r.get("load_rss_mb") is not None:
                above = r["peak_rss_mb"] - r["load_rss_mb"]
            notes = "; ".join(f"{k}={v}" for k, v in r.items() if k not in skip)
            out.append(
                f"| {stage} | {n:,} | {_fmt_s(wall)} | {_fmt_s(r.get('cpu_s'))} | "
                f"{r.get('peak_rss_mb', '-')} | {'-' if above is None else round(above)} | "
                f"{ratio(faiss_r)} | {ratio(argsort_r)} | "
                f"{ratio(at200) if n > 200_000 else '-'} | "
                f"{r.get('load_before', '-')}/{r.get('load_after', '-')} | {notes} |"
            )
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[50_000, 200_000, 1_280_000])
    every_stage = (
        DEFAULT_STAGES + BASELINE_STAGES + DATASET_STAGES + EXTRA_DATASET_STAGES + TYPICAL_STAGES
    )
    p.add_argument("--stages", nargs="+", default=DEFAULT_STAGES, choices=every_stage)
    p.add_argument("--baselines", action="store_true", help="add " + ", ".join(BASELINE_STAGES))
    p.add_argument("--with-dataset", action="store_true", help="the FiftyOne stages instead")
    p.add_argument("--mlp-epochs", default="auto", help="an integer, or auto: scaled_proxy_epochs")
    p.add_argument("--temi-epochs", type=int, default=None)
    p.add_argument("--data-dir", default="/tmp/elfs-scale")
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks/results/scale/results.jsonl"))
    p.add_argument("--log", default="/tmp/elfs-scale/children.log")
    p.add_argument("--table", metavar="JSONL", help="print the markdown table of a results file")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.table:
        print(render_table(args.table))
        return
    if args.child == "generate":
        ensure_data(args.data_dir, args.n)
        return
    if args.child:
        run_child(args.child, args.n, args)
        return
    if args.baselines:
        args.stages = list(args.stages) + BASELINE_STAGES
    if args.with_dataset:
        args.stages = DATASET_STAGES
    os.makedirs(os.path.dirname(args.log), exist_ok=True)
    main_parent(args)


if __name__ == "__main__":
    main()
