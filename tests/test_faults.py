"""Fault injection (issue 15): every long stage is SIGKILLed at named points; nothing half-written
is ever visible, and a rerun gives what an uninterrupted run gives.

Each case runs the stage in a separate process (forked from `fork_server.ForkServer`, which has
the imports done) with ``ELFS_KILL_AT`` naming a kill point of `fiftyone_elfs.faults`: a
progress report, a chunk boundary of the staged writes, the gap between the field writes and
the run record, the tag update, an export copy, the export commit. Then, on the real database:

- the process really died by SIGKILL at that point;
- no result field is partially filled, no run is registered without results, no tag is partial,
  an export folder is either complete or marked incomplete (with each output whole), and the
  user's fields, tags, views and runs are unchanged;
- the same call, rerun at once (the dead run's lease is recognised), finishes, leaves no
  staging field, journal entry or lease behind, and equals an uninterrupted run: k-means and
  TEMI labels, selections and export files identical; torch scores identical (asserted to
  1e-6, and counted as exact when bit-identical; the counts are printed).

Small data (40 images, a few epochs) keeps the 28 cases to a few minutes.
"""

from __future__ import annotations

import csv
import io
import json
import os
import uuid

import fiftyone as fo
import numpy as np
import pytest
from fork_server import ForkServer

import fiftyone_elfs as elfs
from fiftyone_elfs import (
    dataset_io,
    embedding_chunks,
    export,
    export_folder,
    journal,
    leases,
    runs,
)

N = 40
CHUNK = 16  # rows per staged write in the children: 3 chunks of the 40 samples
KEY = "k"
BUDGET = 10
TEMI = {
    "n_heads": 2,
    "epochs": 5,
    "batch_size": 16,
    "num_threads": 1,
    "pca_dim": None,
    "min_steps": None,
}
CNN = {"width": 4, "image_size": 16, "batch_size": 20, "num_threads": 1}
CLASSES = ["airplane", "automobile", "bird", "cat"]

# variant -> (what must exist first, the call in the child, its result fields)
CALLS = {
    "embeddings": (
        "small",
        f"elfs.compute_embeddings(ds, key='{KEY}', batch_size=4, image_size=32)",
        [f"{KEY}_embedding"],
    ),
    "kmeans": (
        "pool",
        f"elfs.compute_pseudo_labels(ds, key='{KEY}', n_clusters=4, clustering='kmeans', "
        "embeddings_field='elfs_embedding')",
        [f"{KEY}_pseudo_label"],
    ),
    "temi": (
        "pool",
        f"elfs.compute_pseudo_labels(ds, key='{KEY}', n_clusters=4, clustering='temi', "
        f"embeddings_field='elfs_embedding', temi_params={TEMI!r})",
        [f"{KEY}_pseudo_label"],
    ),
    "mlp": (
        "labels",
        f"elfs.compute_difficulty(ds, key='{KEY}', embeddings_field='elfs_embedding', epochs=4)",
        [f"{KEY}_{s}" for s in runs.SCORE_NAMES],
    ),
    "cnn": (
        "labels",
        f"elfs.compute_difficulty(ds, key='{KEY}', proxy='cnn', epochs=3, cnn_params={CNN!r})",
        [f"{KEY}_{s}" for s in runs.SCORE_NAMES],
    ),
    "contrastive": (
        "pool",
        f"elfs.compute_contrastive_scores(ds, key='{KEY}', epochs=3, image_size=16, width=4, "
        "batch_size=20)",
        [f"{KEY}_contrastive"],
    ),
    "coreset": (
        "scores",
        f"elfs.select_coreset(ds, key='{KEY}', budget_count={BUDGET})",
        [f"{KEY}_coreset_region"],
    ),
    "export": (
        "coreset",
        f"elfs.export_coreset(ds, EXPORT_DIR, key='{KEY}', classes={CLASSES!r}, "
        "prelabel_map=PRELABEL_MAP, overwrite=True)",
        [],
    ),
    "export_overwrite": (
        "coreset",
        f"elfs.export_coreset(ds, EXPORT_DIR, key='{KEY}', classes={CLASSES!r}, "
        "prelabel_map=PRELABEL_MAP, overwrite=True)",
        [],
    ),
    "pipeline": (
        "pool",
        f"elfs.run_pipeline(ds, key='{KEY}', budget_count={BUDGET}, n_clusters=4, "
        "clustering='kmeans', embeddings_field='elfs_embedding', epochs=4, visualize=False)",
        [f"{KEY}_pseudo_label", f"{KEY}_coreset_region"] + [f"{KEY}_{s}" for s in runs.SCORE_NAMES],
    ),
}

