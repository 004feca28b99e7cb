"""Outputs a key left without its runs, and what interrupted runs left outside the dataset.

- A view's ``clone()`` copies ELFS's fields (with their marks) and tags but no runs, and
  FiftyOne's ``delete_run`` removes a run's record but not what it wrote: the key's leftovers
  are named as such (where they come from, the fix), a rerun of a stage takes over its own
  fields, and ``delete_key`` removes them, never the user's data next to them.
- FiftyOne's ``rename_run`` on an ELFS run makes it the user's record: every lookup agrees that
  it is no stage of the key any more (no ``AttributeError``), and its outputs are leftovers.
- A killed training's checkpoint goes with ``delete_key``; embedding chunks, shard plans and
  checkpoints of a deleted dataset go when the next embedding run starts.

The kills are real (``ELFS_KILL_AT``, in children of `fork_server.ForkServer`).
"""

from __future__ import annotations

import logging
import os
import uuid

import fiftyone.core.odm as foo
import numpy as np
import pytest
from dataset_state import snapshot
from fork_server import ForkServer

import fiftyone_elfs as elfs
from fiftyone_elfs import (
    checkpoint_folders,
    dataset_io,
    embedding_chunks,
    journal,
    leases,
    sharding,
)
from fiftyone_elfs.difficulty import checkpoints
from fiftyone_elfs.errors import ElfsInputError

KMEANS = dict(n_clusters=4, clustering="kmeans", embeddings_field="elfs_embedding")
PIPELINE = dict(**KMEANS, epochs=2, visualize=False)
CNN = {"width": 4, "image_size": 16, "batch_size": 20, "num_threads": 1}


@pytest.fixture(scope="module")
def pool(base_dataset):
    ds = base_dataset.take(40, seed=4).clone(name=f"elfs-orphans-{uuid.uuid4().hex[:6]}")
    yield ds
    ds.delete()


@pytest.fixture
def ds(pool):
    copy = pool.clone()
    yield copy
    copy.delete()


def _key_names(ds, key="k"):
    """The fields, tags and saved views named like key `key`'s outputs."""
    ds.reload()
    return (
        sorted(f for f in ds.get_field_schema() if f.startswith(f"{key}_")),
        sorted(t for t in ds.distinct("tags") if t.startswith(f"{key}_")),
        sorted(v for v in ds.list_saved_views() if v.startswith(f"{key}-")),
    )


# --------------------------------------------------------------------------- leftovers


def test_a_view_clone_names_the_keys_leftovers_and_delete_key_removes_only_them(ds, caplog):
    elfs.run_pipeline(ds, key="k", budget_count=8, **PIPELINE)
    elfs.select_more(ds, key="k", budget_count=4)
    clone = ds.limit(len(ds)).clone(name=f"elfs-orphans-clone-{uuid.uuid4().hex[:6]}")
    try:
        assert clone.list_runs() == [] and "k" not in elfs.list_keys(clone)
        assert "k_coreset" in clone.count_sample_tags()
        # the user's data: a field renamed from k's (it keeps k's mark), their own field, tag
        # and a saved view named like k's
        clone.rename_sample_field("k_el2n", "my_el2n")
        ids = clone.values("id")
        clone.set_values("notes", {i: "mine" for i in ids[::2]}, key_field="id")
        clone.select(ids[:3]).tag_samples("keep")
        clone.save_view("k-round5", clone.match_tags("keep"), description="my picks")
        before = snapshot(clone)
        with pytest.raises(
            ElfsInputError,
            match=r"tag 'k_coreset' was written by the coreset of key 'k', but no run of the key "
            r"records it.*view\.clone\(\).*Fix: delete_key\(dataset, 'k'\)",
        ):
            elfs.run_pipeline(clone, key="k", budget_count=6, **PIPELINE)
        with pytest.raises(
            ElfsInputError,
            match=r"No pseudo-labels for key 'k': the field 'k_pseudo_label' was written by the "
            r"'pseudo_labels' stage of key 'k'.*Fix: run compute_pseudo_labels",
        ):
            elfs.compute_difficulty(clone, key="k", embeddings_field="elfs_embedding", epochs=1)
        assert snapshot(clone) == before

        # a rerun of a stage takes over the field its key's stage wrote
        elfs.compute_pseudo_labels(clone, key="k", **KMEANS)
        assert clone.get_run_info("k_pseudo_labels").config.owned_fields == ["k_pseudo_label"]
        user_fields = ["my_el2n", "notes", "ground_truth", "elfs_embedding"]
        kept = snapshot(clone, fields=user_fields)
        with caplog.at_level(logging.WARNING, logger="fiftyone_elfs"):
            assert elfs.delete_key(clone, "k") == ["pseudo_labels", "difficulty", "coreset"]
        # a round's tag without its saved view is not provably k's: kept, and said so
        assert _key_names(clone) == ([], ["k_round2"], ["k-round5"])
        assert "kept the tag 'k_round2', saved view 'k-round5'" in caplog.text
        after = snapshot(clone, fields=user_fields)
        assert after["values"] == kept["values"]
        assert {f: after["schema"][f] for f in user_fields} == {
            f: kept["schema"][f] for f in user_fields
        }
        assert clone.count_sample_tags()["keep"] == 3
        assert clone.get_saved_view_info("k-round5")["description"] == "my picks"
        assert elfs.run_pipeline(clone, key="k", budget_count=6, **PIPELINE).budget == 6
    finally:
        clone.delete()


