"""Image embeddings: frozen encoders, arrays in / arrays out (no FiftyOne import here).

Names load on first use, so `pca_reduce` does not import torch.
"""

from fiftyone_elfs._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        ".efficientnet_lite": (
            "INPUT_MEAN",
            "INPUT_STD",
            "WeightMappingError",
            "WeightsNotInstalledError",
            "load_efficientnet_lite",
            "load_efficientnet_lite0",
        ),
        ".encoders": (
            "DEFAULT_ENCODER",
            "EfficientNetLite0Encoder",
            "EfficientNetLiteEncoder",
            "EncoderUnavailableError",
            "ImageEncoder",
            "LITE2_ENCODER",
            "TimmEncoder",
            "check_encoder_name",
            "embed_image_files",
            "iter_embedded_chunks",
            "load_encoder",
        ),
        ".projection": ("pca_reduce",),
    },
)
