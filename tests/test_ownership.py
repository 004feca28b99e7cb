"""Issue 15 items 1 and 5: a key never overwrites or deletes what it did not create, and two runs
of the same (dataset, key, stage) never proceed at once (MongoDB leases)."""

from __future__ import annotations

import datetime
import os
import socket
import threading
import uuid

import fiftyone as fo
import fiftyone.operators as foo
import pytest
from dataset_state import snapshot

import fiftyone_elfs as elfs
from fiftyone_elfs import dataset_io, journal, leases, runs
from fiftyone_elfs.errors import ElfsInputError

PLUGIN = "@fiftyone-elfs/elfs"
KMEANS = dict(n_clusters=4, clustering="kmeans", embeddings_field="elfs_embedding")


@pytest.fixture(scope="module")
def pool(base_dataset):
    ds = base_dataset.take(40, seed=2).clone(name=f"elfs-ownership-{uuid.uuid4().hex[:6]}")
    yield ds
    ds.delete()


@pytest.fixture
def ds(pool):
    copy = pool.clone()
    yield copy
    copy.delete()


def _add_user_data(ds):
    """The issue's reproduction: user fields, a tag and a saved view named like key 'mine'."""
    ids = ds.values("id")
    labels = [fo.Classification(label=f"user_{i % 3}") for i in range(len(ids))]
    ds.set_values("mine_pseudo_label", dict(zip(ids, labels, strict=True)), key_field="id")
    ds.set_values("mine_aum", dict(zip(ids, [0.5] * len(ids), strict=True)), key_field="id")
    ds.select(ids[:5]).tag_samples("mine_coreset")
    ds.save_view("mine-coreset", ds.match_tags("mine_coreset"), description="my picks")


def test_the_issue_reproduction_changes_nothing_of_the_users(ds):
    _add_user_data(ds)
    before = snapshot(ds)
    with pytest.raises(ElfsInputError, match="field 'mine_pseudo_label' already exists.*Fix: use"):
        elfs.compute_pseudo_labels(ds, key="mine", **KMEANS)
    with pytest.raises(ElfsInputError, match="No pseudo-labels for key 'mine'.*exists but was not"):
        elfs.compute_difficulty(ds, key="mine", embeddings_field="elfs_embedding")
    with pytest.raises(ElfsInputError, match="No 'aum' scores for key 'mine'.*exists but was not"):
        elfs.select_coreset(ds, key="mine", budget_count=10)
    with pytest.raises(ElfsInputError, match="field 'mine_pseudo_label' already exists"):
        elfs.run_pipeline(ds, key="mine", budget_count=10, **KMEANS, epochs=1, visualize=False)
    assert elfs.delete_key(ds, "mine") == []
    with pytest.warns(DeprecationWarning):
        assert elfs.delete_run(ds, "mine") == []
    operator = foo.get_operator(f"{PLUGIN}/compute_pseudo_labels")
    with pytest.raises(ElfsInputError, match="The field 'mine_pseudo_label'"):
        operator(ds, key="mine", **KMEANS)
    assert snapshot(ds) == before
    assert "mine" not in elfs.list_keys(ds)


def test_a_user_tag_or_saved_view_of_the_keys_names_is_refused(ds):
    elfs.compute_pseudo_labels(ds, key="mine", **KMEANS)
    elfs.compute_difficulty(ds, key="mine", embeddings_field="elfs_embedding", epochs=2)
    ids = ds.values("id")
    ds.select(ids[:3]).tag_samples("mine_coreset")
    ds.select(ids[3:5]).tag_samples("keep")
    before = snapshot(ds)
    with pytest.raises(ElfsInputError, match="tag 'mine_coreset' is already on samples.*Fix:"):
        elfs.select_coreset(ds, key="mine", budget_count=10)
    with pytest.raises(ElfsInputError, match="tag 'keep' is already on samples"):
        elfs.select_coreset(ds, key="mine", budget_count=10, tag="keep")
    assert snapshot(ds) == before
    ds.untag_samples(["mine_coreset", "keep"])
    ds.save_view("mine-coreset", ds.limit(2), description="mine")
    before = snapshot(ds)
    with pytest.raises(ElfsInputError, match="saved view 'mine-coreset' already exists.*Fix:"):
        foo.get_operator(f"{PLUGIN}/select_coreset")(ds, key="mine", budget_count=10)
    assert snapshot(ds) == before


