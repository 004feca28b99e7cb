"""Embeddings stage: every image through a frozen encoder into a vector field, resumable.

Resumable twice over: images that already have an embedding from the same model are not
embedded again (unless their file was modified after the run that computed it started), and
while the stage runs each chunk of vectors is stored as soon as it is computed
(`fiftyone_elfs.embedding_chunks`, in the database), so a rerun after an interruption (an
exception, ``kill -9``, a lost machine) embeds only what no chunk holds. The user's field
is filled only when the stage completes, through the record step.

Pool adaptation (``adapt_steps``): the offline encoder is first fine-tuned on the collection's
images, once per key, and every image is embedded with those weights
(`fiftyone_elfs.stages.pool_adaptation`). Sharded runs: `fiftyone_elfs.stages.embedding_shards`.

Replacing (another model, image size or adaptation, ``overwrite=True``): every image is embedded
anew while the old vectors and their run stay as they are; the record step replaces them only
once all the new vectors are computed (as other stages replace their previous run), so a refusal
(no image readable), an error or a Ctrl-C before that leaves them exactly as they were. (A
FiftyOne zoo model writes a field itself: into a scratch field beside the old one,
`zoo_embeddings`.)

Provenance: the run records a ``vectors_version``, new whenever vectors already in the field are
replaced and kept when a rerun only adds the missing ones; the pseudo-labels record the version
they were clustered from (`vectors_version`), so the later stages can tell that the embeddings
changed under them.

Algorithm: `fiftyone_elfs.embeddings` (encoders, batched image embedding).
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from fiftyone_elfs import (
    adapted_weights,
    dataset_io,
    embedding_chunks,
    output_proof,
    runs,
    sharding,
)
from fiftyone_elfs.dataset_io import SampleCollection
from fiftyone_elfs.errors import ElfsInputError
from fiftyone_elfs.faults import kill_point
from fiftyone_elfs.progress import ProgressFn, first_report_progress
from fiftyone_elfs.stages import StageConfig, leftovers, pool_adaptation, record, zoo_embeddings

logger = logging.getLogger(__name__)

STAGE = "embeddings"
ZOO_PREFIX = zoo_embeddings.ZOO_PREFIX


@dataclass(frozen=True)
class EmbeddingsConfig(StageConfig):
    """The parameters of `fiftyone_elfs.compute_embeddings` (documented there)."""

    OPERATION = "compute_embeddings"

    key: str
    model: str
    embeddings_field: str | None
    image_size: int | None  # None: the encoder's own (`encoders.default_image_size`)
    adapt_steps: int  # 0: the encoder as shipped (`pool_adaptation`)
    seed: int
    batch_size: int
    num_workers: int | None
    overwrite: bool


C = TypeVar("C", bound=StageConfig)


def with_image_size(config: C) -> C:
    """The config with its image size resolved (unset: the encoder's own), so that the record,
    the check for a changed model and the chunk store all see the size actually used."""
    if config.image_size is not None:
        return config
    from fiftyone_elfs.embeddings.encoders import default_image_size

    return dataclasses.replace(config, image_size=default_image_size(config.model))


def check_model_name(model: str) -> None:
    """Refuses an encoder name that can never load, before anything is computed (a zoo name,
    'zoo:<name>', against the models FiftyOne's zoo lists; its download is checked when the
    stage runs)."""
    from fiftyone_elfs.embeddings import check_encoder_name

    if model.startswith(ZOO_PREFIX):
        zoo_embeddings.check_zoo_name(model)
    else:
        check_encoder_name(model)


def replacing(previous: Any, field_name: str, config: Any) -> bool:
    """Whether a run of `config` replaces the vectors the key's previous run (`previous`, its
    recorded config or None) holds in `field_name`: another model, image size or adaptation."""
    shape = pool_adaptation.shape
    return (
        previous is not None
        and field_name in (previous.owned_fields or [])
        and (previous.model, previous.image_size, shape(previous))
        != (config.model, config.image_size, shape(config))
    )


def key_field(samples: SampleCollection, names: runs.PipelineNames) -> str:
    """The field the key's embeddings are in: where its embeddings run wrote them (a run given
    `embeddings_field` writes there), else ``<key>_embedding``. The later stages read it when
    no `embeddings_field` is passed, and a rerun of the key writes there again."""
    config = runs.stage_config(dataset_io.dataset_of(samples), names, STAGE)
    return getattr(config, "embeddings_field", None) or names.embeddings_field


def _computed_since(dataset: Any, names: runs.PipelineNames) -> datetime.datetime:
    """When the key's previous embedding run started (its vectors are no older); for runs
    recorded before that was stored, when it was recorded."""
    started = getattr(runs.stage_results(dataset, names, STAGE), "started_at", None)
    if started:
        return datetime.datetime.fromisoformat(started)
    return dataset.get_run_info(names.run_key(STAGE)).timestamp


def run(
    samples: SampleCollection, config: EmbeddingsConfig, progress: ProgressFn | None = None
) -> dict[str, Any]:
    """Embeds the images without an embedding from the same model; returns what was done."""
    check_model_name(config.model)
    pool_adaptation.check(config)
    config = with_image_size(config)
    names = runs.PipelineNames(config.key)
    dataset_io.require_nonempty(samples)
    dataset_io.require_images(samples)
    field_name = config.embeddings_field or key_field(samples, names)
    dataset = dataset_io.dataset_of(samples)

    started = datetime.datetime.now(datetime.timezone.utc)  # the vectors are no older
    previous = runs.stage_config(dataset, names, STAGE)
    owned_before = previous is not None and field_name in previous.owned_fields
    if not owned_before:
        leftovers.refuse_values_not_computed_by(dataset, names, field_name, STAGE)
    record.check_ownership(samples, names, STAGE, fields=[field_name])
    other_model = replacing(previous, field_name, config)
    replaced = owned_before and (config.overwrite or other_model)
    if other_model:
        logger.info(
            "Model changed (%s -> %s): recomputing all embeddings", previous.model, config.model
        )

    if config.overwrite:  # everything anew: the adapted weights too
        embedding_chunks.clear(dataset_io.dataset_id(dataset), config.key)
        adapted_weights.clear(dataset_io.dataset_id(dataset), config.key)
    # replacing: every image anew; the old vectors and run stay until the record step below
    # replaces them (one field holds one model's vectors)
    if replaced:
        ids, paths = dataset_io.sample_ids_and_paths(samples)
    else:
        ids, paths = dataset_io.ids_and_paths_without(samples, field_name)
    changed: list[str] = []  # images rewritten since their vectors were computed: again
    if owned_before and not replaced:
        since = _computed_since(dataset, names)
        changed, changed_paths = dataset_io.files_changed_since(samples, field_name, since)
        ids, paths = ids + changed, paths + changed_paths
    if changed:
        logger.warning("%d images changed on disk since they were embedded", len(changed))
    # kept only while the vectors already there stay (a rerun that adds the missing ones)
    kept_version = getattr(previous, "vectors_version", None) if owned_before else None
    version = (None if replaced or changed else kept_version) or uuid.uuid4().hex
    n_reused = len(samples) - len(ids)
    report = progress or first_report_progress("embeddings")  # (as in run_shard)
    skipped: list[dict[str, str]] = []
    outputs = record.Outputs(written_fields=(field_name,))
    n_resumed = 0
    if ids and config.model.startswith(ZOO_PREFIX):
        zoo_model = zoo_embeddings.load_zoo_model(config.model)  # may refuse: changes nothing
        if replaced:  # FiftyOne writes a field itself: beside the old vectors, swapped in below
            good, vectors, skipped = zoo_embeddings.embed_aside(
                samples, names, STAGE, zoo_model, ids, config.batch_size, field_name
            )
            outputs = record.Outputs(values={field_name: (good, vectors)})
        else:
            skipped = zoo_embeddings.embed(
                samples, names, STAGE, zoo_model, ids, config.batch_size, field_name
            )
    elif ids:
        vectors, failures, n_resumed = embed_in_stored_chunks(
            dataset_io.dataset_id(dataset),
            ids,
            paths,
            config,
            report,
            lambda: dataset_io.sample_ids_and_paths(samples)[1],
        )
        good = [i for i in ids if i in vectors]
        outputs = record.Outputs(values={field_name: (good, [vectors[i] for i in good])})
        skipped = [
            {"id": i, "filepath": p, "reason": failures[i]}
            for i, p in zip(ids, paths, strict=True)
            if i in failures
        ]
    report(1.0, "done")
    if skipped and len(skipped) == len(samples):
        _refuse_all_unreadable(dataset, config.key, skipped)
    if skipped:
        logger.warning(
            "Skipped %d unreadable images (listed in run '%s' results), e.g. %s: %s",
            len(skipped),
            names.run_key(STAGE),
            skipped[0]["filepath"],
            skipped[0]["reason"],
        )
    results = {
        "n_samples": len(samples),
        "n_computed": len(ids) - n_resumed - len(skipped),
        "n_reused": n_reused,
        "n_changed": len(changed),
        "n_resumed": n_resumed,
        "n_skipped": len(skipped),
        "skipped": skipped,
        "started_at": started.isoformat(),
        "adaptation": pool_adaptation.stored_info(dataset_io.dataset_id(dataset), config),
    }
    record.record(
        samples,
        names,
        STAGE,
        params={
            "model": config.model,
            "image_size": config.image_size,
            "adapt_steps": config.adapt_steps,
            "adapt_seed": pool_adaptation.shape(config)[1],
            "embeddings_field": field_name,
            "vectors_version": version,
        },
        results=results,
        outputs=outputs,
        # replacing: the previous run and its field go now, the new vectors in their place;
        # else resumable: the embeddings computed before are kept, the new ones merged in
        replace=replaced,
    )
    embedding_chunks.clear(dataset_io.dataset_id(dataset), config.key)  # now in the field
    sharding.clear(dataset_io.dataset_id(dataset), config.key)
    pool_adaptation.forget_others(dataset_io.dataset_id(dataset), config)  # replaced encoders
    return results


def forget_key(dataset_id: str, key: str) -> None:
    """Removes what the key's embeddings keep outside the dataset: stored chunks, adapted
    weights and a shard plan (`delete_key`)."""
    embedding_chunks.clear(dataset_id, key)
    adapted_weights.clear(dataset_id, key)
    sharding.clear(dataset_id, key)


def vectors_version(samples: SampleCollection, field_name: str) -> str | None:
    """The version of the vectors in `field_name`: the ``vectors_version`` of the ELFS embeddings
    run (of any key) that wrote the field; None when unknown (a field of the user's, a field
    re-created since, or a run recorded before versions were), which no check refuses."""
    dataset = dataset_io.dataset_of(samples)
    owner = runs.owner_of(dataset, "owned_fields", field_name)
    if owner is None or owner[1] != STAGE:
        return None
    config = runs.stage_config(dataset, runs.PipelineNames(owner[0]), STAGE)
    if config is None or not output_proof.still_owned(dataset, config, "owned_fields", field_name):
        return None
    return getattr(config, "vectors_version", None)


def _refuse_all_unreadable(
    dataset: SampleCollection, key: str, skipped: list[dict[str, str]]
) -> None:
    """Not one image could be read: raises, naming the reasons, before anything is recorded
    (the chunk store forgets the failures, so the files are tried again after a fix)."""
    embedding_chunks.clear(dataset_io.dataset_id(dataset), key)
    reasons: dict[str, str] = {}
    for item in skipped:
        reasons.setdefault(item["reason"], item["filepath"])
    examples = "; ".join(f"{path}: {reason}" for reason, path in list(reasons.items())[:3])
    raise ElfsInputError(
        f"None of the {len(skipped)} images could be read (e.g. {examples}). Fix: check that "
        "the samples' filepaths exist on this machine and are images (a dataset made on "
        "another machine, or whose folder moved, points elsewhere: "
        "dataset.set_field('filepath', F('filepath').replace('/old/root', '/new/root')).save() "
        "rewrites the paths)."
    )


def embed_in_stored_chunks(
    dataset_id: str,
    ids: list[str],
    paths: list[str],
    config: EmbeddingsConfig,
    report: ProgressFn,
    pool_paths: Callable[[], list[str]],
    keep_vectors: bool = True,
) -> tuple[dict[str, np.ndarray], dict[str, str], int]:
    """Embeds the images no stored chunk of this key and model holds, storing each chunk as it
    is computed; returns the vectors and failure reasons by sample id (stored ones included)
    and how many samples came from stored chunks. With `config.adapt_steps` the encoder is
    the key's adapted one (`pool_adaptation`: trained on `pool_paths()` if none is stored).

    With ``keep_vectors=False`` (a shard worker: the vectors reach the field later, from the
    chunk store) no vector is read back or kept and the returned vectors are empty, so the
    worker's memory is one chunk's whatever the shard's size.
    """
    from fiftyone_elfs.embeddings import iter_embedded_chunks, load_encoder

    adaptation = pool_adaptation.chunk_signature(config)
    run = embedding_chunks.run_name(
        dataset_id,
        config.key,
        embedding_chunks.signature(config.model, config.image_size, adaptation),
    )
    wanted = set(ids)
    if keep_vectors:
        vectors, failures = embedding_chunks.load(run)
        vectors = {i: x for i, x in vectors.items() if i in wanted}
        done = set(vectors)
    else:
        vectors = {}
        done, failures = embedding_chunks.stored_ids(run)
        done &= wanted
    # Images an interrupted run could not read are tried again (a file may be back, a mount
    # remounted): cheap, and a stale "file not found" for a file that is there misleads.
    n_retried = sum(i in wanted for i in failures)
    failures = {}
    n_resumed = len(done)
    todo = [(i, p) for i, p in zip(ids, paths, strict=True) if i not in done]
    if n_resumed or n_retried:
        message = "Resuming: %d of %d embeddings stored before, %d unreadable images tried again"
        logger.info(message, n_resumed, len(ids), n_retried)
    if not todo:
        return vectors, failures, n_resumed
    adapted = pool_adaptation.encoder_kwargs(dataset_id, config.key, config, pool_paths, report)
    encoder = load_encoder(config.model, image_size=config.image_size, **adapted)

    def chunk_progress(fraction: float, label: str) -> None:
        done = n_resumed + fraction * len(todo)
        report(done / len(ids), f"{int(done)}/{len(ids)} images")

    todo_ids = [i for i, _ in todo]
    # Each chunk is stored while the next one is embedded (one insert in flight at most): the
    # insert mostly waits on the database, which would otherwise hold up the encoder (about
    # 0.07 s per 1,024 vectors here). Leaving the loop, even by an exception, waits for it.
    with ThreadPoolExecutor(1, thread_name_prefix="elfs-chunk-store") as writer:
        storing = None
        for start, X, chunk_failures in iter_embedded_chunks(
            [p for _, p in todo],
            encoder,
            batch_size=config.batch_size,
            num_workers=config.num_workers,
            chunk_rows=embedding_chunks.chunk_rows(encoder.dim),
            progress=chunk_progress,
        ):
            chunk_ids = todo_ids[start : start + len(X)]
            reasons = {chunk_ids[k]: reason for k, reason in chunk_failures.items()}
            if storing is not None:
                storing.result()  # raises the insert's error, if any
                kill_point(STAGE, "stored_chunk")
            storing = writer.submit(embedding_chunks.store, run, chunk_ids, X, reasons)
            failures.update(reasons)
            if keep_vectors:
                vectors.update(
                    (i, x) for i, x in zip(chunk_ids, X, strict=True) if i not in reasons
                )
        if storing is not None:
            storing.result()
            kill_point(STAGE, "stored_chunk")
    return vectors, failures, n_resumed
