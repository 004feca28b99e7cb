"""The selection rule on a real database: "auto" follows the recorded pseudo-label trust, CCS
draws across the range, typical selection covers the embedding, their regions and next rounds,
what the run records and the panel shows.

The 300 real images carry two extra vector fields so that the trust is known in advance:
well-separated Gaussian clusters (strong trust) and a structureless Gaussian cloud (weak).
"""

from __future__ import annotations

import fiftyone.operators as foo
import numpy as np
import pytest

import fiftyone_elfs as elfs
from fiftyone_elfs import run_summary, runs
from fiftyone_elfs.plugin.panel import _outcome_markdown

PLUGIN = "@fiftyone-elfs/elfs"


def _set_vectors(dataset, field: str, X: np.ndarray) -> None:
    dataset.set_values(field, [x.tolist() for x in X])


@pytest.fixture
def modes_dataset(dataset):
    n = len(dataset)
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16)) * 5.0
    blobs = centres[np.arange(n) % 3] + rng.normal(0.0, 0.3, (n, 16))
    _set_vectors(dataset, "blob_embedding", blobs)
    _set_vectors(dataset, "cloud_embedding", rng.normal(size=(n, 16)))
    return dataset


def _run(dataset, field, n_clusters, **kwargs):
    return elfs.run_pipeline(
        dataset,
        budget_fraction=0.2,
        n_clusters=n_clusters,
        clustering="kmeans",
        embeddings_field=field,
        epochs=5,
        visualize=False,
        **kwargs,
    )


def _trust(dataset, key="elfs"):
    return dataset.load_run_results(f"{key}_pseudo_labels").trust


def test_auto_takes_the_window_on_trusted_pseudo_labels(modes_dataset):
    result = _run(modes_dataset, "blob_embedding", 3)
    assert _trust(modes_dataset)["level"] == "strong"
    assert result.mode == "window" and "trust is strong" in result.mode_reason
    assert "model=" not in result.mode_reason  # no advice where the signal is strong
    counts = modes_dataset.count_values("elfs_coreset_region")
    assert "not_drawn" not in counts and counts["coreset"] == result.budget == 60
    stored = modes_dataset.load_run_results("elfs_coreset")
    assert stored.mode == "window" and stored.trust["level"] == "strong"
    assert modes_dataset.get_run_info("elfs_coreset").config.mode == "auto"


def test_auto_takes_typical_selection_on_weak_pseudo_labels(modes_dataset):
    result = _run(modes_dataset, "cloud_embedding", 10)
    assert _trust(modes_dataset)["level"] == "weak"
    assert result.mode == "typical" and "trust is weak" in result.mode_reason
    assert "worse than random subsets" in result.mode_reason  # what to expect, said
    assert "points better" in result.mode_reason
    assert "model='timm:" in result.mode_reason  # and what would change it
    assert result.beta == 0.0 and "no cut: typical selection" in result.beta_reason
    region = np.asarray(modes_dataset.values("elfs_coreset_region"))
    assert set(region) == {"coreset", "not_drawn"}
    stored = modes_dataset.load_run_results("elfs_coreset")
    assert stored.mode == "typical" and stored.trust["level"] == "weak"


def test_ccs_draws_across_the_range_left_after_the_cut(modes_dataset):
    result = _run(modes_dataset, "cloud_embedding", 10, mode="ccs")
    assert result.mode == "ccs"
    ids, aum, region = modes_dataset.values(["id", "elfs_aum", "elfs_coreset_region"])
    aum, region = np.asarray(aum, dtype=float), np.asarray(region)
    assert set(region) == {"dropped_hard", "coreset", "not_drawn"}
    assert {ids[i] for i in np.flatnonzero(region == "coreset")} == set(result.selected_ids)
    assert (region == "dropped_hard").sum() == round(result.beta * len(ids))
    hard, core, rest = (aum[region == r] for r in ("dropped_hard", "coreset", "not_drawn"))
    assert hard.max() <= core.min() and hard.max() <= rest.min()
    # A draw, not a window: the coreset spans (nearly) all of the range left after the cut.
    assert np.ptp(core) > 0.8 * (aum.max() - hard.max())
    assert rest.min() < core.max() and core.min() < rest.max()
    # The draw is seeded: the same seed gives the same coreset, another seed another one.
    again = elfs.select_coreset(modes_dataset, budget_fraction=0.2, mode="ccs", seed=0)
    other = elfs.select_coreset(modes_dataset, budget_fraction=0.2, mode="ccs", seed=1)
    assert again.selected_ids == result.selected_ids
    assert set(other.selected_ids) != set(result.selected_ids)


