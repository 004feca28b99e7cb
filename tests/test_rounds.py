"""The next labeling budget on a real database: rounds never re-select, add up, and use labels."""

from __future__ import annotations

import fiftyone as fo
import numpy as np
import pytest
from fiftyone import ViewField as F

import fiftyone_elfs as elfs
from fiftyone_elfs import runs
from fiftyone_elfs.errors import ElfsInputError
from fiftyone_elfs.selection import double_end_prune, label_free_beta


def _round1(dataset, fraction=0.1):
    return elfs.run_pipeline(
        dataset,
        budget_fraction=fraction,
        n_clusters=10,
        clustering="kmeans",
        key="elfs",
        embeddings_field="elfs_embedding",
        epochs=5,
        mode="window",  # the window's rounds; CCS rounds: test_selection_modes
    )


def test_select_more_extends_the_window_and_records_each_round(dataset):
    n = len(dataset)
    first = _round1(dataset)
    second = elfs.select_more(dataset, budget_count=30, key="elfs")
    third = elfs.select_more(dataset, budget_fraction=0.1, key="elfs")
    assert (second.round, third.round) == (2, 3)
    assert len(second.selected_ids) == 30 and len(third.selected_ids) == 30
    chosen = [first.selected_ids, second.selected_ids, third.selected_ids]
    assert len(set().union(*map(set, chosen))) == 90  # never re-selected
    # Together they are what one selection of 90 would have chosen (label-free beta, same
    # scores), up to one rank of rounding at each window end.
    union = set().union(*map(set, chosen))
    ids, aum = dataset.values(["id", "elfs_aum"])
    aum = np.asarray(aum, dtype=float)
    once = double_end_prune(aum, 90, label_free_beta(aum, 90 / n)[0])
    assert len(union - {ids[i] for i in once.indices}) <= 2
    positions = sorted(once.ranks[ids.index(i)] for i in union)
    assert positions[-1] - positions[0] < 90 + 3  # one contiguous window of the ranking
    assert len(dataset.match_tags("elfs_round2")) == 30
    assert dataset.has_saved_view("elfs-round3")
    stages = runs.list_pipelines(dataset)["elfs"]
    assert stages[-2:] == ["round2", "round3"]
    assert elfs.list_keys(dataset)["elfs"][-1] == "round3"
    assert 0 < third.beta < 1 and n == third.n_pool
    # Replacing round 1 would orphan the later rounds: refused, nothing changed.
    with pytest.raises(elfs.ElfsInputError, match="labeling rounds"):
        elfs.select_coreset(dataset, budget_count=5, key="elfs")
    assert len(dataset.match_tags("elfs_coreset")) == len(first.selected_ids)
    # ... and so is a whole pipeline, before its first stage: three images without embeddings
    # stay without (the refusal came after embedding them, training the proxy and all)
    unembedded = dataset.take(3, seed=0)
    unembedded.set_values("elfs_embedding", [None] * 3)
    with pytest.raises(elfs.ElfsInputError, match="labeling rounds"):
        elfs.run_pipeline(dataset, budget_count=5, key="elfs", visualize=False)
    assert len(dataset.exists("elfs_embedding", False)) == 3
    deleted = elfs.delete_key(dataset, "elfs")
    assert "round3" in deleted and "round2" in deleted
    assert not dataset.match_tags(["elfs_round2", "elfs_round3"]) and not dataset.list_runs()


def test_select_more_skips_labeled_samples_and_errors_clearly(dataset):
    with pytest.raises(elfs.ElfsInputError, match="no coreset yet"):
        elfs.select_more(dataset, budget_count=5, key="elfs")
    first = _round1(dataset)
    # Pretend annotators labeled 40 samples outside the coreset: they are never selected.
    outside = [i for i in dataset.values("id") if i not in set(first.selected_ids)][:40]
    dataset.select(outside).set_values("annotated", [fo.Classification(label="x")] * len(outside))
    more = elfs.select_more(dataset, budget_count=50, key="elfs", label_field="annotated")
    assert not set(more.selected_ids) & (set(outside) | set(first.selected_ids))
    assert len(more.selected_ids) == 50
    with pytest.raises(elfs.ElfsInputError, match="does not exist"):
        elfs.select_more(dataset, budget_count=5, key="elfs", label_field="nope")
    rest = len(dataset) - 40 - 50 - len(first.selected_ids)
    last = elfs.select_more(dataset, budget_count=10_000, key="elfs", label_field="annotated")
    assert len(last.selected_ids) == rest and last.notices
    with pytest.raises(elfs.ElfsInputError, match="nothing left"):
        elfs.select_more(dataset, budget_count=1, key="elfs", label_field="annotated")
    # Without the label field the 40 labeled samples are the only ones left.
    assert set(elfs.select_more(dataset, budget_count=99, key="elfs").selected_ids) == set(outside)


