"""FiftyOne operators: one per pipeline stage, the whole pipeline, the export, and the shards of
a sharded embedding run (`queue_sharded_pipeline`).

Each class only names its operator, its parameter table (`fiftyone_elfs.params`) and the library
function it calls; the form, ``execute`` and ``__call__`` come from `base.ElfsOperator`.
"""

from __future__ import annotations

import functools
from typing import Any

import fiftyone.operators as foo
import fiftyone.operators.types as types

from fiftyone_elfs import api, coreset_tag, dataset_io, export, params, runs, sharding
from fiftyone_elfs.errors import ElfsInputError
from fiftyone_elfs.plugin.base import ElfsOperator
from fiftyone_elfs.plugin.delegation import CNN_DELEGATE_ABOVE, DELEGATE_ABOVE
from fiftyone_elfs.stages import (
    difficulty,
    pipeline,
    pool_adaptation,
    pseudo_labels,
    record,
    selection,
    visualization,
)
from fiftyone_elfs.stages import embeddings as embedding_stage

__all__ = ["CNN_DELEGATE_ABOVE", "DELEGATE_ABOVE", "OPERATORS"]


def embeddings_preflight(samples: Any, values: dict[str, Any]) -> None:
    """The form's cheap checks of compute_embeddings and embed_shard: the shard, an encoder
    name that can load, an embeddings field the key may write."""
    shard, n_shards = values.get("shard"), values.get("n_shards")
    if shard is not None and n_shards is not None and shard >= n_shards:
        raise ElfsInputError(
            f"shard={shard} is not one of the {n_shards} shards. Fix: pass a shard in "
            f"0 .. {n_shards - 1} (shard must be in 0 .. n_shards - 1).",
            param="shard",
        )
    if values.get("model"):
        embedding_stage.check_model_name(values["model"])
        pool_adaptation.check_adaptable(values["model"], values.get("adapt_steps") or 0)
    if values.get("key") and "n_shards" not in values:  # compute_embeddings writes the field
        names = runs.PipelineNames(values["key"])
        given = values.get("embeddings_field")
        try:
            record.check_ownership(
                samples, names, embedding_stage.STAGE, fields=[given or names.embeddings_field]
            )
        except ElfsInputError as e:
            blame = e.param or ("embeddings_field" if given else "key")
            raise ElfsInputError(str(e), param=blame) from None


def _notes(result: selection.CoresetResult) -> str:
    """The result's notices after a final label (an App user sees nothing else of them)."""
    notes = "".join(f" {notice}" for notice in result.notices)
    return f".{notes}" if notes else ""


def _embedding_counts(result: dict[str, Any]) -> str:
    """The other counts of an embedding result, those that are not zero: "(12 resumed, ...)"."""
    counts = [
        f"{result[f'n_{what}']} {what}"
        for what in ("resumed", "reused", "skipped")
        if result.get(f"n_{what}")
    ]
    return f" ({', '.join(counts)})" if counts else ""


class ComputeEmbeddings(ElfsOperator):
    name = "compute_embeddings"
    label = "ELFS: compute embeddings"
    description = "Embed every image with a frozen pretrained encoder"
    operation = "compute_embeddings"
    function = staticmethod(api.compute_embeddings)
    checks = (embeddings_preflight,)
    returns = "a dict: n_samples, n_computed, n_resumed, n_reused, n_skipped, skipped"
    usage = 'foo.get_operator("@fiftyone-elfs/elfs/compute_embeddings")(dataset, key="elfs")'

    def done_label(self, result: dict[str, Any], kwargs: dict[str, Any]) -> str:
        return f"embedded {result['n_computed']} images{_embedding_counts(result)}"


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
    checks = (difficulty.preflight,)
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
    checks = (selection.preflight,)
    returns = "a CoresetResult: selected_ids, budget, beta, beta_reason, ..."
    usage = 'foo.get_operator("@fiftyone-elfs/elfs/select_coreset")(dataset, budget_fraction=0.1)'

    def done_label(self, result: selection.CoresetResult, kwargs: dict[str, Any]) -> str:
        return f"selected {result.budget} samples{_notes(result)}"


class ExportCoreset(ElfsOperator):
    name = "export_coreset"
    label = "ELFS: export coreset for annotation"
    description = "Media + CSV manifest, FiftyOne dataset, Label Studio tasks"
    form_title = "ELFS: export coreset"
    operation = "export_coreset"
    function = staticmethod(export.export_coreset)
    checks = (export.preflight,)
    check_target = False  # its own check names the coreset missing from the view
    returns = "a dict: output kind -> path"
    usage = 'foo.get_operator("@fiftyone-elfs/elfs/export_coreset")(dataset, "/tmp/to_label")'

    def extra_inputs(self, ctx: Any, inputs: types.Object) -> None:
        """Says so when the coreset's tag is on samples its run did not choose, and when the
        target holds only part of the coreset."""
        samples = ctx.target_view() if self.on_view else ctx.dataset
        key = ctx.params.get("key") or params.KEY.default
        try:
            notice = coreset_tag.not_selected_notice(samples, key=key)
            part = coreset_tag.outside_view_notice(samples, key=key)
        except ElfsInputError:  # no coreset under that key: the form's check says so
            return
        if notice:
            inputs.view("not_selected", types.Warning(label=notice))
        if part:
            inputs.view("part_of_coreset", types.Warning(label=part))

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
        return f"selected {result.budget} samples{_notes(result)}"