def test_the_user_can_fix_the_rule_whatever_the_trust(modes_dataset):
    window = _run(modes_dataset, "cloud_embedding", 10, mode="window", key="w")
    assert window.mode == "window" and "set by the user" in window.mode_reason
    assert "not_drawn" not in modes_dataset.count_values("w_coreset_region")
    ccs = _run(modes_dataset, "blob_embedding", 3, mode="ccs", key="c")
    assert ccs.mode == "ccs" and "not_drawn" in modes_dataset.count_values("c_coreset_region")
    with pytest.raises(elfs.ElfsInputError, match="mode"):
        elfs.select_coreset(modes_dataset, budget_count=10, key="c", mode="middle")
    assert modes_dataset.count_values("c_coreset_region")["coreset"] == ccs.budget  # unchanged


def test_ccs_rounds_never_reselect_and_keep_the_rule(modes_dataset):
    first = _run(modes_dataset, "cloud_embedding", 10, mode="ccs")
    assert first.mode == "ccs"
    second = elfs.select_more(modes_dataset, budget_count=40)
    assert second.mode == "ccs" and second.round == 2 and len(second.selected_ids) == 40
    assert not set(second.selected_ids) & set(first.selected_ids)
    ids, aum = modes_dataset.values(["id", "elfs_aum"])
    # nothing from the hard cut of the combined selection (its beta is the label-free rule's
    # for the combined budget, so it may differ from round 1's)
    rank = {ids[i]: r for r, i in enumerate(np.argsort(aum, kind="stable"))}
    cut = int(np.floor(second.beta * len(ids) + 1e-9))
    assert 0 < cut and min(rank[i] for i in second.selected_ids) >= cut
    assert modes_dataset.load_run_results("elfs_round2").mode == "ccs"


def test_the_summary_and_the_panel_say_which_rule_and_why(modes_dataset):
    _run(modes_dataset, "cloud_embedding", 10)
    summary = run_summary.summarize_run(modes_dataset, "elfs", bins=10)
    assert summary.mode == "typical" and summary.trust["level"] == "weak"
    assert sum(summary.histogram.counts["not_drawn"]) > 0
    assert sum(summary.histogram.counts["dropped_easy"]) == 0
    assert sum(summary.histogram.counts["dropped_hard"]) == 0
    text = _outcome_markdown(summary)
    assert "Selection rule: **typical**: pseudo-label trust is weak" in text
    assert "Pseudo-label trust: **weak**" in text
    assert set(summary.histogram.counts) == set(runs.REGIONS)


def test_the_operator_takes_the_rule_through_fiftyone(modes_dataset):
    _run(modes_dataset, "blob_embedding", 3)
    result = foo.execute_operator(
        f"{PLUGIN}/select_coreset",
        {"dataset": modes_dataset},
        params={"budget_mode": "count", "budget_count": 30, "mode": "ccs", "seed": 2},
    )
    assert result.error is None, result.error
    stored = modes_dataset.load_run_results("elfs_coreset")
    assert stored.mode == "ccs" and stored.n_selected == 30
    assert modes_dataset.get_run_info("elfs_coreset").config.seed == 2
    result = foo.execute_operator(
        f"{PLUGIN}/select_coreset",
        {"dataset": modes_dataset},
        params={"budget_mode": "count", "budget_count": 25, "mode": "typical"},
    )
    assert result.error is None, result.error
    stored = modes_dataset.load_run_results("elfs_coreset")
    assert stored.mode == "typical" and stored.n_selected == 25
    assert set(modes_dataset.distinct("elfs_coreset_region")) == {"coreset", "not_drawn"}


def test_auto_keeps_the_window_when_the_proxy_learned_returned_labels(modes_dataset):
    _run(modes_dataset, "cloud_embedding", 10)
    coreset = modes_dataset.match_tags("elfs_coreset")
    coreset.clone_sample_field("ground_truth", "returned")
    elfs.compute_difficulty(
        modes_dataset, embeddings_field="cloud_embedding", epochs=3, label_field="returned"
    )
    again = elfs.select_coreset(modes_dataset, budget_fraction=0.2)
    assert again.mode == "window" and "labels in 'returned'" in again.mode_reason


def test_typical_mode_picks_dense_samples_of_every_cluster_without_a_cut(modes_dataset):
    result = _run(modes_dataset, "blob_embedding", 3, mode="typical", key="t")
    assert result.mode == "typical" and "set by the user" in result.mode_reason
    assert result.beta == 0.0 and "no cut: typical selection" in result.beta_reason
    ids, region, blob = modes_dataset.values(["id", "t_coreset_region", "blob_embedding"])
    region = np.asarray(region)
    assert set(region) == {"coreset", "not_drawn"}  # nothing cut, nothing "easy"
    assert {ids[i] for i in np.flatnonzero(region == "coreset")} == set(result.selected_ids)
    # Coverage: the three clusters (sample i is in cluster i % 3) share the 60 picks.
    cluster = np.arange(len(ids)) % 3
    assert np.bincount(cluster[region == "coreset"], minlength=3).min() >= 6
    # Typical: the picks sit closer to their cluster's centre than the average member.
    X = np.asarray(blob, dtype=float)
    for c in range(3):
        members = cluster == c
        centre = X[members].mean(0)
        dist = np.linalg.norm(X - centre, axis=1)
        assert dist[members & (region == "coreset")].mean() < dist[members].mean()
    stored = modes_dataset.load_run_results("t_coreset")
    assert stored.mode == "typical" and stored.n_selected == 60
    # the saved view names what chose its samples (not the difficulty score it did not use)
    info = modes_dataset.get_saved_view_info(result.saved_view)
    assert info["description"].endswith("60 of 300 samples by typical selection")


