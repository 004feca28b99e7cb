"""Typical selection on a key that has embeddings and nothing else: TypiClust reads no score, so
``mode="typical"`` must not ask for pseudo-labels and a trained proxy first. Real database, real
images embedded by the packaged encoder (the `dataset` fixture's key "elfs"), the operator run
through FiftyOne's machinery.
"""

from __future__ import annotations

import fiftyone.operators as foo
import numpy as np
import pytest
from fiftyone.operators.executor import ExecutionError

import fiftyone_elfs as elfs
from fiftyone_elfs import run_summary
from fiftyone_elfs.plugin.panel import _outcome_markdown

PLUGIN = "@fiftyone-elfs/elfs"


def test_typical_selection_needs_only_the_embeddings(dataset):
    runs_before = set(dataset.list_runs())
    assert runs_before == {"elfs_embeddings"}  # no pseudo-labels, no proxy, no scores
    result = elfs.select_coreset(dataset, budget_count=30, mode="typical")
    assert result.mode == "typical" and len(set(result.selected_ids)) == 30
    assert result.n_pool == len(dataset) and "no cut" in result.beta_reason
    regions = dataset.count_values("elfs_coreset_region")
    assert regions == {"coreset": 30, "not_drawn": len(dataset) - 30}
    assert set(dataset.match_tags("elfs_coreset").values("id")) == set(result.selected_ids)
    assert set(dataset.list_runs()) == runs_before | {"elfs_coreset"}  # nothing computed
    stored = dataset.load_run_results("elfs_coreset")
    assert stored.mode == "typical" and stored.scored is False  # its rounds keep to this pool
    # the picks cover the embedding: each is the nearest pick of fewer than a third of the pool
    X = np.asarray(dataset.values("elfs_embedding"), dtype=float)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    picked = np.isin(dataset.values("id"), result.selected_ids)
    nearest_pick = np.argmax(X @ X[picked].T, axis=1)
    assert np.bincount(nearest_pick, minlength=30).max() < len(dataset) / 3

    second = elfs.select_more(dataset, budget_count=20)
    assert second.mode == "typical" and second.round == 2 and len(second.selected_ids) == 20
    assert not set(second.selected_ids) & set(result.selected_ids)
    assert dataset.load_run_results("elfs_round2").n_excluded == 30

    summary = run_summary.summarize_run(dataset)
    assert summary.mode == "typical" and summary.n_selected == 30
    assert summary.histogram is None  # no score to draw the regions over
    assert "Selection rule: **typical**" in _outcome_markdown(summary)


def test_typical_selection_is_reproducible_and_seeded(dataset):
    first = elfs.select_coreset(dataset, budget_count=25, mode="typical", key="elfs", seed=3)
    again = elfs.select_coreset(dataset, budget_count=25, mode="typical", key="elfs", seed=3)
    assert first.selected_ids == again.selected_ids


def test_samples_without_an_embedding_are_left_out_with_a_notice(dataset):
    unembedded = dataset.take(12, seed=1)
    unembedded.set_field("elfs_embedding", None).save()
    result = elfs.select_coreset(dataset, budget_count=40, mode="typical")
    assert not set(result.selected_ids) & set(unembedded.values("id"))
    assert result.n_pool == len(dataset) - 12
    assert any("12 of the 300 samples have no embedding" in n for n in result.notices)


def test_the_other_rules_still_need_the_scores_and_say_so(dataset):
    for mode in ("auto", "window", "ccs"):
        with pytest.raises(elfs.ElfsInputError, match="run compute_difficulty"):
            elfs.select_coreset(dataset, budget_count=30, mode=mode)
    assert "elfs_coreset" not in dataset.list_runs()
    assert "elfs_coreset_region" not in dataset.get_field_schema()


def test_a_key_without_embeddings_or_a_view_without_any_is_refused(dataset):
    with pytest.raises(elfs.ElfsInputError, match="no ELFS run with that key") as caught:
        elfs.select_coreset(dataset, budget_count=30, mode="typical", key="other")
    assert caught.value.param == "key"
    dataset.clone_sample_field("elfs_embedding", "kept")
    unembedded = dataset.take(10, seed=0)
    unembedded.set_field("elfs_embedding", None).save()
    with pytest.raises(elfs.ElfsInputError, match="no sample of this view has one.*Fix:"):
        elfs.select_coreset(unembedded, budget_count=5, mode="typical")
    assert "elfs_coreset" not in dataset.list_runs()
    assert not dataset.match_tags("elfs_coreset")


