"""What a new user meets in scripts and the App, outside the browser (issue 17):

- an operator called from a script shows its progress in the terminal and hands back what the
  library function returned;
- the embedding plot keeps its progress alive while UMAP runs and prints none of FiftyOne
  Brain's or umap's advice that an ELFS user cannot act on;
- the App colour scheme of a run's region and pseudo-label fields is the ELFS panel's.

(The rendered colours in the real App are checked by tests/test_app_browser.py.)
"""

from __future__ import annotations

import logging
import re
import threading
import time
import warnings

import fiftyone as fo
import fiftyone.operators as foo
import numpy as np
import pytest

import fiftyone_elfs as elfs
from fiftyone_elfs import app_colors
from fiftyone_elfs.plugin.panel import REGION_STYLE, cluster_traces, histogram_traces
from fiftyone_elfs.progress import terminal_progress, ticking
from fiftyone_elfs.run_summary import summarize_run
from fiftyone_elfs.stages.selection import CoresetResult

PLUGIN = "@fiftyone-elfs/elfs"


def _pipeline(dataset, **kwargs):
    return elfs.run_pipeline(
        dataset,
        budget_fraction=0.2,
        n_clusters=10,
        clustering="kmeans",
        embeddings_field="elfs_embedding",
        epochs=3,
        visualize=False,
        **kwargs,
    )


# --------------------------------------------------------------------------- item 5: scripts


def test_operator_call_shows_terminal_progress_and_returns_the_library_result(dataset, capfd):
    view = dataset.take(120, seed=0)
    execution = foo.get_operator(f"{PLUGIN}/run_elfs_pipeline")(
        view,
        budget_count=24,
        n_clusters=6,
        clustering="kmeans",
        embeddings_field="elfs_embedding",
        epochs=2,
        visualize=False,
    )
    result = execution.result
    assert isinstance(result, CoresetResult)
    assert len(result.selected_ids) == 24 and set(result.selected_ids) <= set(view.values("id"))
    assert sorted(result.selected_ids) == sorted(dataset.match_tags("elfs_coreset").values("id"))
    err = capfd.readouterr().err
    assert "ELFS: select a coreset (whole pipeline)" in err  # the bar's title
    assert "pseudo-labels:" in err and "difficulty:" in err  # the stages as they ran
    assert "selected 24 samples" in err  # the final label
    assert "100%" in err


def test_terminal_bar_draws_every_stage_even_when_stages_are_faster_than_its_redraw_rate(capfd):
    # tqdm redraws at most every 0.1 s; a fast stage (CI's small runs) used to leave no trace
    report = terminal_progress("bar")
    stages = ["embeddings", "pseudo-labels", "difficulty", "selection"]
    for i, stage in enumerate(stages):
        for step in range(5):
            report((i * 5 + step + 1) / 21, f"{stage}: step {step}")
    report(1.0, "done")
    err = capfd.readouterr().err
    assert all(f"{stage}: step 0" in err for stage in stages)


def test_a_failed_library_call_closes_its_bar_marked_failed(dataset, monkeypatch, capfd):
    """A stage that fails part way leaves no bar open at the fraction it reached."""
    import fiftyone_elfs.pseudo_labels as pseudo_labels

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt  # as a user's Ctrl+C inside k-means

    monkeypatch.setattr(pseudo_labels, "kmeans_pseudo_labels", interrupted)
    capfd.readouterr()
    with pytest.raises(KeyboardInterrupt):
        elfs.compute_pseudo_labels(
            dataset,
            key="fails",
            n_clusters=3,
            clustering="kmeans",
            embeddings_field="elfs_embedding",
        )
    err = capfd.readouterr().err
    bars = [line for line in re.split(r"[\r\n]", err) if "pseudo-labels (kmeans)" in line]
    assert bars and bars[-1].rstrip().endswith("k-means (failed)"), err[-2000:]


