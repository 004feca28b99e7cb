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
