"""The whole pipeline with one key: embeddings -> pseudo-labels -> difficulty -> coreset -> plot.

Each stage is run through its own module with a config built from the pipeline's parameters
(the stage defaults from `fiftyone_elfs.params` for the rest); the pipeline only checks the data
once up front and splits the progress bar.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from fiftyone_elfs import dataset_io, runs
from fiftyone_elfs.dataset_io import SampleCollection
from fiftyone_elfs.progress import ProgressFn, sub_progress
from fiftyone_elfs.stages import (
    StageConfig,
    difficulty,
    embeddings,
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
    embeddings_field: str | None
    visualize: bool
    seed: int
    temi_params: dict[str, Any] | None
    num_workers: int


def stages_of(config: PipelineConfig) -> list[str]:
    """The stages a pipeline run writes (each taken as a lease for the whole run)."""
    stages = [pseudo_labels.STAGE, difficulty.STAGE, "coreset"]
    if config.embeddings_field is None:
        stages.insert(0, embeddings.STAGE)
    if config.visualize:
        stages.append(plot.STAGE)
    return stages


def preflight(samples: SampleCollection, values: dict[str, Any]) -> None:
    """The cheap data checks an App form repeats as the user types."""
    pseudo_labels.preflight(samples, values)


def _check_outputs(samples: SampleCollection, config: PipelineConfig) -> None:
    """Every stage's ownership check up front, so that a name the key may not write (the
    user's own field, tag or view of that name) stops the pipeline before its first write."""
    names = runs.PipelineNames(config.key)
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


def _run(
    samples: SampleCollection, config: PipelineConfig, progress: ProgressFn | None
) -> selection.CoresetResult:
    """`run`'s stages, in order."""
    from fiftyone_elfs.selection import resolve_budget

    n = dataset_io.require_nonempty(samples)
    resolve_budget(n, budget_count=config.budget_count, budget_fraction=config.budget_fraction)
    pseudo_labels.check_n_clusters(config.n_clusters, n)
    pseudo_labels.check_temi_params(config.temi_params)
    if config.embeddings_field is not None:
        dataset_io.read_embeddings(samples, config.embeddings_field)  # usable, before any write
    _check_outputs(samples, config)

    common = dict(key=config.key, seed=config.seed)
    if config.embeddings_field is None:
        embeddings.run(
            samples,
            embeddings.EmbeddingsConfig.with_defaults(
                key=config.key, model=config.model, num_workers=config.num_workers
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
        sub_progress(progress, 0.8, 0.9 if config.visualize else 0.98, "difficulty"),
    )
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
    )
    if config.visualize:
        plot.run(
            samples,
            plot.VisualizationConfig.with_defaults(
                **common, embeddings_field=config.embeddings_field
            ),
            sub_progress(progress, 0.9, 0.99, "embedding plot"),
        )
    if progress is not None:
        progress(1.0, f"selected {len(result.selected_ids)} samples")
    logger.info("Pipeline '%s' done: %d of %d selected", config.key, result.budget, result.n_pool)
    return result
