"""Grouped datasets: a coreset drawn from any image slice (or several) is tagged, saved, exported
and deleted on exactly the selected samples. FiftyOne's select, match and tag reach only a grouped
dataset's active slice: the coreset of `select_group_slices('right')` was tagged nowhere."""

from __future__ import annotations

import os

import fiftyone as fo
import pytest

import fiftyone_elfs as elfs
from fiftyone_elfs import dataset_io

FAST = dict(clustering="kmeans", n_clusters=4, embeddings_field="vec", epochs=2, visualize=False)


@pytest.fixture
def grouped(base_dataset):
    """40 groups of two image slices, 'left' (the default) and 'right', with the embeddings."""
    paths, vectors = base_dataset.take(80, seed=3).values(["filepath", "elfs_embedding"])
    dataset = fo.Dataset()
    dataset.add_group_field("group", default="left")
    samples = []
    for i in range(40):
        group = fo.Group()
        for j, slice_name in ((2 * i, "left"), (2 * i + 1, "right")):
            samples.append(
                fo.Sample(filepath=paths[j], vec=vectors[j], group=group.element(slice_name))
            )
    dataset.add_samples(samples)
    yield dataset
    dataset.delete()


def _tagged_by_slice(dataset, tag):
    return dataset.select_group_slices().match_tags(tag).count_values("group.name")


def test_a_coreset_of_another_slice_is_tagged_saved_and_exported(grouped, tmp_path):
    result = elfs.run_pipeline(
        grouped.select_group_slices("right"), budget_count=8, key="r", **FAST
    )
    every = grouped.select_group_slices()
    assert set(every.match_tags("r_coreset").values("id")) == set(result.selected_ids)
    assert _tagged_by_slice(grouped, "r_coreset") == {"right": 8}
    assert set(grouped.load_saved_view("r-coreset").values("id")) == set(result.selected_ids)
    assert len(elfs.coreset_view(grouped, key="r")) == 8
    written = elfs.export_coreset(
        grouped, str(tmp_path / "r"), key="r", formats=["media", "fiftyone"]
    )
    assert len(os.listdir(written["media"])) == 8
    # the exported dataset opens on the coreset's slice (it opened on 'left', empty)
    exported = fo.Dataset.from_dir(written["fiftyone"], dataset_type=fo.types.FiftyOneDataset)
    try:
        assert exported.default_group_slice == "right" and len(exported) == 8
        paths = exported.values("filepath")  # the media travel with it
        assert len(set(paths)) == 8 and all(os.path.exists(p) for p in paths)
        assert all(p.startswith(os.path.realpath(written["fiftyone"])) for p in paths)
    finally:
        exported.delete()


def test_a_coreset_of_every_slice_is_tagged_whole_and_deleted_whole(grouped):
    result = elfs.run_pipeline(grouped.select_group_slices(), budget_count=8, key="a", **FAST)
    assert result.n_pool == 80 and not any("grouped dataset" in m for m in result.notices)
    assert sum(_tagged_by_slice(grouped, "a_coreset").values()) == 8
    assert elfs.summarize_run(grouped, "a").n_selected == 8
    elfs.delete_key(grouped, "a")
    assert _tagged_by_slice(grouped, "a_coreset") == {}
    assert "a-coreset" not in grouped.list_saved_views()


def test_a_rerun_on_another_active_slice_moves_the_tag_from_the_old_one(grouped):
    first = elfs.run_pipeline(grouped, budget_count=8, key="k", **FAST)
    assert _tagged_by_slice(grouped, "k_coreset") == {"left": 8}
    # the pool was the active slice alone: said, with the way to take several
    (notice,) = [m for m in first.notices if "grouped dataset" in m]
    assert "active slice 'left'" in notice and "['right']" in notice
    assert "select_group_slices" in notice
    grouped.group_slice = "right"
    result = elfs.run_pipeline(grouped, budget_count=8, key="k", **FAST)
    assert _tagged_by_slice(grouped, "k_coreset") == {"right": 8}
    tagged = grouped.select_group_slices().match_tags("k_coreset").values("id")
    assert set(tagged) == set(result.selected_ids)
    more = elfs.select_more(grouped, budget_count=4, key="k")
    assert any("active slice 'right'" in m and "['left']" in m for m in more.notices)


def test_an_image_slice_of_a_group_with_a_video_slice(base_dataset, tmp_path):
    """The refusal of a video active slice says to pick an image slice: that works to the end."""
    paths, vectors = base_dataset.take(30, seed=4).values(["filepath", "elfs_embedding"])
    dataset = fo.Dataset()
    dataset.add_group_field("group", default="clip")
    samples = []
    for i, (path, vector) in enumerate(zip(paths, vectors, strict=True)):
        group = fo.Group()
        video = str(tmp_path / f"clip{i}.mp4")  # never read: ELFS refuses the video slice
        samples.append(fo.Sample(filepath=video, group=group.element("clip")))
        samples.append(fo.Sample(filepath=path, vec=vector, group=group.element("img")))
    dataset.add_samples(samples)
    with pytest.raises(elfs.ElfsInputError, match=r"select_group_slices\('<slice>'\)"):
        elfs.compute_embeddings(dataset, key="v")
    result = elfs.run_pipeline(dataset.select_group_slices("img"), budget_count=6, key="v", **FAST)
    assert len(elfs.coreset_view(dataset, key="v")) == 6
    written = elfs.export_coreset(dataset, str(tmp_path / "v"), key="v", formats=["media"])
    assert len(os.listdir(written["media"])) == 6  # same-named images get suffixes
    assert len(dataset.select_group_slices("img").select(result.selected_ids)) == 6
    dataset.delete()