def test_after_delete_run_the_refusal_names_the_leftovers_and_delete_key_removes_them(ds):
    elfs.run_pipeline(ds, key="k", budget_count=8, **PIPELINE)
    elfs.select_more(ds, key="k", budget_count=4)
    ds.delete_run("k_round2")
    ds.delete_run("k_coreset")
    assert elfs.list_keys(ds) == {"k": ["pseudo_labels", "difficulty"]}
    before = snapshot(ds)
    with pytest.raises(
        ElfsInputError,
        match=r"tag 'k_coreset' was written by the coreset of key 'k', but no run of the key "
        r"records it.*dataset\.delete_run\(\).*Fix: delete_key\(dataset, 'k'\).*"
        r"dataset\.untag_samples\('k_coreset'\); dataset\.delete_saved_view\('k-coreset'\)",
    ):
        elfs.select_coreset(ds, key="k", budget_count=5)
    assert snapshot(ds) == before
    # the user replaces one of k's fields with their own under the same name (no mark)
    ds.delete_sample_field("k_aum")
    ds.set_values("k_aum", {i: 1.0 for i in ds.values("id")}, key_field="id")
    assert elfs.delete_key(ds, "k") == ["pseudo_labels", "difficulty", "coreset", "round2"]
    assert _key_names(ds) == (["k_aum"], [], [])
    assert set(ds.values("k_aum")) == {1.0}
    assert elfs.list_keys(ds) == {} and ds.list_runs() == []


