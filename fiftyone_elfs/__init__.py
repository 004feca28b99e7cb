"""fiftyone-elfs: label-free coreset selection (ELFS) for FiftyOne datasets.

The public API mirrors the pipeline: compute_embeddings -> compute_pseudo_labels ->
compute_difficulty -> select_coreset -> export_coreset, or run_pipeline for all of it; then
send_to_label_studio -> load_from_label_studio -> select_more for the next labeling budget.

Names are imported on first use (module ``__getattr__``), so ``import fiftyone_elfs.selection``
and the other array packages load neither FiftyOne nor torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "fiftyone_elfs.annotation": (
        "AnnotationSummary",
        "annotation_summary",
        "delete_label_studio_run",
        "list_annotation_runs",
        "load_from_label_studio",
        "send_to_label_studio",
    ),
    "fiftyone_elfs.api": (
        "CoresetResult",
        "compute_contrastive_scores",
        "compute_difficulty",
        "compute_embeddings",
        "compute_pseudo_labels",
        "compute_visualization",
        "delete_key",
        "delete_run",
        "embed_shard",
        "list_keys",
        "list_runs",
        "run_pipeline",
        "select_coreset",
        "select_more",
    ),
    "fiftyone_elfs.coreset_tag": ("coreset_view", "not_selected_ids"),
    "fiftyone_elfs.errors": ("ElfsInputError",),
    "fiftyone_elfs.export": ("export_coreset",),
    "fiftyone_elfs.run_summary": ("RunSummary", "summarize_run"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_MODULE_OF)
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # imported once
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