# (variant, kill point): at least three per stage, and always between two chunk writes,
# between the field writes and the run record, during the tag update, during the export copy.
KILLS = [
    ("embeddings", "embeddings:progress:2"),  # mid-encoding (batch 2 of 4)
    ("embeddings", "embeddings:stored_chunk:2"),  # 2 of 4 chunks of vectors stored
    ("embeddings", "embeddings:chunk:1"),
    ("embeddings", "embeddings:before_run_record:1"),
    ("kmeans", "pseudo_labels:progress:1"),
    ("kmeans", "pseudo_labels:chunk:1"),
    ("kmeans", "pseudo_labels:before_run_record:1"),
    ("temi", "pseudo_labels:progress:5"),  # after epoch 3 of 5 (checkpointed)
    ("temi", "pseudo_labels:chunk:2"),
    ("temi", "pseudo_labels:before_run_record:1"),
    ("mlp", "difficulty:progress:2"),
    ("mlp", "difficulty:chunk:2"),  # mid the score fields (written together: 2 of 3 chunks)
    ("mlp", "difficulty:before_run_record:1"),
    ("cnn", "difficulty:progress:2"),  # after epoch 2 of 3 (checkpointed)
    ("cnn", "difficulty:chunk:1"),
    ("cnn", "difficulty:before_run_record:1"),
    ("contrastive", "contrastive:progress:3"),  # decoding, then epoch 2 of 3 (checkpointed)
    ("contrastive", "contrastive:chunk:1"),
    ("contrastive", "contrastive:before_run_record:1"),
    ("coreset", "coreset:chunk:1"),
    ("coreset", "coreset:tag:1"),
    ("coreset", "coreset:before_run_record:1"),
    ("export", "export:copy:3"),
    ("export", "export:commit:2"),
    ("export", "export:before_marker_removal:1"),
    ("export_overwrite", "export:commit:4"),  # earlier export moved aside, one new moved in
    ("pipeline", "pipeline:progress:3"),
    ("pipeline", "difficulty:before_run_record:1"),
    ("pipeline", "coreset:tag:1"),
    # the pipeline writes the three stages' fields together: mid-staging, and after the one
    # merge but before any of their runs is recorded
    ("pipeline", "coreset:chunk:1"),
    ("pipeline", "pseudo_labels:field:1"),
]
RESUMING = {"temi", "cnn", "contrastive"}  # checkpointed trainings: a mid-training kill resumes

TALLY = {"tried": 0, "survived": 0, "exact": 0, "within_1e-6": 0}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    cache = tmp_path_factory.mktemp("elfs-cache")
    forks = ForkServer(env={"ELFS_CACHE_DIR": str(cache), "ELFS_EMBED_CHUNK_ROWS": "4"})
    yield forks
    forks.close()
    print(
        f"\n[fault injection] kill points tried {TALLY['tried']}, survived with nothing lost "
        f"{TALLY['survived']}; torch scores after a kill: {TALLY['exact']} bit-identical, "
        f"{TALLY['within_1e-6']} within 1e-6"
    )


@pytest.fixture(scope="module")
def prepared(base_dataset):
    """The datasets each variant starts from: 40 images with embeddings ("pool"; 16 of them:
    "small"), then the k-means pseudo-labels of key k ("labels"), its MLP scores ("scores"),
    its coreset."""
    pool = base_dataset.take(N, seed=0).clone(name=f"elfs-faults-pool-{uuid.uuid4().hex[:6]}")
    out = {"pool": pool, "small": pool.limit(16).clone()}
    labels = pool.clone()
    elfs.compute_pseudo_labels(
        labels, key=KEY, n_clusters=4, clustering="kmeans", embeddings_field="elfs_embedding"
    )
    out["labels"] = labels
    scores = labels.clone()
    elfs.compute_difficulty(scores, key=KEY, embeddings_field="elfs_embedding", epochs=4)
    out["scores"] = scores
    coreset = scores.clone()
    elfs.select_coreset(coreset, key=KEY, budget_count=BUDGET)
    out["coreset"] = coreset
    yield out
    for ds in out.values():
        ds.delete()


def _child_code(ds_name: str, call: str, export_dir: str, prelabel_map: dict) -> str:
    return (
        "import fiftyone as fo\n"
        "import fiftyone_elfs as elfs\n"
        "from fiftyone_elfs.stages import record\n"
        f"record.WRITE_CHUNK_ROWS = {CHUNK}\n"
        f"EXPORT_DIR = {export_dir!r}\n"
        f"PRELABEL_MAP = {prelabel_map!r}\n"
        f"ds = fo.load_dataset({ds_name!r})\n"
        f"{call}\n"
    )