def test_the_operator_selects_typical_samples_without_scores(dataset):
    result = foo.execute_operator(
        f"{PLUGIN}/select_coreset",
        {"dataset": dataset},
        params={"budget_mode": "count", "budget_count": 15, "mode": "typical"},
    )
    assert result.error is None, result.error
    assert dataset.load_run_results("elfs_coreset").n_selected == 15
    assert len(dataset.match_tags("elfs_coreset")) == 15
    # the form's check still asks for the scores where the rule ranks by them
    with pytest.raises(ExecutionError, match="Path: key.*run compute_difficulty"):
        foo.execute_operator(
            f"{PLUGIN}/select_coreset",
            {"dataset": dataset},
            params={"budget_mode": "count", "budget_count": 15, "mode": "ccs"},
        )
    assert dataset.load_run_results("elfs_coreset").mode == "typical"


def test_scores_computed_later_neither_shrink_the_pool_nor_stop_the_rounds(dataset):
    """Audit 'typicalonly' #1 and #3: once difficulty scores existed on part of the samples,
    round 2 drew from those alone and lost sight of round 1's picks; re-clustered pseudo-labels
    (stale scores) refused typical selection over "a ranking by these scores" it never reads;
    the summary said the scores were computed "again" and that rounds rank by them."""
    first = elfs.select_coreset(dataset, budget_count=20, mode="typical")
    part = dataset.take(60, seed=4)
    elfs.compute_pseudo_labels(part, n_clusters=4, clustering="kmeans")
    elfs.compute_difficulty(part, epochs=2)
    assert run_summary.summarize_run(dataset).notices == []
    second = elfs.select_more(dataset, budget_count=20)
    assert second.n_pool == len(dataset)  # every embedded sample, not the 60 scored
    assert dataset.load_run_results("elfs_round2").n_excluded == 20
    assert not set(second.selected_ids) & set(first.selected_ids)
    elfs.compute_pseudo_labels(part, n_clusters=3, clustering="kmeans")  # the scores go stale
    with pytest.raises(elfs.ElfsInputError, match="earlier pseudo-labels"):  # it ranks by them
        elfs.select_coreset(part, budget_count=5, mode="window")
    third = elfs.select_more(dataset, budget_count=10)
    assert len(third.selected_ids) == 10
    assert not set(third.selected_ids) & (set(first.selected_ids) | set(second.selected_ids))


def test_the_messages_of_an_embeddings_only_key_name_embeddings_not_scores(dataset, tmp_path):
    """Audit 'typicalonly' #2 and #5: the counts and fixes spoke of scores the key never had."""
    half = dataset.take(150, seed=5)
    elfs.compute_embeddings(half, key="half")
    result = elfs.select_coreset(dataset, key="half", budget_count=140, mode="typical")
    notice = next(n for n in result.notices if "have no embedding" in n)
    assert notice.startswith("150 of the 300 samples") and "on a view without them" in notice
    rest = elfs.select_more(dataset, key="half", budget_count=500)
    assert any("(10; candidates: samples with an embedding" in n for n in rest.notices)
    with pytest.raises(elfs.ElfsInputError, match="150 candidate samples.*embed more samples"):
        elfs.select_more(dataset, key="half", budget_count=5)
    with pytest.raises(elfs.ElfsInputError, match="no pseudo-labels.*leave prelabel_map unset"):
        elfs.export_coreset(
            dataset, str(tmp_path / "out"), key="half", classes=["a"], prelabel_map={"c0": "a"}
        )
    dataset.rename_sample_field("half_embedding", "mine")
    with pytest.raises(
        elfs.ElfsInputError, match="is not on this dataset \\(renamed or deleted\\)"
    ):
        elfs.select_coreset(dataset, key="half", budget_count=5, mode="typical")


FAST = dict(n_clusters=5, clustering="kmeans", epochs=2, visualize=False)


def test_a_scored_typical_coreset_keeps_its_checks_and_their_order(dataset):
    """Audit 'regress2' #1 and #2: once the pool was read before the rule, a key with rounds
    whose embeddings were recomputed got the stale-trust refusal (whose fix only led to the
    rounds refusal); and the summary stopped saying that recomputed scores move the rounds of a
    typical coreset drawn from the scored samples."""
    elfs.run_pipeline(dataset, budget_count=10, mode="typical", **FAST)
    assert dataset.load_run_results("elfs_coreset").scored is True
    elfs.compute_difficulty(dataset.take(60, seed=0), epochs=2)
    (notice,) = run_summary.summarize_run(dataset).notices
    assert "computed again" in notice and "draw from the samples they score" in notice
    elfs.select_more(dataset, budget_count=10)
    elfs.compute_embeddings(dataset, overwrite=True, image_size=96)
    with pytest.raises(elfs.ElfsInputError, match=r"labeling rounds \[2\]"):
        elfs.select_coreset(dataset, budget_count=10)


