"""The whole pipeline with one key: embeddings -> pseudo-labels -> difficulty -> coreset -> plot.

Each stage is run through its own module with a config built from the pipeline's parameters
(the stage defaults from `fiftyone_elfs.params` for the rest); the pipeline checks the data
once up front and splits the progress bar.

The pseudo-labels, difficulty and coreset runs are held (`record.HeldRuns`: each stage reads
the previous one's outputs from memory) and written together once the coreset is drawn, in one
pass over the samples instead of three (at 1.28M samples each pass is about two minutes). A
failure or interruption before that write leaves none of the three; the embeddings (first) and
the plot (last) are written on their own.

Provenance: every stage is computed afresh from the one before, so the held runs record
consistent versions (the pseudo-labels the embeddings version they clustered, the difficulty
the pseudo-labels version it learned); before writing them, the pipeline checks that the
embeddings were not replaced meanwhile by another run (`_require_unchanged_embeddings`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from fiftyone_elfs import dataset_io, runs
from fiftyone_elfs.dataset_io import SampleCollection
from fiftyone_elfs.errors import ElfsInputError
from fiftyone_elfs.progress import ProgressFn, sub_progress
from fiftyone_elfs.stages import (
    StageConfig,
    difficulty,
    embeddings,
    pool_adaptation,
    pseudo_labels,
    record,
    selection,
)
from fiftyone_elfs.stages import visualization as plot

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PipelineConfig(StageConfig):
    """The parameters of `fiftyone_elfs.run_pipeline` (documented there)."""

    OPERATION = "run_pipeline"

    key: str
    budget_count: int | None
    budget_fraction: float | None
    mode: str
    beta: float | None
    score: str
    n_clusters: int
    clustering: str
    proxy: str
    cnn_params: dict[str, Any] | None
    epochs: int | None
    model: str
    adapt_steps: int
    embeddings_field: str | None
    visualize: bool
    seed: int
    temi_params: dict[str, Any] | None
    num_workers: int | None


def stages_of(config: PipelineConfig) -> list[str]:
    """The stages a pipeline run writes (each taken as a lease for the whole run)."""
    stages = [pseudo_labels.STAGE, difficulty.STAGE, "coreset"]
    if config.embeddings_field is None:
        stages.insert(0, embeddings.STAGE)
    if config.visualize:
        stages.append(plot.STAGE)
    return stages


def preflight(samples: SampleCollection, values: dict[str, Any]) -> None:
    """The cheap data checks an App form repeats as the user types: the arguments, the
    embeddings field or model, and every name the key will write (`_check_outputs`)."""
    selection.check_mode_and_beta(values.get("mode"), values.get("beta"))
    n = dataset_io.count(samples)
    if values.get("n_clusters") is not None:
        pseudo_labels.check_n_clusters(values["n_clusters"], n)
    if values.get("visualize", True):
        plot.check_pipeline_plot(n)
    if values.get("embeddings_field"):
        field = values["embeddings_field"]
        pool_adaptation.check_not_given_vectors(values.get("adapt_steps") or 0, field)
        dataset_io.require_field(samples, field, "embeddings_field", "embeddings field")
    elif values.get("model"):
        embeddings.check_model_name(values["model"])
        pool_adaptation.check_adaptable(values["model"], values.get("adapt_steps") or 0)
    if values.get("key"):
        visualize = bool(values.get("visualize", True))
        config = PipelineConfig.with_defaults(key=values["key"], visualize=visualize)
        _check_outputs(samples, config)


def _check_outputs(samples: SampleCollection, config: PipelineConfig) -> None:
    """Every stage's ownership check up front, so that a name the key may not write (the
    user's own field, tag or view of that name) stops the pipeline before its first write; so
    does a coreset with labeling rounds built on it."""
    names = runs.PipelineNames(config.key)
    selection.require_no_later_rounds(dataset_io.dataset_of(samples), names)
    record.check_ownership(samples, names, pseudo_labels.STAGE, fields=[names.pseudo_label_field])
    scores = [names.score_field(s) for s in runs.SCORE_NAMES]
    record.check_ownership(samples, names, difficulty.STAGE, fields=scores)
    record.check_ownership(
        samples,
        names,
        "coreset",
        fields=[names.region_field],
        tags=[names.tag],
        views=[names.saved_view],
    )
    if config.visualize:
        brain_key = plot.brain_key_for(config.key, "umap", None)
        record.check_ownership(samples, names, plot.STAGE, brain_runs=[brain_key])


def run(
    samples: SampleCollection, config: PipelineConfig, progress: ProgressFn | None = None
) -> selection.CoresetResult:
    """Runs every stage; everything that can be checked is checked before the first write.

    The embeddings are read from the database once for all stages (`reuse_embeddings`).
    """
    with dataset_io.reuse_embeddings():
        return _run(samples, config, progress)


def _require_unchanged_embeddings(samples: SampleCollection, held: record.HeldRuns) -> None:
    """Refuses to write the held runs if the embeddings they were computed from were replaced
    while the pipeline ran (another key's compute_embeddings on the field it reads, which this
    run's leases do not cover); nothing of them is written then."""
    pseudo = held.get(pseudo_labels.STAGE)
    if pseudo is None:
        return
    field_name = pseudo.params.get("embeddings_field")
    made_from = pseudo.params.get("embeddings_version")
    current = embeddings.vectors_version(samples, field_name)
    if made_from is None or current is None or made_from == current:
        return
    raise ElfsInputError(
        f"The embeddings in '{field_name}' were recomputed by another run while this pipeline "
        "computed its pseudo-labels, scores and coreset from them; none of those was written. "
        "Fix: run run_pipeline again once that run has finished."
    )


def _write_held_and_plot(
    samples: SampleCollection,
    config: PipelineConfig,
    held: record.HeldRuns,
    progress: ProgressFn | None,
) -> None:
    """Writes the held runs (pseudo-labels, difficulty, coreset) in one pass over the samples
    and colours the key's fields in the App (with the pseudo-labels just written); with
    `visualize`, computes the layout while the database merges (`record.write_runs`'s
    `alongside`: at 1.28M samples both take one to two minutes, on different cores), then
    registers it."""
    from fiftyone_elfs.app_colors import apply_app_colors

    names = runs.PipelineNames(config.key)
    _require_unchanged_embeddings(samples, held)
    plot_config = plot.VisualizationConfig.with_defaults(
        key=config.key, seed=config.seed, embeddings_field=config.embeddings_field
    )
    plot_input = plot.prepare(samples, plot_config, in_pipeline=True) if config.visualize else None
    points: list[Any] = []
    if progress is not None:
        also = "; the embedding plot alongside" if config.visualize else ""
        progress(0.92, f"writing: the pseudo-labels, scores and coreset{also}")
    record.write_runs(
        samples,
        names,
        list(held.runs.values()),
        alongside=None
        if plot_input is None
        else lambda: points.append(plot.layout(plot_input, plot_config)),
        before_commit=lambda: _require_unchanged_embeddings(samples, held),  # as stored then
    )
    pseudo = held.get(pseudo_labels.STAGE)
    labels = pseudo.outputs.labels[names.pseudo_label_field][1] if pseudo is not None else None
    apply_app_colors(dataset_io.dataset_of(samples), config.key, labels)
    if plot_input is not None:
        report = sub_progress(progress, 0.98, 0.99, "embedding plot")
        if report is not None:
            report(0.0, "registering the layout")
        plot.record_layout(samples, plot_config, plot_input, points[0], report)


def check_before_writing(samples: SampleCollection, config: PipelineConfig) -> None:
    """Everything about the arguments and the data that can be checked before the first stage
    writes (also where a sharded run is queued): the budget, the clusters, the mode and beta,
    the plot's minimum, given embeddings, and every name the key will write."""
    from fiftyone_elfs.selection import resolve_budget

    n = dataset_io.require_nonempty(samples)
    if config.embeddings_field is None:  # the images are embedded: videos etc. are refused first
        dataset_io.require_images(samples)
    resolve_budget(n, budget_count=config.budget_count, budget_fraction=config.budget_fraction)
    pseudo_labels.check_n_clusters(config.n_clusters, n)
    pseudo_labels.check_temi_params(config.temi_params, config.clustering)
    difficulty.check_cnn_params(config.cnn_params, config.proxy)
    selection.check_mode_and_beta(config.mode, config.beta)
    if config.embeddings_field is not None:  # usable, before any write
        pool_adaptation.check_not_given_vectors(config.adapt_steps, config.embeddings_field)
        ids, _ = dataset_io.read_embeddings(samples, config.embeddings_field)
        if config.visualize:
            field = config.embeddings_field
            plot.check_pipeline_plot(len(ids), f"samples have embeddings in '{field}'")
    else:
        embeddings.check_model_name(config.model)
        pool_adaptation.check(config)
        if config.visualize:
            plot.check_pipeline_plot(n)
    if config.visualize:  # a plot stored by ids: its size is known before any stage runs
        names = runs.PipelineNames(config.key)
        owned = plot.key_names(samples, names)
        dataset_io.check_layout(samples, None, owned, "pass visualize=False")
    _check_outputs(samples, config)


def _not_candidates_notice(
    samples: SampleCollection, config: PipelineConfig, n_embedded: int
) -> list[str]:
    """A notice when samples of the run had no embeddings, so could not be selected (images
    that could not be read): the App and the run's result show it, not only the log."""
    n = dataset_io.count(samples)
    if n_embedded >= n:
        return []
    if config.embeddings_field is not None:  # the user's vectors: ELFS never writes there
        field = config.embeddings_field
        where = f"have no vector in '{field}'"
        fix = f"Fix: give them vectors in '{field}', then run the pipeline again."
    else:
        run_key = runs.PipelineNames(config.key).run_key(embeddings.STAGE)
        where = (
            f"have no embeddings: their images could not be read (listed in "
            f"dataset.load_run_results('{run_key}').skipped)"
        )
        fix = (
            "Fix the files and run the pipeline again with this key to include them (only they "
            "are embedded)."
        )
    return [
        f"{n - n_embedded} of the {n} samples {where}, so none of them could be selected. {fix}"
    ]


def _run(
    samples: SampleCollection, config: PipelineConfig, progress: ProgressFn | None
) -> selection.CoresetResult:
    """`run`'s stages, in order."""
    check_before_writing(samples, config)
    common = dict(key=config.key, seed=config.seed)
    # the pseudo-labels, scores and regions are held and written together, in one pass
    held = record.HeldRuns()
    if config.embeddings_field is None:
        embeddings.run(
            samples,
            embeddings.EmbeddingsConfig.with_defaults(
                key=config.key,
                model=config.model,
                adapt_steps=config.adapt_steps,
                seed=config.seed,
                num_workers=config.num_workers,
            ),
            sub_progress(progress, 0.0, 0.5, "embeddings"),
        )
    pseudo_labels.run(
        samples,
        pseudo_labels.PseudoLabelsConfig.with_defaults(
            **common,
            n_clusters=config.n_clusters,
            clustering=config.clustering,
            embeddings_field=config.embeddings_field,
            temi_params=config.temi_params,
        ),
        sub_progress(progress, 0.5, 0.8, "pseudo-labels"),
        held,
    )
    difficulty.run(
        samples,
        difficulty.DifficultyConfig.with_defaults(
            **common,
            proxy=config.proxy,
            embeddings_field=config.embeddings_field,
            epochs=config.epochs,
            cnn_params=config.cnn_params,
            num_workers=config.num_workers,
        ),
        sub_progress(progress, 0.8, 0.9, "difficulty"),
        held,
    )
    if progress is not None:
        progress(0.9, "coreset: drawing the selection")
    result = selection.select_coreset(
        samples,
        selection.CoresetConfig.with_defaults(
            key=config.key,
            budget_count=config.budget_count,
            budget_fraction=config.budget_fraction,
            mode=config.mode,
            beta=config.beta,
            score=config.score,
            seed=config.seed,
        ),
        held,
    )
    _write_held_and_plot(samples, config, held, progress)
    n_embedded = held.get(pseudo_labels.STAGE).results["n_samples"]  # clustered: embedded
    result.notices.extend(_not_candidates_notice(samples, config, n_embedded))
    if progress is not None:
        progress(1.0, f"selected {len(result.selected_ids)} samples")
    logger.info("Pipeline '%s' done: %d of %d selected", config.key, result.budget, result.n_pool)
    return result
