"""Per-sample difficulty from proxy training dynamics (AUM, forgetting, EL2N); no FiftyOne."""

from .cnn_proxy import (
    ARCHITECTURES,
    DEFAULT_CNN_EPOCHS,
    DEFAULT_CNN_WIDTH,
    SmallConvNet,
    augment_batch,
    build_proxy_network,
    load_images,
    train_cnn_proxy,
)
from .contrastive import (
    CONTRASTIVE_METHODS,
    DEFAULT_CONTRASTIVE_EPOCHS,
    ContrastiveScores,
    train_contrastive_similarity,
)
from .training_dynamics import (
    DEFAULT_PROXY_EPOCHS,
    HARD_IS_LOW,
    DifficultyScores,
    TrainingDynamicsRecorder,
    train_mlp_proxy,
)

__all__ = [
    "CONTRASTIVE_METHODS",
    "DEFAULT_CONTRASTIVE_EPOCHS",
    "ContrastiveScores",
    "train_contrastive_similarity",
    "ARCHITECTURES",
    "DEFAULT_CNN_EPOCHS",
    "DEFAULT_CNN_WIDTH",
    "SmallConvNet",
    "augment_batch",
    "build_proxy_network",
    "load_images",
    "train_cnn_proxy",
    "DEFAULT_PROXY_EPOCHS",
    "HARD_IS_LOW",
    "DifficultyScores",
    "TrainingDynamicsRecorder",
    "train_mlp_proxy",
]
