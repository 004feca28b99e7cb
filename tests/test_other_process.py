"""A dataset loaded in this process while another process (a delegated worker, another script)
records runs on it: the library reads the current records, not the ones loaded earlier."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

import fiftyone_elfs as elfs
from fiftyone_elfs.errors import ElfsInputError

KEY = "k"

_WORKER = """
import fiftyone as fo
import fiftyone_elfs as elfs

ds = fo.load_dataset({name!r})
common = dict(clustering="kmeans", embeddings_field="elfs_embedding")
elfs.compute_pseudo_labels(ds, key="k", n_clusters=3, **common)  # replaces k's pseudo-labels
elfs.compute_pseudo_labels(ds, key="w", n_clusters=3, **common)
elfs.compute_difficulty(ds, key="w", epochs=2, embeddings_field="elfs_embedding")
"""


def _run_elsewhere(ds) -> None:
    code = textwrap.dedent(_WORKER.format(name=ds.name))
    done = subprocess.run(
        [sys.executable, "-c", code], env=dict(os.environ), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]


def test_runs_recorded_by_another_process_are_seen_by_this_ones_loaded_dataset(ds):
    """The script that queued a run and went on with its loaded dataset selected from scores of
    replaced pseudo-labels, did not see the worker's scores, and left them at delete_key."""
    assert "w" not in elfs.list_keys(ds)
    _run_elsewhere(ds)

    with pytest.raises(ElfsInputError, match="trained on earlier pseudo-labels"):
        elfs.select_coreset(ds, key=KEY, budget_count=5, mode="window")
    assert elfs.list_keys(ds)["w"] == ["pseudo_labels", "difficulty"]
    assert elfs.summarize_run(ds, "w").stages == ["pseudo_labels", "difficulty"]
    result = elfs.select_coreset(ds, key="w", budget_count=5, mode="window")
    assert result.budget == 5
    assert sorted(elfs.delete_key(ds, "w")) == sorted(["pseudo_labels", "difficulty", "coreset"])
    assert "w" not in elfs.list_keys(ds) and "w_aum" not in ds.get_field_schema()


def test_unsaved_changes_meeting_changes_from_elsewhere_are_a_clear_error(ds):
    """Reloading would drop the user's unsaved edits: refused, naming save and reload."""
    ds.info["note"] = "mine, not saved yet"
    _run_elsewhere(ds)
    with pytest.raises(ElfsInputError, match=r"unsaved changes.*dataset\.save\(\) to store yours"):
        elfs.select_coreset(ds, key="w", budget_count=5, mode="window")
    assert ds.info["note"] == "mine, not saved yet"
    ds.save()
    assert elfs.select_coreset(ds, key="w", budget_count=5, mode="window").budget == 5


def test_a_freshly_loaded_handle_that_changed_nothing_is_refreshed_not_refused(ds):
    """FiftyOne marks a schema entry changed when it loads a dataset with samples; every ELFS
    call on a handle loaded before another process recorded a run was refused as "unsaved
    changes" (a notebook that changed nothing, a script that had just started)."""
    import fiftyone as fo

    fo.Dataset._instances.pop(ds.name)  # a new process's handle: loaded from the database
    handle = fo.load_dataset(ds.name)
    assert handle is not ds and handle._doc._get_changed_fields()  # FiftyOne's own marks
    _run_elsewhere(handle)
    assert elfs.list_keys(handle)["w"] == ["pseudo_labels", "difficulty"]
    assert elfs.select_coreset(handle, key="w", budget_count=5, mode="window").budget == 5


def _elsewhere(code: str, **names: str) -> subprocess.Popen:
    """Starts `code` (formatted with `names`) in another Python process."""
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code.format(**names))],
        env=dict(os.environ),
        stderr=subprocess.PIPE,
        text=True,
    )


def _finished(process: subprocess.Popen) -> None:
    _, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-3000:]


def _when_writing(action):
    """A progress callback that runs `action` once, when the pipeline starts writing."""
    done = []

    def progress(fraction: float, label: str) -> None:
        if label.startswith("writing") and not done:
            done.append(True)
            action()

    return progress


_PIPELINE = dict(
    budget_count=5, n_clusters=3, clustering="kmeans", embeddings_field="elfs_embedding",
    epochs=2, visualize=False,
)  # fmt: skip

_TEAMMATE = """
import fiftyone as fo

ds = fo.load_dataset({name!r})
ds.save_view("t-coreset", ds.limit(3), description="my hand-picked three")
ds.add_sample_field("t_coreset_region", fo.StringField)
ds.limit(3).set_values("t_coreset_region", ["mine"] * 3)
"""