def test_rounds_continue_the_ranking_of_the_coreset_score(dataset):
    """select_more ranked by AUM whatever the coreset used: after an EL2N window, round 2 was a
    window of another ranking, so the rounds no longer added up, and nothing said so."""
    n = len(dataset)
    _round1(dataset)
    first = elfs.select_coreset(dataset, budget_count=20, score="el2n", mode="window")
    second = elfs.select_more(dataset, budget_count=20)
    assert second.score == "el2n" and not second.notices
    ids, el2n = dataset.values(["id", "elfs_el2n"])
    el2n = np.asarray(el2n, dtype=float)
    once = double_end_prune(el2n, 40, label_free_beta(el2n, 40 / n)[0], hard_is_low=False)
    union = set(first.selected_ids) | set(second.selected_ids)
    assert len(union - {ids[i] for i in once.indices}) <= 2
    third = elfs.select_more(dataset, budget_count=10, score="aum")  # asked for: said
    assert third.score == "aum" and any("does not continue" in m for m in third.notices)
    assert dataset.get_run_info("elfs_round3").config.score == "aum"


@pytest.mark.parametrize("mode", ["window", "ccs"])
def test_rounds_keep_the_beta_the_user_gave_the_coreset(dataset, mode):
    """With beta unset, round 2 of a coreset selected with beta=0.2 fell back to the label-free
    cut: a window round was disjoint from round 1's, a CCS round cut another share."""
    n = len(dataset)
    _round1(dataset)
    first = elfs.select_coreset(dataset, budget_count=20, mode=mode, beta=0.2)
    second = elfs.select_more(dataset, budget_count=20)
    assert second.beta == 0.2 and "coreset" in second.beta_reason
    ids, aum = dataset.values(["id", "elfs_aum"])
    aum = np.asarray(aum, dtype=float)
    assert label_free_beta(aum, 40 / n)[0] != 0.2  # the rule it fell back to cuts otherwise
    if mode == "window":
        once = double_end_prune(aum, 40, 0.2)
        union = set(first.selected_ids) | set(second.selected_ids)
        assert len(union - {ids[i] for i in once.indices}) <= 2  # one window of 40
    assert elfs.select_more(dataset, budget_count=5, beta=0.1).beta == 0.1  # given: used


def test_rounds_skip_samples_tagged_by_the_key_and_say_which_are_unscored(dataset):
    """Samples merged in from a dataset that ran the same key carry its coreset tag without
    this dataset's run listing them: they were handed out there and were selected again. Samples
    added since the scores were computed cannot be selected: now said."""
    first = _round1(dataset)
    merged = [i for i in dataset.values("id") if i not in set(first.selected_ids)][:6]
    dataset.select(merged).tag_samples("elfs_coreset")  # as add_collection / merge_samples do
    dataset.add_samples([fo.Sample(filepath=p) for p in dataset.take(4, seed=1).values("filepath")])
    n = len(dataset)
    more = elfs.select_more(dataset, budget_count=n)  # everything that is left
    assert not set(more.selected_ids) & (set(merged) | set(first.selected_ids))
    assert len(more.selected_ids) == n - 4 - 6 - len(first.selected_ids)
    assert any(m.startswith(f"4 of the {n} samples have no 'aum' score") for m in more.notices)
    # the fix it names is one the key takes: with rounds, run_pipeline is refused
    (notice,) = [m for m in more.notices if "have no 'aum' score" in m]
    assert "run compute_embeddings, compute_pseudo_labels and compute_difficulty" in notice
    assert "the pipeline" not in notice