def test_a_typical_round_counts_earlier_picks_outside_a_rescored_pool(dataset):
    """Audit 'regress2' #2: scores recomputed on part of the samples shrank a typical round's
    pool to them, and round 1's picks, outside it, no longer kept the round off their cells."""
    first = elfs.run_pipeline(dataset, budget_count=10, mode="typical", **FAST)
    rest = dataset.exclude(first.selected_ids).take(60, seed=0)
    elfs.compute_difficulty(rest, epochs=2)
    more = elfs.select_more(dataset, budget_count=10)
    assert dataset.load_run_results("elfs_round2").n_excluded == 10
    assert set(more.selected_ids) <= set(rest.values("id"))


def test_a_stale_scores_refusal_of_typical_selection_speaks_of_its_candidates(dataset):
    """The refusal of stale scores said "a ranking by these scores" to a typical selection,
    which ranks by no score: there the scores mark the candidates (the samples scored)."""
    part = dataset.take(80, seed=2)
    elfs.compute_pseudo_labels(part, n_clusters=4, clustering="kmeans")
    elfs.compute_difficulty(part, epochs=2)
    elfs.compute_pseudo_labels(part, n_clusters=3, clustering="kmeans")  # the scores go stale
    with pytest.raises(elfs.ElfsInputError, match="a ranking by these scores") as caught:
        elfs.select_coreset(dataset, budget_count=10, mode="window")
    assert caught.value.param == "score"
    with pytest.raises(elfs.ElfsInputError) as caught:
        elfs.select_coreset(dataset, budget_count=10, mode="typical")
    message = str(caught.value)
    assert "ranking" not in message and "the candidates of a typical selection" in message
    assert "re-run compute_difficulty" in message and caught.value.param == "score"
    assert "elfs_coreset" not in dataset.list_runs()


def test_rounds_keep_to_the_embeddings_the_coreset_was_selected_on(dataset):
    """Audit 'typdown' #1: pseudo-labels computed later on another embeddings field moved the
    rounds to that field: a pool of the 150 samples it covers, round 1's picks outside it no
    longer counted, and a notice whose fix (compute_embeddings) changed nothing."""
    first = elfs.select_coreset(dataset, budget_count=20, mode="typical")
    assert dataset.load_run_results("elfs_coreset").embeddings_field == "elfs_embedding"
    dataset.clone_sample_field("elfs_embedding", "my_emb")
    dataset.take(150, seed=6).set_field("my_emb", None).save()
    elfs.compute_pseudo_labels(
        dataset, embeddings_field="my_emb", n_clusters=3, clustering="kmeans"
    )
    more = elfs.select_more(dataset, budget_count=10)
    assert more.n_pool == len(dataset) and not any("my_emb" in n for n in more.notices)
    stored = dataset.load_run_results("elfs_round2")
    assert stored.n_excluded == 20 and stored.embeddings_field == "elfs_embedding"
    assert not set(more.selected_ids) & set(first.selected_ids)


def test_rounds_after_the_embeddings_run_was_deleted_resume_by_the_fix_they_name(dataset):
    """Audit 'typdown' #2: after dataset.delete_run of the embeddings, the rounds' refusal
    said compute_embeddings replaces the field, and compute_embeddings refused it (values
    "this run did not compute"), even with overwrite=True: a dead end short of delete_key. The
    field is not taken over (audit 'regress3': another key may read it, a view's run would drop
    the rest); both refusals name the way out that keeps the rounds: delete the field first."""
    first = elfs.select_coreset(dataset, budget_count=20, mode="typical")
    dataset.delete_run("elfs_embeddings")
    fix = r"dataset\.delete_sample_field\('elfs_embedding'\), then compute_embeddings"
    with pytest.raises(elfs.ElfsInputError, match=fix):
        elfs.select_more(dataset, budget_count=10)
    with pytest.raises(elfs.ElfsInputError, match="delete the field first"):
        elfs.compute_embeddings(dataset, key="elfs", overwrite=True)
    assert dataset.count("elfs_embedding") == len(dataset)  # refused: nothing changed
    dataset.delete_sample_field("elfs_embedding")
    report = elfs.compute_embeddings(dataset, key="elfs")
    assert report["n_computed"] == len(dataset) and report["n_reused"] == 0
    more = elfs.select_more(dataset, budget_count=10)
    assert len(more.selected_ids) == 10 and not set(more.selected_ids) & set(first.selected_ids)