def _prelabel_map(ds) -> dict:
    clusters = sorted(set(ds.values(f"{KEY}_pseudo_label.label")) - {None})
    return {c: CLASSES[i % len(CLASSES)] for i, c in enumerate(clusters[:3])}


def _run(server, tmp_path, ds, variant, kill=None, export_dir=""):
    _, call, _ = CALLS[variant]
    prelabel = _prelabel_map(ds) if variant.startswith("export") else {}
    env = {"ELFS_KILL_AT": kill} if kill else {}
    log = str(tmp_path / f"child-{variant}.log")
    done = server.run(
        _child_code(ds.name, call, export_dir, prelabel),
        log,
        env=env,
        unset=() if kill else ("ELFS_KILL_AT",),
    )
    with open(log) as f:
        done["log"] = f.read()[-3000:]
    return done


# --------------------------------------------------------------------------- observations


def _values(ds, field):
    """{filepath: value} of a field (None where unset); labels as (label, confidence)."""
    paths, values = ds.values(["filepath", field])
    if values and any(isinstance(v, fo.Classification) for v in values):
        values = [None if v is None else (v.label, v.confidence) for v in values]
    return dict(zip(paths, values, strict=True))


def _user_state(ds):
    """What the user sees that is not the stage's result: other fields, tags, views, runs."""
    ds.reload()
    return {
        "ground_truth": ds.values("ground_truth.label"),
        "embedding": [np.asarray(v).tobytes() for v in ds.values("elfs_embedding")],
        "views": sorted(set(ds.list_saved_views()) - {f"{KEY}-coreset"}),  # the stage's own
        "brain": sorted(ds.list_brain_runs()),
    }


def _export_files(folder):
    """Export outputs normalised across datasets (sample ids differ between clones)."""
    files = {}
    for root, _, names in os.walk(folder):
        for name in names:
            rel = os.path.relpath(os.path.join(root, name), folder)
            if rel == "notes.txt":  # the user's file: checked on its own
                continue
            if rel.startswith(".elfs") or rel.startswith(export.FIFTYONE_DIR + os.sep + "metadata"):
                continue
            if rel.startswith(export.FIFTYONE_DIR) and not rel.startswith(
                os.path.join(export.FIFTYONE_DIR, "data")
            ):
                continue  # FiftyOne's own json (ids, timestamps): media compared below
            with open(os.path.join(root, name), "rb") as f:
                data = f.read()
            if rel == export.MANIFEST:
                rows = list(csv.DictReader(io.StringIO(data.decode())))
                data = json.dumps([{k: v for k, v in r.items() if k != "sample_id"} for r in rows])
            elif rel == export.LABEL_STUDIO_TASKS:
                tasks = json.loads(data)
                for t in tasks:
                    t["data"].pop("sample_id")
                data = json.dumps(tasks, sort_keys=True)
            files[rel] = data
    return files


def _outcome(ds, variant, export_dir):
    ds.reload()
    if variant.startswith("export"):
        return {"files": _export_files(export_dir)}
    out = {f: _values(ds, f) for f in CALLS[variant][2]}
    if variant in ("coreset", "pipeline"):
        out["selected"] = sorted(ds.match_tags(f"{KEY}_coreset").values("filepath"))
    return out


def _assert_same(got, want, tally):
    """Labels, selections and files identical; floats within 1e-6 (tally: exact or not)."""
    assert got.keys() == want.keys()
    exact = True
    for name in want:
        if name in ("files", "selected"):
            assert got[name] == want[name], name
            continue
        assert got[name].keys() == want[name].keys()
        for path, value in want[name].items():
            other = got[name][path]
            if isinstance(value, tuple):  # (label, confidence)
                assert other[0] == value[0], (name, path)
                value, other = value[1], other[1]
            if isinstance(value, str) or value is None:
                assert other == value, (name, path)
                continue
            a, b = np.asarray(other, dtype=float), np.asarray(value, dtype=float)
            assert np.allclose(a, b, rtol=0, atol=1e-6), (name, path, float(np.abs(a - b).max()))
            exact &= bool(np.array_equal(a, b))
    if tally:
        TALLY["exact" if exact else "within_1e-6"] += 1


def _assert_nothing_half_written(ds, variant, user_before):
    ds.reload()
    for run_key in ds.list_runs():  # no run without results
        assert ds.load_run_results(run_key, load_view=False, cache=False) is not None, run_key
    n = len(ds)
    for field in CALLS[variant][2]:  # each result field absent or complete
        if ds.get_field(field) is not None:
            assert len(ds.exists(field)) == n, f"{field} partially filled"
    counts = ds.count_sample_tags()
    assert counts.get(f"{KEY}_coreset", BUDGET) == BUDGET, "partial tag"
    for stage in runs.list_pipelines(ds).get(KEY, []):  # a recorded run has all its outputs
        config = runs.stage_config(ds, runs.PipelineNames(KEY), stage)
        for field in config.owned_fields:
            assert ds.get_field(field) is not None, field
    assert _user_state(ds) == user_before


