"""Image embeddings: frozen encoders, arrays in / arrays out (no FiftyOne import here)."""

from fiftyone_elfs.embeddings.efficientnet_lite import (
    INPUT_MEAN,
    INPUT_STD,
    WeightMappingError,
    load_efficientnet_lite0,
)
from fiftyone_elfs.embeddings.encoders import (
    DEFAULT_ENCODER,
    EfficientNetLite0Encoder,
    EncoderUnavailableError,
    ImageEncoder,
    TimmEncoder,
    embed_image_files,
    load_encoder,
)
from fiftyone_elfs.embeddings.projection import pca_reduce

__all__ = [
    "DEFAULT_ENCODER",
    "INPUT_MEAN",
    "INPUT_STD",
    "EfficientNetLite0Encoder",
    "EncoderUnavailableError",
    "ImageEncoder",
    "TimmEncoder",
    "WeightMappingError",
    "embed_image_files",
    "load_efficientnet_lite0",
    "load_encoder",
    "pca_reduce",
]