def test_scores_and_pseudo_labels_merged_from_a_run_of_the_same_key_elsewhere_are_refused(dataset):
    """Audit 'lifecycle' #1, #2: merge_samples of a dataset that ran the same key overwrites the
    scores and pseudo-labels of the samples both hold (matched by filepath). The refusal
    counted samples only, so they were ranked with this run's, and the fix it named
    (compute_difficulty) trained the proxy on both clusterings' labels as one."""
    _round1(dataset)
    other = fo.Dataset()
    other.add_samples([fo.Sample(filepath=p) for p in dataset.take(30, seed=2).values("filepath")])
    try:
        vectors = dict(zip(*dataset.values(["filepath", "elfs_embedding"]), strict=True))
        other.set_values("elfs_embedding", [vectors[p] for p in other.values("filepath")])
        elfs.run_pipeline(other, key="elfs", budget_count=5, n_clusters=3, clustering="kmeans",
                          embeddings_field="elfs_embedding", epochs=2, mode="window")  # fmt: skip
        dataset.merge_samples(other)  # FiftyOne's default: by filepath, the values replaced
    finally:
        other.delete()
    before = dataset.values("tags")
    with pytest.raises(ElfsInputError, match=r"^30 of the \d+ samples' 'elfs_aum' values are not"):
        elfs.select_more(dataset, budget_count=5)
    with pytest.raises(ElfsInputError, match="not those the difficulty run of key 'elfs' wrote"):
        elfs.select_coreset(dataset, budget_count=5, mode="window")
    with pytest.raises(ElfsInputError, match=r"^\d+ of the \d+ samples' pseudo-labels") as e:
        elfs.compute_difficulty(dataset, key="elfs", embeddings_field="elfs_embedding", epochs=2)
    assert "Fix: run compute_pseudo_labels again with key 'elfs'" in str(e.value)
    # a merged label equal to the one it replaced ("cluster_2" in both runs) is no harm
    assert 10 <= int(str(e.value).split()[0]) <= 30
    assert dataset.values("tags") == before
    elfs.compute_pseudo_labels(dataset, key="elfs", n_clusters=10, clustering="kmeans",
                               embeddings_field="elfs_embedding")  # fmt: skip
    elfs.compute_difficulty(dataset, key="elfs", embeddings_field="elfs_embedding", epochs=2)
    assert len(elfs.select_more(dataset, budget_count=5).selected_ids) == 5


def test_label_filters_of_a_view_hide_no_label_from_the_selection_or_the_proxy(dataset):
    """Audit 'views' #1: the App's sidebar filter that excludes a class keeps the samples and
    hides their labels (filter_labels, only_matches=False). select_more took the samples whose
    labels it hid for unlabeled and picked them again; compute_difficulty on a view hiding a
    cluster trained without it and deleted that cluster's scores. The view still decides which
    samples (audits 'regress7'-'regress9': rewriting its stages changed them)."""
    first = _round1(dataset)
    rest = [i for i in dataset.values("id") if i not in set(first.selected_ids)]
    labeled = rest[: len(rest) - 10]
    dataset.select(labeled).set_values(
        "human", [fo.Classification(label=str(k % 3)) for k in range(len(labeled))]
    )
    hidden = dataset.filter_labels("human", F("label") != "1", only_matches=False)
    assert len(hidden) == len(dataset) and len(hidden.exists("human")) < len(labeled)
    # the App's "selected samples" target adds a select after the sidebar filters
    some = hidden.select(rest[-40:])
    assert sorted(elfs.select_more(some, budget_count=20, label_field="human").selected_ids) == (
        sorted(rest[len(labeled) :])  # the 10 unlabeled only
    )
    without = dataset.filter_labels("elfs_pseudo_label", F("label") != "cluster_0", False)
    scored = elfs.compute_difficulty(without, key="elfs", embeddings_field="elfs_embedding")
    assert scored["n_samples"] == len(dataset) == len(dataset.exists("elfs_aum"))
    # a filter that keeps only the samples with a match keeps only those: the proxy learns them
    two = dataset.filter_labels("elfs_pseudo_label", F("label").is_in(["cluster_1", "cluster_2"]))
    scored = elfs.compute_difficulty(two, key="elfs", embeddings_field="elfs_embedding")
    assert scored["n_samples"] == len(two) < len(dataset) and scored["n_classes"] == 2
    # audit 'regress10': a pseudo-labeled sample without a vector (an unreadable image) is left
    # out, as on the dataset (the labels and the vectors came out of step)
    dataset.select(dataset.values("id")[:1]).set_field("elfs_embedding", None).save()
    scored = elfs.compute_difficulty(without, key="elfs", embeddings_field="elfs_embedding")
    assert scored["n_samples"] == len(dataset) - 1


