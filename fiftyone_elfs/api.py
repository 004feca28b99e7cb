"""The public Python API: one function per pipeline stage, the whole pipeline, and key management.

Each function is a documented signature and one line: `params.public` checks every argument
against the function's parameter table in `fiftyone_elfs.params` (which also writes the Args
section of the docstrings below), then the body builds the stage's config and runs the stage in
`fiftyone_elfs.stages` (read arrays through `dataset_io`, run the algorithm, record a FiftyOne
run). Options after `samples` are keyword-only.
"""

from __future__ import annotations

from typing import Any

import fiftyone as fo

from fiftyone_elfs import dataset_io, leases, params, runs
from fiftyone_elfs.checkpoint_folders import checkpoint_dir_for
from fiftyone_elfs.dataset_io import SampleCollection
from fiftyone_elfs.difficulty.cnn_proxy import DEFAULT_CNN_WIDTH
from fiftyone_elfs.difficulty.contrastive import DEFAULT_CONTRASTIVE_EPOCHS
from fiftyone_elfs.embeddings.encoders import DEFAULT_ENCODER
from fiftyone_elfs.faults import watch_progress
from fiftyone_elfs.params import public
from fiftyone_elfs.progress import ProgressFn
from fiftyone_elfs.stages import (
    contrastive,
    difficulty,
    embeddings,
    leftovers,
    pipeline,
    pseudo_labels,
    record,
)
from fiftyone_elfs.stages import embedding_shards as shards
from fiftyone_elfs.stages import visualization as plot
from fiftyone_elfs.stages.selection import CoresetConfig, CoresetResult
from fiftyone_elfs.stages.selection import select_coreset as _select_coreset
from fiftyone_elfs.stages.selection_rounds import RoundConfig
from fiftyone_elfs.stages.selection_rounds import select_more as _select_more

__all__ = [
    "CoresetResult",
    "checkpoint_dir_for",
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
]

# The choices of a few parameters, under the names earlier versions exported.
CLUSTERING_METHODS = params.CLUSTERING.choices
PROXIES = params.PROXY.choices
VISUALIZATION_METHODS = params.OPERATIONS["compute_visualization"].param("layout_method").choices
ZOO_PREFIX = embeddings.ZOO_PREFIX