def test_delete_key_removes_only_what_its_runs_recorded(ds):
    elfs.run_pipeline(ds, key="a", budget_count=8, **KMEANS, epochs=2, visualize=False)
    ds.set_values("a_notes", {i: "mine" for i in ds.values("id")}, key_field="id")
    # the user replaces one of a's fields with their own under the same name
    ds.delete_sample_field("a_el2n")
    ds.set_values("a_el2n", {i: 1.0 for i in ds.values("id")}, key_field="id")
    with pytest.raises(ElfsInputError, match="field 'a_el2n' is recorded by .* no longer carries"):
        elfs.compute_difficulty(ds, key="a", embeddings_field="elfs_embedding", epochs=1)
    kept = snapshot(ds, fields=["a_notes", "a_el2n", "ground_truth", "elfs_embedding"])
    assert elfs.delete_key(ds, "a") == ["pseudo_labels", "difficulty", "coreset"]
    for gone in ("a_pseudo_label", "a_aum", "a_forgetting", "a_coreset_region"):
        assert ds.get_field(gone) is None, gone
    assert not ds.has_saved_view("a-coreset") and "a_coreset" not in ds.count_sample_tags()
    after = snapshot(ds, fields=["a_notes", "a_el2n", "ground_truth", "elfs_embedding"])
    assert after["values"] == kept["values"]


def test_the_run_record_is_registered_with_its_results_and_behaves_like_fiftyones(ds):
    elfs.compute_pseudo_labels(ds, key="r", **KMEANS)
    info = ds.get_run_info("r_pseudo_labels")
    assert info.config.method == "fiftyone_elfs.pseudo_labels"
    assert info.config.owned_fields == ["r_pseudo_label"]
    assert ds.load_run_results("r_pseudo_labels", cache=False).n_samples == len(ds)
    assert dataset_io.field_mark(ds, "r_pseudo_label") == {"key": "r", "stage": "pseudo_labels"}
    first = info.timestamp
    elfs.compute_pseudo_labels(ds, key="r", **{**KMEANS, "n_clusters": 3})
    assert ds.get_run_info("r_pseudo_labels").timestamp > first
    assert len(set(ds.values("r_pseudo_label.label"))) == 3
    reloaded = fo.load_dataset(ds.name)
    reloaded.reload()
    assert reloaded.list_runs().count("r_pseudo_labels") == 1
    ds.delete_run("r_pseudo_labels")  # FiftyOne's own deletion works on it
    assert "r_pseudo_labels" not in ds.list_runs()
    assert not [f for f in ds.get_field_schema() if f.startswith("elfs_staging_")]
    assert dataset_io.staging_collections(ds) == []


# --------------------------------------------------------------------------- leases


def _lease_doc(ds, key, stage):
    return leases._collection().find_one({"_id": leases.lease_id(ds._doc.id, key, stage)})


def test_a_second_concurrent_run_of_the_same_key_and_stage_is_refused(ds):
    started, release = threading.Event(), threading.Event()

    def hold():
        with leases.hold(str(ds._doc.id), "c", ["pseudo_labels"]):
            started.set()
            release.wait(60)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert started.wait(60)
        before = snapshot(ds)
        with pytest.raises(ElfsInputError, match="Another run of the 'pseudo_labels' stage of key"):
            elfs.compute_pseudo_labels(ds, key="c", **KMEANS)
        with pytest.raises(ElfsInputError, match="Another run of the 'pseudo_labels' stage"):
            foo.get_operator(f"{PLUGIN}/run_elfs_pipeline")(
                ds, key="c", budget_count=5, **KMEANS, epochs=1, visualize=False
            )
        assert snapshot(ds) == before
        elfs.compute_pseudo_labels(ds, key="other", **KMEANS)  # another key is free
        doc = _lease_doc(ds, "c", "pseudo_labels")
        assert doc["host"] == socket.gethostname() and doc["pid"] == os.getpid()
    finally:
        release.set()
        holder.join()
    assert _lease_doc(ds, "c", "pseudo_labels") is None  # released
    elfs.compute_pseudo_labels(ds, key="c", **KMEANS)
    assert _lease_doc(ds, "c", "pseudo_labels") is None