def test_a_renamed_run_is_the_users_record_and_no_stage_of_the_key(ds):
    elfs.run_pipeline(ds, key="k", budget_count=8, **PIPELINE)
    elfs.compute_visualization(ds, key="k", layout_method="pca", embeddings_field="elfs_embedding")
    ds.rename_run("k_visualization", "my_plot")
    selected = sorted(ds.match_tags("k_coreset").values("id"))
    ds.rename_run("k_coreset", "first_coreset")
    before = snapshot(ds)
    with pytest.raises(
        ElfsInputError,
        match=r"tag 'k_coreset' was written by the coreset of key 'k', whose run is now "
        r"'first_coreset'.*rename_run\('first_coreset', 'k_coreset'\)",
    ):
        elfs.select_coreset(ds, key="k", budget_count=5)
    with pytest.raises(ElfsInputError, match="whose run is now 'first_coreset'"):
        elfs.run_pipeline(ds, key="k", budget_count=5, **PIPELINE)
    with pytest.raises(ElfsInputError, match="Key 'k' has no coreset"):
        elfs.select_more(ds, key="k", budget_count=3)
    assert snapshot(ds) == before
    assert elfs.list_keys(ds) == {"k": ["pseudo_labels", "difficulty"]}
    assert elfs.summarize_run(ds, "k").stages == ["pseudo_labels", "difficulty"]

    deleted = elfs.delete_key(ds, "k")
    assert deleted == ["pseudo_labels", "difficulty", "coreset", "visualization"]
    assert _key_names(ds) == ([], [], []) and "k_pca" not in ds.list_brain_runs()
    # the user's records stay, the coreset's with its selection
    assert sorted(ds.list_runs()) == ["first_coreset", "my_plot"]
    assert sorted(ds.load_run_results("first_coreset").selected_ids) == selected
    # a tag the user sets by hand under a name the renamed run lists is theirs
    ds.select(ds.values("id")[:2]).tag_samples("k_coreset")
    assert elfs.delete_key(ds, "k") == []
    assert ds.count_sample_tags() == {"k_coreset": 2}
    ds.untag_samples("k_coreset")
    assert elfs.run_pipeline(ds, key="k", budget_count=6, **PIPELINE).budget == 6
    assert elfs.list_keys(ds)["k"] == ["pseudo_labels", "difficulty", "coreset"]

    second = elfs.select_more(ds, key="k", budget_count=3)
    ds.rename_run("k_round2", "second_round")
    # the renamed round is no round of the key, but its samples were handed out: the next
    # round takes the number after it and leaves them out, saying so (it was refused over the
    # tag, with the rename or delete_key as the ways out)
    third = elfs.select_more(ds, key="k", budget_count=3)
    assert third.round == 3 and not set(third.selected_ids) & set(second.selected_ids)
    assert any("'k_round2' of round 2, whose run is gone" in n for n in third.notices)
    # a run renamed onto another key's run key is no stage of that key either
    ds.rename_run("k_pseudo_labels", "j_pseudo_labels")
    assert "j" not in elfs.list_keys(ds)
    with pytest.raises(ElfsInputError, match="run key 'j_pseudo_labels'.*holds another run"):
        elfs.compute_pseudo_labels(ds, key="j", **KMEANS)
    assert "j_pseudo_labels" in ds.list_runs()


# --------------------------------------------------------------------------- outside the dataset


@pytest.fixture(scope="module")
def server():
    forks = ForkServer()
    yield forks
    forks.close()


def _killed(server, tmp_path, ds_name, call, kill, cache):
    code = (
        "import fiftyone as fo\nimport fiftyone_elfs as elfs\n"
        f"ds = fo.load_dataset({ds_name!r})\n{call}\n"
    )
    env = {"ELFS_KILL_AT": kill, "ELFS_CACHE_DIR": cache, "ELFS_EMBED_CHUNK_ROWS": "4"}
    log = str(tmp_path / "child.log")
    done = server.run(code, log, env=env)
    with open(log) as f:
        assert done["status"] == -9, f.read()[-3000:]


def test_delete_key_removes_the_checkpoints_killed_trainings_left(
    ds, server, tmp_path, monkeypatch
):
    cache = str(tmp_path / "cache")
    monkeypatch.setenv("ELFS_CACHE_DIR", cache)
    elfs.compute_pseudo_labels(ds, key="k", **KMEANS)
    cnn = f"elfs.compute_difficulty(ds, key='k', proxy='cnn', epochs=3, cnn_params={CNN!r})"
    _killed(server, tmp_path, ds.name, cnn, "difficulty:progress:2", cache)
    contrastive = (
        "elfs.compute_contrastive_scores(ds, key='k', epochs=3, image_size=16, width=4, "
        "batch_size=20)"
    )
    _killed(server, tmp_path, ds.name, contrastive, "contrastive:progress:3", cache)
    folder = checkpoint_folders.checkpoint_dir_for(ds, "k")
    folder_c = checkpoint_folders.checkpoint_dir_for(ds, "k_contrastive")
    assert os.listdir(folder) == ["cnn_proxy.pt"]
    assert os.listdir(folder_c) == ["simclr.pt"]
    # the folder of k's contrastive training is also key k_contrastive's own: its files stay
    with open(os.path.join(folder_c, "temi.pt"), "wb") as f:
        f.write(b"key k_contrastive's")
    assert elfs.delete_key(ds, "k") == ["pseudo_labels"]
    assert not os.path.exists(folder)
    assert os.listdir(folder_c) == ["temi.pt"]


def test_the_contrastive_checkpoint_file_is_the_one_its_training_writes():
    from fiftyone_elfs.difficulty import contrastive

    assert checkpoints.CONTRASTIVE_FILE == contrastive._CHECKPOINT


