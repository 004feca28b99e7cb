"""fiftyone-elfs: label-free coreset selection (ELFS) for FiftyOne datasets.

The public API mirrors the pipeline: compute_embeddings -> compute_pseudo_labels ->
compute_difficulty -> select_coreset -> export_coreset, or run_pipeline for all of it; then
send_to_label_studio -> load_from_label_studio -> select_more for the next labeling budget.
"""

from fiftyone_elfs.annotation import (
    AnnotationSummary,
    annotation_summary,
    delete_label_studio_run,
    list_annotation_runs,
    load_from_label_studio,
    send_to_label_studio,
)
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
    select_more,
)
from fiftyone_elfs.errors import ElfsInputError
from fiftyone_elfs.export import coreset_view, export_coreset

__all__ = [
    "AnnotationSummary",
    "CoresetResult",
    "ElfsInputError",
    "annotation_summary",
    "compute_contrastive_scores",
    "compute_difficulty",
    "compute_embeddings",
    "compute_pseudo_labels",
    "compute_visualization",
    "coreset_view",
    "delete_label_studio_run",
    "delete_run",
    "export_coreset",
    "list_annotation_runs",
    "list_runs",
    "load_from_label_studio",
    "run_pipeline",
    "select_coreset",
    "select_more",
    "send_to_label_studio",
]
__version__ = "0.1.0"
