"""Each stage consumes the one before it: a replaced output makes the later ones stale, and the
stage that would consume a stale output refuses (naming the stage to re-run) before anything
changes; an output that was not really replaced (missing vectors added, a pipeline run again,
runs recorded before versions existed) is never a false alarm. Real database, real images."""

from __future__ import annotations

import fiftyone as fo
import pytest
from dataset_state import snapshot
from fiftyone import ViewField as F

import fiftyone_elfs as elfs
from fiftyone_elfs import runs
from fiftyone_elfs.stages import pseudo_labels

EMBEDDINGS = "elfs_embedding"  # the base dataset's, computed by key "elfs" at 128 px


def _pipeline(dataset, **kwargs):
    options = dict(
        budget_fraction=0.2,
        n_clusters=10,
        clustering="kmeans",
        key="elfs",
        embeddings_field=EMBEDDINGS,
        epochs=5,
        visualize=False,
    )
    return elfs.run_pipeline(dataset, **{**options, **kwargs})


def _version(dataset, stage, name):
    """A version the stage's run recorded (None: none recorded)."""
    return getattr(dataset.get_run_info(f"elfs_{stage}").config, name, None)


def _forget(dataset, run_key, *params):
    """Makes a run look recorded before versions existed (without the given parameters)."""
    doc = dataset._doc.runs[run_key]
    for name in params:
        doc.config.pop(name, None)
    doc.save()
    dataset._run_cache.pop(run_key, None)


def _refused(dataset, call, match):
    """`call` raises ElfsInputError matching `match`, and the dataset is exactly as before."""
    before = snapshot(dataset)
    with pytest.raises(elfs.ElfsInputError, match=match):
        call()
    assert snapshot(dataset) == before


def test_versions_are_recorded_and_a_second_pipeline_run_is_consistent(dataset):
    first = _pipeline(dataset)
    vectors = _version(dataset, "embeddings", "vectors_version")
    labels = _version(dataset, "pseudo_labels", "labels_version")
    assert vectors is not None and labels is not None
    assert _version(dataset, "pseudo_labels", "embeddings_version") == vectors
    assert _version(dataset, "difficulty", "pseudo_labels_version") == labels
    # the same labels from the same vectors: the same version (no false alarm on a rerun)
    second = _pipeline(dataset)
    assert _version(dataset, "pseudo_labels", "labels_version") == labels
    assert second.selected_ids == first.selected_ids
    # the whole pipeline with its embedding stage (all vectors reused): still consistent
    third = _pipeline(dataset, embeddings_field=None, budget_fraction=0.1)
    assert _version(dataset, "embeddings", "vectors_version") == vectors
    assert third.budget == 30
    elfs.compute_difficulty(dataset, epochs=5)  # each stage alone on the pipeline's runs
    assert elfs.select_coreset(dataset, budget_count=10, mode="window").budget == 10


def test_recomputed_embeddings_refuse_the_difficulty_until_the_pseudo_labels_are_rerun(dataset):
    _pipeline(dataset)
    trust = dataset.load_run_results("elfs_pseudo_labels").trust["level"]
    old = _version(dataset, "embeddings", "vectors_version")
    elfs.compute_embeddings(dataset, image_size=96)  # same model and dimension, other vectors

    _refused(dataset, lambda: elfs.compute_difficulty(dataset, epochs=5), "compute_pseudo_labels")
    assert _version(dataset, "embeddings", "vectors_version") not in (None, old)
    if trust == "weak":  # auto would pick typical selection on the new vectors by the old trust
        call = lambda: elfs.select_coreset(dataset, budget_count=10)  # noqa: E731
        _refused(dataset, call, "compute_pseudo_labels")
    # the names' checks directly, whatever the measured trust
    names = runs.PipelineNames("elfs")
    with pytest.raises(elfs.ElfsInputError, match="compute_pseudo_labels"):
        pseudo_labels.require_current_trust(dataset, names, "auto", "typical")
    pseudo_labels.require_current_trust(dataset, names, "typical", "typical")  # explicit: fine
    # scores and pseudo-labels of the old vectors agree with each other: the window still works
    assert elfs.select_coreset(dataset, budget_count=10, mode="window").budget == 10

    # a run recorded before versions existed is never refused on their account
    _forget(dataset, "elfs_pseudo_labels", "embeddings_version")
    elfs.compute_difficulty(dataset, epochs=5)

    elfs.compute_pseudo_labels(dataset, n_clusters=10, clustering="kmeans")  # the fix
    assert _version(dataset, "pseudo_labels", "embeddings_version") == (
        _version(dataset, "embeddings", "vectors_version")
    )
    elfs.compute_difficulty(dataset, epochs=5)
    assert elfs.select_coreset(dataset, budget_count=10).budget == 10


