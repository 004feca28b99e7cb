"""Embeddings stage: every image through a frozen encoder into a vector field, resumable.

Algorithm: `fiftyone_elfs.embeddings` (encoders, batched image embedding).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from fiftyone_elfs import dataset_io, runs
from fiftyone_elfs.dataset_io import SampleCollection
from fiftyone_elfs.errors import ElfsInputError
from fiftyone_elfs.progress import ProgressFn, terminal_progress
from fiftyone_elfs.stages import StageConfig, record

logger = logging.getLogger(__name__)

STAGE = "embeddings"
ZOO_PREFIX = "zoo:"


@dataclass(frozen=True)
class EmbeddingsConfig(StageConfig):
    """The parameters of `fiftyone_elfs.compute_embeddings` (documented there)."""

    OPERATION = "compute_embeddings"

    key: str
    model: str
    embeddings_field: str | None
    image_size: int
    batch_size: int
    num_workers: int
    overwrite: bool


def run(
    samples: SampleCollection, config: EmbeddingsConfig, progress: ProgressFn | None = None
) -> dict[str, Any]:
    """Embeds the images without an embedding from the same model; returns what was done."""
    names = runs.PipelineNames(config.key)
    dataset_io.require_nonempty(samples)
    field_name = config.embeddings_field or names.embeddings_field
    dataset = dataset_io.dataset_of(samples)

    previous = runs.stage_config(dataset, names, STAGE)
    owned_before = previous is not None and field_name in previous.owned_fields
    if not owned_before and dataset_io.ids_with_values(dataset, field_name):
        raise ElfsInputError(
            f"The field '{field_name}' already holds values that this run did not compute; "
            "refusing to overwrite or mix them. Fix: to use those embeddings, pass "
            f"embeddings_field='{field_name}' to the later stages (or run_pipeline) instead; "
            "to compute new ones, choose another key or embeddings_field.",
            param="embeddings_field",
        )
    record.check_ownership(samples, names, STAGE, fields=[field_name])
    same_model = owned_before and (previous.model, previous.image_size) == (
        config.model,
        config.image_size,
    )
    if owned_before and (config.overwrite or not same_model):
        if not same_model:
            logger.info(
                "Model changed (%s -> %s): recomputing all embeddings", previous.model, config.model
            )
        record.delete_previous(samples, names, STAGE)  # one field holds one model's vectors

    ids, paths = dataset_io.ids_and_paths_without(samples, field_name)
    n_reused = len(samples) - len(ids)
    report = progress or terminal_progress("embeddings")
    skipped: list[dict[str, str]] = []
    outputs = record.Outputs(written_fields=(field_name,))
    if ids and config.model.startswith(ZOO_PREFIX):
        skipped = _embed_with_zoo_model(samples, ids, config, field_name)
    elif ids:
        from fiftyone_elfs.embeddings import embed_image_files, load_encoder

        encoder = load_encoder(config.model, image_size=config.image_size)
        X, failures = embed_image_files(
            paths,
            encoder,
            batch_size=config.batch_size,
            num_workers=config.num_workers,
            progress=report,
        )
        good = [i for i in range(len(ids)) if i not in failures]
        outputs = record.Outputs(
            values={field_name: ([ids[i] for i in good], [X[i] for i in good])}
        )
        skipped = [
            {"id": ids[i], "filepath": paths[i], "reason": reason}
            for i, reason in sorted(failures.items())
        ]
    report(1.0, "done")
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
        "n_computed": len(ids) - len(skipped),
        "n_reused": n_reused,
        "n_skipped": len(skipped),
        "skipped": skipped,
    }
    record.record(
        samples,
        names,
        STAGE,
        params={
            "model": config.model,
            "image_size": config.image_size,
            "embeddings_field": field_name,
        },
        results=results,
        outputs=outputs,
        replace=False,  # resumable: the embeddings computed before are kept
    )
    return results


def _embed_with_zoo_model(
    samples: SampleCollection, ids: list[str], config: EmbeddingsConfig, field_name: str
) -> list[dict[str, str]]:
    """Embeds with a FiftyOne zoo model (downloads it where a network exists)."""
    import fiftyone.zoo as foz

    from fiftyone_elfs.embeddings import DEFAULT_ENCODER

    zoo_name = config.model[len(ZOO_PREFIX) :]
    try:
        model = foz.load_zoo_model(zoo_name)
    except Exception as e:  # noqa: BLE001 - surfaced with the fix
        raise ElfsInputError(
            f"Could not load FiftyOne zoo model '{zoo_name}': {e}. Fix: check the name with "
            "`fiftyone zoo models list`, make sure the model can be downloaded (network), or use "
            f"the offline default model='{DEFAULT_ENCODER}'.",
            param="model",
        ) from e
    if not getattr(model, "has_embeddings", False):
        raise ElfsInputError(
            f"Zoo model '{zoo_name}' does not expose embeddings; pick another.", param="model"
        )
    dataset_io.write_zoo_embeddings(samples, model, field_name, ids, config.batch_size)
    return [
        {"id": i, "filepath": p, "reason": "the zoo model could not embed this image"}
        for i, p in dataset_io.missing_ids_and_paths(samples, field_name)
    ]
