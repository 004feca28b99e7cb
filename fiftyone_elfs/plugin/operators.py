"""FiftyOne operators: one per pipeline stage, the whole pipeline and the export.

Each class only names its operator, its parameter table (`fiftyone_elfs.params`) and the library
function it calls; the form, ``execute`` and ``__call__`` come from `base.ElfsOperator`.
"""

from __future__ import annotations

from typing import Any

from fiftyone_elfs import api, export
from fiftyone_elfs.plugin.base import CNN_DELEGATE_ABOVE, DELEGATE_ABOVE, ElfsOperator
from fiftyone_elfs.stages import pipeline, pseudo_labels, selection, visualization

__all__ = ["CNN_DELEGATE_ABOVE", "DELEGATE_ABOVE", "OPERATORS"]


class ComputeEmbeddings(ElfsOperator):
    name = "compute_embeddings"
    label = "ELFS: compute embeddings"
    description = "Embed every image with a frozen pretrained encoder"
    operation = "compute_embeddings"
    function = staticmethod(api.compute_embeddings)
    returns = "a dict: n_computed, n_reused, n_skipped, skipped"
    usage = 'foo.get_operator("@fiftyone-elfs/elfs/compute_embeddings")(dataset, key="elfs")'

    def done_label(self, result: dict[str, Any], kwargs: dict[str, Any]) -> str:
        return f"embedded {result['n_computed']} images ({result['n_skipped']} skipped)"


class ComputePseudoLabels(ElfsOperator):
    name = "compute_pseudo_labels"
    label = "ELFS: compute pseudo-labels"
    description = "Cluster the embeddings into pseudo-labels (TEMI or k-means)"
    operation = "compute_pseudo_labels"
    function = staticmethod(api.compute_pseudo_labels)
    checks = (pseudo_labels.preflight,)
    returns = "a dict: n_samples, cluster_sizes, ..."
    usage = (
        'foo.get_operator("@fiftyone-elfs/elfs/compute_pseudo_labels")'
        '(dataset, n_clusters=10, clustering="kmeans")'
    )

    def done_label(self, result: dict[str, Any], kwargs: dict[str, Any]) -> str:
        return f"{len(result['cluster_sizes'])} clusters of {result['n_samples']} samples"


class ComputeDifficulty(ElfsOperator):
    name = "compute_difficulty"
    label = "ELFS: compute difficulty"
    description = "Train a proxy on the pseudo-labels; store AUM, forgetting and EL2N"
    operation = "compute_difficulty"
    function = staticmethod(api.compute_difficulty)
    returns = "a dict: n_samples, n_epochs, ..."
    usage = (
        'foo.get_operator("@fiftyone-elfs/elfs/compute_difficulty")'
        '(dataset, proxy="cnn", cnn_params={"width": 8}, epochs=5)'
    )

    def done_label(self, result: dict[str, Any], kwargs: dict[str, Any]) -> str:
        return f"scored {result['n_samples']} samples ({result['n_epochs']} epochs)"


class ComputeVisualization(ElfsOperator):
    name = "compute_visualization"
    label = "ELFS: embedding plot"
    description = "2-D UMAP layout of the embeddings for the App's Embeddings panel"
    operation = "compute_visualization"
    function = staticmethod(api.compute_visualization)
    checks = (visualization.preflight,)
    returns = "the brain key of the plot"
    usage = (
        'foo.get_operator("@fiftyone-elfs/elfs/compute_visualization")'
        '(dataset, layout_method="pca", brain_key="layout")'
    )

    def done_label(self, result: str, kwargs: dict[str, Any]) -> str:
        return f"embedding plot '{result}'"


class ComputeContrastiveScores(ElfsOperator):
    name = "compute_contrastive_scores"
    label = "ELFS: contrastive similarity scores"
    description = (
        "Train SimCLR or MoCo on the images; low view similarity marks informative samples"
    )
    form_title = "ELFS: contrastive similarity"
    operation = "compute_contrastive_scores"
    function = staticmethod(api.compute_contrastive_scores)
    returns = "a dict: n_samples, ..."
    usage = (
        'foo.get_operator("@fiftyone-elfs/elfs/compute_contrastive_scores")'
        '(dataset, epochs=15, contrastive_method="moco")'
    )

    def done_label(self, result: dict[str, Any], kwargs: dict[str, Any]) -> str:
        return f"scored {result['n_samples']} samples"


class SelectCoreset(ElfsOperator):
    name = "select_coreset"
    label = "ELFS: select coreset"
    description = "Double-end pruning on difficulty: tag the samples worth labeling"
    operation = "select_coreset"
    function = staticmethod(api.select_coreset)
    returns = "a CoresetResult: selected_ids, budget, beta, beta_reason, ..."
    usage = 'foo.get_operator("@fiftyone-elfs/elfs/select_coreset")(dataset, budget_fraction=0.1)'

    def done_label(self, result: selection.CoresetResult, kwargs: dict[str, Any]) -> str:
        return f"selected {result.budget} samples"


class ExportCoreset(ElfsOperator):
    name = "export_coreset"
    label = "ELFS: export coreset for annotation"
    description = "Media + CSV manifest, FiftyOne dataset, Label Studio tasks"
    form_title = "ELFS: export coreset"
    operation = "export_coreset"
    function = staticmethod(export.export_coreset)
    checks = (export.preflight,)
    returns = "a dict: output kind -> path"
    usage = 'foo.get_operator("@fiftyone-elfs/elfs/export_coreset")(dataset, "/tmp/to_label")'

    def done_label(self, result: dict[str, str], kwargs: dict[str, Any]) -> str:
        return f"exported to {kwargs['export_dir']}"


class RunElfsPipeline(ElfsOperator):
    name = "run_elfs_pipeline"
    label = "ELFS: select a coreset (whole pipeline)"
    description = "Embeddings, pseudo-labels, difficulty and selection in one run"
    form_title = "ELFS: select a coreset"
    operation = "run_pipeline"
    function = staticmethod(api.run_pipeline)
    checks = (pipeline.preflight,)
    returns = "a CoresetResult: selected_ids, budget, beta, beta_reason, ..."
    usage = (
        'foo.get_operator("@fiftyone-elfs/elfs/run_elfs_pipeline")'
        '(dataset, budget_fraction=0.1, proxy="cnn", cnn_params={"width": 8})'
    )

    def done_label(self, result: selection.CoresetResult, kwargs: dict[str, Any]) -> str:
        return f"selected {result.budget} samples"


OPERATORS = (
    ComputeEmbeddings,
    ComputePseudoLabels,
    ComputeDifficulty,
    ComputeVisualization,
    ComputeContrastiveScores,
    SelectCoreset,
    ExportCoreset,
    RunElfsPipeline,
)
