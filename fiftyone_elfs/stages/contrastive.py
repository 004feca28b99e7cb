"""Contrastive stage: SimCLR or MoCo trained on the images; each sample's summed view similarity.

Not part of `run_pipeline`: select on it with ``select_coreset(..., score="contrastive")``.
Algorithm: `fiftyone_elfs.difficulty.contrastive` (Ju et al.).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from fiftyone_elfs import checkpoint_folders, dataset_io, runs
from fiftyone_elfs.dataset_io import SampleCollection
from fiftyone_elfs.errors import ElfsInputError
from fiftyone_elfs.progress import ProgressFn, sub_progress, terminal_progress
from fiftyone_elfs.stages import StageConfig, record

logger = logging.getLogger(__name__)

STAGE = "contrastive"


def _label(method: str) -> str:
    """The progress label of a contrastive method."""
    return {"simclr": "SimCLR", "moco": "MoCo"}.get(method, method)


@dataclass(frozen=True)
class ContrastiveConfig(StageConfig):
    """The parameters of `fiftyone_elfs.compute_contrastive_scores` (documented there)."""

    OPERATION = "compute_contrastive_scores"

    key: str
    epochs: int
    image_size: int
    width: int
    contrastive_method: str
    batch_size: int
    seed: int
    num_workers: int | None


def run(
    samples: SampleCollection, config: ContrastiveConfig, progress: ProgressFn | None = None
) -> dict[str, Any]:
    """Trains on the images (resumable) and stores "<key>_contrastive" (low = informative).

    Unreadable or missing images are skipped (no score), counted and listed in the results.
    """
    from fiftyone_elfs.difficulty import decode_images, train_contrastive_similarity

    names = runs.PipelineNames(config.key)
    n = dataset_io.require_nonempty(samples)
    dataset_io.require_images(samples)
    if n < 2:
        raise ElfsInputError("Contrastive training needs at least 2 samples. Fix: widen the view.")
    field_name = names.score_field(STAGE)
    record.check_ownership(samples, names, STAGE, fields=[field_name])
    ids, paths = dataset_io.sample_ids_and_paths(samples)
    report = progress or terminal_progress("contrastive similarity")
    decode = sub_progress(report, 0.0, 0.1, "decoding")
    images, readable = decode_images(
        paths, config.image_size, num_workers=config.num_workers, progress=decode
    )
    skipped = [
        {"id": ids[i], "filepath": paths[i], "reason": "unreadable or missing image"}
        for i in np.flatnonzero(~readable)
    ]
    if skipped:
        logger.warning(
            "Skipped %d unreadable images (listed in run '%s' results), e.g. %s",
            len(skipped),
            names.run_key(STAGE),
            skipped[0]["filepath"],
        )
        keep = np.flatnonzero(readable)
        images, ids = images[keep], [ids[i] for i in keep]
    if len(ids) < 2:
        raise ElfsInputError(
            f"Only {len(ids)} of the {n} images could be read; contrastive training needs at "
            f"least 2. Fix: check the media paths (e.g. {skipped[0]['filepath']})."
        )
    checkpoint_dir = checkpoint_folders.training_dir_for(samples, f"{config.key}_contrastive")
    scores = train_contrastive_similarity(
        images,
        epochs=config.epochs,
        width=config.width,
        batch_size=config.batch_size,
        method=config.contrastive_method,
        seed=config.seed,
        checkpoint_dir=checkpoint_dir,
        progress=sub_progress(report, 0.1, 1.0, _label(config.contrastive_method)),
    )
    results = {
        "n_samples": len(ids),
        "n_skipped": len(skipped),
        "skipped": skipped,
        "n_epochs": scores.n_epochs,
        "seconds": scores.info["seconds"],
        "resumed_from_epoch": scores.info["resumed_from_epoch"],
        "mean_similarity_per_epoch": float(scores.similarity.mean() / scores.n_epochs),
    }
    record.record(
        samples,
        names,
        STAGE,
        params={
            "epochs": config.epochs,
            "image_size": config.image_size,
            "width": config.width,
            "batch_size": scores.info["batch_size"],  # at most the pool: what ran
            "contrastive_method": config.contrastive_method,
            "min_crop_scale": scores.info["min_crop_scale"],
            "seed": config.seed,
            "checkpoint_dir": checkpoint_dir,
            "score_field": field_name,
        },
        results=results,
        outputs=record.Outputs(
            values={field_name: (ids, scores.similarity.astype(float).tolist())},
            checked=(field_name,),  # a selection ranks them
        ),
    )
    report(1.0, f"scored {len(ids)} samples")
    return results