def test_chunks_and_shard_plans_of_a_deleted_dataset_go_when_an_embedding_run_starts(
    pool, server, tmp_path
):
    gone = pool.limit(16).clone(name=f"elfs-orphans-gone-{uuid.uuid4().hex[:6]}")
    gone_id = str(gone._doc.id)
    call = "elfs.compute_embeddings(ds, key='k', batch_size=4, image_size=32)"
    _killed(server, tmp_path, gone.name, call, "embeddings:stored_chunk:2", str(tmp_path))
    sharding.plan(gone_id, "k", 2, {"budget_count": 4})
    # what a pipeline killed while it wrote leaves too: its journal entry, its staging copy of
    # the results (here one row), its leases (the killed embedding run's)
    staging = dataset_io.new_staging_collection(gone)
    foo.get_db_conn()[staging].insert_one({"k_aum": 1.0})
    journal.add(gone, "k", "coreset", {"owned_fields": ["k_coreset_region"]}, [staging])
    assert gone_id in leases.dataset_ids()
    assert embedding_chunks.count(gone_id, "k") == 2
    gone.delete()
    assert embedding_chunks.count(gone_id, "k") == 2  # nothing removes them with the dataset
    assert staging in dataset_io.staging_collections() and gone_id in journal.dataset_ids()
    alive = pool.limit(8).clone()
    try:
        alive_id = str(alive._doc.id)
        waiting = embedding_chunks.run_name(alive_id, "other", "sig")
        embedding_chunks.store(waiting, alive.values("id")[:1], np.zeros((1, 4)), {})
        sharding.plan(alive_id, "other", 2, {"budget_count": 4})
        elfs.compute_embeddings(alive, key="k", batch_size=4, image_size=32)
        assert embedding_chunks.count(gone_id, "k") == 0
        assert sharding.planned_pipeline(gone_id, "k") is None
        assert staging not in dataset_io.staging_collections()
        assert gone_id not in journal.dataset_ids() and gone_id not in leases.dataset_ids()
        # an existing dataset's chunks and plan are kept; delete_key removes the key's
        assert embedding_chunks.count(alive_id, "other") == 1
        assert sharding.planned_pipeline(alive_id, "other") == {"budget_count": 4}
        elfs.delete_key(alive, "other")
        assert embedding_chunks.count(alive_id, "other") == 0
        assert sharding.planned_pipeline(alive_id, "other") is None
    finally:
        alive.delete()


def test_checkpoints_a_deleted_dataset_left_go_when_an_embedding_run_starts_and_only_they(
    pool, server, tmp_path, monkeypatch
):
    """The cache folder may serve several databases: only folders marked with this one go."""
    cache = str(tmp_path / "cache")
    monkeypatch.setenv("ELFS_CACHE_DIR", cache)
    gone = pool.limit(20).clone(name=f"elfs-orphans-ckpt-{uuid.uuid4().hex[:6]}")
    alive = pool.limit(8).clone()
    try:
        elfs.compute_pseudo_labels(gone, key="k", **KMEANS)
        cnn = f"elfs.compute_difficulty(ds, key='k', proxy='cnn', epochs=3, cnn_params={CNN!r})"
        _killed(server, tmp_path, gone.name, cnn, "difficulty:progress:2", cache)
        gone_folder = os.path.dirname(checkpoint_folders.checkpoint_dir_for(gone, "k"))
        assert sorted(os.listdir(gone_folder)) == [checkpoint_folders.DATABASE_MARK, "k"]
        assert os.listdir(os.path.join(gone_folder, "k")) == ["cnn_proxy.pt"]
        alive_file = os.path.join(checkpoint_folders.training_dir_for(alive, "k"), "temi.pt")
        root = checkpoint_folders.checkpoints_root()
        other_db = os.path.join(root, "5f0000000000000000000001")  # another database's dataset
        unmarked = os.path.join(root, "5f0000000000000000000002")  # written before the marks
        for folder in (other_db, unmarked):
            os.makedirs(os.path.join(folder, "k"))
            with open(os.path.join(folder, "k", "temi.pt"), "wb") as f:
                f.write(b"state")
        with open(os.path.join(other_db, checkpoint_folders.DATABASE_MARK), "w") as f:
            f.write("other:5f0000000000000000000000")
        os.makedirs(os.path.dirname(alive_file), exist_ok=True)
        with open(alive_file, "wb") as f:
            f.write(b"state")
        gone.delete()
        assert os.path.isdir(gone_folder)  # nothing removes it with the dataset
        elfs.compute_embeddings(alive, key="e", batch_size=4, image_size=32)
        assert not os.path.exists(gone_folder)
        for folder in (other_db, unmarked):
            assert os.listdir(os.path.join(folder, "k")) == ["temi.pt"]
        assert os.path.exists(alive_file)
    finally:
        alive.delete()
        if not gone.deleted:
            gone.delete()