def test_rerun_pseudo_labels_refuse_the_old_scores_until_the_difficulty_is_rerun(dataset):
    _pipeline(dataset)
    labels = _version(dataset, "pseudo_labels", "labels_version")
    classes = sorted(dataset.distinct("ground_truth.label"))
    half = dataset.match(F("ground_truth.label").is_in(classes[:5]))
    elfs.compute_pseudo_labels(half, n_clusters=3, clustering="kmeans")

    for mode in ("window", "ccs", "typical", "auto"):
        call = lambda mode=mode: elfs.select_coreset(dataset, budget_count=10, mode=mode)  # noqa: E731
        _refused(dataset, call, "compute_difficulty")
    assert _version(dataset, "pseudo_labels", "labels_version") not in (None, labels)

    elfs.compute_difficulty(dataset, epochs=5)  # the fix: scores of the 150 relabelled samples
    result = elfs.select_coreset(dataset, budget_count=10, mode="window")
    assert result.n_pool == len(half) == 150
    assert set(result.selected_ids) <= set(half.values("id"))
    assert elfs.select_more(dataset, budget_count=5).budget == 5


def test_added_samples_embedded_later_leave_the_pseudo_labels_current(dataset, image_dir):
    _pipeline(dataset)
    version = _version(dataset, "embeddings", "vectors_version")
    labels = _version(dataset, "pseudo_labels", "labels_version")
    assert version is not None and labels is not None
    paths = dataset.take(4, seed=1).values("filepath")
    dataset.add_samples([fo.Sample(filepath=p) for p in paths])  # the same images, new samples
    done = elfs.compute_embeddings(dataset)  # only the missing vectors
    assert (done["n_computed"], done["n_reused"]) == (4, 300)
    assert _version(dataset, "embeddings", "vectors_version") == version
    assert elfs.compute_embeddings(dataset)["n_computed"] == 0  # nothing to do: unchanged too
    assert _version(dataset, "embeddings", "vectors_version") == version

    elfs.compute_difficulty(dataset, epochs=5)  # the pseudo-labels still describe their vectors
    assert _version(dataset, "difficulty", "pseudo_labels_version") == labels
    result = elfs.select_coreset(dataset, budget_count=10)
    assert result.n_pool == 300 and result.budget == 10


def test_a_pipeline_whose_embeddings_are_replaced_meanwhile_writes_nothing(dataset, monkeypatch):
    from fiftyone_elfs.stages import pipeline

    draw = pipeline.selection.select_coreset

    def replaced_first(*args, **kwargs):  # another run recomputes the field the pipeline reads
        elfs.compute_embeddings(dataset, key="elfs", image_size=96)
        return draw(*args, **kwargs)

    monkeypatch.setattr(pipeline.selection, "select_coreset", replaced_first)
    with pytest.raises(elfs.ElfsInputError, match="recomputed by another run"):
        _pipeline(dataset, key="k2", mode="window")
    assert "k2" not in elfs.list_keys(dataset)
    assert not dataset.has_sample_field("k2_pseudo_label")
    monkeypatch.undo()
    assert _pipeline(dataset, key="k2", mode="window").budget == 60  # run again: fine


def test_a_keys_embeddings_written_to_a_field_of_its_choosing_are_the_keys_from_then_on(
    base_dataset,
):
    # The later stages looked for '<key>_embedding' ("run compute_embeddings first"), the
    # pipeline embedded every image again there, and delete_key left the first field behind.
    ds = base_dataset.take(40, seed=2).clone()
    try:
        ds.delete_sample_field("elfs_embedding")
        done = elfs.compute_embeddings(ds, key="c", embeddings_field="my_vecs")
        assert done["n_computed"] == 40
        elfs.compute_pseudo_labels(ds, key="c", n_clusters=4, clustering="kmeans")
        assert ds.get_run_info("c_pseudo_labels").config.embeddings_field == "my_vecs"
        elfs.run_pipeline(ds, key="c", budget_count=8, n_clusters=4, clustering="kmeans", epochs=2)
        assert ds.get_field("c_embedding") is None  # nothing embedded again
        assert ds.get_run_info("c_embeddings").config.embeddings_field == "my_vecs"
        assert ds.get_run_info("c_difficulty").config.embeddings_field == "my_vecs"
        assert elfs.compute_embeddings(ds, key="c")["n_reused"] == 40
        elfs.delete_key(ds, "c")
        assert ds.get_field("my_vecs") is None
    finally:
        ds.delete()
