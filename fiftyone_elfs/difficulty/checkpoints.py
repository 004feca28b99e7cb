"""Per-epoch checkpoints that make long trainings resumable (model, optimiser, schedule, RNG and
whatever the loop accumulates), tied to the run's settings by a digest."""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn


class EpochCheckpoint:
    """One training run's checkpoint file in `folder` (None: checkpointing off).

    `restore` returns the epoch to start from and the loop's saved extra state; a checkpoint
    written with another `digest` (other data or settings) is ignored. `save` writes atomically,
    so an interruption never leaves a half-written file; `finish` removes it.
    """

    def __init__(self, folder: str | None, filename: str, digest: str) -> None:
        self.folder, self.digest = folder, digest
        self.path = os.path.join(folder, filename) if folder else None

    def restore(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        generator: torch.Generator,
        device: torch.device,
    ) -> tuple[int, dict[str, Any]]:
        if not self.path or not os.path.exists(self.path):
            return 0, {}
        state = torch.load(self.path, map_location=device, weights_only=False)
        if state.get("digest") != self.digest:
            return 0, {}
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        generator.set_state(state["generator"])
        return int(state["epoch"]), state["extra"]

    def save(
        self,
        epoch: int,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        generator: torch.Generator,
        extra: dict[str, Any],
    ) -> None:
        if not self.path:
            return
        os.makedirs(self.folder, exist_ok=True)
        state = {
            "digest": self.digest,
            "epoch": epoch,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "generator": generator.get_state(),
            "extra": extra,
        }
        torch.save(state, self.path + ".tmp")
        os.replace(self.path + ".tmp", self.path)

    def finish(self) -> None:
        if self.path and os.path.exists(self.path):
            os.remove(self.path)