def test_a_view_of_selected_samples_only_names_the_free_ones_outside_it(dataset):
    """Audit 'views' #3: select_more on the App's "Show coreset" view said every scored sample
    of the key was taken and to run the pipeline again with another key."""
    first = _round1(dataset)
    shown = dataset.match_tags("elfs_coreset")
    with pytest.raises(ElfsInputError) as refused:
        elfs.select_more(shown, budget_count=5)
    n = len(first.selected_ids)
    assert str(refused.value).startswith(
        f"This view holds {n} of the {len(dataset)} scored samples of key 'elfs', and every "
        "one of them is already selected or labeled. Fix: select from the dataset"
    )
    assert len(elfs.select_more(dataset, budget_count=5).selected_ids) == 5  # the fix works


def test_a_view_hiding_the_fields_selects_and_a_renamed_score_field_is_named(dataset):
    """A view that hides ELFS's fields (select_fields / exclude_fields, to slim the App's
    sidebar) made stages take them for absent: every image embedded again, FiftyOne's
    ValueError on selection. Now the stages see the fields of the view's samples."""
    first = _round1(dataset)
    slim = dataset.select_fields("ground_truth")
    assert elfs.compute_embeddings(slim, key="elfs")["n_computed"] == 0
    more = elfs.select_more(dataset.exclude_fields(["elfs_aum", "elfs_embedding"]), budget_count=5)
    assert len(more.selected_ids) == 5 and not set(more.selected_ids) & set(first.selected_ids)
    again = elfs.run_pipeline(
        slim,
        key="slim",
        budget_count=6,
        n_clusters=4,
        clustering="kmeans",
        embeddings_field="elfs_embedding",
        epochs=2,
        visualize=False,
    )
    assert again.budget == 6 and len(dataset.match_tags("slim_coreset")) == 6
    dataset.rename_sample_field("elfs_aum", "my_aum")
    for call in (elfs.select_coreset, elfs.select_more):
        with pytest.raises(elfs.ElfsInputError, match="'elfs_aum'.*renamed or deleted.*Fix: run"):
            call(dataset, budget_count=5)
    assert "my_aum" in dataset.get_field_schema()
    with pytest.raises(elfs.ElfsInputError, match=r"the name 'x'.*fo.load_dataset"):
        elfs.select_coreset("x", budget_count=5)


def test_true_labels_correct_the_proxy_targets(dataset):
    _round1(dataset, fraction=0.3)
    coreset = dataset.match_tags("elfs_coreset")
    # The 'annotators' return the true class of the round-1 coreset.
    coreset.clone_sample_field("ground_truth", "returned")
    before = dataset.values("elfs_aum")
    info = elfs.compute_difficulty(dataset, key="elfs", epochs=5, label_field="returned", seed=0)
    assert info["n_true_labels"] == len(coreset)
    assert info["targets"] == "labels + probe"
    assert info["n_classes"] == len(set(coreset.values("ground_truth.label")))
    # One labeled class is not enough for a probe: each cluster's majority class is used.
    dataset.select(coreset.values("id")[1:]).set_field("returned", None).save()
    one = elfs.compute_difficulty(dataset, key="elfs", epochs=2, label_field="returned")
    assert one["targets"] == "labels + clusters" and one["n_true_labels"] == 1
    config = runs.stage_config(dataset, runs.PipelineNames("elfs"), "difficulty")
    assert config.true_label_field == "returned"
    after = np.array(dataset.values("elfs_aum"))
    assert not np.allclose(after, before)  # different targets, different dynamics
    # Scores learned from returned labels: "auto" keeps the window, whatever the clusters' trust.
    auto = elfs.select_more(dataset, budget_count=10, key="elfs")  # the coreset's rule (window)
    assert auto.mode == "window"
    assert len(dataset.match_tags("elfs_round2")) == 10
    dataset.set_values("user_score", [0.5] * len(dataset))  # a field of the user's, not labels
    with pytest.raises(elfs.ElfsInputError, match="fo.Classification"):
        elfs.compute_difficulty(dataset, key="elfs", epochs=1, label_field="user_score")
    with pytest.raises(elfs.ElfsInputError, match="written by the 'difficulty' stage"):
        elfs.compute_difficulty(dataset, key="elfs", epochs=1, label_field="elfs_aum")
