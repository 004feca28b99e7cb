"""Per-sample difficulty from proxy training dynamics (AUM, forgetting, EL2N); no FiftyOne."""

from .training_dynamics import (
    DEFAULT_PROXY_EPOCHS,
    HARD_IS_LOW,
    DifficultyScores,
    TrainingDynamicsRecorder,
    train_mlp_proxy,
)

__all__ = [
    "DEFAULT_PROXY_EPOCHS",
    "HARD_IS_LOW",
    "DifficultyScores",
    "TrainingDynamicsRecorder",
    "train_mlp_proxy",
]