def test_a_view_clones_embeddings_are_named_as_the_keys_leftover(ds):
    """The embedding stage refused them as values "this run did not compute", without saying
    where they came from or that delete_key removes them."""
    small = ds.take(6, seed=0).clone(name=f"elfs-orphans-emb-{uuid.uuid4().hex[:6]}")
    clone = None
    try:
        elfs.compute_embeddings(small, key="e")
        clone = small.limit(6).clone(name=f"elfs-orphans-emb2-{uuid.uuid4().hex[:6]}")
        with pytest.raises(
            ElfsInputError,
            match=r"did not compute.*'e_embedding' was written by the 'embeddings' stage of key "
            r"'e'.*view\.clone\(\).*delete_key\(dataset, 'e'\) removes it.*To recompute them "
            r"under this key, delete the field first "
            r"\(dataset\.delete_sample_field\('e_embedding'\)\)",
        ):
            elfs.compute_embeddings(clone, key="e")
        assert elfs.delete_key(clone, "e") == ["embeddings"]
        assert elfs.compute_embeddings(clone, key="e")["n_computed"] == 6
    finally:
        small.delete()
        if clone is not None:
            clone.delete()


def test_a_plot_whose_run_fiftyone_deleted_is_named_with_its_fix(base_dataset, caplog):
    # After dataset.delete_run('<key>_visualization') the plot stays (no record proves it is
    # ELFS's): the refusal told run_pipeline users to pass a brain_key it has no parameter for,
    # and delete_key kept it without a word.
    ds = base_dataset.take(40, seed=4).clone()
    fast = dict(key="p", embeddings_field="elfs_embedding", budget_count=8, n_clusters=4,
                clustering="kmeans", epochs=2)  # fmt: skip
    try:
        elfs.run_pipeline(ds, **fast)
        ds.delete_run("p_visualization")
        with pytest.raises(ElfsInputError) as refused:
            elfs.run_pipeline(ds, **fast)
        assert "dataset.delete_brain_run('p_umap')" in str(refused.value)
        assert "visualize=False (run_pipeline)" in str(refused.value)
        with caplog.at_level(logging.WARNING, logger="fiftyone_elfs"):
            elfs.delete_key(ds, "p")
        assert "kept the embedding plot 'p_umap'" in caplog.text
        assert "dataset.delete_brain_run('p_umap')" in caplog.text
        assert ds.list_brain_runs() == ["p_umap"]  # kept: it may be the user's
        ds.delete_brain_run("p_umap")
        elfs.run_pipeline(ds, **fast)
        assert ds.list_brain_runs() == ["p_umap"]
    finally:
        ds.delete()


def test_a_round_tag_set_by_hand_is_the_users_not_a_deleted_round(ds):
    """Audit 'safety' #5: any tag named like a round counted as a round whose run is gone; its
    samples were left out, the round numbered after it and a deleted run was claimed."""
    first = elfs.run_pipeline(ds, key="k", budget_count=8, **PIPELINE)
    mine = [i for i in ds.values("id") if i not in set(first.selected_ids)][:5]
    ds.select(mine).tag_samples("k_round2")
    before = snapshot(ds)
    with pytest.raises(
        ElfsInputError, match="tag 'k_round2' is already on samples.*Fix: rename your tag"
    ) as refused:
        elfs.select_more(ds, key="k", budget_count=3)
    assert "whose run is gone" not in str(refused.value)
    assert snapshot(ds) == before
    ds.untag_samples("k_round2")
    second = elfs.select_more(ds, key="k", budget_count=3)
    assert second.round == 2
