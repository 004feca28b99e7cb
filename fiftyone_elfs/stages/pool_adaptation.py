"""Pool adaptation, the embedding stage's optional first step: the offline encoder fine-tuned on
the collection's images (`adapt_steps`), once per key, before any image is embedded with it.

The weights are trained by the first call that needs them (`compute_embeddings`, the pipeline,
or a shard) and kept in the database (`fiftyone_elfs.adapted_weights`), so a rerun that adds
images, and every shard on every worker, embeds with the same encoder; they go with the key's
embeddings (`delete_key`, ``overwrite=True``). The run records the steps, the seed and the
weights' digest; another number of steps or seed is another encoder, so it replaces the vectors
as another model would.

Algorithm: `fiftyone_elfs.embeddings.pool_adaptation`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from fiftyone_elfs import adapted_weights
from fiftyone_elfs.errors import ElfsInputError
from fiftyone_elfs.param_rows import OFFLINE_ENCODER_NAMES
from fiftyone_elfs.progress import ProgressFn

logger = logging.getLogger(__name__)


class AdaptationSettings(Protocol):
    """What the embedding stage's configs (and their recorded runs) say about the adaptation."""

    key: str
    model: str
    image_size: int | None
    adapt_steps: int
    seed: int


def shape(config: Any) -> tuple[int, int | None]:
    """(steps, seed) of a config or recorded run: (0, None) unadapted (runs recorded before
    the option existed included), so that the seed alone never changes an unadapted encoder."""
    steps = int(getattr(config, "adapt_steps", 0) or 0)
    if not steps:
        return 0, None
    return steps, int(getattr(config, "adapt_seed", getattr(config, "seed", 0)))


def chunk_signature(config: AdaptationSettings) -> str | None:
    """What the adaptation adds to the chunk store's signature (None: unadapted)."""
    steps, seed = shape(config)
    return f"adapt{steps}:seed{seed}" if steps else None


def check_adaptable(model: str, adapt_steps: int) -> None:
    """Refuses `adapt_steps` with an encoder it is not defined for, before any work: only the
    offline EfficientNet-Lite encoders (their last stages are what it trains)."""
    if adapt_steps and model not in OFFLINE_ENCODER_NAMES:
        raise ElfsInputError(
            f"adapt_steps={adapt_steps} fine-tunes an offline EfficientNet-Lite encoder's last "
            f"stages; the encoder {model!r} is not one. Fix: model='{OFFLINE_ENCODER_NAMES[0]}' "
            f"(or another of {list(OFFLINE_ENCODER_NAMES)}), or adapt_steps=0.",
            param="adapt_steps",
        )


def check_not_given_vectors(adapt_steps: int, embeddings_field: str | None) -> None:
    """Refuses `adapt_steps` with a pipeline that embeds nothing (vectors given in a field)."""
    if adapt_steps and embeddings_field:
        raise ElfsInputError(
            f"adapt_steps={adapt_steps} adapts the encoder of the embeddings the pipeline "
            f"computes, but embeddings_field='{embeddings_field}' gives the vectors, so none are "
            "computed. Fix: leave out adapt_steps to use those vectors, or embeddings_field to "
            "embed with an adapted encoder.",
            param="adapt_steps",
        )


def check(config: AdaptationSettings) -> None:
    """`check_adaptable` of a config."""
    check_adaptable(config.model, config.adapt_steps)


def _weights_name(dataset_id: str, config: AdaptationSettings) -> str | None:
    steps, seed = shape(config)
    if not steps:
        return None
    return adapted_weights.name(
        dataset_id, config.key, config.model, config.image_size, steps, seed
    )


def forget_others(dataset_id: str, config: AdaptationSettings) -> None:
    """Removes the key's adapted weights other than `config`'s (those of the encoders its
    recorded vectors replaced: no vector of the key comes from them any more)."""
    adapted_weights.clear(dataset_id, config.key, keep=_weights_name(dataset_id, config))


def stored_info(dataset_id: str, config: AdaptationSettings) -> dict[str, Any] | None:
    """What a run records of its adapted weights: steps, seed, the weights' digest and how long
    they took to train; None unadapted."""
    name = _weights_name(dataset_id, config)
    if name is None:
        return None
    steps, seed = shape(config)
    doc = adapted_weights.describe(name) or {}
    seconds = doc.get("seconds")
    return {
        "steps": steps,
        "seed": seed,
        "digest": doc.get("digest"),
        "seconds": None if seconds is None else round(float(seconds), 1),
    }


def encoder_kwargs(
    dataset_id: str,
    key: str,
    config: AdaptationSettings,
    pool_paths: Callable[[], list[str]],
    report: ProgressFn,
) -> dict[str, Any]:
    """The extra arguments of `load_encoder`: {} unadapted, else the adapted weights (stored
    ones, or trained now on `pool_paths()` and stored)."""
    name = _weights_name(dataset_id, config)
    if name is None:
        return {}
    from fiftyone_elfs.embeddings import pool_adaptation

    steps, seed = shape(config)
    stored = adapted_weights.load(name)
    if stored is None:
        paths = pool_paths()
        checkpoint = adapted_weights.load_checkpoint(name)
        resume = None if checkpoint is None else pool_adaptation.weights_from_bytes(checkpoint)
        if resume is not None:
            logger.info("Resuming the adaptation of %s at step %d/%d", config.model,
                        resume["step"], steps)  # fmt: skip
        else:
            logger.info("Adapting %s to %d images: %d steps", config.model, len(paths), steps)
        started = time.perf_counter() - (0.0 if resume is None else resume.get("seconds", 0.0))

        def save(state: dict[str, Any]) -> None:
            state["seconds"] = time.perf_counter() - started
            adapted_weights.store_checkpoint(name, pool_adaptation.weights_to_bytes(state))

        weights = pool_adaptation.adapt_encoder_to_images(
            config.model,
            paths,
            config.image_size,
            steps,
            seed,
            progress=lambda fraction, label: report(0.0, label),
            on_checkpoint=save,
            resume=resume,
        )
        stored = adapted_weights.store_first(
            name,
            pool_adaptation.weights_to_bytes(weights),
            pool_adaptation.weights_digest(weights),
            time.perf_counter() - started,
        )
        adapted_weights.drop_checkpoint(name)
    return {"adapted_weights": pool_adaptation.weights_from_bytes(stored[0])}