def _assert_export_folder_consistent(folder, n_rows):
    """Complete (record, no marker), or explicitly incomplete (marker) with whole outputs."""
    if not os.path.isdir(folder):
        return
    marker = os.path.exists(os.path.join(folder, export_folder.INCOMPLETE))
    record = os.path.join(folder, export_folder.RECORD)
    if not marker:
        visible = [e for e in os.listdir(folder) if not e.startswith(".")]
        if visible:
            with open(record) as f:
                listed = json.load(f)["outputs"]
            assert set(listed) <= set(os.listdir(folder))
    media = os.path.join(folder, export.MEDIA_DIR)
    if os.path.isdir(media):
        assert len(os.listdir(media)) == n_rows, "a partial media folder is visible"
    manifest = os.path.join(folder, export.MANIFEST)
    if os.path.exists(manifest):
        with open(manifest) as f:
            assert len(list(csv.DictReader(f))) == n_rows


_REFERENCES: dict[str, dict] = {}


def _reference(server, tmp_path_factory, prepared, variant):
    """The outcome of an uninterrupted run of `variant` (computed once, in a child)."""
    if variant not in _REFERENCES:
        ds = prepared[CALLS[variant][0]].clone()
        folder = str(tmp_path_factory.mktemp("reference") / "export")
        try:
            done = _run(server, tmp_path_factory.mktemp("ref-log"), ds, variant, export_dir=folder)
            assert done["status"] == 0, done["log"]
            _REFERENCES[variant] = _outcome(ds, variant, folder)
        finally:
            ds.delete()
    return _REFERENCES[variant]


@pytest.mark.slow
@pytest.mark.parametrize("variant, kill", KILLS, ids=[f"{v}-{k}" for v, k in KILLS])
def test_a_killed_stage_leaves_nothing_half_written_and_reruns_to_the_same_result(
    server, prepared, tmp_path, tmp_path_factory, variant, kill
):
    TALLY["tried"] += 1
    want = _reference(server, tmp_path_factory, prepared, variant)
    ds = prepared[CALLS[variant][0]].clone()
    folder = str(tmp_path / "export")
    try:
        if variant == "export_overwrite":  # an earlier export and a file of the user's there
            elfs.export_coreset(ds, folder, key=KEY, formats=["media"])
            with open(os.path.join(folder, "notes.txt"), "w") as f:
                f.write("mine")
            earlier = _export_files(folder)
        user_before = _user_state(ds)

        killed = _run(server, tmp_path, ds, variant, kill=kill, export_dir=folder)
        assert killed["status"] == -9, f"not killed at {kill}:\n{killed['log']}"
        _assert_nothing_half_written(ds, variant, user_before)
        if variant.startswith("export"):
            _assert_export_folder_consistent(folder, BUDGET)
        if variant == "export_overwrite":
            assert open(os.path.join(folder, "notes.txt")).read() == "mine"
            export_folder.recover(folder)  # what the next export does first: earlier one back
            assert _export_files(folder) == earlier

        again = _run(server, tmp_path, ds, variant, export_dir=folder)
        assert again["status"] == 0, again["log"]
        _assert_same(_outcome(ds, variant, folder), want, tally=variant in RESUMING)
        ds.reload()
        assert not [f for f in ds.get_field_schema() if f.startswith("elfs_staging_")]
        assert dataset_io.staging_collections(ds) == []
        assert journal.entries(ds) == []
        assert leases._collection().count_documents({"_id": {"$regex": f"^{ds._doc.id}:"}}) == 0
        if variant in RESUMING and ":progress:" in kill:
            stage = {"temi": "pseudo_labels", "cnn": "difficulty"}.get(variant, variant)
            resumed = ds.load_run_results(f"{KEY}_{stage}", load_view=False).resumed_from_epoch
            assert resumed > 0, "the rerun did not resume from the checkpoint"
        if ":stored_chunk:" in kill:
            results = ds.load_run_results(f"{KEY}_embeddings", load_view=False)
            assert results.n_resumed == 8, "the rerun did not resume from the stored chunks"
        assert embedding_chunks.count(ds._doc.id, KEY) == 0
        if variant == "export_overwrite":
            assert open(os.path.join(folder, "notes.txt")).read() == "mine"
        TALLY["survived"] += 1
    finally:
        ds.delete()
