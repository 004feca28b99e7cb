"""The whole pipeline with one key: embeddings -> pseudo-labels -> difficulty -> coreset -> plot.

Each stage is run through its own module with a config built from the pipeline's parameters
(the stage defaults from `fiftyone_elfs.params` for the rest); the pipeline only checks the data
once up front and splits the progress bar.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from fiftyone_elfs import dataset_io
from fiftyone_elfs.dataset_io import SampleCollection
from fiftyone_elfs.progress import ProgressFn, sub_progress
from fiftyone_elfs.stages import StageConfig, difficulty, embeddings, pseudo_labels, selection
from fiftyone_elfs.stages import visualization as plot

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PipelineConfig(StageConfig):
    """The parameters of `fiftyone_elfs.run_pipeline` (documented there)."""

    OPERATION = "run_pipeline"

    key: str
    budget_count: int | None
    budget_fraction: float | None
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


def preflight(samples: SampleCollection, values: dict[str, Any]) -> None:
    """The cheap data checks an App form repeats as the user types."""
    pseudo_labels.preflight(samples, values)


def run(
    samples: SampleCollection, config: PipelineConfig, progress: ProgressFn | None = None
) -> selection.CoresetResult:
    """Runs every stage; everything that can be checked is checked before the first write."""
    from fiftyone_elfs.selection import resolve_budget

    n = dataset_io.require_nonempty(samples)
    resolve_budget(n, budget_count=config.budget_count, budget_fraction=config.budget_fraction)
    pseudo_labels.check_n_clusters(config.n_clusters, n)
    pseudo_labels.check_temi_params(config.temi_params)
    if config.embeddings_field is not None:
        dataset_io.read_embeddings(samples, config.embeddings_field)  # usable, before any write

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
            beta=config.beta,
            score=config.score,
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