def test_a_view_of_dynamic_groups_is_refused_naming_the_flat_view(grouped):
    """`group_by` views: run_pipeline crashed (AttributeError) and select_coreset took each group
    for one sample, replacing a coreset of 8 with one of as many samples as groups."""
    elfs.run_pipeline(grouped, budget_count=8, key="k", **FAST)
    before = set(elfs.coreset_view(grouped, key="k").values("id"))
    by_group = grouped.group_by("group.id")
    for call in (
        lambda: elfs.run_pipeline(by_group, budget_count=8, key="k", **FAST),
        lambda: elfs.compute_embeddings(by_group, key="k"),
        lambda: elfs.select_coreset(by_group, budget_count=8, key="k"),
    ):
        with pytest.raises(elfs.ElfsInputError, match=r"dynamic groups.*flat=True"):
            call()
    assert set(elfs.coreset_view(grouped, key="k").values("id")) == before


def test_delete_key_given_a_view_deletes_the_key_from_its_dataset(grouped):
    """It crashed (AttributeError) after deleting the coreset's run record, leaving the tag,
    the saved view and the fields."""
    elfs.run_pipeline(grouped, budget_count=8, key="k", **FAST)
    deleted = elfs.delete_key(grouped.limit(5), "k")
    assert "coreset" in deleted and "k" not in elfs.list_keys(grouped)
    assert _tagged_by_slice(grouped, "k_coreset") == {}
    assert "k-coreset" not in grouped.list_saved_views()
    assert not [f for f in grouped.get_field_schema() if f.startswith("k_")]


def test_a_selection_on_the_slice_without_scores_names_the_slice_with_them(grouped):
    # "No sample of this view has a 'aum' score. Fix: run compute_difficulty on it." sent the
    # user to recompute every stage on the default slice.
    elfs.run_pipeline(grouped.select_group_slices("right"), budget_count=8, key="r", **FAST)
    for call in (elfs.select_more, elfs.select_coreset):
        with pytest.raises(elfs.ElfsInputError) as refused:
            call(grouped, key="r", budget_count=4)
        assert "40 samples of the group slice(s) ['right'] have one: pass " in str(refused.value)
        assert "dataset.select_group_slices('right')" in str(refused.value)
    elfs.select_more(grouped.select_group_slices("right"), key="r", budget_count=4)


def test_typical_selection_on_the_slice_without_embeddings_names_the_slice_with_them(grouped):
    # the embeddings-only path said "run compute_embeddings on this view" (audit 'typicalonly' #4)
    elfs.compute_embeddings(grouped.select_group_slices("right"), key="e")
    with pytest.raises(elfs.ElfsInputError) as refused:
        elfs.select_coreset(grouped, key="e", budget_count=4, mode="typical")
    assert "40 samples of the group slice(s) ['right'] have one: pass " in str(refused.value)
    right = grouped.select_group_slices("right")
    assert (
        len(elfs.select_coreset(right, key="e", budget_count=4, mode="typical").selected_ids) == 4
    )


def test_show_coreset_without_its_saved_view_shows_the_coreset_of_any_slice(grouped):
    # The fallback matched the tag on the active slice only: 0 samples for a 'right' coreset.
    from panel_events import panel_context

    from fiftyone_elfs.plugin.panel import ElfsPanel

    result = elfs.run_pipeline(
        grouped.select_group_slices("right"), budget_count=8, key="elfs", **FAST
    )
    grouped.delete_saved_view("elfs-coreset")
    ctx, executor = panel_context(grouped, "show_coreset")
    panel = ElfsPanel()
    panel.on_load(ctx)
    panel.show_coreset(ctx)
    [shown] = [r for r in executor._requests if r.operator_uri == "set_view"]
    view = fo.DatasetView._build(grouped, shown.params["view"])
    assert set(view.values("id")) == set(result.selected_ids)


def test_a_queued_operator_call_runs_on_the_active_slice(grouped):
    """Audit 'operators' #1: a script's `op(samples, ..., delegate=True)` was queued without the
    active slice, so a worker ran on the default one (and replaced the key's results there)."""
    import fiftyone.operators as foo
    from fiftyone.operators.delegated import DelegatedOperationService

    grouped.group_slice = "right"
    operator = foo.get_operator("@fiftyone-elfs/elfs/compute_pseudo_labels")
    operator(grouped, key="k", n_clusters=4, clustering="kmeans", embeddings_field="vec",
             delegate=True)  # fmt: skip
    grouped.group_slice = "left"  # as a worker in another process loads it: the default slice
    service = DelegatedOperationService()
    results = service.execute_queued_operations(dataset_name=grouped.name)
    assert [r.error for r in results] == [None]
    labeled = grouped.select_group_slices().exists("k_pseudo_label")
    assert labeled.count_values("group.name") == {"right": 40}


def test_a_slice_set_on_a_view_stays_when_its_field_selection_is_lifted(grouped):
    """Audit 'regress7' #3: the view rebuilt without its field selection or label filter
    started on the default slice, so ELFS scored and selected the 'left' images."""
    view = grouped.select_fields("vec")
    view.group_slice = "right"
    lifted = dataset_io.with_every_field(view)
    assert lifted.group_slice == "right"
    assert set(lifted.values("filepath")) == set(view.values("filepath"))