PLUGIN = "@fiftyone-elfs/elfs"


@functools.wraps(api.embed_shard)
def _embed_shard_then_queue_the_rest(samples: Any, shard: int, n_shards: int, **kwargs: Any):
    """`api.embed_shard`; the shard that completes the set queues, as a delegated operation, the
    pipeline `queue_sharded_pipeline` planned, or else (shards queued on their own)
    compute_embeddings with the shards' key and model: either writes the field from the
    stored chunks."""
    result = api.embed_shard(samples, shard, n_shards, **kwargs)
    if result["last"]:
        key = kwargs.get("key", params.KEY.default)
        dataset_id = dataset_io.dataset_id(samples)
        planned = sharding.planned_pipeline(dataset_id, key)
        if planned is None:
            embedding = ("key", "model", "image_size", "batch_size")
            operator, planned = ComputeEmbeddings, {k: kwargs[k] for k in embedding if k in kwargs}
        else:
            operator = RunElfsPipeline
        try:
            foo.get_operator(f"{PLUGIN}/{operator.name}")(samples, delegate=True, **planned)
        except ElfsInputError as e:  # e.g. a field of the key's names made since the plan
            sharding.release(dataset_id, key)
            raise ElfsInputError(
                f"{e} The {n_shards} shards are embedded and stored; once that is fixed, rerun "
                f"this shard (fiftyone delegated rerun <its operation id>): it then queues "
                f"{operator.name} with the stored vectors.",
                param=e.param,
            ) from None
        except BaseException:
            sharding.release(dataset_id, key)
            raise
        result["queued"] = operator.name
    return result


class EmbedShard(ElfsOperator):
    name = "embed_shard"
    label = "ELFS: embed one shard"
    description = "Embed one part of the images (a sharded run on several delegated workers)"
    operation = "embed_shard"
    function = staticmethod(_embed_shard_then_queue_the_rest)
    checks = (embeddings_preflight,)
    returns = "a dict: shard, n_shards, n_computed, n_resumed, n_skipped, last"
    usage = (
        'foo.get_operator("@fiftyone-elfs/elfs/embed_shard")(dataset, 0, 4, delegate=True)'
        "  # or queue_sharded_pipeline(dataset, 4, ...)"
    )

    def done_label(self, result: dict[str, Any], kwargs: dict[str, Any]) -> str:
        queued = {RunElfsPipeline.name: "the pipeline", ComputeEmbeddings.name: "the field's write"}
        then = f", then queued {queued[result['queued']]}" if result.get("queued") else ""
        counts = _embedding_counts(result)
        return f"shard {result['shard']}: embedded {result['n_computed']} images{counts}{then}"


def queue_sharded_pipeline(samples: Any, n_shards: int, **pipeline_kwargs: Any) -> list[Any]:
    """Queues `n_shards` delegated `embed_shard` operations and plans `run_pipeline` with
    `pipeline_kwargs` (checked now) to be queued by the shard that finishes last.

    Run ``fiftyone delegated launch`` on any machines that share this database
    (``FIFTYONE_DATABASE_URI``) and have the plugin (``FIFTYONE_PLUGINS_DIR``): they embed the
    shards in parallel, then one of them runs the pipeline. Returns the queued operations.
    """
    operation = params.OPERATIONS["run_pipeline"]
    checked = operation.validate(operation.rename_deprecated(pipeline_kwargs))
    key = checked.get("key", params.KEY.default)
    samples = dataset_io.with_every_field(samples)
    # refused now, not by the last worker after every shard has embedded
    dataset_io.require_images(samples)
    pipeline.check_before_writing(samples, pipeline.PipelineConfig.with_defaults(**checked))
    # the checked values: plain Python (a numpy scalar is accepted, and MongoDB stores none)
    sharding.plan(dataset_io.dataset_id(samples), key, n_shards, checked)
    shared = ("key", "model", "adapt_steps", "seed")  # the shards' encoder is the pipeline's
    embed = {name: checked[name] for name in shared if name in checked}
    operator = foo.get_operator(f"{PLUGIN}/{EmbedShard.name}")
    return [operator(samples, shard, n_shards, delegate=True, **embed) for shard in range(n_shards)]


OPERATORS = (
    ComputeEmbeddings,
    ComputePseudoLabels,
    ComputeDifficulty,
    ComputeVisualization,
    ComputeContrastiveScores,
    SelectCoreset,
    ExportCoreset,
    RunElfsPipeline,
    EmbedShard,
)