def test_an_encoder_that_cannot_be_built_shows_no_embeddings_bar(dataset, monkeypatch, capfd):
    """The embeddings bar was drawn, then closed as failed, before the error of an encoder
    that could not be built (nothing had started); now it is drawn at its first report. A
    stage that fails after that still closes its bar marked failed."""
    import fiftyone_elfs.embeddings as embeddings

    def no_encoder(*args, **kwargs):
        raise RuntimeError("weights unreadable")

    monkeypatch.setattr(embeddings, "load_encoder", no_encoder)
    capfd.readouterr()
    with pytest.raises(RuntimeError, match="weights unreadable"):
        elfs.compute_embeddings(dataset.limit(5), key="nobar")
    assert "embeddings:" not in capfd.readouterr().err
    monkeypatch.undo()

    def interrupted(paths, encoder, progress, **kwargs):  # a Ctrl+C after the first report
        progress(0.4, "2 images")
        yield 0, np.zeros((2, encoder.dim), dtype=np.float32), {}
        raise KeyboardInterrupt

    monkeypatch.setattr(embeddings, "iter_embedded_chunks", interrupted)
    with pytest.raises(KeyboardInterrupt):
        elfs.compute_embeddings(dataset.limit(5), key="nobar")
    err = capfd.readouterr().err
    bars = [line for line in re.split(r"[\r\n]", err) if line.startswith("embeddings:")]
    assert bars and bars[-1].rstrip().endswith("(failed)"), err[-2000:]


def test_operator_call_returns_each_stage_result(dataset):
    brain_key = foo.get_operator(f"{PLUGIN}/compute_visualization")(
        dataset, embeddings_field="elfs_embedding", layout_method="pca", brain_key="plot"
    ).result
    assert brain_key == "plot" and "plot" in dataset.list_brain_runs()


# --------------------------------------------------------------------------- item 6: noise


def test_ticking_repeats_the_last_label_with_elapsed_seconds_while_a_step_is_silent():
    calls: list[tuple[float, str]] = []
    enough = threading.Event()

    def record(fraction: float, label: str) -> None:
        calls.append((fraction, label))
        if len(calls) >= 4:
            enough.set()

    with ticking(record, interval=0.01) as alive:
        alive(0.1, "UMAP on all 300 samples")
        assert enough.wait(60), calls  # the silent step: only the ticker reports
    n_after = len(calls)
    assert calls[0] == (0.1, "UMAP on all 300 samples")
    assert all(f == 0.1 for f, _ in calls)  # the fraction is never guessed
    assert all(re.fullmatch(r"UMAP on all 300 samples \(\d+ s\)", label) for _, label in calls[1:])
    time.sleep(0.1)
    assert len(calls) == n_after  # the ticker stopped with the step


def test_a_cancel_raised_by_the_callback_in_the_ticker_reaches_the_calling_thread():
    # It was printed by threading's excepthook and swallowed: the step went on and its result
    # (the UMAP layout) was registered although the caller had cancelled.
    class Cancel(Exception):
        pass

    cancelled = threading.Event()

    def cancel_on_repeat(fraction: float, label: str) -> None:
        if label.endswith(" s)"):
            cancelled.set()
            raise Cancel

    with pytest.raises(Cancel):
        with ticking(cancel_on_repeat, interval=0.01) as alive:
            alive(0.1, "UMAP")
            assert cancelled.wait(60)
            after = "the step went on"  # a silent step cannot be stopped; its end is
    assert after
    cancelled.clear()
    with pytest.raises(Cancel):  # a step that reports again is stopped at that report
        with ticking(cancel_on_repeat, interval=0.01) as alive:
            alive(0.1, "UMAP")
            assert cancelled.wait(60)  # the ticker holds the lock until it has kept the error
            alive(0.5, "more")
            raise AssertionError("not stopped at the report")


