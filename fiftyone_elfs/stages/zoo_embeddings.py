"""FiftyOne zoo models as the embeddings stage's encoder (``model="zoo:<name>"``): loading one,
and embedding through FiftyOne, which writes a field itself (no chunk store, no resume).

Adding the missing vectors of a key, FiftyOne writes them into the key's field. Replacing them
(another model, ``overwrite=True``), it writes into a scratch field beside it (`embed_aside`),
read back and removed, so the old vectors stay until the record step swaps in the new ones: an
error or an interruption midway leaves them as they were (the scratch field is journaled, and
the next run of the key removes it).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fiftyone_elfs import dataset_io, runs
from fiftyone_elfs.dataset_io import SampleCollection
from fiftyone_elfs.errors import ElfsInputError
from fiftyone_elfs.stages import record

ZOO_PREFIX = "zoo:"

#: The scratch field of a replacing run is named "<embeddings field><SCRATCH_SUFFIX>".
SCRATCH_SUFFIX = "_replacing"


def load_zoo_model(name: str) -> Any:
    """The FiftyOne zoo model ``zoo:<name>`` names (downloaded where a network exists).

    Raises:
        ElfsInputError: it cannot be loaded, or exposes no embeddings.
    """
    import fiftyone.zoo as foz

    from fiftyone_elfs.embeddings import DEFAULT_ENCODER

    zoo_name = name[len(ZOO_PREFIX) :]
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
    return model


def check_zoo_name(name: str) -> None:
    """Refuses a 'zoo:<name>' that FiftyOne's zoo does not know (its manifests ship with
    FiftyOne, and models of manifests or sources the user registered count; a versioned
    model's plain name is its latest version, as FiftyOne loads it). Reads no weights."""
    import fiftyone.zoo as foz

    from fiftyone_elfs.embeddings import DEFAULT_ENCODER

    zoo_name = name[len(ZOO_PREFIX) :]
    try:
        foz.get_zoo_model(zoo_name)
    except ValueError:
        raise ElfsInputError(
            f"FiftyOne's model zoo has no model '{zoo_name}'. Fix: pick a name that "
            "`fiftyone zoo models list` shows (one that exposes embeddings, e.g. "
            f"'clip-vit-base32-torch'), or use the offline default model='{DEFAULT_ENCODER}'.",
            param="model",
        ) from None


def embed(
    samples: SampleCollection,
    names: runs.PipelineNames,
    stage: str,
    model: Any,
    ids: list[str],
    batch_size: int,
    field: str,
) -> list[dict[str, str]]:
    """Embeds the samples `ids` with a loaded FiftyOne zoo model into `field` (written by
    FiftyOne, journaled first: an interruption leaves a recognised leftover); returns the
    samples it could not embed."""
    record.begin_writes(samples, names, stage, [field])
    dataset_io.write_zoo_embeddings(
        samples, model, field, ids, batch_size, runs.field_mark(names, stage)
    )
    return _not_embedded(samples, field)


def _not_embedded(samples: SampleCollection, field: str) -> list[dict[str, str]]:
    return [
        {"id": i, "filepath": p, "reason": "the zoo model could not embed this image"}
        for i, p in dataset_io.missing_ids_and_paths(samples, field)
    ]


def embed_aside(
    samples: SampleCollection,
    names: runs.PipelineNames,
    stage: str,
    model: Any,
    ids: list[str],
    batch_size: int,
    field: str,
) -> tuple[list[str], list[np.ndarray], list[dict[str, str]]]:
    """Embeds the samples `ids` (all of `samples`) with a loaded zoo model without touching
    `field`: into the scratch field ``field + SCRATCH_SUFFIX``, read back and removed. Returns
    the ids embedded, their vectors and the samples the model could not embed.

    Raises:
        ElfsInputError: the scratch field's name holds a field that is not this stage's.
    """
    scratch = field + SCRATCH_SUFFIX
    record.check_ownership(samples, names, stage, fields=[scratch])
    dataset = dataset_io.dataset_of(samples)
    try:
        dataset_io.delete_fields(dataset, [scratch])  # an interrupted run's, if any
        skipped = embed(samples, names, stage, model, ids, batch_size, scratch)
        if len(skipped) >= len(ids):  # none embedded: the stage's refusal names the images
            return [], [], skipped
        good, X = dataset_io.read_embeddings(samples, scratch, ids=ids)
    finally:
        dataset_io.delete_fields(dataset, [scratch])
    return good, list(X), skipped