def test_a_crashed_holders_lease_expires_or_is_taken_over_when_its_process_is_gone(ds):
    stale = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(
        seconds=leases.EXPIRY_S + 5
    )
    fresh = datetime.datetime.now(datetime.timezone.utc)
    collection = leases._collection()
    lid = leases.lease_id(ds._doc.id, "x", "pseudo_labels")
    # another machine, no heartbeat for longer than the expiry: free
    collection.insert_one(
        {
            "_id": lid,
            "owner": "o1",
            "host": "elsewhere",
            "pid": 1,
            "started_at": stale,
            "heartbeat_at": stale,
        }
    )
    elfs.compute_pseudo_labels(ds, key="x", **KMEANS)
    # another machine, heartbeat fresh: busy, naming its start and the fix
    collection.insert_one(
        {
            "_id": lid,
            "owner": "o2",
            "host": "elsewhere",
            "pid": 1,
            "started_at": fresh,
            "heartbeat_at": fresh,
        }
    )
    with pytest.raises(ElfsInputError, match=r"started \d{4}-\d\d-\d\d .* on host elsewhere.*Fix"):
        elfs.compute_pseudo_labels(ds, key="x", **KMEANS)
    # this machine, fresh heartbeat but the process is gone (kill -9): taken over at once
    collection.update_one({"_id": lid}, {"$set": {"host": socket.gethostname(), "pid": 2**22 + 7}})
    elfs.compute_pseudo_labels(ds, key="x", **KMEANS)
    assert collection.find_one({"_id": lid}) is None


def test_the_heartbeat_keeps_a_long_run_s_lease_alive(ds, monkeypatch):
    monkeypatch.setattr(leases, "HEARTBEAT_S", 0.2)
    with leases.hold(str(ds._doc.id), "h", ["difficulty"]):
        first = _lease_doc(ds, "h", "difficulty")["heartbeat_at"]
        deadline = datetime.datetime.now() + datetime.timedelta(seconds=20)
        while _lease_doc(ds, "h", "difficulty")["heartbeat_at"] == first:
            assert datetime.datetime.now() < deadline, "no heartbeat"
            threading.Event().wait(0.1)
        assert not leases.is_held_elsewhere(str(ds._doc.id), "h", "difficulty")
    assert _lease_doc(ds, "h", "difficulty") is None


def test_leftovers_of_an_interrupted_run_are_not_taken_for_user_data(ds):
    """A result field or tag without its run record (killed between the writes and the run
    record, see test_faults) is the key's own: the next run of the key or delete_key cleans it."""
    names = runs.PipelineNames("z")
    journal.add(ds, names.key, "pseudo_labels", {"owned_fields": ["z_pseudo_label"]})
    leftover = {i: fo.Classification(label="x") for i in ds.values("id")}
    ds.set_values("z_pseudo_label", leftover, key_field="id")
    # the commit declares a field with its run's mark before it writes a value
    dataset_io.mark_field(ds, "z_pseudo_label", runs.field_mark(names, "pseudo_labels"))
    elfs.compute_pseudo_labels(ds, key="z", **KMEANS)  # not refused: cleaned, then written
    assert journal.entries(ds) == []
    assert "x" not in set(ds.values("z_pseudo_label.label"))
    journal.add(ds, names.key, "coreset", {"owned_tags": ["z_coreset"]})
    ds.select(ds.values("id")[:4]).tag_samples("z_coreset")
    assert elfs.delete_key(ds, "z") == ["pseudo_labels"]
    assert "z_coreset" not in ds.count_sample_tags() and ds.get_field("z_pseudo_label") is None
    assert journal.entries(ds) == []


def test_a_field_the_user_creates_after_an_interruption_is_not_taken_for_its_leftover(ds):
    """Audit 'safety' #1: a run killed before it created its field left the name journaled; a
    field the user then made under that name (no mark) was deleted by the key's next run and by
    delete_key."""
    names = runs.PipelineNames("z")
    journal.add(ds, names.key, "embeddings", {"owned_fields": ["my_emb"]})  # killed here
    ds.set_values("my_emb", [[float(i), 1.0] for i in range(len(ds))])  # the user's own
    before = snapshot(ds)
    with pytest.raises(ElfsInputError, match="'z_embedding' does not exist.*compute_embeddings"):
        elfs.compute_pseudo_labels(ds, key="z", n_clusters=3, clustering="kmeans")
    assert elfs.delete_key(ds, "z") == []
    assert snapshot(ds) == before and journal.entries(ds) == []
    # a field that carries the interrupted run's mark is its leftover, and goes
    journal.add(ds, names.key, "embeddings", {"owned_fields": ["z_embedding"]})
    ds.set_values("z_embedding", [[1.0, 0.0]] * len(ds))
    dataset_io.mark_field(ds, "z_embedding", runs.field_mark(names, "embeddings"))
    assert elfs.delete_key(ds, "z") == []
    assert ds.get_field("z_embedding") is None and ds.get_field("my_emb") is not None


