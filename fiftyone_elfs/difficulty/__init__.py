"""Per-sample difficulty from proxy training dynamics (AUM, forgetting, EL2N) and contrastive view
similarity (arrays in, arrays out; no FiftyOne). Names load on first use."""

from fiftyone_elfs._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        ".cnn_proxy": (
            "ARCHITECTURES",
            "DEFAULT_CNN_EPOCHS",
            "DEFAULT_CNN_WIDTH",
            "SmallConvNet",
            "augment_batch",
            "build_proxy_network",
            "decode_images",
            "load_images",
            "train_cnn_proxy",
        ),
        ".contrastive": (
            "CONTRASTIVE_METHODS",
            "DEFAULT_CONTRASTIVE_EPOCHS",
            "ContrastiveScores",
            "train_contrastive_similarity",
        ),
        ".training_dynamics": (
            "DEFAULT_PROXY_EPOCHS",
            "HARD_IS_LOW",
            "DifficultyScores",
            "TrainingDynamicsRecorder",
            "scaled_proxy_epochs",
            "train_mlp_proxy",
        ),
    },
)