def test_embedding_plot_reports_progress_and_prints_no_brain_or_umap_advice(dataset, caplog):
    calls: list[tuple[float, str]] = []
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.INFO):
        warnings.simplefilter("always")
        brain_key = elfs.compute_visualization(
            dataset,
            embeddings_field="elfs_embedding",
            progress=lambda f, label: calls.append((f, label)),
        )
    assert brain_key == "elfs_umap"
    labels = [label for _, label in calls]
    assert any(label.startswith("UMAP on all 300 samples") for label in labels)
    fractions = [f for f, _ in calls]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert 0 < max(f for f, label in calls if label.startswith("UMAP")) < 1  # past the PCA
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "without an embeddings field" not in logged
    assert not [w for w in caught if "n_jobs" in str(w.message)]
    # FiftyOne stores the layout computed by ELFS as it is (no second UMAP run by Brain).
    info = dataset.get_brain_info(brain_key)
    assert info.config.method == "manual"
    assert dataset.load_brain_results(brain_key).points.shape == (len(dataset), 2)


# --------------------------------------------------------------------------- item 4: colours


def _scheme_entry(dataset, path):
    scheme = dataset.app_config.color_scheme
    entries = [dict(f) for f in scheme.fields if dict(f)["path"] == path]
    assert len(entries) == 1, scheme.fields
    return entries[0]


def test_selection_gives_the_app_the_panels_region_and_cluster_colours(dataset):
    dataset.app_config.color_scheme = fo.ColorScheme(
        fields=[{"path": "ground_truth", "fieldColor": "#123456"}]
    )
    dataset.save()
    _pipeline(dataset)
    dataset.reload()
    region = _scheme_entry(dataset, "elfs_coreset_region")
    shown = {v["value"]: v["color"] for v in region["valueColors"]}
    assert shown == {r: colour for r, (_, colour) in REGION_STYLE.items()}
    # the panel's histogram draws each region in the same colour
    summary = summarize_run(dataset, "elfs")
    drawn = {t["name"]: t["marker"]["color"] for t in histogram_traces(summary.histogram)}
    assert sorted(drawn.values()) == sorted(shown.values())
    # each pseudo-label cluster has one colour, the same in the App and the panel's chart
    pseudo = _scheme_entry(dataset, "elfs_pseudo_label")
    app = {v["value"]: v["color"] for v in pseudo["valueColors"]}
    assert set(app) == set(dataset.distinct("elfs_pseudo_label.label"))
    assert len(set(app.values())) == len(app)
    traces = cluster_traces(summary.clusters)
    for trace in traces:
        assert trace["marker"]["color"] == [app[label] for label in trace["x"]]
    # the user's own colours for other fields are kept; values are coloured by value
    assert _scheme_entry(dataset, "ground_truth")["fieldColor"] == "#123456"
    assert dataset.app_config.color_scheme.color_by == "value"


def test_running_again_replaces_the_keys_entries_instead_of_adding_more(dataset):
    _pipeline(dataset)
    _pipeline(dataset, key="other")
    _pipeline(dataset)
    dataset.reload()
    paths = [dict(f)["path"] for f in dataset.app_config.color_scheme.fields]
    assert sorted(paths) == sorted(
        ["elfs_coreset_region", "elfs_pseudo_label", "other_coreset_region", "other_pseudo_label"]
    )


def test_cluster_colours_follow_the_natural_order_of_the_labels():
    colours = app_colors.cluster_colors([f"cluster_{i}" for i in (10, 2, 0, 1)])
    assert list(colours) == ["cluster_0", "cluster_1", "cluster_2", "cluster_10"]
    assert list(colours.values()) == list(app_colors.CLUSTER_PALETTE[:4])


def test_a_bar_written_to_a_log_redraws_a_relabelled_step_seldom(capfd):
    # capfd's stderr is not a terminal: 500 relabels of one step (TEMI's epochs) in a second
    # must not become 500 lines of a log; a new stage and the end still show
    report = terminal_progress("bar")
    for epoch in range(500):
        report(0.5, f"TEMI epoch {epoch + 1}/500: best head loss -0.{epoch:03d}")
    report(0.6, "difficulty: training")
    report(1.0, "done")
    err = capfd.readouterr().err
    assert err.count("TEMI epoch") <= 3
    assert "TEMI epoch 1/500" in err and "difficulty: training" in err
    assert "done" in err and "100%" in err