def test_a_view_or_plot_the_user_saved_under_a_keys_name_is_theirs(ds, caplog):
    """Audit 'safety' #3: a view or plot re-created by the user under a name a run records was
    deleted by delete_key and replaced by a rerun without a word (fields were protected)."""
    elfs.run_pipeline(ds, key="v", budget_count=6, **KMEANS, epochs=1, visualize=False)
    elfs.compute_visualization(ds, key="v", layout_method="pca", embeddings_field="elfs_embedding")
    mine = ds.match_tags("v_coreset").limit(2)
    ds.save_view("v-coreset", mine, description="MY curated picks", overwrite=True)
    plot_key = "v_pca"  # the PCA layout's brain key
    ds.delete_brain_run(plot_key)
    import fiftyone.brain as fob

    fob.compute_visualization(
        ds, embeddings="elfs_embedding", method="pca", brain_key=plot_key, seed=0
    )
    before = snapshot(ds)
    with pytest.raises(ElfsInputError, match="saved view 'v-coreset'"):
        elfs.select_coreset(ds, key="v", budget_count=5)
    with pytest.raises(ElfsInputError, match=f"'{plot_key}'"):
        elfs.compute_visualization(
            ds, key="v", layout_method="pca", embeddings_field="elfs_embedding"
        )
    assert snapshot(ds) == before
    assert "visualization" in elfs.delete_key(ds, "v")
    assert ds.get_saved_view_info("v-coreset")["description"] == "MY curated picks"
    assert plot_key in ds.list_brain_runs() and elfs.list_keys(ds) == {}
    assert "kept the" in caplog.text and "saved view 'v-coreset'" in caplog.text


def test_fields_that_lost_the_runs_mark_are_named_as_such_and_kept_with_a_warning(ds, caplog):
    """Audit 'lifecycle' #3: an export and import as LegacyFiftyOneDataset keeps the runs and
    drops the fields' info, where the runs' mark is. A rerun called the key's own fields "yours,
    or another tool's", and delete_key reported every stage deleted and kept the fields without
    a word, so the key stayed refused."""
    elfs.run_pipeline(ds, key="u", budget_count=6, **KMEANS, epochs=1, visualize=False)
    for name in ("u_aum", "u_forgetting", "u_el2n"):  # what that importer does
        field = ds.get_field(name)
        field.info = None
        field.save()
    before = snapshot(ds)
    with pytest.raises(ElfsInputError) as refused:
        elfs.compute_difficulty(ds, key="u", embeddings_field="elfs_embedding", epochs=1)
    assert str(refused.value).startswith(
        "The field 'u_aum' is recorded by the 'difficulty' stage of key 'u' but no longer carries "
        "ELFS's mark"
    )
    assert "LegacyFiftyOneDataset" in str(refused.value)
    assert "Fix: if it is the key's, delete it (dataset.delete_sample_field('u_aum'))" in str(
        refused.value
    )
    assert snapshot(ds) == before
    with caplog.at_level("WARNING"):
        assert "difficulty" in elfs.delete_key(ds, "u")
    assert "Kept the field(s) ['u_aum', 'u_forgetting', 'u_el2n'] that the difficulty run" in (
        caplog.text
    )
    assert ds.has_field("u_aum") and not ds.has_field("u_pseudo_label")


def test_the_app_colours_of_a_users_field_of_the_keys_name_are_kept(ds):
    """Audit 'safety' #4: a typical coreset (it reads no pseudo-labels) recoloured the user's own
    '<key>_pseudo_label' field; delete_key left the key's colour entries behind."""
    ids = ds.values("id")
    labels = [fo.Classification(label=["cat", "dog"][i % 2]) for i in range(len(ids))]
    ds.set_values("mine_pseudo_label", dict(zip(ids, labels, strict=True)), key_field="id")
    users = {
        "path": "mine_pseudo_label",
        "fieldColor": "#000000",
        "colorByAttribute": "label",
        "valueColors": [{"value": "cat", "color": "#ff0000"}, {"value": "dog", "color": "#0000ff"}],
    }
    ds.app_config.color_scheme = fo.ColorScheme(fields=[users])
    ds.save()
    elfs.compute_embeddings(ds, key="mine")
    elfs.select_coreset(ds, key="mine", budget_count=8, mode="typical")
    entries = {dict(f)["path"]: dict(f) for f in ds.app_config.color_scheme.fields}
    assert entries["mine_pseudo_label"] == users and "mine_coreset_region" in entries
    assert elfs.delete_key(ds, "mine") == ["embeddings", "coreset"]
    assert [dict(f) for f in ds.app_config.color_scheme.fields] == [users]