def test_rounds_whose_recorded_embeddings_are_gone_use_the_keys_current_ones(dataset):
    """Audit 'regress3' #2: with the field the coreset was selected on deleted, its rounds were
    refused for good (no later stage changes the recorded field), and the fix named mode=, which
    select_more does not take."""
    dataset.clone_sample_field("elfs_embedding", "user_vecs")
    elfs.compute_pseudo_labels(
        dataset, embeddings_field="user_vecs", n_clusters=3, clustering="kmeans"
    )
    first = elfs.select_coreset(dataset, budget_count=10, mode="typical")
    dataset.delete_sample_field("user_vecs")
    with pytest.raises(elfs.ElfsInputError, match="user_vecs") as caught:
        elfs.select_more(dataset, budget_count=5)
    assert "mode=" not in str(caught.value)
    elfs.compute_pseudo_labels(dataset, n_clusters=3, clustering="kmeans")  # on elfs_embedding
    more = elfs.select_more(dataset, budget_count=5)
    assert any("'user_vecs' this key's coreset was selected on is gone" in n for n in more.notices)
    assert dataset.load_run_results("elfs_round2").embeddings_field == "elfs_embedding"
    assert not set(more.selected_ids) & set(first.selected_ids)


def test_a_round_whose_run_was_deleted_still_keeps_its_samples_out(dataset):
    """Audit 'typdown' #4: with round 2's run deleted (dataset.delete_run) and round 3 kept,
    round 4 picked samples still tagged for round 2, without a word. Audit 'regress3' #3: with
    the latest round's run deleted, the next round took its number and was refused over its
    tag; the fixes offered lost the exclusion."""
    elfs.select_coreset(dataset, budget_count=20, mode="typical")
    second = elfs.select_more(dataset, budget_count=30)
    third = elfs.select_more(dataset, budget_count=10)
    dataset.delete_run("elfs_round2")
    fourth = elfs.select_more(dataset, budget_count=30)
    assert fourth.round == 4
    assert not set(fourth.selected_ids) & (set(second.selected_ids) | set(third.selected_ids))
    (notice,) = [n for n in fourth.notices if "elfs_round2" in n]
    assert notice.startswith("30 samples carry the tag 'elfs_round2' of round 2")
    dataset.delete_run("elfs_round4")  # the latest round
    fifth = elfs.select_more(dataset, budget_count=10)
    assert fifth.round == 5 and not set(fifth.selected_ids) & set(fourth.selected_ids)
    assert any("tag 'elfs_round4' of round 4" in n for n in fifth.notices)


def test_a_coreset_without_scores_records_no_score_and_says_a_given_one_is_unused(dataset):
    """Audit 'typdown' #5: the run and the panel's parameters said score=aum for a selection
    that read none, and select_more(score='contrastive') was recorded without a word."""
    coreset = elfs.select_coreset(dataset, budget_count=10, mode="typical")
    more = elfs.select_more(dataset, budget_count=5, score="contrastive")
    assert any(n.startswith("score='contrastive' is not used") for n in more.notices)
    assert coreset.score is None and more.score is None  # as recorded (audit 'regress3' #7)
    params = run_summary.summarize_run(dataset).params
    assert "score" not in params["coreset"] and "score" not in params["round2"]
    assert params["coreset"]["mode"] == "typical" and "marks_fields" not in params["coreset"]
    elfs.compute_pseudo_labels(dataset, n_clusters=3, clustering="kmeans")
    elfs.compute_difficulty(dataset, epochs=2)
    assert run_summary.summarize_run(dataset).histogram.score == "aum"


def test_a_scored_typical_selection_whose_embeddings_are_gone_says_how_to_get_them_back(dataset):
    """Both paths of typical selection (with scores and without) refuse a deleted embeddings
    field with one message naming the field, the key and the ways back."""
    elfs.run_pipeline(dataset, budget_count=10, mode="typical", **FAST)
    dataset.delete_sample_field("elfs_embedding")
    with pytest.raises(elfs.ElfsInputError) as refused:
        elfs.select_coreset(dataset, budget_count=5, mode="typical")
    message = str(refused.value)
    assert "'elfs_embedding'" in message and "not on this dataset (renamed or deleted)" in message
    assert "run compute_embeddings again with key 'elfs'" in message
    assert "mode='window' or mode='ccs'" in message
