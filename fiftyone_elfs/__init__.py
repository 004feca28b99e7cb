"""fiftyone-elfs: label-free coreset selection (ELFS) for FiftyOne datasets.

The public API mirrors the pipeline: compute_embeddings -> compute_pseudo_labels ->
compute_difficulty -> select_coreset -> export_coreset, or run_pipeline for all of it.
"""

from fiftyone_elfs.api import (
    CoresetResult,
    compute_contrastive_scores,
    compute_difficulty,
    compute_embeddings,
    compute_pseudo_labels,
    compute_visualization,
    delete_run,
    list_runs,
    run_pipeline,
    select_coreset,
)
from fiftyone_elfs.errors import ElfsInputError
from fiftyone_elfs.export import coreset_view, export_coreset

__all__ = [
    "CoresetResult",
    "ElfsInputError",
    "compute_contrastive_scores",
    "compute_difficulty",
    "compute_embeddings",
    "compute_pseudo_labels",
    "compute_visualization",
    "coreset_view",
    "delete_run",
    "export_coreset",
    "list_runs",
    "run_pipeline",
    "select_coreset",
]
__version__ = "0.1.0"
