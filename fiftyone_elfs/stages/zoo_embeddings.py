"""FiftyOne zoo models as the embeddings stage's encoder (``model="zoo:<name>"``): loading one,
and embedding through FiftyOne, which writes the field itself (no chunk store, no resume).
"""

from __future__ import annotations

from typing import Any

from fiftyone_elfs import dataset_io
from fiftyone_elfs.dataset_io import SampleCollection
from fiftyone_elfs.errors import ElfsInputError

ZOO_PREFIX = "zoo:"


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


def embed(
    samples: SampleCollection, model: Any, ids: list[str], batch_size: int, field: str
) -> list[dict[str, str]]:
    """Embeds the samples `ids` with a loaded FiftyOne zoo model into `field` (written by
    FiftyOne); returns the samples it could not embed."""
    dataset_io.write_zoo_embeddings(samples, model, field, ids, batch_size)
    return [
        {"id": i, "filepath": p, "reason": "the zoo model could not embed this image"}
        for i, p in dataset_io.missing_ids_and_paths(samples, field)
    ]