def test_a_view_and_field_a_teammate_created_while_a_run_computed_are_refused_at_commit(ds):
    """The commit checked ownership on the process's copy of the record, which did not have
    them: the teammate's saved view and field were replaced."""
    progress = _when_writing(lambda: _finished(_elsewhere(_TEAMMATE, name=ds.name)))
    with pytest.raises(ElfsInputError, match="already exists and was not"):
        elfs.run_pipeline(ds, key="t", progress=progress, **_PIPELINE)
    ds.reload()
    view = next(v for v in ds.list_saved_views(info=True) if v["name"] == "t-coreset")
    assert (
        view["description"] == "my hand-picked three" and len(ds.load_saved_view("t-coreset")) == 3
    )
    assert ds.count_values("t_coreset_region") == {"mine": 3, None: len(ds) - 3}
    assert "t" not in elfs.list_keys(ds) and ds.get_field("t_aum") is None


_REEMBED = """
import fiftyone as fo
import fiftyone_elfs as elfs

elfs.compute_embeddings(fo.load_dataset({name!r}), key="e", image_size=64)
"""


def test_embeddings_another_process_recomputed_during_the_pipeline_stop_its_commit(ds):
    """The pipeline's check read the embeddings' version from the process's copy of the
    record: it wrote pseudo-labels, scores and a coreset of vectors no longer there."""
    elfs.compute_embeddings(ds, key="e", image_size=48)
    progress = _when_writing(lambda: _finished(_elsewhere(_REEMBED, name=ds.name)))
    given = dict(_PIPELINE, embeddings_field="e_embedding")
    with pytest.raises(ElfsInputError, match="recomputed by another run while this pipeline"):
        elfs.run_pipeline(ds, key="t", progress=progress, **given)
    ds.reload()
    assert ds.get_run_info("e_embeddings").config.image_size == 64  # the other process's
    assert "t" not in elfs.list_keys(ds) and ds.get_field("t_pseudo_label") is None


_OTHER_KEY = """
import fiftyone as fo
import fiftyone_elfs as elfs

ds = fo.load_dataset({name!r})
elfs.compute_pseudo_labels(ds, key="y", n_clusters=3, clustering="kmeans",
                           embeddings_field="elfs_embedding")
"""


def test_two_keys_commit_one_after_the_other_and_both_keep_their_fields(ds):
    """FiftyOne rewrites the field list from each process's copy: two keys committing at once
    lost each other's fields or marks (the key then refused as "yours" for good). A commit
    waits for the dataset's commit turn; here this process holds it while another computes
    key 'y' (seconds: k-means on 40 samples) and commits, then commits key 'x' itself."""
    import time

    from fiftyone_elfs import dataset_io, leases, runs

    dataset_id = dataset_io.dataset_id(ds)
    with leases.commit_turn(dataset_id):
        other = _elsewhere(_OTHER_KEY, name=ds.name)
        deadline = time.time() + 120
        while "y" not in leases.live_keys(dataset_id):  # it started its run
            assert other.poll() is None and time.time() < deadline, other.stderr.read()[-3000:]
            time.sleep(0.2)
        elfs.compute_pseudo_labels(
            ds, key="x", n_clusters=3, clustering="kmeans", embeddings_field="elfs_embedding"
        )
        time.sleep(8)  # ample for its k-means; its commit waits for the turn
        assert other.poll() is None and "y" not in elfs.list_keys(ds)
    _finished(other)
    assert {"x", "y"} <= set(elfs.list_keys(ds))
    for key in ("x", "y"):
        names = runs.PipelineNames(key)
        mark = dataset_io.field_mark(ds, names.pseudo_label_field)
        assert mark == runs.field_mark(names, "pseudo_labels")


_COLOURS = """
import fiftyone as fo

ds = fo.load_dataset({name!r})
scheme = ds.app_config.color_scheme or fo.ColorScheme()
scheme.fields = list(scheme.fields or []) + [{{"path": "ground_truth", "fieldColor": "#123456"}}]
ds.app_config.color_scheme = scheme
ds.save()
"""


def test_colours_stored_elsewhere_since_loading_are_kept_when_a_run_sets_its_own(ds, monkeypatch):
    """A run wrote the App colour scheme this process had loaded plus its own entries: colours
    set since in the App, or by a run of another key committing at the same time (three keys
    at once kept one key's colours), were lost."""
    from fiftyone_elfs import app_colors

    entries = app_colors.color_scheme_fields

    def colours_set_elsewhere_meanwhile(*args):  # after the run's last reload of the dataset
        _finished(_elsewhere(_COLOURS, name=ds.name))
        return entries(*args)

    monkeypatch.setattr(app_colors, "color_scheme_fields", colours_set_elsewhere_meanwhile)
    elfs.run_pipeline(ds, key="x", **_PIPELINE)
    monkeypatch.undo()
    ds.reload()
    paths = [dict(f)["path"] for f in ds.app_config.color_scheme.fields]
    assert {"ground_truth", f"{KEY}_coreset_region", "x_coreset_region"} <= set(paths)
    # delete_key removes its own entries from the scheme as stored, keeping the other's
    _finished(_elsewhere(_COLOURS.replace("ground_truth", "filepath"), name=ds.name))
    elfs.delete_key(ds, KEY)
    ds.reload()
    paths = [dict(f)["path"] for f in ds.app_config.color_scheme.fields]
    assert {"ground_truth", "filepath"} <= set(paths) and f"{KEY}_coreset_region" not in paths
