"""Sharded embeddings stage: one part of the images embedded into the chunk store by one worker.

Several delegated-operation workers run the shards in parallel (`fiftyone_elfs.sharding` says
how the last one queues the rest); each resumes from the chunks it stored before. With pool
adaptation every shard embeds with the key's one set of adapted weights
(`fiftyone_elfs.stages.pool_adaptation`: the first shard to need them trains and stores them).
Nothing is written to the dataset: `compute_embeddings` (or the pipeline) with the same key,
model and image size writes the field from the chunk store.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fiftyone_elfs import dataset_io, runs, sharding
from fiftyone_elfs.dataset_io import SampleCollection
from fiftyone_elfs.errors import ElfsInputError
from fiftyone_elfs.progress import ProgressFn, first_report_progress
from fiftyone_elfs.stages import StageConfig, embeddings, pool_adaptation, record


@dataclass(frozen=True)
class ShardConfig(StageConfig):
    """The parameters of `fiftyone_elfs.embed_shard` (documented there)."""

    OPERATION = "embed_shard"

    shard: int
    n_shards: int
    key: str
    model: str
    image_size: int | None  # None: the encoder's own (`encoders.default_image_size`)
    adapt_steps: int
    seed: int
    batch_size: int
    num_workers: int | None


def run_shard(
    samples: SampleCollection, config: ShardConfig, progress: ProgressFn | None = None
) -> dict[str, Any]:
    """Embeds shard `config.shard` of the images without an embedding into the chunk store
    (nothing is written to the dataset), then marks it done; ``last`` in the result is True
    for the one shard that completed the set (see `fiftyone_elfs.sharding`)."""
    config = embeddings.with_image_size(config)
    names = runs.PipelineNames(config.key)
    dataset_io.require_nonempty(samples)
    dataset_io.require_images(samples)
    if config.model.startswith(embeddings.ZOO_PREFIX):
        raise ElfsInputError(
            "Sharded embeddings need an encoder of this package (FiftyOne zoo models write "
            "the field themselves). Fix: model='efficientnet-lite0' or 'timm:<name>'.",
            param="model",
        )
    pool_adaptation.check(config)
    dataset = dataset_io.dataset_of(samples)
    field_name = embeddings.key_field(samples, names)
    record.check_ownership(samples, names, embeddings.STAGE, fields=[field_name])
    previous = runs.stage_config(dataset, names, embeddings.STAGE)
    if embeddings.replacing(previous, field_name, config):  # all, for the replacing run
        ids, paths = dataset_io.sample_ids_and_paths(samples)
    else:
        ids, paths = dataset_io.ids_and_paths_without(samples, field_name)
    start, stop = sharding.shard_bounds(len(ids), config.shard, config.n_shards)
    full = embeddings.EmbeddingsConfig.with_defaults(
        key=config.key,
        model=config.model,
        image_size=config.image_size,
        adapt_steps=config.adapt_steps,
        seed=config.seed,
        batch_size=config.batch_size,
        num_workers=config.num_workers,
    )
    # drawn at the first report, once the encoder is built (a failure to build shows no bar)
    report = progress or first_report_progress(f"embeddings shard {config.shard}")
    _, failures, n_resumed = embeddings.embed_in_stored_chunks(
        dataset_io.dataset_id(dataset),
        ids[start:stop],
        paths[start:stop],
        full,
        report,
        lambda: dataset_io.sample_ids_and_paths(samples)[1],
        keep_vectors=False,
    )
    report(1.0, "done")
    last = sharding.mark_done(
        dataset_io.dataset_id(dataset), config.key, config.shard, config.n_shards
    )
    return {
        "shard": config.shard,
        "n_shards": config.n_shards,
        "n_samples": stop - start,
        "n_computed": stop - start - n_resumed - len(failures),
        "n_resumed": n_resumed,
        "n_skipped": len(failures),
        "last": last,
    }
