"""Visualization stage: a 2-D layout of the embeddings as a FiftyOne Brain run.

The App's Embeddings panel plots it and colours the points by any field ("<key>_pseudo_label",
each score, "<key>_coreset_region"). Algorithm: `fiftyone_elfs.embeddings.projection.layout_2d`
(PCA, then UMAP fitted on at most 50,000 samples, the rest placed by their neighbours); FiftyOne
Brain only stores the points (``points=``, its "manual" method), so it neither recomputes them
nor logs advice about embeddings fields that an ELFS user cannot act on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from fiftyone_elfs import dataset_io, runs
from fiftyone_elfs.dataset_io import SampleCollection
from fiftyone_elfs.errors import ElfsInputError
from fiftyone_elfs.progress import ProgressFn, terminal_progress, ticking
from fiftyone_elfs.stages import StageConfig, embeddings, record

STAGE = "visualization"

#: The fewest samples a 2-D layout is computed for (UMAP's neighbour graph needs a few).
MIN_LAYOUT_SAMPLES = 4


@dataclass(frozen=True)
class VisualizationConfig(StageConfig):
    """The parameters of `fiftyone_elfs.compute_visualization` (documented there)."""

    OPERATION = "compute_visualization"

    key: str
    embeddings_field: str | None
    layout_method: str
    brain_key: str | None
    pca_dims: int
    seed: int


def brain_key_for(key: str, layout_method: str, brain_key: str | None) -> str:
    """The brain key of the layout: the given one, else "<key>_umap" (or "<key>_pca")."""
    if brain_key:
        return brain_key
    return (
        runs.PipelineNames(key).brain_key if layout_method == "umap" else f"{key}_{layout_method}"
    )


def preflight(samples: SampleCollection, values: dict[str, Any]) -> None:
    """The cheap data checks an App form repeats as the user types: embeddings, a free brain
    key."""
    from fiftyone_elfs.stages.pseudo_labels import require_embeddings

    require_embeddings(samples, values)
    if values.get("brain_key") and values.get("key"):
        names = runs.PipelineNames(values["key"])
        record.check_ownership(samples, names, STAGE, brain_runs=[values["brain_key"]])


@dataclass(frozen=True)
class PlotInput:
    """What a layout is computed from (`prepare`): the brain key, the embeddings field, and
    the ids and embeddings of the samples that have one."""

    brain_key: str
    field_name: str
    ids: list[str]
    X: np.ndarray


def check_pipeline_plot(n: int, what: str = "samples") -> None:
    """Refuses run_pipeline's plot (visualize=True) for fewer than `MIN_LAYOUT_SAMPLES` samples,
    naming visualize=False: checked before the pipeline's first write. `what`: the samples
    counted ("samples", "samples with embeddings in 'f'")."""
    if n < MIN_LAYOUT_SAMPLES:
        raise ElfsInputError(
            f"Only {n} {what}: the embedding plot (visualize=True, the default) needs at least "
            f"{MIN_LAYOUT_SAMPLES}. Fix: pass visualize=False (the selection needs no plot), or "
            f"run on at least {MIN_LAYOUT_SAMPLES} samples.",
            param="visualize",
        )


def prepare(
    samples: SampleCollection, config: VisualizationConfig, in_pipeline: bool = False
) -> PlotInput:
    """Reads the embeddings and checks the layout can be computed and registered
    (`in_pipeline`: for run_pipeline, whose refusal names visualize=False)."""
    names = runs.PipelineNames(config.key)
    brain_key = brain_key_for(config.key, config.layout_method, config.brain_key)
    field_name = config.embeddings_field or embeddings.key_field(samples, names)
    ids, X = dataset_io.read_embeddings(samples, field_name)
    if in_pipeline:
        check_pipeline_plot(len(ids), f"samples have embeddings in '{field_name}'")
    if len(ids) < MIN_LAYOUT_SAMPLES:
        raise ElfsInputError(
            f"Only {len(ids)} samples have embeddings in '{field_name}'; a 2-D layout needs at "
            f"least {MIN_LAYOUT_SAMPLES}. Fix: compute embeddings on a larger view."
        )
    record.check_ownership(samples, names, STAGE, brain_runs=[brain_key])
    fix = "pass visualize=False" if in_pipeline else "compute the plot of the whole dataset"
    dataset_io.check_layout(samples, ids, key_names(samples, names), fix)
    return PlotInput(brain_key, field_name, list(ids), X)


def key_names(samples: SampleCollection, names: runs.PipelineNames) -> tuple[str, ...]:
    """Patterns of the names the key writes (its fields, its coreset's and rounds' tags), which
    a view may select by (`dataset_io.layout_base`)."""
    dataset = dataset_io.dataset_of(samples)
    coreset = runs.stage_config(dataset, names, "coreset")
    exact = {
        embeddings.key_field(samples, names),
        names.pseudo_label_field,
        names.region_field,
        names.tag,
        getattr(coreset, "tag", None) or names.tag,
        *(names.score_field(score) for score in runs.SELECTION_SCORES),
    }
    return (*sorted(re.escape(name) for name in exact), rf"{re.escape(names.key)}_round\d+")


def layout(
    plot_input: PlotInput, config: VisualizationConfig, progress: ProgressFn | None = None
) -> np.ndarray:
    """The [N, 2] points (`layout_2d`); arrays only, no database (safe in another thread)."""
    from fiftyone_elfs.embeddings.projection import layout_2d

    return layout_2d(
        plot_input.X,
        config.layout_method,
        pca_dims=config.pca_dims,
        seed=config.seed,
        progress=progress,
    )


def record_layout(
    samples: SampleCollection,
    config: VisualizationConfig,
    plot_input: PlotInput,
    points: np.ndarray,
    progress: ProgressFn | None = None,
) -> str:
    """Registers the points as the key's brain run (replacing its previous one)."""
    umap = config.layout_method == "umap"
    brain_key = plot_input.brain_key
    record.record(
        samples,
        runs.PipelineNames(config.key),
        STAGE,
        params={
            "brain_key": brain_key,
            "embeddings_field": plot_input.field_name,
            "layout_method": config.layout_method,
            "pca_dims": config.pca_dims if umap else None,
            "seed": config.seed,
        },
        results={"n_points": len(plot_input.ids)},
        outputs=record.Outputs(
            # FiftyOne Brain's "manual" method stores the given points as they are
            layouts={
                brain_key: record.Layout(
                    plot_input.ids,
                    points,
                    "manual",
                    {"points": points},
                    owned=key_names(samples, runs.PipelineNames(config.key)),
                )
            }
        ),
    )
    if progress is not None:
        progress(1.0, f"embedding plot '{brain_key}' of {len(plot_input.ids)} samples")
    return brain_key


def run(
    samples: SampleCollection, config: VisualizationConfig, progress: ProgressFn | None = None
) -> str:
    """Registers the layout (replacing this key's previous one); returns its brain key."""
    plot_input = prepare(samples, config)
    report = progress or terminal_progress("embedding plot")

    def layout_progress(fraction: float, message: str) -> None:
        report(0.95 * fraction, message)

    with ticking(layout_progress) as alive:  # UMAP is silent while it runs: show it is alive
        points = layout(plot_input, config, alive)
    return record_layout(samples, config, plot_input, points, report)
