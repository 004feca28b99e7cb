"""What the App shows: the embedding plot (a brain run), coreset regions, the run summary behind
the ELFS panel, and the panel itself executed through FiftyOne's operator machinery."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys

import fiftyone as fo
import fiftyone.core.collections as foc
import fiftyone.operators as foo
import numpy as np
import pytest
from panel_events import panel_context

import fiftyone_elfs as elfs
from fiftyone_elfs import dataset_io, leases, run_summary, runs
from fiftyone_elfs.embeddings import pca_reduce
from fiftyone_elfs.plugin.panel import (
    ElfsPanel,
    _delegated_markdown,
    _labeling_markdown,
    _outcome_markdown,
    cluster_traces,
    histogram_traces,
)

PLUGIN = "@fiftyone-elfs/elfs"


def _select(dataset, key="elfs", fraction=0.2, visualize=False, mode="window"):
    return elfs.run_pipeline(
        dataset,
        budget_fraction=fraction,
        n_clusters=10,
        clustering="kmeans",
        key=key,
        embeddings_field="elfs_embedding",
        epochs=5,
        visualize=visualize,
        mode=mode,  # most tests here check the window's regions; CCS: test_selection_modes
    )


def test_pca_reduce_keeps_the_top_variance_directions():
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.normal(size=(40, 40)))[0]
    X = (rng.normal(size=(500, 40)) * np.r_[[10.0, 5.0], np.full(38, 0.1)]) @ basis.T
    Y = pca_reduce(X, 2)
    assert Y.shape == (500, 2) and Y.dtype == np.float32
    # Two components hold almost all the variance of X.
    assert Y.var(axis=0).sum() > 0.99 * X.var(axis=0).sum()
    assert pca_reduce(X[:, :3], 10).shape == (500, 3)  # nothing to reduce


def test_regions_partition_the_ranking_and_match_the_tag(dataset):
    result = _select(dataset, fraction=0.2)
    regions = dict(zip(*dataset.values(["id", "elfs_coreset_region"]), strict=True))
    counts = dataset.count_values("elfs_coreset_region")
    assert counts["coreset"] == result.budget
    assert counts["dropped_hard"] == round(result.beta * result.n_pool)
    assert sum(counts.values()) == result.n_pool
    assert {i for i, r in regions.items() if r == "coreset"} == set(result.selected_ids)
    # Every dropped-hard sample is at least as hard (lower AUM) as every coreset sample, and
    # every coreset sample at least as hard as every dropped-easy one.
    aum = dict(zip(*dataset.values(["id", "elfs_aum"]), strict=True))
    by_region = {r: [aum[i] for i, g in regions.items() if g == r] for r in runs.REGIONS}
    assert max(by_region["dropped_hard"]) <= min(by_region["coreset"])
    assert max(by_region["coreset"]) <= min(by_region["dropped_easy"])


def test_embedding_plot_is_a_brain_run_owned_by_the_key(dataset):
    _select(dataset)
    brain_key = elfs.compute_visualization(dataset, key="elfs", embeddings_field="elfs_embedding")
    assert brain_key == "elfs_umap"
    results = dataset.load_brain_results(brain_key)
    assert results.points.shape == (len(dataset), 2)
    assert np.isfinite(results.points).all()
    assert results.points.std(axis=0).min() > 0  # a layout, not a collapsed point
    assert "visualization" in elfs.list_keys(dataset)["elfs"]
    assert runs.brain_run_owner(dataset, brain_key) == "elfs"

    elfs.delete_key(dataset, "elfs")
    assert dataset.list_brain_runs() == []


def test_embedding_plot_refuses_a_foreign_brain_key_and_changes_nothing(dataset):
    import fiftyone.brain as fob

    fob.compute_visualization(
        dataset, embeddings="elfs_embedding", method="pca", brain_key="mine", num_dims=2
    )
    before = dataset.load_brain_results("mine").points.copy()
    with pytest.raises(elfs.ElfsInputError, match="'mine' already exists"):
        elfs.compute_visualization(dataset, embeddings_field="elfs_embedding", brain_key="mine")
    assert np.array_equal(dataset.load_brain_results("mine").points, before)
    assert "visualization" not in elfs.list_keys(dataset)["elfs"]


def test_embedding_plot_needs_embeddings(dataset):
    with pytest.raises(elfs.ElfsInputError, match="does not exist"):
        elfs.compute_visualization(dataset, key="other")
    with pytest.raises(elfs.ElfsInputError, match="at least 4"):
        elfs.compute_visualization(dataset.limit(3), embeddings_field="elfs_embedding")
    assert dataset.list_brain_runs() == []


def test_visualization_operator_runs_through_the_operator_machinery(dataset):
    op = foo.get_operator(f"{PLUGIN}/compute_visualization")
    op(dataset, embeddings_field="elfs_embedding", layout_method="pca", brain_key="layout")
    assert dataset.load_brain_results("layout").points.shape == (len(dataset), 2)
    assert runs.brain_run_owner(dataset, "layout") == "elfs"


def test_summary_counts_agree_with_the_selection(dataset):
    result = _select(dataset, fraction=0.25)
    summary = run_summary.summarize_run(dataset, "elfs", bins=20)
    assert summary.n_selected == result.budget and summary.n_pool == result.n_pool
    assert summary.tag == "elfs_coreset" and summary.saved_view == "elfs-coreset"
    hist = summary.histogram
    assert hist.score == "aum" and len(hist.edges) == 21
    assert sum(hist.counts["coreset"]) == result.budget
    assert sum(sum(c) for c in hist.counts.values()) == result.n_pool
    # counted in one pass over the samples, as numpy counts each region's scores
    regions, aum = dataset.values(["elfs_coreset_region", "elfs_aum"])
    for name in runs.REGIONS:
        values = [a for r, a in zip(regions, aum, strict=True) if r == name]
        assert hist.counts[name] == np.histogram(values, bins=hist.edges)[0].tolist()
    # The regions occupy ordered stretches of the AUM axis: hard (low) ... easy (high).
    first_bin = {r: min(np.flatnonzero(c)) for r, c in hist.counts.items() if any(c)}
    assert "not_drawn" not in first_bin  # a window leaves only the easy end
    assert first_bin["dropped_hard"] <= first_bin["coreset"] <= first_bin["dropped_easy"]
    pool = sum(c[1] for c in summary.clusters)
    core = sum(c[2] for c in summary.clusters)
    assert (pool, core) == (result.n_pool, result.budget)
    assert summary.params["coreset"]["budget_fraction"] == 0.25

    traces = histogram_traces(hist)
    assert [sum(t["y"]) for t in traces] == [sum(hist.counts[r]) for r in runs.REGIONS]
    shares = cluster_traces(summary.clusters)
    assert abs(sum(shares[0]["y"]) - 100) < 0.1 and abs(sum(shares[1]["y"]) - 100) < 0.1


def test_summary_says_when_the_tag_or_the_scores_changed_since_the_selection(dataset):
    # Its n_selected and histogram kept describing the selection after samples were untagged,
    # and drew the coreset's regions over scores computed again since, without a word.
    result = _select(dataset, fraction=0.2)
    assert run_summary.summarize_run(dataset, "elfs").notices == []
    dataset.select(result.selected_ids[:3]).untag_samples("elfs_coreset")
    summary = run_summary.summarize_run(dataset, "elfs")
    [tag] = summary.notices
    assert tag.startswith(f"{result.budget - 3} samples carry the coreset tag 'elfs_coreset' now")
    elfs.compute_difficulty(dataset, embeddings_field="elfs_embedding", epochs=2)
    summary = run_summary.summarize_run(dataset, "elfs")
    assert summary.notices[0] == tag
    assert summary.notices[1].startswith("The 'aum' scores were computed again after this")
    assert "**Note**: The 'aum' scores were computed again" in _outcome_markdown(summary)
    elfs.select_coreset(dataset, budget_fraction=0.2)
    assert run_summary.summarize_run(dataset, "elfs").notices == []


def test_summary_lists_the_labeling_rounds_of_its_key_only(dataset):
    first = _select(dataset, fraction=0.1)
    _select(dataset, key="other", fraction=0.3)
    assert run_summary.summarize_run(dataset, "elfs").rounds == {1: first.budget}
    more = elfs.select_more(dataset, budget_count=7)
    summary = run_summary.summarize_run(dataset, "elfs")
    assert summary.rounds == {1: first.budget, 2: 7} and more.budget == 7
    assert summary.annotations == []  # nothing sent to Label Studio
    assert f"round 1: {first.budget}, round 2: 7" in _labeling_markdown(summary)
    assert "Nothing sent to Label Studio yet" in _labeling_markdown(summary)
    assert run_summary.summarize_run(dataset, "other").rounds == {1: round(0.3 * len(dataset))}


def test_summary_of_a_missing_key_says_which_keys_exist(dataset):
    _select(dataset, key="round1")
    with pytest.raises(elfs.ElfsInputError, match=r"no ELFS run with key 'nope'.*'round1'\]"):
        run_summary.summarize_run(dataset, "nope")


def test_the_summary_of_a_view_is_its_datasets(dataset):
    # A view was named 'None' in the message, and its histogram counted the view's samples
    # next to the run's pool and coreset counts.
    result = _select(dataset, fraction=0.2)
    view = dataset.limit(100)
    with pytest.raises(elfs.ElfsInputError, match=f"The dataset '{dataset.name}' has no"):
        run_summary.summarize_run(view, "nope")
    summary = run_summary.summarize_run(view)
    assert sum(sum(c) for c in summary.histogram.counts.values()) == result.n_pool
    assert sum(summary.histogram.counts["coreset"]) == summary.n_selected == result.budget


def test_delegated_runs_are_listed_with_their_state_and_progress(dataset):
    _select(dataset)
    op = foo.get_operator(f"{PLUGIN}/compute_difficulty")
    op(dataset, embeddings_field="elfs_embedding", epochs=3, seed=1, delegate=True)
    rows = run_summary.delegated_runs(dataset)
    assert [(r["operator"], r["state"]) for r in rows] == [("compute_difficulty", "queued")]
    assert rows[0]["progress"] is None
    from fiftyone.operators.delegated import DelegatedOperationService

    DelegatedOperationService().execute_queued_operations(operator=f"{PLUGIN}/compute_difficulty")
    rows = run_summary.delegated_runs(dataset)
    assert rows[0]["state"] == "completed"
    assert rows[0]["progress"] == 1.0 and rows[0]["label"]  # what the ELFS panel shows
    assert dataset.get_run_info("elfs_difficulty").config.epochs == 3


def test_a_running_delegated_run_whose_worker_was_killed_is_marked_stalled(dataset, monkeypatch):
    """FiftyOne keeps a killed worker's operation "running"; the panel showed its last progress
    as live. A worker process runs the queued operation and is SIGKILLed part way."""
    from fiftyone.operators.delegated import DelegatedOperationService

    _select(dataset)
    op = foo.get_operator(f"{PLUGIN}/compute_difficulty")
    op(dataset, embeddings_field="elfs_embedding", epochs=20, seed=2, delegate=True)
    worker = (
        "from fiftyone.operators.delegated import DelegatedOperationService as S\n"
        f"S().execute_queued_operations(dataset_name={dataset.name!r}, log=False)"
    )
    env = dict(os.environ, ELFS_KILL_AT="difficulty:progress:3")
    done = subprocess.run([sys.executable, "-c", worker], env=env, capture_output=True, text=True)
    assert done.returncode == -signal.SIGKILL, done.stderr[-3000:]
    rows = run_summary.delegated_runs(dataset)
    try:
        monkeypatch.setattr(run_summary, "STALL_GRACE_S", 0.0)
        rows = run_summary.delegated_runs(dataset)
        assert (rows[0]["operator"], rows[0]["state"]) == ("compute_difficulty", "running")
        assert rows[0]["stalled"]
        markdown = _delegated_markdown(rows)
        assert "**stalled**" in markdown and f"`{rows[0]['id']}`" in markdown
        assert "fiftyone delegated rerun <id>" in markdown
        # a run holding the key's lease is computing: not stalled; nor one just started
        with leases.hold(dataset_io.dataset_id(dataset), "elfs", ["difficulty"]):
            assert not run_summary.delegated_runs(dataset)[0]["stalled"]
        assert "stalled" not in _delegated_markdown(run_summary.delegated_runs(dataset)[1:])
        monkeypatch.setattr(run_summary, "STALL_GRACE_S", 3600.0)
        assert not run_summary.delegated_runs(dataset)[0]["stalled"]
    finally:
        DelegatedOperationService().delete_operation(rows[0]["id"])


def test_panel_loads_the_run_and_renders_its_charts(dataset):
    _select(dataset, visualize=True)
    panel = ElfsPanel()
    ctx, executor = panel_context(dataset, "on_load")
    panel.on_load(ctx)
    state = ctx.panel.state
    assert state.key == "elfs" and state.keys == ["elfs"]
    assert "of 300 samples selected" in state.outcome
    # What the App receives: chart data patched onto this panel (panel data is write-only).
    data = {}
    for request in executor._requests:
        if request.operator_uri == "patch_panel_data":
            data.update(request.params["data"])
    assert sum(sum(t["y"]) for t in data["difficulty_histogram"]) == 300
    assert [t["name"] for t in data["cluster_balance"]] == ["pool", "coreset"]
    rendered = panel.render(ctx).to_json()
    text = str(rendered)
    for name in ("difficulty_histogram", "cluster_balance", "open_embeddings", "export"):
        assert name in text
    assert "Difficulty (aum): where the ranking was cut" in text  # the window cut it


def test_panel_does_not_call_a_typical_selection_a_cut(dataset):
    _select(dataset, mode="typical")
    panel = ElfsPanel()
    ctx, _ = panel_context(dataset, "on_load")
    panel.on_load(ctx)
    assert "Selection rule: **typical**" in ctx.panel.state.outcome
    text = str(panel.render(ctx).to_json())
    assert "typical selection does not choose by it" in text
    assert "where the ranking was cut" not in text


def test_panel_is_registered_and_its_events_run_through_the_operator_machinery(dataset):
    _select(dataset, visualize=True)
    result = foo.execute_operator(
        f"{PLUGIN}/elfs_panel",
        {"dataset": dataset},
        params={"__method__": "open_embeddings", "panel_id": "p", "state": {}},
    )
    assert result.error is None
    assert isinstance(dataset, fo.Dataset) and dataset.list_brain_runs() == ["elfs_umap"]


@pytest.mark.parametrize("edit", ["region reused for a review status", "NaN and inf scores"])
def test_hand_written_region_or_score_values_leave_the_summary_and_panel_working(dataset, edit):
    # Both raised from summarize_run, so the panel failed to open on the dataset: a region
    # field holding none of the four regions left the histogram without edges, and a NaN score
    # made MongoDB's $bucket refuse the bin edges.
    result = _select(dataset, fraction=0.2)
    if edit.startswith("region"):
        dataset.set_values("elfs_coreset_region", ["reviewed"] * len(dataset))
    else:
        ids = dataset.values("id")[:3]
        bad = dict(zip(ids, [float("nan"), math.inf, -math.inf], strict=True))
        dataset.set_values("elfs_aum", bad, key_field="id")
    summary = run_summary.summarize_run(dataset, "elfs")
    assert summary.n_selected == result.budget
    if edit.startswith("region"):
        assert summary.histogram is None
    else:  # the three hand-written values are left out, the rest are drawn
        assert sum(sum(c) for c in summary.histogram.counts.values()) == result.n_pool - 3
        assert all(np.isfinite(summary.histogram.edges))
    panel = ElfsPanel()
    ctx, _ = panel_context(dataset, "on_load")
    panel.on_load(ctx)
    assert f"**{result.budget}** of 300 samples selected" in ctx.panel.state.outcome


def test_the_panel_lists_the_runs_of_a_dataset_whose_samples_were_all_deleted(dataset):
    # An empty dataset is falsy: the panel listed no key and showed the first-run intro.
    _select(dataset)
    dataset.clear()
    panel = ElfsPanel()
    ctx, _ = panel_context(dataset, "on_load")
    panel.on_load(ctx)
    assert ctx.panel.state.key == "elfs" and ctx.panel.state.keys == ["elfs"]


@pytest.mark.parametrize(
    "pool",
    [
        lambda ds: ds.match_tags("elfs_coreset", bool=False),  # select more among the rest
        lambda ds: ds.exists("elfs_aum", False),  # the samples not scored yet
    ],
)
def test_the_plot_of_a_view_reading_the_keys_own_fields_covers_the_pool_it_laid_out(dataset, pool):
    # The brain run stored the view and evaluated it again after the run had tagged and
    # scored: the plot left out the samples just selected, or every sample.
    first = _select(dataset, fraction=0.1)
    if "aum" in str(pool(dataset)._serialize()):
        dataset.select(first.selected_ids[:10]).set_field("elfs_aum", None).save()
    view = pool(dataset)
    pool_ids = set(view.values("id"))
    again = elfs.run_pipeline(
        view, budget_count=10, n_clusters=10, clustering="kmeans", epochs=2, mode="window"
    )
    assert set(again.selected_ids) <= pool_ids
    plot = dataset.load_brain_results("elfs_umap")
    assert set(plot.current_sample_ids) == pool_ids
    assert dataset.get_brain_info("elfs_umap").config.num_dims == 2
    assert elfs.summarize_run(dataset).n_selected == 10


def test_a_plot_of_such_a_view_that_ids_cannot_store_is_refused_before_anything_changes(
    dataset, monkeypatch
):
    from dataset_state import snapshot

    _select(dataset, fraction=0.1)
    monkeypatch.setenv(dataset_io.ID_CHUNK_ENV, "5")  # 270 ids to lay out, 30 left out
    before = snapshot(dataset)
    reached = []
    with pytest.raises(elfs.ElfsInputError, match="visualize=False"):
        elfs.run_pipeline(
            dataset.match_tags("elfs_coreset", bool=False),
            budget_count=10, n_clusters=10, clustering="kmeans", epochs=2, mode="window",
            progress=lambda fraction, label: reached.append(label),
        )  # fmt: skip
    assert reached == []  # refused before the first stage, not after all of them
    assert snapshot(dataset) == before


def test_only_the_names_the_key_writes_make_a_plot_be_stored_by_ids(dataset):
    # Any name starting with "elfs_" counted (a user's field 'elfs_review', another key's
    # tag), and a coreset tag of the user's choosing did not.
    from fiftyone import ViewField as F

    from fiftyone_elfs.stages.visualization import key_names

    first = _select(dataset, fraction=0.1)
    names = key_names(dataset, runs.PipelineNames("elfs"))
    reads = lambda view: dataset_io.reads_names(view, names)  # noqa: E731
    assert reads(dataset.match_tags("elfs_coreset", bool=False))
    assert reads(dataset.exists("elfs_aum", False))
    assert reads(dataset.match(F("elfs_pseudo_label.label") == "cluster_1"))
    assert reads(dataset.match_tags("elfs_round2"))
    assert not reads(dataset.match(F("elfs_review") == "todo"))
    assert not reads(dataset.match_tags("elfs_v2_coreset"))
    assert not reads(dataset.match(F("ground_truth.label") == "elfs_aum_x"))
    assert not reads(dataset.match_tags("to_label"))
    dataset.untag_samples("elfs_coreset")
    elfs.select_coreset(dataset, budget_count=len(first.selected_ids), tag="to_label")
    names = key_names(dataset, runs.PipelineNames("elfs"))
    assert dataset_io.reads_names(dataset.match_tags("to_label", bool=False), names)


def test_a_deleted_coreset_view_is_noted_and_show_coreset_shows_the_tagged_samples(dataset):
    # The panel kept naming the deleted view, and "Show coreset" asked the App for it by name
    # (FiftyOne then shows the whole dataset).
    result = _select(dataset, fraction=0.1)
    dataset.delete_saved_view("elfs-coreset")
    summary = run_summary.summarize_run(dataset)
    assert summary.saved_view is None and summary.tag == "elfs_coreset"
    [notice] = summary.notices
    assert notice.startswith("The saved view 'elfs-coreset' was deleted since")
    panel = ElfsPanel()
    ctx, executor = panel_context(dataset, "show_coreset")
    panel.on_load(ctx)
    assert "saved view" not in ctx.panel.state.outcome.split("\n")[0]
    panel.show_coreset(ctx)
    [shown] = [r for r in executor._requests if r.operator_uri == "set_view"]
    assert "name" not in shown.params
    stages = fo.DatasetView._build(dataset, shown.params["view"])
    assert set(stages.values("id")) == set(result.selected_ids)
    elfs.select_coreset(dataset, budget_fraction=0.1)
    assert run_summary.summarize_run(dataset).saved_view == "elfs-coreset"


def test_the_panel_buttons_read_the_run_records_only(dataset, monkeypatch):
    """Audit 'formscale' #1: "Show coreset" and "Open Embeddings panel" built the whole summary,
    passes over every sample (11 s at 1M samples), to read a tag, a view name and a plot name."""
    _select(dataset, fraction=0.1, visualize=True)
    panel = ElfsPanel()
    ctx, executor = panel_context(dataset, "show_coreset")
    panel.on_load(ctx)

    def scan(*args, **kwargs):
        raise AssertionError("a pass over the samples")

    for name in ("aggregate", "count", "bounds", "count_values", "distinct", "values"):
        monkeypatch.setattr(foc.SampleCollection, name, scan)
    panel.show_coreset(ctx)
    panel.open_embeddings(ctx)
    opened = {r.operator_uri: r.params for r in executor._requests}
    assert opened["set_view"]["name"] == "elfs-coreset"
    assert opened["open_panel"]["state"]["brainResult"] == "elfs_umap"


def test_read_only_calls_take_any_view_of_the_dataset(dataset):
    # A view listing samples twice was refused ("ELFS writes one value per sample") by calls
    # that write nothing, and list_keys given a dataset's name raised an AttributeError.
    _select(dataset, fraction=0.1)
    twice = dataset.limit(20).concat(dataset.skip(10).limit(20))
    assert run_summary.summarize_run(twice).n_selected == 30
    assert elfs.list_keys(twice) == elfs.list_keys(dataset)
    with pytest.raises(elfs.ElfsInputError, match="must be a FiftyOne dataset or view"):
        elfs.list_keys(dataset.name)
    assert elfs.delete_key(twice, "elfs") and elfs.list_keys(dataset) == {}


def test_the_summary_checks_bins_and_notes_a_plot_deleted_with_fiftyones_calls(dataset):
    # bins=0 raised from MongoDB's $bucket; a deleted plot was still reported (and opened).
    _select(dataset, fraction=0.1, visualize=True)
    for bins in (0, -3, 2.5, "20", True, 1001):
        with pytest.raises(elfs.ElfsInputError, match=r"bins must be an integer in \[1, 1000\]"):
            run_summary.summarize_run(dataset, bins=bins)
    assert len(run_summary.summarize_run(dataset, bins=np.int64(7)).histogram.edges) == 8
    assert run_summary.summarize_run(dataset).brain_key == "elfs_umap"
    dataset.delete_brain_run("elfs_umap")
    summary = run_summary.summarize_run(dataset)
    assert summary.brain_key is None
    assert any(n.startswith("The embedding plot 'elfs_umap' was deleted") for n in summary.notices)


def test_summary_figures_read_in_one_shared_pass_match_every_sample_counted_by_hand(dataset):
    # The histogram's bounds, the cluster balance and the tag count share one $facet pass;
    # after hand edits of every field they read, each figure must still equal a count made
    # sample by sample in Python.
    result = _select(dataset, fraction=0.3)
    ids = dataset.values("id")
    others = [i for i in ids if i not in set(result.selected_ids)]
    dataset.select(result.selected_ids[:5]).untag_samples("elfs_coreset")  # untagged by hand
    dataset.select(others[:3]).tag_samples("elfs_coreset")  # tagged by hand
    dataset.select(ids[8:10]).set_values("elfs_coreset_region", ["reviewed", None])
    dataset.select(ids[10:12]).set_values("elfs_pseudo_label", [None, None])
    dataset.select(ids[12:13]).set_values("elfs_aum", [float("nan")])
    summary = run_summary.summarize_run(dataset, "elfs", bins=7)

    rows = zip(
        *dataset.values(["tags", "elfs_coreset_region", "elfs_pseudo_label.label", "elfs_aum"]),
        strict=True,
    )
    pool: dict[str, int] = {}
    core: dict[str, int] = {}
    scored: list[tuple[str, float]] = []
    for tags, region, label, aum in rows:
        cored = "elfs_coreset" in tags
        if label is not None:
            pool[label] = pool.get(label, 0) + (region is not None)
            core[label] = core.get(label, 0) + cored
        if region in runs.REGIONS and aum is not None and math.isfinite(aum):
            scored.append((region, aum))
    expected = sorted(((k, n, core[k]) for k, n in pool.items() if n), key=lambda r: (-r[1], r[0]))
    assert summary.clusters == expected
    n_tagged = len(dataset.match_tags("elfs_coreset"))
    assert n_tagged == result.budget - 2
    assert any(f"{n_tagged} samples carry the coreset tag" in n for n in summary.notices)
    edges = np.asarray(summary.histogram.edges)
    low, high = min(a for _, a in scored), max(a for _, a in scored)
    assert len(edges) == 8 and edges[0] == low and high < edges[-1]
    for region in runs.REGIONS:
        values = [a for r, a in scored if r == region]
        by_hand = np.histogram(values, bins=edges)[0].tolist()
        assert summary.histogram.counts[region] == by_hand, region