@public("compute_embeddings")
def compute_embeddings(
    samples: SampleCollection,
    *,
    key: str = "elfs",
    model: str = DEFAULT_ENCODER,
    embeddings_field: str | None = None,
    image_size: int | None = None,
    adapt_steps: int = 0,
    seed: int = 0,
    batch_size: int = 64,
    num_workers: int | None = None,
    overwrite: bool = False,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Embeds every image of the collection with a frozen encoder into a vector field.

    The later stages cluster and score these vectors. Samples that already have an embedding
    from the same model are reused (an interrupted run resumes); unreadable images are skipped
    and listed in the run's results. A field holding values this key did not compute is
    refused; `adapt_steps` adapts the encoder first (`fiftyone_elfs.stages.pool_adaptation`).

    Returns:
        n_samples; n_computed (embedded by this call), n_resumed (read back from the chunks an
        interrupted call or the shards stored), n_reused (already in the field) and n_skipped
        (unreadable), which add up to n_samples; and the skipped images (id, path, reason).
    """
    config = embeddings.EmbeddingsConfig.from_arguments(locals())
    with record.guard(samples, key, [embeddings.STAGE]):
        return embeddings.run(samples, config, watch_progress(embeddings.STAGE, progress))


@public("embed_shard")
def embed_shard(
    samples: SampleCollection,
    shard: int,
    n_shards: int,
    *,
    key: str = "elfs",
    model: str = DEFAULT_ENCODER,
    image_size: int | None = None,
    adapt_steps: int = 0,
    seed: int = 0,
    batch_size: int = 64,
    num_workers: int | None = None,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Embeds one shard of the images without an embedding, for sharded runs on several workers.

    The images are split into `n_shards` near-equal parts; this call embeds part `shard` into
    the database's chunk store (resuming from the chunks an interrupted call stored) and writes
    nothing to the dataset. The shards run as delegated operations on any machines sharing the
    database (see `fiftyone_elfs.sharding`); `compute_embeddings` (or the pipeline) with the
    same key, model, image size and adaptation then writes the field from the stored chunks.

    Returns:
        shard, n_shards, n_samples (the shard's), n_computed (embedded by this call), n_resumed
        (stored before), n_skipped (unreadable), and last: True for the shard that finished.
    """
    config = shards.ShardConfig.from_arguments(locals())
    dataset_id = dataset_io.dataset_id(samples)
    with leases.hold(dataset_id, key, [f"{embeddings.STAGE}_shard{shard}"]):
        return shards.run_shard(samples, config, watch_progress(embeddings.STAGE, progress))


@public("compute_pseudo_labels")
def compute_pseudo_labels(
    samples: SampleCollection,
    *,
    key: str = "elfs",
    n_clusters: int = 10,
    clustering: str = "temi",
    embeddings_field: str | None = None,
    seed: int = 0,
    temi_params: dict[str, Any] | None = None,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Clusters the embeddings into pseudo-labels, the classes the difficulty proxy learns.

    Stored as "<key>_pseudo_label" (label "cluster_<k>", confidence = cluster probability).
    ``method=`` is the deprecated name of ``clustering=``.

    When TEMI's selected head stays close to the uniform assignment (its labels would be
    arbitrary; seen at 1,000 clusters with the CPU defaults) the samples are labelled by k-means
    instead, with a logged warning and the reason recorded as ``fallback``.

    Returns:
        n_samples, cluster_sizes, clustering_used, trust and, for TEMI, best_head, head_losses,
        mean_confidence and, when k-means stood in, fallback (the reason, one sentence).
    """
    config = pseudo_labels.PseudoLabelsConfig.from_arguments(locals())
    with record.guard(samples, key, [pseudo_labels.STAGE]):
        return pseudo_labels.run(samples, config, watch_progress(pseudo_labels.STAGE, progress))


@public("compute_difficulty")
def compute_difficulty(
    samples: SampleCollection,
    *,
    key: str = "elfs",
    embeddings_field: str | None = None,
    proxy: str = "mlp",
    cnn_params: dict[str, Any] | None = None,
    epochs: int | None = None,
    label_field: str | None = None,
    seed: int = 0,
    num_workers: int | None = None,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Trains a proxy on the pseudo-labels and stores each sample's AUM, forgetting and EL2N.

    How hard a sample is for the proxy to learn ranks it for selection. ``proxy="mlp"`` trains
    on the embeddings (fast); ``proxy="cnn"`` trains a CNN from scratch on the images as the
    paper does, checkpointing every epoch under `checkpoint_dir_for` (an interrupted run resumes
    when called again). With `label_field` (labels loaded back from annotators) the proxy
    trains on the true labels where they exist and, elsewhere, on the classes a linear probe
    fitted to them predicts (with fewer than 2 labeled classes, each cluster's majority class),
    for the next labeling round.

    Returns:
        n_samples, n_epochs, seconds, resumed_from_epoch, n_true_labels, targets, n_classes
        and the mean of each score.
    """
    config = difficulty.DifficultyConfig.from_arguments(locals())
    with record.guard(samples, key, [difficulty.STAGE]):
        return difficulty.run(samples, config, watch_progress(difficulty.STAGE, progress))


@public("compute_contrastive_scores")
def compute_contrastive_scores(
    samples: SampleCollection,
    *,
    key: str = "elfs",
    epochs: int = DEFAULT_CONTRASTIVE_EPOCHS,
    image_size: int = 32,
    width: int = DEFAULT_CNN_WIDTH,
    contrastive_method: str = "simclr",
    batch_size: int = 256,
    seed: int = 0,
    num_workers: int | None = None,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Trains SimCLR (or MoCo) on the images and stores each sample's summed view similarity.

    Ju et al.'s label-free score: views a network finds hard to match are informative. Writes
    "<key>_contrastive" (low = informative); select on it with
    ``select_coreset(..., score="contrastive")``, which keeps the lowest. Resumable: training
    checkpoints every epoch under `checkpoint_dir_for`. ``method=`` is the deprecated name of
    ``contrastive_method=``.

    Returns:
        n_samples, n_epochs, seconds, resumed_from_epoch and the mean similarity per epoch.
    """
    config = contrastive.ContrastiveConfig.from_arguments(locals())
    with record.guard(samples, key, [contrastive.STAGE]):
        return contrastive.run(samples, config, watch_progress(contrastive.STAGE, progress))


@public("select_coreset")
def select_coreset(
    samples: SampleCollection,
    *,
    budget_count: int | None = None,
    budget_fraction: float | None = None,
    mode: str = "auto",
    beta: float | None = None,
    score: str = "aum",
    seed: int = 0,
    key: str = "elfs",
    tag: str | None = None,
) -> CoresetResult:
    """Selects the coreset from a difficulty score: cut the beta hardest, then keep the budget.

    The hardest samples are cut because that is where the pseudo-labels are wrong; beta=None
    uses the label-free rule (`fiftyone_elfs.selection.label_free_beta`). Of the rest, the
    budget is either the double-end window (the next samples in rank order; ``mode="window"``)
    or a coverage-centric draw evenly across the remaining difficulty range (``mode="ccs"``,
    seeded by ``seed``). ``mode="typical"`` uses no score and no cut: the pool's embeddings (the
    pseudo-labels' embeddings field) are split into budget k-means cells and the most typical
    sample of each is kept (the densest among the cell's own members; TypiClust,
    `fiftyone_elfs.selection.typical_select`); it needs only the key's embeddings
    (`compute_embeddings`): on a key without scores its candidates are the samples with an
    embedding, and its rounds keep to them. ``mode="auto"`` (the
    default) chooses by the pseudo-labels' recorded trust (`fiftyone_elfs.selection.
    resolve_mode`; the result's ``mode_reason`` says which and why). The coreset is tagged
    (default "<key>_coreset"; a ``tag`` of the form of another key's, "<any>_coreset" or
    "<any>_round<k>", is refused), saved as the view "<key>-coreset" and each scored sample's region
    (dropped_hard / coreset / dropped_easy for the window, not_drawn for CCS and typical) is
    stored in "<key>_coreset_region"; a re-run replaces all three.

    Returns:
        a `CoresetResult`: the selected ids, the pool size, the rule and beta, and why.
    """
    config = CoresetConfig.from_arguments(locals())
    with record.guard(samples, key, ["coreset"]):
        return _select_coreset(samples, config)


@public("select_more")
def select_more(
    samples: SampleCollection,
    *,
    budget_count: int | None = None,
    budget_fraction: float | None = None,
    key: str = "elfs",
    label_field: str | None = None,
    beta: float | None = None,
    score: str | None = None,
) -> CoresetResult:
    """The next labeling round: `budget` more samples, never one already selected or labeled.

    Continues key `key` after `select_coreset` (round 1), with the coreset's rule: the
    double-end window recomputed for the cumulative budget minus the excluded ones, so the
    rounds add up to one selection with the combined budget; for a CCS coreset, a CCS draw
    from the samples neither cut nor excluded; for a typical coreset, the most typical free sample
    of each of the largest k-means cells that hold no selected or labeled sample (``beta`` is
    refused there: that rule makes no cut). ``beta`` unset keeps the beta the coreset was
    selected with if you set one, else the label-free rule is applied to the cumulative
    budget. Tagged "<key>_round<k>", saved as
    "<key>-round<k>", recorded as its own run. `budget_fraction` is a share of the scored pool
    (for a typical coreset selected without scores, of the samples with an embedding). To
    let returned labels improve the ranking, re-run ``compute_difficulty(...,
    label_field=...)`` before this.

    Returns:
        a `CoresetResult` with ``round`` = k.
    """
    config = RoundConfig.from_arguments(locals())
    with record.guard(samples, key, ["rounds"]):
        return _select_more(samples, config)


@public("compute_visualization")
def compute_visualization(
    samples: SampleCollection,
    *,
    key: str = "elfs",
    embeddings_field: str | None = None,
    layout_method: str = "umap",
    brain_key: str | None = None,
    pca_dims: int = 50,
    seed: int = 0,
    progress: ProgressFn | None = None,
) -> str:
    """Lays the embeddings out in 2-D and registers the layout as a FiftyOne Brain run.

    The App's Embeddings panel then plots it and colours the points by any field:
    "<key>_pseudo_label", each "<key>_<score>" and "<key>_coreset_region". ``method=`` is the
    deprecated name of ``layout_method=``.

    Returns:
        the brain key.
    """
    config = plot.VisualizationConfig.from_arguments(locals())
    with record.guard(samples, key, [plot.STAGE]):
        return plot.run(samples, config, progress)


@public("run_pipeline")
def run_pipeline(
    samples: SampleCollection,
    *,
    budget_count: int | None = None,
    budget_fraction: float | None = None,
    n_clusters: int = 10,
    clustering: str = "temi",
    key: str = "elfs",
    model: str = DEFAULT_ENCODER,
    adapt_steps: int = 0,
    embeddings_field: str | None = None,
    mode: str = "auto",
    beta: float | None = None,
    score: str = "aum",
    proxy: str = "mlp",
    epochs: int | None = None,
    cnn_params: dict[str, Any] | None = None,
    temi_params: dict[str, Any] | None = None,
    seed: int = 0,
    num_workers: int | None = None,
    visualize: bool = True,
    progress: ProgressFn | None = None,
) -> CoresetResult:
    """Runs embeddings -> pseudo-labels -> difficulty -> selection (-> embedding plot), one key.

    Pass `embeddings_field` to use embeddings you already have (the embedding stage is then
    skipped). All parameters, the budget and the embeddings are checked before anything is
    computed or written. ``proxy_epochs=`` is the deprecated name of ``epochs=``.

    The pseudo-labels, difficulty scores and coreset (fields, tag, saved view, runs) are
    written together once the coreset is drawn, in one pass over the samples: a failure or
    interruption before that leaves none of them (the embeddings are written as they are
    computed, the plot after the coreset).

    Returns:
        the `CoresetResult` of the selection.
    """
    config = pipeline.PipelineConfig.from_arguments(locals())
    with record.guard(samples, key, pipeline.stages_of(config)):
        return pipeline.run(samples, config, watch_progress("pipeline", progress))


def list_keys(dataset: fo.Dataset) -> dict[str, list[str]]:
    """Maps each ELFS key on the dataset to the stages it has run, in pipeline order.

    A stage's run counts under its run key ``<key>_<stage>`` only: one renamed with
    FiftyOne's ``dataset.rename_run`` is your record, listed by ``dataset.list_runs()``."""
    dataset = dataset_io.records_of(dataset)
    dataset_io.refresh_records(dataset)
    return runs.list_pipelines(dataset)


def delete_key(dataset: SampleCollection, key: str) -> list[str]:
    """Deletes every stage run of `key` with the fields, tags, saved views and brain runs it
    created, and what the key left elsewhere; returns the stages whose runs or leftovers were
    deleted, in pipeline order.

    Also removed: what interrupted runs of the key left behind (journaled names, embedding
    chunks stored by an interrupted or sharded embedding run, the checkpoints of interrupted
    TEMI, CNN-proxy and contrastive trainings); and the key's leftovers, outputs of its stages
    that no run of the key records any more: copied by ``view.clone()`` (which copies fields
    and tags but no runs), or left by FiftyOne's ``dataset.delete_run()`` /
    ``dataset.rename_run()`` on one of its runs. Of those, only what ELFS can prove it wrote:
    fields of the key's names (or that a renamed run lists) that still carry its stage's mark,
    the key's saved views with the description and tag ELFS saved, the key's tags such a view
    shows (or the coreset's tag on exactly the samples the leftover region field puts in the
    coreset), and the layout a renamed run lists if it predates that run. A run renamed with
    ``dataset.rename_run`` is kept (your record). Until then, a rerun of a stage takes over
    that stage's leftover fields (replacing them) but refuses its leftover tags and views,
    naming this fix. Nothing else is touched: a field you re-created or renamed, a tag or view
    of yours, a saved view or plot you made again under a name a run records (one named like
    the key's that ELFS cannot prove is its own is kept, with a warning naming it; the proofs:
    `fiftyone_elfs.output_proof`). (FiftyOne's ``dataset.delete_run(run_key)`` deletes one run
    record; this removes a whole key.) Given a view, the key is deleted from the view's whole
    dataset."""
    from fiftyone_elfs.app_colors import forget_app_colors
    from fiftyone_elfs.difficulty.checkpoints import remove_key_checkpoints

    names = runs.validate_key(key)
    # a view names its dataset: the key's runs, fields and tags are the dataset's
    dataset = dataset_io.records_of(dataset)
    dataset_io.refresh_records(dataset)  # runs a delegated worker recorded since loading
    stages = [*runs.list_pipelines(dataset).get(names.key, []), *runs.STAGES]
    with record.guard(dataset, names.key, stages):
        embeddings.forget_key(dataset_io.dataset_id(dataset), names.key)
        remove_key_checkpoints(lambda name: checkpoint_dir_for(dataset, name), names.key)
        with leases.commit_turn(dataset_io.dataset_id(dataset)):  # the schema, as a commit
            dataset_io.refresh_records(dataset)
            deleted = runs.delete_pipeline(dataset, names.key)
            deleted += leftovers.delete_leftovers(dataset, names)
            forget_app_colors(dataset, names.key)
            return runs.sort_stages(deleted)


delete_run = params.deprecated_alias(delete_key, "delete_run")
list_runs = params.deprecated_alias(list_keys, "list_runs")