def test_typical_rounds_never_reselect_and_keep_the_rule(modes_dataset):
    first = _run(modes_dataset, "blob_embedding", 3, mode="typical")
    second = elfs.select_more(modes_dataset, budget_count=30)
    assert second.mode == "typical" and second.round == 2 and len(second.selected_ids) == 30
    assert not set(second.selected_ids) & set(first.selected_ids)
    assert modes_dataset.load_run_results("elfs_round2").mode == "typical"
    info = modes_dataset.get_saved_view_info(second.saved_view)
    assert info["description"].endswith("30 more of 300 samples by typical selection")
    with pytest.raises(elfs.ElfsInputError, match="which makes none"):
        elfs.select_more(modes_dataset, budget_count=10, beta=0.3)
    assert "elfs_round3" not in modes_dataset.list_runs()


@pytest.mark.parametrize("mode", ["typical", "ccs", "window"])
def test_a_round_with_nothing_left_is_refused_by_every_rule(modes_dataset, mode):
    """A typical key recorded an empty round 3 (its run, tag and saved view, "all 0 are
    selected") where window and CCS keys refused."""
    _run(modes_dataset, "blob_embedding", 3, mode=mode)
    rest = elfs.select_more(modes_dataset, budget_count=10_000)
    assert len(rest.selected_ids) == len(modes_dataset) - 60
    assert any("(10000)" in m and "all 240 are selected" in m for m in rest.notices)
    runs_before = modes_dataset.list_runs()
    with pytest.raises(elfs.ElfsInputError, match="nothing left to select.*Fix:"):
        elfs.select_more(modes_dataset, budget_count=5)
    assert modes_dataset.list_runs() == runs_before
    assert "elfs-round3" not in modes_dataset.list_saved_views()


def test_typical_mode_without_embeddings_is_refused_and_changes_nothing(modes_dataset):
    _run(modes_dataset, "blob_embedding", 3, mode="ccs")
    before = modes_dataset.count_values("elfs_coreset_region")
    modes_dataset.delete_sample_field("blob_embedding")
    with pytest.raises(
        elfs.ElfsInputError, match="Typical selection reads the embeddings, and the field"
    ):
        elfs.select_coreset(modes_dataset, budget_count=30, mode="typical")
    assert modes_dataset.count_values("elfs_coreset_region") == before
    assert modes_dataset.load_run_results("elfs_coreset").mode == "ccs"


def test_typical_mode_refuses_a_beta_it_would_ignore(modes_dataset):
    _run(modes_dataset, "blob_embedding", 3, mode="ccs")
    before = modes_dataset.count_values("elfs_coreset_region")
    with pytest.raises(elfs.ElfsInputError, match="mode='typical' makes no cut"):
        elfs.select_coreset(modes_dataset, budget_count=30, mode="typical", beta=0.2)
    assert modes_dataset.count_values("elfs_coreset_region") == before


def test_selected_samples_sharing_an_image_file_are_noted(base_dataset):
    # A folder imported twice: each image's two samples score alike, the window kept both, and
    # the export sent the same image to be labelled twice, without a word.
    ds = base_dataset.take(40, seed=3).clone()
    try:
        ds.add_samples([sample.copy() for sample in ds])  # the same files, fields included
        result = elfs.run_pipeline(
            ds, key="d", embeddings_field="elfs_embedding", budget_count=20, n_clusters=4,
            clustering="kmeans", epochs=3, mode="window", visualize=False,
        )  # fmt: skip
        paths = ds.select(result.selected_ids).values("filepath")
        n_extra = len(paths) - len(set(paths))
        assert n_extra > 0  # the premise: identical inputs score identically, side by side
        [notice] = [n for n in result.notices if "repeat the image file" in n]
        assert notice.startswith(f"{n_extra} of the 20 selected samples repeat")
        assert "compute_exact_duplicates" in notice
        distinct = elfs.select_coreset(ds.limit(40), key="d", budget_count=10, mode="window")
        assert not any("repeat the image file" in n for n in distinct.notices)
        more = elfs.select_more(ds, key="d", budget_count=20)
        paths = ds.select(more.selected_ids).values("filepath")
        assert any("repeat the image file" in n for n in more.notices) == (
            len(set(paths)) < len(paths)
        )
        # the round also picked copies of images the coreset had sent for labelling
        before = set(ds.select(distinct.selected_ids).values("filepath"))
        n_again = sum(path in before for path in paths)
        assert n_again > 0  # the premise: each coreset image has a copy left to draw
        [again] = [n for n in more.notices if "selected or labelled before" in n]
        assert again.startswith(f"{n_again} of the 20 selected samples have the image file")
    finally:
        ds.delete()
